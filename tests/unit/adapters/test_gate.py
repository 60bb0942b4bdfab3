"""adapters/training/gate.py: a bound on creates in flight that refuses at once (429) with a
Retry-After drawn from when a slot is likely to free up, never waits, and frees its slot
whatever happens inside."""
from __future__ import annotations

import time

import pytest

from adapters.errors import Overloaded
from adapters.training.gate import Gate


def test_the_limit_refuses_at_once_and_frees_slots_on_errors():
    gate = Gate(2)
    with gate.slot(), gate.slot():
        t0 = time.perf_counter()
        with pytest.raises(Overloaded) as e:
            with gate.slot():
                pass
        assert time.perf_counter() - t0 < 0.05  # refused, not queued
        assert e.value.status == 429 and "TAILOR_MAX_CONCURRENT_CREATES" in e.value.message
        assert 1 <= int(e.value.headers["Retry-After"]) <= 3  # nothing measured yet
    with pytest.raises(ZeroDivisionError):
        with gate.slot():
            1 / 0
    assert gate.inside == 0
    with gate.slot(), gate.slot():  # both slots free again
        pass


def test_retry_after_follows_how_long_creates_take():
    gate = Gate(1)
    for _ in range(3):
        with gate.slot():
            time.sleep(0.3)
    assert 0.25 < gate.typical_s() < 1.0
    with gate.slot():
        time.sleep(2.2)  # a large create: in flight longer than the typical one
        values = set()
        for _ in range(40):
            with pytest.raises(Overloaded) as e:
                with gate.slot():
                    pass
            values.add(int(e.value.headers["Retry-After"]))
    assert min(values) >= 3 and max(values) <= 5 and len(values) >= 2  # ceil(2.2).. +2 wide
