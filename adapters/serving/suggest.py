"""What to label next: among texts the client has, the ones whose labels would teach the
adapter most. Pure functions on the adapter's probabilities and embeddings.

Uncertainty alone picks near-duplicates (ten rephrasings of one confusing question);
diversity alone picks outliers the adapter already gets right. Chosen by measurement
(benchmarks/research/quality.md, section 6; 4 rounds of 8 picks, 5 seeds): "margin +
k-means": the ``shortlist x k`` most uncertain texts are clustered into k groups (k-means on
the unit embeddings) and the most uncertain text of each group is suggested. Against random
picks it was ahead at every round on 4 of 6 data sets (TREC, Reuters R8, SMS spam, BBC
News), 0.3 behind at one round on Rotten Tomatoes and flat on 20 Newsgroups; pure
uncertainty, entropy and core-set (k-center) variants were behind it.

Uncertainty is 1 - (top-1 - top-2 probability) for single-label adapters, and how close the
least certain label is to 0.5 for multi-label ones.
"""
from __future__ import annotations

import numpy as np

SHORTLIST = 10  # candidates clustered per suggestion (5 and 20 measured no better)


def uncertainty(probs: np.ndarray, multi_label: bool = False) -> np.ndarray:
    """[texts, labels] probabilities -> [texts] in [0, 1], 1 = the adapter cannot tell."""
    if multi_label:
        return 1.0 - np.abs(probs - 0.5).min(axis=1) * 2.0
    if probs.shape[1] < 2:
        return np.zeros(len(probs))
    top2 = np.sort(probs, axis=1)[:, -2:]
    return 1.0 - (top2[:, 1] - top2[:, 0])


def select_informative(probs: np.ndarray, emb: np.ndarray, k: int, multi_label: bool = False,
                       shortlist: int = SHORTLIST, seed: int = 0) -> list[int]:
    """Indices of ``k`` distinct texts (at most all of them), most uncertain first.
    probs [texts, labels], emb [texts, dim] unit vectors."""
    from sklearn.cluster import KMeans

    u = uncertainty(probs, multi_label)
    k = min(k, len(u))
    if k <= 0:
        return []
    top = np.argsort(-u, kind="stable")[:shortlist * k]  # the most uncertain candidates
    if len(top) <= k:
        return [int(i) for i in top]
    groups = KMeans(k, n_init=3, random_state=seed).fit(emb[top]).labels_
    picked = [int(top[groups == g][np.argmax(u[top[groups == g]])]) for g in range(k)
              if (groups == g).any()]
    picked += [int(i) for i in top if int(i) not in set(picked)][:k - len(picked)]
    return sorted(picked, key=lambda i: -u[i])
