"""PyTorch runtimes: fp32 eager (the reference: every modality, every machine) and bf16 (text,
on CPUs with bf16 matrix units only: elsewhere bf16 is emulated, slower than fp32), plain or
with attention row by row (``torch-bf16-rows``: batch-invariant where the admission shows it,
adapters/encoders/row_attention.py)."""
from __future__ import annotations

from adapters.encoders import TextEncoder, TorchEncoder
from adapters.encoders.text import has_bf16_matrix_units, has_int8_dot_products

from .base import REFERENCE, Runtime, RuntimeOptions, register_runtime


def _no_bf16_units() -> str | None:
    return None if has_bf16_matrix_units() else "this CPU has no bf16 matrix units (AMX, avx512_bf16)"


def _no_int8_units() -> str | None:
    return None if has_int8_dot_products() else "this CPU has no int8 dot-product units (VNNI, AMX)"


def _bf16(encoder: TorchEncoder, options: RuntimeOptions) -> TextEncoder:
    assert isinstance(encoder, TextEncoder)  # modalities={"text"}: open_runtime checked it
    return encoder.with_dtype("bfloat16")


def _bf16_rows(encoder: TorchEncoder, options: RuntimeOptions) -> TextEncoder:
    assert isinstance(encoder, TextEncoder)
    return encoder.with_dtype("bfloat16", row_attention=True)


def _int8_rows(encoder: TorchEncoder, options: RuntimeOptions) -> TextEncoder:
    from ..sample import HELDOUT_TEXTS  # the calibration: not the admission's own sample

    assert isinstance(encoder, TextEncoder)
    return encoder.with_int8_rows(HELDOUT_TEXTS)


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
# Opt-in like torch-bf16-rows, for the same reasons and more (stop 25, 2026-12-07; benchmarks/
# RESULTS.md, "A batch-invariant int8 backbone"). It is bit for bit batch-invariant here and
# passes auto's gate with little margin (mean drift 8.5e-4 against 1e-3). Over HTTP it served
# 1.41x the default (onnx fp32) at c=64 on BBC texts, but 0.77x torch-bf16-rows there, and
# 0.52x the default for one short text. One 8-shot head of six agreed with fp32 on only 98.0%
# of held-out texts, exports are fp32 graphs, and training workers fit on fp32 embeddings.
# It is meant for CPUs with int8 dot products but no bf16 units.
TORCH_INT8_ROWS = register_runtime(Runtime(
    "torch-int8-rows", "PyTorch on an int8 copy of the weights (exact int32 GEMMs, one activation "
    "scale per token, SmoothQuant) with attention row by row: batch-invariant by construction; "
    "opt-in (TAILOR_RUNTIME=torch-int8-rows), not an auto candidate: its accuracy margin is thin "
    "and exports are fp32 graphs", _int8_rows, candidate=False, available=_no_int8_units,
    setting=("torch-int8-rows", None)))
