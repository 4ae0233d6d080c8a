"""Signing in and out of the dashboard: the form, the throttled check, a fresh session."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import structlog
from litestar import Controller, Request, get, post
from litestar.di import NamedDependency
from litestar.response import Redirect, Template

from adapters.users import verify_password
from api.context import request_context
from api.dashboard.context import DashboardContext
from api.dashboard.forms import form_text
from api.dashboard.pages import SESSION_USER, page
from api.dashboard.security import SESSION_COOKIE, SESSION_STORE
from api.dashboard.views import LoginPage
from domain.errors import ValidationError
from domain.ids import USER_PREFIX, format_id
from domain.user import normalize_email

log = structlog.get_logger()


@get("/", name="dashboard-home")
async def dashboard_home(request: Request[Any, Any, Any]) -> Redirect:
    """The dashboard's front door: the keys when signed in, else the sign-in page."""
    signed_in = bool(request.session and request.session.get(SESSION_USER))
    return Redirect("/dashboard/keys" if signed_in else "/dashboard/login", status_code=303)


class SessionPages(Controller):
    path = "/"

    @get("/login")
    async def login_form(self, request: Request[Any, Any, Any]) -> Template:
        """The sign-in form."""
        return page(request, "login.html.j2", LoginPage())

    @post("/login", status_code=200)
    async def login(
        self, request: Request[Any, Any, Any], dashboard: NamedDependency[DashboardContext]
    ) -> Template | Redirect:
        """Check the email and password; on success start a fresh session."""
        form = await request.form()
        email_text = form_text(form, "email").strip()
        password = form_text(form, "password")
        address = request_context(request.scope).client_addr
        try:
            email = normalize_email(email_text)
        except ValidationError:
            email = email_text.lower()[:254]
        throttle = dashboard.throttle
        # First, before any password is checked: with the store down this raises, and the
        # answer is a 503 page, so an outage never lets guesses through unthrottled.
        locked = await throttle.locked_for(email, address)
        if locked is not None:
            return _refused_sign_in(request, email_text, locked)
        user = await asyncio.to_thread(dashboard.users.find_by_email, email)
        ok = await asyncio.to_thread(
            verify_password, None if user is None else user.password_hash, password
        )
        if user is None or not ok or user.disabled:
            log.info("dashboard.sign_in_failed", client_addr=address)
            locked = await throttle.failed(email, address)
            if locked is not None:
                return _refused_sign_in(request, email_text, locked)
            failed = LoginPage(
                email=email_text, error="That email and password do not match an account."
            )
            return page(request, "login.html.j2", failed, status_code=401)
        # A fresh session id on sign-in: an id planted before sign-in is worth nothing.
        old_id = request.cookies.pop(SESSION_COOKIE, None)
        if old_id:
            await request.app.stores.get(SESSION_STORE).delete(old_id)
        request.clear_session()
        request.set_session({SESSION_USER: user.id.hex, "signed_in_at": int(time.time())})
        log.info("dashboard.signed_in", user_id=format_id(USER_PREFIX, user.id))
        return Redirect("/dashboard/keys", status_code=303)

    @post("/logout", status_code=200)
    async def logout(self, request: Request[Any, Any, Any]) -> Redirect:
        """End the session (its data is deleted from the store) and go to the sign-in page."""
        request.clear_session()
        return Redirect("/dashboard/login?signed_out=1", status_code=303)


def _refused_sign_in(request: Request[Any, Any, Any], email: str, seconds: int) -> Template:
    log.info("dashboard.sign_in_locked", client_addr=request_context(request.scope).client_addr)
    error = f"Too many failed sign-ins. Try again in {seconds} seconds."
    return page(request, "login.html.j2", LoginPage(email=email, error=error), status_code=429)
