"""A bounded local cache of adapter files, keyed by their sha256.

Used by the S3 store (``s3.py``): once a replica has fetched a version's files, loading it
again (after the in-memory registry evicted it, in another worker process of the same
replica, or while the object store is down) reads them from local disk. Content-addressed:
a file is valid for every version that lists its checksum, is never stale, and is verified
on every read (a damaged file is dropped and fetched again, never served).

Least-recently-used files are removed past ``max_bytes``. Worker processes of one replica
may share the folder: each keeps its own index, a file another process evicted is a miss.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import threading
import uuid
from collections import OrderedDict
from pathlib import Path


def _is_digest(name: str) -> bool:
    return len(name) == 64 and all(c in "0123456789abcdef" for c in name)


class ChecksumCache:
    def __init__(self, root: str | Path, max_bytes: int):
        self.root = Path(root)
        self.max_bytes = max_bytes
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._sizes: OrderedDict[str, int] = OrderedDict()  # digest -> bytes, oldest first
        self._total = 0
        entries = []
        for path in self.root.iterdir():
            with contextlib.suppress(FileNotFoundError):
                st = path.stat()
                if _is_digest(path.name):
                    entries.append((st.st_mtime, path.name, st.st_size))
                elif path.name.startswith(".tmp-"):  # a write interrupted by a crash
                    path.unlink()
        for _, digest, size in sorted(entries):
            self._sizes[digest] = size
            self._total += size
        self._evict()

    def get(self, digest: str) -> bytes | None:
        """The file's bytes if cached and intact, else None."""
        path = self.root / digest
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            self._forget(digest)
            return None
        if hashlib.sha256(data).hexdigest() != digest:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            self._forget(digest)
            return None
        with self._lock:
            if digest in self._sizes:
                self._sizes.move_to_end(digest)
        with contextlib.suppress(OSError):  # LRU order across restarts
            os.utime(path)
        return data

    def put(self, digest: str, data: bytes) -> None:
        """Keep ``data`` (whose sha256 the caller verified) unless it alone exceeds the bound."""
        if len(data) > self.max_bytes or not _is_digest(digest):
            return
        tmp = self.root / f".tmp-{uuid.uuid4().hex}"
        try:
            tmp.write_bytes(data)
            os.replace(tmp, self.root / digest)
        except OSError:  # a full disk makes the cache useless, not the load
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            return
        with self._lock:
            self._total += len(data) - self._sizes.pop(digest, 0)
            self._sizes[digest] = len(data)
        self._evict()

    def __contains__(self, digest: str) -> bool:
        return digest in self._sizes

    @property
    def total_bytes(self) -> int:
        return self._total

    def _forget(self, digest: str) -> None:
        with self._lock:
            self._total -= self._sizes.pop(digest, 0)

    def _evict(self) -> None:
        while True:
            with self._lock:
                if self._total <= self.max_bytes or not self._sizes:
                    return
                digest, size = self._sizes.popitem(last=False)
                self._total -= size
            with contextlib.suppress(FileNotFoundError):
                (self.root / digest).unlink()
