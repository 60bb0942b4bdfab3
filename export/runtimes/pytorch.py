"""PyTorch runtimes: fp32 eager (the reference: every modality, every machine) and bf16 (text,
on CPUs with bf16 matrix units only: elsewhere bf16 is emulated, slower than fp32), plain or
with attention row by row (``torch-bf16-rows``: batch-invariant where the admission shows it,
adapters/encoders/row_attention.py)."""
from __future__ import annotations

from adapters.encoders import TextEncoder, TorchEncoder
from adapters.encoders.text import has_bf16_matrix_units

from .base import REFERENCE, Runtime, RuntimeOptions, register_runtime


def _no_bf16_units() -> str | None:
    return None if has_bf16_matrix_units() else "this CPU has no bf16 matrix units (AMX, avx512_bf16)"


def _bf16(encoder: TorchEncoder, options: RuntimeOptions) -> TextEncoder:
    assert isinstance(encoder, TextEncoder)  # modalities={"text"}: open_runtime checked it
    return encoder.with_dtype("bfloat16")


def _bf16_rows(encoder: TorchEncoder, options: RuntimeOptions) -> TextEncoder:
    assert isinstance(encoder, TextEncoder)
    return encoder.with_dtype("bfloat16", row_attention=True)


TORCH_FP32 = register_runtime(Runtime(
    REFERENCE, "PyTorch eager, fp32: the reference", lambda encoder, options: encoder,
    modalities=None, candidate=False, setting=("torch", None)))
TORCH_BF16 = register_runtime(Runtime(
    "torch-bf16", "PyTorch on a bf16 copy of the weights (fast on AMX, NOT batch-invariant: auto's "
    "admission rejects it; TAILOR_RUNTIME=torch-bf16 forces it)", _bf16, available=_no_bf16_units,
    setting=("torch-bf16", None)))
TORCH_BF16_ROWS = register_runtime(Runtime(
    "torch-bf16-rows", "PyTorch on a bf16 copy of the weights, attention row by row on real tokens: "
    "batch-invariant where the GEMMs are (bitwise on avx512_bf16, issue 20; auto's admission checks "
    "it on every machine)", _bf16_rows, available=_no_bf16_units, setting=("torch-bf16-rows", None)))
