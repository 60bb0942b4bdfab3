"""``kind: "auto"``: use everything a user posted, be servable at once, and get better only
when an honest estimate says so.

1. In the request (201): the head recipe (zero-shot from the descriptions, self-trained on
   the unlabeled texts when there are any; or the description prior on the examples),
   published as the next version at once.
2. In a background job (the record's ``job``), when every label has examples: the LoRA
   recipe (kinds/lora.py: descriptions as examples and as a prior, unlabeled texts through
   a teacher and a student LoRA), plus a guard: both recipes are cross-validated on the SAME
   folds of the posted examples (the LoRA one as its teacher, without unlabeled texts per
   fold, to keep the guard at about one extra LoRA training). The candidate is published as
   the next version only if its estimate beats the head's (strictly, or by
   ``options.min_gain``; a tie keeps the head); otherwise the served version stays, and the
   job's result says why. It never replaces a version newer than the one it started from.
   On the dev sets this guard made 3 right calls of 5 (benchmarks/research/quality.md); the
   two wrong ones cost 0.6 and 2.5 points, the right ones avoided a 10.5-point loss and took
   a 13.8-point gain.
   On an update the job also runs the update check (training/monotone.py) on the guard's
   folds: the version the update came from's recipe (LoRA when it had LoRA, else its head)
   on its examples, against the LoRA trained per fold; a candidate worse by more than the
   noise is never promoted, whatever ``promote`` says.

Why a guard at all: on the dev sets the LoRA recipe won 14 points on TREC and 1-10 on
Rotten Tomatoes, but lost 7-10 on Reuters R8 (unbalanced newswire), and only a held-out
check can tell which case a user is in (benchmarks/research/quality.md). ``options.promote``
(``always``/``never``) forces the decision, for tests and for users who know better.
"""
from __future__ import annotations

import time
from typing import Literal

import numpy as np
from pydantic import Field

from ..encoders.base import Encoder
from ..errors import InvalidExamples
from ..storage import Artifact, Manifest
from ..training.fitting import assess, fit_calibrated
from ..training.recipes import SelfTrainMetrics
from ..validation import LabeledData
from .base import (AdapterKind, Background, Decision, Progress, StopCheck, TrainRequest,
                   register_kind)
from .head import HeadOptions, fit_head, guard_update, self_train_field, unlabeled_warnings
from .lora import LoraOptions, _Steps, _steps, check_update, lora_predict, lora_recipe
from .metrics import CrossValidated, lora_lines


class AutoOptions(LoraOptions):
    """Options of a ``kind: "auto"`` adapter: the LoRA recipe's, plus how the stronger
    version is chosen. Unknown keys are refused."""

    temperature: float = Field(20.0, gt=0, le=1000, description="logit scale of a zero-shot head")
    promote: Literal["if_better", "always", "never"] = Field(
        "if_better", description="if_better: publish the LoRA recipe only when its cross-validated "
        "estimate beats the head's by min_gain; always / never: force it")
    guard_folds: int = Field(2, ge=2, le=5, description="folds of the paired estimate of both recipes")
    min_gain: float = Field(0.0, ge=0, le=1, description="how much better (accuracy) the LoRA "
                            "recipe's estimate must be; a tie keeps the head")
    self_train_texts: int = self_train_field()

    def head_options(self) -> HeadOptions:
        return HeadOptions(c=self.c, temperature=self.temperature, seed=self.seed,
                           cv_folds=self.cv_folds, prior_strength=self.prior_strength,
                           class_prior=self.class_prior, self_train_texts=self.self_train_texts)


class AutoMetrics(CrossValidated):
    """The first version (the head recipe) has the head's cross-validation; the candidate
    (the LoRA recipe, in a job) has the guard's paired estimates of both recipes on the same
    ``estimate_folds`` folds, which ``accept`` compares."""

    ESTIMATES = ("estimate", "cv_accuracy")
    recipe: str
    estimate: float | None = Field(None, ge=0, le=1)  # the LoRA recipe's, in the guard
    estimate_head: float | None = Field(None, ge=0, le=1)  # the head recipe's, same folds
    estimate_folds: int | None = Field(None, ge=2)
    train_seconds: float | None = None
    unlabeled: int | None = None
    pseudo_labels: int | None = None
    self_train: SelfTrainMetrics | None = None  # zero-shot self-training: used or not, and why
    cv_accuracy_tuned: float | None = Field(None, ge=0, le=1)  # optimistic: LoRA saw all rows

    def describe(self) -> list[str]:
        if self.estimate is None or self.estimate_head is None:
            return super().describe()
        return [f"quality estimate ({self.recipe}): cross-validated accuracy {self.estimate:.3f}"
                f", the head recipe's {self.estimate_head:.3f} on the same "
                f"{self.estimate_folds} folds",
                *lora_lines(self.cv_accuracy_tuned, self.train_seconds)]


