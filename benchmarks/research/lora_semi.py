"""LoRA recipes for issue 11: examples + descriptions + pseudo-labeled unlabeled texts tune
LoRA with the service's contrastive trainer (adapters.kinds.lora.train_embeddings), then a
description-prior logistic head is fitted on the tuned embeddings.

    python -m benchmarks.research.lora_semi --sets dev --seeds 5 --variants "lora (examples only)" ...

Every timing covers all the work `auto` would do in its job after the request: embedding the
examples, descriptions and unlabeled texts with the frozen backbone, the frozen prior head,
pseudo-labels, LoRA training and the head refit on tuned embeddings. Embedding the test rows
is prediction, not training, and is left out.
"""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass, field

import numpy as np

from benchmarks.datasets import DEV, HELD_OUT

from . import recipes as R
from .data import backbone, split
from .evaluate import RESULTS, description_texts



@dataclass(frozen=True)
class AutoOptions:
    """Hyper-parameters of the LoRA + semi-supervised recipe (chosen on the dev sets)."""

    prior_strength: float = 5.0  # w0 = strength * description embeddings (frozen study: 5)
    descriptions_as_rows: bool = True  # descriptions join the contrastive batches as examples
    # none: no unlabeled texts; head: the teacher's pseudo-labels refit the head only;
    # student: a second LoRA is tuned from scratch on examples + descriptions + pseudo-labels
    self_training: str = "student"
    pseudo_fraction: float = 0.1  # pseudo-labels per class = fraction * unlabeled / labels
    max_pseudo_per_class: int = 64  # caps training time on big pools
    pseudo_weight: float = 1.0  # weight of pseudo-labeled rows in the final head
    epochs: int = 8  # teacher: passes over examples (+ description rows)
    student_steps: float = 2.0  # student steps = this x the teacher's
    lora: dict = field(default_factory=dict)  # LoraOptions overrides


def _lora_options(opts: AutoOptions, seed: int, epochs: int):
    from adapters.kinds.lora import LoraOptions

    return LoraOptions.parse({"seed": seed, "epochs": epochs, **opts.lora})


def tune_lora(bb, texts: list[str], y: np.ndarray, n_labels: int, lora_opts):
    """LoRA weights from the existing contrastive trainer, on any labeled rows."""
    from adapters.kinds.lora import train_embeddings
    from adapters.validation import LabeledData

    data = LabeledData(list(texts), [str(j) for j in range(n_labels)], np.asarray(y), False)
    lw, _ = train_embeddings(bb, data, lora_opts)
    return lw


def embed(bb, texts, lw=None) -> np.ndarray:
    if not len(texts):
        return np.zeros((0, bb.dim), np.float32)
    return bb.embed(list(texts), None if lw is None else [lw] * len(texts)).numpy().astype(np.float32)


def _head(x, y, d, opts: AutoOptions, seed: int, sw=None) -> R.Linear:
    if d is not None:
        return R.logreg_prior(x, y, opts.prior_strength * d, sample_weight=sw)
    return R.probe(x, y, int(y.max()) + 1, seed=seed, sample_weight=sw)


