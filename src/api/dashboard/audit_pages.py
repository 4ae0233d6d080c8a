"""The audit log: recent requests made with the organization's keys, filtered."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import structlog
from litestar import Controller, Request, get
from litestar.di import NamedDependency
from litestar.params import FromQuery
from litestar.response import Template

from api.dashboard.context import DashboardContext
from api.dashboard.pages import (
    USER_DEPENDENCY,
    page,
)
from api.routes.audit_requests import audit_request_view, parse_status
from domain.access import Command, authorize
from domain.actors import UserActor
from domain.errors import ValidationError
from domain.ids import format_key_id, format_org_id, parse_key_id
from domain.user import User
from projections.request_audit_query import AuditQuery
from projections.request_audit_shared import request_audit_store_for

log = structlog.get_logger()

#: Audit periods: (seconds, label); 0 = all time.
PERIOD_CHOICES = [
    (3600, "last hour"),
    (86400, "last 24 hours"),
    (7 * 86400, "last 7 days"),
    (30 * 86400, "last 30 days"),
    (0, "all time"),
]
STATUS_CHOICES = ["", "2xx", "4xx", "5xx", "401", "403", "429"]
AUDIT_PAGE_SIZE = 50


class AuditPages(Controller):
    path = "/audit"
    dependencies = USER_DEPENDENCY

    @get("/")
    async def requests(
        self,
        request: Request[Any, Any, Any],
        dashboard: NamedDependency[DashboardContext],
        user: NamedDependency[User],
        actor: NamedDependency[UserActor],
        key: FromQuery[str | None] = None,
        status: FromQuery[str | None] = None,
        period: FromQuery[int] = 86400,
        before: FromQuery[int | None] = None,
    ) -> Template:
        """Recent requests made with the organization's keys, newest first, filtered."""
        authorize(actor, Command.READ_AUDIT)
        services = dashboard.services
        key_id = key or None
        if key_id is not None:
            parse_key_id(key_id)
        status = status or ""
        if status not in STATUS_CHOICES:
            raise ValidationError("choose a status from the list")
        status_min, status_max = parse_status(status or None)
        if period not in {p for p, _ in PERIOD_CHOICES}:
            raise ValidationError("choose a period from the list")
        query = AuditQuery(
            org_id=format_org_id(user.org_id),
            key_id=key_id,
            status_min=status_min,
            status_max=status_max,
            since=time.time() - period if period else None,
            before_seq=before,
        )

        def load() -> dict[str, Any]:
            keys = services.registry.keys_for(actor, user.org_id)
            names = {format_key_id(k.id): k.name for k in keys}
            try:
                rows = request_audit_store_for(services.settings).page(query, AUDIT_PAGE_SIZE)
            except Exception as error:
                log.warning("dashboard.audit_unavailable", error=type(error).__name__)
                return {"rows": [], "unavailable": True, "keys": keys, "names": names}
            return {"rows": rows, "unavailable": False, "keys": keys, "names": names}

        loaded = await asyncio.to_thread(load)
        rows = loaded["rows"]
        return page(
            request,
            "audit.html.j2",
            user=user,
            requests=[audit_request_view(r) for r in rows],
            names=loaded["names"],
            keys=[(format_key_id(k.id), k.name, k.hint) for k in reversed(loaded["keys"])],
            unavailable=loaded["unavailable"],
            filters={"key": key_id or "", "status": status or "", "period": period},
            status_choices=STATUS_CHOICES,
            period_choices=PERIOD_CHOICES,
            older=rows[-1].seq if len(rows) == AUDIT_PAGE_SIZE else None,
        )