def train_auto_head(encoder: Encoder, request: TrainRequest, progress: Progress | None = None,
                    should_stop: StopCheck | None = None) -> Artifact:
    """The version served at once: the head recipe. On an update of a version whose LoRA was
    promoted, the head is refitted on that LoRA's tuned embeddings (and keeps the LoRA), so
    that an update does not fall back to frozen features while the job retrains LoRA."""
    opts = request.options
    assert isinstance(opts, AutoOptions)
    data = request.data
    lora = request.base.adapter.lora if request.base and request.base.adapter else None
    x = encoder.embed(data.items, [lora] * len(data.items) if lora else None
                      ).numpy().astype(np.float32)  # [rows, dim]
    head, cv = fit_head(encoder, x, data, request.descriptions, opts.head_options(), lora=lora,
                        unlabeled=request.unlabeled)
    self_trained = bool((cv or {}).get("pseudo_labels"))
    recipe = ("zero-shot head, self-trained on unlabeled texts" if self_trained else
              "zero-shot head" if data.zero_shot else
              "head with the description prior" if request.descriptions else "head")
    if lora is not None:
        recipe += f" on the LoRA of {request.base.adapter.ref}"  # type: ignore[union-attr]
    metrics = AutoMetrics(examples=len(data.items), per_label=data.counts(), **(cv or {}),
                          recipe=recipe, unlabeled=len(request.unlabeled) or None)
    warnings = assess(data, cv, opts.class_prior)
    if opts.promote == "never":
        warnings.append("auto: options.promote = never, so no stronger recipe is tried")
    elif not stronger_recipe_applies(request):
        warnings.append("auto: a stronger recipe (LoRA) needs at least 2 examples of every "
                        "label; add examples (POST /v1/adapters/{name}/examples) to let auto "
                        "try it")
    if not stronger_recipe_applies(request):
        warnings += unlabeled_warnings(request, cv)
    artifact = Artifact(kind="auto", labels=data.labels,
                        tensors={**head.tensors(), **(lora.tensors() if lora else {})},
                        options=opts.stored(request.label_order), metrics=metrics.stored(),
                        warnings=warnings, multi_label=False, lora=lora.spec if lora else None)
    previous_opts = (AutoOptions.parse_with_labels(request.base.about.options)[0]
                     if request.base is not None else opts)
    return guard_update(encoder, request, x, opts.head_options(), previous_opts.head_options(),
                        artifact, lora)


def stronger_recipe_applies(request: TrainRequest) -> bool:
    opts = request.options
    counts = request.data.counts().values()
    return (not request.data.zero_shot and opts.promote != "never"  # type: ignore[attr-defined]
            and min(counts) >= 2)


def guard(encoder, request: TrainRequest, opts: AutoOptions, steps: _Steps,
          should_stop: StopCheck | None) -> tuple[float, float, dict | None]:
    """Accuracy of the head recipe and of the LoRA recipe (its teacher) on the same
    stratified folds of the examples: (head, lora, the update check). On an update the LoRA
    trained per fold is also this job's side of the update check (kinds/lora.py
    ``check_update``), on the same folds, so the check costs only the previous side."""
    from sklearn.model_selection import StratifiedKFold

    data, descriptions = request.data, request.descriptions
    k = min(opts.guard_folds, min(data.counts().values()))
    x0 = encoder.embed(data.items).numpy().astype(np.float32)
    items = np.array(data.items, dtype=object)
    lora_fold = lora_predict(encoder, data, descriptions, opts, steps, should_stop)
    head_right = lora_right = 0
    lora_pred: dict[bytes, np.ndarray] = {}  # per fold (its held-out rows): the LoRA's answers
    for tr, te in StratifiedKFold(k, shuffle=True, random_state=opts.seed).split(x0, data.y):
        sub = LabeledData(list(items[tr]), data.labels, data.y[tr], False)
        head, _ = fit_head(encoder, x0[tr], sub, descriptions, opts.head_options())
        head_right += int((head.predict(x0[te]) == data.y[te]).sum())
        lora_pred[te.tobytes()] = pred = lora_fold(tr, te)
        lora_right += int((pred == data.y[te]).sum())
    n = len(data.items)
    check = check_update(encoder, request, opts, k, steps, should_stop,
                         new=lambda tr, te: lora_pred[te.tobytes()])
    return round(head_right / n, 4), round(lora_right / n, 4), check


