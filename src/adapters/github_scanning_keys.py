"""GitHub's secret-scanning signing keys: fetched, cached in the process, checked against.

GitHub signs each partner report with an ECDSA P-256 key it names in
`Github-Public-Key-Identifier`, and publishes its public keys at
`ICODRIP_GITHUB_SCANNING_KEYS_URL` (`{"public_keys": [{"key_identifier", "key" (PEM),
"is_current"}]}`). The document is fetched when a report names a key we do not hold (the
first report, or GitHub rotating its keys), at most once per `REFETCH_INTERVAL`: whoever
sends made-up identifiers cannot make us fetch more often than that (nor GitHub rate-limit
us). Within that interval an identifier we do not hold is not refused for good: it may be a
key GitHub has just rotated in, so the caller is told to come back (`ScanningKeysUnavailable`
with the seconds until the next fetch is allowed); only the requests that saw a fetch not
containing it are told it is unknown (None). Concurrent requests that need a fetch wait for
the same one. Only P-256 keys are taken (GitHub documents ECDSA-NIST-P256V1-SHA256). See ADR
0025.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import math
import time
from collections.abc import Callable

import httpx
import msgspec
import structlog
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

log = structlog.get_logger()

#: Seconds between two fetches of the key document, at least.
REFETCH_INTERVAL = 60.0
#: Keys older than this (seconds) are fetched again before use (kept if the fetch fails).
MAX_KEY_AGE = 3600.0
FETCH_TIMEOUT = 5.0
#: Bytes of the key document read at most (GitHub's is a few KiB).
MAX_DOCUMENT_BYTES = 1024 * 1024
#: A base64 DER ECDSA P-256 signature is under 100 characters; more is not one.
_MAX_SIGNATURE_TEXT = 200


class ScanningKeysUnavailable(Exception):
    """The key document could not be fetched or read; `retry_after` seconds until we try again."""

    def __init__(self, reason: str, retry_after: int) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


class IdentifierNotYetFetched(ScanningKeysUnavailable):
    """An identifier we do not hold, while the document was fetched too recently to fetch it
    again: perhaps a key GitHub has just rotated in, so not refused for good."""


class _PublicKey(msgspec.Struct):
    key_identifier: str
    key: str
    is_current: bool = False


class _KeyDocument(msgspec.Struct):
    public_keys: list[_PublicKey]


_document = msgspec.json.Decoder(_KeyDocument)


def parse_key_document(body: bytes) -> dict[str, ec.EllipticCurvePublicKey]:
    """The document's ECDSA P-256 keys by identifier; any other key, or one that does not
    load (a curve OpenSSL does not know raises UnsupportedAlgorithm), is left out."""
    keys: dict[str, ec.EllipticCurvePublicKey] = {}
    for entry in _document.decode(body).public_keys:
        try:
            key = serialization.load_pem_public_key(entry.key.encode())
        except (ValueError, TypeError, UnicodeError, UnsupportedAlgorithm):
            key = None
        if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
            keys[entry.key_identifier] = key
        else:
            log.warning("github_scanning_keys.unusable_key", key_identifier=entry.key_identifier)
    return keys


def decode_signature(text: str) -> bytes | None:
    """The DER signature in a `Github-Public-Key-Signature` header, or None if it is none."""
    if len(text) > _MAX_SIGNATURE_TEXT:
        return None
    try:
        der = base64.b64decode(text.strip(), validate=True)
        decode_dss_signature(der)
    except (binascii.Error, ValueError):
        return None
    return der


def signature_valid(key: ec.EllipticCurvePublicKey, der: bytes, body: bytes) -> bool:
    """True when `der` is `key`'s ECDSA signature, over SHA-256, of exactly `body`."""
    try:
        key.verify(der, body, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return False
    return True


class GitHubScanningKeys:
    """GitHub's public keys, fetched from `url` on demand; one per API process."""

    def __init__(
        self,
        url: str,
        *,
        clock: Callable[[], float] = time.monotonic,
        refetch_interval: float = REFETCH_INTERVAL,
        timeout: float = FETCH_TIMEOUT,
    ) -> None:
        self.url = url
        self._clock = clock
        self._refetch_interval = refetch_interval
        self._timeout = timeout
        self._keys: dict[str, ec.EllipticCurvePublicKey] = {}
        self._attempted_at: float | None = None
        self._attempts = 0
        self._fetched_at: float | None = None
        self._failed = False
        self._lock = asyncio.Lock()  # binds to the running loop at first use, not here

    async def key_for(self, identifier: str) -> ec.EllipticCurvePublicKey | None:
        """GitHub's key named `identifier`; None when a fetch made for this request found no
        such key; ScanningKeysUnavailable (IdentifierNotYetFetched: not held, and fetched too
        recently to look again) with the seconds until a fetch is allowed."""
        key = self._keys.get(identifier)
        if key is not None and not self._stale():
            return key
        attempts_before = self._attempts
        async with self._lock:
            # Another request may have fetched while this one waited: that fetch was ours too.
            key = self._keys.get(identifier)
            if key is not None and not self._stale():
                return key
            if self._attempts != attempts_before and not self._failed:
                return None  # fetched while this request waited, and not in it: unknown
            wait = self._seconds_until_fetch_allowed()
            if wait > 0:
                if key is not None:
                    return key
                if self._failed:
                    raise ScanningKeysUnavailable("the last fetch failed", math.ceil(wait))
                raise IdentifierNotYetFetched(
                    "not among the keys fetched; fetched too recently to fetch again",
                    math.ceil(wait),
                )
            try:
                await self._fetch()
            except ScanningKeysUnavailable:
                if key is not None:  # a known key stays usable while the document is away
                    return key
                raise
            return self._keys.get(identifier)

    def _stale(self) -> bool:
        """Whether the keys were fetched too long ago to trust that GitHub still publishes
        them: a withdrawn key is refused within `MAX_KEY_AGE` even if no unknown one comes."""
        return self._fetched_at is not None and self._clock() - self._fetched_at > MAX_KEY_AGE

    def _seconds_until_fetch_allowed(self) -> float:
        if self._attempted_at is None:
            return 0.0
        return self._attempted_at + self._refetch_interval - self._clock()

    async def _fetch(self) -> None:
        started = self._clock()
        self._failed = True  # until the document is in hand
        try:
            async with asyncio.timeout(self._timeout):  # httpx's timeout is per read, not total
                body = await self._download()
            keys = parse_key_document(body)
        except _EXPECTED_FAILURES as error:
            log.warning("github_scanning_keys.fetch_failed", url=self.url, error=_describe(error))
            raise ScanningKeysUnavailable(
                _describe(error), math.ceil(self._refetch_interval)
            ) from None
        except Exception as error:  # a bug, or a library's surprise: a 503, not a 500
            log.error("github_scanning_keys.fetch_crashed", url=self.url, error=_describe(error))
            raise ScanningKeysUnavailable(
                _describe(error), math.ceil(self._refetch_interval)
            ) from None
        finally:
            # Counted as an attempt whatever happened: a dead URL, or a document we cannot
            # read, is not fetched again by every report that comes in.
            self._attempted_at = started
            self._attempts += 1
        self._failed, self._fetched_at = False, started
        self._keys = keys  # whole: a key GitHub withdrew is no longer accepted
        log.info("github_scanning_keys.fetched", url=self.url, key_identifiers=sorted(keys))

    async def _download(self) -> bytes:
        headers = {"Accept": "application/json", "User-Agent": "icodrip-keys"}
        async with (
            httpx.AsyncClient(timeout=self._timeout, follow_redirects=False) as client,
            client.stream("GET", self.url, headers=headers) as response,
        ):
            if response.status_code != 200:
                raise _BadAnswer(f"HTTP {response.status_code}")
            body = b""
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > MAX_DOCUMENT_BYTES:
                    raise _BadAnswer(f"document over {MAX_DOCUMENT_BYTES} bytes")
            return body


class _BadAnswer(Exception):
    """The key URL answered, but not with a key document."""


_EXPECTED_FAILURES = (
    httpx.HTTPError,
    httpx.InvalidURL,
    TimeoutError,
    msgspec.DecodeError,
    _BadAnswer,
)


def _describe(error: Exception) -> str:
    # A timeout's message is empty: its type is what tells.
    return f"{type(error).__name__}: {error}"[:200]
