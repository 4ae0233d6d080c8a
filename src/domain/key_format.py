"""The API key format: `ak_live_` / `ak_test_` / `pk_live_` / `pk_test_` + secret + checksum.

A key is a prefix, 27 base62 characters of randomness (62^27 > 2^160) and a 6-character
base62 CRC32 of everything before it. The checksum lets anyone (the API, a leak scanner)
reject a typo, a truncated key or a random string offline, before any lookup. Only an
HMAC-SHA256 of the key, under a server-side pepper, is ever stored.

Client-supplied text that is stored, logged or echoed (a path, a User-Agent, an error message
quoting a body) goes through `redact_keys` first: each checksum-valid key in it, or such a key
cut short inside its checksum, becomes its hint, which still tells which key leaked and is no
longer a key. Text that only looks like a key (a wrong checksum) is left as it is.
"""

from __future__ import annotations

import hmac
import re
import secrets
import zlib
from dataclasses import dataclass
from enum import StrEnum

from domain.errors import ValidationError

ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
RANDOM_LENGTH = 27
CHECKSUM_LENGTH = 6
PREFIX_LENGTH = len("ak_live_")
KEY_LENGTH = PREFIX_LENGTH + RANDOM_LENGTH + CHECKSUM_LENGTH
HINT_LENGTH = 4

#: Finds candidate keys in free text (the leak scanner validates each checksum). Nothing is
#: asked of the text before a key, which is leaked after word characters too
#: (`?api_key%3Dak_live_…`, `"…\nak_live_…"` in JSON, `API_KEY_ak_live_…`); the checksum
#: drops chance matches. After it, no further key character: a longer run (another vendor's
#: `pk_live_…`) is no key of ours.
KEY_PATTERN = re.compile(r"[ap]k_(?:live|test)_[0-9A-Za-z]{33}(?![0-9A-Za-z])")
# No word boundaries: redaction must also catch a key glued to other text ("Bearerak_live_…"),
# and a key cut short inside its checksum where the text ends or stops being key-like (a
# message quoting `value[:40]`): the checksum follows from the rest, so that is the whole key.
_EMBEDDED_KEY = re.compile(
    r"[ap]k_(?:live|test)_[0-9A-Za-z]{27}(?:[0-9A-Za-z]{6}|[0-9A-Za-z]{0,5}(?![0-9A-Za-z_]))"
)
_BODY_LENGTH = PREFIX_LENGTH + RANDOM_LENGTH

_BASE62 = frozenset(ALPHABET)


class KeyType(StrEnum):
    SECRET = "secret"  # noqa: S105 - a key type, not a password
    PUBLIC = "public"


class Environment(StrEnum):
    LIVE = "live"
    TEST = "test"


_TYPE_BY_TAG = {"ak": KeyType.SECRET, "pk": KeyType.PUBLIC}
_TAG_BY_TYPE = {v: k for k, v in _TYPE_BY_TAG.items()}


class MalformedKey(ValidationError):
    """The text cannot be an API key; `reason` says precisely why."""

    code = "malformed_api_key"

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class ParsedKey:
    """A key whose format and checksum are valid (it may still be unknown or revoked)."""

    text: str
    type: KeyType
    env: Environment

    @property
    def hint(self) -> str:
        return hint_for(self.text)


def _base62(number: int, width: int) -> str:
    chars = []
    for _ in range(width):
        number, digit = divmod(number, 62)
        chars.append(ALPHABET[digit])
    return "".join(reversed(chars))


def _checksum(body: str) -> str:
    return _base62(zlib.crc32(body.encode("ascii")), CHECKSUM_LENGTH)


def prefix_for(key_type: KeyType, env: Environment) -> str:
    return f"{_TAG_BY_TYPE[key_type]}_{env.value}_"


def generate_key(key_type: KeyType, env: Environment) -> str:
    """A fresh key of this type and environment, from the OS's CSPRNG."""
    body = prefix_for(key_type, env) + "".join(
        secrets.choice(ALPHABET) for _ in range(RANDOM_LENGTH)
    )
    return body + _checksum(body)


def parse_key(text: str) -> ParsedKey:
    """The key's type and environment, or MalformedKey with the precise reason."""
    if not text:
        raise MalformedKey("empty", "the API key is empty")
    tag, _, rest = text.partition("_")
    env_text, _, _ = rest.partition("_")
    if tag not in _TYPE_BY_TAG or env_text not in ("live", "test") or text[7:8] != "_":
        raise MalformedKey(
            "unknown_prefix", "the API key must start with ak_live_, ak_test_, pk_live_ or pk_test_"
        )
    if len(text) != KEY_LENGTH:
        raise MalformedKey(
            "wrong_length",
            f"the API key has {len(text)} characters, expected {KEY_LENGTH} (truncated?)",
        )
    tail = text[PREFIX_LENGTH:]
    if not _BASE62.issuperset(tail):
        raise MalformedKey(
            "invalid_characters", "the API key contains characters outside [0-9A-Za-z]"
        )
    if not hmac.compare_digest(_checksum(text[:-CHECKSUM_LENGTH]), text[-CHECKSUM_LENGTH:]):
        raise MalformedKey("checksum_mismatch", "the API key's checksum does not match (typo?)")
    return ParsedKey(text=text, type=_TYPE_BY_TAG[tag], env=Environment(env_text))


def is_valid_key(text: str) -> bool:
    """True when `text` has a valid key format and checksum."""
    try:
        parse_key(text)
    except MalformedKey:
        return False
    return True


def hash_key(key: str, pepper: bytes) -> str:
    """The stored form of a key: hex HMAC-SHA256 under the server-side pepper."""
    return hmac.digest(pepper, key.encode("ascii"), "sha256").hex()  # one-shot C: ~0.5 µs


def hint_for(key: str) -> str:
    """What may be shown after creation: the prefix and the last four characters."""
    return f"{key[:PREFIX_LENGTH]}…{key[-HINT_LENGTH:]}"


def redact_keys(text: str) -> str:
    """`text` with every key in it (whole, or cut inside its checksum) replaced by its hint."""
    if "k_" not in text:  # every key contains `ak_` or `pk_`: most text stops here
        return text
    pieces: list[str] = []
    kept = search = 0
    while (match := _EMBEDDED_KEY.search(text, search)) is not None:
        candidate = match.group()
        body = candidate[:_BODY_LENGTH]
        checksum = _checksum(body)
        if checksum.startswith(candidate[_BODY_LENGTH:]):
            pieces += (text[kept : match.start()], hint_for(body + checksum))
            kept = search = match.end()
        else:
            # A key-shaped run may end inside the next key's prefix: look again one further.
            search = match.start() + 1
    if not pieces:
        return text
    pieces.append(text[kept:])
    return "".join(pieces)
