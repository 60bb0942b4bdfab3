"""The PyTorch module that gets exported, and the graph operations: export, fuse, int8.

Everything here works on a FRESH copy of the backbone (``TorchEncoder.fresh_model``):
tracing, merging or quantizing never touches the served model (STYLE.md: the shared
backbone is never mutated).

Exporter choice: the TorchScript exporter (``dynamo=False``). On this stack (torch 2.13,
onnxscript absent) it needs no extra package, exports MiniLM in ~2 s, gives a plain graph
that onnxruntime's transformer fusions recognise, and has none of the dynamo traps listed
in DESIGN.md (value_info clashes before quantize_dynamic, the ``embedding`` output name).
The graph is checked against PyTorch after every export anyway (export/parity.py).
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from adapters.encoders import TorchEncoder
from adapters.heads import LinearHead

from .onnx_config import OnnxConfig


class Classifier(nn.Module):
    """An encoder graph module (inputs -> pooled embedding) + a LinearHead ->
    (probabilities, logits), both [batch, labels]."""

    def __init__(self, encoder: nn.Module, head: LinearHead):
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(head.dim, head.num_labels)
        with torch.no_grad():
            self.head.weight.copy_(head.weight)
            self.head.bias.copy_(head.bias)
        self.activation = head.activation

    def forward(self, *inputs: torch.Tensor):
        logits = self.head(self.encoder(*inputs))
        if self.activation == "softmax":
            probs = torch.softmax(logits, dim=-1)
        else:
            probs = torch.sigmoid(logits)
        return probs, logits


def example_inputs(encoder: TorchEncoder) -> tuple[torch.Tensor, ...]:
    """A small batch of two rows of different lengths, as the graph takes it (for tracing)."""
    batch = encoder.collate(encoder.prepare(["a short one",
                                             "a somewhat longer example sentence for tracing"]))
    return tuple(batch[name].cpu() for name in encoder.graph_inputs)


def export_onnx(module: nn.Module, config: OnnxConfig, path: Path,
                example: tuple[torch.Tensor, ...]) -> Path:
    """Trace ``module`` to ``path`` with the config's names, dynamic axes and opset."""
    path = Path(path)
    module.eval()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer warnings on python-level shape checks
        torch.onnx.export(module, example, str(path), dynamo=False, opset_version=config.opset,
                          input_names=list(config.inputs), output_names=list(config.outputs),
                          dynamic_axes={k: dict(v) for k, v in config.dynamic_axes.items()},
                          do_constant_folding=True)
    import onnx

    onnx.checker.check_model(str(path))
    return path


FUSABLE_MODEL_TYPES = ("bert", "roberta", "xlm-roberta", "distilbert", "mpnet", "electra")


def fuse_transformer(src: Path, dst: Path, model_config: Any) -> Path:
    """onnxruntime's transformer fusions (Attention, SkipLayerNorm, BiasGelu, EmbedLayerNorm)
    for BERT-like encoders; other architectures are copied unchanged. The fused ops live in
    the com.microsoft domain, which every onnxruntime build (CPU and CUDA) implements."""
    import shutil

    src, dst = Path(src), Path(dst)
    model_type = getattr(model_config, "model_type", "")
    if model_type not in FUSABLE_MODEL_TYPES:
        shutil.copyfile(src, dst)
        return dst
    from onnxruntime.transformers import optimizer

    kind = "bert" if model_type in ("bert", "roberta", "xlm-roberta", "electra", "mpnet") else model_type
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        opt = optimizer.optimize_model(str(src), model_type=kind,
                                       num_heads=int(model_config.num_attention_heads),
                                       hidden_size=int(model_config.hidden_size), opt_level=1)
    opt.save_model_to_file(str(dst))
    return dst
