"""End to end: a real `bentoml serve` process with the real MiniLM backbone, over HTTP."""
from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest

from benchmarks.datasets import bbc_news
from tests.conftest import (FOLDER_STORE_ONLY, ROOT, STORE_BACKENDS, TLS, Server, snapshot,
                            store_env)

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module", params=STORE_BACKENDS)
def server(request, tmp_path_factory):
    # Admission (429 past TAILOR_MAX_QUEUE_WAIT_S) is tests/e2e/test_load.py's subject. Here
    # 200 rows arrive at once; on a CI machine shared with another test file's server the
    # backbone's measured rate put some of them past the default 30 s and they got 429 (a
    # correct answer, but not the one these tests are about), so this server waits longer.
    env = {**store_env(request), "TAILOR_MAX_QUEUE_WAIT_S": "300"}
    srv = Server(tmp_path_factory.mktemp("e2e") / "store", env=env).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def bbc():
    return bbc_news()


def test_health_metrics_and_docs(server):
    with server.client() as c:
        assert c.get("/readyz").status_code == 200
        assert c.get("/livez").status_code == 200
        assert "bentoml" in c.get("/metrics").text.lower()
        paths = c.get("/docs.json").json()["paths"]
        assert {"/v1/adapters", "/v1/adapters/{name}", "/v1/predict", "/v1/embed"} <= set(paths)


@FOLDER_STORE_ONLY
def test_few_shot_adapter_matches_or_beats_logreg_on_embeddings(server, bbc):
    """8 examples per class: the adapter is far above chance on held-out rows and at least as
    accurate as a logistic regression fitted on the same examples' /v1/embed vectors."""
    from sklearn.linear_model import LogisticRegression

    # the first 400 characters of each article (~90 tokens; 2,000 fill the backbone's 256):
    # the comparison is on the same vectors either way, and the 480 forwards (40 for the head,
    # 200 predicted, 240 embedded) cost half what 800 characters did
    train, test = bbc.few_shot(8, seed=7, max_test=200, max_chars=400)
    with server.client() as c:
        r = c.post("/v1/adapters", json={"name": "bbc", "kind": "head", "examples": train})
        assert r.status_code == 201, r.text
        preds, embs = [], []
        texts = [t for t, _ in test]
        for i in range(0, len(texts), 64):
            preds += [p["label"] for p in c.post("/v1/predict", json={"adapter": "bbc", "inputs": texts[i:i + 64]}).json()["predictions"]]
        for i in range(0, len(train), 64):
            embs += c.post("/v1/embed", json={"inputs": [e["text"] for e in train[i:i + 64]]}).json()["embeddings"]
        test_embs = []
        for i in range(0, len(texts), 64):
            test_embs += c.post("/v1/embed", json={"inputs": texts[i:i + 64]}).json()["embeddings"]
    truth = np.array([y for _, y in test])
    ours = (np.array(preds) == truth).mean()
    lr = LogisticRegression(max_iter=2000).fit(np.array(embs), [e["label"] for e in train])
    baseline = (lr.predict(np.array(test_embs)) == truth).mean()
    print(f"\nbbc 8-shot head {ours:.3f}, logistic regression on /v1/embed {baseline:.3f}")
    assert ours >= 0.8, ours  # chance is 0.2
    assert ours >= baseline - 0.01, (ours, baseline)


