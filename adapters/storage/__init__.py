"""What stores: the typed manifest of an adapter version and the versioned, atomic store.

``Store`` is the interface the domain sees; ``open_store`` picks the backend (a folder or an
S3-compatible bucket) from one URL. Nothing else names a backend.
"""
from .base import Store, StoredAdapter
from .factory import open_store
from .manifest import Artifact, Inputs, Manifest
from .store import AdapterStore

__all__ = ["AdapterStore", "Artifact", "Inputs", "Manifest", "Store", "StoredAdapter", "open_store"]
