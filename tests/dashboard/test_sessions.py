"""Signing in and out: sessions, cookies, CSRF, throttled failures, security headers."""

from __future__ import annotations

from api.dashboard.security import CSRF_COOKIE, SESSION_COOKIE
from dashboard.harness import (
    PASSWORD,
    Browsing,
    DashboardServer,
    csrf_token_of,
    poll,
    sign_in,
)
from domain.actors import OPERATOR
from domain.key_format import Environment, KeyType
from domain.user import Role
from support.windows import early_in_a_window


async def test_a_wrong_password_is_refused_with_a_plain_message(
    dashboard_server: DashboardServer, browsing: Browsing
) -> None:
    user = dashboard_server.user(dashboard_server.org(), Role.ADMIN)
    page = await browsing.page()
    await page.goto("/dashboard/login")
    await page.fill("input[name=email]", user.email)
    await page.fill("input[name=password]", "not the password at all")
    async with page.expect_response("**/dashboard/login") as answer:
        await page.click("button[type=submit]")
    assert (await answer.value).status == 401
    assert "do not match" in (await page.text_content("[role=alert]") or "")


async def test_the_session_cookie_is_secure_http_only_and_same_site(
    dashboard_server: DashboardServer, browsing: Browsing
) -> None:
    user = dashboard_server.user(dashboard_server.org(), Role.ADMIN)
    page = await browsing.page()
    await sign_in(page, user.email)
    cookies = {c["name"]: c for c in await page.context.cookies()}
    session, csrf = cookies[SESSION_COOKIE], cookies[CSRF_COOKIE]
    assert session["secure"] and session["httpOnly"] and session["sameSite"] == "Lax"
    assert csrf["secure"] and csrf["httpOnly"] and csrf["sameSite"] == "Strict"


async def test_signing_in_issues_a_new_session_id(
    dashboard_server: DashboardServer, browsing: Browsing
) -> None:
    user = dashboard_server.user(dashboard_server.org(), Role.ADMIN)
    page = await browsing.page()
    planted = "a" * 64  # as an attacker would fix a victim's session id before sign-in
    await page.context.add_cookies(
        [{"name": SESSION_COOKIE, "value": planted, "url": dashboard_server.url, "secure": True}]
    )
    await sign_in(page, user.email)
    cookies = {c["name"]: c["value"] for c in await page.context.cookies()}
    assert cookies[SESSION_COOKIE] != planted


async def test_dashboard_pages_carry_a_strict_content_security_policy(
    dashboard_server: DashboardServer, browsing: Browsing
) -> None:
    page = await browsing.page()
    response = await page.goto("/dashboard/login")
    assert response is not None
    policy = response.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "'unsafe-inline'" not in policy
    assert "frame-ancestors 'none'" in policy
    assert response.headers["cache-control"] == "no-store"
    assert await page.evaluate("typeof htmx") == "object"  # the vendored script loads


async def test_sign_out_ends_the_session_on_the_server(
    dashboard_server: DashboardServer, browsing: Browsing
) -> None:
    user = dashboard_server.user(dashboard_server.org(), Role.ADMIN)
    page = await browsing.page()
    await sign_in(page, user.email)
    cookies = await page.context.cookies()
    await page.click("text=Sign out")
    await page.wait_for_url("**/dashboard/login?signed_out=1")
    assert "signed out" in (await page.text_content("[role=status]") or "")

    # The old session cookie, replayed, no longer signs anyone in.
    replay = await browsing.page()
    await replay.context.add_cookies(cookies)  # type: ignore[arg-type]
    await replay.goto("/dashboard/keys")
    assert replay.url.endswith("/dashboard/login")


