"""`Idempotency-Key` on every keyed `POST`: a retried request answers as the first one did.

Raw ASGI between the key gate (which has put the principal on the scope) and Litestar. With
the header, the request claims a slot named by its API key and the header's value
(`adapters.idempotency_store`) before it runs:

- a free slot: the request runs, its claim renewed while it does. A success (2xx) is kept
  for 24 hours, and so is a 500 (a bug's answer may follow a change already made); anything
  else gives the slot up: a refusal or a 503 changed nothing, so running it again is as good
  as replaying it, and answers the request as things stand now;
- a kept answer for the same method, path and body: that answer again, with
  `Idempotent-Replayed: true`, and nothing runs;
- the same header with another method, path or body: `422 idempotency_key_reused`;
- a request with the same header still running: `409 idempotency_key_in_use`.

Answers are sealed (AES-GCM) under a key derived from the pepper and the presented API key
itself, and their fingerprints are keyed the same way: the store alone, or the store with the
pepper, opens none of them, and an answer that showed a new key's secret replays it only to
a holder of the key that asked for it (docs/adr/0024).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
from typing import Any

import msgspec
import structlog
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from adapters import idempotency_store
from adapters.idempotency_store import IdempotencyStore, IdempotencyUnavailable
from api.auth import bearer_token
from api.context import request_context
from api.errors import send_error
from projections.key_lookup import Principal

log = structlog.get_logger()

HEADER = b"idempotency-key"
REPLAYED_HEADER = "Idempotent-Replayed"
MAX_IDEMPOTENCY_KEY = 255
#: Bodies larger than every route's own limit are passed on unkept (Litestar answers 413).
MAX_KEPT_BODY = 128 * 1024
#: Response headers a replay repeats; the edge and the gate add their own again.
_KEPT_HEADERS = {b"content-type", b"cache-control", b"location"}


class KeptAnswer(msgspec.Struct, array_like=True):
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes


_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(KeptAnswer).decode


class Idempotency:
    """Wraps the app behind the key gate; keyed POSTs with the header are kept and replayed."""

    def __init__(
        self,
        app: Any,
        *,
        store: IdempotencyStore,
        pepper: bytes,
        best_effort_paths: frozenset[str] = frozenset(),
    ) -> None:
        self.app = app
        self.store = store
        self._pepper = pepper
        # Where losing the request is worse than perhaps running it twice (tracking events,
        # sent by browsers on every write): without the store, run it unguarded.
        self._best_effort = best_effort_paths

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] != "POST"
            or not isinstance(scope.get("user"), Principal)
        ):
            await self.app(scope, receive, send)
            return
        values = [v for name, v in scope["headers"] if name == HEADER]
        if not values:
            await self.app(scope, receive, send)
            return
        request_id = request_context(scope).request_id
        problem = _header_problem(values)
        if problem:
            await send_error(send, 422, "validation_error", problem, request_id)
            return
        body, more, receive = await _buffered(receive)
        if more:
            await self.app(scope, receive, send)
            return
        seal = self._sealing_key(scope)
        principal: Principal = scope["user"]
        slot = principal.key_id_text + ":" + hashlib.sha256(values[0]).hexdigest()
        asked = b"\0".join((b"POST", scope["path"].encode(), scope["query_string"], body))
        fingerprint = hmac.digest(seal, asked, "sha256")
        try:
            held = await self.store.begin(slot, fingerprint)
        except IdempotencyUnavailable as error:
            log.warning("idempotency.unavailable", error=str(error), request_id=request_id)
            if scope["path"] in self._best_effort:
                await self.app(scope, receive, send)
            else:
                await _unavailable(send, request_id)
            return
        if held.claim is None:
            if not hmac.compare_digest(held.fingerprint, fingerprint):
                await _reused(send, request_id)
            elif held.answer is None:
                await _in_use(send, request_id)
            else:
                log.info("idempotency.replayed", key_id=principal.key_id_text, path=scope["path"])
                await _replay(send, seal, fingerprint, held.answer, request_id)
            return
        keeper = _Keeper(send, self.store, slot, held.claim, seal, fingerprint)
        heartbeat = asyncio.create_task(keeper.hold())
        try:
            await self.app(scope, receive, keeper.send)
        finally:
            heartbeat.cancel()
            await keeper.settle()

    def _sealing_key(self, scope: Any) -> bytes:
        """Derived from the presented key (only its holder can ask for a replay) and the pepper."""
        presented = next((v for name, v in scope["headers"] if name == b"authorization"), b"")
        key = bearer_token(presented).encode("latin-1")
        return hmac.digest(self._pepper, b"icodrip-idempotency\0" + key, "sha256")


class _Keeper:
    """The send of one claimed request: holds a keepable answer back until it is kept."""

    def __init__(
        self,
        send: Any,
        store: IdempotencyStore,
        slot: str,
        claim: bytes,
        seal: bytes,
        fingerprint: bytes,
    ) -> None:
        self._send, self._store, self._slot, self._claim = send, store, slot, claim
        self._seal, self._fingerprint = seal, fingerprint
        self._started: dict[str, Any] | None = None
        self._holding = False
        self._chunks: list[bytes] = []
        self._kept = False

    async def hold(self) -> None:
        """Keep the claim alive while the request runs (a lapsed one could be taken over)."""
        while True:
            await asyncio.sleep(idempotency_store.CLAIM_SECONDS / 3)
            try:
                await self._store.extend(self._slot, self._claim)
            except IdempotencyUnavailable as error:
                log.warning("idempotency.extend_failed", error=str(error))

    async def send(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            self._started = message
            self._holding = _keepable(message)
            if not self._holding:
                await self._send(message)
            return
        if not self._holding or kind != "http.response.body":
            await self._send(message)
            return
        self._chunks.append(message.get("body", b""))
        if message.get("more_body", False):
            return
        body = b"".join(self._chunks)
        # Kept before it is sent: a client that retries on seeing it finds it kept.
        await self._keep(body)
        await self._send(self._started)
        await self._send({"type": "http.response.body", "body": body})

    async def _keep(self, body: bytes) -> None:
        started = self._started or {}
        headers = [(n, v) for n, v in started.get("headers", []) if n.lower() in _KEPT_HEADERS]
        plain = _encode(KeptAnswer(started["status"], headers, body))
        nonce = os.urandom(12)
        sealed = nonce + AESGCM(self._seal).encrypt(nonce, plain, self._fingerprint)
        self._kept = True
        try:
            await self._store.finish(self._slot, self._claim, self._fingerprint, sealed)
        except IdempotencyUnavailable as error:
            # Answered all the same; a retry within the claim's life is told "in use".
            log.warning("idempotency.keep_failed", error=str(error))

    async def settle(self) -> None:
        """Give the slot up unless an answer was kept in it."""
        if self._kept:
            return
        try:
            await self._store.release(self._slot, self._claim)
        except IdempotencyUnavailable as error:  # the claim lapses on its own
            log.warning("idempotency.release_failed", error=str(error))


def _keepable(start: dict[str, Any]) -> bool:
    """A whole answer of known, modest length that says what happened: a success, or a 500
    (a bug's answer may follow a change already made: never run it twice). A refusal and a
    503 change nothing, and are run again; so is a streamed answer (never kept whole)."""
    status = start["status"]
    if not (200 <= status < 300 or status == 500):
        return False
    length = next((v for n, v in start.get("headers", []) if n.lower() == b"content-length"), None)
    return length is not None and length.isdigit() and int(length) <= MAX_KEPT_BODY


def _header_problem(values: list[bytes]) -> str | None:
    if len(values) > 1:
        return "Idempotency-Key: send the header once"
    value = values[0]
    if not value.strip():
        return "Idempotency-Key: must not be empty"
    if len(value) > MAX_IDEMPOTENCY_KEY:
        return f"Idempotency-Key: at most {MAX_IDEMPOTENCY_KEY} characters"
    if any(not 0x20 <= c < 0x7F for c in value):
        return "Idempotency-Key: printable ASCII only (a UUID is a good choice)"
    return None


async def _buffered(receive: Any) -> tuple[bytes, bool, Any]:
    """The request body (read whole unless over `MAX_KEPT_BODY`: then `more`), and a receive
    that hands the app what was read, then the rest."""
    messages: list[dict[str, Any]] = []
    size = 0
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            break
        size += len(message.get("body", b""))
        if not message.get("more_body", False) or size > MAX_KEPT_BODY:
            break
    more = size > MAX_KEPT_BODY
    body = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.request")
    pending = list(messages)

    async def replaying_receive() -> Any:
        if pending:
            return pending.pop(0)
        return await receive()

    return body, more, replaying_receive


async def _reused(send: Any, request_id: str) -> None:
    await send_error(
        send,
        422,
        "idempotency_key_reused",
        "this Idempotency-Key was used with another request in the last 24 hours; "
        "use a new key for a new request",
        request_id,
    )


async def _in_use(send: Any, request_id: str) -> None:
    await send_error(
        send,
        409,
        "idempotency_key_in_use",
        "a request with this Idempotency-Key is still being answered; retry shortly",
        request_id,
        [(b"retry-after", b"1")],
    )


async def _replay(
    send: Any, seal: bytes, fingerprint: bytes, sealed: bytes, request_id: str
) -> None:
    """The kept answer again, marked as a replay."""
    try:
        kept = _decode(AESGCM(seal).decrypt(sealed[:12], sealed[12:], fingerprint))
    except (InvalidTag, msgspec.DecodeError):
        log.error("idempotency.unreadable_answer", request_id=request_id)
        await _unavailable(send, request_id)
        return
    headers = [*kept.headers, (b"idempotent-replayed", b"true")]
    headers.append((b"content-length", b"%d" % len(kept.body)))
    await send({"type": "http.response.start", "status": kept.status, "headers": headers})
    await send({"type": "http.response.body", "body": kept.body})


async def _unavailable(send: Any, request_id: str) -> None:
    await send_error(
        send,
        503,
        "idempotency_unavailable",
        "requests with an Idempotency-Key cannot be answered safely right now; retry shortly",
        request_id,
        [(b"retry-after", b"1")],
    )
