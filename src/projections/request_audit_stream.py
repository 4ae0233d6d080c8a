"""Reading the JetStream audit stream into a copy of a stream-fed model (request audit, usage).

What a rebuild does to fill its new generation (`catch_up`, to within `SWITCH_WHEN_BEHIND` of
the head; the ingest worker copies the rest once it follows the switch) and what
`icodrip audit replay` does to fill a scratch copy (`copy_stream`): an ephemeral consumer of
its own, the same `ingest` as the worker, progress reported per batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import Callable

from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.client import JetStreamContext

from adapters import nats as nats_adapter
from adapters.request_events import AUDIT_STREAM, REQUESTS_SUBJECT
from adapters.settings import Settings
from projections.rebuilds import ProgressCallback, RebuildProgress
from projections.request_audit import Message
from projections.request_audit_query import StreamFedModel

#: A rebuild switches once fewer messages than this are left to copy (the worker does the rest).
SWITCH_WHEN_BEHIND = 1000


async def copy_stream(
    js: JetStreamContext,
    store: StreamFedModel,
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


async def catch_up(
    settings: Settings, store: StreamFedModel, progress: ProgressCallback | None, batch: int
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
