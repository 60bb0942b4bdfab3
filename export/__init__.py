"""Turning stored adapters into ONNX bundles, and onnxruntime as the backbone's runtime.

Imports ``adapters/`` only (never the service). Usable from a notebook::

    from export import export_bundle
    export_bundle(tailor.backbone, tailor.store, "default", "topics", quantize="int8",
                  dest_dir="out/")
"""
from .bundle import ExportResult, check_quantize, export_bundle
from .onnx_config import CLASSIFIER, QUANTIZE_CHOICES, SENTENCE_ENCODER, OnnxConfig
from .parity import ParityError, ParityReport
from .runtime import OnnxBackbone, ProviderUnavailable, create_session
from .targets import EXPORT_TARGETS, register_export_target

__all__ = ["CLASSIFIER", "EXPORT_TARGETS", "ExportResult", "OnnxBackbone", "OnnxConfig",
           "ParityError", "ParityReport", "ProviderUnavailable", "QUANTIZE_CHOICES",
           "SENTENCE_ENCODER", "check_quantize", "create_session", "export_bundle",
           "register_export_target"]
