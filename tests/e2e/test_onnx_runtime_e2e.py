"""A real `bentoml serve` on the onnxruntime backbone: a provider that is not there stops the
start-up, and int8 serves, predicts and exports (the in-process side of the ONNX runtime is
tests/unit/export/test_onnx_export.py)."""
from __future__ import annotations

import io
import json
import time
import zipfile

import httpx
import pytest

from benchmarks.datasets import trec_coarse
from tests.bundles import agreement, unzip
from tests.conftest import Server

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def data():
    train, test = trec_coarse().few_shot(8, seed=0, max_test=64)
    return train, [t for t, _ in test]


def test_serve_refuses_to_start_on_an_unavailable_provider(tmp_path):
    """The worker's start-up fails with a message naming the provider and /readyz never
    answers 200 (BentoML keeps its supervisor alive; the pod just never becomes ready)."""
    srv = Server(tmp_path / "store", env={"TAILOR_RUNTIME": "onnx",
                                          "TAILOR_ONNX_PROVIDERS": "CUDAExecutionProvider"}).launch()
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and "startup failed" not in srv.tail(20000):
            time.sleep(1)
        tail = srv.tail(20000)
        assert "startup failed" in tail and "CUDAExecutionProvider" in tail
        assert "ProviderUnavailable" in tail
        try:
            ready = httpx.get(srv.url + "/readyz", timeout=2).status_code
        except httpx.HTTPError:
            ready = None
        assert ready != 200
    finally:
        srv.stop()


def test_serve_on_onnx_int8_predicts_and_exports(tmp_path, data):
    srv = Server(tmp_path / "store", env={"TAILOR_RUNTIME": "onnx", "TAILOR_ONNX_QUANTIZE": "int8"})
    srv.start()
    try:
        with srv.client() as c:
            r = c.post("/v1/adapters", json={"name": "trec", "examples": data[0]})
            assert r.status_code == 201, r.text
            r = c.post("/v1/predict", json={"adapter": "trec", "inputs": data[1]})
            assert r.status_code == 200, r.text
            served = r.json()["predictions"]
            labels = c.get("/v1/adapters/trec").json()["labels"]
            r = c.post("/v1/adapters/trec/export", json={"quantize": "none"}, timeout=300)
            assert r.status_code == 200 and r.headers["content-type"] == "application/zip"
            m = json.loads(zipfile.ZipFile(io.BytesIO(r.content)).read("manifest.json"))
            assert m["parity"]["passed"] and m["quantization"]["mode"] == "none"
        assert list((srv.store / ".onnx").glob("*-int8-op17.onnx"))
        # forced, so served; the start-up log says why auto would not serve it
        assert "runtime onnx-int8 (forced) would NOT be served by TAILOR_RUNTIME=auto here: " \
               "onnx-int8 (mean drift" in srv.tail(200_000)
    finally:
        srv.stop()
    assert len(served) == len(data[1]) and all(
        p["label"] in labels and abs(sum(p["scores"].values()) - 1) < 1e-4 for p in served)
    # the fp32 bundle of the same adapter (a PyTorch fp32 backbone merged into a copy) run as
    # its README says: the int8 runtime's answers keep its top-1 label on almost every row
    got = agreement(unzip(r.content, tmp_path / "bundle"), data[1], served)
    print(f"\nserved on onnx int8 vs its fp32 bundle, {got['rows']} texts: {got}")
    assert got["top1_agreement"] >= 0.9, got
    assert got["max_abs_diff"] > 1e-4  # int8 really served: an fp32 runtime is within 1e-4
