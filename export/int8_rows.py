"""A batch-invariant int8 backbone as ONE onnxruntime graph: the maths of
``adapters/encoders/int8_rows.py`` (one activation scale per token, SmoothQuant, exact int32
GEMMs), with onnxruntime's kernels doing the elementwise passes that made the PyTorch copy
slow (issue 20; research and numbers: benchmarks/research/ort_int8_rows.py, RESULTS.md "int8
rows in onnxruntime").

Built from the plain fp32 export (export/graph.py; a fresh copy of the backbone, nothing
served is touched). Every weight MatMul of the encoder (``calibration.weight_matmuls``)
becomes:

    x -> Mul(1/s)                         SmoothQuant, s per input channel (a = 0.5)
      -> lo, hi = ReduceMin/ReduceMax     per token: a row's scale never sees another row
      -> step = max(hi - lo, eps) / 255
      -> QuantizeLinear((x - lo) / step)  uint8, round half to even (one kernel)
      -> MatMulIntegerToFloat(q, Wq)      com.microsoft: int32 sums (exact), times the
                                          per-output-channel weight scales, in one kernel
      -> * step + lo * colsum(W)          the token's scale and zero point back

MatMuls that read the same tensor (a layer's Q, K and V) share one smoothing (from the
largest of their weights per input channel) and one quantization. Everything else (LayerNorm,
GELU, attention's softmax, the pooling) stays fp32 and row-wise, so a text's embedding does
not depend on what shares its batch: admission measures 6e-8 (fp32 itself: 4.5e-8).

Chosen on the calibration texts (export/sample.py's 102 held-out texts, one text per run),
judged on ``auto``'s own gate sample, which chose nothing: alpha 0.4-0.7 x zero point on the
FFN output only, on none, or on every input; every input with alpha 0.5 had the lowest
calibration drift (7.0e-4) and passes the gate (mean drift 8.2e-4, min cosine 0.9969). In
process, 2 threads, against the served onnx fp32 graph: 1.23x / 1.70x rows/s on short texts
at batch 1 / 32, 1.34x / 1.76x on BBC texts cut to 400 characters.

Not an ``auto`` candidate (export/runtimes/ort.py, which serves it, says why);
``TAILOR_RUNTIME=onnx-int8-rows`` chooses it. CPU only: ``MatMulIntegerToFloat`` is an onnxruntime CPU kernel. LoRA rows run on
the PyTorch fp32 encoder in the same call (no routed int8 graph yet), which keeps every row's
answer independent of its batch.
"""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np

NAME = "onnx-int8-rows"
ALPHA = 0.5  # SmoothQuant's migration strength
EPS = 1e-12
RECIPE = f"int8-rows-v1-alpha{ALPHA}-zero-point-every-input"


def calibrate(model: Any, feeds: Sequence[dict[str, np.ndarray]], names: Sequence[str]
              ) -> dict[str, np.ndarray]:
    """Per MatMul node in ``names``: the largest |input| per input channel over ``feeds``
    (one unpadded text each), read by running ``model`` (an fp32 ModelProto) with those
    inputs added as outputs."""
    import onnx
    import onnxruntime as ort

    model = onnx.ModelProto.FromString(model.SerializeToString())
    nodes = {n.name: n for n in model.graph.node}
    inputs = {name: nodes[name].input[0] for name in names}
    for t in dict.fromkeys(inputs.values()):
        model.graph.output.append(onnx.helper.make_empty_tensor_value_info(t))
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    outs = [o.name for o in sess.get_outputs()]
    seen: dict[str, np.ndarray] = {}
    for feed in feeds:
        for name, val in zip(outs, sess.run(outs, feed)):
            if name in inputs.values():
                a = np.abs(val).reshape(-1, val.shape[-1]).max(0)
                seen[name] = np.maximum(seen[name], a) if name in seen else a
    return {n: seen[t] for n, t in inputs.items()}


