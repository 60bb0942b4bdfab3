"""Recipes for issue 11 as small pure functions over frozen embeddings (numpy), so that phase 2
can move them into the adapter kind modules as they are.

Every recipe returns a ``Linear`` head: logits = x @ W.T + b over L2-normalised embeddings,
which is exactly what Tailor serves (adapters.heads.LinearHead). Zero-shot prototypes,
description priors, ensembles and heads refitted on pseudo-labels are all linear, so none of
them changes the serving path.

Shapes: x [rows, dim] float32, unit rows; y [rows] int label ids in 0..L-1; d [L, dim] the
label descriptions' embeddings (unit rows), in label order.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Linear:
    w: np.ndarray  # [labels, dim]
    b: np.ndarray  # [labels]

    def logits(self, x: np.ndarray) -> np.ndarray:
        return x @ self.w.T + self.b

    def proba(self, x: np.ndarray) -> np.ndarray:
        z = self.logits(x)
        z = z - z.max(axis=1, keepdims=True)
        p = np.exp(z)
        return p / p.sum(axis=1, keepdims=True)

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.logits(x).argmax(axis=1)

    def __add__(self, other: "Linear") -> "Linear":
        return Linear(self.w + other.w, self.b + other.b)

    def scaled(self, s: float) -> "Linear":
        return Linear(self.w * s, self.b * s)


def _unit(a: np.ndarray) -> np.ndarray:
    return a / np.linalg.norm(a, axis=-1, keepdims=True).clip(min=1e-12)


# -- examples alone (the service's head adapter today) -------------------------------------
def probe(x: np.ndarray, y: np.ndarray, n_labels: int, c: float = 1.0, seed: int = 0,
          sample_weight: np.ndarray | None = None) -> Linear:
    """L2 logistic regression (lbfgs), as adapters.heads.fit_logreg (softmax form). With
    ``sample_weight`` None this is the service's head adapter exactly."""
    from sklearn.linear_model import LogisticRegression

    present = np.unique(y)
    clf = LogisticRegression(C=c, max_iter=2000, random_state=seed)
    clf.fit(x, y, sample_weight=sample_weight)
    w = np.zeros((n_labels, x.shape[1]), np.float32)
    b = np.full(n_labels, -1e4, np.float32)  # a label with no rows is never predicted
    if len(present) == 2:
        w[present[0]], w[present[1]] = -clf.coef_[0] / 2, clf.coef_[0] / 2
        b[present[0]], b[present[1]] = -clf.intercept_[0] / 2, clf.intercept_[0] / 2
    else:
        w[present], b[present] = clf.coef_, clf.intercept_
    return Linear(w, b)


# -- descriptions alone: zero-shot -----------------------------------------------------------
def zero_shot(d: np.ndarray, center: np.ndarray | None = None, scale: float = 20.0) -> Linear:
    """Nearest description by cosine: logit_j = scale * cos(x - center, d_j) up to a per-row
    constant. ``center`` (e.g. the mean embedding of unlabeled texts, or of the descriptions)
    removes the direction every text shares, which otherwise favours the description that
    is closest to "any text"; it only adds a bias, so the head stays linear."""
    w = scale * d
    b = -w @ center if center is not None else np.zeros(len(d), np.float32)
    return Linear(w.astype(np.float32), b.astype(np.float32))


# -- examples + descriptions -----------------------------------------------------------------
def probe_with_description_rows(x: np.ndarray, y: np.ndarray, d: np.ndarray, weight: float = 1.0,
                                c: float = 1.0, seed: int = 0) -> Linear:
    """Each description is one more training row of its label, with ``weight`` (SetFit's
    zero-shot mode adds template sentences as examples; this is that on frozen embeddings)."""
    n = len(d)
    xa = np.concatenate([x, d]).astype(np.float32)
    ya = np.concatenate([y, np.arange(n)])
    sw = np.concatenate([np.ones(len(y)), np.full(n, weight)])
    return probe(xa, ya, n, c=c, seed=seed, sample_weight=sw)


def probe_plus_prototypes(x: np.ndarray, y: np.ndarray, d: np.ndarray, alpha: float = 0.5,
                          c: float = 1.0, seed: int = 0, center: np.ndarray | None = None,
                          scale: float = 20.0) -> Linear:
    """Logit ensemble: the examples' logistic head + alpha x the zero-shot head (still linear)."""
    return probe(x, y, len(d), c=c, seed=seed) + zero_shot(d, center, scale).scaled(alpha)


