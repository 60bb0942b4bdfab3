"""The CI vision backbone and the pretraining that makes it.

tests/fixtures/vision-backbone-ci is what `make -B tests/fixtures/vision-backbone-ci/model.safetensors`
pretrained on this machine (benchmarks/vision/pretrain.py, the CI recipe: 80 steps) and the
image e2e tests serve. It is committed because its 61 CPU s were 3.5% of a CI run on a saturated
2-core machine; these tests keep it honest: it must be the CI recipe's output (a changed
recipe fails here until the folder is pretrained again), and the pretraining itself runs for
real, a few steps, into a folder the service's image encoder loads.
"""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from tests.conftest import ROOT

FIXTURE = ROOT / "tests/fixtures/vision-backbone-ci"


def test_the_committed_ci_backbone_is_the_ci_recipes_output():
    from benchmarks.vision import pretrain
    from tests.e2e.test_image_e2e import CI_STEPS

    assert pretrain.is_current(FIXTURE, pretrain.Recipe(steps=CI_STEPS)), (
        f"{FIXTURE} was pretrained with another recipe than the CI one (Recipe(steps={CI_STEPS})): "
        "pretrain it again with `make -B tests/fixtures/vision-backbone-ci/model.safetensors` "
        "and commit the folder")
    meta = json.loads((FIXTURE / pretrain.RECIPE_FILE).read_text())
    assert meta["log"][-1]["step"] == CI_STEPS and meta["torch_threads"] == 1


def test_a_short_pretraining_writes_a_backbone_the_image_encoder_serves(tmp_path):
    from adapters.encoders.image import ImageEncoder
    from benchmarks.vision import fashion_mnist, pretrain

    if not (fashion_mnist.DATA_DIR / "train-images-idx3-ubyte.gz").exists():
        pytest.fail("pretraining reads Fashion-MNIST: install it with deploy/install-datasets.sh "
                    "(make test does)")
    out = tmp_path / "vit"
    cmd = [sys.executable, "-m", "benchmarks.vision.pretrain", "--out", str(out), "--steps", "2"]
    # a child process: pretraining pins torch to one thread, which would stay pinned here
    subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True)
    assert pretrain.is_current(out, pretrain.Recipe(steps=2))
    assert not pretrain.is_current(out, pretrain.Recipe(steps=3))
    assert json.loads((out / pretrain.RECIPE_FILE).read_text())["log"][-1]["step"] == 2
    again = subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, text=True)
    assert "up to date" in again.stdout  # the same recipe is not trained twice

    enc = ImageEncoder(out)
    trained = ImageEncoder(FIXTURE)
    # decoded pictures as the service hands them over: RGB, height x width x 3
    pictures = [np.repeat(im[:, :, None], 3, axis=2) for im in fashion_mnist.load("test").images[:4]]
    e = enc.embed(pictures)
    assert e.shape == (4, trained.dim) and torch.isfinite(e).all()
    assert torch.allclose(e.norm(dim=1), torch.ones(4), atol=1e-5)
    # 2 steps and 80 steps of the same recipe are different weights
    assert enc.identity.sha256 != trained.identity.sha256
    assert not torch.allclose(e, trained.embed(pictures), atol=1e-3)
