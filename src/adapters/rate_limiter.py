"""Per-key rate limiters: in-process (embedded default and fallback) and Redis (many processes).

Both number the hits of a fixed window and let `domain.rate_limits.decide` answer, so they
give the same decisions and headers.

`RedisRateLimiter` is exact across processes: one Lua script hands out the window's slots
atomically and never past the limit, so at most `limit` hits per window and bucket are ever
admitted. It is built for the API's hot path:

- auto-pipelining: the hits requested during one event-loop tick (and while a round trip is
  in flight) travel together, one EVALSHA per bucket, in ONE round trip on one connection;
- leasing, for large limits only (>= 1000 by default): a bucket takes up to 1 % of its limit
  ahead and hands those slots out locally. Still never past the limit; a process may hold a
  few unused slots at the end of a window (under-admission <= 1 % per process), which is why
  small limits never lease;
- a window known to be exhausted is refused locally: its counter only grows.

If Redis fails, or a round trip (connecting included) takes longer than `socket_timeout`,
hits are answered from the in-process fallback (fail-open, the default) or refused
(`fail_closed=True`) with a decision marked `unavailable`, so that callers do not mistake it
for a limit reached; one line is logged, Redis is probed in the background every
`retry_interval` seconds, and once it answers the limiter goes back to it by itself. Hits
admitted by the fallback are not in Redis's counter: during an outage each process limits on
its own. A limiter serves one event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import structlog
from redis.asyncio import ConnectionPool
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError, ResponseError

from domain.rate_limits import (
    WINDOW_SECONDS,
    RateLimitDecision,
    decide,
    unavailable,
    window_start,
)

Clock = Callable[[], float]

#: Take up to ARGV[1] slots of the window KEYS[1] without going past the limit ARGV[2].
#: Returns {granted, counter after}; the granted slots are counter-granted+1 .. counter.
TAKE_SCRIPT = """
local used = tonumber(redis.call('GET', KEYS[1]) or '0')
local granted = math.min(tonumber(ARGV[1]), tonumber(ARGV[2]) - used)
if granted <= 0 then return {0, used} end
used = redis.call('INCRBY', KEYS[1], granted)
if used == granted then redis.call('EXPIRE', KEYS[1], ARGV[3]) end
return {granted, used}
"""
TAKE_SCRIPT_SHA = hashlib.sha1(TAKE_SCRIPT.encode()).hexdigest()  # noqa: S324 - Redis's id
KEY_TTL_SECONDS = 2 * WINDOW_SECONDS


def _bulk(value: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(value), value)


def _command(*parts: bytes) -> bytes:
    """A command in RESP, ready to send (cheaper than redis-py's generic packing)."""
    return b"*%d\r\n" % len(parts) + b"".join(_bulk(p) for p in parts)


_EVALSHA_HEAD = b"*7\r\n" + _bulk(b"EVALSHA") + _bulk(TAKE_SCRIPT_SHA.encode()) + _bulk(b"1")
_EVALSHA_TAIL = _bulk(b"%d" % KEY_TTL_SECONDS)  # EVALSHA sha 1 key wanted limit ttl


class RateLimiter(Protocol):
    async def hit(self, bucket: str, limit: int) -> RateLimitDecision: ...

    async def aclose(self) -> None: ...


class InProcessRateLimiter:
    """Counters per (bucket, window) in this process; exact within one event loop."""

    def __init__(self, *, clock: Clock = time.time) -> None:
        self._clock = clock
        self._counts: dict[tuple[str, int], int] = {}
        self._window = -1

    async def hit(self, bucket: str, limit: int) -> RateLimitDecision:
        return self.hit_at(bucket, limit, self._clock())

    def hit_at(self, bucket: str, limit: int, now: float) -> RateLimitDecision:
        """Count one hit made at `now` (synchronous: used as the Redis limiter's fallback)."""
        window = window_start(now)
        if window > self._window:  # a new window: forget the finished ones
            self._counts = {k: n for k, n in self._counts.items() if k[1] >= window}
            self._window = window
        key = (bucket, window)
        count = self._counts.get(key, 0) + 1
        self._counts[key] = count
        return decide(count, limit, now)

    async def aclose(self) -> None:
        self._counts.clear()


@dataclass(slots=True)
class _Pending:
    key: tuple[str, int]
    limit: int
    now: float
    future: asyncio.Future[RateLimitDecision]


@dataclass(slots=True)
class _Known:
    """What this process knows of one window of one bucket."""

    next_slot: int = 1  # leased slots not yet handed out: next_slot .. last_slot
    last_slot: int = 0
    used: int = 0  # the Redis counter when last seen (it never goes down)


class RedisRateLimiter:
    """Exact fixed-window limits shared by every process using the same Redis."""

    def __init__(
        self,
        url: str,
        *,
        fallback: InProcessRateLimiter | None = None,
        fail_closed: bool = False,
        key_prefix: str = "icodrip:rl:",
        clock: Clock = time.time,
        socket_timeout: float = 0.25,
        retry_interval: float = 1.0,
        lease_ratio: float = 0.01,
        lease_min_limit: int = 1000,
    ) -> None:
        pool = ConnectionPool.from_url(
            url,
            socket_timeout=None,  # every round trip runs under one timeout of ours instead
            socket_connect_timeout=socket_timeout,
            retry=Retry(NoBackoff(), 0),
            protocol=2,
        )
        # One connection of our own: a single batch is in flight at a time.
        self._conn: Any = pool.connection_class(**pool.connection_kwargs)
        self._fallback = fallback or InProcessRateLimiter(clock=clock)
        self._fail_closed = fail_closed
        self._prefix = key_prefix
        self._clock = clock
        self._socket_timeout = socket_timeout
        self._retry_interval = retry_interval
        self._lease_ratio = lease_ratio
        self._lease_min_limit = lease_min_limit
        self._known: dict[tuple[str, int], _Known] = {}
        self._window = -1
        self._queue: list[_Pending] = []
        self._flusher: asyncio.Task[None] | None = None
        self._prober: asyncio.Task[None] | None = None
        self._script_loaded = False
        self._unavailable = False
        self._closed = False
        self.round_trips = 0
        """Round trips to Redis so far (for metrics and tests)."""

    async def hit(self, bucket: str, limit: int) -> RateLimitDecision:
        if self._closed:
            raise RuntimeError("the rate limiter is closed")
        if limit < 0:
            raise ValueError(f"a rate limit cannot be negative: {limit}")
        now = self._clock()
        window = window_start(now)
        if window > self._window:
            self._known = {k: v for k, v in self._known.items() if k[1] >= window}
            self._window = window
        key = (bucket, window)
        slot = self._take_known(key, limit)
        if slot is not None:
            return decide(slot, limit, now)
        if self._unavailable:
            return self._degraded(bucket, limit, now)
        loop = asyncio.get_running_loop()
        pending = _Pending(key, limit, now, loop.create_future())
        self._queue.append(pending)
        if self._flusher is None:  # starts next tick: this tick's hits share the trip
            self._flusher = loop.create_task(self._drain())
        return await pending.future

    async def aclose(self) -> None:
        self._closed = True
        for task in (self._prober, self._flusher):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._settle(self._queue)
        self._queue = []
        with contextlib.suppress(Exception):
            await self._conn.disconnect()

    # -- answering ---------------------------------------------------------------------------

    def _take_known(self, key: tuple[str, int], limit: int) -> int | None:
        """A slot number this process can hand out alone (leased, or past an exhausted
        window's end), or None when Redis must be asked."""
        known = self._known.get(key)
        if known is None:
            return None
        if known.next_slot <= known.last_slot:
            known.next_slot += 1
            return known.next_slot - 1
        if known.used >= limit:
            return known.used + 1
        return None

    def _degraded(self, bucket: str, limit: int, now: float) -> RateLimitDecision:
        if self._fail_closed:
            # The next probe is the earliest Redis can be back.
            return unavailable(limit, now, math.ceil(self._retry_interval))
        return self._fallback.hit_at(bucket, limit, now)

    def _settle(self, pendings: Sequence[_Pending]) -> None:
        """Answer, without Redis, whatever is still waiting."""
        for p in pendings:
            if not p.future.done():
                p.future.set_result(self._degraded(p.key[0], p.limit, p.now))

    def _lease_size(self, limit: int) -> int:
        return int(limit * self._lease_ratio) if limit >= self._lease_min_limit else 0

    # -- batching ----------------------------------------------------------------------------

    async def _drain(self) -> None:
        try:
            while self._queue and not self._unavailable:
                batch, self._queue = self._queue, []
                try:
                    await self._flush(batch)
                finally:
                    self._settle(batch)
            self._settle(self._queue)
            self._queue = []
        finally:
            self._flusher = None

    async def _flush(self, batch: list[_Pending]) -> None:
        groups: dict[tuple[str, int], list[_Pending]] = {}
        for p in batch:
            if p.future.done():  # the caller was cancelled
                continue
            slot = self._take_known(p.key, p.limit)  # a lease may have come meanwhile
            if slot is not None:
                p.future.set_result(decide(slot, p.limit, p.now))
            else:
                groups.setdefault(p.key, []).append(p)
        if not groups:
            return
        requests = []
        for key, pendings in groups.items():
            limit = max(p.limit for p in pendings)
            requests.append((key, limit, len(pendings) + self._lease_size(limit)))
        try:
            replies = await self._take_remote(requests)
        except Exception as exc:
            self._set_unavailable(exc)
            return
        for (key, _, _), pendings, (granted, used) in zip(
            requests, groups.values(), replies, strict=True
        ):
            known = self._known.setdefault(key, _Known())
            known.used = max(known.used, used)
            first = used - granted + 1
            for i, p in enumerate(pendings):
                slot = first + i if i < granted else used + 1
                if not p.future.done():
                    p.future.set_result(decide(slot, p.limit, p.now))
            if granted > len(pendings):
                known.next_slot, known.last_slot = first + len(pendings), used

    # -- Redis -------------------------------------------------------------------------------

    async def _take_remote(
        self, requests: Sequence[tuple[tuple[str, int], int, int]]
    ) -> list[tuple[int, int]]:
        """One round trip: for each (key, limit, wanted), the (granted, counter after)."""
        if not self._script_loaded:
            await self._load_script()
        prefix = self._prefix
        commands = [
            _EVALSHA_HEAD
            + _bulk(f"{prefix}{bucket}:{window}".encode())
            + _bulk(b"%d" % wanted)
            + _bulk(b"%d" % limit)
            + _EVALSHA_TAIL
            for (bucket, window), limit, wanted in requests
        ]
        replies = await self._round_trip(commands)
        missing = [i for i, r in enumerate(replies) if isinstance(r, NoScriptError)]
        if missing:  # Redis restarted or flushed its scripts: nothing ran for these
            await self._load_script()
            again = await self._round_trip([commands[i] for i in missing])
            for i, reply in zip(missing, again, strict=True):
                replies[i] = reply
        results = []
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
            granted, used = reply
            results.append((int(granted), int(used)))
        return results

    async def _round_trip(self, commands: Sequence[bytes]) -> list[Any]:
        """Send RESP-encoded commands at once and read every reply (Redis errors included),
        all within `socket_timeout`; on any other failure the connection is dropped."""
        conn = self._conn
        self.round_trips += 1
        replies: list[Any] = []
        async with asyncio.timeout(self._socket_timeout):
            await conn.send_packed_command(b"".join(commands), check_health=False)
            for _ in commands:
                try:
                    replies.append(await conn.read_response())
                except ResponseError as exc:  # the connection stays in step: go on reading
                    replies.append(exc)
        return replies

    async def _load_script(self) -> None:
        (reply,) = await self._round_trip([_command(b"SCRIPT", b"LOAD", TAKE_SCRIPT.encode())])
        if isinstance(reply, Exception):
            raise reply
        self._script_loaded = True

    # -- failover ----------------------------------------------------------------------------

    def _set_unavailable(self, exc: Exception) -> None:
        if self._unavailable:
            return
        self._unavailable = True
        self._script_loaded = False
        structlog.get_logger().warning(
            "rate_limiter.redis_unavailable",
            error=f"{type(exc).__name__}: {exc}",
            fail_closed=self._fail_closed,
            retry_interval=self._retry_interval,
        )
        self._prober = asyncio.get_running_loop().create_task(self._probe())

    async def _probe(self) -> None:
        """Every `retry_interval`, try Redis (loading the script); go back to it once it answers."""
        started = time.monotonic()
        while True:
            await asyncio.sleep(self._retry_interval)
            try:
                await self._load_script()
            except Exception:  # noqa: S112 - still down: try again later
                continue
            self._unavailable = False
            self._prober = None
            structlog.get_logger().info(
                "rate_limiter.redis_restored", down_seconds=round(time.monotonic() - started, 1)
            )
            return


def rate_limiter_for(redis_url: str | None, *, fail_closed: bool = False) -> RateLimiter:
    """The Redis limiter when a URL is configured, else the in-process one (embedded default)."""
    if redis_url:
        return RedisRateLimiter(redis_url, fail_closed=fail_closed)
    return InProcessRateLimiter()
