"""The OpenAI-compatible routes and the jobs list through the v1 ASGI app (real backbone,
temporary store): shapes, OpenAI's error shape on every 4xx, tenant scoping, pagination; and
the engine's mixed batch where LoRA embedding rows ride along with predict rows."""
from __future__ import annotations

import base64

import numpy as np
import pytest
import torch
from starlette.testclient import TestClient

from adapters import AdapterStore, Limits, Tailor
from adapters.training.jobs import JobManager
from service.api import create_app
from service.auth import KeyRing
from tests.unit.adapters.test_lora import TEXTS, _adapter, loras, merged_embed  # noqa: F401  (fixture)

KEY_A, KEY_B = "a" * 20, "b" * 20
EXAMPLES = [{"text": t, "label": lab} for t, lab in [
    ("I was charged twice this month", "billing"), ("Please refund the duplicate payment", "billing"),
    ("My invoice shows the wrong amount", "billing"), ("The app crashes when I open settings", "bug"),
    ("Login button does nothing on Android", "bug"), ("Error 500 when uploading a photo", "bug")]]


@pytest.fixture(scope="module")
def app(backbone, tmp_path_factory):
    root = tmp_path_factory.mktemp("openai") / "store"
    store = AdapterStore(root, backbone.identity)
    jobs = JobManager(root / "jobs", concurrency=0, max_queued=100)  # jobs stay queued
    v1 = create_app(keyring=KeyRing.parse(f"{KEY_A} acme\n{KEY_B} other", "test"))
    v1.state.tailor = Tailor(backbone, store, jobs=jobs, limits=Limits(max_inputs=8))
    with TestClient(v1, raise_server_exceptions=False) as c:
        c.headers["Authorization"] = f"Bearer {KEY_A}"
        assert c.post("/adapters", json={"name": "tickets", "examples": EXAMPLES}).status_code == 201
        yield c


