"""The key-lookup model: key hash → who the key is and what it may do.

`KeyLookup` holds whole records: the projection worker folds events into it and writes what
changed to the durable view (`key_lookup_view`) with its tracking position. Every API process
holds `CompactKeyLookup` (`key_lookup_compact`), the same model packed to a few hundred bytes a
key, so a lookup hit does no I/O even with millions of keys. Both are built by `apply`, from
the key store's domain events.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

from domain.actors import KeyActor
from domain.api_key import ApiKey
from domain.ids import format_key_id, format_org_id
from domain.key_format import Environment, KeyType
from domain.organization import Organization
from domain.plans import (
    DEFAULT_RATE_LIMIT_PER_MINUTE,
    PLAN_PERMISSIONS,
    Permission,
    Plan,
    effective_permissions,
)


@dataclass(slots=True)
class KeyRecord:
    """What authentication needs to know about one key."""

    key_id: UUID
    org_id: UUID
    key_hash: str | None  # None when read by id from the API's mirror, which does not keep it
    env: str
    type: str
    name: str | None  # None in the API's mirror, which does not keep names
    hint: str
    permissions: tuple[str, ...] | None  # the key's own restriction; None inherits the org's
    allowed_origins: tuple[str, ...]
    expires_at: float | None  # Unix seconds
    revoked: bool = False
    allowed_ips: tuple[str, ...] = ()  # CIDR networks; empty = from anywhere
    expired: bool = False  # retired by the expiry worker: it answers "expired", not "revoked"


@dataclass(slots=True)
class OrgRecord:
    org_id: UUID
    plan: str
    rate_limit: int = DEFAULT_RATE_LIMIT_PER_MINUTE


@dataclass(frozen=True, slots=True)
class Principal(KeyActor):
    """An authenticated key: the actor a request acts as, and what authentication knows of it.

    Made once per key and kept while the mirror does not change, so the texts every request
    needs (its limit's key, its ids as the contract spells them) are computed here, once.
    """

    hint: str
    rate_limit: int
    allowed_origins: tuple[str, ...]
    limit_key: str = field(init=False)  # the key's counter in the rate limiter
    key_id_text: str = field(init=False)
    org_id_text: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "limit_key", self.key_id.hex)
        object.__setattr__(self, "key_id_text", format_key_id(self.key_id))
        object.__setattr__(self, "org_id_text", format_org_id(self.org_id))


@dataclass(slots=True)
class Changes:
    """Records touched by a batch of events, for the durable view to write."""

    keys: dict[UUID, KeyRecord] = field(default_factory=dict)
    orgs: dict[UUID, OrgRecord] = field(default_factory=dict)
    #: The listing's states of the keys the batch changed (`projections.key_listing`); None
    #: removes a key's state (the listing reads that key from the store).
    states: dict[UUID, bytes | None] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.keys or self.orgs or self.states)


def _timestamp(moment: datetime | None) -> float | None:
    return None if moment is None else moment.timestamp()


_PERMISSIONS_CACHE: dict[tuple[str, tuple[str, ...] | None, str], frozenset[Permission]] = {}
_ENVIRONMENTS = {env.value: env for env in Environment}
_KEY_TYPES = {key_type.value: key_type for key_type in KeyType}


def _permissions(
    plan: str, restriction: tuple[str, ...] | None, key_type: str
) -> frozenset[Permission]:
    """The domain's `effective_permissions` for a record's texts, memoized (a hot path)."""
    cache_key = (plan, restriction, key_type)
    found = _PERMISSIONS_CACHE.get(cache_key)
    if found is None:
        found = _PERMISSIONS_CACHE[cache_key] = effective_permissions(
            PLAN_PERMISSIONS[Plan(plan)],
            None if restriction is None else frozenset(map(Permission, restriction)),
            public=key_type == KeyType.PUBLIC.value,
        )
    return found


class KeyLookup:
    """Keys by hash and id, and organizations by id, at a known store position.

    This model keeps whole records (the projection worker writes them to the durable view);
    the API processes' mirror is `CompactKeyLookup`, which packs what authentication needs.
    """

    def __init__(self) -> None:
        self._orgs: dict[UUID, OrgRecord] = {}
        self.position = 0
        self.public_key_ids: set[UUID] = set()  # active public keys, for the CORS origins
        self._by_hash: dict[str, KeyRecord] = {}
        self._by_id: dict[UUID, KeyRecord] = {}
        self._org_ids: dict[UUID, UUID] = {}

    def __len__(self) -> int:
        return len(self._by_id)

    def __contains__(self, key_id: object) -> bool:
        return key_id in self._by_id

    def get(self, key_hash: str) -> KeyRecord | None:
        """The key with this hash, if known."""
        return self._by_hash.get(key_hash)

    def get_by_id(self, key_id: UUID) -> KeyRecord | None:
        """The key with this id, if known."""
        return self._by_id.get(key_id)

    def records(self) -> Iterator[KeyRecord]:
        """Every key, in no particular order."""
        return iter(self._by_id.values())

    def add_key(self, record: KeyRecord) -> None:
        """Store a new key, or the new state of a known one."""
        # One shared object per organization id and per env/type text, not one per key.
        record.org_id = self._org_ids.setdefault(record.org_id, record.org_id)
        record.env, record.type = sys.intern(str(record.env)), sys.intern(str(record.type))
        if record.key_hash is not None:
            self._by_hash[record.key_hash] = record
        self._by_id[record.key_id] = record
        self._note_public(record)

    def add_org(self, record: OrgRecord) -> None:
        """Store a new organization, or the new state of a known one."""
        record.org_id = self._org_ids.setdefault(record.org_id, record.org_id)
        self._orgs[record.org_id] = record

    def get_org(self, org_id: UUID) -> OrgRecord | None:
        """The organization with this id, if known."""
        return self._orgs.get(org_id)

    def org_records(self) -> Iterator[OrgRecord]:
        """Every organization, in no particular order."""
        return iter(self._orgs.values())

    def public_origins(self) -> frozenset[str]:
        """Every origin some active public key allows."""
        return frozenset(
            origin
            for key_id in self.public_key_ids
            if (record := self.get_by_id(key_id)) is not None
            for origin in record.allowed_origins
        )

    def _note_public(self, record: KeyRecord) -> None:
        if record.type == KeyType.PUBLIC.value and not record.revoked:
            self.public_key_ids.add(record.key_id)
        else:
            self.public_key_ids.discard(record.key_id)

    def principal(self, record: KeyRecord) -> Principal:
        """The identity of a known key under its org's current plan and limit."""
        org = self.get_org(record.org_id) or OrgRecord(record.org_id, Plan.FREE.value)
        return Principal(
            key_id=record.key_id,
            org_id=record.org_id,
            env=_ENVIRONMENTS[record.env],
            type=_KEY_TYPES[record.type],
            hint=record.hint,
            permissions=_permissions(org.plan, record.permissions, record.type),
            rate_limit=org.rate_limit,
            allowed_origins=record.allowed_origins,
        )

    def apply(self, event: Any, position: int, changes: Changes | None = None) -> None:
        """Fold one stored domain event in; note what changed in `changes`."""
        if position <= self.position:
            return  # already applied: applying is idempotent by position
        self.position = position
        touched_key: KeyRecord | None = None
        touched_org: OrgRecord | None = None
        if isinstance(event, ApiKey.Created):
            touched_key = KeyRecord(
                key_id=event.originator_id,
                org_id=event.org_id,
                key_hash=event.key_hash,
                env=str(event.env),
                type=str(event.type),
                name=event.name,
                hint=event.hint,
                permissions=_tuple_or_none(event.permissions),
                allowed_origins=tuple(event.allowed_origins),
                expires_at=_timestamp(event.expires_at),
            )
            self.add_key(touched_key)
        elif isinstance(
            event,
            ApiKey.Renamed
            | ApiKey.Rolled
            | ApiKey.Revoked
            | ApiKey.Expired
            | ApiKey.AllowedIpsChanged,
        ):
            touched_key = self.get_by_id(event.originator_id)
            if touched_key is not None:
                if isinstance(event, ApiKey.AllowedIpsChanged):
                    touched_key.allowed_ips = tuple(event.allowed_ips)
                elif isinstance(event, ApiKey.Renamed):
                    touched_key.name = event.name
                elif isinstance(event, ApiKey.Rolled):
                    touched_key.expires_at = _timestamp(event.expires_at)
                else:  # stopped for good: revoked, or expired (which answers as such)
                    touched_key.revoked = True
                    touched_key.expired = isinstance(event, ApiKey.Expired)
                self.add_key(touched_key)  # a compact model stores a copy, not this object
        elif isinstance(event, Organization.Registered):
            touched_org = OrgRecord(event.originator_id, str(event.plan))
            self.add_org(touched_org)
        elif isinstance(
            event,
            Organization.PlanChanged | Organization.RateLimitSet | Organization.RateLimitCleared,
        ):
            touched_org = self.get_org(event.originator_id)
            if touched_org is not None:
                if isinstance(event, Organization.PlanChanged):
                    touched_org.plan = str(event.plan)
                    if touched_org.plan != Plan.AGENCY.value:
                        touched_org.rate_limit = DEFAULT_RATE_LIMIT_PER_MINUTE
                elif isinstance(event, Organization.RateLimitSet):
                    touched_org.rate_limit = event.requests_per_minute
                else:
                    touched_org.rate_limit = DEFAULT_RATE_LIMIT_PER_MINUTE
                self.add_org(touched_org)  # a compact model stores a copy, not this object
        if changes is not None:
            if touched_key is not None:
                changes.keys[touched_key.key_id] = touched_key
            if touched_org is not None:
                changes.orgs[touched_org.org_id] = touched_org


def _tuple_or_none(values: list[str] | None) -> tuple[str, ...] | None:
    return None if values is None else tuple(sorted(values))
