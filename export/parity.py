"""Every export ends here: onnxruntime vs PyTorch on the same token ids.

Cases, in batches of 16: the adapter's own examples (when the caller has them), held-out
texts (the fixed samples of export/sample.py, 126 texts written for no adapter in particular,
plus any held-out-like texts the caller has, e.g. the adapter's unlabeled texts), and edge
cases: a sequence of one token, a one-word text, a text cut at the maximum length, batch 1
and a mixed-length batch of 16 (padding).

- fp32: max |p_onnx - p_torch| over the checked output must be <= ``config.atol``.
- int8-rows (export/int8_rows.py): the same, against the served int8-rows graphs' answers
  (the caller's ``references``) instead of PyTorch's.
- int8: top-1 agreement with PyTorch fp32 over every text row (examples AND held-out texts)
  must be >= ``config.min_int8_top1`` (probability outputs), or the minimum cosine >=
  ``config.min_int8_cosine`` (embeddings). Agreement on the examples and on the held-out
  texts is reported apart. (Until issue 12 the gate read the examples only; an int8 LoRA
  export then passed it and agreed with the service on 95% of held-out texts.)

A failure raises ``ParityError`` carrying the report; the caller publishes nothing.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from adapters.encoders import TorchEncoder
from adapters.errors import TailorError

from .onnx_config import OnnxConfig
from .sample import HELDOUT_TEXTS, SAMPLE_TEXTS

__all__ = ["HELDOUT_TEXTS", "SAMPLE_TEXTS", "ParityError", "ParityReport", "check_parity",
           "parity_cases"]


class ParityError(TailorError):
    """The exported graph disagrees with PyTorch beyond the tolerance: nothing is published."""

    status = 422
    code = "export_parity_failed"

    def __init__(self, message: str, report: "ParityReport"):
        super().__init__(message)
        self.report = report


@dataclass
class ParityReport:
    quantize: str
    checked_output: str
    rows: int = 0
    cases: dict[str, int] = field(default_factory=dict)  # case -> rows
    max_abs_diff: float = 0.0  # on checked_output
    max_abs_diff_by_output: dict[str, float] = field(default_factory=dict)
    top1_agreement: float | None = None  # the gated number: examples + held-out text rows
    top1_agreement_examples: float | None = None
    top1_agreement_heldout: float | None = None
    top1_agreement_all: float | None = None  # edge cases included
    examples_rows: int = 0
    heldout_rows: int = 0
    recipe: str | None = None  # int8: the quantization recipe of this graph (export/quantize.py)
    attempts: list[dict[str, Any]] = field(default_factory=list)  # int8 recipes that failed first
    min_cosine: float | None = None
    atol: float | None = None
    min_top1: float | None = None
    min_cosine_required: float | None = None
    passed: bool = False

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


Case = tuple[str, dict[str, np.ndarray]]  # name, graph inputs by name ([batch, ...] each)


# modes checked within ``atol`` against their reference: fp32 against PyTorch; int8-rows (an
# adapter's export as the onnx-int8-rows runtime serves it) against the served graphs
EXACT = {"none": "PyTorch", "int8-rows": "the served int8-rows graph"}

EXAMPLES, HELDOUT, SAMPLE = "examples[", "heldout[", "sample["
TEXT_CASES = (EXAMPLES, HELDOUT, SAMPLE)  # what the int8 top-1 gate reads


def parity_cases(encoder: TorchEncoder, texts: Sequence[str] = (),
                 heldout: Sequence[str] = ()) -> list[Case]:
    """Cases prepared by the encoder itself (its tokenizer and truncation). ``texts``: the
    adapter's examples; ``heldout``: more held-out-like texts (e.g. its unlabeled texts),
    checked beside the fixed ones."""
    def enc(batch: Sequence[str]) -> dict[str, np.ndarray]:
        return feed_of(encoder, encoder.prepare(list(batch)))

    def batches(prefix: str, rows: list[str]) -> None:
        for i in range(0, len(rows), 16):
            cases.append((f"{prefix}{i}:{i + 16}]", enc(rows[i:i + 16])))

    own = [t for t in texts if isinstance(t, str) and t.strip()]
    seen = set(own)
    extra = [t for t in dict.fromkeys(heldout) if isinstance(t, str) and t.strip() and t not in seen]
    cases: list[Case] = []
    batches(EXAMPLES, own)
    batches(SAMPLE, list(SAMPLE_TEXTS))
    batches(HELDOUT, list(HELDOUT_TEXTS) + extra)
    first_token = encoder.prepare(["x"])[0][:1]  # the leading special token (e.g. [CLS])
    cases.append(("one_token", feed_of(encoder, [first_token])))
    cases.append(("one_word", enc(["hello"])))
    long_text = " ".join(SAMPLE_TEXTS) * 8  # far beyond any max length: truncated
    feed = enc([long_text])
    longest = max(feed[k].shape[1] for k in feed)
    if longest != encoder.max_length:
        raise ValueError(f"the max-length case has {longest} tokens, expected {encoder.max_length}")
    cases.append(("max_length", feed))
    cases.append(("max_length+short", enc([long_text, "short"])))
    cases.append(("batch_1", enc([SAMPLE_TEXTS[0]])))
    cases.append(("batch_16_mixed", enc([SAMPLE_TEXTS[i % len(SAMPLE_TEXTS)] * (1 + i % 4)
                                         for i in range(16)])))
    return cases


def feed_of(encoder: TorchEncoder, rows: Sequence[Any]) -> dict[str, np.ndarray]:
    """Prepared rows -> the graph's inputs as numpy arrays."""
    batch = encoder.collate(rows)
    return {name: batch[name].cpu().numpy() for name in encoder.graph_inputs}


