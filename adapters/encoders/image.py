"""The shared, frozen IMAGE encoder on PyTorch (implements ``Encoder`` and ``TorchEncoder``).

Any local Hugging Face image model folder (ViT, DeiT, DINOv2, ConvNeXt, ResNet, the vision
tower of CLIP or SigLIP, or a whole CLIP/SigLIP folder) loaded with ``AutoModel`` and
``AutoImageProcessor``; ``eval()``, ``requires_grad_(False)``, never mutated. It offers what
the text encoder offers (adapters/encoders/base.py), so heads, kinds, the store, the
registry, the batcher and export are shared, not copied:

- ``identity`` (folder name + sha256 of the weight files), ``dim``, ``modality = "image"``
- ``prepare(images)``: decoded RGB arrays (``adapters.modalities.image``: what validation hands
  on for an image deployment) -> normalized ``pixel_values`` [n, 3, H, W] by the folder's
  own image processor (computed once per row, like token ids for text); a row is one
  [3, H, W] slice and ``collate`` stacks rows (one input size: no padding)
- ``embed(images, loras=None)``: pooled, L2-normalized features [n, dim], batched, with
  optional per-row LoRA weights routed through ``encoders.lora`` (context-local)
- ``forward(collate(rows))`` / ``features(pixel_values)``: the differentiable forward (LoRA
  training runs it under ``lora.routed``; kinds/lora.py does not know which modality it tunes)
- ``lora_targets``: the attention Linear names LoRA adapts in this architecture
  (transformers 5 names them ``q_proj``/``v_proj`` in every vision transformer here;
  BERT-style text models keep ``query``/``value``)

How each architecture is pooled (``POOLING``, by ``config.model_type``):

- ``cls``: [CLS] token of ``last_hidden_state`` (after the final layer norm). ViT and DeiT:
  their ``pooler`` (dense + tanh) is not trained by ViT-/DeiT-ForImageClassification, so
  checkpoints fine-tuned for classification carry a random one; the classifier of both reads
  the normalized [CLS] token, and so does Tailor.
- ``pooler``: ``pooler_output``. DINOv2 (the normalized [CLS] token), ConvNeXt (layer norm
  of the global average), ResNet (global average, [n, C, 1, 1] flattened), CLIP vision tower
  (post-layernormed [CLS]), SigLIP vision tower (its attention-pooling head).
- ``image_features``: a whole CLIP or SigLIP folder: ``get_image_features`` (the image
  embedding in the joint image-text space, CLIP's projection included).
- anything else: ``pooler_output`` when the model returns one, else the mean of
  ``last_hidden_state`` over tokens ([n, seq, d]) or positions ([n, d, h, w]).
"""
from __future__ import annotations

import copy
import math
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from . import lora
from .base import BackboneIdentity, describe_torch, weights_sha256
from .lora import LoraWeights

POOLING: dict[str, str] = {
    "vit": "cls", "deit": "cls",
    "dinov2": "pooler", "dinov2_with_registers": "pooler", "convnext": "pooler",
    "convnextv2": "pooler", "resnet": "pooler", "clip_vision_model": "pooler",
    "siglip_vision_model": "pooler", "siglip2_vision_model": "pooler",
    "clip": "image_features", "siglip": "image_features", "siglip2": "image_features",
}
# Attention projections LoRA adapts, first match wins (transformers 5, then 4.x BERT/ViT names).
LORA_TARGET_CANDIDATES = (("q_proj", "v_proj"), ("query", "value"))


def pool(model: nn.Module, how: str, pixel_values: torch.Tensor) -> torch.Tensor:
    """One forward + the architecture's pooling. pixel_values [n, 3, H, W] -> [n, d]."""
    if how == "image_features":
        out = model.get_image_features(pixel_values=pixel_values)
        return out if isinstance(out, torch.Tensor) else out.pooler_output
    out = model(pixel_values=pixel_values)
    if how == "cls":
        return out.last_hidden_state[:, 0]  # [n, d]
    pooled = getattr(out, "pooler_output", None)
    if pooled is not None and how in ("pooler", "auto"):
        return pooled.flatten(1)  # ResNet: [n, C, 1, 1] -> [n, C]
    h = out.last_hidden_state
    return h.mean(dim=1) if h.ndim == 3 else h.flatten(2).mean(dim=2)  # [n, d]


class PooledEncoder(nn.Module):
    """pixel_values -> pooled, L2-normalized features: the graph that is exported and the
    forward that LoRA trains through (the wrapped model is shared, not copied)."""

    def __init__(self, model: nn.Module, how: str):
        super().__init__()
        self.model = model
        self.how = how

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return F.normalize(pool(self.model, self.how, pixel_values), p=2, dim=1)


def is_image_folder(model_dir: Path) -> bool:
    """An image model folder: it carries an image processor's config and no tokenizer.
    (A whole CLIP/SigLIP folder has both: it is served as an image backbone, its joint
    image-text space embedding the images.)"""
    return (model_dir / "preprocessor_config.json").exists() and (
        not (model_dir / "tokenizer_config.json").exists()
        or "image_processor_type" in (model_dir / "preprocessor_config.json").read_text())


