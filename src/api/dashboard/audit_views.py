"""What the audit log shows: recent requests with the name of the key that made each.

A request looks as the API's audit object says
(`api.routes.audit_requests.audit_request_view`): ids, times and statuses are formatted there
once, and read here as typed values.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

import msgspec

from api.dashboard.views import Choice, View
from api.routes.audit_requests import audit_request_view
from application.key_management import OrgKeys
from domain.ids import format_key_id
from projections.request_audit import AuditRow

#: Audit periods, in seconds; 0 = all time.
PERIOD_CHOICES = (
    Choice(3600, "last hour"),
    Choice(86400, "last 24 hours"),
    Choice(7 * 86400, "last 7 days"),
    Choice(30 * 86400, "last 30 days"),
    Choice(0, "all time"),
)
#: Status filters of the audit log ("" = any).
STATUS_CHOICES = ("", "2xx", "4xx", "5xx", "401", "403", "429")


class KeyOption(msgspec.Struct, frozen=True):
    """A key in the audit log's key filter."""

    id: str
    name: str
    hint: str


class AuditFilters(msgspec.Struct, frozen=True):
    """The audit log's filters as chosen ("" = any key, any status)."""

    key: str
    status: str
    period: int


class AuditRequestView(msgspec.Struct, frozen=True, kw_only=True):
    """One request in the audit log, with the name of the key that made it."""

    occurred_at: datetime
    key_id: str | None
    key_name: str
    key_hint: str | None
    method: str
    route: str
    status: int
    client_addr: str | None


class AuditPage(View, frozen=True, kw_only=True):
    """The audit log: requests newest first, the filters, the way to older ones."""

    requests: tuple[AuditRequestView, ...]
    keys: tuple[KeyOption, ...]
    unavailable: bool
    filters: AuditFilters
    status_choices: tuple[str, ...] = STATUS_CHOICES
    period_choices: tuple[Choice, ...] = PERIOD_CHOICES
    older: int | None


def audit_request(row: AuditRow, names: Mapping[str, str]) -> AuditRequestView:
    """A request as the audit log lists it, from the API's audit object."""
    shown = audit_request_view(row)
    key_name = names.get(shown["key_id"] or "", "unknown key")
    return msgspec.convert({**shown, "key_name": key_name}, AuditRequestView)


def audit_page(
    listing: OrgKeys,
    rows: list[AuditRow] | None,
    filters: AuditFilters,
    older: int | None,
) -> AuditPage:
    """The audit log over `rows` (None: the audit model is unavailable)."""
    options = [KeyOption(format_key_id(r.key.id), r.key.name, r.key.hint) for r in listing.keys]
    names = {option.id: option.name for option in options}
    return AuditPage(
        requests=tuple(audit_request(row, names) for row in rows or ()),
        keys=tuple(reversed(options)),
        unavailable=rows is None,
        filters=filters,
        older=older,
    )
