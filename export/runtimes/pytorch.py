"""PyTorch runtimes: fp32 eager (the reference: every modality, every machine) and bf16 (text,
on CPUs with bf16 matrix units only: elsewhere bf16 is emulated, slower than fp32)."""
from __future__ import annotations

from adapters.encoders import TextEncoder, TorchEncoder
from adapters.encoders.text import has_bf16_matrix_units

from .base import REFERENCE, Runtime, RuntimeOptions, register_runtime


def _no_bf16_units() -> str | None:
    return None if has_bf16_matrix_units() else "this CPU has no bf16 matrix units (AMX, avx512_bf16)"


def _bf16(encoder: TorchEncoder, options: RuntimeOptions) -> TextEncoder:
    assert isinstance(encoder, TextEncoder)  # modalities={"text"}: open_runtime checked it
    return encoder.with_dtype("bfloat16")


TORCH_FP32 = register_runtime(Runtime(
    REFERENCE, "PyTorch eager, fp32: the reference", lambda encoder, options: encoder,
    modalities=None, candidate=False, setting=("torch", None)))
TORCH_BF16 = register_runtime(Runtime(
    "torch-bf16", "PyTorch on a bf16 copy of the weights (fast on AMX, NOT batch-invariant: auto's "
    "admission rejects it; TAILOR_RUNTIME=torch-bf16 forces it)", _bf16, available=_no_bf16_units,
    setting=("torch-bf16", None)))