def torch_outputs(module: nn.Module, config: OnnxConfig, case: Case) -> list[np.ndarray]:
    _, feed = case
    with torch.inference_mode():
        out = module(*[torch.from_numpy(feed[name]) for name in config.inputs])
    out = out if isinstance(out, (tuple, list)) else (out,)
    return [o.float().numpy() for o in out]


def check_parity(module: nn.Module, session: Any, config: OnnxConfig, cases: Sequence[Case],
                 quantize: str = "none",
                 references: Sequence[list[np.ndarray]] | None = None) -> ParityReport:
    """Run ``cases`` through PyTorch ``module`` (fp32) and the onnxruntime ``session``.
    ``references``: ``torch_outputs`` of each case, when the caller already has them (an int8
    export checks one graph per recipe against the same PyTorch outputs)."""
    ci = config.outputs.index(config.checked_output)
    report = ParityReport(quantize=quantize, checked_output=config.checked_output)
    diffs = {o: 0.0 for o in config.outputs}
    agree, cosines, own_agree, held_agree = [], [], [], []
    for k, case in enumerate(cases):
        name, feed = case
        rows = int(next(iter(feed.values())).shape[0])
        ref = references[k] if references is not None else torch_outputs(module, config, case)
        got = session.run(list(config.outputs), feed)
        for o, r, g in zip(config.outputs, ref, got):
            if r.shape != g.shape:
                raise ParityError(f"parity case {name}: output {o} has shape {g.shape} in ONNX, "
                                  f"{r.shape} in PyTorch", report)
            diffs[o] = max(diffs[o], float(np.max(np.abs(r - g))) if r.size else 0.0)
        r, g = ref[ci], got[ci]
        same = list(np.argmax(r, axis=-1) == np.argmax(g, axis=-1))
        agree += same
        if name.startswith(EXAMPLES):
            own_agree += same
        elif name.startswith((HELDOUT, SAMPLE)):
            held_agree += same
        cosines += list(np.sum(r * g, -1) / (np.linalg.norm(r, axis=-1) * np.linalg.norm(g, axis=-1)
                                              + 1e-12))
        report.cases[name] = rows
        report.rows += rows
    report.max_abs_diff_by_output = diffs
    report.max_abs_diff = diffs[config.checked_output]
    report.top1_agreement_all = float(np.mean(agree))
    report.examples_rows, report.heldout_rows = len(own_agree), len(held_agree)
    report.top1_agreement_examples = float(np.mean(own_agree)) if own_agree else None
    report.top1_agreement_heldout = float(np.mean(held_agree)) if held_agree else None
    gated = own_agree + held_agree
    report.top1_agreement = float(np.mean(gated if gated else agree))
    report.min_cosine = float(np.min(cosines))
    if quantize in EXACT:
        report.atol = config.atol
        report.passed = bool(report.max_abs_diff <= config.atol)
        if not report.passed:
            raise ParityError(
                f"ONNX export disagrees with {EXACT[quantize]}: max |difference| of {config.checked_output} is "
                f"{report.max_abs_diff:.3g} > tolerance {config.atol:g} on {report.rows} rows; "
                "nothing was published", report)
    elif config.checked_output == "probabilities":
        report.min_top1 = config.min_int8_top1
        report.passed = bool(report.top1_agreement >= config.min_int8_top1)
        if not report.passed:
            raise ParityError(
                f"int8 export changes the top label on {100 * (1 - report.top1_agreement):.1f}% of "
                f"{len(gated) or report.rows} rows ({_share(own_agree)} of the examples, "
                f"{_share(held_agree)} of held-out texts agree; required "
                f"{100 * config.min_int8_top1:g}% over both); "
                'export with {"quantize": "none"} instead', report)
    else:
        report.min_cosine_required = config.min_int8_cosine
        report.passed = bool(report.min_cosine >= config.min_int8_cosine)
        if not report.passed:
            raise ParityError(
                f"int8 backbone drifts from fp32: min cosine {report.min_cosine:.4f} < "
                f"{config.min_int8_cosine}; use quantize none", report)
    return report


def _share(same: list[bool]) -> str:
    return f"{sum(same)}/{len(same)}" if same else "none"
