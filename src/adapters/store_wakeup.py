"""Waking the store's followers when an event is recorded: PostgreSQL's NOTIFY (ADR 0018).

`eventsourcing`'s PostgreSQL recorder runs `NOTIFY <recorder.channel_name>` in every insert
transaction (delivered at commit). A `StoreWakeup` holds an async psycopg connection of its
own (autocommit, outside the pools), `LISTEN`s on that channel and sets an `asyncio.Event` on
each notification; a follower's idle `await wakeup.wait(timeout)` returns True when woken and
False after `timeout`, its fallback poll. The notification is only a hint to read now: the
follower reads the log as before, so a notification lost (its connection gone, PostgreSQL
restarting, a PgBouncer in transaction mode) costs latency until the next poll, never an event.

If the connection fails it is logged once (`store_wakeup.lost`) and made again in the
background with the start-up backoff (`adapters.startup.Backoff`: 0.5 s doubling to 10 s);
meanwhile `wait` just sleeps its timeout. When it is back (`store_wakeup.recovered`) the next
`wait` returns at once, as notifications sent while it was away are gone.

On the embedded SQLite store there is no NOTIFY, and with `ICODRIP_STORE_WAKEUP=0` none is
listened for: such a wake-up never wakes, and `wait` is a plain sleep of the follower's
polling interval (`poll_interval`).
"""

from __future__ import annotations

import asyncio
import time
from types import TracebackType
from typing import Any

import psycopg
import structlog
from psycopg import sql

from adapters.event_store import postgres_connect_kwargs
from adapters.settings import Settings
from adapters.startup import Backoff, describe

log = structlog.get_logger()

#: Seconds a woken follower waits for a notification before it reads anyway (ADR 0018).
FALLBACK_POLL = 1.0

#: A connection that lived this long before it failed had worked: the backoff begins again.
HEALTHY_AFTER = 60.0

#: TCP keepalives, so a connection that silently went away is noticed within about a minute.
_KEEPALIVES = {
    "keepalives": 1,
    "keepalives_idle": 30,
    "keepalives_interval": 10,
    "keepalives_count": 3,
}


