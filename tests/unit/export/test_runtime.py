"""Serving runtimes (issue 12): the single-pass tokenizer, the bf16 backbone, and the
start-up choice of ``TAILOR_RUNTIME=auto`` (export/runtimes/auto.py) with its fallback."""
from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch

from adapters.encoders.lora import LoraSpec, LoraWeights
from adapters.encoders.text import has_bf16_matrix_units
from export.runtimes import RuntimeOptions
from export.runtimes import auto as runtime_choice
from export.runtimes.auto import GATE, Candidate, auto, choose, fixed_sample
from export.runtimes.base import REFERENCE, auto_candidates
from tests.conftest import seed_onnx_cache

TEXTS = fixed_sample() + ["word " * 600, "", " ", "naïve café déjà vu", "a\tb\nc"]


def test_prepare_gives_the_ids_of_the_transformers_tokenizer(backbone):
    """The Rust tokenizer read from tokenizer.json and called directly (no lock, one pass;
    adapters/encoders/bert.py) gives transformers' ``AutoTokenizer`` ids, truncation included,
    at the default and at a shorter max length."""
    from transformers import AutoTokenizer

    wrapper = AutoTokenizer.from_pretrained(backbone.model_dir, local_files_only=True)
    assert backbone._pad_id == wrapper.pad_token_id and not backbone._pad_left
    for limit in (None, 16):
        want = wrapper(TEXTS, truncation=True, add_special_tokens=True,
                       max_length=limit or backbone.max_length)["input_ids"]
        assert backbone.prepare(TEXTS, limit) == want
    assert backbone.prepare([]) == []


def test_bf16_encoder_keeps_the_fp32_model_and_close_embeddings(backbone):
    bf = backbone.with_dtype("bfloat16")
    assert bf.dtype == "bfloat16" and bf.model is backbone.model
    assert next(backbone.model.parameters()).dtype == torch.float32  # training, export, checksum
    ref, got = backbone.embed(TEXTS[:28]), bf.embed(TEXTS[:28])
    assert got.dtype == torch.float32
    assert torch.nn.functional.cosine_similarity(ref, got).min() > 0.99
    # LoRA rows on the bf16 copy: the low-rank update in fp32, close to the fp32 backbone's
    w = LoraWeights.init(backbone.model, LoraSpec(rank=4, alpha=8, targets=("query", "value")), seed=0, identity=False)
    loras = [w, None] * 4
    ref, got = backbone.embed(TEXTS[:8], loras), bf.embed(TEXTS[:8], loras)
    assert torch.nn.functional.cosine_similarity(ref, got).min() > 0.99
    with pytest.raises(ValueError, match="dtype"):
        backbone.with_dtype("float16")


class Fake:
    """A candidate whose embeddings are the reference's plus noise of a given size (seeded by
    the text, so a row's answer does not depend on its batch unless ``batch_noise``), answered
    from the reference's table (so it is faster than the reference unless ``delay``)."""

    def __init__(self, ref, noise: float = 0.0, delay: float = 0.0, fail: bool = False,
                 batch_noise: float = 0.0, per_row: float = 0.0):
        self.noise, self.delay, self.fail, self.batch_noise = noise, delay, fail, batch_noise
        self.per_row = per_row
        self.raw = getattr(ref, "raw", ref.embed)
        self.table = {} if fail else {t: row for t, row in zip(TEXTS, np.asarray(
            self.raw(TEXTS), dtype=np.float32))}

    def embed(self, texts, loras=None):
        import time

        if self.fail:
            raise RuntimeError("no such provider")
        time.sleep(self.delay + self.per_row * len(texts))
        for t in texts:
            if t not in self.table:
                self.table[t] = np.asarray(self.raw([t]), dtype=np.float32)[0]
        out = np.stack([self.table[t] + self.noise * np.random.default_rng(
            abs(hash((t, "noise"))) % 2**32).standard_normal(self.table[t].shape).astype(np.float32)
            for t in texts])
        shaped = np.random.default_rng(len(texts)).standard_normal(out.shape).astype(np.float32)
        return out + self.batch_noise * shaped  # like bf16: the roundings follow the shape


