"""The browser SDK in Chromium: a shop's page imports it from the API and tracks events.

The API is the harness's `DashboardServer` (HTTPS on 127.0.0.1, the whole app and its
workers); the shop is a tiny HTTP server on another port, whose page does what a customer's
would: `import Icodrip from "https://<api>/sdk/v1/icodrip.js"`. The public key allows
`http://127.0.0.1:<shop port>` only, so the same page loaded as `http://localhost:<shop port>`
is another origin, which the key does not list. What landed is read back as the organization
would read it: `GET /v1/events` with one of its secret keys.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from playwright.async_api import Page

from application.registry import IssuedKey
from dashboard.harness import Browsing, DashboardServer, poll
from domain.actors import OPERATOR
from domain.key_format import Environment, KeyType, generate_key
from domain.organization import Organization

SHOP_PAGE = """<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>A shop</title></head>
<body>
<script type="module">
  import Icodrip from "{sdk}";
  window.Icodrip = Icodrip;
  document.body.dataset.ready = "yes";
</script>
</body>
</html>
"""


class Shop:
    """An HTTP server on 127.0.0.1 serving one page that imports the SDK from the API."""

    def __init__(self, api_url: str) -> None:
        page = SHOP_PAGE.format(sdk=f"{api_url}/sdk/v1/icodrip.js").encode()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200 if self.path == "/" else 404)
                self.send_header("content-type", "text/html; charset=utf-8")
                self.send_header("content-length", str(len(page)))
                self.end_headers()
                self.wfile.write(page)

            def log_message(self, format: str, *args: object) -> None:
                pass  # quiet

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def origin(self) -> str:
        """The origin its public key allows."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def other_origin(self) -> str:
        """The same page on an origin no key allows."""
        return f"http://localhost:{self.port}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class Visit:
    """A page of the shop in a fresh browser context, and what it logged and sent."""

    page: Page
    console: list[tuple[str, str]] = field(default_factory=list)
    posts: list[Any] = field(default_factory=list)

    def said(self, kind: str) -> list[str]:
        """What the SDK logged at this level (not the browser's own notes, a missing favicon)."""
        return [text for type_, text in self.console if type_ == kind and "Icodrip:" in text]


@dataclass
class Keys:
    org: Organization
    public: IssuedKey
    reader: IssuedKey


@pytest.fixture(scope="module")
def shop(dashboard_server: DashboardServer) -> Iterator[Shop]:
    started = Shop(dashboard_server.url)
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture
async def keys(dashboard_server: DashboardServer, shop: Shop) -> Keys:
    """A public key for the shop's origin and a secret key to read events, both known to the
    API (it learns of new keys from the bus)."""
    server = dashboard_server
    org = server.org()
    public = server.registry.create_key(
        org.id,
        name="shop",
        env=Environment.LIVE,
        key_type=KeyType.PUBLIC,
        actor=OPERATOR,
        allowed_origins=(shop.origin,),
    )
    reader = server.registry.create_key(
        org.id, name="reader", env=Environment.LIVE, key_type=KeyType.SECRET, actor=OPERATOR
    )
    async with server.http() as http:

        async def known() -> bool:  # made after the public key: both are known then
            answer = await http.get("/v1/events", headers=bearer(reader))
            return answer.status_code == 200

        assert await poll(known, timeout=15), "the API never learned of the keys"
    return Keys(org, public, reader)


def bearer(issued: IssuedKey) -> dict[str, str]:
    return {"Authorization": f"Bearer {issued.secret}"}


async def visit(browsing: Browsing, url: str) -> Visit:
    """The shop's page at `url`, the SDK imported. A context without the harness's extra
    headers: a header the page does not send itself would change the CORS preflight."""
    context = await browsing.browser.new_context(ignore_https_errors=True)
    page = await context.new_page()
    seen = Visit(page)
    page.on("console", lambda message: seen.console.append((message.type, message.text)))
    page.on(
        "request",
        lambda request: (
            seen.posts.append(request)
            if request.method == "POST" and request.url.endswith("/v1/events")
            else None
        ),
    )
    await page.goto(url + "/")
    await page.wait_for_selector("body[data-ready=yes]", state="attached", timeout=10_000)
    return seen


async def landed(server: DashboardServer, keys: Keys) -> list[dict[str, Any]]:
    async with server.http() as http:
        answer = await http.get("/v1/events", params={"limit": "100"}, headers=bearer(keys.reader))
    assert answer.status_code == 200, answer.text
    return list(answer.json()["data"])


