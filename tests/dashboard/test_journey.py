"""The dashboard end to end, in Chromium over real HTTPS: create, use, audit, roll, revoke."""

from __future__ import annotations

from typing import Any

from dashboard.harness import MOBILE, Browsing, DashboardServer, poll, sign_in
from domain.user import Role


async def test_an_admin_creates_a_key_uses_it_sees_it_audited_rolls_it_and_revokes_the_old_one(
    dashboard_server: DashboardServer, browsing: Browsing
) -> None:
    server = dashboard_server
    org = server.org()
    admin = server.user(org, Role.ADMIN)
    page = await browsing.page()

    # Sign in.
    await page.goto("/dashboard/login")
    await browsing.shoot(page, "login")
    await sign_in(page, admin.email)

    # Settings > API Keys > Create API Key: the secret is shown once, with a copy button.
    await page.fill("#create input[name=name]", "Production Backend")
    await page.click("#create button[type=submit]")
    secret = (await page.text_content("#new-key") or "").strip()
    assert secret.startswith("ak_live_")
    assert await page.is_visible("button[data-copy-target=new-key]")
    assert "will not be shown again" in (await page.text_content("#reveal-panel") or "")
    await browsing.shoot(page, "key-created")

    # The key works over HTTPS.
    async with server.http() as http:
        response = await http.get("/v1/affiliates", headers={"Authorization": f"Bearer {secret}"})
        assert response.status_code == 200, response.text

    # The audit log shows that request, with the key's name (the audit worker ingests it).
    async def audited() -> Any:
        await page.goto("/dashboard/audit")
        rows = page.locator("#audit-body tr", has_text="/v1/affiliates")
        return await rows.count() and rows.first

    row = await poll(audited, timeout=30)
    assert row is not None, "the request never reached the audit log"
    text = await row.text_content() or ""
    assert "Production Backend" in text and "GET" in text and "200" in text
    await browsing.shoot(page, "audit-log")

    # Roll with a 1 hour grace: a new secret, once, and the old key's last use.
    await page.goto("/dashboard/keys")
    await page.click("text=Production Backend")
    old_url = page.url
    await page.select_option("select[name=grace_seconds]", "3600")
    await page.click("text=Roll key")
    new_secret = (await page.text_content("#new-key") or "").strip()
    assert new_secret.startswith("ak_live_") and new_secret != secret
    assert await page.text_content("#old-last-used") != "never"
    await browsing.shoot(page, "key-rolled")

    async with server.http() as http:
        for key in (secret, new_secret):  # both work during the grace period
            response = await http.get("/v1/affiliates", headers={"Authorization": f"Bearer {key}"})
            assert response.status_code == 200, response.text

    # The key's page: details and its history, with the actors.
    await page.goto(old_url)
    history = await page.text_content(".history") or ""
    assert "api_key.created" in history and "api_key.rolled" in history
    assert admin.email in history
    await browsing.shoot(page, "key-detail")

    # Revoke the old key, after confirming.
    await page.click("text=Revoke…")
    await browsing.shoot(page, "revoke-confirm")
    await page.click("button:has-text('Revoke key')")
    await page.wait_for_url("**/dashboard/keys")
    assert "Revoked" in (await page.text_content(".flash") or "")
    await browsing.shoot(page, "keys")

    async with server.http() as http:
        old = await http.get("/v1/affiliates", headers={"Authorization": f"Bearer {secret}"})
        assert old.status_code == 401
        assert old.json()["error"]["code"] == "api_key_revoked"
        new = await http.get("/v1/affiliates", headers={"Authorization": f"Bearer {new_secret}"})
        assert new.status_code == 200


async def test_the_pages_fit_a_phone_screen(
    dashboard_server: DashboardServer, browsing: Browsing
) -> None:
    org = dashboard_server.org()
    admin = dashboard_server.user(org, Role.ADMIN)
    page = await browsing.page(MOBILE)
    await sign_in(page, admin.email)
    await page.fill("#create input[name=name]", "Phone key")
    await page.click("#create button[type=submit]")
    await page.wait_for_selector("#new-key")
    (key,) = dashboard_server.registry.list_keys(org.id)
    await page.goto(f"/dashboard/keys/key_{key.id.hex}")
    await page.select_option("select[name=grace_seconds]", "604800")
    await page.click("text=Roll key")
    await page.wait_for_selector("#new-key")
    for path in (
        "/dashboard/keys",
        f"/dashboard/keys/key_{key.id.hex}",
        f"/dashboard/keys/key_{key.id.hex}/revoke",
        "/dashboard/audit",
        "/dashboard/login",
    ):
        await page.goto(path)
        overflow = await page.evaluate(
            "document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 0, f"{path} scrolls sideways by {overflow}px at 390 px wide"
