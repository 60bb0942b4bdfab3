"""Two replicas, one store: two real `bentoml serve` processes on one TAILOR_STORE_PATH, as
two pods mounting one ReadWriteMany volume. They must behave as one service: what one
creates the other serves within 2 s (no restart), what one deletes the other stops serving,
and simultaneous creates of one name through both get distinct, intact versions.
"""
from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.conftest import Server

pytestmark = pytest.mark.e2e

VISIBLE_WITHIN_S = 2.0

EXAMPLES = [
    {"text": "the match ended with a late goal", "label": "sport"},
    {"text": "the striker scored twice in the final", "label": "sport"},
    {"text": "the team won the championship", "label": "sport"},
    {"text": "the coach praised the defenders", "label": "sport"},
    {"text": "shares fell after the earnings report", "label": "business"},
    {"text": "the central bank raised interest rates", "label": "business"},
    {"text": "the company announced a merger", "label": "business"},
    {"text": "investors sold their bonds", "label": "business"},
]
PROBES = ["a goal in the last minute won the cup", "the stock market dropped sharply"]


@pytest.fixture(scope="module")
def replicas(tmp_path_factory):
    store = tmp_path_factory.mktemp("shared-store") / "store"
    logs = tmp_path_factory.mktemp("logs")
    # one forward worker each: two servers share the 2 cores of CI
    env = {"TAILOR_FORWARD_WORKERS": "1", "TAILOR_TORCH_THREADS": "1"}
    servers = [Server(store, env, logs / f"replica-{n}.log") for n in "ab"]
    try:
        with ThreadPoolExecutor(2) as pool:  # warm both at once: ~15 s instead of ~30 s
            list(pool.map(Server.start, servers))
        clients = [s.client() for s in servers]
        yield clients
        for c in clients:
            c.close()
    finally:
        for s in servers:
            s.stop()


def poll(fn, within_s: float):
    """Call fn until it returns truthy or the time is up; return (value, seconds taken)."""
    t0 = time.monotonic()
    while True:
        value = fn()
        elapsed = time.monotonic() - t0
        if value or elapsed > within_s:
            return value, elapsed
        time.sleep(0.05)


def test_adapter_created_on_a_is_served_by_b_within_2s(replicas):
    a, b = replicas
    assert b.post("/v1/predict", json={"adapter": "topics", "inputs": PROBES}).status_code == 404
    r = a.post("/v1/adapters", json={"name": "topics", "examples": EXAMPLES})
    assert r.status_code == 201, r.text
    ref = r.json()["ref"]

    def served_by_b():
        resp = b.post("/v1/predict", json={"adapter": "topics", "inputs": PROBES})
        return resp.json() if resp.status_code == 200 else None

    on_b, took = poll(served_by_b, VISIBLE_WITHIN_S)
    assert on_b is not None, f"replica B did not serve {ref} within {VISIBLE_WITHIN_S}s"
    assert on_b["adapter"] == ref
    on_a = a.post("/v1/predict", json={"adapter": "topics", "inputs": PROBES}).json()
    assert [p["label"] for p in on_b["predictions"]] == ["sport", "business"]
    for pa, pb in zip(on_a["predictions"], on_b["predictions"]):
        assert pa["label"] == pb["label"]
        assert pa["score"] == pytest.approx(pb["score"], abs=1e-5)


def test_delete_on_a_is_seen_by_b_within_2s(replicas):
    a, b = replicas
    assert a.post("/v1/adapters", json={"name": "doomed", "examples": EXAMPLES}).status_code == 201
    # B has it loaded (cached) before the delete: the cache must not outlive the store
    assert b.post("/v1/predict", json={"adapter": "doomed", "inputs": PROBES}).status_code == 200
    r = a.delete("/v1/adapters/doomed")
    assert r.status_code == 200, r.text

    def gone_on_b():
        return (b.post("/v1/predict", json={"adapter": "doomed", "inputs": PROBES}).status_code == 404
                and b.get("/v1/adapters/doomed").status_code == 404)

    gone, took = poll(gone_on_b, VISIBLE_WITHIN_S)
    assert gone, f"replica B still served a deleted adapter after {took:.2f}s"
    body = b.get("/v1/adapters/doomed").json()
    assert body["error"]["code"] and "doomed" in body["error"]["message"]
    assert "doomed" not in [x["name"] for x in b.get("/v1/adapters").json()["adapters"]]


def test_simultaneous_creates_of_one_name_through_a_and_b_keep_both(replicas):
    a, b = replicas
    go = threading.Barrier(2)
    # different examples per side, so each version's weights are recognisably its own
    sides = {"a": (a, EXAMPLES), "b": (b, EXAMPLES[1:4] + EXAMPLES[5:8])}

    def create(side: str):
        client, examples = sides[side]
        go.wait()
        return client.post("/v1/adapters", json={"name": "raced", "examples": examples})

    acknowledged = []
    for _ in range(3):
        with ThreadPoolExecutor(2) as pool:
            results = dict(zip(sides, pool.map(create, sides)))
        for side, r in results.items():
            assert r.status_code == 201, f"{side}: {r.status_code} {r.text}"
            acknowledged.append(r.json()["version"])
    assert sorted(acknowledged) == [1, 2, 3, 4, 5, 6], f"versions handed out: {acknowledged}"
    records = b.get("/v1/adapters/raced").json()
    assert records["versions"] == [1, 2, 3, 4, 5, 6], "a concurrent create was lost or renumbered"

    # every version loads (checksums verified) on both replicas and answers the same there
    for v in records["versions"]:
        answers = [c.post("/v1/predict", json={"adapter": f"raced@{v}", "inputs": PROBES})
                   for c in (a, b)]
        assert [r.status_code for r in answers] == [200, 200], answers[0].text
        pa, pb = (r.json()["predictions"] for r in answers)
        flat = [[p["scores"][lab] for lab in ("business", "sport")] for p in pa + pb]
        assert flat[:2] == [pytest.approx(x, abs=1e-5) for x in flat[2:]]
        rec = a.get(f"/v1/adapters/raced@{v}").json()
        assert rec["version"] == v and rec["labels"] == ["business", "sport"]
