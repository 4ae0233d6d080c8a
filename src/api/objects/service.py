"""What the service says about itself (probes), about reported leaks and public revocations."""

from __future__ import annotations

from typing import Literal

import msgspec
from msgspec import UNSET, UnsetType


class Health(msgspec.Struct, kw_only=True):
    status: Literal["ok"] = "ok"


class Readiness(msgspec.Struct, kw_only=True):
    """Ready once the key mirror has loaded and caught up with the key store."""

    status: Literal["ready", "starting"]
    key_position: int


class LeakLabel(msgspec.Struct, kw_only=True):
    """A reported token's label for the scanner; `hint` only for one of our live keys."""

    token_hash: str
    token_type: str
    label: Literal["true_positive", "false_positive"]
    hint: str | UnsetType = UNSET


class RevocationAccepted(msgspec.Struct, kw_only=True):
    """The one answer to a public revocation, whatever was sent: it tells no key's fate."""

    status: Literal["accepted"] = "accepted"