def train_auto_lora(encoder: Encoder, request: TrainRequest, progress: Progress | None = None,
                    should_stop: StopCheck | None = None) -> Artifact:
    """The candidate for the next version (in a job): the guard's paired estimates (and, on
    an update, the update check), then the LoRA recipe on everything."""
    t0 = time.perf_counter()
    opts = request.options
    assert isinstance(opts, AutoOptions)
    data = request.data
    enc = encoder.pytorch()  # autograd needs PyTorch, whatever serves
    n_desc = len(request.descriptions)
    full = _steps(len(data.items) + n_desc, data.y, opts)
    # the guard trains one teacher per fold on (k-1)/k of the rows: (k-1) x a full training;
    # an update's check as many again on the previous rows
    folds = opts.guard_folds - 1 + (opts.guard_folds - 1 if request.base is not None else 0)
    steps = _Steps(progress, int(full * (folds + 1 + (opts.student_steps if request.unlabeled
                                                      else 0))))
    head_est, lora_est, check = guard(enc, request, opts, steps, should_stop)
    lw, fit_rows, x, info = lora_recipe(enc, data, request.descriptions, request.unlabeled, opts,
                                        steps.part(), should_stop)
    head, tuned_cv = fit_calibrated(x, data, opts.fit_params(), fit_rows)
    recipe = "LoRA" + (" + descriptions" if n_desc else "") + (
        " + self-training on unlabeled texts" if info["pseudo_labels"] else "")
    metrics = AutoMetrics(
        examples=len(data.items), per_label=data.counts(), recipe=recipe, estimate=lora_est,
        estimate_head=head_est, estimate_folds=min(opts.guard_folds, min(data.counts().values())),
        train_seconds=round(time.perf_counter() - t0, 2),
        unlabeled=len(request.unlabeled) or None,
        pseudo_labels=info["pseudo_labels"] if request.unlabeled else None,
        cv_accuracy_tuned=tuned_cv["cv_accuracy"] if tuned_cv else None,
        update_check=check).stored()
    return Artifact(kind="auto", labels=data.labels, tensors={**head.tensors(), **lw.tensors()},
                    options=opts.stored(request.label_order), metrics=metrics,
                    warnings=assess(data, {"cv_accuracy": lora_est}, opts.class_prior),
                    lora=lw.spec)


def accept(served: Manifest, candidate: Artifact) -> Decision:
    """Publish the candidate only if its paired estimate beats the head's by the margin."""
    opts, _ = AutoOptions.parse_with_labels(candidate.options)
    m = AutoMetrics.read(candidate.metrics)
    lora, head, margin = m.estimate, m.estimate_head, opts.min_gain
    if lora is None or head is None:
        return Decision(False, f"the candidate has no paired estimates, so {served.ref} stays")
    said = (f"{m.recipe}: {lora:.3f} vs the head's {head:.3f} on the same {m.estimate_folds} "
            "folds of your examples")
    check = m.update_check
    if check is not None and check.worse:  # never over a better replaced version
        return Decision(False, f"update check: on held-out folds of all your examples, "
                        f"{m.recipe} trained on them scored {check.updated:.3f} balanced "
                        f"accuracy, the version the update came from's recipe on its examples "
                        f"{check.previous:.3f} (worse by more than the noise, "
                        f"{check.noise:.3f}), so {served.ref} stays")
    if opts.promote == "always":
        return Decision(True, f"options.promote = always ({said})")
    if opts.promote == "never":
        return Decision(False, f"options.promote = never ({said})")
    if lora > head + margin:
        return Decision(True, f"{said}: better by {lora - head:.3f} > {margin:.3f}")
    return Decision(False, f"{said}: not better by more than {margin:.3f}, so {served.ref} stays")


def check_auto(request: TrainRequest) -> None:
    if request.data.multi_label:
        raise InvalidExamples("kind auto is single-label; use kind \"head\" for examples with "
                              "`labels` lists")


AUTO = register_kind(AdapterKind(
    name="auto", summary="the recommended kind: uses examples, label descriptions and unlabeled "
    "texts; a head at once (201), then a stronger LoRA recipe in a job that is published as the "
    "next version only if its cross-validated estimate is better", options=AutoOptions,
    metrics=AutoMetrics, train=train_auto_head, check=check_auto,
    background=Background(train=train_auto_lora, accept=accept, applies=stronger_recipe_applies)))
