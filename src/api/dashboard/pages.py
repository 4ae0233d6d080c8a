"""Rendering dashboard pages, the signed-in user, and errors shown as pages (never traces)."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import msgspec
import structlog
from litestar import MediaType, Request, Response
from litestar.di import NamedDependency, Provide
from litestar.exceptions import HTTPException, NotFoundException, PermissionDeniedException
from litestar.response import Redirect, Template
from litestar.utils.scope.state import ScopeState
from redis.exceptions import RedisError

from api.dashboard.context import DashboardContext
from api.dashboard.views import ErrorPage, Frame, View, flash_of, user_view
from domain.access import KEY_CHANGES, Command, allows, authorize
from domain.actors import UserActor
from domain.errors import DomainError, NotFound
from domain.user import NotAllowed, User, UserDisabled

log = structlog.get_logger()

SESSION_USER = "user_id"
LOGIN_PATH = "/dashboard/login"
_ISO_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d")


class LoginRequired(Exception):
    """No signed-in user: the browser is sent to the sign-in page."""


def provide(context: DashboardContext) -> Provide:
    """The dashboard's shared context, as a dependency."""
    return Provide(lambda: context, sync_to_thread=False)


def is_htmx(request: Request[Any, Any, Any]) -> bool:
    """Whether htmx sent this request (it then wants a fragment, not a page)."""
    return request.headers.get("hx-request") == "true"


async def signed_in_user(
    request: Request[Any, Any, Any], dashboard: NamedDependency[DashboardContext]
) -> User:
    """The user of this session, re-read on every request (a disabled user is out at once)."""
    user_hex = session_of(request).get(SESSION_USER)
    if not isinstance(user_hex, str):
        raise LoginRequired
    try:
        user = await asyncio.to_thread(dashboard.users.get_user, UUID(hex=user_hex))
    except (NotFound, ValueError):
        request.clear_session()
        raise LoginRequired from None
    if user.disabled:
        request.clear_session()
        raise LoginRequired
    return user


def session_of(request: Request[Any, Any, Any]) -> dict[str, Any]:
    """This request's session data; empty when none was loaded (the store failed, say)."""
    session = request.scope.get("session")
    return session if isinstance(session, dict) else {}


def declared_command(request: Request[Any, Any, Any]) -> Command | None:
    """The command the page's handler declares (`opt={"command": …}`, as `/v1` handlers do)."""
    command = request.route_handler.opt.get("command")
    return command if isinstance(command, Command) else None


async def acting_user(
    request: Request[Any, Any, Any],
    dashboard: NamedDependency[DashboardContext],
    user: NamedDependency[User],
) -> UserActor:
    """The signed-in user as an actor, under its organization's current plan.

    The handler's command is asked of the policy here, before any form is read, so a refusal
    is a 403 page, never a complaint about the form; a command on one key is asked with the
    key's facts (`key_pages.owned_key`). The registry asks again when it runs the command.
    """
    org = await asyncio.to_thread(dashboard.services.registry.get_organization, user.org_id)
    actor = user.acting(org.permissions)
    request.state.actor = actor  # for what every page shows (the menu)
    command = declared_command(request)
    if command is not None and command not in KEY_CHANGES:
        authorize(actor, command)
    return actor


USER_DEPENDENCY = {"user": Provide(signed_in_user), "actor": Provide(acting_user)}


def csrf_token(request: Request[Any, Any, Any]) -> str:
    """The CSRF token of this request, for forms and htmx's header."""
    token = ScopeState.from_scope(request.scope).csrf_token
    return token if isinstance(token, str) else ""


def page(
    request: Request[Any, Any, Any],
    template: str,
    view: View | None = None,
    *,
    status_code: int = 200,
    user: User | None = None,
) -> Template:
    """`template` showing `view`, with the `Frame` every page shows (user, flash, CSRF token)."""
    actor = getattr(request.state, "actor", None)
    frame = Frame(
        user=user_view(user),
        may_audit=isinstance(actor, UserActor) and allows(actor, Command.READ_AUDIT),
        flash=flash_of(session_of(request).pop("flash", None)),
        csrf_token=csrf_token(request),
        path=request.url.path,
    )
    context = msgspec.structs.asdict(frame)
    if view is not None:
        context.update(msgspec.structs.asdict(view))
    return Template(
        template_name=template,
        status_code=status_code,
        context=context,
        media_type=MediaType.HTML,
    )


