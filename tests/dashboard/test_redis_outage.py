"""While Redis is down the dashboard answers a clear 503 page, never a 500, and recovers by itself.

Sessions and sign-in locks live in Redis when `ICODRIP_REDIS_URL` is set; they have no
per-process fallback (ADR 0008), so sign-in stops, before any password is checked, with a page
that says why. The API itself keeps answering (tests/api/test_redis_outage.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from litestar.stores.redis import RedisStore
from redis.exceptions import ResponseError

from api.dashboard.security import SESSION_COOKIE
from dashboard.asgi import (
    PASSWORD,
    Dashboard,
    csrf_token_in,
    missing_headers,
    post_login,
    serving_dashboard,
    settings_for,
    sign_in,
)
from support.servers import RedisServer


@pytest.fixture
async def dashboard_on_private_redis(
    tmp_path: Path, private_redis: RedisServer
) -> AsyncIterator[Dashboard]:
    async with serving_dashboard(settings_for(tmp_path / "data", private_redis.url)) as dash:
        yield dash


def assert_unavailable_page(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["content-type"].startswith("text/html")
    assert "Dashboard unavailable" in response.text
    assert "Nothing was changed" in response.text
    assert "Traceback" not in response.text and "Redis" not in response.text
    assert missing_headers(response) == []


async def test_sign_in_while_redis_is_down_answers_a_503_page_for_right_and_wrong_passwords(
    dashboard_on_private_redis: Dashboard, private_redis: RedisServer
) -> None:
    dash = dashboard_on_private_redis
    user = dash.user()
    async with dash.client() as browser:
        token = csrf_token_in(await browser.get("/dashboard/login"))
        private_redis.kill()

        right = await post_login(browser, user.email, PASSWORD, token)
        wrong = await post_login(browser, user.email, "not the password", token)

        assert_unavailable_page(right)
        assert_unavailable_page(wrong)
        assert SESSION_COOKIE not in right.headers.get("set-cookie", "")


async def test_a_signed_in_user_gets_a_503_page_while_redis_is_down_and_can_sign_in_after(
    dashboard_on_private_redis: Dashboard, private_redis: RedisServer
) -> None:
    dash = dashboard_on_private_redis
    user = dash.user()
    async with dash.client() as browser:
        token = await sign_in(browser, user.email)
        private_redis.kill()

        assert_unavailable_page(await browser.get("/dashboard/keys/"))
        assert_unavailable_page(
            await browser.post("/dashboard/logout", data={"_csrf_token": token})
        )

        private_redis.start()  # empty: the sessions of before are gone with it
        await asyncio.sleep(0.2)
        again = await browser.get("/dashboard/keys/")
        assert again.status_code == 303 and again.headers["location"] == "/dashboard/login"
        async with dash.client() as fresh:
            await sign_in(fresh, user.email)


async def test_a_session_the_store_cannot_save_gives_a_503_page_and_no_session_cookie(
    dashboard_on_private_redis: Dashboard, monkeypatch: pytest.MonkeyPatch
) -> None:
    dash = dashboard_on_private_redis
    user = dash.user()
    saving = RedisStore.set

    async def refuse_sessions(
        store: RedisStore, key: str, value: str | bytes, expires_in: int | None = None
    ) -> None:
        if store.namespace and store.namespace.endswith("sessions"):
            raise ResponseError("OOM command not allowed when used memory > 'maxmemory'.")
        await saving(store, key, value, expires_in)

    monkeypatch.setattr(RedisStore, "set", refuse_sessions)  # reads work, session writes fail
    async with dash.client() as browser:
        token = csrf_token_in(await browser.get("/dashboard/login"))
        answer = await post_login(browser, user.email, PASSWORD, token)

        assert_unavailable_page(answer)
        assert SESSION_COOKIE not in answer.headers.get("set-cookie", "")
        assert SESSION_COOKIE not in browser.cookies
