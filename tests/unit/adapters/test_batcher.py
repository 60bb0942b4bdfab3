"""The micro-batcher: concurrent submissions share calls, results go back to their owner."""
import asyncio
import threading
import time

import pytest

from adapters.serving import MicroBatcher
from adapters.serving.batcher import BatchCost
from adapters.errors import Overloaded


def run(coro):
    return asyncio.run(coro)


def test_concurrent_requests_share_batches_and_get_their_own_rows():
    calls = []
    gate = threading.Event()

    def fn(rows):
        calls.append(list(rows))
        gate.wait(1.0)  # hold the first batch so the others queue up behind it
        return [r * 10 for r in rows]

    async def main():
        b = MicroBatcher(fn, max_rows=100, max_wait_ms=0)
        first = asyncio.create_task(b.submit([0]))
        await asyncio.sleep(0.05)
        rest = [asyncio.create_task(b.submit([i, i + 1000])) for i in range(1, 21)]
        await asyncio.sleep(0.05)
        gate.set()
        return await first, await asyncio.gather(*rest), b

    first, rest, b = run(main())
    assert first == [0]
    assert rest == [[i * 10, (i + 1000) * 10] for i in range(1, 21)]
    assert len(calls) == 2 and len(calls[1]) == 40  # 20 requests, one call
    assert b.stats.largest == 40


def test_max_rows_splits_batches():
    sizes = []

    def fn(rows):
        sizes.append(len(rows))
        return rows

    async def main():
        b = MicroBatcher(fn, max_rows=4, max_wait_ms=5)
        return await asyncio.gather(*[b.submit([i, i]) for i in range(6)])

    out = run(main())
    assert out == [[i, i] for i in range(6)]
    assert max(sizes) <= 4


def test_errors_reach_every_request_of_the_batch_and_the_loop_survives():
    def fn(rows):
        if "boom" in rows:
            raise ValueError("boom")
        return rows

    async def main():
        b = MicroBatcher(fn, max_rows=10, max_wait_ms=5)
        res = await asyncio.gather(b.submit(["boom"]), b.submit(["ok"]), return_exceptions=True)
        return res, await b.submit(["later"])

    res, later = run(main())
    assert all(isinstance(r, ValueError) for r in res)
    assert later == ["later"]


def test_full_queue_answers_overloaded_with_retry_after():
    gate = threading.Event()

    def fn(rows):
        gate.wait(1.0)
        return rows

    async def main():
        b = MicroBatcher(fn, max_rows=2, max_wait_ms=0, max_queued_rows=4)
        running = asyncio.create_task(b.submit([1, 2]))
        await asyncio.sleep(0.05)
        queued = asyncio.create_task(b.submit([3, 4, 5, 6]))
        await asyncio.sleep(0.01)
        with pytest.raises(Overloaded) as e:
            await b.submit([7])
        gate.set()
        await running, await queued
        return e.value

    err = run(main())
    # the first batch has not finished: no measured rate, expected wait 0 -> drawn from 1..3
    assert err.status == 429 and 1 <= int(err.headers["Retry-After"]) <= 3


def test_refused_clients_are_told_different_retry_afters():
    """A burst of refusals gets Retry-After values spread over the window, not one value
    for everybody (they would all come back in the same second)."""
    gate = threading.Event()

    def fn(rows):
        gate.wait(1.0)
        return rows

    async def main():
        b = MicroBatcher(fn, max_rows=2, max_wait_ms=0, max_queued_rows=2)
        running = asyncio.create_task(b.submit([1, 2]))
        await asyncio.sleep(0.05)
        queued = asyncio.create_task(b.submit([3, 4]))
        await asyncio.sleep(0.01)
        values = []
        for _ in range(60):
            with pytest.raises(Overloaded) as e:
                await b.submit([7])
            values.append(int(e.value.headers["Retry-After"]))
        gate.set()
        await running, await queued
        return values

    values = run(main())
    assert set(values) == {1, 2, 3}, values


def test_forward_runs_even_when_the_default_executor_is_busy():
    # Adapter training runs in asyncio.to_thread: a handful of slow creates must not hold
    # every predict back by taking all threads of the default executor.
    release = threading.Event()

    async def main():
        b = MicroBatcher(lambda rows: rows, max_rows=8, max_wait_ms=0)
        busy = [asyncio.create_task(asyncio.to_thread(release.wait, 5)) for _ in range(64)]
        await asyncio.sleep(0.05)
        try:
            return await asyncio.wait_for(b.submit(["x"]), timeout=2)
        finally:
            release.set()
            await asyncio.gather(*busy)

    assert run(main()) == ["x"]


