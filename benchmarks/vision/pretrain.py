"""Pretrain the small vision backbone Tailor uses for image tests, demos and CI.

No pretrained image weights can be downloaded here, so ``make vision-backbone`` trains a
small vision transformer (transformers' ``ViTModel``) on Fashion-MNIST classes 0-4 of the
train split and saves it as a Hugging Face model folder that ``AutoModel`` and
``AutoImageProcessor`` load with ``local_files_only=True``. Classes 5-9 are never seen: they
are the few-shot task, as a new domain would be.

The recipe (``Recipe`` defaults) was chosen by measurement on a validation slice of classes
5-9 taken from the TRAIN split (``fashion_mnist.few_shot_pools``), see
``benchmarks/vision/recipes.py`` and ``benchmarks/results/vision_recipes.md``: supervised
cross-entropy on classes 0-4 plus a SimCLR contrastive loss between two augmented views of
each image, pooled on the [CLS] token as Tailor pools ViT models. The contrastive loss keeps
features that the five pretraining classes alone do not need (shoes and bags look like none
of them).

    python -m benchmarks.vision.pretrain --out build/vision-backbone   # cached: a second run does nothing

Seeded and run with a fixed number of steps (never a time budget), so a run is repeatable on
the same machine and thread count.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from . import fashion_mnist

RECIPE_FILE = "tailor_pretraining.json"  # the recipe and its log, saved beside the weights
# Fashion-MNIST pixel statistics (train split, all classes), as [0, 1] intensities.
MEAN, STD = 0.2860, 0.3530


@dataclass(frozen=True)
class Recipe:
    """Everything that decides the weights. Stored in the folder; a changed recipe retrains."""

    objective: str = "ce+simclr"  # "+"-joined losses: ce, simclr, recon
    image_size: int = 28
    patch_size: int = 4
    hidden_size: int = 128
    layers: int = 4
    heads: int = 4
    mlp_ratio: int = 2
    steps: int = 900
    batch_size: int = 128
    learning_rate: float = 2e-3
    weight_decay: float = 0.05
    warmup_steps: int = 60
    temperature: float = 0.2  # SimCLR (NT-Xent) temperature
    ssl_weight: float = 1.0  # weight of the contrastive loss next to cross-entropy
    recon_weight: float = 10.0  # weight of the pixel MSE of the view rebuilt from [CLS]
    crop_scale: tuple[float, float] = (0.35, 1.0)  # random resized crop, fraction of the area
    erase_prob: float = 0.25  # random erasing of one rectangle
    seed: int = 0

    def __post_init__(self) -> None:
        parts = self.objective.split("+")
        if not parts or not set(parts) <= {"ce", "simclr", "recon"} or len(set(parts)) != len(parts):
            raise ValueError(f"objective must join ce, simclr, recon with '+', got {self.objective!r}")
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size {self.image_size} is not a multiple of patch_size {self.patch_size}")
        if self.hidden_size % self.heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not a multiple of heads {self.heads}")

    def as_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


def vit_config(r: Recipe):
    from transformers import ViTConfig

    return ViTConfig(image_size=r.image_size, patch_size=r.patch_size, num_channels=3,
                     hidden_size=r.hidden_size, num_hidden_layers=r.layers,
                     num_attention_heads=r.heads, intermediate_size=r.mlp_ratio * r.hidden_size,
                     hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                     qkv_bias=True, layer_norm_eps=1e-6)


def image_processor(r: Recipe):
    """What ``AutoImageProcessor`` loads: resize to the model's size, scale to [0, 1],
    normalize with the Fashion-MNIST statistics (grayscale is replicated to RGB)."""
    from transformers import ViTImageProcessorPil

    return ViTImageProcessorPil(do_resize=True, size={"height": r.image_size, "width": r.image_size},
                                resample=2, do_rescale=True, rescale_factor=1 / 255,
                                do_normalize=True, image_mean=[MEAN] * 3, image_std=[STD] * 3)


def to_pixel_values(images: np.ndarray, image_size: int) -> torch.Tensor:
    """uint8 [n, 28, 28] -> normalized [n, 3, size, size], as the saved image processor does
    (resize is the identity at 28; bilinear otherwise, close to PIL's)."""
    x = torch.from_numpy(images).float().div_(255).unsqueeze(1)  # [n, 1, 28, 28]
    if image_size != x.shape[-1]:
        x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False,
                          antialias=True)
    return ((x - MEAN) / STD).expand(-1, 3, -1, -1)


