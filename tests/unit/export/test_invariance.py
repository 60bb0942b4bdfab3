"""Batch invariance (issue 20, export/runtimes/invariance.py): a text embedded alone and inside mixed,
differently padded batches gets the same embedding, within 1e-5. The check is part of every
``TAILOR_RUNTIME=auto`` candidate's admission: PyTorch fp32 keeps it; bf16 and dynamic int8
do not on this machine (their roundings follow the batch's shape or its activation range)."""
from __future__ import annotations

import numpy as np
import pytest

from adapters.encoders.text import has_bf16_matrix_units
from export.runtimes import invariance
from export.lora_graph import parity_adapters
from export.runtimes.auto import GATE, Candidate, choose, fixed_sample

SAMPLE = fixed_sample()


def test_layouts_mix_every_row_into_padded_batches():
    for name, calls, _ in invariance.layouts(len(SAMPLE)):
        assert sorted(i for call in calls for i in call) == list(range(len(SAMPLE))), name
    assert any(filler for *_, filler in invariance.layouts(len(SAMPLE)))


def test_fp32_is_batch_invariant_bare_and_with_lora(backbone):
    bare = invariance.check(backbone, SAMPLE)
    with_lora = invariance.check(backbone, SAMPLE, parity_adapters(backbone))
    assert bare.passed and with_lora.passed, (bare, with_lora)
    assert bare.rows == 3 * len(SAMPLE)


class Shaped:
    """An encoder that is the backbone plus an error depending on the batch's size: the
    check must see it, however small the rows' drift from fp32."""

    def __init__(self, backbone, size: float):
        self.backbone, self.size = backbone, size

    def embed(self, texts, loras=None):
        out = np.asarray(self.backbone.embed(texts, loras), dtype=np.float32)
        return out + self.size * (len(texts) > 1)


def test_a_batch_dependent_encoder_fails_with_the_size_of_its_error(backbone):
    report = invariance.check(Shaped(backbone, 3e-5), SAMPLE[:10])
    assert not report.passed and report.max_diff == pytest.approx(3e-5, rel=0.05)
    assert "not batch-invariant" in report.why_not() and "3.0e-05 > 1e-05" in report.why_not()


@pytest.mark.skipif(not has_bf16_matrix_units(), reason="no bf16 matrix units on this CPU")
def test_bf16_is_not_batch_invariant_here(backbone):
    report = invariance.check(backbone.with_dtype("bfloat16"), SAMPLE)
    assert not report.passed, report


def test_dynamic_int8_is_not_batch_invariant(backbone, tmp_path):
    from export.runtimes.ort import OnnxEncoder

    enc = OnnxEncoder.open(backbone, tmp_path, quantize="int8", lora=False)
    report = invariance.check(enc, SAMPLE)
    assert not report.passed and report.max_diff > 1e-4, report


def test_auto_does_not_serve_a_candidate_that_is_not_batch_invariant(backbone):
    """Accurate (drift ~1e-4) and faster than fp32, but its rows move with the batch: the
    fastest is checked first, fails, and the next fastest is checked as it would be served
    (fails too), then the third is served. A candidate slower than the one served is never
    checked (first starts stay short), nor is the reference when it is not served."""
    from tests.unit.export.test_runtime import Fake

    cands = [Candidate("torch-bf16", lambda: Fake(backbone, noise=1e-5, batch_noise=1e-4)),
             Candidate("onnx-fp32", lambda: Fake(backbone, noise=1e-6, delay=0.005),
                       serving=lambda: Fake(backbone, batch_noise=1e-3)),
             Candidate("invariant", lambda: Fake(backbone, noise=1e-5, delay=0.010)),
             Candidate("slower", lambda: Fake(backbone, batch_noise=1e-3, delay=0.020))]
    choice, enc = choose(backbone, cands, GATE, sample=SAMPLE[:8])
    trials = {t.name: t for t in choice.trials}
    assert choice.runtime == "invariant" and enc.batch_noise == 0
    assert "not batch-invariant" in trials["torch-bf16"].error
    assert trials["onnx-fp32"].batch_max_diff > 1e-4  # the serving encoder was checked
    assert 0 <= trials["invariant"].batch_max_diff <= invariance.TOLERANCE  # checked, held
    assert trials["slower"].batch_max_diff == -1 and trials["torch-fp32"].batch_max_diff == -1
    assert "rejected: torch-bf16 (not batch-invariant" in choice.reason
    assert "batch invariance (alone vs mixed batches" in choice.reason


def test_auto_checks_the_reference_when_it_serves_it(backbone):
    """Every faster candidate moves with its batch: PyTorch fp32 is served, and its own
    invariance was measured (on the real backbone, bare and with LoRA rows)."""
    from tests.unit.export.test_runtime import Fake

    cands = [Candidate("torch-bf16", lambda: Fake(backbone, noise=1e-5, batch_noise=1e-4))]
    choice, enc = choose(backbone, cands, GATE, sample=SAMPLE[:8])
    trials = {t.name: t for t in choice.trials}
    assert choice.runtime == "torch-fp32" and enc is backbone
    assert 0 <= trials["torch-fp32"].batch_max_diff <= invariance.TOLERANCE
    assert choice.reason.startswith("no candidate that keeps accuracy and batch invariance is faster")
    assert "rejected: torch-bf16 (not batch-invariant" in choice.reason


def test_a_failing_check_stops_at_the_first_moved_call(backbone):
    """Admission needs one counter-example: the first padded call of 8 and its 8 lone rows."""
    calls = []

    class Counting(Shaped):
        def embed(self, texts, loras=None):
            calls.append(len(texts))
            return super().embed(texts, loras)

    report = invariance.check(Counting(backbone, 3e-5), SAMPLE, stop_at_first=True)
    assert not report.passed and report.rows == 8
    assert calls == [9] + [1] * 8  # 8 rows + the filler, then each of them alone


def test_static_int8_is_batch_invariant(backbone, tmp_path):
    """Calibrated int8 (export/static_int8.py): fixed activation scales and int32 sums, so a
    row's neighbours and padding do not change it, unlike dynamic int8 above."""
    from export import static_int8

    enc = static_int8.open_encoder(backbone, tmp_path, threads=1)
    assert static_int8.cache_path(tmp_path, backbone).exists()  # cached for the next start
    bare = invariance.check(enc, SAMPLE)
    with_lora = invariance.check(enc, SAMPLE, parity_adapters(backbone))
    assert bare.passed and with_lora.passed, (bare, with_lora)
    ref = backbone.embed(SAMPLE).numpy()
    got = np.asarray(enc.embed(SAMPLE))
    cos = np.sum(ref * got, 1) / (np.linalg.norm(ref, axis=1) * np.linalg.norm(got, axis=1))
    assert cos.min() > 0.98  # int8, not a broken graph (measured ~0.997)
