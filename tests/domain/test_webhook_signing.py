"""Webhook signatures: any Standard Webhooks library verifies them, and only for the real body.

Verification here is done by the `standardwebhooks` package, the spec's reference library, so
what passes is what a receiver following the spec accepts.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
import uuid

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from domain.webhook_signing import (
    SECRET_PREFIX,
    derive_secret,
    new_salt,
    secret_bytes,
    sign,
    signature_header,
    webhook_headers,
)

PEPPER = b"p" * 32
ENDPOINT = uuid.UUID("0e6a3c1e-8f43-4c31-9a57-2f4c43b5a0d1")
BODY = b'{"type":"api_key.created","data":{"id":"k_1"}}'


def test_a_derived_secret_is_whsec_and_32_bytes_of_base64() -> None:
    secret = derive_secret(PEPPER, ENDPOINT, new_salt())

    assert secret.startswith(SECRET_PREFIX)
    assert len(secret_bytes(secret)) == 32


def test_a_secret_is_derived_again_identically_from_the_same_pepper_endpoint_and_salt() -> None:
    salt = new_salt()

    assert derive_secret(PEPPER, ENDPOINT, salt) == derive_secret(PEPPER, ENDPOINT, salt)


def test_the_secret_changes_with_the_salt_the_endpoint_and_the_pepper() -> None:
    salt = new_salt()
    secret = derive_secret(PEPPER, ENDPOINT, salt)

    assert derive_secret(PEPPER, ENDPOINT, new_salt()) != secret
    assert derive_secret(PEPPER, uuid.uuid4(), salt) != secret
    assert derive_secret(b"q" * 32, ENDPOINT, salt) != secret


def test_a_derived_secret_is_the_documented_hmac_of_the_endpoint_and_salt() -> None:
    # Pinned: changing the derivation would silently change every endpoint's secret.
    expected = hmac.new(
        PEPPER, b"icodrip-webhook-secret\x00" + ENDPOINT.bytes + b"salt", hashlib.sha256
    ).digest()

    secret = derive_secret(PEPPER, ENDPOINT, "salt")

    assert secret == "whsec_" + base64.b64encode(expected).decode()
    assert secret == "whsec_RMLGzX6Excx4Dnvtu6haosI/zNGyTI9rgVFyMq1TPlc="


def test_salts_are_fresh_each_time() -> None:
    assert len({new_salt() for _ in range(50)}) == 50


def test_a_signature_verifies_with_the_standard_webhooks_library() -> None:
    secret = derive_secret(PEPPER, ENDPOINT, new_salt())
    headers = webhook_headers([secret], "msg_1", int(time.time()), BODY)

    assert Webhook(secret).verify(BODY, headers) == {
        "type": "api_key.created",
        "data": {"id": "k_1"},
    }


def test_during_a_rotation_both_the_old_and_the_new_secret_verify() -> None:
    old, new = (derive_secret(PEPPER, ENDPOINT, new_salt()) for _ in range(2))
    headers = webhook_headers([old, new], "msg_1", int(time.time()), BODY)

    assert len(headers["webhook-signature"].split(" ")) == 2
    Webhook(old).verify(BODY, headers)
    Webhook(new).verify(BODY, headers)


def test_a_tampered_body_does_not_verify() -> None:
    secret = derive_secret(PEPPER, ENDPOINT, new_salt())
    headers = webhook_headers([secret], "msg_1", int(time.time()), BODY)

    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(BODY.replace(b"k_1", b"k_2"), headers)


def test_another_message_id_or_timestamp_does_not_verify() -> None:
    secret = derive_secret(PEPPER, ENDPOINT, new_salt())
    now = int(time.time())
    headers = webhook_headers([secret], "msg_1", now, BODY)

    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(BODY, {**headers, "webhook-id": "msg_2"})
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(BODY, {**headers, "webhook-timestamp": str(now - 1)})


def test_a_secret_that_is_not_the_endpoints_does_not_verify() -> None:
    headers = webhook_headers(
        [derive_secret(PEPPER, ENDPOINT, new_salt())], "msg_1", int(time.time()), BODY
    )

    with pytest.raises(WebhookVerificationError):
        Webhook(derive_secret(PEPPER, ENDPOINT, new_salt())).verify(BODY, headers)


def test_the_signature_is_the_spec_example() -> None:
    # The example of the Standard Webhooks specification, verbatim.
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    body = b'{"test": 2432232314}'

    assert sign(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body) == (
        "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    )


def test_the_headers_carry_id_timestamp_signature_content_type_and_user_agent() -> None:
    secret = derive_secret(PEPPER, ENDPOINT, new_salt())

    headers = webhook_headers([secret], "msg_1", 1700000000, BODY)

    assert headers == {
        "webhook-id": "msg_1",
        "webhook-timestamp": "1700000000",
        "webhook-signature": sign(secret, "msg_1", 1700000000, BODY),
        "content-type": "application/json",
        "user-agent": "Icodrip-Webhooks/1",
    }


def test_a_message_is_never_sent_unsigned() -> None:
    with pytest.raises(ValueError):
        signature_header([], "msg_1", 1700000000, BODY)


@pytest.mark.parametrize(
    "secret",
    ["", "whsec_", "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "whsec_not base64!", "whsec_YWJj*ZGVm"],
)
def test_a_malformed_secret_is_refused_rather_than_signing_with_garbage(secret: str) -> None:
    with pytest.raises(ValueError):
        sign(secret, "msg_1", 1700000000, BODY)


def test_secret_bytes_decode_what_follows_the_prefix() -> None:
    key = bytes(range(32))

    assert secret_bytes(SECRET_PREFIX + base64.b64encode(key).decode()) == key
