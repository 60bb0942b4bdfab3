"""Research (issue 20b): forward chunks cut by count vs by padded tokens, in process, A/B.

    .venv/bin/python -m benchmarks.research.chunking_ab [--rounds 12]

The service sorts a batch's rows by length and cuts them by count into one chunk per
forward worker, run side by side; the chunk of the longest texts is then the largest, and
a batch waits for it. ``token_balanced_chunks`` cuts so that the chunks' padded sizes (rows
x longest row) are even instead (the largest chunk of a 64-text batch: 0.82x on short
texts, 0.89x on BBC texts), at the price of a few % more padded tokens in all. The served
encoder (2 forward workers x 1 thread, as on 2 cores) embeds random 64-text batches of
bench_peers' texts, alternating the two cuts batch by batch (A, B, A, B, ...) so that the
load of a shared machine falls on both alike; the median of the paired ratios is what to
read. Three runs here (load 3.5-4.7), time by padded tokens / by count: BBC 1.02x, 0.95x,
1.07x; short 1.05x, 0.92x, 0.84x: inside this shared machine's noise, so the service keeps
the cut by count until a quiet run says otherwise (benchmarks/RESULTS.md, issue-20b).
"""
from __future__ import annotations

import argparse
import random
import statistics
import time

import torch

from adapters.encoders import text as text_module
from adapters.encoders.text import TextEncoder
from adapters.segments import length_sorted_chunks
from benchmarks.bench_peers import text_sets


def token_balanced_chunks(lengths, max_rows: int, parts: int) -> list[list[int]]:
    """Rows sorted by length, cut into runs of at most ``max_rows`` with padded sizes as even
    as the lengths allow, in up to ``parts`` runs: the smallest budget B for which the greedy
    cut from the longest row down (each run takes rows while rows x its first row's length
    <= B) needs that many runs, by bisection."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    if not order:
        return []
    want = max(min(parts, len(order)), -(-len(order) // max_rows))

    def cut(budget: int) -> list[list[int]]:
        chunks, end = [], len(order)
        while end > 0:
            take = max(1, min(max_rows, end, budget // max(1, lengths[order[end - 1]])))
            chunks.append(order[end - take:end])
            end -= take
        return chunks

    lo = hi = max(1, lengths[order[-1]])
    hi *= len(order)
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if len(cut(mid)) <= want else (mid + 1, hi)
    return cut(lo)


class Cut:
    """Which cut the encoder uses, switched between batches (the encoder module's own name)."""

    def __init__(self):
        self.original = text_module.length_sorted_chunks

    def use(self, balanced: bool, parts: int) -> None:
        text_module.length_sorted_chunks = (
            (lambda lengths, rows: token_balanced_chunks(lengths, 64, parts)) if balanced
            else self.original)


def main(argv: list[str] | None = None) -> str:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=12)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    enc = TextEncoder(max_batch_rows=64, workers=2)
    rng = random.Random(0)
    cut = Cut()
    lines = ["| texts | by count, s per 64-text batch (median) | by padded tokens | paired ratio, median [min-max] |",
             "|---|---:|---:|---|"]
    for name, texts in text_sets(600).items():
        rows = enc.prepare(texts)
        enc.embed_prepared(rows[:64])  # warm
        a, b, ratios = [], [], []
        for _ in range(args.rounds):
            batch = rng.sample(rows, 64)
            times = {}
            for label, balanced in (("count", False), ("tokens", True)):
                cut.use(balanced, enc.workers)
                t = time.perf_counter()
                enc.embed_prepared(batch)
                times[label] = time.perf_counter() - t
            cut.use(False, enc.workers)
            a.append(times["count"])
            b.append(times["tokens"])
            ratios.append(times["tokens"] / times["count"])
        lines.append(f"| {name} | {statistics.median(a):.3f} | {statistics.median(b):.3f} | "
                     f"{statistics.median(ratios):.2f}x [{min(ratios):.2f}-{max(ratios):.2f}] |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(main())
