"""End to end: LoRA adapters trained as background jobs by a real `bentoml serve` process
with the real backbone, over HTTP: progress, quality on held-out rows, cancel, restart."""
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
    return trec_coarse().few_shot(8, seed=3, max_test=150)


def _submit(c: httpx.Client, name: str, train: list[dict], **options) -> dict:
    r = c.post("/v1/adapters", json={"name": name, "kind": "lora", "examples": train,
                                     "options": options})
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["status"] == "training" and body["job"]["status"] in ("queued", "running")
    return body


def _poll(c: httpx.Client, job_id: str, until, timeout: float = 240) -> list[dict]:
    seen = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = c.get(f"/v1/jobs/{job_id}")
        assert r.status_code == 200, r.text
        seen.append(r.json())
        if until(seen[-1]):
            return seen
        time.sleep(0.2)
    raise AssertionError(f"job never got there: {seen[-1]}")


def test_lora_job_trains_serves_cancels_and_survives_restart(tmp_path, data):
    train, test = data
    store = tmp_path / "store"
    server = Server(store).start()
    try:
        with httpx.Client(base_url=server.url, timeout=120) as c:
            bare_before = c.post("/v1/embed", json={"inputs": [t for t, _ in test[:8]]}).json()
            # bad input is refused at once, not as a failed job
            r = c.post("/v1/adapters", json={"name": "bad", "kind": "lora", "examples": train,
                                             "options": {"rank": 0}})
            assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_options"
            # 1. train: queued -> running (with progress) -> succeeded
            job = _submit(c, "trec", train)["job"]
            seen = _poll(c, job["id"], lambda j: j["status"] not in ("queued", "running"))
            states = [j["status"] for j in seen]
            assert seen[-1]["status"] == "succeeded", seen[-1]
            assert "running" in states or job["status"] == "running"
            progress = [j["progress"]["step"] for j in seen if j["status"] == "running"]
            assert seen[-1]["progress"]["step"] == seen[-1]["progress"]["total"] > 1
            assert progress == sorted(progress) and seen[-1]["loss"] is not None
            assert seen[-1]["result"]["adapter"] == "trec@1"
            # servable at once, well above chance (6 labels) on held-out questions
            rec = c.get("/v1/adapters/trec").json()
            assert rec["kind"] == "lora" and rec["version"] == 1
            preds = c.post("/v1/predict", json={"adapter": "trec", "inputs": [t for t, _ in test]})
            assert preds.status_code == 200, preds.text
            acc = sum(p["label"] == g for p, (_, g) in zip(preds.json()["predictions"], test)) / len(test)
            assert acc > 0.5, acc  # chance is 1/6
            # exportable like any adapter: LoRA merged into a copy, parity-checked, zipped
            r = c.post("/v1/adapters/trec/export", json={"quantize": "none"}, timeout=300)
            assert r.status_code == 200 and r.headers["content-type"] == "application/zip", r.text
            m = json.loads(zipfile.ZipFile(io.BytesIO(r.content)).read("manifest.json"))
            assert m["adapter"]["kind"] == "lora" and m["parity"]["passed"]
            assert m["parity"]["examples_rows"] == len(train)
            # the bundle itself, run as its README says (no torch), answers what was served
            got = agreement(unzip(r.content, tmp_path / "bundle"), [t for t, _ in test],
                            preds.json()["predictions"])
            assert got["top1_agreement"] == 1.0 and got["max_abs_diff"] < 1e-4, got
            # 2. cancel a running job: cancelled, nothing published
            job = _submit(c, "cancelme", train, epochs=50)["job"]
            _poll(c, job["id"], lambda j: j["status"] == "running" and j["progress"]["step"] >= 1)
            listed = c.get("/v1/adapters").json()  # listed as training, not yet servable
            assert [(a["name"], a["job"]["id"]) for a in listed["training"]] == [("cancelme", job["id"])]
            assert "cancelme" not in [a["name"] for a in listed["adapters"]]
            r = c.delete(f"/v1/jobs/{job['id']}")
            assert r.status_code == 200, r.text
            done = _poll(c, job["id"], lambda j: j["status"] not in ("queued", "running"))[-1]
            assert done["status"] == "cancelled"
            assert c.get("/v1/adapters/cancelme").status_code == 404
            assert c.delete(f"/v1/jobs/{job['id']}").status_code == 409
            # 3. a restart (SIGTERM, as in a rolling update) in the middle of a job: the job
            # is handed back to the queue without spending an attempt and runs again
            job = _submit(c, "interrupted", train, epochs=50)["job"]
            first = _poll(c, job["id"], lambda j: j["status"] == "running" and j["progress"]["step"] >= 1)
        server.stop()  # SIGTERM: bentoml stops its worker and the training worker with it
        server = Server(store).start()
        with httpx.Client(base_url=server.url, timeout=120) as c:
            again = _poll(c, job["id"], lambda j: j["status"] == "running" and j["progress"]["step"] >= 1)
            assert again[-1]["started_at"] > first[-1]["started_at"]  # started anew
            assert again[-1]["attempts"] == 1, again[-1]  # the stopped attempt was not spent
            assert c.delete(f"/v1/jobs/{job['id']}").status_code == 200
            done = _poll(c, job["id"], lambda j: j["status"] not in ("queued", "running"))[-1]
            assert done["status"] == "cancelled"
            assert c.get("/v1/adapters/interrupted").status_code == 404
            assert c.get("/v1/jobs/0123abcd").status_code == 404
            # the served backbone is unchanged: bare embeddings identical to before
            assert c.post("/v1/embed", json={"inputs": [t for t, _ in test[:8]]}).json() == bare_before
            # and the trained adapter still answers after the restart
            assert c.post("/v1/predict", json={"adapter": "trec@1", "inputs": ["Who is the CEO?"]}).status_code == 200
    finally:
        server.stop()