class ImageEncoder:
    """A frozen Hugging Face image model with its processor and pooling."""

    modality = "image"
    graph_inputs: tuple[str, ...] = ("pixel_values",)
    max_length: int | None = None  # every image becomes one fixed-size input

    def __init__(self, model_dir: str | Path, *, name: str | None = None, device: str = "cpu",
                 max_batch_rows: int = 32, workers: int = 1, dtype: str = "float32"):
        from transformers import AutoConfig, AutoImageProcessor, AutoModel

        if dtype != "float32":  # the same keyword as TextEncoder (training workers pass it)
            raise ValueError(f"image backbones are served in float32 only, not {dtype}")
        self.dtype = dtype

        self.model_dir = Path(model_dir)
        if not (self.model_dir / "config.json").exists():
            raise FileNotFoundError(
                f"backbone folder {self.model_dir} has no config.json; point TAILOR_BACKBONE_PATH "
                "at a local Hugging Face model folder")
        if not (self.model_dir / "preprocessor_config.json").exists():
            raise FileNotFoundError(
                f"backbone folder {self.model_dir} has no preprocessor_config.json, so it is not "
                "an image model folder (an image backbone needs its image processor)")
        config = AutoConfig.from_pretrained(self.model_dir, local_files_only=True)
        self.model_type = config.model_type
        self.pooling = POOLING.get(self.model_type, "auto")
        self.processor = AutoImageProcessor.from_pretrained(self.model_dir, local_files_only=True)
        model = AutoModel.from_pretrained(self.model_dir, local_files_only=True)
        model.eval()
        model.requires_grad_(False)
        self.device = torch.device(device)
        self.model = model.to(self.device)
        self.encoder = PooledEncoder(self.model, self.pooling)
        self.max_batch_rows = max_batch_rows
        self.identity = BackboneIdentity(name or self.model_dir.name, weights_sha256(self.model_dir))
        self._local = threading.local()  # one processor copy per thread (see prepare)
        self.workers = max(1, workers)
        self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="image-encoder") \
            if self.workers > 1 else None
        self.lora_targets = self._find_lora_targets()
        with torch.inference_mode():  # warm-up, and the one reliable way to learn the dim
            probe = self.prepare([np.zeros((32, 32, 3), np.uint8)])
            self.dim = int(self.encoder(probe).shape[1])
        self.input_size = tuple(probe.shape[1:])  # (3, H, W) the model sees

    def _find_lora_targets(self) -> tuple[str, ...]:
        names = {n.rsplit(".", 1)[-1] for n, m in self.model.named_modules() if isinstance(m, nn.Linear)}
        for cand in LORA_TARGET_CANDIDATES:
            if set(cand) <= names:
                return cand
        return ()  # a CNN (ConvNeXt, ResNet): no attention, no LoRA kind

    # -- preprocessing ------------------------------------------------------------------
    # An image processor keeps its settings as attributes and merges call kwargs into them;
    # nothing promises that two threads may call one at once. A copy per thread keeps
    # preprocessing (the costly part for big photos: decode-side resizes) parallel and safe.
    def _processor(self):
        p = getattr(self._local, "processor", None)
        if p is None:
            p = self._local.processor = copy.deepcopy(self.processor)
        return p

    def pytorch(self) -> "ImageEncoder":
        return self

    def prepare(self, images: Sequence[np.ndarray], max_length: int | None = None) -> torch.Tensor:
        """RGB uint8 arrays [H, W, 3] (from ``modalities.image.decode_images``) -> the model's
        normalized input [n, 3, H', W'], float32 on the encoder's device. Row i is
        ``out[i]``. ``max_length`` is a text notion and is ignored."""
        if not len(images):
            return torch.empty(0, *getattr(self, "input_size", (3, 1, 1)))
        out = self._processor()(images=list(images), return_tensors="pt",
                                input_data_format="channels_last")
        return out["pixel_values"].to(self.device, torch.float32)

    def collate(self, rows: Sequence[torch.Tensor]) -> dict[str, torch.Tensor]:
        """Prepared rows ([3, H, W] each) -> {"pixel_values": [n, 3, H, W]}."""
        return {"pixel_values": _stack(rows)}

    # -- forward ------------------------------------------------------------------------
    def forward(self, batch: dict[str, torch.Tensor], model: nn.Module | None = None) -> torch.Tensor:
        """One differentiable forward + pooling + L2 norm: [n, dim]."""
        if model is None:
            return self.encoder(batch["pixel_values"])
        return F.normalize(pool(model, self.pooling, batch["pixel_values"]), p=2, dim=1)

    def features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Differentiable pooled + L2-normalized features [n, dim]; LoRA deltas apply to the
        rows the caller routed with ``lora.routed``."""
        return self.encoder(pixel_values)

    @torch.inference_mode()
    def embed_prepared(self, pixel_values: torch.Tensor | Sequence[torch.Tensor],
                       loras: Sequence[LoraWeights | None] | None = None) -> torch.Tensor:
        """One forward over prepared rows. Returns [n, dim] float32 on CPU. Rows are grouped
        by adapter and put back in order; the routing is local to this thread."""
        pixel_values = _stack(pixel_values)
        if not len(pixel_values):
            return torch.empty(0, self.dim)
        if loras is None or all(w is None for w in loras):
            return self.encoder(pixel_values).float().cpu()
        order, routing = lora.plan(loras)
        for w in {id(w): w for w in loras if w is not None}.values():
            lora.install_hooks(self.model, w.spec.targets)
        with lora.routed(routing):
            pooled = self.encoder(pixel_values[torch.tensor(order)]).float().cpu()
        out = torch.empty_like(pooled)
        out[torch.tensor(order)] = pooled
        return out

    def embed(self, images: Sequence[np.ndarray],
              loras: Sequence[LoraWeights | None] | None = None) -> torch.Tensor:
        """Embed any number of decoded images in chunks of at most ``max_batch_rows`` (all
        images share one input size after preprocessing, so no padding question arises).
        Chunks run on ``workers`` threads, each preparing its own rows."""
        images = list(images)
        if not images:
            return torch.empty(0, self.dim)
        per_chunk = min(self.max_batch_rows, math.ceil(len(images) / self.workers))
        chunks = [list(range(i, min(i + per_chunk, len(images))))
                  for i in range(0, len(images), per_chunk)]
        run = lambda idx: self.embed_prepared(  # noqa: E731
            self.prepare([images[i] for i in idx]), None if loras is None else [loras[i] for i in idx])
        results = self._pool.map(run, chunks) if self._pool and len(chunks) > 1 else map(run, chunks)
        out = torch.empty(len(images), self.dim)
        for idx, emb in zip(chunks, results):
            out[idx] = emb
        return out

    # -- copies for export -------------------------------------------------------------
    def fresh_model(self) -> nn.Module:
        """A deep copy of the served weights: exports and merges happen here only."""
        model = copy.deepcopy(self.model).to("cpu").float().eval()
        model.requires_grad_(False)
        if hasattr(model, "set_attn_implementation"):  # eager attention traces to plain ops
            try:
                model.set_attn_implementation("eager")
            except (ValueError, AttributeError):  # a CNN has no attention to switch
                pass
        return model

    def graph_module(self, model: nn.Module) -> nn.Module:
        """``model`` (a fresh copy) -> pixel_values in, pooled L2-normalized features out."""
        return PooledEncoder(model, self.pooling).eval()

    def write_preprocessor(self, folder: Path) -> list[str]:
        """preprocessing.json: the image processor's settings as data (resize, rescale,
        normalize, the input size, pooling), and preprocessor_config.json as the folder had
        it, so numpy + Pillow (or ``AutoImageProcessor``) reproduce ``prepare``."""
        import json

        folder = Path(folder)
        (folder / "preprocessing.json").write_text(json.dumps(self.describe_preprocessing(), indent=2))
        (folder / "preprocessor_config.json").write_text(
            (self.model_dir / "preprocessor_config.json").read_text())
        return ["preprocessing.json", "preprocessor_config.json"]

    def warm_up(self) -> None:
        """Nothing: the forward that learnt ``dim`` when the encoder opened was its warm-up."""

    def describe(self) -> str:
        return describe_torch(self.dtype, self.workers)

    def weights_checksum(self) -> str:
        """sha256 of the in-memory parameters: proves the served weights never change."""
        import hashlib

        h = hashlib.sha256()
        for n, p in sorted(self.model.state_dict().items()):
            h.update(n.encode())
            h.update(p.detach().cpu().contiguous().numpy().tobytes())
        return h.hexdigest()

    def describe_preprocessing(self) -> dict[str, Any]:
        """The processor's settings as data, for an export bundle's manifest and README."""
        p = self.processor
        keys = ("do_resize", "size", "resample", "do_center_crop", "crop_size", "crop_pct",
                "do_rescale", "rescale_factor", "do_normalize", "image_mean", "image_std",
                "do_convert_rgb")
        settings = p.to_dict()
        d: dict[str, Any] = {}
        for k in keys:
            v = settings.get(k)
            if v is None:
                continue
            if isinstance(v, dict):
                v = {kk: vv for kk, vv in v.items() if vv is not None}
            elif isinstance(v, (list, tuple)):
                v = [float(x) for x in v]
            elif k == "resample":
                v = int(v)  # PIL resampling filter: 0 nearest, 2 bilinear, 3 bicubic
            d[k] = v
        d["processor"] = type(p).__name__
        d["input_size"] = list(self.input_size)
        d["pooling"] = self.pooling
        return d


def _stack(rows: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
    if isinstance(rows, torch.Tensor):
        return rows
    rows = list(rows)
    return torch.stack(rows) if rows else torch.empty(0)
