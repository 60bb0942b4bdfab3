"""Tailor's domain: usable from a notebook with no server, and never imports HTTP code.

- ``encoders/``: the ``Encoder`` protocol, the PyTorch text encoder, per-row LoRA routing
- ``storage/``: the typed ``Manifest`` and the versioned, atomic adapter store
- ``serving/``: the LRU registry of loaded adapters and the micro-batcher
- ``training/``: head fitting and its quality estimate, jobs, the training worker's driver
- ``kinds/``: one module per adapter kind, registered once
- ``engine.py``: the ``Tailor`` facade; ``validation.py``, ``options.py``, ``heads.py``,
  ``segments.py``, ``errors.py``: the vocabulary they share
"""
from .encoders import BackboneIdentity, Encoder, TextEncoder, open_encoder
from .engine import Tailor
from .errors import TailorError
from .kinds import KINDS, get_kind
from .storage import AdapterStore, Manifest
from .validation import Limits

__all__ = ["KINDS", "AdapterStore", "BackboneIdentity", "Encoder", "Limits", "Manifest", "Tailor",
           "TailorError", "TextEncoder", "get_kind", "open_encoder"]
