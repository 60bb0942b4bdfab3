"""The served form of every classification head: a linear map to one logit per label, then
softmax (single-label) or sigmoid (multi-label).

However a head is fitted (adapters/training/fitting.py), it is stored as two tensors and
served as one small matmul, so many tenants' heads run after one shared backbone pass.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np

if TYPE_CHECKING:  # a head is tensors, so torch is loaded by whoever made them
    import torch

Activation = Literal["softmax", "sigmoid"]


def activation_for(multi_label: bool) -> Activation:
    """The one rule: independent labels get a sigmoid each, exclusive labels a softmax."""
    return "sigmoid" if multi_label else "softmax"


@dataclass
class LinearHead:
    weight: torch.Tensor  # [labels, dim]
    bias: torch.Tensor  # [labels]
    activation: Activation

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
        return z.softmax(dim=-1) if self.activation == "softmax" else z.sigmoid()

    def predict(self, x: np.ndarray) -> np.ndarray:
        """x [rows, dim] (numpy) -> [rows] label ids (single-label)."""
        import torch

        return self.logits(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))).argmax(1).numpy()

    def scaled(self, scale: float) -> "LinearHead":
        """The same decisions with logits times ``scale`` (temperature calibration)."""
        return LinearHead(self.weight * scale, self.bias * scale, self.activation)

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"head.weight": self.weight.contiguous(), "head.bias": self.bias.contiguous()}

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor], multi_label: bool) -> "LinearHead":
        return cls(tensors["head.weight"].float(), tensors["head.bias"].float(),
                   activation_for(multi_label))
