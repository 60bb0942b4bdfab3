"""ONNX export and the onnxruntime backbone runtime, on the real backbone and real data.

Expensive things (engine, one fp32 bundle, the ONNX backbone) are built once per session.
"""
from __future__ import annotations

import dataclasses
import io
import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from adapters import AdapterStore, Tailor
from benchmarks.datasets import trec_coarse
from export import (CLASSIFIER, OnnxEncoder, ParityError, ProviderUnavailable, create_session,
                    export_bundle)
from export.bundle import build_module
from export.parity import check_parity, parity_cases
from export.quantize import INT8_LADDER
from tests.bundles import agreement, unzip
from tests.conftest import seed_onnx_cache

TENANT = "default"


@pytest.fixture(scope="session")
def data():
    train, test = trec_coarse().few_shot(8, seed=0, max_test=64)
    return train, [t for t, _ in test]


@pytest.fixture(scope="session")
def engine(tmp_path_factory, data):
    t = Tailor.open(tmp_path_factory.mktemp("store"))
    t.checksum_at_start = t.encoder.weights_checksum()
    t.create_adapter(TENANT, "trec", "head", data[0])
    return t


@pytest.fixture(scope="session")
def bundle(engine, tmp_path_factory):
    """The fp32 bundle, exported once, unzipped."""
    out = tmp_path_factory.mktemp("bundles")
    result = export_bundle(engine.encoder, engine.store, TENANT, "trec", dest_dir=out)
    folder = out / "unzipped"
    zipfile.ZipFile(result.path).extractall(folder)
    return result, folder


def test_bundle_layout_and_manifest(engine, bundle):
    result, folder = bundle
    assert result.path.name == "trec-v1.onnx.zip"
    assert sorted(p.name for p in folder.iterdir()) == [
        "README.md", "labels.json", "manifest.json", "model.onnx", "tokenizer.json"]
    m = json.loads((folder / "manifest.json").read_text())
    assert m["adapter"]["ref"] == "trec@1"
    assert m["backbone"] == engine.encoder.identity.as_dict()
    assert m["opset"] == CLASSIFIER.opset and m["quantization"]["mode"] == "none"
    assert json.loads((folder / "labels.json").read_text()) == m["labels"]
    p = m["parity"]
    assert p["passed"] and p["max_abs_diff"] <= 1e-4
    # the adapter's own 48 examples, the fixed sample and every edge case were checked
    assert p["examples_rows"] == 48
    for case in ("one_token", "one_word", "max_length", "batch_1", "batch_16_mixed"):
        assert case in p["cases"]
    assert p["cases"]["batch_16_mixed"] == 16
    # the graph is stored (its weights do not deflate: export/bundle.py), the text deflated
    with zipfile.ZipFile(result.path) as z:
        methods = {i.filename: i.compress_type for i in z.infolist()}
    assert methods.pop("model.onnx") == zipfile.ZIP_STORED
    assert set(methods.values()) == {zipfile.ZIP_DEFLATED}, methods


def _run_no_torch(code: str, cwd: Path, stdin: str = "") -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, input=stdin, text=True,
                          capture_output=True, env=env, timeout=120)


def _assert_bundle_serves_like_engine(engine, folder: Path, adapter: str, texts: list[str]) -> None:
    """The bundle, run as its README says in a fresh interpreter with no torch, answers what
    the engine serves: every label, every probability within 1e-4."""
    served = engine.predict(TENANT, adapter, texts)["predictions"]
    got = agreement(folder, texts, served)
    assert got["top1_agreement"] == 1.0 and got["max_abs_diff"] < 1e-4, got


# int8 against PyTorch fp32 on held-out texts, computed by the tests (the exporter's own gate
# is 0.99 over its examples + its sample, 0.98 on the sample alone: export/quantize.py)
INT8_HELDOUT_AGREEMENT = 0.97


