"""Two serving replicas on one S3 bucket (a real SeaweedFS), no shared disk: what a team that
outgrows one machine relies on. An adapter created through one replica is served by the
other; simultaneous creates of one name through both get distinct, loadable versions; with
the object store down, cached adapters keep answering and creates answer 503 with
Retry-After until it is back (docs/s3.md)."""
from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.conftest import Server, recording
from tests.s3server import SeaweedS3

pytestmark = pytest.mark.e2e

EXAMPLES = [{"text": t, "label": label} for t, label in [
    ("the striker scored twice in the final", "sport"), ("a late goal won the cup", "sport"),
    ("the team lost at home on saturday", "sport"), ("shares fell after the profit warning", "business"),
    ("the bank raised interest rates", "business"), ("the merger was approved by regulators", "business")]]
# in-request creates at once: the 100-create race must not be refused with 429 meanwhile
SETTINGS = {"TAILOR_MAX_CONCURRENT_CREATES": "64"}


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """A SeaweedFS of this module's own: the outage test stops it."""
    server = SeaweedS3(tmp_path_factory.mktemp("weed")).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def replicas(s3, tmp_path_factory):
    env = {"TAILOR_STORE_URL": f"s3://{s3.bucket()}/tailor", **s3.env(), **SETTINGS}
    servers = [Server(tmp_path_factory.mktemp(f"replica-{n}") / "local", env=env).launch()
               for n in "ab"]
    try:  # launched together, waited for in turn: the two starts overlap
        for srv in servers:
            _wait_ready(srv)
        yield servers
    finally:
        with ThreadPoolExecutor(2) as pool:  # SIGTERM both at once: their shutdowns overlap
            list(pool.map(Server.stop, servers))


def _wait_ready(srv: Server, timeout: float = 240.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if srv.proc.poll() is not None:
            raise RuntimeError(f"server exited with {srv.proc.returncode}; log:\n{srv.tail()}")
        try:
            if httpx.get(srv.url + "/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"server not ready after {timeout}s; log:\n{srv.tail()}")


def create(srv: Server, name: str) -> httpx.Response:
    return httpx.post(srv.url + "/v1/adapters", timeout=120,
                      json={"name": name, "examples": EXAMPLES, "options": {"head": "centroid"}})


def test_an_adapter_created_through_one_replica_is_served_by_the_other_within_1_s(replicas):
    a, b = replicas
    assert httpx.get(b.url + "/v1/adapters/fresh", timeout=30).status_code == 404  # B has looked
    r = create(a, "fresh")
    assert r.status_code == 201, r.text
    # B re-reads which versions a name has at most every 0.5 s (adapters/storage/s3.py), so
    # 0.6 s after A answered, B must serve the new version at its first try.
    time.sleep(0.6)
    p = httpx.post(b.url + "/v1/predict", timeout=60,
                   json={"adapter": "fresh", "inputs": ["the goalkeeper saved a penalty"]})
    assert p.status_code == 200, p.text
    assert p.json()["adapter"] == "fresh@1" and p.json()["predictions"][0]["label"] == "sport"


def test_100_simultaneous_creates_of_one_name_through_both_replicas(replicas):
    with ThreadPoolExecutor(100) as pool:
        answers = list(pool.map(lambda i: create(replicas[i % 2], "race"), range(100)))
    assert [r.status_code for r in answers] == [201] * 100, [r.text for r in answers if r.status_code != 201][:3]
    versions = sorted(r.json()["version"] for r in answers)
    assert versions == list(range(1, 101))
    for srv in replicas:
        assert httpx.get(srv.url + "/v1/adapters/race", timeout=30).json()["versions"] == versions
    with ThreadPoolExecutor(8) as pool:  # every version loads, on the replica that did not write it
        loaded = list(pool.map(lambda v: httpx.post(
            replicas[v % 2].url + "/v1/predict", timeout=60,
            json={"adapter": f"race@{v}", "inputs": ["interest rates rose again"]}), versions))
    assert [p.status_code for p in loaded] == [200] * 100
    assert {p.json()["adapter"] for p in loaded} == {f"race@{v}" for v in versions}


def test_s3_down_for_10_s_cached_adapters_answer_and_creates_get_503_until_it_is_back(s3, replicas):
    for srv in replicas:  # cached: loaded once on each replica
        for name in ("cached-1", "cached-2"):
            if srv is replicas[0]:
                assert create(srv, name).status_code == 201
            assert httpx.post(srv.url + "/v1/predict", timeout=60, json={
                "adapter": name, "inputs": ["warm"]}).status_code == 200
    stop, errors, answered = threading.Event(), [], []

    def client(i: int) -> None:
        srv, name = replicas[i % 2], f"cached-{i % 4 // 2 + 1}"
        with httpx.Client(base_url=srv.url, timeout=60) as c:
            while not stop.is_set():
                r = c.post("/v1/predict", json={"adapter": name, "inputs": [f"the match {i}"]})
                if r.status_code != 200:
                    errors.append((r.status_code, r.text[:200]))
                answered.append(i)
    threads = [threading.Thread(target=recording(errors, client), args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    try:
        time.sleep(1.0)
        s3.stop()
        down_at = time.monotonic()
        during = len(answered)
        r = create(replicas[1], "while-down")
        assert r.status_code == 503, r.text
        assert r.json()["error"]["code"] == "store_unavailable"
        assert int(r.headers["Retry-After"]) > 0
        time.sleep(max(0.0, 10.0 - (time.monotonic() - down_at)))
        assert len(answered) > during, "predictions went on while S3 was down"
        s3.start()
        deadline = time.monotonic() + 60
        while (r := create(replicas[1], "while-down")).status_code == 503 and time.monotonic() < deadline:
            time.sleep(float(r.headers.get("Retry-After", "1")))
        assert r.status_code == 201, r.text
        time.sleep(1.0)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert errors == []
    p = httpx.post(replicas[0].url + "/v1/predict", timeout=60,
                   json={"adapter": "while-down", "inputs": ["a cup final"]})
    assert p.status_code == 200 and p.json()["adapter"] == "while-down@1"
