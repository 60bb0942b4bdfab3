"""What an adapter kind is, and the registry every kind registers in once (cf. peft
``register_peft_method``, optimum ``register_tasks_manager_onnx``).

A kind is one module under adapters/kinds/ that declares an ``AdapterKind``: its options
model, its trainer, whether it trains in the request (201) or as a background job (202),
its own refusals, how a stored version loads for serving, and how it is baked into a fresh
copy of the backbone for export. Everything else (validation, the store, the registry, the
batcher, jobs, export, HTTP) is shared and never asks which kind it holds.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Protocol

from ..encoders.base import Encoder
from ..encoders.lora import LoraWeights
from ..errors import IncompatibleAdapter, InvalidExamples, InvalidRequest
from ..heads import LinearHead
from ..modalities import get_modality
from ..options import AdapterOptions
from ..serving.registry import LoadedAdapter
from ..storage import Artifact, Manifest, StoredAdapter
from ..training.fitting import log_prior
from ..training.monotone import UpdateCheck
from ..training.payloads import PreviousVersion
from ..validation import (LabeledData, Limits, validate_descriptions, validate_training_data,
                          validate_unlabeled)
from .metrics import TrainingMetrics

if TYPE_CHECKING:  # torch loads with an encoder; the kinds are declared without it
    from torch import nn

Progress = Callable[[int, int, float], None]  # step, total, loss
StopCheck = Callable[[], bool]  # True: stop now (raise training.jobs.Cancelled)


@dataclass(frozen=True)
class BaseVersion:
    """An update's starting point: the version it replaces (what a job is told of it), and
    that version loaded when the update trains in the request."""

    about: PreviousVersion
    adapter: LoadedAdapter | None = None  # None in a job: the server swaps weights if needed

    @property
    def examples(self) -> int:
        """How many of the request's examples (the first ones) that version was trained on."""
        return self.about.examples

    def checkable(self, data: LabeledData) -> bool:
        """Whether the update check applies: the same labels, previous examples, single-label."""
        return (self.examples > 0 and not data.multi_label and not data.zero_shot
                and list(self.about.labels) == data.labels)


@dataclass(frozen=True)
class TrainRequest:
    """Everything a trainer gets, already validated."""

    data: LabeledData  # labeled examples (none: zero-shot from the descriptions)
    options: AdapterOptions  # the kind's own options model
    label_order: list[str] | None  # options.labels, if the client gave an order
    limits: Limits
    descriptions: dict[str, str] = field(default_factory=dict)  # label -> what it means
    unlabeled: list[str] = field(default_factory=list)  # texts without labels
    base: BaseVersion | None = None  # an update of the same kind: the version it replaces


class Trainer(Protocol):
    def __call__(self, encoder: Encoder, request: TrainRequest, progress: Progress | None = None,
                 should_stop: StopCheck | None = None) -> Artifact: ...


def load_linear(stored: StoredAdapter) -> LoadedAdapter:
    """Head tensors, plus per-row LoRA weights when the manifest has a LoRA shape."""
    m = stored.manifest
    lora = LoraWeights.from_tensors(stored.tensors, m.lora) if m.lora is not None else None
    return LoadedAdapter(m, LinearHead.from_tensors(stored.tensors, m.multi_label), lora)


def merge_lora(model: nn.Module, adapter: LoadedAdapter) -> None:
    """Bake an adapter's LoRA (if any) into ``model``, a FRESH copy of the backbone:
    W += scaling * B @ A, what peft's ``merge_and_unload`` does. The merged graph has exactly
    the backbone's shape: no extra MatMuls at inference."""
    import torch
    from torch import nn

    if adapter.lora is None:
        return
    modules = dict(model.named_modules())
    with torch.no_grad():
        for name in adapter.lora.a:
            module = modules.get(name)
            if not isinstance(module, nn.Linear):
                raise InvalidRequest(f"adapter {adapter.ref}: LoRA module {name!r} is not a Linear "
                                     "layer of this backbone")
            module.weight += adapter.lora.delta_weight(name).to(module.weight.dtype)


def keep_previous_weights(artifact: Artifact, kept: LoadedAdapter, check: UpdateCheck,
                          examples: int, previous_examples: int) -> Artifact:
    """An update that the check found worse (training/monotone.py) is published with the
    replaced version's weights (head and LoRA), its own examples, metrics and a warning that
    says why: ``latest`` never gets worse, and no example is lost."""
    artifact.tensors = {**kept.head.tensors(), **(kept.lora.tensors() if kept.lora else {})}
    artifact.lora = kept.lora.spec if kept.lora else None
    artifact.metrics["weights_from"] = kept.ref
    artifact.warnings.append(
        f"kept the weights of {kept.ref}: trained on all {examples} examples, this update's "
        f"recipe scored {check.updated:.3f} balanced accuracy on held-out folds, against "
        f"{check.previous:.3f} for {kept.ref}'s recipe on its {previous_examples} examples "
        f"alone (worse by more than the noise, {check.noise:.3f}). Your examples are stored "
        "with this version, and the next update trains on all of them; adding examples of the "
        "other labels, or going back to the options of the kept version, usually helps")
    return artifact


