"""The versioned store and the LRU registry (real files, small synthetic heads)."""
import json
import os

import pytest
import torch

from adapters.encoders import BackboneIdentity
from adapters.errors import (AdapterNotFound, CorruptAdapter, IncompatibleAdapter, InvalidName,
                             TooManyAdapters)
from adapters.kinds import load_adapter
from adapters.serving import AdapterRegistry
from adapters.storage import AdapterStore, Artifact

BB = BackboneIdentity("test-backbone", "a" * 64)


def publish(store, name, scale=1.0, tenant="t1"):
    w = torch.arange(6, dtype=torch.float32).reshape(2, 3) * scale
    return store.publish(tenant, name, Artifact(
        kind="head", labels=["a", "b"], tensors={"head.weight": w, "head.bias": torch.zeros(2)},
        options={}, metrics={}))


@pytest.fixture
def store(tmp_path):
    return AdapterStore(tmp_path, BB)


def test_versions_are_immutable_and_numbered(store):
    m1, m2 = publish(store, "x", 1.0), publish(store, "x", 2.0)
    assert (m1.version, m2.version) == (1, 2)
    assert store.resolve("t1", "x") == 2 and store.resolve("t1", "x", 1) == 1
    assert torch.equal(store.load("t1", "x", 1).tensors["head.weight"] * 2,
                       store.load("t1", "x", 2).tensors["head.weight"])
    m = store.manifest("t1", "x", 1)
    assert m.backbone.model_dump() == BB.as_dict() and m.schema_version == 1
    assert set(m.files) == {"head.safetensors"} and m.created_at


def test_deleted_version_numbers_are_never_reused(store):
    publish(store, "x"), publish(store, "x")
    assert store.delete("t1", "x") == [1, 2]
    assert store.names("t1") == []
    with pytest.raises(AdapterNotFound):
        store.resolve("t1", "x")
    assert publish(store, "x").version == 3


def test_delete_one_version(store):
    publish(store, "x"), publish(store, "x")
    assert store.delete("t1", "x", 1) == [1]
    assert store.versions("t1", "x") == [2]
    with pytest.raises(AdapterNotFound):
        store.delete("t1", "x", 1)


def test_tenants_are_separate(store):
    publish(store, "x", tenant="t1")
    assert store.names("t2") == []
    with pytest.raises(AdapterNotFound):
        store.load("t2", "x")


@pytest.mark.parametrize("name", ["../x", "..", "a/b", "", ".seq", "x@1"])
def test_names_never_become_paths(store, name):
    with pytest.raises(InvalidName):
        publish(store, name)
    assert not any(p.name == "x" for p in store.root.parent.iterdir())


@pytest.mark.parametrize("edit,error,fragment", [
    (lambda m: m.pop("labels"), CorruptAdapter, "labels: Field required"),
    (lambda m: m.update(version="three"), CorruptAdapter, "version:"),
    (lambda m: m.update(lora={"rank": 0, "alpha": 1, "targets": ["query"]}), CorruptAdapter, "lora.rank"),
    (lambda m: m.update(schema_version=7), IncompatibleAdapter, "schema 7"),
    (lambda m: "not a manifest", CorruptAdapter, "does not describe"),
])
def test_a_manifest_that_does_not_parse_is_a_typed_error_naming_the_version(store, edit, error, fragment):
    """Parsed once at the store's door: never a KeyError (a 500) deep in serving."""
    publish(store, "x")
    mpath = store.root / "tenants" / "t1" / "x" / "v1" / "manifest.json"
    m = json.loads(mpath.read_text())
    out = edit(m)
    mpath.write_text(json.dumps(out if isinstance(out, str) else m))
    with pytest.raises(error) as e:
        store.load("t1", "x")
    assert "x@1" in e.value.message and fragment in e.value.message
    if error is CorruptAdapter:
        assert "Delete this version" in e.value.message


def test_manifest_that_is_not_json_is_a_typed_error(store):
    publish(store, "x")
    (store.root / "tenants" / "t1" / "x" / "v1" / "manifest.json").write_text("{truncated")
    with pytest.raises(CorruptAdapter) as e:
        store.manifest("t1", "x")
    assert "x@1" in e.value.message and "not valid JSON" in e.value.message


def test_tampered_weights_are_refused(store):
    publish(store, "x")
    f = store.root / "tenants" / "t1" / "x" / "v1" / "head.safetensors"
    data = bytearray(f.read_bytes())
    data[-1] ^= 0xFF
    f.write_bytes(bytes(data))
    with pytest.raises(CorruptAdapter):
        store.load("t1", "x")


