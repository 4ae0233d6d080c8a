"""The Litestar application: API routes, auth, guards, errors, OpenAPI."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from litestar import Litestar
from litestar.di import Provide
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import Components, SecurityScheme
from litestar.utils import normalize_path

from api.auth import NO_KEY, UNDECLARED
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
from api.routes.github_leaks import GitHubLeaksController
from api.routes.health import healthz, readyz
from api.routes.leaks import LeaksController
from api.routes.organization import OrganizationController
from api.routes.public_revocation import PublicRevocationController
from api.routes.sdk import sdk_script
from api.routes.usage import UsageController
from api.routes.webhook_deliveries import WebhookDeliveriesController
from api.routes.webhooks import WebhooksController
from api.services import Services
from api.store_health import StoreHealth

#: Requests that present no key: probes, the schema, the dashboard (session login), the
#: browser SDK's script. Leak reports (`/v1/leaks`) are signed with ICODRIP_LEAK_SIGNING_KEY.
#: Public revocation (`/v1/public/revoke`) is open to whoever holds a leaked key.
NO_KEY_PATHS = (
    "/healthz",
    "/readyz",
    "/schema",
    "/dashboard",
    "/favicon.ico",
    "/v1/leaks",
    "/v1/public",
    "/sdk",
)
#: A request body's size at most (413 beyond), unless its handler sets its own
#: `request_max_body_size`: the leak-report routes take a scanner's whole batch
#: (`api.routes.leaks.MAX_REPORT_BODY_BYTES`).
MAX_BODY_BYTES = 64 * 1024


def create_app(
    services: Services,
    *,
    on_startup: Sequence[Callable[[], Awaitable[None]]] = (),
    on_shutdown: Sequence[Callable[[], Awaitable[None]]] = (),
) -> Litestar:
    """The API over these services (built and owned by the caller).

    Serve it wrapped in `api.auth.KeyGate` (which authenticates the routes `key_required`
    names) and `api.edge.EdgeMiddleware`, which must sit outside Litestar's own exception
    handling to see (and stamp) every response.
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
            sdk_script(),
            AffiliatesController,
            ApiKeysController,
            ApiKeyHistoryController,
            AuditEventsController,
            AuditRequestsController,
            EventsController,
            LeaksController,
            PublicRevocationController,
            GitHubLeaksController,
            UsageController,
            WebhooksController,
            OrganizationController,
            WebhookDeliveriesController,
        ],
        dependencies={"services": Provide(lambda: services, sync_to_thread=False)},
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


def route_commands(app: Litestar) -> Callable[[str, str], object]:
    """What a request to (path, method) must be allowed: `NO_KEY`, or its route's command.

    The command is the one the handler's `opt` declares (`None`: any valid key), or
    `UNDECLARED` for a `/v1` handler that declares none. An unknown route or method is left
    to Litestar (404/405 before any key is asked for), as are preflights (`OPTIONS`), the
    paths in `NO_KEY_PATHS` and handlers marked `exclude_from_auth`. The router caches its
    answers, so this costs a dict hit.
    """
    route = app.asgi_router.handle_routing
    known: dict[tuple[str, str], object] = {}

    def lookup(path: str, method: str) -> tuple[object, bool]:
        """The answer, and whether the path may be remembered (a fixed one: no parameters)."""
        if method == "OPTIONS" or path.startswith(NO_KEY_PATHS):
            return NO_KEY, False
        try:
            _, handler, _, params, _ = route(path=normalize_path(path), method=method)
        except Exception:
            return NO_KEY, False
        if handler.opt.get("exclude_from_auth", False):
            return NO_KEY, not params
        return handler.opt.get("command", UNDECLARED), not params

    def command(path: str, method: str) -> object:
        found = known.get((path, method), _UNKNOWN)
        if found is _UNKNOWN:
            found, fixed = lookup(path, method)
            if fixed and len(known) < 1_000:  # the API's fixed paths are few
                known[path, method] = found
        return found

    return command


_UNKNOWN = object()
