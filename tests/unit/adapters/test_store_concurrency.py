"""The store shared by several OS processes (replicas on one volume), hammered for real.

Each worker is a separate process with its own AdapterStore on the same folder, as two pods
on one PersistentVolumeClaim are. Versions must come out distinct and gap-free, every
version must load with the weights its writer wrote, and a reader racing a deleter must see
a version whole or "not found", never a corrupt one.
"""
from __future__ import annotations

import multiprocessing as mp
import os
from pathlib import Path

import pytest

from adapters.encoders import BackboneIdentity
from adapters.errors import AdapterNotFound
from adapters.storage import AdapterStore, Artifact

IDENTITY = BackboneIdentity("test-backbone", "ab" * 32)
WORKERS = 4
PUBLISHES = 15

# fork: children start in milliseconds (no second torch import); the parent runs no torch op
# before forking, so no thread pool is inherited half-initialised.
ctx = mp.get_context("fork")


def _publisher(root: str, worker: int, count: int, barrier, out) -> None:
    import torch

    store = AdapterStore(root, IDENTITY)
    barrier.wait()
    got = []
    for i in range(count):
        w = torch.full((2, 3), float(worker * 1000 + i))  # [labels, dim]: says who wrote it
        m = store.publish("t", "shared", Artifact(
            kind="head", labels=["a", "b"], tensors={"W": w, "b": torch.zeros(2)}, options={},
            metrics={"writer": [worker, i]}))
        got.append(m.version)
    out.put((worker, got))


def _run(procs) -> None:
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0, f"{p.name} exited with {p.exitcode}"


def test_concurrent_publishes_get_distinct_gapless_versions_that_all_load(tmp_path: Path):
    root = str(tmp_path / "store")
    AdapterStore(root, IDENTITY)
    barrier, out = ctx.Barrier(WORKERS), ctx.Queue()
    procs = [ctx.Process(target=_publisher, args=(root, w, PUBLISHES, barrier, out))
             for w in range(WORKERS)]
    _run(procs)
    results = dict(out.get(timeout=5) for _ in procs)

    versions = [v for vs in results.values() for v in vs]
    assert len(versions) == len(set(versions)), "a version number was handed out twice"
    assert sorted(versions) == list(range(1, WORKERS * PUBLISHES + 1))
    for vs in results.values():
        assert vs == sorted(vs), "one writer's versions must increase"

    store = AdapterStore(root, IDENTITY)
    assert store.versions("t", "shared") == sorted(versions)
    for worker, vs in results.items():
        for i, v in enumerate(vs):
            loaded = store.load("t", "shared", v)  # checksums verified here
            assert loaded.manifest.metrics["writer"] == [worker, i]
            assert loaded.tensors["W"].unique().tolist() == [float(worker * 1000 + i)]
    assert os.listdir(Path(root) / ".tmp") == [], "temp folders left behind"


def _deleter(root: str, stop, out) -> None:
    store = AdapterStore(root, IDENTITY)
    deleted = 0
    while not stop.is_set():
        try:
            deleted += len(store.delete("t", "shared"))
        except AdapterNotFound:
            pass
    out.put(("deleted", deleted))


def _reader(root: str, stop, out) -> None:
    store = AdapterStore(root, IDENTITY)
    loads = misses = 0
    while not stop.is_set():
        try:
            loaded = store.load("t", "shared")
            assert loaded.tensors["W"].numel() == 6
            loads += 1
        except AdapterNotFound:
            misses += 1
        # anything else (CorruptAdapter, JSON errors) kills the process: exit code != 0
    out.put(("reads", (loads, misses)))


def test_readers_racing_deletes_see_whole_versions_or_not_found(tmp_path: Path):
    root = str(tmp_path / "store")
    AdapterStore(root, IDENTITY)
    barrier, out, stop = ctx.Barrier(2), ctx.Queue(), ctx.Event()
    writers = [ctx.Process(target=_publisher, args=(root, w, 40, barrier, out)) for w in range(2)]
    others = [ctx.Process(target=_deleter, args=(root, stop, out)),
              ctx.Process(target=_reader, args=(root, stop, out))]
    for p in others:
        p.start()
    _run(writers)
    stop.set()
    for p in others:
        p.join(30)
        assert p.exitcode == 0, f"{p.name} failed (exit {p.exitcode}): see its traceback above"
    results = [out.get(timeout=5) for _ in range(4)]
    published = [v for tag, vs in results if isinstance(tag, int) for v in vs]
    # deleted numbers are never reused: name@N always means the same weights
    assert sorted(published) == list(range(1, 81))
    reads = dict(r for r in results if r[0] == "reads")["reads"]
    assert sum(reads) > 0
    deleted = dict(r for r in results if r[0] == "deleted")["deleted"]
    assert deleted + len(AdapterStore(root, IDENTITY).versions("t", "shared")) == 80
    assert os.listdir(Path(root) / ".trash") == []


def test_deleting_an_unknown_name_leaves_no_folder(tmp_path: Path):
    store = AdapterStore(tmp_path, IDENTITY)
    with pytest.raises(AdapterNotFound):
        store.delete("t", "never-made")
    assert not (tmp_path / "tenants" / "t" / "never-made").exists()
