"""Few-shot training of LoRA adapters, in named phases (cf. setfit ``Trainer.train``):

1. ``validate_examples`` -> texts and label ids (single-label), or a 4xx-mapped error
2. ``baseline``          -> head-only cross-validated accuracy on frozen embeddings: the
                            honest quality estimate (LoRA saw every example, so a CV of the
                            tuned embeddings would flatter it)
3. ``train_embeddings``  -> LoRA weights, by recipe:
                            setfit: contrastive, every pair in a batch pulled to cosine 1 (same
                            label) or 0 (different), as SetFit's CosineSimilarityLoss;
                            ce: cross-entropy through LoRA + a cosine head
4. ``train_classifier``  -> a logreg head fitted on the tuned embeddings, calibrated

Training reads the shared backbone through its own context-local routing and never changes
its weights. The trainer returns an artifact; publishing it is the store's job.
"""
from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from .backbone import Backbone, mean_pool
from .config import HeadOptions, Limits, LoraOptions
from .errors import InvalidExamples
from .heads import LinearHead
from .jobs import Cancelled
from .lora import LoraSpec, LoraWeights, Routing, install_hooks, routed
from .trainer import LabeledData, assess, cross_validate, fit, validate_examples

Progress = Callable[[int, int, float], None]  # step, total, loss


@dataclass
class LoraArtifact:
    """A trained LoRA adapter (LoRA A/B + head), ready to be published by the store."""

    labels: list[str]
    head: LinearHead
    lora: LoraWeights
    options: dict[str, Any]
    metrics: dict[str, Any]
    warnings: list[str] = field(default_factory=list)
    multi_label: bool = False
    kind: str = "lora"

    def tensors(self) -> dict[str, torch.Tensor]:
        return {**self.head.tensors(), **self.lora.tensors()}

    def meta(self) -> dict[str, Any]:
        return {"labels": self.labels, "multi_label": False, "options": self.options,
                "metrics": self.metrics, "warnings": self.warnings, "lora": self.lora.spec.as_dict()}


def _head_opts(opts: LoraOptions) -> HeadOptions:
    return HeadOptions(c=opts.c, seed=opts.seed, cv_folds=opts.cv_folds)


def _batches(y: np.ndarray, batch_size: int, rng: random.Random) -> list[list[int]]:
    """One epoch of batches in which every label appears in pairs, so each batch has
    positive pairs for the contrastive loss."""
    blocks: list[list[int]] = []
    for lab in np.unique(y):
        idx = [int(i) for i in np.flatnonzero(y == lab)]
        rng.shuffle(idx)
        blocks += [idx[i:i + 2] for i in range(0, len(idx), 2)]
    rng.shuffle(blocks)
    flat = [i for b in blocks for i in b]
    return [flat[i:i + batch_size] for i in range(0, len(flat), batch_size)]


