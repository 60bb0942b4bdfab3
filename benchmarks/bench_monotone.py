"""Issue 19: adaptation you can trust, through the HTTP service as users call it.

A real ``bentoml serve`` (PyTorch fp32, a fresh store) and plain HTTP calls: ``POST
/v1/adapters``, ``POST /v1/adapters/{name}/examples``, ``POST /v1/predict``. The adapter is
kind ``auto`` with the set's label descriptions and ``promote: never`` (its in-request
version: the description-prior head; the LoRA job is left out to fit 2 shared cores).

    python -m benchmarks.bench_monotone                      # every case, every set and seed
    python -m benchmarks.bench_monotone --report             # tables + plot from the log

Cases, per set and seed (test rows at the set's natural label distribution):
- ``balanced``: 8 examples per label.
- ``imbalanced``: labels get 16, 8, 4 examples in turn, against ``balanced_same_total``
  (the same total, evenly spread).
- ``noisy``: the 8-per-label examples with 10% of their labels replaced by another label.
- ``one_sided``: the balanced adapter, then 12 more correct examples of one label (8/8 ->
  20/8, the issue's reproduction) through ``/examples``.
- ``correction``: the balanced adapter, then 5 rounds of adding the 8 examples of a pool
  (never test rows) that the latest version gets wrong, through ``/examples``.
- ``zero_shot`` (descriptions alone) and ``probe`` (8 per label, kind ``head`` without
  descriptions: a linear probe).
- ``zero_shot_unlabeled``: descriptions and ``UNLABELED_ROWS`` unlabeled texts (disjoint from
  the test rows, the pool and the reserve), no examples: the zero-shot head self-trained on
  them (adapters/kinds/head.py ``zero_shot_fit``), against the same seed's probe.

Sets: trec_coarse and rotten_tomatoes are DEV sets (they chose the recipe in
benchmarks/research/imbalance.py); sms_spam and bbc_news are HELD_OUT (only measured here).
Texts are cut to 600 characters (the shared machine's compute). Each measured row is appended
to a JSON-lines log as soon as it exists, and skipped on a rerun.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from benchmarks.datasets import LOADERS
from benchmarks.label_descriptions import DESCRIPTIONS

from .common import HERE, RESULTS_DIR, machine

SETS = ("trec_coarse", "rotten_tomatoes", "sms_spam", "bbc_news")
DEV_SETS = ("trec_coarse", "rotten_tomatoes")
POOL_ROWS, TEST_ROWS, MAX_CHARS, ROUNDS, PER_ROUND = 200, 300, 600, 5, 8
UNLABELED_ROWS = 1000
SHIFTS = 2  # imbalanced creates and one-sided updates: which label is frequent, in turn
CASES = ("balanced", "imbalanced", "noisy", "zero_shot", "zero_shot_unlabeled", "one_sided",
         "correction")
LOG = RESULTS_DIR / "monotone_runs.jsonl"
HTTP_LOG = RESULTS_DIR / "monotone_http.jsonl"
# rotten_tomatoes' correction loop on seeds 3-7 over HTTP (stop 29: is its drift noise?); a log
# like HTTP_LOG, read with it (later seeds went into HTTP_LOG itself)
RT_MORE = RESULTS_DIR / "monotone_http_rt_more_seeds.jsonl"
OPTIONS = {"promote": "never"}
# load averages seen while the logged rows were measured (the correction loop and the engine
# rows on the first run; the other HTTP cases on the second)
LOAD = ("9-20 on the first run; on the second (every other case over HTTP) median 14, 5-17; "
        "the correction loop's HTTP seeds 8-15 (rotten_tomatoes) and 3-7 (the other sets), "
        "2026-12-08: ~1-2, quiet")


INTRO = """`python -m benchmarks.bench_monotone --via http` (a real `bentoml serve`, PyTorch fp32,
plain HTTP: `POST /v1/adapters`, `POST /v1/adapters/{name}/examples`, `POST /v1/predict`) and
`--via engine` (the `Tailor` facade in process, test rows embedded once); `--report` writes this.
Kind `auto` with the set's label descriptions and `promote: never` (its in-request version;
no LoRA job: the machine could not afford them), texts cut to 600 characters, 300 test rows
per seed at the set's natural label distribution, a disjoint 200-row correction pool. DEV
sets trec_coarse and rotten_tomatoes chose the recipe (benchmarks/research/imbalance.md);
HELD_OUT sets sms_spam and bbc_news were never looked at while choosing and only measured here.
Imbalanced: 16/8/4 examples across labels (2 rotations of which label gets 16) vs the same
total spread evenly; one-sided: 8 per label, then 12 more correct examples of one label
(2 labels in turn) through `/examples`; correction loop: 5 rounds of adding the first 8 pool
rows the latest version gets wrong (one-sided by construction). Seeds: as many as finished
(in brackets in the loop table; the other tables are means over the seeds that ran). HTTP
and the engine give the same accuracies to the last digit: the same code path, deterministic
on the same splits."""


SETFIT = ("| auto >= SetFit + 5 points at 8/label, in <= 1/3 of SetFit's time | not rerun here "
          "(the balanced case is unchanged by issue 19: equal counts leave the head as it was); "
          "issue 11's run on the same recipe: +4.1 points on 3 sets, 1.17x SetFit's wall time "
          "(results/quality.md) | **NOT MET** |")


class Split:
    """Disjoint rows of one set for one seed: a train reserve per label, a correction pool and
    the test rows (natural label distribution)."""

    def __init__(self, name: str, seed: int):
        ds = LOADERS[name]()
        rng = random.Random(seed)
        rows = list(range(len(ds.texts)))
        rng.shuffle(rows)
        seen: set[str] = set()
        uniq = []
        for i in rows:  # one text once (the service refuses repeated examples)
            t = ds.texts[i][:MAX_CHARS]
            if t.strip() and t not in seen:
                seen.add(t)
                uniq.append(i)
        self.labels = sorted(set(ds.labels))
        self.reserve: dict[str, list[dict]] = {lab: [] for lab in self.labels}
        rest = []
        for i in uniq:
            lab = ds.labels[i]
            if len(self.reserve[lab]) < 28:
                self.reserve[lab].append({"text": ds.texts[i][:MAX_CHARS], "label": lab})
            else:
                rest.append(i)
        self.pool = [{"text": ds.texts[i][:MAX_CHARS], "label": ds.labels[i]}
                     for i in rest[:POOL_ROWS]]
        self.test = [(ds.texts[i][:MAX_CHARS], ds.labels[i]) for i in rest[POOL_ROWS:POOL_ROWS + TEST_ROWS]]
        end = POOL_ROWS + TEST_ROWS
        self.unlabeled = [ds.texts[i][:MAX_CHARS] for i in rest[end:end + UNLABELED_ROWS]]
        self.descriptions = DESCRIPTIONS[name]
        self.rng = random.Random(seed + 1000)

    def take(self, counts: dict[str, int], start: int = 0) -> list[dict]:
        return [ex for lab, n in counts.items() for ex in self.reserve[lab][start:start + n]]


class Http:
    def __init__(self, url: str):
        self.c = httpx.Client(base_url=url, timeout=600)

    def _post(self, path: str, body: dict) -> dict:
        r = self.c.post(path, json=body)
        if r.status_code >= 300:
            raise RuntimeError(f"{path}: {r.status_code} {r.text[:500]}")
        return r.json()

    def create(self, name: str, kind: str, examples: list[dict] | None,
               descriptions: dict | None, options: dict | None = None,
               unlabeled: list[str] | None = None) -> dict:
        body: dict[str, Any] = {"name": name, "kind": kind, "options": options or {}}
        if examples:
            body["examples"] = examples
        if descriptions:
            body["label_descriptions"] = descriptions
        if unlabeled:
            body["unlabeled"] = unlabeled
        return self._post("/v1/adapters", body)

    def add(self, name: str, examples: list[dict]) -> dict:
        return self._post(f"/v1/adapters/{name}/examples", {"examples": examples})

    def predict(self, ref: str, texts: list[str]) -> list[str]:
        out: list[str] = []
        for i in range(0, len(texts), 100):
            out += [p["label"] for p in self._post("/v1/predict", {"adapter": ref, "inputs": texts[i:i + 100]})["predictions"]]
        return out

    def accuracy(self, ref: str, test: list[tuple[str, str]]) -> float:
        pred = self.predict(ref, [t for t, _ in test])
        return round(float(np.mean([p == y for p, (_, y) in zip(pred, test)])), 4)


class Engine(Http):
    """The same calls on the engine facade in process (``Tailor.create_adapter``,
    ``add_examples``, the batched forward), with bench_quality's memo of frozen embeddings:
    test and pool rows are embedded once per set; examples are embedded by the engine as the
    service does. Used where the shared machine cannot afford every case over HTTP."""

    def __init__(self, store: Path):
        import torch

        from benchmarks.bench_quality import Bench

        torch.set_num_threads(1)  # as the service does
        self.b = Bench(store)

    def remember(self, name: str, texts: list[str]) -> None:
        self.b.remember(f"monotone-{name}", texts)

    def create(self, name, kind, examples, descriptions, options=None, unlabeled=None) -> dict:
        return self.b.engine.create_adapter("bench", name, kind, examples, options or {},
                                            label_descriptions=descriptions, unlabeled=unlabeled)

    def add(self, name: str, examples: list[dict]) -> dict:
        return self.b.engine.add_examples("bench", name, examples)

    def predict(self, ref: str, texts: list[str]) -> list[str]:
        return self.b.predict(ref, texts)


def _noisy(examples: list[dict], labels: list[str], rng: random.Random, share: float = 0.1) -> list[dict]:
    out = [dict(e) for e in examples]
    for i in rng.sample(range(len(out)), max(1, round(share * len(out)))):
        out[i]["label"] = rng.choice([lab for lab in labels if lab != out[i]["label"]])
    return out


def run_one(h: Http, name: str, seed: int, done: set, log: Path, via: str,
            cases: tuple[str, ...]) -> None:
    s = Split(name, seed)
    k = len(s.labels)
    tag = f"{name}-{seed}"
    if isinstance(h, Engine):
        h.remember(name, [t for t, _ in s.test] + [e["text"] for e in s.pool])

    def emit(case: str, **row: Any) -> None:
        rec = {"set": name, "seed": seed, "via": via, "case": case, **row}
        with log.open("a") as f:
            f.write(json.dumps(rec) + "\n")
        print(json.dumps(rec), flush=True)

    def want(case: str) -> bool:
        return case in cases and (name, seed, via, case) not in done

    bal = {lab: 8 for lab in s.labels}
    if want("balanced") or want("one_sided") or want("correction"):
        t0 = time.perf_counter()
        h.create(f"{tag}-b", "auto", s.take(bal), s.descriptions, OPTIONS)
        secs = time.perf_counter() - t0
        acc0 = h.accuracy(f"{tag}-b", s.test)
        if want("balanced"):
            emit("balanced", acc=acc0, seconds=round(secs, 2))
    if want("imbalanced"):
        accs = []
        for shift in range(min(k, SHIFTS)):
            cnt = {lab: (16, 8, 4)[(j + shift) % 3] for j, lab in enumerate(s.labels)}
            total = sum(cnt.values())
            even = {lab: total // k + (1 if j < total % k else 0) for j, lab in enumerate(s.labels)}
            rec = h.create(f"{tag}-i{shift}", "auto", s.take(cnt), s.descriptions, OPTIONS)
            h.create(f"{tag}-e{shift}", "auto", s.take(even), s.descriptions, OPTIONS)
            accs.append((h.accuracy(f"{tag}-i{shift}", s.test), h.accuracy(f"{tag}-e{shift}", s.test),
                         any("unbalanced" in w for w in rec["warnings"])))
        emit("imbalanced", acc=round(float(np.mean([a for a, _, _ in accs])), 4),
             acc_balanced_same_total=round(float(np.mean([b for _, b, _ in accs])), 4),
             warned=all(w for _, _, w in accs))
    if want("noisy"):
        h.create(f"{tag}-n", "auto", _noisy(s.take(bal), s.labels, s.rng), s.descriptions, OPTIONS)
        emit("noisy", acc=h.accuracy(f"{tag}-n", s.test))
    if want("zero_shot"):
        h.create(f"{tag}-z", "auto", None, s.descriptions, OPTIONS)
        h.create(f"{tag}-p", "head", s.take(bal), None)
        emit("zero_shot", acc=h.accuracy(f"{tag}-z", s.test), acc_probe=h.accuracy(f"{tag}-p", s.test))
    if want("zero_shot_unlabeled"):
        t0 = time.perf_counter()
        rec = h.create(f"{tag}-zu", "auto", None, s.descriptions, OPTIONS, s.unlabeled)
        emit("zero_shot_unlabeled", acc=h.accuracy(f"{tag}-zu", s.test),
             seconds=round(time.perf_counter() - t0, 2), unlabeled=len(s.unlabeled),
             pseudo_labels=rec["metrics"].get("pseudo_labels"),
             self_train=rec["metrics"].get("self_train"))
    if want("one_sided"):
        afters = []
        for j, lab in enumerate(s.labels[:SHIFTS]):
            h.create(f"{tag}-o{j}", "auto", s.take(bal), s.descriptions, OPTIONS)
            rec = h.add(f"{tag}-o{j}", s.take({lab: 12}, start=8))
            afters.append((h.accuracy(f"{tag}-o{j}", s.test), "weights_from" in (rec.get("changes") or {})))
        emit("one_sided", acc_before=acc0, acc_after=round(float(np.mean([a for a, _ in afters])), 4),
             kept_previous=sum(kept for _, kept in afters), updates=len(afters))
    if want("correction"):
        curve, kept, pool = [acc0], 0, list(s.pool)
        for _ in range(ROUNDS):
            pred = h.predict(f"{tag}-b", [e["text"] for e in pool])
            wrong = [e for e, p in zip(pool, pred) if p != e["label"]][:PER_ROUND]
            if not wrong:
                curve.append(curve[-1])
                continue
            rec = h.add(f"{tag}-b", wrong)
            kept += "weights_from" in (rec.get("changes") or {})
            pool = [e for e in pool if e not in wrong]
            curve.append(h.accuracy(f"{tag}-b", s.test))
        emit("correction", curve=curve, kept_previous=kept)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sets", nargs="+", default=list(SETS))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--via", choices=["http", "engine"], default="http",
                    help="http: a real bentoml serve; engine: the facade in process (memo)")
    ap.add_argument("--cases", nargs="+", default=list(CASES), choices=CASES)
    ap.add_argument("--log", type=Path, default=None,
                    help=f"default: {LOG.name} (engine) or {HTTP_LOG.name} (http)")
    ap.add_argument("--report", action="store_true")
    a = ap.parse_args()
    if a.report:
        report([p for p in (LOG, HTTP_LOG, RT_MORE) if p.exists()])
        return
    a.log = a.log or (HTTP_LOG if a.via == "http" else LOG)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the server on the way out
    done = set()
    if a.log.exists():
        done = {(r["set"], r["seed"], r["via"], r["case"])
                for r in map(json.loads, a.log.read_text().splitlines())}
    a.log.parent.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as d:
        if a.via == "engine":
            runs(Engine(Path(d) / "store"), a, done)
            return
        from tests.conftest import Server

        server = Server(Path(d) / "store", env={"TAILOR_RUNTIME": "torch"}).start()
        try:
            runs(Http(server.url), a, done)
        finally:
            server.stop()


def runs(h: Http, a: argparse.Namespace, done: set) -> None:
    for seed in a.seeds:
        for name in a.sets:
            run_one(h, name, seed, done, a.log, a.via, tuple(a.cases))


# -- the report -------------------------------------------------------------------------------
def report(logs: list[Path]) -> None:
    rows = [json.loads(x) for log in logs for x in log.read_text().splitlines()]
    sets = [s for s in SETS if any(r["set"] == s for r in rows)]
    lines = ["## Adaptation you can trust (issue 19): unbalanced labels, one-sided corrections", "",
             f"Machine: {machine()}; load average {os.getloadavg()[0]:.1f} when reported "
             f"({LOAD} while measuring: 2 cores shared with other engineers' test runs).", "",
             INTRO]
    for via in ("http", "engine"):
        if any(r["via"] == via for r in rows):
            lines += ["", f"### Through {'a real `bentoml serve` (HTTP)' if via == 'http' else 'the engine facade in process'}",
                      "", *tables([r for r in rows if r["via"] == via], sets)]
    lines += ["", "### Goals of the issue (each measured where it ran: HTTP or engine)", "",
              *goals(rows, sets), SETFIT]
    text = "\n".join(lines)
    (RESULTS_DIR / "monotone.md").write_text(text + "\n")
    print(text)
    plot(rows, sets, HERE / "monotone.png")


def tables(rows: list[dict], sets: list[str]) -> list[str]:
    def of(case: str, s: str) -> list[dict]:
        return [r for r in rows if r["case"] == case and r["set"] == s]

    def m(vals: list[float]) -> str:
        return f"{100 * float(np.mean(vals)):.1f}" if vals else "-"

    lines: list[str] = []
    if any(r["case"] != "balanced" and r["case"] != "correction" for r in rows):
        lines += create_table(rows, sets, of, m)
    if any(r["case"] == "correction" for r in rows):
        lines += loop_table(rows, sets, of)
    return lines


def create_table(rows: list[dict], sets: list[str], of, m) -> list[str]:
    lines = ["| set (role) | balanced 8/label | imbalanced 16/8/4 | same total, even | "
             "10% wrong labels | zero-shot | zero-shot + 1,000 unlabeled | 8-shot probe | "
             "8/8 -> 20/8 before | after | kept previous |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for s in sets:
        role = "dev" if s in DEV_SETS else "held-out"
        b, i, n, z, zu, o = (of(c, s) for c in ("balanced", "imbalanced", "noisy", "zero_shot",
                                                 "zero_shot_unlabeled", "one_sided"))
        lines.append(
            f"| {s} ({role}) | {m([r['acc'] for r in b])} | {m([r['acc'] for r in i])} | "
            f"{m([r['acc_balanced_same_total'] for r in i])} | {m([r['acc'] for r in n])} | "
            f"{m([r['acc'] for r in z])} | {m([r['acc'] for r in zu])} | "
            f"{m([r['acc_probe'] for r in z])} | "
            f"{m([r['acc_before'] for r in o])} | {m([r['acc_after'] for r in o])} | "
            f"{sum(r['kept_previous'] for r in o)}/{sum(r['updates'] for r in o)} |")
    return lines + [""]


def loop_table(rows: list[dict], sets: list[str], of) -> list[str]:
    lines = ["Correction loop (mean test accuracy % after each round; round 0 = the "
              "8-per-label create; seeds in brackets):", "",
              "| set | " + " | ".join(f"round {i}" for i in range(ROUNDS + 1)) +
              " | worst step | updates that kept the previous weights |",
              "|---|" + "---|" * (ROUNDS + 3)]
    for s in sets:
        c = of("correction", s)
        if not c:
            continue
        curve = np.mean([r["curve"] for r in c], 0) * 100
        lines.append(f"| {s} ({len(c)}) | " + " | ".join(f"{v:.1f}" for v in curve) +
                     f" | {min(np.diff(curve)):+.1f} | {sum(r['kept_previous'] for r in c)}/{ROUNDS * len(c)} |")
    return lines


def goals(rows: list[dict], sets: list[str]) -> list[str]:
    def verdict(ok: bool) -> str:
        return "**MET**" if ok else "**NOT MET**"

    out = ["| goal | measured | verdict |", "|---|---|---|"]
    for via in ("http", "engine"):
        c = [r for r in rows if r["case"] == "correction" and r["via"] == via]
        if not c:
            continue
        per_set = {s: np.mean([r["curve"] for r in c if r["set"] == s], 0) for s in sets
                   if any(r["set"] == s for r in c)}
        mean = 100 * np.mean(list(per_set.values()), 0)
        worst = float(min(np.diff(mean)))
        out.append(f"| correction loop ({via}): no round more than 1 point below the one before "
                   f"(mean over sets and seeds) | worst step {worst:+.1f} points "
                   f"({', '.join(f'{v:.1f}' for v in mean)}) | {verdict(worst >= -1)} |")
        above = {s: 100 * (v[-1] - v[0]) for s, v in per_set.items()}
        se = {s: _paired_se([100 * (r["curve"][-1] - r["curve"][0]) for r in c if r["set"] == s])
              for s in per_set}
        out.append(f"| ... and round 5 above round 0 on every set ({via}; ± the standard error "
                   "over seeds, paired by seed) | "
                   + ", ".join(f"{s} {d:+.1f} ± {se[s]:.1f}" for s, d in above.items())
                   + f" | {verdict(all(d > 0 for d in above.values()))} |")
    for via in ("http", "engine"):
        i = [r for r in rows if r["case"] == "imbalanced" and r["via"] == via]
        if i:
            by = [np.mean([100 * (r["acc"] - r["acc_balanced_same_total"]) for r in i if r["set"] == s])
                  for s in sets if any(r["set"] == s for r in i)]
            out.append(f"| imbalanced 16/8/4 within 2 points of even, same total ({via}) | "
                       f"{np.mean(by):+.1f} points (mean of {len(by)} sets; "
                       f"warning in every record: {all(r['warned'] for r in i)}) | {verdict(np.mean(by) >= -2)} |")
        z = [r for r in rows if r["case"] == "zero_shot" and r["via"] == via]
        if z:
            wins = [s for s in sets if any(r["set"] == s for r in z) and
                    np.mean([r["acc"] for r in z if r["set"] == s]) >= np.mean([r["acc_probe"] for r in z if r["set"] == s])]
            n = len({r["set"] for r in z})
            out.append(f"| zero-shot >= 8-shot linear probe on at least half of the sets ({via}) | "
                       f"{len(wins)}/{n} ({', '.join(wins) or 'none'}) | {verdict(2 * len(wins) >= n)} |")
        zu = [r for r in rows if r["case"] == "zero_shot_unlabeled" and r["via"] == via]
        if z and zu:
            out.append(zero_shot_unlabeled_goal(z, zu, via, verdict))
    return out


def zero_shot_unlabeled_goal(z: list[dict], zu: list[dict], via: str, verdict) -> str:
    """Zero-shot + unlabeled texts against the 8-shot probe of the same set and seeds (mean ±
    the paired standard error over seeds)."""
    probe = {(r["set"], r["seed"]): r["acc_probe"] for r in z}
    cells, wins, n = [], 0, 0
    for s in dict.fromkeys(r["set"] for r in zu):
        d = [100 * (r["acc"] - probe[(s, r["seed"])]) for r in zu
             if r["set"] == s and (s, r["seed"]) in probe]
        if d:
            n += 1
            wins += np.mean(d) >= 0
            cells.append(f"{s} {np.mean(d):+.1f} ± {_paired_se(d):.1f}")
    return (f"| zero-shot + 1,000 unlabeled >= 8-shot linear probe on at least half of the sets "
            f"({via}; vs the probe, ± paired standard error) | {wins}/{n}: {', '.join(cells)} | "
            f"{verdict(2 * wins >= n)} |")


def _paired_se(diffs: list[float]) -> float:
    """Standard error of the mean of per-seed differences (nan with one seed)."""
    return float(np.std(diffs, ddof=1) / np.sqrt(len(diffs))) if len(diffs) > 1 else float("nan")


def plot(rows: list[dict], sets: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(13, 5))
    ax = axes[0]
    for i, s in enumerate(sets):
        for via, style in (("http", "-"), ("engine", ":")):
            c = [r["curve"] for r in rows if r["case"] == "correction" and r["set"] == s and r["via"] == via]
            if c:
                ax.plot(range(ROUNDS + 1), 100 * np.mean(c, 0), style, marker="o", color=f"C{i}",
                        label=f"{s} ({via}, {len(c)} seeds)")
    ax.set_xlabel(f"round (+{PER_ROUND} examples the adapter got wrong)")
    ax.set_ylabel("test accuracy %")
    ax.set_title("correction loop (mean over seeds)")
    ax.legend(fontsize=8)
    ax = axes[1]
    cases = [("balanced", "acc", "8/label"), ("imbalanced", "acc", "16/8/4"),
             ("imbalanced", "acc_balanced_same_total", "same total, even"),
             ("noisy", "acc", "10% wrong"), ("one_sided", "acc_after", "8/8 -> 20/8"),
             ("zero_shot", "acc", "zero-shot"), ("zero_shot_unlabeled", "acc", "zero-shot + unlabeled"),
             ("zero_shot", "acc_probe", "8-shot probe")]
    width = 0.8 / len(cases)
    via = "http" if any(r["via"] == "http" and r["case"] == "noisy" for r in rows) else "engine"
    for j, (case, key, label) in enumerate(cases):
        vals = [100 * np.mean([r[key] for r in rows if r["case"] == case and r["set"] == s
                               and r["via"] == via] or [np.nan]) for s in sets]
        ax.bar(np.arange(len(sets)) + j * width, vals, width, label=label)
    ax.set_xticks(np.arange(len(sets)) + 0.4 - width / 2, sets, rotation=15)
    ax.set_ylabel("test accuracy %")
    ax.set_title(f"creates and updates ({via}, mean over seeds)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


if __name__ == "__main__":
    main()