def test_unexpected_file_in_manifest_is_refused(store):
    publish(store, "x")
    mpath = store.root / "tenants" / "t1" / "x" / "v1" / "manifest.json"
    m = json.loads(mpath.read_text())
    m["files"] = {"head.pkl": "0" * 64}
    mpath.write_text(json.dumps(m))
    with pytest.raises(CorruptAdapter):
        store.load("t1", "x")


def test_adapter_of_another_backbone_is_refused(tmp_path):
    publish(AdapterStore(tmp_path, BB), "x")
    other = AdapterStore(tmp_path, BackboneIdentity("other", "b" * 64))
    with pytest.raises(IncompatibleAdapter) as e:
        other.load("t1", "x")
    assert "Re-create" in e.value.message


def test_interrupted_write_is_invisible_and_swept(store):
    publish(store, "x")
    half = store.root / ".tmp" / "deadbeef"
    half.mkdir()
    (half / "head.safetensors").write_bytes(b"partial")
    assert store.versions("t1", "x") == [1]
    os.utime(half, (0, 0))
    assert store.sweep() == 1 and not half.exists()


def test_sweep_removes_stray_files_not_only_folders(store):
    # kill -9 leaves files as well as folders: a training worker's output in .tmp, a version
    # counter's temp file beside the versions. They must go, and only once they are stale.
    publish(store, "x")
    worker_out = store.root / ".tmp" / "lora-0123.safetensors"
    worker_out.write_bytes(b"half a tensor")
    seq_tmp = store.root / "tenants" / "t1" / "x" / ".seq.4567"
    seq_tmp.write_text("2")
    fresh = store.root / ".tmp" / "lora-89ab.safetensors"  # another replica's, being written
    fresh.write_bytes(b"...")
    for p in (worker_out, seq_tmp):
        os.utime(p, (0, 0))
    assert store.sweep() == 2
    assert not worker_out.exists() and not seq_tmp.exists() and fresh.exists()
    assert store.versions("t1", "x") == [1] and store.load("t1", "x").manifest.version == 1
    assert (store.root / "tenants" / "t1" / "x" / ".seq").read_text() == "1"


def test_registry_lru_and_freshness(store):
    reg = AdapterRegistry(store, load_adapter, capacity=2)
    for n in ("a", "b", "c"):
        publish(store, n)
    reg.get("t1", "a"), reg.get("t1", "b"), reg.get("t1", "a"), reg.get("t1", "c")
    assert len(reg) == 2 and reg.loads == 3
    reg.get("t1", "a")  # still cached: b was least recently used
    assert reg.loads == 3
    reg.get("t1", "b")
    assert reg.loads == 4
    publish(store, "a", 5.0)  # a new version is seen on the next lookup, no restart
    assert reg.get("t1", "a").manifest.version == 2
    store.delete("t1", "a")
    with pytest.raises(AdapterNotFound):
        reg.get("t1", "a")


def test_folders_of_a_new_name_are_made_durable(store, monkeypatch):
    # rename + fsync(name folder) makes v1 durable inside its folder; the folder's own entry
    # (new tenant, new name) needs its parents fsynced too, or a power loss can lose it.
    import adapters.storage.store as store_mod

    synced = []
    real = store_mod._fsync_dir
    monkeypatch.setattr(store_mod, "_fsync_dir", lambda p: (synced.append(p), real(p)))
    publish(store, "fresh", tenant="newcomer")
    tenants = store.root / "tenants"
    assert tenants / "newcomer" in synced and tenants in synced
    assert tenants / "newcomer" / "fresh" in synced


def test_adapters_per_tenant_limit_holds_under_concurrent_creates(tmp_path):
    """publish re-checks the limit under the tenant's lock: eight threads creating new names
    at once against a limit of 3 get exactly 3; versions of existing names never count."""
    from concurrent.futures import ThreadPoolExecutor

    store = AdapterStore(tmp_path, BB, max_adapters_per_tenant=3)

    def create(name, tenant="t1"):
        try:
            return publish(store, name, tenant=tenant).name
        except TooManyAdapters as e:
            assert "the limit is 3 per tenant (TAILOR_MAX_ADAPTERS_PER_TENANT)" in e.message
            return None

    with ThreadPoolExecutor(8) as pool:
        made = [n for n in pool.map(create, [f"n{i}" for i in range(8)]) if n]
    assert len(made) == 3 and store.names("t1") == sorted(made)
    assert create(made[0]) == made[0] and store.versions("t1", made[0]) == [1, 2]
    assert create("late") is None and store.names("t1") == sorted(made)
    with pytest.raises(TooManyAdapters):
        store.check_room("t1", "late")
    store.check_room("t1", made[0])  # an existing name always has room
    assert create("late", tenant="t2") == "late"  # per tenant
    store.delete("t1", made[1])
    assert create("late") == "late"
