"""Fitting heads on embeddings, and how far to trust them: the fitters (registered by name),
stratified cross-validation, temperature calibration and the warnings shown with a record.

Shared by every kind that ends in a linear head (head, lora). Works on arrays: validation
happened before (adapters/validation.py), embedding happens in the kind's trainer.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Callable, Literal, Protocol, Union

import numpy as np
from pydantic import Field

from ..errors import InvalidExamples, InvalidOptions
from ..heads import LinearHead, activation_for
from ..validation import LabeledData

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class FitParams:
    """How to fit a head: the fitting method and its knobs (a kind's options map onto this)."""

    method: str = "logreg"
    c: float = 1.0
    temperature: float = 20.0
    threshold: float = 0.5
    seed: int = 0
    cv_folds: int = 5
    class_prior: "ClassPrior" = "uniform"


class HeadFitter(Protocol):
    def __call__(self, x: np.ndarray, y: np.ndarray, *, multi_label: bool, c: float,
                 temperature: float, seed: int,
                 sample_weight: np.ndarray | None = None) -> LinearHead: ...


HEAD_FITTERS: dict[str, HeadFitter] = {}
FITTED_INTERCEPT = {"logreg"}  # fitters whose intercept learns the label shares


def register_head(name: str) -> Callable[[HeadFitter], HeadFitter]:
    def deco(fn: HeadFitter) -> HeadFitter:
        HEAD_FITTERS[name] = fn
        return fn
    return deco


def class_weights(y: np.ndarray, n_labels: int) -> np.ndarray:
    """[rows] weights that give every label present the same total (n / (labels x n_j)):
    the likelihood of the calibration, so that a frequent label does not set the scale."""
    y = np.asarray(y, dtype=np.int64)
    counts = np.bincount(y, minlength=n_labels).astype(np.float64)
    return len(y) / (int((counts > 0).sum()) * counts[y])


# What the user says about how often each label occurs where the adapter will serve:
# "uniform" (the default: every label equally likely, whatever the examples' counts),
# "examples" (as often as in the examples: the fit of before issue 19), or {label: share}.
ClassPrior = Union[str, dict[str, float]]
ClassPriorOption = Union[Literal["uniform", "examples"],
                         Annotated[dict[str, Annotated[float, Field(gt=0, le=1e6)]],
                                   Field(min_length=1, max_length=10_000)]]


def class_prior_field() -> Any:
    """The ``class_prior`` option of every kind that ends in a single-label head."""
    return Field("uniform", description="how often each label occurs where the adapter serves: "
                 "uniform (default: labels weighed equally, whatever the examples' counts), "
                 "examples (as often as in the examples), or {label: share}")


def log_prior(labels: list[str], prior: ClassPrior) -> np.ndarray | None:
    """[labels] log shares of a stated prior, or None ("uniform" / "examples"). A label the
    prior leaves out gets the smallest share it names."""
    if not isinstance(prior, dict):
        return None
    unknown = sorted(set(prior) - set(labels))
    if unknown:
        raise InvalidOptions(f"options.class_prior names label(s) {unknown} that the adapter does "
                             f"not have; its labels are {labels}")
    floor = min(prior.values())
    shares = np.array([prior.get(lab, floor) for lab in labels], dtype=np.float64)
    return np.log(shares / shares.sum())


def log_frequencies(y: np.ndarray, n_labels: int) -> np.ndarray:
    """[labels] log share of each label among the rows; a label without rows (described
    only) gets the rarest present label's."""
    counts = np.bincount(np.asarray(y, dtype=np.int64), minlength=n_labels).astype(np.float64)
    counts[counts == 0] = counts[counts > 0].min()
    return np.log(counts / counts.sum())


def with_prior(head: LinearHead, labels: list[str], prior: ClassPrior,
               y: np.ndarray | None = None) -> LinearHead:
    """A single-label head moved from the label shares it learned to the user's (logit
    adjustment, Menon et al. 2021): bias_j += log prior_j - log share_j of ``y``, the rows a
    fitted intercept learned from (None: a head without a fitted intercept, e.g. zero-shot
    or centroid). "examples" leaves the head as fitted.

    Why (issue 19, benchmarks/research/imbalance.md): the L2 penalty keeps the weights on
    unit-length embeddings small, so the intercept carries the examples' label counts; 8/8
    -> 20/8 correct examples cost 17-30 points on the dev sets. Subtracting the learned log
    shares lost less than weighting the classes ("balanced"), on every dev set."""
    if prior == "examples" or head.activation != "softmax":
        return head
    shift = np.zeros(len(labels))
    stated = log_prior(labels, prior)
    if stated is not None:
        shift += stated
    if y is not None:
        shift -= log_frequencies(y, len(labels))
    if not shift.any():
        return head
    return LinearHead(head.weight, head.bias + _t(shift), head.activation)


def _t(a: np.ndarray) -> torch.Tensor:
    """float32 rows as a tensor (no copy when they are already); torch loads here, on the
    first fit, not with this module (the service's CLI process imports the kinds' options)."""
    import torch

    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))