class Ref:
    """A reference (PyTorch fp32) with one embedding per text, ``delay`` seconds per call."""

    def __init__(self, delay: float = 0.004):
        self.delay = delay

    def raw(self, texts):
        rows = [np.random.default_rng(abs(hash(t)) % 2**32).standard_normal(8) for t in texts]
        return torch.from_numpy(np.array(rows, dtype=np.float32).reshape(len(texts), 8))

    def embed(self, texts):
        import time

        time.sleep(self.delay)
        return self.raw(texts)


def test_choice_takes_the_fastest_candidate_that_keeps_accuracy(caplog):
    ref = Ref()
    cands = [Candidate("onnx-int8", lambda: Fake(ref, noise=0.2)),  # fast but drifts: skipped
             Candidate("broken", lambda: Fake(ref, fail=True)),  # fails to run: skipped
             Candidate("torch-bf16", lambda: Fake(ref, noise=1e-3)),
             Candidate("onnx-fp32", lambda: Fake(ref, delay=0.002))]
    with caplog.at_level(logging.INFO, logger="tailor"):
        choice, enc = choose(ref, cands, GATE, sample=TEXTS[:8])
    assert choice.runtime == "torch-bf16" and isinstance(enc, Fake) and enc.noise == 1e-3
    trials = {t.name: t for t in choice.trials}
    assert not trials["onnx-int8"].passed and trials["onnx-int8"].min_cosine < GATE.min_cosine
    assert "RuntimeError: no such provider" in trials["broken"].error
    assert "rejected: onnx-int8 (mean drift" in choice.reason and "broken (RuntimeError" in choice.reason
    logged = caplog.text
    assert "candidate skipped: onnx-int8" in logged and "candidate skipped: broken" in logged
    assert trials["torch-fp32"].passed and trials["torch-fp32"].rows_per_s_b32 > 0  # the bar
    assert choice.reason.startswith("first in speed that keeps accuracy")


def test_a_tie_at_batch_32_goes_to_the_faster_at_batch_1(monkeypatch):
    """onnx fp32 and PyTorch fp32 served the same rows/s at batch 32 here (147-150 against
    136-150), while onnx answered one text 2.4x sooner: which one a first start served was
    a coin flip. Within TIE of the best batch-32 rate, batch 1 decides."""
    from export.runtimes.auto import TIE, Trial, ranked

    def t(name, b1, b32):
        return Trial(name, rows_per_s_b1=b1, rows_per_s_b32=b32, passed=True)

    # this machine: bf16 (not batch-invariant, so never served) alone, then the fp32 tie
    order = ranked([t("torch-fp32", 120, 150), t("onnx-fp32", 320, 141), t("torch-bf16", 190, 252)])
    assert [x.name for x in order] == ["torch-bf16", "onnx-fp32", "torch-fp32"]
    order = ranked([t("torch-fp32", 120, 150), t("onnx-fp32", 320, 147)])
    assert [x.name for x in order] == ["onnx-fp32", "torch-fp32"]
    order = ranked([t("torch-fp32", 120, 150), t("onnx-fp32", 320, 150 * (1 - TIE) - 1)])
    assert [x.name for x in order] == ["torch-fp32", "onnx-fp32"]  # outside the tie

    # through choose: a candidate ~30% slower on the "batch 32" call (the sample twice: 16
    # rows here; 2 + 16 x 0.6 = 11.6 ms against 8 ms) that answers one text in 2.6 ms against
    # 8 ms is served. The tie is widened here: a sleep that overshoots by a millisecond on a
    # loaded machine put a 5% gap (8.4 against 8 ms) on the wrong side (CI, 2026-12-07).
    monkeypatch.setattr(runtime_choice, "TIE", 0.5)
    ref = Ref(delay=0.008)
    choice, enc = choose(ref, [Candidate("onnx-fp32", lambda: Fake(ref, delay=0.002, per_row=6e-4))],
                         GATE, sample=TEXTS[:8])
    assert choice.runtime == "onnx-fp32" and isinstance(enc, Fake), choice.reason
    trials = {t.name: t for t in choice.trials}
    assert trials["onnx-fp32"].rows_per_s_b32 < trials["torch-fp32"].rows_per_s_b32  # slower...
    assert "within 50% at batch 32 the faster at batch 1 ranks first" in choice.reason


