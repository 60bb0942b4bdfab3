"""Adapter options and request limits, checked at construction with messages that name the
bad value (cf. peft ``LoraConfig.__post_init__``)."""
from __future__ import annotations

import math
import re
import reprlib
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Self

from pydantic import (BaseModel, ConfigDict, Field, StringConstraints, ValidationError,
                      field_validator)

from .errors import InvalidName, InvalidOptions

ADAPTER_KINDS = ("head", "lora")

# Names become folder names: a strict allow-list, never a raw path. No dots (so no ".."),
# no "@" (reserved for name@version), no slashes. Matched with fullmatch: "$" alone would let
# a trailing newline through ("x\n" would become a folder name).
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
# ASCII digits only, and few of them: str.isdigit() also accepts "²" and "١", and int() of
# thousands of digits raises ValueError (Python's int-string conversion limit).
VERSION_RE = re.compile(r"[0-9]{1,18}")


_SHORT = reprlib.Repr()
_SHORT.maxstring = _SHORT.maxother = 80
_SHORT.maxlevel = 3


def shorten(value: object) -> str:
    """A short ``repr(value)`` for error messages: they echo what the client sent, and a
    client can send megabytes or deeply nested lists."""
    return _SHORT.repr(value)


def validate_name(name: object, what: str = "adapter name") -> str:
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise InvalidName(
            f"{what} {shorten(name)} is not allowed: use 1-64 characters from letters, digits, '-' "
            "and '_', starting with a letter or digit")
    return name


def parse_ref(ref: str) -> tuple[str, int | None]:
    """``name`` or ``name@version`` -> (name, version or None for latest)."""
    if not isinstance(ref, str):
        raise InvalidName(f"adapter must be a string like 'name' or 'name@3', got {ref!r}")
    name, sep, version = ref.partition("@")
    validate_name(name)
    if not sep:
        return name, None
    if not VERSION_RE.fullmatch(version) or int(version) < 1:
        raise InvalidName(f"adapter version in {shorten(ref)} must be a positive integer, e.g. '{name}@1'")
    return name, int(version)


class AdapterOptions(BaseModel):
    """Base of every kind's options: frozen, unknown keys refused, no NaN/inf anywhere, and
    one ``parse`` that turns pydantic's errors into a 422 naming the known options."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @field_validator("*", mode="before")
    @classmethod
    def _finite(cls, v: Any) -> Any:
        if isinstance(v, float) and not math.isfinite(v):
            raise ValueError("must be a finite number")
        return v

    @classmethod
    def parse(cls, options: dict[str, Any] | None) -> Self:
        try:
            return cls.model_validate(options or {})
        except ValidationError as e:
            raise InvalidOptions("invalid options: " + describe_validation_error(e)
                                 + f". Known options: {', '.join(cls.model_fields)}") from None


class HeadOptions(AdapterOptions):
    """Options of a ``kind: "head"`` adapter. Unknown keys are refused."""

    head: Literal["logreg", "centroid"] = Field(
        "logreg", description="logreg: L2 logistic regression; centroid: nearest class mean by cosine")
    c: float = Field(1.0, gt=0, le=1e6, description="inverse L2 strength of the logreg head")
    temperature: float = Field(20.0, gt=0, le=1000, description="logit scale of the centroid head")
    threshold: float = Field(0.5, gt=0, lt=1, description="multi-label: a label is predicted when its probability >= threshold")
    seed: int = Field(0, ge=0, le=2**31 - 1)
    cv_folds: int = Field(5, ge=2, le=10, description="folds of the cross-validated quality estimate")


# A Linear module's last name part (e.g. "query"): echoed in answers and stored in manifests.
ModuleName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")]


class LoraOptions(AdapterOptions):
    """Options of a ``kind: "lora"`` adapter. The defaults were chosen by measurement at 8
    examples per label (benchmarks/bench_lora.py); unknown keys are refused."""

    recipe: Literal["setfit", "ce"] = Field(
        "setfit", description="setfit: contrastive pairs tune LoRA, then a logreg head is fitted on "
        "the tuned embeddings; ce: cross-entropy through LoRA + head, then the head is refitted")
    rank: int = Field(8, ge=1, le=64, description="LoRA rank")
    alpha: float = Field(16.0, gt=0, le=1024, description="LoRA alpha (scaling = alpha / rank)")
    dropout: float = Field(0.1, ge=0, lt=1, description="dropout on the LoRA input while training")
    targets: tuple[ModuleName, ...] = Field(("query", "value"), min_length=1, max_length=16,
                                            description="names of the backbone Linear layers to adapt")
    epochs: int = Field(8, ge=1, le=100, description="passes over the examples")
    batch_size: int = Field(16, ge=2, le=256, description="rows per training step")
    learning_rate: float = Field(1e-3, gt=0, le=1, description="AdamW learning rate of the LoRA weights")
    max_length: int = Field(128, ge=8, le=512, description="tokens per example while training")
    c: float = Field(1.0, gt=0, le=1e6, description="inverse L2 strength of the final logreg head")
    seed: int = Field(0, ge=0, le=2**31 - 1)
    cv_folds: int = Field(5, ge=2, le=10, description="folds of the head-only quality estimate")


def describe_validation_error(e: ValidationError) -> str:
    parts = []
    for err in e.errors():
        # option names come from the client: cut them (a 10 kB key would make a 10 kB message)
        loc = ".".join(str(p)[:40] for p in err.get("loc", ())) or "value"
        msg = "unknown option" if err.get("type") == "extra_forbidden" else err.get("msg", "invalid")
        parts.append(f"{loc}: {msg}")
    return "; ".join(parts)


@dataclass(frozen=True)
class Limits:
    """Request limits. Every one is a setting (see service/settings.py)."""

    max_inputs: int = 256
    max_chars: int = 10_000
    max_examples: int = 2_000
    max_labels: int = 100
    max_label_chars: int = 100

    def __post_init__(self) -> None:
        for k, v in self.__dict__.items():
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"limit {k} must be a positive integer, got {v!r}")
