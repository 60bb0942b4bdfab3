"""Every serving runtime side by side in one process (issue 20): batch invariance, accuracy
against PyTorch fp32, and speed at batch 1 and 32.

    python -m benchmarks.bench_runtimes            # writes benchmarks/results/runtimes.md
    python -m benchmarks.bench_runtimes --only "torch fp32,torch bf16,torch bf16 rows,onnx fp32" \
        --turns 5 --against "onnx fp32"           # a subset, more turns, ratios vs onnx fp32

Runtimes: PyTorch fp32 (the reference), bf16 and bf16 with attention row by row
(``torch-bf16-rows``, batch-invariant), onnxruntime fp32 (fused, with its LoRA-routed graph),
dynamic int8 and static (calibrated) int8 (export/static_int8.py).
- invariance: export/runtimes/invariance.py's check on the fixed sample, bare and with LoRA adapters
  mixed per row (the largest |alone - mixed| of both), as ``TAILOR_RUNTIME=auto`` admits;
- accuracy: cosine to PyTorch fp32 on 150 BBC News texts cut to 400 characters and 100 TREC
  questions (neither is in the calibration sample), and label agreement of 8-shot
  logistic-regression heads fitted on fp32 embeddings (BBC News, TREC, SMS spam, movie
  reviews: rotten tomatoes), applied to each runtime's held-out embeddings;
- speed: rows/s at batch 1 (median over 16 single texts) and 32 (median of 3 runs), short
  (TREC) and BBC texts, all runtimes in turns in the same process (1 thread each), so the
  ratios hold on a shared machine even when the absolute numbers do not.
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import machine, write_section


def _rate(embed, texts, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        embed(texts)
        times.append(time.perf_counter() - t)
    return len(texts) / statistics.median(times)


def runtimes(enc, cache: Path) -> dict:
    from export import static_int8
    from export.runtimes.ort import OnnxEncoder

    return {
        "torch fp32": lambda: enc,
        "torch bf16": lambda: enc.with_dtype("bfloat16"),
        "torch bf16 rows": lambda: enc.with_dtype("bfloat16", row_attention=True),
        "onnx fp32": lambda: OnnxEncoder.open(enc, cache, cache_dir=cache, threads=1),
        "onnx int8 dynamic": lambda: OnnxEncoder.open(enc, cache, quantize="int8", cache_dir=cache,
                                                      threads=1, lora=False),
        "onnx int8 static": lambda: static_int8.open_encoder(enc, cache, threads=1),
    }


def heads_agreement(ref_enc, encoders: dict, sets) -> dict[str, dict[str, float]]:
    """Top-1 agreement with fp32 and accuracy of fp32-fitted 8-shot heads, per set."""
    from sklearn.linear_model import LogisticRegression

    out: dict[str, dict[str, float]] = {n: {} for n in encoders}
    for sname, ds in sets.items():
        train, test = ds.few_shot(8, seed=0, max_test=200, max_chars=400)
        texts = [t for t, _ in test]
        truth = np.array([y for _, y in test])
        clf = LogisticRegression(max_iter=2000).fit(
            ref_enc.embed([e["text"] for e in train]).numpy(), [e["label"] for e in train])
        want = clf.predict(ref_enc.embed(texts).numpy())
        for name, e in encoders.items():
            got = clf.predict(np.asarray(e.embed(texts), dtype=np.float32))
            out[name][sname] = (float((got == want).mean()), float((got == truth).mean()))
    return out


def main(only: list[str] | None = None, turns: int = 2, against: str = "torch bf16") -> str:
    import torch

    from adapters import TextEncoder
    from benchmarks.datasets import bbc_news, rotten_tomatoes, sms_spam, trec_coarse
    from export.runtimes import invariance
    from export.lora_graph import parity_adapters
    from export.runtimes.auto import fixed_sample

    torch.set_num_threads(1)
    enc = TextEncoder(workers=1)
    cache = Path(tempfile.mkdtemp(prefix="tailor-runtimes-"))
    built, build_s = {}, {}
    for name, make in runtimes(enc, cache).items():
        if only and name not in only and name != "torch fp32":
            continue
        t = time.perf_counter()
        built[name] = make()
        build_s[name] = time.perf_counter() - t
    sample, loras = fixed_sample(), parity_adapters(enc)
    sets = {"bbc_news": bbc_news(), "trec": trec_coarse(), "sms_spam": sms_spam(),
            "rotten_tomatoes": rotten_tomatoes()}
    _, bbc = sets["bbc_news"].few_shot(1, seed=9, max_test=150, max_chars=400)
    short = [t for t in sets["trec"].texts[:100]]
    held = [t for t, _ in bbc] + short
    ref = enc.embed(held).numpy()
    rows = []
    for name, e in built.items():
        bare = invariance.check(e, sample)
        lora = invariance.check(e, sample, loras)
        got = np.asarray(e.embed(held), dtype=np.float32)
        cos = np.sum(ref * got, 1) / (np.linalg.norm(ref, axis=1) * np.linalg.norm(got, axis=1))
        rows.append([name, bare.max_diff, lora.max_diff, float(cos.min()), float(np.mean(1 - cos))])
    agree = heads_agreement(enc, built, sets)
    speed = {n: {} for n in built}
    loads = [os.getloadavg()[0]]
    for label, texts in (("short", short), ("bbc400", [t for t, _ in bbc])):
        for _ in range(turns):  # turns: each runtime measured in every turn, interleaved
            for n, e in built.items():
                b1 = statistics.median(_rate(e.embed, [t], 1) for t in texts[:16])
                b32 = _rate(e.embed, texts[:32], 3)
                speed[n].setdefault(label, []).append((b1, b32))
        loads.append(os.getloadavg()[0])
    md = ["## Runtimes side by side (issue 20): batch invariance, accuracy, speed", "",
          f"Machine: {machine()}; 1 thread per runtime, all in one process, measured in turns "
          "(ratios are what counts on a shared machine). `python -m benchmarks.bench_runtimes`.", "",
          "| runtime | alone vs mixed, bare | with LoRA rows | admitted (<= 1e-5) | min cos vs fp32 | "
          "mean 1-cos | build s |", "|---|---:|---:|---|---:|---:|---:|"]
    for name, b, lo, mc, md_ in rows:
        ok = "yes" if max(b, lo) <= invariance.TOLERANCE else "no"
        md.append(f"| {name} | {b:.1e} | {lo:.1e} | {ok} | {mc:.4f} | {md_:.1e} | {build_s[name]:.0f} |")
    md += ["", "8-shot heads fitted on fp32 embeddings, 200 held-out texts per set: top-1 agreement "
           "with fp32 / accuracy (%)", "",
           "| runtime | " + " | ".join(sets) + " |", "|---|" + "---:|" * len(sets)]
    for name in built:
        md.append(f"| {name} | " + " | ".join(
            f"{100 * a:.1f} / {100 * acc:.1f}" for a, acc in (agree[name][s] for s in sets)) + " |")
    md += ["", f"Speed, rows/s (median of {turns} interleaved turns; ratio vs torch fp32 / vs {against}; "
           f"1-minute load average {min(loads):.1f}-{max(loads):.1f} while measuring):", "",
           "| runtime | short b1 | short b32 | bbc400 b1 | bbc400 b32 |", "|---|---:|---:|---:|---:|"]
    med = {n: {k: tuple(statistics.median(x[i] for x in v) for i in (0, 1)) for k, v in s.items()}
           for n, s in speed.items()}
    for n in built:
        cells = []
        for k in ("short", "bbc400"):
            for i in (0, 1):
                r = med[n][k][i]
                cells.append(f"{r:.0f} ({r / med['torch fp32'][k][i]:.2f}x / "
                             f"{r / med[against][k][i]:.2f}x)")
        md.append(f"| {n} | " + " | ".join(cells) + " |")
    text = "\n".join(md) + "\n"
    write_section("runtimes", text)
    return text


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", default="", help="comma-separated runtime names (torch fp32 is always run)")
    ap.add_argument("--turns", type=int, default=2, help="interleaved speed turns (medians over them)")
    ap.add_argument("--against", default="torch bf16", help="the runtime of the second ratio")
    a = ap.parse_args()
    print(main([n.strip() for n in a.only.split(",") if n.strip()] or None, a.turns, a.against))
