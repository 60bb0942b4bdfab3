"""``kind: "lora"``: LoRA weights on the shared backbone plus a logistic head, trained by a
background job in a worker process (202 + job), in named phases (cf. setfit ``Trainer.train``):

1. ``baseline``          -> head-only cross-validated accuracy on frozen embeddings: the
                            honest quality estimate (LoRA saw every example, so a CV of the
                            tuned embeddings would flatter it)
2. ``train_embeddings``  -> LoRA weights, by recipe:
                            setfit: contrastive, every pair in a batch pulled to cosine 1 (same
                            label) or 0 (different), as SetFit's CosineSimilarityLoss;
                            ce: cross-entropy through LoRA + a cosine head
3. ``train_classifier``  -> a logreg head fitted on the tuned embeddings, calibrated

Training reads the shared backbone through its own context-local routing and never changes
its weights. Served rows get their low-rank update inside the one batched forward
(adapters/encoders/lora.py); export merges it into a fresh copy (``kinds.base.merge_lora``).
"""
from __future__ import annotations

import random
import time
from typing import TYPE_CHECKING, Annotated, Literal

import numpy as np
from pydantic import Field, StringConstraints

from ..encoders.base import Encoder, TorchEncoder
from ..encoders.lora import LoraSpec, LoraWeights, Routing, install_hooks, routed
from ..errors import InvalidExamples
from ..options import AdapterOptions
from ..storage import Artifact
from ..heads import LinearHead
from ..training.fitting import (ClassPriorOption, FitParams, FitRows, assess, class_prior_field,
                                cross_validate, fit, fit_calibrated, with_prior)
from ..training.recipes import PRIOR_STRENGTH, balanced_pseudo_labels, description_prior, fit_prior
from ..training.jobs import Cancelled
from ..training.monotone import FoldPredict, UpdateCheck, compare_update, head_predict
from ..validation import LabeledData
from .base import (AdapterKind, Progress, StopCheck, TrainRequest, register_kind,
                   require_examples)
from .head import head_recipe
from .metrics import TrainingMetrics, lora_lines

if TYPE_CHECKING:  # torch loads when a LoRA trains: the kind is declared (options) without it
    import torch

# A Linear module's last name part (e.g. "query"): echoed in answers and stored in manifests.
ModuleName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")]


class LoraOptions(AdapterOptions):
    """Options of a ``kind: "lora"`` adapter. The defaults were chosen by measurement at 8
    examples per label (benchmarks/bench_lora.py); unknown keys are refused."""

    recipe: Literal["setfit", "ce"] = Field(
        "setfit", description="setfit: contrastive pairs tune LoRA, then a logreg head is fitted on "
        "the tuned embeddings; ce: cross-entropy through LoRA + head, then the head is refitted")
    rank: int = Field(8, ge=1, le=64, description="LoRA rank")
    alpha: float = Field(16.0, gt=0, le=1024, description="LoRA alpha (scaling = alpha / rank)")
    dropout: float = Field(0.1, ge=0, lt=1, description="dropout on the LoRA input while training")
    targets: tuple[ModuleName, ...] = Field(("query", "value"), min_length=1, max_length=16,
                                            description="names of the backbone Linear layers to adapt")
    epochs: int = Field(8, ge=1, le=100, description="passes over the examples")
    batch_size: int = Field(16, ge=2, le=256, description="rows per training step")
    learning_rate: float = Field(1e-3, gt=0, le=1, description="AdamW learning rate of the LoRA weights")
    max_length: int = Field(128, ge=8, le=512, description="tokens per example while training")
    c: float = Field(1.0, gt=0, le=1e6, description="inverse L2 strength of the final logreg head")
    seed: int = Field(0, ge=0, le=2**31 - 1)
    cv_folds: int = Field(5, ge=2, le=10, description="folds of the head-only quality estimate")
    prior_strength: float = Field(
        PRIOR_STRENGTH, ge=0, le=100, description="label descriptions: how strongly the final head "
        "is pulled toward them (they also join training as one example of their label)")
    pseudo_fraction: float = Field(
        0.1, ge=0, le=1, description="unlabeled texts: the share (per label) that the first LoRA "
        "labels most confidently and a second LoRA then learns from (0: ignore unlabeled texts)")
    max_pseudo_per_label: int = Field(64, ge=1, le=10_000, description="cap on pseudo-labels per label")
    student_steps: float = Field(2.0, gt=0, le=10, description="steps of the second LoRA, as a "
                                 "multiple of the first one's")
    unlabeled_sample: int = Field(2000, ge=1, le=100_000, description="at most this many unlabeled "
                                  "texts (a seeded sample) are labeled by the first LoRA")

    class_prior: ClassPriorOption = class_prior_field()

    def fit_params(self) -> FitParams:
        return FitParams("logreg", c=self.c, seed=self.seed, cv_folds=self.cv_folds,
                         class_prior=self.class_prior)


