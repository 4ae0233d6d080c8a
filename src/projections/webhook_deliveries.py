"""The webhook delivery log's shapes and promises: deliveries, attempts, expiry notices.

One webhook worker (or several) writes the log; the API and the dashboard read it. Each
`DeliveryLog` method is one transaction. A delivery is claimed by leasing it: it stays
`pending` with `leased_until` set, so a worker killed mid-delivery leaves it to be claimed
again once the lease has passed. An endpoint has at most one delivery leased at a time, so
its deliveries go out in order. The library's tracking table beside the log keeps the
webhook worker's stream positions (ADR 0023). Backends: `projections.webhook_deliveries_sqlite`
and `projections.webhook_deliveries_postgres`, opened by `projections.webhook_delivery_store`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol
from uuid import UUID

#: The log's fixed name: its SQLite file and its PostgreSQL tables' prefix.
NAME = "webhook_deliveries"
#: The most of a response an attempt keeps (nothing else of the response is stored).
EXCERPT_LIMIT = 256
#: The most of an attempt's error kept (an exception's text can be long).
ERROR_LIMIT = 512

DELIVERY_COLUMNS = (
    "id",
    "endpoint_id",
    "org_id",
    "msg_id",
    "event_type",
    "payload",
    "created_at",
    "next_attempt_at",
    "give_up_at",
    "status",
    "attempts",
    "last_attempt_at",
    "last_status_code",
    "last_error",
)
DELIVERY_COLUMN_LIST = ", ".join(DELIVERY_COLUMNS)
ATTEMPT_COLUMNS = (
    "delivery_id",
    "number",
    "at",
    "status_code",
    "duration_ms",
    "error",
    "excerpt",
)
ATTEMPT_COLUMN_LIST = ", ".join(ATTEMPT_COLUMNS)
NOTICE_COLUMN_LIST = "key_id, org_id, kind, due_at, expires_at"


class DeliveryStatus(StrEnum):
    """Where a delivery stands."""

    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # gave up: retries exhausted


@dataclass(frozen=True, slots=True)
class NewDelivery:
    """A delivery to enqueue: one event for one endpoint."""

    id: str  # "whd_" + 32 hex, derived from the source event and the endpoint
    endpoint_id: UUID
    org_id: UUID
    msg_id: str  # the Standard Webhooks webhook-id, shared by every endpoint of the event
    event_type: str
    payload: bytes  # the exact body sent on every attempt
    created_at: float
    next_attempt_at: float
    give_up_at: float


@dataclass(frozen=True, slots=True)
class Delivery:
    """A delivery as the log holds it (`next_attempt_at` is None once it succeeded or failed)."""

    id: str
    endpoint_id: UUID
    org_id: UUID
    msg_id: str
    event_type: str
    payload: bytes
    created_at: float
    next_attempt_at: float | None
    give_up_at: float
    status: DeliveryStatus
    attempts: int
    last_attempt_at: float | None
    last_status_code: int | None
    last_error: str | None


@dataclass(frozen=True, slots=True)
class Attempt:
    """One try at a delivery (1-based `number`), with a short excerpt of the response."""

    delivery_id: str
    number: int
    at: float
    status_code: int | None
    duration_ms: float
    error: str | None
    excerpt: str

    def __post_init__(self) -> None:
        # Only an excerpt of a response may ever be stored, whatever the caller passes.
        if len(self.excerpt) > EXCERPT_LIMIT:
            object.__setattr__(self, "excerpt", self.excerpt[:EXCERPT_LIMIT])
        if self.error is not None and len(self.error) > ERROR_LIMIT:
            object.__setattr__(self, "error", self.error[:ERROR_LIMIT])


@dataclass(frozen=True, slots=True)
class ExpiryNotice:
    """An `api_key.expiring` notice due at `due_at` ("7d" or "1d" before `expires_at`)."""

    key_id: UUID
    org_id: UUID
    kind: str
    due_at: float
    expires_at: float


def as_uuid(value: Any) -> UUID:
    """A UUID read back from either backend (PostgreSQL: uuid; SQLite: its text)."""
    return value if isinstance(value, UUID) else UUID(str(value))


def delivery_of(row: Sequence[Any]) -> Delivery:
    """The delivery in a row of `DELIVERY_COLUMNS`."""
    (id_, endpoint, org, msg_id, event_type, payload, created, next_at, give_up, *rest) = row
    status, attempts, last_at, last_code, last_error = rest
    return Delivery(
        id=id_,
        endpoint_id=as_uuid(endpoint),
        org_id=as_uuid(org),
        msg_id=msg_id,
        event_type=event_type,
        payload=bytes(payload),
        created_at=float(created),
        next_attempt_at=None if next_at is None else float(next_at),
        give_up_at=float(give_up),
        status=DeliveryStatus(status),
        attempts=int(attempts),
        last_attempt_at=None if last_at is None else float(last_at),
        last_status_code=None if last_code is None else int(last_code),
        last_error=last_error,
    )


def attempt_of(row: Sequence[Any]) -> Attempt:
    """The attempt in a row of `ATTEMPT_COLUMNS`."""
    delivery_id, number, at, code, duration, error, excerpt = row
    status_code = None if code is None else int(code)
    return Attempt(
        delivery_id, int(number), float(at), status_code, float(duration), error, excerpt
    )


def attempt_values(a: Attempt) -> tuple[Any, ...]:
    """The attempt's values in `ATTEMPT_COLUMNS` order."""
    return (a.delivery_id, a.number, a.at, a.status_code, a.duration_ms, a.error, a.excerpt)


