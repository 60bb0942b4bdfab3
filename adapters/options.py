"""The base of every adapter kind's options: frozen, unknown keys refused, no NaN/inf, and one
``parse`` that turns pydantic's errors into a 422 naming the known options. Each kind
declares its own subclass in its module (adapters/kinds/)."""
from __future__ import annotations

import math
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from .errors import InvalidOptions
from .validation import validate_label_order


class AdapterOptions(BaseModel):
    """Options of one adapter kind. ``labels`` (the label order) is common to every kind and
    kept apart: it is checked against the examples, not by the options model."""

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
                                 + f". Known options: {', '.join([*cls.model_fields, 'labels'])}"
                                 ) from None

    @classmethod
    def parse_with_labels(cls, options: dict[str, Any] | None) -> tuple[Self, list[str] | None]:
        """(options, label order or None) from a request's ``options`` object."""
        raw = dict(options or {})
        label_order = validate_label_order(raw.pop("labels", None))
        return cls.parse(raw), label_order

    def stored(self, label_order: list[str] | None) -> dict[str, Any]:
        """What the manifest and the adapter record show: every option, defaults included."""
        out = self.model_dump(mode="json")
        if label_order is not None:
            out["labels"] = list(label_order)
        return out


def describe_validation_error(e: ValidationError) -> str:
    parts = []
    for err in e.errors():
        # option names come from the client: cut them (a 10 kB key would make a 10 kB message)
        loc = ".".join(str(p)[:40] for p in err.get("loc", ())) or "value"
        msg = "unknown option" if err.get("type") == "extra_forbidden" else err.get("msg", "invalid")
        parts.append(f"{loc}: {msg}")
    return "; ".join(parts)
