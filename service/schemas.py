"""The public HTTP contract (v1): pydantic request/response models. The OpenAPI document
generated from them is what clients see, so fields are named as a client would.

Limits (sizes, counts) are checked by the domain, which answers 413/422 naming the limit;
these models check shape and types only.
"""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Example(_Strict):
    text: str = Field(..., description="the example text")
    label: str | None = Field(None, description="its label (single-label adapters)")
    labels: list[str] | None = Field(None, description="its labels (multi-label adapters), may be empty")


class CreateAdapterRequest(_Strict):
    name: str = Field(..., description="1-64 of [A-Za-z0-9_-]; re-using a name publishes a new version",
                      examples=["support-topics"])
    kind: Literal["head", "lora"] = Field("head", description=(
        "head: a classifier on frozen embeddings (201, ready at once); lora: LoRA weights on the "
        "backbone plus a head, trained in a background job (202 with the job)"))
    examples: list[Example] = Field(..., description="labeled examples, at least 2 labels")
    options: dict[str, Any] = Field(default_factory=dict, description=(
        "head: `head` (logreg|centroid, default logreg), `c` (1.0), `temperature` (20, centroid), "
        "`threshold` (0.5, multi-label), `seed` (0), `cv_folds` (5), `labels` (label order). "
        "lora: `recipe` (setfit|ce), `rank` (8), `alpha` (16), `dropout` (0.1), `targets` "
        "([query, value]), `epochs` (8), `batch_size` (16), `learning_rate` (1e-3), `max_length` "
        "(128), `c`, `seed`, `cv_folds`, `labels`"))


class AdapterRecord(BaseModel):
    name: str
    version: int
    ref: str = Field(..., description="name@version, usable as `adapter` in /v1/predict")
    kind: str
    status: Literal["ready"]
    labels: list[str]
    multi_label: bool
    options: dict[str, Any]
    metrics: dict[str, Any] = Field(..., description="examples, per_label counts, cv_accuracy or cv_f1_micro")
    warnings: list[str] = Field(..., description="why the quality estimate may not be trusted")
    backbone: dict[str, str] = Field(..., description="name and sha256 of the backbone it was trained on")
    size_bytes: int
    created_at: str
    versions: list[int] | None = Field(None, description="all stored versions (GET of one adapter)")


class JobProgress(BaseModel):
    step: int
    total: int


class JobError(BaseModel):
    code: str
    message: str


class JobRecord(BaseModel):
    id: str
    kind: str = Field(..., description="lora_train")
    adapter: str = Field(..., description="name of the adapter the job creates")
    status: Literal["queued", "running", "succeeded", "failed", "cancelled"]
    progress: JobProgress
    loss: float | None = Field(None, description="training loss of the last step")
    error: JobError | None = Field(None, description="why it failed")
    result: dict[str, Any] | None = Field(None, description="succeeded: `adapter` (name@version), `version`, `metrics`")
    created_at: str
    started_at: str | None = None
    finished_at: str | None = None


class PendingAdapter(BaseModel):
    """The answer to creating a LoRA adapter: training runs in the background."""

    name: str
    kind: Literal["lora"]
    status: Literal["training"]
    labels: list[str]
    options: dict[str, Any]
    job: JobRecord = Field(..., description="poll GET /v1/jobs/{job.id}; DELETE cancels")


class TrainingAdapter(BaseModel):
    """An adapter whose (LoRA) training job is queued or running: not servable yet."""

    name: str
    kind: Literal["lora"]
    status: Literal["training"]
    job: JobRecord


class AdapterList(BaseModel):
    adapters: list[AdapterRecord] = Field(..., description="servable adapters, latest version each")
    training: list[TrainingAdapter] = Field(
        default_factory=list, description="adapters still training on this replica (a new name "
        "appears in `adapters` once its job succeeds; see GET /v1/jobs/{id})")


class DeleteResponse(BaseModel):
    name: str
    deleted_versions: list[int]


class PredictRequest(_Strict):
    adapter: str = Field(..., description="`name` (latest version) or `name@version`", examples=["support-topics"])
    inputs: list[str] = Field(..., description="texts to classify")


class Prediction(BaseModel):
    label: str = Field(..., description="most probable label")
    score: float = Field(..., description="its probability")
    scores: dict[str, float] = Field(..., description="probability of every label")
    labels: list[str] | None = Field(None, description="multi-label: labels at or above the threshold")


class PredictResponse(BaseModel):
    adapter: str = Field(..., description="the name@version that answered")
    predictions: list[Prediction]


class EmbedRequest(_Strict):
    inputs: list[str]


class EmbedResponse(BaseModel):
    embeddings: list[list[float]]
    dim: int


class ErrorBody(BaseModel):
    code: str = Field(..., description="stable snake_case error code")
    message: str = Field(..., description="what was wrong and what to do")


class ErrorResponse(BaseModel):
    error: ErrorBody


class ExportRequest(_Strict):
    quantize: Literal["none", "int8"] = Field(
        "none", description="none: fp32 graph (parity <= 1e-4 with PyTorch); int8: dynamic per-channel "
        "int8 backbone (~4x smaller; refused when top-1 agreement with fp32 is below 99%)")
