"""End to end over HTTP against a real `bentoml serve`: updates trained by background jobs are
checked against the version they replace before they become ``latest`` (issue 19), as
in-request updates are (tests/asgi/test_monotone.py).

The update changes the recipe for the worse (a LoRA learning rate of 0.5 wrecks the tuned
encoder), with correct examples. Without the check, ``latest`` drops to about chance: the
kind-lora job publishes the wrecked weights, and auto's background job with
``promote: always`` publishes its candidate over the better version."""
from __future__ import annotations

import time

import httpx
import pytest

from benchmarks.datasets import trec_coarse
from tests.conftest import Server

pytestmark = pytest.mark.e2e

GOOD = {"epochs": 2}
BAD = {"epochs": 2, "learning_rate": 0.5}  # a recipe option that makes LoRA much worse


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = Server(tmp_path_factory.mktemp("update-check-e2e") / "store").start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def trec():
    """8 TREC questions per label, 8 more correct ones (2 of each of 4 labels), 120 test rows."""
    train, rest = trec_coarse().few_shot(8, seed=3, max_test=160)
    more, seen = [], {}
    for t, g in rest[:40]:
        if seen.get(g, 0) < 2 and len(more) < 8:
            seen[g] = seen.get(g, 0) + 1
            more.append({"text": t, "label": g})
    return train, more, rest[40:]


def wait(c: httpx.Client, job_id: str, timeout: float = 600) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = c.get(f"/v1/jobs/{job_id}").json()
        if job["status"] not in ("queued", "running"):
            return job
        time.sleep(0.5)
    raise AssertionError(f"job {job_id} did not finish: {job}")


def answers(c: httpx.Client, ref: str, test) -> list[dict]:
    r = c.post("/v1/predict", json={"adapter": ref, "inputs": [t for t, _ in test[:64]]})
    assert r.status_code == 200, r.text
    return r.json()["predictions"]


def accuracy(c: httpx.Client, ref: str, test) -> float:
    return sum(p["label"] == g for p, (_, g) in zip(answers(c, ref, test), test)) / 64


def test_a_lora_job_update_never_makes_latest_worse(server, trec):
    train, more, test = trec
    with server.client() as c:
        r = c.post("/v1/adapters", json={"name": "q", "kind": "lora", "examples": train,
                                         "options": GOOD})
        assert r.status_code == 202, r.text
        assert wait(c, r.json()["job"]["id"])["status"] == "succeeded"
        before = accuracy(c, "q@1", test)
        assert before > 0.4, before  # chance is 1/6

        r = c.post("/v1/adapters/q/examples", json={"examples": more, "options": BAD})
        assert r.status_code == 202, r.text
        job = wait(c, r.json()["job"]["id"])
        assert job["status"] == "succeeded" and job["result"]["adapter"] == "q@2", job
        after = accuracy(c, "q", test)
        assert after >= before - 0.02, (before, after)  # latest: as good as what it replaced
        assert answers(c, "q@2", test) == answers(c, "q@1", test)  # q@1's weights
        rec = c.get("/v1/adapters/q").json()
        assert rec["version"] == 2 and rec["metrics"]["examples"] == len(train) + len(more)
        check = rec["changes"]["update_check"]
        assert check["worse"] and check["updated"] < check["previous"] - check["noise"], check
        assert rec["changes"]["weights_from"] == "q@1"
        assert any(w.startswith("kept the weights of q@1") for w in rec["warnings"])


def test_auto_background_job_keeps_the_better_version(server, trec):
    train, more, test = trec
    with server.client() as c:
        r = c.post("/v1/adapters", json={"name": "a", "kind": "auto", "examples": train,
                                         "options": {**GOOD, "promote": "always"}})
        assert r.status_code == 201, r.text
        job = wait(c, r.json()["job"]["id"])
        assert job["result"]["decision"] == "promoted", job  # a@2: LoRA
        before = accuracy(c, "a@2", test)

        r = c.post("/v1/adapters/a/examples",
                   json={"examples": more, "options": {**BAD, "promote": "always"}})
        assert r.status_code == 201, r.text
        v3 = r.json()  # in the request: a head on a@2's LoRA (the learning rate is LoRA's)
        assert v3["version"] == 3 and v3["metrics"]["recipe"].endswith("on the LoRA of a@2")
        job = wait(c, v3["job"]["id"])
        assert job["status"] == "succeeded", job
        after = accuracy(c, "a", test)
        assert after >= before - 0.05, (before, after)  # latest (a@3) keeps a@2's quality
        assert c.get("/v1/adapters/a").json()["versions"] == [1, 2, 3]
        assert job["result"]["decision"] == "kept" and "update check" in job["result"]["reason"]
        check = job["result"]["candidate_metrics"]["update_check"]
        assert check["worse"], check
