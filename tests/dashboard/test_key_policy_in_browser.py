"""Settings > Key policy in Chromium over real HTTPS, with the audit worker recording last use.

An owner sets the policy in its form and sees it in force; the keys list shows each key's
standing against it; a key is rolled with "revoke once unused for 15 minutes", and the old
key's page shows its last use changing live (htmx polling) when a real API request is made
with the old key. Screenshots: `key-policy-settings`, `key-grace-live-last-use` (copied to
docs/screenshots for the README).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from playwright.async_api import Page, Route

from api.dashboard.views import LIVE_FOR_SECONDS
from dashboard.harness import MOBILE, Browsing, DashboardServer, poll, sign_in
from domain.actors import OPERATOR
from domain.key_format import Environment, KeyType
from domain.lifetime_policy import ExpiryRequirement, LifetimePolicy
from domain.user import Role

CSP_WATCH = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", (e) => {
  window.__cspViolations.push(e.violatedDirective + " " + (e.blockedURI || "inline"));
});
"""
#: The address the old key's request claims (through the trusted proxy header).
CALLER = "203.0.113.77"
#: The old key's page's polls for its last use.
LAST_USE = re.compile(r"/dashboard/keys/[^/]+/last-use\?")


async def save(page: Page, artifacts: Path, name: str) -> None:
    """The whole page at desktop size, as `name`.png among the run's screenshots."""
    artifacts.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(artifacts / f"{name}.png"), full_page=True)


