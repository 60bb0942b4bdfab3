"""A micro-batcher: rows from concurrent requests run through one function call.

Requests put their rows on a queue and await a future. One loop takes whatever is queued
(up to ``max_rows``), runs the batch function in a worker thread and hands each request its
slice of the results. While a batch runs, new requests queue up, so under load batches grow
by themselves.

The gathering window adapts: before a batch the loop expects as many rows as the larger of
the last two batches had, and waits at most ``max_wait_ms`` for them. A lone client
(batches of 1) therefore never waits, while closed-loop clients, whose next requests arrive
only after the previous batch's answers went out, are gathered into one full batch instead
of a small one followed by the rest. Measured on 2 cores, 64 clients: 62 -> 79 texts/s and
less CPU per text (benchmarks/RESULTS.md). ``max_wait_ms`` is never a deadline that fails
requests.

Why not BentoML's adaptive batching: it batches along one request parameter, so rows of a
request must share an adapter, and its ``max_latency_ms`` answers 503 when exceeded. Here a
row carries its own adapter, and overload is a bounded queue answering 429.

Overload is refused at the door, never by letting a client time out: a request is refused
(429 with Retry-After) when the queue holds ``max_queued_rows`` rows, or when the rows ahead
of it would take longer than ``max_queue_wait_s`` at the measured cost (long texts make a
row-count bound alone mean minutes of waiting). The cost is fitted as a fixed part per batch
plus a part per row (``BatchCost``), and queued rows are counted in batches of ``max_rows``:
a batch of 1 short text costs 3.3x a row of a 64-row batch here. A ratio of seconds to rows
(as until 2026-12-07) overestimates a burst's wait when recent batches were small ones of
several sizes (a few concurrent clients), up to ~2x for short texts; once a big batch has
run, both agree, since the ratio weighs batches by their rows. Its ``Retry-After`` is drawn from the
expected wait and up to half as much again (adapters/backoff.py), so refused clients do not
all come back in the same second. The forward runs on the batcher's own
thread, so threads busy elsewhere (adapter training in ``asyncio.to_thread``) cannot hold
predictions back.
"""
from __future__ import annotations

import asyncio
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Generic, Sequence, TypeVar

from ..backoff import retry_after
from ..errors import Overloaded
from ..events import NO_EVENTS, Events
from ..segments import split_sizes

Row = TypeVar("Row")
Result = TypeVar("Result")


@dataclass
class _Pending(Generic[Row, Result]):
    rows: Sequence[Row]
    future: asyncio.Future
    enqueued: float = field(default_factory=time.perf_counter)


@dataclass
class BatchCost:
    """Seconds a batch of ``n`` rows takes, fitted as ``overhead + n * per_row`` by least
    squares over recent batches, each weighted ``decay`` times less per newer batch (the
    machine's load changes). Measured here (MiniLM, fp32, 2 cores): 9.0 ms for 1 short
    text, 2.7 ms per row at 64; 13.1 and 8.2 ms on half-long mixes. Until batches of
    different sizes have been seen, the plain ratio of seconds to rows (no overhead): the
    pessimistic side, as before."""
    decay: float = 0.8
    _w: float = 0.0
    _n: float = 0.0
    _t: float = 0.0
    _nn: float = 0.0
    _nt: float = 0.0

    def record(self, rows: int, seconds: float) -> None:
        d = self.decay
        self._w = self._w * d + 1
        self._n = self._n * d + rows
        self._t = self._t * d + seconds
        self._nn = self._nn * d + rows * rows
        self._nt = self._nt * d + rows * seconds

    def fit(self) -> tuple[float, float] | None:
        """``(overhead_s, per_row_s)``, or None before any batch."""
        if not self._n:
            return None
        spread = self._w * self._nn - self._n ** 2  # w^2 x variance of the sizes
        if spread > 0.25 * self._w ** 2:  # sizes differ by about a row or more
            per_row = (self._w * self._nt - self._n * self._t) / spread
            overhead = (self._t - per_row * self._n) / self._w
            if per_row > 0 and overhead >= 0:
                return overhead, per_row
        return 0.0, self._t / self._n

    def seconds(self, rows: int, batches: int) -> float:
        """How long ``rows`` take in ``batches`` batches (0 before anything was measured)."""
        f = self.fit()
        return 0.0 if f is None or rows <= 0 else batches * f[0] + rows * f[1]


@dataclass
class BatchStats:
    batches: int = 0
    rows: int = 0
    largest: int = 0


