"""Request events on the wire: one per request that presented a key, batched per message.

Published on `icodrip.audit.requests` into the `ICODRIP_AUDIT` stream. Delivery is
at-least-once at the NATS level with stable ids (a re-sent batch has the same `Nats-Msg-Id`
and every event its own `id`); the audit read model stores each event id once.
"""

from __future__ import annotations

import os
import time

import msgspec
from nats.js.api import DiscardPolicy, StorageType, StreamConfig
from nats.js.client import JetStreamContext
from nats.js.errors import NotFoundError

AUDIT_STREAM = "ICODRIP_AUDIT"
AUDIT_SUBJECTS = "icodrip.audit.>"
REQUESTS_SUBJECT = "icodrip.audit.requests"
WIRE_VERSION = 1


class RequestEvent(msgspec.Struct, frozen=True, kw_only=True):
    """What happened to one request that presented a key (never the key itself)."""

    v: int = WIRE_VERSION
    id: str
    request_id: str
    key_id: str | None
    key_hint: str | None
    org_id: str | None
    env: str | None
    method: str
    route: str
    path: str
    status: int
    client_addr: str | None
    user_agent: str | None
    latency_ms: float
    occurred_at: float


class RequestEventBatch(msgspec.Struct, frozen=True, kw_only=True):
    v: int = WIRE_VERSION
    events: list[RequestEvent]


_ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz"
_counter = [0]
_node = os.urandom(4).hex()


def new_event_id() -> str:
    """A unique id that sorts by creation time: milliseconds, process node, counter."""
    _counter[0] = (_counter[0] + 1) & 0xFFFFFF
    return f"{int(time.time() * 1000):012x}{_node}{_counter[0]:06x}"


def batch_msg_id(batch: RequestEventBatch) -> str:
    """A stable id for a batch: the same batch re-sent is dropped by the stream."""
    return f"req-{batch.events[0].id}-{len(batch.events)}"


async def ensure_audit_stream(
    js: JetStreamContext,
    *,
    max_age_days: float | None = None,
    max_bytes: int | None = None,
) -> None:
    """The audit stream: file storage, history kept, never silently trimmed, no purge/delete."""
    config = StreamConfig(
        name=AUDIT_STREAM,
        subjects=[AUDIT_SUBJECTS],
        storage=StorageType.FILE,
        discard=DiscardPolicy.NEW,
        deny_delete=True,
        deny_purge=True,
        duplicate_window=120.0,
        max_age=(max_age_days * 86400) if max_age_days else None,
        max_bytes=max_bytes or -1,
    )
    try:
        await js.stream_info(AUDIT_STREAM)
    except NotFoundError:
        await js.add_stream(config)
