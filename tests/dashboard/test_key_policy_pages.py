"""Settings > Key policy and the keys' standing against it, over HTTP (in-process, no browser):
the form and its refusals, roles through the access policy, policy errors on create and roll,
each key's policy status, and a roll that revokes the old key once idle.

The browser test (`test_key_policy_in_browser.py`) watches the old key's last use live.
"""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

import httpx
import pytest

from api.dashboard.security import SESSION_COOKIE, SESSION_STORE
from api.dashboard.views import LIVE_FOR_SECONDS, key_view
from application.key_lifetimes import KeyLifetimes
from application.key_management import ManagedKey
from dashboard.asgi import Dashboard, sign_in
from domain.actors import OPERATOR
from domain.api_key import ApiKey
from domain.ids import format_key_id
from domain.key_format import Environment, KeyType
from domain.lifetime_policy import ExpiryRequirement, LifetimePolicy
from domain.organization import Organization
from domain.plans import Plan
from domain.user import Role

PATH = "/dashboard/settings/key-policy"
HTMX = {"HX-Request": "true"}
#: The form as sent when every rule is off.
OFF = {"max_lifetime_days": "", "require_expiry": "none", "revoke_unused_after_days": ""}


class Use(NamedTuple):
    at: float
    addr: str | None


@pytest.fixture
async def owner(dashboard: Dashboard) -> AsyncIterator[tuple[httpx.AsyncClient, str, Organization]]:
    """A signed-in owner of a new organization: its client, CSRF token and organization."""
    org = dashboard.org()
    user = dashboard.user(org, Role.OWNER)
    async with dashboard.client() as client:
        yield client, await sign_in(client, user.email), org


def policy_of(dashboard: Dashboard, org: Organization) -> LifetimePolicy:
    policy: LifetimePolicy = dashboard.registry.get_organization(org.id).lifetime_policy
    return policy


def set_policy(dashboard: Dashboard, org: Organization, policy: LifetimePolicy) -> None:
    KeyLifetimes(dashboard.registry).set_policy(OPERATOR, org.id, policy)


def new_key(
    dashboard: Dashboard, org: Organization, name: str, expires_at: datetime | None = None
) -> ApiKey:
    """A live secret key the operator made (before any policy the test then sets)."""
    issued = dashboard.registry.create_key(
        org.id,
        name=name,
        env=Environment.LIVE,
        key_type=KeyType.SECRET,
        actor=OPERATOR,
        expires_at=expires_at,
    )
    key: ApiKey = issued.key
    return key


def value_of(page: httpx.Response, name: str) -> str:
    found = re.search(rf'name="{name}" value="([^"]*)"', page.text)
    assert found, f"no field {name}"
    return found.group(1)


def live_since(page: httpx.Response, key_id: str) -> int | None:
    """When the page's live last use started (what its poll sends), None when it polls not."""
    poll = rf'hx-get="/dashboard/keys/{key_id}/last-use\?since=(\d+)" hx-trigger="every 3s"'
    found = re.search(poll, page.text)
    return None if found is None else int(found.group(1))


def status_cell(page: httpx.Response, key: ApiKey) -> str:
    """The keys table's row of `key`, as text without tags."""
    row = re.search(rf'<tr[^>]*data-key-id="{format_key_id(key.id)}".*?</tr>', page.text, re.S)
    assert row, "the key is not listed"
    return re.sub(r"<[^>]+>", " ", row.group(0))


async def test_an_owner_sets_the_policy_and_sees_it_in_force(
    dashboard: Dashboard, owner: tuple[httpx.AsyncClient, str, Organization]
) -> None:
    client, token, org = owner
    shown = await client.get(PATH)
    assert shown.status_code == 200
    assert 'aria-current="page">Key policy</a>' in shown.text  # Settings' menu names it
    assert 'id="policy-empty"' in shown.text and 'id="policy-form"' in shown.text
    assert "api_key.unused" in shown.text and "<code>unused</code>" in shown.text

    saved = await client.post(
        PATH,
        data={
            "max_lifetime_days": "90",
            "require_expiry": "live",
            "revoke_unused_after_days": "60",
            "_csrf_token": token,
        },
    )
    assert saved.status_code == 303 and saved.headers["location"] == PATH
    assert policy_of(dashboard, org) == LifetimePolicy(
        max_lifetime=timedelta(days=90),
        require_expiry=ExpiryRequirement.LIVE,
        revoke_unused_after=timedelta(days=60),
    )
    again = await client.get(PATH)
    assert "Saved the key policy" in again.text
    assert 'id="policy-empty"' not in again.text
    assert "90 days" in again.text and "60 days" in again.text
    assert value_of(again, "max_lifetime_days") == "90"
    assert value_of(again, "revoke_unused_after_days") == "60"
    assert 'value="live" checked' in again.text

    # Emptied again: every rule off.
    cleared = await client.post(PATH, data={**OFF, "_csrf_token": token})
    assert cleared.status_code == 303
    assert policy_of(dashboard, org).is_empty


