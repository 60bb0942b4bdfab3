"""The store interface: what every adapter store does the same way, whatever holds the bytes.

A store keeps immutable, numbered versions of each (tenant, name). The domain (registry,
engine, export) sees only ``Store``; which backend it has (a folder, ``store.py``, or an
S3-compatible bucket, ``s3.py``) is picked once by ``open_store`` (``factory.py``).

Shared here, so the backends cannot drift: manifest parsing (the store's door, where a
manifest becomes a typed ``Manifest``), checksum and backbone verification on load, the
per-tenant limit check and building a version's files and manifest fields. A backend only
moves bytes: list versions, read a manifest or a file, commit a new version atomically,
delete.

``root`` is a local folder in every backend: scratch space for training workers (``.tmp``)
and the file job queue (``jobs``). For the file store it is the store itself.
"""
from __future__ import annotations

import abc
import datetime as dt
import hashlib
import json
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from ..encoders.base import BackboneIdentity
from ..errors import AdapterNotFound, CorruptAdapter, IncompatibleAdapter, TooManyAdapters
from ..options import describe_validation_error
from .manifest import SCHEMA_VERSION, Artifact, FileRef, Inputs, Manifest

if TYPE_CHECKING:  # tensors load (safetensors.torch) when an adapter does, not with the store
    import torch

MANIFEST = "manifest.json"
EXAMPLES = "examples.json"  # optional: the posted examples (updates, export parity)
UNLABELED = "unlabeled.json"  # optional: the posted unlabeled texts (updates)


@dataclass(frozen=True)
class StoredAdapter:
    """A loaded version: its manifest and its tensors."""

    manifest: Manifest
    tensors: dict[str, torch.Tensor]


def not_found(name: str, versions: list[int], version: int | None) -> AdapterNotFound:
    if not versions:
        return AdapterNotFound(f"adapter {name!r} does not exist; create it with POST /v1/adapters "
                               "or list yours with GET /v1/adapters")
    return AdapterNotFound(f"adapter {name!r} has no version {version}; versions: "
                           f"{', '.join(map(str, versions))}")


