"""Image adapters to ONNX bundles through export.bundle (the same path as text): head and
LoRA adapters stored by the engine, the bundle's graph checked against PyTorch, its README's
numpy + Pillow preprocessing checked against the folder's image processor, and the README
code run as printed."""
from __future__ import annotations

import json
import os
import zipfile

import numpy as np
import pytest
import torch

import transformers as T
from adapters import AdapterStore, Limits, Tailor
from adapters.encoders import ImageEncoder
from export import ParityError, export_bundle
from export.image import check_describable, preprocess
from tests.asgi.test_image_api import examples

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
def engine(request, tmp_path_factory):
    d = tmp_path_factory.mktemp(request.param)
    torch.manual_seed(0)
    T.AutoModel.from_config(T.ViTConfig(**VIT_KW)).save_pretrained(d)
    PROCESSORS[request.param]().save_pretrained(d)
    enc = ImageEncoder(d)
    t = Tailor(enc, AdapterStore(d / "store", enc.identity), limits=Limits(max_images=32))
    t.create_adapter("default", "corner", "head", examples(4))
    pending = t.create_adapter("default", "corner-lora", "lora", examples(4),
                               {"epochs": 2, "batch_size": 8})
    assert t.wait_job("default", pending["job"]["id"], timeout=240)["status"] == "succeeded"
    yield t
    t.close()


@pytest.mark.parametrize("name", ["corner", "corner-lora"])
def test_bundle_equals_pytorch(engine, name, tmp_path):
    before = engine.encoder.weights_checksum()
    res = export_bundle(engine.encoder, engine.store, "default", name, dest_dir=tmp_path)
    m = res.manifest
    assert m["parity"]["passed"] and m["parity"]["max_abs_diff"] <= 1e-4
    assert m["parity"]["examples_rows"] == 8  # the adapter's own images were checked
    assert m["modality"] == "image" and m["inputs"] == ["pixel_values"]
    assert m["preprocessing_parity"]["max_abs_diff"] <= 1e-5
    assert engine.encoder.weights_checksum() == before  # merged into a copy only
    with zipfile.ZipFile(res.path) as z:
        assert {"model.onnx", "labels.json", "manifest.json", "README.md",
                "preprocessing.json"} <= set(z.namelist())
        readme = z.read("README.md").decode()
    # the README's code runs as printed and predicts what the service predicts
    from PIL import Image

    with zipfile.ZipFile(res.path) as z:
        z.extractall(tmp_path / "b")
    imgs = images(3, seed=9)
    for i, im in enumerate(imgs):
        Image.fromarray(im).save(tmp_path / "b" / f"p{i}.png")
    code = readme.split("```python\n", 1)[1].split("```", 1)[0]
    code = code.replace('["first.png", "second.jpg"]', repr([f"p{i}.png" for i in range(3)]))
    cwd = os.getcwd()
    os.chdir(tmp_path / "b")
    try:
        scope: dict = {}
        exec(code, scope)
    finally:
        os.chdir(cwd)
    adapter = engine.resolve("default", name)
    served = torch.stack(engine.run_rows([(adapter, im) for im in imgs])).numpy()
    assert np.abs(scope["probs"] - served).max() <= 1e-4


def test_a_failed_parity_check_leaves_nothing(engine, tmp_path, monkeypatch):
    """A graph that disagrees with PyTorch (here: every output of the exported graph moved by
    1e-3, past the 1e-4 tolerance) raises ParityError and leaves no file behind. The
    disagreement is planted in the session's answers because a tiny ViT's graph can agree
    with PyTorch exactly (max difference 0.0), which no tolerance can fail."""
    import export.pipeline as pipeline

    real = pipeline.check_parity

    class Off:
        def __init__(self, session):
            self.session = session

        def run(self, outputs, feed):
            return [o + np.float32(1e-3) for o in self.session.run(outputs, feed)]

        def __getattr__(self, name):
            return getattr(self.session, name)

    monkeypatch.setattr(pipeline, "check_parity",
                        lambda module, session, *a, **k: real(module, Off(session), *a, **k))
    with pytest.raises(ParityError, match="disagrees with PyTorch"):
        export_bundle(engine.encoder, engine.store, "default", "corner-lora", dest_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_readme_preprocessing_matches_the_processor(engine):
    spec = engine.encoder.describe_preprocessing()
    ims = images(12)
    ours = np.stack([preprocess(im, spec) for im in ims])
    assert np.abs(engine.encoder.prepare(ims).numpy() - ours).max() <= 1e-5
    assert json.loads(json.dumps(spec)) == spec  # the manifest holds it as data


def test_processors_it_cannot_describe_are_refused():
    with pytest.raises(ValueError, match="not described"):
        check_describable({"processor": "ConvNextImageProcessorPil", "crop_pct": 0.875,
                           "size": {"shortest_edge": 32}})
