"""``kind: "head"``: a classifier on the frozen backbone's embeddings, trained in the request
(well under a second for a few dozen examples) and servable at once. With label descriptions
alone it is zero-shot; with descriptions and examples the descriptions are a prior on the
head (training/recipes.py says how these were chosen and what they measured).

Phases (cf. setfit ``Trainer.train``): embed -> fit -> cross-validate the whole recipe on the
labeled rows (+ calibrate) -> assess.
"""
from __future__ import annotations

import time
from typing import Literal

import numpy as np
from pydantic import Field

from ..encoders.base import Encoder
from ..errors import InvalidExamples
from ..heads import LinearHead
from ..options import AdapterOptions
from ..storage import Artifact
from ..training.fitting import FitParams, assess, calibrate, cross_validate, fit
from ..training.recipes import (PRIOR_STRENGTH, description_prior, description_text, fit_prior,
                                zero_shot_head)
from ..validation import LabeledData
from .base import AdapterKind, Progress, StopCheck, TrainRequest, register_kind
from .metrics import CrossValidated

UNLABELED_UNUSED = ("unlabeled texts are kept with this adapter (updates, and kinds lora and auto, "
                    "learn from them); a head on frozen embeddings does not (measured: no gain), "
                    "so this version was trained without them")


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

    def fit_params(self) -> FitParams:
        return FitParams(self.head, self.c, self.temperature, self.threshold, self.seed, self.cv_folds)


class HeadMetrics(CrossValidated):
    """What training a head measured: its cross-validated quality (none: zero-shot, or too
    few examples to hold any out) and how long each phase took."""

    ESTIMATES = ("cv_accuracy", "cv_f1_micro")
    seconds: dict[str, float] | None = None  # embed, fit, cross_validate
    label_descriptions: int | None = None
    unlabeled: int | None = None


def embed_descriptions(encoder: Encoder, labels: list[str], descriptions: dict[str, str],
                       template: bool = False) -> np.ndarray:
    """[labels, dim] embeddings of each label's description (``template``: the zero-shot
    phrasing), NaN rows for labels without one."""
    described = [lab for lab in labels if lab in descriptions]
    texts = [description_text(descriptions[lab]) if template else descriptions[lab]
             for lab in described]
    emb = encoder.embed(texts).numpy().astype(np.float64)
    out = np.full((len(labels), emb.shape[1]), np.nan)
    for lab, row in zip(described, emb):
        out[labels.index(lab)] = row
    return out


def fit_head(encoder: Encoder, x: np.ndarray, data: LabeledData, descriptions: dict[str, str],
             opts: "HeadOptions", seconds: dict[str, float] | None = None
             ) -> tuple[LinearHead, dict | None]:
    """The head recipe on embeddings ``x`` [rows, dim] of the examples: zero-shot from the
    descriptions, the description prior, or the plain fitter; cross-validated as a whole and
    calibrated. Returns the head and the CV metrics (None: no estimate); ``seconds`` gets
    the time of the fit and of the cross-validation."""
    params = opts.fit_params()
    seconds = {} if seconds is None else seconds
    t0 = time.perf_counter()
    if data.zero_shot:
        protos = embed_descriptions(encoder, data.labels, descriptions, template=True)
        seconds["fit"] = round(time.perf_counter() - t0, 4)
        return zero_shot_head(protos, scale=opts.temperature), None
    fit_rows = None
    if descriptions and opts.prior_strength > 0:
        prior = description_prior(embed_descriptions(encoder, data.labels, descriptions),
                                  len(data.labels), x.shape[1], opts.prior_strength)

        def fit_rows(rows: np.ndarray, labels: np.ndarray) -> LinearHead:
            return fit_prior(rows, labels, prior, c=opts.c)
    head = fit_rows(x, data.y) if fit_rows else fit(x, data, params)
    t1 = time.perf_counter()
    cv = cross_validate(x, data, params, fit_rows)
    seconds.update(fit=round(t1 - t0, 4), cross_validate=round(time.perf_counter() - t1, 4))
    return calibrate(head, x, cv)  # single-label: calibrated probabilities, same decisions


def train_head(encoder: Encoder, request: TrainRequest, progress: Progress | None = None,
               should_stop: StopCheck | None = None) -> Artifact:
    opts = request.options
    assert isinstance(opts, HeadOptions)
    data = request.data
    t0 = time.perf_counter()
    x = encoder.embed(data.items).numpy().astype(np.float32)  # [rows, dim]
    seconds = {"embed": round(time.perf_counter() - t0, 4)}
    head, cv = fit_head(encoder, x, data, request.descriptions, opts, seconds)
    metrics = HeadMetrics(examples=len(data.items), per_label=data.counts(), seconds=seconds,
                          **(cv or {}), label_descriptions=len(request.descriptions) or None,
                          unlabeled=len(request.unlabeled) or None)
    warnings = assess(data, cv)
    if request.unlabeled:
        warnings.append(UNLABELED_UNUSED)
    return Artifact(kind="head", labels=data.labels, tensors=head.tensors(),
                    options=opts.stored(request.label_order), metrics=metrics.stored(),
                    warnings=warnings, multi_label=data.multi_label)


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
