"""What to label next: among texts the client has, the ones whose labels would teach the
adapter most. Pure functions on the adapter's probabilities and embeddings.

Uncertainty alone picks near-duplicates (ten rephrasings of one confusing question); diversity
alone picks outliers the adapter already gets right. The selection here is greedy: each pick
maximises ``uncertainty x distance to the closest text already picked`` (uncertainty-weighted
k-center, cf. core-set active learning), so the k texts are both hard and unlike each other.
Uncertainty is the margin between the two most probable labels (single-label) or how close
each label's probability is to 0.5 (multi-label).
"""
from __future__ import annotations

import numpy as np


def uncertainty(probs: np.ndarray, multi_label: bool = False) -> np.ndarray:
    """[texts, labels] probabilities -> [texts] in [0, 1], 1 = the adapter cannot tell."""
    if multi_label:
        return 1.0 - np.abs(probs - 0.5).min(axis=1) * 2.0
    if probs.shape[1] < 2:
        return np.zeros(len(probs))
    top2 = np.sort(probs, axis=1)[:, -2:]
    return 1.0 - (top2[:, 1] - top2[:, 0])


def select_informative(probs: np.ndarray, emb: np.ndarray, k: int,
                       multi_label: bool = False) -> list[int]:
    """Indices of ``k`` distinct texts, most informative first. emb [texts, dim] unit vectors."""
    n = len(probs)
    k = min(k, n)
    if k <= 0:
        return []
    u = uncertainty(probs, multi_label) + 1e-6  # ties broken by distance, never all zero
    first = int(np.argmax(u))
    picked = [first]
    dist = 1.0 - emb @ emb[first]  # cosine distance to the closest pick so far
    dist[first] = -np.inf
    while len(picked) < k:
        score = u * np.maximum(dist, 0.0)
        score[picked] = -np.inf
        nxt = int(np.argmax(score))
        if not np.isfinite(score[nxt]) or score[nxt] <= 0:  # the rest duplicate a pick: by uncertainty
            rest = [i for i in np.argsort(-u, kind="stable") if i not in set(picked)]
            picked += [int(i) for i in rest[:k - len(picked)]]
            break
        picked.append(nxt)
        dist = np.minimum(dist, 1.0 - emb @ emb[nxt])
        dist[picked] = -np.inf
    return picked
