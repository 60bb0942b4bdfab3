"""Tailor's domain: backbone, heads, trainer, store, registry and batching. No HTTP here."""
from .backbone import Backbone, BackboneIdentity
from .config import HeadOptions, Limits
from .engine import Tailor
from .errors import TailorError
from .store import AdapterStore

__all__ = ["Backbone", "BackboneIdentity", "HeadOptions", "Limits", "Tailor", "TailorError",
           "AdapterStore"]
