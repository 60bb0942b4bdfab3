"""The one build pipeline of every ONNX graph Tailor makes (an adapter's bundle, the shared
backbone of the onnxruntime runtime, its LoRA-routed twin): trace -> fuse or int8 -> parity.

The graph is built in a folder the caller owns and removes; the caller moves it into place
only after this returns, so a failed parity check (``ParityError``) leaves nothing behind.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from .graph import export_onnx, fuse_transformer
from .onnx_config import OnnxConfig, Quantize
from .parity import Case, ParityError, ParityReport, check_parity, torch_outputs
from .quantize import quantize as quantize_graph
from .session import create_session


def build_graph(module: nn.Module, config: OnnxConfig, example: tuple[torch.Tensor, ...],
                work: Path, *, quantize: Quantize, model_config: Any, cases: Sequence[Case],
                providers: Sequence[str] = ("CPUExecutionProvider",),
                keep_fp32: tuple[str, ...] = (), recipes: Sequence[str] = ("dynamic",),
                embeddings: bool = False) -> tuple[Path, ParityReport]:
    """Export ``module`` into ``work`` and check it on ``providers``. Returns the graph's
    path and the parity report; raises ParityError when onnxruntime disagrees with PyTorch.

    fp32 graphs get onnxruntime's transformer fusions. int8 goes on the UNFUSED graph (every
    MatMul, Q/K/V included, gets int8 weights: faster than int8 on the fused graph,
    docs/onnx.md), trying ``recipes`` (export/quantize.py) in order and keeping the first that
    passes the parity check: the fast recipe where it keeps accuracy, a more accurate one
    where it does not; the report names the recipe and what each failed attempt measured.
    Nodes named with a ``keep_fp32`` prefix stay fp32 (an adapter's head: tiny, and right
    before the probabilities); ``embeddings``: the word-embedding table becomes int8 too.
    """
    raw = export_onnx(module, config, work / "raw.onnx", example)
    if quantize != "int8":
        model = fuse_transformer(raw, work / "fused.onnx", model_config)
        return model, check_parity(module, create_session(model, providers), config, cases, quantize)
    attempts: list[dict[str, Any]] = []
    references = None  # PyTorch's outputs: computed at the first check, the same for every recipe
    for i, recipe in enumerate(recipes):
        model = quantize_graph(recipe, raw, work / f"int8-{recipe}.onnx", keep_fp32=keep_fp32,
                               embeddings=embeddings)
        if references is None:
            references = [torch_outputs(module, config, case) for case in cases]
        try:
            report = check_parity(module, create_session(model, providers), config, cases,
                                  quantize, references)
        except ParityError as e:
            e.report.recipe = recipe
            attempts.append({"recipe": recipe, "message": e.message,
                             **{k: getattr(e.report, k) for k in (
                                 "top1_agreement", "top1_agreement_examples",
                                 "top1_agreement_heldout", "min_cosine")}})
            if i == len(recipes) - 1:
                e.report.attempts = attempts
                raise
            continue
        report.recipe = recipe
        report.attempts = attempts
        return model, report
    raise ValueError("no int8 recipe given")
