"""Images (issue 14): few-shot accuracy on classes Fashion-MNIST 5-9, throughput, ONNX parity.

    make vision-backbone && python -m benchmarks.bench_vision             # test split: the numbers
    python -m benchmarks.bench_vision --split val                         # where settings were chosen

The backbone (``build/vision-backbone``, pretrained on classes 0-4 only) is compared, on the
same 1, 4 and 16 examples per class of classes 5-9 (drawn from the train split's support
pool) and the same seeds, with:

- head:    logistic regression (C=1, ``adapters.training.fitting.fit_logreg``) on frozen features, as a
           head adapter fits it
- lora:    rank-8 LoRA on every attention q_proj/v_proj + its head, trained by the LoRA kind
           itself (``adapters.kinds.lora.train_lora``, the job a kind "lora" create runs)
- pixels:  the same logistic regression on raw pixels (standardized, L2-normalized); its C
           chosen on the validation slice, the best for the baseline
- scratch: the same ViT architecture, randomly initialized, trained with cross-entropy and
           the pretraining augmentations on the few examples only

``--split val`` scores on the validation slice of classes 5-9 cut from the TRAIN split (the
slice that chose the pretraining recipe, the pixel probe's C and the LoRA and scratch
settings); ``--split test`` (default) scores on the test split's classes 5-9, read only for
the final numbers. Writes benchmarks/results/vision[_val].md and benchmarks/vision[_val].png.
"""
from __future__ import annotations

import argparse
import base64
import io
import json
import os
import statistics
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from adapters.training.fitting import fit_logreg
from adapters.encoders.image import ImageEncoder
from adapters.modalities.image import decode_images
from adapters.encoders.lora import LoraWeights
from adapters.heads import LinearHead
from adapters.kinds.base import TrainRequest
from adapters.kinds.lora import LoraOptions, train_lora
from adapters.validation import LabeledData, Limits

from .common import machine, write_section
from .vision import fashion_mnist as fm
from .vision.pretrain import MEAN, STD, RECIPE_FILE, Recipe, augment

HERE = Path(__file__).resolve().parent
SHOTS = (1, 4, 16)
METHODS = ("head", "lora", "pixels", "scratch")
PIXEL_C = (0.1, 1.0, 10.0, 100.0)
# the kind's options as a client would post them (chosen on the validation slice)
LORA = {"recipe": "ce", "epochs": 20, "learning_rate": 2e-3}
SCRATCH_STEPS, SCRATCH_LR = 150, 1e-3


def rgb(images: np.ndarray) -> list[np.ndarray]:
    """Fashion-MNIST uint8 [n, 28, 28] -> what modalities.image.decode_images returns for them."""
    return [np.repeat(im[:, :, None], 3, axis=2) for im in images]


def pixel_features(images: np.ndarray) -> np.ndarray:
    x = images.reshape(len(images), -1).astype(np.float32) / 255.0
    x = (x - MEAN) / STD
    return x / np.linalg.norm(x, axis=1, keepdims=True).clip(min=1e-6)


def logreg_accuracy(x_tr, y_tr, x_ev, y_ev, c: float, seed: int) -> float:
    head = fit_logreg(x_tr, y_tr, multi_label=False, c=c, temperature=20.0, seed=seed)
    return float((head.logits(torch.from_numpy(x_ev)).argmax(1).numpy() == y_ev).mean())


