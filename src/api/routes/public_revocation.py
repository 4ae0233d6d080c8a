"""`POST /v1/public/revoke`: whoever finds a leaked key may kill it, with no key of their own.

Body: `{"keys": ["ak_live_…", …]}`, 1 to `MAX_KEYS` strings of at most `MAX_KEY_LENGTH`
characters (else 422 `validation_error`). As GitHub's "revoke a list of credentials": no
authentication, a per-address limit against abuse, and always `202 {"status": "accepted"}`.

The answer never tells whether a string was a key, ours, live, or already revoked: it is the
same body and headers for all of them, and it is sent before any string is even looked at
(the work runs after the response, as its background task), so neither its content nor its
timing depends on what was sent. Strings that fail the key checksum are ignored, and so are
public keys (`pk_…`: public by design). Each live secret key is flagged `exposed` (source
`public_revocation`; the reporter's address is logged, not stored) and revoked or rolled per its
organization's leak policy (`KeyRegistry.respond_to_leak`), audited and announced to webhooks
as any leak report is.
"""

from __future__ import annotations

import asyncio
import ipaddress
from dataclasses import replace
from typing import Annotated, Any

import msgspec
import structlog
from litestar import Controller, Request, Response, post
from litestar.background_tasks import BackgroundTask
from litestar.di import NamedDependency
from litestar.params import JSONBody
from litestar.status_codes import HTTP_202_ACCEPTED

from api.auth import over_limit
from api.context import request_context
from api.objects.service import RevocationAccepted
from api.services import Services
from domain.ids import format_key_id
from domain.key_format import KeyType, MalformedKey, hash_key, parse_key, redact_keys
from domain.key_states import ExposureSource
from domain.rate_limits import PER_ADDRESS

log = structlog.get_logger()

PATH = "/v1/public/revoke"
MAX_KEYS = 100
#: Longer than any key (a key is 40-odd characters), short enough to bound the work.
MAX_KEY_LENGTH = 200
#: Calls one client address may make per minute (up to `MAX_KEYS` keys each). Enough for
#: someone cleaning up a leak by hand or script; too few to make guessing keys worthwhile.
PUBLIC_REVOCATIONS_PER_MINUTE = 10


class KeysToRevoke(msgspec.Struct, forbid_unknown_fields=True):
    """Keys found exposed: any strings; those that are not our live secret keys are ignored."""

    keys: Annotated[
        list[Annotated[str, msgspec.Meta(max_length=MAX_KEY_LENGTH)]],
        msgspec.Meta(min_length=1, max_length=MAX_KEYS),
    ]


class PublicRevocationController(Controller):
    path = PATH
    tags = ["leaks"]

    # No key: whoever holds a leaked key may kill it (no access command is asked of a key).
    @post("/", status_code=HTTP_202_ACCEPTED, opt={"command": None})
    async def revoke_publicly(
        self,
        request: Request[Any, Any, Any],
        services: NamedDependency[Services],
        data: JSONBody[KeysToRevoke],
    ) -> Response[RevocationAccepted]:
        """Revoke or roll each live secret key sent; the answer is the same whatever was sent."""
        context = request_context(request.scope)
        client_addr = context.client_addr
        decision = await services.limiter.hit(
            f"public-revoke:{_sender(client_addr)}", PUBLIC_REVOCATIONS_PER_MINUTE
        )
        decision = replace(decision, policy=PER_ADDRESS)
        if not decision.allowed:
            raise over_limit(
                context,
                decision,
                f"one address may make {decision.limit} public revocations per minute; "
                f"retry in {decision.retry_after} s",
            )
        context.rate_limit = decision  # the edge adds the headers
        texts = list(dict.fromkeys(text.strip() for text in data.keys))
        return Response(
            RevocationAccepted(),
            status_code=HTTP_202_ACCEPTED,
            background=BackgroundTask(revoke_keys, services, texts, client_addr),
        )


def _sender(client_addr: str | None) -> str:
    """Whom the limit counts: the address, or its /64 for IPv6 (one host's usual share)."""
    if client_addr is None or ":" not in client_addr:
        return str(client_addr)
    try:
        return str(ipaddress.ip_network(f"{client_addr}/64", strict=False))
    except ValueError:
        return client_addr


async def revoke_keys(services: Services, texts: list[str], client_addr: str | None) -> None:
    """Respond to the leak of each live secret key among `texts`; never raises.

    Keys are found in the process's mirror only (every key, current within a second): a
    string that is no key costs a hash and a lookup, never a query, however many are sent.
    """
    changed = False
    for text in texts:
        try:
            parsed = parse_key(text)
        except MalformedKey:
            continue
        if parsed.type is KeyType.PUBLIC:
            continue
        key_hash = hash_key(parsed.text, services.settings.key_pepper)
        record = services.mirror.get(key_hash)
        if record is None:
            continue
        try:
            # The reporter's address stays in the logs (which expire), not in the key's history.
            action = await asyncio.to_thread(
                services.registry.respond_to_leak,
                record.key_id,
                url="",
                source="public revocation",
                exposure=ExposureSource.PUBLIC_REVOCATION,
            )
        except Exception as error:
            # The answer is sent already: log all of it, and go on with the other keys.
            log.error(
                "leak.public_revocation_failed",
                key_id=format_key_id(record.key_id),
                key_hint=parsed.hint,
                error=type(error).__name__,
                message=redact_keys(str(error))[:300],
            )
            continue
        changed = changed or action != "none"
        log.warning(
            "leak.revoked_publicly",
            key_id=format_key_id(record.key_id),
            key_hint=parsed.hint,
            action=action,
            client_addr=client_addr,
        )
    if changed:
        await services.mirror.refresh_after_write()
