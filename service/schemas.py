"""The public HTTP contract (v1): pydantic request/response models. The OpenAPI document
generated from them is what clients see, so fields are named as a client would.

Limits (sizes, counts) are checked by the domain, which answers 413/422 naming the limit;
these models check shape and types only.
"""
from __future__ import annotations

import json
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, create_model

from adapters.kinds import KINDS
from adapters.modalities import MODALITIES, Modality
from adapters.training.jobs import JOB_ID_RE, JobState
from adapters.validation import NAME_RE, VERSION_RE
from export.onnx_config import ExportQuantize

# Documented, not enforced here: the domain checks names and refs itself and answers 422
# invalid_name with a message that says what is allowed. The patterns are in the OpenAPI
# document so that clients (and the fuzzer) know the shape of a name.
NAME_PATTERN = f"^{NAME_RE.pattern}$"
REF_PATTERN = f"^{NAME_RE.pattern}(@{VERSION_RE.pattern})?$"
JOB_ID_PATTERN = f"^{JOB_ID_RE.pattern}$"

# Kinds come from the registry (adapters/kinds): a new kind shows up here by registering.
KindName = Literal[tuple(KINDS)]  # type: ignore[valid-type]
JobStatus = Literal[tuple(s.value for s in JobState)]  # type: ignore[valid-type]


def _describe_kinds() -> str:
    return "; ".join(f"{k.name}: {k.summary}" for k in KINDS.values())


def _describe_options() -> str:
    """Each kind's options with their defaults (and choices), from its options model."""
    def one(name: str, field: Any) -> str:
        choices = get_args(field.annotation) if get_origin(field.annotation) is Literal else ()
        default = json.dumps(field.default)
        return f"`{name}` ({'|'.join(choices)}, default {default})" if choices else f"`{name}` ({default})"

    return ". ".join(f"{k.name}: " + ", ".join([*(one(n, f) for n, f in k.options.model_fields.items()),
                                               "`labels` (label order)"]) for k in KINDS.values())

_EXAMPLE_CREATE = {"name": "support-topics", "kind": "head", "examples": [
    {"text": "I was charged twice this month", "label": "billing"},
    {"text": "Please refund the duplicate payment", "label": "billing"},
    {"text": "The app crashes when I open settings", "label": "bug"},
    {"text": "Login button does nothing on Android", "label": "bug"}]}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# Items come from the modality registry (adapters/modalities): a new modality shows up here by
# registering. An input is a bare value (a text) or an object (``ImageItem``: {"image": ...});
# an example carries one field per modality.
def _item_model(m: Modality) -> type[BaseModel]:
    return create_model(f"{m.name.capitalize()}Item", __base__=_Strict,
                        **{m.field: (m.value, Field(..., description=m.item_doc))})


Item = Union[tuple(m.value if m.bare else _item_model(m)  # type: ignore[misc]
                   for m in MODALITIES.values())]
Example = create_model(
    "Example", __base__=_Strict,
    **{m.field: (m.value | None, Field(None, description=m.example_doc))
       for m in MODALITIES.values()},
    label=(str | None, Field(None, description="its label (single-label adapters)")),
    labels=(list[str] | None, Field(None, description="its labels (multi-label adapters), may be empty")))


class CreateAdapterRequest(_Strict):
    model_config = ConfigDict(json_schema_extra={"examples": [_EXAMPLE_CREATE]})

    name: str = Field(..., description="1-64 of [A-Za-z0-9_-]; re-using a name publishes a new version",
                      examples=["support-topics"], json_schema_extra={"pattern": NAME_PATTERN})
    kind: KindName = Field("head", description=_describe_kinds())
    examples: list[Example] = Field(default_factory=list, description=(
        "labeled examples, at least 2 labels; may be empty when every label has a description "
        "(a zero-shot adapter)"))
    label_descriptions: dict[str, str] | None = Field(None, description=(
        "what each label means, one sentence per label: a prior that helps most when examples "
        "are few; with no examples, the adapter is zero-shot (every label needs one)"),
        examples=[{"billing": "questions about charges, invoices, refunds and payments"}])
    unlabeled: list[str] | None = Field(None, description=(
        "texts without labels from the same source, used for semi-supervised training "
        "(at most TAILOR_MAX_UNLABELED, distinct): kinds lora and auto learn from them in a job "
        "(202); with label_descriptions and no examples (zero-shot), kinds head and auto "
        "self-train on up to options.self_train_texts of them in the request"))
    options: dict[str, Any] = Field(default_factory=dict, description=_describe_options())