def scratch_accuracy(shots: fm.Split, ev: fm.Split, recipe: Recipe, seed: int) -> float:
    """The backbone's architecture from random weights, trained on the few examples only."""
    from transformers import ViTModel

    from .vision.pretrain import vit_config

    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    vit = ViTModel(vit_config(recipe), add_pooling_layer=False)
    clf = nn.Linear(recipe.hidden_size, 5)
    params = list(vit.parameters()) + list(clf.parameters())
    optim = torch.optim.AdamW(params, lr=SCRATCH_LR, weight_decay=0.05)
    x = torch.from_numpy(shots.images).float().div(255).unsqueeze(1)
    y = torch.from_numpy(shots.labels - 5)
    vit.train()
    for step in range(SCRATCH_STEPS):
        v = augment(x, recipe, g)
        feats = vit(pixel_values=((v - MEAN) / STD).expand(-1, 3, -1, -1)).last_hidden_state[:, 0]
        loss = F.cross_entropy(clf(feats), y)
        optim.zero_grad()
        loss.backward()
        optim.step()
    vit.eval()
    with torch.inference_mode():
        correct = 0
        for i in range(0, len(ev.labels), 1000):
            xe = torch.from_numpy(ev.images[i:i + 1000]).float().div(255).unsqueeze(1)
            logits = clf(vit(pixel_values=((xe - MEAN) / STD).expand(-1, 3, -1, -1)).last_hidden_state[:, 0])
            correct += int((logits.argmax(1).numpy() == ev.labels[i:i + 1000] - 5).sum())
    return correct / len(ev.labels)


def few_shot(enc: ImageEncoder, recipe: Recipe, pool: fm.Split, ev: fm.Split, seeds: int,
             methods: tuple[str, ...], pixel_c: float, lora_shots: tuple[int, ...] = (16,)) -> dict:
    """{method: {shots: [accuracy per seed]}}; also returns the per-seed LoRA seconds."""
    x_ev = enc.embed(rgb(ev.images)).numpy()
    p_ev = pixel_features(ev.images)
    y_ev = ev.labels - 5
    acc: dict = {m: {k: [] for k in SHOTS} for m in methods}
    acc["pixels_by_c"] = {c: {k: [] for k in SHOTS} for c in PIXEL_C}
    acc["lora_seconds"] = {k: [] for k in SHOTS}
    for k in SHOTS:
        for seed in range(seeds):
            s = fm.sample_shots(pool, k, seed)
            y = s.labels - 5
            pv = enc.prepare(rgb(s.images))
            x = enc.embed_prepared(pv).numpy()
            if "head" in methods:
                acc["head"][k].append(logreg_accuracy(x, y, x_ev, y_ev, 1.0, seed))
            for c in PIXEL_C:
                acc["pixels_by_c"][c][k].append(
                    logreg_accuracy(pixel_features(s.images), y, p_ev, y_ev, c, seed))
            if "pixels" in methods:
                acc["pixels"][k].append(acc["pixels_by_c"][pixel_c][k][-1])
            if "scratch" in methods:
                acc["scratch"][k].append(scratch_accuracy(s, ev, recipe, seed))
            if "lora" in methods and k in lora_shots:
                t0 = time.perf_counter()
                lw, head = lora_adapter(enc, s.images, y, seed)
                acc["lora_seconds"][k].append(time.perf_counter() - t0)
                emb = enc.embed(rgb(ev.images), [lw] * len(y_ev))
                acc["lora"][k].append(float((head.logits(emb).argmax(1).numpy() == y_ev).mean()))
            print(json.dumps({"shots": k, "seed": seed, **{m: round(acc[m][k][-1], 4)
                                                            for m in methods if acc[m][k]}}), flush=True)
    return acc


def lora_adapter(enc: ImageEncoder, images: np.ndarray, y: np.ndarray,
                 seed: int) -> tuple[LoraWeights, LinearHead]:
    """What a kind "lora" job trains on these examples, loaded as the registry loads it."""
    labels = [str(c) for c in range(5)]
    request = TrainRequest(LabeledData(rgb(images), labels, y.astype(np.int64), False),
                           LoraOptions(**{**LORA, "seed": seed}), None, Limits(modality="image"))
    art = train_lora(enc, request)
    return LoraWeights.from_tensors(art.tensors, art.lora), LinearHead.from_tensors(art.tensors, False)


