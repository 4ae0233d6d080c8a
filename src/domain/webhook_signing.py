"""Webhook signatures as the Standard Webhooks spec defines them (https://www.standardwebhooks.com).

A signature is `v1,` + base64(HMAC-SHA256(secret, "{msg_id}.{timestamp}.{body}")); receivers
verify it with any Standard Webhooks library. An endpoint's secret is never stored: events
carry only a random salt, and the secret is derived again, from the server-side pepper, the
endpoint's id and that salt, wherever a message is signed or the secret is shown once.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Sequence
from secrets import token_urlsafe
from uuid import UUID

SECRET_PREFIX = "whsec_"  # noqa: S105 - the spec's prefix, not a secret
USER_AGENT = "Icodrip-Webhooks/1"

# Separates this use of the pepper from every other HMAC made with it (key hashes, ...).
_DERIVATION_LABEL = b"icodrip-webhook-secret\x00"


def derive_secret(pepper: bytes, endpoint_id: UUID, salt: str) -> str:
    """The endpoint's signing secret, `whsec_` + base64 of 32 bytes, for this salt."""
    digest = hmac.new(
        pepper, _DERIVATION_LABEL + endpoint_id.bytes + salt.encode(), hashlib.sha256
    ).digest()
    return SECRET_PREFIX + base64.b64encode(digest).decode("ascii")


def new_salt() -> str:
    """A fresh random salt (32 bytes, URL-safe base64): a new salt is a new secret."""
    return token_urlsafe(32)


def secret_bytes(secret: str) -> bytes:
    """The key bytes of a `whsec_…` secret."""
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError(f"a webhook secret starts with {SECRET_PREFIX!r}")
    try:
        key = base64.b64decode(secret.removeprefix(SECRET_PREFIX), validate=True)
    except binascii.Error as exc:
        raise ValueError("a webhook secret is base64 after its prefix") from exc
    if not key:
        raise ValueError("a webhook secret may not be empty")
    return key


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The `v1,…` signature of one message under one secret."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret_bytes(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


def signature_header(secrets: Sequence[str], msg_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` value: one signature per secret, space-separated."""
    # During a rotation both the old and the new secret sign, so a receiver that has
    # either one verifies the message.
    if not secrets:
        raise ValueError("a webhook message is signed by at least one secret")
    return " ".join(sign(secret, msg_id, timestamp, body) for secret in secrets)


def webhook_headers(
    secrets: Sequence[str], msg_id: str, timestamp: int, body: bytes
) -> dict[str, str]:
    """Every header a webhook request carries, signatures included."""
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature_header(secrets, msg_id, timestamp, body),
        "content-type": "application/json",
        "user-agent": USER_AGENT,
    }
