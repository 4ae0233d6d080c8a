"""Affiliates, tracked events, audit rows and usage reports, as the API answers them."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from icodrip_client._models import fields as f
from icodrip_client._models.fields import Raw


@dataclass(frozen=True, slots=True, kw_only=True)
class Affiliate:
    """An affiliate of the organization in one environment."""

    id: str
    name: str
    email: str | None
    env: str
    created_at: datetime
    raw: Raw = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_dict(cls, raw: Raw) -> Affiliate:
        return cls(
            id=f.text(raw, "id"),
            name=f.text(raw, "name"),
            email=f.opt_text(raw, "email"),
            env=f.text(raw, "env"),
            created_at=f.time(raw, "created_at"),  # Unix seconds on the wire today
            raw=raw,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class TrackedEvent:
    """An event recorded by `POST /v1/events` (`timestamp`: when it happened, the one sent or
    else when it was received; `received_at`: when the API stored it)."""

    id: str
    event: str
    env: str
    timestamp: datetime
    received_at: datetime
    raw: Raw = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_dict(cls, raw: Raw) -> TrackedEvent:
        return cls(**_tracked_fields(raw), raw=raw)


@dataclass(frozen=True, slots=True, kw_only=True)
class ListedTrackedEvent(TrackedEvent):
    """A tracked event as `GET /v1/events` lists it: with its `properties` (as sent) and the
    key that sent it (`key_id`, `key_…`)."""

    properties: Raw
    key_id: str

    @classmethod
    def from_dict(cls, raw: Raw) -> ListedTrackedEvent:
        return cls(
            **_tracked_fields(raw),
            properties=f.obj(raw.get("properties"), "properties"),
            key_id=f.text(raw, "key_id"),
            raw=raw,
        )


def _tracked_fields(raw: Raw) -> dict[str, Any]:
    """The fields every tracked event has, read from its JSON."""
    return {
        "id": f.text(raw, "id"),
        "event": f.text(raw, "event"),
        "env": f.text(raw, "env"),
        "timestamp": f.time(raw, "timestamp"),
        "received_at": f.time(raw, "received_at"),
    }


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditRequest:
    """One request made with a key, and its place in the organization's hash chain."""

    id: str
    occurred_at: datetime
    organization: str | None
    key_id: str | None
    key_hint: str | None
    env: str | None
    method: str
    route: str
    path: str
    status: int
    client_addr: str | None
    user_agent: str | None
    latency_ms: float | None
    request_id: str
    sequence: int | None
    prev_hash: str | None
    row_hash: str | None
    raw: Raw = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_dict(cls, raw: Raw) -> AuditRequest:
        return cls(
            id=f.text(raw, "id"),
            occurred_at=f.time(raw, "occurred_at"),
            organization=f.opt_text(raw, "organization"),
            key_id=f.opt_text(raw, "key_id"),
            key_hint=f.opt_text(raw, "key_hint"),
            env=f.opt_text(raw, "env"),
            method=f.text(raw, "method"),
            route=f.text(raw, "route"),
            path=f.text(raw, "path"),
            status=f.integer(raw, "status"),
            client_addr=f.opt_text(raw, "client_addr"),
            user_agent=f.opt_text(raw, "user_agent"),
            latency_ms=f.opt_float(raw, "latency_ms"),
            request_id=f.text(raw, "request_id"),
            sequence=f.opt_int(raw, "sequence"),
            prev_hash=f.opt_text(raw, "prev_hash"),
            row_hash=f.opt_text(raw, "row_hash"),
            raw=raw,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class UsageCounts:
    """Requests in a bucket or a window; `rate_limited` (429) and `refused` (401, 403) are
    among the `client_errors`; latency percentiles in ms, None without requests."""

    requests: int
    success: int
    client_errors: int
    server_errors: int
    rate_limited: int
    refused: int
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None

    @classmethod
    def from_dict(cls, raw: Raw) -> UsageCounts:
        return cls(
            requests=f.opt_int(raw, "requests") or 0,
            success=f.opt_int(raw, "success") or 0,
            client_errors=f.opt_int(raw, "client_errors") or 0,
            server_errors=f.opt_int(raw, "server_errors") or 0,
            rate_limited=f.opt_int(raw, "rate_limited") or 0,
            refused=f.opt_int(raw, "refused") or 0,
            p50_ms=f.opt_float(raw, "p50_ms"),
            p95_ms=f.opt_float(raw, "p95_ms"),
            p99_ms=f.opt_float(raw, "p99_ms"),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class UsageRow:
    """One key's requests in one bucket starting at `start` (UTC)."""

    start: datetime
    key_id: str
    counts: UsageCounts
    raw: Raw = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_dict(cls, raw: Raw) -> UsageRow:
        return cls(
            start=f.time(raw, "start"),
            key_id=f.text(raw, "key_id"),
            counts=UsageCounts.from_dict(raw),
            raw=raw,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class UsageReport:
    """One page of `GET /v1/usage`: rows by key, then time (sparse), and the window's totals."""

    granularity: str
    start: datetime
    end: datetime
    env: str | None
    totals: UsageCounts
    data: tuple[UsageRow, ...]
    next_cursor: str | None
    raw: Raw = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_dict(cls, raw: Raw) -> UsageReport:
        return cls(
            granularity=f.text(raw, "granularity"),
            start=f.time(raw, "from"),
            end=f.time(raw, "to"),
            env=f.opt_text(raw, "env"),
            totals=UsageCounts.from_dict(f.opt_obj(raw, "totals") or {}),
            data=tuple(UsageRow.from_dict(row) for row in f.objects(raw, "data")),
            next_cursor=f.opt_text(raw, "next_cursor"),
            raw=raw,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class RateLimit:
    """The rate-limit headers of the last response that carried them.

    `limit` requests per window, `remaining` in it, `reset` (Unix seconds) when it ends, and
    `retry_after` seconds when that response was a refusal (429) that said so.
    """

    limit: int | None
    remaining: int | None
    reset: int | None
    retry_after: int | None = None
    policy: str | None = None

    @property
    def reset_at(self) -> datetime | None:
        return None if self.reset is None else f.parse_time(self.reset)
