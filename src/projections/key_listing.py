"""The key listing: every key's latest state, kept by the key-lookup view so a listing is one
read instead of one aggregate load per key (ADR 0021).

Pure (no I/O): a key's state as stored bytes and back, and the fold of stored events into
those states. The state is the aggregate's own attributes, written by the aggregate's own
events (`event.mutate`), so the listing cannot drift from what loading the key would give;
a test compares the two over every kind of event.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any, NamedTuple
from uuid import UUID

import msgspec
import structlog

from domain.api_key import ApiKey
from domain.key_format import Environment, KeyType
from domain.key_states import ExpiryCause
from domain.lifetime_policy import UnusedWarning
from domain.plans import Permission

#: The aggregate's base attributes, which it keeps with a leading underscore.
_BASE = ("id", "version", "created_on", "modified_on")
log = structlog.get_logger()


class KeyState(msgspec.Struct, kw_only=True, omit_defaults=True):
    """An `ApiKey`'s attributes, typed, so that they round-trip exactly through storage.

    Building one from a key with an attribute this struct lacks fails (`TypeError`): a new
    attribute of `ApiKey` must be added here too, or the listing would lose it.
    """

    id: UUID
    version: int
    created_on: datetime
    modified_on: datetime
    org_id: UUID
    name: str
    env: Environment
    type: KeyType
    key_hash: str
    hint: str
    permissions: frozenset[Permission] | None = None
    expires_at: datetime | None = None
    allowed_origins: list[str] = []
    predecessor_id: UUID | None = None
    created_by: str
    successor_id: UUID | None = None
    revoked_at: datetime | None = None
    revoked_by: str | None = None
    revocation_reason: str | None = None
    expiry_cause: ExpiryCause | None = None
    allowed_ips: list[str] = []
    exposed_at: datetime | None = None
    exposures: list[dict[str, str]] = []
    idle_revocation: tuple[datetime, timedelta] | None = None
    unused_warning: UnusedWarning | None = None


# JSON, not msgpack: msgpack keeps a datetime as a UTC timestamp and would drop the offset an
# expiry was given in (`+02:00`), which the key object shows as given.
_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(KeyState).decode


def state_of(key: ApiKey) -> bytes:
    """The key's state as stored bytes."""
    attributes = {
        name.removeprefix("_"): value
        for name, value in vars(key).items()
        if name != "_pending_events"
    }
    return _encode(KeyState(**attributes))


def key_from(state: bytes) -> ApiKey:
    """The key whose state these bytes are (as loading it from its events would give)."""
    decoded = _decode(state)
    key = ApiKey.__new__(ApiKey)
    attributes: dict[str, Any] = {
        ("_" + name if name in _BASE else name): getattr(decoded, name)
        for name in decoded.__struct_fields__
    }
    key.__dict__.update(attributes, _pending_events=[])
    return key


#: The key as it was at a version (`(key_id, version) → ApiKey`), for a key the listing does
#: not hold, or holds behind a gap (a view written by code without the listing).
LoadKey = Callable[[UUID, int], ApiKey | None]


class Folded(NamedTuple):
    """What a fold did: the keys it changed, and those it could not keep (no state for them)."""

    changed: set[UUID]
    dropped: set[UUID]


def fold_keys(events: Iterable[object], keys: dict[UUID, ApiKey], load: LoadKey) -> Folded:
    """Apply each key event to its key in `keys` (in place).

    An event the key already has (its version is not beyond the key's) is skipped, so a
    state read a little after its position is folded correctly. A key missing from `keys`
    is created by its `Created` event; when that came earlier, or when the key's state is
    more than one version behind the event, it is loaded (as it was just before the event)
    with `load`. A key `load` has nothing for, or whose event fails to apply, is dropped
    (its next event loads it again): a listing reads a dropped key from the store.
    """
    changed: set[UUID] = set()
    dropped: set[UUID] = set()
    for event in events:
        if not isinstance(event, ApiKey.Event):
            continue
        key_id, version = event.originator_id, event.originator_version
        key = keys.get(key_id)
        if key is not None and version <= key.version:
            continue
        try:
            if key is None and isinstance(event, ApiKey.Created):
                key = event.mutate(None)
                assert isinstance(key, ApiKey)
                keys[key_id] = key
            else:
                if key is None or version > key.version + 1:
                    key = load(key_id, version - 1)
                    if key is None:
                        raise LookupError("no such key at that version")
                    keys[key_id] = key
                event.mutate(key)
        except Exception as error:
            log.warning("key_listing.key_dropped", key_id=str(key_id), error=type(error).__name__)
            keys.pop(key_id, None)
            changed.discard(key_id)
            dropped.add(key_id)
            continue
        changed.add(key_id)
        dropped.discard(key_id)
    return Folded(changed, dropped)


def states_of(keys: Mapping[UUID, ApiKey], ids: Iterable[UUID]) -> dict[UUID, bytes]:
    """The stored bytes of these keys."""
    return {key_id: state_of(keys[key_id]) for key_id in ids}
