"""The check before an update becomes ``latest``: is the recipe refitted on the previous
examples plus the new ones at least as good as the previous version's, on the same held-out
folds? (DESIGN.md: "More correct examples never make an adapter worse".)

Both sides are the same recipe (``fit_rows``) on the same rows' embeddings; they differ only
in what they train on: per fold, the previous version's examples among the training rows, or
all the training rows. Both are scored on the same held-out rows, which include the new
examples: those are what the user just said the adapter should get right.

Scored by balanced accuracy (the mean of per-label recalls), because corrections are
one-sided: with 20/8 examples, plain accuracy on the held-out rows rewards a head that leans
toward the frequent label, which is the failure this check is there to catch. "Worse by more
than the noise" is a paired difference below ``-z`` standard errors (the rows are the pairs)
and below ``-min_drop``.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .fitting import FitRows

Z, MIN_DROP = 2.0, 0.01  # chosen in benchmarks/bench_monotone.py (see RESULTS.md)


def compare_update(x: np.ndarray, y: np.ndarray, previous: np.ndarray, n_labels: int,
                   fit_rows: FitRows, folds: int = 5, seed: int = 0, z: float = Z,
                   min_drop: float = MIN_DROP) -> dict[str, Any] | None:
    """x [rows, dim] embeddings of all examples, y [rows] label ids, previous [rows] bool:
    the rows the previous version was trained on. None when no fold can be fitted both ways
    (fewer than 2 examples of some label, or a label the previous version had no rows of)."""
    from sklearn.model_selection import StratifiedKFold

    counts = np.bincount(y, minlength=n_labels)
    prev_counts = np.bincount(y[previous], minlength=n_labels)
    k = min(folds, int(counts.min()))
    if k < 2 or prev_counts.min() < 2 or previous.all():
        return None
    new_right: list[np.ndarray] = []
    old_right: list[np.ndarray] = []
    held: list[np.ndarray] = []
    for tr, te in StratifiedKFold(k, shuffle=True, random_state=seed).split(x, y):
        old_tr = tr[previous[tr]]
        if np.bincount(y[old_tr], minlength=n_labels).min() < 1:
            continue  # this fold left the previous version without some label
        new_right.append(fit_rows(x[tr], y[tr]).predict(x[te]) == y[te])
        old_right.append(fit_rows(x[old_tr], y[old_tr]).predict(x[te]) == y[te])
        held.append(te)
    if not held:
        return None
    te = np.concatenate(held)
    per_label = np.bincount(y[te], minlength=n_labels).astype(np.float64)
    w = 1.0 / (per_label[y[te]] * (per_label > 0).sum())  # sums to 1: balanced accuracy
    new, old = np.concatenate(new_right).astype(float), np.concatenate(old_right).astype(float)
    d = new - old
    diff = float(w @ d)
    se = float(np.sqrt(((w * (d - diff)) ** 2).sum()))  # of a weighted mean of paired rows
    return {"previous": round(float(w @ old), 4), "updated": round(float(w @ new), 4),
            "difference": round(diff, 4), "noise": round(z * se, 4), "held_out_rows": len(te),
            "metric": "balanced_accuracy", "worse": bool(diff < -max(z * se, min_drop))}
