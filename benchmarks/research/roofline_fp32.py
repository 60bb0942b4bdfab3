"""Research (issue 20): can a batch-invariant fp32 backbone reach 3x Infinity here? A roofline.

    .venv/bin/python -m benchmarks.research.roofline_fp32 [--infinity-bbc 11.4 --infinity-short 124.1]

FLOPs per text are counted from the backbone's config and the real token lengths of
bench_peers' texts (2 x Linear weights x tokens, plus attention 4 x seq^2 x hidden per
layer); the machine's fp32 GEMM throughput is measured with torch.mm, on one core and on
all of them, at 2048^3 and at the backbone's own FFN shape (a batch of 32 texts). The
ceiling is texts/s = GEMM FLOP/s / FLOPs per text: what a runtime that did nothing but
fp32 GEMMs at that rate could serve (``--peak``: a given rate instead, e.g. the CPU's
datasheet peak when other work on a shared machine takes most of the cores). Compared with the goal (3x / 2.5x the faster
Infinity setting, given on the command line from a bench_peers run on this machine).
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from benchmarks.bench_peers import text_sets


def gemm_gflops(m: int, k: int, n: int, threads: int, repeats: int = 20) -> float:
    torch.set_num_threads(threads)
    a, b = torch.randn(m, k), torch.randn(k, n)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t)
    return 2 * m * k * n / best / 1e9


def flops_per_text(tokens: int, cfg) -> float:
    h, ffn, layers = cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers
    linear = layers * (4 * h * h + 2 * h * ffn)  # q, k, v, out + FFN in/out weights
    attention = layers * 4 * tokens * tokens * h  # QK^T and AV
    return 2 * linear * tokens + attention


def main(argv: list[str] | None = None) -> str:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--infinity-bbc", type=float, default=0.0, help="faster Infinity c=64 texts/s, bbc400")
    p.add_argument("--infinity-short", type=float, default=0.0, help="faster Infinity c=64 texts/s, short")
    p.add_argument("--peak", type=float, default=0.0, help="fp32 GFLOP/s of all cores to use for the "
                   "ceiling (e.g. the datasheet's, when a loaded machine cannot measure its own)")
    args = p.parse_args(argv)
    from transformers import AutoConfig, AutoTokenizer

    from adapters.encoders.text import default_model_path

    cfg = AutoConfig.from_pretrained(default_model_path(), local_files_only=True)
    tok = AutoTokenizer.from_pretrained(default_model_path(), local_files_only=True)
    cores = len(os.sched_getaffinity(0))
    sets = text_sets(200)
    md = [f"fp32 GEMM, torch.mm best of 20 (GFLOP/s), {cores} cores:", "",
          "| shape | 1 thread | all cores |", "|---|---:|---:|"]
    peak = {}
    for name, shape in [("2048^3", (2048, 2048, 2048)), ("FFN in, 32 texts x 90 tokens", (2880, 384, 1536))]:
        one, all_ = gemm_gflops(*shape, 1), gemm_gflops(*shape, cores)
        peak[name] = all_
        md.append(f"| {name} | {one:.0f} | {all_:.0f} |")
    used = f"{args.peak:g} GFLOP/s given" if args.peak else "the FFN-shape GEMM rate measured"
    md += ["", f"| texts | median tokens | GFLOP per text | ceiling texts/s (all cores, {used}) "
           "| goal: 3x faster Infinity c=64 |", "|---|---:|---:|---:|---:|"]
    for sname, texts in sets.items():
        lengths = [len(ids) for ids in tok(texts, truncation=True)["input_ids"]]
        f = statistics.mean(flops_per_text(n, cfg) for n in lengths)
        ceiling = (args.peak or peak["FFN in, 32 texts x 90 tokens"]) * 1e9 / f
        inf = {"bbc400": args.infinity_bbc, "short": args.infinity_short}[sname]
        goal = f"{3 * inf:.0f}" if inf else "-"
        md.append(f"| {sname} | {statistics.median(lengths):.0f} | {f / 1e9:.2f} | {ceiling:.0f} | {goal} |")
    text = "\n".join(md) + "\n"
    return text


if __name__ == "__main__":
    print(main())