class LoraMetrics(TrainingMetrics):
    """What training LoRA measured. The honest estimate is a head on FROZEN embeddings,
    cross-validated (a lower bound): LoRA saw every example, so a cross-validation on the
    tuned embeddings (``cv_accuracy_tuned``) flatters it."""

    ESTIMATES = ("cv_accuracy_head_only",)
    train_loss: float
    train_seconds: float
    label_descriptions: int | None = None
    unlabeled: int | None = None
    pseudo_labels: int | None = None
    cv_accuracy_head_only: float | None = Field(None, ge=0, le=1)
    cv_accuracy_tuned: float | None = Field(None, ge=0, le=1)

    def describe(self) -> list[str]:
        lines = []
        if self.cv_accuracy_head_only is not None:
            lines.append(f"quality estimate: cross-validated accuracy of a head on frozen "
                         f"embeddings {self.cv_accuracy_head_only:.3f} (a lower bound; LoRA "
                         "usually does better)")
        return [*lines, *lora_lines(self.cv_accuracy_tuned, self.train_seconds)]


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
    batches = [flat[i:i + batch_size] for i in range(0, len(flat), batch_size)]
    if len(batches) > 1 and len(batches[-1]) < 2:
        # one row makes no pair: its loss would be a constant without a gradient (an update
        # to 33 examples in batches of 16 failed its job with "does not require grad")
        last = batches.pop()
        batches[-1] += last
    return batches


