"""The image encoder on locally built tiny random models of every supported architecture
(no weights can be downloaded): loading through AutoModel + AutoImageProcessor, the pooling
each architecture gets, normalization, batching, identity, thread safety, and per-row LoRA
through adapters/lora.py's routing hooks."""
from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import transformers as T
from adapters.encoders import lora
from adapters.encoders.image import ImageEncoder
from adapters.encoders.lora import LoraSpec, LoraWeights

VIT_KW = dict(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2,
              num_attention_heads=2, intermediate_size=64)
TEXT_KW = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
               vocab_size=100, bos_token_id=0, eos_token_id=1, pad_token_id=1)

# name: (config, processor, expected pooling, how to compute the expected feature by hand)
ARCHS = {
    "vit": (lambda: T.ViTConfig(**VIT_KW),
            lambda: T.ViTImageProcessorPil(size={"height": 32, "width": 32}),
            "cls", lambda m, x: m(pixel_values=x).last_hidden_state[:, 0]),
    "deit": (lambda: T.DeiTConfig(**VIT_KW),
             lambda: T.DeiTImageProcessorPil(size={"height": 40, "width": 40},
                                             crop_size={"height": 32, "width": 32}),
             "cls", lambda m, x: m(pixel_values=x).last_hidden_state[:, 0]),
    "dinov2": (lambda: T.Dinov2Config(**{**VIT_KW, "intermediate_size": None}, mlp_ratio=2),
               lambda: T.BitImageProcessorPil(size={"shortest_edge": 36},
                                              crop_size={"height": 32, "width": 32}),
               "pooler", lambda m, x: m(pixel_values=x).pooler_output),
    "convnext": (lambda: T.ConvNextConfig(hidden_sizes=[8, 16, 24, 32], depths=[1, 1, 1, 1]),
                 lambda: T.ConvNextImageProcessorPil(size={"shortest_edge": 32}),
                 "pooler", lambda m, x: m(pixel_values=x).pooler_output),
    "resnet": (lambda: T.ResNetConfig(embedding_size=8, hidden_sizes=[8, 16, 24, 32], depths=[1, 1, 1, 1]),
               lambda: T.ConvNextImageProcessorPil(size={"shortest_edge": 32}),
               "pooler", lambda m, x: m(pixel_values=x).pooler_output.flatten(1)),
    "clip_vision": (lambda: T.CLIPVisionConfig(**VIT_KW),
                    lambda: T.CLIPImageProcessorPil(size={"shortest_edge": 32},
                                                    crop_size={"height": 32, "width": 32}),
                    "pooler", lambda m, x: m(pixel_values=x).pooler_output),
    "siglip_vision": (lambda: T.SiglipVisionConfig(**VIT_KW),
                      lambda: T.SiglipImageProcessorPil(size={"height": 32, "width": 32}),
                      "pooler", lambda m, x: m(pixel_values=x).pooler_output),
    "clip": (lambda: T.CLIPConfig(text_config=TEXT_KW, vision_config=VIT_KW, projection_dim=16),
             lambda: T.CLIPImageProcessorPil(size={"shortest_edge": 32},
                                             crop_size={"height": 32, "width": 32}),
             "image_features", lambda m, x: m.get_image_features(pixel_values=x).pooler_output),
    "siglip": (lambda: T.SiglipConfig(text_config=TEXT_KW, vision_config=VIT_KW),
               lambda: T.SiglipImageProcessorPil(size={"height": 32, "width": 32}),
               "image_features", lambda m, x: m.get_image_features(pixel_values=x).pooler_output),
}
EXPECTED_DIM = {"clip": 16}


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    out = {}
    for name, (cfg, proc, _, _) in ARCHS.items():
        d = tmp_path_factory.mktemp(name)
        torch.manual_seed(0)
        T.AutoModel.from_config(cfg()).save_pretrained(d)
        proc().save_pretrained(d)
        out[name] = d
    return out


