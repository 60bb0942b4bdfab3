"""Image adapters to ONNX (prototype of issue 14, phase 1).

The exported graph is the image classifier as served:

    pixel_values [batch, 3, H, W] -> backbone -> pooling -> L2 norm -> head -> probabilities, logits

with a LoRA adapter's update merged into a FRESH copy of the backbone (the served one is
never touched). Preprocessing (resize, crop, scale, normalize) stays outside the graph: it
is described as data (``ImageEncoder.describe_preprocessing``) in the bundle's manifest, and
``preprocess`` below is the numpy + Pillow code the bundle's README prints (its source is
copied into the README, so the README runs the code that the parity check ran). Parity is
checked twice: the README preprocessing against the backbone folder's own image processor,
and onnxruntime against PyTorch on the same pixels.
"""
from __future__ import annotations

import copy
import inspect
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from adapters.heads import LinearHead
from adapters.encoders.image import ImageEncoder, PooledEncoder
from adapters.encoders.lora import LoraWeights

from .graph import export_onnx
from .onnx_config import OnnxConfig

_BATCH = {0: "batch"}
IMAGE_CLASSIFIER = OnnxConfig(inputs=("pixel_values",), outputs=("probabilities", "logits"),
                              dynamic_axes={"pixel_values": _BATCH, "probabilities": _BATCH,
                                            "logits": _BATCH})
# Settings ``preprocess`` implements; a processor with any other (ConvNeXt's crop_pct,
# padding, longest_edge ...) is refused rather than described wrongly.
DESCRIBED = {"do_resize", "size", "resample", "do_center_crop", "crop_size", "do_rescale",
             "rescale_factor", "do_normalize", "image_mean", "image_std", "do_convert_rgb",
             "processor", "input_size", "pooling"}


class ImageClassifier(nn.Module):
    """PooledEncoder + a LinearHead -> (probabilities, logits), both [batch, labels]."""

    def __init__(self, encoder: PooledEncoder, head: LinearHead):
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(head.dim, head.num_labels)
        with torch.no_grad():
            self.head.weight.copy_(head.weight)
            self.head.bias.copy_(head.bias)
        self.activation = head.activation

    def forward(self, pixel_values: torch.Tensor):
        logits = self.head(self.encoder(pixel_values))  # [batch, labels]
        probs = torch.softmax(logits, -1) if self.activation == "softmax" else torch.sigmoid(logits)
        return probs, logits


def fresh_classifier(encoder: ImageEncoder, head: LinearHead,
                     lora: LoraWeights | None = None) -> ImageClassifier:
    """A deep copy of the served model, LoRA merged (W += scaling * B @ A), eager attention."""
    model = copy.deepcopy(encoder.model).to("cpu").float().eval()
    model.requires_grad_(False)
    # forward hooks (the LoRA routing) are copied too; with no routing set they do nothing
    if hasattr(model, "set_attn_implementation"):
        model.set_attn_implementation("eager")
    if lora is not None:
        modules = dict(model.named_modules())
        with torch.no_grad():
            for name in lora.a:
                modules[name].weight += lora.delta_weight(name)
    return ImageClassifier(PooledEncoder(model, encoder.pooling), head).eval()


# -- preprocessing as data + the README's numpy/Pillow code ---------------------------------
def check_describable(spec: dict[str, Any]) -> None:
    extra = sorted(set(spec) - DESCRIBED)
    size = spec.get("size") or {}
    if extra or not (set(size) <= {"height", "width"} or set(size) == {"shortest_edge"}):
        raise ValueError(f"the preprocessing of {spec.get('processor')} ({extra or size}) is not "
                         "described for bundles yet; export needs resize to height x width or "
                         "shortest edge, center crop, rescale and normalize")


