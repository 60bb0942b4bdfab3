"""Tables of the LoRA and SetFit runs (results/lora_semi2.jsonl, results/setfit.jsonl):
accuracy per data set (mean over the seeds present, and their count), and training time as
wall seconds and CPU seconds, compared only on (data set, seed) pairs measured for both.

    python -m benchmarks.research.summarize
"""
from __future__ import annotations

import json
from collections import defaultdict

import numpy as np

from .evaluate import RESULTS

NAMES = ("trec_coarse", "rotten_tomatoes", "reuters_r8", "sms_spam")  # sms_spam: held-out, measured only


def load() -> dict[str, dict[tuple[str, int], dict]]:
    runs: dict[str, dict[tuple[str, int], dict]] = defaultdict(dict)
    for line in (RESULTS / "lora_semi2.jsonl").read_text().splitlines():
        r = json.loads(line)
        runs[r["variant"]][(r["dataset"], r["seed"])] = {
            "acc": r["accuracy"], "wall": r["seconds"], "cpu": r.get("cpu_seconds")}
    path = RESULTS / "setfit.jsonl"
    if path.exists():
        for line in path.read_text().splitlines():
            r = json.loads(line)
            runs["SetFit (default recipe)"][(r["dataset"], r["seed"])] = {
                "acc": r["accuracy"], "wall": r["train_seconds"], "cpu": r.get("train_cpu_seconds")}
    return runs


def main() -> None:
    runs = load()
    print("| method | " + " | ".join(f"{n} (seeds)" for n in NAMES) + " | mean over sets |")
    print("|---" * (len(NAMES) + 2) + "|")
    for v, by in runs.items():
        cells, means = [], []
        for n in NAMES:
            accs = [r["acc"] for (d, _), r in by.items() if d == n]
            cells.append(f"{100 * np.mean(accs):.1f} ({len(accs)})" if accs else "-")
            if accs:
                means.append(np.mean(accs))
        full = len(means) == len(NAMES)
        print(f"| {v} | " + " | ".join(cells) + f" | {100 * np.mean(means):.1f}{'' if full else ' (partial)'} |")
    print()
    sf = runs.get("SetFit (default recipe)", {})
    print("| method | data set | paired seeds | accuracy method / SetFit | CPU s method / SetFit (median) | ratio | wall s method / SetFit (median) |")
    print("|---|---|---|---|---|---|---|")
    for v, by in runs.items():
        if v.startswith("SetFit"):
            continue
        for n in NAMES:
            keys = [k for k in by if k[0] == n and k in sf and by[k]["cpu"] and sf[k]["cpu"]]
            if not keys:
                continue
            a, b = [by[k]["acc"] for k in keys], [sf[k]["acc"] for k in keys]
            c, d = [by[k]["cpu"] for k in keys], [sf[k]["cpu"] for k in keys]
            w, x = [by[k]["wall"] for k in keys], [sf[k]["wall"] for k in keys]
            print(f"| {v} | {n} | {len(keys)} | {100 * np.mean(a):.1f} / {100 * np.mean(b):.1f} | "
                  f"{np.median(c):.1f} / {np.median(d):.1f} | {np.median(c) / np.median(d):.2f} | "
                  f"{np.median(w):.0f} / {np.median(x):.0f} |")


if __name__ == "__main__":
    main()
