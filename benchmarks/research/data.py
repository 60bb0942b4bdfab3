"""Cached frozen embeddings of each data set's fixed pool, and the seeded splits every method
shares (issue 11 research). One pool per data set: a seed-0 sample of ``POOL`` rows; each seed
draws 8 examples per label, ``N_UNLABELED`` unlabeled rows and ``MAX_TEST`` test rows from it,
disjoint. Frozen-embedding methods then cost milliseconds, and every method sees the same
rows. The cache (benchmarks/.cache/research/) is keyed by the backbone's weights hash."""
from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from benchmarks.datasets import LOADERS, Dataset

POOL = 3000
N_UNLABELED = 1000
MAX_TEST = 1000
MAX_CHARS = 2000
CACHE = Path(__file__).resolve().parents[1] / ".cache" / "research"


@lru_cache(maxsize=1)
def backbone():
    import torch

    from adapters import TextEncoder

    torch.set_num_threads(int(os.environ.get("RESEARCH_THREADS", "1")))
    return TextEncoder(workers=int(os.environ.get("RESEARCH_WORKERS", "2")))


@lru_cache(maxsize=None)
def dataset(name: str) -> Dataset:
    return LOADERS[name]()


def pool_indices(name: str) -> list[int]:
    ds = dataset(name)
    tr, un, te = ds.split(0, 0, 0, None, pool=POOL)  # the whole pool, in pool order
    return sorted(un + te)


def embed_texts(texts: list[str]) -> np.ndarray:
    return backbone().embed(texts).numpy().astype(np.float32)


def pool_embeddings(name: str) -> dict[int, int]:
    """Returns {dataset row -> row of the cached matrix}; the matrix is ``matrix(name)``."""
    return {i: k for k, i in enumerate(pool_indices(name))}


@lru_cache(maxsize=None)
def matrix(name: str) -> np.ndarray:
    """[pool rows, 384] frozen, L2-normalised embeddings of the pool (texts cut to MAX_CHARS)."""
    bb = backbone()
    path = CACHE / f"{name}-{bb.identity.sha256[:12]}-{POOL}-{MAX_CHARS}.npy"
    if path.exists():
        return np.load(path)
    ds = dataset(name)
    x = embed_texts([ds.texts[i][:MAX_CHARS] for i in pool_indices(name)])
    CACHE.mkdir(parents=True, exist_ok=True)
    np.save(path, x)
    return x


@dataclass
class Split:
    """One seed's split. x_* are frozen embeddings; y_* label ids into ``labels``."""

    name: str
    seed: int
    labels: list[str]
    train_texts: list[str]
    y_train: np.ndarray
    x_train: np.ndarray
    unl_texts: list[str]
    x_unl: np.ndarray
    y_unl: np.ndarray  # true labels of the unlabeled rows: only the active-learning simulation reads them
    test_texts: list[str]
    y_test: np.ndarray
    x_test: np.ndarray


def split(name: str, seed: int, per_label: int = 8, n_unlabeled: int = N_UNLABELED,
          max_test: int = MAX_TEST) -> Split:
    ds = dataset(name)
    tr, un, te = ds.split(per_label, seed, n_unlabeled, max_test, pool=POOL)
    labels = sorted(set(ds.labels))
    lid = {lab: j for j, lab in enumerate(labels)}
    x, row = matrix(name), pool_embeddings(name)

    def rows(idx):
        return ([ds.texts[i][:MAX_CHARS] for i in idx], np.array([lid[ds.labels[i]] for i in idx]),
                x[[row[i] for i in idx]])

    trt, ytr, xtr = rows(tr)
    unt, yun, xun = rows(un)
    tet, yte, xte = rows(te)
    return Split(name, seed, labels, trt, ytr, xtr, unt, xun, yun, tet, yte, xte)


if __name__ == "__main__":  # fill the cache: python -m benchmarks.research.data [names...]
    import sys
    import time

    for n in sys.argv[1:] or list(LOADERS):
        t = time.perf_counter()
        print(n, matrix(n).shape, f"{time.perf_counter() - t:.0f} s", flush=True)
