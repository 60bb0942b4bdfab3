"""Every export ends here: onnxruntime vs PyTorch on the same token ids.

Cases: a fixed sample of everyday texts (plus the adapter's own examples when the caller has
them) in batches of 16, and edge cases: a sequence of one token, a one-word text, a text cut
at the maximum length, batch 1 and a mixed-length batch of 16 (padding).

- fp32: max |p_onnx - p_torch| over the checked output must be <= ``config.atol``.
- int8: top-1 agreement with PyTorch fp32 is reported and must be >= ``config.min_int8_top1``
  (probability outputs), or the minimum cosine >= ``config.min_int8_cosine`` (embeddings).
  The top-1 gate is taken on the adapter's own examples when there are any (in-domain texts,
  what the adapter will see), else on every case; agreement on all rows is reported too.
  Near-ties on out-of-domain texts flip under int8 without meaning anything.

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

SAMPLE_TEXTS: tuple[str, ...] = (
    "The quarterly results beat analyst expectations and the shares rose 8%.",
    "My package never arrived and nobody answers the support line.",
    "What is the capital of Australia?",
    "Free entry! Text WIN to 80086 to claim your prize now!!!",
    "The striker scored twice in the second half to seal the victory.",
    "Parliament will vote on the new budget next Tuesday.",
    "How do I reset my password?",
    "I love this phone, the battery lasts for days.",
    "Scientists found water ice near the lunar south pole.",
    "Can you send me the slides from this morning's meeting?",
    "The film's soundtrack was nominated for three awards.",
    "Who wrote Pride and Prejudice?",
    "Refund requested for order #4417, item arrived broken.",
    "hey r u coming 2nite?",
    "Inflation eased to 2.1 percent in October, the lowest in three years.",
    "The new graphics card doubles the frame rate of its predecessor.",
    "Please cancel my subscription effective immediately.",
    "How many kilometres are in a mile?",
    "URGENT: your account has been suspended, click the link to verify.",
    "The team signed a three-year contract with the young goalkeeper.",
    "Das Wetter ist heute schön.",
    "¿Dónde está la estación de tren?",
    "ok",
    "Thanks!!! 😀👍",
)


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
    top1_agreement: float | None = None  # the gated number (own examples if any, else all)
    top1_agreement_all: float | None = None
    examples_rows: int = 0
    min_cosine: float | None = None
    atol: float | None = None
    min_top1: float | None = None
    min_cosine_required: float | None = None
    passed: bool = False

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


Case = tuple[str, dict[str, np.ndarray]]  # name, graph inputs by name ([batch, ...] each)


def parity_cases(encoder: TorchEncoder, texts: Sequence[str] = ()) -> list[Case]:
    """Text cases, prepared by the encoder itself (its tokenizer, lock and truncation)."""
    def enc(batch: Sequence[str]) -> dict[str, np.ndarray]:
        return feed_of(encoder, encoder.prepare(list(batch)))

    own = [t for t in texts if isinstance(t, str) and t.strip()]
    cases: list[Case] = []
    for i in range(0, len(own), 16):
        cases.append((f"examples[{i}:{i + 16}]", enc(own[i:i + 16])))
    sample = list(SAMPLE_TEXTS)
    for i in range(0, len(sample), 16):
        cases.append((f"sample[{i}:{i + 16}]", enc(sample[i:i + 16])))
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
                 quantize: str = "none") -> ParityReport:
    """Run ``cases`` through PyTorch ``module`` (fp32) and the onnxruntime ``session``."""
    ci = config.outputs.index(config.checked_output)
    report = ParityReport(quantize=quantize, checked_output=config.checked_output)
    diffs = {o: 0.0 for o in config.outputs}
    agree, cosines, own_agree = [], [], []
    for case in cases:
        name, feed = case
        rows = int(next(iter(feed.values())).shape[0])
        ref = torch_outputs(module, config, case)
        got = session.run(list(config.outputs), feed)
        for o, r, g in zip(config.outputs, ref, got):
            if r.shape != g.shape:
                raise ParityError(f"parity case {name}: output {o} has shape {g.shape} in ONNX, "
                                  f"{r.shape} in PyTorch", report)
            diffs[o] = max(diffs[o], float(np.max(np.abs(r - g))) if r.size else 0.0)
        r, g = ref[ci], got[ci]
        same = list(np.argmax(r, axis=-1) == np.argmax(g, axis=-1))
        agree += same
        if name.startswith("examples["):
            own_agree += same
        cosines += list(np.sum(r * g, -1) / (np.linalg.norm(r, axis=-1) * np.linalg.norm(g, axis=-1)
                                              + 1e-12))
        report.cases[name] = rows
        report.rows += rows
    report.max_abs_diff_by_output = diffs
    report.max_abs_diff = diffs[config.checked_output]
    report.top1_agreement_all = float(np.mean(agree))
    report.examples_rows = len(own_agree)
    report.top1_agreement = float(np.mean(own_agree if own_agree else agree))
    report.min_cosine = float(np.min(cosines))
    if quantize == "none":
        report.atol = config.atol
        report.passed = bool(report.max_abs_diff <= config.atol)
        if not report.passed:
            raise ParityError(
                f"ONNX export disagrees with PyTorch: max |difference| of {config.checked_output} is "
                f"{report.max_abs_diff:.3g} > tolerance {config.atol:g} on {report.rows} rows; "
                "nothing was published", report)
    elif config.checked_output == "probabilities":
        report.min_top1 = config.min_int8_top1
        report.passed = bool(report.top1_agreement >= config.min_int8_top1)
        if not report.passed:
            raise ParityError(
                f"int8 export changes the top label on {100 * (1 - report.top1_agreement):.1f}% of "
                f"{report.examples_rows or report.rows} {'example' if report.examples_rows else 'sample'} rows (required agreement {100 * config.min_int8_top1:g}%); "
                'export with {"quantize": "none"} instead', report)
    else:
        report.min_cosine_required = config.min_int8_cosine
        report.passed = bool(report.min_cosine >= config.min_int8_cosine)
        if not report.passed:
            raise ParityError(
                f"int8 backbone drifts from fp32: min cosine {report.min_cosine:.4f} < "
                f"{config.min_int8_cosine}; use quantize none", report)
    return report