def make_adapters(c: httpx.Client, bbc, n: int) -> list[str]:
    names = []
    labels = sorted(set(bbc.labels))
    for i in range(n):
        # 300 characters: these adapters are here to be many and different, not accurate
        train, _ = bbc.few_shot(3, seed=100 + i, max_test=0, max_chars=300)
        keep = {labels[i % 5], labels[(i + 1) % 5], labels[(i + 2 + i // 5) % 5]}  # varied label sets
        ex = [e for e in train if e["label"] in keep]
        r = c.post("/v1/adapters", json={"name": f"tenant-{i}", "examples": ex, "options": {"seed": i}})
        assert r.status_code == 201, r.text
        names.append(f"tenant-{i}")
    return names


@FOLDER_STORE_ONLY
def test_concurrent_mixed_adapter_requests_equal_solo_answers(server, bbc):
    """200 requests over 50 adapters, all in flight at once, share backbone batches; every
    answer is what the same input gets when sent alone: same adapter version and label,
    scores equal up to float32 rounding (kernels differ by batch shape, ~1e-7)."""
    n = 200
    # 400 characters (~90 tokens, lengths still spread, so batches still pad): the 200 solo
    # answers below are 200 backbone forwards, which at 800 characters took half a minute
    _, test = bbc.few_shot(1, seed=3, max_test=n, max_chars=400)
    assert len(test) >= n // 2
    with server.client() as c:
        names = make_adapters(c, bbc, 50)
    jobs = [(names[i % len(names)], [test[i % len(test)][0]]
             + ([test[(i + 1) % len(test)][0]] if i % 3 == 0 else [])) for i in range(n)]

    def call(job):
        with httpx.Client(base_url=server.url, timeout=120, verify=TLS) as c:
            r = c.post("/v1/predict", json={"adapter": job[0], "inputs": job[1]})
            return r.status_code, r.json()

    with ThreadPoolExecutor(n) as pool:  # one thread per request: all 200 in flight together
        together = list(pool.map(call, jobs))
    assert all(s == 200 for s, _ in together), [b for s, b in together if s != 200][:3]
    with server.client() as c:
        for (name, inputs), (_, body) in zip(jobs, together):
            solo = c.post("/v1/predict", json={"adapter": name, "inputs": inputs[:1]}).json()
            assert body["adapter"] == solo["adapter"] == f"{name}@1"
            got, want = body["predictions"][0], solo["predictions"][0]
            assert got["label"] == want["label"] and got["scores"].keys() == want["scores"].keys()
            assert all(abs(got["scores"][k] - want["scores"][k]) < 1e-5 for k in want["scores"])


def test_restart_keeps_every_adapter_and_its_answers(server, tmp_path, bbc):
    # Every adapter the module made (~50) is checked before and after: one text's scores over
    # its labels show whether its weights came back, to the last bit (ten 800-character texts
    # each cost a minute of backbone time, two a quarter of one)
    train, test = bbc.few_shot(4, seed=11, max_test=1, max_chars=400)
    texts = [t for t, _ in test]
    with server.client() as c:
        c.post("/v1/adapters", json={"name": "keep", "examples": train})
        c.post("/v1/adapters", json={"name": "keep", "examples": train[:12] + train[-12:]})
        before_list = c.get("/v1/adapters").json()["adapters"]
        before = {a["ref"]: c.post("/v1/predict", json={"adapter": a["ref"], "inputs": texts}).json()
                  for a in before_list}
    files = snapshot(server.store)
    # SIGTERM, as in a rolling update: bentoml stops its worker and exits 0. A crash before
    # it, or a hang past the 30 s that Server.stop waits (then SIGKILL: -9), is not a restart.
    # The module's server itself starts again on the same store (and serves the later tests):
    # a second server for the check, then this one again, was two more starts (~13 CPU s).
    assert server.stop() == 0
    server.start()
    with server.client() as c:
        assert c.get("/v1/adapters").json()["adapters"] == before_list
        for ref, answer in before.items():
            assert c.post("/v1/predict", json={"adapter": ref, "inputs": texts}).json() == answer
        assert c.get("/v1/adapters/keep").json()["versions"] == [1, 2]
    assert snapshot(server.store) == files  # the start and the reads wrote nothing


def test_errors_through_the_real_server(server):
    with server.client() as c:
        r = c.post("/v1/predict", json={"adapter": "missing", "inputs": ["x"]})
        assert r.status_code == 404 and r.json()["error"]["code"] == "adapter_not_found"
        r = c.post("/v1/adapters", json={"name": "x", "examples": [{"text": "a", "label": "only"}]})
        assert r.status_code == 422 and "2 different labels" in r.json()["error"]["message"]
        r = c.post("/v1/predict", content=b'{"adapter": "x", "inputs": ["' + b"a" * (17 * 1024 * 1024) + b'"]}',
                   headers={"content-type": "application/json"})
        assert r.status_code == 413 and r.json()["error"]["code"] == "too_large"
        r = c.get("/v1/nowhere")
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"


def test_cli_create_predict_list_delete(server, tmp_path, bbc):
    train, test = bbc.few_shot(4, seed=5, max_test=5, max_chars=500)
    csv_path = tmp_path / "train.csv"
    import csv

    with csv_path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["text", "label"])
        w.writeheader()
        w.writerows(train)
    (tmp_path / "in.txt").write_text("\n".join(t.replace("\n", " ") for t, _ in test))

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "service.cli", "--url", server.url, *args],
                              cwd=ROOT, capture_output=True, text=True, timeout=120)

    r = cli("create", "from-cli", "--file", str(csv_path), "-o", "head=centroid")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["options"]["head"] == "centroid"
    r = cli("predict", "from-cli", "--file", str(tmp_path / "in.txt"), "--out", str(tmp_path / "out.jsonl"))
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert len(rows) == 5 and all(row["adapter"] == "from-cli@1" for row in rows)
    assert "from-cli@1" in cli("list").stdout
    r = cli("predict", "nope", "--text", "hello")
    assert r.returncode == 1 and "adapter_not_found" in r.stderr
    assert cli("delete", "from-cli").returncode == 0