TRACK_THREE = """async (key) => {
  // No baseUrl: the SDK sends to the API it was loaded from.
  const icodrip = new window.Icodrip({ publicKey: key });
  icodrip.track("signup", { plan: "pro", seats: 3, tags: ["a", "é"], at: { step: 2 } });
  icodrip.track("view", { path: "/pricing" });
  icodrip.track("view", { path: "/checkout" });
  const result = await icodrip.flush();
  return { result, rateLimit: icodrip.lastRateLimit, error: icodrip.lastError };
}"""


async def test_events_tracked_on_an_allowed_origin_land_in_one_batch_with_their_properties(
    dashboard_server: DashboardServer, shop: Shop, browsing: Browsing, keys: Keys
) -> None:
    shop_page = await visit(browsing, shop.origin)
    answer = await shop_page.page.evaluate(TRACK_THREE, keys.public.secret)

    assert answer["result"] == {"sent": 3, "dropped": 0}, answer
    assert len(shop_page.posts) == 1
    assert len(shop_page.posts[0].post_data_json["batch"]) == 3
    events = await landed(dashboard_server, keys)
    assert [(e["event"], e["properties"]) for e in events] == [
        ("signup", {"plan": "pro", "seats": 3, "tags": ["a", "é"], "at": {"step": 2}}),
        ("view", {"path": "/pricing"}),
        ("view", {"path": "/checkout"}),
    ]
    assert {e["key_id"] for e in events} == {f"key_{keys.public.key.id.hex}"}


async def test_the_rate_limit_headers_are_readable_from_the_page(
    shop: Shop, browsing: Browsing, keys: Keys
) -> None:
    shop_page = await visit(browsing, shop.origin)
    answer = await shop_page.page.evaluate(TRACK_THREE, keys.public.secret)
    limits = answer["rateLimit"]
    assert limits["limit"] == 100
    assert 0 <= limits["remaining"] < 100
    assert limits["reset"] > 1_700_000_000


async def test_a_page_on_an_origin_the_key_does_not_list_is_refused_and_told_so(
    dashboard_server: DashboardServer, shop: Shop, browsing: Browsing, keys: Keys
) -> None:
    elsewhere = await visit(browsing, shop.other_origin)
    answer = await elsewhere.page.evaluate(
        """async (key) => {
          const icodrip = new window.Icodrip({ publicKey: key, maxRetries: 0 });
          icodrip.track("view", { path: "/" });
          return { result: await icodrip.flush(), error: icodrip.lastError };
        }""",
        keys.public.secret,
    )

    assert answer["result"] == {"sent": 0, "dropped": 1}
    assert answer["error"]["code"] == "network_error"
    (warning,) = elsewhere.said("warning")
    assert "origin" in warning and "dropped" in warning
    assert keys.public.secret not in " ".join(text for _, text in elsewhere.console)
    assert await landed(dashboard_server, keys) == []


async def test_a_secret_key_is_refused_with_a_console_error_before_anything_is_sent(
    shop: Shop, browsing: Browsing
) -> None:
    secret = generate_key(KeyType.SECRET, Environment.LIVE)
    shop_page = await visit(browsing, shop.origin)
    thrown = await shop_page.page.evaluate(
        """(key) => {
          try { new window.Icodrip({ publicKey: key }); } catch (error) { return error.message; }
          return null;
        }""",
        secret,
    )

    assert thrown is not None and "secret key" in thrown
    (error,) = shop_page.said("error")
    assert "must never be used in a browser" in error and "pk_live_" in error
    assert secret not in error and secret not in thrown
    assert shop_page.posts == []


async def test_events_waiting_when_the_page_is_left_are_sent_as_it_goes(
    dashboard_server: DashboardServer, shop: Shop, browsing: Browsing, keys: Keys
) -> None:
    shop_page = await visit(browsing, shop.origin)
    await shop_page.page.evaluate(
        """(key) => {
          // Nothing would be sent for a minute but for the page going away.
          const icodrip = new window.Icodrip({ publicKey: key, flushInterval: 60000 });
          icodrip.track("checkout", { total: 42 });
          icodrip.track("leave", {});
        }""",
        keys.public.secret,
    )
    assert shop_page.posts == []
    await shop_page.page.goto("about:blank")  # pagehide: sent with keepalive

    async def both() -> list[str]:
        names = [e["event"] for e in await landed(dashboard_server, keys)]
        return names if len(names) == 2 else []

    assert await poll(both, timeout=15) == ["checkout", "leave"]


