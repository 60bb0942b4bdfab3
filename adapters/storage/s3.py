"""The adapter store on S3-compatible object storage (AWS S3, SeaweedFS, MinIO, Ceph RGW, ...).

Replicas share a bucket instead of a ReadWriteMany volume; no lock server is needed.
Layout under ``s3://<bucket>/<prefix>``::

    tenants/<tenant>/<name>/v<N>              the manifest of version N (its JSON), or an
                                              empty object: version N was deleted
    objects/<tenant>/<name>/<id>/<file>       a version's files; <id> is its manifest's id

Publishing (``_commit``): the files go first, under a fresh ``id`` nobody else writes to;
then the manifest is put at ``v<N>`` with ``If-None-Match: *`` (a conditional write: the
server refuses it with 412 if the key exists). A publisher that loses the race for N tries
N+1, so two replicas creating one name at once get distinct numbers. The manifest is the
commit point: a publisher that crashes before it leaves only unreferenced files, which no
reader sees. A version is visible exactly when its manifest is.

Deleting never frees a number: the manifest key is overwritten with an empty object (a
tombstone) before the files are removed, so the next conditional write at that key still
fails and ``name@3`` always means the same weights. One listing of a name's keys gives both
its live versions (non-empty) and the numbers taken (all); one paginated listing of
``tenants/<tenant>/`` gives every name's versions, so listing a tenant's adapters is not a
request per name.

Reading: manifests are immutable, so each replica keeps them in memory; files are cached on
local disk by checksum (``filecache.py``, verified on every read); which versions a name has
is listed again at most every ``fresh_s`` seconds. So predicting with a cached adapter does
not touch the network, and a version published by another replica is seen within
``fresh_s``. When the server cannot be reached every call fails fast (short timeouts, one
retry) with ``StoreUnavailable`` (503 + Retry-After); meanwhile the last known version lists
keep serving what is cached.
"""
from __future__ import annotations

import hashlib
import json
import logging
import random
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any, Iterable, Iterator

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from ..encoders.base import BackboneIdentity
from ..errors import AdapterNotFound, InvalidName, StoreUnavailable
from ..validation import validate_name
from .base import Store, not_found
from .filecache import ChecksumCache
from .manifest import Manifest

log = logging.getLogger("tailor.store")

RETRY_AFTER_S = 5
MAX_CLAIM_TRIES = 10_000  # each try is one small conditional PUT; a loser moves to N+1
# Answers the store interprets itself; every other error means "the store is unusable now".
_EXPECTED = {"NoSuchKey", "404", "PreconditionFailed", "412", "ConditionalRequestConflict", "409"}


def make_client(*, connect_timeout: float = 2.0, read_timeout: float = 10.0) -> Any:
    """An S3 client configured the standard AWS way (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID,
    AWS_SECRET_ACCESS_KEY, AWS_REGION, AWS_PROFILE, ~/.aws/config ...), with short timeouts
    and one retry so an unreachable server is a quick 503, not a hang."""
    session = boto3.session.Session()
    return session.client("s3", region_name=session.region_name or "us-east-1", config=Config(
        connect_timeout=connect_timeout, read_timeout=read_timeout,
        retries={"total_max_attempts": 2, "mode": "standard"}, max_pool_connections=32))


def _code(e: ClientError) -> str:
    return str(e.response.get("Error", {}).get("Code", ""))


