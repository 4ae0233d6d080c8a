"""The request-audit model as an operable projection: its live generation, status and rebuild.

Generation 1 is `RequestAudit`; a rebuild fills `RequestAudit_g<n>` from the JetStream audit
stream beside the live copy, catches it up to the stream's head, moves the pointer (see
`projections.generations`), then removes the old copy once readers have moved:

- the ingest worker checks the pointer about once a second; on a switch it opens the new
  copy and resumes its consumer just after the new copy's position (duplicates of what it had
  already put in the old copy are recognized by event id, so nothing is lost or doubled);
- the API reads through `LiveRequestAuditStore`, which follows the pointer the same way and
  retries a read once on the new copy when the old one disappears under it.

The rebuilt copy chains each organization's rows in stream order; `icodrip audit verify`
checks it like any other.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import threading
import time
from collections.abc import Callable
from contextlib import suppress
from typing import Any

import structlog
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.client import JetStreamContext

from adapters import nats as nats_adapter
from adapters.request_events import AUDIT_STREAM, REQUESTS_SUBJECT
from adapters.settings import Settings
from projections.catalog import register_projection
from projections.generations import (
    POINTER_CHECK_SECONDS,
    Generation,
    GenerationStore,
    open_generation_store,
)
from projections.rebuilds import (
    DEFAULT_GRACE_SECONDS,
    ProgressCallback,
    ProjectionStatus,
    RebuildProgress,
    RebuildReport,
)
from projections.request_audit import Message
from projections.request_audit_query import DEFAULT_NAME, RequestAuditStore
from projections.request_audit_store import open_request_audit_store

log = structlog.get_logger()

REQUEST_AUDIT = "request-audit"
#: A rebuild switches once fewer messages than this are left to copy (the worker does the rest).
SWITCH_WHEN_BEHIND = 1000


def live_audit_name(settings: Settings, pointers: GenerationStore | None = None) -> str:
    """The name of the live copy of the audit model (`RequestAudit` until a rebuild)."""
    store = pointers or open_generation_store(settings)
    try:
        return store.live(REQUEST_AUDIT, DEFAULT_NAME).view_name
    finally:
        if pointers is None:
            store.close()


def open_live_audit_store(settings: Settings) -> RequestAuditStore:
    """The live copy of the audit model, opened on its own (not following later switches)."""
    return open_request_audit_store(settings, live_audit_name(settings))


class LiveRequestAuditStore:
    """The audit model's live copy for readers, following a rebuild's switch."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        self._store: RequestAuditStore | None = None
        self._pointers: GenerationStore | None = None
        self._checked = 0.0

    @property
    def name(self) -> str:
        return self._current().name

    def _current(self, *, force: bool = False) -> RequestAuditStore:
        with self._lock:
            now = time.monotonic()
            if (
                self._store is not None
                and not force
                and now - self._checked < POINTER_CHECK_SECONDS
            ):
                return self._store
            self._checked = now
            if self._pointers is None:
                self._pointers = open_generation_store(self.settings)
            name = live_audit_name(self.settings, self._pointers)
            if self._store is None or self._store.name != name:
                previous, self._store = self._store, open_request_audit_store(self.settings, name)
                if previous is not None:
                    with suppress(Exception):
                        previous.close()
            return self._store

    def _read(self, call: Callable[[RequestAuditStore], Any]) -> Any:
        store = self._current()
        try:
            return call(store)
        except Exception:
            # The copy may have been removed by a rebuild that switched meanwhile.
            fresh = self._current(force=True)
            if fresh is store:
                raise
            return call(fresh)

    def __getattr__(self, attribute: str) -> Any:
        # Every read of the RequestAuditStore protocol goes to the live copy.
        return lambda *args, **kwargs: self._read(
            lambda store: getattr(store, attribute)(*args, **kwargs)
        )

    def close(self) -> None:
        with self._lock:
            for held in (self._store, self._pointers):
                if held is not None:
                    with suppress(Exception):
                        held.close()
            self._store, self._pointers = None, None


# -- copying the stream into a store -----------------------------------------------------------


async def copy_stream(
    js: JetStreamContext,
    store: RequestAuditStore,
    *,
    start: int,
    last: int,
    on_batch: Callable[[int, int], None],
    batch: int = 256,
) -> int:
    """Ingest stream messages `start`..`last` into `store`; the number of events written."""
    if last < start:
        return 0
    name = f"icodrip-audit-copy-{secrets.token_hex(4)}"
    sub = await js.pull_subscribe(
        REQUESTS_SUBJECT,
        durable=name,
        stream=AUDIT_STREAM,
        config=ConsumerConfig(
            durable_name=name,
            ack_policy=AckPolicy.NONE,
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
            opt_start_seq=max(1, start),
            filter_subject=REQUESTS_SUBJECT,
            inactive_threshold=300.0,
        ),
    )
    events, position = 0, start - 1
    try:
        while position < last:
            try:
                msgs = await sub.fetch(batch, timeout=2.0)
            except TimeoutError:
                info = await js.consumer_info(AUDIT_STREAM, name)
                if not info.num_pending:
                    break
                continue
            messages = [
                Message(m.metadata.sequence.stream, m.data)
                for m in msgs
                if m.metadata.sequence.stream <= last
            ]
            position = max(m.metadata.sequence.stream for m in msgs)
            if messages:
                result = await asyncio.to_thread(store.ingest, messages)
                events += result.inserted + result.duplicates
            on_batch(events, min(position, last))
    finally:
        with contextlib.suppress(Exception):
            await js.delete_consumer(AUDIT_STREAM, name)
    return events


