"""Adapter kinds: one module each, registered once in ``KINDS`` (see base.py, and
docs/architecture.md for how to add one)."""
from . import auto, head, lora  # noqa: F401  (each module registers its kind)
from .base import (KINDS, AdapterKind, TrainRequest, build_request, get_kind, kind_of_job,
                   load_adapter, register_kind)

__all__ = ["KINDS", "AdapterKind", "TrainRequest", "build_request", "get_kind", "kind_of_job",
           "load_adapter", "register_kind"]
