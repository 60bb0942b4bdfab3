"""What a serving runtime is, and the registry every runtime registers in once (like
``adapters.kinds.base.AdapterKind``).

A runtime runs the shared backbone's forwards for serving: PyTorch fp32 (the reference),
PyTorch bf16, onnxruntime fp32, onnxruntime int8. Each is one ``Runtime`` registered by a
module of this package: its availability check (does this machine and this backbone take
it?), its encoder factory (the serving ``Encoder``, built from the loaded PyTorch encoder),
whether ``TAILOR_RUNTIME=auto`` measures it as a candidate (auto.py), and the setting values
that choose it directly. The service asks the registry; it never compares runtime names.

Adding one: a module here that calls ``register_runtime`` once, plus its import in
``__init__.py`` (docs/architecture.md, "Adding a runtime").
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from adapters.encoders import Encoder, TorchEncoder


@dataclass(frozen=True)
class RuntimeOptions:
    """What the settings give every runtime's factory."""

    cache_dir: Path  # where built graphs are cached and shared by replicas (<store>/.onnx)
    threads: int = 0  # onnxruntime intra-op threads; 0 = its default
    providers: tuple[str, ...] = ("CPUExecutionProvider",)  # onnxruntime execution providers
    cuda_tf32: bool = False  # onnxruntime on CUDA: allow TF32 matmuls when serving
    lora: bool = True  # also build what LoRA rows need (False: enough to measure a candidate)


def always() -> str | None:
    return None


@dataclass(frozen=True)
class Runtime:
    name: str  # e.g. "onnx-int8": auto's log line and cached decision name it
    summary: str  # one line, for logs and docs
    open: Callable[[TorchEncoder, RuntimeOptions], Encoder]  # the serving encoder
    # the backbones (``Encoder.modality``) it runs; None: every modality
    modalities: frozenset[str] | None = frozenset({"text"})
    available: Callable[[], str | None] = always  # None, or why this machine cannot run it
    candidate: bool = True  # measured by TAILOR_RUNTIME=auto against the reference
    # (TAILOR_RUNTIME, TAILOR_ONNX_QUANTIZE or None for any) that choose it directly
    setting: tuple[str, str | None] | None = None
    # changes when what it serves changes (e.g. a graph recipe): a forced runtime's cached
    # admission report (auto.forced_admission) is keyed by it, so a new recipe is measured
    revision: str = ""

    def why_not(self, encoder: Encoder) -> str | None:
        """None when this runtime can serve ``encoder`` here; otherwise why not."""
        if self.modalities is not None and encoder.modality not in self.modalities:
            return (f"{self.name} runs {' and '.join(sorted(self.modalities))} backbones only, "
                    f"and {encoder.model_dir} is {encoder.modality}")
        return self.available()


# The reference every candidate is measured against, and what serves when none is better:
# registered by pytorch.py, it runs every modality.
REFERENCE = "torch-fp32"

RUNTIMES: dict[str, Runtime] = {}


def register_runtime(runtime: Runtime) -> Runtime:
    if runtime.name in RUNTIMES:
        raise ValueError(f"runtime {runtime.name!r} is registered twice")
    RUNTIMES[runtime.name] = runtime
    return runtime


def get_runtime(name: str) -> Runtime:
    runtime = RUNTIMES.get(name)
    if runtime is None:
        raise ValueError(f"runtime {name!r} is not known (known: {', '.join(RUNTIMES)})")
    return runtime


def auto_candidates(encoder: Encoder) -> list[Runtime]:
    """The runtimes ``auto`` measures for ``encoder`` on this machine, in registration order
    (the reference is measured separately)."""
    return [r for r in RUNTIMES.values()
            if r.candidate and r.name != REFERENCE and r.why_not(encoder) is None]


def selected_by(runtime: str, quantize: str) -> Runtime:
    """The runtime that ``TAILOR_RUNTIME`` (other than auto) and ``TAILOR_ONNX_QUANTIZE``
    choose."""
    for r in RUNTIMES.values():
        if r.setting is not None and r.setting[0] == runtime and r.setting[1] in (None, quantize):
            return r
    raise ValueError(f"no runtime is chosen by TAILOR_RUNTIME={runtime} with "
                     f"TAILOR_ONNX_QUANTIZE={quantize}")


def open_runtime(runtime: Runtime, encoder: TorchEncoder, options: RuntimeOptions) -> Encoder:
    """``runtime``'s serving encoder for ``encoder``; a ValueError saying why when it cannot
    serve it here (start-up stops with that message)."""
    why = runtime.why_not(encoder)
    if why is not None:
        raise ValueError(f"runtime {runtime.name} cannot serve this backbone: {why}; "
                         "TAILOR_RUNTIME=torch runs every backbone")
    return runtime.open(encoder, options)
