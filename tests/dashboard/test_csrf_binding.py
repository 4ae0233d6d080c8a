"""A CSRF token works only with the session it was issued to (issue 10, finding 12)."""

from __future__ import annotations

from api.dashboard.security import CSRF_COOKIE, SESSION_COOKIE
from dashboard.asgi import (
    PASSWORD,
    Dashboard,
    csrf_token_in,
    post_login,
    sign_in,
)


async def test_a_csrf_token_and_cookie_from_another_users_session_are_refused(
    dashboard: Dashboard,
) -> None:
    mallory, victim = dashboard.user(), dashboard.user()
    async with dashboard.client() as mallorys, dashboard.client() as victims:
        mallorys_token = await sign_in(mallorys, mallory.email)
        victims_token = await sign_in(victims, victim.email)
        victims_session = victims.cookies[SESSION_COOKIE]

        # The victim's session cookie, with the token and CSRF cookie of Mallory's session:
        # what a page could send if it ever learned one valid token/cookie pair.
        victims.cookies.delete(CSRF_COOKIE)
        victims.cookies.set(CSRF_COOKIE, mallorys_token, domain="dash.test")
        forged = await victims.post(
            "/dashboard/keys/",
            data={"name": "Forged", "env": "live", "_csrf_token": mallorys_token},
        )
        assert forged.status_code == 403, forged.text
        assert "Nothing was changed" in forged.text
        assert dashboard.registry.list_keys(victim.org_id) == []

        # With its own token the same session still works (here: signs out).
        victims.cookies.delete(CSRF_COOKIE)
        victims.cookies.set(CSRF_COOKIE, victims_token, domain="dash.test")
        assert victims.cookies[SESSION_COOKIE] == victims_session
        signed_out = await victims.post("/dashboard/logout", data={"_csrf_token": victims_token})
        assert signed_out.status_code == 303


async def test_signing_in_replaces_the_csrf_token_of_before_sign_in(dashboard: Dashboard) -> None:
    user = dashboard.user()
    async with dashboard.client() as browser:
        before = csrf_token_in(await browser.get("/dashboard/login"))
        answer = await post_login(browser, user.email, PASSWORD, before)
        assert answer.status_code == 303

        after = csrf_token_in(await browser.get("/dashboard/keys/"))
        assert after != before
        assert browser.cookies[CSRF_COOKIE] == after

        # A token learned before sign-in (and its cookie) is worth nothing after it.
        browser.cookies.delete(CSRF_COOKIE)
        browser.cookies.set(CSRF_COOKIE, before, domain="dash.test")
        stale = await browser.post("/dashboard/logout", data={"_csrf_token": before})
        assert stale.status_code == 403
