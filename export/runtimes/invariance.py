"""Batch invariance: the same text to the same adapter gets the same embedding whatever else
shares its batch.

A promise the service makes (DESIGN.md) and that a fast runtime can silently break: on this
AMX machine PyTorch bf16 moved answers by up to 3.2e-3 with the traffic around them (the
kernels and their roundings are chosen by the batch's shape), and dynamic int8 computes its
activation scales per batch, so a row's neighbours change its quantization (issue 20).
PyTorch fp32 and onnxruntime fp32 differ by ~1e-7 (GEMM blocking by shape).

``check`` embeds a fixed sample one text per call (the reference: what a lone request gets),
then inside differently composed and padded mixed batches: shuffled calls of 8 rows beside a
60-token filler, shuffled calls of 5 without one, and all rows at once beside a text cut at
the maximum length (the rows that share its chunk are padded to it). With ``loras``, row i runs through ``loras[i % len]`` (None: bare
backbone) both alone and in the mixed calls, and the fillers use another adapter than their
neighbours, as a batch of many tenants' LoRA adapters does. Every row of every mixed call
must equal its lone answer within ``TOLERANCE``, or ``InvarianceReport.passed`` is False and
``TAILOR_RUNTIME=auto`` does not serve the runtime (export/runtimes/auto.py).

The check takes the encoder's own ``embed`` (``adapters.encoders.Encoder``), so the chunking,
sorting and padding it checks are the ones the service's batcher goes through.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

TOLERANCE = 1e-5  # max |embedding alone - embedding in a mixed batch|, any row, any component
FILLER = "padding " * 600  # cut at the encoder's maximum length: pads every row beside it
# a second padded length (~60 tokens) for the calls of 8: another GEMM shape than the
# max-length call, at a quarter of its cost (the check runs at every first start)
MID_FILLER = "padding " * 60


@dataclass(frozen=True)
class InvarianceReport:
    max_diff: float  # largest |alone - mixed| over every row, call and component
    worst: str  # the layout where it occurred
    rows: int  # row answers compared
    tolerance: float = TOLERANCE

    @property
    def passed(self) -> bool:
        return self.max_diff <= self.tolerance

    def why_not(self) -> str:
        return (f"not batch-invariant: a row embedded alone and in a mixed batch ({self.worst}) "
                f"differs by {self.max_diff:.1e} > {self.tolerance:g}")


def layouts(n: int, seed: int = 0) -> list[tuple[str, list[list[int]], str]]:
    """(name, calls of row indices, the filler row each call gets: "" for none)."""
    rng = random.Random(seed)
    perm = list(range(n))
    rng.shuffle(perm)
    rev = perm[::-1]
    # small padded calls first: with ``stop_at_first`` a runtime whose rows follow the
    # batch's shape is caught after one call of 8 and 8 lone forwards
    return [("shuffled calls of 8 + 60-token filler", [rev[i:i + 8] for i in range(0, n, 8)], MID_FILLER),
            ("shuffled calls of 5", [perm[i:i + 5] for i in range(0, n, 5)], ""),
            ("all rows + max-length filler", [list(range(n))], FILLER)]


def _embed(encoder: Any, texts: list[str], loras: list[Any] | None) -> np.ndarray:
    out = encoder.embed(texts, loras) if loras is not None else encoder.embed(texts)
    return np.asarray(out, dtype=np.float32)


def check(encoder: Any, texts: Sequence[str], loras: Sequence[Any] | None = None, *,
          tolerance: float = TOLERANCE, seed: int = 0, stop_at_first: bool = False) -> InvarianceReport:
    """Embed ``texts`` alone and in mixed batches with ``encoder``; the largest difference.
    ``loras``: adapters (``LoraWeights`` or None) assigned to rows round-robin.
    ``stop_at_first``: return at the first mixed call whose rows moved by more than
    ``tolerance`` (admission: one counter-example rejects; a row's lone answer is computed
    only when a call needs it, so a failing runtime costs a few forwards, not the sample)."""
    texts = list(texts)
    per_row = [loras[i % len(loras)] for i in range(len(texts))] if loras else None
    alone: dict[int, np.ndarray] = {}

    def lone(rows: list[int]) -> np.ndarray:
        for i in rows:
            if i not in alone:
                alone[i] = _embed(encoder, [texts[i]], None if per_row is None else [per_row[i]])[0]
        return np.stack([alone[i] for i in rows])

    worst, name = 0.0, "none"
    compared = 0
    for label, calls, filler in layouts(len(texts), seed):
        for k, call in enumerate(calls):
            batch = [texts[i] for i in call]
            adapters = None if per_row is None else [per_row[i] for i in call]
            if filler:
                batch.append(filler)
                if adapters is not None:  # another adapter than the call's first row
                    adapters.append(loras[(call[0] + k + 1) % len(loras)])
            got = _embed(encoder, batch, adapters)[:len(call)]
            diff = float(np.abs(got - lone(call)).max())
            compared += len(call)
            if diff > worst:
                worst, name = diff, label
            if stop_at_first and worst > tolerance:
                return InvarianceReport(worst, name, compared, tolerance)
    return InvarianceReport(worst, name, compared, tolerance)


__all__ = ["FILLER", "MID_FILLER", "TOLERANCE", "InvarianceReport", "check", "layouts"]
