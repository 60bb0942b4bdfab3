"""``kind: "head"``: a classifier on the frozen backbone's embeddings, trained in the request
(well under a second for a few dozen examples) and servable at once.

Phases (cf. setfit ``Trainer.train``): embed -> fit -> cross-validate (+ calibrate) -> assess.
"""
from __future__ import annotations

import time
from typing import Literal

import numpy as np
from pydantic import Field

from ..encoders.base import Encoder
from ..options import AdapterOptions
from ..storage import Artifact
from ..training.fitting import FitParams, assess, fit, cross_validate
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

    def fit_params(self) -> FitParams:
        return FitParams(self.head, self.c, self.temperature, self.threshold, self.seed, self.cv_folds)


def train_head(encoder: Encoder, request: TrainRequest, progress: Progress | None = None,
               should_stop: StopCheck | None = None) -> Artifact:
    """A head on frozen embeddings, from the encoder that serves (so the head sees at
    serving time the embeddings it was fitted on)."""
    opts = request.options
    assert isinstance(opts, HeadOptions)
    data, params = request.data, opts.fit_params()
    t0 = time.perf_counter()
    x = encoder.embed(data.texts).numpy().astype(np.float32)  # [rows, dim]
    t1 = time.perf_counter()
    head = fit(x, data, params)
    t2 = time.perf_counter()
    cv = cross_validate(x, data, params)
    t3 = time.perf_counter()
    if cv and "calibration_scale" in cv:  # single-label: calibrate probabilities, keep decisions
        head = head.scaled(cv["calibration_scale"])
    metrics = {"examples": len(data.texts), "per_label": data.counts(),
               "seconds": {"embed": round(t1 - t0, 4), "fit": round(t2 - t1, 4),
                           "cross_validate": round(t3 - t2, 4)}, **(cv or {})}
    return Artifact(kind="head", labels=data.labels, tensors=head.tensors(),
                    options=opts.stored(request.label_order), metrics=metrics,
                    warnings=assess(data, cv), multi_label=data.multi_label)


HEAD = register_kind(AdapterKind(
    name="head", summary="a classifier on frozen embeddings (201, ready at once)",
    options=HeadOptions, train=train_head))