def no_check(request: TrainRequest) -> None:
    return None


@dataclass(frozen=True)
class Decision:
    """Whether a background candidate replaces the served version, and why (shown to users)."""

    promote: bool
    reason: str


@dataclass(frozen=True)
class Background:
    """A second, stronger recipe trained by a job after the in-request version is served;
    ``accept`` decides, on honest estimates, whether the candidate is published as the next
    version (it never replaces a version newer than the one it started from)."""

    train: Trainer
    accept: Callable[[Manifest, Artifact], Decision]
    applies: Callable[[TrainRequest], bool] = lambda request: True  # worth a job for this request?


@dataclass(frozen=True)
class AdapterKind:
    name: str
    summary: str  # one line, shown in the API document and the CLI
    options: type[AdapterOptions]
    metrics: type[TrainingMetrics]  # what its trainer measured: read back through this model
    train: Trainer
    # True: trained by a background job (202 + job); a function: decided per request (e.g. a
    # head with unlabeled texts, which takes minutes to embed); False: in the request (201)
    runs_as_job: bool | Callable[[TrainRequest], bool] = False
    check: Callable[[TrainRequest], None] = no_check  # kind-specific refusals, before training
    load: Callable[[StoredAdapter], LoadedAdapter] = load_linear
    merge: Callable[[nn.Module, LoadedAdapter], None] = merge_lora  # export: bake into a copy
    background: Background | None = None  # a stronger recipe after the first version (auto)
    # trains LoRA weights inside the backbone: refused (422) on a backbone without PyTorch
    # weights (``TorchEncoder.lora_targets is None``); such a backbone gets no background
    tunes_backbone: bool = False

    def is_job(self, request: TrainRequest) -> bool:
        return self.runs_as_job(request) if callable(self.runs_as_job) else self.runs_as_job

    @property
    def job_kind(self) -> str:
        """The kind of this kind's training jobs, e.g. ``lora_train``: what a job record
        shows (GET /v1/jobs/{id}) and what job metrics are counted by."""
        return f"{self.name}_train"


KINDS: dict[str, AdapterKind] = {}


def register_kind(kind: AdapterKind) -> AdapterKind:
    if kind.name in KINDS:
        raise ValueError(f"adapter kind {kind.name!r} is registered twice")
    KINDS[kind.name] = kind
    return kind


def get_kind(name: Any) -> AdapterKind:
    kind = KINDS.get(name) if isinstance(name, str) else None
    if kind is None:
        raise InvalidRequest(f"kind {name!r} is not supported; use one of {list(KINDS)}")
    return kind


def kind_of_job(job_kind: str) -> AdapterKind | None:
    """The adapter kind whose training jobs are of ``job_kind`` (None: unknown here)."""
    return next((k for k in KINDS.values() if k.job_kind == job_kind), None)


def build_request(kind: AdapterKind, examples: Any, options: dict[str, Any] | None,
                  limits: Limits, descriptions: Any = None, unlabeled: Any = None) -> TrainRequest:
    """Validate a create request for ``kind``: its options, the descriptions and unlabeled
    texts, the examples (none: zero-shot), then the kind's own refusals. Raises a 4xx-mapped
    error; trains nothing."""
    opts, label_order = kind.options.parse_with_labels(options)
    serving = get_modality(limits.modality)
    if not serving.in_words and (descriptions or unlabeled):
        raise InvalidExamples(f"label_descriptions and unlabeled texts are text, and this "
                              f"deployment serves {serving.article()} {serving.name} backbone: "
                              f"post labeled {serving.name} examples only")
    described = validate_descriptions(descriptions, limits)
    pool = validate_unlabeled(unlabeled, limits)
    data = validate_training_data(examples, described, limits, label_order)
    request = TrainRequest(data, opts, label_order, limits, described, pool)
    log_prior(data.labels, getattr(opts, "class_prior", "uniform"))  # a 422 before any job
    kind.check(request)
    return request


def require_examples(kind: str, request: TrainRequest) -> None:
    """For kinds that cannot train from descriptions alone."""
    if request.data.zero_shot:
        raise InvalidExamples(f"kind {kind!r} needs labeled examples; for a zero-shot adapter "
                              "from label_descriptions alone use kind \"head\" or \"auto\"")


def load_adapter(stored: StoredAdapter) -> LoadedAdapter:
    """A stored version, loaded as its kind says (the registry's loader)."""
    m = stored.manifest
    kind = KINDS.get(m.kind)
    if kind is None:
        raise IncompatibleAdapter(f"adapter {m.ref} is of kind {m.kind!r}, which this server does "
                                  f"not know (known: {', '.join(KINDS)}). Serve it with the Tailor "
                                  "version that created it, or re-create it")
    return kind.load(stored)
