"""Micro-benchmark of the per-key rate limiters (client CPU dominates; see docs NOTES).

Usage:
    .venv/bin/python bench/rate_limiter.py [--hits 20000] [--callers 32]
                                           [--redis-url redis://127.0.0.1:6379/0]

Prints hits/s and µs per hit for:
- in-process limiter;
- Redis unbatched: one awaited redis-py EVALSHA per hit (the baseline), alone and with
  `--callers` concurrent callers on redis-py's pool;
- RedisRateLimiter, one caller (every hit its own round trip);
- RedisRateLimiter batched: `--callers` concurrent callers, leasing off;
- RedisRateLimiter batched + leasing: the same with a large limit (100 000/min, leases of 1 %).
Each caller has its own bucket; limits are high enough that every hit is admitted. Keys go
under `icodrip:bench:` and expire by themselves within two minutes.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable

import redis.asyncio as aioredis

from adapters.rate_limiter import (
    KEY_TTL_SECONDS,
    TAKE_SCRIPT,
    InProcessRateLimiter,
    RateLimiter,
    RedisRateLimiter,
)
from domain.rate_limits import window_start

PREFIX = "icodrip:bench:"
HUGE = 1_000_000_000


async def run(hits: int, callers: int, hit: Callable[[str], Awaitable[object]]) -> float:
    """Seconds for `hits` hits made by `callers` concurrent callers, one bucket each."""
    per_caller = hits // callers

    async def caller(bucket: str) -> None:
        for _ in range(per_caller):
            await hit(bucket)

    started = time.perf_counter()
    await asyncio.gather(*(caller(f"{uuid.uuid4().hex}") for _ in range(callers)))
    return time.perf_counter() - started


def report(name: str, hits: int, seconds: float, extra: str = "") -> None:
    print(f"{name:<50} {hits / seconds:>10,.0f} hits/s {seconds / hits * 1e6:>8.1f} µs/hit {extra}")


async def limiter_case(
    name: str, limiter: RateLimiter, hits: int, callers: int, limit: int
) -> None:
    async def hit(bucket: str) -> object:
        return await limiter.hit(bucket, limit)

    await run(callers, callers, hit)  # warm up: connect, load the script
    before = getattr(limiter, "round_trips", 0)
    seconds = await run(hits, callers, hit)
    trips = getattr(limiter, "round_trips", 0) - before
    report(name, hits, seconds, f"({hits / trips:.1f} hits/round trip)" if trips else "")
    await limiter.aclose()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hits", type=int, default=20_000)
    parser.add_argument("--callers", type=int, default=32)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    args = parser.parse_args()
    hits, callers, url = args.hits, args.callers, args.redis_url

    await limiter_case("in-process", InProcessRateLimiter(), hits, 1, HUGE)

    client = aioredis.Redis.from_url(url)
    sha = await client.script_load(TAKE_SCRIPT)

    async def evalsha(bucket: str) -> object:
        key = f"{PREFIX}{bucket}:{window_start(time.time())}"
        return await client.evalsha(sha, 1, key, 1, HUGE, KEY_TTL_SECONDS)

    for n in (1, callers):
        await run(n, n, evalsha)
        report(
            f"redis unbatched, redis-py EVALSHA, {n} caller(s)", hits, await run(hits, n, evalsha)
        )
    await client.aclose()

    def redis_limiter(lease_ratio: float) -> RedisRateLimiter:
        return RedisRateLimiter(url, key_prefix=PREFIX, lease_ratio=lease_ratio)

    await limiter_case("RedisRateLimiter, 1 caller, no lease", redis_limiter(0), hits, 1, HUGE)
    await limiter_case(
        f"RedisRateLimiter batched, {callers} callers", redis_limiter(0), hits, callers, HUGE
    )
    await limiter_case(
        f"RedisRateLimiter batched+lease, {callers} callers",
        redis_limiter(0.01),
        hits,
        callers,
        100_000,
    )


if __name__ == "__main__":
    asyncio.run(main())
