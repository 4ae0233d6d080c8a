"""Settings > Webhooks in Chromium over real HTTPS, with the webhook worker sending for real.

An owner adds an endpoint pointing at a tiny HTTP receiver on 127.0.0.1 (allowed here by
`ICODRIP_WEBHOOKS_ALLOW_PRIVATE`, as `icodrip dev` allows it), sees its signing secret once,
sends a test event that the receiver refuses, then retries it once the receiver accepts: the
endpoint's page shows each attempt as the worker records it. Screenshots: `webhooks-list`,
`webhooks-secret`, `webhooks-deliveries` (copied to docs/screenshots for the README).

Kept beside the other browser tests (Playwright's async API): a service of its own, since its
workers include the webhook worker and its settings allow private addresses.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from playwright.async_api import Page

from adapters.settings import Settings
from bootstrap.workers import run_workers
from conftest import REDIS_URL
from dashboard.harness import MOBILE, DashboardServer, _Workers, chromium, sign_in
from domain.actors import OPERATOR
from domain.key_format import Environment
from domain.user import Role
from domain.webhook import WebhookEndpoint
from domain.webhook_signing import SECRET_PREFIX
from projections.webhook_deliveries import Attempt, DeliveryStatus, NewDelivery
from support.servers import NatsServer

WORKERS = ["relay", "key-lookup", "audit", "webhooks"]
#: Stretches the worker's waits between attempts (5 s becomes minutes): the second attempt
#: the page shows is the one the Retry button asked for, never a scheduled one.
RETRY_SCALE = "100"
CSP_WATCH = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", (e) => {
  window.__cspViolations.push(e.violatedDirective + " " + (e.blockedURI || "inline"));
});
"""


class _WebhookWorkers(_Workers):
    """The harness's workers, and the webhook worker."""

    def run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.stopping = asyncio.Event()
        self.loop.run_until_complete(
            run_workers(self.settings, WORKERS, stopping=self.stopping, handle_signals=False)
        )


@dataclass
class Received:
    """One request the receiver got."""

    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """An HTTP server on 127.0.0.1 that records each POST and answers as told."""

    status: int = 500
    answer: bytes = b"receiver down for maintenance"
    got: list[Received] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}/hooks/icodrip"

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length)
                headers = {k.lower(): v for k, v in self.headers.items()}
                receiver.got.append(Received(headers, body))
                self.send_response(receiver.status)
                self.send_header("content-type", "text/plain")
                self.send_header("content-length", str(len(receiver.answer)))
                self.end_headers()
                self.wfile.write(receiver.answer)

            def log_message(self, format: str, *args: object) -> None:
                pass  # quiet

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


@pytest.fixture(scope="module")
def webhook_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DashboardServer]:
    """The service with the webhook worker, on a JetStream server of its own."""
    nats_server = NatsServer(tmp_path_factory.mktemp("webhooks-nats"))
    nats_server.start()
    stream = f"KEYS_HOOKS_{uuid.uuid4().hex[:8]}"
    settings = Settings.from_env(
        {
            "ICODRIP_DATA_DIR": str(tmp_path_factory.mktemp("webhooks") / "data"),
            "ICODRIP_KEY_PEPPER": "dashboard-pepper-" + uuid.uuid4().hex,
            "ICODRIP_NATS_URL": nats_server.url,
            "ICODRIP_REDIS_URL": REDIS_URL,
            "ICODRIP_KEYS_STREAM": stream,
            "ICODRIP_KEYS_SUBJECT": f"test.{stream.lower()}",
            "ICODRIP_WEBHOOKS_ALLOW_PRIVATE": "1",
        }
    )
    assert settings.webhooks_allow_private
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ICODRIP_WEBHOOKS_RETRY_SCALE", RETRY_SCALE)  # read by the worker
        try:
            server = DashboardServer(settings)
            server.workers = _WebhookWorkers(settings)
            server.start()
            try:
                yield server
            finally:
                server.stop()
        finally:
            nats_server.stop()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    started = Receiver().start()
    try:
        yield started
    finally:
        started.stop()


def signed_by(secret: str, got: Received) -> bool:
    """Whether `got` carries a Standard Webhooks signature made with `secret` (checked here by
    hand, not with the service's own code)."""
    key = base64.b64decode(secret.removeprefix(SECRET_PREFIX))
    signed = f"{got.headers['webhook-id']}.{got.headers['webhook-timestamp']}.".encode() + got.body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    offered = [s.partition(",")[2] for s in got.headers["webhook-signature"].split()]
    return any(hmac.compare_digest(expected, s) for s in offered)


def later(endpoint: WebhookEndpoint, n: int) -> NewDelivery:
    """A delivery of an event to `endpoint`, due in an hour (the worker leaves it be)."""
    now = time.time()
    return NewDelivery(
        id="whd_" + uuid.uuid4().hex,
        endpoint_id=endpoint.id,
        org_id=endpoint.org_id,
        msg_id="msg_" + uuid.uuid4().hex,
        event_type="rate_limit.exceeded",
        payload=b'{"type": "rate_limit.exceeded", "data": {"n": %d}}' % n,
        created_at=now - 60 + n,
        next_attempt_at=now + 3600,
        give_up_at=now + 3 * 86400,
    )


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


