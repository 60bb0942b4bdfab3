"""An honest held-out estimate for `auto` (issue 11): stratified k-fold cross-validation on the
labeled examples, re-running the WHOLE recipe in each fold (descriptions and unlabeled texts
stay in every fold; the held-out examples never reach the teacher, the pseudo-labels, LoRA
or the head). Compared with the test accuracy of the recipe trained on all examples:
bias = mean(CV - test), and how often "promote when CV(stronger) > CV(current)" makes the
right call.

    python -m benchmarks.research.estimate --sets dev --seeds 5 [--lora-seeds 2]
"""
from __future__ import annotations

import argparse
import json

import numpy as np

from benchmarks.datasets import DEV, HELD_OUT

from . import recipes as R
from .data import backbone, split
from .evaluate import RESULTS, description_embeddings, description_texts


def folds(y: np.ndarray, k: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    from sklearn.model_selection import StratifiedKFold

    k = min(k, int(np.bincount(y).min()))
    return list(StratifiedKFold(k, shuffle=True, random_state=seed).split(np.zeros(len(y)), y))


def cv_accuracy(fit_predict, y: np.ndarray, k: int, seed: int) -> float:
    """``fit_predict(train_idx, test_idx) -> predicted ids of test_idx``; pooled accuracy."""
    correct = total = 0
    for tr, te in folds(y, k, seed):
        correct += int((fit_predict(tr, te) == y[te]).sum())
        total += len(te)
    return correct / total


# -- frozen recipes as fit(x, y, s) -> Linear ------------------------------------------------
def head_prior(x, y, s, strength=5.0):
    return R.description_prior(x, y, description_embeddings(s.name), strength)


def head_probe(x, y, s):
    return R.probe(x, y, len(s.labels), seed=s.seed)


def head_self_trained(x, y, s, strength=5.0):
    d = description_embeddings(s.name)
    fit = lambda xa, ya, sw: R.logreg_prior(xa, ya, strength * d, sample_weight=sw)  # noqa: E731
    return R.self_train(x, y, s.x_unl, fit, head_prior(x, y, s, strength), rounds=1, per_class=0.3)[0]


FROZEN = {"examples only (probe)": head_probe, "examples + descriptions (prior 5)": head_prior,
          "+ unlabeled (self-train 30%)": head_self_trained}


def frozen_study(names, seeds: int, k: int = 4) -> dict:
    out: dict = {}
    for name in names:
        out[name] = {m: {"cv": [], "test": []} for m in FROZEN}
        for seed in range(seeds):
            s = split(name, seed)
            for m, fit in FROZEN.items():
                cv = cv_accuracy(lambda tr, te: fit(s.x_train[tr], s.y_train[tr], s).predict(s.x_train[te]),
                                 s.y_train, k, seed)
                test = float((fit(s.x_train, s.y_train, s).predict(s.x_test) == s.y_test).mean())
                out[name][m]["cv"].append(cv)
                out[name][m]["test"].append(test)
    return out


def lora_study(names, seeds: int, k: int = 2) -> dict:
    """k-fold CV of the `auto` LoRA recipe vs the frozen prior head on the same folds."""
    from .lora_semi import AutoOptions, embed, fit_auto

    bb = backbone()
    opts = AutoOptions()
    out: dict = {}
    for name in names:
        out[name] = {"auto": {"cv": [], "test": []}, "head": {"cv": [], "test": []}, "seconds": []}
        for seed in range(seeds):
            s = split(name, seed)
            desc = list(description_texts(name))

            def auto_fp(tr, te):
                lw, head, info = fit_auto(bb, [s.train_texts[i] for i in tr], s.y_train[tr], desc,
                                          s.unl_texts, opts, seed)
                out[name]["seconds"].append(info["seconds"])
                return head.predict(embed(bb, [s.train_texts[i] for i in te], lw))

            out[name]["auto"]["cv"].append(cv_accuracy(auto_fp, s.y_train, k, seed))
            lw, head, _ = fit_auto(bb, s.train_texts, s.y_train, desc, s.unl_texts, opts, seed)
            out[name]["auto"]["test"].append(float((head.predict(embed(bb, s.test_texts, lw)) == s.y_test).mean()))
            out[name]["head"]["cv"].append(cv_accuracy(
                lambda tr, te: head_prior(s.x_train[tr], s.y_train[tr], s).predict(s.x_train[te]),
                s.y_train, k, seed))
            out[name]["head"]["test"].append(float((head_prior(s.x_train, s.y_train, s).predict(s.x_test)
                                                    == s.y_test).mean()))
            print(name, seed, {m: (out[name][m]["cv"][-1], out[name][m]["test"][-1]) for m in ("auto", "head")},
                  flush=True)
    return out


def report(res: dict, pairs: list[tuple[str, str]]) -> str:
    lines = ["| data set | recipe | CV on examples | test | bias (CV - test) |", "|---|---|---|---|---|"]
    for name, r in res.items():
        for m, v in r.items():
            if not isinstance(v, dict):
                continue
            cv, te = np.array(v["cv"]), np.array(v["test"])
            lines.append(f"| {name} | {m} | {100 * cv.mean():.1f} | {100 * te.mean():.1f} | "
                         f"{100 * (cv - te).mean():+.1f} ± {100 * (cv - te).std():.1f} |")
    lines += ["", "| data set | stronger vs current | right calls (promote iff CV says better, vs test) |",
              "|---|---|---|"]
    for name, r in res.items():
        for strong, cur in pairs:
            if strong not in r or cur not in r:
                continue
            cvd = np.array(r[strong]["cv"]) - np.array(r[cur]["cv"])
            ted = np.array(r[strong]["test"]) - np.array(r[cur]["test"])
            right = int(((cvd > 0) == (ted > 0)).sum())
            lines.append(f"| {name} | {strong} vs {cur} | {right}/{len(cvd)} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sets", default="dev", choices=["dev", "held_out"])
    ap.add_argument("--only", nargs="*")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--lora-seeds", type=int, default=0)
    a = ap.parse_args()
    names = a.only or (DEV if a.sets == "dev" else HELD_OUT)
    res = frozen_study(names, a.seeds)
    print(report(res, [("examples + descriptions (prior 5)", "examples only (probe)"),
                       ("+ unlabeled (self-train 30%)", "examples + descriptions (prior 5)")]))
    (RESULTS / f"estimate-frozen-{a.sets}.json").write_text(json.dumps(res))
    if a.lora_seeds:
        lres = lora_study(names, a.lora_seeds)
        (RESULTS / f"estimate-lora-{a.sets}.json").write_text(json.dumps(lres))
        print(report(lres, [("auto", "head")]))


if __name__ == "__main__":
    main()