def test_a_candidate_slower_than_fp32_is_not_served():
    """Passing the gate is not enough: the reference is measured too, and wins when faster."""
    ref = Ref(delay=0.0)
    cands = [Candidate("onnx-fp32", lambda: Fake(ref, noise=1e-4, delay=0.01))]
    choice, enc = choose(ref, cands, GATE, sample=TEXTS[:8])
    assert choice.runtime == "torch-fp32" and enc is ref
    assert choice.reason.startswith("no candidate that keeps accuracy and batch invariance ranks "
                                     "above PyTorch fp32")


def test_choice_falls_back_to_the_reference_when_nothing_holds():
    ref = Ref()
    choice, enc = choose(ref, [Candidate("onnx-int8", lambda: Fake(ref, noise=0.5))], GATE,
                         sample=TEXTS[:8])
    assert choice.runtime == "torch-fp32" and enc is ref
    assert choice.reason.startswith("no candidate kept accuracy")


def test_auto_logs_one_line_and_caches_the_decision(backbone, tmp_path, monkeypatch, caplog):
    built = []

    def fakes(encoder, options):
        built.append(1)
        return [Candidate("onnx-int8", lambda: Fake(encoder, noise=0.2)),
                Candidate("torch-bf16", lambda: Fake(encoder, noise=1e-4))]

    monkeypatch.setattr(runtime_choice, "candidates_for", fakes)
    with caplog.at_level(logging.INFO, logger="tailor"):
        served, choice = auto(backbone, RuntimeOptions(tmp_path))
    assert choice.runtime == "torch-bf16" and not choice.cached
    assert [r.message for r in caplog.records if r.message.startswith("runtime auto chose")] == [
        choice.line()]
    assert "runtime auto chose torch-bf16 (measured in" in choice.line()
    (cache,) = tmp_path.glob("choice-*.json")
    assert json.loads(cache.read_text())["runtime"] == "torch-bf16"
    # a restart reads the decision: no measurement, same runtime
    served2, choice2 = auto(backbone, RuntimeOptions(tmp_path))
    assert choice2.cached and choice2.runtime == "torch-bf16" and len(built) == 1  # no candidates built again
    assert "cached decision" in choice2.line()
    # a broken cache file is measured again, not fatal
    cache.write_text("{not json")
    _, choice3 = auto(backbone, RuntimeOptions(tmp_path))
    assert not choice3.cached and choice3.runtime == "torch-bf16"


