"""Turning stored adapters into ONNX bundles, and onnxruntime as the backbone's runtime.

Imports ``adapters/`` only (never the service); the modules form one chain with no cycle:
``onnx_config, sample -> graph, quantize, parity, session -> image -> pipeline, lora_graph ->
bundle | runtimes/`` (image.py: what a bundle of an image adapter adds:
preprocessing as data and as numpy + Pillow code). Usable from a notebook::

    from export import export_bundle
    export_bundle(tailor.encoder, tailor.store, "default", "topics", quantize="int8",
                  dest_dir="out/")
"""
from .bundle import ExportResult, check_quantize, export_bundle
from .onnx_config import CLASSIFIER, QUANTIZE_CHOICES, SENTENCE_ENCODER, OnnxConfig, Quantize
from .parity import ParityError, ParityReport
from .runtimes.ort import OnnxEncoder, build_backbone_onnx
from .session import ProviderUnavailable, create_session

__all__ = ["CLASSIFIER", "ExportResult", "OnnxConfig", "OnnxEncoder", "ParityError",
           "ParityReport", "ProviderUnavailable", "QUANTIZE_CHOICES", "Quantize",
           "SENTENCE_ENCODER", "build_backbone_onnx", "check_quantize", "create_session",
           "export_bundle"]
