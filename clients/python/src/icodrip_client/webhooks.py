"""Verifying the webhook messages Icodrip sends, per Standard Webhooks.

A message carries `webhook-id`, `webhook-timestamp` (Unix seconds) and `webhook-signature`:
one or more space-separated `v1,<base64 HMAC-SHA256>` of `"{id}.{timestamp}.{body}"`, keyed
with the base64 part of the endpoint's `whsec_…` secret (two while a rotated secret overlaps).

```python
from icodrip_client import webhooks

event = webhooks.verify(request.body, request.headers, secret=os.environ["WEBHOOK_SECRET"])
```

Verify the raw body as received: parsed and re-encoded JSON is not the same bytes.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from collections.abc import Iterable, Mapping
from typing import Any

from icodrip_client.errors import WebhookVerificationError

SECRET_PREFIX = "whsec_"  # noqa: S105 - the spec's prefix, not a secret
#: How far a message's timestamp may be from now (replays of old messages are refused).
DEFAULT_TOLERANCE = 5 * 60


def _secret_bytes(secret: str) -> bytes:
    try:
        key = base64.b64decode(secret.removeprefix(SECRET_PREFIX), validate=True)
    except (binascii.Error, ValueError):
        raise WebhookVerificationError("the secret is not whsec_ followed by base64") from None
    if not key:
        raise WebhookVerificationError("the secret is empty")
    return key


def _header(headers: Mapping[str, str], name: str) -> str:
    value = headers.get(name)
    if value is None:  # a plain dict may spell it in any case
        value = next((v for k, v in headers.items() if k.lower() == name), None)
    if not value:
        raise WebhookVerificationError(f"missing {name} header")
    return value


def _body(payload: bytes | str) -> bytes:
    return payload.encode() if isinstance(payload, str) else payload


def sign(payload: bytes | str, secret: str, msg_id: str, timestamp: int) -> str:
    """The `v1,…` signature of a message under `secret` (for tests of your receiver)."""
    signed = f"{msg_id}.{timestamp}.".encode() + _body(payload)
    digest = hmac.new(_secret_bytes(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


def verify(
    payload: bytes | str,
    headers: Mapping[str, str],
    secret: str | Iterable[str],
    *,
    tolerance: int = DEFAULT_TOLERANCE,
    now: float | None = None,
) -> Any:
    """The message's JSON if one of its signatures is by `secret` (or one of several secrets)
    and its timestamp is within `tolerance` seconds of now; else `WebhookVerificationError`.
    """
    msg_id = _header(headers, "webhook-id")
    stamp = _header(headers, "webhook-timestamp")
    signatures = _header(headers, "webhook-signature")
    if not (stamp.isascii() and stamp.isdigit()):
        raise WebhookVerificationError("webhook-timestamp is not Unix seconds")
    timestamp = int(stamp)
    current = time.time() if now is None else now
    if timestamp < current - tolerance:
        raise WebhookVerificationError("the message is too old (webhook-timestamp)")
    if timestamp > current + tolerance:
        raise WebhookVerificationError("the message is from the future (webhook-timestamp)")
    secrets = [secret] if isinstance(secret, str) else list(secret)
    expected = [sign(payload, s, msg_id, timestamp).encode() for s in secrets]
    offered = [s.encode() for s in signatures.split() if s.startswith("v1,")]
    # Every pair is compared, in constant time, so timing tells nothing about which matched.
    matched = False
    for mine in expected:
        for theirs in offered:
            matched |= hmac.compare_digest(mine, theirs)
    if not matched:
        raise WebhookVerificationError("no signature matches the secret")
    try:
        return json.loads(_body(payload))
    except ValueError:
        raise WebhookVerificationError("the payload is not JSON") from None
