"""`POST /v1/leaks`: signed leak reports revoke or roll live keys; unsigned ones change nothing."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from structlog.testing import capture_logs

from adapters.settings import Settings
from api.routes.leaks import decode_reports
from application.history import History
from bootstrap.api import api_process
from domain.actors import OPERATOR
from domain.key_format import Environment, KeyType, generate_key
from domain.organization import LeakPolicy
from support.api import Api, assert_error, bearer, serving

SIGNING_KEY = b"leak-signing-key-for-tests-0123456789"
URL = "https://github.com/acme/shop/blob/abc123/config.py"


@pytest.fixture
async def api(api_settings: Settings) -> AsyncIterator[Api]:
    settings = dataclasses.replace(api_settings, leak_signing_key=SIGNING_KEY)
    async with serving(api_process(settings)) as api:
        yield api


def report(*tokens: str) -> bytes:
    return json.dumps(
        [{"token": t, "type": "icodrip_api_key", "url": URL, "source": "content"} for t in tokens]
    ).encode()


def sign(body: bytes, key: bytes, timestamp: int | None = None) -> tuple[str, int]:
    """(signature, timestamp) as ADR 9 tells reporters to compute them: HMAC of `ts.body`."""
    timestamp = int(time.time()) if timestamp is None else timestamp
    mac = hmac.new(key, str(timestamp).encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest(), timestamp


async def post_report(
    api: Api, body: bytes, signed: tuple[str, int] | None = None, **headers: str
) -> Any:
    sent = {"Content-Type": "application/json", **headers}
    if signed is not None:
        sent["X-Icodrip-Signature"], sent["X-Icodrip-Timestamp"] = signed[0], str(signed[1])
    return await api.client.post("/v1/leaks", content=body, headers=sent)


async def test_a_signed_report_of_a_live_key_revokes_it_at_once(api: Api) -> None:
    issued = await api.key(api.org())
    body = report(issued.secret)
    response = await post_report(api, body, sign(body, SIGNING_KEY))
    assert response.status_code == 200, response.text
    after = await api.client.get("/v1/affiliates", headers=bearer(issued))
    assert_error(after, 401, "api_key_revoked")


async def test_the_answer_labels_each_token_by_its_hash_as_github_expects(api: Api) -> None:
    issued = await api.key(api.org())
    stranger = generate_key(KeyType.SECRET, Environment.LIVE)
    body = report(issued.secret, stranger, "not-a-key")
    response = await post_report(api, body, sign(body, SIGNING_KEY))
    labels = [(r["token_hash"], r["label"]) for r in response.json()]
    assert labels == [
        (hashlib.sha256(issued.secret.encode()).hexdigest(), "true_positive"),
        (hashlib.sha256(stranger.encode()).hexdigest(), "false_positive"),
        (hashlib.sha256(b"not-a-key").hexdigest(), "false_positive"),
    ]
    assert issued.secret not in response.text


async def test_the_leaked_key_records_an_exposed_event_with_the_source_url(api: Api) -> None:
    issued = await api.key(api.org())
    body = report(issued.secret)
    await post_report(api, body, sign(body, SIGNING_KEY))
    history = History(api.registry, OPERATOR).key_history(issued.key.id)
    exposed = [e for e in history if e["type"] == "api_key.exposed"]
    assert [(e["actor"], e["data"]["source"]) for e in exposed] == [("system", "leak_report")]
    assert URL in exposed[0]["data"]["detail"]


async def test_an_org_with_the_roll_policy_gets_its_leaked_key_rolled(api: Api) -> None:
    org = api.org()
    api.registry.set_leak_policy(org.id, LeakPolicy.ROLL, OPERATOR)
    issued = await api.key(org)
    body = report(issued.secret)
    await post_report(api, body, sign(body, SIGNING_KEY))
    key = api.registry.get_key(issued.key.id)
    assert key.successor_id is not None
    assert not key.is_revoked
    assert key.exposed_at is not None


async def test_an_unsigned_report_is_401_and_changes_nothing(api: Api) -> None:
    issued = await api.key(api.org())
    response = await post_report(api, report(issued.secret))
    assert_error(response, 401, "missing_signature")
    assert not api.registry.get_key(issued.key.id).is_revoked


async def test_a_badly_signed_report_is_401_and_changes_nothing(api: Api) -> None:
    issued = await api.key(api.org())
    body = report(issued.secret)
    response = await post_report(api, body, sign(body, b"another-key-entirely-0123456789"))
    assert_error(response, 401, "invalid_signature")
    assert not api.registry.get_key(issued.key.id).is_revoked


async def test_a_signature_over_another_body_is_refused(api: Api) -> None:
    issued = await api.key(api.org())
    response = await post_report(
        api, report(issued.secret), sign(report("something-else"), SIGNING_KEY)
    )
    assert_error(response, 401, "invalid_signature")


async def test_a_body_signed_without_a_timestamp_is_refused_so_it_cannot_be_replayed(
    api: Api,
) -> None:
    issued = await api.key(api.org())
    body = report(issued.secret)
    # The scheme before issue 10: HMAC of the body alone, valid forever once captured.
    body_only = "sha256=" + hmac.new(SIGNING_KEY, body, hashlib.sha256).hexdigest()
    response = await post_report(api, body, **{"X-Icodrip-Signature": body_only})
    assert_error(response, 401, "missing_timestamp")
    assert not api.registry.get_key(issued.key.id).is_revoked


# Ten seconds past the edge: a loaded machine takes a while to answer, and the signed time is
# truncated to the second.
@pytest.mark.parametrize("skew", [-310, 310, -3600, 86400])
async def test_a_report_signed_outside_five_minutes_of_now_is_401_stale_timestamp(
    api: Api, skew: int
) -> None:
    issued = await api.key(api.org())
    body = report(issued.secret)
    response = await post_report(api, body, sign(body, SIGNING_KEY, int(time.time()) + skew))
    assert_error(response, 401, "stale_timestamp")
    assert not api.registry.get_key(issued.key.id).is_revoked


async def test_a_report_signed_within_five_minutes_of_now_is_accepted(api: Api) -> None:
    issued = await api.key(api.org())
    body = report(issued.secret)
    response = await post_report(api, body, sign(body, SIGNING_KEY, int(time.time()) - 240))
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("timestamp", ["", "soon", "1.5e9", "-1"])
async def test_a_timestamp_that_is_not_unix_seconds_is_401_missing_timestamp(
    api: Api, timestamp: str
) -> None:
    body = report("anything")
    signature, _ = sign(body, SIGNING_KEY)
    response = await post_report(
        api, body, **{"X-Icodrip-Signature": signature, "X-Icodrip-Timestamp": timestamp}
    )
    assert_error(response, 401, "missing_timestamp")


async def test_a_signature_moved_to_another_timestamp_is_refused(api: Api) -> None:
    issued = await api.key(api.org())
    body = report(issued.secret)
    signature, timestamp = sign(body, SIGNING_KEY)
    response = await post_report(api, body, (signature, timestamp + 1))
    assert_error(response, 401, "invalid_signature")
    assert not api.registry.get_key(issued.key.id).is_revoked


async def test_a_repeated_report_of_a_rolled_key_leaves_it_working_until_its_grace_ends(
    api: Api,
) -> None:
    org = api.org()
    api.registry.set_leak_policy(org.id, LeakPolicy.ROLL, OPERATOR)
    issued = await api.key(org)
    body = report(issued.secret)
    first = await post_report(api, body, sign(body, SIGNING_KEY))
    assert first.status_code == 200, first.text
    rolled = api.registry.get_key(issued.key.id)
    # The same report again (a scanner's retry, or a replay): nothing more may happen.
    again = await post_report(api, body, sign(body, SIGNING_KEY, int(time.time()) + 1))
    assert again.status_code == 200, again.text
    assert again.json()[0]["label"] == "true_positive"
    key = api.registry.get_key(issued.key.id)
    assert not key.is_revoked
    assert (key.successor_id, key.expires_at) == (rolled.successor_id, rolled.expires_at)
    still = await api.client.get("/v1/affiliates", headers=bearer(issued))
    assert still.status_code == 200, still.text


async def test_a_key_rolled_with_a_longer_grace_than_the_leak_policy_is_revoked_at_once(
    api: Api,
) -> None:
    org = api.org()
    api.registry.set_leak_policy(org.id, LeakPolicy.ROLL, OPERATOR)
    issued = await api.key(org)
    api.registry.roll_key(issued.key.id, grace=timedelta(days=7), actor=OPERATOR)
    body = report(issued.secret)
    await post_report(api, body, sign(body, SIGNING_KEY))
    assert api.registry.get_key(issued.key.id).is_revoked


async def test_a_signed_body_that_is_not_a_report_is_422_validation_error(api: Api) -> None:
    body = b'{"token": "not a list"}'
    response = await post_report(api, body, sign(body, SIGNING_KEY))
    assert_error(response, 422, "validation_error")


async def test_without_a_configured_signing_key_reports_are_refused(
    api_settings: Settings,
) -> None:
    async with serving(api_process(api_settings)) as bare:
        body = report("anything")
        response = await post_report(bare, body, sign(body, SIGNING_KEY))
    assert_error(response, 503, "leak_reports_disabled")


async def test_a_reported_token_never_reaches_the_logs(api: Api) -> None:
    issued = await api.key(api.org())
    body = report(issued.secret)
    with capture_logs() as logs:
        await post_report(api, body, sign(body, SIGNING_KEY))
    assert any(entry["event"] == "leak.reported" for entry in logs)
    assert issued.secret not in repr(logs)


async def test_a_reported_public_key_is_a_true_positive_but_stays_active(api: Api) -> None:
    org = api.org()
    issued = await api.key(org, key_type=KeyType.PUBLIC)
    body = report(issued.secret)
    response = await post_report(api, body, sign(body, SIGNING_KEY))
    assert response.json()[0]["label"] == "true_positive"
    assert not api.registry.get_key(issued.key.id).is_revoked


async def test_a_signed_report_nested_too_deep_is_400_not_a_crash(api: Api) -> None:
    body = b'[{"token": "x", "type": "t", "url": "u", "extra": ' + b"[" * 2000 + b"]" * 2000 + b"}]"
    response = await post_report(api, body, sign(body, SIGNING_KEY))
    assert_error(response, 400, "malformed_json")


def _match(token: str, url: str = URL) -> dict[str, str]:
    return {"token": token, "type": "icodrip_api_key", "url": url, "source": "content"}


async def test_a_signed_batch_of_a_thousand_matches_is_accepted(api: Api) -> None:
    issued = await api.key(api.org())
    strangers = [generate_key(KeyType.SECRET, Environment.LIVE) for _ in range(999)]
    url = URL + "#L" + "1" * 100
    body = json.dumps([_match(token, url) for token in [issued.secret, *strangers]]).encode()
    assert len(body) > 200 * 1024
    response = await post_report(api, body, sign(body, SIGNING_KEY))
    assert response.status_code == 200, response.text[:300]
    labels = [entry["label"] for entry in response.json()]
    assert labels == ["true_positive"] + ["false_positive"] * 999
    assert api.registry.get_key(issued.key.id).is_revoked


async def test_a_body_over_a_mebibyte_is_413_payload_too_large(api: Api) -> None:
    body = json.dumps([_match("x", "u" * (1024 * 1024))]).encode()
    response = await post_report(api, body, sign(body, SIGNING_KEY))
    assert_error(response, 413, "payload_too_large")


async def test_a_match_with_an_over_long_url_does_not_sink_the_batch(api: Api) -> None:
    issued = await api.key(api.org())
    body = json.dumps([_match(issued.secret, URL + "?" + "q" * 5000), _match("t" * 600)]).encode()
    response = await post_report(api, body, sign(body, SIGNING_KEY))
    assert response.status_code == 200, response.text[:300]
    assert [entry["label"] for entry in response.json()] == ["true_positive", "false_positive"]
    assert api.registry.get_key(issued.key.id).is_revoked


def test_over_long_report_fields_are_cut_short_and_the_token_kept_whole() -> None:
    sent = {"token": "t" * 600, "type": "y" * 300, "url": "u" * 5000, "source": "s" * 300}
    (decoded,) = decode_reports(json.dumps([sent]).encode())
    assert (decoded.token, decoded.type, decoded.url, decoded.source) == (
        "t" * 600,
        "y" * 200,
        "u" * 2000,
        "s" * 200,
    )


async def test_a_report_is_answered_though_the_mirror_cannot_read_the_change_back(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    issued = await api.key(api.org())

    async def unreadable() -> None:
        raise RuntimeError("the key store went away after the write")

    monkeypatch.setattr(api.process.services.mirror, "refresh", unreadable)
    body = report(issued.secret)
    response = await post_report(api, body, sign(body, SIGNING_KEY))
    assert response.status_code == 200, response.text
    assert response.json()[0]["label"] == "true_positive"
    assert api.registry.get_key(issued.key.id).is_revoked
