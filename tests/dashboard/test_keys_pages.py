"""Settings > API Keys in the browser: the one-time secret, rename, roles' limits."""

from __future__ import annotations

from dashboard.harness import Browsing, DashboardServer, csrf_token_of, sign_in
from domain.actors import OPERATOR
from domain.key_format import Environment, KeyType
from domain.user import Role


async def test_the_secret_is_gone_from_the_page_after_a_reload(
    dashboard_server: DashboardServer, browsing: Browsing
) -> None:
    user = dashboard_server.user(dashboard_server.org(), Role.OWNER)
    page = await browsing.page()
    await sign_in(page, user.email)
    await page.fill("#create input[name=name]", "Reload me")
    await page.click("#create button[type=submit]")
    secret = (await page.text_content("#new-key") or "").strip()
    hint_tail = secret[-4:]

    await page.reload()
    html = await page.content()
    assert secret not in html
    assert await page.locator("#new-key").count() == 0
    row = page.locator("#keys-body tr", has_text="Reload me")
    assert hint_tail in (await row.text_content() or "")  # only the hint remains


async def test_a_restricted_expiring_test_key_is_created_as_asked(
    dashboard_server: DashboardServer, browsing: Browsing
) -> None:
    org = dashboard_server.org()
    user = dashboard_server.user(org, Role.ADMIN)
    page = await browsing.page()
    await sign_in(page, user.email)
    await page.fill("#create input[name=name]", "Read-only test")
    await page.check("input[name=env][value=test]")
    await page.click("text=Restrict permissions (optional)")
    await page.check("input[name=restricted]")
    await page.check("input[name=permissions][value='affiliates:read']")
    await page.select_option("select[name=expires_in_days]", "30")
    await page.click("#create button[type=submit]")
    assert (await page.text_content("#new-key") or "").strip().startswith("ak_test_")

    (key,) = dashboard_server.registry.list_keys(org.id)
    assert key.env is Environment.TEST
    assert key.permissions == {"affiliates:read"}
    assert key.expires_at is not None
    assert key.created_by == user.actor_name


async def test_an_empty_name_is_refused_with_a_message(
    dashboard_server: DashboardServer, browsing: Browsing
) -> None:
    org = dashboard_server.org()
    user = dashboard_server.user(org, Role.ADMIN)
    page = await browsing.page()
    await sign_in(page, user.email)
    response = await page.request.post(
        "/dashboard/keys",
        form={"name": "   ", "env": "live", "_csrf_token": await csrf_token_of(page)},
    )
    assert response.status == 422
    assert "key name must be 1 to 100 characters" in await response.text()
    assert dashboard_server.registry.list_keys(org.id) == []


async def test_a_key_is_renamed_and_the_history_names_who_did_it(
    dashboard_server: DashboardServer, browsing: Browsing
) -> None:
    org = dashboard_server.org()
    user = dashboard_server.user(org, Role.ADMIN)
    issued = dashboard_server.registry.create_key(
        org.id, name="Old name", env=Environment.LIVE, key_type=KeyType.SECRET, actor=OPERATOR
    )
    page = await browsing.page()
    await sign_in(page, user.email)
    await page.click("text=Old name")
    await page.fill("input[name=name]", "New name")
    await page.click("button:has-text('Rename')")
    assert "Renamed" in (await page.text_content(".flash") or "")
    assert dashboard_server.registry.get_key(issued.key.id).name == "New name"
    history = await page.text_content(".history") or ""
    assert "api_key.renamed" in history and user.email in history and "operator" in history


async def test_an_auditor_cannot_create_keys(
    dashboard_server: DashboardServer, browsing: Browsing
) -> None:
    org = dashboard_server.org()
    auditor = dashboard_server.user(org, Role.AUDITOR)
    page = await browsing.page()
    await sign_in(page, auditor.email)
    assert await page.locator("#create").count() == 0
    assert "not create" in (await page.text_content("#create-not-allowed") or "")

    # A hand-made request (with a valid token) is refused with a message, not a trace.
    response = await page.request.post(
        "/dashboard/keys", form={"name": "Sneaky", "_csrf_token": await csrf_token_of(page)}
    )
    assert response.status == 403
    assert "your role (auditor) does not allow you to create API keys" in await response.text()
    assert dashboard_server.registry.list_keys(org.id) == []


async def test_a_developer_cannot_revoke_a_key_someone_else_created(
    dashboard_server: DashboardServer, browsing: Browsing
) -> None:
    org = dashboard_server.org()
    developer = dashboard_server.user(org, Role.DEVELOPER)
    issued = dashboard_server.registry.create_key(
        org.id, name="Admin's key", env=Environment.LIVE, key_type=KeyType.SECRET, actor=OPERATOR
    )
    page = await browsing.page()
    await sign_in(page, developer.email)
    await page.click("text=Admin's key")
    assert await page.locator("text=Revoke…").count() == 0  # not offered
    assert "changes only the keys they created" in (await page.text_content("#no-actions") or "")
    await page.goto(f"/dashboard/keys/key_{issued.key.id.hex}/revoke")  # asked for anyway
    assert "Not allowed" in (await page.text_content("h1") or "")
    message = await page.text_content("#error-message") or ""
    assert "revoke the API keys they created, not others" in message
    await browsing.shoot(page, "forbidden")

    response = await page.request.post(
        f"/dashboard/keys/key_{issued.key.id.hex}/revoke",
        form={"_csrf_token": await csrf_token_of(page)},
    )
    assert response.status == 403
    assert not dashboard_server.registry.get_key(issued.key.id).is_revoked


async def test_a_developer_revokes_a_key_they_created(
    dashboard_server: DashboardServer, browsing: Browsing
) -> None:
    org = dashboard_server.org()
    developer = dashboard_server.user(org, Role.DEVELOPER)
    page = await browsing.page()
    await sign_in(page, developer.email)
    await page.fill("#create input[name=name]", "Mine")
    await page.click("#create button[type=submit]")
    await page.wait_for_selector("#new-key")
    await page.click("#keys-body >> text=Mine")
    await page.click("text=Revoke…")
    await page.click("button:has-text('Revoke key')")
    await page.wait_for_url("**/dashboard/keys")
    (key,) = dashboard_server.registry.list_keys(org.id)
    assert key.is_revoked and key.revoked_by == developer.actor_name


async def test_another_organizations_key_is_not_found_and_cannot_be_revoked(
    dashboard_server: DashboardServer, browsing: Browsing
) -> None:
    ours, theirs = dashboard_server.org(), dashboard_server.org()
    owner = dashboard_server.user(ours, Role.OWNER)
    issued = dashboard_server.registry.create_key(
        theirs.id, name="Theirs", env=Environment.LIVE, key_type=KeyType.SECRET, actor=OPERATOR
    )
    page = await browsing.page()
    await page.goto("/dashboard/")
    assert page.url.endswith("/dashboard/login")  # the front door asks to sign in first
    await sign_in(page, owner.email)
    key_path = f"/dashboard/keys/key_{issued.key.id.hex}"
    response = await page.goto(key_path)
    assert response is not None and response.status == 404
    assert "Theirs" not in await page.content()
    revoke = await page.request.post(
        f"{key_path}/revoke", form={"_csrf_token": await csrf_token_of(page)}
    )
    assert revoke.status == 404
    assert not dashboard_server.registry.get_key(issued.key.id).is_revoked