class MicroBatcher(Generic[Row, Result]):
    def __init__(self, fn: Callable[[list[Row]], list[Result]], *, max_rows: int = 64,
                 max_wait_ms: float = 20.0, max_queued_rows: int = 4096,
                 max_queue_wait_s: float = 30.0, events: Events = NO_EVENTS):
        if max_rows < 1 or max_queued_rows < max_rows or max_wait_ms < 0 or max_queue_wait_s <= 0:
            raise ValueError("need max_rows >= 1, max_queued_rows >= max_rows, max_wait_ms >= 0, "
                             "max_queue_wait_s > 0")
        self.fn = fn
        self.max_rows = max_rows
        self.max_wait = max_wait_ms / 1000
        self.max_queued_rows = max_queued_rows
        self.max_queue_wait_s = max_queue_wait_s
        self.stats = BatchStats()
        self.events = events
        self._queue: list[_Pending] = []
        self._queued_rows = 0
        self._running_rows = 0
        self.cost = BatchCost()  # measured on the batches that ran
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="batcher")

    def seconds_per_row(self) -> float | None:
        """The measured cost of one more row in a batch (None until a batch has run)."""
        f = self.cost.fit()
        return None if f is None else f[1]

    def expected_wait_s(self, extra_rows: int = 0) -> float:
        """How long ``extra_rows`` more would wait for their answer behind what is queued and
        running: the running batch, then the queued rows in batches of ``max_rows`` (0
        before anything has run)."""
        ahead = self._queued_rows + extra_rows
        running = self.cost.seconds(self._running_rows, 1)
        return running + self.cost.seconds(ahead, -(-ahead // self.max_rows))

    async def submit(self, rows: Sequence[Row]) -> list[Result]:
        if not rows:
            return []
        if self._queued_rows + len(rows) > self.max_queued_rows:
            retry = retry_after(self.expected_wait_s())
            raise Overloaded(f"the server has {self._queued_rows} rows waiting (limit "
                             f"{self.max_queued_rows}, TAILOR_MAX_QUEUED_ROWS); retry in {retry} s",
                             headers={"Retry-After": str(retry)})
        wait = self.expected_wait_s(len(rows))
        # A lone request bigger than the limit still runs when nothing is ahead of it.
        if wait > self.max_queue_wait_s and self._queued_rows + self._running_rows > 0:
            retry = retry_after(self.expected_wait_s())
            raise Overloaded(f"the server is busy: these {len(rows)} rows would wait about "
                             f"{wait:.0f} s (limit {self.max_queue_wait_s:g} s, "
                             f"TAILOR_MAX_QUEUE_WAIT_S); retry in {retry} s",
                             headers={"Retry-After": str(retry)})
        loop = asyncio.get_running_loop()
        if self._task is None or self._task.done():
            self._wakeup = asyncio.Event()
            self._task = loop.create_task(self._run())
        fut = loop.create_future()
        self._queue.append(_Pending(rows, fut))
        self._queued_rows += len(rows)
        self.events.queue(self._queued_rows, self.max_queued_rows)
        self._wakeup.set()
        return await fut

    def _take(self) -> list[_Pending]:
        taken, n = [], 0
        while self._queue and (not taken or n + len(self._queue[0].rows) <= self.max_rows):
            p = self._queue.pop(0)
            n += len(p.rows)
            taken.append(p)
        self._queued_rows -= n
        self.events.queue(self._queued_rows, self.max_queued_rows)
        return taken

    async def _gather(self, expect: int) -> None:
        """Wait until ``expect`` rows are queued or ``max_wait`` has passed."""
        assert self._wakeup is not None
        deadline = time.perf_counter() + self.max_wait
        while self._queued_rows < expect:
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                return
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), remaining)
            except asyncio.TimeoutError:
                return

    async def _run(self) -> None:
        assert self._wakeup is not None
        recent: deque[int] = deque([1], maxlen=2)  # sizes of the last batches
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._queue:
                expect = min(self.max_rows, max(recent))
                if self.max_wait and self._queued_rows < expect:
                    await self._gather(expect)
                batch = [p for p in self._take() if not p.future.cancelled()]
                if not batch:
                    continue
                flat = [r for p in batch for r in p.rows]
                self._running_rows = len(flat)
                t0 = time.perf_counter()
                recent.append(len(flat))
                try:
                    results = await asyncio.get_running_loop().run_in_executor(
                        self._thread, self.fn, flat)
                except Exception as e:  # hand the error to every waiting request
                    for p in batch:
                        if not p.future.done():
                            p.future.set_exception(e)
                    continue
                finally:
                    self._running_rows = 0
                self.cost.record(len(flat), time.perf_counter() - t0)
                self.events.batch(len(flat))
                self.stats.batches += 1
                self.stats.rows += len(flat)
                self.stats.largest = max(self.stats.largest, len(flat))
                for p, res in zip(batch, split_sizes(results, [len(p.rows) for p in batch])):
                    if not p.future.done():
                        p.future.set_result(res)
