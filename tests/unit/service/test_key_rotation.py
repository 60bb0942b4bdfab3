"""API key rotation without a restart (service/keywatch.py, service/auth.py): the key file is
re-read when its content changes, including a Kubernetes Secret update (a symlinked
``..data`` directory swapped, same size, same mtime); a new key works, a removed one is
refused; a malformed or empty new file keeps the old keys and logs the line, never a key."""
from __future__ import annotations

import logging
import os
import shutil
import threading
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.api import create_app
from service.auth import KeyRing, ReloadingKeyRing, load_keyring
from service.keywatch import FileWatch
from service.settings import Settings
from tests.conftest import recording

A = "A" * 31 + "a"       # keys of one length: a rotation that keeps the file's size
B = "B" * 31 + "b"
C = "C" * 31 + "c"
D = "D" * 31 + "d"


class SecretVolume:
    """A folder laid out as the kubelet lays out a mounted Secret: ``api-keys`` ->
    ``..data/api-keys``, ``..data`` -> ``..<timestamp>``; an update writes a new timestamped
    folder and renames a new ``..data`` symlink over the old one (atomic), then removes the
    old folder."""

    def __init__(self, root: Path):
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.n = 0
        self.current: Path | None = None

    @property
    def path(self) -> Path:
        return self.root / "api-keys"

    def write(self, text: str, mtime_ns: int | None = None) -> None:
        self.n += 1
        folder = self.root / f"..2026_11_30_12_00_{self.n:02d}.000000001"
        folder.mkdir()
        (folder / "api-keys").write_text(text)
        if mtime_ns is not None:
            os.utime(folder / "api-keys", ns=(mtime_ns, mtime_ns))
        tmp = self.root / "..data_tmp"
        os.symlink(folder.name, tmp)
        os.rename(tmp, self.root / "..data")
        if not self.path.is_symlink():
            os.symlink("..data/api-keys", self.path)
        if self.current is not None:
            shutil.rmtree(self.current)
        self.current = folder


def lines(*entries: str) -> str:
    return "# keys\n" + "".join(e + "\n" for e in entries)


@pytest.fixture
def secret(tmp_path):
    vol = SecretVolume(tmp_path / "secrets")
    vol.write(lines(f"{A} acme", f"{B} globex admin"))
    return vol


def ring_for(vol: SecretVolume, **kw) -> ReloadingKeyRing:
    ring = load_keyring(Settings(api_keys_file=vol.path), poll_s=0.05, **kw)
    assert isinstance(ring, ReloadingKeyRing)
    return ring


# -- the watcher ---------------------------------------------------------------------------------
def test_a_secret_swap_with_same_size_and_mtime_is_seen_after_two_identical_reads(secret):
    seen = []
    watch = FileWatch(secret.path, seen.append, initial=secret.path.read_text())
    assert watch.check() is False  # unchanged
    mtime = secret.path.stat().st_mtime_ns
    secret.write(lines(f"{A} acme", f"{C} globex admin"), mtime_ns=mtime)
    assert secret.path.stat().st_mtime_ns == mtime and secret.path.stat().st_size == len(
        lines(f"{A} acme", f"{B} globex admin"))
    assert watch.check() is False  # first sight: maybe half-written, wait one poll
    assert watch.check() is True
    assert seen == [lines(f"{A} acme", f"{C} globex admin")]
    assert watch.check() is False


def test_a_file_rewritten_twice_quickly_is_taken_only_once_stable(tmp_path):
    path = tmp_path / "keys"
    path.write_text("one")
    seen = []
    watch = FileWatch(path, seen.append, initial="one")
    path.write_text("half")
    watch.check()
    path.write_text("whole")
    assert watch.check() is False  # changed again since the first sight
    assert watch.check() is True and seen == ["whole"]


def test_a_missing_file_keeps_the_old_content_and_start_checks_at_once(tmp_path, caplog):
    path = tmp_path / "keys"
    path.write_text("one")
    seen = []
    watch = FileWatch(path, seen.append, initial="one", poll_s=60)
    path.unlink()
    with caplog.at_level(logging.ERROR, "tailor"):
        assert watch.check() is False and watch.check() is False
    assert len([r for r in caplog.records if "cannot read" in r.message]) == 1  # said once
    path.write_text("two")
    watch.start()  # an idle pod: the first request sees what changed since start-up
    assert seen == ["two"]
    watch.stop()


