"""HTTP tests through the service's ASGI app (FastAPI, no BentoML process) with the real
backbone: the contract, the error mapping, and that bad input never changes the store."""
from __future__ import annotations

import pytest
from starlette.testclient import TestClient

from adapters import AdapterStore, Limits, Tailor
from benchmarks.datasets import bbc_news
from service.api import create_app
from tests.conftest import snapshot

LIMITS = Limits(max_inputs=8, max_chars=2000, max_examples=60, max_labels=6, max_label_chars=20)


@pytest.fixture(scope="module")
def bbc():
    return bbc_news().few_shot(8, seed=1, max_test=60)


@pytest.fixture(scope="module")
def api(backbone, tmp_path_factory, bbc):
    store = tmp_path_factory.mktemp("api") / "store"
    app = create_app(max_body_bytes=200_000)
    app.state.tailor = Tailor(backbone, AdapterStore(store, backbone.identity), limits=LIMITS)
    with TestClient(app, raise_server_exceptions=False) as client:
        r = client.post("/adapters", json={"name": "news", "kind": "head", "examples": bbc[0]})
        assert r.status_code == 201, r.text
        yield client, store


def test_create_returns_record_with_quality_estimate(api, bbc):
    client, _ = api
    rec = client.get("/adapters/news").json()
    assert rec["name"] == "news" and rec["kind"] == "head" and rec["status"] == "ready"
    assert rec["labels"] == sorted({e["label"] for e in bbc[0]})
    assert rec["metrics"]["examples"] == 40 and rec["metrics"]["cv_folds"] == 5
    assert rec["metrics"]["cv_accuracy"] > 0.6
    assert rec["backbone"]["name"] == "all-MiniLM-L6-v2" and len(rec["backbone"]["sha256"]) == 64
    assert rec["versions"] == [1]


def test_predict_is_accurate_on_held_out_news(api, bbc):
    client, _ = api
    test = bbc[1][:40]
    preds = []
    for i in range(0, len(test), 8):
        r = client.post("/predict", json={"adapter": "news", "inputs": [t for t, _ in test[i:i + 8]]})
        assert r.status_code == 200, r.text
        assert r.json()["adapter"] == "news@1"
        preds += r.json()["predictions"]
    acc = sum(p["label"] == y for p, (_, y) in zip(preds, test)) / len(test)
    assert acc >= 0.8, acc  # chance is 0.2
    p = preds[0]
    assert set(p["scores"]) == {"business", "entertainment", "politics", "sports", "tech"}
    assert abs(sum(p["scores"].values()) - 1) < 1e-5 and p["score"] == max(p["scores"].values())


def test_embed_gives_unit_vectors(api):
    client, _ = api
    r = client.post("/embed", json={"inputs": ["hello world", "goodbye"]}).json()
    assert r["dim"] == 384 and len(r["embeddings"]) == 2
    assert abs(sum(v * v for v in r["embeddings"][0]) - 1) < 1e-4


def test_versions_list_and_delete(api, bbc):
    client, _ = api
    ex = bbc[0][:16]
    assert client.post("/adapters", json={"name": "tmp", "examples": ex}).json()["version"] == 1
    assert client.post("/adapters", json={"name": "tmp", "examples": ex}).json()["version"] == 2
    names = {a["name"]: a["version"] for a in client.get("/adapters").json()["adapters"]}
    assert names["tmp"] == 2
    assert client.post("/predict", json={"adapter": "tmp@1", "inputs": ["x"]}).json()["adapter"] == "tmp@1"
    assert client.delete("/adapters/tmp", params={"version": 1}).json()["deleted_versions"] == [1]
    assert client.post("/predict", json={"adapter": "tmp@1", "inputs": ["x"]}).status_code == 404
    assert client.delete("/adapters/tmp").json()["deleted_versions"] == [2]
    assert client.get("/adapters/tmp").status_code == 404


def test_multi_label_adapter(api):
    client, _ = api
    examples = []
    for i in range(6):
        examples += [{"text": f"the striker scored a goal in the match {i}", "labels": ["sport"]},
                     {"text": f"parliament voted on the new tax law {i}", "labels": ["politics"]},
                     {"text": f"the minister attended the football final {i}", "labels": ["sport", "politics"]},
                     {"text": f"a recipe for chocolate cake {i}", "labels": []}]
    r = client.post("/adapters", json={"name": "multi", "examples": examples})
    assert r.status_code == 201, r.text
    assert r.json()["multi_label"] and "cv_f1_micro" in r.json()["metrics"]
    p = client.post("/predict", json={"adapter": "multi", "inputs": ["the goalkeeper saved a penalty"]}).json()
    assert p["predictions"][0]["labels"] == ["sport"]
    client.delete("/adapters/multi")


EX2 = [{"text": "good", "label": "pos"}, {"text": "bad", "label": "neg"}]

