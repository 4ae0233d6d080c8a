"""Adds the dashboard to the Litestar app: routes, templates, static files, stores."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape
from litestar import Router
from litestar.config.app import AppConfig
from litestar.middleware import DefineMiddleware
from litestar.plugins import InitPlugin
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.static_files import create_static_files_router
from litestar.template.config import TemplateConfig

from api.dashboard.audit_pages import AuditPages
from api.dashboard.context import DashboardContext
from api.dashboard.key_pages import KeyPages
from api.dashboard.pages import EXCEPTION_HANDLERS, FILTERS, provide
from api.dashboard.policy_pages import PolicyPages
from api.dashboard.security import (
    LOCK_STORE,
    PREFIX,
    JoinCookieHeaders,
    SessionBoundCSRFMiddleware,
    SignInThrottle,
    csrf_config,
    session_config,
    stamp_security_headers,
    stores_for,
)
from api.dashboard.sign_in_pages import SessionPages, dashboard_home
from api.dashboard.webhook_pages import WebhookPages
from api.services import Services

HERE = Path(__file__).parent
TEMPLATES = HERE / "templates"
STATIC = HERE / "static"


def template_engine() -> JinjaTemplateEngine:
    """Jinja over the dashboard's templates, autoescaping everything, with its filters."""
    environment = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=select_autoescape(default=True, default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters.update(FILTERS)
    return JinjaTemplateEngine.from_environment(environment)


class DashboardPlugin(InitPlugin):
    """The dashboard under `/dashboard`, over the API's services."""

    def __init__(self, services: Services) -> None:
        self.stores = stores_for(services.settings.redis_url)
        throttle = SignInThrottle(services.limiter, self.stores[LOCK_STORE])
        self.context = DashboardContext(services, throttle)

    def on_app_init(self, app_config: AppConfig) -> AppConfig:
        """Add the dashboard's router, static files, templates, stores, headers and shutdown."""
        services = self.context.services
        stores = self.stores
        context = self.context

        async def stop() -> None:
            context.close()
            for store in stores.values():
                with contextlib.suppress(Exception):
                    await store.__aexit__(None, None, None)

        router = Router(
            path=PREFIX,
            route_handlers=[
                dashboard_home,
                SessionPages,
                KeyPages,
                AuditPages,
                WebhookPages,
                PolicyPages,
            ],
            middleware=[
                JoinCookieHeaders,
                session_config().middleware,
                DefineMiddleware(
                    SessionBoundCSRFMiddleware, config=csrf_config(services.settings.key_pepper)
                ),
            ],
            dependencies={"dashboard": provide(context)},
            exception_handlers=EXCEPTION_HANDLERS,
            include_in_schema=False,
            opt={"dashboard": True},
        )
        static = create_static_files_router(
            path=f"{PREFIX}/static",
            directories=[STATIC],
            name="dashboard-static",
            include_in_schema=False,
            opt={"dashboard": True},
        )
        app_config.route_handlers.extend([router, static])
        app_config.template_config = TemplateConfig(instance=template_engine())
        registered: Any = app_config.stores or {}
        if isinstance(registered, dict):
            app_config.stores = {**registered, **stores}
        app_config.before_send.append(stamp_security_headers)
        app_config.on_shutdown.insert(0, stop)
        return app_config