async def test_a_form_posted_without_the_csrf_token_is_refused_and_changes_nothing(
    dashboard_server: DashboardServer, browsing: Browsing
) -> None:
    org = dashboard_server.org()
    user = dashboard_server.user(org, Role.ADMIN)
    page = await browsing.page()
    await sign_in(page, user.email)

    # The session cookie goes along (as with a cross-site form), the token does not.
    response = await page.request.post("/dashboard/keys", form={"name": "Forged"})
    assert response.status == 403
    body = await response.text()
    assert "could not be verified" in body and "Nothing was changed" in body
    assert "Traceback" not in body
    assert dashboard_server.registry.list_keys(org.id) == []


async def test_a_form_with_a_token_from_another_session_is_refused(
    dashboard_server: DashboardServer, browsing: Browsing
) -> None:
    org = dashboard_server.org()
    user = dashboard_server.user(org, Role.ADMIN)
    attacker = await browsing.page()
    await attacker.goto("/dashboard/login")
    foreign_token = await csrf_token_of(attacker)
    page = await browsing.page()
    await sign_in(page, user.email)
    response = await page.request.post(
        "/dashboard/keys", form={"name": "Forged", "_csrf_token": foreign_token}
    )
    assert response.status == 403
    assert dashboard_server.registry.list_keys(org.id) == []


async def test_the_bearer_api_needs_no_csrf_token(
    dashboard_server: DashboardServer,
) -> None:
    org = dashboard_server.org()
    issued = dashboard_server.registry.create_key(
        org.id, name="api", env=Environment.LIVE, key_type=KeyType.SECRET, actor=OPERATOR
    )
    async with dashboard_server.http() as http:
        headers = {"Authorization": f"Bearer {issued.secret}"}

        async def known() -> bool:  # the API process learns of the key from the bus
            return (await http.get("/v1/api-keys/current", headers=headers)).status_code == 200

        assert await poll(known, timeout=15), "the API never learned of the key"
        response = await http.post(
            "/v1/api-keys", json={"name": "made by the API"}, headers=headers
        )
    assert response.status_code == 201, response.text


async def test_failed_sign_ins_lock_the_email_out_even_with_the_right_password(
    dashboard_server: DashboardServer, browsing: Browsing
) -> None:
    user = dashboard_server.user(dashboard_server.org(), Role.ADMIN)
    page = await browsing.page()
    await page.goto("/dashboard/login")
    await early_in_a_window(20)  # failures are counted per minute
    statuses = []
    for _ in range(6):
        await page.fill("input[name=email]", user.email)
        await page.fill("input[name=password]", "wrong password, again")
        async with page.expect_response("**/dashboard/login") as answer:
            await page.click("button[type=submit]")
        statuses.append((await answer.value).status)
    assert statuses == [401] * 5 + [429]
    assert "Too many failed sign-ins" in (await page.text_content("[role=alert]") or "")

    # From another address too, and with the right password: still refused for now.
    other = await browsing.page()
    await other.goto("/dashboard/login")
    await other.fill("input[name=email]", user.email)
    await other.fill("input[name=password]", PASSWORD)
    async with other.expect_response("**/dashboard/login") as answer:
        await other.click("button[type=submit]")
    assert (await answer.value).status == 429


async def test_failed_sign_ins_lock_the_address_out(
    dashboard_server: DashboardServer, browsing: Browsing
) -> None:
    org = dashboard_server.org()
    victim = dashboard_server.user(org, Role.ADMIN)
    page = await browsing.page()  # one client address, trying many emails
    await page.goto("/dashboard/login")
    token = await csrf_token_of(page)
    await early_in_a_window(20)
    statuses = []
    for n in range(21):
        response = await page.request.post(
            "/dashboard/login",
            form={"email": f"guess{n}@example.com", "password": "guess", "_csrf_token": token},
        )
        statuses.append(response.status)
    assert statuses[:20] == [401] * 20 and statuses[20] == 429
    response = await page.request.post(
        "/dashboard/login",
        form={"email": victim.email, "password": PASSWORD, "_csrf_token": token},
    )
    assert response.status == 429
