"""Every dashboard response carries the security headers, error pages included (issue 10, #11)."""

from __future__ import annotations

import httpx
import pytest

import api.dashboard.sign_in_pages
from api.dashboard.security import FAILED_SIGN_INS_PER_EMAIL
from dashboard.asgi import (
    Dashboard,
    csrf_token_in,
    missing_headers,
    post_login,
    sign_in,
)
from support.windows import early_in_a_window


async def test_every_dashboard_response_carries_the_security_headers_errors_included(
    dashboard: Dashboard, monkeypatch: pytest.MonkeyPatch
) -> None:
    answers: dict[str, tuple[int, httpx.Response]] = {}
    user = dashboard.user()
    async with dashboard.client() as anonymous:
        answers["sign-in page"] = (200, await anonymous.get("/dashboard/login"))
        answers["front door"] = (303, await anonymous.get("/dashboard/"))
        answers["static file"] = (200, await anonymous.get("/dashboard/static/htmx.min.js"))
        answers["unknown page"] = (404, await anonymous.get("/dashboard/no-such-page"))
        answers["unknown file"] = (404, await anonymous.get("/dashboard/static/nope.js"))
        answers["method not allowed"] = (405, await anonymous.put("/dashboard/login"))
        answers["csrf refusal"] = (403, await anonymous.post("/dashboard/logout"))
        answers["htmx, signed out"] = (
            401,
            await anonymous.get("/dashboard/keys/", headers={"HX-Request": "true"}),
        )
    async with dashboard.client() as guesser:
        token = csrf_token_in(await guesser.get("/dashboard/login"))
        await early_in_a_window()  # failed sign-ins are counted per one-minute window
        for _ in range(FAILED_SIGN_INS_PER_EMAIL):
            answers["wrong password"] = (401, await post_login(guesser, user.email, "no", token))
        answers["locked out"] = (429, await post_login(guesser, user.email, "no", token))
    async with dashboard.client() as browser:
        await sign_in(browser, dashboard.user().email)
        answers["unknown key"] = (404, await browser.get("/dashboard/keys/key_nope"))
        answers["bad filter"] = (422, await browser.get("/dashboard/audit/?status=bogus"))

        def broken(*_: object) -> bool:
            raise RuntimeError("a bug")

        monkeypatch.setattr(api.dashboard.sign_in_pages, "verify_password", broken)
        token = csrf_token_in(await browser.get("/dashboard/login"))
        answers["unexpected error"] = (500, await post_login(browser, "a@example.com", "x", token))

    statuses = {label: r.status_code for label, (_, r) in answers.items()}
    assert statuses == {label: status for label, (status, _) in answers.items()}
    lacking = sorted(label for label, (_, r) in answers.items() if missing_headers(r))
    assert lacking == []
    assert "a bug" not in answers["unexpected error"][1].text
