"""The API processes' key mirror, packed: what authentication needs in under 300 bytes a key.

Whole `KeyRecord` objects cost about 680 bytes a key (bench/mirror_memory.py), too much for a
mirror of millions of keys in every API process. Here a key is three small ints in two dicts:

- key hash (one 256-bit int) → key id (one 128-bit int);
- key id → one 120-bit int packing env, type, revoked, expiry (milliseconds), the hint's last
  four characters (base62), the organization (an index into a table of org ids) and a policy
  (an index into a table of the distinct (restriction, allowed origins, allowed IPs, hint
  prefix) combinations, which keys share); bit 120, above them, marks a key the expiry worker
  revoked.

An organization is its id (an int) in that table and one shared int for its plan and limit.

Names are not kept (authentication never shows them), nor the hash of a key read by id:
records read from this model carry `None` for both, and it is never written to a view.
"""

from __future__ import annotations

from collections.abc import Iterator
from math import floor
from typing import Generic, TypeVar, cast
from uuid import UUID

from domain.key_format import ALPHABET, HINT_LENGTH, Environment, KeyType
from domain.plans import Plan
from projections.key_lookup import KeyLookup, KeyRecord, OrgRecord

T = TypeVar("T")
Policy = tuple[tuple[str, ...] | None, tuple[str, ...], tuple[str, ...], str]

# Field widths, low bits first; 120 bits in all keeps each packed int at 40 bytes.
_LIVE, _PUBLIC, _REVOKED = 1, 2, 4
_EXPIRES_SHIFT, _EXPIRES_BITS = 3, 42  # Unix milliseconds to 2109; 0 = never
_TAIL_SHIFT, _TAIL_BITS = 45, 24  # 62**4 < 2**24; all ones = no base62 tail
_ORG_SHIFT, _ORG_BITS = 69, 27
_POLICY_SHIFT, _POLICY_BITS = 96, 24
# Above the 120 bits, so that only keys the expiry worker retired have a fifth 30-bit digit
# (44 bytes instead of 40), and that costs nothing: pymalloc hands both out as 48-byte blocks.
_EXPIRED = 1 << 120
_NO_TAIL = (1 << _TAIL_BITS) - 1
_DIGIT = {c: i for i, c in enumerate(ALPHABET)}
_PLANS = tuple(plan.value for plan in Plan)


class _Interned(Generic[T]):
    """A growing table of distinct values, each known by its index."""

    def __init__(self, bits: int, what: str) -> None:
        self.values: list[T] = []
        self._index: dict[T, int] = {}
        self._limit, self._what = 1 << bits, what

    def index(self, value: T) -> int:
        found = self._index.get(value)
        if found is None:
            if len(self.values) >= self._limit:
                raise OverflowError(f"the key mirror holds at most {self._limit} {self._what}")
            found = self._index[value] = len(self.values)
            self.values.append(value)
        return found

    def find(self, value: T) -> int | None:
        return self._index.get(value)


