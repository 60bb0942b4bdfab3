"""Turning stored adapters into ONNX bundles (see issue: ONNX export). Imports adapters/ only."""
