"""What stores: the typed manifest of an adapter version and the versioned, atomic store."""
from .manifest import Artifact, Manifest
from .store import AdapterStore, StoredAdapter

__all__ = ["AdapterStore", "Artifact", "Manifest", "StoredAdapter"]
