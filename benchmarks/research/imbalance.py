"""Issue 19: why more correct examples of one label made a head worse, and which head recipe
is robust to label counts. In process, on cached frozen embeddings (fast enough for 2 cores).

    python -m benchmarks.research.imbalance --sets trec_coarse rotten_tomatoes reuters_r8

Scenarios, per set and seed (a fixed seed-0 pool of POOL rows; TEST rows at the set's natural
label distribution, disjoint from every training row):
- ``8/8 -> 20/8``: 8 per label, then 12 more correct examples of one label (each label in
  turn); the drop from the balanced head is what the issue reproduced.
- ``16/8/4``: labels get 16, 8, 4 examples in turn (cycled), against a balanced create
  with the same total.
Each candidate is a head recipe on the same rows; with ``--descriptions`` the description
prior (what ``auto`` fits) is used as well.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
from pathlib import Path

import numpy as np

from benchmarks.datasets import LOADERS
from benchmarks.label_descriptions import DESCRIPTIONS

HERE = Path(__file__).resolve().parent
CACHE = HERE.parent / ".cache" / "monotone"
POOL, TEST, MAX_CHARS = 1500, 300, 2000


def _hash(t: str) -> str:
    return hashlib.sha1(t.encode()).hexdigest()


class Embedded:
    """A set's fixed pool with frozen embeddings (cached on disk), plus its descriptions."""

    def __init__(self, name: str, encoder=None, pool: int = POOL):
        ds = LOADERS[name]()
        rng = random.Random(0)
        idx = list(range(len(ds.texts)))
        if len(idx) > pool:
            idx = sorted(rng.sample(idx, pool))
        self.name = name
        self.texts = [ds.texts[i][:MAX_CHARS] for i in idx]
        self.labels = sorted(set(ds.labels))
        self.y = np.array([self.labels.index(ds.labels[i]) for i in idx])
        self.descriptions = DESCRIPTIONS[name]
        CACHE.mkdir(parents=True, exist_ok=True)
        path = CACHE / f"{name}-{pool}.npz"
        if path.exists():
            with np.load(path) as z:
                self.x = z["x"]
                self.d = z["d"]
        else:
            if encoder is None:
                from adapters.encoders import open_encoder
                encoder = open_encoder()
            self.x = encoder.embed(self.texts).numpy().astype(np.float32)
            self.d = encoder.embed([self.descriptions[lab] for lab in self.labels]).numpy()
            tmp = path.with_name(path.name + ".tmp.npz")
            np.savez(tmp, x=self.x, d=self.d)
            os.replace(tmp, path)

    def split(self, seed: int, counts: list[int], test: int = TEST, extra: dict[int, int] | None = None
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(train rows, extra rows, test rows) of the pool: ``counts[j]`` rows of label j, then
        ``extra[j]`` more of label j (another draw), then ``test`` rows at natural frequency."""
        rng = np.random.default_rng(seed)
        order = rng.permutation(len(self.y))
        train, more = [], []
        for j in range(len(self.labels)):
            rows = [i for i in order if self.y[i] == j]
            n, e = counts[j], (extra or {}).get(j, 0)
            if len(rows) < n + e + 2:
                raise ValueError(f"{self.name}: label {self.labels[j]} has {len(rows)} pool rows")
            train += rows[:n]
            more += rows[n:n + e]
        used = set(train) | set(more)
        rest = [i for i in order if i not in used][:test]
        return np.array(train), np.array(more, dtype=np.int64), np.array(rest)


# -- candidate head recipes: (x, y, n_labels, d or None) -> predict(x) ---------------------
def _candidate(name: str):
    from adapters.training.fitting import class_weights
    from adapters.training.recipes import description_prior, fit_prior

    def fit(x, y, k, d, *, c=1.0, balance=False, adjust=False):
        prior = description_prior(d, k, x.shape[1]) if d is not None else np.zeros((k, x.shape[1]))
        w = class_weights(y, k) if balance else None
        head = fit_prior(x, y, prior, c=c, sample_weight=w)
        bias = head.bias.numpy().astype(np.float64)
        if adjust:  # logit adjustment: remove the examples' label frequencies
            freq = np.bincount(y, minlength=k) / len(y)
            bias = bias - np.log(np.clip(freq, 1e-6, None))
        wt = head.weight.numpy()
        return lambda xt: (xt @ wt.T + bias).argmax(1)

    table = {
        "plain": dict(),
        "balanced": dict(balance=True),
        "adjusted": dict(adjust=True),
        "balanced_c4": dict(balance=True, c=4.0),
        "balanced_c16": dict(balance=True, c=16.0),
        "plain_c16": dict(c=16.0),
    }
    kw = table[name]
    return lambda x, y, k, d: fit(x, y, k, d, **kw)


CANDIDATES = ["plain", "balanced", "adjusted", "balanced_c4", "balanced_c16", "plain_c16"]


def evaluate(e: Embedded, seeds: list[int], candidates: list[str], use_desc: bool) -> list[dict]:
    k = len(e.labels)
    d = e.d if use_desc else None
    out = []
    fitters = {c: _candidate(c) for c in candidates}
    for seed in seeds:
        rows = []
        # 8/8 -> 20/8: one label at a time gets 12 more (at most 3 labels per set and seed)
        labs = np.random.default_rng(seed).permutation(k)[:3]
        for j in labs:
            tr, more, te = e.split(seed, [8] * k, extra={int(j): 12})
            both = np.concatenate([tr, more])
            for c, f in fitters.items():
                a0 = float((f(e.x[tr], e.y[tr], k, d)(e.x[te]) == e.y[te]).mean())
                a1 = float((f(e.x[both], e.y[both], k, d)(e.x[te]) == e.y[te]).mean())
                rows.append({"scenario": "one_sided", "candidate": c, "before": a0, "after": a1})
        # 16/8/4 vs balanced with the same total
        counts = [(16, 8, 4)[i % 3] for i in range(k)]
        bal = [sum(counts) // k] * k
        for shift in range(min(k, 3)):
            cs = counts[shift:] + counts[:shift]
            tr, _, te = e.split(seed, cs)
            trb, _, teb = e.split(seed, bal)
            for c, f in fitters.items():
                a_imb = float((f(e.x[tr], e.y[tr], k, d)(e.x[te]) == e.y[te]).mean())
                a_bal = float((f(e.x[trb], e.y[trb], k, d)(e.x[teb]) == e.y[teb]).mean())
                rows.append({"scenario": "imbalanced", "candidate": c, "before": a_bal, "after": a_imb})
        for r in rows:
            r.update(set=e.name, seed=seed, descriptions=use_desc)
        out += rows
    return out


def summarize(rows: list[dict]) -> str:
    lines = ["| set | descriptions | scenario | candidate | before | after | after - before |",
             "|---|---|---|---|---|---|---|"]
    keys = sorted({(r["set"], r["descriptions"], r["scenario"], r["candidate"]) for r in rows},
                  key=lambda t: (t[0], t[1], t[2], CANDIDATES.index(t[3])))
    for s, dsc, sc, c in keys:
        sel = [r for r in rows if (r["set"], r["descriptions"], r["scenario"], r["candidate"]) == (s, dsc, sc, c)]
        b = np.mean([r["before"] for r in sel])
        a = np.mean([r["after"] for r in sel])
        lines.append(f"| {s} | {dsc} | {sc} | {c} | {b:.3f} | {a:.3f} | {100 * (a - b):+.1f} |")
    # mean over sets
    lines += ["", "| descriptions | scenario | candidate | before | after | after - before |",
              "|---|---|---|---|---|---|"]
    for dsc in sorted({r["descriptions"] for r in rows}):
        for sc in ("one_sided", "imbalanced"):
            for c in CANDIDATES:
                sel = [r for r in rows if (r["descriptions"], r["scenario"], r["candidate"]) == (dsc, sc, c)]
                if not sel:
                    continue
                sets = sorted({r["set"] for r in sel})
                b = np.mean([np.mean([r["before"] for r in sel if r["set"] == s]) for s in sets])
                a = np.mean([np.mean([r["after"] for r in sel if r["set"] == s]) for s in sets])
                lines.append(f"| {dsc} | {sc} | {c} | {b:.3f} | {a:.3f} | {100 * (a - b):+.1f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sets", nargs="+", default=["trec_coarse", "rotten_tomatoes", "reuters_r8"])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--candidates", nargs="+", default=CANDIDATES)
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args()
    import torch

    torch.set_num_threads(1)  # tiny fits: more threads only spin on 2 shared cores
    rows = []
    for s in a.sets:
        e = Embedded(s)
        for use_desc in (False, True):
            rows += evaluate(e, list(range(a.seeds)), a.candidates, use_desc)
        print(summarize(rows), flush=True)
        if a.out:
            a.out.write_text(json.dumps(rows))


if __name__ == "__main__":
    main()