def preprocess(image: np.ndarray, spec: dict) -> np.ndarray:
    """RGB uint8 [H, W, 3] -> float32 [3, H', W'], as the model's image processor does.
    Needs only numpy and Pillow. ``spec``: the bundle manifest's "preprocessing"."""
    from PIL import Image

    img = Image.fromarray(image)
    if spec.get("do_resize"):
        size = spec["size"]
        if "shortest_edge" in size:  # keep the aspect ratio, shorter side = shortest_edge
            w, h = img.size
            s = size["shortest_edge"]
            new = (s, int(s * h / w)) if w <= h else (int(s * w / h), s)  # (width, height)
        else:
            new = (size["width"], size["height"])
        img = img.resize(new, resample=spec.get("resample", 2))
    x = np.asarray(img)  # [H, W, 3] uint8
    if spec.get("do_center_crop"):
        ch, cw = spec["crop_size"]["height"], spec["crop_size"]["width"]
        top, left = (x.shape[0] - ch) // 2, (x.shape[1] - cw) // 2
        if top < 0 or left < 0:
            raise ValueError(f"image {x.shape[1]}x{x.shape[0]} is smaller than the crop {cw}x{ch}")
        x = x[top:top + ch, left:left + cw]
    x = x.astype(np.float32)
    if spec.get("do_rescale"):
        x = (x.astype(np.float64) * spec["rescale_factor"]).astype(np.float32)
    if spec.get("do_normalize"):
        mean = np.array(spec["image_mean"], dtype=np.float32)
        std = np.array(spec["image_std"], dtype=np.float32)
        x = (x - mean) / std
    return np.ascontiguousarray(x.transpose(2, 0, 1))  # [3, H', W']


def readme_section(spec: dict, labels: Sequence[str]) -> str:
    """The bundle README's image part: the preprocessing as data and as runnable code."""
    return (
        "## Preprocessing (numpy + Pillow)\n\n"
        "Decode the picture to RGB (apply its EXIF orientation; 16-bit to 8-bit by /257; "
        "transparent pixels on white), then:\n\n```python\nimport json\n\nimport numpy as np\n\n"
        f'SPEC = json.loads("""{json.dumps(spec, indent=2)}""")  # manifest.json "preprocessing"\n\n'
        f"{inspect.getsource(preprocess)}\n"
        "# pixel_values = np.stack([preprocess(np.asarray(img.convert('RGB')), SPEC)])\n"
        "# probabilities, logits = onnxruntime.InferenceSession('model.onnx').run(\n"
        "#     None, {'pixel_values': pixel_values})\n"
        f"# labels, in output order: {list(labels)}\n```\n")


# -- export + parity ------------------------------------------------------------------------
@dataclass
class ImageParityReport:
    rows: int = 0
    preprocess_max_abs_diff: float = 0.0  # README numpy/Pillow vs the HF image processor
    max_abs_diff: dict[str, float] = field(default_factory=dict)  # onnxruntime vs PyTorch
    top1_agreement: float = 1.0
    seconds: dict[str, float] = field(default_factory=dict)


class ImageParityError(ValueError):
    def __init__(self, message: str, report: ImageParityReport):
        super().__init__(message)
        self.report = report


def export_image_classifier(encoder: ImageEncoder, head: LinearHead, path: Path,
                            images: Sequence[np.ndarray], lora: LoraWeights | None = None,
                            config: OnnxConfig = IMAGE_CLASSIFIER) -> ImageParityReport:
    """Export, then check parity on ``images`` (decoded RGB arrays; include the adapter's
    own examples and odd sizes). Raises ``ImageParityError`` beyond ``config.atol``."""
    import time

    import onnxruntime as ort

    spec = encoder.describe_preprocessing()
    check_describable(spec)
    module = fresh_classifier(encoder, head, lora)
    t0 = time.perf_counter()
    export_onnx(module, config, Path(path), (encoder.prepare(images[:2]),))
    t1 = time.perf_counter()
    rep = ImageParityReport(rows=len(images), seconds={"export": round(t1 - t0, 3)})
    # 1. the README's preprocessing against the folder's own processor
    hf = encoder.prepare(images).numpy()
    ours = np.stack([preprocess(im, spec) for im in images])
    rep.preprocess_max_abs_diff = float(np.abs(hf - ours).max())
    # 2. onnxruntime (on the README's pixels) against the SERVED PyTorch path (routing, not merge)
    opts = ort.SessionOptions()
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    probs_o, logits_o = sess.run(list(config.outputs), {"pixel_values": ours})
    emb = encoder.embed_prepared(torch.from_numpy(hf), None if lora is None else [lora] * len(images))
    logits_t = head.logits(emb).numpy()
    probs_t = head.probabilities(emb).numpy()
    rep.max_abs_diff = {"probabilities": float(np.abs(probs_o - probs_t).max()),
                        "logits": float(np.abs(logits_o - logits_t).max())}
    rep.top1_agreement = float((probs_o.argmax(1) == probs_t.argmax(1)).mean())
    rep.seconds["parity"] = round(time.perf_counter() - t1, 3)
    if rep.preprocess_max_abs_diff > 1e-5 or rep.max_abs_diff["probabilities"] > config.atol:
        raise ImageParityError(f"exported image classifier disagrees with PyTorch: {rep}", rep)
    return rep