class CompactKeyLookup(KeyLookup):
    """`KeyLookup` for the API processes' mirror: the same answers, packed."""

    def __init__(self) -> None:
        super().__init__()
        self._id_of_hash: dict[int, int] = {}
        self._packed: dict[int, int] = {}
        self._org_table: _Interned[int] = _Interned(_ORG_BITS, "organizations")  # id ints
        self._org_terms: list[int | None] = []  # by org index: plan | limit << 2; None = unknown
        self._shared_terms: dict[int, int] = {}  # one int object per distinct plan and limit
        self._policies: _Interned[Policy] = _Interned(_POLICY_BITS, "distinct key policies")

    def __len__(self) -> int:
        return len(self._packed)

    def __contains__(self, key_id: object) -> bool:
        return isinstance(key_id, UUID) and key_id.int in self._packed

    def get(self, key_hash: str) -> KeyRecord | None:
        key_id = self._id_of_hash.get(int(key_hash, 16))
        return None if key_id is None else self._unpack(key_id, key_hash)

    def get_by_id(self, key_id: UUID) -> KeyRecord | None:
        return self._unpack(key_id.int, None) if key_id.int in self._packed else None

    def records(self) -> Iterator[KeyRecord]:
        return (self._unpack(key_id, None) for key_id in list(self._packed))

    def add_org(self, record: OrgRecord) -> None:
        terms = _PLANS.index(record.plan) | record.rate_limit << 2
        terms = self._shared_terms.setdefault(terms, terms)
        self._org_terms[self._org_index(record.org_id)] = terms

    def get_org(self, org_id: UUID) -> OrgRecord | None:
        index = self._org_table.find(org_id.int)
        terms = None if index is None else self._org_terms[index]
        return None if terms is None else OrgRecord(org_id, _PLANS[terms & 3], terms >> 2)

    def org_records(self) -> Iterator[OrgRecord]:
        for index, terms in enumerate(self._org_terms):
            if terms is not None:
                org_id = UUID(int=self._org_table.values[index])
                yield OrgRecord(org_id, _PLANS[terms & 3], terms >> 2)

    def _org_index(self, org_id: UUID) -> int:
        index = self._org_table.index(org_id.int)
        if index == len(self._org_terms):
            self._org_terms.append(None)  # known from one of its keys only, so far
        return index

    def add_key(self, record: KeyRecord) -> None:
        key_id = record.key_id.int
        is_new = key_id not in self._packed
        if is_new and record.key_hash is None:
            raise ValueError("a key new to the mirror needs its hash")
        tail = _tail_number(record.hint)
        head = record.hint if tail == _NO_TAIL else record.hint[:-HINT_LENGTH]
        policy = (record.permissions, record.allowed_origins, record.allowed_ips, head)
        expires = 0
        if record.expires_at is not None:
            # Floor to the millisecond (never later than stored). Rounding to the microsecond
            # first makes unpacking and packing again a fixed point despite binary floats.
            expires = floor(round(record.expires_at * 1000, 3))
            expires = min(max(1, expires), (1 << _EXPIRES_BITS) - 1)
        self._packed[key_id] = (
            (_LIVE if record.env == Environment.LIVE.value else 0)
            | (_PUBLIC if record.type == KeyType.PUBLIC.value else 0)
            | (_REVOKED if record.revoked else 0)
            | expires << _EXPIRES_SHIFT
            | tail << _TAIL_SHIFT
            | self._org_index(record.org_id) << _ORG_SHIFT
            | self._policies.index(policy) << _POLICY_SHIFT
            | (_EXPIRED if record.expired else 0)
        )
        if is_new:  # one int object for the id: the key of `_packed` and the value here
            self._id_of_hash[int(cast(str, record.key_hash), 16)] = key_id
        self._note_public(record)

    def _unpack(self, key_id: int, key_hash: str | None) -> KeyRecord:
        packed = self._packed[key_id]
        expires = (packed >> _EXPIRES_SHIFT) & ((1 << _EXPIRES_BITS) - 1)
        tail = (packed >> _TAIL_SHIFT) & _NO_TAIL
        org = (packed >> _ORG_SHIFT) & ((1 << _ORG_BITS) - 1)
        permissions, origins, ips, head = self._policies.values[
            (packed >> _POLICY_SHIFT) & ((1 << _POLICY_BITS) - 1)
        ]
        return KeyRecord(
            key_id=UUID(int=key_id),
            org_id=UUID(int=self._org_table.values[org]),
            key_hash=key_hash,
            env=(Environment.LIVE if packed & _LIVE else Environment.TEST).value,
            type=(KeyType.PUBLIC if packed & _PUBLIC else KeyType.SECRET).value,
            name=None,
            hint=head if tail == _NO_TAIL else head + _tail_text(tail),
            permissions=permissions,
            allowed_origins=origins,
            expires_at=expires / 1000 if expires else None,
            revoked=bool(packed & _REVOKED),
            allowed_ips=ips,
            expired=bool(packed & _EXPIRED),
        )


def _tail_number(hint: str) -> int:
    """The hint's last four characters as a base62 number, or `_NO_TAIL` if they are not."""
    tail = hint[-HINT_LENGTH:]
    if len(tail) != HINT_LENGTH or any(c not in _DIGIT for c in tail):
        return _NO_TAIL
    number = 0
    for c in tail:
        number = number * 62 + _DIGIT[c]
    return number


def _tail_text(number: int) -> str:
    chars = []
    for _ in range(HINT_LENGTH):
        number, digit = divmod(number, 62)
        chars.append(ALPHABET[digit])
    return "".join(reversed(chars))