def fit_auto(bb, train_texts: list[str], y: np.ndarray, desc_texts: list[str] | None,
             unl_texts: list[str], opts: AutoOptions, seed: int = 0):
    """The full recipe from raw texts. Returns (lora weights, Linear head, info).

    1. teacher: LoRA tuned on the examples (+ descriptions as rows), head with the
       description prior on the tuned embeddings;
    2. with unlabeled texts: the teacher labels them; the most confident per class
       (class-balanced) become pseudo-labels;
    3. ``head``: the head is refitted on examples + pseudo-labels in the teacher's space;
       ``student``: a fresh LoRA is tuned on examples (repeated to stay >= half the rows)
       + descriptions + pseudo-labels, and the head is fitted in its space."""
    n_labels = int(y.max()) + 1
    y = np.asarray(y)
    t0, c0 = time.perf_counter(), time.process_time()
    desc = list(desc_texts or [])
    rows = list(train_texts) + (desc if opts.descriptions_as_rows else [])
    ry = np.concatenate([y, np.arange(n_labels)]) if opts.descriptions_as_rows and desc else y
    teacher = tune_lora(bb, rows, ry, n_labels, _lora_options(opts, seed, opts.epochs))
    x = embed(bb, train_texts, teacher)
    d = embed(bb, desc, teacher) if desc else None
    head = _head(x, y, d, opts, seed)
    t1 = time.perf_counter()
    info = {"teacher_s": round(t1 - t0, 2), "pseudo": 0}
    lw = teacher
    if len(unl_texts) and opts.self_training != "none":
        xu = embed(bb, unl_texts, teacher)
        p = head.proba(xu)
        per = min(opts.max_pseudo_per_class, max(1, int(opts.pseudo_fraction * len(xu) / n_labels)))
        idx = R.balanced_confident(p, per)
        yp = p[idx].argmax(1)
        info["pseudo"] = int(len(idx))
        if opts.self_training == "head":
            xa, ya = np.concatenate([x, xu[idx]]), np.concatenate([y, yp])
            sw = np.concatenate([np.ones(len(y)), np.full(len(idx), opts.pseudo_weight)])
            head = _head(xa, ya, d, opts, seed, sw)
        elif opts.self_training == "student":
            rep = max(1, round(len(idx) / len(train_texts)))
            srows = list(train_texts) * rep + [unl_texts[i] for i in idx] + (
                desc if opts.descriptions_as_rows else [])
            sy = np.concatenate([np.tile(y, rep), yp] + (
                [np.arange(n_labels)] if opts.descriptions_as_rows and desc else []))
            epochs = max(1, round(opts.student_steps * opts.epochs * len(rows) / len(srows)))
            lw = tune_lora(bb, srows, sy, n_labels, _lora_options(opts, seed + 1, epochs))
            xa = embed(bb, list(train_texts) + [unl_texts[i] for i in idx], lw)
            ya = np.concatenate([y, yp])
            sw = np.concatenate([np.ones(len(y)), np.full(len(idx), opts.pseudo_weight)])
            head = _head(xa, ya, embed(bb, desc, lw) if desc else None, opts, seed, sw)
            info["student_epochs"] = epochs
        else:
            raise ValueError(f"self_training must be none, head or student, got {opts.self_training!r}")
    info.update({"seconds": round(time.perf_counter() - t0, 2),
                 "cpu_seconds": round(time.process_time() - c0, 2)})
    return lw, head, info


VARIANTS = {
    # the service's LoRA kind today: examples only, logreg head on tuned embeddings
    "lora (examples only)": (False, False, AutoOptions(descriptions_as_rows=False, self_training="none")),
    "lora + descriptions (prior head)": (True, False, AutoOptions(descriptions_as_rows=False, self_training="none")),
    "lora + descriptions (rows + prior head)": (True, False, AutoOptions(self_training="none")),
    "auto: + unlabeled, head self-training 10%": (True, True, AutoOptions(self_training="head")),
    "auto: + unlabeled, student LoRA 10%": (True, True, AutoOptions(self_training="student")),
    "auto: + unlabeled, student LoRA 30%": (True, True, AutoOptions(self_training="student", pseudo_fraction=0.3)),
}

OUT = RESULTS / "lora_semi2.jsonl"


def done() -> set[tuple[str, str, int]]:
    if not OUT.exists():
        return set()
    return {(r["variant"], r["dataset"], r["seed"]) for r in map(json.loads, OUT.read_text().splitlines())}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sets", default="dev", choices=["dev", "held_out"])
    ap.add_argument("--only", nargs="*", help="data sets (default: all of --sets)")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--variants", nargs="*", default=list(VARIANTS))
    a = ap.parse_args()
    names = a.only or (DEV if a.sets == "dev" else HELD_OUT)
    bb = backbone()
    RESULTS.mkdir(exist_ok=True)
    for seed in range(a.seeds):
        for name in names:
            s = split(name, seed)
            for v in a.variants:
                if (v, name, seed) in done():
                    continue
                use_desc, use_unl, opts = VARIANTS[v]
                lw, head, info = fit_auto(bb, s.train_texts, s.y_train,
                                          list(description_texts(name)) if use_desc else None,
                                          s.unl_texts if use_unl else [], opts, seed)
                pred = head.predict(embed(bb, s.test_texts, lw))
                row = {"variant": v, "dataset": name, "seed": seed,
                       "accuracy": round(float((pred == s.y_test).mean()), 4), **info}
                with OUT.open("a") as f:
                    f.write(json.dumps(row) + "\n")
                print(row, flush=True)


if __name__ == "__main__":
    main()
