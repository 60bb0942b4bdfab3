"""Modalities: one module each, registered once in ``MODALITIES`` (see base.py, and
docs/architecture.md for how to add one)."""
from .base import MODALITIES, Modality, Reader, get_modality, register_modality, wrong_modality
from . import image, text  # noqa: F401,E402  (each module registers its modality)

__all__ = ["MODALITIES", "Modality", "Reader", "get_modality", "register_modality",
           "wrong_modality"]
