"""Where one forward's time goes on the default runtime here (onnx fp32 under `auto`'s rule 4):
onnxruntime's own profiler, per operator type, at batch 1 and 32, on bench_peers' texts.

    python -m benchmarks.research.ort_profile [--runs 20]

The graph is the one the service serves (``OnnxEncoder.open``: the same export, fusions
and session options, 2 threads), fed the service's own collated rows. Each run's node
events (``cat == "Node"``) are summed by operator type; the table gives each bucket's share
of the summed node time and the achieved GFLOP/s of the matrix products (FLOPs from the
backbone's config and the padded token counts: the MatMul nodes are the output projection
and the FFN, 2 x (h^2 + 2 h x intermediate) FLOPs a token and layer; onnxruntime fuses Q, K
and V into its Attention node), against torch.mm's best on 2048^2 with 2 threads, measured
in the same run (~200 GFLOP/s here, quiet; roofline_fp32.py's 166 was a guess from the
clock, below what the cores do).
"""
from __future__ import annotations

import argparse
import collections
import json
import os
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
    args = ap.parse_args()
    import onnxruntime as ort

    from adapters.encoders import open_encoder
    from benchmarks.bench_peers import text_sets
    from export.runtimes.ort import OnnxEncoder
    from export.session import session_options

    enc = open_encoder()
    cfg = enc.model.config
    peak = mm_peak()
    with tempfile.TemporaryDirectory() as d:
        served = OnnxEncoder.open(enc, d, lora=False)
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
    header = ("| texts | batch | ms per forward | " + " | ".join(BUCKETS) +
              f" | the rest | MatMul GFLOP/s (share of torch.mm's {peak:.0f}) |")
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    h, layers, inter = cfg.hidden_size, cfg.num_hidden_layers, cfg.intermediate_size
    for (set_name, batch, feeds, wall), cell_runs in zip(cells, per_cell_runs):
        lo, hi = cell_runs[0]["ts"], cell_runs[-1]["ts"] + cell_runs[-1]["dur"]
        sums: dict[str, float] = collections.Counter()
        for e in node:
            if lo <= e["ts"] <= hi:
                sums[bucket(e["args"].get("op_name", ""))] += e["dur"]
        total = sum(sums.values())
        padded = sum(f["attention_mask"].size for f in feeds)
        flops = 2 * padded * layers * (h * h + 2 * h * inter)  # the MatMul nodes, padded rows
        gemm_s = sums[list(BUCKETS)[0]] / 1e6
        shares = " | ".join(f"{100 * sums[b] / total:.0f}%" for b in list(BUCKETS))
        rest = 100 * sum(v for b, v in sums.items() if b not in BUCKETS) / total
        print(f"| {set_name} | {batch} | {1000 * wall / len(feeds):.1f} | {shares} | {rest:.0f}% | "
              f"{flops / gemm_s / 1e9:.0f} ({flops / gemm_s / 1e9 / peak:.0%}) |")


if __name__ == "__main__":
    main()
