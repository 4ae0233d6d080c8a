"""`RequestEventPublisher`, which batches request events to JetStream without making responses
wait on NATS and without losing any (spilling to the spool of `adapters.request_event_spool`
while NATS is away), and `NATS_OPTIONS`, the connection options it needs.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import structlog
from nats.aio.client import Client
from nats.js.client import JetStreamContext

from adapters.request_event_spool import (
    SealedBatch,
    SpoolClaim,
    SpoolWriter,
    claim_spool_file,
    release_claim,
    seal,
    spool_files,
)
from adapters.request_events import AUDIT_STREAM, REQUESTS_SUBJECT, RequestEvent

log = structlog.get_logger()

T = TypeVar("T")

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
    """Batched, acknowledged, spill-to-disk publication of request events.

    `publish()` only appends to an in-memory deque. A background task seals the events into
    batches (at most `max_batch` events, and never more bytes than the server accepts in one
    message), sends each batch as ONE JetStream message with a stable `Nats-Msg-Id`
    (`batch_msg_id`: first event id + count) and awaits its PubAck: an acknowledged batch is
    stored (with the stream's `sync: always`, on disk). One batch is in flight at a time; under
    load batches simply fill up while the previous acknowledgement is awaited.

    When NATS is unreachable, a publish fails or an acknowledgement times out (unknown
    outcome), the batch is kept exactly as sealed and sent again with the same `Nats-Msg-Id`,
    which the stream drops as a duplicate within its two-minute window. When more than
    `max_buffer` events wait in memory, all of them go to the spool in `spool_dir` (fsync'ed
    once per spill, written by a single I/O thread), so memory stays bounded. Once NATS answers
    again the spool is delivered first, oldest file first, each file deleted once every batch
    in it is acknowledged; then memory. Spool files left by a process that crashed or shut down
    while NATS was down are delivered by the next publisher started on the same directory.

    `aclose()` sends what it can within its timeout and spools the rest: nothing stays in
    memory. Only a crash of this process (kill -9, OOM) loses the events still in memory — at
    most `max_buffer` plus what arrives during one acknowledgement timeout.

    Delivery is at-least-once with stable ids: a batch may reach the stream twice when its
    re-send falls outside the duplicate window (a long outage after an unknown outcome, or a
    spool file re-delivered after a crash mid-file), always as the whole batch with the same
    event ids. Consumers deduplicate by event `id` — the audit projection stores each id once —
    so the read model is exactly-once.

    Counters: `published` (events acknowledged by the stream, duplicates included),
    `duplicates` (batches the stream acknowledged as already stored), `spooled` (events
    written to the spool), `failures` (failed or timed-out sends); `pending` (events not yet
    acknowledged: `in_memory` plus `spool_pending`, the spooled events this publisher wrote or
    opened), `available` (False from a failed send until the next acknowledged one).

    Not thread-safe: call `publish()` from the event loop that runs `start()`.
    """

    def __init__(
        self,
        connection: Client | JetStreamContext,
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
    ) -> None:
        if isinstance(connection, JetStreamContext):
            self._js, self._nc = connection, connection._nc
        else:
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

        self.published = 0
        self.duplicates = 0
        self.spooled = 0
        self.failures = 0
        self.available = True

        self._buffer: deque[RequestEvent] = deque()
        self._outbox: deque[SealedBatch] = deque()
        self._outbox_events = 0
        self._spilling = 0  # events on their way to the spool
        self._spool_counts: dict[Path, int] = {}
        self._claim: SpoolClaim | None = None
        self._writer = SpoolWriter(spool_dir)
        self._io: ThreadPoolExecutor | None = None
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
        self._spill_retry_at = 0.0
        self._late = False

    # -- public ---------------------------------------------------------------------------------

    @property
    def in_memory(self) -> int:
        return len(self._buffer) + self._outbox_events + self._spilling

    @property
    def spool_pending(self) -> int:
        return sum(self._spool_counts.values())

    @property
    def pending(self) -> int:
        return self.in_memory + self.spool_pending

    def publish(self, event: RequestEvent) -> None:
        """Queue one event. Synchronous and O(1): never waits on, nor raises for, NATS."""
        if self._closed:
            self._write_late(event)
            return
        buffer = self._buffer
        buffer.append(event)
        if self._timer is None and self._loop is not None:
            self._timer = self._loop.call_later(self.flush_interval, self._on_timer)
        if len(buffer) >= self._wake_at:
            self._wake.set()

    async def start(self) -> None:
        """Start the background sender; spool files already in `spool_dir` are delivered too."""
        if self._task is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._io = ThreadPoolExecutor(1, thread_name_prefix="request-event-spool")
        if self.max_message_bytes is None:
            self.max_message_bytes = max(64 * 1024, self._nc.max_payload - _HEADROOM)
        await self._rescan()
        if self._spool_counts:
            log.info("request_events.spool_found", files=len(self._spool_counts))
        self._due = True
        self._wake.set()
        self._task = asyncio.create_task(self._run(), name="request-event-publisher")

    async def flush(self, timeout: float = 10.0) -> None:
        """Wait until every event published so far is acknowledged (tests, operators)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.in_memory or self._spool_counts or self._claim or self._writer.path:
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
            if not (self._buffer or self._outbox):
                break
            await self._spill()
        claim, self._claim = self._claim, None
        if claim is not None:  # its acknowledged batches will be sent again: duplicates only
            await self._in_io(release_claim, claim, False)
            self._spool_counts.pop(claim.path, None)
        await self._in_io(self._writer.seal)
        if self._io is not None:
            self._io.shutdown(wait=True)
            self._io = None
        # From here on the spool is written synchronously, on this thread.
        self._closed = True
        await self._spill()
        self._writer.seal()
        if self.in_memory:
            log.error("request_events.lost_at_shutdown", events=self.in_memory)
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
        if self.in_memory > self.max_buffer and time.monotonic() >= self._spill_retry_at:
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
        while True:
            if not self._outbox:
                buffered = len(self._buffer)
                if not buffered:
                    return
                if buffered < self.max_batch and not (self._due or self._closing):
                    if self._timer is None and self._loop is not None:
                        self._timer = self._loop.call_later(self.flush_interval, self._on_timer)
                    return
                if buffered < self.max_batch:
                    self._due = False
                events = [self._buffer.popleft() for _ in range(min(buffered, self.max_batch))]
                for batch in seal(events, self.max_batch, self._max_bytes):
                    self._outbox.append(batch)
                    self._outbox_events += batch.count
            batch = self._outbox[0]
            await self._send(batch)
            self._outbox.popleft()
            self._outbox_events -= batch.count
            if self.in_memory > self.max_buffer:
                await self._spill()

    async def _deliver_spool(self) -> None:
        loop = asyncio.get_running_loop()
        if self._writer.path is not None:
            await self._in_io(self._writer.seal)
        if loop.time() >= self._rescan_at:
            await self._rescan()
        while self._claim is not None or self._spool_counts:
            if self._closing:
                return
            claim = self._claim
            if claim is None:
                path = min(self._spool_counts)
                claim = await self._in_io(claim_spool_file, path)
                if claim is None:  # another process delivers it, or already did
                    self._spool_counts.pop(path)
                    continue
                self._claim = claim
                self._spool_counts[path] = sum(batch.count for batch in claim.batches)
            while claim.batches:
                batch = claim.batches[0]
                await self._send(batch)
                claim.batches.popleft()
                self._spool_counts[claim.path] -= batch.count
                if self.in_memory > self.max_buffer:
                    await self._spill()
            await self._in_io(release_claim, claim, True)
            self._claim = None
            self._spool_counts.pop(claim.path, None)
            log.info("request_events.spool_delivered", file=claim.path.name)

    async def _rescan(self) -> None:
        self._rescan_at = asyncio.get_running_loop().time() + self.rescan_interval
        held = {self._writer.path, self._claim.path if self._claim else None}
        for path in await self._in_io(spool_files, self.spool_dir):
            if path not in held:
                self._spool_counts.setdefault(path, 0)

    async def _spill(self) -> None:
        """Move everything in memory to the spool, oldest first; keep it if the disk fails."""
        batches, events = list(self._outbox), list(self._buffer)
        if not batches and not events:
            return
        self._outbox.clear()
        self._buffer.clear()
        outbox_events, self._outbox_events = self._outbox_events, 0
        moving = outbox_events + len(events)
        self._spilling += moving
        try:
            path, count = await self._in_io(
                self._writer.append, batches, events, self.max_batch, self._max_bytes
            )
        except OSError as error:
            self._buffer.extendleft(reversed(events))
            self._outbox.extendleft(reversed(batches))
            self._outbox_events += outbox_events
            self._spill_retry_at = time.monotonic() + 1.0
            log.error("request_events.spool_failed", error=str(error), in_memory=self.in_memory)
            return
        finally:
            self._spilling -= moving
        self.spooled += count
        self._spool_counts[path] = self._spool_counts.get(path, 0) + count
        log.info("request_events.spooled", events=count, file=path.name)

    def _write_late(self, event: RequestEvent) -> None:
        """An event published after `aclose()`: straight to the spool, synchronously."""
        if not self._late:
            self._late = True
            log.warning("request_events.published_after_close")
        _, count = self._writer.append([], [event], self.max_batch, self._max_bytes)
        self.spooled += count

    @property
    def _max_bytes(self) -> int:
        return self.max_message_bytes or 1024 * 1024 - _HEADROOM

    async def _in_io(self, fn: Callable[..., T], *args: Any) -> T:
        if self._io is None:
            return fn(*args)
        return await asyncio.get_running_loop().run_in_executor(self._io, fn, *args)
