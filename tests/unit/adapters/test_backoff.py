"""adapters/backoff.py: Retry-After values never earlier than the expected wait, spread evenly
over the window so that refused clients do not come back together."""
from __future__ import annotations

import random
from collections import Counter

import pytest

from adapters.backoff import retry_after, retry_after_range


@pytest.mark.parametrize("expected, window", [
    (0.0, (1, 3)),        # a bound with no wait estimate (e.g. concurrent head creates)
    (0.3, (1, 3)),
    (1.0, (1, 3)),
    (4.2, (5, 7)),        # 4.2 * 1.5 = 6.3 -> 7; at least 2 wide
    (30.0, (30, 45)),     # the queue-wait bound's default: 30..45 s
    (100.0, (100, 150)),
    (5000.0, (3600, 3600)),  # capped
])
def test_window(expected, window):
    assert retry_after_range(expected) == window
    rng = random.Random(7)
    values = [retry_after(expected, rng=rng) for _ in range(2000)]
    assert min(values) >= window[0] and max(values) <= window[1]
    assert min(values) >= min(expected, 3600)  # never sooner than the expected wait


@pytest.mark.parametrize("expected", [0.0, 30.0, 100.0])
def test_values_spread_evenly(expected):
    low, high = retry_after_range(expected)
    rng = random.Random(1)
    n = 200 * (high - low + 1)
    counts = Counter(retry_after(expected, rng=rng) for _ in range(n))
    assert set(counts) == set(range(low, high + 1))  # every second of the window is used
    for v, c in counts.items():  # roughly uniform: 200 expected per value
        assert 120 <= c <= 280, (v, c)


def test_two_hundred_refused_clients_do_not_come_back_together():
    rng = random.Random(3)
    values = [retry_after(30.0, rng=rng) for _ in range(200)]
    busiest = Counter(values).most_common(1)[0][1]
    assert busiest <= 20  # the same Retry-After for all would be 200 in one second
    assert max(values) - min(values) >= 12


@pytest.mark.parametrize("kw", [dict(expected_s=-1), dict(expected_s=float("nan")),
                                dict(expected_s=float("inf")), dict(expected_s=1, spread=-0.1),
                                dict(expected_s=1, max_s=0)])
def test_bad_arguments(kw):
    with pytest.raises(ValueError):
        retry_after(**kw)


def test_deterministic_with_a_seeded_rng():
    a = [retry_after(10, rng=random.Random(5)) for _ in range(3)]
    assert a[0] == a[1] == a[2]
