"""The dashboard driven in-process over ASGI with httpx: no browser, no NATS, no port.

For what needs no JavaScript (status codes, headers, cookies, tokens). Each `client()` has a
cookie jar of its own, as a browser profile would, and a client address of its own, so
per-address sign-in limits of one client do not reach another.
"""

from __future__ import annotations

import json
import random
import re
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from adapters.settings import Settings
from adapters.users import hash_password
from api.page_headers import CONTENT_SECURITY_POLICY
from api.process import ApiProcess
from application.registry import KeyRegistry
from application.stores import open_registry, open_user_directory
from application.users import UserDirectory
from bootstrap.api import api_process
from cli.dev import create_read_models
from domain.actors import OPERATOR
from domain.organization import Organization
from domain.plans import Plan
from domain.user import Role, User

PASSWORD = "correct horse battery staple"
_HX_HEADERS = re.compile(r"<body hx-headers='([^']*)'")

#: The headers every dashboard response carries, error pages included.
SECURITY_HEADERS = {
    "content-security-policy": CONTENT_SECURITY_POLICY,
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
    "cache-control": "no-store",
}


@dataclass
class Dashboard:
    """An API process serving the dashboard in-process, and its registry and users."""

    process: ApiProcess
    registry: KeyRegistry
    users: UserDirectory

    def org(self) -> Organization:
        return self.registry.register_organization(
            f"Org {uuid.uuid4().hex[:6]}", Plan.PRO, OPERATOR
        )

    def user(self, org: Organization | None = None, role: Role = Role.ADMIN) -> User:
        email = f"{role.value}-{uuid.uuid4().hex[:8]}@example.com"
        return self.users.register_user(
            (org or self.org()).id,
            email=email,
            role=role,
            password_hash=hash_password(PASSWORD),
            actor=OPERATOR,
        )

    def client(self) -> httpx.AsyncClient:
        """A browser of its own: its own cookies, its own client address."""
        address = "127." + ".".join(str(random.randint(1, 254)) for _ in range(3))
        transport = httpx.ASGITransport(app=self.process.app, client=(address, 40000))
        return httpx.AsyncClient(transport=transport, base_url="https://dash.test")


def settings_for(data_dir: Path, redis_url: str | None) -> Settings:
    """The embedded default (SQLite) with Redis when given; no NATS."""
    env = {
        "ICODRIP_DATA_DIR": str(data_dir),
        "ICODRIP_KEY_PEPPER": "dashboard-pepper-" + uuid.uuid4().hex,
    }
    if redis_url:
        env["ICODRIP_REDIS_URL"] = redis_url
    return Settings.from_env(env)


@asynccontextmanager
async def serving_dashboard(settings: Settings) -> AsyncIterator[Dashboard]:
    """Start an API process on `settings`; stop it (and close what was opened) afterwards."""
    create_read_models(settings)
    process = api_process(settings)
    registry = open_registry(settings)
    users = open_user_directory(settings)
    await process.start()
    try:
        yield Dashboard(process, registry, users)
    finally:
        await process.stop()
        users.close()
        registry.close()


def csrf_token_in(page: httpx.Response) -> str:
    """The CSRF token a dashboard page carries (what its forms and htmx send)."""
    found = _HX_HEADERS.search(page.text)
    assert found, f"no CSRF token in the page ({page.status_code})"
    token = json.loads(found.group(1)).get("X-CSRFToken")
    assert token, "the page carries an empty CSRF token"
    return str(token)


async def sign_in(client: httpx.AsyncClient, email: str, password: str = PASSWORD) -> str:
    """Sign in through the form; the CSRF token of the first page after it."""
    form_page = await client.get("/dashboard/login")
    answer = await post_login(client, email, password, csrf_token_in(form_page))
    assert answer.status_code == 303, answer.text
    assert answer.headers["location"] == "/dashboard/keys"
    keys = await client.get("/dashboard/keys/")
    assert keys.status_code == 200, keys.text
    return csrf_token_in(keys)


async def post_login(
    client: httpx.AsyncClient, email: str, password: str, token: str
) -> httpx.Response:
    """One sign-in attempt, as the form posts it."""
    return await client.post(
        "/dashboard/login",
        data={"email": email, "password": password, "_csrf_token": token},
    )


def missing_headers(response: httpx.Response) -> list[str]:
    """The security headers this response lacks (or carries with another value, or twice)."""
    return [
        name
        for name, value in SECURITY_HEADERS.items()
        if response.headers.get_list(name) != [value]
    ]