@pytest.mark.parametrize("role", [Role.AUDITOR, Role.DEVELOPER])
async def test_readers_see_the_policy_but_cannot_change_it(
    dashboard: Dashboard, role: Role
) -> None:
    org = dashboard.org()
    set_policy(dashboard, org, LifetimePolicy(max_lifetime=timedelta(days=30)))
    reader = dashboard.user(org, role)
    async with dashboard.client() as client:
        token = await sign_in(client, reader.email)
        shown = await client.get(PATH)
        assert shown.status_code == 200 and "30 days" in shown.text
        assert 'id="policy-form"' not in shown.text and 'id="policy-read-only"' in shown.text

        refused = await client.post(
            PATH, data={**OFF, "max_lifetime_days": "5", "_csrf_token": token}
        )
        assert refused.status_code == 403
        assert "change the organization&#39;s key policy" in refused.text
    assert policy_of(dashboard, org) == LifetimePolicy(max_lifetime=timedelta(days=30))


async def test_invalid_values_are_explained_in_the_form_as_they_were_typed(
    dashboard: Dashboard, owner: tuple[httpx.AsyncClient, str, Organization]
) -> None:
    client, token, org = owner
    cases = [
        ({"max_lifetime_days": "ninety"}, "max lifetime: write a whole number of days"),
        ({"max_lifetime_days": "5000"}, "max_lifetime must be from 1 hour to 3650 days"),
        ({"revoke_unused_after_days": "1.5"}, "revoke unused keys after: write a whole number"),
        ({"revoke_unused_after_days": "12h"}, "revoke_unused_after must be from 1 day"),
        ({"require_expiry": "sometimes"}, "require an expiry: choose no, live keys or all keys"),
    ]
    for typed, message in cases:
        refused = await client.post(PATH, data={**OFF, **typed, "_csrf_token": token})
        assert refused.status_code == 422, (typed, refused.text[:300])
        assert 'id="error-message"' in refused.text and message in refused.text, typed
        for name, value in typed.items():
            if name != "require_expiry":
                assert value_of(refused, name) == value  # kept, to be corrected
    assert policy_of(dashboard, org).is_empty


async def test_creating_a_key_that_breaks_the_policy_shows_the_policy_error(
    dashboard: Dashboard, owner: tuple[httpx.AsyncClient, str, Organization]
) -> None:
    client, token, org = owner
    set_policy(dashboard, org, LifetimePolicy(max_lifetime=timedelta(days=30)))
    never = {"name": "Forever", "env": "live", "expires_in_days": "0", "_csrf_token": token}
    refused = await client.post("/dashboard/keys", data=never)
    assert refused.status_code == 422
    assert "Not created: the organization&#39;s policy limits keys to 30 days" in refused.text
    refused = await client.post("/dashboard/keys", data=never, headers=HTMX)
    assert refused.status_code == 422 and 'id="error-message"' in refused.text
    assert "policy limits keys to 30 days" in refused.text
    assert dashboard.registry.list_keys(org.id) == []

    made = await client.post("/dashboard/keys", data={**never, "expires_in_days": "30"})
    assert made.status_code == 200 and 'id="new-key"' in made.text


async def test_each_active_key_shows_its_standing_against_the_policy(
    dashboard: Dashboard, owner: tuple[httpx.AsyncClient, str, Organization]
) -> None:
    client, _, org = owner
    old = new_key(dashboard, org, "From before")
    listing = await client.get("/dashboard/keys")
    assert "policy:" not in listing.text  # no policy, nothing said of one

    set_policy(dashboard, org, LifetimePolicy(require_expiry=ExpiryRequirement.LIVE))
    soon = datetime.now(UTC) + timedelta(days=10)
    fine = new_key(dashboard, org, "Expiring", soon)
    listing = await client.get("/dashboard/keys")
    assert "policy: issued before the policy: it never expires" in status_cell(listing, old)
    assert "policy: ok" in status_cell(listing, fine)

    page = await client.get(f"/dashboard/keys/{format_key_id(old.id)}")
    assert 'id="key-policy"' in page.text and "it never expires" in page.text
    # Rolling it keeps its (absent) expiry unless told otherwise, which the policy refuses.
    assert 'id="roll-note"' in page.text


