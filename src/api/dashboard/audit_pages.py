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

from api.dashboard import audit_views, forms
from api.dashboard.context import DashboardContext
from api.dashboard.key_pages import KEY_MANAGEMENT
from api.dashboard.pages import USER_DEPENDENCY, page
from application.key_management import KeyManagement
from domain.access import Command
from domain.actors import UserActor
from domain.user import User
from projections.request_audit_query import AuditQuery

log = structlog.get_logger()

AUDIT_PAGE_SIZE = 50


class AuditPages(Controller):
    path = "/audit"
    dependencies = {**USER_DEPENDENCY, **KEY_MANAGEMENT}

    @get("/", opt={"command": Command.READ_AUDIT})
    async def requests(
        self,
        request: Request[Any, Any, Any],
        dashboard: NamedDependency[DashboardContext],
        management: NamedDependency[KeyManagement],
        user: NamedDependency[User],
        actor: NamedDependency[UserActor],
        key: FromQuery[str | None] = None,
        status: FromQuery[str | None] = None,
        period: FromQuery[int] = 86400,
        before: FromQuery[int | None] = None,
    ) -> Template:
        """Recent requests made with the organization's keys, newest first, filtered."""
        filters = forms.audit_filters(key, status, period)
        query = forms.audit_query(filters, actor.org_id, time.time(), before)
        view = await asyncio.to_thread(_audit_page, dashboard, management, actor, filters, query)
        return page(request, "audit.html.j2", view, user=user)


def _audit_page(
    dashboard: DashboardContext,
    management: KeyManagement,
    actor: UserActor,
    filters: audit_views.AuditFilters,
    query: AuditQuery,
) -> audit_views.AuditPage:
    """The page of requests `query` selects, with the names of the keys that made them."""
    listing = management.org_keys(actor, actor.org_id, with_use=False)
    try:
        rows = dashboard.services.audit.page(query, AUDIT_PAGE_SIZE)
    except Exception as error:  # the audit model may be unavailable; the page says so
        log.warning("dashboard.audit_unavailable", error=type(error).__name__)
        return audit_views.audit_page(listing, None, filters, older=None)
    older = rows[-1].seq if len(rows) == AUDIT_PAGE_SIZE else None
    return audit_views.audit_page(listing, rows, filters, older)
