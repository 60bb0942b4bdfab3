"""Learning from what users have beyond labeled examples: what their labels mean, and texts
nobody labeled. Pure functions on embeddings (numpy), shared by the kinds that end in a head.

- ``prototype_head``: zero-shot. Each label's description embedding is its prototype; a
  text's logit for a label is ``temperature * cos(text, description)``.
- ``HeadRecipe.fit``: examples (optionally none) + descriptions as extra, down-weighted rows
  of their label (a prior that matters most when examples are few) + self-training on the
  unlabeled texts: the head labels them, the confident ones (balanced across labels) join the
  training rows with a lower weight, and the head is refitted. A recipe is refitted inside
  every cross-validation fold on that fold's labeled rows, so its estimate stays honest.

The defaults were chosen on the dev data sets only (benchmarks/bench_quality.py says which
sets chose them and which only measured them).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from ..heads import LinearHead, activation_for

# (rows [n, dim], labels [n], weights [n]) -> a fitted head
WeightedFit = Callable[[np.ndarray, np.ndarray, np.ndarray], LinearHead]


def prototype_head(x_desc: np.ndarray, temperature: float) -> LinearHead:
    """x_desc [labels, dim] unit vectors -> logits = temperature * cosine."""
    w = x_desc / np.linalg.norm(x_desc, axis=1, keepdims=True).clip(min=1e-12)
    return LinearHead(torch.from_numpy((w * temperature).astype(np.float32)),
                      torch.zeros(len(w)), activation_for(False))


def _probs(head: LinearHead, x: np.ndarray) -> np.ndarray:
    return head.probabilities(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))).numpy()


def confident_pseudo_labels(probs: np.ndarray, threshold: float, per_label: int
                            ) -> tuple[np.ndarray, np.ndarray]:
    """Indices and labels of the unlabeled rows to trust: for each label, its most confident
    rows with probability >= ``threshold``, at most ``per_label`` (balanced, so one dominant
    label cannot swallow the pool)."""
    pred = probs.argmax(axis=1)
    conf = probs.max(axis=1)
    keep: list[int] = []
    for j in range(probs.shape[1]):
        idx = np.flatnonzero((pred == j) & (conf >= threshold))
        keep += idx[np.argsort(-conf[idx], kind="stable")][:per_label].tolist()
    keep_arr = np.array(sorted(keep), dtype=np.int64)
    return keep_arr, pred[keep_arr]


@dataclass(frozen=True)
class HeadRecipe:
    description_weight: float = 1.0  # weight of a description row against an example row
    temperature: float = 20.0  # zero-shot prototype logit scale
    self_training_rounds: int = 2
    confidence: float = 0.8  # pseudo-labels at or above this probability are trusted
    pseudo_per_label: int = 200  # at most this many pseudo-labeled rows per label and round
    pseudo_weight: float = 0.5  # weight of a pseudo-labeled row against an example row

    def fit(self, base: WeightedFit, x: np.ndarray, y: np.ndarray, n_labels: int,
            x_desc: np.ndarray | None = None, x_unl: np.ndarray | None = None) -> LinearHead:
        """x [n, dim] labeled rows (n may be 0), y [n]; x_desc [labels, dim] in label order or
        None; x_unl [m, dim] unlabeled rows or None."""
        rows, labels, weights = [x], [y], [np.ones(len(y))]
        if x_desc is not None:
            rows.append(x_desc)
            labels.append(np.arange(n_labels))
            weights.append(np.full(n_labels, self.description_weight))
        lab_x, lab_y, lab_w = np.concatenate(rows), np.concatenate(labels), np.concatenate(weights)
        if len(x) == 0 and x_desc is not None:
            head = prototype_head(x_desc, self.temperature)
        else:
            head = base(lab_x, lab_y, lab_w)
        if x_unl is None or len(x_unl) == 0:
            return head
        for _ in range(self.self_training_rounds):
            keep, pseudo = confident_pseudo_labels(_probs(head, x_unl), self.confidence,
                                                   self.pseudo_per_label)
            present = set(lab_y.tolist()) | set(pseudo.tolist())
            if len(keep) == 0 or len(present) < n_labels:
                break  # a fit needs every label; keep the head we have
            head = base(np.concatenate([lab_x, x_unl[keep]]), np.concatenate([lab_y, pseudo]),
                        np.concatenate([lab_w, np.full(len(keep), self.pseudo_weight)]))
        return head
