"""``kind: "head"``: a classifier on the frozen backbone's embeddings, trained in the request
(well under a second for a few dozen examples) and servable at once. With label descriptions
alone it is zero-shot; with descriptions and examples the descriptions are a prior on the
head (training/recipes.py says how these were chosen and what they measured). Zero-shot with
unlabeled texts self-trains: the zero-shot head labels them and the description-prior head is
fitted on those pseudo-labels (``self_train_texts``).

Phases (cf. setfit ``Trainer.train``): embed -> fit -> cross-validate the whole recipe on the
labeled rows (+ calibrate) -> assess.
"""
from __future__ import annotations

import time
from typing import Literal

import numpy as np
from pydantic import Field

from ..encoders.base import Encoder
from ..encoders.lora import LoraWeights
from ..errors import InvalidExamples
from ..heads import LinearHead
from ..options import AdapterOptions
from ..storage import Artifact
from ..training.fitting import (ClassPriorOption, FitParams, FitRows, assess, calibrate,
                                class_prior_field, cross_validate, fit, with_prior)
from ..training.monotone import compare_update, head_predict
from ..training.recipes import (MIN_CLUSTER_AGREEMENT, MIN_PSEUDO_PER_LABEL, PRIOR_STRENGTH,
                                SelfTrainMetrics, description_prior, description_text, fit_prior,
                                self_train_zero_shot, zero_shot_head)
from ..validation import LabeledData
from .base import (AdapterKind, Progress, StopCheck, TrainRequest, keep_previous_weights,
                   register_kind)
from .metrics import CrossValidated

UNLABELED_UNUSED = ("unlabeled texts are kept with this adapter (updates, and kinds lora and auto, "
                    "learn from them); a head on frozen embeddings with examples does not "
                    "(measured: no gain), so this version was trained without them")
TOO_FEW_TO_SELF_TRAIN = (f"unlabeled texts: too few to self-train on (the zero-shot head gave fewer "
                         f"than half of the labels {MIN_PSEUDO_PER_LABEL} of them each), so this "
                         "version is the plain zero-shot head; post a few hundred or more to let "
                         "it learn from them")
NO_CLUSTERS_TO_SELF_TRAIN = (
    "unlabeled texts: not self-trained on, because the zero-shot head's labels of them do not "
    "follow how the texts group (their agreement with the texts' clusters, metrics.self_train."
    f"cluster_agreement, is below {MIN_CLUSTER_AGREEMENT}; as for sentiment, where self-training "
    "on them lost points), so this version is the plain zero-shot head; add a few examples per "
    "label to learn from the texts")
SELF_TRAIN_TEXTS = 1000  # unlabeled texts a zero-shot create embeds in the request (research: 1,000)


def self_train_field():
    return Field(SELF_TRAIN_TEXTS, ge=0, le=20_000, description=(
        "zero-shot (descriptions, no examples) with unlabeled texts: at most this many of them "
        "(a seeded sample) are labeled by the zero-shot head, and the head is refitted on "
        "those pseudo-labels (+3 points on the dev sets where it self-trains), unless those "
        "labels do not follow how the texts group (metrics.self_train says which and why); "
        "0: the plain zero-shot head"))


class HeadOptions(AdapterOptions):
    """Options of a ``kind: "head"`` adapter. Unknown keys are refused."""

    head: Literal["logreg", "centroid"] = Field(
        "logreg", description="logreg: L2 logistic regression; centroid: nearest class mean by cosine")
    c: float = Field(1.0, gt=0, le=1e6, description="inverse L2 strength of the logreg head")
    temperature: float = Field(20.0, gt=0, le=1000, description="logit scale of the centroid and zero-shot heads")
    threshold: float = Field(0.5, gt=0, lt=1, description="multi-label: a label is predicted when its probability >= threshold")
    seed: int = Field(0, ge=0, le=2**31 - 1)
    cv_folds: int = Field(5, ge=2, le=10, description="folds of the cross-validated quality estimate")
    prior_strength: float = Field(
        PRIOR_STRENGTH, ge=0, le=100, description="label descriptions: how strongly the head is "
        "pulled toward them (0: ignore them when there are examples)")
    class_prior: ClassPriorOption = class_prior_field()
    self_train_texts: int = self_train_field()

    def fit_params(self) -> FitParams:
        return FitParams(self.head, self.c, self.temperature, self.threshold, self.seed,
                         self.cv_folds, self.class_prior)


class HeadMetrics(CrossValidated):
    """What training a head measured: its cross-validated quality (none: zero-shot, or too
    few examples to hold any out) and how long each phase took."""

    ESTIMATES = ("cv_accuracy", "cv_f1_micro")
    seconds: dict[str, float] | None = None  # embed, fit, cross_validate
    label_descriptions: int | None = None
    unlabeled: int | None = None
    pseudo_labels: int | None = None  # zero-shot self-training: unlabeled texts it was fitted on
    self_train: SelfTrainMetrics | None = None  # zero-shot self-training: used or not, and why