@register_head("logreg")
def fit_logreg(x: np.ndarray, y: np.ndarray, *, multi_label: bool, c: float,
               temperature: float, seed: int, sample_weight: np.ndarray | None = None
               ) -> LinearHead:
    """L2-regularised logistic regression (lbfgs). Single-label: multinomial softmax.
    Multi-label: one binary regression per label, served with sigmoid.

    x [rows, dim]; y [rows] int label ids, or [rows, labels] 0/1 for multi-label.
    """
    from sklearn.linear_model import LogisticRegression

    if multi_label:
        ws, bs = [], []
        for j in range(y.shape[1]):
            clf = LogisticRegression(C=c, max_iter=2000, random_state=seed).fit(
                x, y[:, j], sample_weight=sample_weight)
            ws.append(clf.coef_[0])
            bs.append(clf.intercept_[0])
        return LinearHead(_t(np.stack(ws)), _t(np.array(bs)), activation_for(True))
    clf = LogisticRegression(C=c, max_iter=2000, random_state=seed).fit(
        x, y, sample_weight=sample_weight)
    w, b = clf.coef_, clf.intercept_
    if w.shape[0] == 1:  # binary: sklearn keeps one row; softmax([-z/2, z/2]) == sigmoid(z)
        w = np.concatenate([-w / 2, w / 2])
        b = np.concatenate([-b / 2, b / 2])
    return LinearHead(_t(w), _t(b), activation_for(False))


@register_head("centroid")
def fit_centroid(x: np.ndarray, y: np.ndarray, *, multi_label: bool, c: float,
                 temperature: float, seed: int, sample_weight: np.ndarray | None = None
                 ) -> LinearHead:
    """Nearest centroid by cosine: logit = temperature * cos(x, mean of the label's rows)."""
    if multi_label:
        raise InvalidExamples("the centroid head supports single-label adapters only; use "
                              "options.head = \"logreg\" for examples with `labels` lists")
    n_labels = int(y.max()) + 1
    w = np.ones(len(y)) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
    cents = np.stack([np.average(x[y == j], axis=0, weights=w[y == j]) for j in range(n_labels)])
    cents /= np.linalg.norm(cents, axis=1, keepdims=True).clip(min=1e-12)
    return LinearHead(_t(cents * temperature), _t(np.zeros(n_labels)), activation_for(False))


def fit(x: np.ndarray, data: LabeledData, p: FitParams) -> LinearHead:
    """The ``p.method`` fitter, moved to ``p.class_prior`` (single-label)."""
    head = HEAD_FITTERS[p.method](x, data.y, multi_label=data.multi_label, c=p.c,
                                  temperature=p.temperature, seed=p.seed)
    if data.multi_label:
        return head
    return with_prior(head, data.labels, p.class_prior,
                      data.y if p.method in FITTED_INTERCEPT else None)


# (training rows [n, dim], their labels) -> a head: a recipe that may add more than the rows
# (descriptions, unlabeled texts) but is always cross-validated on the labeled rows alone.
FitRows = Callable[[np.ndarray, np.ndarray], LinearHead]


def _predict(head: LinearHead, x: np.ndarray, multi_label: bool, threshold: float) -> np.ndarray:
    p = head.probabilities(_t(x)).numpy()
    return (p >= threshold).astype(np.int64) if multi_label else p.argmax(axis=1)


