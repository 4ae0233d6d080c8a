"""Managing an organization's keys: what `/v1/api-keys` and Settings > API Keys both do.

Reads give each key with its organization (its effective permissions depend on the plan) and,
where asked, its last use; changes go to the `KeyRegistry`, which asks the access policy with
what it reads in the same attempt. The last use comes from a read model this layer does not
know (`LastUseReader`, given by the caller); a reader that cannot answer returns nothing, so
keys still list while the audit model is away.

A listing reads its keys through a `KeyReader`: the key listing read model where the caller
has one (`projections.key_listing_reader`, ADR 0021), else one aggregate load per key.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, TypeVar
from uuid import UUID

from application.history import History
from application.registry import KeyRegistry
from domain.actors import Actor
from domain.api_key import ApiKey
from domain.errors import NotFound, ValidationError
from domain.ids import parse_key_id
from domain.key_format import Environment, KeyType
from domain.organization import Organization
from domain.plans import Permission, parse_permissions

T = TypeVar("T")


class KeyUse(Protocol):
    """When (Unix seconds) and from where a key was last used."""

    @property
    def at(self) -> float: ...

    @property
    def addr(self) -> str | None: ...


#: The last use of each of these keys (a key never used, or not yet seen, is absent).
LastUseReader = Callable[[list[UUID]], Mapping[UUID, KeyUse]]


#: These keys, in this order, as loading each would give.
KeyReader = Callable[[Sequence[UUID]], list[ApiKey]]


def no_last_use(key_ids: list[UUID]) -> Mapping[UUID, KeyUse]:
    """A reader that knows no use (where no audit model is at hand)."""
    return {}


def key_ref(text: str) -> UUID:
    """The key an id names; a malformed id names no key (NotFound, like another org's key)."""
    try:
        return parse_key_id(text)
    except ValidationError:
        raise NotFound("no such API key") from None


@dataclass(frozen=True, slots=True)
class ManagedKey:
    """A key with its organization as it is now and, when it was asked for, its last use."""

    key: ApiKey
    org: Organization
    last_use: KeyUse | None = None

    @property
    def last_used_at(self) -> datetime | None:
        """The last use as an aware UTC time (None: never, or not asked)."""
        return None if self.last_use is None else datetime.fromtimestamp(self.last_use.at, UTC)


@dataclass(frozen=True, slots=True)
class OrgKeys:
    """An organization and the keys of it an actor may see, oldest first."""

    org: Organization
    keys: tuple[ManagedKey, ...]


def page_after(
    items: Sequence[T], ids: Sequence[UUID], after: UUID | None, limit: int
) -> tuple[list[T], bool]:
    """Up to `limit` of `items` (whose ids are `ids`) after the one `after`, and whether more
    follow; ValidationError when `after` is not among them (a cursor of another list)."""
    start = 0
    if after is not None:
        if after not in ids:
            raise ValidationError("cursor: not a cursor of this list")
        start = list(ids).index(after) + 1
    return list(items[start : start + limit]), start + limit < len(items)


@dataclass(frozen=True, slots=True)
class NewKey:
    """A key just created or rolled, and its secret: show it once, then drop it."""

    record: ManagedKey
    secret: str = field(repr=False)  # never in a repr, a log or an error


@dataclass(frozen=True, slots=True)
class KeyOrder:
    """What a new key is asked to be; limits not asked for are the registry's to decide."""

    name: str
    env: Environment
    key_type: KeyType = KeyType.SECRET
    permissions: frozenset[Permission] | None = None
    expires_at: datetime | None = None
    allowed_origins: tuple[str, ...] = ()
    allowed_ips: tuple[str, ...] = ()

    @classmethod
    def asked(
        cls,
        name: str,
        env: str,
        *,
        key_type: str = KeyType.SECRET.value,
        permissions: Sequence[str] | None = None,
        expires_at: datetime | None = None,
        allowed_origins: Sequence[str] = (),
        allowed_ips: Sequence[str] = (),
    ) -> KeyOrder:
        """An order from names (a form's, a JSON body's); ValueError for an unknown env or type."""
        return cls(
            name=name,
            env=Environment(env),
            key_type=KeyType(key_type),
            permissions=None if permissions is None else parse_permissions(tuple(permissions)),
            expires_at=expires_at,
            allowed_origins=tuple(allowed_origins),
            allowed_ips=tuple(allowed_ips),
        )


def expiry_after(days: int, now: datetime) -> datetime | None:
    """The expiry of a key that should last `days` from `now` (0: it never expires)."""
    return now + timedelta(days=days) if days else None


class KeyManagement:
    """An organization's keys as people and scripts manage them, for one actor per call."""

    def __init__(
        self,
        registry: KeyRegistry,
        last_use: LastUseReader = no_last_use,
        read_keys: KeyReader | None = None,
    ) -> None:
        self.registry = registry
        self._last_use = last_use
        self._read_keys = read_keys or (lambda ids: [registry.get_key(i) for i in ids])

    # -- reads ---------------------------------------------------------------------------

    def org_keys(self, actor: Actor, org_id: UUID, *, with_use: bool = True) -> OrgKeys:
        """The organization and the keys of it `actor` may see, oldest first, with last use."""
        org = self.registry.readable_org(actor, org_id)
        keys = self.registry.visible_keys(actor, org, self._read_keys(org.key_ids))
        used = self._last_use([k.id for k in keys]) if with_use and keys else {}
        return OrgKeys(org, tuple(ManagedKey(k, org, used.get(k.id)) for k in keys))

    def org_key_page(
        self, actor: Actor, org_id: UUID, *, after: UUID | None, limit: int
    ) -> tuple[OrgKeys, bool]:
        """Up to `limit` of the keys `actor` may see after the key `after` (oldest first), with
        their last use, and whether more follow; ValidationError when `after` is not one."""
        org = self.registry.readable_org(actor, org_id)
        keys = self.registry.visible_keys(actor, org, self._read_keys(org.key_ids))
        page, more = page_after(keys, [k.id for k in keys], after, limit)
        used = self._last_use([k.id for k in page]) if page else {}
        return OrgKeys(org, tuple(ManagedKey(k, org, used.get(k.id)) for k in page)), more

    def key(self, actor: Actor, key_id: UUID, *, with_use: bool = True) -> ManagedKey:
        """One key `actor` may see, with its organization and (unless not asked) its last use."""
        return self.record(self.registry.key_for(actor, key_id), with_use=with_use)

    def record(self, key: ApiKey, *, with_use: bool = True) -> ManagedKey:
        """A key already read (and allowed), with its organization and its last use."""
        org = self.registry.get_organization(key.org_id)
        used = self._last_use([key.id]).get(key.id) if with_use else None
        return ManagedKey(key, org, used)

    def with_last_use(self, record: ManagedKey) -> ManagedKey:
        """`record` with its key's last use (read now)."""
        return replace(record, last_use=self._last_use([record.key.id]).get(record.key.id))

    def history(self, actor: Actor, key_id: UUID) -> list[dict[str, Any]]:
        """Every lifecycle event of a key `actor` may see, oldest first, with what it changed."""
        return History(self.registry, actor).key_history(key_id)

    # -- changes -------------------------------------------------------------------------

    def create(self, actor: Actor, org_id: UUID, order: KeyOrder) -> NewKey:
        """Create the key `order` asks for, in `org_id`, as `actor`."""
        issued = self.registry.create_key(
            org_id,
            name=order.name,
            env=order.env,
            key_type=order.key_type,
            actor=actor,
            permissions=order.permissions,
            expires_at=order.expires_at,
            allowed_origins=order.allowed_origins,
            allowed_ips=order.allowed_ips,
        )
        return NewKey(self.record(issued.key, with_use=False), issued.secret)

    def roll(
        self,
        actor: Actor,
        key_id: UUID,
        *,
        grace: timedelta,
        expires_at: datetime | None = None,
        revoke_when_idle: timedelta | None = None,
    ) -> NewKey:
        """Issue the key's successor; the old key keeps working for `grace` (or until unused
        for `revoke_when_idle`)."""
        issued = self.registry.roll_key(
            key_id,
            grace=grace,
            actor=actor,
            expires_at=expires_at,
            revoke_when_idle=revoke_when_idle,
        )
        return NewKey(self.record(issued.key, with_use=False), issued.secret)

    def rename(self, actor: Actor, key_id: UUID, *, name: str) -> ApiKey:
        """Give the key a new name."""
        return self.registry.rename_key(key_id, name=name, actor=actor)

    def change(
        self,
        actor: Actor,
        key_id: UUID,
        *,
        name: str | None = None,
        allowed_ips: list[str] | None = None,
    ) -> ApiKey:
        """Rename the key and/or replace its allowed IPs: both judged and saved, or neither."""
        return self.registry.change_key(key_id, actor=actor, name=name, allowed_ips=allowed_ips)

    def revoke(self, actor: Actor, key_id: UUID, *, reason: str = "") -> ApiKey:
        """Revoke the key for good."""
        return self.registry.revoke_key(key_id, actor=actor, reason=reason)
