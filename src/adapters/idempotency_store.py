"""Where answers to POSTs with an `Idempotency-Key` are kept for a day, across API processes.

Redis when the deployment has one (every API process shares it); otherwise a SQLite file in
the data dir, which every process of one machine shares (the embedded default). A slot is
claimed (`begin`) before the request runs, kept claimed while it runs (`extend`), and holds,
once it answered, the sealed answer (`finish`); a request that fails without an answer to
keep gives its slot up (`release`).
What is stored is opaque here: the caller seals it (`api.idempotency`), so no secret an answer
carries is ever at rest in plain text.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import redis.asyncio as redis
from redis.exceptions import RedisError

from adapters.private_files import private_sqlite
from adapters.settings import Settings

#: How long a claimed slot waits for its answer before another request may take it over
#: (a process killed mid-request must not block the key for a day).
CLAIM_SECONDS = 120
#: How long an answer is kept for replay.
KEEP_SECONDS = 24 * 3600


@dataclass(frozen=True, slots=True)
class Slot:
    """What a slot held when it was asked for. `claim` is set when it is the caller's now:
    the token that alone may finish, extend or release it."""

    claim: bytes | None
    fingerprint: bytes = b""
    answer: bytes | None = None  # None while the first request is still running


class IdempotencyUnavailable(Exception):
    """The store cannot be reached: the request is refused rather than risked twice."""


class IdempotencyStore(Protocol):
    async def begin(self, slot: str, fingerprint: bytes) -> Slot: ...

    async def extend(self, slot: str, claim: bytes) -> None: ...

    async def finish(self, slot: str, claim: bytes, fingerprint: bytes, answer: bytes) -> None: ...

    async def release(self, slot: str, claim: bytes) -> None: ...

    async def aclose(self) -> None: ...


# A slot is one value: b"R" + 16-byte claim + 32-byte fingerprint while its request runs,
# b"D" + fingerprint + sealed answer once answered. Only the claim's holder changes it, so a
# request whose claim lapsed (and was taken over) cannot overwrite or drop another's answer.
_CLAIM = 16
_BEGIN = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', ARGV[2]) then return nil end
return redis.call('GET', KEYS[1])
"""
_IF_CLAIMED = """
local held = redis.call('GET', KEYS[1])
if not held or string.sub(held, 1, 17) ~= ARGV[1] then return 0 end
"""
_FINISH = _IF_CLAIMED + "redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3]) return 1"
_EXTEND = _IF_CLAIMED + "redis.call('EXPIRE', KEYS[1], ARGV[2]) return 1"
_RELEASE = _IF_CLAIMED + "redis.call('DEL', KEYS[1]) return 1"


def _running(claim: bytes, fingerprint: bytes) -> bytes:
    return b"R" + claim + fingerprint


def _parse(held: bytes) -> Slot:
    if held[:1] == b"R":
        return Slot(claim=None, fingerprint=held[1 + _CLAIM :])
    return Slot(claim=None, fingerprint=held[1:33], answer=held[33:])


class RedisIdempotencyStore:
    """Slots in Redis: a script claims one (`SET NX EX`); the holder's scripts change it."""

    def __init__(self, url: str, *, prefix: str = "icodrip:idempotency:") -> None:
        self._redis = redis.Redis.from_url(url, socket_timeout=2.0, socket_connect_timeout=2.0)
        self._begin = self._redis.register_script(_BEGIN)
        self._finish = self._redis.register_script(_FINISH)
        self._extend = self._redis.register_script(_EXTEND)
        self._release = self._redis.register_script(_RELEASE)
        self._prefix = prefix

    async def begin(self, slot: str, fingerprint: bytes) -> Slot:
        claim = os.urandom(_CLAIM)
        running = _running(claim, fingerprint)
        try:
            held = await self._begin(keys=[self._prefix + slot], args=[running, CLAIM_SECONDS])
        except RedisError as error:
            raise IdempotencyUnavailable(type(error).__name__) from error
        if held is not None:
            return _parse(held)
        return Slot(claim=claim, fingerprint=fingerprint)

    async def _if_claimed(self, script: Any, slot: str, claim: bytes, *args: object) -> None:
        try:
            await script(keys=[self._prefix + slot], args=[b"R" + claim, *args])
        except RedisError as error:
            raise IdempotencyUnavailable(type(error).__name__) from error

    async def extend(self, slot: str, claim: bytes) -> None:
        await self._if_claimed(self._extend, slot, claim, CLAIM_SECONDS)

    async def finish(self, slot: str, claim: bytes, fingerprint: bytes, answer: bytes) -> None:
        held = b"D" + fingerprint + answer
        await self._if_claimed(self._finish, slot, claim, held, KEEP_SECONDS)

    async def release(self, slot: str, claim: bytes) -> None:
        await self._if_claimed(self._release, slot, claim)

    async def aclose(self) -> None:
        await self._redis.aclose()