# -- the key ring ----------------------------------------------------------------------------------
def test_reload_adds_and_removes_keys(secret):
    ring = ring_for(secret)
    assert ring.lookup(A).tenant == "acme" and ring.lookup(B).admin
    assert ring.lookup(C) is None
    assert ring.reload(lines(f"{A} acme", f"{C} initech")) is True
    assert ring.lookup(A).tenant == "acme"
    assert ring.lookup(C).tenant == "initech"
    assert ring.lookup(B) is None
    assert not ring.open


@pytest.mark.parametrize("text, says", [
    (lines(f"{A} acme", "short acme"), "line 3: the key must be"),
    (lines(f"{A} acme", f"{C} acme superuser"), "line 3: expected"),
    (lines(f"{A} acme", f"{A} globex"), "line 3: the same key as entry 2"),
    (lines(f"{C} bad/tenant"), "line 2"),
    ("# rotated away\n", "holds no keys"),
    ("", "holds no keys"),
])
def test_a_bad_new_file_keeps_the_old_keys_and_logs_the_line_not_the_key(secret, caplog, text, says):
    outcomes = []
    ring = ring_for(secret)
    ring.on_reload = lambda ok, r: outcomes.append(ok)
    with caplog.at_level(logging.INFO, "tailor"):
        assert ring.reload(text) is False
    assert ring.lookup(A).tenant == "acme" and ring.lookup(B).tenant == "globex"
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert says in logged and "keeping the 2 keys in use" in logged
    for key in (A, B, C):
        assert key not in logged
    assert outcomes == [False]


def test_inline_keys_stay_and_a_clash_with_them_is_refused(secret):
    settings = Settings(api_keys_file=secret.path, api_keys=f"{D} ops admin")
    ring = load_keyring(settings, poll_s=0.05)
    assert ring.lookup(D).admin
    assert ring.reload(lines(f"{C} acme")) is True
    assert ring.lookup(D).admin and ring.lookup(C) and ring.lookup(A) is None
    assert ring.reload(lines(f"{D} acme")) is False  # the same key as an inline one
    assert ring.lookup(C).tenant == "acme"


def test_only_a_key_file_with_keys_reloads(tmp_path):
    assert type(load_keyring(Settings(api_keys=f"{A} acme"))) is KeyRing
    assert load_keyring(Settings()).open
    empty = tmp_path / "empty"
    empty.write_text("")
    assert type(load_keyring(Settings(api_keys_file=empty))) is KeyRing  # open: restart to change


def test_lookups_of_unchanged_keys_never_fail_during_reloads(secret):
    ring = ring_for(secret)
    stop = threading.Event()
    failures: list[str] = []
    lookups = [0]

    def reader():
        while not stop.is_set():
            if ring.lookup(A) is None:
                failures.append("the unchanged key was not found")
            lookups[0] += 1

    threads = [threading.Thread(target=recording(failures, reader)) for _ in range(4)]
    for t in threads:
        t.start()
    for i in range(300):
        ring.reload(lines(f"{A} acme", f"{C if i % 2 else D} globex"))
    stop.set()
    for t in threads:
        t.join()
    assert failures == []  # a lookup that raised is recorded here too, not only warned about
    assert lookups[0] > 0


def test_the_watching_ring_rotates_keys_behind_the_http_api(secret):
    ring = ring_for(secret)
    client = TestClient(create_app(keyring=ring))  # no engine: an accepted key answers 503

    def status(key):
        return client.get("/adapters", headers={"Authorization": f"Bearer {key}"}).status_code

    assert (status(A), status(C)) == (503, 401)  # the first request starts the watching
    secret.write(lines(f"{A} acme", f"{C} initech"))
    import time
    deadline = time.monotonic() + 5
    while status(C) != 503 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert (status(A), status(B), status(C)) == (503, 401, 503)
    ring.watch.stop()
