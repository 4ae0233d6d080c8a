"""Publishing request events without making the response wait, and without losing any.

`publish()` only appends to memory. A background task sends batches as single JetStream
messages and awaits each acknowledgement. While NATS is unreachable, batches wait (each
keeping its `Nats-Msg-Id`, so a re-send of a batch that did land is dropped); past
`max_buffer` events they spill to fsync'ed files in `spool_dir`, which are delivered first
when NATS is back — also after a restart of the process.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections import deque
from contextlib import suppress
from pathlib import Path

import msgspec
import structlog
from nats.js.client import JetStreamContext

from adapters.request_events import (
    REQUESTS_SUBJECT,
    RequestEvent,
    RequestEventBatch,
    batch_msg_id,
)

log = structlog.get_logger()

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(RequestEventBatch)


class RequestEventPublisher:
    """Batched, acknowledged, spill-to-disk publication of request events."""

    def __init__(
        self,
        js: JetStreamContext,
        *,
        spool_dir: Path,
        subject: str = REQUESTS_SUBJECT,
        max_batch: int = 256,
        flush_interval: float = 0.005,
        max_buffer: int = 100_000,
        ack_timeout: float = 2.0,
    ) -> None:
        self.js = js
        self.spool_dir = spool_dir
        self.subject = subject
        self.max_batch = max_batch
        self.flush_interval = flush_interval
        self.max_buffer = max_buffer
        self.ack_timeout = ack_timeout
        self.published = 0
        self.spooled = 0
        self._buffer: deque[RequestEvent] = deque()
        self._retry: RequestEventBatch | None = None
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._available = True
        self._wake = asyncio.Event()

    @property
    def pending(self) -> int:
        """Events not yet acknowledged by the stream, in memory."""
        return len(self._buffer) + (len(self._retry.events) if self._retry else 0)

    def publish(self, event: RequestEvent) -> None:
        """Queue an event; never blocks, never raises on NATS trouble."""
        self._buffer.append(event)
        if len(self._buffer) >= self.max_batch:
            self._wake.set()

    async def start(self) -> None:
        self.spool_dir.mkdir(parents=True, exist_ok=True)
        self._task = asyncio.create_task(self._run())

    async def aclose(self, timeout: float = 5.0) -> None:
        """Deliver what can be delivered within `timeout`; spool the rest to disk."""
        self._closing = True
        self._wake.set()
        if self._task is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._task, timeout)
        if self._retry is not None:
            self._spool(self._retry)
            self._retry = None
        self._spool_buffer(keep=0)

    async def flush(self, timeout: float = 10.0) -> None:
        """Wait until everything queued so far is acknowledged (tests and shutdown)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.pending or self._spool_files():
            if loop.time() > deadline:
                raise TimeoutError(f"{self.pending} request events still pending")
            self._wake.set()
            await asyncio.sleep(0.01)

    async def _run(self) -> None:
        while True:
            with suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.flush_interval)
            self._wake.clear()
            try:
                await self._deliver_spool()
                while self._retry is not None or self._buffer:
                    batch = self._retry or self._take_batch()
                    self._retry = batch
                    await self._send(batch)
                    self._retry = None
                self._set_available(True)
            except Exception as error:
                self._set_available(False, error)
                if self.pending > self.max_buffer:
                    self._spool_buffer(keep=self.max_buffer // 2)
                if self._closing:
                    return
                await asyncio.sleep(0.25)
                continue
            if self._closing:
                return

    def _take_batch(self) -> RequestEventBatch:
        count = min(self.max_batch, len(self._buffer))
        return RequestEventBatch(events=[self._buffer.popleft() for _ in range(count)])

    async def _send(self, batch: RequestEventBatch) -> None:
        await self.js.publish(
            self.subject,
            _encoder.encode(batch),
            timeout=self.ack_timeout,
            headers={"Nats-Msg-Id": batch_msg_id(batch)},
        )
        self.published += len(batch.events)

    def _set_available(self, available: bool, error: Exception | None = None) -> None:
        if available != self._available:
            self._available = available
            if available:
                log.info("request_events.nats_restored")
            else:
                log.warning(
                    "request_events.nats_unavailable",
                    error=type(error).__name__ if error else None,
                    pending=self.pending,
                )

    # -- the spool ---------------------------------------------------------------------

    def _spool_files(self) -> list[Path]:
        return sorted(self.spool_dir.glob("*.batch")) if self.spool_dir.exists() else []

    def _spool(self, batch: RequestEventBatch) -> None:
        self.spool_dir.mkdir(parents=True, exist_ok=True)
        path = self.spool_dir / f"{batch.events[0].id}-{len(batch.events)}.batch"
        tmp = path.with_suffix(".tmp")
        with tmp.open("wb") as f:
            f.write(_encoder.encode(batch))
            f.flush()
            os.fsync(f.fileno())
        tmp.rename(path)
        self.spooled += len(batch.events)

    def _spool_buffer(self, keep: int) -> None:
        """Move the oldest buffered events to disk until at most `keep` stay in memory."""
        while len(self._buffer) > keep:
            count = min(self.max_batch * 16, len(self._buffer) - keep)
            self._spool(RequestEventBatch(events=[self._buffer.popleft() for _ in range(count)]))

    async def _deliver_spool(self) -> None:
        for path in self._spool_files():
            batch = _decoder.decode(path.read_bytes())
            for start in range(0, len(batch.events), self.max_batch):
                part = RequestEventBatch(events=batch.events[start : start + self.max_batch])
                await self._send(part)
            path.unlink()
