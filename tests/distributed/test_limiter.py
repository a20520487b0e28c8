"""The Redis domain limiter on its own, two limiters standing for two worker processes: the per-domain
concurrency and spacing hold across both, a cool-down stops both, and a process's waiting requests queue
locally instead of each polling Redis."""

from __future__ import annotations

import asyncio
import time

import pytest
import redis.asyncio as aioredis

from tracker.queue import RedisDomainLimiter

pytestmark = [pytest.mark.redis]


def _limiters(url: str, n: int = 2, **kwargs) -> tuple[list[aioredis.Redis], list[RedisDomainLimiter]]:
    clients = [aioredis.Redis.from_url(url) for _ in range(n)]
    return clients, [RedisDomainLimiter(c, **kwargs) for c in clients]


def _count_calls(limiter: RedisDomainLimiter, calls: list[int]) -> None:
    acquire = limiter._acquire

    async def counted(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(1)
        return await acquire(*args, **kwargs)

    limiter._acquire = counted  # type: ignore[assignment]


def test_concurrency_holds_across_processes_and_waiters_queue_locally(redis_url):
    async def main() -> tuple[int, int, int]:
        clients, limiters = _limiters(redis_url, concurrency=2, delay_s=0, hold_s=30)
        calls: list[int] = []
        for limiter in limiters:
            _count_calls(limiter, calls)
        state = {"now": 0, "max": 0}

        async def request(limiter: RedisDomainLimiter) -> None:
            async with limiter.slot("shop.test"):
                state["now"] += 1
                state["max"] = max(state["max"], state["now"])
                await asyncio.sleep(0.02)
                state["now"] -= 1

        requests = 60
        await asyncio.gather(*(request(limiters[i % 2]) for i in range(requests)))
        for client in clients:
            await client.aclose()
        return state["max"], len(calls), requests

    most, calls, requests = asyncio.run(main())
    assert most == 2
    # 60 requests, 2 at a time, 20 ms each: ~0.6 s. Polling Redis from every waiting request (the
    # limiter before the local queue) took ~10 Lua calls per request here; now only the two requests
    # at the head of each process's queue ask Redis.
    assert calls < requests * 4, calls


def test_spacing_and_cool_down_hold_across_processes(redis_url):
    async def main() -> tuple[list[float], float]:
        clients, limiters = _limiters(redis_url, concurrency=4, delay_s=0.1, hold_s=30)
        starts: list[float] = []

        async def request(limiter: RedisDomainLimiter) -> None:
            async with limiter.slot("spaced.test"):
                starts.append(time.monotonic())

        await asyncio.gather(*(request(limiters[i % 2]) for i in range(6)))
        await limiters[0].cool_down("cool.test", 0.5)
        begin = time.monotonic()
        async with limiters[1].slot("cool.test"):
            waited = time.monotonic() - begin
        for client in clients:
            await client.aclose()
        return sorted(starts), waited

    starts, waited = asyncio.run(main())
    gaps = [b - a for a, b in zip(starts, starts[1:])]
    assert min(gaps) >= 0.08, gaps       # 100 ms apart on the Redis clock; a little slack for the loop
    assert waited >= 0.4, waited
