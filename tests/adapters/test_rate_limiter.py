"""The rate limiters on real Redis: exact under concurrency and across processes, the same
decisions as the in-process limiter, batched round trips, and failover both ways."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from structlog.testing import capture_logs

from adapters.rate_limiter import InProcessRateLimiter, RateLimiter, RedisRateLimiter
from domain.rate_limits import window_start
from support.servers import RedisServer, env_with

SRC = Path(__file__).resolve().parents[2] / "src"
NOW = 1_700_000_005.0  # 5 s into an epoch minute: no window boundary during a test
PREFIX = "icodrip:rl:"


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def bucket() -> str:
    return f"test-{uuid.uuid4().hex}"


def counter_key(name: str, now: float = NOW) -> str:
    return f"{PREFIX}{name}:{window_start(now)}"


@pytest.fixture
async def redis_client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
async def limiter(redis_url: str) -> AsyncIterator[RedisRateLimiter]:
    rl = RedisRateLimiter(redis_url, clock=Clock())
    yield rl
    await rl.aclose()


async def admitted(limiter: RateLimiter, name: str, limit: int, hits: int) -> int:
    decisions = await asyncio.gather(*(limiter.hit(name, limit) for _ in range(hits)))
    return sum(d.allowed for d in decisions)


async def counter(client: aioredis.Redis, key: str) -> int | None:
    """A window's counter as Redis holds it, or None when it does not exist."""
    value = await client.get(key)
    return None if value is None else int(value)