def flash(request: Request[Any, Any, Any], message: str, kind: str = "success") -> None:
    """A one-time message for the next page this session sees."""
    request.session["flash"] = {"message": message, "kind": kind}


# -- template filters --------------------------------------------------------------------------


def when(value: str | float | datetime | None) -> str:
    """A time for people: `2026-11-27 09:15 UTC`; `—` for none."""
    if value is None or value == "":
        return "—"
    if isinstance(value, int | float):
        moment = datetime.fromtimestamp(value, UTC)
    elif isinstance(value, str):
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    else:
        moment = value
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def show(value: Any) -> str:
    """A changed value for people: lists joined with commas, none as `—`."""
    if value is None:
        return "—"
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value) or "—"
    if isinstance(value, str) and _ISO_TIME.match(value):
        return when(value)
    return str(value)


FILTERS = {"when": when, "show": show}


# -- errors as pages ---------------------------------------------------------------------------


def _error_page(
    request: Request[Any, Any, Any], status: int, title: str, message: str
) -> Response[Any]:
    template = "_error.html.j2" if is_htmx(request) else "error.html.j2"
    signed_in = bool(session_of(request).get(SESSION_USER))
    view = ErrorPage(title=title, message=message, signed_in=signed_in)
    return page(request, template, view, status_code=status)


def handle_login_required(request: Request[Any, Any, Any], exc: LoginRequired) -> Response[Any]:
    """To the sign-in page (htmx: by its `HX-Redirect` header)."""
    if is_htmx(request):
        return Response(content="", status_code=401, headers={"HX-Redirect": LOGIN_PATH})
    return Redirect(LOGIN_PATH, status_code=303)


def handle_not_allowed(request: Request[Any, Any, Any], exc: DomainError) -> Response[Any]:
    """403 page naming the rule that refused the action."""
    return _error_page(request, 403, "Not allowed", exc.message)


def handle_domain_error(request: Request[Any, Any, Any], exc: DomainError) -> Response[Any]:
    """404, 409 or 422 page with the domain's message."""
    if isinstance(exc, NotFound):
        return _error_page(request, 404, "Not found", exc.message)
    return _error_page(
        request, 409 if exc.code != "validation_error" else 422, "Not done", exc.message
    )


def handle_csrf(request: Request[Any, Any, Any], exc: PermissionDeniedException) -> Response[Any]:
    """403 page for a form the CSRF check refused: nothing was changed."""
    log.info("dashboard.csrf_refused", path=request.url.path)
    return _error_page(
        request,
        403,
        "Request refused",
        "This form could not be verified (it may have expired or come from another site). "
        "Nothing was changed. Reload the page and try again.",
    )


def handle_http(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    """A page for Litestar's own HTTP errors (unknown page, bad query, ...)."""
    if isinstance(exc, NotFoundException):
        return _error_page(request, 404, "Not found", "There is no such page.")
    if exc.status_code >= 500:
        return handle_unexpected(request, exc)
    return _error_page(request, exc.status_code, "Request refused", str(exc.detail))


def handle_store_unavailable(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    """503 page while the session store (Redis) cannot be reached: nothing was changed."""
    log.warning("dashboard.session_store_unavailable", error=type(exc).__name__)
    response = _error_page(
        request,
        503,
        "Dashboard unavailable",
        "The dashboard cannot reach its session store just now, so nobody can sign in or "
        "make changes here. Nothing was changed. Your API keys keep working. "
        "Try again in a minute.",
    )
    response.headers["Retry-After"] = "30"
    return response


def handle_unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    """500 page; the error's type is logged, never shown."""
    log.error("dashboard.unhandled_error", error=type(exc).__name__, path=request.url.path)
    return _error_page(
        request, 500, "Something went wrong", "Something went wrong on our side. Try again."
    )


EXCEPTION_HANDLERS: dict[type[Exception] | int, Any] = {
    LoginRequired: handle_login_required,
    NotAllowed: handle_not_allowed,
    UserDisabled: handle_not_allowed,
    DomainError: handle_domain_error,
    PermissionDeniedException: handle_csrf,
    HTTPException: handle_http,
    RedisError: handle_store_unavailable,
    Exception: handle_unexpected,
}
