"""The S3 store (adapters/storage/s3.py) against a real SeaweedFS (tests/s3server.py): the
versioned-store behaviour of the folder store, plus what object storage must prove on its
own: distinct numbers for concurrent publishers without a lock, nothing visible after a
crashed publish, and cached adapters loading with the server gone."""
import subprocess
import sys
import threading

import pytest
import torch

from adapters.errors import AdapterNotFound, StoreUnavailable, TooManyAdapters
from adapters.storage import open_store
from adapters.storage.factory import parse_store_url
from adapters.storage.s3 import S3Store
from tests.conftest import ROOT
from tests.s3server import SeaweedS3
from tests.unit.adapters.test_store import BB, publish

PREFIX = "tailor/store"


@pytest.fixture
def replicas(s3, tmp_path, monkeypatch):
    """``replica(name)``: an S3 store on one fresh bucket with a local folder of its own (a
    replica without shared disk), its client configured from the standard AWS variables."""
    for key, value in s3.env().items():
        monkeypatch.setenv(key, value)
    bucket = s3.bucket()

    def replica(name: str = "a", **kw) -> S3Store:
        return open_store(f"s3://{bucket}/{PREFIX}", tmp_path / name, BB, **kw)
    replica.bucket = bucket
    return replica


def test_publish_load_list_delete_and_numbers_never_reused(replicas):
    store = replicas()
    m1, m2 = publish(store, "x", 1.0), publish(store, "x", 2.0)
    publish(store, "y", tenant="t2")
    assert (m1.version, m2.version) == (1, 2)
    assert store.resolve("t1", "x") == 2 and store.resolve("t1", "x", 1) == 1
    assert torch.equal(store.load("t1", "x", 1).tensors["head.weight"] * 2,
                       store.load("t1", "x", 2).tensors["head.weight"])
    assert store.names("t1") == ["x"] and store.tenants() == ["t1", "t2"]
    [usage] = store.usage("t1")
    assert usage["name"] == "x" and usage["versions"] == 2 and usage["stored_bytes"] > 0
    assert store.delete("t1", "x", 1) == [1] and store.versions("t1", "x") == [2]
    with pytest.raises(AdapterNotFound):
        store.load("t1", "x", 1)
    assert store.delete("t1", "x") == [2]
    assert store.names("t1") == [] and store.usage("t1") == []
    with pytest.raises(AdapterNotFound):
        store.resolve("t1", "x")
    assert publish(store, "x").version == 3  # the tombstones keep 1 and 2 taken


def test_listing_is_paginated(replicas):
    store = replicas()
    store.page_size = 2  # S3 pages hold 1,000 keys; small pages prove every page is read
    for name in ("a", "b", "c", "d", "e"):
        publish(store, name)
    publish(store, "c")
    store.delete("t1", "b")
    assert store.names("t1") == ["a", "c", "d", "e"]
    assert store.versions("t1", "c") == [1, 2]


def test_a_small_tenant_is_refreshed_with_one_listing(replicas):
    """Names of a tenant whose keys fit one page are looked up with one request for all."""
    writer, reader = replicas("w"), replicas("r")
    for name in ("a", "b", "c"):
        publish(writer, name)
    reader.fresh_s = 60.0
    calls = []
    real = reader.s3.list_objects_v2
    reader.s3.list_objects_v2 = lambda **kw: (calls.append(kw["Prefix"]), real(**kw))[1]
    assert [reader.versions("t1", n) for n in ("a", "b", "c")] == [[1], [1], [1]]
    assert calls == [f"{PREFIX}/tenants/t1/"]
    publish(writer, "b")
    reader.fresh_s = 0.0  # stale: list again
    assert reader.versions("t1", "b") == [1, 2] and len(calls) == 2
    assert reader.versions("t1", "nope") == [] and len(calls) == 3


def test_a_version_newer_than_a_replica_knows_is_looked_up_before_a_404(replicas):
    a, b = replicas("a"), replicas("b")
    publish(a, "n")
    b.fresh_s = 60.0
    assert b.versions("t1", "n") == [1]  # b's list is fresh for a minute
    publish(a, "n")
    assert b.resolve("t1", "n", 2) == 2 and b.load("t1", "n", 2).manifest.version == 2
    publish(a, "n")
    a.delete("t1", "n", 3)
    with pytest.raises(AdapterNotFound):  # above the known ones, and not there: a 404
        b.resolve("t1", "n", 3)


