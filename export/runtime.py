"""onnxruntime as the shared backbone's runtime (``TAILOR_RUNTIME=onnx``).

The backbone (encoder + mean pooling + L2 norm) is exported once per backbone and cached
under the store folder, keyed by the backbone's weights sha256, the quantization and the
opset: ``<store>/.onnx/<sha256>-<none|int8>-op<opset>.onnx``. A cached graph was parity
checked when it was built; a second replica on the same volume reuses it.

``OnnxBackbone`` has the same surface as ``adapters.Backbone`` (``embed``, ``embed_batch``,
``tokenize``, ``identity``, ``weights_checksum`` ...) and is injected into ``Tailor`` in its
place, so the engine's batched forward runs on onnxruntime with no change to the engine.
The PyTorch model stays loaded (read-only) for exports, for the checksum, and for rows of
LoRA adapters (their per-row low-rank updates live inside the encoder, which the one shared
ONNX graph does not have; export a LoRA adapter to get it merged into its own graph).

Providers are a setting. onnxruntime silently falls back to CPU when a requested provider
cannot start; we refuse instead: a requested provider that is not active after the session
is created raises ``ProviderUnavailable`` naming it.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from adapters.backbone import Backbone
from adapters.batching import length_sorted_chunks

from .onnx_config import QUANTIZE_CHOICES, SENTENCE_ENCODER, OnnxConfig

CACHE_DIR = ".onnx"


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


def cache_path(store_root: str | Path, backbone: Backbone, quantize: str,
               config: OnnxConfig = SENTENCE_ENCODER) -> Path:
    return (Path(store_root) / CACHE_DIR
            / f"{backbone.identity.sha256}-{quantize}-op{config.opset}.onnx")


def build_backbone_onnx(backbone: Backbone, dest: Path, quantize: str = "none",
                        config: OnnxConfig = SENTENCE_ENCODER,
                        providers: Sequence[str] = ("CPUExecutionProvider",)) -> Any:
    """Export the sentence encoder (fresh copy), fuse, optionally quantize, parity check on
    ``providers`` (where it will be served), then move into ``dest`` atomically. Returns the
    parity report."""
    from .graph import example_inputs, export_onnx, fresh_encoder, fuse_transformer, quantize_int8
    from .parity import check_parity, parity_cases

    if quantize not in QUANTIZE_CHOICES:
        raise ValueError(f"quantize must be one of {QUANTIZE_CHOICES}, got {quantize!r}")
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".build-", dir=dest.parent))
    try:
        module = fresh_encoder(backbone)
        raw = export_onnx(module, config, work / "raw.onnx", example_inputs(backbone))
        if quantize == "int8":  # unfused: all MatMuls int8 (see export/bundle.py)
            model = quantize_int8(raw, work / "int8.onnx")
        else:
            model = fuse_transformer(raw, work / "fused.onnx", backbone.model.config)
        cases = parity_cases(backbone.tokenizer, backbone.max_length)
        report = check_parity(module, create_session(model, providers), config, cases, quantize)
        os.replace(model, dest)
        return report
    finally:
        shutil.rmtree(work, ignore_errors=True)


class OnnxBackbone:
    """``Backbone`` with its forward on onnxruntime. Same tokenizer, pooling and chunking."""

    def __init__(self, backbone: Backbone, model_path: str | Path,
                 providers: Sequence[str] = ("CPUExecutionProvider",), threads: int = 0,
                 quantize: str = "none", cuda_tf32: bool = False):
        self.torch_backbone = backbone
        self.model_path = Path(model_path)
        self.quantize = quantize
        self.session = create_session(
            self.model_path, providers, threads,
            {"CUDAExecutionProvider": {"use_tf32": "1" if cuda_tf32 else "0"}})
        self.providers = self.session.get_providers()

    @classmethod
    def open(cls, backbone: Backbone, store_root: str | Path, *, quantize: str = "none",
             providers: Sequence[str] = ("CPUExecutionProvider",), threads: int = 0,
             cuda_tf32: bool = False) -> "OnnxBackbone":
        """Use the cached graph for this backbone, exporting it on first use (parity-checked
        in fp32 on ``providers``; ``cuda_tf32`` then applies to serving only)."""
        wanted = require_providers(providers)  # fail before spending seconds on an export
        path = cache_path(store_root, backbone, quantize)
        if not path.exists():
            build_backbone_onnx(backbone, path, quantize, providers=wanted)
        return cls(backbone, path, wanted, threads, quantize, cuda_tf32)

    # -- the Backbone surface, delegated --------------------------------------------------
    @property
    def identity(self):
        return self.torch_backbone.identity

    @property
    def model_dir(self) -> Path:
        return self.torch_backbone.model_dir

    @property
    def model(self):
        return self.torch_backbone.model

    @property
    def tokenizer(self):
        return self.torch_backbone.tokenizer

    @property
    def max_length(self) -> int:
        return self.torch_backbone.max_length

    @property
    def dim(self) -> int:
        return self.torch_backbone.dim

    @property
    def workers(self) -> int:
        return 1  # one session; onnxruntime parallelises inside each run

    @property
    def max_batch_rows(self) -> int:
        return self.torch_backbone.max_batch_rows

    def token_lengths(self, texts: Sequence[str]) -> list[int]:
        return self.torch_backbone.token_lengths(texts)

    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        return self.torch_backbone.tokenize(texts)

    def weights_checksum(self) -> str:
        return self.torch_backbone.weights_checksum()

    # -- forward ------------------------------------------------------------------------
    def embed_batch(self, texts: Sequence[str]) -> torch.Tensor:
        """One padded onnxruntime run over ``texts``. [len(texts), dim] float32."""
        enc = self.tokenizer(list(texts), padding=True, truncation=True,
                             max_length=self.max_length, return_tensors="np")
        feed = {"input_ids": enc["input_ids"].astype(np.int64),
                "attention_mask": enc["attention_mask"].astype(np.int64)}
        (out,) = self.session.run(["sentence_embedding"], feed)  # [batch, dim]
        return torch.from_numpy(np.ascontiguousarray(out, dtype=np.float32))

    def embed(self, texts: Sequence[str], loras: Sequence[Any] | None = None) -> torch.Tensor:
        """Embed ``texts``. Bare rows run on onnxruntime; rows with a LoRA adapter (``loras``,
        per row, as ``Backbone.embed``) need their per-row low-rank update inside the encoder,
        which the shared ONNX graph does not have, so they run on the PyTorch backbone in
        the same call. Head adapters (the common case) never touch PyTorch."""
        texts = list(texts)
        if not texts:
            return torch.empty(0, self.dim)
        out = torch.empty(len(texts), self.dim)
        lora_rows = [i for i, w in enumerate(loras or ()) if w is not None]
        if lora_rows:
            out[lora_rows] = self.torch_backbone.embed([texts[i] for i in lora_rows],
                                                       [loras[i] for i in lora_rows])
        on_torch = set(lora_rows)
        bare = [i for i in range(len(texts)) if i not in on_torch]
        if bare:
            bare_texts = [texts[i] for i in bare]
            for idx in length_sorted_chunks(self.token_lengths(bare_texts), self.max_batch_rows):
                out[[bare[i] for i in idx]] = self.embed_batch([bare_texts[i] for i in idx])
        return out
