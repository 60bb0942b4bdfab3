"""Pure functions for mixed-adapter batching: order rows by length, cut them into padded
chunks, group rows by adapter and put results back in request order.

No model imports here (cf. lorax ``utils/segments.py``): everything is table-tested.
"""
from __future__ import annotations

from typing import Hashable, Sequence, TypeVar

T = TypeVar("T")


def length_sorted_chunks(lengths: Sequence[int], max_rows: int) -> list[list[int]]:
    """Indices of rows sorted by length (stable), cut into chunks of at most ``max_rows``.

    Sorting first means each chunk pads to a length close to its own rows', instead of to
    the longest text of the whole batch.
    """
    if max_rows < 1:
        raise ValueError(f"max_rows must be >= 1, got {max_rows}")
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    return [order[i:i + max_rows] for i in range(0, len(order), max_rows)]


def group_rows(keys: Sequence[Hashable]) -> dict[Hashable, list[int]]:
    """Row indices for each distinct key, keys in order of first appearance."""
    groups: dict[Hashable, list[int]] = {}
    for i, k in enumerate(keys):
        groups.setdefault(k, []).append(i)
    return groups


def split_sizes(items: Sequence[T], sizes: Sequence[int]) -> list[list[T]]:
    """Cut a flat list back into consecutive pieces of the given sizes."""
    if sum(sizes) != len(items):
        raise ValueError(f"sizes add up to {sum(sizes)} but there are {len(items)} items")
    out, start = [], 0
    for n in sizes:
        out.append(list(items[start:start + n]))
        start += n
    return out
