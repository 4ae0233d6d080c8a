"""`RequestEventPublisher`, which batches request events to JetStream without making responses
wait on NATS and without losing any, and `NATS_OPTIONS`, the connection options it needs.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path
from typing import Any

import structlog
from nats.aio.client import Client

from adapters.request_event_backlog import RequestEventBacklog
from adapters.request_event_queue import RequestEventQueue
from adapters.request_event_spool import SealedBatch, spool_files
from adapters.request_event_wal import RequestEventWal, sync_when_due
from adapters.request_events import AUDIT_STREAM, REQUESTS_SUBJECT, RequestEvent

log = structlog.get_logger()

#: `nats.connect` options fit for the publisher: reconnect forever, and quickly.
NATS_OPTIONS: dict[str, Any] = {
    "allow_reconnect": True,
    "max_reconnect_attempts": -1,
    "reconnect_time_wait": 0.25,
    "connect_timeout": 2,
}

_HEADROOM = 4096  # bytes of a message left for headers
_DISCONNECTED_POLL = 0.1
_MIN_BACKOFF, _MAX_BACKOFF = 0.05, 2.0


class RequestEventPublisher:
    """Logged, batched, acknowledged, spill-to-disk publication of request events.

    `publish()` appends the event to this process's write-ahead log (`RequestEventWal`), so
    that it survives a crash of the process from the moment `publish()` returns, and queues it
    in memory (`RequestEventQueue`). A background task seals the events into batches (at most
    `max_batch` events, and never more bytes than the server accepts in one message), sends
    each as ONE JetStream message with a stable `Nats-Msg-Id` (`batch_msg_id`) and awaits its
    PubAck. One batch is in flight at a time: under load, batches fill up meanwhile.

    A failed send or a timed-out acknowledgement (unknown outcome) is retried with the batch
    exactly as sealed, which the stream drops as a duplicate within its two-minute window.
    Beyond `max_buffer` events in memory, all of them are spilled to the spool in `spool_dir`;
    once NATS answers again the spool is delivered first (`RequestEventBacklog`), then memory.
    `aclose()` sends what it can within its timeout and spools the rest. Spool files, and the
    logs of crashed processes, are delivered by the next publisher on the directory; what a
    machine crash or a full disk can lose: docs/adr/0016.

    Delivery is at-least-once with stable ids: a whole batch may reach the stream twice (a
    re-send outside the duplicate window, a spool file re-delivered after a crash mid-file).
    Consumers deduplicate by event `id`, so the read model is exactly-once.

    Counters: `published` (events acknowledged by the stream, duplicates included),
    `duplicates` (batches the stream acknowledged as already stored), `spooled` (events
    written to the spool), `failures` (failed or timed-out sends), `wal_failures` (events the
    log could not take); `pending` (events not yet acknowledged: `in_memory` plus
    `spool_pending`, the spooled events this publisher wrote or opened, WAL segments left by
    others included), `available` (False from a failed send until the next acknowledged one),
    `durable` (False from a failed log append until the next one that succeeds).

    Not thread-safe: call `publish()` from the event loop that runs `start()`.
    """

    def __init__(
        self,
        connection: Client,
        *,
        spool_dir: Path,
        max_batch: int = 256,
        # Events wait at most this long for company: 20 ms makes batches 4x larger than 5 ms
        # did at 1k req/s (fewer publish syscalls on the request path's event loop), and an
        # audit row 15 ms later is of no consequence.
        flush_interval: float = 0.02,
        max_buffer: int = 100_000,
        subject: str = REQUESTS_SUBJECT,
        stream: str | None = AUDIT_STREAM,
        ack_timeout: float = 1.0,
        max_message_bytes: int | None = None,
        rescan_interval: float = 60.0,
        wal: bool = True,
        wal_sync_interval: float | None = 1.0,
    ) -> None:
        self._js, self._nc = connection.jetstream(), connection
        self.spool_dir = spool_dir
        self.max_batch = max_batch
        self.flush_interval = flush_interval
        self.max_buffer = max_buffer
        self.subject = subject
        self.stream = stream
        self.ack_timeout = ack_timeout
        self.max_message_bytes = max_message_bytes
        self.rescan_interval = rescan_interval
        self.wal_sync_interval = wal_sync_interval

        self.published = 0
        self.duplicates = 0
        self.spooled = 0
        self.failures = 0
        self.available = True

        self._wal = RequestEventWal(spool_dir) if wal else None
        self._queue = RequestEventQueue(self._wal)
        self._backlog = RequestEventBacklog(spool_dir, self._wal)
        self._sync_task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._timer: asyncio.TimerHandle | None = None
        self._retry_timer: asyncio.TimerHandle | None = None
        self._wake_at = min(max_batch, max_buffer + 1)
        self._due = False
        self._closing = False
        self._closed = False
        self._backoff = _MIN_BACKOFF
        self._next_attempt = 0.0
        self._rescan_at = 0.0

    # -- public ---------------------------------------------------------------------------------

    @property
    def in_memory(self) -> int:
        return len(self._queue)

    @property
    def spool_pending(self) -> int:
        return self._backlog.pending

    @property
    def pending(self) -> int:
        return self.in_memory + self.spool_pending

    @property
    def durable(self) -> bool:
        return self._wal is None or self._wal.durable

    @property
    def wal_failures(self) -> int:
        return 0 if self._wal is None else self._wal.failures

    def publish(self, event: RequestEvent) -> None:
        """Log and queue one event. Synchronous and O(1): never waits on, nor raises for, NATS
        or the disk. When it returns, the event survives a crash of this process (unless the
        log could not be written: `durable` is then False, and an error logged)."""
        if self._closed:  # straight to the spool, synchronously
            self.spooled += self._backlog.append_late(event, self.max_batch, self._max_bytes)
            return
        buffered = self._queue.append(event)
        if self._timer is None and self._loop is not None:
            self._timer = self._loop.call_later(self.flush_interval, self._on_timer)
        if buffered >= self._wake_at:
            self._wake.set()

    async def start(self) -> None:
        """Start the background sender; spool files already in `spool_dir` are delivered too."""
        if self._task is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._backlog.open()
        if self.max_message_bytes is None:
            self.max_message_bytes = max(64 * 1024, self._nc.max_payload - _HEADROOM)
        await self._rescan()
        if self._backlog.files:
            log.info("request_events.spool_found", files=self._backlog.files)
        self._due = True
        self._wake.set()
        self._task = asyncio.create_task(self._run(), name="request-event-publisher")
        if self._wal is not None and self.wal_sync_interval:
            self._sync_task = asyncio.create_task(
                sync_when_due(self._wal, self.wal_sync_interval, self._backlog.in_io),
                name="request-event-wal-sync",
            )

    async def flush(self, timeout: float = 10.0) -> None:
        """Wait until every event published so far is acknowledged (tests, operators)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.in_memory or self._backlog.busy:
            if loop.time() > deadline:
                raise TimeoutError(f"{self.pending} request events not yet acknowledged")
            self._due = True
            self._wake.set()
            await asyncio.sleep(0.005)

    async def aclose(self, timeout: float = 5.0) -> None:
        """Send what can be sent within `timeout`, then spool the rest: nothing stays in memory."""
        if self._closing:
            return
        self._closing = True
        for timer in (self._timer, self._retry_timer):
            if timer is not None:
                timer.cancel()
        if self._sync_task is not None:
            self._sync_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sync_task
        if self._task is not None:
            self._due = True
            self._wake.set()
            try:
                await asyncio.wait_for(asyncio.shield(self._task), timeout)
            except TimeoutError:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
        self._loop = None
        for _ in range(3):  # events published meanwhile are spooled too
            if not (self._queue.buffer or self._queue.outbox):
                break
            await self._spill()
        await self._backlog.close()
        # From here on the spool is written synchronously, on this thread.
        self._closed = True
        await self._spill()
        self._backlog.writer.seal()
        left_in_wal = 0 if self._wal is None else self._wal.close()
        if self.in_memory:
            unlogged = self.in_memory - left_in_wal
            (log.error if unlogged > 0 else log.warning)(
                "request_events.left_at_shutdown",
                events=self.in_memory,
                in_the_log=left_in_wal,  # delivered by the next process on the spool dir
                lost=max(unlogged, 0),
            )
        log.info(
            "request_events.closed",
            published=self.published,
            spooled=self.spooled,
            left_in_spool=len(spool_files(self.spool_dir)),
        )

    # -- the background task --------------------------------------------------------------------

    def _on_timer(self) -> None:
        self._timer = None
        self._due = True
        self._wake.set()

    def _on_retry(self) -> None:
        self._retry_timer = None
        self._due = True
        self._wake.set()

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            closing = self._closing
            try:
                await self._round()
            except Exception:  # a bug here must not stop delivery for good
                log.exception("request_events.publisher_error")
                self._retry_in(_MAX_BACKOFF)
            if closing:
                return
            # come back for spool files that other processes released, even when idle
            until_rescan = self._rescan_at - asyncio.get_running_loop().time()
            if until_rescan > 0:
                self._retry_in(until_rescan)

    async def _round(self) -> None:
        loop = asyncio.get_running_loop()
        if self.in_memory > self.max_buffer and time.monotonic() >= self._queue.spill_retry_at:
            await self._spill()
        if not self._nc.is_connected:
            self._unavailable("disconnected")
            self._retry_in(_DISCONNECTED_POLL)
            return
        if loop.time() < self._next_attempt:
            self._retry_in(self._next_attempt - loop.time())
            return
        try:
            if not self._closing:
                await self._deliver_spool()
            await self._deliver_memory()
        except Exception as error:  # nats-py raises many unrelated types; every one is retried
            self.failures += 1
            self._unavailable(type(error).__name__)
            self._next_attempt = loop.time() + self._backoff
            self._retry_in(self._backoff)
            self._backoff = min(self._backoff * 2, _MAX_BACKOFF)
            return
        self._backoff, self._next_attempt = _MIN_BACKOFF, 0.0
        if not self.available:
            self.available = True
            self._wake_at = min(self.max_batch, self.max_buffer + 1)
            log.info("request_events.nats_restored", pending=self.pending)

    def _unavailable(self, reason: str) -> None:
        if self.available:
            self.available = False
            self._wake_at = self.max_buffer + 1
            log.warning("request_events.nats_unavailable", reason=reason, pending=self.pending)

    def _retry_in(self, delay: float) -> None:
        """Run a round after `delay` seconds at the latest."""
        if self._loop is None or self._closing:
            return
        when = self._loop.time() + max(delay, 0.0)
        if self._retry_timer is not None:
            if self._retry_timer.when() <= when:
                return
            self._retry_timer.cancel()
        self._retry_timer = self._loop.call_at(when, self._on_retry)

    async def _send(self, batch: SealedBatch) -> None:
        ack = await self._js.publish(
            self.subject,
            batch.payload,
            timeout=self.ack_timeout,
            stream=self.stream,
            headers={"Nats-Msg-Id": batch.msg_id},
        )
        self.published += batch.count
        if ack.duplicate:
            self.duplicates += 1

    async def _deliver_memory(self) -> None:
        queue = self._queue
        while True:
            if not queue.outbox:
                buffered = len(queue.buffer)
                if not buffered:
                    return
                if buffered < self.max_batch and not (self._due or self._closing):
                    if self._timer is None and self._loop is not None:
                        self._timer = self._loop.call_later(self.flush_interval, self._on_timer)
                    return
                if buffered < self.max_batch:
                    self._due = False
                queue.seal(self.max_batch, self._max_bytes)
            await self._send(queue.outbox[0])
            queue.sent()
            if self.in_memory > self.max_buffer:
                await self._spill()

    async def _deliver_spool(self) -> None:
        backlog = self._backlog
        await backlog.seal()
        if asyncio.get_running_loop().time() >= self._rescan_at:
            await self._rescan()
        while (backlog.claim is not None or backlog.files) and not self._closing:
            claim = backlog.claim or await backlog.claim_oldest(self.max_batch, self._max_bytes)
            if claim is None:  # another process delivers it, or already did
                continue
            while claim.batches:
                await self._send(claim.batches[0])
                backlog.sent(claim)
                if self.in_memory > self.max_buffer:
                    await self._spill()
            await backlog.release(delivered=True)

    async def _spill(self) -> None:
        """Move everything in memory to the spool, oldest first; keep it if the disk fails."""
        self.spooled += await self._queue.spill(self._backlog, self.max_batch, self._max_bytes)

    async def _rescan(self) -> None:
        self._rescan_at = asyncio.get_running_loop().time() + self.rescan_interval
        await self._backlog.rescan()

    @property
    def _max_bytes(self) -> int:
        return self.max_message_bytes or 1024 * 1024 - _HEADROOM
