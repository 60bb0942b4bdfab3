"""Image classifier to ONNX: the README's numpy + Pillow preprocessing equals the folder's
image processor, and onnxruntime equals the served PyTorch path (LoRA merged into a copy)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import transformers as T
from adapters.heads import LinearHead
from adapters.encoders.image import ImageEncoder
from adapters.encoders.lora import LoraSpec, LoraWeights
from export.image_export import (check_describable, export_image_classifier, preprocess,
                                 readme_section)

VIT_KW = dict(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2,
              num_attention_heads=2, intermediate_size=64)
PROCESSORS = {
    "resize": lambda: T.ViTImageProcessorPil(size={"height": 32, "width": 32}, image_mean=[0.3] * 3,
                                             image_std=[0.35] * 3),
    "shortest-edge+crop": lambda: T.CLIPImageProcessorPil(size={"shortest_edge": 36},
                                                          crop_size={"height": 32, "width": 32}),
}


def images(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    sizes = [(40, 48), (32, 32), (100, 37), (37, 100), (33, 35), (500, 300)]
    return [rng.integers(0, 255, (*sizes[i % len(sizes)], 3), np.uint8) for i in range(n)]


@pytest.fixture(scope="module", params=list(PROCESSORS))
def encoder(request, tmp_path_factory):
    d = tmp_path_factory.mktemp(request.param)
    torch.manual_seed(0)
    T.AutoModel.from_config(T.ViTConfig(**VIT_KW)).save_pretrained(d)
    PROCESSORS[request.param]().save_pretrained(d)
    return ImageEncoder(d)


def _head(dim: int, labels: int = 3) -> LinearHead:
    g = torch.Generator().manual_seed(0)
    return LinearHead(torch.randn(labels, dim, generator=g) * 5, torch.randn(labels, generator=g), "softmax")


@pytest.mark.parametrize("with_lora", [False, True], ids=["head", "lora"])
def test_onnx_equals_pytorch(encoder, with_lora, tmp_path):
    lora = (LoraWeights.init(encoder.model, LoraSpec(rank=8, alpha=16, targets=encoder.lora_targets), seed=1, identity=False)
            if with_lora else None)
    before = encoder.weights_checksum()
    rep = export_image_classifier(encoder, _head(encoder.dim), tmp_path / "model.onnx", images(12), lora)
    assert rep.preprocess_max_abs_diff <= 1e-6
    assert rep.max_abs_diff["probabilities"] <= 1e-4 and rep.top1_agreement == 1.0
    assert encoder.weights_checksum() == before  # merged into a copy only
    if with_lora:  # the merge mattered: without it the graph would answer differently
        bare = encoder.embed(images(12))
        tuned = encoder.embed(images(12), [lora] * 12)
        assert (bare - tuned).abs().max() > 1e-3


def test_readme_code_is_the_checked_code(encoder):
    spec = encoder.describe_preprocessing()
    text = readme_section(spec, ["a", "b"])
    assert "def preprocess(image: np.ndarray, spec: dict)" in text and '"image_mean"' in text
    scope: dict = {}
    exec(text.split("```python\n", 1)[1].split("```", 1)[0], scope)  # the README runs as printed
    im = images(1, seed=5)[0]
    assert np.array_equal(scope["preprocess"](im, scope["SPEC"]), preprocess(im, spec))


def test_processors_it_cannot_describe_are_refused():
    with pytest.raises(ValueError, match="not described"):
        check_describable({"processor": "ConvNextImageProcessorPil", "crop_pct": 0.875,
                           "size": {"shortest_edge": 32}})
