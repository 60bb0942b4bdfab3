"""Image adapters in ONNX bundles: what export needs to know about the image modality.

The exported graph is the image classifier as served:

    pixel_values [batch, 3, H, W] -> backbone -> pooling -> L2 norm -> head -> probabilities, logits

built by export/bundle.py like any other (the kind merges its LoRA into a FRESH copy).
Preprocessing (resize, crop, scale, normalize) stays outside the graph: it is described as
data (``ImageEncoder.describe_preprocessing``) in the bundle's manifest ("preprocessing"),
and ``preprocess`` below is the numpy + Pillow code the bundle's README prints (its source
is copied into the README, so the README runs the code that the parity check ran). Parity
is checked twice: the README preprocessing against the backbone folder's own image
processor (``preprocessing_parity``), and onnxruntime against PyTorch on the same pixels
(export/parity.py, as for text).
"""
from __future__ import annotations

import inspect
from typing import Any, Sequence

import numpy as np
import torch

from adapters.encoders import TorchEncoder
from adapters.modalities.image import ImageLimits, decode_images

from .onnx_config import OnnxConfig
from .parity import Case, feed_of

_BATCH = {0: "batch"}
IMAGE_CLASSIFIER = OnnxConfig(inputs=("pixel_values",), outputs=("probabilities", "logits"),
                              dynamic_axes={"pixel_values": _BATCH, "probabilities": _BATCH,
                                            "logits": _BATCH})
# Settings ``preprocess`` implements; a processor with any other (ConvNeXt's crop_pct,
# padding, longest_edge ...) is refused rather than described wrongly.
DESCRIBED = {"do_resize", "size", "resample", "do_center_crop", "crop_size", "do_rescale",
             "rescale_factor", "do_normalize", "image_mean", "image_std", "do_convert_rgb",
             "processor", "input_size", "pooling"}


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


# -- what bundle.py asks of a modality -------------------------------------------------------
# Odd sizes and colours: a resize or crop that differs between the README code and the
# processor shows on them first.
_ODD_SIZES = ((28, 28), (64, 40), (300, 500), (9, 9))


def sample_images(seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (h, w, 3), np.uint8) for h, w in _ODD_SIZES] + [
        np.full((32, 32, 3), v, np.uint8) for v in (0, 255)]


def example_inputs(encoder: TorchEncoder) -> tuple[torch.Tensor, ...]:
    batch = encoder.collate(encoder.prepare(sample_images()[:2]))
    return tuple(batch[name].cpu() for name in encoder.graph_inputs)


def own_images(examples: Sequence[Any]) -> list[np.ndarray]:
    """The adapter's stored examples ({"image": base64, "label"}), decoded as they were when
    it was created (they passed the limits then)."""
    items = [e for e in examples if isinstance(e, dict) and isinstance(e.get("image"), str)]
    lim = ImageLimits(max_images=max(1, len(items)), max_request_pixels=2**62)
    return decode_images(items, lim, where="examples") if items else []


def parity_cases(encoder: TorchEncoder, examples: Sequence[Any] = (),
                 unlabeled: Sequence[Any] = ()) -> list[Case]:
    """The adapter's own images, odd sizes and a batch of one (image adapters store no
    unlabeled inputs: ``unlabeled`` is accepted for the common signature and unused)."""
    own = own_images(examples)
    cases: list[Case] = []
    for i in range(0, len(own), 16):
        cases.append((f"examples[{i}:{i + 16}]", feed_of(encoder, encoder.prepare(own[i:i + 16]))))
    sample = sample_images()
    cases.append(("sample_odd_sizes", feed_of(encoder, encoder.prepare(sample))))
    cases.append(("batch_1", feed_of(encoder, encoder.prepare(sample[:1]))))
    return cases


def preprocessing_parity(encoder: TorchEncoder, examples: Sequence[Any] = ()) -> dict[str, Any]:
    """The README's numpy + Pillow preprocessing against the folder's image processor."""
    spec = encoder.describe_preprocessing()
    check_describable(spec)
    images = own_images(examples)[:64] + sample_images()
    hf = encoder.prepare(images).numpy()
    ours = np.stack([preprocess(im, spec) for im in images])
    diff = float(np.abs(hf - ours).max())
    if diff > 1e-4:
        raise ValueError(f"the bundle README's preprocessing differs from {spec['processor']} by "
                         f"{diff:.3g}; this processor cannot be exported yet")
    return {"rows": len(images), "max_abs_diff": diff}


def manifest_extra(encoder: TorchEncoder, examples: Sequence[Any] = ()) -> dict[str, Any]:
    return {"modality": "image", "preprocessing": encoder.describe_preprocessing(),
            "preprocessing_parity": preprocessing_parity(encoder, examples)}


def readme(manifest: dict[str, Any]) -> str:
    a = manifest["adapter"]
    return f"""# {a['ref']}: ONNX image classifier exported by Tailor

Backbone {manifest['backbone']['name']} (sha256 {manifest['backbone']['sha256'][:12]}...) +
{manifest['preprocessing']['pooling']} pooling + L2 norm + the adapter's head, in one graph.
Opset {manifest['opset']}, quantization: {manifest['quantization']['mode']}. Parity with
PyTorch at export time is in `manifest.json` (`parity`, and `preprocessing_parity` for the
code below against the backbone's own image processor).

Input: `pixel_values` (float32, [batch, {', '.join(map(str, manifest['preprocessing']['input_size']))}]).
Outputs: `probabilities` and `logits` ([batch, {len(manifest['labels'])}], label order in
`labels.json`). Needs only `pip install onnxruntime numpy pillow` (no torch):

```python
import json

import numpy as np
import onnxruntime as ort
from PIL import Image, ImageOps

LABELS = json.load(open("labels.json"))
SPEC = json.load(open("manifest.json"))["preprocessing"]
sess = ort.InferenceSession("model.onnx", providers=["CPUExecutionProvider"])

{inspect.getsource(preprocess)}

def load(path):  # as the service decodes: EXIF orientation applied, RGB
    return np.asarray(ImageOps.exif_transpose(Image.open(path)).convert("RGB"))

paths = ["first.png", "second.jpg"]
pixel_values = np.stack([preprocess(load(p), SPEC) for p in paths])
probs, logits = sess.run(["probabilities", "logits"], {{"pixel_values": pixel_values}})
for path, row in zip(paths, probs):
    print(path, "->", LABELS[int(np.argmax(row))], dict(zip(LABELS, row.round(4))))
```
"""
