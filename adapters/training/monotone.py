"""The check before an update becomes ``latest``: is the new recipe, fitted on the previous
examples plus the new ones, at least as good as the previous version's recipe fitted on the
previous examples alone, on the same held-out folds? (DESIGN.md: "More correct examples never
make an adapter worse".)

Both sides see the same rows and are scored on the same held-out rows, which include the new
examples: those are what the user just said the adapter should get right. They differ in
what they train on (per fold: all the training rows, or the previous version's examples
among them) and, when the update changed the options, in the recipe. A recipe is anything
that predicts held-out rows from training rows: a head on embeddings (in the request, ten
fits) or a LoRA training per fold (kinds lora and auto, in their jobs).

Scored by balanced accuracy (the mean of per-label recalls), because corrections are
one-sided: with 20/8 examples, plain accuracy on the held-out rows rewards a head that leans
toward the frequent label, which is the failure this check is there to catch. "Worse by more
than the noise" is a paired difference below ``-z`` standard errors (the rows are the pairs)
and below ``-min_drop``.
"""
from __future__ import annotations

from typing import Callable, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from .fitting import FitRows

Z, MIN_DROP = 2.0, 0.01  # chosen in benchmarks/bench_monotone.py (see RESULTS.md)

# (training rows, held-out rows) -> predicted label ids of the held-out rows
FoldPredict = Callable[[np.ndarray, np.ndarray], np.ndarray]


class UpdateCheck(BaseModel):
    """The check's verdict, stored in the new version's metrics (``update_check``) and its
    ``changes``, and read back by whoever decides what ``latest`` serves."""

    model_config = ConfigDict(frozen=True)
    previous: float = Field(description="balanced accuracy of the replaced version's recipe "
                            "on its own examples, on the held-out folds")
    updated: float = Field(description="the same for the update's recipe on all examples")
    difference: float = Field(description="updated - previous, paired over held-out rows")
    noise: float = Field(ge=0, description="z standard errors of that difference")
    held_out_rows: int = Field(ge=0)
    metric: Literal["balanced_accuracy"] = "balanced_accuracy"
    worse: bool = Field(description="worse by more than the noise (and than MIN_DROP)")


def update_folds(y: np.ndarray, previous: np.ndarray, n_labels: int, folds: int,
                 seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """Stratified folds (train, held-out) over all examples on which both sides can be fitted;
    none when there is nothing new, or fewer than 2 examples of some label on either side."""
    from sklearn.model_selection import StratifiedKFold

    counts = np.bincount(y, minlength=n_labels)
    k = min(folds, int(counts.min()))
    if k < 2 or np.bincount(y[previous], minlength=n_labels).min() < 2 or previous.all():
        return []
    return [(tr, te) for tr, te in StratifiedKFold(k, shuffle=True, random_state=seed).split(y, y)
            if np.bincount(y[tr[previous[tr]]], minlength=n_labels).min() >= 1]


def paired_difference(y: np.ndarray, new_right: np.ndarray, old_right: np.ndarray,
                      n_labels: int, z: float = Z, min_drop: float = MIN_DROP) -> UpdateCheck:
    """The check's verdict from per-row correctness of both sides on the same held-out rows
    (``y`` their labels): balanced accuracies, their paired difference and its noise."""
    per_label = np.bincount(y, minlength=n_labels).astype(np.float64)
    w = 1.0 / (per_label[y] * (per_label > 0).sum())  # sums to 1: balanced accuracy
    new, old = new_right.astype(float), old_right.astype(float)
    d = new - old
    diff = float(w @ d)
    se = float(np.sqrt(((w * (d - diff)) ** 2).sum()))  # of a weighted mean of paired rows
    return UpdateCheck(previous=round(float(w @ old), 4), updated=round(float(w @ new), 4),
                       difference=round(diff, 4), noise=round(z * se, 4), held_out_rows=len(y),
                       worse=bool(diff < -max(z * se, min_drop)))


def compare_update(y: np.ndarray, previous: np.ndarray, n_labels: int, new: FoldPredict,
                   old: FoldPredict, folds: int = 5, seed: int = 0, z: float = Z,
                   min_drop: float = MIN_DROP) -> UpdateCheck | None:
    """y [rows] label ids of all examples, previous [rows] bool: the rows the previous
    version was trained on. ``new`` is given each fold's training rows, ``old`` only the
    previous ones among them. None when no fold can be fitted both ways."""
    held, new_right, old_right = [], [], []
    for tr, te in update_folds(y, previous, n_labels, folds, seed):
        new_right.append(new(tr, te) == y[te])
        old_right.append(old(tr[previous[tr]], te) == y[te])
        held.append(te)
    if not held:
        return None
    return paired_difference(y[np.concatenate(held)], np.concatenate(new_right),
                             np.concatenate(old_right), n_labels, z, min_drop)


def head_predict(x: np.ndarray, y: np.ndarray, fit_rows: FitRows) -> FoldPredict:
    """A head recipe on fixed embeddings x [rows, dim] as a ``FoldPredict``."""
    return lambda tr, te: fit_rows(x[tr], y[tr]).predict(x[te])
