"""In-memory registry of loaded adapters: an LRU over the store, loaded on demand.

The store is asked which version a bare name means on every lookup (a directory listing,
microseconds), so a version published by another process sharing the folder is served on
the next request. Versions are immutable and never renumbered, so (tenant, name, version)
is a safe cache key. How a stored version becomes servable is its kind's business: the
registry is handed a ``loader`` (adapters/kinds: ``load_adapter``).
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable

from ..encoders.lora import LoraWeights
from ..events import NO_EVENTS, Events
from ..heads import LinearHead
from ..storage import Manifest, Store, StoredAdapter


@dataclass(frozen=True)
class LoadedAdapter:
    """A servable adapter: its head, and per-row LoRA weights for kinds that tune the encoder."""

    manifest: Manifest
    head: LinearHead
    lora: LoraWeights | None = None

    @property
    def ref(self) -> str:
        return self.manifest.ref

    @property
    def labels(self) -> tuple[str, ...]:
        return self.manifest.labels

    @property
    def multi_label(self) -> bool:
        return self.manifest.multi_label

    @property
    def threshold(self) -> float:
        return self.manifest.threshold


Loader = Callable[[StoredAdapter], LoadedAdapter]


class AdapterRegistry:
    def __init__(self, store: Store, loader: Loader, capacity: int = 256,
                 events: Events = NO_EVENTS):
        if capacity < 1:
            raise ValueError(f"registry capacity must be >= 1, got {capacity}")
        self.store = store
        self.loader = loader
        self.capacity = capacity
        self.events = events
        self._cache: OrderedDict[tuple[str, str, int], LoadedAdapter] = OrderedDict()
        self._lock = threading.Lock()
        self.loads = 0  # cold loads, for metrics and tests

    def get(self, tenant: str, name: str, version: int | None = None) -> LoadedAdapter:
        v = self.store.resolve(tenant, name, version)
        key = (tenant, name, v)
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
        if hit is not None:
            self.events.cache(True)
            return hit
        self.events.cache(False)
        loaded = self.loader(self.store.load(tenant, name, v))
        self.events.cold_load(tenant, loaded.ref)
        with self._lock:
            self.loads += 1
            self._cache[key] = loaded
            self._cache.move_to_end(key)
            while len(self._cache) > self.capacity:
                self._cache.popitem(last=False)
        return loaded

    def forget(self, tenant: str, name: str, versions: list[int] | None = None) -> None:
        with self._lock:
            for key in [k for k in self._cache if k[0] == tenant and k[1] == name
                        and (versions is None or k[2] in versions)]:
                del self._cache[key]

    def __len__(self) -> int:
        return len(self._cache)