async def no_sideways_scroll(page: Page) -> int:
    return int(
        await page.evaluate(
            "document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
    )


async def polls_stopped(page: Page, polls: list[str]) -> bool:
    """Whether no poll goes out for longer than the 3 s between two."""
    asked = len(polls)
    await page.wait_for_timeout(4500)
    return len(polls) == asked


async def polls_rewritten(page: Page, polls: list[str], rewrite: Callable[[str], str]) -> None:
    """From now on, each poll is sent (to the real server) as `rewrite` makes its URL."""

    async def rewritten(route: Route) -> None:
        polls.append(route.request.url)
        await route.continue_(url=rewrite(route.request.url))

    await page.unroute(LAST_USE)
    await page.route(LAST_USE, rewritten)


async def live_updates_stop(page: Page) -> None:
    """The old key's page stops polling when its live updates are over (started more than 30
    minutes ago), and when a poll is answered with an error; reloading it polls again."""
    polls: list[str] = []
    long_ago = int(time.time()) - LIVE_FOR_SECONDS - 60
    await polls_rewritten(page, polls, lambda url: re.sub(r"since=\d+", f"since={long_ago}", url))
    await page.wait_for_selector("#live-last-use[data-live=off] #live-paused")
    assert "reload the page to resume" in (await page.text_content("#live-paused") or "").lower()
    assert await page.get_attribute("#live-last-use", "hx-trigger") is None
    assert await polls_stopped(page, polls), "the page kept polling once paused"

    await page.unroute(LAST_USE)
    await page.reload()
    await page.wait_for_selector("#live-last-use[data-live=on]")
    # A key it may not see (404): the error is swapped in for the card, which asked no more.
    nobody = "key_" + "0" * 32
    await polls_rewritten(page, polls, lambda url: re.sub(r"key_[0-9a-f]{32}", nobody, url))
    await page.wait_for_selector("#error-message")
    assert await page.locator("#live-last-use").count() == 0
    assert await polls_stopped(page, polls), "the page kept polling after an error"
    await page.unroute(LAST_USE)


async def test_an_owner_sets_the_policy_sees_each_keys_standing_and_follows_a_roll_live(
    dashboard_server: DashboardServer, browsing: Browsing, artifacts: Path
) -> None:
    server = dashboard_server
    org = server.org()
    owner = server.user(org, Role.OWNER)
    legacy = server.registry.create_key(
        org.id,
        name="Legacy batch job",
        env=Environment.LIVE,
        key_type=KeyType.SECRET,
        actor=OPERATOR,
    ).key
    page = await browsing.page()
    await page.add_init_script(CSP_WATCH)
    await sign_in(page, owner.email)

    # Settings > Key policy: set the three rules in the form.
    await page.click("nav >> text=Key policy")
    await page.wait_for_url("**/dashboard/settings/key-policy")
    assert await page.locator("#policy-empty").count() == 1
    await page.fill("input[name=max_lifetime_days]", "90")
    await page.check("input[name=require_expiry][value=live]")
    await page.fill("input[name=revoke_unused_after_days]", "60")
    await page.click("#policy-form button[type=submit]")
    await page.wait_for_selector(".flash-success")
    assert "Saved the key policy" in (await page.text_content(".flash-success") or "")
    rules = await page.text_content("#policy-rules") or ""
    assert "90 days" in rules and "60 days" in rules
    assert await page.input_value("input[name=max_lifetime_days]") == "90"
    stored = server.registry.get_organization(org.id).lifetime_policy
    assert stored == LifetimePolicy(
        max_lifetime=timedelta(days=90),
        require_expiry=ExpiryRequirement.LIVE,
        revoke_unused_after=timedelta(days=60),
    )
    await save(page, artifacts, "key-policy-settings")

    # Settings > API Keys: a key that would live for ever is refused, naming the policy.
    await page.click("nav >> text=API Keys")
    await page.fill("#create input[name=name]", "Payments")
    await page.click("#create button[type=submit]")
    refusal = await page.wait_for_selector("#reveal #error-message")
    assert "policy limits keys to 90 days" in (await refusal.text_content() or "")
    await page.select_option("#create select[name=expires_in_days]", "30")
    await page.click("#create button[type=submit]")
    secret = (await page.text_content("#new-key") or "").strip()
    assert secret.startswith("ak_live_")

    # Each active key's standing: the key from before the policy breaks it, the new one not.
    legacy_row = page.locator(f"#keys-body tr[data-key-id=key_{legacy.id.hex}]")
    assert "issued before the policy: it never expires" in (await legacy_row.text_content() or "")
    payments_row = page.locator("#keys-body tr", has_text="Payments")
    assert "policy: ok" in (await payments_row.text_content() or "")
    await save(page, artifacts, "key-policy-keys")

    # Roll it: the old key goes once unused for 15 minutes (or in an hour at the latest).
    await page.click("#keys-body a.key-name >> text=Payments")
    await page.select_option("select[name=grace_seconds]", "3600")
    await page.fill("input[name=revoke_when_idle_minutes]", "15")
    await page.click("text=Roll key")
    new_secret = (await page.text_content("#new-key") or "").strip()
    assert new_secret.startswith("ak_live_") and new_secret != secret
    await page.click("#follow-old")
    await page.wait_for_selector("#live-last-use[data-status=expiring]")
    idle = await page.text_content("#idle-revocation") or ""
    assert "will be revoked once unused for 15 minutes" in idle
    assert (await page.text_content("#grace-last-used") or "").strip() == "never"

    # A real request with the old key: its page shows it without being reloaded.
    await page.evaluate("window.__stillHere = true")
    async with server.http() as http:
        response = await http.get(
            "/v1/affiliates",
            headers={"Authorization": f"Bearer {secret}", "X-Forwarded-For": CALLER},
        )
        assert response.status_code == 200, response.text

    async def shown() -> Any:
        text = (await page.text_content("#grace-last-used") or "").strip()
        return text if text != "never" else None

    assert await poll(shown, timeout=45), "the old key's last use never showed on its page"
    assert await page.evaluate("window.__stillHere === true")  # updated in place, no reload
    assert (await page.text_content("#grace-last-addr") or "").strip() == CALLER
    assert await page.get_attribute("#live-last-use", "hx-trigger") == "every 3s"  # still live
    await save(page, artifacts, "key-grace-live-last-use")
    await live_updates_stop(page)

    assert await page.evaluate("window.__cspViolations") == []
    await page.set_viewport_size(MOBILE)
    for name, path in (
        ("key-policy-settings", "/dashboard/settings/key-policy"),
        ("key-grace", page.url),
    ):
        await page.goto(path)
        overflow = await no_sideways_scroll(page)
        assert overflow <= 0, f"{path} scrolls sideways by {overflow}px at 390 px wide"
        await save(page, artifacts, f"{name}-mobile")
