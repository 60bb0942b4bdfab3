"""Fashion-MNIST from Debian's ``dataset-fashion-mnist`` package (deploy/install-datasets.sh).

Ten classes of 28x28 grayscale clothing pictures, 60,000 train + 10,000 test, in idx format.
Tailor uses classes 0-4 (tops, trousers, pullovers, dresses, coats) to pretrain the small
vision backbone and keeps classes 5-9 (sandals, shirts, sneakers, bags, ankle boots) unseen,
as the few-shot task a new domain would be.
"""
from __future__ import annotations

import gzip
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DATA_DIR = Path(os.environ.get("TAILOR_FASHION_MNIST_DIR", "/usr/share/datasets/fashion-mnist"))
CLASSES = ("t-shirt", "trouser", "pullover", "dress", "coat",
           "sandal", "shirt", "sneaker", "bag", "ankle-boot")
PRETRAIN_CLASSES = (0, 1, 2, 3, 4)
FEW_SHOT_CLASSES = (5, 6, 7, 8, 9)
# Images of the TRAIN split's classes 5-9 held out to choose recipes (pretraining, pooling,
# LoRA settings). The test split is used only for the final numbers.
VALIDATION_PER_CLASS = 400


@dataclass(frozen=True)
class Split:
    images: np.ndarray  # [n, 28, 28] uint8
    labels: np.ndarray  # [n] int64 in 0..9

    def only(self, classes: tuple[int, ...]) -> "Split":
        keep = np.isin(self.labels, classes)
        return Split(self.images[keep], self.labels[keep])


def _read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        data = f.read()
    magic, = struct.unpack(">I", data[:4])
    dtype_code, ndim = (magic >> 8) & 0xFF, magic & 0xFF
    if dtype_code != 0x08:  # unsigned byte
        raise ValueError(f"{path}: idx type 0x{dtype_code:02x}, expected unsigned bytes (0x08)")
    shape = struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim])
    arr = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    return arr.reshape(shape)


def load(split: str) -> Split:
    """``split``: "train" or "test"."""
    prefix = {"train": "train", "test": "t10k"}[split]
    img, lab = DATA_DIR / f"{prefix}-images-idx3-ubyte.gz", DATA_DIR / f"{prefix}-labels-idx1-ubyte.gz"
    if not img.exists():
        raise FileNotFoundError(f"{img} is missing: install the Debian package dataset-fashion-mnist "
                                "(deploy/install-datasets.sh) or set TAILOR_FASHION_MNIST_DIR")
    return Split(_read_idx(img), _read_idx(lab).astype(np.int64))


def few_shot_pools(seed: int = 0) -> tuple[Split, Split]:
    """The TRAIN split's classes 5-9, cut into (support pool, validation slice): the
    validation slice (``VALIDATION_PER_CLASS`` per class, fixed by ``seed``) chooses recipes;
    few-shot examples are drawn from the support pool only."""
    fs = load("train").only(FEW_SHOT_CLASSES)
    rng = np.random.default_rng(seed)
    val_idx = np.concatenate([rng.choice(np.flatnonzero(fs.labels == c), VALIDATION_PER_CLASS,
                                         replace=False) for c in FEW_SHOT_CLASSES])
    mask = np.zeros(len(fs.labels), bool)
    mask[val_idx] = True
    return Split(fs.images[~mask], fs.labels[~mask]), Split(fs.images[mask], fs.labels[mask])


def sample_shots(pool: Split, per_class: int, seed: int) -> Split:
    """``per_class`` examples of each class in the pool, seeded."""
    rng = np.random.default_rng(seed)
    idx = np.concatenate([rng.choice(np.flatnonzero(pool.labels == c), per_class, replace=False)
                          for c in np.unique(pool.labels)])
    return Split(pool.images[idx], pool.labels[idx])
