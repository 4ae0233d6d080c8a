"""The audit log in the browser: requests with the key that made them, filtered."""

from __future__ import annotations

from typing import Any

from dashboard.harness import Browsing, DashboardServer, poll, sign_in
from domain.actors import OPERATOR
from domain.key_format import Environment, KeyType
from domain.plans import Permission
from domain.user import Role


async def test_the_audit_log_filters_requests_by_status_and_key(
    dashboard_server: DashboardServer, browsing: Browsing
) -> None:
    org = dashboard_server.org()
    auditor = dashboard_server.user(org, Role.AUDITOR)
    reader = dashboard_server.registry.create_key(
        org.id,
        name="Reader",
        env=Environment.LIVE,
        key_type=KeyType.SECRET,
        actor=OPERATOR,
        permissions=frozenset({Permission.AFFILIATES_READ}),
    )
    other = dashboard_server.registry.create_key(
        org.id, name="Other", env=Environment.LIVE, key_type=KeyType.SECRET, actor=OPERATOR
    )
    async with dashboard_server.http() as http:

        async def get(secret: str, path: str) -> int:
            response = await http.get(path, headers={"Authorization": f"Bearer {secret}"})
            return response.status_code

        async def known() -> bool:  # the API process learns of new keys from the bus
            return await get(other.secret, "/v1/api-keys/current") == 200

        assert await poll(known, timeout=15)
        assert await get(reader.secret, "/v1/affiliates") == 200
        assert await get(reader.secret, "/v1/api-keys") == 403  # lacks api_keys:read

    page = await browsing.page()
    await sign_in(page, auditor.email)

    async def rows(query: str) -> Any:
        await page.goto(f"/dashboard/audit?{query}")
        texts = await page.locator("#audit-body tr").all_text_contents()
        return [t for t in texts if "/v1/" in t]

    all_rows = await poll(lambda: _at_least(rows("period=3600"), 3), timeout=30)
    assert all_rows, "the requests never reached the audit log"
    refused = await rows("status=4xx&period=3600")
    assert len(refused) == 1 and "403" in refused[0] and "Reader" in refused[0]
    by_key = await rows(f"key=key_{other.key.id.hex}&period=3600")
    assert len(by_key) == 1 and "Other" in by_key[0] and "/v1/api-keys/current" in by_key[0]


async def _at_least(pending: Any, count: int) -> Any:
    found = await pending
    return found if len(found) >= count else None
