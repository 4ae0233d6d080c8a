"""What a role and a plan allow in the dashboard is what the API allows (issue 10, 3 and 13)."""

from __future__ import annotations

from adapters.users import hash_password
from dashboard.asgi import PASSWORD, Dashboard, sign_in
from domain.actors import OPERATOR
from domain.key_format import Environment, KeyType
from domain.organization import Organization
from domain.plans import Plan
from domain.user import Role, User


def member(dashboard: Dashboard, org: Organization, role: Role) -> User:
    return dashboard.users.register_user(
        org.id,
        email=f"{role.value}-{org.id.hex[:8]}@example.com",
        role=role,
        password_hash=hash_password(PASSWORD),
        actor=OPERATOR,
    )


def owners_key(dashboard: Dashboard, org: Organization) -> str:
    issued = dashboard.registry.create_key(
        org.id, name="Owner's key", env=Environment.LIVE, key_type=KeyType.SECRET, actor=OPERATOR
    )
    return f"key_{issued.key.id.hex}"


async def test_a_developer_cannot_roll_a_key_someone_else_created(dashboard: Dashboard) -> None:
    org = dashboard.org()
    key_id = owners_key(dashboard, org)
    developer = member(dashboard, org, Role.DEVELOPER)
    async with dashboard.client() as browser:
        token = await sign_in(browser, developer.email)
        page = await browser.get(f"/dashboard/keys/{key_id}")
        rolled = await browser.post(
            f"/dashboard/keys/{key_id}/roll", data={"grace_seconds": "0", "_csrf_token": token}
        )

    assert page.status_code == 200
    assert 'action="/dashboard/keys/' + key_id + '/roll"' not in page.text  # not offered
    assert rolled.status_code == 403, rolled.text
    assert "a developer may roll the API keys they created, not others" in rolled.text
    assert "ak_live_" not in rolled.text
    key = dashboard.registry.get_key(dashboard.registry.list_keys(org.id)[0].id)
    assert key.successor_id is None and not key.is_revoked


async def test_a_developer_rolls_a_key_they_created(dashboard: Dashboard) -> None:
    org = dashboard.org()
    developer = member(dashboard, org, Role.DEVELOPER)
    async with dashboard.client() as browser:
        token = await sign_in(browser, developer.email)
        await browser.post(
            "/dashboard/keys/", data={"name": "Mine", "env": "live", "_csrf_token": token}
        )
        (mine,) = dashboard.registry.list_keys(org.id)
        rolled = await browser.post(
            f"/dashboard/keys/key_{mine.id.hex}/roll",
            data={"grace_seconds": "3600", "_csrf_token": token},
        )

    assert rolled.status_code == 200, rolled.text
    assert dashboard.registry.get_key(mine.id).successor_id is not None


async def test_a_free_plan_organization_is_not_shown_the_request_audit_log(
    dashboard: Dashboard,
) -> None:
    free = dashboard.registry.register_organization("Free Co", Plan.FREE, OPERATOR)
    pro = dashboard.registry.register_organization("Pro Co", Plan.PRO, OPERATOR)
    free_owner, pro_owner = member(dashboard, free, Role.OWNER), member(dashboard, pro, Role.OWNER)
    async with dashboard.client() as free_browser, dashboard.client() as pro_browser:
        await sign_in(free_browser, free_owner.email)
        await sign_in(pro_browser, pro_owner.email)
        refused = await free_browser.get("/dashboard/audit")
        shown = await pro_browser.get("/dashboard/audit")

    assert refused.status_code == 403, refused.text
    assert "plan does not include" in refused.text
    assert shown.status_code == 200, shown.text