def embed_descriptions(encoder: Encoder, labels: list[str], descriptions: dict[str, str],
                       template: bool = False, lora: LoraWeights | None = None) -> np.ndarray:
    """[labels, dim] embeddings of each label's description (``template``: the zero-shot
    phrasing; ``lora``: in that LoRA's tuned space), NaN rows for labels without one."""
    described = [lab for lab in labels if lab in descriptions]
    texts = [description_text(descriptions[lab]) if template else descriptions[lab]
             for lab in described]
    emb = encoder.embed(texts, [lora] * len(texts) if lora else None).numpy().astype(np.float64)
    out = np.full((len(labels), emb.shape[1]), np.nan)
    for lab, row in zip(described, emb):
        out[labels.index(lab)] = row
    return out


def head_recipe(encoder: Encoder, data: LabeledData, descriptions: dict[str, str],
                opts: "HeadOptions", lora: LoraWeights | None = None) -> FitRows:
    """(rows [n, dim], label ids) -> a head: the description prior when there are
    descriptions, else the plain fitter; moved to ``opts.class_prior`` either way.
    ``lora``: the rows are in that LoRA's tuned space, and so are the descriptions."""
    params = opts.fit_params()
    if descriptions and opts.prior_strength > 0:
        prior = description_prior(embed_descriptions(encoder, data.labels, descriptions, lora=lora),
                                  len(data.labels), encoder.dim, opts.prior_strength)

        def fit_rows(rows: np.ndarray, labels: np.ndarray) -> LinearHead:
            return with_prior(fit_prior(rows, labels, prior, c=opts.c), data.labels,
                              opts.class_prior, labels)
        return fit_rows
    return lambda rows, labels: fit(rows, LabeledData([], data.labels, labels, False), params)


def fit_head(encoder: Encoder, x: np.ndarray, data: LabeledData, descriptions: dict[str, str],
             opts: "HeadOptions", seconds: dict[str, float] | None = None,
             lora: LoraWeights | None = None, unlabeled: list[str] | None = None
             ) -> tuple[LinearHead, dict | None]:
    """The head recipe on embeddings ``x`` [rows, dim] of the examples: zero-shot from the
    descriptions (self-trained on ``unlabeled`` texts when there are any), the description
    prior, or the plain fitter; cross-validated as a whole and calibrated. Returns the head
    and the CV metrics (None: no estimate; zero-shot with unlabeled texts: ``pseudo_labels``
    and ``self_train``, whether it self-trained and why); ``seconds`` gets the time of the
    fit and of the cross-validation."""
    params = opts.fit_params()
    seconds = {} if seconds is None else seconds
    t0 = time.perf_counter()
    if data.zero_shot:
        return zero_shot_fit(encoder, data, descriptions, opts, seconds, lora, unlabeled or [])
    if data.multi_label:
        head, fit_rows = fit(x, data, params), None
    else:
        fit_rows = head_recipe(encoder, data, descriptions, opts, lora)
        head = fit_rows(x, data.y)
    t1 = time.perf_counter()
    cv = cross_validate(x, data, params, fit_rows)
    seconds.update(fit=round(t1 - t0, 4), cross_validate=round(time.perf_counter() - t1, 4))
    return calibrate(head, x, cv)  # single-label: calibrated probabilities, same decisions


def zero_shot_fit(encoder: Encoder, data: LabeledData, descriptions: dict[str, str],
                  opts: "HeadOptions", seconds: dict[str, float], lora: LoraWeights | None,
                  unlabeled: list[str]) -> tuple[LinearHead, dict | None]:
    """The zero-shot head; with unlabeled texts (and ``opts.self_train_texts`` > 0), that head
    labels a seeded sample of them and the description-prior head is fitted on the balanced
    pseudo-labels (training/recipes.py ``self_train_zero_shot``)."""
    t0 = time.perf_counter()
    protos = embed_descriptions(encoder, data.labels, descriptions, template=True, lora=lora)
    head, y, info = zero_shot_head(protos, scale=opts.temperature), None, None
    texts = sample_texts(unlabeled, opts.self_train_texts, opts.seed)
    if texts:
        t1 = time.perf_counter()
        xu = encoder.embed(texts, [lora] * len(texts) if lora else None).numpy().astype(np.float32)
        seconds["embed_unlabeled"] = round(time.perf_counter() - t1, 4)
        prior = description_prior(embed_descriptions(encoder, data.labels, descriptions, lora=lora),
                                  len(data.labels), encoder.dim, opts.prior_strength)
        trained = self_train_zero_shot(head, xu, prior, c=opts.c, seed=opts.seed)
        if trained.head is not None:
            head, y = trained.head, trained.pseudo_labels
        info = {"pseudo_labels": 0 if y is None else len(y), "self_train": trained.metrics()}
    seconds["fit"] = round(time.perf_counter() - t0, 4)
    # The pseudo-labels' label shares are the texts' own distribution as the zero-shot head
    # reads it, not a choice of examples: "uniform" keeps them as fitted (removing them turned
    # +3.0 into -3.1 points on Reuters R8, -7.2 on the HTTP benchmark's splits: its rare labels
    # are rare where it serves); a stated {label: share} replaces them.
    stated = isinstance(opts.class_prior, dict)
    return with_prior(head, data.labels, opts.class_prior, y if stated else None), info


