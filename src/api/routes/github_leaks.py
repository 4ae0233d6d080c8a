"""`POST /v1/leaks/github`: GitHub's secret-scanning partner reports, signed by GitHub.

Body: GitHub's JSON list of `{"token", "type", "url", "source"}`, decoded and acted on as
`POST /v1/leaks` does (`api.routes.leaks`). GitHub cannot hold our HMAC secret, so it signs
with ECDSA keys of its own: `Github-Public-Key-Identifier` names the key and
`Github-Public-Key-Signature` carries the base64 DER ECDSA P-256 signature, over SHA-256, of
the raw body; the public keys come from `ICODRIP_GITHUB_SCANNING_KEYS_URL`
(`adapters.github_scanning_keys`). Refusals: 401 `missing_signature`, `invalid_signature`,
`unknown_key_identifier` (only right after a fetch of GitHub's keys that did not hold it: GitHub
takes a 401 as final); 503 `leak_keys_unavailable` with `Retry-After` when the keys cannot be
fetched, or when the report names a key we do not hold while the document may not be fetched
again yet (perhaps a key GitHub has just rotated in: GitHub retries). No timestamp is signed,
so a captured report can be sent again: that is harmless, as `KeyRegistry.respond_to_leak`
acts once per key, and the answer tells nothing new.
"""

from __future__ import annotations

from typing import Annotated, Any

import structlog
from litestar import Controller, Request, post
from litestar.di import NamedDependency
from litestar.params import HeaderParameter
from litestar.status_codes import HTTP_200_OK

from adapters.github_scanning_keys import (
    IdentifierNotYetFetched,
    ScanningKeysUnavailable,
    decode_signature,
    signature_valid,
)
from api.errors import ApiError
from api.objects.service import LeakLabel
from api.routes.leaks import MAX_REPORT_BODY_BYTES, decode_reports, label_reports
from api.services import Services
from domain.key_format import redact_keys

log = structlog.get_logger()

IDENTIFIER_HEADER = "Github-Public-Key-Identifier"
SIGNATURE_HEADER = "Github-Public-Key-Signature"
#: Characters of the caller's key identifier a log line keeps (GitHub's are hex digests).
LOGGED_IDENTIFIER_LENGTH = 100


def _refused(code: str, message: str, identifier: str | None) -> ApiError:
    # The header is the caller's text: a key pasted into it is logged as its hint only.
    logged = redact_keys(identifier or "")[:LOGGED_IDENTIFIER_LENGTH]
    log.info("leak.github_refused", code=code, key_identifier=logged)
    return ApiError(401, code, message)


def _unavailable(error: ScanningKeysUnavailable) -> ApiError:
    if isinstance(error, IdentifierNotYetFetched):
        message = (
            "GitHub publishes no secret-scanning key with this identifier as of our last fetch "
            "of its keys, which may not be repeated yet; retry after Retry-After"
        )
    else:
        message = "GitHub's secret-scanning public keys cannot be fetched right now; retry later"
    return ApiError(
        503, "leak_keys_unavailable", message, headers={"Retry-After": str(error.retry_after)}
    )


class GitHubLeaksController(Controller):
    path = "/v1/leaks/github"
    tags = ["leaks"]

    # No key: GitHub signs the report (no access command is asked of a key).
    @post(
        "/",
        status_code=HTTP_200_OK,
        opt={"command": None},
        summary="GitHub leak reports",
        request_max_body_size=MAX_REPORT_BODY_BYTES,  # a batch of 1,000 matches fits
    )
    async def report_github_leaks(
        self,
        request: Request[Any, Any, Any],
        services: NamedDependency[Services],
        key_identifier: Annotated[
            str | None,
            HeaderParameter(
                name=IDENTIFIER_HEADER,
                description="The GitHub secret-scanning key that signed the body.",
            ),
        ] = None,
        key_signature: Annotated[
            str | None,
            HeaderParameter(
                name=SIGNATURE_HEADER,
                description="Base64 DER ECDSA P-256 signature, over SHA-256, of the raw body.",
            ),
        ] = None,
    ) -> list[LeakLabel]:
        """Revoke or roll every live key GitHub reports; label each token for GitHub."""
        body = await request.body()
        if not key_identifier or not key_signature:
            raise _refused(
                "missing_signature",
                f"send {IDENTIFIER_HEADER} and {SIGNATURE_HEADER}, as GitHub does",
                key_identifier,
            )
        # Checked before any key is looked up: junk must not make us fetch GitHub's keys.
        der = decode_signature(key_signature)
        if der is None:
            raise _refused(
                "invalid_signature", "the signature is not base64 DER ECDSA", key_identifier
            )
        try:
            key = await services.github_keys.key_for(key_identifier)
        except ScanningKeysUnavailable as error:
            raise _unavailable(error) from None
        if key is None:
            raise _refused(
                "unknown_key_identifier",
                "GitHub publishes no secret-scanning key with this identifier (fetched just now)",
                key_identifier,
            )
        if not signature_valid(key, der, body):
            raise _refused(
                "invalid_signature", "the signature does not match the body", key_identifier
            )
        return await label_reports(services, decode_reports(body), scanner="github")