def test_the_service_measures_in_a_child_process(backbone, onnx_graphs, tmp_path,
                                                 monkeypatch, caplog):
    """isolate=True (the service): the candidates are built and measured in a child process,
    so the serving process only ever builds the runtime it serves (issue 12: measuring in it
    left the rejected candidates in its heap, RSS 1.15 GB against 0.64 GB). Candidates built
    here would raise: the real ones run in the child, which opens the onnx graphs from the
    cache folder (seeded with the run's build: building them is not this test's subject)."""
    seed_onnx_cache(onnx_graphs, tmp_path)

    def not_here(*a, **k):
        raise AssertionError("candidates were built in the serving process")

    monkeypatch.setattr(runtime_choice, "candidates_for", not_here)
    with caplog.at_level(logging.INFO, logger="tailor"):
        served, choice = auto(backbone, RuntimeOptions(tmp_path), isolate=True)
    assert not choice.cached and choice.trials, choice
    # only a candidate or the reference (not onnx-int8, not the opt-in torch-bf16-rows)
    assert choice.runtime in {r.name for r in auto_candidates(backbone)} | {REFERENCE}
    assert [t.name for t in choice.trials if t.name != REFERENCE] == [
        r.name for r in auto_candidates(backbone)], choice.trials
    (cache,) = tmp_path.glob("choice-*.json")
    assert json.loads(cache.read_text())["runtime"] == choice.runtime
    assert [r.message for r in caplog.records if r.message.startswith("runtime auto chose")] == [
        choice.line()]
    expected = {"torch-fp32": "float32", "torch-bf16": "bfloat16",
                "torch-bf16-rows": "bfloat16"}.get(choice.runtime)
    if expected:
        assert served.dtype == expected
    else:
        assert type(served).__name__ == "OnnxEncoder"
    _, again = auto(backbone, RuntimeOptions(tmp_path), isolate=True)  # a restart: the cached decision
    assert again.cached and again.runtime == choice.runtime


def test_a_failed_child_measures_in_process(backbone, tmp_path, monkeypatch, caplog):
    class Died:  # a child that ran out of memory
        def __init__(self, module, spec):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            pass

        def wait(self, timeout=None):
            return 1

        def stderr(self, last=None):
            return "MemoryError"

    monkeypatch.setattr(runtime_choice, "spawn", Died)
    monkeypatch.setattr(runtime_choice, "candidates_for", lambda encoder, *a, **k: [
        Candidate("torch-bf16", lambda: Fake(encoder, noise=1e-4))])
    with caplog.at_level(logging.INFO, logger="tailor"):
        _, choice = auto(backbone, RuntimeOptions(tmp_path), isolate=True)
    assert choice.runtime == "torch-bf16" and not choice.cached
    assert any("measuring child exited 1 (MemoryError); measuring here" in r.message
               for r in caplog.records)


@pytest.mark.skipif(not has_bf16_matrix_units(), reason="no bf16 matrix units on this CPU")
def test_real_bf16_candidate_keeps_accuracy_but_not_batch_invariance(backbone, tmp_path):
    """Issue 20: bf16 passes the accuracy gate, but its rows move with the batch (the
    kernels' roundings follow the shape), so ``auto`` serves fp32 instead."""
    cands = [c for c in runtime_choice.candidates_for(backbone, RuntimeOptions(tmp_path))
             if c.name == "torch-bf16"]
    choice, enc = choose(backbone, cands)
    bf16 = next(t for t in choice.trials if t.name == "torch-bf16")  # and torch-fp32, the bar
    assert bf16.min_cosine >= GATE.min_cosine and bf16.mean_drift <= GATE.max_mean_drift
    assert not bf16.passed and "not batch-invariant" in bf16.error and bf16.batch_max_diff > 1e-5
    assert choice.runtime == "torch-fp32" and enc is backbone


def test_settings_default_runtime_is_auto():
    from service.settings import Settings

    assert Settings.from_env({"TAILOR_MAX_INPUTS": "8"}).runtime == "auto"  # the default
    assert Settings.from_env({"TAILOR_RUNTIME": "torch"}).runtime == "torch"
    assert Settings.from_env({"TAILOR_RUNTIME": "onnx"}).runtime == "onnx"
    assert Settings.from_env({"TAILOR_RUNTIME": "torch-bf16"}).runtime == "torch-bf16"  # forced


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_training_jobs_embed_in_the_serving_precision(backbone, tmp_path, monkeypatch, dtype):
    """A LoRA job's worker fits the head on embeddings of the precision that serves (the
    served encoder's dtype goes to the worker; autograd stays on the fp32 weights)."""
    import adapters.engine as engine_module
    from adapters import AdapterStore, Tailor
    from adapters.training.worker import TrainingFailed

    seen = {}

    def fake(job, **kwargs):
        seen.update(kwargs)
        raise TrainingFailed("stop here")

    monkeypatch.setattr(engine_module, "train_in_subprocess", fake)
    served = backbone.with_dtype(dtype)
    t = Tailor(served, AdapterStore(tmp_path / "store", backbone.identity))
    examples = [{"text": f"text {i}", "label": "ab"[i % 2]} for i in range(8)]
    pending = t.create_adapter("default", "l", "lora", examples, {"epochs": 1})
    assert t.wait_job("default", pending["job"]["id"], timeout=60)["status"] == "failed"
    assert seen["dtype"] == dtype


