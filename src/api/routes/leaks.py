"""`POST /v1/leaks`: leak reports from a secret scanner (GitHub's partner program shape).

Body: a JSON list of `{"token": "...", "type": "...", "url": "...", "source": "..."}`.
Authenticated by `X-Icodrip-Timestamp: <Unix seconds>` and
`X-Icodrip-Signature: sha256=<hex HMAC-SHA256 of "<timestamp>." + the raw body>` under the
operator-configured `ICODRIP_LEAK_SIGNING_KEY` (401 when missing, wrong, or signed more than
5 minutes from now; 503 when no key is configured). No API key is involved. Each token that
is one of our live secret keys is flagged `exposed` (with the URL) and revoked or rolled per
its org's `leak_policy`; a repeated report changes nothing more (see
`KeyRegistry.respond_to_leak`), so a replay inside the window is harmless.

GitHub itself signs with ECDSA keys of its own: its reports go to `POST /v1/leaks/github`
(`api.routes.github_leaks`), which shares the decoding and per-token handling below.

A body may hold up to `MAX_REPORTED_TOKENS` matches in `MAX_REPORT_BODY_BYTES` (more than the
API's usual 64 KiB: a scanner's batch must fit, or it is refused on every retry). One odd
match does not sink its signed batch: an over-long `url`, `source` or `type` is cut short, and
a token longer than `MAX_TOKEN_LENGTH` is no key of ours (`false_positive`).

Answer, per reported token, as GitHub expects:
`{"token_hash": sha256 hex of the token, "token_type": ..., "label": "true_positive" |
"false_positive"}` — never the token itself.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from typing import Annotated, Any, Final

import msgspec
import structlog
from litestar import Controller, Request, post
from litestar.di import NamedDependency
from litestar.status_codes import HTTP_200_OK

from api.errors import ApiError
from api.json_body import MAX_JSON_DEPTH, nested_deeper_than
from api.objects.service import LeakLabel
from api.services import Services
from domain.ids import format_key_id
from domain.key_format import MalformedKey, hash_key, parse_key

log = structlog.get_logger()

SIGNATURE_HEADER = "x-icodrip-signature"
TIMESTAMP_HEADER = "x-icodrip-timestamp"
SIGNATURE_PREFIX = "sha256="
#: How far a report's signed timestamp may be from our clock, either way (seconds).
TIMESTAMP_TOLERANCE = 300
MAX_REPORTED_TOKENS = 1000
#: A report body's size at most: 1,000 matches of GitHub's shape are about 200 KiB.
MAX_REPORT_BODY_BYTES = 1024 * 1024
#: Characters kept of a match's `url`, and of its `source` and `type`; a token longer than
#: `MAX_TOKEN_LENGTH` is labelled without being looked at.
MAX_URL_LENGTH = 2000
MAX_LABEL_LENGTH = 200
MAX_TOKEN_LENGTH = 500
TRUE_POSITIVE: Final = "true_positive"
FALSE_POSITIVE: Final = "false_positive"


class LeakReport(msgspec.Struct):
    token: str
    type: str = ""
    url: str = ""
    source: str = ""

    def __post_init__(self) -> None:
        # Cut, not refused: one match's odd text must not make a whole signed batch a 422.
        self.type = self.type[:MAX_LABEL_LENGTH]
        self.url = self.url[:MAX_URL_LENGTH]
        self.source = self.source[:MAX_LABEL_LENGTH]


_decoder = msgspec.json.Decoder(
    Annotated[list[LeakReport], msgspec.Meta(max_length=MAX_REPORTED_TOKENS)]
)


def sign(body: bytes, key: bytes, timestamp: int) -> str:
    """The signature header a reporter sends for `body` at `timestamp` (Unix seconds)."""
    signed = str(timestamp).encode() + b"." + body
    return SIGNATURE_PREFIX + hmac.new(key, signed, hashlib.sha256).hexdigest()


def _timestamp(header: str | None) -> int | None:
    # One spelling, the documented one: int() alone would also take "-1", " +17_0" or
    # another script's digits, and a signer and we could then disagree on the signed text.
    if not header or not header.isascii() or not header.isdigit() or len(header) > 12:
        return None
    return int(header)


def _signature_valid(header: str, body: bytes, key: bytes, timestamp: int) -> bool:
    expected = sign(body, key, timestamp).encode()
    return hmac.compare_digest(header.strip().lower().encode(), expected)


class LeaksController(Controller):
    path = "/v1/leaks"
    tags = ["leaks"]

    # No key: a report is signed by the scanner (no access command is asked of a key).
    @post(
        "/",
        status_code=HTTP_200_OK,
        opt={"command": None},
        request_max_body_size=MAX_REPORT_BODY_BYTES,
    )
    async def report_leaks(
        self, request: Request[Any, Any, Any], services: NamedDependency[Services]
    ) -> list[LeakLabel]:
        """Revoke or roll every reported live key; label each token for the reporter."""
        signing_key = services.settings.leak_signing_key
        if not signing_key:
            raise ApiError(
                503, "leak_reports_disabled", "leak reports are not configured on this service"
            )
        body = await request.body()
        header = request.headers.get(SIGNATURE_HEADER)
        if not header:
            raise ApiError(
                401, "missing_signature", f"sign the body: {SIGNATURE_HEADER}: sha256=<hex>"
            )
        timestamp = _timestamp(request.headers.get(TIMESTAMP_HEADER))
        if timestamp is None:
            raise ApiError(
                401,
                "missing_timestamp",
                f"send {TIMESTAMP_HEADER}: <Unix time in seconds>, signed with the body",
            )
        if not _signature_valid(header, body, signing_key, timestamp):
            raise ApiError(
                401, "invalid_signature", "the signature does not match the timestamp and body"
            )
        # Checked after the signature, so only a holder of the key learns that its clock is off.
        if abs(time.time() - timestamp) > TIMESTAMP_TOLERANCE:
            raise ApiError(
                401,
                "stale_timestamp",
                f"the report was signed more than {TIMESTAMP_TOLERANCE} s from now; sign it again",
            )
        return await label_reports(services, decode_reports(body), scanner="hmac")


def decode_reports(body: bytes) -> list[LeakReport]:
    """The reports in a (verified) body, or the contract's 400/422 for anything else."""
    if nested_deeper_than(body):  # msgspec would recurse skipping unknown fields: 500
        raise ApiError(400, "malformed_json", f"JSON is nested deeper than {MAX_JSON_DEPTH}")
    try:
        reports: list[LeakReport] = _decoder.decode(body)
    except msgspec.DecodeError as error:
        raise ApiError(422, "validation_error", f"body: {error}"[:300]) from None
    return reports


