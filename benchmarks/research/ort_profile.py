"""Where one forward's time goes on a served runtime: onnxruntime's own profiler, per
operator type, at batch 1 and 32, on bench_peers' texts, and the GEMMs' achieved rate against
the best this machine does (a roofline).

    python -m benchmarks.research.ort_profile [--runtime onnx-int8-rows|onnx-fp32] [--runs 20]

The graph is the one the service serves (the runtime's own opener: the same export, fusions
and session options, all cores), fed the service's own collated rows. Each run's node events
(``cat == "Node"``) are summed per bucket; the table gives each bucket's share of the summed
node time and the achieved rate of the weight GEMMs (from the backbone's config and the
padded token counts), against the peak measured in the same run on this machine.

``onnx-fp32`` (the default until stop 30): onnxruntime fuses Q, K and V into its Attention
node, so the MatMul nodes are the output projection and the FFN, 2 x (h^2 + 2 h x
intermediate) FLOPs a token and layer; the peak is torch.mm's best on 2048^2 fp32.

``onnx-int8-rows`` (what ``auto`` serves on the 2-core dev machine since stop 30,
export/int8_rows.py): every weight GEMM is a ``MatMulIntegerToFloat`` (Q, K and V as one),
2 x (4 h^2 + 2 h x intermediate) int8 operations a token and layer; the peak is the best of
one ``MatMulIntegerToFloat`` node on 2048^3 (uint8 x int8, the served kernel) in a session
with the service's options. The rewrite's own nodes are told apart by their names: the
per-token quantization before each GEMM (smoothing, min and max, step and zero point,
``QuantizeLinear``) and the dequantization after it (the token's step, its zero point times
the column sums, the Q/K/V split).
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import re
import tempfile
import time
from pathlib import Path

BUCKETS = {
    "MatMul (output projection, FFN up and down)": ("MatMul", "Gemm", "FusedMatMul",
                                                       "MatMulNBits", "FusedGemm"),
    # onnxruntime fuses the Q, K and V projections into its Attention node
    "Attention (fused: QKV projections, scores, softmax)": ("Attention", "MultiHeadAttention",
                                                            "Softmax"),
    "LayerNorm, GELU, bias adds": ("LayerNormalization", "SkipLayerNormalization",
                                   "EmbedLayerNormalization", "Gelu", "BiasGelu", "FastGelu",
                                   "Add", "BiasAdd"),
}


def bucket(op: str) -> str:
    for name, ops in BUCKETS.items():
        if op in ops:
            return name
    return "the rest (reshape, transpose, gather, pooling, casts, ...)"


# onnx-int8-rows: the rewrite names its nodes ``<the MatMul's name, "/" as "_">/<output>``
INT8_BUCKETS = ("int8 GEMMs (MatMulIntegerToFloat)",
                "quantize (smooth, min/max, step, zero point, QuantizeLinear)",
                "dequantize (step, zero point x column sums, Q/K/V split)",
                "attention (scores, softmax, transposes)",
                "LayerNorm, GELU, bias and residual adds")
ATTENTION_OPS = ("FusedMatMul", "MatMul", "Softmax", "Transpose", "Reshape")


def int8_bucket(op: str, node: str) -> str:
    """``node``: the node's name in the optimized graph (the profiler event's, less
    ``_kernel_time``)."""
    if op == "MatMulIntegerToFloat":
        return INT8_BUCKETS[0]
    rewritten = re.search(r"_MatMul(_\d+)?(_[a-z0-9_]+)?/", node)
    if rewritten is not None:
        after = node[rewritten.start() + len("_MatMul"):]
        if op == "Split" or re.search(r"_\d+_(main|zterm|y)$|MatMul_output_\d+$", after):
            return INT8_BUCKETS[2]
        return INT8_BUCKETS[1]
    if op in ATTENTION_OPS:
        return INT8_BUCKETS[3]
    if op in ("LayerNormalization", "SkipLayerNormalization", "BiasGelu", "Gelu", "FastGelu",
              "Add", "BiasAdd"):
        return INT8_BUCKETS[4]
    return "the rest (gather, pooling, shapes, casts, ...)"


def int8_peak(threads: int = 0, n: int = 2048) -> float:
    """GOP/s of one ``MatMulIntegerToFloat`` (uint8 [n, n] x int8 [n, n], per-column weight
    scales, the served kernel) with the service's session options, best of 10."""
    import numpy as np
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from export.session import session_options

    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.integers(-127, 128, (n, n), dtype=np.int8), "w")
    consts = [w, numpy_helper.from_array(np.array(1.0, np.float32), "a_scale"),
              numpy_helper.from_array(np.full(n, 0.01, np.float32), "w_scale"),
              numpy_helper.from_array(np.array(128, np.uint8), "a_zp")]
    node = helper.make_node("MatMulIntegerToFloat", ["a", "w", "a_scale", "w_scale", "a_zp"], ["y"],
                            domain="com.microsoft")
    graph = helper.make_graph([node], "peak", [helper.make_tensor_value_info("a", TensorProto.UINT8, [n, n])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [n, n])], consts)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid("com.microsoft", 1)])
    sess = ort.InferenceSession(model.SerializeToString(), session_options(threads),
                                providers=["CPUExecutionProvider"])
    a = rng.integers(0, 256, (n, n), dtype=np.uint8)
    sess.run(None, {"a": a})
    best = float("inf")
    for _ in range(10):
        t = time.perf_counter()
        sess.run(None, {"a": a})
        best = min(best, time.perf_counter() - t)
    return 2 * n ** 3 / best / 1e9