def augment(x: torch.Tensor, r: Recipe, g: torch.Generator) -> torch.Tensor:
    """One random view of each image. x [n, 1, 28, 28] in [0, 1] -> [n, 1, size, size].

    Random resized crop + horizontal flip as one affine warp per image, then intensity
    jitter: SimCLR's recipe minus colour (grayscale data). Erasing is separate (``erase``)."""
    n = x.shape[0]
    u = lambda *s: torch.rand(*s, generator=g)  # noqa: E731
    area = r.crop_scale[0] + (r.crop_scale[1] - r.crop_scale[0]) * u(n)
    log_ratio = (u(n) * 2 - 1) * math.log(4 / 3)
    sx = torch.sqrt(area * torch.exp(log_ratio)).clamp(max=1.0)  # crop width / image width
    sy = torch.sqrt(area / torch.exp(log_ratio)).clamp(max=1.0)
    tx = (u(n) * 2 - 1) * (1 - sx)  # crop centre, in [-1, 1] grid units, inside the image
    ty = (u(n) * 2 - 1) * (1 - sy)
    flip = torch.where(u(n) < 0.5, -1.0, 1.0)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 0, 2] = sx * flip, tx
    theta[:, 1, 1], theta[:, 1, 2] = sy, ty
    grid = F.affine_grid(theta, [n, 1, r.image_size, r.image_size], align_corners=False)
    v = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    v = (v * (0.6 + 0.8 * u(n, 1, 1, 1))).clamp(0, 1)  # intensity; black background stays black
    return v


def erase(v: torch.Tensor, r: Recipe, g: torch.Generator) -> torch.Tensor:
    """Random erasing: with probability ``erase_prob`` one rectangle (2 to 40% of a side
    each way) goes black. v [n, 1, S, S]."""
    n, s = v.shape[0], v.shape[-1]
    u = lambda *sh: torch.rand(*sh, generator=g)  # noqa: E731
    h = (u(n) * 0.4 * s + 2).long()
    w = (u(n) * 0.4 * s + 2).long()
    y0 = (u(n) * (s - h)).long()
    x0 = (u(n) * (s - w)).long()
    ys, xs = torch.arange(s).view(1, s, 1), torch.arange(s).view(1, 1, s)
    box = ((ys >= y0.view(n, 1, 1)) & (ys < (y0 + h).view(n, 1, 1))
           & (xs >= x0.view(n, 1, 1)) & (xs < (x0 + w).view(n, 1, 1)))
    hit = (u(n) < r.erase_prob).view(n, 1, 1) & box
    return v.masked_fill(hit.unsqueeze(1), 0.0)


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """SimCLR's loss: each view must pick its partner among the 2n - 1 others. z [n, d]."""
    z = F.normalize(torch.cat([z1, z2]), dim=1)  # [2n, d]
    n = z1.shape[0]
    sim = z @ z.T / temperature
    sim.fill_diagonal_(float("-inf"))
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)])
    return F.cross_entropy(sim, target)


class Pretrainer(nn.Module):
    """The ViT plus the training-only heads (dropped when saving)."""

    def __init__(self, r: Recipe):
        super().__init__()
        from transformers import ViTModel

        self.vit = ViTModel(vit_config(r))  # with its pooler, so AutoModel loads it cleanly
        d = r.hidden_size
        self.classifier = nn.Linear(d, len(fashion_mnist.PRETRAIN_CLASSES))
        self.projector = nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.Linear(d, 64))
        self.decoder = nn.Sequential(nn.Linear(d, 2 * d), nn.GELU(), nn.Linear(2 * d, r.image_size ** 2))

    def features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """[CLS] of the last hidden state (after the final layer norm): Tailor's ViT pooling."""
        return self.vit(pixel_values=pixel_values).last_hidden_state[:, 0]  # [n, hidden]


def lr_at(step: int, r: Recipe) -> float:
    if step < r.warmup_steps:
        return r.learning_rate * (step + 1) / r.warmup_steps
    t = (step - r.warmup_steps) / max(1, r.steps - r.warmup_steps)
    return r.learning_rate * 0.5 * (1 + math.cos(math.pi * t))


