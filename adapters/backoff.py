"""Retry-After values that spread refused clients out.

When every refused client is told the same ``Retry-After``, they all come back in the same
second and are refused together again (a thundering herd). The server knows roughly when
capacity frees up (queued rows x measured seconds per row; a job queue's expected wait), so
coming back sooner is pointless: each client gets a whole number of seconds drawn uniformly
from ``[ceil(expected), ceil(expected * (1 + spread))]``, at least ``min_width_s`` wide so
that short waits spread too. Pure: the caller passes its ``random.Random`` for tests.
"""
from __future__ import annotations

import math
import random

_rng = random.Random()


def retry_after(expected_s: float, *, spread: float = 0.5, min_width_s: int = 2,
                max_s: int = 3600, rng: random.Random | None = None) -> int:
    """Seconds for a ``Retry-After`` header: never below the expected wait (nor 1), uniform
    up to ``spread`` times more (at least ``min_width_s`` more), capped at ``max_s``."""
    if not math.isfinite(expected_s) or expected_s < 0:
        raise ValueError(f"expected_s must be a finite number >= 0, got {expected_s!r}")
    if spread < 0 or min_width_s < 0 or max_s < 1:
        raise ValueError(f"need spread >= 0, min_width_s >= 0, max_s >= 1; got {spread}, "
                         f"{min_width_s}, {max_s}")
    low, high = retry_after_range(expected_s, spread=spread, min_width_s=min_width_s, max_s=max_s)
    return (rng or _rng).randint(low, high)


def retry_after_range(expected_s: float, *, spread: float = 0.5, min_width_s: int = 2,
                      max_s: int = 3600) -> tuple[int, int]:
    """The smallest and largest value ``retry_after`` can give (for messages and docs)."""
    low = min(max(1, math.ceil(expected_s)), max_s)
    return low, min(max(low + min_width_s, math.ceil(expected_s * (1 + spread))), max_s)