def cross_validate(x: np.ndarray, data: LabeledData, opts: FitParams,
                   fit_rows: FitRows | None = None) -> dict[str, Any] | None:
    """Stratified k-fold accuracy (single-label) or micro-F1 (multi-label) on the posted
    examples, refitting ``fit_rows`` (default: the ``opts.method`` fitter) on each fold's
    training rows. None when there are too few examples to hold any out."""
    from sklearn.model_selection import KFold, StratifiedKFold

    counts = data.counts()
    if data.multi_label:
        k = min(opts.cv_folds, len(data.items))
        splits = KFold(k, shuffle=True, random_state=opts.seed).split(x)
    else:
        present = [n for n in counts.values() if n > 0]  # (described-only labels have no rows)
        k = min(opts.cv_folds, min(present))
        if k < 2:
            return None
        splits = StratifiedKFold(k, shuffle=True, random_state=opts.seed).split(x, data.y)
    tp = fp = fn = correct = total = 0
    oof_logits: list[np.ndarray] = []
    oof_y: list[np.ndarray] = []
    for tr, te in splits:
        sub = LabeledData([], data.labels, data.y[tr], data.multi_label)
        if data.multi_label and (sub.y.all(axis=0).any() or (~sub.y.astype(bool)).all(axis=0).any()):
            return None  # a fold lacks positives or negatives of some label
        fold_head = fit_rows(x[tr], sub.y) if fit_rows else fit(x[tr], sub, opts)
        pred = _predict(fold_head, x[te], data.multi_label, opts.threshold)
        oof_logits.append(fold_head.logits(_t(x[te])).numpy())
        oof_y.append(data.y[te])
        if data.multi_label:
            truth = data.y[te]
            tp += int((pred & truth).sum())
            fp += int((pred & (1 - truth)).sum())
            fn += int(((1 - pred) & truth).sum())
        else:
            correct += int((pred == data.y[te]).sum())
            total += len(te)
    if data.multi_label:
        f1 = 2 * tp / max(2 * tp + fp + fn, 1)
        return {"cv_f1_micro": round(f1, 4), "cv_folds": k}
    oof = np.concatenate(oof_y)
    temperature = calibrate_temperature(
        np.concatenate(oof_logits), oof,
        None if opts.class_prior == "examples" else class_weights(oof, len(data.labels)))
    return {"cv_accuracy": round(correct / total, 4), "cv_folds": k, "calibration_scale": temperature}


def calibrate_temperature(logits: np.ndarray, y: np.ndarray,
                          weights: np.ndarray | None = None) -> float:
    """The logit scale that minimises the negative log-likelihood of out-of-fold predictions
    (temperature scaling, Guo et al. 2017). Scaling logits never changes the argmax, so the
    head's decisions stay exactly those of the fitted regression while its probabilities
    stop being washed out by the L2 penalty on tiny, normalised embeddings. The scale is
    capped at 10: on separable few-shot folds the likelihood always wants more, and that
    would make every answer look certain (``calibrate`` caps it further by the data).
    ``weights``: per-row weights of the likelihood (the balanced ones: a frequent label does
    not set the scale for all)."""
    best_t, best_nll = 1.0, float("inf")
    for t in np.geomspace(1.0, 10.0, 40):
        z = logits * t
        z = z - z.max(axis=1, keepdims=True)
        logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        nll = -np.average(logp[np.arange(len(y)), y], weights=weights)
        if nll < best_nll:
            best_t, best_nll = float(t), float(nll)
    return round(best_t, 4)


def confidence_bound(right: int, n: int) -> float:
    """How sure a head may be after ``right`` of ``n`` held-out predictions were right: the
    rule of succession, (right + 1) / (n + 2) (Laplace; the posterior mean of the chance of
    being right next time, under a uniform prior). 4 examples all right -> 0.83, 8 -> 0.90,
    40 -> 0.98, 400 -> 0.998: certainty has to be earned with data."""
    return (right + 1) / (n + 2)


def confidence_cap(head: LinearHead, x: np.ndarray, bound: float) -> float:
    """The largest logit scale at which ``head``'s mean top probability on its own examples
    ``x`` [rows, dim] stays within ``bound``. The examples are what a head is surest about
    (it was fitted on them), so answers on new inputs stay about as sure or less. The mean
    top probability grows with the scale, so bisection (in log space) finds it."""
    logits = head.logits(_t(x)).numpy()

    def sure(scale: float) -> float:
        z = logits * scale
        z = z - z.max(axis=1, keepdims=True)
        p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
        return float(p.max(axis=1).mean())
    lo, hi = 1e-3, 1e3  # scales: 1e-3 is as good as uniform, 1e3 as good as certain
    if sure(hi) <= bound:
        return hi
    if sure(lo) > bound:
        return lo
    for _ in range(40):
        mid = (lo * hi) ** 0.5
        lo, hi = (mid, hi) if sure(mid) <= bound else (lo, mid)
    return lo


