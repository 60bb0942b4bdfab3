"""Adapting from more than labeled examples, through the service's ASGI app with the real
backbone: zero-shot from label descriptions, updates that publish the next version, what to
label next, and every bad input answering its 4xx with the store unchanged."""
from __future__ import annotations

import numpy as np
import pytest
from starlette.testclient import TestClient

from adapters import AdapterStore, Limits, Tailor
from adapters.serving.suggest import select_informative, uncertainty
from benchmarks.datasets import bbc_news
from service.api import create_app
from tests.conftest import snapshot

LIMITS = Limits(max_inputs=8, max_chars=2000, max_examples=80, max_labels=6, max_label_chars=20,
                max_unlabeled=50, max_suggest_texts=30)
DESCRIPTIONS = {
    "business": "business, companies, markets, the economy and finance",
    "entertainment": "entertainment: films, music, television, celebrities and awards",
    "politics": "politics: government, elections, parliament and political parties",
    "sports": "sport: football, tennis, athletics, matches and players",
    "tech": "technology: computers, software, the internet, phones and gadgets",
}


@pytest.fixture(scope="module")
def bbc():
    return bbc_news().few_shot(4, seed=3, max_test=80, max_chars=600)


@pytest.fixture(scope="module")
def api(backbone, tmp_path_factory):
    store = tmp_path_factory.mktemp("adapt") / "store"
    app = create_app(max_body_bytes=400_000)
    app.state.tailor = Tailor(backbone, AdapterStore(store, backbone.identity), limits=LIMITS)
    with TestClient(app, raise_server_exceptions=False) as client:
        r = client.post("/adapters", json={"name": "zs", "label_descriptions": DESCRIPTIONS})
        assert r.status_code == 201, r.text
        yield client, store


def accuracy(client, ref, test):
    preds = []
    for i in range(0, len(test), 8):
        r = client.post("/predict", json={"adapter": ref, "inputs": [t for t, _ in test[i:i + 8]]})
        assert r.status_code == 200, r.text
        preds += [p["label"] for p in r.json()["predictions"]]
    return float(np.mean([p == g for p, (_, g) in zip(preds, test)]))


def test_zero_shot_adapter_from_descriptions_alone(api, bbc):
    client, _ = api
    rec = client.get("/adapters/zs").json()
    assert rec["labels"] == sorted(DESCRIPTIONS) and rec["label_descriptions"] == DESCRIPTIONS
    assert rec["metrics"]["examples"] == 0 and "cv_accuracy" not in rec["metrics"]
    assert any("zero-shot" in w for w in rec["warnings"])
    assert accuracy(client, "zs", bbc[1]) >= 0.6  # 5 topics, chance 0.2, no example seen


def test_adding_examples_publishes_the_next_version_and_keeps_the_old_one(api, bbc):
    client, _ = api
    r = client.post("/adapters", json={"name": "news", "examples": bbc[0][:10],
                                       "label_descriptions": DESCRIPTIONS})
    assert r.status_code == 201, r.text
    v1_answers = client.post("/predict", json={"adapter": "news@1", "inputs": ["the match"]}).json()
    r = client.post("/adapters/news/examples", json={"examples": bbc[0][10:]})
    assert r.status_code == 201, r.text
    rec = r.json()
    assert rec["version"] == 2 and rec["metrics"]["examples"] == len(bbc[0])
    ch = rec["changes"]
    assert ch["from_version"] == 1 and ch["examples_added"] == len(bbc[0]) - 10
    assert ch["new_labels"] == [] and ch["metric_after"]["name"] == "cv_accuracy"
    assert rec["label_descriptions"] == DESCRIPTIONS  # carried over
    assert client.get("/adapters/news").json()["versions"] == [1, 2]
    # version 1 still answers exactly as before
    assert client.post("/predict", json={"adapter": "news@1", "inputs": ["the match"]}).json() == v1_answers


def test_an_update_may_add_a_label(api):
    client, _ = api
    ex = [{"text": "the shares fell after the results", "label": "money"},
          {"text": "the central bank raised rates", "label": "money"},
          {"text": "the striker scored twice", "label": "games"},
          {"text": "the final went to penalties", "label": "games"}]
    assert client.post("/adapters", json={"name": "grow", "examples": ex,
                                          "options": {"labels": ["money", "games"]}}).status_code == 201
    r = client.post("/adapters/grow/examples", json={
        "examples": [{"text": "a new phone with a faster chip", "label": "gadgets"},
                     {"text": "the laptop's battery lasts all day", "label": "gadgets"}]})
    assert r.status_code == 201, r.text
    rec = r.json()
    assert rec["labels"] == ["money", "games", "gadgets"]  # the label order grew at the end
    assert rec["changes"]["new_labels"] == ["gadgets"]
    p = client.post("/predict", json={"adapter": "grow", "inputs": ["a tablet with a new screen"]})
    assert p.json()["predictions"][0]["label"] == "gadgets"


def test_suggest_returns_k_distinct_texts_with_predictions(api, bbc):
    client, _ = api
    pool = [t for t, _ in bbc[1][:30]]
    r = client.post("/adapters/zs/suggest", json={"texts": pool, "k": 8})
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["adapter"] == "zs@1"
    idx = [s["index"] for s in out["suggestions"]]
    assert len(idx) == 8 and len(set(idx)) == 8
    for s in out["suggestions"]:
        assert s["text"] == pool[s["index"]] and s["label"] in DESCRIPTIONS and 0 < s["score"] <= 1
    # k larger than the pool: every text once
    r = client.post("/adapters/zs/suggest", json={"texts": pool[:3], "k": 20})
    assert sorted(s["index"] for s in r.json()["suggestions"]) == [0, 1, 2]


