"""`POST /v1/leaks/github`: reports signed by GitHub's secret-scanning keys act; others do not.

GitHub's key document is served from 127.0.0.1 (`KeyServer`) with P-256 keys made here, and
each report is signed as GitHub signs one: base64 DER ECDSA over SHA-256 of the raw body.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import json
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from structlog.testing import capture_logs

from adapters import github_scanning_keys as scanning_keys
from adapters.github_scanning_keys import GitHubScanningKeys, parse_key_document
from adapters.settings import Settings
from application.history import History
from bootstrap.api import api_process
from domain.actors import OPERATOR
from domain.key_format import Environment, KeyType, generate_key, hint_for
from domain.organization import LeakPolicy
from support.api import Api, assert_error, bearer, serving

URL = "https://github.com/acme/shop/blob/abc123/config.py"
PATH = "/v1/leaks/github"


@dataclass
class KeyServer:
    """GitHub's key document on 127.0.0.1: the keys published, and how often it was fetched."""

    url: str = ""
    published: dict[str, ec.EllipticCurvePrivateKey] = field(default_factory=dict)
    extra: list[dict[str, Any]] = field(default_factory=list)
    fetches: int = 0
    status: int = 200
    delay: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def publish(self, identifier: str) -> ec.EllipticCurvePrivateKey:
        private = ec.generate_private_key(ec.SECP256R1())
        with self.lock:
            self.published[identifier] = private
        return private

    def withdraw(self, identifier: str) -> None:
        with self.lock:
            del self.published[identifier]

    def document(self) -> bytes:
        with self.lock:
            keys = [
                {"key_identifier": name, "key": _pem(private.public_key()), "is_current": True}
                for name, private in self.published.items()
            ]
        return json.dumps({"public_keys": keys + self.extra}).encode()