@pytest.fixture(scope="session")
def heldout(data):
    """300 TREC questions that neither the adapters (their examples) nor the exporter's own
    parity sample (export/sample.py) contain: int8 agreement is measured here, by the test."""
    from export.sample import HELDOUT_TEXTS

    _, test = trec_coarse().few_shot(8, seed=0, max_test=400)
    seen = {e["text"] for e in data[0]} | set(HELDOUT_TEXTS)
    return [t for t, _ in test if t not in seen][:300]


def _int8_agrees_with_engine(engine, bundle: bytes | Path, adapter: str, texts: list[str],
                             tmp: Path) -> dict:
    """Top-1 agreement of the int8 bundle, run as its README says, with the engine (PyTorch
    fp32: what the service serves) on ``texts``."""
    folder = unzip(bundle, tmp / "int8")
    served = [p for i in range(0, len(texts), 100)  # within TAILOR_MAX_INPUTS
              for p in engine.predict(TENANT, adapter, texts[i:i + 100])["predictions"]]
    got = agreement(folder, texts, served)
    print(f"\nint8 bundle of {adapter} vs PyTorch fp32 on {got['rows']} held-out texts: {got}")
    return got


def test_bundle_predictions_equal_the_engine_without_torch(engine, bundle, data):
    _assert_bundle_serves_like_engine(engine, bundle[1], "trec", data[1])


# -- LoRA: merged into a fresh copy of the backbone, + its head --------------------------------
@pytest.fixture(scope="session")
def lora_bundle(engine, data, tmp_path_factory):
    """A LoRA adapter trained for real (default recipe, fewer epochs), exported fp32."""
    pending = engine.create_adapter(TENANT, "trec-lora", "lora", data[0], {"epochs": 2})
    assert engine.wait_job(TENANT, pending["job"]["id"], timeout=600)["status"] == "succeeded"
    out = tmp_path_factory.mktemp("lora-bundle")
    result = export_bundle(engine.encoder, engine.store, TENANT, "trec-lora", dest_dir=out)
    folder = out / "unzipped"
    zipfile.ZipFile(result.path).extractall(folder)
    return result, folder


def test_lora_bundle_predictions_equal_the_engine_without_torch(engine, lora_bundle, data):
    result, folder = lora_bundle
    m = result.manifest
    assert m["adapter"]["kind"] == "lora" and m["adapter"]["ref"] == "trec-lora@1"
    assert m["parity"]["passed"] and m["parity"]["examples_rows"] == 48  # its own examples
    # the LoRA really moves the embeddings, so a bundle that forgot to merge it would fail below
    lora = engine.resolve(TENANT, "trec-lora").lora
    texts = data[1]
    tuned = engine.encoder.embed(texts, [lora] * len(texts))
    assert (tuned - engine.encoder.embed(texts)).abs().max() > 1e-2
    _assert_bundle_serves_like_engine(engine, folder, "trec-lora", texts)


def test_lora_merge_happens_on_a_copy(engine, lora_bundle):
    from adapters.encoders.lora import LoraWeights

    stored = engine.store.load(TENANT, "trec-lora")
    weights = LoraWeights.from_tensors(stored.tensors, stored.manifest.lora)
    module = build_module(engine.encoder, stored)
    served = dict(engine.encoder.model.named_modules())
    merged = dict(module.encoder.model.named_modules())
    name = next(iter(weights.a))
    delta = merged[name].weight - served[name].weight
    assert torch.allclose(delta, weights.delta_weight(name), atol=1e-6)
    assert engine.encoder.weights_checksum() == engine.checksum_at_start


def test_bundle_readme_code_runs_without_torch(bundle):
    _, folder = bundle
    readme = (folder / "README.md").read_text()
    code = re.search(r"```python\n(.*?)```", readme, re.S).group(1)
    proc = _run_no_torch(code + "\nimport sys\nassert 'torch' not in sys.modules\n", folder)
    assert proc.returncode == 0, proc.stderr
    assert "first text ->" in proc.stdout


