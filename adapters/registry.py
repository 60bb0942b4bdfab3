"""In-memory registry of loaded adapters: an LRU over the store, loaded on demand.

The store is asked which version a bare name means on every lookup (a directory listing,
microseconds), so a version published by another process sharing the folder is served on
the next request. Versions are immutable and never renumbered, so (tenant, name, version)
is a safe cache key.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from .heads import LinearHead
from .lora import LoraSpec, LoraWeights
from .store import AdapterStore


@dataclass(frozen=True)
class LoadedAdapter:
    manifest: dict[str, Any]
    head: LinearHead
    lora: LoraWeights | None = None  # kind "lora": per-row low-rank deltas in the backbone

    @property
    def ref(self) -> str:
        return f"{self.manifest['name']}@{self.manifest['version']}"

    @property
    def labels(self) -> list[str]:
        return self.manifest["labels"]

    @property
    def multi_label(self) -> bool:
        return bool(self.manifest.get("multi_label"))

    @property
    def threshold(self) -> float:
        return float(self.manifest.get("options", {}).get("threshold", 0.5))


class AdapterRegistry:
    def __init__(self, store: AdapterStore, capacity: int = 256):
        if capacity < 1:
            raise ValueError(f"registry capacity must be >= 1, got {capacity}")
        self.store = store
        self.capacity = capacity
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
                return hit
        stored = self.store.load(tenant, name, v)
        m = stored.manifest
        activation = "sigmoid" if m.get("multi_label") else "softmax"
        lora = (LoraWeights.from_tensors(stored.tensors, LoraSpec.from_dict(m["lora"]))
                if m["kind"] == "lora" else None)
        loaded = LoadedAdapter(m, LinearHead.from_tensors(stored.tensors, activation), lora)
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
