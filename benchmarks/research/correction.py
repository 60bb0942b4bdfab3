"""Issue 19: why the correction loop ended 1.1 points below round 0 on rotten_tomatoes (HTTP,
3 seeds), and whether that is more than noise. DEV sets only (trec_coarse, rotten_tomatoes):
the held-out sets are never used to choose anything.

    python -m benchmarks.research.correction --seeds 0 1 2 3 4 5 6 7 8 9

The loop of benchmarks/bench_monotone.py (same splits: ``Split``), simulated in process on
frozen embeddings computed once per set and seed: the in-request version of ``auto`` is the
description-prior head (kinds/head.py ``head_recipe``) and calibration never changes its
decisions, so the head's argmax on the embeddings is what /v1/predict answers. The update
check (training/monotone.py) runs as in the service. Variants, each changing one thing:

- ``wrong``: the loop as benchmarked: each round adds the first 8 pool rows the latest
  version gets wrong;
- ``random``: each round adds 8 random pool rows (not chosen by error, not one-sided);
- ``examples_prior``: ``wrong`` with ``class_prior: "examples"`` (no logit adjustment);
- ``strong_prior``: ``wrong`` with ``prior_strength: 20`` (4x the default): does the loop
  drift because the description prior's pull fades as examples accumulate?

The update check runs in ``wrong`` only (it never intervened in the HTTP loop, 0/60 updates,
and costs ten fits a round on the shared machine).

Reports, per set and variant, round 5 minus round 0 (points; mean over seeds, its standard
error, paired by seed) and the per-seed values.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from adapters.training.recipes import PRIOR_STRENGTH
from benchmarks.bench_monotone import PER_ROUND, ROUNDS, Split

HERE = Path(__file__).resolve().parent
VARIANTS = ("wrong", "random", "examples_prior", "strong_prior")
DEV = ("trec_coarse", "rotten_tomatoes")


def embed(encoder, texts: list[str]) -> np.ndarray:
    out = [encoder.embed(texts[i:i + 64]).numpy() for i in range(0, len(texts), 64)]
    return np.concatenate(out).astype(np.float32)


def loop(encoder, s: Split, xr: np.ndarray, yr: np.ndarray, xp: np.ndarray, yp: np.ndarray,
         xt: np.ndarray, yt: np.ndarray, variant: str, seed: int) -> list[float]:
    """Test accuracy after rounds 0..ROUNDS of one variant."""
    from adapters.kinds.head import HeadOptions, head_recipe
    from adapters.training.monotone import compare_update, head_predict
    from adapters.validation import LabeledData

    opts = HeadOptions(class_prior="examples" if variant == "examples_prior" else "uniform",
                       prior_strength=20.0 if variant == "strong_prior" else PRIOR_STRENGTH)
    rng = np.random.default_rng(seed)
    x, y = xr.copy(), yr.copy()
    pool = list(range(len(yp)))

    def fit(x, y):
        data = LabeledData(["t"] * len(y), s.labels, y, False)
        return head_recipe(encoder, data, s.descriptions, opts)

    head = fit(x, y)(x, y)
    curve = [float((head.predict(xt) == yt).mean())]
    for _ in range(ROUNDS):
        if variant == "random":
            add = [pool[i] for i in rng.choice(len(pool), PER_ROUND, replace=False)]
        else:
            pred = head.predict(xp[pool])
            add = [i for i, p in zip(pool, pred) if p != yp[i]][:PER_ROUND]
        if not add:
            curve.append(curve[-1])
            continue
        pool = [i for i in pool if i not in add]
        x2, y2 = np.concatenate([x, xp[add]]), np.concatenate([y, yp[add]])
        fit_rows = fit(x2, y2)
        new = fit_rows(x2, y2)
        keep = False
        if variant == "wrong":
            previous = np.arange(len(y2)) < len(y)
            f = head_predict(x2, y2, fit_rows)
            check = compare_update(y2, previous, len(s.labels), f, f, seed=0)
            keep = bool(check and check.worse)
        x, y = x2, y2
        head = head if keep else new
        curve.append(float((head.predict(xt) == yt).mean()))
    return curve


def main() -> None:
    from adapters.encoders import open_encoder

    ap = argparse.ArgumentParser()
    ap.add_argument("--sets", nargs="+", default=list(DEV), choices=DEV)
    ap.add_argument("--seeds", type=int, nargs="+", default=list(range(10)))
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    ap.add_argument("--out", type=Path, default=HERE / "results" / "correction.json")
    a = ap.parse_args()
    encoder = open_encoder()
    rows = []
    for name in a.sets:
        for seed in a.seeds:
            s = Split(name, seed)
            first = s.take({lab: 8 for lab in s.labels})
            lab = {l: j for j, l in enumerate(s.labels)}
            xr = embed(encoder, [e["text"] for e in first])
            yr = np.array([lab[e["label"]] for e in first])
            xp = embed(encoder, [e["text"] for e in s.pool])
            yp = np.array([lab[e["label"]] for e in s.pool])
            xt = embed(encoder, [t for t, _ in s.test])
            yt = np.array([lab[g] for _, g in s.test])
            for v in a.variants:
                curve = loop(encoder, s, xr, yr, xp, yp, xt, yt, v, seed)
                rows.append({"set": name, "seed": seed, "variant": v, "curve": curve})
                print(json.dumps(rows[-1]), flush=True)
    a.out.parent.mkdir(exist_ok=True)
    a.out.write_text(json.dumps(rows, indent=0))
    summary(rows)


def summary(rows: list[dict]) -> None:
    print("| set | variant | seeds | round 5 - round 0 (points) | SE (paired by seed) | per seed |")
    print("|---|---|---|---|---|---|")
    for name in DEV:
        for v in VARIANTS:
            d = [100 * (r["curve"][-1] - r["curve"][0]) for r in rows
                 if r["set"] == name and r["variant"] == v]
            if not d:
                continue
            se = float(np.std(d, ddof=1) / np.sqrt(len(d))) if len(d) > 1 else float("nan")
            print(f"| {name} | {v} | {len(d)} | {np.mean(d):+.1f} | {se:.1f} | "
                  f"{', '.join(f'{x:+.1f}' for x in d)} |")


if __name__ == "__main__":
    main()
