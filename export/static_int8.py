"""Calibrated (static) int8 backbone: activation scales fixed at build time from a packaged
sample of texts, so a row's quantization does not depend on the rows beside it.

Dynamic int8 (export/quantize.py: ``dynamic``) computes one activation scale per tensor per
RUN: a row's neighbours change its rounding, and the service's answers move with the traffic
(issue 20). Here onnxruntime's ``quantize_static`` inserts QuantizeLinear/DequantizeLinear
pairs (QDQ) whose scales come from calibration: the unfused fp32 graph is run on the fixed
calibration texts (``calibration_texts``: export/sample.py's held-out texts, one row per run
so padding never enters a range), and int8 GEMMs accumulate in
int32, exactly. Only MatMuls whose second input is a constant weight are quantized
(``weight_matmuls``): attention's Q.K^T and P.V stay fp32, as do LayerNorm, softmax, GELU
and the pooling; ``keep_fp32`` names more (e.g. the FFN output projections, whose inputs
carry BERT's outlier channels).

What could still move: the fp32 parts between quantized MatMuls (softmax over a padded
length, LayerNorm) may round differently with the batch's shape, and a value on a rounding
boundary of a QuantizeLinear would then move by one step. Measured (export/runtimes/invariance.py):
6e-8 alone vs in mixed, padded batches, so onnxruntime's kernels keep rows apart here
(OpenVINO + NNCF did not: 2e-3, benchmarks/RESULTS.md issue 20).

NOT an ``auto`` candidate yet: on MiniLM it keeps the gate's cosine (0.997) but not its mean
drift (1.9e-3 > 1e-3), and with the FFN fp32 it is no faster than onnx fp32 at batch 32
(docs/onnx.md). To register it (the runtime registry): availability ``available()``, factory
``open_encoder(encoder, cache_dir, threads=, providers=)``, admission as every candidate's
(export/runtimes/auto.py: the accuracy gate, then ``admit``, the batch-invariance check).
"""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from .calibration import calibration_texts, row_feeds, weight_matmuls

CALIBRATION_METHOD = "MinMax"
NAME = "onnx-int8-static"
# MatMuls kept fp32, by regular expression on the node name: the FFN (intermediate and
# output projections), whose GELU outputs and BERT's outlier channels one per-tensor scale
# cannot hold. Measured on MiniLM (BBC + TREC texts vs fp32): every weight MatMul int8 min
# cosine 0.79, FFN output fp32 0.96, whole FFN fp32 0.997 (mean drift 1.8-1.9e-3).
KEEP_FP32: tuple[str, ...] = (r"/intermediate/dense/", r"/layer\.\d+/output/dense/")


def available() -> bool:
    """Whether this onnxruntime has the static quantizer (CPU execution is everywhere)."""
    try:
        from onnxruntime.quantization import quantize_static  # noqa: F401
    except ImportError:
        return False
    return True


class TextReader:
    """onnxruntime's CalibrationDataReader over token ids, one row per feed."""

    def __init__(self, feeds: Sequence[dict[str, np.ndarray]]):
        self._it: Iterator[dict[str, np.ndarray]] = iter(feeds)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)

    def rewind(self) -> None:  # not used by MinMax; part of the reader protocol
        raise NotImplementedError


def quantize(src: Path, dst: Path, feeds: Sequence[dict[str, np.ndarray]], *,
             keep_fp32: Sequence[str] = (), per_channel: bool = True,
             method: str = CALIBRATION_METHOD) -> Path:
    """Static QDQ int8 of ``src``'s weight MatMuls (except names matching a ``keep_fp32``
    regular expression), calibrated on ``feeds``: per-channel symmetric int8 weights, per-tensor
    uint8 activations with calibrated ranges (u8 x s8: what VNNI multiplies)."""
    import onnx
    from onnxruntime.quantization import (CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)

    from .quantize import _prepared

    src, dst = Path(src), Path(dst)
    pre = _prepared(src, dst.parent)
    try:
        model = onnx.load(str(pre))
        nodes = [n for n in weight_matmuls(model) if not any(re.search(k, n) for k in keep_fp32)]
        quantize_static(str(pre), str(dst), TextReader(feeds), quant_format=QuantFormat.QDQ,
                        op_types_to_quantize=["MatMul"], nodes_to_quantize=nodes,
                        per_channel=per_channel, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8,
                        calibrate_method=getattr(CalibrationMethod, method),
                        extra_options={"ActivationSymmetric": False, "WeightSymmetric": True})
    finally:
        pre.unlink(missing_ok=True)
    return dst


def cache_path(cache_dir: str | Path, encoder: Any) -> Path:
    """The cached graph: keyed by the backbone, the recipe and the calibration sample."""
    from .onnx_config import SENTENCE_ENCODER

    recipe = repr((CALIBRATION_METHOD, KEEP_FP32, calibration_texts()))
    tag = hashlib.sha256(recipe.encode()).hexdigest()[:8]
    return Path(cache_dir) / f"{encoder.identity.sha256}-int8static-{tag}-op{SENTENCE_ENCODER.opset}.onnx"


def build(encoder: Any, dest: Path) -> Path:
    """Export the backbone (a fresh copy; encoder + pooling + norm), quantize it statically
    on the calibration sample, move it into ``dest`` atomically (nothing left on failure).
    Accuracy and batch invariance are judged by the caller (export/runtimes/auto.py)."""
    from .graph import example_inputs, export_onnx
    from .onnx_config import SENTENCE_ENCODER

    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".build-", dir=dest.parent))
    try:
        raw = export_onnx(encoder.graph_module(encoder.fresh_model()), SENTENCE_ENCODER,
                          work / "raw.onnx", example_inputs(encoder))
        feeds = row_feeds(encoder, calibration_texts(), SENTENCE_ENCODER.inputs)
        out = quantize(raw, work / "static.onnx", feeds, keep_fp32=KEEP_FP32)
        os.replace(out, dest)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return dest


def open_encoder(encoder: Any, cache_dir: str | Path, *, threads: int = 0,
                 providers: Sequence[str] = ("CPUExecutionProvider",)) -> Any:
    """An ``OnnxEncoder`` on the cached static int8 graph (built on first use). LoRA rows
    run on the PyTorch fp32 encoder in the same call (no LoRA-routed static graph yet): a
    row's answer never depends on its batch either way."""
    from .runtimes.ort import OnnxEncoder

    path = cache_path(cache_dir, encoder)
    if not path.exists():
        build(encoder, path)
    return OnnxEncoder(encoder, path, providers, threads, quantize="int8")


__all__ = ["CALIBRATION_METHOD", "KEEP_FP32", "NAME", "TextReader", "available", "build",
           "cache_path", "calibration_texts", "open_encoder", "quantize", "row_feeds",
           "weight_matmuls"]