async def test_an_owner_sees_the_secret_once_and_a_test_delivery_with_its_retry(
    webhook_server: DashboardServer, receiver: Receiver, artifacts: Path
) -> None:
    server = webhook_server
    org = server.org()
    owner = server.user(org, Role.OWNER)
    webhooks = server.process.services.webhooks
    async with chromium(server.url, artifacts) as browsing:
        page = await browsing.page()
        await page.add_init_script(CSP_WATCH)
        await sign_in(page, owner.email)
        await page.click("nav >> text=Webhooks")
        await page.wait_for_url("**/dashboard/webhooks")

        # Add: URL, description, environment, events chosen by checkbox.
        await page.fill("#add input[name=url]", receiver.url)
        await page.fill("#add input[name=description]", "Billing service")
        for event_type in ("api_key.created", "api_key.revoked", "api_key.exposed"):
            await page.check(f"#add input[name=events][value='{event_type}']")
        await page.click("#add button[type=submit]")
        secret = (await page.text_content("#new-secret") or "").strip()
        assert secret.startswith(SECRET_PREFIX)
        (endpoint,) = webhooks.endpoints(OPERATOR, org.id)
        assert secret == webhooks.secret(endpoint)
        assert endpoint.url == receiver.url
        assert sorted(endpoint.events) == ["api_key.created", "api_key.exposed", "api_key.revoked"]
        row = page.locator("#webhooks-body tr", has_text=receiver.url)
        assert await row.count() == 1  # the list refreshed beside the secret
        assert await page.input_value("#add input[name=url]") == ""  # a fresh form
        await save(page, artifacts, "webhooks-secret")

        # Reloaded: the secret is gone for good. Beside it, a disabled test-mode endpoint with
        # a delivery waiting and one given up (written into the log, due only in an hour).
        staging = webhooks.add(
            OPERATOR,
            org.id,
            url=receiver.url.replace("/hooks/icodrip", "/staging"),
            events=["rate_limit.exceeded", "webhook.disabled"],
            description="Staging alerts",
            env=Environment.TEST,
        ).endpoint
        webhooks.change(OPERATOR, staging.id, enabled=False)
        waiting, given_up = (later(staging, n) for n in range(2))
        server.process.services.deliveries.enqueue([waiting, given_up])
        server.process.services.deliveries.record_attempt(
            Attempt(given_up.id, 1, time.time(), 503, 20.0, None, "busy"),
            status=DeliveryStatus.FAILED,
            next_attempt_at=None,
        )
        await page.reload()
        assert secret not in await page.content()
        assert await page.locator("#new-secret").count() == 0
        assert "Billing service" in (await row.text_content() or "")
        staged = page.locator("#webhooks-body tr", has_text="Staging alerts")
        assert await staged.locator("[data-count=pending]").text_content() == "1"
        assert (await staged.locator("[data-count=failed]").text_content() or "").strip() == "1"
        assert "disabled" in (await staged.text_content() or "")
        await save(page, artifacts, "webhooks-list")

        # Send a test event: the receiver refuses it; the attempt shows with its answer.
        await page.click(f"#webhooks-body a.webhook-url >> text={receiver.url}")
        await page.click("#send-test")
        await page.wait_for_url("**since=**")
        first = page.locator("#deliveries article tr[data-attempt='1']")
        await first.wait_for(timeout=30_000)  # the list refreshes itself until it is there
        article = page.locator("#deliveries article").first
        assert await article.get_attribute("data-status") == "pending"  # a retry is scheduled
        text = await first.text_content() or ""
        assert "500" in text and "receiver down for maintenance" in text and " ms" in text
        assert len(receiver.got) == 1
        sent = receiver.got[0]
        assert json.loads(sent.body)["type"] == "webhook.test"
        assert signed_by(secret, sent)

        # The receiver is back: Retry sends the same message again, at once.
        receiver.status, receiver.answer = 200, b'{"received": true}'
        await article.locator("button:has-text('Retry')").click()
        await page.wait_for_url("**since=**")
        second = page.locator("#deliveries article tr[data-attempt='2']")
        await second.wait_for(timeout=30_000)
        article = page.locator("#deliveries article").first
        assert await article.get_attribute("data-status") == "succeeded"
        assert "200" in (await second.text_content() or "")
        assert len(receiver.got) == 2
        again = receiver.got[1]
        assert again.headers["webhook-id"] == sent.headers["webhook-id"] and again.body == sent.body
        assert signed_by(secret, again)
        assert await page.locator("#watching").count() == 0  # done refreshing
        await save(page, artifacts, "webhooks-deliveries")

        assert await page.evaluate("window.__cspViolations") == []
        await page.set_viewport_size(MOBILE)  # type: ignore[arg-type]
        for name, path in (("list", "/dashboard/webhooks"), ("deliveries", page.url.split("?")[0])):
            await page.goto(path)
            overflow = await no_sideways_scroll(page)
            assert overflow <= 0, f"{path} scrolls sideways by {overflow}px at 390 px wide"
            await save(page, artifacts, f"webhooks-{name}-mobile")
