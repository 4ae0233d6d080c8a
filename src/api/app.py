"""The Litestar application: API routes, auth, guards, errors, OpenAPI."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from litestar import Litestar
from litestar.di import Provide
from litestar.middleware import DefineMiddleware
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import Components, SecurityScheme

from api.auth import ApiKeyAuthentication, access_guard
from api.dashboard import DashboardPlugin
from api.errors import EXCEPTION_HANDLERS
from api.json_body import ApiRequest
from api.openapi_errors import document_errors
from api.openapi_ui import SCHEMA_PATH, LocalSwaggerRenderPlugin, schema_router
from api.routes.affiliates import AffiliatesController
from api.routes.api_keys import ApiKeysController
from api.routes.audit_events import ApiKeyHistoryController, AuditEventsController
from api.routes.audit_requests import AuditRequestsController
from api.routes.events import EventsController
from api.routes.health import healthz, readyz
from api.routes.leaks import LeaksController
from api.services import Services
from api.store_health import StoreHealth

#: Requests that present no key: probes, the schema, the dashboard (session login).
NO_KEY_PATHS = ["^/healthz", "^/readyz", "^/schema", "^/dashboard", "^/favicon.ico"]
NO_KEY_PATHS.append("^/v1/leaks")  # leak reports: signed with ICODRIP_LEAK_SIGNING_KEY instead
MAX_BODY_BYTES = 64 * 1024


def create_app(
    services: Services,
    *,
    on_startup: Sequence[Callable[[], Awaitable[None]]] = (),
    on_shutdown: Sequence[Callable[[], Awaitable[None]]] = (),
) -> Litestar:
    """The API over these services (built and owned by the caller).

    Serve it wrapped in `api.edge.EdgeMiddleware`, which must sit outside Litestar's own
    exception handling to see (and stamp) every response.
    """
    openapi = OpenAPIConfig(
        title="Icodrip Keys API",
        version="1",
        description="Authenticate with `Authorization: Bearer <key>` over HTTPS.",
        path=SCHEMA_PATH,
        render_plugins=[LocalSwaggerRenderPlugin()],
        openapi_router=schema_router(),
        components=Components(
            security_schemes={
                "BearerAuth": SecurityScheme(
                    type="http",
                    scheme="bearer",
                    bearer_format="ak_live_… / ak_test_… / pk_live_… / pk_test_…",
                    description="An Icodrip API key.",
                )
            }
        ),
    )
    store_health = StoreHealth(services.registry.recorder.max_notification_id)
    app = Litestar(
        route_handlers=[
            healthz,
            readyz,
            AffiliatesController,
            ApiKeysController,
            ApiKeyHistoryController,
            AuditEventsController,
            AuditRequestsController,
            EventsController,
            LeaksController,
        ],
        dependencies={"services": Provide(lambda: services, sync_to_thread=False)},
        middleware=[
            DefineMiddleware(
                ApiKeyAuthentication,
                mirror=services.mirror,
                limiter=services.limiter,
                pepper=services.settings.key_pepper,
                exclude=NO_KEY_PATHS,
                exposure=services.exposure,
            ),
        ],
        guards=[access_guard],
        exception_handlers=EXCEPTION_HANDLERS,
        request_class=ApiRequest,  # JSON nested too deep is refused before it is decoded
        openapi_config=openapi,
        plugins=[DashboardPlugin(services)],
        request_max_body_size=MAX_BODY_BYTES,
        on_startup=list(on_startup),
        on_shutdown=[*on_shutdown, store_health.aclose],
        before_request=store_health.gate,
    )
    app.state.store_health = store_health
    document_errors(app)
    return app
