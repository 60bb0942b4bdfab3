"""The versioned adapter store: one folder per immutable version.

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
Only JSON and safetensors are ever read back; nothing is unpickled.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import hashlib
import json
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import torch
from pydantic import ValidationError
from safetensors.torch import load as load_tensors
from safetensors.torch import save_file

from ..encoders.base import BackboneIdentity
from ..errors import AdapterNotFound, CorruptAdapter, IncompatibleAdapter, TooManyAdapters
from ..options import describe_validation_error
from ..validation import validate_name
from .manifest import SCHEMA_VERSION, Artifact, FileRef, Inputs, Manifest

MANIFEST = "manifest.json"
EXAMPLES = "examples.json"  # optional: the posted examples (updates, export parity)
UNLABELED = "unlabeled.json"  # optional: the posted unlabeled texts (updates)


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


@dataclass(frozen=True)
class StoredAdapter:
    """A loaded version: its manifest and its tensors."""

    manifest: Manifest
    tensors: dict[str, torch.Tensor]


class AdapterStore:
    def __init__(self, root: str | Path, backbone: BackboneIdentity, *,
                 max_adapters_per_tenant: int | None = None):
        self.root = Path(root)
        self.backbone = backbone
        self.max_adapters_per_tenant = max_adapters_per_tenant
        for sub in ("tenants", ".tmp", ".trash"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)

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

    def resolve(self, tenant: str, name: str, version: int | None = None) -> int:
        """The version number that ``name`` (latest) or ``name@version`` refers to."""
        vs = self.versions(tenant, name)
        if not vs:
            raise AdapterNotFound(f"adapter {name!r} does not exist; create it with POST /v1/adapters "
                                  "or list yours with GET /v1/adapters")
        if version is None:
            return vs[-1]
        if version not in vs:
            raise AdapterNotFound(f"adapter {name!r} has no version {version}; versions: "
                                  f"{', '.join(map(str, vs))}")
        return version

    def manifest(self, tenant: str, name: str, version: int | None = None) -> Manifest:
        """The parsed manifest of ``name`` (latest) or ``name@version``."""
        v = self.resolve(tenant, name, version)
        path = self._name_dir(tenant, name) / f"v{v}" / MANIFEST
        try:
            raw = path.read_bytes()
        except FileNotFoundError:  # deleted between resolve and read
            raise AdapterNotFound(f"adapter {name}@{v} was just deleted") from None
        return self._parse(raw, f"{name}@{v}")

    def _parse(self, raw: bytes, ref: str) -> Manifest:
        try:
            data = json.loads(raw)
        except ValueError as e:
            raise CorruptAdapter(f"adapter {ref}: {MANIFEST} is not valid JSON ({e}). Delete this "
                                 "version and re-create it") from None
        if isinstance(data, dict) and data.get("schema_version") != SCHEMA_VERSION:
            raise IncompatibleAdapter(f"adapter {ref} has manifest schema {data.get('schema_version')}; "
                                      f"this server reads schema {SCHEMA_VERSION}. Re-create the adapter")
        try:
            return Manifest.model_validate(data)
        except ValidationError as e:
            raise CorruptAdapter(f"adapter {ref}: {MANIFEST} does not describe an adapter version "
                                 f"({describe_validation_error(e)}). Delete this version and "
                                 "re-create it") from None

    def load(self, tenant: str, name: str, version: int | None = None) -> StoredAdapter:
        """Read a version, verifying file checksums and the backbone it was trained on."""
        m = self.manifest(tenant, name, version)
        if m.backbone.sha256 != self.backbone.sha256:
            raise IncompatibleAdapter(
                f"adapter {m.ref} was trained on backbone {m.backbone.name} "
                f"({m.backbone.sha256[:12]}), but this server runs {self.backbone.name} "
                f"({self.backbone.sha256[:12]}). Re-create the adapter on this backbone")
        vdir = self._name_dir(tenant, name) / f"v{m.version}"
        tensors: dict[str, torch.Tensor] = {}
        for fname, digest in m.files.items():
            if not fname.endswith(".safetensors") or "/" in fname or fname.startswith("."):
                raise CorruptAdapter(f"adapter {m.ref} lists an unexpected file {fname!r}")
            path = vdir / fname
            # Read once, verify and parse the same bytes: no window between checksum and load
            # in which another replica's delete (or a bad disk) could change the file.
            try:
                data = path.read_bytes()
            except FileNotFoundError:
                data = None
            if data is not None and hashlib.sha256(data).hexdigest() == digest:
                tensors.update(load_tensors(data))
            else:
                if not vdir.is_dir():  # another replica deleted it between manifest and here
                    raise AdapterNotFound(f"adapter {m.ref} was just deleted")
                raise CorruptAdapter(f"adapter {m.ref}: file {fname} is missing or does not match its "
                                     "checksum. Delete this version and re-create it")
        return StoredAdapter(m, tensors)

    def inputs(self, tenant: str, name: str, version: int | None = None) -> Inputs:
        """What a version was trained on (examples, descriptions, unlabeled texts), as far as
        it stored them; the files are checksum-verified."""
        m = self.manifest(tenant, name, version)
        vdir = self._name_dir(tenant, name) / f"v{m.version}"
        examples = self._read_json(vdir, m, m.examples_file, EXAMPLES)
        unlabeled = self._read_json(vdir, m, m.unlabeled_file, UNLABELED)
        return Inputs([e for e in examples if isinstance(e, dict)],
                      dict(m.label_descriptions or {}),
                      [t for t in unlabeled if isinstance(t, str)])

    def examples(self, tenant: str, name: str, version: int | None = None) -> list[dict[str, Any]]:
        """The examples a version was trained on, if it stored them (else []), checksum-verified."""
        return self.inputs(tenant, name, version).examples

    @staticmethod
    def _read_json(vdir: Path, m: Manifest, entry: FileRef | None, fname: str) -> list:
        if entry is None:
            return []
        path = vdir / fname
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            raw = None
        if raw is None or hashlib.sha256(raw).hexdigest() != entry.sha256:
            raise CorruptAdapter(f"adapter {m.ref}: {fname} is missing or does not match its "
                                 "checksum. Delete this version and re-create it")
        data = json.loads(raw)
        return data if isinstance(data, list) else []

    # -- writing --------------------------------------------------------------------------
    def check_room(self, tenant: str, name: str) -> None:
        """Raise TooManyAdapters if ``name`` is new and the tenant is at its limit. Callers
        check before training (a 4xx at once); ``publish`` checks again under the lock."""
        limit = self.max_adapters_per_tenant
        if limit is None or self.versions(tenant, name):
            return
        count = len(self.names(tenant))
        if count >= limit:
            raise TooManyAdapters(
                f"you have {count} adapters; the limit is {limit} per tenant "
                "(TAILOR_MAX_ADAPTERS_PER_TENANT). Delete one you no longer need "
                "(DELETE /v1/adapters/{name}) or publish a new version of an existing name")

    @staticmethod
    def _read_seq(seq_file: Path) -> int:
        """The last version number handed out (0 when none or unreadable: publish also
        takes the max with the versions on disk, so a lost counter cannot go backwards past
        a live version)."""
        try:
            return int(seq_file.read_text().strip() or 0)
        except (FileNotFoundError, ValueError):
            return 0

    def publish(self, tenant: str, name: str, artifact: Artifact, inputs: Inputs | None = None,
                changes: dict[str, Any] | None = None) -> Manifest:
        """Write ``artifact`` as a new immutable version of ``name`` and return its manifest.
        ``inputs`` (optional) are kept beside the weights (examples.json, unlabeled.json, the
        descriptions in the manifest); ``changes``: what an update changed."""
        name_dir = self._name_dir(tenant, name)
        tmp = self.root / ".tmp" / uuid.uuid4().hex
        tmp.mkdir(parents=True)
        try:
            weights = tmp / f"{artifact.kind}.safetensors"
            save_file({k: v.contiguous() for k, v in artifact.tensors.items()}, str(weights))
            with weights.open("rb") as f:
                os.fsync(f.fileno())
            extra: dict[str, Any] = {}
            inputs = inputs or Inputs()
            for key, fname, data in (("examples_file", EXAMPLES, inputs.examples),
                                     ("unlabeled_file", UNLABELED, inputs.unlabeled)):
                if data:
                    path = tmp / fname
                    with path.open("w") as f:
                        json.dump(data, f, ensure_ascii=False)
                        f.flush()
                        os.fsync(f.fileno())
                    extra[key] = {"name": fname, "sha256": sha256_file(path)}
            if inputs.label_descriptions:
                extra["label_descriptions"] = dict(inputs.label_descriptions)
            if changes:
                extra["changes"] = changes
            fields = {
                "schema_version": SCHEMA_VERSION,
                "id": uuid.uuid4().hex,
                "tenant": tenant,
                "name": name,
                "kind": artifact.kind,
                "labels": list(artifact.labels),
                "multi_label": artifact.multi_label,
                "options": artifact.options,
                "metrics": artifact.metrics,
                "warnings": list(artifact.warnings),
                **({"lora": artifact.lora.model_dump(mode="json")} if artifact.lora else {}),
                "backbone": self.backbone.as_dict(),
                "files": {weights.name: sha256_file(weights)},
                "size_bytes": weights.stat().st_size,
                **extra,
                "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds"),
            }
            with self._locked(name_dir), self._room_for(tenant, name):
                seq_file = name_dir / ".seq"
                last = max([self._read_seq(seq_file), *self.versions(tenant, name)])
                version = last + 1
                manifest = Manifest.model_validate({**fields, "version": version})
                with (tmp / MANIFEST).open("w") as f:
                    json.dump(manifest.model_dump(mode="json", exclude_none=True), f, indent=2,
                              sort_keys=True)
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
            if not vs:
                raise AdapterNotFound(f"adapter {name!r} does not exist")
            if version is not None and version not in vs:
                raise AdapterNotFound(f"adapter {name!r} has no version {version}; versions: "
                                      f"{', '.join(map(str, vs))}")
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