async def test_a_roll_arranges_the_old_keys_revocation_once_idle_and_its_page_follows_it(
    dashboard: Dashboard, owner: tuple[httpx.AsyncClient, str, Organization]
) -> None:
    client, token, org = owner
    key = new_key(dashboard, org, "Billing")
    key_id = format_key_id(key.id)
    rolled = await client.post(
        f"/dashboard/keys/{key_id}/roll",
        data={"grace_seconds": "3600", "revoke_when_idle_minutes": "15", "_csrf_token": token},
        headers=HTMX,
    )
    assert rolled.status_code == 200, rolled.text
    assert 'id="new-key"' in rolled.text and 'id="follow-old"' in rolled.text
    assert "revoked once unused for 15 minutes" in rolled.text
    stored = dashboard.registry.get_key(key.id)
    assert stored.idle_revocation is not None
    assert stored.idle_revocation[1] == timedelta(minutes=15)

    page = await client.get(f"/dashboard/keys/{key_id}")
    assert 'id="live-last-use"' in page.text
    since = live_since(page, key_id)
    assert since is not None and abs(since - time.time()) < 60  # followed from the page's load
    assert "will be revoked once unused for 15 minutes" in page.text

    fragment = await client.get(f"/dashboard/keys/{key_id}/last-use?since={since}", headers=HTMX)
    assert fragment.status_code == 200 and "<html" not in fragment.text
    assert "{#" not in fragment.text
    assert 'id="grace-last-used"' in fragment.text and ">never<" in fragment.text
    assert live_since(fragment, key_id) == since  # asks again, with the same start

    # Revoked: the fragment says so and asks no more.
    dashboard.registry.revoke_key(key.id, actor=OPERATOR, reason="done")
    fragment = await client.get(f"/dashboard/keys/{key_id}/last-use", headers=HTMX)
    assert 'id="grace-over"' in fragment.text and "revoked" in fragment.text
    assert "hx-trigger" not in fragment.text


async def rolled_old_key(client: httpx.AsyncClient, token: str, key: ApiKey) -> str:
    """Roll `key` with an hour's grace; the old key's id (expiring now)."""
    key_id = format_key_id(key.id)
    rolled = await client.post(
        f"/dashboard/keys/{key_id}/roll",
        data={"grace_seconds": "3600", "_csrf_token": token},
        headers=HTMX,
    )
    assert rolled.status_code == 200, rolled.text
    return key_id


async def test_the_live_last_use_pauses_after_half_an_hour_whatever_the_page_sends(
    dashboard: Dashboard, owner: tuple[httpx.AsyncClient, str, Organization]
) -> None:
    client, token, org = owner
    key_id = await rolled_old_key(client, token, new_key(dashboard, org, "Billing"))

    async def fragment(since: str) -> httpx.Response:
        answer = await client.get(f"/dashboard/keys/{key_id}/last-use?since={since}", headers=HTMX)
        assert answer.status_code == 200, answer.text
        return answer

    # Started 29 minutes ago: still live, and the start is kept.
    started = int(time.time()) - LIVE_FOR_SECONDS + 60
    assert live_since(await fragment(str(started)), key_id) == started
    # Started 30 minutes ago: paused, asking no more, saying how to resume.
    paused = await fragment(str(int(time.time()) - LIVE_FOR_SECONDS))
    assert live_since(paused, key_id) is None and "hx-trigger" not in paused.text
    assert 'data-live="off"' in paused.text and 'id="live-paused"' in paused.text
    assert "Live updates paused after 30 minutes" in paused.text
    assert f'href="/dashboard/keys/{key_id}">Reload the page</a> to resume' in paused.text
    assert 'id="grace-last-used"' in paused.text  # the last use is still shown

    # A start in the future (or absurd, or unreadable) is taken as now and sent on as now:
    # no poll lasts past 30 minutes from now.
    for forged in ("99999999999", "9" * 40, "-5", "1e12", "soon", "", "\uff11\uff12"):
        before = int(time.time())
        since = live_since(await fragment(forged), key_id)
        assert since is not None and before <= since <= time.time(), forged