def test_backbone_embeddings_equal_embed_in_float_and_base64(app, backbone):
    name = backbone.identity.name
    ref = np.array(app.post("/embed", json={"inputs": TEXTS[:3]}).json()["embeddings"])
    r = app.post("/embeddings", json={"model": name, "input": TEXTS[:3]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "list" and body["model"] == name
    assert [d["index"] for d in body["data"]] == [0, 1, 2]
    assert np.allclose([d["embedding"] for d in body["data"]], ref, atol=1e-6)
    tokens = sum(len(ids) for ids in backbone.prepare(TEXTS[:3]))
    assert body["usage"] == {"prompt_tokens": tokens, "total_tokens": tokens}
    b64 = app.post("/embeddings", json={"model": name, "input": TEXTS[0], "encoding_format": "base64"})
    vec = np.frombuffer(base64.b64decode(b64.json()["data"][0]["embedding"]), dtype="<f4")
    assert vec.shape == (384,) and np.allclose(vec, ref[0], atol=1e-6)


def test_head_adapter_embeddings_are_the_backbones(app, backbone):
    r = app.post("/embeddings", json={"model": "tickets", "input": ["where is my refund?"]})
    assert r.status_code == 200 and r.json()["model"] == "tickets@1"
    ref = app.post("/embed", json={"inputs": ["where is my refund?"]}).json()["embeddings"][0]
    assert np.allclose(r.json()["data"][0]["embedding"], ref, atol=1e-6)


def test_models_list_the_backbone_and_the_tenants_adapters(app, backbone):
    body = app.get("/models").json()
    assert body["object"] == "list"
    assert [(m["id"], m["owned_by"]) for m in body["data"]] == [(backbone.identity.name, "tailor"),
                                                                 ("tickets", "acme")]
    assert all(m["object"] == "model" and isinstance(m["created"], int) for m in body["data"])
    assert app.get("/models/tickets@1").json()["id"] == "tickets@1"
    other = app.get("/models", headers={"Authorization": f"Bearer {KEY_B}"}).json()
    assert [m["id"] for m in other["data"]] == [backbone.identity.name]


@pytest.mark.parametrize("body, status, code, param", [
    ({"input": "x"}, 422, "invalid_request", "model"),
    ({"model": "nope", "input": "x"}, 404, "model_not_found", "model"),
    ({"model": "sentence-transformers/all-MiniLM-L6-v2", "input": "x"}, 404, "model_not_found", "model"),
    ({"model": "tickets@9", "input": "x"}, 404, "model_not_found", "model"),
    ({"model": "BACKBONE"}, 422, "invalid_request", "input"),
    ({"model": "BACKBONE", "input": []}, 422, "invalid_request", "input"),
    ({"model": "BACKBONE", "input": [1, 2, 3]}, 422, "invalid_request", "input"),
    ({"model": "BACKBONE", "input": [[1, 2]]}, 422, "invalid_request", "input"),
    ({"model": "BACKBONE", "input": [""]}, 422, "invalid_examples", "input"),  # as /v1/embed
    ({"model": "BACKBONE", "input": ["x"] * 9}, 413, "too_large", "input"),
    ({"model": "BACKBONE", "input": "x", "encoding_format": "int8"}, 422, "invalid_request",
     "encoding_format"),
    ({"model": "BACKBONE", "input": "x", "dimensions": 128}, 422, "invalid_request", "dimensions"),
    ({"model": "BACKBONE", "input": "x", "temperature": 1}, 422, "invalid_request", "temperature"),
])
def test_bad_embeddings_requests_are_4xx_in_openais_shape(app, backbone, body, status, code, param):
    if body.get("model") == "BACKBONE":
        body = {**body, "model": backbone.identity.name}
    r = app.post("/embeddings", json=body)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert (err["code"], err["param"], err["type"]) == (code, param, "invalid_request_error")
    assert err["message"]


def test_other_tenants_adapter_is_model_not_found_and_auth_errors_are_openai_shaped(app, backbone):
    r = app.post("/embeddings", json={"model": "tickets", "input": "x"},
                 headers={"Authorization": f"Bearer {KEY_B}"})
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
    assert app.get("/models/tickets", headers={"Authorization": f"Bearer {KEY_B}"}).status_code == 404
    r = app.post("/embeddings", json={"model": backbone.identity.name, "input": "x"},
                 headers={"Authorization": "Bearer " + "c" * 20})
    assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
    r = app.post("/embeddings", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
    # Tailor's own routes keep Tailor's shape
    assert set(app.get("/adapters/nope").json()["error"]) == {"code", "message"}
    assert set(app.get("/adapters/embeddings").json()["error"]) == {"code", "message"}


def test_jobs_list_filters_pages_and_stays_in_its_tenant(app):
    t: Tailor = app.app.state.tailor
    ids = [t.jobs.submit("lora_train", "acme", f"a{i % 2}", {}).id for i in range(5)]
    t.jobs.submit("lora_train", "other", "a0", {})
    t.cancel_job("acme", ids[0])
    page = app.get("/jobs", params={"limit": 2}).json()
    assert [j["id"] for j in page["jobs"]] == ids[::-1][:2] and page["next"] == ids[3]
    rest = app.get("/jobs", params={"limit": 2, "after": page["next"]}).json()
    last = app.get("/jobs", params={"limit": 2, "after": rest["next"]}).json()
    assert [j["id"] for j in rest["jobs"] + last["jobs"]] == ids[::-1][2:] and last["next"] is None
    assert [j["id"] for j in app.get("/jobs", params={"adapter": "a1"}).json()["jobs"]] == [ids[3], ids[1]]
    cancelled = app.get("/jobs", params={"status": "cancelled"}).json()["jobs"]
    assert [(j["id"], j["status"]) for j in cancelled] == [(ids[0], "cancelled")]
    theirs = app.get("/jobs", headers={"Authorization": f"Bearer {KEY_B}"}).json()["jobs"]
    assert len(theirs) == 1 and theirs[0]["id"] not in ids


@pytest.mark.parametrize("params, code", [
    ({"status": "done"}, "invalid_request"), ({"adapter": "../x"}, "invalid_name"),
    ({"limit": 0}, "invalid_request"), ({"limit": 201}, "invalid_request"),
    ({"after": "f" * 32}, "invalid_request")])
def test_bad_jobs_queries_are_422_in_tailors_shape(app, params, code):
    r = app.get("/jobs", params=params)
    assert r.status_code == 422 and r.json() == {"error": {"code": code, "message": r.json()["error"]["message"]}}


def test_lora_embedding_rows_mix_with_predict_rows_in_one_forward(backbone, loras, tmp_path):  # noqa: F811
    t = Tailor(backbone, AdapterStore(tmp_path, backbone.identity))
    clf = _adapter("c", loras[1])
    rows = [(loras[0], TEXTS[0]), (clf, TEXTS[1]), (None, TEXTS[2]), (loras[0], TEXTS[3]),
            (loras[2], TEXTS[4])]
    out = t.run_rows(rows)
    for (via, text), got in zip(rows, out):
        if via is clf:
            want = clf.head.probabilities(merged_embed(backbone, loras[1], [text]))[0]
        else:
            want = merged_embed(backbone, via, [text])[0]
        assert torch.allclose(got, want, atol=1e-4)
    assert not torch.allclose(out[0], backbone.embed([TEXTS[0]])[0], atol=1e-2)  # LoRA moved it


def test_odd_model_ids_in_the_path_are_404(app):
    from tests.asgi.test_hostile_input import NAMES

    for name in NAMES:
        r = app.get("/models/" + name)
        assert r.status_code == 404, (name, r.text)
        assert r.json()["error"]["code"] in ("model_not_found", "not_found"), (name, r.text)
