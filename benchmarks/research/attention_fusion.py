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
    layers = sorted({int(m.group(1)) for n in nodes
                     if (m := re.search(r"layer\.(\d+)/attention/self/query/Add$", n.name))})
    mask = helper.make_node("Cast", ["attention_mask"], ["xp_mask_i32"], name="xp/mask_i32",
                            to=TensorProto.INT32)  # the key padding mask, int32 [B, L], once
    fused = {}  # the context tensor the output projection reads -> the node that now makes it
    for layer in layers:
        pre = f"/model/encoder/layer.{layer}/attention/"
        # the output projection's input: its smoothing Mul in the int8-rows graph
        proj = next(n for n in nodes if n.name.endswith(f"layer.{layer}_attention_output_dense_MatMul_xs")
                    or n.name == pre + "output/dense/MatMul")
        q, k, v = (pre + f"self/{x}/Add_output_0" for x in ("query", "key", "value"))
        fused[proj.input[0]] = helper.make_node(
            "MultiHeadAttention", [q, k, v, "", "xp_mask_i32"], [proj.input[0]],
            name=f"xp/layer{layer}/mha", domain="com.microsoft", num_heads=heads)
    keep = [mask] + [n for n in nodes if not any(o in fused for o in n.output)] + list(fused.values())
    outputs = {o.name for o in g.output}
    while True:  # drop what no longer feeds anything
        used = {i for n in keep for i in n.input} | outputs
        alive = [n for n in keep if any(o in used for o in n.output)]
        if len(alive) == len(keep):
            break
        keep = alive
    ready = {i.name for i in g.input} | {i.name for i in g.initializer} | {""}
    order, pending = [], keep
    while pending:  # topological order
        rest = []
        for n in pending:
            if all(i in ready for i in n.input):
                order.append(n)
                ready.update(n.output)
            else:
                rest.append(n)
        if len(rest) == len(pending):
            raise RuntimeError(f"inputs never made: {[i for i in rest[0].input if i not in ready]}")
        pending = rest
    del g.node[:]
    g.node.extend(order)
    return model


def main() -> None:
    import onnx

    from adapters.encoders import open_encoder
    from benchmarks.research.ort_int8_rows import rate, texts
    from export import int8_rows
    from export.runtimes import invariance
    from export.runtimes.auto import _drift, fixed_sample
    from export.runtimes.ort import OnnxEncoder

    turns = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    enc = open_encoder()
    with tempfile.TemporaryDirectory() as d:
        work = Path(d)
        raw, maxima = int8_rows.calibrated(enc, work)
        served = int8_rows.quantize_rows(raw, maxima)
        fused = fuse_attention(onnx.ModelProto.FromString(served.SerializeToString()),
                               enc.model.config.num_attention_heads)
        print("nodes", len(served.graph.node), "->", len(fused.graph.node))
        encs = {}
        for name, model in (("served", served), ("mha", fused)):
            onnx.save(model, str(work / f"{name}.onnx"))
            encs[name] = OnnxEncoder(enc, work / f"{name}.onnx", ("CPUExecutionProvider",), 0,
                                     quantize="int8")
        sample = fixed_sample()
        ref = enc.embed(sample).numpy()
        got = {k: np.asarray(e.embed(sample), np.float32) for k, e in encs.items()}
        for k, e in encs.items():
            mc, md = _drift(ref, got[k])
            print(f"{k}: gate drift {md:.2e}, min cos {mc:.4f}; "
                  f"invariance {invariance.check(e, sample).max_diff:.1e}")
        print("max |served - mha|", float(np.abs(got["served"] - got["mha"]).max()))
        ts = texts()
        prepared = {s: encs["served"].prepare(t) for s, t in ts.items()}
        cells = [(s, b) for s in ts for b in (1, 32)]
        rates: dict[tuple, list[float]] = {}
        for _ in range(turns):
            for k, e in encs.items():
                for s, b in cells:
                    rates.setdefault((k, s, b), []).append(rate(e, prepared[s], b, 1.5))
        for s, b in cells:
            a, m = rates[("served", s, b)], rates[("mha", s, b)]
            print(f"{s} b{b}: served {statistics.median(a):.1f}, mha {statistics.median(m):.1f} "
                  f"rows/s, {statistics.median(m) / statistics.median(a):.3f}x, paired "
                  f"{[round(y / x, 2) for x, y in zip(a, m)]}")


if __name__ == "__main__":
    main()
