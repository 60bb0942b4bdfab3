"""Research (issue 20, stop 31): onnxruntime's fused ``MultiHeadAttention`` (com.microsoft, CPU) in
the int8-rows graph, in place of the exported attention (reshapes, transposes, scores,
softmax, context: ~10 nodes a layer that onnxruntime no longer fuses once Q, K and V are int8
GEMMs). Tried, not kept: the answers are bitwise the same, the graph has 284 fewer nodes, but
it is no faster on BBC texts (0.95-0.97x) and within noise on short ones (RESULTS.md, stop 31).

    python -m benchmarks.research.attention_fusion [turns]

Each layer's Q, K and V (after their bias adds) go into one ``MultiHeadAttention`` node with
the key padding mask (``attention_mask`` as int32), whose output takes the name of the
context the output projection reads; what no longer feeds anything is dropped.
"""
from __future__ import annotations

import re
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np


def fuse_attention(model, heads: int):
    """``model`` (an int8-rows ModelProto, changed in place and returned) with each layer's
    attention as one MultiHeadAttention node."""
    from onnx import TensorProto, helper

    g = model.graph
    nodes = list(g.node)
    layers = sorted({int(m.group(1)) for n in nodes for m in [re.search(r"layer\.(\d+)/attention/self/query/Add$", n.name)] if m})
    new_nodes = []
    # key padding mask, int32 [B, L], once
    new_nodes.append(helper.make_node("Cast", ["attention_mask"], ["xp_mask_i32"], name="xp/mask_i32", to=TensorProto.INT32))
    ctx_names = {}
    for L in layers:
        pre = f"/model/encoder/layer.{L}/attention/"
        out_mm = next(n for n in nodes if n.name.endswith(f"layer.{L}_attention_output_dense_MatMul_xs") or n.name == pre + "output/dense/MatMul")
        # context: the input of the output projection's first consumer node in the raw graph
        ctx = out_mm.input[0]
        q, k, v = (pre + f"self/{x}/Add_output_0" for x in ("query", "key", "value"))
        ctx_names[ctx] = helper.make_node("MultiHeadAttention", [q, k, v, "", "xp_mask_i32"], [ctx],
                                          name=f"xp/layer{L}/mha", domain="com.microsoft", num_heads=heads)
    kept = [n for n in nodes if not any(o in ctx_names for o in n.output)]
    all_nodes = new_nodes[:1] + kept + list(ctx_names.values())
    # dead code elimination
    outs = {o.name for o in g.output}
    while True:
        used = {i for n in all_nodes for i in n.input} | outs
        alive = [n for n in all_nodes if any(o in used for o in n.output)]
        if len(alive) == len(all_nodes): break
        all_nodes = alive
    # topological sort
    avail = {i.name for i in g.input} | {i.name for i in g.initializer} | {""}
    order, pending = [], list(all_nodes)
    while pending:
        rest = []
        for n in pending:
            if all(i in avail for i in n.input):
                order.append(n); avail.update(n.output)
            else:
                rest.append(n)
        if len(rest) == len(pending): raise RuntimeError(f"cycle/missing: {[n.name for n in rest[:3]]} {[i for i in rest[0].input if i not in avail]}")
        pending = rest
    del g.node[:]; g.node.extend(order)
    return model

def main() -> None:
    import onnx

    from adapters.encoders import open_encoder
    from export import int8_rows
    from export.runtimes.ort import OnnxEncoder
    from export.runtimes.auto import fixed_sample, _drift
    from export.runtimes import invariance
    from benchmarks.research.ort_int8_rows import texts, rate
    enc = open_encoder()
    work = Path(tempfile.mkdtemp(dir="/tmp/prof"))
    raw, maxima = int8_rows.calibrated(enc, work)
    v3 = int8_rows.quantize_rows(raw, maxima)
    fused = fuse_attention(onnx.ModelProto.FromString(v3.SerializeToString()), enc.model.config.num_attention_heads)
    print("nodes", len(v3.graph.node), "->", len(fused.graph.node))
    paths = {"v3": work / "v3.onnx", "mha": work / "mha.onnx"}
    onnx.save(v3, str(paths["v3"])); onnx.save(fused, str(paths["mha"]))
    encs = {k: OnnxEncoder(enc, p, ("CPUExecutionProvider",), 0, quantize="int8") for k, p in paths.items()}
    sample = fixed_sample(); ref = enc.embed(sample).numpy()
    for k, e in encs.items():
        got = np.asarray(e.embed(sample), np.float32); mc, md = _drift(ref, got)
        print(k, f"gate: drift {md:.2e} min cos {mc:.4f}; invariance {invariance.check(e, sample).max_diff:.1e}")
    a = np.asarray(encs["v3"].embed(sample)); b = np.asarray(encs["mha"].embed(sample)); print("max |v3 - mha|", float(np.abs(a - b).max()))
    ts = texts(); prepared = {s: encs["v3"].prepare(t) for s, t in ts.items()}
    cells = [(s, bb) for s in ts for bb in (1, 32)]; got = {}
    for turn in range(int(sys.argv[1]) if len(sys.argv) > 1 else 5):
        for k, e in encs.items():
            for s, bb in cells: got.setdefault((k, s, bb), []).append(rate(e, prepared[s], bb, 1.5))
    for s, bb in cells:
        o = statistics.median(got[("v3", s, bb)]); n = statistics.median(got[("mha", s, bb)])
        print(f"{s} b{bb}: v3 {o:.1f} mha {n:.1f} rows/s, {n/o:.3f}x, paired {[round(y/x, 2) for x, y in zip(got[('v3', s, bb)], got[('mha', s, bb)])]}")


if __name__ == "__main__":
    main()