@pytest.fixture(scope="module")
def encoders(folders):
    return {name: ImageEncoder(d) for name, d in folders.items()}


def images(n: int, seed: int = 0, size=(40, 48)) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 255, (*size, 3), np.uint8) for _ in range(n)]


@pytest.mark.parametrize("name", list(ARCHS))
def test_loads_pools_and_normalizes_like_the_architecture(name, encoders):
    enc = encoders[name]
    _, _, how, by_hand = ARCHS[name]
    assert enc.pooling == how and enc.modality == "image"
    assert not enc.model.training and not any(p.requires_grad for p in enc.model.parameters())
    imgs = images(3)
    e = enc.embed(imgs)
    assert e.shape == (3, enc.dim) and enc.dim == EXPECTED_DIM.get(name, 32)
    assert torch.allclose(e.norm(dim=1), torch.ones(3), atol=1e-5)
    with torch.inference_mode():
        expected = F.normalize(by_hand(enc.model, enc.prepare(imgs)), dim=1)
    assert torch.allclose(e, expected, atol=1e-5)


@pytest.mark.parametrize("name", ["vit", "convnext"])
def test_a_row_does_not_depend_on_its_batch(name, encoders):
    enc = encoders[name]
    imgs = images(5, seed=1)
    together = enc.embed(imgs)
    alone = torch.cat([enc.embed([im]) for im in imgs])
    assert torch.allclose(together, alone, atol=1e-5)


def test_identity_is_the_weights_hash(folders, encoders, tmp_path):
    a = encoders["vit"]
    assert a.identity.name == folders["vit"].name and len(a.identity.sha256) == 64
    torch.manual_seed(1)
    T.AutoModel.from_config(ARCHS["vit"][0]()).save_pretrained(tmp_path)
    ARCHS["vit"][1]().save_pretrained(tmp_path)
    assert ImageEncoder(tmp_path).identity.sha256 != a.identity.sha256


def test_a_text_folder_is_not_an_image_backbone(tmp_path):
    T.AutoModel.from_config(T.BertConfig(**{k: v for k, v in TEXT_KW.items()
                                            if k not in ("bos_token_id", "eos_token_id")})).save_pretrained(tmp_path)
    with pytest.raises(FileNotFoundError, match="not an image model folder"):
        ImageEncoder(tmp_path)


def test_lora_targets_follow_the_architecture(encoders):
    for name in ("vit", "deit", "dinov2", "clip_vision", "siglip_vision"):
        assert encoders[name].lora_targets == ("q_proj", "v_proj"), name
    assert encoders["convnext"].lora_targets == () and encoders["resnet"].lora_targets == ()


def test_concurrent_threads_get_their_own_answers(encoders):
    enc = encoders["deit"]
    batches = [images(4, seed=s, size=(30 + 7 * s, 50 - 3 * s)) for s in range(6)]
    expected = [enc.embed(b) for b in batches]
    got: dict[int, torch.Tensor] = {}

    def work(i: int) -> None:
        for _ in range(3):
            got[i] = enc.embed(batches[i])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in range(6):
        assert torch.allclose(got[i], expected[i], atol=1e-5)


# -- per-row LoRA through the routing hooks -------------------------------------------------
def _lora(enc: ImageEncoder, seed: int) -> LoraWeights:
    # non-identity (B drawn too, cf. peft init_lora_weights=False) so equality can fail
    return LoraWeights.init(enc.model, LoraSpec(rank=8, alpha=16, targets=enc.lora_targets), seed=seed, identity=False)


