"""int8 recipes for an exported graph, and the order they are tried in.

Each recipe takes an UNFUSED fp32 graph (``graph.export_onnx``) and writes a quantized copy.
Only MatMuls with a constant weight are quantized, so a LoRA delta path fed as graph inputs
(export/lora_graph.py) and an adapter's head (a Gemm, or a node named in ``keep_fp32``) stay
fp32.

- ``dynamic``: per-channel QInt8 weights, activations quantized per tensor at run time
  (MatMulInteger). The fastest on CPU (2.5-2.8x fp32 at batch 32 on short texts), but one
  scale per activation tensor loses too much on BERT-style hidden states with outlier
  channels: adapters kept only 95-98% top-1 agreement with fp32 on held-out texts
  (benchmarks/RESULTS.md; static calibration and SmoothQuant did not reach 99% either).
- ``weight_only``: MatMulNBits, 8-bit weights in blocks of 32 with a scale each; computes
  with int8 activations quantized per block of 32 values (``accuracy_level`` 4), so an outlier
  channel costs only its own block. Kept >= 99% top-1 agreement for every adapter measured,
  at about fp32 speed on this CPU: what it buys is size.
- ``weight_only_b16``: the same with blocks of 16 (a scale per 16 weights): finer scales for
  adapters whose near-ties flip under blocks of 32.
- ``weight_only_fp32``: 8-bit weights in blocks of 16, computed in fp32 (``accuracy_level``
  1: weights dequantized, activations untouched), so the only error is the weights' rounding.
  The last rung. Measured on LoRA adapters trained on BBC News (8 x 5, 2 epochs; 166 gated
  rows): blocks of 32 with fp32 compute 98.8%, blocks of 16 99.4% (int8 or fp32 compute), the
  int8 word-embedding table alone 99.4%; keeping the LoRA-adapted query/value MatMuls fp32
  did not help (98.8%). The research's weight-only minimum over 9 adapters was 0.990, right
  at the gate: this rung buys the margin.
- ``word_embeddings``: the vocabulary table as int8 with one fp32 scale per row (Gather int8,
  Cast, Gather scale, Mul): MiniLM's table is 46.9 of the 90 MB of an fp32 graph, and no
  MatMul recipe touches it. Applied after either MatMul recipe in bundles.

``INT8_LADDER``: an adapter's int8 export tries these in order and keeps the first whose
parity check passes (export/pipeline.py): the fast one when it keeps accuracy for this
adapter, the accurate one otherwise.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

INT8_LADDER: tuple[str, ...] = ("dynamic", "weight_only", "weight_only_b16", "weight_only_fp32")
SCHEMES = {
    "dynamic": "dynamic int8: per-channel QInt8 weights of the backbone MatMuls, activations "
               "quantized per tensor at run time (MatMulInteger)",
    "weight_only": "weight-only int8: MatMulNBits, 8-bit weights in blocks of 32, int8 compute "
                   "with activations quantized per block (accuracy_level 4)",
    "weight_only_b16": "weight-only int8: MatMulNBits, 8-bit weights in blocks of 16, int8 "
                       "compute with activations quantized per block (accuracy_level 4)",
    "weight_only_fp32": "weight-only int8: MatMulNBits, 8-bit weights in blocks of 16, fp32 "
                        "compute (accuracy_level 1)",
}


def _prepared(src: Path, work: Path) -> Path:
    """value_info cleared, quant_pre_process without symbolic shapes (DESIGN.md traps)."""
    import onnx
    from onnxruntime.quantization import quant_pre_process

    model = onnx.load(str(src))
    del model.graph.value_info[:]
    cleared = work / (src.stem + ".cleared.onnx")
    pre = work / (src.stem + ".pre.onnx")
    try:
        onnx.save(model, str(cleared))
        quant_pre_process(str(cleared), str(pre), skip_symbolic_shape=True)
    finally:
        cleared.unlink(missing_ok=True)
    return pre


def _nodes_named(model: Any, prefixes: Sequence[str]) -> list[str]:
    """Names of nodes whose name starts with any prefix (e.g. the head: keep it fp32). The
    quantizer rewrites a Gemm into ``<name>_MatMul`` + Add before quantizing, so both names."""
    names = [n.name for n in model.graph.node if any(n.name.startswith(p) for p in prefixes)]
    return names + [f"{n}_MatMul" for n in names]


def dynamic(src: Path, dst: Path, keep_fp32: Sequence[str] = ()) -> Path:
    """Dynamic int8, per-channel QInt8 weights (per-tensor loses ~5 points of cosine on
    MiniLM, DESIGN.md), on the UNFUSED graph, MatMul/Gemm only. Measured on MiniLM, 1 thread,
    batch 32 (rows/s, short 12 tok / long 120 tok): unfused all-MatMul int8 430/34, fused
    graph + int8 MatMul 288/26; fp32 fused 191/21."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    src, dst = Path(src), Path(dst)
    pre = _prepared(src, dst.parent)
    try:
        quantize_dynamic(str(pre), str(dst), per_channel=True, weight_type=QuantType.QInt8,
                         op_types_to_quantize=["MatMul", "Gemm"],
                         nodes_to_exclude=_nodes_named(onnx.load(str(pre)), keep_fp32),
                         extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
    finally:
        pre.unlink(missing_ok=True)
    return dst


def weight_only(src: Path, dst: Path, keep_fp32: Sequence[str] = (), block_size: int = 32,
                accuracy_level: int = 4) -> Path:
    """MatMulNBits with 8-bit blockwise weights (constant-weight MatMuls only)."""
    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    model = onnx.load(str(src))
    q = MatMulNBitsQuantizer(model, bits=8, block_size=block_size, is_symmetric=True,
                             accuracy_level=accuracy_level,
                             nodes_to_exclude=_nodes_named(model, keep_fp32),
                             op_types_to_quantize=("MatMul",))
    q.process()
    q.model.save_model_to_file(str(dst), use_external_data_format=False)
    return Path(dst)


def weight_only_b16(src: Path, dst: Path, keep_fp32: Sequence[str] = ()) -> Path:
    """MatMulNBits with 8-bit weights in blocks of 16, int8 compute."""
    return weight_only(src, dst, keep_fp32, block_size=16)


def weight_only_fp32(src: Path, dst: Path, keep_fp32: Sequence[str] = ()) -> Path:
    """MatMulNBits with 8-bit weights in blocks of 16, fp32 compute."""
    return weight_only(src, dst, keep_fp32, block_size=16, accuracy_level=1)


RECIPES = {"dynamic": dynamic, "weight_only": weight_only, "weight_only_b16": weight_only_b16,
           "weight_only_fp32": weight_only_fp32}


def _vocabulary_gather(model: Any) -> tuple[Any, Any]:
    """The Gather that reads the largest 2-D float initializer (the word embeddings)."""
    import onnx

    inits = {i.name: i for i in model.graph.initializer}
    best = None
    for node in model.graph.node:
        if node.op_type != "Gather" or node.input[0] not in inits:
            continue
        init = inits[node.input[0]]
        if init.data_type != onnx.TensorProto.FLOAT or len(init.dims) != 2:
            continue
        if best is None or np.prod(init.dims) > np.prod(best[1].dims):
            best = (node, init)
    if best is None:
        raise ValueError("no Gather reads a 2-D float table: nothing to quantize")
    return best


def word_embeddings(src: Path, dst: Path) -> Path:
    """The vocabulary table as symmetric int8 with one fp32 scale per row:
    ``Gather(table, ids)`` -> ``Cast(Gather(table_int8, ids)) * Gather(row_scale, ids)``
    (46.9 MB -> 11.8 MB for MiniLM)."""
    import onnx
    from onnx import helper, numpy_helper

    m = onnx.load(str(src))
    node, init = _vocabulary_gather(m)
    table = init.name
    w = numpy_helper.to_array(init).astype(np.float32)  # [vocab, hidden]
    scale = np.maximum(np.abs(w).max(axis=1, keepdims=True), 1e-12) / 127.0  # [vocab, 1]
    q = np.clip(np.round(w / scale), -127, 127).astype(np.int8)
    m.graph.initializer.remove(init)
    m.graph.initializer.extend([numpy_helper.from_array(q, table + ".int8"),
                                numpy_helper.from_array(scale.astype(np.float32), table + ".scale")])
    out, ids = node.output[0], node.input[1]
    axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
    new = [helper.make_node("Gather", [table + ".int8", ids], [out + "_q"], name=node.name + "_q",
                            axis=axis),
           helper.make_node("Cast", [out + "_q"], [out + "_f"], name=node.name + "_cast",
                            to=onnx.TensorProto.FLOAT),
           helper.make_node("Gather", [table + ".scale", ids], [out + "_s"], name=node.name + "_s",
                            axis=axis),
           helper.make_node("Mul", [out + "_f", out + "_s"], [out], name=node.name + "_deq")]
    idx = list(m.graph.node).index(node)
    m.graph.node.remove(node)
    for k, n in enumerate(new):
        m.graph.node.insert(idx + k, n)
    onnx.save(m, str(dst))
    return Path(dst)


def quantize(recipe: str, src: Path, dst: Path, *, keep_fp32: Sequence[str] = (),
             embeddings: bool = False) -> Path:
    """``recipe`` on ``src`` -> ``dst``; ``embeddings``: the word-embedding table too."""
    if recipe not in RECIPES:
        raise ValueError(f"unknown int8 recipe {recipe!r}; known: {', '.join(RECIPES)}")
    dst = Path(dst)
    if not embeddings:
        return RECIPES[recipe](Path(src), dst, keep_fp32=keep_fp32)
    mid = dst.with_name(dst.stem + ".matmul.onnx")
    try:
        RECIPES[recipe](Path(src), mid, keep_fp32=keep_fp32)
        return word_embeddings(mid, dst)
    finally:
        mid.unlink(missing_ok=True)
