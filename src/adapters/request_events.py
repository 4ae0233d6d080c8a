"""Request events on the wire: one per API request that presented a key, batched per message.

Every batch is one JetStream message on `REQUESTS_SUBJECT` (`icodrip.audit.requests`), JSON
(`RequestEventBatch`), with the header `Nats-Msg-Id` = `batch_msg_id(...)`, in the stream
`AUDIT_STREAM` (`ICODRIP_AUDIT`, subjects `icodrip.audit.>`). The subject carries no org id:
the audit projection filters by the fields of the events.

Delivery is at-least-once with stable ids: a batch re-sent after an unknown outcome keeps its
`Nats-Msg-Id` (the stream drops it within its two-minute duplicate window) and every event
keeps its `id`, so the audit read model, which stores each event id once, is exactly-once.
An event never carries a key: for 401s only the key's hint (`key_hint`), if well-formed.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import time
from collections.abc import Sequence

import msgspec
import structlog
from nats.js.api import DiscardPolicy, StorageType, StreamConfig
from nats.js.client import JetStreamContext
from nats.js.errors import NotFoundError

log = structlog.get_logger()

AUDIT_STREAM = "ICODRIP_AUDIT"
AUDIT_SUBJECTS = "icodrip.audit.>"
REQUESTS_SUBJECT = "icodrip.audit.requests"
WIRE_VERSION = 1
DUPLICATE_WINDOW_SECONDS = 120.0


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
    """The payload of one JetStream message: consecutive events of one API process."""

    v: int = WIRE_VERSION
    events: list[RequestEvent]


def batch_msg_id(events: Sequence[RequestEvent]) -> str:
    """The `Nats-Msg-Id` of a batch: the same batch re-sent is the same id."""
    return f"req-{events[0].id}-{len(events)}"


# -- event ids ------------------------------------------------------------------------------
# 32 hex digits: 12 of Unix milliseconds, 12 of a random per-process node, 8 of a counter
# that starts at a random value. They sort by creation time (to the millisecond), are unique
# across processes (the node is drawn again in a forked child) and cost well under 1 µs.


def _fresh_node() -> tuple[str, itertools.count[int]]:
    return os.urandom(6).hex(), itertools.count(int.from_bytes(os.urandom(4), "big"))


_node, _counter = _fresh_node()


def _reseed_after_fork() -> None:
    global _node, _counter
    _node, _counter = _fresh_node()


os.register_at_fork(after_in_child=_reseed_after_fork)


def new_event_id() -> str:
    """A unique, time-ordered id (32 lowercase hex digits, uuid7-like)."""
    return f"{time.time_ns() // 1_000_000:012x}{_node}{next(_counter) & 0xFFFFFFFF:08x}"


# -- the stream -----------------------------------------------------------------------------


async def ensure_audit_stream(
    js: JetStreamContext,
    *,
    max_age_days: float | None = None,
    max_bytes: int | None = None,
    name: str = AUDIT_STREAM,
    subjects: Sequence[str] = (AUDIT_SUBJECTS,),
    replicas: int = 1,
) -> None:
    """Create the audit stream if missing (idempotent, safe to race with other processes).

    File storage; `discard=new` so that a full stream refuses new events (the publisher keeps
    and retries them) instead of silently dropping old history; no purge, no delete; a
    two-minute duplicate window for `Nats-Msg-Id`. Limits given here are applied to an
    existing stream too; other settings of an existing stream are left as an operator set them.
    """
    max_age = max_age_days * 86_400 if max_age_days is not None else None
    try:
        info = await js.stream_info(name)
    except NotFoundError:
        await js.add_stream(
            StreamConfig(
                name=name,
                subjects=list(subjects),
                storage=StorageType.FILE,
                discard=DiscardPolicy.NEW,
                deny_delete=True,
                deny_purge=True,
                duplicate_window=DUPLICATE_WINDOW_SECONDS,
                max_age=max_age,
                max_bytes=max_bytes,
                num_replicas=replicas,  # 3 on a NATS cluster (ICODRIP_STREAM_REPLICAS)
            )
        )
        log.info("request_events.stream_created", stream=name)
        return
    current = info.config
    wanted = dataclasses.replace(
        current,
        max_age=current.max_age if max_age is None else max_age,
        max_bytes=current.max_bytes if max_bytes is None else max_bytes,
    )
    if abs((wanted.max_age or 0) - (current.max_age or 0)) > 1e-3 or (
        wanted.max_bytes != current.max_bytes
    ):
        await js.update_stream(wanted)
        log.info(
            "request_events.stream_limits_updated",
            stream=name,
            max_age=wanted.max_age,
            max_bytes=wanted.max_bytes,
        )
    if not (current.deny_purge and current.deny_delete and current.discard == DiscardPolicy.NEW):
        log.warning("request_events.stream_not_protected", stream=name)
