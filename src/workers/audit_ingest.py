"""Audit ingestion: the JetStream request-event stream → the request-audit model, exactly once.

A durable pull consumer (`icodrip-audit`, explicit acks) on `ICODRIP_AUDIT` /
`icodrip.audit.requests`. Each fetch (up to `batch` messages) is written by ONE transaction of
the store — rows, chain heads, last-used, rejects and the stream position — and only then are
its messages acknowledged. A crash before the commit leaves them unacknowledged, so the server
delivers them again after `ack_wait`; a crash after the commit but before the acks makes the
next delivery a duplicate, which the store recognizes by event id and skips. While the store is
unavailable the same fetch is retried (with `in_progress` acks so the server does not hand it to
another worker meanwhile), and nothing more is fetched: the chains grow in stream order.

The consumer is re-created after a NATS reconnect (pull subscriptions do not survive a server
restart) and when the store is behind what the consumer already acknowledged (a store dropped
to be rebuilt, or restored from a backup): then it resumes just after the store's position,
and what the store already holds is recognized by event id. (With several workers on one
consumer, a batch acknowledged above that position while the ack floor stays below it is not
seen again: ADR 0022, consequences.) Logs state changes only.

Tunables (environment): `ICODRIP_AUDIT_FETCH_BATCH` (256 messages), `ICODRIP_AUDIT_ACK_WAIT`
(30 s), `ICODRIP_AUDIT_MAX_ACK_PENDING` (20000 messages), `ICODRIP_AUDIT_DURABLE`
(`icodrip-audit`). The usage model's worker is the same loop on its own durable consumer
(`icodrip-usage`), tuned by `ICODRIP_USAGE_…` of the same names.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import structlog
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.client import JetStreamContext
from nats.js.errors import NotFoundError

from adapters import nats as nats_adapter
from adapters.request_events import AUDIT_STREAM, REQUESTS_SUBJECT, ensure_audit_stream
from projections.request_audit import Message
from projections.request_audit_query import IngestResult, StreamFedModel

log = structlog.get_logger()

DURABLE = "icodrip-audit"
Model = TypeVar("Model", bound=StreamFedModel)


@dataclass(frozen=True)
class AuditIngestSettings:
    """How the ingest worker consumes the stream (see the module docstring)."""

    durable: str = DURABLE
    # What the logs and the NATS connection call this consumer (`audit`, `usage`).
    label: str = "audit"
    batch: int = 256
    ack_wait: float = 30.0
    max_ack_pending: int = 20_000
    fetch_timeout: float = 1.0
    # Under a steady trickle of events, wait this long for company before writing a fetch
    # smaller than `batch`: fewer, larger transactions (each costs about seven statements)
    # for audit rows that appear at most this much later.
    linger: float = 0.1
    stream: str = AUDIT_STREAM
    subject: str = REQUESTS_SUBJECT
    replicas: int = 1
    # When the store lacks what the consumer acknowledged: read it again (a read model,
    # rebuilt or restored), or go on from the consumer (webhooks: sent is sent).
    replay_when_behind: bool = True

    @classmethod
    def from_env(
        cls, env: Mapping[str, str] | None = None, *, label: str = "audit"
    ) -> AuditIngestSettings:
        """The settings of the `label` consumer: `ICODRIP_<LABEL>_FETCH_BATCH` and so on."""
        env = os.environ if env is None else env
        p = f"ICODRIP_{label.upper()}_"
        return cls(
            durable=env.get(p + "DURABLE") or f"icodrip-{label}",
            label=label,
            batch=int(env.get(p + "FETCH_BATCH") or 256),
            ack_wait=float(env.get(p + "ACK_WAIT") or 30.0),
            max_ack_pending=int(env.get(p + "MAX_ACK_PENDING") or 20_000),
            linger=float(env.get(p + "LINGER_MS") or 100) / 1000,
            replicas=int(env.get("ICODRIP_STREAM_REPLICAS") or 1),
        )


@dataclass
class IngestCounters:
    messages: int = 0
    inserted: int = 0
    duplicates: int = 0
    rejected: int = 0
    position: int = 0


class AuditIngester(Generic[Model]):
    """Moves request events from the audit stream into `store` (the request-audit or the usage
    model, each with its own durable consumer) until `stopping` is set."""

    def __init__(
        self,
        store: Model,
        nats_url: str,
        config: AuditIngestSettings | None = None,
        *,
        on_commit: Callable[[IngestResult], None] | None = None,
        follow: Callable[[Model], Model | None] | None = None,
        ensure_stream: Callable[[JetStreamContext], Awaitable[None]] | None = None,
    ) -> None:
        self.store = store
        # Given the current copy, the live one when a rebuild switched (else None); the
        # follower (`GenerationFollower.newer_than`) owns the copies and closes the old one.
        self.follow = follow
        self._followed_at = 0.0
        self.nats_url = nats_url
        self.config = config or AuditIngestSettings()
        self.on_commit = on_commit
        # Creates the stream when missing: the audit stream's settings unless told otherwise
        # (the webhook worker reads the key stream too).
        self.ensure_stream = ensure_stream
        self.counters = IngestCounters()
        self.state = "starting"
        self._stopping = asyncio.Event()
        self._js: JetStreamContext | None = None  # while connected

    # -- state -----------------------------------------------------------------------------

    def _set_state(self, state: str, **details: Any) -> None:
        if state == self.state:
            return
        previous, self.state = self.state, state
        level = log.info if state in ("running", "stopped", "idle") else log.warning
        level(
            f"{self.config.label}.{state}",
            previous=previous,
            position=self.counters.position,
            **details,
        )

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), timeout=seconds)

    # -- the consumer ---------------------------------------------------------------------

    def _consumer_config(self, start: int) -> ConsumerConfig:
        c = self.config
        return ConsumerConfig(
            durable_name=c.durable,
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE if start > 1 else DeliverPolicy.ALL,
            opt_start_seq=start if start > 1 else None,
            ack_wait=c.ack_wait,
            max_ack_pending=c.max_ack_pending,
            max_deliver=-1,
            filter_subject=c.subject,
        )

    async def _subscribe(self, js: JetStreamContext) -> JetStreamContext.PullSubscription:
        """The pull subscription, after checking the consumer against the store's position."""
        c = self.config
        if self.ensure_stream is not None:
            await self.ensure_stream(js)
        else:
            await ensure_audit_stream(js, name=c.stream, replicas=c.replicas)
        position = await asyncio.to_thread(self.store.position)
        self.counters.position = position
        with contextlib.suppress(NotFoundError):
            info = await js.consumer_info(c.stream, c.durable)
            acked = info.ack_floor.stream_seq if info.ack_floor else 0
            if acked > position and not c.replay_when_behind:
                log.warning(
                    f"{self.config.label}.store_behind_consumer",
                    store_position=position,
                    consumer_acked=acked,
                )
            elif acked > position:
                # The store lacks what the consumer already acknowledged (a rebuilt copy, a
                # restored backup): resume just after what the store has.
                await js.delete_consumer(c.stream, c.durable)
                log.warning(
                    f"{self.config.label}.consumer_reset",
                    store_position=position,
                    consumer_acked=acked,
                )
        return await js.pull_subscribe(
            c.subject,
            durable=c.durable,
            stream=c.stream,
            config=self._consumer_config(start=position + 1),
        )

    async def _followed_switch(self) -> bool:
        """Move to the live copy if a rebuild switched (checked about once a second)."""
        if self.follow is None or time.monotonic() - self._followed_at < 1.0:
            return False
        self._followed_at = time.monotonic()
        try:
            store = await asyncio.to_thread(self.follow, self.store)
        except Exception as error:  # the pointer or the new copy unreadable: next second
            log.warning(f"{self.config.label}.switch_unfollowed", error=type(error).__name__)
            return False
        if store is None:
            return False
        self.store = store  # the follower closes the copy left behind
        log.info(f"{self.config.label}.switched", store=store.name)
        return True

    async def _fetch(self, sub: JetStreamContext.PullSubscription) -> list[Msg]:
        try:
            return await sub.fetch(self.config.batch, timeout=self.config.fetch_timeout)
        except TimeoutError:  # nothing to fetch (nats.errors.TimeoutError is one too)
            return []

    # -- committing -------------------------------------------------------------------------

    async def _commit(self, msgs: list[Msg]) -> bool:
        """Write the messages in one transaction, retrying until done (True) or stopping."""
        messages = []
        for m in msgs:
            metadata = m.metadata
            messages.append(
                Message(metadata.sequence.stream, m.data, (metadata.num_delivered or 1) > 1)
            )
        delay, last_progress = 0.2, time.monotonic()
        while True:
            try:
                result = await asyncio.to_thread(self.store.ingest, messages)
            except Exception as error:
                self._set_state(
                    "ingest_failing", error=type(error).__name__, detail=str(error)[:200]
                )
                if self._stopping.is_set():
                    return False
                await self._sleep(delay)
                delay = min(delay * 2, 5.0)
                if time.monotonic() - last_progress > self.config.ack_wait / 3:
                    last_progress = time.monotonic()
                    for m in msgs:  # still ours: do not let the server redeliver them
                        with contextlib.suppress(Exception):
                            await m.in_progress()
                if self._stopping.is_set():
                    return False
                continue
            counters = self.counters
            counters.messages += len(msgs)
            counters.inserted += result.inserted
            counters.duplicates += result.duplicates
            counters.rejected += result.rejected
            counters.position = result.position
            if result.rejected:
                log.warning(f"{self.config.label}.events_rejected", count=result.rejected)
            if self.on_commit is not None:
                self.on_commit(result)
            return True

    # -- the loop ---------------------------------------------------------------------------

    async def run(self, stopping: asyncio.Event | None = None) -> None:
        """Ingest until `stopping` (or `stop()`); survives NATS and store outages."""
        watcher = asyncio.create_task(self._watch(stopping)) if stopping is not None else None
        try:
            client = await nats_adapter.connect(self.nats_url, name=f"icodrip-{self.config.label}")
        except BaseException:
            if watcher is not None:
                watcher.cancel()
            raise
        try:
            await self._loop(client)
        finally:
            if watcher is not None:
                watcher.cancel()
            self._js = None
            await _close(client)
            counters = self.counters
            self._set_state(
                "stopped",
                messages=counters.messages,
                inserted=counters.inserted,
                duplicates=counters.duplicates,
            )

    async def _watch(self, stopping: asyncio.Event) -> None:
        await stopping.wait()
        self._stopping.set()

    def stop(self) -> None:
        self._stopping.set()

    async def acknowledged_through(self) -> int | None:
        """The consumer's ack floor: every message up to it was written and acknowledged
        (None while not connected, or when the server cannot say)."""
        js = self._js
        if js is None:
            return None
        try:
            info = await js.consumer_info(self.config.stream, self.config.durable)
        except Exception:  # NATS away or the consumer being re-created: ask again later
            return None
        return info.ack_floor.stream_seq if info.ack_floor else 0

    async def _caught_up(self, js: JetStreamContext) -> bool:
        info = await js.consumer_info(self.config.stream, self.config.durable)
        return not info.num_pending and not info.num_ack_pending

    async def _loop(self, client: Client, *, until_caught_up: bool = False) -> None:
        js = self._js = client.jetstream()
        sub: JetStreamContext.PullSubscription | None = None
        reconnects = client.stats["reconnects"]
        prefetch: asyncio.Task[list[Msg]] | None = None
        while not self._stopping.is_set():
            if await self._followed_switch() and sub is not None:
                if prefetch is not None:
                    with contextlib.suppress(BaseException):
                        for m in await prefetch:
                            with contextlib.suppress(Exception):
                                await m.nak()
                    prefetch = None
                with contextlib.suppress(Exception):
                    await sub.unsubscribe()
                sub = None
            try:
                if sub is None or client.stats["reconnects"] != reconnects:
                    if prefetch is not None:
                        prefetch.cancel()
                        prefetch = None
                    if sub is not None:
                        with contextlib.suppress(Exception):
                            await sub.unsubscribe()
                    reconnects = client.stats["reconnects"]
                    sub = await self._subscribe(js)
                    self._set_state("running", durable=self.config.durable)
                msgs = await (prefetch or self._fetch(sub))
                prefetch = None
            except asyncio.CancelledError:
                raise
            except Exception as error:
                prefetch, sub = None, None
                self._set_state("nats_unavailable", error=type(error).__name__)
                await self._sleep(0.5)
                continue
            if not msgs:
                if until_caught_up and await self._caught_up(js):
                    break
                continue
            if len(msgs) < self.config.batch and self.config.linger > 0 and not until_caught_up:
                await self._sleep(self.config.linger)
            # Fetch the next messages while these are written (they stay in stream order).
            prefetch = asyncio.create_task(self._fetch(sub))
            if not await self._commit(msgs):
                for m in msgs:  # stopping: hand them back at once
                    with contextlib.suppress(Exception):
                        await m.nak()
                break
            self._set_state("running", durable=self.config.durable)
            for m in msgs:
                with contextlib.suppress(Exception):
                    await m.ack()
        if prefetch is not None:
            with contextlib.suppress(BaseException):
                for m in await prefetch:
                    with contextlib.suppress(Exception):
                        await m.nak()
        if sub is not None:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def run_until_caught_up(self, timeout: float = 60.0) -> None:
        """Ingest until the consumer has nothing left (for tests, the bench and operators)."""
        client = await nats_adapter.connect(self.nats_url, name=f"icodrip-{self.config.label}")
        try:
            await asyncio.wait_for(self._loop(client, until_caught_up=True), timeout)
        finally:
            self._js = None
            await _close(client)


async def _close(client: Client) -> None:
    """Send what is buffered (acks, naks) and close; not `drain()`, which waits on the
    pull subscriptions' late status messages."""
    with contextlib.suppress(Exception):
        await client.flush(timeout=5)
    with contextlib.suppress(Exception):
        await client.close()