async def test_polling_the_live_last_use_does_not_renew_the_session(
    dashboard: Dashboard, owner: tuple[httpx.AsyncClient, str, Organization]
) -> None:
    client, token, org = owner
    key_id = await rolled_old_key(client, token, new_key(dashboard, org, "Billing"))
    store = dashboard.process.litestar.stores.get(SESSION_STORE)
    session_id = client.cookies[SESSION_COOKIE]
    data = await store.get(session_id)
    assert data is not None
    await store.set(session_id, data, expires_in=100)  # as if idle for most of the timeout

    polled = await client.get(f"/dashboard/keys/{key_id}/last-use", headers=HTMX)
    assert polled.status_code == 200 and live_since(polled, key_id) is not None
    assert SESSION_COOKIE not in polled.headers.get("set-cookie", "")
    left = await store.expires_in(session_id)
    assert left is not None and left <= 100  # not renewed: the idle timeout still runs

    # Any other page is activity: it renews the session.
    assert (await client.get(f"/dashboard/keys/{key_id}")).status_code == 200
    left = await store.expires_in(session_id)
    assert left is not None and left > 3600


async def test_roll_refusals_are_shown_with_the_form(
    dashboard: Dashboard, owner: tuple[httpx.AsyncClient, str, Organization]
) -> None:
    client, token, org = owner
    key = new_key(dashboard, org, "Billing")
    roll = f"/dashboard/keys/{format_key_id(key.id)}/roll"
    too_idle = {"grace_seconds": "3600", "revoke_when_idle_minutes": "120", "_csrf_token": token}
    refused = await client.post(roll, data=too_idle, headers=HTMX)
    assert refused.status_code == 422
    assert "Not rolled: revoke_when_idle must be at least 1 minute" in refused.text
    refused = await client.post(roll, data={**too_idle, "revoke_when_idle_minutes": "soon"})
    assert refused.status_code == 422 and "<html" in refused.text  # the page, with the form
    assert 'id="error-message"' in refused.text and "a whole number of minutes" in refused.text

    # The policy asks new keys to expire within 30 days: the old key's "never" is refused.
    set_policy(dashboard, org, LifetimePolicy(max_lifetime=timedelta(days=30)))
    plain = {"grace_seconds": "3600", "_csrf_token": token}
    refused = await client.post(roll, data=plain, headers=HTMX)
    assert refused.status_code == 422
    assert "Not rolled: the organization&#39;s policy limits keys to 30 days" in refused.text
    assert dashboard.registry.get_key(key.id).successor_id is None

    rolled = await client.post(roll, data={**plain, "expires_in_days": "30"}, headers=HTMX)
    assert rolled.status_code == 200 and 'id="new-key"' in rolled.text
    successor = dashboard.registry.get_key(key.id).successor_id
    assert successor is not None
    assert dashboard.registry.get_key(successor).expires_at is not None


def test_a_key_unused_for_long_shows_when_it_will_be_revoked_unless_used() -> None:
    org = Organization.register("Acme", Plan.PRO, OPERATOR)
    org.set_lifetime_policy(LifetimePolicy(revoke_unused_after=timedelta(days=90)), OPERATOR)
    key, _ = ApiKey.issue(
        org,
        name="Quiet",
        env=Environment.LIVE,
        key_type=KeyType.SECRET,
        pepper=b"a-server-side-pepper-of-32-bytes",
        actor=OPERATOR,
        now=datetime.now(UTC),
    )
    issued: datetime = key.created_on
    # Unused for 85 of the 90 days and not warned yet: the sweep's warning (sent now) gives
    # the key the whole warning lead (7 days), so it goes on day 92, not on day 90.
    later = issued + timedelta(days=85)
    warned_for = (later + timedelta(days=7)).date().isoformat()
    shown = key_view(ManagedKey(key, org), later, {})
    assert shown.policy == (f"unused for 85 days: to be revoked on {warned_for} unless used",)
    # Well before the warning is due (day 83), nothing is said yet.
    assert key_view(ManagedKey(key, org), issued + timedelta(days=80), {}).policy == ()
    # Used a day ago: nothing to say.
    used = Use((later - timedelta(days=1)).timestamp(), "203.0.113.9")
    assert key_view(ManagedKey(key, org, used), later, {}).policy == ()
    # Without a policy, nothing is said of one.
    plain = Organization.register("Plain", Plan.PRO, OPERATOR)
    assert key_view(ManagedKey(key, plain), later, {}).policy is None
