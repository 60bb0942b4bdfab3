"""Issue 19: heads robust to label counts, and updates that never make ``latest`` worse.

Unit tests of the weighting, the label prior, the warning and the update check; then HTTP
tests through the service's ASGI app with the real backbone: one-sided correct examples
(8 per label, then 24 more of one label) never make the latest version worse on held-out
rows, and the record warns about the unbalanced labels."""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from starlette.testclient import TestClient

from adapters import AdapterStore, Limits, Tailor
from adapters.errors import InvalidOptions
from adapters.heads import LinearHead
from adapters.training.fitting import (FitParams, assess, class_weights, fit, log_prior,
                                       with_prior)
from adapters.training.monotone import compare_update, head_predict
from adapters.validation import LabeledData
from service.api import create_app


def test_class_weights_give_every_label_the_same_total():
    y = np.array([0] * 20 + [1] * 8 + [2] * 4)
    w = class_weights(y, 3)
    assert np.allclose([w[y == j].sum() for j in range(3)], 32 / 3)
    assert np.allclose(class_weights(np.array([0, 0, 1, 1]), 2), 1.0)  # balanced: unchanged


def _blobs(counts: list[int], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors around two overlapping directions: a fit that follows label counts
    moves its boundary toward the rare label."""
    rng = np.random.default_rng(seed)
    centres = np.eye(8)[:2] + 0.2
    x = np.concatenate([centres[j] + 0.9 * rng.standard_normal((n, 8)) for j, n in enumerate(counts)])
    y = np.concatenate([np.full(n, j) for j, n in enumerate(counts)])
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), y


@pytest.mark.parametrize("prior, leans", [("examples", True), ("uniform", False)])
def test_the_uniform_prior_does_not_lean_toward_the_frequent_label(prior, leans):
    x, y = _blobs([60, 10])
    xt, yt = _blobs([500, 500], seed=1)
    data = LabeledData([], ["a", "b"], y, False)
    pred = fit(x, data, FitParams(class_prior=prior)).predict(xt)
    recall_rare = float((pred[yt == 1] == 1).mean())
    assert (recall_rare < 0.3) == leans, recall_rare


def test_a_stated_prior_moves_the_bias_by_its_log_shares():
    head = LinearHead(torch.zeros(2, 3), torch.zeros(2), "softmax")
    moved = with_prior(head, ["a", "b"], {"a": 3, "b": 1})
    assert torch.allclose(torch.softmax(moved.bias, 0), torch.tensor([0.75, 0.25]))
    assert with_prior(head, ["a", "b"], "uniform") is head
    with pytest.raises(InvalidOptions, match=r"\['c'\]"):
        log_prior(["a", "b"], {"c": 1.0})


@pytest.mark.parametrize("counts, prior, says", [
    ({"a": 20, "b": 8}, "uniform", "set options.class_prior to their shares"),
    ({"a": 20, "b": 8}, "examples", "lean toward the frequent labels"),
    ({"a": 8, "b": 8}, "uniform", None),
])
def test_unbalanced_examples_warn_and_say_what_to_do(counts, prior, says):
    y = np.concatenate([np.full(n, j) for j, n in enumerate(counts.values())])
    warnings = assess(LabeledData(["t"] * len(y), list(counts), y, False), {"cv_accuracy": 0.9},
                      prior)
    found = [w for w in warnings if "unbalanced" in w]
    assert (found[0] if found else None) is None if says is None else says in found[0]


def test_the_update_check_flags_a_recipe_made_worse_by_new_rows():
    x, y = _blobs([40, 40])
    previous = np.zeros(len(y), bool)
    previous[:16] = previous[40:56] = True

    def good(rows, labels):  # the same head whatever it is given
        return fit(x[previous], LabeledData([], ["a", "b"], y[previous], False), FitParams())

    calls = []

    def worse_with_more(rows, labels):  # a recipe that breaks when it gets the new rows
        calls.append(len(rows))
        head = good(rows, labels)
        if len(rows) > previous.sum():
            return LinearHead(-head.weight, -head.bias, "softmax")
        return head

    def predict(fit_rows):
        return head_predict(x, y, fit_rows)

    same = compare_update(y, previous, 2, predict(good), predict(good))
    assert same is not None and not same.worse and same.difference == 0
    bad = compare_update(y, previous, 2, predict(worse_with_more), predict(worse_with_more))
    assert bad is not None and bad.worse and bad.updated < bad.previous - bad.noise
    # the previous version's recipe (e.g. its options) on its side, a changed one on the new side
    changed = compare_update(y, previous, 2, predict(worse_with_more), predict(good))
    assert changed is not None and changed.worse
    assert compare_update(y, np.ones(len(y), bool), 2, predict(good), predict(good)) is None


# -- through HTTP (the ASGI app) ------------------------------------------------------------------
LIMITS = Limits(max_inputs=64, max_chars=2000, max_examples=200, max_labels=6, max_label_chars=20)


@pytest.fixture(scope="module")
def questions():
    """TREC questions (a dev set, 6 labels): 8 per label, 24 more of "NUM", 30 test rows per
    label. Without a fix, the frequent label's intercept swallows the others."""
    from benchmarks.datasets import trec_coarse

    ds = trec_coarse()
    rng = random.Random(3)
    by: dict[str, list[str]] = {}
    for t, lab in zip(ds.texts, ds.labels):
        by.setdefault(lab, []).append(t)
    picked = {lab: rng.sample(texts, 62) for lab, texts in sorted(by.items())}
    first = [{"text": t, "label": lab} for lab in picked for t in picked[lab][:8]]
    more = [{"text": t, "label": "NUM"} for t in picked["NUM"][8:32]]
    test = [(t, lab) for lab in picked for t in picked[lab][32:62]]
    return first, more, test


@pytest.fixture(scope="module")
def client(backbone, tmp_path_factory):
    app = create_app(max_body_bytes=500_000)
    app.state.tailor = Tailor(backbone, AdapterStore(tmp_path_factory.mktemp("mono") / "store",
                                                     backbone.identity), limits=LIMITS)
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


def _accuracy(client, ref: str, test) -> float:
    right = 0
    for i in range(0, len(test), 64):
        r = client.post("/predict", json={"adapter": ref, "inputs": [t for t, _ in test[i:i + 64]]})
        assert r.status_code == 200, r.text
        right += sum(p["label"] == y for p, (_, y) in zip(r.json()["predictions"], test[i:i + 64]))
    return right / len(test)


@pytest.mark.parametrize("class_prior", ["uniform", "examples"])
def test_one_sided_correct_examples_never_make_latest_worse(client, questions, class_prior):
    first, more, test = questions
    name = f"questions-{class_prior}"
    r = client.post("/adapters", json={"name": name, "kind": "head", "examples": first,
                                       "options": {"class_prior": class_prior}})
    assert r.status_code == 201, r.text
    before = _accuracy(client, name, test)
    r = client.post(f"/adapters/{name}/examples", json={"examples": more})
    assert r.status_code == 201, r.text
    rec = r.json()
    assert rec["version"] == 2 and rec["metrics"]["examples"] == 72
    check = rec["changes"]["update_check"]
    assert check["metric"] == "balanced_accuracy" and check["held_out_rows"] == 72
    assert any("unbalanced examples: 'NUM' has 32, 'ABBR' only 8" in w for w in rec["warnings"])
    after = _accuracy(client, name, test)  # latest
    assert after >= before - 0.03, (before, after, rec["changes"])
    if rec["changes"].get("weights_from"):  # the check kept the better weights, and says so
        assert rec["changes"]["weights_from"] == f"{name}@1"
        assert any(w.startswith(f"kept the weights of {name}@1") for w in rec["warnings"])
        assert client.get(f"/adapters/{name}@2").json()["metrics"]["examples"] == 72


def test_a_class_prior_naming_an_unknown_label_is_refused(client, questions):
    r = client.post("/adapters", json={"name": "bad-prior", "kind": "head", "examples": questions[0],
                                       "options": {"class_prior": {"NUM": 0.7, "stale": 0.3}}})
    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"] == "invalid_options" and "['stale']" in r.json()["error"]["message"]
    assert client.get("/adapters/bad-prior").status_code == 404
