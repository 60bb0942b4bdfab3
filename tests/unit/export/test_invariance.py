"""Batch invariance (issue 20, export/runtimes/invariance.py): a text embedded alone and inside mixed,
differently padded batches gets the same embedding, within 1e-5. The check is part of every
``TAILOR_RUNTIME=auto`` candidate's admission: PyTorch fp32 keeps it; bf16 and dynamic int8
do not on this machine (their roundings follow the batch's shape or its activation range)."""
from __future__ import annotations

import numpy as np
import pytest

from adapters.encoders.text import has_bf16_matrix_units, has_int8_dot_products
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
    assert choice.reason.startswith("no candidate that keeps accuracy and batch invariance ranks above")
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


def _bf16_rows(backbone):
    from pathlib import Path

    from export.runtimes import RuntimeOptions, get_runtime

    return get_runtime("torch-bf16-rows").open(backbone, RuntimeOptions(Path("unused")))


@pytest.mark.skipif(not has_bf16_matrix_units(), reason="no bf16 matrix units on this CPU")
def test_bf16_with_row_attention_passes_the_admission(backbone):
    """torch-bf16-rows (adapters/encoders/row_attention.py): the same bf16 weights as
    torch-bf16 above, which fails, but attention row by row on real tokens; auto's own
    admission (the accuracy gate, then the invariance check bare and with LoRA rows of
    three ranks) accepts it. On avx512_bf16 the rows are bitwise equal (max diff 0)."""
    from export.runtimes.auto import admit, measure

    enc = _bf16_rows(backbone)
    ref = backbone.embed(SAMPLE).numpy()
    trial = measure("torch-bf16-rows", enc, ref, SAMPLE, GATE)
    admit(trial, enc, SAMPLE, parity_adapters(backbone))
    assert trial.passed, trial.why_not()
    assert 0 <= trial.batch_max_diff <= invariance.TOLERANCE
    assert trial.min_cosine > 0.999  # bf16, not a broken attention (measured 0.99984)


@pytest.mark.skipif(not has_bf16_matrix_units(), reason="no bf16 matrix units on this CPU")
def test_bf16_rows_tiny_texts_with_lora_alone_equal_in_a_padded_batch(backbone):
    """A 1-3 token text's LoRA update is a GEMM of under 4 rows alone, which PyTorch's fp32
    GEMM computes with another kernel (~1e-7 apart) that bf16 then rounds apart (3.2e-3
    measured); lora.py pads such products to 4 rows. Each tiny text, with each adapter,
    alone vs beside a long text of another adapter and a bare row, and with its own adapter
    beside longer texts. ("ok" with the rank-8 adapter is the case that moved.)"""
    enc = _bf16_rows(backbone)
    adapters = [w for w in parity_adapters(backbone) if w is not None]
    long_text = max(SAMPLE, key=len)
    tiny = [t for t in SAMPLE if len(backbone.prepare([t])[0]) <= 3] + ["", "hi", "spam"]
    assert "ok" in tiny
    for text in tiny:
        for k, w in enumerate(adapters):
            alone = np.asarray(enc.embed([text], [w]))[0]
            other = adapters[(k + 1) % len(adapters)]
            mixed = np.asarray(enc.embed([long_text, text, "a bare row"], [other, w, None]))[1]
            same = np.asarray(enc.embed([text, "another text of some length", long_text], [w] * 3))[0]
            for got in (mixed, same):
                assert np.abs(alone - got).max() <= invariance.TOLERANCE, (text, w.spec)


def test_row_attention_computes_the_same_attention_as_sdpa(backbone):
    """In fp32 the row-by-row attention and transformers' SDPA attention agree on a padded
    batch (right padding: real rows' tokens; what pooling reads): same maths, other shapes."""
    import torch

    from adapters.encoders import row_attention

    rows = backbone.prepare([SAMPLE[0], SAMPLE[-1], "", "x"])
    batch = backbone.collate(rows)
    model = backbone.fresh_model()
    model.set_attn_implementation("sdpa")
    with torch.inference_mode():
        ref = backbone.forward(batch, model)
        model.set_attn_implementation(row_attention.register())
        got = backbone.forward(batch, model)
    assert float((ref - got).abs().max()) < 1e-5


# -- torch-int8-rows (adapters/encoders/int8_rows.py): exact int32 GEMMs, per-token scales ------
@pytest.fixture(scope="module")
def int8_rows(backbone):
    from pathlib import Path

    from export.runtimes import RuntimeOptions, get_runtime

    return get_runtime("torch-int8-rows").open(backbone, RuntimeOptions(Path("unused")))


def test_int8_linear_answers_a_row_alike_in_any_batch_and_close_to_fp32():
    """The GEMM is int8 x int8 into int32, exact, and each row has its own activation scale:
    a row's output is bitwise the same alone and among others, whatever their range (here a
    neighbour 1000x larger: one scale per batch, dynamic int8's, would lose this row)."""
    import torch

    from adapters.encoders.int8_rows import Int8Linear

    torch.manual_seed(0)
    lin = torch.nn.Linear(384, 1536)
    x = torch.randn(5, 384)
    for asymmetric in (False, True):
        q = Int8Linear(lin, act_max=x.abs().amax(0), asymmetric=asymmetric)
        alone = q(x[:1])
        batch = q(torch.cat([x[:1], 1000 * x[1:]]))
        assert torch.equal(alone[0], batch[0]), asymmetric
        with torch.no_grad():
            want = lin(x[:1])
        assert torch.allclose(alone, want, atol=0.05 * want.abs().max()), asymmetric