async def _catch_up(
    settings: Settings, store: RequestAuditStore, progress: ProgressCallback | None, batch: int
) -> int:
    """Copy the stream into `store` until it is within SWITCH_WHEN_BEHIND of the head."""
    assert settings.nats_url is not None
    client = await nats_adapter.connect(settings.nats_url, name="icodrip-audit-rebuild", wait=10)
    started = time.monotonic()
    total = 0
    try:
        js = client.jetstream()
        first = (await js.stream_info(AUDIT_STREAM)).state.first_seq
        while True:
            head = (await js.stream_info(AUDIT_STREAM)).state.last_seq
            position = await asyncio.to_thread(store.position)
            base = total

            def on_batch(events: int, at: int, base: int = base, head: int = head) -> None:
                if progress is not None:
                    elapsed = time.monotonic() - started
                    progress(RebuildProgress(base + events, at, first - 1, head, elapsed))

            total += await copy_stream(
                js, store, start=position + 1, last=head, on_batch=on_batch, batch=batch
            )
            head = (await js.stream_info(AUDIT_STREAM)).state.last_seq
            position = await asyncio.to_thread(store.position)
            # Close enough: the worker copies the rest once it follows the switch.
            if head - position < SWITCH_WHEN_BEHIND or total == base:
                return total
    finally:
        with contextlib.suppress(Exception):
            await client.close()


async def stream_head(settings: Settings) -> int:
    """The audit stream's last sequence number."""
    assert settings.nats_url is not None
    client = await nats_adapter.connect(settings.nats_url, name="icodrip-audit-status", wait=5)
    try:
        return int((await client.jetstream().stream_info(AUDIT_STREAM)).state.last_seq)
    finally:
        with contextlib.suppress(Exception):
            await client.close()


def _drop(settings: Settings, name: str) -> None:
    store = open_request_audit_store(settings, name)
    try:
        store.drop()
    finally:
        with suppress(Exception):
            store.close()


class RequestAuditProjection:
    """Request events on JetStream → the hash-chained request-audit model."""

    name = REQUEST_AUDIT
    description = "request events → audit rows, hash chains and last use per key"

    def status(self, settings: Settings) -> ProjectionStatus:
        store = open_generation_store(settings)
        try:
            record = store.record(REQUEST_AUDIT, DEFAULT_NAME)
        finally:
            store.close()
        audit = open_request_audit_store(settings, record.live.view_name)
        try:
            position, rows = audit.position(), audit.count()
        finally:
            audit.close()
        details: dict[str, Any] = {"stream": AUDIT_STREAM}
        head = position
        if settings.nats_url:
            try:
                head = asyncio.run(stream_head(settings))
            except Exception as error:
                details["stream_error"] = type(error).__name__
        else:
            details["stream_error"] = "ICODRIP_NATS_URL is not set"
        return ProjectionStatus.of(
            self.name,
            f"stream {AUDIT_STREAM}",
            record,
            position=position,
            head=head,
            rows=rows,
            details=details,
        )

    def rebuild(
        self,
        settings: Settings,
        *,
        progress: ProgressCallback | None = None,
        grace: float = DEFAULT_GRACE_SECONDS,
        batch_size: int = 1000,
        force: bool = False,
    ) -> RebuildReport:
        """Fill the next generation from the stream beside the live one, switch, remove the old."""
        if not settings.nats_url:
            raise RuntimeError("ICODRIP_NATS_URL is not set (the stream to rebuild from)")
        pointers = open_generation_store(settings)
        try:
            previous = pointers.live(REQUEST_AUDIT, DEFAULT_NAME)
            target = pointers.claim(REQUEST_AUDIT, DEFAULT_NAME, force=force)
            new: RequestAuditStore | None = None
            started = time.monotonic()
            try:
                _drop(settings, target.view_name)  # leftovers of a rebuild that died
                new = open_request_audit_store(settings, target.view_name)
                events = asyncio.run(
                    _catch_up(settings, new, progress, batch=max(1, min(batch_size, 1000)))
                )
                live: Generation = pointers.switch(REQUEST_AUDIT, expected=previous, new=target)
            except BaseException as error:
                pointers.abandon(REQUEST_AUDIT, DEFAULT_NAME, target.number, error)
                if new is not None:
                    with suppress(Exception):
                        new.drop()
                raise
            seconds = time.monotonic() - started
            position, rows = new.position(), new.count()
            new.close()
            # The worker and API processes re-check the pointer about once a second.
            time.sleep(max(0.0, grace))
            _drop(settings, previous.view_name)
            with suppress(Exception):
                pointers.clear_error(REQUEST_AUDIT)
            log.info("request_audit.rebuilt", generation=live.number, events=events, rows=rows)
            return RebuildReport(
                name=self.name,
                previous=previous,
                live=live,
                events=events,
                position=position,
                rows=rows,
                seconds=seconds,
                removed=previous.view_name,
            )
        finally:
            pointers.close()


register_projection(RequestAuditProjection())
