"""Modalities: one module each, registered once in ``MODALITIES`` (see base.py, and
docs/architecture.md for how to add one)."""
from .base import MODALITIES, Modality, Reader, get_modality, register_modality, wrong_modality
# each module registers its modality; the order is the order of the fields of an example
# in the HTTP contract (text, image, audio)
from . import text, image, audio  # noqa: F401,E402,I001

__all__ = ["MODALITIES", "Modality", "Reader", "get_modality", "register_modality",
           "wrong_modality"]
