"""The key-lookup view's rows: the one column list and the conversions both backends use."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any
from uuid import UUID

from projections.key_lookup import KeyRecord, OrgRecord

KEY_COLUMNS = (
    "key_hash, key_id, org_id, env, type, name, hint, permissions, allowed_origins, "
    "expires_at, revoked, allowed_ips, expired"
)

KEYS_QUERY = "SELECT " + KEY_COLUMNS + " FROM {0}"
ORG_COLUMNS = "org_id, plan, rate_limit"

KEYS_QUERY_BY_HASH = KEYS_QUERY + " WHERE key_hash = ?"
ORGS_QUERY = "SELECT " + ORG_COLUMNS + " FROM {0}"
ORGS_QUERY_BY_ID = ORGS_QUERY + " WHERE org_id = ?"
EXPIRING_QUERY = "SELECT key_id, expires_at FROM {0} WHERE expires_at IS NOT NULL AND NOT revoked"


def key_params(record: KeyRecord) -> tuple[Any, ...]:
    """A key record as the row values `KEY_COLUMNS` names."""
    return (
        record.key_hash,
        record.key_id.hex,
        record.org_id.hex,
        record.env,
        record.type,
        record.name,
        record.hint,
        None if record.permissions is None else json.dumps(list(record.permissions)),
        json.dumps(list(record.allowed_origins)),
        record.expires_at,
        bool(record.revoked),
        json.dumps(list(record.allowed_ips)),
        bool(record.expired),
    )


def key_record(row: Iterable[Any]) -> KeyRecord:
    """A row of `KEY_COLUMNS` as a key record."""
    h, key_id, org_id, env, type_, name, hint, perms, origins, expires_at, revoked, ips, expired = (
        row
    )
    return KeyRecord(
        key_id=UUID(hex=key_id),
        org_id=UUID(hex=org_id),
        key_hash=h,
        env=env,
        type=type_,
        name=name,
        hint=hint,
        permissions=None if perms is None else tuple(json.loads(perms)),
        allowed_origins=tuple(json.loads(origins)),
        expires_at=expires_at,
        revoked=bool(revoked),
        allowed_ips=tuple(json.loads(ips)) if ips else (),
        expired=bool(expired),  # NULL in rows written before the column existed
    )


def org_params(record: OrgRecord) -> tuple[Any, ...]:
    """An org record as the row values `ORG_COLUMNS` names."""
    return (record.org_id.hex, record.plan, record.rate_limit)


def org_record(row: Iterable[Any]) -> OrgRecord:
    """A row of the orgs table as an org record."""
    org_id, plan, rate_limit = row
    return OrgRecord(UUID(hex=org_id), plan, int(rate_limit))
