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


def token_balanced_chunks(lengths: Sequence[int], max_rows: int, parts: int) -> list[list[int]]:
    """Indices of rows sorted by length (stable), cut into runs of at most ``max_rows`` whose
    padded sizes (rows x longest row) are as even as the lengths allow, in up to ``parts``
    runs (or as many as ``max_rows`` needs; fewer when more would not make the largest run
    smaller). Longest run first.

    Why: the service runs one chunk per forward worker side by side, so a batch takes as long
    as its largest chunk. Cut by count, the chunk of the longest texts is also the largest:
    64 of bench_peers' short questions (6-19 tokens) cut 32/32 wait for a chunk of 606 padded
    tokens on average, cut by padded tokens for 495 (0.82x); BBC texts cut to 400 characters
    3537 against 3157 (0.89x). The smallest budget B with which the greedy cut (from the
    longest row down: each chunk takes rows while rows x its first row's length <= B) needs
    at most that many chunks is found by bisection; the greedy cut is the best contiguous one
    for that B.
    """
    if max_rows < 1 or parts < 1:
        raise ValueError(f"max_rows and parts must be >= 1, got {max_rows} and {parts}")
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    if not order:
        return []
    want = max(min(parts, len(order)), -(-len(order) // max_rows))

    def cut(budget: int) -> list[list[int]]:
        chunks, end = [], len(order)
        while end > 0:
            longest = max(1, lengths[order[end - 1]])
            take = max(1, min(max_rows, end, budget // longest))
            chunks.append(order[end - take:end])
            end -= take
        return chunks

    lo, hi = max(1, lengths[order[-1]]), max(1, lengths[order[-1]]) * len(order)
    while lo < hi:
        mid = (lo + hi) // 2
        if len(cut(mid)) <= want:
            hi = mid
        else:
            lo = mid + 1
    return cut(lo)


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