def _contrastive_loss(emb: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """emb [rows, dim] unit vectors. Squared error of every pair's cosine against 1 (same
    label) / 0 (different); positives and negatives weigh half each."""
    sim = emb @ emb.T  # [rows, rows]
    same = (y[:, None] == y[None, :]).float()
    off = 1 - torch.eye(len(y))
    err = (sim - same) ** 2 * off
    pos, neg = same * off, (1 - same) * off
    loss = torch.zeros(())
    parts = [(err * pos).sum() / pos.sum() if pos.sum() > 0 else None,
             (err * neg).sum() / neg.sum() if neg.sum() > 0 else None]
    parts = [p for p in parts if p is not None]
    for p in parts:
        loss = loss + p / len(parts)
    return loss


def train_embeddings(backbone: Backbone, data: LabeledData, opts: LoraOptions,
                     progress: Progress | None = None,
                     should_stop: Callable[[], bool] | None = None) -> tuple[LoraWeights, float]:
    """Tune LoRA weights on the examples. Returns the weights and the last epoch's mean loss."""
    torch.manual_seed(opts.seed)
    rng = random.Random(opts.seed)
    spec = LoraSpec(opts.rank, opts.alpha, tuple(opts.targets))
    install_hooks(backbone.model, spec.targets)
    lw = LoraWeights.init(backbone.model, spec, seed=opts.seed)
    params = lw.parameters()
    for p in params:
        p.requires_grad_(True)
    y_all = torch.from_numpy(data.y)
    head_w = None
    if opts.recipe == "ce":  # cosine head from the frozen class means, tuned along
        with torch.inference_mode():
            x = backbone.embed(data.texts)
        cents = torch.stack([x[y_all == j].mean(0) for j in range(len(data.labels))])
        head_w = F.normalize(cents, dim=1).clone().requires_grad_(True)
        params = params + [head_w]
    optim = torch.optim.AdamW(params, lr=opts.learning_rate, weight_decay=0.0)
    per_epoch = len(_batches(data.y, opts.batch_size, random.Random(0)))
    total, step, last = opts.epochs * per_epoch, 0, float("nan")
    for _ in range(opts.epochs):
        losses = []
        for batch in _batches(data.y, opts.batch_size, rng):
            if should_stop and should_stop():
                raise Cancelled("training was cancelled")
            enc = backbone.tokenize([data.texts[i] for i in batch], max_length=opts.max_length)
            with routed(Routing(((0, len(batch), lw),), dropout=opts.dropout)):
                hidden = backbone.model(**enc).last_hidden_state  # [rows, seq, dim]
            emb = mean_pool(hidden, enc["attention_mask"])  # [rows, dim]
            yb = y_all[batch]
            if head_w is None:
                loss = _contrastive_loss(emb, yb)
            else:
                loss = F.cross_entropy(20.0 * emb @ F.normalize(head_w, dim=1).T, yb)
            optim.zero_grad()
            loss.backward()
            optim.step()
            losses.append(float(loss.detach()))
            step += 1
            if progress:
                progress(step, total, losses[-1])
        last = float(np.mean(losses))
    for p in lw.parameters():
        p.requires_grad_(False)
    return LoraWeights(spec, {k: v.detach() for k, v in lw.a.items()},
                       {k: v.detach() for k, v in lw.b.items()}), last


def train_lora(backbone: Backbone, examples: Any, options: dict[str, Any] | None,
               limits: Limits = Limits(), progress: Progress | None = None,
               should_stop: Callable[[], bool] | None = None) -> LoraArtifact:
    """Train a LoRA adapter (LoRA weights + logreg head) from labeled examples."""
    t0 = time.perf_counter()
    opts_raw = dict(options or {})
    label_order = opts_raw.pop("labels", None)
    opts = LoraOptions.parse(opts_raw)
    data = validate_examples(examples, limits, label_order)
    if data.multi_label:
        raise InvalidExamples("LoRA adapters are single-label for now; use kind \"head\" for "
                              "examples with `labels` lists")
    hopts = _head_opts(opts)
    # phase 2: the honest estimate, from frozen embeddings
    x0 = backbone.embed(data.texts).numpy().astype(np.float32)
    baseline = cross_validate(x0, data, hopts)
    # phase 3
    lw, loss = train_embeddings(backbone, data, opts, progress, should_stop)
    # phase 4: head on the tuned embeddings (as served: full length, inference)
    x = backbone.embed(data.texts, [lw] * len(data.texts)).numpy().astype(np.float32)
    head = fit(x, data, hopts)
    tuned_cv = cross_validate(x, data, hopts)
    if tuned_cv and "calibration_scale" in tuned_cv:
        s = tuned_cv["calibration_scale"]
        head = LinearHead(head.weight * s, head.bias * s, head.activation)
    metrics: dict[str, Any] = {"examples": len(data.texts), "per_label": data.counts(),
                               "train_loss": round(loss, 5),
                               "train_seconds": round(time.perf_counter() - t0, 2)}
    if baseline:
        metrics["cv_accuracy_head_only"] = baseline["cv_accuracy"]
    if tuned_cv:
        metrics["cv_accuracy_tuned"] = tuned_cv["cv_accuracy"]  # optimistic: LoRA saw all rows
    stored = opts.model_dump(mode="json")
    if label_order is not None:
        stored["labels"] = list(label_order)
    return LoraArtifact(labels=data.labels, head=head, lora=lw, options=stored, metrics=metrics,
                        warnings=assess(data, baseline))
