"""A bound on how many adapters train inside requests at once.

Head adapters train in the request (seconds of CPU each). A burst of large creates used to
queue up in the server's thread pool until BentoML's request timeout answered 504 with no
hint of when to come back. The gate refuses at the door instead: past ``limit`` creates in
flight, 429 with a ``Retry-After`` drawn from the measured time of a create and up to half
as much again (adapters/backoff.py), so the refused clients do not return together.
"""
from __future__ import annotations

import contextlib
import itertools
import threading
import time
from typing import Iterator

from ..backoff import retry_after
from ..errors import Overloaded


class Gate:
    def __init__(self, limit: int, *, setting: str = "TAILOR_MAX_CONCURRENT_CREATES"):
        if limit < 1:
            raise ValueError(f"the gate's limit must be >= 1, got {limit}")
        self.limit = limit
        self.setting = setting
        self.inside = 0
        self._started: dict[int, float] = {}  # pass -> when it began
        self._ids = itertools.count()
        self._lock = threading.Lock()
        # seconds per pass, decayed over recent passes; None until one has finished
        self._busy_s = 0.0
        self._passes = 0.0

    def typical_s(self) -> float:
        """How long a pass took lately (0 before any finished)."""
        return self._busy_s / self._passes if self._passes else 0.0

    def expected_wait_s(self) -> float:
        """When a slot is likely to free up: a typical pass, or, when the passes in flight
        have already run longer than that (a burst of large creates), as long again as the
        oldest has run."""
        now = time.perf_counter()
        oldest = max((now - t for t in self._started.values()), default=0.0)
        return max(self.typical_s(), oldest)

    @contextlib.contextmanager
    def slot(self) -> Iterator[None]:
        """Hold one of ``limit`` slots for the block; Overloaded (429) when none is free.
        Never waits: call it on the event loop, before handing the work to a thread."""
        with self._lock:
            if self.inside >= self.limit:
                retry = retry_after(self.expected_wait_s())
                raise Overloaded(f"{self.inside} adapter creates are already training on this "
                                 f"server (limit {self.limit}, {self.setting}); retry in "
                                 f"{retry} s", headers={"Retry-After": str(retry)})
            self.inside += 1
            t0 = time.perf_counter()
            token = next(self._ids)
            self._started[token] = t0
        try:
            yield
        finally:
            with self._lock:
                self.inside -= 1
                self._started.pop(token, None)
                self._busy_s = self._busy_s * 0.8 + (time.perf_counter() - t0)
                self._passes = self._passes * 0.8 + 1