def test_a_version_below_the_known_ones_but_missing_from_the_view_is_looked_up(replicas):
    """A replica's view can lack a lower version: its own publishes added on top of a listing
    that raced another replica's (a loaded CI run answered 404 for an acknowledged v1 beside
    a known 2 and 3). Any number a replica does not know is looked up before a 404; a deleted
    one stays a 404."""
    import time

    a, b = replicas("a"), replicas("b")
    publish(a, "n")
    publish(b, "n")
    b.fresh_s = 60.0
    with b._lock:  # the raced view, fresh for a minute: v2 (b's own), not a's v1
        b._known[("t1", "n")] = (time.monotonic(), [2])
    assert b.resolve("t1", "n", 1) == 1 and b.load("t1", "n", 1).manifest.version == 1
    a.delete("t1", "n", 1)
    with b._lock:
        b._known[("t1", "n")] = (time.monotonic(), [2])
    with pytest.raises(AdapterNotFound):
        b.resolve("t1", "n", 1)


def test_concurrent_publishers_on_two_replicas_get_distinct_versions(replicas):
    a, b = replicas("a"), replicas("b")
    got, errors = [], []

    def create(store, n):
        try:
            for i in range(n):
                got.append(publish(store, "x", float(i + 1)).version)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(repr(e))
    threads = [threading.Thread(target=create, args=(s, 8)) for s in (a, b, a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(got) == list(range(1, 33))
    assert b.versions("t1", "x") == list(range(1, 33))
    for v in range(1, 33):  # every version is whole, whichever replica wrote it
        assert a.load("t1", "x", v).manifest.version == v


CRASH = """
import os, sys, torch
sys.path.insert(0, {root!r})
from adapters.storage import open_store
from adapters.storage.s3 import S3Store
from tests.unit.adapters.test_store import BB, publish
S3Store._claim = lambda *a, **k: os._exit(3)  # dies after the files, before the manifest
publish(open_store({url!r}, {local!r}, BB), "x")
"""


def _publish_and_die_before_the_manifest(replicas, tmp_path) -> None:
    """A publisher of ``x`` in a process of its own that exits after its files (CRASH)."""
    url = f"s3://{replicas.bucket}/{PREFIX}"
    out = subprocess.run([sys.executable, "-c", CRASH.format(root=str(ROOT), url=url,
                                                            local=str(tmp_path / "crashed"))],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 3, out.stderr


def test_a_publisher_killed_before_its_manifest_leaves_nothing_visible(replicas, tmp_path):
    store = replicas()
    _publish_and_die_before_the_manifest(replicas, tmp_path)
    assert _keys(store, f"{PREFIX}/objects/"), "the crashed publisher wrote its files first"
    assert store.versions("t1", "x") == [] and store.names("t1") == []
    with pytest.raises(AdapterNotFound):
        store.load("t1", "x")
    assert publish(store, "x").version == 1 and store.load("t1", "x").manifest.version == 1


def test_the_sweep_removes_only_files_no_live_version_names_once_old_enough(replicas, tmp_path):
    """Leftovers of a publisher killed before its manifest and of a delete that stopped after
    its tombstone are removed by ``sweep``, once older than its threshold; the files of live
    versions, and of a name with a manifest that cannot be read, stay."""
    import time

    store = replicas()
    _publish_and_die_before_the_manifest(replicas, tmp_path)
    live = [publish(store, "x", 1.0), publish(store, "x", 2.0)]
    tomb = publish(store, "x", 3.0)  # deleted, but only its tombstone written
    store.s3.put_object(Bucket=store.bucket, Key=f"{PREFIX}/tenants/t1/x/v{tomb.version}", Body=b"")
    publish(store, "odd")
    store.s3.put_object(Bucket=store.bucket, Key=f"{PREFIX}/tenants/t1/odd/v2", Body=b"{not json")
    for lost in ("lost1", "lost2"):  # more folders than live versions: the ids are read
        store.s3.put_object(Bucket=store.bucket, Body=b"x",
                            Key=f"{PREFIX}/objects/t1/odd/{lost}/head.safetensors")
    folders = lambda n: {k.split("/")[-2] for k in _keys(store, f"{PREFIX}/objects/t1/{n}/")}  # noqa: E731
    before_x, before_odd = folders("x"), folders("odd")
    assert len(before_x) == 4 and len(before_odd) == 3  # x: 2 live, 1 tombstoned, 1 crashed
    assert store.sweep() == 0  # all younger than an hour: a publish may be writing them now
    time.sleep(1.1)
    fresh = replicas("b")  # a replica starting: nothing of the store in its memory yet
    assert fresh.sweep(older_than_s=1.0) == 2
    assert folders("x") == {m.id for m in live}
    assert folders("odd") == before_odd  # v2's manifest is unreadable: the name is left alone
    assert [fresh.load("t1", "x", m.version).manifest.id for m in live] == [m.id for m in live]
    assert fresh.versions("t1", "x") == [1, 2] and fresh.sweep(older_than_s=1.0) == 0


def _keys(store, prefix):
    return [o["Key"] for page in store._list(prefix) for o in page.get("Contents", [])]


def test_limit_of_names_per_tenant(replicas):
    store = replicas(max_adapters_per_tenant=2)
    publish(store, "a"), publish(store, "b")
    publish(store, "a")  # a new version of an existing name does not count
    with pytest.raises(TooManyAdapters):
        publish(store, "c")
    assert store.names("t1") == ["a", "b"]


def test_a_damaged_cached_file_is_fetched_again(replicas):
    store = replicas()
    m = publish(store, "x")
    [(_, digest)] = m.files.items()
    (store.files.root / digest).write_bytes(b"not the weights")
    assert replicas("b").load("t1", "x").manifest.version == 1  # another replica: no cache
    fresh = S3Store(replicas.bucket, PREFIX, BB, root=store.root)  # same folder, new process
    assert torch.equal(fresh.load("t1", "x").tensors["head.weight"],
                       replicas("c").load("t1", "x").tensors["head.weight"])
    assert (store.files.root / digest).read_bytes() != b"not the weights"


def test_cached_adapters_load_with_the_server_down_and_writes_answer_503(tmp_path, monkeypatch):
    """Its own server: this test stops it."""
    server = SeaweedS3(tmp_path / "weed").start()
    try:
        for key, value in server.env().items():
            monkeypatch.setenv(key, value)
        bucket = server.bucket()
        url = f"s3://{bucket}/{PREFIX}"
        writer, reader = open_store(url, tmp_path / "w", BB), open_store(url, tmp_path / "r", BB)
        publish(writer, "x", 3.0)
        before = reader.load("t1", "x").tensors["head.weight"]
        # The files come from the local cache by checksum: remove them from the bucket.
        server.client().delete_objects(Bucket=bucket, Delete={"Objects": [
            {"Key": k} for k in _keys(writer, f"{PREFIX}/objects/")]})
        assert torch.equal(open_store(url, tmp_path / "r", BB).load("t1", "x").tensors["head.weight"],
                           before)
        server.stop()
        assert torch.equal(reader.load("t1", "x").tensors["head.weight"], before)
        assert torch.equal(reader.load("t1", "x", 1).tensors["head.weight"], before)
        assert torch.equal(writer.load("t1", "x").tensors["head.weight"], before)
        with pytest.raises(StoreUnavailable) as e:
            publish(writer, "y")
        assert e.value.status == 503 and e.value.headers["Retry-After"].isdigit()
        assert "try again" in e.value.message
        with pytest.raises(StoreUnavailable):  # never seen here: nothing to serve it from
            S3Store(bucket, PREFIX, BB, root=tmp_path / "n").load("t1", "x")
        server.start()
        assert publish(writer, "y").version == 1
        assert reader.names("t1") == ["x", "y"]
    finally:
        server.stop()


@pytest.mark.parametrize("url, parsed", [
    ("s3://bucket", ("s3", "bucket", "")),
    ("s3://bucket/a/b/", ("s3", "bucket", "a/b")),
    ("file:///srv/store", ("file", "/srv/store", "")),
])
def test_store_urls(url, parsed):
    assert parse_store_url(url) == parsed


@pytest.mark.parametrize("url", ["http://x/y", "s3://", "file://host/x", "file:relative", "bucket/x",
                                 "s3://b/p?versionId=1"])
def test_bad_store_urls_are_refused_by_name(url):
    with pytest.raises(ValueError, match="store URL"):
        parse_store_url(url)


def test_a_wrong_bucket_fails_at_start_up(replicas, tmp_path):
    with pytest.raises(StoreUnavailable, match="NoSuchBucket"):
        open_store("s3://no-such-bucket-here/x", tmp_path / "z", BB)
