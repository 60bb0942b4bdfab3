"""``kind: "head"``: a classifier on the frozen backbone's embeddings, trained in the request
(well under a second for a few dozen examples) and servable at once. With label descriptions
alone it is zero-shot; with unlabeled texts it self-trains on them, and because embedding
thousands of texts takes minutes on a CPU, it then trains as a job (202 + job).

Phases (cf. setfit ``Trainer.train``): embed -> fit (the recipe: training/recipes.py) ->
cross-validate the whole recipe on the labeled rows (+ calibrate) -> assess.
"""
from __future__ import annotations

import time
from typing import Literal

import numpy as np
from pydantic import Field

from ..encoders.base import Encoder
from ..options import AdapterOptions
from ..storage import Artifact
from ..errors import InvalidExamples
from ..training.fitting import HEAD_FITTERS, FitParams, assess, cross_validate, fit
from ..training.recipes import HeadRecipe
from .base import AdapterKind, Progress, StopCheck, TrainRequest, register_kind


class HeadOptions(AdapterOptions):
    """Options of a ``kind: "head"`` adapter. Unknown keys are refused."""

    head: Literal["logreg", "centroid"] = Field(
        "logreg", description="logreg: L2 logistic regression; centroid: nearest class mean by cosine")
    c: float = Field(1.0, gt=0, le=1e6, description="inverse L2 strength of the logreg head")
    temperature: float = Field(20.0, gt=0, le=1000, description="logit scale of the centroid head")
    threshold: float = Field(0.5, gt=0, lt=1, description="multi-label: a label is predicted when its probability >= threshold")
    seed: int = Field(0, ge=0, le=2**31 - 1)
    cv_folds: int = Field(5, ge=2, le=10, description="folds of the cross-validated quality estimate")
    description_weight: float = Field(
        HeadRecipe.description_weight, ge=0, le=100,
        description="weight of each label description as a training row, against an example's 1")
    self_training_rounds: int = Field(
        HeadRecipe.self_training_rounds, ge=0, le=10,
        description="rounds of self-training on the unlabeled texts (0: ignore them)")
    confidence: float = Field(HeadRecipe.confidence, gt=0, lt=1,
                              description="self-training trusts predictions at or above this probability")

    def fit_params(self) -> FitParams:
        return FitParams(self.head, self.c, self.temperature, self.threshold, self.seed, self.cv_folds)

    def recipe(self) -> HeadRecipe:
        return HeadRecipe(description_weight=self.description_weight, temperature=self.temperature,
                          self_training_rounds=self.self_training_rounds, confidence=self.confidence)


def embed_inputs(encoder: Encoder, request: TrainRequest
                 ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Embeddings of the examples [n, dim], the descriptions in label order [labels, dim]
    (or None) and the unlabeled texts [m, dim] (or None), from the encoder that serves (so
    the head sees at serving time the embeddings it was fitted on)."""
    data = request.data
    texts = list(data.texts)
    described = [lab for lab in data.labels if lab in request.descriptions]
    emb = encoder.embed(texts + [request.descriptions[lab] for lab in described]
                        + request.unlabeled).numpy().astype(np.float32)
    x = emb[:len(texts)]
    x_unl = emb[len(texts) + len(described):] if request.unlabeled else None
    if not described:
        return x, None, x_unl
    x_desc = np.empty((len(data.labels), x.shape[1] if len(texts) else emb.shape[1]), np.float32)
    by_label = dict(zip(described, emb[len(texts):len(texts) + len(described)]))
    for j, lab in enumerate(data.labels):
        # a label without a description is described by its own examples' mean
        x_desc[j] = by_label[lab] if lab in by_label else x[data.y == j].mean(axis=0)
    return x, x_desc, x_unl


def train_head(encoder: Encoder, request: TrainRequest, progress: Progress | None = None,
               should_stop: StopCheck | None = None) -> Artifact:
    opts = request.options
    assert isinstance(opts, HeadOptions)
    data, params, recipe = request.data, opts.fit_params(), opts.recipe()
    t0 = time.perf_counter()
    x, x_desc, x_unl = embed_inputs(encoder, request)
    t1 = time.perf_counter()

    def base(rows: np.ndarray, labels: np.ndarray, weights: np.ndarray):
        return HEAD_FITTERS[params.method](rows, labels, multi_label=data.multi_label, c=params.c,
                                           temperature=params.temperature, seed=params.seed,
                                           sample_weight=weights)

    if x_desc is None and x_unl is None:
        fit_rows = None  # the plain head: exactly the fitter on the examples
    else:
        def fit_rows(rows: np.ndarray, labels: np.ndarray):
            return recipe.fit(base, rows, labels, len(data.labels), x_desc, x_unl)
    if data.zero_shot:
        head = recipe.fit(base, x, data.y, len(data.labels), x_desc, x_unl)
    else:
        head = fit_rows(x, data.y) if fit_rows else fit(x, data, params)
    t2 = time.perf_counter()
    cv = None if data.zero_shot else cross_validate(x, data, params, fit_rows)
    t3 = time.perf_counter()
    if cv and "calibration_scale" in cv:  # single-label: calibrate probabilities, keep decisions
        head = head.scaled(cv["calibration_scale"])
    metrics = {"examples": len(data.texts), "per_label": data.counts(),
               "seconds": {"embed": round(t1 - t0, 4), "fit": round(t2 - t1, 4),
                           "cross_validate": round(t3 - t2, 4)}, **(cv or {})}
    if request.descriptions:
        metrics["label_descriptions"] = len(request.descriptions)
    if request.unlabeled:
        metrics["unlabeled"] = len(request.unlabeled)
    return Artifact(kind="head", labels=data.labels, tensors=head.tensors(),
                    options=opts.stored(request.label_order), metrics=metrics,
                    warnings=assess(data, cv), multi_label=data.multi_label)


def check_head(request: TrainRequest) -> None:
    if request.data.multi_label and (request.descriptions or request.unlabeled):
        raise InvalidExamples("label_descriptions and unlabeled texts are for single-label "
                              "adapters for now; leave them out with `labels` lists")


HEAD = register_kind(AdapterKind(
    name="head", summary="a classifier on frozen embeddings (201, ready at once; with "
    "`unlabeled` texts a job: 202)", options=HeadOptions, train=train_head,
    runs_as_job=lambda request: bool(request.unlabeled), check=check_head))
