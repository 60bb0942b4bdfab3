"""The one place that picks a store backend, from a URL (``TAILOR_STORE_URL``).

- empty: the filesystem store in ``local_root`` (the default, ``TAILOR_STORE_PATH``);
- ``file:///path``: the filesystem store in ``/path``;
- ``s3://bucket/prefix``: the S3 store (``s3.py``); ``local_root`` then holds only this
  replica's file cache, training scratch space and the file job queue. The endpoint and
  credentials come from the standard AWS variables and files, as every AWS tool reads them.

The S3 backend (and boto3) is imported only when asked for.
"""
from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlsplit

from ..encoders.base import BackboneIdentity
from .base import Store
from .store import AdapterStore

SCHEMES = ("file", "s3")


def parse_store_url(url: str) -> tuple[str, str, str]:
    """``(scheme, location, prefix)``: for file, the folder; for s3, the bucket and key
    prefix. A ValueError names what is wrong."""
    parts = urlsplit(url)
    if parts.scheme not in SCHEMES:
        raise ValueError(f"store URL {url!r}: use file:///path/to/folder or s3://bucket/prefix")
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost") or not parts.path.startswith("/"):
            raise ValueError(f"store URL {url!r}: a file URL needs an absolute path, file:///path")
        return "file", unquote(parts.path), ""
    if not parts.netloc or parts.query or parts.fragment:
        raise ValueError(f"store URL {url!r}: an S3 URL is s3://bucket or s3://bucket/prefix")
    return "s3", parts.netloc, parts.path.strip("/")


def open_store(url: str | None, local_root: str | Path, backbone: BackboneIdentity, *,
               max_adapters_per_tenant: int | None = None, cache_bytes: int = 1 << 30) -> Store:
    if not url:
        return AdapterStore(local_root, backbone, max_adapters_per_tenant=max_adapters_per_tenant)
    scheme, location, prefix = parse_store_url(url)
    if scheme == "file":
        return AdapterStore(location, backbone, max_adapters_per_tenant=max_adapters_per_tenant)
    from .s3 import S3Store
    store = S3Store(location, prefix, backbone, root=local_root, cache_bytes=cache_bytes,
                    max_adapters_per_tenant=max_adapters_per_tenant)
    store.check()
    return store