def mm_peak(n: int = 2048, threads: int = 2) -> float:
    """torch.mm's best GFLOP/s on n x n fp32 with ``threads`` threads (best of 10)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    best = float("inf")
    for _ in range(10):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    torch.set_num_threads(before)
    return 2 * n ** 3 / best / 1e9


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--runtime", choices=("onnx-int8-rows", "onnx-fp32"), default="onnx-int8-rows")
    args = ap.parse_args()
    import onnxruntime as ort

    from adapters.encoders import open_encoder
    from benchmarks.bench_peers import text_sets
    from export.runtimes import RuntimeOptions, open_runtime
    from export.runtimes.ort import ONNX_FP32, ONNX_INT8_ROWS
    from export.session import session_options

    enc = open_encoder()
    cfg = enc.model.config
    int8 = args.runtime == "onnx-int8-rows"
    peak = int8_peak() if int8 else mm_peak()
    with tempfile.TemporaryDirectory() as d:
        served = open_runtime(ONNX_INT8_ROWS if int8 else ONNX_FP32, enc,
                              RuntimeOptions(Path(d), lora=False))
        so = session_options(0)
        so.enable_profiling = True
        so.profile_file_prefix = str(Path(d) / "prof")
        sess = ort.InferenceSession(str(served.model_path), so, providers=["CPUExecutionProvider"])
        sets = text_sets(200)
        rows_out = []
        for set_name, texts in sets.items():
            for batch in (1, 32):
                # every run a full batch, cycling through the texts (a slice past the end
                # would be an empty batch, and make a forward look 3x faster)
                rows = [enc.prepare([texts[(i + j) % len(texts)] for j in range(batch)])
                        for i in range(0, batch * args.runs, batch)]
                feeds = [enc.collate_np(r) for r in rows]
                sess.run(["sentence_embedding"], feeds[0])  # warm-up, not counted
                t0 = time.perf_counter()
                for f in feeds:
                    sess.run(["sentence_embedding"], f)
                wall = time.perf_counter() - t0
                rows_out.append((set_name, batch, feeds, wall))
        path = sess.end_profiling()
        events = json.loads(Path(path).read_text())
    load = os.getloadavg()[0]
    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, onnxruntime "
          f"{ort.__version__}, {args.runs} runs per cell, load {load:.1f}\n")
    # cells ran in order, each after one warm-up run: split the profile's model runs so
    cells = rows_out
    node = [e for e in events if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time")]
    runs = [e for e in events if e.get("name") == "model_run"]
    runs.sort(key=lambda e: e["ts"])
    runs = runs[1:]  # the first profiled model_run is the first cell's warm-up
    per_cell_runs: list[list[dict]] = []
    k = 0
    for set_name, batch, feeds, wall in cells:
        per_cell_runs.append(runs[k:k + len(feeds)])
        k += len(feeds) + 1  # + the next cell's warm-up
    names = list(INT8_BUCKETS) if int8 else list(BUCKETS)
    unit = (f"int8 GOP/s (share of one MatMulIntegerToFloat's {peak:.0f} on 2048^3)" if int8
            else f"MatMul GFLOP/s (share of torch.mm's {peak:.0f})")
    header = "| texts | batch | ms per forward | kernels per forward | " + " | ".join(names) + f" | the rest | {unit} |"
    print(f"runtime {args.runtime}\n")
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    h, layers, inter = cfg.hidden_size, cfg.num_hidden_layers, cfg.intermediate_size
    # weight FLOPs a token and layer in the GEMM bucket: fp32 fuses Q, K, V into Attention
    per_token = 2 * layers * ((4 if int8 else 1) * h * h + 2 * h * inter)
    for (set_name, batch, feeds, wall), cell_runs in zip(cells, per_cell_runs):
        lo, hi = cell_runs[0]["ts"], cell_runs[-1]["ts"] + cell_runs[-1]["dur"]
        sums: dict[str, float] = collections.Counter()
        kernels = 0
        for e in node:
            if lo <= e["ts"] <= hi:
                kernels += 1
                op = e["args"].get("op_name", "")
                sums[int8_bucket(op, e["name"][:-len("_kernel_time")]) if int8 else bucket(op)] += e["dur"]
        total = sum(sums.values())
        padded = sum(f["attention_mask"].size for f in feeds)
        flops = padded * per_token  # padded rows
        gemm_s = sums[names[0]] / 1e6
        shares = " | ".join(f"{100 * sums[b] / total:.0f}%" for b in names)
        rest = 100 * sum(v for b, v in sums.items() if b not in names) / total
        print(f"| {set_name} | {batch} | {1000 * wall / len(feeds):.1f} | {kernels / len(feeds):.0f} | {shares} | {rest:.0f}% | "
              f"{flops / gemm_s / 1e9:.0f} ({flops / gemm_s / 1e9 / peak:.0%}) |")


if __name__ == "__main__":
    main()
