"""What the webhook worker reads from the streams, as models the ingest loop can feed.

The ingest loop (`workers.audit_ingest.AuditIngester`) hands each fetch of messages to a
model's `ingest` and acknowledges them once it returns; here the "model" is the fan-out into
the delivery log (`workers.webhook_fanout`). Each consumer's stream position is kept in
the delivery log's tracking table (ADR 0023), after the fetch's deliveries are written: a
crash in between hands the fetch over again, and the fan-out, idempotent by delivery id,
enqueues nothing twice.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import msgspec
import structlog
from eventsourcing.persistence import Tracking

from adapters.key_events import decode
from projections.request_audit import Message
from projections.request_audit_query import IngestResult
from projections.usage_events import decode_usage
from projections.webhook_deliveries import DeliveryLog
from workers.webhook_fanout import RATE_LIMIT_QUIET, WebhookFanout

log = structlog.get_logger()

#: A 429 older than this (seconds) when it is read is not told.
STALE_AFTER = 3600.0
#: Seconds before a key whose 429 no endpoint wanted is looked at again.
UNHEARD_RECHECK = 60.0
#: A 429 in a request event's JSON; a message without it needs no decoding at all.
_TOO_MANY = b"429"


class _PositionKept:
    """A stream position kept in the delivery log's tracking table under `name`."""

    name: str
    log: DeliveryLog

    def position(self) -> int:
        return self.log.max_tracking_id(self.name) or 0

    def _keep(self, position: int) -> None:
        if position > self.position():
            self.log.insert_tracking(Tracking(self.name, position))


class KeyEventFanout(_PositionKept):
    """The key stream → deliveries of lifecycle events (and the endpoints' own requests)."""

    def __init__(self, fanout: WebhookFanout, log: DeliveryLog, name: str) -> None:
        self.fanout = fanout
        self.log = log
        self.name = name

    def ingest(self, messages: Sequence[Message]) -> IngestResult:
        enqueued = rejected = 0
        for message in messages:
            try:
                event = decode(message.data)
            except msgspec.DecodeError:
                rejected += 1
                log.warning("webhooks.unreadable_key_event", stream_seq=message.stream_seq)
                continue
            enqueued += self.fanout.on_key_event(event)
        # A key made to expire within a day is told at once, not at the next notice round.
        enqueued += self.fanout.send_due_notices(time.time())
        position = max((m.stream_seq for m in messages), default=0)
        self._keep(position)
        return IngestResult(enqueued, 0, rejected, max(position, self.position()))


class RateLimitFanout(_PositionKept):
    """The request stream → `rate_limit.exceeded`, at most once per key an hour."""

    def __init__(self, fanout: WebhookFanout, log: DeliveryLog, name: str) -> None:
        self.fanout = fanout
        self.log = log
        self.name = name
        # When each key was last told: skips the store for a key refused again and again.
        self._told: dict[str, float] = {}
        # Keys whose 429 found no endpoint to tell, until when not to look again: a storm of
        # 429s costs a store read a minute, and an endpoint added meanwhile hears of the next.
        self._unheard: dict[str, float] = {}

    def ingest(self, messages: Sequence[Message]) -> IngestResult:
        enqueued = 0
        candidates = [m for m in messages if _TOO_MANY in m.data]
        for _, requests in decode_usage(candidates):
            for request in requests:
                if request.status != 429 or not request.key_id or not request.org_id:
                    continue
                if request.occurred_at < time.time() - STALE_AFTER:
                    continue  # history, not news (a first start reads the stream from its start)
                told = self._told.get(request.key_id)
                if told is not None and abs(request.occurred_at - told) < RATE_LIMIT_QUIET:
                    continue
                if self._unheard.get(request.key_id, 0.0) > time.monotonic():
                    continue
                result = self.fanout.on_rate_limited(
                    request.org_id, request.key_id, request.occurred_at, request.event_id
                )
                if result.last_told is None:
                    self._unheard[request.key_id] = time.monotonic() + UNHEARD_RECHECK
                else:
                    self._told[request.key_id] = result.last_told
                enqueued += result.enqueued
        for memory in (self._told, self._unheard):
            if len(memory) > 100_000:
                memory.clear()
        position = max((m.stream_seq for m in messages), default=0)
        self._keep(position)
        return IngestResult(enqueued, 0, 0, max(position, self.position()))
