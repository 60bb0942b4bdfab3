"""What a training run measured, typed. Each kind declares its metrics model
(``AdapterKind.metrics``); its trainer builds one, and the manifest stores ``stored()``, which
adapter records show as is. Whoever reads a version's metrics back asks the kind's model
(``read``) instead of picking keys out of a dict: the update path (``estimate`` for an
update's ``metric_before``/``metric_after``), ``auto``'s promotion rule, and the command-line
client (``describe``).
"""
from __future__ import annotations

from typing import Any, ClassVar, Mapping, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..errors import CorruptAdapter
from ..training.monotone import UpdateCheck


class Estimate(BaseModel):
    """A version's honest quality estimate: which metric, and its value."""

    model_config = ConfigDict(frozen=True)
    name: str
    value: float


class TrainingMetrics(BaseModel):
    """What every kind measures. Unknown fields are refused when a trainer builds one (a
    typo would otherwise vanish from every record), and ignored when a stored version is
    read back (another Tailor version may have written more)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    # The fields that are an honest (held-out) quality estimate, best first.
    ESTIMATES: ClassVar[tuple[str, ...]] = ()

    examples: int = Field(ge=0, description="labeled examples trained on")
    per_label: dict[str, int] = Field(description="examples per label")
    # an update checked against the version it replaces (training/monotone.py), and the
    # version whose weights were kept when the update was worse (kinds/base.py)
    update_check: UpdateCheck | None = None
    weights_from: str | None = None

    def stored(self) -> dict[str, Any]:
        """The manifest's ``metrics``: fields that were measured (None: not measured)."""
        return self.model_dump(exclude_none=True)

    @classmethod
    def read(cls, metrics: Mapping[str, Any], ref: str = "the adapter") -> Self:
        """A stored version's metrics; ``CorruptAdapter`` (409) when they do not parse."""
        try:
            return cls.model_validate({k: v for k, v in metrics.items() if k in cls.model_fields})
        except ValidationError as e:
            raise CorruptAdapter(f"{ref}: its stored metrics do not parse ({e.errors()[0]['msg']} "
                                 f"at {e.errors()[0]['loc']}); re-create the adapter") from None

    def best_estimate(self) -> Estimate | None:
        """The best honest quality estimate there is, or None (e.g. zero-shot, 1 example)."""
        for name in self.ESTIMATES:
            value = getattr(self, name)
            if value is not None:
                return Estimate(name=name, value=value)
        return None

    def describe(self) -> list[str]:
        """Lines for a person, once the version is ready (the command-line client)."""
        e = self.best_estimate()
        return [] if e is None else [f"quality estimate: {e.name} {e.value:.3f}"]


class CrossValidated(TrainingMetrics):
    """Metrics of a head cross-validated on the examples (``training.fitting.cross_validate``):
    single-label accuracy and its calibration scale, or multi-label micro-F1."""

    cv_accuracy: float | None = Field(None, ge=0, le=1)
    cv_f1_micro: float | None = Field(None, ge=0, le=1)
    cv_folds: int | None = Field(None, ge=2)
    calibration_scale: float | None = Field(None, gt=0)


def lora_lines(tuned: float | None, seconds: float | None) -> list[str]:
    """What a LoRA-trained version adds to ``describe``: the optimistic estimate on the tuned
    embeddings, and how long training took."""
    lines = []
    if tuned is not None:
        lines.append(f"on the tuned embeddings: {tuned:.3f} (optimistic: LoRA saw every example)")
    if seconds is not None:
        lines.append(f"trained in {seconds:.1f} s")
    return lines