class S3Store(Store):
    def __init__(self, bucket: str, prefix: str, backbone: BackboneIdentity, *, root: str | Path,
                 client: Any = None, max_adapters_per_tenant: int | None = None,
                 cache_bytes: int = 1 << 30, fresh_s: float = 0.5, manifests_kept: int = 65536):
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.backbone = backbone
        self.max_adapters_per_tenant = max_adapters_per_tenant
        self.root = Path(root)
        for sub in (".tmp", "jobs"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        self.files = ChecksumCache(self.root / ".s3cache", cache_bytes)
        self.s3 = client if client is not None else make_client()
        self.fresh_s = fresh_s
        self.page_size = 1000  # keys per listing request (S3's maximum)
        self.manifests_kept = manifests_kept
        self._lock = threading.Lock()
        self._known: dict[tuple[str, str], tuple[float, list[int]]] = {}  # live versions, when listed
        self._listing: set[tuple[str, str]] = set()  # names being listed by some thread
        self._large_tenants: set[str] = set()  # more keys than one listing page: name by name
        self._manifests: OrderedDict[tuple[str, str, int], bytes] = OrderedDict()
        self._down_until = 0.0

    def __repr__(self) -> str:
        return f"S3Store(s3://{self.bucket}/{self.prefix})"

    # -- talking to the server ------------------------------------------------------------
    def _call(self, op: str, **kwargs: Any) -> Any:
        try:
            return getattr(self.s3, op)(Bucket=self.bucket, **kwargs)
        except ClientError as e:
            if _code(e) in _EXPECTED:
                raise
            raise self._unavailable(f"{op} answered {_code(e)}") from None
        except BotoCoreError as e:
            raise self._unavailable(str(e)) from None

    def _unavailable(self, why: str) -> StoreUnavailable:
        self._down_until = time.monotonic() + RETRY_AFTER_S
        log.warning("adapter store %r unavailable: %s", self, why)
        return StoreUnavailable(
            f"the adapter store (s3://{self.bucket}/{self.prefix}) cannot be used right now: "
            f"{why}. Adapters already loaded keep serving; try again in {RETRY_AFTER_S} s",
            headers={"Retry-After": str(RETRY_AFTER_S)})

    def check(self) -> None:
        """Fail fast at start-up on a wrong bucket, endpoint or credentials."""
        self._call("list_objects_v2", Prefix=self.prefix, MaxKeys=1)

    def _list(self, prefix: str, delimiter: str | None = None) -> Iterator[dict[str, Any]]:
        """Every page of a listing (1,000 keys each)."""
        kwargs: dict[str, Any] = {"Prefix": prefix, "MaxKeys": self.page_size,
                                  **({"Delimiter": delimiter} if delimiter else {})}
        while True:
            page = self._call("list_objects_v2", **kwargs)
            yield page
            if not page.get("IsTruncated"):
                return
            kwargs["ContinuationToken"] = page["NextContinuationToken"]

    # -- keys -----------------------------------------------------------------------------
    def _names_prefix(self, tenant: str) -> str:
        return f"{self.prefix}tenants/{validate_name(tenant, 'tenant')}/"

    def _claims_prefix(self, tenant: str, name: str) -> str:
        return f"{self._names_prefix(tenant)}{validate_name(name)}/"

    def _objects_prefix(self, tenant: str, name: str, version_id: str | None = None) -> str:
        base = f"{self.prefix}objects/{validate_name(tenant, 'tenant')}/{validate_name(name)}/"
        return base + (f"{version_id}/" if version_id else "")

    @staticmethod
    def _version_of(key: str) -> int | None:
        last = key.rsplit("/", 1)[-1]
        return int(last[1:]) if last.startswith("v") and last[1:].isdigit() else None

    # -- which versions exist -------------------------------------------------------------
    def _claims(self, tenant: str, name: str) -> dict[int, int]:
        """Every number taken for ``name`` -> its manifest's size (0: deleted)."""
        out: dict[int, int] = {}
        for page in self._list(self._claims_prefix(tenant, name)):
            for obj in page.get("Contents", []):
                v = self._version_of(obj["Key"])
                if v is not None:
                    out[v] = obj["Size"]
        return out

    def _remember(self, tenant: str, name: str, live: list[int]) -> list[int]:
        with self._lock:
            self._known[(tenant, name)] = (time.monotonic(), live)
        return live

    def _stale(self, tenant: str, name: str, add: tuple[int, ...] = (),
               remove: tuple[int, ...] = ()) -> None:
        """List ``name`` afresh on its next lookup; until then (or while the server is down)
        the last known list, with this replica's own changes, still answers."""
        with self._lock:
            _, live = self._known.get((tenant, name), (0.0, []))
            self._known[(tenant, name)] = (float("-inf"), sorted(set(live) - set(remove) | set(add)))

    def versions(self, tenant: str, name: str) -> list[int]:
        key = (tenant, name)
        now = time.monotonic()
        with self._lock:
            hit = self._known.get(key)
            if hit is not None and (now - hit[0] < self.fresh_s or now < self._down_until
                                    or key in self._listing):
                # fresh; or the server is down; or another thread is listing it right now
                # (concurrent predicts of one adapter make one request, not one each)
                return list(hit[1])
            self._listing.add(key)
        try:
            return list(self._refresh(tenant, name))
        except StoreUnavailable:
            if hit is not None:  # serve what this replica last saw while the server is down
                return list(hit[1])
            raise
        finally:
            with self._lock:
                self._listing.discard(key)

    def resolve(self, tenant: str, name: str, version: int | None = None) -> int:
        """As every store, but ``name@N`` that this replica does not know is looked up afresh
        before it is a 404: another replica may have published it within the last
        ``fresh_s``, or another thread of this one listed it a moment ago (a version a listing
        had just shown answered 404 to a predict in the kill -9 test), or this replica's view
        was put together from its own publishes on top of an older listing (an acknowledged
        version 1 answered 404 beside a known 2 and 3 in a loaded CI run). The listing is the
        truth: a deleted number stays deleted (its tombstone is not a live version). A 404
        costs one listing request."""
        if version is not None:
            known = self.versions(tenant, name)
            if version not in known:
                try:
                    self._refresh(tenant, name)
                except StoreUnavailable:
                    pass  # the known list answers while the server is down
        return super().resolve(tenant, name, version)

    def _refresh(self, tenant: str, name: str) -> list[int]:
        """List ``name``'s versions afresh. A tenant whose keys fit in one listing page is
        listed whole: one request refreshes all its names (a replica serving 16 adapters of
        a tenant makes 2 requests a second, not 32); a larger tenant, name by name."""
        if tenant not in self._large_tenants:
            page = self._call("list_objects_v2", Prefix=self._names_prefix(tenant),
                              MaxKeys=self.page_size)
            if not page.get("IsTruncated"):
                found = self._remember_all(tenant, [page])
                return found[name] if name in found else self._remember(tenant, name, [])
            self._large_tenants.add(tenant)
        claims = self._claims(tenant, name)
        return self._remember(tenant, name, sorted(v for v, size in claims.items() if size))

    def _scan(self, tenant: str) -> dict[str, list[int]]:
        """One paginated listing of the tenant: each name's live versions (also remembered)."""
        found = self._remember_all(tenant, self._list(self._names_prefix(tenant)))
        return {n: vs for n, vs in sorted(found.items()) if vs}

    def _remember_all(self, tenant: str, pages: Iterable[dict[str, Any]]) -> dict[str, list[int]]:
        """Every name's live versions in listing ``pages`` of the tenant (remembered)."""
        found: dict[str, list[int]] = {}
        base = self._names_prefix(tenant)
        for page in pages:
            for obj in page.get("Contents", []):
                name, _, last = obj["Key"][len(base):].partition("/")
                v = self._version_of(last)
                if v is not None:
                    live = found.setdefault(name, [])
                    if obj["Size"]:
                        live.append(v)
        return {name: self._remember(tenant, name, sorted(live)) for name, live in found.items()}

    def names(self, tenant: str) -> list[str]:
        return list(self._scan(tenant))

    def tenants(self) -> list[str]:
        base = f"{self.prefix}tenants/"
        return sorted(p["Prefix"][len(base):].rstrip("/") for page in self._list(base, "/")
                      for p in page.get("CommonPrefixes", []))

    def usage(self, tenant: str) -> list[dict[str, Any]]:
        """Per name: live versions and the bytes under it (manifests and files, including
        files of publishes that crashed before their manifest)."""
        live = self._scan(tenant)
        sizes = {name: 0 for name in live}
        base = f"{self.prefix}objects/{validate_name(tenant, 'tenant')}/"
        for page in self._list(base):
            for obj in page.get("Contents", []):
                name = obj["Key"][len(base):].partition("/")[0]
                if name in sizes:
                    sizes[name] += obj["Size"]
        return [{"name": n, "versions": len(vs), "stored_bytes": sizes[n]} for n, vs in live.items()]

    # -- reading --------------------------------------------------------------------------
    def _manifest_bytes(self, tenant: str, name: str, version: int) -> bytes:
        key = (tenant, name, version)
        with self._lock:
            raw = self._manifests.get(key)
            if raw is not None:
                self._manifests.move_to_end(key)
                return raw
        try:
            raw = self._call("get_object", Key=f"{self._claims_prefix(tenant, name)}v{version}")["Body"].read()
        except ClientError:  # NoSuchKey: never existed here
            raw = b""
        except BotoCoreError as e:  # the body's read timed out
            raise self._unavailable(str(e)) from None
        if not raw:
            self._stale(tenant, name, remove=(version,))
            raise AdapterNotFound(f"adapter {name}@{version} was just deleted")
        self._keep_manifest(key, raw)
        return raw

    def _keep_manifest(self, key: tuple[str, str, int], raw: bytes) -> None:
        with self._lock:
            self._manifests[key] = raw
            while len(self._manifests) > self.manifests_kept:
                self._manifests.popitem(last=False)

    def _file_bytes(self, m: Manifest, fname: str, digest: str) -> bytes | None:
        data = self.files.get(digest)
        if data is not None:
            return data
        try:
            obj = self._call("get_object", Key=self._objects_prefix(m.tenant, m.name, m.id) + fname)
            data = obj["Body"].read()
        except ClientError:  # NoSuchKey: deleted meanwhile (or lost); list afresh
            self._stale(m.tenant, m.name)
            return None
        except BotoCoreError as e:
            raise self._unavailable(str(e)) from None
        if hashlib.sha256(data).hexdigest() == digest:
            self.files.put(digest, data)
        return data

    # -- writing --------------------------------------------------------------------------
    def _commit(self, tenant: str, name: str, files: dict[str, bytes],
                fields: dict[str, Any]) -> Manifest:
        objects = self._objects_prefix(tenant, name, fields["id"])
        try:
            for fname, data in files.items():
                self._call("put_object", Key=objects + fname, Body=data)
            claims = self._claims(tenant, name)
            if not any(claims.values()):
                self.check_room(tenant, name)
            manifest = self._claim(tenant, name, max(claims, default=0) + 1, fields)
        except BaseException:
            self._remove_objects(objects, best_effort=True)
            raise
        for data in files.values():  # this replica serves it first: no fetch back
            self.files.put(hashlib.sha256(data).hexdigest(), data)
        self._stale(tenant, name, add=(manifest.version,))
        return manifest

    def _claim(self, tenant: str, name: str, version: int, fields: dict[str, Any]) -> Manifest:
        """Put the manifest at the first free number from ``version`` on, conditionally."""
        prefix = self._claims_prefix(tenant, name)
        for _ in range(MAX_CLAIM_TRIES):
            manifest = Manifest.model_validate({**fields, "version": version})
            raw = self.manifest_bytes(manifest)
            try:
                self._call("put_object", Key=f"{prefix}v{version}", Body=raw, IfNoneMatch="*")
            except ClientError as e:
                if _code(e) in ("PreconditionFailed", "412"):  # taken: try the next number
                    version += 1
                elif _code(e) in ("ConditionalRequestConflict", "409"):  # a write in flight
                    time.sleep(random.uniform(0.01, 0.1))
                else:
                    raise self._unavailable(f"put_object answered {_code(e)}") from None
                continue
            self._keep_manifest((tenant, name, version), raw)
            return manifest
        raise self._unavailable(f"no free version number of {name!r} after {MAX_CLAIM_TRIES} tries")

    def _remove_objects(self, prefix: str, *, best_effort: bool = False) -> None:
        try:
            for page in self._list(prefix):
                keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
                if keys:
                    self._call("delete_objects", Delete={"Objects": keys, "Quiet": True})
        except StoreUnavailable:
            if not best_effort:
                raise

    def sweep(self, older_than_s: float = 3600.0) -> int:
        """Remove the files of publishes that crashed before their manifest (and of deletes
        that crashed after their tombstone): version folders under ``objects/`` that no live
        manifest names and whose newest file is older than ``older_than_s`` (a publish in
        flight writes its files moments before its manifest). Never visible to readers, but
        they counted in the tenant's usage. Returns the number of folders removed.

        Cost: one listing of ``objects/`` and one of each tenant's manifests; manifests are
        read (then kept in memory, as for serving) only for a name with more version folders
        than live versions: each live version has exactly one folder (files are written
        before the manifest, and a delete tombstones the manifest before removing them). A
        name whose manifests cannot all be read (or name no id) is left alone, and an
        unreachable store ends the sweep: it runs again at the next start."""
        base = f"{self.prefix}objects/"
        folders: dict[tuple[str, str], dict[str, float]] = {}  # (tenant, name) -> id -> newest
        removed = 0
        try:
            for page in self._list(base):
                for obj in page.get("Contents", []):
                    parts = obj["Key"][len(base):].split("/")
                    if len(parts) >= 4:
                        newest = folders.setdefault((parts[0], parts[1]), {})
                        t = obj["LastModified"].timestamp()
                        newest[parts[2]] = max(newest.get(parts[2], t), t)
            live: dict[str, dict[str, list[int]]] = {}
            for (tenant, name), ids in sorted(folders.items()):
                try:
                    if tenant not in live:
                        live[tenant] = self._scan(tenant)
                    versions = live[tenant].get(name, [])
                    if len(ids) <= len(versions):
                        continue
                    named = self._named_ids(tenant, name, versions)
                    if named is None:
                        continue
                    now = time.time()
                    for vid in sorted(ids):
                        if vid not in named and now - ids[vid] > older_than_s:
                            self._remove_objects(self._objects_prefix(tenant, name, vid))
                            removed += 1
                except InvalidName:  # a key no Tailor wrote: not ours to remove
                    live.setdefault(tenant, {})
                    continue
        except StoreUnavailable as e:
            log.warning("store sweep stopped after %d folders: %s", removed, e)
        if removed:
            log.info("store sweep: removed the files of %d unpublished or deleted versions",
                     removed)
        return removed

    def _named_ids(self, tenant: str, name: str, versions: list[int]) -> set[str] | None:
        """The ids the live manifests of ``name`` name, or None if one cannot be read."""
        ids = set()
        for v in versions:
            try:
                vid = json.loads(self._manifest_bytes(tenant, name, v)).get("id")
            except (AdapterNotFound, ValueError, AttributeError):
                return None
            if not isinstance(vid, str) or not vid:
                return None
            ids.add(vid)
        return ids

    def delete(self, tenant: str, name: str, version: int | None = None) -> list[int]:
        claims = self._claims(tenant, name)
        vs = sorted(v for v, size in claims.items() if size)
        if not vs or (version is not None and version not in vs):
            raise not_found(name, vs, version)
        doomed = vs if version is None else [version]
        for v in doomed:
            try:
                raw = self._manifest_bytes(tenant, name, v)
            except AdapterNotFound:  # another replica deleted it meanwhile
                continue
            try:  # not _parse: a damaged or old-schema version must still be deletable
                version_id = json.loads(raw).get("id")
            except (ValueError, AttributeError):
                version_id = None
            # The tombstone first: the version disappears at once and its number stays taken.
            self._call("put_object", Key=f"{self._claims_prefix(tenant, name)}v{v}", Body=b"")
            with self._lock:
                self._manifests.pop((tenant, name, v), None)
            self._stale(tenant, name, remove=(v,))
            if isinstance(version_id, str) and version_id:
                self._remove_objects(self._objects_prefix(tenant, name, version_id))
        return doomed
