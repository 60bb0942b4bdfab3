"""Choose the pretraining recipe of the small vision backbone by measurement.

Every candidate is pretrained on Fashion-MNIST classes 0-4 (train split) and scored by what
Tailor will do with it: a logistic-regression head (``adapters.heads.fit_logreg``, C=1) on
L2-normalized pooled features, fitted on 1, 4 and 16 examples per class of classes 5-9 and
scored on a VALIDATION slice of classes 5-9 taken from the TRAIN split
(``fashion_mnist.few_shot_pools``), mean over seeds. The test split is never read here.

    python -m benchmarks.vision.recipes                 # every candidate, appends to the table
    python -m benchmarks.vision.recipes ce simclr       # only these
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from adapters.heads import fit_logreg

from . import fashion_mnist
from .pretrain import Recipe, to_pixel_values, train

SHOTS = (1, 4, 16)
SEEDS = 5
OUT = Path(__file__).resolve().parents[1] / "results" / "vision_recipes.jsonl"

# Equal compute per candidate where it matters: one view per image for "ce", two otherwise.
CANDIDATES: dict[str, Recipe] = {
    # round 1: 300 two-view steps (600 one-view) of patch 7; all far below raw pixels
    "ce": Recipe(objective="ce", patch_size=7, steps=600, crop_scale=(0.6, 1.0), erase_prob=0.0),
    "simclr": Recipe(objective="simclr", patch_size=7, steps=300),
    "ce+simclr": Recipe(objective="ce+simclr", patch_size=7, steps=300),
    # round 2: 5x longer, and rebuilding the view from [CLS] to keep what pixels know
    "simclr-1500": Recipe(objective="simclr", patch_size=7, steps=1500),
    "simclr+recon-1500": Recipe(objective="simclr+recon", patch_size=7, steps=1500),
    "ce+simclr+recon-1500": Recipe(objective="ce+simclr+recon", patch_size=7, steps=1500),
}


@torch.inference_mode()
def features(vit, images: np.ndarray, image_size: int, pooling: str) -> np.ndarray:
    out = []
    for i in range(0, len(images), 500):
        h = vit(pixel_values=to_pixel_values(images[i:i + 500], image_size)).last_hidden_state
        pooled = h[:, 0] if pooling == "cls" else h[:, 1:].mean(1)  # [n, hidden]
        out.append(F.normalize(pooled, dim=1))
    return torch.cat(out).numpy()


def few_shot_scores(embed, pool: fashion_mnist.Split, val: fashion_mnist.Split,
                    shots=SHOTS, seeds=SEEDS) -> dict[int, tuple[float, float]]:
    """{shots: (mean accuracy, std)} of a logreg head on ``embed(images)`` features."""
    xv = embed(val.images)
    res = {}
    for k in shots:
        accs = []
        for seed in range(seeds):
            s = fashion_mnist.sample_shots(pool, k, seed)
            head = fit_logreg(embed(s.images), s.labels - 5, multi_label=False, c=1.0,
                              temperature=20.0, seed=seed)
            pred = head.logits(torch.from_numpy(xv)).argmax(1).numpy()
            accs.append(float((pred == val.labels - 5).mean()))
        res[k] = (float(np.mean(accs)), float(np.std(accs)))
    return res


def pixels(images: np.ndarray) -> np.ndarray:
    """Raw-pixel features for the linear probe baseline: standardized, L2-normalized."""
    x = images.reshape(len(images), -1).astype(np.float32) / 255.0
    x = (x - 0.2860) / 0.3530
    return x / np.linalg.norm(x, axis=1, keepdims=True).clip(min=1e-6)


def main(names: list[str]) -> None:
    torch.set_num_threads(int(os.environ.get("TAILOR_TORCH_THREADS", "2")))
    pool, val = fashion_mnist.few_shot_pools()
    OUT.parent.mkdir(exist_ok=True)
    done = set()
    if OUT.exists():
        done = {json.loads(line)["name"] for line in OUT.read_text().splitlines() if line.strip()}
    if "pixels" not in done and (not names or "pixels" in names):
        _write({"name": "pixels", "scores": few_shot_scores(pixels, pool, val)})
    for name in names or list(CANDIDATES):
        if name == "pixels" or name in done:
            continue
        r = CANDIDATES[name]
        t0 = time.perf_counter()
        model, log = train(r, log_every=100, verbose=False)
        wall = time.perf_counter() - t0
        for pooling in ("cls", "mean"):
            emb = lambda im: features(model.vit, im, r.image_size, pooling)  # noqa: E731
            _write({"name": name, "pooling": pooling, "recipe": r.as_dict(),
                    "wall_s": round(wall, 1), "cpu_s": log[-1]["cpu_s"],
                    "final_loss": {k: v for k, v in log[-1].items() if k.startswith("loss")},
                    "scores": few_shot_scores(emb, pool, val)})


def _write(row: dict) -> None:
    row["scores"] = {str(k): [round(m, 4), round(s, 4)] for k, (m, s) in row["scores"].items()}
    print(json.dumps({k: v for k, v in row.items() if k != "recipe"}), flush=True)
    with OUT.open("a") as f:
        f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
