"""Tailor's domain: usable from a notebook with no server, and never imports HTTP code.

- ``encoders/``: the ``Encoder`` protocol, the PyTorch text encoder, per-row LoRA routing
- ``storage/``: the typed ``Manifest`` and the versioned, atomic adapter store
- ``serving/``: the LRU registry of loaded adapters and the micro-batcher
- ``training/``: head fitting and its quality estimate, jobs, the training worker's driver
- ``kinds/``: one module per adapter kind, registered once
- ``engine.py``: the ``Tailor`` facade; ``validation.py``, ``options.py``, ``heads.py``,
  ``segments.py``, ``errors.py``: the vocabulary they share

The names below load on first use (PEP 562): ``from adapters import Tailor`` works as ever,
while a light module (``adapters.states``, read by the command-line client) does
not pull in torch through this package's ``__init__``.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .encoders import BackboneIdentity, Encoder, TextEncoder, open_encoder
    from .engine import Tailor
    from .errors import TailorError
    from .kinds import KINDS, get_kind
    from .storage import AdapterStore, Manifest
    from .validation import Limits

_WHERE = {"BackboneIdentity": "encoders", "Encoder": "encoders", "TextEncoder": "encoders",
          "open_encoder": "encoders", "Tailor": "engine", "TailorError": "errors",
          "KINDS": "kinds", "get_kind": "kinds", "AdapterStore": "storage",
          "Manifest": "storage", "Limits": "validation"}
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