class SqliteIdempotencyStore:
    """Slots in one SQLite file (WAL), shared by the processes of one machine."""

    def __init__(self, path: Path) -> None:
        self._conn = sqlite3.connect(
            private_sqlite(path), check_same_thread=False, isolation_level=None, timeout=5.0
        )
        self._conn.execute("PRAGMA journal_mode=WAL")
        # Kept answers survive a crash of the process, not of the machine: a retry after a
        # power cut runs again, as it would after the 24 hours. No fsync on each request.
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.execute(
            "CREATE TABLE IF NOT EXISTS idempotency ("
            " slot TEXT PRIMARY KEY, held BLOB NOT NULL, expires_at REAL NOT NULL)"
        )
        self._lock = threading.Lock()
        self._last_sweep = 0.0

    def _begin(self, slot: str, fingerprint: bytes) -> Slot:
        now = time.time()
        claim = os.urandom(_CLAIM)
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                if now - self._last_sweep > 60:  # the expired go, a minute at a time
                    self._conn.execute("DELETE FROM idempotency WHERE expires_at <= ?", (now,))
                    self._last_sweep = now
                row = self._conn.execute(
                    "SELECT held FROM idempotency WHERE slot = ? AND expires_at > ?", (slot, now)
                ).fetchone()
                if row is None:
                    self._conn.execute(
                        "INSERT OR REPLACE INTO idempotency VALUES (?, ?, ?)",
                        (slot, _running(claim, fingerprint), now + CLAIM_SECONDS),
                    )
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
        if row is not None:
            return _parse(bytes(row[0]))
        return Slot(claim=claim, fingerprint=fingerprint)

    def _if_claimed(self, sql: str, slot: str, claim: bytes, *args: object) -> None:
        """Run `sql` (its last two parameters: the slot and its running value) if the slot
        still holds this claim."""
        with self._lock:
            held = self._conn.execute(
                "SELECT held FROM idempotency WHERE slot = ?", (slot,)
            ).fetchone()
            if held is None or bytes(held[0])[1 : 1 + _CLAIM] != claim or held[0][:1] != b"R":
                return
            self._conn.execute(sql, (*args, slot, held[0]))

    async def _run(self, sql: str, slot: str, claim: bytes, *args: object) -> None:
        try:
            await asyncio.to_thread(self._if_claimed, sql, slot, claim, *args)
        except sqlite3.Error as error:
            raise IdempotencyUnavailable(type(error).__name__) from error

    async def begin(self, slot: str, fingerprint: bytes) -> Slot:
        try:
            return await asyncio.to_thread(self._begin, slot, fingerprint)
        except sqlite3.Error as error:
            raise IdempotencyUnavailable(type(error).__name__) from error

    async def extend(self, slot: str, claim: bytes) -> None:
        sql = "UPDATE idempotency SET expires_at = ? WHERE slot = ? AND held = ?"
        await self._run(sql, slot, claim, time.time() + CLAIM_SECONDS)

    async def finish(self, slot: str, claim: bytes, fingerprint: bytes, answer: bytes) -> None:
        sql = "UPDATE idempotency SET held = ?, expires_at = ? WHERE slot = ? AND held = ?"
        await self._run(sql, slot, claim, b"D" + fingerprint + answer, time.time() + KEEP_SECONDS)

    async def release(self, slot: str, claim: bytes) -> None:
        await self._run("DELETE FROM idempotency WHERE slot = ? AND held = ?", slot, claim)

    async def aclose(self) -> None:
        with self._lock:
            self._conn.close()


def idempotency_store_for(settings: Settings) -> IdempotencyStore:
    """Redis when configured (shared by every API process), else SQLite in the data dir."""
    if settings.redis_url:
        return RedisIdempotencyStore(settings.redis_url)
    return SqliteIdempotencyStore(settings.data_dir / "idempotency.sqlite3")
