"""The whole service over real HTTPS for browser tests: API process, workers, NATS, Redis.

`DashboardServer` serves `ApiProcess(settings).app` with uvicorn on 127.0.0.1 (TLS with the
data dir's self-signed certificate) in a thread of its own, and runs the relay, key-lookup and
audit workers in another, as `icodrip dev` does. Tests drive it with Debian's Chromium through
Playwright's async API and call the API with httpx.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from playwright.async_api import Browser, BrowserContext, Page, async_playwright

from adapters.settings import Settings
from adapters.tls import ensure_self_signed
from adapters.users import hash_password
from application.registry import KeyRegistry
from application.stores import open_registry, open_user_directory
from application.users import UserDirectory
from bootstrap.api import api_process
from bootstrap.workers import run_workers
from cli.dev import create_read_models
from domain.actors import OPERATOR
from domain.organization import Organization
from domain.plans import Plan
from domain.user import Role, User
from support.servers import free_port, wait_for_port

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
DESKTOP = {"width": 1280, "height": 800}
MOBILE = {"width": 390, "height": 844}
PASSWORD = "correct horse battery staple"


class _Workers(threading.Thread):
    def __init__(self, settings: Settings) -> None:
        super().__init__(name="dashboard-test-workers", daemon=True)
        self.settings = settings
        self.loop = asyncio.new_event_loop()
        self.stopping: asyncio.Event | None = None

    def run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.stopping = asyncio.Event()
        self.loop.run_until_complete(
            run_workers(
                self.settings,
                ["relay", "key-lookup", "audit"],
                stopping=self.stopping,
                handle_signals=False,
            )
        )

    def stop(self) -> None:
        if self.stopping is not None:
            self.loop.call_soon_threadsafe(self.stopping.set)
        self.join(15)


class DashboardServer:
    """The service on https://127.0.0.1:PORT, with an operator's registry and users beside it."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.port = free_port()
        self.url = f"https://127.0.0.1:{self.port}"
        self.certfile, self.keyfile = ensure_self_signed(settings.data_dir)
        create_read_models(settings)
        # X-Forwarded-For from 127.0.0.1 is trusted: each browser context claims an address of
        # its own, so per-address sign-in limits of one test do not reach another.
        self.process = api_process(settings, trusted_proxies=["127.0.0.1/32"])
        self.registry: KeyRegistry = open_registry(settings)
        self.users: UserDirectory = open_user_directory(settings)
        self.workers = _Workers(settings)
        self.server = uvicorn.Server(
            uvicorn.Config(
                self.process.app,
                host="127.0.0.1",
                port=self.port,
                ssl_certfile=str(self.certfile),
                ssl_keyfile=str(self.keyfile),
                lifespan="on",
                log_level="warning",
                access_log=False,
            )
        )
        self.thread = threading.Thread(target=self.server.run, name="dashboard-test-server")

    def start(self) -> DashboardServer:
        self.workers.start()
        self.thread.start()
        wait_for_port(self.port, timeout=30)
        deadline = time.monotonic() + 30
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(20)
        self.workers.stop()
        self.users.close()
        self.registry.close()

    # -- people and keys -----------------------------------------------------------------------

    def org(self, plan: Plan = Plan.PRO) -> Organization:
        return self.registry.register_organization(f"Org {uuid.uuid4().hex[:6]}", plan, OPERATOR)

    def user(self, org: Organization, role: Role, password: str = PASSWORD) -> User:
        email = f"{role.value}-{uuid.uuid4().hex[:8]}@example.com"
        return self.users.register_user(
            org.id, email=email, role=role, password_hash=hash_password(password), actor=OPERATOR
        )

    def http(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url, verify=False, timeout=10)


@dataclass
class Browsing:
    """One Chromium and its contexts; screenshots go to `artifacts`."""

    browser: Browser
    base_url: str
    artifacts: Path

    async def page(
        self, viewport: dict[str, int] | None = None, *, address: str | None = None
    ) -> Page:
        """A page in a browser context of its own (its own cookies), from its own address."""
        context: BrowserContext = await self.browser.new_context(
            base_url=self.base_url,
            ignore_https_errors=True,
            viewport=viewport or DESKTOP,  # type: ignore[arg-type]
            extra_http_headers={"X-Forwarded-For": address or loopback_address()},
        )
        return await context.new_page()

    async def shoot(self, page: Page, name: str) -> list[Path]:
        """Save the page at desktop (1280x800) and mobile (390x844) sizes; the files saved."""
        self.artifacts.mkdir(parents=True, exist_ok=True)
        saved = []
        original = page.viewport_size
        for label, size in (("desktop", DESKTOP), ("mobile", MOBILE)):
            await page.set_viewport_size(size)  # type: ignore[arg-type]
            path = self.artifacts / f"{name}-{label}.png"
            await page.screenshot(path=str(path), full_page=True)
            saved.append(path)
        if original is not None:
            await page.set_viewport_size(original)
        return saved


@contextlib.asynccontextmanager
async def chromium(base_url: str, artifacts: Path) -> AsyncIterator[Browsing]:
    """Debian's Chromium, headless, driven by Playwright (no browser download)."""
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield Browsing(browser, base_url, artifacts)
        finally:
            await browser.close()


def loopback_address() -> str:
    """A random 127.x.y.z (as a client address claimed through the trusted proxy header)."""
    return "127." + ".".join(str(random.randint(1, 254)) for _ in range(3))


async def csrf_token_of(page: Page) -> str:
    """The CSRF token the current page carries (what its forms and htmx send)."""
    headers = await page.get_attribute("body", "hx-headers")
    token = json.loads(headers or "{}").get("X-CSRFToken")
    assert token, "the page carries no CSRF token"
    return str(token)


async def sign_in(page: Page, email: str, password: str = PASSWORD) -> None:
    """Sign in through the form and land on Settings > API Keys."""
    await page.goto("/dashboard/login")
    await page.fill("input[name=email]", email)
    await page.fill("input[name=password]", password)
    await page.click("button[type=submit]")
    await page.wait_for_url("**/dashboard/keys")


async def poll(check: Callable[[], Any], timeout: float, interval: float = 0.25) -> Any:
    """Await `check()` until it returns something truthy; that value, or None at the timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() >= deadline:
            return None
        await asyncio.sleep(interval)
