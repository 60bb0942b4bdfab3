"""The one build pipeline of every ONNX graph Tailor makes (an adapter's bundle, the shared
backbone of the onnxruntime runtime): trace -> fuse or int8 -> parity check.

The graph is built in a folder the caller owns and removes; the caller moves it into place
only after this returns, so a failed parity check (``ParityError``) leaves nothing behind.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from .graph import export_onnx, fuse_transformer, quantize_int8
from .onnx_config import OnnxConfig, Quantize
from .parity import Case, ParityReport, check_parity
from .session import create_session


def build_graph(module: nn.Module, config: OnnxConfig, example: tuple[torch.Tensor, ...],
                work: Path, *, quantize: Quantize, model_config: Any, cases: Sequence[Case],
                providers: Sequence[str] = ("CPUExecutionProvider",),
                keep_fp32: tuple[str, ...] = ()) -> tuple[Path, ParityReport]:
    """Export ``module`` into ``work`` and check it on ``providers``. Returns the graph's
    path and the parity report; raises ParityError when onnxruntime disagrees with PyTorch.

    int8 goes on the UNFUSED graph (every MatMul, Q/K/V included, gets int8 weights: faster
    than int8 on the fused graph, docs/onnx.md); nodes named with a ``keep_fp32`` prefix stay
    fp32 (an adapter's head: tiny, and right before the probabilities). fp32 graphs get
    onnxruntime's transformer fusions.
    """
    raw = export_onnx(module, config, work / "raw.onnx", example)
    if quantize == "int8":
        model = quantize_int8(raw, work / "int8.onnx", exclude_outputs_of=keep_fp32)
    else:
        model = fuse_transformer(raw, work / "fused.onnx", model_config)
    report = check_parity(module, create_session(model, providers), config, cases, quantize)
    return model, report