def test_a_forced_runtime_is_served_and_what_auto_would_say_is_logged(backbone, tmp_path, caplog):
    """TAILOR_RUNTIME naming a runtime serves it whatever auto's admission would say, and the
    start-up log says it: a WARNING when auto would not serve it (rows that move with their
    batch; embeddings that drift), one INFO line when it would. The report is cached beside
    auto's decisions: a restart reads it and measures nothing. The reference is not checked."""
    from export.runtimes.auto import forced_admission, serving_encoder

    class Text(Fake):
        modality = "text"

    options = RuntimeOptions(tmp_path)
    with caplog.at_level(logging.INFO, logger="tailor"):
        moving = forced_admission("torch-bf16", Text(backbone, noise=1e-6, batch_noise=1e-4),
                                  backbone, options)
        drifting = forced_admission("onnx-int8", Text(backbone, noise=0.2), backbone, options)
        holding = forced_admission("onnx-fp32", Text(backbone, noise=1e-7), backbone, options)
    assert not moving.passed and "not batch-invariant" in moving.error
    assert not drifting.passed and drifting.min_cosine < GATE.min_cosine
    assert drifting.batch_max_diff == -1  # one reason is enough: not checked further
    assert holding.passed and 0 <= holding.batch_max_diff <= 1e-5
    warned = [r.message for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 2 and all("would NOT be served by TAILOR_RUNTIME=auto" in w for w in warned)
    assert "torch-bf16 (forced)" in warned[0] and "not batch-invariant" in warned[0]
    assert "onnx-int8 (forced)" in warned[1] and "mean drift" in warned[1]
    assert any(r.message.startswith("runtime onnx-fp32 (forced): auto's admission holds here")
               for r in caplog.records)

    class Broken(Text):
        def embed(self, texts, loras=None):
            raise AssertionError("measured again")

    again = forced_admission("torch-bf16", Broken(backbone, fail=True), backbone, options)
    assert again == moving  # read from the cache
    # a new revision of what the runtime serves (a graph recipe) is measured, not read back
    with caplog.at_level(logging.INFO, logger="tailor"):
        revised = forced_admission("torch-bf16", Text(backbone, noise=1e-7), backbone, options,
                                   revision="recipe-2")
    assert revised.passed and revised != moving
    # a runtime whose check cannot run is still served: a warning, no report, nothing cached
    assert forced_admission("onnx-int8-static", Broken(backbone, fail=True), backbone,
                            options) is None
    assert "onnx-int8-static (forced): its admission could not be measured" in caplog.text
    assert not list(tmp_path.glob("forced-onnx-int8-static-*"))
    assert forced_admission(REFERENCE, Broken(backbone, fail=True), backbone, options) is None
    # through the settings' path, on the real runtimes: fp32 is not checked; real bf16 is
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="tailor"):
        served, how = serving_encoder(backbone, "torch", "none", RuntimeOptions(tmp_path / "b"))
        assert served is backbone and how == "torch"
        assert not [r for r in caplog.records if "(forced)" in r.message]
        if has_bf16_matrix_units():
            serving_encoder(backbone, "torch-bf16", "none", RuntimeOptions(tmp_path / "b"))
            assert [r for r in caplog.records if r.levelno == logging.WARNING
                    and "torch-bf16 (forced) would NOT be served" in r.message
                    and "not batch-invariant" in r.message]
