"""Few-shot LoRA on the frozen IMAGE encoder (prototype of issue 14, phase 1).

The same phases as the text LoRA trainer (``adapters/lora_trainer.py``) and the same
losses, on prepared pixel rows instead of token ids:

1. ``train_embeddings``  -> LoRA weights on the encoder's attention ``q_proj``/``v_proj``
                            (``ImageEncoder.lora_targets``), by recipe:
                            setfit: contrastive pairs (lora_trainer's loss and batches);
                            ce: cross-entropy through LoRA + a cosine head from the class means
                            Optional augmentation of each batch (random resized crop, and a
                            horizontal flip when the domain allows one).
2. ``train_classifier``  -> a logreg head on the tuned embeddings, as a head adapter fits it

Training routes its LoRA weights through ``adapters.lora``'s context-local hooks; the shared
encoder's weights never change. Phase 2 folds this into the LoRA kind's module once the
``Encoder`` protocol gives both modalities ``prepare`` + ``features``.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from .heads import LinearHead
from .training.fitting import fit_logreg
from .encoders.image import ImageEncoder
from .training.jobs import Cancelled
from .encoders.lora import LoraSpec, LoraWeights, Routing, install_hooks, routed
from .kinds.lora import _batches, _contrastive_loss

Progress = Callable[[int, int, float], None]  # step, total, loss


@dataclass(frozen=True)
class ImageLoraOptions:
    recipe: str = "ce"  # "ce" | "setfit"
    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.1
    epochs: int = 20
    batch_size: int = 16
    learning_rate: float = 2e-3
    augment: bool = True  # random resized crop (+ flip)
    flip: bool = True  # horizontal flips keep the label (not for text or left/right X-rays)
    c: float = 1.0  # logreg head
    seed: int = 0

    def __post_init__(self) -> None:
        if self.recipe not in ("ce", "setfit"):
            raise ValueError(f"recipe must be ce or setfit, got {self.recipe!r}")


def augment(x: torch.Tensor, g: torch.Generator, flip: bool) -> torch.Tensor:
    """Random resized crop (70-100% of the area) and a horizontal flip, as one affine warp.
    x [n, 3, H, W] normalized; borders repeat the edge pixels (normalization-agnostic)."""
    n = x.shape[0]
    s = torch.sqrt(0.7 + 0.3 * torch.rand(n, generator=g))  # side fraction
    t = (torch.rand(n, 2, generator=g) * 2 - 1) * (1 - s[:, None])
    sign = torch.where(torch.rand(n, generator=g) < 0.5, -1.0, 1.0) if flip else torch.ones(n)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 0, 2] = s * sign, t[:, 0]
    theta[:, 1, 1], theta[:, 1, 2] = s, t[:, 1]
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def train_embeddings(encoder: ImageEncoder, pixel_values: torch.Tensor, y: np.ndarray,
                     opts: ImageLoraOptions = ImageLoraOptions(), progress: Progress | None = None,
                     should_stop: Callable[[], bool] | None = None) -> tuple[LoraWeights, float]:
    """pixel_values [n, 3, H, W] (``encoder.prepare``), y [n] label ids -> LoRA weights and
    the last epoch's mean loss."""
    if not encoder.lora_targets:
        raise ValueError(f"{encoder.model_type} has no attention projections to adapt; "
                         "use a head adapter on this backbone")
    torch.manual_seed(opts.seed)
    rng = random.Random(opts.seed)
    g = torch.Generator().manual_seed(opts.seed)
    spec = LoraSpec(rank=opts.rank, alpha=opts.alpha, targets=encoder.lora_targets)
    install_hooks(encoder.model, spec.targets)
    lw = LoraWeights.init(encoder.model, spec, seed=opts.seed)
    params = lw.parameters()
    for p in params:
        p.requires_grad_(True)
    y_all = torch.from_numpy(y)
    head_w = None
    if opts.recipe == "ce":  # cosine head from the frozen class means, tuned along
        with torch.inference_mode():
            x0 = encoder.features(pixel_values)
        cents = torch.stack([x0[y_all == j].mean(0) for j in range(int(y.max()) + 1)])
        head_w = F.normalize(cents, dim=1).clone().requires_grad_(True)
        params = params + [head_w]
    optim = torch.optim.AdamW(params, lr=opts.learning_rate, weight_decay=0.0)
    per_epoch = len(_batches(y, opts.batch_size, random.Random(0)))
    total, step, last = opts.epochs * per_epoch, 0, float("nan")
    for _ in range(opts.epochs):
        losses = []
        for batch in _batches(y, opts.batch_size, rng):
            if should_stop and should_stop():
                raise Cancelled("training was cancelled")
            for group in optim.param_groups:  # cosine decay: few steps, no warm-up
                group["lr"] = opts.learning_rate * 0.5 * (1 + math.cos(math.pi * step / total))
            xb = pixel_values[batch]
            if opts.augment:
                xb = augment(xb, g, opts.flip)
            with routed(Routing(((0, len(batch), lw),), dropout=opts.dropout)):
                emb = encoder.features(xb)  # [rows, dim], unit length
            yb = y_all[batch]
            if head_w is None:
                loss = _contrastive_loss(emb, yb)
            else:
                loss = F.cross_entropy(20.0 * emb @ F.normalize(head_w, dim=1).T, yb)
            optim.zero_grad()
            loss.backward()
            optim.step()
            losses.append(loss.item())
            step += 1
            if progress:
                progress(step, total, losses[-1])
        last = float(np.mean(losses))
    return LoraWeights(spec, {k: v.detach() for k, v in lw.a.items()},
                       {k: v.detach() for k, v in lw.b.items()}), last


def train_classifier(encoder: ImageEncoder, pixel_values: torch.Tensor, y: np.ndarray,
                     lw: LoraWeights | None, opts: ImageLoraOptions = ImageLoraOptions()) -> LinearHead:
    """The logreg head on the (tuned) embeddings, as served: no dropout, no augmentation."""
    x = encoder.embed_prepared(pixel_values, None if lw is None else [lw] * len(y))
    return fit_logreg(x.numpy().astype(np.float32), y, multi_label=False, c=opts.c,
                      temperature=20.0, seed=opts.seed)


def train_image_lora(encoder: ImageEncoder, pixel_values: torch.Tensor, y: np.ndarray,
                     opts: ImageLoraOptions = ImageLoraOptions(),
                     progress: Progress | None = None) -> tuple[LoraWeights, LinearHead, float]:
    lw, loss = train_embeddings(encoder, pixel_values, y, opts, progress)
    return lw, train_classifier(encoder, pixel_values, y, lw, opts), loss
