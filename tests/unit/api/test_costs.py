"""The token bucket and the what-if cache on their own (a fake clock: no waiting)."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from drop_explainer.api.costs import Costs, RateLimiter, WhatIfCache
from drop_explainer.settings import CostSettings


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_bucket_admits_a_burst_then_says_how_long_to_wait_and_refills_at_the_rate() -> None:
    clock = Clock()
    limiter = RateLimiter(2.0, 3, clock=clock)
    assert [limiter.take("alice") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.take("alice") == 0.5  # one token at 2/s
    assert limiter.take("bob") == 0.0  # each caller has their own bucket
    clock.now += 0.5
    assert limiter.take("alice") == 0.0
    clock.now += 100
    assert [limiter.take("alice") for _ in range(4)][-1] > 0  # saved up to the burst only


def test_a_rate_of_zero_is_no_limit_and_the_buckets_are_bounded_in_number() -> None:
    assert all(RateLimiter(0.0, 1).take("x") == 0.0 for _ in range(100))
    limiter = RateLimiter(1.0, 1, clock=Clock(), max_callers=10)
    for i in range(50):
        limiter.take(f"caller-{i}")
    assert len(limiter._buckets) == 10


def test_the_cache_holds_one_generation_within_its_bytes() -> None:
    cache = WhatIfCache(max_bytes=2_000)
    for i in range(20):
        cache.put(7, i, ({"n": i, "pad": "x" * 300}, "text"))
    assert cache.bytes <= 2_000
    assert cache.get(7, 19) is not None
    assert cache.get(7, 0) is None  # least recently used went first
    cache.put(6, "late", ({}, ""))  # computed on an older state: not kept
    assert cache.get(7, "late") is None
    assert cache.get(8, 19) is None  # a new state generation empties it
    assert cache.bytes == 0


async def test_a_computation_keeps_its_slot_after_its_caller_gave_up() -> None:
    """The deadline cancels the waiting caller, not the thread: the slot stays taken until the thread ends."""
    costs = Costs(CostSettings(concurrency=1))
    release = threading.Event()

    def slow() -> tuple[dict[str, Any], str]:
        release.wait(timeout=30)
        return {"done": True}, "done"

    waiter = asyncio.create_task(costs.whatif(1, "q", slow))
    while not costs._compute.locked():
        await asyncio.sleep(0.01)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert costs._compute.locked(), "the thread still runs: no second computation may start"
    release.set()
    assert await costs.whatif(1, "q", slow) == ({"done": True}, "done")  # and its answer was cached
    assert costs.cache.hits == 1
    assert not costs._compute.locked()
