"""Choose the pretraining recipe of the small vision backbone by measurement.

Every candidate is pretrained on Fashion-MNIST classes 0-4 (train split) and scored by what
Tailor will do with it: a logistic-regression head (``adapters.training.fitting.fit_logreg``, C=1) on
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

from adapters.training.fitting import fit_logreg

from . import fashion_mnist
from .pretrain import Recipe, to_pixel_values, train

SHOTS = (1, 4, 16)
SEEDS = 5
OUT = Path(__file__).resolve().parents[1] / "results" / "vision_recipes.jsonl"
SAVED = Path("build/vision-recipes")  # candidates' weights, to re-score without retraining
# cls / mean of the patch tokens; "-centered": minus the mean feature of classes 0-4 (foldable
# into the final layer norm's bias); "-standardized": also divided by its std (into the gain)
POOLINGS = ("cls", "mean", "cls-centered", "cls-standardized", "mean-centered")

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
    # round 3: scale invariance (crops down to 35% of the area) throws away the silhouette's
    # extent, which tells shoes and bags apart in aligned pictures: milder crops
    "recon-mild-1500": Recipe(objective="recon", patch_size=7, steps=1500, crop_scale=(0.8, 1.0)),
    "ce+recon-mild-1500": Recipe(objective="ce+recon", patch_size=7, steps=1500, crop_scale=(0.8, 1.0)),
    "ce+simclr+recon-mild-1500": Recipe(objective="ce+simclr+recon", patch_size=7, steps=1500,
                                        crop_scale=(0.8, 1.0)),
    # round 4, around the best of round 3: finer patches at equal compute, 2x longer, lower lr
    "ce+simclr+recon-mild-p4-800": Recipe(objective="ce+simclr+recon", patch_size=4, steps=800,
                                          crop_scale=(0.8, 1.0), warmup_steps=40),
    "ce+simclr+recon-mild-3000": Recipe(objective="ce+simclr+recon", patch_size=7, steps=3000,
                                        crop_scale=(0.8, 1.0)),
    "ce+simclr+recon-mild-lr5e-4": Recipe(objective="ce+simclr+recon", patch_size=7, steps=1500,
                                          crop_scale=(0.8, 1.0), learning_rate=5e-4),
}


@torch.inference_mode()
def features(vit, images: np.ndarray, image_size: int, pooling: str,
             center: np.ndarray | None = None, scale: np.ndarray | None = None) -> np.ndarray:
    """Pooled features, optionally centered (and scaled per dimension) with statistics of
    the PRETRAINING classes, then L2-normalized."""
    out = []
    for i in range(0, len(images), 500):
        h = vit(pixel_values=to_pixel_values(images[i:i + 500], image_size)).last_hidden_state
        pooled = (h[:, 0] if pooling.startswith("cls") else h[:, 1:].mean(1)).numpy()  # [n, hidden]
        if center is not None:
            pooled = (pooled - center) / (scale if scale is not None else 1.0)
        out.append(pooled / np.linalg.norm(pooled, axis=1, keepdims=True).clip(min=1e-12))
    return np.concatenate(out)


def base_statistics(vit, image_size: int, pooling: str, n: int = 5000) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std of the pooled features over ``n`` train images of classes 0-4 (what a
    backbone may know without seeing classes 5-9)."""
    base = fashion_mnist.load("train").only(fashion_mnist.PRETRAIN_CLASSES)
    idx = np.random.default_rng(0).choice(len(base.labels), n, replace=False)
    with torch.inference_mode():
        raw = []
        for i in range(0, n, 500):
            h = vit(pixel_values=to_pixel_values(base.images[idx[i:i + 500]], image_size)).last_hidden_state
            raw.append((h[:, 0] if pooling.startswith("cls") else h[:, 1:].mean(1)).numpy())
    raw = np.concatenate(raw)
    return raw.mean(0), raw.std(0) + 1e-6


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
    from safetensors.torch import load_file, save_file

    from .pretrain import Pretrainer

    torch.set_num_threads(int(os.environ.get("TAILOR_TORCH_THREADS", "2")))
    pool, val = fashion_mnist.few_shot_pools()
    OUT.parent.mkdir(exist_ok=True)
    done: set[tuple[str, str | None]] = set()
    if OUT.exists():
        rows = [json.loads(line) for line in OUT.read_text().splitlines() if line.strip()]
        done = {(row["name"], row.get("pooling")) for row in rows}
    if ("pixels", None) not in done and (not names or "pixels" in names):
        _write({"name": "pixels", "scores": few_shot_scores(pixels, pool, val)})
    for name in names or list(CANDIDATES):
        todo = [p for p in POOLINGS if (name, p) not in done]
        if name == "pixels" or not todo:
            continue
        r = CANDIDATES[name]
        weights = SAVED / f"{name}.safetensors"
        row = {"name": name, "recipe": r.as_dict()}
        model = Pretrainer(r)
        if weights.exists():  # re-score a trained candidate with new poolings
            model.vit.load_state_dict(load_file(weights))
            row.update(next(({k: v for k, v in old.items() if k in ("wall_s", "cpu_s", "final_loss")}
                             for old in rows if old["name"] == name), {}))
        else:
            t0 = time.perf_counter()
            model, log = train(r, log_every=100, verbose=False)
            row.update({"wall_s": round(time.perf_counter() - t0, 1), "cpu_s": log[-1]["cpu_s"],
                        "final_loss": {k: v for k, v in log[-1].items() if k.startswith("loss")}})
            SAVED.mkdir(parents=True, exist_ok=True)
            save_file({k: v.contiguous() for k, v in model.vit.state_dict().items()}, weights)
        model.eval()
        for pooling in todo:
            center = scale = None
            if pooling.endswith(("-centered", "-standardized")):
                center, std = base_statistics(model.vit, r.image_size, pooling)
                scale = std if pooling.endswith("-standardized") else None
            emb = lambda im: features(model.vit, im, r.image_size, pooling, center, scale)  # noqa: E731
            _write({**row, "pooling": pooling, "scores": few_shot_scores(emb, pool, val)})


def _write(row: dict) -> None:
    row["scores"] = {str(k): [round(m, 4), round(s, 4)] for k, (m, s) in row["scores"].items()}
    print(json.dumps({k: v for k, v in row.items() if k != "recipe"}), flush=True)
    with OUT.open("a") as f:
        f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
