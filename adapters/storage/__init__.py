"""What stores: the typed manifest of an adapter version and the versioned, atomic store."""
from .manifest import Artifact, Inputs, Manifest
from .store import AdapterStore, StoredAdapter

__all__ = ["AdapterStore", "Artifact", "Inputs", "Manifest", "StoredAdapter"]