def _contrastive_loss(emb: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """emb [rows, dim] unit vectors. Squared error of every pair's cosine against 1 (same
    label) / 0 (different); positives and negatives weigh half each."""
    import torch

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


def for_encoder(opts: LoraOptions, encoder: TorchEncoder) -> LoraOptions:
    """``targets`` left at its default means "this backbone's attention query/value": an
    encoder that names them otherwise (``lora_targets``: q_proj/v_proj in transformers'
    vision transformers) gets its own names."""
    own = tuple(encoder.lora_targets or ())
    if "targets" in opts.model_fields_set or not own or own == tuple(opts.targets):
        return opts
    return opts.model_copy(update={"targets": own})


def train_embeddings(encoder: TorchEncoder, data: LabeledData, opts: LoraOptions,
                     progress: Progress | None = None,
                     should_stop: StopCheck | None = None) -> tuple[LoraWeights, float]:
    """Tune LoRA weights on the examples. Returns the weights and the last epoch's mean loss."""
    import torch
    import torch.nn.functional as F

    opts = for_encoder(opts, encoder)
    torch.manual_seed(opts.seed)
    rng = random.Random(opts.seed)
    spec = LoraSpec(rank=opts.rank, alpha=opts.alpha, targets=tuple(opts.targets))
    install_hooks(encoder.model, spec.targets)
    lw = LoraWeights.init(encoder.model, spec, seed=opts.seed)
    params = lw.parameters()
    for p in params:
        p.requires_grad_(True)
    y_all = torch.from_numpy(data.y)
    rows = encoder.prepare(data.items, max_length=opts.max_length)  # tokenized once
    head_w = None
    if opts.recipe == "ce":  # cosine head from the frozen class means, tuned along
        with torch.inference_mode():
            x = encoder.embed(data.items)
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
            with routed(Routing(((0, len(batch), lw),), dropout=opts.dropout)):
                emb = encoder.forward(encoder.collate([rows[i] for i in batch]))  # [rows, dim]
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


def check_lora(request: TrainRequest) -> None:
    require_examples("lora", request)
    bare = [lab for lab, n in request.data.counts().items() if n == 0]
    if bare:
        raise InvalidExamples(f"LoRA training needs examples of every label; label(s) {bare} "
                              "have only a description. Add examples, or use kind \"head\"")
    if request.data.multi_label:
        raise InvalidExamples("LoRA adapters are single-label for now; use kind \"head\" for "
                              "examples with `labels` lists")


class _Steps:
    """One progress bar over the recipe's LoRA trainings (teacher, then student)."""

    def __init__(self, progress: Progress | None, total: int):
        self.progress, self.total, self.offset = progress, total, 0

    def part(self) -> Progress | None:
        if self.progress is None:
            return None
        offset = self.offset

        def report(step: int, total: int, loss: float) -> None:
            self.total = max(self.total, offset + total)
            self.progress(offset + step, self.total, loss)  # type: ignore[misc]
        return report

    def done(self, steps: int) -> None:
        self.offset += steps


def _steps(n_rows: int, labels: np.ndarray, opts: LoraOptions) -> int:
    return opts.epochs * len(_batches(labels, opts.batch_size, random.Random(0))) if n_rows else 0


def lora_recipe(encoder: TorchEncoder, data: LabeledData, descriptions: dict[str, str],
                unlabeled: list[str], opts: LoraOptions, progress: Progress | None = None,
                should_stop: StopCheck | None = None
                ) -> tuple[LoraWeights, FitRows, np.ndarray, dict]:
    """The LoRA recipe (chosen on the dev sets, benchmarks/research/quality.md):

    1. teacher: LoRA tuned on the examples, each description joining as one more example of
       its label; its head is the description prior fitted on the tuned embeddings;
    2. with unlabeled texts: the teacher labels them, the ``pseudo_fraction`` most confident
       per predicted label (class-balanced, capped) become pseudo-labels, and a fresh LoRA
       (the student) is tuned on examples (repeated to stay about half of the rows) +
       pseudo-labels + descriptions for ``student_steps`` x the teacher's steps.

    Returns the LoRA weights, a ``fit_rows(x, y)`` that fits the final head in their space
    (pseudo-labeled rows always included), the examples' embeddings in that space, and info.
    """
    rng = np.random.default_rng(opts.seed)
    n_labels = len(data.labels)
    described = [lab for lab in data.labels if lab in descriptions]
    desc_texts = [descriptions[lab] for lab in described]
    desc_y = np.array([data.labels.index(lab) for lab in described], dtype=np.int64)
    rows = LabeledData(data.items + desc_texts, data.labels, np.concatenate([data.y, desc_y]), False)
    pool = list(unlabeled)
    if len(pool) > opts.unlabeled_sample:
        pool = [pool[i] for i in sorted(rng.choice(len(pool), opts.unlabeled_sample, replace=False))]
    use_pool = bool(pool) and opts.pseudo_fraction > 0
    teacher_steps = _steps(len(rows.items), rows.y, opts)
    steps = _Steps(progress, int(teacher_steps * (1 + (opts.student_steps if use_pool else 0))))

    def head_fitter(lw: LoraWeights, extra_x: np.ndarray | None = None,
                    extra_y: np.ndarray | None = None) -> FitRows:
        d_emb = None
        if described:
            emb = encoder.embed(desc_texts, [lw] * len(desc_texts)).numpy().astype(np.float64)
            d_emb = np.full((n_labels, emb.shape[1]), np.nan)
            d_emb[desc_y] = emb
        prior = (description_prior(d_emb, n_labels, encoder.dim, opts.prior_strength)
                 if described and opts.prior_strength > 0 else None)

        def fit_rows(x: np.ndarray, y: np.ndarray) -> LinearHead:
            w = None
            if extra_x is not None and len(extra_x):
                w = np.concatenate([np.ones(len(y)), np.ones(len(extra_y))])
                x, y = np.concatenate([x, extra_x]), np.concatenate([y, extra_y])
            if prior is not None:
                return with_prior(fit_prior(x, y, prior, c=opts.c, sample_weight=w), data.labels,
                                  opts.class_prior, y)
            return fit(x, LabeledData([], data.labels, y, False), opts.fit_params())
        return fit_rows

    lw, loss = train_embeddings(encoder, rows, opts, steps.part(), should_stop)
    steps.done(teacher_steps)
    info: dict = {"teacher_loss": round(loss, 5), "pseudo_labels": 0}
    fit_rows = head_fitter(lw)
    x = encoder.embed(data.items, [lw] * len(data.items)).numpy().astype(np.float32)
    if use_pool:
        teacher_head = fit_rows(x, data.y)
        xu = encoder.embed(pool, [lw] * len(pool))
        per = min(opts.max_pseudo_per_label, max(1, int(opts.pseudo_fraction * len(pool) / n_labels)))
        idx, yp = balanced_pseudo_labels(teacher_head.probabilities(xu).numpy(), per)
        rep = max(1, round(len(idx) / max(1, len(data.items))))
        student_rows = LabeledData(data.items * rep + [pool[i] for i in idx] + desc_texts,
                                   data.labels, np.concatenate([np.tile(data.y, rep), yp, desc_y]),
                                   False)
        epochs = max(1, round(opts.student_steps * teacher_steps / max(
            1, len(_batches(student_rows.y, opts.batch_size, random.Random(0))))))
        student_opts = opts.model_copy(update={"epochs": epochs, "seed": opts.seed + 1})
        lw, loss = train_embeddings(encoder, student_rows, student_opts, steps.part(), should_stop)
        x = encoder.embed(data.items, [lw] * len(data.items)).numpy().astype(np.float32)
        pseudo_x = encoder.embed([pool[i] for i in idx], [lw] * len(idx)).numpy().astype(np.float32)
        fit_rows = head_fitter(lw, pseudo_x, yp)
        info.update(pseudo_labels=int(len(idx)), student_epochs=epochs, student_loss=round(loss, 5),
                    unlabeled_used=len(pool))
    return lw, fit_rows, x, info


def lora_predict(encoder: TorchEncoder, data: LabeledData, descriptions: dict[str, str],
                 opts: LoraOptions, steps: _Steps | None = None,
                 should_stop: StopCheck | None = None) -> FoldPredict:
    """The LoRA recipe (its teacher: no unlabeled texts, so a fold costs one LoRA training)
    as a ``FoldPredict``: trained on a fold's training rows, predicting its held-out rows."""
    items = np.array(data.items, dtype=object)
    fold_opts = opts.model_copy(update={"pseudo_fraction": 0.0})

    def predict(tr: np.ndarray, te: np.ndarray) -> np.ndarray:
        sub = LabeledData(list(items[tr]), data.labels, data.y[tr], False)
        lw, fit_rows, x_tr, _ = lora_recipe(encoder, sub, descriptions, [], fold_opts,
                                            steps.part() if steps else None, should_stop)
        if steps:
            steps.done(_steps(len(tr) + len(descriptions), sub.y, opts))
        x_te = encoder.embed(list(items[te]), [lw] * len(te)).numpy().astype(np.float32)
        return fit_rows(x_tr, sub.y).predict(x_te)
    return predict


def previous_recipe(encoder: TorchEncoder, request: TrainRequest, opts: LoraOptions,
                    steps: _Steps | None, should_stop: StopCheck | None) -> FoldPredict:
    """The replaced version's recipe with its own options: LoRA when it had LoRA weights,
    else its head recipe on frozen embeddings (an ``auto`` version whose LoRA was not
    promoted)."""
    about = request.base.about  # type: ignore[union-attr]
    prev_opts = type(opts).parse_with_labels(about.options)[0]
    if about.lora:
        return lora_predict(encoder, request.data, request.descriptions, prev_opts, steps,
                            should_stop)
    head_opts = getattr(prev_opts, "head_options", None)
    if head_opts is None:  # not reached: a lora-kind version always has LoRA weights
        raise InvalidExamples(f"{about.ref} has no LoRA weights to compare with")
    x0 = encoder.embed(request.data.items).numpy().astype(np.float32)
    return head_predict(x0, request.data.y,
                        head_recipe(encoder, request.data, request.descriptions, head_opts()))


def check_update(encoder: TorchEncoder, request: TrainRequest, opts: LoraOptions, folds: int,
                 steps: _Steps | None = None, should_stop: StopCheck | None = None,
                 new: FoldPredict | None = None) -> UpdateCheck | None:
    """The update check (training/monotone.py) of a job's LoRA recipe: on ``folds`` folds of
    all examples, this recipe on all training rows against the replaced version's recipe on
    its examples among them. None: not an update, or no fold can be fitted both ways."""
    base, data = request.base, request.data
    if base is None or not base.checkable(data):
        return None
    new = new or lora_predict(encoder, data, request.descriptions, opts, steps, should_stop)
    old = previous_recipe(encoder, request, opts, steps, should_stop)
    return compare_update(data.y, np.arange(len(data.items)) < base.examples, len(data.labels),
                          new, old, folds=folds, seed=opts.seed)


UPDATE_FOLDS = 2  # a LoRA training per fold and side: 2 folds cost about 2 full trainings


def train_lora(encoder: Encoder, request: TrainRequest, progress: Progress | None = None,
               should_stop: StopCheck | None = None) -> Artifact:
    """Train a LoRA adapter (LoRA weights + head) from validated examples, and the label
    descriptions and unlabeled texts when there are any. An update is checked against the
    version it replaces first; the server keeps that version's weights if it was better."""
    t0 = time.perf_counter()
    opts = request.options
    assert isinstance(opts, LoraOptions)
    data, params = request.data, opts.fit_params()
    torch_encoder = encoder.pytorch()  # autograd needs PyTorch, whatever serves
    opts = for_encoder(opts, torch_encoder)
    full = _steps(len(data.items) + len(request.descriptions), data.y, opts)
    # an update's check: a LoRA per fold and side on about half the rows, ~2 full trainings
    steps = _Steps(progress, full * (3 if request.base is not None else 1))
    check = check_update(torch_encoder, request, opts, UPDATE_FOLDS, steps, should_stop)
    # the honest estimate, from frozen embeddings (LoRA sees every example)
    x0 = torch_encoder.embed(data.items).numpy().astype(np.float32)
    baseline = cross_validate(x0, data, params)
    lw, fit_rows, x, info = lora_recipe(torch_encoder, data, request.descriptions,
                                        request.unlabeled, opts, steps.part(), should_stop)
    head, tuned_cv = fit_calibrated(x, data, params, fit_rows)
    metrics = LoraMetrics(
        examples=len(data.items), per_label=data.counts(),
        train_loss=info.get("student_loss", info["teacher_loss"]),
        train_seconds=round(time.perf_counter() - t0, 2),
        label_descriptions=len(request.descriptions) or None,
        unlabeled=len(request.unlabeled) or None,
        pseudo_labels=info["pseudo_labels"] if request.unlabeled else None,
        cv_accuracy_head_only=baseline["cv_accuracy"] if baseline else None,
        cv_accuracy_tuned=tuned_cv["cv_accuracy"] if tuned_cv else None, update_check=check)
    return Artifact(kind="lora", labels=data.labels, tensors={**head.tensors(), **lw.tensors()},
                    options=opts.stored(request.label_order), metrics=metrics.stored(),
                    warnings=assess(data, baseline, opts.class_prior), lora=lw.spec)


LORA = register_kind(AdapterKind(
    name="lora", summary="LoRA weights on the backbone plus a head, trained in a background job "
    "(202 with the job)", options=LoraOptions, metrics=LoraMetrics, train=train_lora,
    runs_as_job=True,
    check=check_lora, tunes_backbone=True))