def sample_texts(texts: list[str], at_most: int, seed: int) -> list[str]:
    """At most ``at_most`` of ``texts``, a seeded sample in their order."""
    if len(texts) <= at_most:
        return list(texts)
    keep = np.random.default_rng(seed).choice(len(texts), at_most, replace=False)
    return [texts[i] for i in sorted(keep)]


def unlabeled_warnings(request: TrainRequest, info: dict | None) -> list[str]:
    """What the record says about the request's unlabeled texts when this version did not
    learn from them (``info``: what ``fit_head`` returned besides the head)."""
    if not request.unlabeled:
        return []
    check: SelfTrainMetrics | None = (info or {}).get("self_train")
    if check is None:  # examples, or self_train_texts 0: not a self-training create
        return [UNLABELED_UNUSED]
    if check.used:
        return []
    return [NO_CLUSTERS_TO_SELF_TRAIN if check.skipped == "no_clusters" else TOO_FEW_TO_SELF_TRAIN]


def train_head(encoder: Encoder, request: TrainRequest, progress: Progress | None = None,
               should_stop: StopCheck | None = None) -> Artifact:
    opts = request.options
    assert isinstance(opts, HeadOptions)
    data = request.data
    t0 = time.perf_counter()
    x = encoder.embed(data.items).numpy().astype(np.float32)  # [rows, dim]
    seconds = {"embed": round(time.perf_counter() - t0, 4)}
    head, cv = fit_head(encoder, x, data, request.descriptions, opts, seconds,
                        unlabeled=request.unlabeled)
    metrics = HeadMetrics(examples=len(data.items), per_label=data.counts(), seconds=seconds,
                          **(cv or {}), label_descriptions=len(request.descriptions) or None,
                          unlabeled=len(request.unlabeled) or None)
    warnings = assess(data, cv, opts.class_prior)
    warnings += unlabeled_warnings(request, cv)
    artifact = Artifact(kind="head", labels=data.labels, tensors=head.tensors(),
                        options=opts.stored(request.label_order), metrics=metrics.stored(),
                        warnings=warnings, multi_label=data.multi_label)
    previous_opts = (HeadOptions.parse_with_labels(request.base.about.options)[0]
                     if request.base is not None else opts)
    return guard_update(encoder, request, x, opts, previous_opts, artifact)


def guard_update(encoder: Encoder, request: TrainRequest, x: np.ndarray, opts: "HeadOptions",
                 previous_opts: "HeadOptions", artifact: Artifact,
                 lora: LoraWeights | None = None) -> Artifact:
    """An in-request update's artifact, checked against the version it replaces
    (training/monotone.py): this recipe on all examples against ``previous_opts``' recipe on
    that version's examples, heads on the same embeddings ``x`` [rows, dim] (``lora``: in
    that LoRA's space). Unchanged but for the check's numbers in its metrics when it is not
    worse; otherwise the replaced version's weights (``keep_previous_weights``)."""
    base, data = request.base, request.data
    if base is None or base.adapter is None or not base.checkable(data):
        return artifact
    previous = np.arange(len(data.items)) < base.examples
    new = head_predict(x, data.y, head_recipe(encoder, data, request.descriptions, opts, lora))
    old = head_predict(x, data.y, head_recipe(encoder, data, request.descriptions,
                                              previous_opts, lora))
    check = compare_update(data.y, previous, len(data.labels), new, old, seed=opts.seed)
    if check is None:
        return artifact
    artifact.metrics["update_check"] = check.model_dump()
    if not check.worse:
        return artifact
    return keep_previous_weights(artifact, base.adapter, check, len(data.items), base.examples)


def check_head(request: TrainRequest) -> None:
    if request.descriptions and request.data.multi_label:
        raise InvalidExamples("label_descriptions are for single-label adapters for now; leave "
                              "them out with `labels` lists")
    if request.descriptions and getattr(request.options, "head", "logreg") != "logreg":
        raise InvalidExamples("label_descriptions work with options.head = \"logreg\" (they "
                              "are a prior on the logistic head); the centroid head does not use them")


HEAD = register_kind(AdapterKind(
    name="head", summary="a classifier on frozen embeddings (201, ready at once)",
    options=HeadOptions, metrics=HeadMetrics, train=train_head, check=check_head))