def test_broken_graph_fails_parity(engine, bundle, tmp_path):
    """Shift the head's bias inside the exported graph: the check must catch it."""
    import onnx
    from onnx import numpy_helper

    _, folder = bundle
    model = onnx.load(str(folder / "model.onnx"))
    bias = next(i for i in model.graph.initializer if i.name.endswith("head.bias"))
    bias.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(bias) + 0.5 * np.arange(
        numpy_helper.to_array(bias).size, dtype=np.float32), bias.name))
    onnx.save(model, str(tmp_path / "broken.onnx"))
    stored = engine.store.load(TENANT, "trec")
    module = build_module(engine.encoder, stored)
    cases = parity_cases(engine.encoder)
    with pytest.raises(ParityError) as e:
        check_parity(module, create_session(tmp_path / "broken.onnx"), CLASSIFIER, cases)
    assert e.value.report.max_abs_diff > 1e-4 and not e.value.report.passed
    assert e.value.status == 422 and e.value.code == "export_parity_failed"


def test_failed_parity_publishes_nothing(engine, tmp_path):
    impossible = dataclasses.replace(CLASSIFIER, atol=1e-12)
    with pytest.raises(ParityError, match="nothing was published"):
        export_bundle(engine.encoder, engine.store, TENANT, "trec", dest_dir=tmp_path,
                      config=impossible)
    assert list(tmp_path.iterdir()) == []


def test_store_keeps_the_examples_checksummed(engine, data):
    from adapters.errors import CorruptAdapter

    assert engine.store.examples(TENANT, "trec") == data[0]
    m = engine.store.manifest(TENANT, "trec")
    path = engine.store.root / "tenants" / TENANT / "trec" / f"v{m.version}" / "examples.json"
    original = path.read_bytes()
    try:
        path.write_bytes(original.replace(b"?", b"!", 1))
        with pytest.raises(CorruptAdapter, match="examples.json"):
            engine.store.examples(TENANT, "trec")
    finally:
        path.write_bytes(original)


