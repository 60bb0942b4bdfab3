"""The filesystem adapter store (the embedded default): one folder per immutable version.

Layout::

    <root>/tenants/<tenant>/.lock                flock target for creating a new name
    <root>/tenants/<tenant>/<name>/.seq          last version number handed out
    <root>/tenants/<tenant>/<name>/.lock         flock target for publish/delete
    <root>/tenants/<tenant>/<name>/v<N>/manifest.json
    <root>/tenants/<tenant>/<name>/v<N>/<kind>.safetensors
    <root>/tenants/<tenant>/<name>/v<N>/examples.json   the posted examples (optional)
    <root>/.tmp/                                 versions being written
    <root>/.trash/                               versions being deleted

A version is written in full to ``.tmp`` (files fsynced), then renamed into place: a reader
sees a whole version or none. Version numbers come from ``.seq`` under an exclusive file
lock, so two processes sharing the folder (two replicas on one volume) never hand out the
same number and never reuse a deleted one: ``name@3`` always means the same weights.
Only JSON and safetensors are ever read back; nothing is unpickled. What every store does
the same way (parsing, verification, building a version) is in ``base.py``.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

from ..encoders.base import BackboneIdentity
from ..errors import AdapterNotFound
from ..validation import validate_name
from .base import MANIFEST, Store, StoredAdapter, not_found
from .manifest import Manifest

__all__ = ["AdapterStore", "StoredAdapter", "sha256_file"]


def sha256_file(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _version_of(entry: str) -> int | None:
    if entry.startswith("v") and entry[1:].isdigit():
        return int(entry[1:])
    return None


class AdapterStore(Store):
    """The store in a local (or shared RWX) folder: ``root``."""

    def __init__(self, root: str | Path, backbone: BackboneIdentity, *,
                 max_adapters_per_tenant: int | None = None):
        self.root = Path(root)
        self.backbone = backbone
        self.max_adapters_per_tenant = max_adapters_per_tenant
        for sub in ("tenants", ".tmp", ".trash"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)

    def __repr__(self) -> str:
        return f"AdapterStore({self.root.resolve()})"

    # -- paths ----------------------------------------------------------------------------
    def _tenant_dir(self, tenant: str) -> Path:
        return self.root / "tenants" / validate_name(tenant, "tenant")

    def _name_dir(self, tenant: str, name: str) -> Path:
        return self._tenant_dir(tenant) / validate_name(name)

    @contextlib.contextmanager
    def _locked(self, name_dir: Path) -> Iterator[None]:
        if not name_dir.is_dir():
            # A new name (or tenant): make the new folders' entries durable too, or a power
            # loss could drop the folder of a version that was acknowledged (fsync of the
            # version's own folder and of name_dir does not cover name_dir's entry).
            name_dir.mkdir(parents=True, exist_ok=True)
            _fsync_dir(name_dir.parent)
            _fsync_dir(name_dir.parent.parent)
        with open(name_dir / ".lock", "a+") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    # -- reading --------------------------------------------------------------------------
    def versions(self, tenant: str, name: str) -> list[int]:
        d = self._name_dir(tenant, name)
        try:
            entries = os.listdir(d)
        except FileNotFoundError:
            return []
        return sorted(v for v in map(_version_of, entries) if v is not None)

    def names(self, tenant: str) -> list[str]:
        d = self._tenant_dir(tenant)
        try:
            entries = sorted(os.listdir(d))
        except FileNotFoundError:
            return []
        return [n for n in entries if not n.startswith(".") and self.versions(tenant, n)]

    def tenants(self) -> list[str]:
        return sorted(t for t in os.listdir(self.root / "tenants") if not t.startswith("."))

    def usage(self, tenant: str) -> list[dict[str, Any]]:
        """Per adapter name of ``tenant``: its versions and the bytes of every file they hold
        (weights, manifests, examples). Walks the tenant's folder: for an admin view, not for
        the request path."""
        out = []
        for name in self.names(tenant):
            versions = self.versions(tenant, name)
            size = 0
            for v in versions:
                for dirpath, _, files in os.walk(self._name_dir(tenant, name) / f"v{v}"):
                    for f in files:
                        with contextlib.suppress(FileNotFoundError):  # deleted meanwhile
                            size += os.stat(os.path.join(dirpath, f)).st_size
            out.append({"name": name, "versions": len(versions), "stored_bytes": size})
        return out

    def _vdir(self, tenant: str, name: str, version: int) -> Path:
        return self._name_dir(tenant, name) / f"v{version}"

    def _manifest_bytes(self, tenant: str, name: str, version: int) -> bytes:
        try:
            return (self._vdir(tenant, name, version) / MANIFEST).read_bytes()
        except FileNotFoundError:  # deleted between resolve and read
            raise AdapterNotFound(f"adapter {name}@{version} was just deleted") from None

    def _file_bytes(self, m: Manifest, fname: str, digest: str) -> bytes | None:
        try:
            return (self._vdir(m.tenant, m.name, m.version) / fname).read_bytes()
        except FileNotFoundError:
            return None

    # -- writing --------------------------------------------------------------------------
    @staticmethod
    def _read_seq(seq_file: Path) -> int:
        """The last version number handed out (0 when none or unreadable: publish also
        takes the max with the versions on disk, so a lost counter cannot go backwards past
        a live version)."""
        try:
            return int(seq_file.read_text().strip() or 0)
        except (FileNotFoundError, ValueError):
            return 0

    def _commit(self, tenant: str, name: str, files: dict[str, bytes],
                fields: dict[str, Any]) -> Manifest:
        name_dir = self._name_dir(tenant, name)
        tmp = self.root / ".tmp" / uuid.uuid4().hex
        tmp.mkdir(parents=True)
        try:
            for fname, data in files.items():
                with (tmp / fname).open("wb") as f:
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
            with self._locked(name_dir), self._room_for(tenant, name):
                seq_file = name_dir / ".seq"
                last = max([self._read_seq(seq_file), *self.versions(tenant, name)])
                version = last + 1
                manifest = Manifest.model_validate({**fields, "version": version})
                with (tmp / MANIFEST).open("wb") as f:
                    f.write(self.manifest_bytes(manifest))
                    f.flush()
                    os.fsync(f.fileno())
                _fsync_dir(tmp)
                # .seq is advanced (durably) before the version appears: after a crash the
                # counter may skip a number, never hand one out twice.
                seq_tmp = name_dir / f".seq.{uuid.uuid4().hex}"
                with seq_tmp.open("w") as f:
                    f.write(str(version))
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(seq_tmp, seq_file)
                os.rename(tmp, name_dir / f"v{version}")
                _fsync_dir(name_dir)
            return manifest
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)

    @contextlib.contextmanager
    def _room_for(self, tenant: str, name: str) -> Iterator[None]:
        """Held while a new name's first version is renamed into place: no other new name
        of this tenant can be counted in between (lock order: name, then tenant)."""
        if self.max_adapters_per_tenant is None or self.versions(tenant, name):
            yield
            return
        with self._locked(self._tenant_dir(tenant)):
            self.check_room(tenant, name)
            yield

    def delete(self, tenant: str, name: str, version: int | None = None) -> list[int]:
        """Remove one version, or all of them. Returns the version numbers removed."""
        name_dir = self._name_dir(tenant, name)
        if not name_dir.is_dir():  # no lock file litter for names that never existed
            raise AdapterNotFound(f"adapter {name!r} does not exist")
        with self._locked(name_dir):
            vs = self.versions(tenant, name)
            if not vs or (version is not None and version not in vs):
                raise not_found(name, vs, version)
            doomed = vs if version is None else [version]
            trashed = []
            for v in doomed:
                trash = self.root / ".trash" / uuid.uuid4().hex
                os.rename(name_dir / f"v{v}", trash)  # atomic: readers never see half a version
                trashed.append(trash)
            _fsync_dir(name_dir)
        # Only our own trash: another replica's entries are its business (and sweep()'s).
        for trash in trashed:
            shutil.rmtree(trash, ignore_errors=True)
        return doomed

    def sweep(self, older_than_s: float = 3600.0) -> int:
        """Drop leftovers of writes interrupted by a crash (never visible to readers): folders
        and files in ``.tmp`` (half-written versions, a training worker's output) and
        ``.trash``, and counter temp files (``.seq.*``) beside the versions. Only entries older
        than ``older_than_s``: another replica may be writing right now."""
        def stale(path: Path) -> bool:
            try:
                return time.time() - path.lstat().st_mtime > older_than_s
            except FileNotFoundError:
                return False

        def remove(path: Path) -> int:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
            return int(not os.path.lexists(path))

        removed = 0
        for sub in (".tmp", ".trash"):
            for entry in os.listdir(self.root / sub):
                path = self.root / sub / entry
                if stale(path):
                    removed += remove(path)
        for tenant in self.tenants():
            with contextlib.suppress(FileNotFoundError):
                for name in os.listdir(self._tenant_dir(tenant)):
                    with contextlib.suppress(FileNotFoundError, NotADirectoryError):
                        for entry in os.listdir(self._tenant_dir(tenant) / name):
                            path = self._tenant_dir(tenant) / name / entry
                            if entry.startswith(".seq.") and stale(path):
                                removed += remove(path)
        return removed
