"""Serving runtimes (issue 12): the single-pass tokenizer and the bf16 backbone."""
from __future__ import annotations

import pytest
import torch

from adapters.encoders.lora import LoraSpec, LoraWeights
from export.parity import SAMPLE_TEXTS

TEXTS = list(SAMPLE_TEXTS) + ["word " * 600, "", " ", "naïve café déjà vu", "a\tb\nc"]


def test_prepare_gives_the_ids_of_the_transformers_tokenizer(backbone):
    """The Rust tokenizer called directly (no lock, one pass) gives the wrapper's ids,
    truncation included, at the default and at a shorter max length."""
    for limit in (None, 16):
        want = backbone.tokenizer(TEXTS, truncation=True, add_special_tokens=True,
                                  max_length=limit or backbone.max_length)["input_ids"]
        assert backbone.prepare(TEXTS, limit) == want
    assert backbone.prepare([]) == []


def test_bf16_encoder_keeps_the_fp32_model_and_close_embeddings(backbone):
    bf = backbone.with_dtype("bfloat16")
    assert bf.dtype == "bfloat16" and bf.model is backbone.model
    assert next(backbone.model.parameters()).dtype == torch.float32  # training, export, checksum
    ref, got = backbone.embed(TEXTS[:24]), bf.embed(TEXTS[:24])
    assert got.dtype == torch.float32
    assert torch.nn.functional.cosine_similarity(ref, got).min() > 0.99
    # LoRA rows on the bf16 copy: the low-rank update in fp32, close to the fp32 backbone's
    w = LoraWeights.init(backbone.model, LoraSpec(rank=4, alpha=8, targets=("query", "value")), seed=0, identity=False)
    loras = [w, None] * 4
    ref, got = backbone.embed(TEXTS[:8], loras), bf.embed(TEXTS[:8], loras)
    assert torch.nn.functional.cosine_similarity(ref, got).min() > 0.99
    with pytest.raises(ValueError, match="dtype"):
        backbone.with_dtype("float16")
