"""The outbox relay: the event store's notification log → JetStream, exactly once, in order.

The stream itself records how far the relay got: each message's `Nats-Msg-Id` is derived
from its store position, so after any crash the relay reads the stream's last message and
resumes after it. Each publish also names the previous message (`Nats-Expected-Last-Msg-Id`),
so the server refuses a gap or a reordering; on any refusal, timeout or reconnect the relay
re-reads the stream's end and carries on from there. A publish whose ack was lost is sent
again with the same id and the server drops the duplicate. See docs/adr/0003.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence

import structlog
from eventsourcing.persistence import Notification
from nats.js.client import JetStreamContext
from nats.js.errors import NotFoundError

from adapters.key_events import encode, msg_id_for, position_of, subject_for, to_message
from adapters.store_wakeup import StoreWakeup
from application.registry import KeyRegistry

log = structlog.get_logger()

#: Publishes in flight at once; the expected-last-id chain keeps them ordered.
WINDOW = 64


class Relay:
    """Publishes every stored event of `registry` to the key-event stream."""

    def __init__(
        self,
        registry: KeyRegistry,
        js: JetStreamContext,
        *,
        stream: str,
        subject_prefix: str,
        poll_interval: float = 0.05,
        batch_size: int = 500,
        publish_timeout: float = 5.0,
        wakeup: StoreWakeup | None = None,
    ) -> None:
        """Idle, it waits `poll_interval` s or until `wakeup` reports a recorded event
        (PostgreSQL's NOTIFY, ADR 0018; without one it just sleeps)."""
        self.registry = registry
        self.js = js
        self.stream = stream
        self.subject_prefix = subject_prefix
        self.poll_interval = poll_interval
        self.batch_size = batch_size
        self.publish_timeout = publish_timeout
        self.wakeup = wakeup if wakeup is not None else StoreWakeup.sleeping("relay")
        self.position = 0  # the last store position known to be on the stream
        self.published = 0
        self._stopping = asyncio.Event()

    async def last_position_on_stream(self) -> int:
        """The store position of the stream's last message (0 for an empty stream)."""
        info = await self.js.stream_info(self.stream)
        if info.state.last_seq == 0:
            return 0
        try:
            message = await self.js.get_msg(self.stream, seq=info.state.last_seq)
        except NotFoundError:
            return 0
        msg_id = (message.headers or {}).get("Nats-Msg-Id", "")
        return position_of(msg_id)

    async def run(self) -> None:
        """Relay until `stop()`; survives NATS and store outages by resynchronizing."""
        await self._resync()
        log.info("relay.started", stream=self.stream, position=self.position)
        while not self._stopping.is_set():
            try:
                notifications = await asyncio.to_thread(self._next_notifications)
                if not notifications:
                    await self.wakeup.wait(self.poll_interval, until=self._stopping)
                    continue
                await self._publish(notifications)
            except asyncio.CancelledError:
                raise
            except Exception as error:
                log.warning("relay.resync", reason=type(error).__name__, position=self.position)
                await self._sleep(0.5)
                await self._resync_quietly()
        log.info("relay.stopped", position=self.position, published=self.published)

    def stop(self) -> None:
        self._stopping.set()

    async def run_until_caught_up(self, timeout: float = 30.0) -> None:
        """Publish everything stored so far, then return (for tests and one-shot use)."""
        await self._resync()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            notifications = await asyncio.to_thread(self._next_notifications)
            if not notifications:
                return
            if loop.time() > deadline:
                raise TimeoutError(f"relay still behind at position {self.position}")
            await self._publish(notifications)

    def _next_notifications(self) -> Sequence[Notification]:
        return self.registry.recorder.select_notifications(
            start=self.position, limit=self.batch_size, inclusive_of_start=False
        )

    async def _publish(self, notifications: Sequence[Notification]) -> None:
        for start in range(0, len(notifications), WINDOW):
            window = notifications[start : start + WINDOW]
            previous = self.position
            sends = []
            for notification in window:
                message = to_message(
                    notification.id, self.registry.mapper.to_domain_event(notification)
                )
                headers = {"Nats-Msg-Id": msg_id_for(notification.id)}
                if previous:
                    headers["Nats-Expected-Last-Msg-Id"] = msg_id_for(previous)
                sends.append(
                    self.js.publish(
                        subject_for(self.subject_prefix, message),
                        encode(message),
                        timeout=self.publish_timeout,
                        headers=headers,
                    )
                )
                previous = notification.id
            # gather starts the requests in order on one connection; results in order too.
            acks = await asyncio.gather(*sends, return_exceptions=True)
            for notification, ack in zip(window, acks, strict=True):
                if isinstance(ack, BaseException):
                    raise ack
                self.position = notification.id
                self.published += 0 if ack.duplicate else 1

    async def _resync(self) -> None:
        self.position = await self.last_position_on_stream()

    async def _resync_quietly(self) -> None:
        try:
            await self._resync()
        except Exception as error:
            log.warning("relay.stream_unavailable", reason=type(error).__name__)

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), timeout=seconds)