async def label_reports(
    services: Services, reports: list[LeakReport], *, scanner: str
) -> list[LeakLabel]:
    """Act on every reported live key per its org's leak policy; label each token in order."""
    results = [await _handle(services, report, scanner) for report in reports]
    # The keys are already revoked or rolled: failing to read that back is no failed request.
    await services.mirror.refresh_after_write()
    return results


async def _handle(services: Services, report: LeakReport, scanner: str) -> LeakLabel:
    answer = LeakLabel(
        token_hash=hashlib.sha256(report.token.encode()).hexdigest(),
        token_type=report.type,
        label=FALSE_POSITIVE,
    )
    if len(report.token) > MAX_TOKEN_LENGTH:
        return answer
    try:
        parsed = parse_key(report.token.strip())
    except MalformedKey:
        return answer
    key_hash = hash_key(parsed.text, services.settings.key_pepper)
    record = services.mirror.get(key_hash) or await services.mirror.find(key_hash)
    if record is None:
        return answer
    answer.label = TRUE_POSITIVE
    answer.hint = parsed.hint
    action = await asyncio.to_thread(
        services.registry.respond_to_leak,
        record.key_id,
        url=report.url,
        source=report.source,
    )
    log.warning(
        "leak.reported",
        key_id=format_key_id(record.key_id),
        key_hint=parsed.hint,
        action=action,
        url=report.url[:300],
        scanner=scanner,
    )
    return answer