async def test_a_batch_whose_answer_was_lost_is_sent_again_and_stored_once(
    dashboard_server: DashboardServer, shop: Shop, browsing: Browsing, keys: Keys
) -> None:
    shop_page = await visit(browsing, shop.origin)
    attempts: list[dict[str, str]] = []

    async def lose_the_first_answer(route: Any) -> None:
        attempts.append(await route.request.all_headers())
        if len(attempts) == 1:
            await route.fetch()  # the API stores the batch…
            await route.abort("connectionreset")  # …and the page never hears of it
        else:
            await route.continue_()

    await shop_page.page.route("**/v1/events", lose_the_first_answer)
    answer = await shop_page.page.evaluate(
        """async (key) => {
          const icodrip = new window.Icodrip({ publicKey: key });
          icodrip.track("paid", { total: 42 });
          return await icodrip.flush();
        }""",
        keys.public.secret,
    )

    assert answer == {"sent": 1, "dropped": 0}
    assert len(attempts) == 2
    assert attempts[0]["idempotency-key"] == attempts[1]["idempotency-key"]
    assert [e["event"] for e in await landed(dashboard_server, keys)] == ["paid"]


async def test_a_page_whose_clock_runs_fast_has_its_events_restamped_and_stored(
    dashboard_server: DashboardServer, shop: Shop, browsing: Browsing, keys: Keys
) -> None:
    shop_page = await visit(browsing, shop.origin)
    answer = await shop_page.page.evaluate(
        """async (key) => {
          const real = Date.now;
          Date.now = () => real() + 10 * 60 * 1000;  // ten minutes ahead of the API
          const icodrip = new window.Icodrip({ publicKey: key });
          icodrip.track("view", { path: "/" });
          return await icodrip.flush();
        }""",
        keys.public.secret,
    )

    assert answer == {"sent": 1, "dropped": 0}
    assert len(shop_page.posts) == 2  # refused for its time, then sent on the API's
    (event,) = await landed(dashboard_server, keys)
    stamped = datetime.fromisoformat(event["timestamp"])
    assert abs((stamped - datetime.now(UTC)).total_seconds()) < 30


async def test_half_an_emoji_does_not_cost_the_batch(
    dashboard_server: DashboardServer, shop: Shop, browsing: Browsing, keys: Keys
) -> None:
    shop_page = await visit(browsing, shop.origin)
    answer = await shop_page.page.evaluate(
        """async (key) => {
          const icodrip = new window.Icodrip({ publicKey: key });
          const title = "Caf\u00e9 \ud83d\ude00".slice(0, 6);  // cut inside the emoji
          icodrip.track("view", { title });
          icodrip.track("view", { title: "fine" });
          return await icodrip.flush();
        }""",
        keys.public.secret,
    )

    assert answer == {"sent": 2, "dropped": 0}
    titles = [e["properties"]["title"] for e in await landed(dashboard_server, keys)]
    assert titles == ["Caf\u00e9 \ufffd", "fine"]


async def test_an_event_tracked_as_the_page_goes_is_sent_with_it(
    dashboard_server: DashboardServer, shop: Shop, browsing: Browsing, keys: Keys
) -> None:
    shop_page = await visit(browsing, shop.origin)
    await shop_page.page.evaluate(
        """(key) => {
          const icodrip = new window.Icodrip({ publicKey: key, flushInterval: 60000 });
          // The page's own handler, added after the SDK's: it runs as the page goes (the
          // last of the events a browser fires at a page it leaves).
          document.addEventListener("visibilitychange", () => {
            if (document.visibilityState === "hidden") icodrip.track("page_leave", {});
          });
        }""",
        keys.public.secret,
    )
    await shop_page.page.goto("about:blank")

    async def left() -> list[str]:
        return [e["event"] for e in await landed(dashboard_server, keys)]

    assert await poll(left, timeout=15) == ["page_leave"]