class Store(abc.ABC):
    """Versioned adapter storage. Versions are immutable and never renumbered: ``name@3``
    always means the same weights, and a deleted number is never handed out again."""

    root: Path
    backbone: BackboneIdentity
    max_adapters_per_tenant: int | None

    # -- what a backend provides ----------------------------------------------------------
    @abc.abstractmethod
    def versions(self, tenant: str, name: str) -> list[int]:
        """The live version numbers of ``name``, ascending."""

    @abc.abstractmethod
    def names(self, tenant: str) -> list[str]:
        """The tenant's adapter names that have at least one live version, sorted."""

    @abc.abstractmethod
    def tenants(self) -> list[str]:
        """Tenants that have (or had) adapters in the store."""

    @abc.abstractmethod
    def usage(self, tenant: str) -> list[dict[str, Any]]:
        """Per adapter name: ``{"name", "versions", "stored_bytes"}`` (an admin view)."""

    @abc.abstractmethod
    def _manifest_bytes(self, tenant: str, name: str, version: int) -> bytes:
        """The raw manifest of a live version (AdapterNotFound if it is gone)."""

    @abc.abstractmethod
    def _file_bytes(self, m: Manifest, fname: str, digest: str) -> bytes | None:
        """The bytes of one file of a version (None if missing); callers verify them against
        ``digest``, the checksum the manifest lists."""

    @abc.abstractmethod
    def _commit(self, tenant: str, name: str, files: dict[str, bytes],
                fields: dict[str, Any]) -> Manifest:
        """Make ``files`` + a manifest of ``fields`` the next version of ``name``, atomically:
        readers see the whole version or nothing, and no number is handed out twice."""

    @abc.abstractmethod
    def delete(self, tenant: str, name: str, version: int | None = None) -> list[int]:
        """Remove one version, or all of them. Returns the version numbers removed."""

    def sweep(self, older_than_s: float = 3600.0) -> int:
        """Drop leftovers of interrupted writes (never visible to readers); the count."""
        return 0

    # -- reading --------------------------------------------------------------------------
    def resolve(self, tenant: str, name: str, version: int | None = None) -> int:
        """The version number that ``name`` (latest) or ``name@version`` refers to."""
        vs = self.versions(tenant, name)
        if not vs or (version is not None and version not in vs):
            raise not_found(name, vs, version)
        return vs[-1] if version is None else version

    def manifest(self, tenant: str, name: str, version: int | None = None) -> Manifest:
        """The parsed manifest of ``name`` (latest) or ``name@version``."""
        v = self.resolve(tenant, name, version)
        return self._parse(self._manifest_bytes(tenant, name, v), f"{name}@{v}")

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

    def _verified(self, m: Manifest, fname: str, digest: str) -> bytes:
        """A file's bytes, read once and checked against the manifest's checksum: no window
        between checksum and parse in which a delete (or a bad disk) could change them."""
        data = self._file_bytes(m, fname, digest)
        if data is None or hashlib.sha256(data).hexdigest() != digest:
            if m.version not in self.versions(m.tenant, m.name):
                raise AdapterNotFound(f"adapter {m.ref} was just deleted")
            raise CorruptAdapter(f"adapter {m.ref}: file {fname} is missing or does not match its "
                                 "checksum. Delete this version and re-create it")
        return data

    def load(self, tenant: str, name: str, version: int | None = None) -> StoredAdapter:
        """Read a version, verifying file checksums and the backbone it was trained on."""
        m = self.manifest(tenant, name, version)
        if m.backbone.sha256 != self.backbone.sha256:
            raise IncompatibleAdapter(
                f"adapter {m.ref} was trained on backbone {m.backbone.name} "
                f"({m.backbone.sha256[:12]}), but this server runs {self.backbone.name} "
                f"({self.backbone.sha256[:12]}). Re-create the adapter on this backbone")
        from safetensors.torch import load as load_tensors

        tensors: dict[str, torch.Tensor] = {}
        for fname, digest in m.files.items():
            if not fname.endswith(".safetensors") or "/" in fname or fname.startswith("."):
                raise CorruptAdapter(f"adapter {m.ref} lists an unexpected file {fname!r}")
            tensors.update(load_tensors(self._verified(m, fname, digest)))
        return StoredAdapter(m, tensors)

    def inputs(self, tenant: str, name: str, version: int | None = None) -> Inputs:
        """What a version was trained on (examples, descriptions, unlabeled texts), as far as
        it stored them; the files are checksum-verified."""
        m = self.manifest(tenant, name, version)
        examples = self._read_json(m, m.examples_file, EXAMPLES)
        unlabeled = self._read_json(m, m.unlabeled_file, UNLABELED)
        return Inputs([e for e in examples if isinstance(e, dict)],
                      dict(m.label_descriptions or {}),
                      [t for t in unlabeled if isinstance(t, str)])

    def examples(self, tenant: str, name: str, version: int | None = None) -> list[dict[str, Any]]:
        """The examples a version was trained on, if it stored them (else []), checksum-verified."""
        return self.inputs(tenant, name, version).examples

    def _read_json(self, m: Manifest, entry: FileRef | None, fname: str) -> list:
        if entry is None:
            return []
        data = json.loads(self._verified(m, fname, entry.sha256))
        return data if isinstance(data, list) else []

    # -- writing --------------------------------------------------------------------------
    def check_room(self, tenant: str, name: str) -> None:
        """Raise TooManyAdapters if ``name`` is new and the tenant is at its limit. Callers
        check before training (a 4xx at once); backends check again when they publish."""
        limit = self.max_adapters_per_tenant
        if limit is None or self.versions(tenant, name):
            return
        count = len(self.names(tenant))
        if count >= limit:
            raise TooManyAdapters(
                f"you have {count} adapters; the limit is {limit} per tenant "
                "(TAILOR_MAX_ADAPTERS_PER_TENANT). Delete one you no longer need "
                "(DELETE /v1/adapters/{name}) or publish a new version of an existing name")

    def publish(self, tenant: str, name: str, artifact: Artifact, inputs: Inputs | None = None,
                changes: dict[str, Any] | None = None) -> Manifest:
        """Write ``artifact`` as a new immutable version of ``name`` and return its manifest.
        ``inputs`` (optional) are kept beside the weights (examples.json, unlabeled.json, the
        descriptions in the manifest); ``changes``: what an update changed."""
        from safetensors.torch import save as save_tensors

        weights = f"{artifact.kind}.safetensors"
        files = {weights: save_tensors({k: v.contiguous() for k, v in artifact.tensors.items()})}
        extra: dict[str, Any] = {}
        inputs = inputs or Inputs()
        for key, fname, data in (("examples_file", EXAMPLES, inputs.examples),
                                 ("unlabeled_file", UNLABELED, inputs.unlabeled)):
            if data:
                files[fname] = json.dumps(data, ensure_ascii=False).encode()
                extra[key] = {"name": fname, "sha256": hashlib.sha256(files[fname]).hexdigest()}
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
            "files": {weights: hashlib.sha256(files[weights]).hexdigest()},
            "size_bytes": len(files[weights]),
            **extra,
            "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds"),
        }
        return self._commit(tenant, name, files, fields)

    @staticmethod
    def manifest_bytes(manifest: Manifest) -> bytes:
        return json.dumps(manifest.model_dump(mode="json", exclude_none=True), indent=2,
                          sort_keys=True).encode()
