"""What a training job hands on, as frozen pydantic models validated at both ends (cf. the
typed ``Manifest``): a dict read by key (``p["stage"]``, ``spec.get("dtype", ...)``) is where
a wrong or missing field used to surface as a ``TypeError`` deep inside training.

- ``TrainPayload``: a job's payload in the queue (``jobs/payloads/<id>.json``), written by
  the create path, read by whichever trainer claims the job.
- ``WorkerSpec``: what the job runner hands a training worker process on its stdin.
- ``WorkerReply``: one line the worker writes back: progress, done, or an error.
"""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ..errors import TailorError
from ..storage import Inputs
from ..validation import Limits

Stage = Literal["train", "background"]  # the kind's trainer, or its background recipe


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class InvalidJob(TailorError):
    """A job's payload that does not parse (written by another Tailor version, or damaged):
    the job fails with this, it is never half-read."""

    status = 422
    code = "invalid_job"


class PreviousVersion(_Frozen):
    """An update's starting point, as a job needs it for the update check
    (training/monotone.py): which version it replaces, how many of the job's examples (the
    first ones) that version was trained on, and with which options and labels."""

    ref: str
    version: int = Field(ge=1)
    examples: int = Field(ge=0)
    labels: list[str]
    options: dict[str, Any]
    lora: bool  # the version has LoRA weights: its recipe tuned the encoder


class TrainInputs(_Frozen):
    """What to train, as the client posted it. The worker validates it again against the
    deployment's limits (``kinds.build_request``), as the create path did."""

    kind: str  # the adapter kind (``AdapterKind.name``)
    stage: Stage = "train"
    examples: list[Any] = []
    options: dict[str, Any] = {}
    label_descriptions: dict[str, str] = {}
    unlabeled: list[str] = []
    previous: PreviousVersion | None = None  # an update: checked against this version

    def inputs(self) -> Inputs:
        """What the published version is stored with (for updates and export)."""
        return Inputs(list(self.examples), dict(self.label_descriptions), list(self.unlabeled))


class TrainPayload(TrainInputs):
    """A training job's payload. ``changes``: an update's summary (``add_examples``);
    ``base_version``: for the background stage, the version it may replace."""

    changes: dict[str, Any] | None = None
    base_version: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _base_with_background(self) -> "TrainPayload":
        if (self.stage == "background") != (self.base_version is not None):
            raise ValueError("base_version is given for stage 'background' and only for it")
        return self

    def training(self) -> TrainInputs:
        """The part a worker process needs."""
        return TrainInputs(**self.model_dump(include=set(TrainInputs.model_fields)))

    @classmethod
    def read(cls, job_id: str, data: Any) -> "TrainPayload":
        """A claimed job's payload, or ``InvalidJob`` naming what is wrong with it."""
        try:
            return cls.model_validate(data)
        except ValidationError as e:
            raise InvalidJob(f"job {job_id}: its payload cannot be read ({_summary(e)}); it was "
                             "written by another Tailor version or damaged. Submit it again"
                             ) from None


class WorkerConfig(_Frozen):
    """How training worker processes run (TAILOR_TRAIN_THREADS, TAILOR_TRAIN_NICE,
    TAILOR_TRAIN_WARM: forked from a fork server that imported torch and the backbone's modules once,
    instead of a fresh interpreter per job; training/worker.py)."""

    threads: int = Field(1, ge=1)
    nice: int = Field(10, ge=0, le=19)
    warm: bool = True


class WorkerSpec(_Frozen):
    """Everything a training worker process gets: the job, its own copy of the backbone
    (``backbone_path``) embedding in ``dtype`` (the serving precision, so a head is fitted on
    the embeddings it is served on; autograd runs on fp32 weights either way), the
    deployment's limits, and where to write the trained tensors (``out``, safetensors)."""

    job: TrainInputs
    backbone_path: str | None
    limits: Limits
    out: str
    worker: WorkerConfig = WorkerConfig()
    dtype: Literal["float32", "bfloat16"] = "float32"


class WorkerError(_Frozen):
    code: str
    message: str
    status: int = Field(422, ge=400, le=599)


class WorkerReply(_Frozen):
    """One stdout line of a training worker: exactly one of the three."""

    progress: tuple[int, int, float | None] | None = None  # step, total, loss
    done: dict[str, Any] | None = None  # ``Artifact.meta()``; the tensors are in ``out``
    error: WorkerError | None = None

    @model_validator(mode="after")
    def _one(self) -> "WorkerReply":
        if sum(x is not None for x in (self.progress, self.done, self.error)) != 1:
            raise ValueError("a reply is exactly one of progress, done, error")
        return self


def _summary(e: ValidationError) -> str:
    return "; ".join(f"{'.'.join(map(str, err['loc'])) or 'payload'}: {err['msg']}"
                     for err in e.errors()[:3])
