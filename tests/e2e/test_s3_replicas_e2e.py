"""Two serving replicas on one S3 bucket (a real SeaweedFS), no shared disk: what a team that
outgrows one machine relies on. An adapter created through one replica is served by the
other; simultaneous creates of one name through both get distinct, loadable versions; with
the object store down, cached adapters keep answering and creates answer 503 with
Retry-After until it is back (docs/s3.md); a replica killed with -9 in the middle of
publishing leaves no partial version and loses no acknowledged one."""
from __future__ import annotations

import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.conftest import TLS, Server, recording
from tests.e2e.test_crash import (NAMES, PROBES, Ledger, _check_acknowledged, _check_visible,
                                  _creator, _kill_all, _procs_of, _wait_gone)
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
            srv.wait_ready(240)
        yield servers
    finally:
        with ThreadPoolExecutor(2) as pool:  # SIGTERM both at once: their shutdowns overlap
            list(pool.map(Server.stop, servers))


def create(srv: Server, name: str) -> httpx.Response:
    return httpx.post(srv.url + "/v1/adapters", timeout=120, verify=TLS,
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
            replicas[v % 2].url + "/v1/predict", timeout=60, verify=TLS,
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
                # steady traffic, not a load test: ~150 predicts/s in all keep both
                # replicas answering through the outage without saturating the machine
                stop.wait(0.05)
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


def _watch(url: str, stop: threading.Event, seen: set, errors: list) -> None:
    """While A publishes and dies: each version that B lists, B loads and predicts at once."""
    with httpx.Client(base_url=url, timeout=60) as c:
        while not stop.is_set():
            for name in NAMES:
                r = c.get(f"/v1/adapters/{name}")
                if r.status_code != 200:
                    if r.status_code != 404:
                        errors.append(f"list {name} on B: {r.status_code} {r.text[:200]}")
                    continue
                for v in set(r.json()["versions"]) - {v for n, v in seen if n == name}:
                    p = c.post("/v1/predict", json={"adapter": f"{name}@{v}", "inputs": PROBES[:1]})
                    if p.status_code != 200:
                        errors.append(f"{name}@{v} visible on B but {p.status_code} {p.text[:200]}")
                    seen.add((name, v))
            time.sleep(0.1)


def _watch_bucket(store, stop: threading.Event, seen: set, errors: list) -> None:
    """The same on the bucket itself, listing afresh in a tight loop (B re-lists at most
    every 0.5 s): a version that is visible before all its files are written shows here."""
    while not stop.is_set():
        for name in NAMES:
            try:
                for v in set(store.versions("default", name)) - {v for n, v in seen if n == name}:
                    m = store.manifest("default", name, v)
                    store.backbone = m.backbone  # the files and checksums are the point here
                    store.load("default", name, v)
                    seen.add((name, v))
            except Exception as e:  # noqa: BLE001 - any failure to load a visible version
                errors.append(f"{name} on the bucket: {e!r}")
        time.sleep(0.01)


def _check_acknowledged_or_show_bucket(c: httpx.Client, ledger: Ledger, store) -> None:
    """``_check_acknowledged``; a failure also shows what the bucket holds for each name
    (number -> manifest size, 0 = deleted) as a store of its own lists it now, so that a
    replica's stale view and a lost manifest can be told apart."""
    try:
        _check_acknowledged(c, ledger)
    except AssertionError as e:
        bucket = {n: store._claims("default", n) for n in NAMES}
        raise AssertionError(f"{e}\nthe bucket now: {bucket}\n"
                             f"acknowledged: {sorted(ledger.acks)}") from None


def test_replica_killed_with_9_mid_publish_leaves_no_partial_version_and_loses_no_ack(
        s3, replicas, tmp_path):
    """kill -9 of every process of A while three clients create through it and one through B
    (racing A for the same numbers): B never shows a partial version, neither does the bucket
    read directly, nor A restarted on it; every 201 is there and predicts as it did."""
    from adapters.encoders import BackboneIdentity
    from adapters.storage.factory import parse_store_url
    from adapters.storage.s3 import S3Store

    t0 = time.monotonic()
    a, b = replicas
    _, bucket, prefix = parse_store_url(a.env["TAILOR_STORE_URL"])
    store = S3Store(bucket, prefix, None, root=tmp_path / "direct", client=s3.client(), fresh_s=0)
    rng = random.Random(21)
    others = {x["name"] for x in httpx.get(b.url + "/v1/adapters", timeout=30).json()["adapters"]}
    assert not others & set(NAMES)
    on_a, on_b, stop, errors = Ledger(), Ledger(), threading.Event(), []
    seen, on_bucket = set(), set()  # (name, version) loaded by B's watcher, the bucket's
    threads = [threading.Thread(target=_creator, args=(a.url, on_a, 2100 + i, stop), daemon=True)
               for i in range(3)]
    threads += [threading.Thread(target=_creator, args=(b.url, on_b, 2200, stop), daemon=True),
                threading.Thread(target=recording(errors, _watch), args=(b.url, stop, seen, errors),
                                 daemon=True),
                threading.Thread(target=recording(errors, _watch_bucket),
                                 args=(store, stop, on_bucket, errors), daemon=True)]
    for t in threads:
        t.start()
    try:  # the kill lands at a random moment after A's first acknowledged create
        deadline = time.monotonic() + 120
        while not on_a.acks and time.monotonic() < deadline and not on_a.errors:
            time.sleep(0.05)
        assert on_a.acks, f"no create acknowledged by A within 120 s: {on_a.errors[:3]}"
        time.sleep(rng.uniform(0.5, 2.0))
        _kill_all(a)
        assert _wait_gone(_procs_of(a.store), 5) == [], "a process of A survived kill -9"
        killed_at = len(on_a.acks)
        time.sleep(1.0)  # B creates and watches on a moment with A gone
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    assert not any(t.is_alive() for t in threads), "a client hung after the kill"
    # A again, on the same bucket with a fresh local folder: it starts while B is checked
    replicas[0] = a2 = Server(tmp_path / "replica-a-again", env=a.env).launch()
    errors += on_a.errors + on_b.errors
    assert errors == [], errors[:5]
    twice = on_a.acks.keys() & on_b.acks.keys()
    assert not twice, f"versions handed out by both replicas: {sorted(twice)}"
    ledger = Ledger(acks={**on_a.acks, **on_b.acks}, preds={**on_a.preds, **on_b.preds})

    with httpx.Client(base_url=b.url, timeout=60) as c:
        _check_acknowledged_or_show_bucket(c, ledger, store)
        listed = {x["name"] for x in c.get("/v1/adapters").json()["adapters"]}
        assert listed - others <= set(NAMES), f"not an adapter, but listed: {listed - others}"
        visible = {n: _check_visible(c, n) for n in NAMES if n in listed}
    # the bucket itself, read by a store of its own: the same versions, each whole
    store.backbone = BackboneIdentity(**next(iter(ledger.acks.values()))["backbone"])
    assert {n: store.versions("default", n) for n in visible} == visible
    ids = {store.load("default", n, v).manifest.id for n, vs in visible.items() for v in vs}
    folders = [p["Prefix"] for n in visible for p in s3.client().list_objects_v2(
        Bucket=bucket, Prefix=f"{store.prefix}objects/default/{n}/",
        Delimiter="/").get("CommonPrefixes", [])]
    orphans = [f for f in folders if f.rstrip("/").rsplit("/", 1)[-1] not in ids]  # crashed publishes

    a2.wait_ready(240)
    with httpx.Client(base_url=a2.url, timeout=60) as c:
        _check_acknowledged_or_show_bucket(c, ledger, store)
        assert {n: _check_visible(c, n) for n in visible} == visible
        for name in NAMES:  # numbers go on after every one taken, by either replica
            r = create(a2, name)
            assert r.status_code == 201, r.text
            assert r.json()["version"] > max(visible.get(name, [0]))
    print(f"\nreplica kill -9: {killed_at} creates acknowledged by A before the kill, "
          f"{len(on_b.acks)} by B, {len(seen)} versions watched on B and {len(on_bucket)} on the "
          f"bucket while it ran, {len(orphans)} "
          f"unreferenced publishes left in the bucket, {time.monotonic() - t0:.1f} s")