class AddExamplesRequest(_Strict):
    """The next version: the latest version's inputs plus these."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"examples": [
        {"text": "My card was charged but the order failed", "label": "billing"}]}]})

    examples: list[Example] = Field(default_factory=list, description="more labeled examples; new labels are allowed")
    label_descriptions: dict[str, str] | None = Field(None, description="new or changed label descriptions")
    unlabeled: list[str] | None = Field(None, description="more unlabeled texts")
    kind: KindName | None = Field(None, description="train the next version as another kind (default: the same)")
    options: dict[str, Any] | None = Field(None, description="the next version's options (default: the same)")


class SuggestRequest(_Strict):
    model_config = ConfigDict(json_schema_extra={"examples": [{"texts": [
        "where is my refund?", "the app crashed twice", "can I pay by invoice?"], "k": 2}]})

    texts: list[str] = Field(..., description="candidate texts to label (at most TAILOR_MAX_SUGGEST_TEXTS, distinct)")
    k: int = Field(20, description="how many to suggest (>= 1)")


class Suggestion(BaseModel):
    index: int = Field(..., description="position in `texts`")
    text: str
    label: str = Field(..., description="the adapter's current prediction")
    score: float = Field(..., description="its probability")


class SuggestResponse(BaseModel):
    adapter: str = Field(..., description="the name@version that answered")
    suggestions: list[Suggestion] = Field(..., description="most informative first")


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
    label_descriptions: dict[str, str] | None = Field(None, description="what each label means, as posted")
    changes: dict[str, Any] | None = Field(None, description=(
        "an update (POST /v1/adapters/{name}/examples): from_version, examples_added, new_labels, "
        "label_descriptions_added/changed, unlabeled_added, metric_before -> metric_after"))
    job: "JobRecord | None" = Field(None, description=(
        "kind auto: the job training a stronger recipe, published as the next version only "
        "if its held-out estimate is better"))
    versions: list[int] | None = Field(None, description="all stored versions (GET of one adapter)")


class JobProgress(BaseModel):
    step: int
    total: int


class JobError(BaseModel):
    code: str
    message: str


class JobRecord(BaseModel):
    id: str
    kind: str = Field(..., description="`<adapter kind>_train`, e.g. lora_train")
    adapter: str = Field(..., description="name of the adapter the job creates")
    status: JobStatus
    progress: JobProgress
    loss: float | None = Field(None, description="training loss of the last step")
    error: JobError | None = Field(None, description="why it failed")
    result: dict[str, Any] | None = Field(None, description="succeeded: `adapter` (name@version), `version`, `metrics`")
    attempts: int = Field(0, description="times a trainer started it: a trainer lost mid-job (killed, "
                          "out of memory) is followed by another attempt, up to TAILOR_JOB_ATTEMPTS")
    created_at: str
    started_at: str | None = None
    finished_at: str | None = None


class JobList(BaseModel):
    jobs: list[JobRecord] = Field(..., description="newest first")
    next: str | None = Field(None, description="pass as `after` for the next page; null on the last")


class PendingAdapter(BaseModel):
    """The answer to creating an adapter that trains as a job (LoRA; a head with unlabeled
    texts): training runs in the background."""

    name: str
    kind: KindName
    status: Literal["training"]
    labels: list[str]
    options: dict[str, Any]
    job: JobRecord = Field(..., description="poll GET /v1/jobs/{job.id}; DELETE cancels")


class TrainingAdapter(BaseModel):
    """An adapter whose training job is queued or running: not servable yet (or, for kind
    auto, a stronger version in training)."""

    name: str
    kind: KindName
    status: Literal["training"]
    job: JobRecord


class AdapterList(BaseModel):
    adapters: list[AdapterRecord] = Field(..., description="servable adapters, latest version each")
    training: list[TrainingAdapter] = Field(
        default_factory=list, description="adapters whose training job is queued or running (a new "
        "name appears in `adapters` once its job succeeds; see GET /v1/jobs/{id})")


class DeleteResponse(BaseModel):
    name: str
    deleted_versions: list[int]


class PredictRequest(_Strict):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"adapter": "support-topics", "inputs": ["why was my card billed two times?", "the app freezes"]}]})

    adapter: str = Field(..., description="`name` (latest version) or `name@version`", examples=["support-topics"],
                         json_schema_extra={"pattern": REF_PATTERN})
    inputs: list[Item] = Field(..., description="texts to classify, or on an image "
                                          "deployment {\"image\": \"<base64 PNG or JPEG>\"} objects")


class Prediction(BaseModel):
    label: str = Field(..., description="most probable label")
    score: float = Field(..., description="its probability")
    scores: dict[str, float] = Field(..., description="probability of every label")
    labels: list[str] | None = Field(None, description="multi-label: labels at or above the threshold")


class PredictResponse(BaseModel):
    adapter: str = Field(..., description="the name@version that answered")
    predictions: list[Prediction]


class EmbedRequest(_Strict):
    inputs: list[Item]


class EmbedResponse(BaseModel):
    embeddings: list[list[float]]
    dim: int


class ErrorBody(BaseModel):
    code: str = Field(..., description="stable snake_case error code")
    message: str = Field(..., description="what was wrong and what to do")


class ErrorResponse(BaseModel):
    error: ErrorBody


class ExportRequest(_Strict):
    quantize: ExportQuantize | None = Field(
        None, description="default: the graph that answers what this service serves (int8-rows "
        "when the runtime is onnx-int8-rows, else none). none: fp32 graph (parity <= 1e-4 with PyTorch); int8: int8 backbone "
        "weights by the first recipe that keeps top-1 agreement with fp32 >= 99% over the "
        "adapter's examples and held-out texts (dynamic int8, then weight-only int8 in blocks "
        "of 32 or 16; the manifest names it and what the others measured), ~3.4x smaller; "
        "refused when no recipe does; int8-rows: the graph the onnx-int8-rows runtime serves, "
        "with the head (parity <= 1e-4 with the served graphs, top-1 agreement with fp32 >= 99%), "
        "text backbones only")


class AdapterUsage(BaseModel):
    name: str
    versions: int = Field(..., description="stored versions")
    stored_bytes: int = Field(..., description="bytes of all its versions' files")


class TenantUsage(BaseModel):
    tenant: str
    adapters: list[AdapterUsage]
    stored_bytes: int = Field(..., description="bytes of all the tenant's adapter versions")
    requests: dict[str, int] = Field(..., description=(
        "predict requests answered by THIS replica since it started, by HTTP status (each "
        "replica counts its own; Prometheus sums them: tailor_adapter_requests_total)"))
    jobs: dict[str, int] = Field(..., description="training jobs in the store by state")


class TenantList(BaseModel):
    tenants: list[TenantUsage] = Field(..., description=(
        "every tenant with adapters or jobs in the store, a key in the key file, or requests "
        "on this replica"))


AdapterRecord.model_rebuild()