def quantize_rows(model: Any, maxima: dict[str, np.ndarray], *, alpha: float = ALPHA,
                  asymmetric: re.Pattern | None = None) -> Any:
    """``model`` (fp32 ModelProto) with every MatMul in ``maxima`` as a per-token int8 GEMM
    (module docstring). ``asymmetric``: the MatMuls (by the name of the first of those that
    share an input) quantized with a per-token zero point; None: all of them. The others are
    symmetric (benchmarks/research/ort_int8_rows.py compares). Returns a new ModelProto."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.ModelProto.FromString(model.SerializeToString())
    g = model.graph
    inits = {i.name: i for i in g.initializer}
    by_input: dict[str, list] = {}
    for node in g.node:
        if node.name in maxima:
            by_input.setdefault(node.input[0], []).append(node)
    first = {nodes[0].name: x for x, nodes in by_input.items()}
    new_nodes: list = []
    new_inits: list = []

    def const(name: str, arr: np.ndarray) -> str:
        new_inits.append(numpy_helper.from_array(arr, name))
        return name

    for node in g.node:
        if node.name not in maxima:
            new_nodes.append(node)
            continue
        if node.name not in first:
            continue  # emitted with the first MatMul that reads the same tensor
        x = first[node.name]
        group = by_input[x]
        p = node.name.strip("/").replace("/", "_")

        def n(op: str, ins: list[str], out: str, domain: str = "", **kw: Any) -> None:
            new_nodes.append(helper.make_node(op, ins, [out], name=f"{p}/{out}", domain=domain, **kw))

        ws = [numpy_helper.to_array(inits[m.input[1]]).astype(np.float64) for m in group]  # [in, out]
        wmax = np.max([np.abs(w).max(1) for w in ws], axis=0)
        s = np.clip(np.clip(maxima[node.name], 1e-5, None) ** alpha
                    / np.clip(wmax, 1e-5, None) ** (1 - alpha), 1e-5, None)
        n("Mul", [x, const(f"{p}_smooth", (1.0 / s).astype(np.float32))], f"{p}_xs")
        asym = asymmetric is None or bool(asymmetric.search(node.name))
        n("ReduceMax", [f"{p}_xs"], f"{p}_hi", axes=[-1], keepdims=1)
        n("ReduceMin", [f"{p}_xs"], f"{p}_lo", axes=[-1], keepdims=1)
        eps = const(f"{p}_eps", np.array(EPS, np.float32))
        if asym:
            n("Sub", [f"{p}_hi", f"{p}_lo"], f"{p}_range")
            n("Max", [f"{p}_range", eps], f"{p}_range_eps")
            n("Mul", [f"{p}_range_eps", const(f"{p}_inv255", np.array(1 / 255, np.float32))], f"{p}_step")
            n("Sub", [f"{p}_xs", f"{p}_lo"], f"{p}_x0")
            n("Div", [f"{p}_x0", f"{p}_step"], f"{p}_xd")  # 0..255
            zp = np.array(0, np.uint8)
        else:
            n("Neg", [f"{p}_lo"], f"{p}_neg_lo")
            n("Max", [f"{p}_hi", f"{p}_neg_lo", eps], f"{p}_amax")
            n("Mul", [f"{p}_amax", const(f"{p}_inv127", np.array(1 / 127, np.float32))], f"{p}_step")
            n("Div", [f"{p}_xs", f"{p}_step"], f"{p}_xd")  # -127..127, shifted by 128 below
            zp = np.array(128, np.uint8)
        # round half to even, + zero point, saturate, to uint8 (what VNNI multiplies): one kernel
        n("QuantizeLinear", [f"{p}_xd", const(f"{p}_unit", np.array(1.0, np.float32)),
                             const(f"{p}_qzp", zp)], f"{p}_q")
        one = const(f"{p}_one", np.array(1.0, np.float32))
        zpn = const(f"{p}_zp", zp)
        for m, w in zip(group, ws):
            q = m.name.strip("/").replace("/", "_")
            w = w * s[:, None]
            wscale = np.clip(np.abs(w).max(0), EPS, None) / 127.0
            wq = np.clip(np.round(w / wscale), -127, 127).astype(np.int8)
            n("MatMulIntegerToFloat", [f"{p}_q", const(f"{q}_wq", wq), one,
                                       const(f"{q}_wscale", wscale.astype(np.float32)), zpn],
              f"{q}_acc", domain="com.microsoft")
            if asym:  # the token's zero point: lo x the dequantized weights' column sums
                n("Mul", [f"{q}_acc", f"{p}_step"], f"{q}_main")
                colsum = (wq.astype(np.float64).sum(0) * wscale).astype(np.float32)
                n("Mul", [f"{p}_lo", const(f"{q}_colsum", colsum)], f"{q}_zterm")
                n("Add", [f"{q}_main", f"{q}_zterm"], m.output[0])
            else:
                n("Mul", [f"{q}_acc", f"{p}_step"], m.output[0])
    del g.node[:]
    g.node.extend(new_nodes)
    used = {i for nd in new_nodes for i in nd.input}
    keep = [i for i in g.initializer if i.name in used]
    del g.initializer[:]
    g.initializer.extend(keep + new_inits)
    if not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    return model


def cache_path(cache_dir: str | Path, encoder: Any) -> Path:
    """The cached graph: keyed by the backbone, the recipe and the calibration sample."""
    from .onnx_config import SENTENCE_ENCODER
    from .calibration import calibration_texts

    tag = hashlib.sha256(repr((RECIPE, calibration_texts())).encode()).hexdigest()[:8]
    return Path(cache_dir) / f"{encoder.identity.sha256}-int8rows-{tag}-op{SENTENCE_ENCODER.opset}.onnx"


def build(encoder: Any, dest: Path) -> Path:
    """Export the backbone (a fresh copy), calibrate, rewrite, and move the graph into
    ``dest`` atomically (nothing is left behind on failure). Accuracy and batch invariance
    are judged by the caller (export/runtimes/auto.py's admission, logged at first start)."""
    import onnx

    from .graph import example_inputs, export_onnx
    from .onnx_config import SENTENCE_ENCODER
    from .calibration import calibration_texts, row_feeds, weight_matmuls

    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".build-", dir=dest.parent))
    try:
        raw = onnx.load(str(export_onnx(encoder.graph_module(encoder.fresh_model()), SENTENCE_ENCODER,
                                        work / "raw.onnx", example_inputs(encoder))))
        maxima = calibrate(raw, row_feeds(encoder, calibration_texts(), SENTENCE_ENCODER.inputs),
                           weight_matmuls(raw))
        onnx.save(quantize_rows(raw, maxima), str(work / "int8rows.onnx"))
        os.replace(work / "int8rows.onnx", dest)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return dest


__all__ = ["ALPHA", "NAME", "RECIPE", "build", "cache_path", "calibrate", "quantize_rows"]