def train(r: Recipe, log_every: int = 50, verbose: bool = True) -> tuple[Pretrainer, list[dict]]:
    torch.manual_seed(r.seed)
    g = torch.Generator().manual_seed(r.seed)
    data = fashion_mnist.load("train").only(fashion_mnist.PRETRAIN_CLASSES)
    images = torch.from_numpy(data.images).float().div_(255).unsqueeze(1)  # [n, 1, 28, 28]
    labels = torch.from_numpy(data.labels)
    model = Pretrainer(r)
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embeddings" not in n]
    rest = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embeddings" not in n)]
    optim = torch.optim.AdamW([{"params": decay, "weight_decay": r.weight_decay},
                               {"params": rest, "weight_decay": 0.0}], lr=r.learning_rate)
    model.train()
    log: list[dict] = []
    t0 = time.perf_counter()
    c0 = time.process_time()
    perm, pos = torch.randperm(len(labels), generator=g), 0
    for step in range(r.steps):
        if pos + r.batch_size > len(perm):
            perm, pos = torch.randperm(len(labels), generator=g), 0
        idx = perm[pos:pos + r.batch_size]
        pos += r.batch_size
        x, y = images[idx], labels[idx]
        for group in optim.param_groups:
            group["lr"] = lr_at(step, r)
        objectives = r.objective.split("+")
        views = [augment(x, r, g) for _ in range(2 if "simclr" in objectives else 1)]
        clean = torch.cat(views)  # [views * n, 1, S, S]
        if r.erase_prob:
            views = [erase(v, r, g) for v in views]
        pix = ((torch.cat(views) - MEAN) / STD).expand(-1, 3, -1, -1)
        feats = model.features(pix)  # [views * n, hidden]
        loss_ce = loss_ssl = loss_rec = torch.zeros(())
        if "ce" in objectives:
            loss_ce = F.cross_entropy(model.classifier(feats), y.repeat(len(views)))
        if "simclr" in objectives:
            z = model.projector(feats)
            loss_ssl = nt_xent(z[:len(idx)], z[len(idx):], r.temperature)
        if "recon" in objectives:  # rebuild the whole view (erased patch included) from [CLS]
            loss_rec = F.mse_loss(model.decoder(feats), clean.flatten(1))
        loss = loss_ce + r.ssl_weight * loss_ssl + r.recon_weight * loss_rec
        optim.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optim.step()
        if (step + 1) % log_every == 0 or step + 1 == r.steps:
            entry = {"step": step + 1, "loss_ce": round(loss_ce.item(), 4),
                     "loss_simclr": round(loss_ssl.item(), 4),
                     "loss_recon": round(loss_rec.item(), 5),
                     "wall_s": round(time.perf_counter() - t0, 1),
                     "cpu_s": round(time.process_time() - c0, 1)}
            log.append(entry)
            if verbose:
                print(json.dumps(entry), flush=True)
    model.eval()
    return model, log


def tie_channels(vit) -> None:
    """The data is grayscale, replicated to RGB: the patch embedding sees three equal
    channels, so replacing each channel's kernel by their mean changes nothing on grayscale
    input and makes a colour picture count as its channel average (a luminance)."""
    w = vit.embeddings.patch_embeddings.projection.weight  # [hidden, 3, p, p]
    with torch.no_grad():
        w.copy_(w.mean(dim=1, keepdim=True).expand_as(w))


def save(model: Pretrainer, r: Recipe, out: Path, log: list[dict], wall_s: float) -> None:
    """Atomically: write to a temp folder beside ``out``, then rename."""
    tmp = out.with_name(out.name + ".tmp")
    if tmp.exists():
        import shutil
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    tie_channels(model.vit)
    model.vit.config.architectures = ["ViTModel"]
    model.vit.save_pretrained(tmp, safe_serialization=True)
    image_processor(r).save_pretrained(tmp)
    (tmp / RECIPE_FILE).write_text(json.dumps(
        {"recipe": r.as_dict(), "data": "Fashion-MNIST train split, classes 0-4 "
         f"{[fashion_mnist.CLASSES[c] for c in fashion_mnist.PRETRAIN_CLASSES]}",
         "pooling": "[CLS] token of last_hidden_state, L2-normalized",
         "wall_seconds": round(wall_s, 1), "torch_threads": torch.get_num_threads(),
         "log": log}, indent=2) + "\n")
    if out.exists():
        import shutil
        shutil.rmtree(out)
    tmp.rename(out)


def is_current(out: Path, r: Recipe) -> bool:
    f = out / RECIPE_FILE
    if not (f.exists() and (out / "model.safetensors").exists() and (out / "config.json").exists()):
        return False
    return json.loads(f.read_text()).get("recipe") == r.as_dict()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path("build/vision-backbone"))
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads. 1 (default): the same numbers on every machine, and on a "
                    "shared machine far less CPU lost to OpenMP spinning than 2 (measured here under "
                    "load: 1.13 CPU s per 128 image views with 2 threads, 0.14 with 1)")
    ap.add_argument("--force", action="store_true", help="retrain even if the folder is current")
    ap.add_argument("--steps", type=int, default=Recipe.steps,
                    help=f"optimizer steps (default {Recipe.steps}); the CI backbone of the image "
                    "e2e tests (make test) takes 80: ~1 CPU-minute, a worse but real backbone")
    args = ap.parse_args(argv)
    r = Recipe(steps=args.steps)
    if not args.force and is_current(args.out, r):
        print(f"{args.out} is up to date (recipe unchanged); nothing to do")
        return 0
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    model, log = train(r)
    wall = time.perf_counter() - t0
    save(model, r, args.out, log, wall)
    print(f"saved {args.out} after {wall:.0f} s ({log[-1]['cpu_s']:.0f} CPU s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
