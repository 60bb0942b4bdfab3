"""What a stored adapter version is, as typed data.

``Manifest`` is parsed once, at the store's door (``AdapterStore.manifest``/``load``): a file
that does not parse is a ``CorruptAdapter`` naming the adapter and version, never a KeyError
deep in serving. It is frozen: versions are immutable.

``Artifact`` is what a trainer returns and the store publishes: tensors plus the fields a
trainer knows. The store adds identity (tenant, name, version, id), the backbone, checksums
and the time.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ..encoders.lora import LoraSpec
from ..heads import Activation, activation_for

if TYPE_CHECKING:
    import torch

SCHEMA_VERSION = 1


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class BackboneRef(_Frozen):
    name: str
    sha256: str


class FileRef(_Frozen):
    name: str
    sha256: str


class Manifest(_Frozen):
    """manifest.json of one immutable adapter version."""

    schema_version: Literal[1]
    id: str
    tenant: str
    name: str
    version: int = Field(ge=1)
    kind: str
    labels: tuple[str, ...] = Field(min_length=1)
    multi_label: bool = False
    options: dict[str, Any] = Field(default_factory=dict)
    metrics: dict[str, Any] = Field(default_factory=dict)
    warnings: tuple[str, ...] = ()
    lora: LoraSpec | None = None  # the shape of per-row encoder weights, for kinds that tune it
    backbone: BackboneRef
    files: dict[str, str]  # file name -> sha256
    size_bytes: int = 0
    examples_file: FileRef | None = None  # the posted examples (export parity, updates)
    label_descriptions: dict[str, str] | None = None  # what each label means, as posted
    unlabeled_file: FileRef | None = None  # the posted unlabeled texts (updates retrain on them)
    changes: dict[str, Any] | None = None  # an update: what changed since the version it came from
    created_at: str

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def activation(self) -> Activation:
        return activation_for(self.multi_label)

    @property
    def threshold(self) -> float:
        """Multi-label decision threshold (0.5 unless the adapter's options set one)."""
        return float(self.options.get("threshold", 0.5))


@dataclass
class Inputs:
    """What a version was trained on, as posted: kept beside it so that an update can train
    the next version on the old inputs plus the new ones, and export can check parity on
    in-domain texts."""

    examples: list[dict[str, Any]] = field(default_factory=list)
    label_descriptions: dict[str, str] = field(default_factory=dict)
    unlabeled: list[str] = field(default_factory=list)


@dataclass
class Artifact:
    """A trained adapter, not yet published: what every kind's trainer returns."""

    kind: str
    labels: list[str]
    tensors: dict[str, torch.Tensor]
    options: dict[str, Any]
    metrics: dict[str, Any]
    warnings: list[str] = field(default_factory=list)
    multi_label: bool = False
    lora: LoraSpec | None = None

    def meta(self) -> dict[str, Any]:
        """Everything but the tensors, as JSON (a training worker sends this to its server)."""
        return {"kind": self.kind, "labels": self.labels, "options": self.options,
                "metrics": self.metrics, "warnings": self.warnings,
                "multi_label": self.multi_label,
                "lora": self.lora.model_dump(mode="json") if self.lora else None}

    @classmethod
    def from_meta(cls, meta: dict[str, Any], tensors: dict[str, torch.Tensor]) -> "Artifact":
        lora = meta.get("lora")
        return cls(kind=meta["kind"], labels=list(meta["labels"]), tensors=tensors,
                   options=meta["options"], metrics=meta["metrics"],
                   warnings=list(meta.get("warnings", [])),
                   multi_label=bool(meta.get("multi_label")),
                   lora=LoraSpec.model_validate(lora) if lora else None)