BAD = [
    # (method, path, json body, status, code, fragment of the message)
    ("post", "/adapters", {"name": "x", "examples": [{"text": "a", "label": "p"}, {"text": "b", "label": "p"}]},
     422, "invalid_examples", "at least 2 different labels"),
    ("post", "/adapters", {"name": "x", "examples": []}, 422, "invalid_examples", "both are empty"),
    ("post", "/adapters", {"name": "x", "examples": [{"text": "", "label": "p"}, EX2[1]]}, 422,
     "invalid_examples", "examples[0].text is empty"),
    ("post", "/adapters", {"name": "x", "examples": [{"text": 5, "label": "p"}, EX2[1]]}, 422,
     "invalid_request", "examples.0.text"),
    ("post", "/adapters", {"name": "x", "examples": EX2, "options": {"colour": "red"}}, 422,
     "invalid_options", "colour: unknown option"),
    ("post", "/adapters", {"name": "x", "examples": EX2, "options": {"labels": ["pos", "neg", "meh"]}},
     422, "invalid_examples", "'meh'"),
    ("post", "/adapters", {"name": "../../etc", "examples": EX2}, 422, "invalid_name", "not allowed"),
    ("post", "/adapters", {"name": "x", "kind": "magic", "examples": EX2}, 422, "invalid_request", "kind"),
    ("post", "/adapters", {"name": "x", "examples": EX2, "extra": 1}, 422, "invalid_request", "extra: unknown field"),
    ("post", "/adapters", {"examples": EX2}, 422, "invalid_request", "name: required"),
    ("post", "/adapters", {"name": "x", "examples": EX2 * 31}, 413, "too_large", "limit is 60"),
    ("post", "/adapters", {"name": "x", "examples": [{"text": "a" * 2001, "label": "p"}, EX2[1]]}, 413,
     "too_large", "limit is 2000"),
    ("post", "/adapters", {"name": "x", "examples": [{"text": f"t{i}", "label": f"l{i}"} for i in range(7)]},
     422, "invalid_examples", "limit is 6"),
    ("post", "/predict", {"adapter": "nope", "inputs": ["a"]}, 404, "adapter_not_found", "does not exist"),
    ("post", "/predict", {"adapter": "news@7", "inputs": ["a"]}, 404, "adapter_not_found", "no version 7"),
    ("post", "/predict", {"adapter": "news@0", "inputs": ["a"]}, 422, "invalid_name", "positive integer"),
    ("post", "/predict", {"adapter": "news", "inputs": []}, 422, "invalid_request", "non-empty"),
    ("post", "/predict", {"adapter": "news", "inputs": [""]}, 422, "invalid_examples", "inputs[0] is empty"),
    ("post", "/predict", {"adapter": "news", "inputs": [None]}, 422, "invalid_request", "inputs.0"),
    ("post", "/predict", {"adapter": "news", "inputs": "just a string"}, 422, "invalid_request", "inputs"),
    ("post", "/predict", {"adapter": "news", "inputs": ["a"] * 9}, 413, "too_large", "limit is 8"),
    ("post", "/predict", {"adapter": "news", "inputs": ["a" * 2001]}, 413, "too_large", "limit is 2000"),
    ("post", "/embed", {"inputs": []}, 422, "invalid_request", "non-empty"),
    ("get", "/adapters/nope", None, 404, "adapter_not_found", "does not exist"),
    ("get", "/adapters/a%20b", None, 422, "invalid_name", "not allowed"),
    ("get", "/adapters/..%2F..%2Fetc", None, 404, "not_found", "no route"),
    ("delete", "/adapters/nope", None, 404, "adapter_not_found", "does not exist"),
    ("delete", "/adapters/news?version=0", None, 422, "invalid_request", "version"),
    ("get", "/no/such/route", None, 404, "not_found", "no route"),
]


@pytest.mark.parametrize("method,path,body,status,code,fragment", BAD,
                         ids=[f"{b[0]} {b[1]} {b[3]} {b[5][:20]}" for b in BAD])
def test_bad_input_is_a_clear_4xx_and_changes_nothing(api, method, path, body, status, code, fragment):
    client, store = api
    before = snapshot(store)
    r = client.request(method.upper(), path, json=body)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["code"] == code and fragment in err["message"], err
    assert snapshot(store) == before


@pytest.mark.parametrize("raw,status,code", [
    (b"{not json", 400, "invalid_json"),
    (b"[1, 2]", 422, "invalid_request"),
    (b"\xff\xfe\x00garbage", 400, "invalid_json"),
    (b'{"adapter": "news", "inputs": ["' + b"a" * 210_000 + b'"]}', 413, "too_large"),
])
def test_malformed_bodies(api, raw, status, code):
    client, store = api
    before = snapshot(store)
    r = client.post("/predict", content=raw, headers={"content-type": "application/json"})
    assert r.status_code == status, r.text
    assert r.json()["error"]["code"] == code
    assert snapshot(store) == before


def test_openapi_document_describes_the_contract(api):
    client, _ = api
    doc = client.get("/openapi.json").json()
    assert {"/adapters", "/adapters/{name}", "/predict", "/embed"} <= set(doc["paths"])
    assert "ErrorResponse" in doc["components"]["schemas"]