def throughput(enc: ImageEncoder, images: np.ndarray) -> dict:
    """images/s in process: from decoded arrays (processor + forward) and from base64 PNGs
    (decode + processor + forward), at batch 1 and 32. Median of 3 rounds of 256 images."""
    from PIL import Image

    arrays = rgb(images[:256])
    pngs = []
    for im in images[:256]:
        buf = io.BytesIO()
        Image.fromarray(im).save(buf, "PNG")
        pngs.append({"image": base64.b64encode(buf.getvalue()).decode()})
    out = {}
    for batch in (1, 32):
        for source in ("arrays", "base64 PNG"):
            def run():
                for i in range(0, 256, batch):
                    items = arrays[i:i + batch] if source == "arrays" else decode_images(pngs[i:i + batch])
                    enc.embed(items)
            run()
            times = []
            for _ in range(3):
                t = time.perf_counter()
                run()
                times.append(time.perf_counter() - t)
            out[(batch, source)] = 256 / statistics.median(times)
    return out


def _ms(v: list[float]) -> str:
    return f"{100 * np.mean(v):.1f} ± {100 * np.std(v):.1f}"


def report(split: str, enc: ImageEncoder, acc: dict, seeds: int, pixel_c: float,
           tput: dict | None, parity: dict | None, meta: dict) -> str:
    ev_name = ("test split, classes 5-9 (5,000 images)" if split == "test" else
               f"validation slice of the TRAIN split, classes 5-9 ({5 * fm.VALIDATION_PER_CLASS} images)")
    lines = [f"## Images (issue 14): few-shot on a frozen vision backbone, {split} split\n",
             f"Machine: {machine()}. Backbone `{enc.identity.name}` (sha256 {enc.identity.sha256[:12]}...), "
             f"a ViT pretrained on Fashion-MNIST classes 0-4 only by `make vision-backbone` "
             f"({meta.get('wall_seconds', '?')} s wall, {meta.get('torch_threads', '?')} threads; recipe in "
             f"`{RECIPE_FILE}`). Few-shot task: classes 5-9 (sandal, shirt, sneaker, bag, ankle boot), "
             f"examples drawn from the train split's support pool, scored on the {ev_name}. "
             f"Mean ± std over {seeds} seeds (accuracy, %; chance 20).\n",
             "| method | " + " | ".join(f"{k} per class" for k in SHOTS) + " |",
             "|---|" + "---|" * len(SHOTS)]
    names = {"head": "head adapter (logreg C=1 on frozen features)",
             "lora": f"LoRA kind, r8 q_proj/v_proj + head ({LORA['recipe']}, {LORA['epochs']} epochs, lr {LORA['learning_rate']:g})",
             "pixels": f"linear probe on raw pixels (logreg C={pixel_c:g})",
             "scratch": f"same ViT from scratch on the examples ({SCRATCH_STEPS} steps)"}
    for m in METHODS:
        if m in acc and any(acc[m][k] for k in SHOTS):
            lines.append(f"| {names[m]} | " + " | ".join(_ms(acc[m][k]) if acc[m][k] else "-"
                                                         for k in SHOTS) + " |")
    lines.append("\nPixel probe by C (the best on the validation slice is the baseline above):\n")
    lines.append("| C | " + " | ".join(f"{k}" for k in SHOTS) + " |")
    lines.append("|---|" + "---|" * len(SHOTS))
    for c in PIXEL_C:
        lines.append(f"| {c:g} | " + " | ".join(_ms(acc["pixels_by_c"][c][k]) for k in SHOTS) + " |")
    if acc.get("lora_seconds", {}).get(16):
        lines.append(f"\nLoRA training at 16 per class (80 images): median "
                     f"{statistics.median(acc['lora_seconds'][16]):.1f} s on this machine.\n")
    if tput:
        lines += ["\n### Throughput in process (28x28 images)\n",
                  f"torch threads {torch.get_num_threads()}, encoder workers 2 (as served); "
                  "median of 3 rounds of 256 images.\n",
                  "| batch | from decoded arrays (images/s) | from base64 PNG (images/s) |", "|---|---|---|"]
        for b in (1, 32):
            lines.append(f"| {b} | {tput[(b, 'arrays')]:.0f} | {tput[(b, 'base64 PNG')]:.0f} |")
    if parity:
        lines += ["\n### ONNX export parity (seed 0, 16 per class)\n",
                  "Rows: the 80 examples, 60 evaluation images and 4 random RGB pictures of odd sizes "
                  "(28x28, 40x64, 500x300, 9x9). Preprocessing: the README's numpy + Pillow code vs the "
                  "folder's image processor. Outputs: onnxruntime (CPU) on those pixels vs the served "
                  "PyTorch path (LoRA routed per row, not merged).\n",
                  "| adapter | rows | preprocess max abs diff | probabilities max abs diff | logits max abs diff | top-1 agreement |",
                  "|---|---|---|---|---|---|"]
        for name, r in parity.items():
            lines.append(f"| {name} | {r['rows']} | {r['preprocess_max_abs_diff']:.1e} | "
                         f"{r['max_abs_diff_probabilities']:.1e} | {r['max_abs_diff_logits']:.1e} | "
                         f"{r['top1_agreement']:.3f} |")
    return "\n".join(lines) + "\n"