def logreg_prior(x: np.ndarray, y: np.ndarray, w0: np.ndarray, c: float = 1.0,
                 sample_weight: np.ndarray | None = None, iters: int = 200) -> Linear:
    """Multinomial logistic regression whose L2 penalty pulls W toward ``w0`` instead of 0:
    minimise C * sum_i sw_i * CE(x_i W^T + b, y_i) + 0.5 * ||W - w0||^2 (bias unpenalised).
    With w0 = 0 this is sklearn's objective. With w0 = s * descriptions, few examples leave
    the head near the zero-shot one and many examples override it (a MAP estimate under a
    Gaussian prior centred on the descriptions)."""
    import torch

    xt = torch.from_numpy(np.asarray(x, np.float64))
    yt = torch.from_numpy(np.asarray(y, np.int64))
    w0t = torch.from_numpy(np.asarray(w0, np.float64))
    sw = torch.ones(len(y), dtype=torch.float64) if sample_weight is None else \
        torch.from_numpy(np.asarray(sample_weight, np.float64))
    w = w0t.clone().requires_grad_(True)
    b = torch.zeros(len(w0), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1, max_iter=iters, line_search_fn="strong_wolfe",
                            tolerance_grad=1e-7, tolerance_change=1e-10)

    def closure():
        opt.zero_grad()
        ce = torch.nn.functional.cross_entropy(xt @ w.T + b, yt, reduction="none")
        loss = c * (sw * ce).sum() + 0.5 * ((w - w0t) ** 2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return Linear(w.detach().numpy().astype(np.float32), b.detach().numpy().astype(np.float32))


def description_prior(x: np.ndarray, y: np.ndarray, d: np.ndarray, strength: float = 5.0,
                      c: float = 1.0, center: np.ndarray | None = None) -> Linear:
    """``logreg_prior`` with w0 = strength * descriptions (centred when ``center`` is given,
    which only shifts the prior's bias, and the bias is refitted anyway)."""
    dd = d if center is None else _unit(d - center)
    return logreg_prior(x, y, strength * dd, c=c)


# -- + unlabeled texts -----------------------------------------------------------------------
def balanced_confident(p: np.ndarray, per_class: int, min_conf: float = 0.0) -> np.ndarray:
    """Indices of the ``per_class`` most confident rows of each predicted class (class-balanced
    pseudo-labels, so one dominant class cannot swallow the others), above ``min_conf``."""
    pred, conf = p.argmax(1), p.max(1)
    keep: list[int] = []
    for j in range(p.shape[1]):
        idx = np.flatnonzero((pred == j) & (conf >= min_conf))
        keep += idx[np.argsort(-conf[idx])][:per_class].tolist()
    return np.array(sorted(keep), dtype=np.int64)


def self_train(x: np.ndarray, y: np.ndarray, x_unl: np.ndarray, fit, start: Linear,
               rounds: int = 3, per_class: float = 0.5, min_conf: float = 0.0,
               pseudo_weight: float = 1.0) -> tuple[Linear, np.ndarray, np.ndarray]:
    """Self-training: label the unlabeled rows with the current head, keep the most confident
    ones per class (``per_class`` as a count, or as a fraction of unlabeled rows / labels,
    growing linearly over ``rounds``), refit ``fit(x, y, sample_weight)`` on examples +
    pseudo-labels. Returns the head and the final pseudo-labels (indices, labels)."""
    n_labels = start.w.shape[0]
    head = start
    idx = np.zeros(0, np.int64)
    for r in range(1, rounds + 1):
        p = head.proba(x_unl)
        k = int(per_class if per_class >= 1 else per_class * len(x_unl) / n_labels)
        idx = balanced_confident(p, max(1, k * r // rounds), min_conf)
        yl = p[idx].argmax(1)
        xa = np.concatenate([x, x_unl[idx]])
        ya = np.concatenate([y, yl])
        sw = np.concatenate([np.ones(len(y)), np.full(len(idx), pseudo_weight)])
        head = fit(xa, ya, sw)
    return head, idx, head.proba(x_unl)[idx].argmax(1) if len(idx) else idx


def label_spreading(x: np.ndarray, y: np.ndarray, x_unl: np.ndarray, n_labels: int,
                    k: int = 10, alpha: float = 0.8, prior: np.ndarray | None = None,
                    prior_weight: float = 1.0, iters: int = 30) -> np.ndarray:
    """Zhou et al. (2004) label spreading on a symmetric kNN cosine graph over examples +
    unlabeled rows. ``prior`` [unlabeled, labels] (e.g. a head's probabilities) seeds the
    unlabeled rows with ``prior_weight``. Returns [unlabeled, labels] label distributions."""
    xa = np.concatenate([x, x_unl])
    n = len(xa)
    sim = xa @ xa.T
    np.fill_diagonal(sim, -np.inf)
    nn = np.argpartition(-sim, k, axis=1)[:, :k]
    w = np.zeros((n, n), np.float32)
    rows = np.repeat(np.arange(n), k)
    w[rows, nn.ravel()] = np.maximum(sim[rows, nn.ravel()], 0)
    w = np.maximum(w, w.T)
    deg = w.sum(1).clip(min=1e-12)
    s = w / np.sqrt(deg[:, None] * deg[None, :])
    y0 = np.zeros((n, n_labels), np.float32)
    y0[np.arange(len(y)), y] = 1.0
    if prior is not None:
        y0[len(y):] = prior_weight * prior
    f = y0.copy()
    for _ in range(iters):
        f = alpha * (s @ f) + (1 - alpha) * y0
    f = f[len(y):]
    return f / f.sum(1, keepdims=True).clip(min=1e-12)


def refine_centroids(x: np.ndarray, y: np.ndarray, x_unl: np.ndarray, c0: np.ndarray,
                     rounds: int = 5, temperature: float = 20.0, unl_weight: float = 1.0
                     ) -> np.ndarray:
    """Transductive centroid refinement (soft k-means seeded by the labeled classes): each
    round, unlabeled rows are softly assigned to the current centroids and every centroid
    becomes the mean of its examples + its share of unlabeled rows. Returns unit [L, dim]."""
    c = _unit(c0)
    n_labels = len(c0)
    lab = np.zeros((len(x), n_labels), np.float32)
    lab[np.arange(len(y)), y] = 1
    for _ in range(rounds):
        z = temperature * x_unl @ c.T
        z -= z.max(1, keepdims=True)
        q = np.exp(z)
        q /= q.sum(1, keepdims=True)
        c = _unit(lab.T @ x + unl_weight * q.T @ x_unl + c0)
    return c


def class_means(x: np.ndarray, y: np.ndarray, n_labels: int) -> np.ndarray:
    return _unit(np.stack([x[y == j].mean(0) for j in range(n_labels)]))


# -- unlabeled texts for the label mix: prior shift (Saerens, Latinne & Decaestecker 2002) ----
def calibration_scale(x: np.ndarray, y: np.ndarray, fit, k: int = 4, seed: int = 0) -> float:
    """Temperature for ``fit``'s logits from out-of-fold predictions on the examples (as the
    service's head adapter calibrates: adapters.training.fitting.calibrate_temperature), here on a
    wider grid (0.5-50), since a prior-pulled head's logits can be far too flat."""
    from sklearn.model_selection import StratifiedKFold

    k = min(k, int(np.bincount(y).min()))
    logits, ys = [], []
    for tr, te in StratifiedKFold(k, shuffle=True, random_state=seed).split(x, y):
        logits.append(fit(x[tr], y[tr]).logits(x[te]))
        ys.append(y[te])
    z0, yy = np.concatenate(logits), np.concatenate(ys)
    best, best_nll = 1.0, np.inf
    for t in np.geomspace(0.5, 50, 60):
        z = z0 * t
        z = z - z.max(1, keepdims=True)
        nll = -(z[np.arange(len(yy)), yy] - np.log(np.exp(z).sum(1))).mean()
        if nll < best_nll:
            best, best_nll = float(t), nll
    return best


def label_mix(p_unl: np.ndarray, iters: int = 100) -> np.ndarray:
    """EM estimate of the label proportions of unlabeled texts, given calibrated posteriors
    computed under a uniform training mix (few-shot examples are balanced)."""
    n_labels = p_unl.shape[1]
    pi = np.full(n_labels, 1 / n_labels)
    for _ in range(iters):
        q = p_unl * pi * n_labels
        q /= q.sum(1, keepdims=True)
        pi = q.mean(0).clip(1e-4)
    return pi / pi.sum()


def shift_to_mix(head: Linear, scale: float, pi: np.ndarray) -> Linear:
    """Calibrated head whose bias moves from a uniform label mix to ``pi`` (still linear)."""
    return Linear(head.w * scale, head.b * scale + np.log(pi * len(pi)).astype(np.float32))
