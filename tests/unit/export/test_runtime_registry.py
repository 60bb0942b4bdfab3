"""The runtime registry (export/runtimes/): which runtime the settings choose, which ones
``TAILOR_RUNTIME=auto`` measures for a backbone, and the recipe "Adding a runtime"
(docs/architecture.md) followed in-process: a toy runtime is one factory and one
``register_runtime`` call, and then auto measures it, serves it and re-opens it from its
cached decision, and the settings can name it."""
from __future__ import annotations

import pytest
import torch

from adapters.encoders.text import has_bf16_matrix_units
from export.runtimes import base
from export.runtimes import REFERENCE, RuntimeOptions, Runtime, auto_candidates, register_runtime
from export.runtimes.auto import auto, serving_encoder


@pytest.mark.parametrize("runtime,quantize,name", [
    ("torch", "none", "torch-fp32"),
    ("torch", "int8", "torch-fp32"),  # the quantization applies to onnx only
    ("onnx", "none", "onnx-fp32"),
    ("onnx", "int8", "onnx-int8"),
    ("torch-bf16-rows", "none", "torch-bf16-rows"),
    ("torch-int8-rows", "none", "torch-int8-rows"),
])
def test_the_settings_choose_a_registered_runtime(runtime, quantize, name):
    assert base.selected_by(runtime, quantize).name == name


def test_auto_measures_the_runtimes_that_run_the_backbone_here(backbone):
    names = [r.name for r in auto_candidates(backbone)]
    assert names[:2] == ["onnx-int8-rows", "onnx-fp32"] and REFERENCE not in names
    assert "onnx-int8" not in names  # dynamic scales per run: never batch-invariant (ort.py)
    assert ("torch-bf16" in names) == has_bf16_matrix_units()
    assert "torch-bf16-rows" not in names  # opt-in only (export/runtimes/pytorch.py says why)

    class Pictures:  # an image backbone: no candidate, served on the reference unmeasured
        modality, model_dir = "image", "vit"
    assert auto_candidates(Pictures()) == []
    with pytest.raises(ValueError, match="onnx-fp32 runs text backbones only.*TAILOR_RUNTIME=torch"):
        base.open_runtime(base.get_runtime("onnx-fp32"), Pictures(), RuntimeOptions(None))


class Memo:
    """A toy runtime's encoder: the reference's embeddings, remembered per text (so it is
    faster than the reference on the fixed sample and exactly as accurate)."""

    def __init__(self, encoder):
        self.reference, self.seen = encoder, {}
        for k in ("identity", "modality", "dim", "model_dir", "max_batch_rows", "max_length",
                  "dtype"):
            setattr(self, k, getattr(encoder, k))

    def embed(self, items, loras=None):
        missing = [t for t in dict.fromkeys(items) if t not in self.seen]
        if missing:
            self.seen.update(zip(missing, self.reference.embed(missing)))
        return torch.stack([self.seen[t] for t in items])

    def prepare(self, items, max_length=None):
        return list(items)

    def embed_prepared(self, rows, loras=None):
        return self.embed(rows, loras)

    def pytorch(self):
        return self.reference

    def warm_up(self):
        self.embed(["warm-up"])

    def describe(self):
        return f"memo of {len(self.seen)} texts over {self.reference.describe()}"


@pytest.fixture
def only_the_reference(monkeypatch):
    """The registry with the reference alone (no onnx exports to wait for); the test's
    registrations vanish with it."""
    monkeypatch.setattr(base, "RUNTIMES", {REFERENCE: base.RUNTIMES[REFERENCE]})


def test_a_toy_runtime_is_measured_served_and_reopened_by_auto(backbone, tmp_path,
                                                               only_the_reference):
    opened = []

    def open_memo(encoder, options):
        opened.append(options.lora)
        return Memo(encoder)

    register_runtime(Runtime("memo", "remembered embeddings", open_memo, setting=("memo", None)))
    options = RuntimeOptions(tmp_path)
    served, choice = auto(backbone, options)
    assert choice.runtime == "memo" and isinstance(served, Memo), choice.reason
    assert {t.name for t in choice.trials} == {"memo", REFERENCE}
    assert opened == [False, True]  # measured without what LoRA rows need, served with it
    served, again = auto(backbone, options)  # a restart: the cached decision, re-opened
    assert again.cached and again.runtime == "memo" and isinstance(served, Memo)
    # the settings can name it too (TAILOR_RUNTIME=memo, were it in the settings' choices)
    served, how = serving_encoder(backbone, "memo", "none", options)
    assert how == "memo" and isinstance(served, Memo) and "memo of" in served.describe()


def test_a_runtime_unavailable_here_is_not_a_candidate(backbone, only_the_reference):
    register_runtime(Runtime("elsewhere", "needs hardware this machine lacks", lambda e, o: e,
                             available=lambda: "no such accelerator"))
    assert auto_candidates(backbone) == []
    with pytest.raises(ValueError, match="no such accelerator"):
        base.open_runtime(base.get_runtime("elsewhere"), backbone, RuntimeOptions(None))
    with pytest.raises(ValueError, match="registered twice"):
        register_runtime(Runtime("elsewhere", "again", lambda e, o: e))
