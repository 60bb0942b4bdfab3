"""Classification heads on frozen sentence embeddings.

Every head, however it is fitted, is served the same way: a linear map to one logit per
label followed by softmax (single-label) or sigmoid (multi-label). So a stored head is two
tensors plus an activation name, and serving many heads is one small matmul each.

Fitting methods register themselves by name (cf. peft ``register_peft_method``); the
``head`` option of an adapter picks one.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol

import numpy as np
import torch

from .errors import InvalidExamples


@dataclass
class LinearHead:
    weight: torch.Tensor  # [labels, dim]
    bias: torch.Tensor  # [labels]
    activation: str  # "softmax" | "sigmoid"

    def __post_init__(self) -> None:
        if self.activation not in ("softmax", "sigmoid"):
            raise ValueError(f"activation must be softmax or sigmoid, got {self.activation!r}")
        if self.weight.ndim != 2 or self.bias.shape != (self.weight.shape[0],):
            raise ValueError(f"head shapes do not match: weight {tuple(self.weight.shape)}, "
                             f"bias {tuple(self.bias.shape)}")

    @property
    def num_labels(self) -> int:
        return int(self.weight.shape[0])

    @property
    def dim(self) -> int:
        return int(self.weight.shape[1])

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """x [rows, dim] -> [rows, labels]"""
        return x @ self.weight.T + self.bias

    def probabilities(self, x: torch.Tensor) -> torch.Tensor:
        z = self.logits(x)
        return torch.softmax(z, dim=-1) if self.activation == "softmax" else torch.sigmoid(z)

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"head.weight": self.weight.contiguous(), "head.bias": self.bias.contiguous()}

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor], activation: str) -> "LinearHead":
        return cls(tensors["head.weight"].float(), tensors["head.bias"].float(), activation)


class HeadFitter(Protocol):
    def __call__(self, x: np.ndarray, y: np.ndarray, *, multi_label: bool, c: float,
                 temperature: float, seed: int) -> LinearHead: ...


HEAD_FITTERS: dict[str, HeadFitter] = {}


def register_head(name: str) -> Callable[[HeadFitter], HeadFitter]:
    def deco(fn: HeadFitter) -> HeadFitter:
        HEAD_FITTERS[name] = fn
        return fn
    return deco


def _t(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))


@register_head("logreg")
def fit_logreg(x: np.ndarray, y: np.ndarray, *, multi_label: bool, c: float,
               temperature: float, seed: int) -> LinearHead:
    """L2-regularised logistic regression (lbfgs). Single-label: multinomial softmax.
    Multi-label: one binary regression per label, served with sigmoid.

    x [rows, dim]; y [rows] int label ids, or [rows, labels] 0/1 for multi-label.
    """
    from sklearn.linear_model import LogisticRegression

    if multi_label:
        ws, bs = [], []
        for j in range(y.shape[1]):
            clf = LogisticRegression(C=c, max_iter=2000, random_state=seed).fit(x, y[:, j])
            ws.append(clf.coef_[0])
            bs.append(clf.intercept_[0])
        return LinearHead(_t(np.stack(ws)), _t(np.array(bs)), "sigmoid")
    clf = LogisticRegression(C=c, max_iter=2000, random_state=seed).fit(x, y)
    w, b = clf.coef_, clf.intercept_
    if w.shape[0] == 1:  # binary: sklearn keeps one row; softmax([-z/2, z/2]) == sigmoid(z)
        w = np.concatenate([-w / 2, w / 2])
        b = np.concatenate([-b / 2, b / 2])
    return LinearHead(_t(w), _t(b), "softmax")


@register_head("centroid")
def fit_centroid(x: np.ndarray, y: np.ndarray, *, multi_label: bool, c: float,
                 temperature: float, seed: int) -> LinearHead:
    """Nearest centroid by cosine: logit = temperature * cos(x, mean of the label's rows)."""
    if multi_label:
        raise InvalidExamples("the centroid head supports single-label adapters only; use "
                              "options.head = \"logreg\" for examples with `labels` lists")
    n_labels = int(y.max()) + 1
    cents = np.stack([x[y == j].mean(axis=0) for j in range(n_labels)])
    cents /= np.linalg.norm(cents, axis=1, keepdims=True).clip(min=1e-12)
    return LinearHead(_t(cents * temperature), torch.zeros(n_labels), "softmax")