def test_mixed_lora_batch_equals_each_row_run_alone(encoders):
    enc = encoders["vit"]
    before = enc.weights_checksum()
    w1, w2 = _lora(enc, 1), _lora(enc, 2)
    imgs = images(6, seed=3)
    per_row = [w1, None, w2, w1, None, w2]
    mixed = enc.embed(imgs, per_row)
    alone = torch.cat([enc.embed([im], [w]) for im, w in zip(imgs, per_row)])
    bare = enc.embed(imgs)
    assert torch.allclose(mixed, alone, atol=1e-5)
    assert torch.allclose(mixed[[1, 4]], bare[[1, 4]], atol=1e-6)  # bare rows untouched
    assert (mixed[[0, 2, 3, 5]] - bare[[0, 2, 3, 5]]).abs().max() > 1e-3  # LoRA rows moved
    assert (enc.embed([imgs[0]], [w2]) - mixed[0]).abs().max() > 1e-3  # each row its own adapter
    assert enc.weights_checksum() == before  # the shared backbone never changes


def test_lora_trains_through_the_differentiable_forward(encoders):
    enc = encoders["vit"]
    w = LoraWeights.init(enc.model, LoraSpec(rank=8, alpha=16, targets=enc.lora_targets), seed=0)  # identity init
    params = w.parameters()
    for p in params:
        p.requires_grad_(True)
    lora.install_hooks(enc.model, w.spec.targets)
    x = enc.prepare(images(4, seed=4))
    with lora.routed(lora.Routing(((0, 4, w),))):
        feats = enc.features(x)  # [4, dim]
    target = torch.eye(enc.dim)[:4]
    loss = ((feats - target) ** 2).sum()
    loss.backward()
    assert all(p.grad is not None for p in params)
    assert any(p.grad.abs().sum() > 0 for p in w.b.values())  # B (zero-init) gets the gradient
    assert not any(p.requires_grad for p in enc.model.parameters())


# -- the Encoder protocol: the modality follows from the folder ------------------------------
def test_open_encoder_picks_the_image_encoder_from_the_folder(tmp_path):
    from adapters.encoders import Encoder, TextEncoder, TorchEncoder, open_encoder

    torch.manual_seed(0)
    T.AutoModel.from_config(T.ViTConfig(**VIT_KW)).save_pretrained(tmp_path)
    T.ViTImageProcessorPil(size={"height": 32, "width": 32}).save_pretrained(tmp_path)
    enc = open_encoder(tmp_path)
    assert isinstance(enc, ImageEncoder) and enc.modality == "image"
    assert isinstance(enc, Encoder) and isinstance(enc, TorchEncoder)
    assert enc.pytorch() is enc and enc.max_length is None
    assert isinstance(open_encoder(None), TextEncoder)  # the embedded default: text


def test_collate_and_forward_match_embed(encoders):
    """What kinds/lora.py and export use (prepare -> rows -> collate -> forward, a fresh copy
    through graph_module) gives what serving gives."""
    enc = encoders["vit"]
    imgs = images(5, seed=7)
    rows = enc.prepare(imgs, max_length=16)
    with torch.inference_mode():
        fwd = enc.forward(enc.collate([rows[i] for i in range(5)]))
        copy_fwd = enc.graph_module(enc.fresh_model())(enc.collate(list(rows))["pixel_values"])
    assert torch.allclose(fwd, enc.embed(imgs), atol=1e-5)
    assert torch.allclose(copy_fwd, fwd, atol=1e-5)
    assert torch.allclose(enc.embed_prepared(list(rows)), fwd, atol=1e-5)


def test_write_preprocessor_describes_the_processor(encoders, tmp_path):
    import json

    enc = encoders["vit"]
    names = enc.write_preprocessor(tmp_path)
    desc = json.loads((tmp_path / "preprocessing.json").read_text())
    assert set(names) == {"preprocessing.json", "preprocessor_config.json"}
    assert desc["input_size"] == [3, 32, 32] and desc["pooling"] == "cls"


@pytest.mark.parametrize("quantize", ["none", "int8"])
def test_the_onnx_runtime_refuses_an_image_backbone_by_name(encoders, tmp_path, quantize):
    from export.runtimes import RuntimeOptions
    from export.runtimes.auto import serving_encoder

    with pytest.raises(ValueError, match="runs text backbones only.*TAILOR_RUNTIME=torch"):
        serving_encoder(encoders["vit"], "onnx", quantize, RuntimeOptions(tmp_path))
