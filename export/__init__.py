"""Turning stored adapters into ONNX bundles, and onnxruntime as the backbone's runtime.

Imports ``adapters/`` only (never the service); the modules form one chain with no cycle:
``onnx_config, sample -> graph, quantize, parity, session -> image -> pipeline, lora_graph ->
bundle | runtimes/`` (image.py: what a bundle of an image adapter adds:
preprocessing as data and as numpy + Pillow code). Usable from a notebook::

    from export import export_bundle
    export_bundle(tailor.encoder, tailor.store, "default", "topics", quantize="int8",
                  dest_dir="out/")

The names below load on first use (PEP 562), as in ``adapters/__init__``: a light module
(``export.onnx_config``, read by the service's settings and schemas) does not pull in torch
and onnx through this package's ``__init__``, so BentoML's CLI process, which imports the
service only for its definition, never loads them (tests/unit/service/test_light_import.py).
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .bundle import ExportResult, check_quantize, export_bundle, served_quantize
    from .onnx_config import (CLASSIFIER, EXPORT_QUANTIZE_CHOICES, QUANTIZE_CHOICES,
                              SENTENCE_ENCODER, ExportQuantize, OnnxConfig, Quantize)
    from .parity import ParityError, ParityReport
    from .runtimes.ort import OnnxEncoder, build_backbone_onnx
    from .session import ProviderUnavailable, create_session

_WHERE = {"ExportResult": "bundle", "check_quantize": "bundle", "export_bundle": "bundle",
          "served_quantize": "bundle",
          "CLASSIFIER": "onnx_config", "QUANTIZE_CHOICES": "onnx_config",
          "SENTENCE_ENCODER": "onnx_config", "OnnxConfig": "onnx_config", "Quantize": "onnx_config",
          "ExportQuantize": "onnx_config", "EXPORT_QUANTIZE_CHOICES": "onnx_config",
          "ParityError": "parity", "ParityReport": "parity", "OnnxEncoder": "runtimes.ort",
          "build_backbone_onnx": "runtimes.ort", "ProviderUnavailable": "session",
          "create_session": "session"}
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