def plot(acc: dict, path: Path, split: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for m in METHODS:
        ks = [k for k in SHOTS if acc.get(m, {}).get(k)]
        if ks:
            ax.errorbar(ks, [100 * np.mean(acc[m][k]) for k in ks],
                        yerr=[100 * np.std(acc[m][k]) for k in ks], marker="o", capsize=3, label=m)
    ax.set_xscale("log", base=2)
    ax.set_xticks(SHOTS, [str(k) for k in SHOTS])
    ax.set_xlabel("examples per class")
    ax.set_ylabel("accuracy, % (chance 20)")
    ax.set_title(f"Fashion-MNIST classes 5-9, {split} split")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--split", choices=("test", "val"), default="test")
    ap.add_argument("--backbone", type=Path, default=Path(os.environ.get(
        "TAILOR_VISION_BACKBONE", "build/vision-backbone")))
    ap.add_argument("--seeds", type=int, default=int(os.environ.get("TAILOR_BENCH_SEEDS", "5")))
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--pixel-c", type=float, default=10.0, help="C of the pixel probe (chosen on val)")
    ap.add_argument("--lora-shots", default="16", help="shot counts that also train LoRA")
    ap.add_argument("--skip-throughput", action="store_true")
    ap.add_argument("--max-eval", type=int, default=0, help="score on a seeded sample (smoke runs)")
    args = ap.parse_args(argv)
    torch.set_num_threads(int(os.environ.get("TAILOR_TORCH_THREADS", "2")))
    enc = ImageEncoder(args.backbone, workers=1)
    meta = json.loads((args.backbone / RECIPE_FILE).read_text())
    recipe = Recipe(**{k: tuple(v) if isinstance(v, list) else v for k, v in meta["recipe"].items()})
    pool, val = fm.few_shot_pools()
    ev = val if args.split == "val" else fm.load("test").only(fm.FEW_SHOT_CLASSES)
    if args.max_eval:
        keep = np.sort(np.random.default_rng(0).choice(len(ev.labels), args.max_eval, replace=False))
        ev = fm.Split(ev.images[keep], ev.labels[keep])
    methods = tuple(m for m in args.methods.split(",") if m)
    acc = few_shot(enc, recipe, pool, ev, args.seeds, methods, args.pixel_c,
                   tuple(int(k) for k in args.lora_shots.split(",") if k))
    tput = parity = None
    if args.split == "test" and not args.skip_throughput:
        torch.set_num_threads(1)
        tput = throughput(ImageEncoder(args.backbone, workers=2), ev.images)
    suffix = "" if args.split == "test" else "_val"
    path = write_section(f"vision{suffix}", report(args.split, enc, acc, args.seeds, args.pixel_c,
                                                  tput, parity, meta))
    plot(acc, HERE / f"vision{suffix}.png", args.split)
    print(path.read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