async def test_a_batch_cut_off_by_the_page_going_is_sent_again_and_lands_once(
    dashboard_server: DashboardServer, shop: Shop, browsing: Browsing, keys: Keys
) -> None:
    shop_page = await visit(browsing, shop.origin)
    requests: list[dict[str, str]] = []
    left = asyncio.Event()

    async def hold_the_first(route: Any) -> None:
        requests.append(await route.request.all_headers())
        if len(requests) == 1:
            await left.wait()  # never answered: the page goes first
            await route.abort("connectionreset")
        else:
            await route.continue_()

    await shop_page.page.route("**/v1/events", hold_the_first)
    await shop_page.page.evaluate(
        """(key) => {
          const icodrip = new window.Icodrip({ publicKey: key });
          icodrip.track("order", { total: 9 });
          icodrip.flush();  // under way when the page goes
        }""",
        keys.public.secret,
    )

    async def sent(count: int) -> bool:
        return len(requests) >= count

    assert await poll(lambda: sent(1), timeout=10)
    await shop_page.page.evaluate("dispatchEvent(new Event('pagehide'))")

    async def once() -> list[str]:
        return [e["event"] for e in await landed(dashboard_server, keys)]

    assert await poll(once, timeout=15) == ["order"]  # the keepalive copy
    left.set()  # the first fails now: the page (still here) tries again, and is answered
    assert await poll(lambda: sent(3), timeout=15)  # with what the copy stored
    assert len({r["idempotency-key"] for r in requests}) == 1
    assert await once() == ["order"]


# -- with a stand-in for fetch: what the SDK does with each answer ------------------------------

FAKE_FETCH = """(key) => {
  // Answers in turn with the statuses of window.answers; records each request.
  window.sent = [];
  const fake = async (url, init) => {
    window.sent.push({ url, keepalive: init.keepalive, body: JSON.parse(init.body),
                       authorization: init.headers.Authorization, at: Date.now() });
    const [status, headers] = window.answers.shift();
    const body = status === 202
      ? { object: "list", data: [], next_cursor: null }
      : { error: { code: status === 429 ? "rate_limit_exceeded" : "validation_error",
                   message: "refused in a test", request_id: "0123" } };
    return new Response(JSON.stringify(body), { status, headers });
  };
  window.icodrip = new window.Icodrip({
    publicKey: key, baseUrl: "https://api.example", fetch: fake, flushInterval: 60000,
  });
}"""


def public_key_text() -> str:
    return generate_key(KeyType.PUBLIC, Environment.TEST)


async def test_a_429_is_retried_after_retry_after_with_the_same_events(
    shop: Shop, browsing: Browsing
) -> None:
    shop_page = await visit(browsing, shop.origin)
    await shop_page.page.evaluate(FAKE_FETCH, public_key_text())
    answer = await shop_page.page.evaluate(
        """async () => {
          window.answers = [
            [429, { "Retry-After": "1", "X-RateLimit-Limit": "100",
                    "X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "1800000000" }],
            [202, { "X-RateLimit-Limit": "100", "X-RateLimit-Remaining": "99",
                    "X-RateLimit-Reset": "1800000060" }],
          ];
          window.icodrip.track("view", { n: 1 });
          const result = await window.icodrip.flush();
          return { result, sent: window.sent, limits: window.icodrip.lastRateLimit };
        }"""
    )

    assert answer["result"] == {"sent": 1, "dropped": 0}
    first, second = answer["sent"]
    assert first["body"] == second["body"]
    assert second["at"] - first["at"] >= 1000
    assert answer["limits"] == {"limit": 100, "remaining": 99, "reset": 1_800_000_060}


async def test_another_refusal_drops_the_batch_with_a_warning_naming_its_code(
    shop: Shop, browsing: Browsing
) -> None:
    key = public_key_text()
    shop_page = await visit(browsing, shop.origin)
    await shop_page.page.evaluate(FAKE_FETCH, key)
    answer = await shop_page.page.evaluate(
        """async () => {
          window.answers = [[422, {}]];
          window.icodrip.track("view", {});
          return { result: await window.icodrip.flush(), sent: window.sent.length };
        }"""
    )

    assert answer == {"result": {"sent": 0, "dropped": 1}, "sent": 1}
    (warning,) = shop_page.said("warning")
    assert "422 validation_error" in warning and "0123" in warning
    assert key not in warning


async def test_events_waiting_when_the_page_is_hidden_go_with_keepalive(
    shop: Shop, browsing: Browsing
) -> None:
    key = public_key_text()
    shop_page = await visit(browsing, shop.origin)
    await shop_page.page.evaluate(FAKE_FETCH, key)
    sent = await shop_page.page.evaluate(
        """async () => {
          window.answers = [[202, {}]];
          window.icodrip.track("view", { n: 1 });
          Object.defineProperty(document, "visibilityState", { value: "hidden" });
          document.dispatchEvent(new Event("visibilitychange"));
          return window.sent;
        }"""
    )

    (request,) = sent
    assert request["keepalive"] is True
    assert request["authorization"] == f"Bearer {key}"  # a header: why not sendBeacon
    assert [e["event"] for e in request["body"]["batch"]] == ["view"]