def outcome_values(a: Attempt, status: DeliveryStatus, next_at: float | None) -> tuple[Any, ...]:
    """What an attempt sets on its delivery: status, attempts, last_attempt_at,
    last_status_code, last_error, next_attempt_at."""
    return (status.value, a.number, a.at, a.status_code, a.error, next_at)


def notice_of(row: Sequence[Any]) -> ExpiryNotice:
    """The notice in a row of `NOTICE_COLUMN_LIST`."""
    key_id, org_id, kind, due_at, expires_at = row
    return ExpiryNotice(as_uuid(key_id), as_uuid(org_id), kind, float(due_at), float(expires_at))


def by_claim_order(deliveries: Sequence[Delivery]) -> list[Delivery]:
    """Deliveries earliest due first (ties: created_at, id), as `claim_due` hands them out."""
    return sorted(deliveries, key=lambda d: (d.next_attempt_at or 0.0, d.created_at, d.id))


def group_attempts(ids: Sequence[str], attempts: Sequence[Attempt]) -> dict[str, list[Attempt]]:
    """Each of `ids` with its attempts, oldest first (an empty list for none)."""
    found: dict[str, list[Attempt]] = {delivery_id: [] for delivery_id in ids}
    for attempt in sorted(attempts, key=lambda a: (a.delivery_id, a.number)):
        found.setdefault(attempt.delivery_id, []).append(attempt)
    return found


def zero_counts(endpoint_ids: Sequence[UUID]) -> dict[UUID, dict[str, int]]:
    """Every endpoint with a zero count of each status (filled in from the rows)."""
    return {endpoint: {status.value: 0 for status in DeliveryStatus} for endpoint in endpoint_ids}


class StreamPosition(Protocol):
    """A stream position to keep: the library's `Tracking` (not imported: it brings I/O)."""

    @property
    def application_name(self) -> str: ...

    @property
    def notification_id(self) -> int: ...


class DeliveryLog(Protocol):
    """The delivery log on either backend; each method is one transaction."""

    def enqueue(self, deliveries: Sequence[NewDelivery]) -> int:
        """Insert the deliveries whose ids are new; how many were."""
        ...

    def claim_due(self, now: float, *, lease: float, limit: int) -> list[Delivery]:
        """Lease up to `limit` due deliveries, earliest first, one per endpoint and none of an
        endpoint that has one leased already."""
        ...

    def record_attempt(
        self, attempt: Attempt, *, status: DeliveryStatus, next_attempt_at: float | None
    ) -> None:
        """Record an attempt, move its delivery on (releasing the lease), track the endpoint's
        health; nothing if that attempt number was recorded before."""
        ...

    def failing_since(self, endpoint_id: UUID) -> float | None:
        """When the endpoint's current run of failures began (None: not failing)."""
        ...

    def last_told(self, key_id: UUID) -> float | None:
        """When the key's rate limiting was last told (None: never)."""
        ...

    def set_told(self, key_id: UUID, at: float) -> None:
        """Remember that the key's rate limiting was told at `at` (a later time wins)."""
        ...

    def forget_endpoint_health(self, endpoint_id: UUID) -> None:
        """Forget the endpoint's run of failures (it was re-enabled)."""
        ...

    def retry(self, delivery_id: str, now: float, *, give_up_at: float) -> bool:
        """Make the delivery pending and due now, until `give_up_at`; False if there is none."""
        ...

    def get(self, delivery_id: str) -> Delivery | None:
        """The delivery, or None."""
        ...

    def deliveries(
        self,
        endpoint_id: UUID,
        *,
        limit: int,
        before: tuple[float, str] | None = None,
        status: DeliveryStatus | None = None,
    ) -> list[Delivery]:
        """A page of the endpoint's deliveries, newest first, after the cursor (created_at, id)."""
        ...

    def attempts(self, delivery_ids: Sequence[str]) -> dict[str, list[Attempt]]:
        """Each of the deliveries' attempts, oldest first (every id present, maybe empty)."""
        ...

    def counts(self, endpoint_ids: Sequence[UUID]) -> dict[UUID, dict[str, int]]:
        """Deliveries per status for each endpoint (every endpoint present, zeros for none)."""
        ...

    def schedule_notices(
        self, key_id: UUID, org_id: UUID, expires_at: float, notices: Sequence[tuple[str, float]]
    ) -> None:
        """Replace the key's expiry notices with these (kind, due_at)."""
        ...

    def cancel_notices(self, key_id: UUID) -> None:
        """Remove the key's expiry notices."""
        ...

    def due_notices(self, now: float, limit: int) -> list[ExpiryNotice]:
        """Up to `limit` notices due by `now`, earliest first."""
        ...

    def drop_notice(self, notice: ExpiryNotice) -> None:
        """Remove exactly this notice (not one rescheduled for another expiry meanwhile)."""
        ...

    def prune(self, before: float) -> int:
        """Delete succeeded and failed deliveries created before `before`, and their attempts."""
        ...

    def max_tracking_id(self, application_name: str) -> int | None:
        """The stream position kept under `application_name` (None: none yet)."""
        ...

    def insert_tracking(self, tracking: StreamPosition) -> None:
        """Keep a stream position (the library's tracking table)."""
        ...

    def drop(self) -> None:
        """Remove the log (tests, resets)."""
        ...

    def close(self) -> None:
        """Release the connections."""
        ...
