"""LoRA recipes for issue 11: examples + descriptions + pseudo-labeled unlabeled texts tune
LoRA with the existing contrastive trainer (adapters.lora_trainer.train_embeddings), then a
description-prior logistic head is fitted on the tuned embeddings.

    python -m benchmarks.research.lora_semi --sets dev --seeds 5 --variants lora auto ...

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

    prior_strength: float = 10.0  # w0 = strength * description embeddings
    pseudo_fraction: float = 0.3  # pseudo-labels per class = fraction * unlabeled / labels
    max_pseudo_per_class: int = 64  # caps LoRA training time on big pools
    descriptions_as_rows: bool = True  # descriptions join the contrastive batches
    pseudo_weight: float = 1.0  # weight of pseudo-labeled rows in the final head
    epochs: int = 8  # over the labeled examples; pseudo rows are seen in the same steps
    lora: dict = field(default_factory=dict)  # LoraOptions overrides


def _lora_options(opts: AutoOptions, seed: int, epochs: int):
    from adapters.config import LoraOptions

    return LoraOptions.parse({"seed": seed, "epochs": epochs, **opts.lora})


def tune_lora(bb, texts: list[str], y: np.ndarray, n_labels: int, lora_opts):
    """LoRA weights from the existing contrastive trainer, on any labeled rows."""
    from adapters.lora_trainer import train_embeddings
    from adapters.trainer import LabeledData

    data = LabeledData(list(texts), [str(j) for j in range(n_labels)], np.asarray(y), False)
    lw, _ = train_embeddings(bb, data, lora_opts)
    return lw


def embed(bb, texts, lw=None) -> np.ndarray:
    if not texts:
        return np.zeros((0, bb.dim), np.float32)
    return bb.embed(list(texts), None if lw is None else [lw] * len(texts)).numpy().astype(np.float32)


def fit_auto(bb, train_texts: list[str], y: np.ndarray, desc_texts: list[str] | None,
             unl_texts: list[str], opts: AutoOptions, seed: int = 0):
    """The full recipe from raw texts. Returns (lora weights, Linear head, info)."""
    n_labels = int(y.max()) + 1
    t0, c0 = time.perf_counter(), time.process_time()
    x = embed(bb, train_texts)
    d = embed(bb, desc_texts) if desc_texts else None
    xu = embed(bb, unl_texts)
    t_embed = time.perf_counter() - t0
    head0 = (R.description_prior(x, y, d, opts.prior_strength) if d is not None
             else R.probe(x, y, n_labels, seed=seed))
    rows, ry = list(train_texts), list(y)
    idx = np.zeros(0, np.int64)
    if len(unl_texts) and opts.pseudo_fraction > 0:
        p = head0.proba(xu)
        per = min(opts.max_pseudo_per_class, int(opts.pseudo_fraction * len(xu) / n_labels))
        idx = R.balanced_confident(p, per)
        rows += [unl_texts[i] for i in idx]
        ry += p[idx].argmax(1).tolist()
    if d is not None and opts.descriptions_as_rows:
        rows += list(desc_texts)
        ry += list(range(n_labels))
    # steps: `epochs` passes over the examples' worth of batches, whatever the row count
    epochs = max(1, round(opts.epochs * len(train_texts) / len(rows)))
    t1 = time.perf_counter()
    lw = tune_lora(bb, rows, np.array(ry), n_labels, _lora_options(opts, seed, epochs))
    t2 = time.perf_counter()
    xt = embed(bb, rows[:len(train_texts) + len(idx)], lw)
    yt = np.array(ry[:len(train_texts) + len(idx)])
    sw = np.concatenate([np.ones(len(train_texts)), np.full(len(idx), opts.pseudo_weight)])
    if d is not None:
        dt = embed(bb, desc_texts, lw)
        head = R.logreg_prior(xt, yt, opts.prior_strength * dt, sample_weight=sw)
    else:
        head = R.probe(xt, yt, n_labels, seed=seed, sample_weight=sw)
    t3 = time.perf_counter()
    info = {"seconds": round(t3 - t0, 2), "cpu_seconds": round(time.process_time() - c0, 2), "embed_s": round(t_embed, 2), "lora_s": round(t2 - t1, 2),
            "head_s": round(t3 - t2, 2), "pseudo": int(len(idx)), "lora_rows": len(rows),
            "epochs": epochs}
    return lw, head, info


VARIANTS = {
    # the service's LoRA kind today: examples only, logreg head on tuned embeddings
    "lora (examples only)": (False, False, AutoOptions(pseudo_fraction=0, descriptions_as_rows=False)),
    "lora + descriptions (prior head)": (True, False, AutoOptions(pseudo_fraction=0, descriptions_as_rows=False)),
    "lora + descriptions (rows + prior head)": (True, False, AutoOptions(pseudo_fraction=0)),
    "auto: + pseudo 10%": (True, True, AutoOptions(pseudo_fraction=0.1)),
    "auto: + pseudo 30%": (True, True, AutoOptions(pseudo_fraction=0.3)),
    "auto: + pseudo 30%, 16 epochs": (True, True, AutoOptions(pseudo_fraction=0.3, epochs=16)),
    "auto: + pseudo 30%, no desc rows": (True, True, AutoOptions(pseudo_fraction=0.3, descriptions_as_rows=False)),
    "lora + pseudo 30% (no descriptions)": (False, True, AutoOptions(pseudo_fraction=0.3, descriptions_as_rows=False)),
}

OUT = RESULTS / "lora_semi.jsonl"


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