class StoreWakeup:
    """Wakes a follower of the key store's log when an event is recorded (see the module)."""

    def __init__(
        self,
        connect_kwargs: dict[str, Any] | None = None,
        channel: str | None = None,
        *,
        name: str = "store",
    ) -> None:
        """Listen on `channel` over a connection made with `connect_kwargs`; with either
        missing, never wake (`wait` sleeps). `name` tells the followers apart in logs and in
        `pg_stat_activity` (application name `icodrip-wakeup-<name>`)."""
        self.name = name
        self.channel = channel if connect_kwargs is not None else None
        self._connect_kwargs: dict[str, Any] = {
            **(connect_kwargs or {}),
            **_KEEPALIVES,
            "application_name": f"icodrip-wakeup-{name}",
            "autocommit": True,
        }
        self._notified = asyncio.Event()
        self._connection: psycopg.AsyncConnection[Any] | None = None
        self._task: asyncio.Task[None] | None = None
        self._lost = False
        # While listening is down, waits are cut to what the follower would poll without us.
        self._polling = FALLBACK_POLL
        #: Notifications received, connections made (LISTEN issued), waits that were woken.
        self.notifications = 0
        self.connections = 0
        self.wakeups = 0

    @classmethod
    def sleeping(cls, name: str = "store") -> StoreWakeup:
        """A wake-up that never wakes: `wait(timeout)` sleeps `timeout`."""
        return cls(name=name)

    @classmethod
    def for_store(cls, settings: Settings, recorder: object, *, name: str) -> StoreWakeup:
        """The wake-up for a follower of `recorder` (the registry's), not started yet.

        Listens on PostgreSQL unless `ICODRIP_STORE_WAKEUP=0`; sleeps on the embedded store,
        and when the recorder names no channel (a library that no longer NOTIFYs).
        """
        if settings.is_embedded or not settings.store_wakeup:
            return cls.sleeping(name)
        channel = getattr(recorder, "channel_name", None)
        if not isinstance(channel, str) or not channel:
            log.warning("store_wakeup.unavailable", follower=name, recorder=type(recorder).__name__)
            return cls.sleeping(name)
        return cls(postgres_connect_kwargs(settings), channel, name=name)

    @classmethod
    async def open(cls, settings: Settings, recorder: object, *, name: str) -> StoreWakeup:
        """`for_store(...)`, started: listening when this returns, unless PostgreSQL could not
        be reached (then it keeps trying in the background)."""
        wakeup = cls.for_store(settings, recorder, name=name)
        await wakeup.start()
        return wakeup

    @property
    def listens(self) -> bool:
        """Whether this wakes at all (PostgreSQL); False: `wait` is a plain sleep."""
        return self.channel is not None

    @property
    def listening(self) -> bool:
        """Whether its connection is up and `LISTEN`ing right now."""
        return self._connection is not None

    def poll_interval(self, polling: float) -> float:
        """The idle wait of a follower that polls every `polling` s when nothing wakes it: the
        fallback (`FALLBACK_POLL`) when this listens, else `polling` itself. While the LISTEN
        connection is down, `wait` waits at most `polling` (a lost wake-up costs latency only
        as long as no poll makes up for it)."""
        self._polling = min(polling, FALLBACK_POLL)
        return FALLBACK_POLL if self.listens else polling

    async def start(self) -> None:
        """Connect and `LISTEN`; a failure is logged and retried in the background."""
        if self.channel is None or self._task is not None:
            return
        first = asyncio.get_running_loop().create_future()
        self._task = asyncio.create_task(self._follow(first), name=f"store-wakeup-{self.name}")
        await asyncio.wait({first, self._task}, return_when=asyncio.FIRST_COMPLETED)

    async def aclose(self) -> None:
        """Stop listening and close the connection."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def __aenter__(self) -> StoreWakeup:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def wait(self, timeout: float, until: asyncio.Event | None = None) -> bool:
        """Wait for a notification (True, and it is consumed), at most `timeout` s (False).

        Also returns False as soon as `until` is set (a follower's stop).
        """
        if self.listens and not self.listening:
            timeout = min(timeout, self._polling)
        if not self._notified.is_set() and not (until is not None and until.is_set()):
            waiters = {asyncio.ensure_future(self._notified.wait())}
            if until is not None:
                waiters.add(asyncio.ensure_future(until.wait()))
            try:
                await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in waiters:
                    waiter.cancel()
        if not self._notified.is_set():
            return False
        self._notified.clear()
        self.wakeups += 1
        return True

    async def _follow(self, first: asyncio.Future[None]) -> None:
        """Listen, and listen again after the connection failed, until cancelled."""
        backoff = Backoff()
        while True:
            began = time.monotonic()
            try:
                await self._listen(first)
            except Exception as error:  # whatever ends the connection: never the follower
                if time.monotonic() - began >= HEALTHY_AFTER:
                    backoff.reset()
                delay = backoff.next_delay()
                if not self._lost:
                    self._lost = True
                    log.warning(
                        "store_wakeup.lost",
                        follower=self.name,
                        error=type(error).__name__,
                        detail=describe(error),
                        retry_in=round(delay, 2),
                        fallback_poll=FALLBACK_POLL,
                    )
                if not first.done():
                    first.set_result(None)
                await asyncio.sleep(delay)

    async def _listen(self, first: asyncio.Future[None]) -> None:
        """One connection's life: `LISTEN`, then set the event on every notification."""
        assert self.channel is not None
        connection = await psycopg.AsyncConnection.connect(**self._connect_kwargs)
        try:
            await connection.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.channel)))
            self._connection = connection
            self.connections += 1
            if not first.done():
                first.set_result(None)
            if self._lost:
                self._lost = False
                log.info("store_wakeup.recovered", follower=self.name, channel=self.channel)
                self._notified.set()  # what was recorded while it was away was not notified
            async for _ in connection.notifies():
                self.notifications += 1
                self._notified.set()
            raise psycopg.OperationalError("the notification stream ended")
        finally:
            self._connection = None
            await connection.close()
