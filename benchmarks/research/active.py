"""Simulated active learning (issue 11, `suggest`): start from the 8-shot adapter, then 4 rounds
of "suggest k = 8 texts from the candidates -> the user labels them -> next version", against
the same number of random picks. Candidates: the split's 1,000 unlabeled texts; the head of
every version is the examples + descriptions head (description prior), refitted on all labels.

    python -m benchmarks.research.active --sets dev --seeds 5
"""
from __future__ import annotations

import argparse

import numpy as np

from benchmarks.datasets import DEV, HELD_OUT

from . import recipes as R
from .data import split
from .evaluate import RESULTS, description_embeddings, save

ROUNDS, K = 4, 8


# -- selection strategies: (head, x_candidates, x_labeled, k, rng) -> indices into candidates --
def pick_random(head, xc, xl, k, rng):
    return rng.choice(len(xc), k, replace=False)


def _margin(head, xc):
    p = np.sort(head.proba(xc), axis=1)
    return p[:, -1] - p[:, -2]  # small = uncertain


def pick_margin(head, xc, xl, k, rng):
    return np.argsort(_margin(head, xc))[:k]


def pick_entropy(head, xc, xl, k, rng):
    p = head.proba(xc)
    return np.argsort((p * np.log(p.clip(1e-12))).sum(1))[:k]  # most negative sum = max entropy


def _kcenter(xc, xl, k, allowed=None):
    """Greedy k-center (core-set): each pick is the candidate farthest (cosine) from the
    labeled rows and the picks so far."""
    ref = xl
    dist = 1 - (xc @ ref.T).max(1)
    if allowed is not None:
        dist = np.where(allowed, dist, -np.inf)
    out = []
    for _ in range(k):
        i = int(np.argmax(dist))
        out.append(i)
        dist = np.minimum(dist, 1 - xc @ xc[i])
        dist[out] = -np.inf
    return np.array(out)


def pick_coreset(head, xc, xl, k, rng):
    return _kcenter(xc, xl, k)


def pick_margin_kmeans(head, xc, xl, k, rng, shortlist: int = 10, nearest: bool = False):
    """Uncertainty + diversity: the ``shortlist * k`` lowest-margin candidates are clustered
    into k groups (k-means, cosine on unit vectors); the most uncertain of each group is picked
    (``nearest``: the member nearest the group's centre, i.e. its most typical text)."""
    from sklearn.cluster import KMeans

    m = _margin(head, xc)
    top = np.argsort(m)[:shortlist * k]
    km = KMeans(k, n_init=3, random_state=int(rng.integers(1 << 30))).fit(xc[top])
    out = []
    for c in range(k):
        members = top[km.labels_ == c]
        if len(members):
            score = -(xc[members] @ km.cluster_centers_[c]) if nearest else m[members]
            out.append(int(members[np.argmin(score)]))
    rest = [i for i in top if i not in out]
    return np.array(out + rest[:k - len(out)])


def pick_margin_coreset(head, xc, xl, k, rng, shortlist: int = 10):
    """Core-set (k-center) restricted to the ``shortlist * k`` lowest-margin candidates."""
    allowed = np.zeros(len(xc), bool)
    allowed[np.argsort(_margin(head, xc))[:shortlist * k]] = True
    return _kcenter(xc, xl, k, allowed)


STRATEGIES = {"random": pick_random, "margin": pick_margin, "entropy": pick_entropy,
              "core-set": pick_coreset, "margin + k-means": pick_margin_kmeans,
              "margin + k-means (shortlist 5k)": lambda *a: pick_margin_kmeans(*a, shortlist=5),
              "margin + k-means (shortlist 20k)": lambda *a: pick_margin_kmeans(*a, shortlist=20),
              "margin + k-means, typical member": lambda *a: pick_margin_kmeans(*a, nearest=True),
              "margin + k-means (shortlist 20k), typical member":
                  lambda *a: pick_margin_kmeans(*a, shortlist=20, nearest=True),
              "margin + core-set": pick_margin_coreset}


def curve(s, strategy, prior: float = 5.0, rounds: int = ROUNDS, k: int = K) -> list[float]:
    d = description_embeddings(s.name)
    rng = np.random.default_rng(1000 + s.seed)
    x, y = s.x_train.copy(), s.y_train.copy()
    cand = np.arange(len(s.x_unl))
    true_unl = s.y_unl  # the simulated user's answers
    fit = (lambda x, y: R.description_prior(x, y, d, prior)) if prior else \
        (lambda x, y: R.probe(x, y, len(s.labels), seed=s.seed))
    head = fit(x, y)
    accs = [float((head.predict(s.x_test) == s.y_test).mean())]
    for _ in range(rounds):
        pick = cand[STRATEGIES[strategy](head, s.x_unl[cand], x, k, rng)]
        x = np.concatenate([x, s.x_unl[pick]])
        y = np.concatenate([y, true_unl[pick]])
        cand = np.setdiff1d(cand, pick)
        head = fit(x, y)
        accs.append(float((head.predict(s.x_test) == s.y_test).mean()))
    return accs


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sets", default="dev", choices=["dev", "held_out"])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--strategies", nargs="*", default=list(STRATEGIES))
    ap.add_argument("--prior", type=float, default=5.0, help="0 = the plain logistic head")
    a = ap.parse_args()
    names = DEV if a.sets == "dev" else HELD_OUT
    res: dict[str, dict[str, list[list[float]]]] = {}
    for name in names:
        res[name] = {st: [] for st in a.strategies}
        for seed in range(a.seeds):
            s = split(name, seed)
            for st in a.strategies:
                res[name][st].append(curve(s, st, prior=a.prior))
    save(f"active-{a.sets}-prior{a.prior:g}", res)
    print(f"\n### active learning ({a.sets}, {a.seeds} seeds, head prior {a.prior:g}): accuracy after each round "
          f"(round 0 = 8 per label; +{K} labels per round)\n")
    print("| data set | strategy | " + " | ".join(f"r{r}" for r in range(ROUNDS + 1))
          + " | ahead of random at every round |")
    print("|---" * (ROUNDS + 4) + "|")
    for name in names:
        rnd = np.mean(res[name]["random"], axis=0) if "random" in res[name] else None
        for st in a.strategies:
            m = np.mean(res[name][st], axis=0)
            ahead = "" if rnd is None or st == "random" else (
                "yes" if all(m[1:] > rnd[1:]) else "no")
            print(f"| {name} | {st} | " + " | ".join(f"{100 * v:.1f}" for v in m) + f" | {ahead} |")


if __name__ == "__main__":
    main()