def calibrate(head: LinearHead, x: np.ndarray, cv: dict[str, Any] | None
              ) -> tuple[LinearHead, dict[str, Any] | None]:
    """``head`` (fitted on all of ``x``) with its probabilities calibrated, and ``cv`` with
    the scale that was applied. Single-label only (decisions unchanged): the cross-validated
    temperature (``calibrate_temperature``), lowered when needed so that the head is, on its
    own examples, no surer on average than ``confidence_bound`` allows from the held-out
    predictions its estimate rests on. Without the cap a head trained on 4 examples
    answered 0.9999998 and 1.5e-17 (scale 10 on a 2-fold estimate)."""
    if not cv or "calibration_scale" not in cv:
        return head, cv
    n = len(x)
    bound = confidence_bound(round(cv["cv_accuracy"] * n), n)
    scale = min(cv["calibration_scale"], confidence_cap(head, x, bound))
    return head.scaled(scale), {**cv, "calibration_scale": round(scale, 4)}


UNBALANCED_RATIO = 2.0  # largest / smallest label count from which a record warns


def unbalanced_warning(counts: dict[str, int], class_prior: ClassPrior = "uniform") -> str:
    """What unbalanced examples mean for this adapter, and what to do about it."""
    hi_label, hi = max(counts.items(), key=lambda kv: kv[1])
    lo_label, lo = min(counts.items(), key=lambda kv: kv[1])
    said = (f"unbalanced examples: {hi_label!r} has {hi}, {lo_label!r} only {lo}. ")
    if class_prior == "examples":
        return said + ("options.class_prior = \"examples\", so predictions lean toward the "
                       "frequent labels as much as the examples do; use \"uniform\" (the default) "
                       "unless the labels really occur that unequally where you serve")
    how = ("as the shares in options.class_prior" if isinstance(class_prior, dict) else
           "as equally likely (options.class_prior = \"uniform\")")
    return said + (f"The head treats the labels {how}, not by their example counts; if the "
                   "labels occur unequally where you serve, set options.class_prior to their shares "
                   "(e.g. {\"" + hi_label + "\": 0.7, \"" + lo_label + "\": 0.3}). Adding examples of "
                   f"{lo_label!r} improves it most")


def assess(data: LabeledData, cv: dict[str, Any] | None,
           class_prior: ClassPrior = "uniform") -> list[str]:
    if data.zero_shot:
        pseudo = (cv or {}).get("pseudo_labels")  # zero-shot self-training (kinds/head.py)
        source = (f"the label descriptions and {pseudo} unlabeled texts they labeled" if pseudo
                  else "the label descriptions alone")
        return [f"zero-shot: trained from {source}, so there is no quality estimate; add labeled "
                "examples (POST /v1/adapters/{name}/examples, 8 or more per label recommended) to "
                "get one"]
    counts = data.counts()
    warnings = []
    bare = [lab for lab, n in counts.items() if n == 0]
    if bare:
        warnings.append(f"label(s) {bare} have a description but no example yet: they are "
                        "learned from the description alone and left out of the quality estimate")
        counts = {lab: n for lab, n in counts.items() if n > 0}
    lo_label, lo = min(counts.items(), key=lambda kv: kv[1])
    hi = max(counts.values())
    if cv is None:
        warnings.append(f"no quality estimate: label {lo_label!r} has {lo} example(s); post at least "
                        "2 per label (8 or more recommended) to get a cross-validated score")
    elif lo < 4:
        warnings.append(f"thin data: label {lo_label!r} has only {lo} examples; the quality estimate "
                        "is noisy below about 4 per label (8 or more recommended)")
    if lo > 0 and hi / lo >= UNBALANCED_RATIO:
        warnings.append(unbalanced_warning(counts, class_prior))
    if cv is not None and not data.multi_label:
        chance = 1 / len(data.labels)
        if cv["cv_accuracy"] < chance + 0.1:
            warnings.append(f"cross-validated accuracy {cv['cv_accuracy']:.2f} is close to chance "
                            f"({chance:.2f}); the labels may not be separable from these examples")
    return warnings


def fit_calibrated(x: np.ndarray, data: LabeledData, p: FitParams,
                   fit_rows: FitRows | None = None) -> tuple[LinearHead, dict[str, Any] | None]:
    """Fit on all rows, cross-validate, and calibrate the head's probabilities on the folds
    (single-label; decisions unchanged). Returns the head and the CV metrics (or None)."""
    head = fit_rows(x, data.y) if fit_rows else fit(x, data, p)
    return calibrate(head, x, cross_validate(x, data, p, fit_rows))
