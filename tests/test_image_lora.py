"""LoRA training on the image encoder: it learns through the routed forward, moves only its
own rows, and never changes the shared weights."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import transformers as T
from adapters.encoders.image import ImageEncoder
from adapters.image_lora import ImageLoraOptions, train_image_lora


@pytest.fixture(scope="module")
def encoder(tmp_path_factory):
    d = tmp_path_factory.mktemp("vit")
    torch.manual_seed(0)
    T.AutoModel.from_config(T.ViTConfig(image_size=16, patch_size=4, hidden_size=32, num_hidden_layers=2,
                                        num_attention_heads=2, intermediate_size=64)).save_pretrained(d)
    T.ViTImageProcessorPil(size={"height": 16, "width": 16}).save_pretrained(d)
    return ImageEncoder(d)


@pytest.mark.parametrize("recipe", ["ce", "setfit"])
def test_lora_separates_what_the_frozen_encoder_mixes(encoder, recipe):
    rng = np.random.default_rng(0)
    # two labels told apart only by a faint bright square in one corner
    imgs, y = [], []
    for i in range(16):
        a = rng.integers(0, 200, (16, 16, 3), np.uint8)
        if i % 2:
            a[:4, :4] = 255
        imgs.append(a)
        y.append(i % 2)
    y = np.array(y)
    x = encoder.prepare(imgs)
    before = encoder.weights_checksum()
    opts = ImageLoraOptions(recipe=recipe, epochs=15, learning_rate=5e-3, augment=False, seed=0)
    losses = []
    lw, head, last = train_image_lora(encoder, x, y, opts, progress=lambda s, t, l: losses.append(l))
    assert encoder.weights_checksum() == before
    assert np.mean(losses[-3:]) < np.mean(losses[:3])
    pred = head.logits(encoder.embed_prepared(x, [lw] * len(y))).argmax(1).numpy()
    assert (pred == y).mean() >= 0.8  # training rows, through a C=1 logreg head
    bare = encoder.embed_prepared(x)
    assert torch.allclose(encoder.embed_prepared(x, [None] * len(y)), bare)
    assert (encoder.embed_prepared(x, [lw] * len(y)) - bare).abs().max() > 1e-3


def test_a_cnn_has_no_lora(tmp_path):
    T.AutoModel.from_config(T.ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1])).save_pretrained(tmp_path)
    T.ConvNextImageProcessorPil(size={"shortest_edge": 32}).save_pretrained(tmp_path)
    enc = ImageEncoder(tmp_path)
    with pytest.raises(ValueError, match="head adapter"):
        train_image_lora(enc, enc.prepare([np.zeros((32, 32, 3), np.uint8)] * 2), np.array([0, 1]))
