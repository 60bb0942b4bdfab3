"""What serves: loaded adapters in an LRU over the store, and the micro-batcher that runs
concurrent requests' rows through one backbone forward."""
from .batcher import MicroBatcher
from .registry import AdapterRegistry, LoadedAdapter

__all__ = ["AdapterRegistry", "LoadedAdapter", "MicroBatcher"]