def test_queue_longer_than_max_wait_answers_overloaded_with_retry_after():
    gate = threading.Event()

    def fn(rows):  # 20 ms per row, like a backbone that does 50 rows/s
        if rows == ["hold"]:
            gate.wait(2.0)
        else:
            time.sleep(0.02 * len(rows))
        return rows

    async def main():
        b = MicroBatcher(fn, max_rows=64, max_wait_ms=0, max_queued_rows=4096, max_queue_wait_s=1.0)
        await b.submit(list(range(50)))  # measures ~0.02 s per row
        assert b.seconds_per_row() == pytest.approx(0.02, rel=0.5)
        held = asyncio.create_task(b.submit(["hold"]))
        await asyncio.sleep(0.05)
        ok = asyncio.create_task(b.submit(list(range(30))))  # ~0.6 s ahead: admitted
        await asyncio.sleep(0.01)
        with pytest.raises(Overloaded) as e:
            await b.submit(list(range(30)))  # ~1.2 s behind the 30 queued: refused
        gate.set()
        await held, await ok
        alone = await b.submit(list(range(80)))  # nothing ahead: a big lone request still runs
        return e.value, alone

    err, alone = run(main())
    assert err.status == 429 and int(err.headers["Retry-After"]) >= 1
    assert "TAILOR_MAX_QUEUE_WAIT_S" in err.message
    assert alone == list(range(80))


def test_batch_cost_separates_the_fixed_part_from_the_part_per_row():
    cost = BatchCost()
    assert cost.fit() is None and cost.seconds(10, 1) == 0.0
    cost.record(1, 0.009)  # one size seen: the plain ratio, no overhead
    assert cost.fit() == (0.0, pytest.approx(0.009))
    cost.record(64, 0.1728)  # 9 ms for 1 short text, 2.7 ms a row at 64 (this machine)
    overhead, per_row = cost.fit()
    assert overhead == pytest.approx(0.0064, rel=1e-3) and per_row == pytest.approx(0.0026, rel=1e-3)
    # 128 queued rows run in 2 full batches: 2 overheads, not 128 of them
    assert cost.seconds(128, 2) == pytest.approx(2 * 0.0064 + 128 * 0.0026, rel=1e-3)


def test_batch_cost_falls_back_to_the_ratio_when_the_fit_makes_no_sense():
    cost = BatchCost()
    cost.record(1, 1.0)  # a cold first batch: slower than the big one after it
    cost.record(60, 0.5)
    assert cost.fit() == (0.0, pytest.approx((0.8 * 1.0 + 0.5) / (0.8 * 1 + 60), rel=1e-3))  # decayed


def test_a_burst_after_small_batches_is_not_refused_for_their_overhead():
    """After small batches of two sizes (a few clients), a rate of seconds per row counted
    their fixed cost per call once per row: 16 queued rows behind a running one were
    estimated at ~1.5 s and refused against a 1.25 s limit. They run in one batch (~0.9 s
    after the running one's ~0.15 s) and are admitted. The per-row cost is large enough
    (50 ms) that a scheduler's jitter on a loaded machine cannot hide the slope."""
    gate = threading.Event()

    def fn(rows):  # 100 ms a call + 50 ms a row
        if rows == ["hold"]:
            gate.wait(5.0)
        time.sleep(0.1 + 0.05 * len(rows))
        return rows

    async def main():
        b = MicroBatcher(fn, max_rows=64, max_wait_ms=0, max_queue_wait_s=1.25)
        await b.submit([0])  # 0.15 s
        await b.submit([0, 1, 2, 3])  # 0.3 s; as a ratio 0.0875 s a row: 17 rows 1.49 s
        held = asyncio.create_task(b.submit(["hold"]))
        await asyncio.sleep(0.05)
        wait = b.expected_wait_s(16)
        burst = asyncio.create_task(b.submit(list(range(16))))  # 0.15 + 0.1 + 0.8 s: admitted
        await asyncio.sleep(0)  # its admission runs while "hold" still runs
        gate.set()
        return wait, await held, await burst

    wait, held, burst = run(main())
    assert 0.85 < wait < 1.25, wait
    assert held == ["hold"] and burst == list(range(16))


def test_a_lone_request_never_waits_for_company():
    """Batches of 1 make the batcher expect 1 row: no gathering window at all."""
    import time

    async def main():
        b = MicroBatcher(lambda rows: rows, max_rows=64, max_wait_ms=1000)
        times = []
        for i in range(5):
            t = time.perf_counter()
            assert await b.submit([i]) == [i]
            times.append(time.perf_counter() - t)
        return times

    assert max(run(main())) < 0.5  # far below the 1 s window


def test_closed_loop_clients_are_gathered_into_one_batch():
    """After a batch of 10, the next 10 rows arriving one by one (as closed-loop clients'
    next requests do) are gathered into one call, not run as 1 + 9."""
    sizes = []

    def fn(rows):
        sizes.append(len(rows))
        return rows

    async def main():
        b = MicroBatcher(fn, max_rows=64, max_wait_ms=500)
        await asyncio.gather(*[b.submit([i]) for i in range(10)])  # one batch of 10

        async def late(i):
            await asyncio.sleep(0.005 * i)
            return await b.submit([i])

        return await asyncio.gather(*[late(i) for i in range(10)])

    assert run(main()) == [[i] for i in range(10)]
    assert sizes == [10, 10]