@pytest.mark.skipif(not has_int8_dot_products(), reason="no int8 dot-product units on this CPU")
def test_int8_rows_passes_the_admission_bitwise(backbone, int8_rows):
    """torch-int8-rows: auto's own admission (the accuracy gate, then the invariance check
    bare and with LoRA rows of three ranks) accepts it, and the rows are BITWISE equal alone
    and in mixed batches (measured max diff 0, mean drift 8.5e-4 against the gate's 1e-3)."""
    from export.runtimes.auto import admit, measure

    ref = backbone.embed(SAMPLE).numpy()
    trial = measure("torch-int8-rows", int8_rows, ref, SAMPLE, GATE)
    admit(trial, int8_rows, SAMPLE, parity_adapters(backbone))
    assert trial.passed, trial.why_not()
    assert trial.batch_max_diff == 0.0
    assert 0.995 <= trial.min_cosine < 0.9999  # int8: close, not the fp32 weights by mistake


@pytest.mark.skipif(not has_int8_dot_products(), reason="no int8 dot-product units on this CPU")
def test_int8_rows_applies_lora_rows_like_fp32(backbone, int8_rows):
    """The LoRA routing hooks sit on the int8 modules: each adapter moves its rows as it does
    on fp32 (the update itself stays fp32), and a bare row in the same call does not move."""
    adapters = [w for w in parity_adapters(backbone) if w is not None]
    texts = SAMPLE[:len(adapters)] + [SAMPLE[-1]]
    rows = adapters + [None]
    got = np.asarray(int8_rows.embed(texts, rows))
    bare = np.asarray(int8_rows.embed(texts))
    want = np.asarray(backbone.embed(texts, rows))
    for i, w in enumerate(rows):
        moved = float(np.abs(got[i] - bare[i]).max())
        assert (moved > 1e-3) if w is not None else (moved == 0.0), (i, moved)
        cos = float(got[i] @ want[i] / np.linalg.norm(got[i]) / np.linalg.norm(want[i]))
        assert cos > 0.99, (i, cos)


# -- onnx-int8-rows (export/int8_rows.py): the same per-token int8 maths as one onnxruntime graph --
def test_onnx_int8_rows_passes_the_admission_and_quantizes_every_linear(backbone, tmp_path):
    """Opened through the registry as the service does (TAILOR_RUNTIME=onnx-int8-rows): the
    graph is cached, every encoder Linear is an int8 GEMM (no fp32 MatMul with a weight is
    left; per layer one quantization and one GEMM for Q, K and V, then the attention output and
    the FFN's two), and auto's own admission accepts it: the gate (measured mean drift 7.6e-4,
    min cosine 0.9967), then alone vs mixed, padded batches bare and with LoRA rows within
    1e-5 (measured 3e-7). LoRA rows of the routed targets run in the LoRA-routed int8 graph,
    whose base GEMMs are the plain graph's very int8 weights; the others on PyTorch fp32."""
    from collections import Counter

    import onnx

    from export import int8_rows
    from export.calibration import weight_matmuls
    from export.runtimes import RuntimeOptions, get_runtime
    from export.runtimes.auto import admit, measure

    enc = get_runtime("onnx-int8-rows").open(backbone, RuntimeOptions(tmp_path, threads=1))
    path = int8_rows.cache_path(tmp_path, backbone)
    routed = int8_rows.cache_path(tmp_path, backbone, ("query", "value"))
    assert path.exists() and routed.exists() and not list(tmp_path.glob(".build-*"))
    assert enc.lora_session is not None
    for graph in (path, routed):
        model = onnx.load(str(graph))
        ops = Counter(n.op_type for n in model.graph.node)
        assert ops["MatMulIntegerToFloat"] == 24 and ops["QuantizeLinear"] == 24, ops
        assert not weight_matmuls(model)  # LoRA's low-rank MatMuls read graph inputs: fp32
    adapters = parity_adapters(backbone)
    assert [enc.routes(a) for a in adapters[1:]] == [True, False, True]  # key+dense: PyTorch
    ref = backbone.embed(SAMPLE).numpy()
    trial = measure("onnx-int8-rows", enc, ref, SAMPLE, GATE)
    admit(trial, enc, SAMPLE, adapters)
    assert trial.passed, trial.why_not()
    assert 0.995 <= trial.min_cosine < 0.9999  # int8: close, not the fp32 weights by mistake


@pytest.mark.parametrize("zero_point", [True, False])
def test_quantize_rows_answers_a_token_alike_beside_a_1000x_larger_one(zero_point):
    """export/int8_rows.py on a one-MatMul graph: each token gets its own scale (and zero
    point, or the served recipe's symmetric variant) and the sums are int32, so a token's
    output is bitwise the same alone and beside a token 1000x larger (one scale per batch,
    dynamic int8's, would crush it), and close to fp32."""
    import re

    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from export.int8_rows import calibrate, quantize_rows

    rng = np.random.default_rng(0)
    w = rng.standard_normal((16, 8)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"], name="/dense/MatMul")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, None, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, None, 8])],
        [numpy_helper.from_array(w, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    x = rng.standard_normal((1, 3, 16)).astype(np.float32)
    maxima = calibrate(model, [{"x": x}], ["/dense/MatMul"])
    rows = quantize_rows(model, maxima, asymmetric=None if zero_point else re.compile(r"(?!)"))
    sess = ort.InferenceSession(rows.SerializeToString(), providers=["CPUExecutionProvider"])
    alone = sess.run(None, {"x": x[:, :1]})[0][0, 0]
    together = sess.run(None, {"x": np.concatenate([x[:, :1], 1000 * x[:, 1:]], 1)})[0][0, 0]
    assert np.array_equal(alone, together)
    want = x[0, 0] @ w
    assert np.allclose(alone, want, atol=0.05 * np.abs(want).max())
