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
# Not an ``auto`` candidate (chosen by the lead after measuring, issue 20): it is batch-invariant
# (bitwise here) and 1.5-1.7x onnx fp32 at c=64 on BBC texts, but onnx fp32 (what ``auto``
# serves here without it) is faster for one short text (c=1: bf16-rows 0.45-0.59x over HTTP),
# and an adapter's export, an fp32 graph, would no longer reproduce the served probabilities
# (up to 3.5e-3, 1 label flip in 300 texts), a promise of the default. Throughput-bound
# deployments opt in with TAILOR_RUNTIME=torch-bf16-rows. A forced runtime is served whatever
# the admission says; its first start logs what it says (auto.forced_admission: a WARNING on a
# CPU whose bf16 GEMMs are not row-invariant).
TORCH_BF16_ROWS = register_runtime(Runtime(
    "torch-bf16-rows", "PyTorch on a bf16 copy of the weights, attention row by row on real tokens: "
    "batch-invariant where the GEMMs are (bitwise on avx512_bf16, issue 20); opt-in "
    "(TAILOR_RUNTIME=torch-bf16-rows), not an auto candidate: exports are fp32 graphs and would "
    "differ from its answers by up to ~3.5e-3", _bf16_rows, candidate=False,
    available=_no_bf16_units, setting=("torch-bf16-rows", None)))
