"""onnxruntime sessions on exactly the providers asked for.

onnxruntime silently falls back to CPU when a requested provider cannot start; Tailor
refuses instead: a requested provider that is not active after the session is created
raises ``ProviderUnavailable`` naming it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence


class ProviderUnavailable(RuntimeError):
    """A requested onnxruntime execution provider is not available or did not start."""


def session_options(threads: int = 0) -> Any:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Without this, idle worker threads spin after each run and steal CPU from torch and the
    # event loop in the same process (DESIGN.md traps).
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.add_session_config_entry("session.inter_op.allow_spinning", "0")
    if threads:
        so.intra_op_num_threads = threads
    so.log_severity_level = 3
    return so


def require_providers(providers: Sequence[str]) -> list[str]:
    """The requested providers, stripped, or ProviderUnavailable naming those this
    onnxruntime build lacks. Cheap: call it before spending seconds on an export."""
    import onnxruntime as ort

    providers = [p.strip() for p in providers if p.strip()]
    if not providers:
        raise ProviderUnavailable("no onnxruntime execution provider requested; set "
                                  "TAILOR_ONNX_PROVIDERS, e.g. CPUExecutionProvider")
    if "CUDAExecutionProvider" in providers and hasattr(ort, "preload_dlls"):
        try:  # CUDA and cuDNN from the nvidia-* pip packages (onnxruntime-gpu >= 1.21)
            ort.preload_dlls()
        except Exception:  # noqa: BLE001 - system libraries may still do; checked below
            pass
    available = ort.get_available_providers()
    missing = [p for p in providers if p not in available]
    if missing:
        raise ProviderUnavailable(
            f"onnxruntime execution provider {', '.join(missing)} is not available in this "
            f"onnxruntime build ({ort.__version__}; available: {', '.join(available)}). "
            "For CUDAExecutionProvider install the gpu extra (onnxruntime-gpu) on a machine with "
            "a CUDA GPU, or set TAILOR_ONNX_PROVIDERS=CPUExecutionProvider")
    return providers


def create_session(path: str | Path, providers: Sequence[str] = ("CPUExecutionProvider",),
                   threads: int = 0, provider_options: dict[str, dict[str, str]] | None = None
                   ) -> Any:
    """An InferenceSession on exactly ``providers``, or ProviderUnavailable naming the missing
    one. ``provider_options``: per provider name, e.g. {"CUDAExecutionProvider": {"use_tf32": "0"}}."""
    import onnxruntime as ort

    providers = require_providers(providers)
    # CUDA: no TF32 unless asked for. With TF32 (onnxruntime's CUDA default) the fp32 graph
    # differed from PyTorch fp32 by 2.3e-4 on an H200 and failed the 1e-4 parity check.
    defaults = {"CUDAExecutionProvider": {"use_tf32": "0"}}
    options = [{**defaults.get(p, {}), **(provider_options or {}).get(p, {})} for p in providers]
    sess = ort.InferenceSession(str(path), session_options(threads), providers=providers,
                                provider_options=options)
    active = sess.get_providers()
    inactive = [p for p in providers if p not in active]
    if inactive:
        raise ProviderUnavailable(
            f"onnxruntime execution provider {', '.join(inactive)} was requested but is not active "
            f"after creating the session (active: {', '.join(active)}); onnxruntime fell back "
            "silently, so Tailor refuses to start. Check the GPU, CUDA and cuDNN libraries")
    return sess