def test_selection_prefers_uncertain_texts_that_differ():
    """Table-driven on synthetic data: two near-duplicate uncertain texts, one certain text,
    one uncertain text far from the others; k=2 takes one of the twins and the far one."""
    emb = np.array([[1, 0, 0], [0.999, 0.04, 0], [0, 1, 0], [0, 0, 1]], dtype=np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    probs = np.array([[0.5, 0.5], [0.52, 0.48], [0.99, 0.01], [0.6, 0.4]])
    assert uncertainty(probs).argmax() == 0
    assert select_informative(probs, emb, 2) == [0, 3]
    assert sorted(select_informative(probs, emb, 4)) == [0, 1, 2, 3]


NEWS = [{"text": "the striker scored", "label": "sport"}, {"text": "shares fell", "label": "business"}]
BAD = [
    # (path, body, status, code, fragment of the message)
    ("/adapters", {"name": "x", "examples": NEWS, "label_descriptions": {"weather": "rain and sun"},
                   "options": {"labels": ["sport", "business"]}},
     422, "invalid_examples", "label_descriptions describe label(s) ['weather'] that are not in options.labels"),
    ("/adapters", {"name": "x", "label_descriptions": {"sport": "games"}, "options": {"labels": ["sport", "art"]}},
     422, "invalid_examples", "needs a description for every label"),
    ("/adapters", {"name": "x", "label_descriptions": {"sport": "games"}}, 422, "invalid_examples",
     "at least 2 labels"),
    ("/adapters", {"name": "x", "label_descriptions": {"sport": ""}}, 422, "invalid_examples", "is empty"),
    ("/adapters", {"name": "x", "kind": "lora", "label_descriptions": DESCRIPTIONS}, 422, "invalid_examples",
     "needs labeled examples"),
    ("/adapters", {"name": "x", "examples": NEWS, "unlabeled": ["a text", "a text"]}, 422, "invalid_examples",
     "unlabeled[1] repeats unlabeled[0]"),
    ("/adapters", {"name": "x", "examples": NEWS, "unlabeled": ["fine", "   "]}, 422, "invalid_examples",
     "unlabeled[1] is empty"),
    ("/adapters", {"name": "x", "examples": NEWS, "unlabeled": [f"text {i}" for i in range(51)]}, 413,
     "too_large", "TAILOR_MAX_UNLABELED"),
    ("/adapters/zs/examples", {}, 422, "invalid_examples", "nothing to add"),
    ("/adapters/nope/examples", {"examples": NEWS}, 404, "adapter_not_found", "does not exist"),
    ("/adapters/zs/examples", {"examples": [{"text": "x", "labels": ["sport"]}]}, 422, "invalid_examples",
     "must too"),
    ("/adapters/zs/examples", {"examples": [{"text": "snow all week", "label": "weather"}],
                               "kind": "lora"}, 422, "invalid_examples", "needs examples of every label"),
    ("/adapters/zs/suggest", {"texts": ["a", "b"], "k": 0}, 422, "invalid_request", "positive integer"),
    ("/adapters/zs/suggest", {"texts": [], "k": 2}, 422, "invalid_examples", "non-empty list"),
    ("/adapters/zs/suggest", {"texts": ["a", "a"], "k": 1}, 422, "invalid_examples", "texts[1] repeats"),
    ("/adapters/zs/suggest", {"texts": [f"t{i}" for i in range(31)], "k": 1}, 413, "too_large",
     "TAILOR_MAX_SUGGEST_TEXTS"),
    ("/adapters/nope/suggest", {"texts": ["a"], "k": 1}, 404, "adapter_not_found", "does not exist"),
    ("/adapters/zs@9/suggest", {"texts": ["a"], "k": 1}, 404, "adapter_not_found", "no version 9"),
]


@pytest.mark.parametrize("path,body,status,code,fragment", BAD,
                         ids=[f"{b[0]} {b[2]} {b[4][:24]}" for b in BAD])
def test_bad_input_is_a_clear_4xx_and_publishes_nothing(api, path, body, status, code, fragment):
    client, store = api
    before = snapshot(store)
    r = client.post(path, json=body)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["code"] == code and fragment in err["message"], err
    assert snapshot(store) == before


# -- kind auto's rule: promote the LoRA candidate only when its paired estimate is better -----
@pytest.mark.parametrize("lora,head,options,promote", [
    (0.90, 0.60, {}, True),                       # if_better (the default): clearly better
    (0.61, 0.60, {"promote": "if_better"}, True),  # strictly better is enough without a margin
    (0.60, 0.60, {}, False),                      # a tie keeps the head
    (0.40, 0.60, {}, False),                      # worse
    (1.00, 1.00, {}, False),                      # a perfect head cannot be beaten
    (0.65, 0.60, {"min_gain": 0.1}, False),       # better, but not by the margin
    (0.75, 0.60, {"min_gain": 0.1}, True),
    (0.40, 0.60, {"promote": "always"}, True),
    (0.90, 0.60, {"promote": "never"}, False),
])
def test_auto_promotes_only_a_better_estimate(lora, head, options, promote):
    from types import SimpleNamespace

    from adapters.kinds.auto import accept
    from adapters.storage import Artifact

    candidate = Artifact(kind="auto", labels=["a", "b"], tensors={}, options=options, metrics={
        "examples": 8, "per_label": {"a": 4, "b": 4}, "recipe": "LoRA", "estimate": lora, "estimate_head": head, "estimate_folds": 2})
    decision = accept(SimpleNamespace(ref="x@1"), candidate)
    assert decision.promote is promote, decision
    assert f"{lora:.3f} vs the head's {head:.3f}" in decision.reason