def _pem(public: Any) -> str:
    return public.public_bytes(  # type: ignore[no-any-return]
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


@pytest.fixture
def key_server() -> Iterator[KeyServer]:
    served = KeyServer()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            with served.lock:
                served.fetches += 1
            time.sleep(served.delay)
            payload = served.document() if served.status == 200 else b"down"
            self.send_response(served.status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    served.url = f"http://127.0.0.1:{server.server_address[1]}/meta/public_keys/secret_scanning"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield served
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
async def api(api_settings: Settings, key_server: KeyServer) -> AsyncIterator[Api]:
    settings = dataclasses.replace(api_settings, github_scanning_keys_url=key_server.url)
    async with serving(api_process(settings)) as api:
        yield api


@pytest.fixture
def github(key_server: KeyServer) -> ec.EllipticCurvePrivateKey:
    """GitHub's current signing key, published as `current`."""
    return key_server.publish("current")


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(api: Api, key_server: KeyServer) -> Clock:
    """The process's key cache on a clock the test turns."""
    turned = Clock()
    api.process.services.github_keys = GitHubScanningKeys(key_server.url, clock=turned)
    return turned


def report(*tokens: str) -> bytes:
    return json.dumps(
        [{"token": t, "type": "icodrip_api_key", "url": URL, "source": "content"} for t in tokens]
    ).encode()


def signed(body: bytes, private: ec.EllipticCurvePrivateKey, identifier: str) -> dict[str, str]:
    """The headers GitHub sends with `body`."""
    signature = private.sign(body, ec.ECDSA(hashes.SHA256()))
    return {
        "Github-Public-Key-Identifier": identifier,
        "Github-Public-Key-Signature": base64.b64encode(signature).decode(),
    }


async def post(api: Api, body: bytes, headers: dict[str, str] | None = None) -> httpx.Response:
    sent = {"Content-Type": "application/json", **(headers or {})}
    return await api.client.post(PATH, content=body, headers=sent)


async def test_a_report_signed_by_github_revokes_the_live_key_it_names(
    api: Api, github: ec.EllipticCurvePrivateKey
) -> None:
    issued = await api.key(api.org())
    body = report(issued.secret)
    response = await post(api, body, signed(body, github, "current"))
    assert response.status_code == 200, response.text
    assert response.json()[0]["label"] == "true_positive"
    assert api.registry.get_key(issued.key.id).is_revoked
    after = await api.client.get("/v1/affiliates", headers=bearer(issued))
    assert_error(after, 401, "api_key_revoked")


async def test_an_org_with_the_roll_policy_gets_its_leaked_key_rolled(
    api: Api, github: ec.EllipticCurvePrivateKey
) -> None:
    org = api.org()
    api.registry.set_leak_policy(org.id, LeakPolicy.ROLL, OPERATOR)
    issued = await api.key(org)
    body = report(issued.secret)
    response = await post(api, body, signed(body, github, "current"))
    assert response.status_code == 200, response.text
    key = api.registry.get_key(issued.key.id)
    assert key.successor_id is not None
    assert not key.is_revoked
    assert key.exposed_at is not None


async def test_each_token_is_labelled_by_its_hash_and_strangers_are_false_positives(
    api: Api, github: ec.EllipticCurvePrivateKey
) -> None:
    issued = await api.key(api.org())
    stranger = generate_key(KeyType.SECRET, Environment.LIVE)
    body = report(issued.secret, stranger, "not-a-key")
    response = await post(api, body, signed(body, github, "current"))
    answer = [(r["token_hash"], r["token_type"], r["label"]) for r in response.json()]
    assert answer == [
        (hashlib.sha256(issued.secret.encode()).hexdigest(), "icodrip_api_key", "true_positive"),
        (hashlib.sha256(stranger.encode()).hexdigest(), "icodrip_api_key", "false_positive"),
        (hashlib.sha256(b"not-a-key").hexdigest(), "icodrip_api_key", "false_positive"),
    ]
    assert issued.secret not in response.text


async def test_the_leaked_key_is_flagged_exposed_by_a_leak_report_with_its_url(
    api: Api, github: ec.EllipticCurvePrivateKey
) -> None:
    issued = await api.key(api.org())
    body = report(issued.secret)
    await post(api, body, signed(body, github, "current"))
    history = History(api.registry, OPERATOR).key_history(issued.key.id)
    exposed = [e for e in history if e["type"] == "api_key.exposed"]
    assert [(e["actor"], e["data"]["source"]) for e in exposed] == [("system", "leak_report")]
    assert URL in exposed[0]["data"]["detail"]


@pytest.mark.parametrize(
    "sent", ["none", "Github-Public-Key-Identifier", "Github-Public-Key-Signature"]
)
async def test_a_report_without_both_headers_is_401_missing_signature(
    api: Api, github: ec.EllipticCurvePrivateKey, key_server: KeyServer, sent: str
) -> None:
    issued = await api.key(api.org())
    body = report(issued.secret)
    headers = {k: v for k, v in signed(body, github, "current").items() if k == sent}
    assert_error(await post(api, body, headers), 401, "missing_signature")
    assert not api.registry.get_key(issued.key.id).is_revoked
    assert key_server.fetches == 0


async def test_a_report_signed_by_another_key_is_401_invalid_signature(
    api: Api, github: ec.EllipticCurvePrivateKey
) -> None:
    issued = await api.key(api.org())
    body = report(issued.secret)
    forger = ec.generate_private_key(ec.SECP256R1())
    assert_error(await post(api, body, signed(body, forger, "current")), 401, "invalid_signature")
    assert not api.registry.get_key(issued.key.id).is_revoked


async def test_a_signature_over_another_body_is_401_invalid_signature(
    api: Api, github: ec.EllipticCurvePrivateKey
) -> None:
    issued = await api.key(api.org())
    headers = signed(report("something-else"), github, "current")
    assert_error(await post(api, report(issued.secret), headers), 401, "invalid_signature")
    assert not api.registry.get_key(issued.key.id).is_revoked


@pytest.mark.parametrize("signature", ["not base64!", "c2lnbmF0dXJl", "A" * 300])
async def test_a_signature_that_is_no_der_ecdsa_is_401_before_any_key_is_fetched(
    api: Api, key_server: KeyServer, github: ec.EllipticCurvePrivateKey, signature: str
) -> None:
    headers = {"Github-Public-Key-Identifier": "current", "Github-Public-Key-Signature": signature}
    assert_error(await post(api, report("x"), headers), 401, "invalid_signature")
    assert key_server.fetches == 0


async def test_an_unknown_identifier_refetches_once_then_not_again_within_a_minute(
    api: Api, key_server: KeyServer, github: ec.EllipticCurvePrivateKey, clock: Clock
) -> None:
    body = report("anything")
    assert (await post(api, body, signed(body, github, "current"))).status_code == 200
    assert key_server.fetches == 1
    stranger = ec.generate_private_key(ec.SECP256R1())
    clock.now += 61
    response = await post(api, body, signed(body, stranger, "unknown-1"))
    assert_error(response, 401, "unknown_key_identifier")  # a fetch just now did not hold it
    assert key_server.fetches == 2
    clock.now += 58.5
    # Not fetched again so soon, and not refused for good: GitHub retries a 503.
    response = await post(api, body, signed(body, stranger, "unknown-2"))
    assert_error(response, 503, "leak_keys_unavailable")
    assert response.headers["retry-after"] == "2"
    response = await post(api, body, signed(body, stranger, "unknown-1"))
    assert_error(response, 503, "leak_keys_unavailable")
    assert key_server.fetches == 2
    # A known key is still served from the cache meanwhile.
    assert (await post(api, body, signed(body, github, "current"))).status_code == 200
    assert key_server.fetches == 2
    clock.now += 2
    response = await post(api, body, signed(body, stranger, "unknown-3"))
    assert_error(response, 401, "unknown_key_identifier")
    assert key_server.fetches == 3


async def test_a_report_signed_by_a_key_rotated_in_just_after_a_fetch_is_retried_not_lost(
    api: Api, key_server: KeyServer, github: ec.EllipticCurvePrivateKey, clock: Clock
) -> None:
    body = report("anything")
    assert (await post(api, body, signed(body, github, "current"))).status_code == 200
    rotated = key_server.publish("next")  # GitHub rotates a moment after our fetch
    clock.now += 20
    issued = await api.key(api.org())
    reported = report(issued.secret)
    headers = signed(reported, rotated, "next")
    first = await post(api, reported, headers)
    assert_error(first, 503, "leak_keys_unavailable")
    assert first.headers["retry-after"] == "40"
    assert not api.registry.get_key(issued.key.id).is_revoked
    clock.now += 40  # GitHub retries the same report after Retry-After
    retried = await post(api, reported, headers)
    assert retried.status_code == 200, retried.text
    assert retried.json()[0]["label"] == "true_positive"
    assert api.registry.get_key(issued.key.id).is_revoked
    assert key_server.fetches == 2


async def test_concurrent_reports_naming_an_unknown_key_share_one_fetch_and_are_all_401(
    api: Api, key_server: KeyServer, github: ec.EllipticCurvePrivateKey
) -> None:
    key_server.delay = 0.3
    body = report("anything")
    headers = signed(body, ec.generate_private_key(ec.SECP256R1()), "unknown")
    answers = await asyncio.gather(*(post(api, body, headers) for _ in range(4)))
    for answer in answers:
        assert_error(answer, 401, "unknown_key_identifier")
    assert key_server.fetches == 1


async def test_a_key_github_rotates_in_is_accepted_and_a_withdrawn_one_no_longer(
    api: Api, key_server: KeyServer, github: ec.EllipticCurvePrivateKey, clock: Clock
) -> None:
    body = report("anything")
    assert (await post(api, body, signed(body, github, "current"))).status_code == 200
    rotated = key_server.publish("next")
    key_server.withdraw("current")
    clock.now += 61
    issued = await api.key(api.org())
    reported = report(issued.secret)
    response = await post(api, reported, signed(reported, rotated, "next"))
    assert response.status_code == 200, response.text
    assert response.json()[0]["label"] == "true_positive"
    assert api.registry.get_key(issued.key.id).is_revoked
    old = signed(body, github, "current")
    assert_error(await post(api, body, old), 503, "leak_keys_unavailable")  # fetched < 1 min ago
    clock.now += 61
    assert_error(await post(api, body, old), 401, "unknown_key_identifier")


async def test_a_replayed_report_changes_nothing_more(
    api: Api, github: ec.EllipticCurvePrivateKey
) -> None:
    org = api.org()
    api.registry.set_leak_policy(org.id, LeakPolicy.ROLL, OPERATOR)
    issued = await api.key(org)
    body = report(issued.secret)
    headers = signed(body, github, "current")
    first = await post(api, body, headers)
    assert first.status_code == 200, first.text
    rolled = api.registry.get_key(issued.key.id)
    history = History(api.registry, OPERATOR).key_history(issued.key.id)
    again = await post(api, body, headers)  # the very same bytes and headers
    assert again.status_code == 200, again.text
    assert again.json() == first.json()
    key = api.registry.get_key(issued.key.id)
    assert not key.is_revoked
    assert (key.successor_id, key.expires_at) == (rolled.successor_id, rolled.expires_at)
    assert History(api.registry, OPERATOR).key_history(issued.key.id) == history
    still = await api.client.get("/v1/affiliates", headers=bearer(issued))
    assert still.status_code == 200, still.text


def _closed_port_url() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/meta/public_keys/secret_scanning"


async def test_unreachable_keys_are_503_with_retry_after_and_change_nothing(
    api: Api, github: ec.EllipticCurvePrivateKey
) -> None:
    api.process.services.github_keys = GitHubScanningKeys(_closed_port_url())
    issued = await api.key(api.org())
    body = report(issued.secret)
    response = await post(api, body, signed(body, github, "current"))
    assert_error(response, 503, "leak_keys_unavailable")
    assert response.headers["retry-after"] == "60"
    assert not api.registry.get_key(issued.key.id).is_revoked


async def test_a_failing_key_url_is_retried_after_a_minute_not_on_every_report(
    api: Api, key_server: KeyServer, github: ec.EllipticCurvePrivateKey, clock: Clock
) -> None:
    key_server.status = 500
    body = report("anything")
    headers = signed(body, github, "current")
    assert_error(await post(api, body, headers), 503, "leak_keys_unavailable")
    clock.now += 30
    response = await post(api, body, headers)
    assert_error(response, 503, "leak_keys_unavailable")
    assert response.headers["retry-after"] == "30"
    assert key_server.fetches == 1
    key_server.status = 200
    clock.now += 31
    assert (await post(api, body, headers)).status_code == 200
    assert key_server.fetches == 2


async def test_concurrent_reports_share_one_fetch_of_the_keys(
    api: Api, key_server: KeyServer, github: ec.EllipticCurvePrivateKey
) -> None:
    key_server.delay = 0.3
    body = report("anything")
    headers = signed(body, github, "current")
    answers = await asyncio.gather(*(post(api, body, headers) for _ in range(5)))
    assert [a.status_code for a in answers] == [200] * 5
    assert key_server.fetches == 1


async def test_a_signed_body_that_is_not_a_report_is_422_validation_error(
    api: Api, github: ec.EllipticCurvePrivateKey
) -> None:
    body = b'{"token": "not a list"}'
    assert_error(await post(api, body, signed(body, github, "current")), 422, "validation_error")


async def test_a_reported_token_never_reaches_the_logs(
    api: Api, github: ec.EllipticCurvePrivateKey
) -> None:
    issued = await api.key(api.org())
    body = report(issued.secret)
    with capture_logs() as logs:
        await post(api, body, signed(body, github, "current"))
    reported = [entry for entry in logs if entry["event"] == "leak.reported"]
    assert [entry["scanner"] for entry in reported] == ["github"]
    assert issued.secret not in repr(logs)


async def test_the_schema_documents_the_headers_and_refusals(api: Api) -> None:
    schema = (await api.client.get("/schema/openapi.json")).json()
    operation = schema["paths"][PATH]["post"]
    headers = {p["name"] for p in operation["parameters"] if p["in"] == "header"}
    assert headers == {"Github-Public-Key-Identifier", "Github-Public-Key-Signature"}
    for status, code in [("401", "unknown_key_identifier"), ("503", "leak_keys_unavailable")]:
        response = operation["responses"][status]
        assert code in response["description"]
        assert response["content"]["application/json"]["schema"]["$ref"].endswith("/Error")
    assert "Retry-After" in operation["responses"]["503"]["headers"]


def test_keys_that_do_not_load_as_ecdsa_are_left_out_of_the_document() -> None:
    good = ec.generate_private_key(ec.SECP256R1())
    other = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    document = {
        "public_keys": [
            {"key_identifier": "good", "key": _pem(good.public_key()), "is_current": True},
            {"key_identifier": "rsa", "key": _pem(other.public_key()), "is_current": False},
            {"key_identifier": "junk", "key": "-----BEGIN PUBLIC KEY-----\nx\n"},
        ]
    }
    assert list(parse_key_document(json.dumps(document).encode())) == ["good"]


async def test_a_withdrawn_key_is_refused_within_the_hour_though_no_unknown_one_came(
    api: Api, key_server: KeyServer, github: ec.EllipticCurvePrivateKey, clock: Clock
) -> None:
    body = report("anything")
    assert (await post(api, body, signed(body, github, "current"))).status_code == 200
    key_server.publish("next")
    key_server.withdraw("current")
    clock.now += 3000
    assert (await post(api, body, signed(body, github, "current"))).status_code == 200
    clock.now += 700
    assert_error(
        await post(api, body, signed(body, github, "current")), 401, "unknown_key_identifier"
    )


async def test_a_known_key_stays_usable_while_the_document_cannot_be_fetched(
    api: Api, key_server: KeyServer, github: ec.EllipticCurvePrivateKey, clock: Clock
) -> None:
    body = report("anything")
    assert (await post(api, body, signed(body, github, "current"))).status_code == 200
    key_server.status = 500
    clock.now += 3700
    assert (await post(api, body, signed(body, github, "current"))).status_code == 200


def _unknown_curve_pem() -> str:
    """A P-256 public key whose curve OID is replaced by one OpenSSL does not know."""
    der = (
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    p256, unknown = bytes.fromhex("06082a8648ce3d030107"), bytes.fromhex("06082b06010401828f1f")
    return (
        "-----BEGIN PUBLIC KEY-----\n"
        + base64.encodebytes(der.replace(p256, unknown)).decode()
        + "-----END PUBLIC KEY-----\n"
    )


def test_only_p256_keys_are_taken_and_an_unknown_curve_is_left_out_not_raised() -> None:
    good = ec.generate_private_key(ec.SECP256R1())
    p384 = ec.generate_private_key(ec.SECP384R1())
    document = {
        "public_keys": [
            {"key_identifier": "good", "key": _pem(good.public_key())},
            {"key_identifier": "p384", "key": _pem(p384.public_key())},
            {"key_identifier": "unknown-curve", "key": _unknown_curve_pem()},
        ]
    }
    assert list(parse_key_document(json.dumps(document).encode())) == ["good"]


async def test_a_document_with_a_key_on_an_unknown_curve_still_serves_its_other_keys(
    api: Api, key_server: KeyServer, github: ec.EllipticCurvePrivateKey
) -> None:
    key_server.extra.append({"key_identifier": "odd", "key": _unknown_curve_pem()})
    body = report("anything")
    response = await post(api, body, signed(body, github, "current"))
    assert response.status_code == 200, response.text


async def test_an_unexpected_error_reading_the_keys_is_503_and_counts_as_an_attempt(
    api: Api,
    key_server: KeyServer,
    github: ec.EllipticCurvePrivateKey,
    clock: Clock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(body: bytes) -> Any:
        raise RuntimeError("a surprise")

    monkeypatch.setattr(scanning_keys, "parse_key_document", broken)
    body = report("anything")
    headers = signed(body, github, "current")
    assert_error(await post(api, body, headers), 503, "leak_keys_unavailable")
    clock.now += 10
    response = await post(api, body, headers)
    assert_error(response, 503, "leak_keys_unavailable")
    assert response.headers["retry-after"] == "50"
    assert key_server.fetches == 1
    monkeypatch.undo()
    clock.now += 51
    assert (await post(api, body, headers)).status_code == 200


async def test_the_logged_key_identifier_is_redacted_and_cut_short(
    api: Api, key_server: KeyServer
) -> None:
    issued = await api.key(api.org())
    identifier = "x" * 30 + issued.secret + "y" * 500
    headers = {"Github-Public-Key-Identifier": identifier, "Github-Public-Key-Signature": "junk"}
    with capture_logs() as logs:
        assert_error(await post(api, report("x"), headers), 401, "invalid_signature")
    (refused,) = [entry for entry in logs if entry["event"] == "leak.github_refused"]
    assert refused["key_identifier"] == ("x" * 30 + hint_for(issued.secret) + "y" * 100)[:100]
    assert issued.secret not in repr(logs)


def _match(token: str, url: str = URL) -> dict[str, str]:
    return {"token": token, "type": "icodrip_live_secret_key", "url": url, "source": "content"}


async def test_a_batch_of_a_thousand_matches_is_accepted(
    api: Api, github: ec.EllipticCurvePrivateKey
) -> None:
    issued = await api.key(api.org())
    strangers = [generate_key(KeyType.SECRET, Environment.LIVE) for _ in range(999)]
    url = URL + "#L" + "1" * 100  # GitHub's URLs name a commit, a path and a line
    body = json.dumps([_match(token, url) for token in [*strangers, issued.secret]]).encode()
    assert len(body) > 200 * 1024
    response = await post(api, body, signed(body, github, "current"))
    assert response.status_code == 200, response.text[:300]
    labels = [entry["label"] for entry in response.json()]
    assert labels == ["false_positive"] * 999 + ["true_positive"]
    assert api.registry.get_key(issued.key.id).is_revoked


async def test_an_over_long_url_is_cut_short_and_an_over_long_token_is_a_false_positive(
    api: Api, github: ec.EllipticCurvePrivateKey
) -> None:
    issued = await api.key(api.org())
    long_url = URL + "?" + "q" * 5000
    body = json.dumps([_match(issued.secret, long_url), _match("t" * 600)]).encode()
    response = await post(api, body, signed(body, github, "current"))
    assert response.status_code == 200, response.text[:300]
    assert [entry["label"] for entry in response.json()] == ["true_positive", "false_positive"]
    assert response.json()[1]["token_hash"] == hashlib.sha256(b"t" * 600).hexdigest()
    assert api.registry.get_key(issued.key.id).is_revoked
    history = History(api.registry, OPERATOR).key_history(issued.key.id)
    (exposed,) = [e for e in history if e["type"] == "api_key.exposed"]
    assert exposed["data"]["detail"].startswith("content: " + URL + "?qqq")