async def wait_until(condition: Callable[[], Awaitable[bool]], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await condition():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not met in time")


# -- exactness ---------------------------------------------------------------------------------


async def test_in_process_admits_exactly_the_limit_of_500_concurrent_hits() -> None:
    limiter = InProcessRateLimiter(clock=Clock())

    assert await admitted(limiter, bucket(), 100, 500) == 100


async def test_redis_admits_exactly_the_limit_of_500_concurrent_hits(
    limiter: RedisRateLimiter, redis_client: aioredis.Redis
) -> None:
    name = bucket()

    assert await admitted(limiter, name, 100, 500) == 100
    assert await counter(redis_client, counter_key(name)) == 100


async def test_redis_admits_exactly_the_limit_of_hits_spread_over_many_ticks(
    limiter: RedisRateLimiter,
) -> None:
    name = bucket()

    async def caller() -> int:
        allowed = 0
        for _ in range(25):
            allowed += (await limiter.hit(name, 100)).allowed
        return allowed

    assert sum(await asyncio.gather(*(caller() for _ in range(20)))) == 100


async def test_a_large_limit_leases_slots_yet_admits_exactly_the_limit(
    limiter: RedisRateLimiter, redis_client: aioredis.Redis
) -> None:
    name = bucket()

    async def caller() -> int:
        allowed = 0
        for _ in range(100):
            allowed += (await limiter.hit(name, 2000)).allowed
        return allowed

    assert sum(await asyncio.gather(*(caller() for _ in range(50)))) == 2000
    assert await counter(redis_client, counter_key(name)) == 2000


CHILD = textwrap.dedent(
    """
    import asyncio, sys, time
    from adapters.rate_limiter import RedisRateLimiter

    url, name, limit, hits, start_at, now = sys.argv[1:]
    limit, hits, start_at, now = int(limit), int(hits), float(start_at), float(now)

    async def main() -> None:
        limiter = RedisRateLimiter(url, clock=lambda: now)
        await limiter.hit("warm-up-" + name, 1)  # connect and load the script first
        await asyncio.sleep(max(0.0, start_at - time.time()))
        per_caller = hits // 16

        async def caller() -> int:
            return sum([(await limiter.hit(name, limit)).allowed for _ in range(per_caller)])

        print(sum(await asyncio.gather(*(caller() for _ in range(16)))))
        await limiter.aclose()

    asyncio.run(main())
    """
)


@pytest.mark.parametrize("limit", [96, 1600], ids=["small-limit", "leased-limit"])
async def test_two_processes_hitting_one_bucket_at_twice_the_limit_admit_exactly_the_limit(
    redis_url: str, redis_client: aioredis.Redis, limit: int
) -> None:
    name = bucket()
    start_at = time.time() + 2.0
    args = [redis_url, name, str(limit), str(limit), str(start_at), str(NOW)]
    env = env_with(PYTHONPATH=str(SRC))
    children = [
        subprocess.Popen(
            [sys.executable, "-c", CHILD, *args], stdout=subprocess.PIPE, env=env, text=True
        )
        for _ in range(2)
    ]
    outputs = [child.communicate(timeout=60)[0] for child in children]

    assert [c.returncode for c in children] == [0, 0]
    assert sum(int(out) for out in outputs) == limit
    assert await counter(redis_client, counter_key(name)) == limit


async def test_a_small_limit_on_two_limiters_is_never_under_admitted(redis_url: str) -> None:
    clock = Clock()
    one, two = RedisRateLimiter(redis_url, clock=clock), RedisRateLimiter(redis_url, clock=clock)
    name = bucket()
    try:
        assert (await one.hit(name, 5)).allowed
        assert [(await two.hit(name, 5)).allowed for _ in range(5)] == [True] * 4 + [False]
    finally:
        await one.aclose()
        await two.aclose()


# -- same answers as the in-process limiter -----------------------------------------------------


@pytest.mark.parametrize(("limit", "hits"), [(5, 8), (1000, 1013)], ids=["small", "leased"])
async def test_redis_and_in_process_give_identical_decisions_for_one_sequence(
    redis_url: str, limit: int, hits: int
) -> None:
    clock = Clock()
    local, remote = InProcessRateLimiter(clock=clock), RedisRateLimiter(redis_url, clock=clock)
    name = bucket()
    expected, got = [], []
    try:
        for i in range(hits):
            clock.now = NOW + i * 50 / hits  # time moves on inside the window
            expected.append(await local.hit(name, limit))
            got.append(await remote.hit(name, limit))
    finally:
        await remote.aclose()

    assert got == expected


@pytest.mark.parametrize("kind", ["in-process", "redis"])
async def test_a_new_window_admits_again_after_the_limit_was_reached(
    redis_url: str, kind: str
) -> None:
    clock = Clock()
    limiter: RateLimiter = (
        InProcessRateLimiter(clock=clock)
        if kind == "in-process"
        else RedisRateLimiter(redis_url, clock=clock)
    )
    name = bucket()
    try:
        assert [(await limiter.hit(name, 2)).allowed for _ in range(3)] == [True, True, False]
        clock.now += 60
        decision = await limiter.hit(name, 2)
    finally:
        await limiter.aclose()

    assert decision.allowed
    assert decision.remaining == 1
    assert decision.reset_at == window_start(NOW) + 120


async def test_raising_the_limit_within_the_window_admits_more(limiter: RedisRateLimiter) -> None:
    name = bucket()
    assert [(await limiter.hit(name, 2)).allowed for _ in range(3)] == [True, True, False]

    assert (await limiter.hit(name, 5)).allowed


# -- batching ---------------------------------------------------------------------------------


async def test_the_hits_of_one_tick_share_one_round_trip(limiter: RedisRateLimiter) -> None:
    await limiter.hit(bucket(), 100)  # connected, script loaded
    before = limiter.round_trips
    names = [bucket() for _ in range(50)]

    await asyncio.gather(*(limiter.hit(names[i % 50], 100) for i in range(200)))

    assert limiter.round_trips - before == 1


async def test_a_large_limit_is_mostly_answered_from_the_lease(limiter: RedisRateLimiter) -> None:
    await limiter.hit(bucket(), 100)
    before = limiter.round_trips
    name = bucket()

    for _ in range(1000):
        await limiter.hit(name, 100_000)

    assert limiter.round_trips - before == 1  # 1 hit + a lease of 1 % of 100 000


async def test_a_flushed_script_is_loaded_again(private_redis: RedisServer) -> None:
    limiter = RedisRateLimiter(private_redis.url, clock=Clock())
    client = aioredis.Redis.from_url(private_redis.url)
    name = bucket()
    try:
        assert (await limiter.hit(name, 10)).remaining == 9
        await client.script_flush()
        assert (await limiter.hit(name, 10)).remaining == 8
        assert await counter(client, counter_key(name)) == 2
    finally:
        await limiter.aclose()
        await client.aclose()


# -- failover ---------------------------------------------------------------------------------


async def test_with_redis_down_hits_are_answered_from_the_in_process_fallback(
    private_redis: RedisServer,
) -> None:
    limiter = RedisRateLimiter(private_redis.url, clock=Clock(), retry_interval=0.1)
    name = bucket()
    try:
        assert (await limiter.hit(name, 3)).allowed
        private_redis.kill()
        started = time.monotonic()
        decisions = [await limiter.hit(name, 3) for _ in range(4)]
        elapsed = time.monotonic() - started
    finally:
        await limiter.aclose()

    assert [d.allowed for d in decisions] == [True, True, True, False]
    assert elapsed < 1.0


async def test_with_redis_down_a_fail_closed_limiter_refuses(private_redis: RedisServer) -> None:
    limiter = RedisRateLimiter(private_redis.url, clock=Clock(), fail_closed=True)
    name = bucket()
    try:
        assert (await limiter.hit(name, 3)).allowed
        private_redis.kill()
        decisions = [await limiter.hit(name, 3) for _ in range(3)]
    finally:
        await limiter.aclose()

    assert not any(d.allowed for d in decisions)
    assert all(d.retry_after >= 1 and d.remaining == 0 for d in decisions)


async def test_a_fail_closed_refusal_says_the_count_was_impossible_not_that_the_limit_was_hit(
    private_redis: RedisServer,
) -> None:
    limiter = RedisRateLimiter(
        private_redis.url, clock=Clock(), fail_closed=True, retry_interval=2.5
    )
    exhausted = bucket()
    try:
        full = [await limiter.hit(exhausted, 1) for _ in range(2)]
        private_redis.kill()
        down = await limiter.hit(bucket(), 1)
    finally:
        await limiter.aclose()

    assert not full[1].allowed and not full[1].unavailable  # the limit itself: a 429
    assert not down.allowed and down.unavailable
    assert down.retry_after == 3  # the next probe of Redis, not the end of the window


async def test_a_hung_redis_is_given_up_after_the_socket_timeout(
    private_redis: RedisServer,
) -> None:
    limiter = RedisRateLimiter(private_redis.url, clock=Clock(), socket_timeout=0.25)
    name = bucket()
    assert private_redis.proc is not None
    try:
        assert (await limiter.hit(name, 3)).allowed
        private_redis.proc.send_signal(19)  # SIGSTOP: connected, never answers
        started = time.monotonic()
        decision = await limiter.hit(name, 3)
        elapsed = time.monotonic() - started
    finally:
        private_redis.proc.send_signal(18)  # SIGCONT
        await limiter.aclose()

    assert decision.allowed
    assert elapsed < 1.0


async def test_redis_unavailable_is_logged_once_not_per_request(
    private_redis: RedisServer,
) -> None:
    limiter = RedisRateLimiter(private_redis.url, clock=Clock(), retry_interval=0.1)
    try:
        await limiter.hit(bucket(), 100)
        private_redis.kill()
        with capture_logs() as logs:
            for _ in range(50):
                await limiter.hit(bucket(), 100)
            await asyncio.sleep(0.35)  # a few failed background probes
            for _ in range(50):
                await limiter.hit(bucket(), 100)
    finally:
        await limiter.aclose()

    assert [e["event"] for e in logs] == ["rate_limiter.redis_unavailable"]
    assert logs[0]["log_level"] == "warning"


async def test_after_redis_comes_back_the_limiter_returns_to_it_by_itself(
    private_redis: RedisServer,
) -> None:
    limiter = RedisRateLimiter(private_redis.url, clock=Clock(), retry_interval=0.1)
    client = aioredis.Redis.from_url(private_redis.url)
    name = bucket()
    try:
        with capture_logs() as logs:
            await limiter.hit(bucket(), 100)
            private_redis.kill()
            assert (await limiter.hit(name, 100)).allowed  # from the fallback
            private_redis.start()

            async def counted_in_redis() -> bool:
                await limiter.hit(name, 100)
                return await counter(client, counter_key(name)) is not None

            await wait_until(counted_in_redis)
    finally:
        await limiter.aclose()
        await client.aclose()

    assert [e["event"] for e in logs] == [
        "rate_limiter.redis_unavailable",
        "rate_limiter.redis_restored",
    ]


# -- misuse and cancellation ------------------------------------------------------------------


async def test_a_negative_limit_is_refused_at_once_as_a_programming_error(
    limiter: RedisRateLimiter,
) -> None:
    with pytest.raises(ValueError, match="negative"):
        await asyncio.wait_for(limiter.hit(bucket(), -1), 1.0)


async def test_cancelled_callers_do_not_disturb_the_others_of_their_batch(
    limiter: RedisRateLimiter,
) -> None:
    name = bucket()
    tasks = [asyncio.create_task(limiter.hit(name, 100)) for _ in range(10)]
    await asyncio.sleep(0)  # every hit is queued, the round trip not yet made
    for task in tasks[::2]:
        task.cancel()

    decisions = await asyncio.gather(*tasks[1::2])

    assert [d.remaining for d in decisions] == [99, 98, 97, 96, 95]
    assert (await limiter.hit(name, 100)).remaining == 94