def test_unknown_adapter_and_bad_quantize(engine, tmp_path):
    from adapters.errors import AdapterNotFound, InvalidRequest

    with pytest.raises(AdapterNotFound):
        export_bundle(engine.encoder, engine.store, TENANT, "nope", dest_dir=tmp_path)
    with pytest.raises(InvalidRequest, match="quantize"):
        export_bundle(engine.encoder, engine.store, TENANT, "trec", quantize="fp16", dest_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []


# -- HTTP ---------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def client(engine):
    from fastapi.testclient import TestClient

    from service.api import create_app

    app = create_app()
    app.state.tailor = engine
    with TestClient(app) as c:
        yield c


def test_http_export_int8_returns_a_zip(client, engine, bundle, heldout, tmp_path):
    r = client.post("/adapters/trec@1/export", json={"quantize": "int8"})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/zip"
    z = zipfile.ZipFile(io.BytesIO(r.content))
    m = json.loads(z.read("manifest.json"))
    assert m["quantization"]["mode"] == "int8"
    p = m["parity"]
    # the gate reads the examples AND the fixed held-out texts (export/sample.py)
    assert p["passed"] and p["top1_agreement"] >= 0.99 and p["examples_rows"] == 48
    assert p["heldout_rows"] >= 126 and p["top1_agreement_heldout"] >= 0.98
    # a recipe of the ladder (the fastest that passed); the ones that failed are reported
    assert m["quantization"]["recipe"] == p["recipe"] in INT8_LADDER
    assert [a["recipe"] for a in p["attempts"]] == list(INT8_LADDER[:INT8_LADDER.index(p["recipe"])])
    # int8 MatMul weights AND an int8 word-embedding table: well under half the fp32 graph
    assert z.getinfo("model.onnx").file_size < 0.4 * (bundle[1] / "model.onnx").stat().st_size
    # the backbone's MatMuls are int8, the head is not
    import onnx

    graph = onnx.load_from_string(z.read("model.onnx")).graph
    int8 = [n.name for n in graph.node if n.op_type in ("MatMulInteger", "MatMulNBits")]
    assert len(int8) >= 36 and not [n for n in int8 if n.startswith("/head/")]
    assert {i.name for i in graph.initializer if i.data_type == onnx.TensorProto.INT8} & {
        i.name for i in graph.initializer if i.name.endswith(".int8")}
    # the bundle itself, run as its README says on texts the exporter never saw
    got = _int8_agrees_with_engine(engine, r.content, "trec", heldout, tmp_path)
    assert got["top1_agreement"] >= INT8_HELDOUT_AGREEMENT, got


def test_int8_lora_export_keeps_parity_on_heldout_texts(engine, lora_bundle, heldout, tmp_path):
    """Issue 12: an int8 export of a LoRA adapter passes >= 99% top-1 agreement with PyTorch
    fp32 over its examples and the held-out texts (until then it was refused, or passed on
    its examples and agreed on 95% of held-out texts)."""
    result = export_bundle(engine.encoder, engine.store, TENANT, "trec-lora", dest_dir=tmp_path,
                           quantize="int8")
    m = result.manifest
    p = m["parity"]
    assert m["adapter"]["kind"] == "lora" and m["quantization"]["mode"] == "int8"
    assert p["passed"] and p["top1_agreement"] >= 0.99 and p["heldout_rows"] >= 126
    assert p["recipe"] in INT8_LADDER
    fp32 = zipfile.ZipFile(lora_bundle[0].path).getinfo("model.onnx").file_size
    assert zipfile.ZipFile(result.path).getinfo("model.onnx").file_size < 0.4 * fp32
    # what the manifest claims, measured: the bundle run as its README says, against the
    # engine's PyTorch fp32 answers, on 300 questions the exporter never saw
    got = _int8_agrees_with_engine(engine, result.path, "trec-lora", heldout, tmp_path)
    assert got["top1_agreement"] >= INT8_HELDOUT_AGREEMENT, got


@pytest.mark.parametrize("path,body,status,code", [
    ("/adapters/nope/export", {"quantize": "none"}, 404, "adapter_not_found"),
    ("/adapters/trec@9/export", {}, 404, "adapter_not_found"),
    ("/adapters/trec/export", {"quantize": "fp16"}, 422, "invalid_request"),
    ("/adapters/trec/export", {"quantize": "none", "extra": 1}, 422, "invalid_request"),
    ("/adapters/bad..name/export", {}, 422, "invalid_name"),
])
def test_http_export_errors(client, path, body, status, code):
    r = client.post(path, json=body)
    assert r.status_code == status, r.text
    assert r.json()["error"]["code"] == code


# -- CLI ----------------------------------------------------------------------------------
def test_cli_export_from_store_folder(engine, tmp_path, capsys):
    from service.cli_export import main

    assert main(["trec", "--store", str(engine.store.root), "--out", str(tmp_path)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert Path(out["bundle"]).exists() and out["adapter"] == "trec@1" and out["parity"]["passed"]
    assert main(["nope", "--store", str(engine.store.root), "--out", str(tmp_path)]) == 2
    assert main(["trec", "--store", str(tmp_path / "missing"), "--out", str(tmp_path)]) == 2
    capsys.readouterr()
    # the tailor command has it too; a provider this machine lacks is refused by name
    from service.cli import main as tailor

    assert tailor(["export", "trec", "--store", str(engine.store.root), "--out", str(tmp_path / "x"),
                   "--providers", "NoSuchExecutionProvider"]) == 2
    assert "NoSuchExecutionProvider" in capsys.readouterr().err
    assert not (tmp_path / "x").exists() or not list((tmp_path / "x").glob("*.zip"))


# -- onnxruntime backbone runtime -----------------------------------------------------------
@pytest.mark.parametrize("provider", ["CUDAExecutionProvider", "NoSuchExecutionProvider"])
def test_unavailable_provider_fails_naming_it(engine, tmp_path, provider):
    with pytest.raises(ProviderUnavailable, match=provider):
        OnnxEncoder.open(engine.encoder, tmp_path, providers=["CPUExecutionProvider", provider])
    assert not (tmp_path / ".onnx").exists()  # failed before any export


def test_settings_select_the_onnx_runtime():
    from service.settings import Settings, SettingsError

    s = Settings.from_env({"TAILOR_RUNTIME": "onnx", "TAILOR_ONNX_QUANTIZE": "none",
                           "TAILOR_ONNX_PROVIDERS": "CUDAExecutionProvider, CPUExecutionProvider"})
    assert (s.runtime, s.onnx_quantize, s.onnx_cuda_tf32) == ("onnx", "none", False)
    assert s.providers() == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert Settings.from_env({"TAILOR_RUNTIME": "onnx", "TAILOR_ONNX_QUANTIZE": "int8"}).onnx_quantize == "int8"
    # dynamic int8 measured 0.05-0.7x of PyTorch on an H200: refused with CUDA, saying why
    with pytest.raises(SettingsError, match="TAILOR_ONNX_QUANTIZE=int8 with CUDAExecutionProvider"):
        Settings.from_env({"TAILOR_RUNTIME": "onnx", "TAILOR_ONNX_QUANTIZE": "int8",
                           "TAILOR_ONNX_PROVIDERS": "CUDAExecutionProvider"})
    # onnx-int8-rows' kernels are CPU kernels: asking for a GPU with it is refused, saying why
    assert Settings.from_env({"TAILOR_RUNTIME": "onnx-int8-rows"}).runtime == "onnx-int8-rows"
    with pytest.raises(SettingsError, match="onnx-int8-rows runs on onnxruntime's CPU provider only"):
        Settings.from_env({"TAILOR_RUNTIME": "onnx-int8-rows",
                           "TAILOR_ONNX_PROVIDERS": "CUDAExecutionProvider,CPUExecutionProvider"})
    assert Settings.model_fields["runtime"].default == "auto"  # tests/unit/export/test_runtime.py
    with pytest.raises(SettingsError, match="TAILOR_RUNTIME"):
        Settings.from_env({"TAILOR_RUNTIME": "tensorflow"})


def test_engine_on_onnx_runtime_predicts_like_torch(engine, data, lora_bundle, onnx_graphs):
    # the run's build of the two graphs (tests/conftest.py onnx_graphs: the
    # cached_graphs that open() runs on a cache miss), found in the store's cache folder as a
    # replica finds what another one built
    seed_onnx_cache(onnx_graphs, engine.store.root / ".onnx")
    ob = OnnxEncoder.open(engine.encoder, engine.store.root)
    cached = list((engine.store.root / ".onnx").glob(f"{engine.encoder.identity.sha256}-none-op*.onnx"))
    assert len(cached) == 1
    assert list((engine.store.root / ".onnx").glob(f"{engine.encoder.identity.sha256}-none-lora-*.onnx"))
    mtime = cached[0].stat().st_mtime
    onnx_engine = Tailor(ob, AdapterStore(engine.store.root, ob.identity))
    texts = data[1]
    got = onnx_engine.predict(TENANT, "trec", texts)["predictions"]
    want = engine.predict(TENANT, "trec", texts)["predictions"]
    assert [p["label"] for p in got] == [p["label"] for p in want]
    assert max(abs(g["score"] - w["score"]) for g, w in zip(got, want)) < 1e-4
    emb = ob.embed(["one", "two words", "three words here"])
    assert emb.shape == (3, engine.encoder.dim)
    # issue 12: a mixed batch of LoRA, head and bare rows is ONE onnxruntime call of the
    # LoRA-routed graph (export/lora_graph.py), none on PyTorch, equal to PyTorch's rows
    lora = engine.resolve(TENANT, "trec-lora")
    head = engine.resolve(TENANT, "trec")
    rows = [(lora if i % 3 == 0 else head if i % 3 == 1 else None, t) for i, t in enumerate(texts[:32])]
    calls = {"ort": 0, "torch": 0}

    class Counting:
        def __init__(self, inner, key):
            self.inner, self.key = inner, key

        def run(self, *a, **k):
            calls[self.key] += 1
            return self.inner.run(*a, **k)

        def __getattr__(self, name):
            return getattr(self.inner, name)

    ob.session, ob.lora_session = Counting(ob.session, "ort"), Counting(ob.lora_session, "ort")
    torch_embed = ob.torch_encoder.embed_prepared

    def counted(*a, **k):
        calls["torch"] += 1
        return torch_embed(*a, **k)

    ob.torch_encoder.embed_prepared = counted
    try:
        got_rows = onnx_engine.run_rows(rows)
    finally:
        del ob.torch_encoder.embed_prepared
    assert calls == {"ort": 1, "torch": 0}
    for got_row, want_row in zip(got_rows, engine.run_rows(rows)):
        assert (got_row - want_row).abs().max() < 1e-4
    # the second start reuses the cached graph (exported once per backbone hash)
    OnnxEncoder.open(engine.encoder, engine.store.root)
    assert cached[0].stat().st_mtime == mtime


def test_int8_rows_bundles_reproduce_the_service_on_onnx_int8_rows(engine, data, lora_bundle,
                                                                    onnx_graphs, tmp_path):
    """issue 20: under TAILOR_RUNTIME=onnx-int8-rows, a head adapter's and a LoRA adapter's
    int8-rows export answer what the service answers (the engine on that runtime, LoRA rows
    in its routed int8 graph), run the README's way without torch: the same labels, scores
    within 1e-4 (measured ~1e-6). The head stays fp32, every encoder Linear is int8."""
    import onnx

    from export.calibration import weight_matmuls
    from export.runtimes import RuntimeOptions, get_runtime
    from tests.bundles import agreement

    seed_onnx_cache(onnx_graphs, tmp_path / "cache")  # the run's build (its own test: test_invariance)
    served_encoder = get_runtime("onnx-int8-rows").open(engine.encoder,
                                                        RuntimeOptions(tmp_path / "cache", threads=1))
    assert served_encoder.lora_session is not None  # LoRA rows run in the routed int8 graph
    served = Tailor(served_encoder, AdapterStore(engine.store.root, served_encoder.identity))
    texts = data[1]
    for name in ("trec", "trec-lora"):
        result = export_bundle(engine.encoder, engine.store, TENANT, name, quantize="int8-rows",
                               dest_dir=tmp_path / name)
        assert result.path.name.endswith("-int8rows.onnx.zip")
        m = result.manifest
        assert m["quantization"]["mode"] == "int8-rows" and m["parity"]["passed"]
        assert m["parity"]["max_abs_diff"] <= 1e-4
        # what fp32 would answer: reported, not gated (measured 100% for the head, 98.9% for
        # this 2-epoch LoRA: 2 of 126 held-out texts)
        assert 0.95 <= m["parity"]["vs_pytorch_fp32"]["top1_agreement"] <= 1
        folder = unzip(result.path, tmp_path / name / "unzipped")
        graph = onnx.load(str(folder / "model.onnx"))
        assert not weight_matmuls(graph)  # every encoder Linear is int8 (the head is a Gemm)
        assert sum(n.op_type == "MatMulIntegerToFloat" for n in graph.graph.node) == 24
        answers = served.predict(TENANT, name, texts)["predictions"]
        got = agreement(folder, texts, answers)
        assert got["top1_agreement"] == 1.0 and got["max_abs_diff"] <= 1e-4, (name, got)
    # an adapter whose rows the runtime serves on PyTorch (it adapts a Linear the routed graph
    # does not route) is refused with what to do, before any work (nothing written in ``work``)
    from adapters.encoders.lora import LoraSpec, LoraWeights
    from adapters.errors import InvalidRequest
    from adapters.kinds import get_kind
    from export import int8_rows

    trained = get_kind("lora").load(engine.store.load(TENANT, "trec-lora"))
    dense = LoraWeights.init(engine.encoder.model, LoraSpec(rank=4, alpha=8, targets=("dense",)),
                             seed=0, identity=False)
    (tmp_path / "dense").mkdir()
    with pytest.raises(InvalidRequest, match='export it with {"quantize": "none"}'):
        int8_rows.bundle_graph(engine.encoder, dataclasses.replace(trained, lora=dense),
                               tmp_path / "dense", [], CLASSIFIER)
    assert not list((tmp_path / "dense").iterdir())


def test_served_backbone_unchanged_after_exports(engine):
    """Runs last in this file: every export above copied the backbone, none changed it."""
    assert engine.encoder.weights_checksum() == engine.checksum_at_start
