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


def quantize_int8(src: Path, dst: Path, *, exclude_outputs_of: tuple[str, ...] = ()) -> Path:
    """Dynamic int8, per-channel QInt8 weights (per-tensor loses ~5 points of cosine on
    MiniLM, DESIGN.md). Applied to the UNFUSED graph, MatMul/Gemm only. Measured on MiniLM,
    1 thread, batch 32 (rows/s, short 12 tok / long 120 tok): unfused all-MatMul int8 430/34,
    fused graph + int8 MatMul 288/26, + int8 Attention 357/26, + int8 EmbedLayerNorm 413/29;
    fp32 fused 191/21. Min cosine to fp32 on the parity sample 0.964-0.971 for all of them. Shape inference is skipped (symbolic shapes fail on this graph), and
    value_info is cleared first so stale shapes cannot confuse the quantizer."""
    import onnx
    from onnxruntime.quantization import QuantType, quant_pre_process, quantize_dynamic

    src, dst = Path(src), Path(dst)
    model = onnx.load(str(src))
    del model.graph.value_info[:]
    cleared = dst.with_name(dst.stem + ".cleared.onnx")
    pre = dst.with_name(dst.stem + ".pre.onnx")
    try:
        onnx.save(model, str(cleared))
        quant_pre_process(str(cleared), str(pre), skip_symbolic_shape=True)
        excluded = _nodes_producing(onnx.load(str(pre)), exclude_outputs_of)
        quantize_dynamic(str(pre), str(dst), per_channel=True, weight_type=QuantType.QInt8,
                         op_types_to_quantize=["MatMul", "Gemm"],
                         nodes_to_exclude=excluded,
                         extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
    finally:
        cleared.unlink(missing_ok=True)
        pre.unlink(missing_ok=True)
    return dst


def _nodes_producing(model: Any, prefixes: tuple[str, ...]) -> list[str]:
    """Names of nodes whose name starts with any prefix (e.g. the head: keep it fp32). The
    quantizer rewrites a Gemm into ``<name>_MatMul`` + Add before quantizing, so both names."""
    names = [n.name for n in model.graph.node if any(n.name.startswith(p) for p in prefixes)]
    return names + [f"{n}_MatMul" for n in names]


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
