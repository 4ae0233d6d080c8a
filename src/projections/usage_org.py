"""An organization's own usage buckets, beside its keys': what its totals are read from.

Pure (no I/O). A write adds, for each of its per-key buckets, the same counts to the
organization's bucket of that environment, granularity and start, stored in the same table
under a key id no key has (`*live`, `*test`; `*` for an event without a known environment).
An organization's totals over 24 hours then read a few dozen rows, not one per key and hour
(ADR 0022); listings of keys' rows leave these out (`UsageQuery.where`).
"""

from __future__ import annotations

from collections.abc import Sequence

from projections.usage import UsageCounters, UsageKey

ORG_WIDE = "*"  # a key id starts with `key_`: never with this
_ENVS = ("live", "test")
#: Every organization-wide key id.
ORG_WIDE_IDS = (ORG_WIDE, *(ORG_WIDE + env for env in _ENVS))


def org_wide_id(env: str | None) -> str:
    """The key id of the organization's buckets of `env`."""
    return ORG_WIDE + env if env in _ENVS else ORG_WIDE


def org_wide_ids(env: str | None) -> Sequence[str]:
    """The organization-wide key ids whose buckets hold the totals of `env` (None: all)."""
    return ORG_WIDE_IDS if env is None else (org_wide_id(env),)


def with_org_totals(cells: dict[UsageKey, UsageCounters]) -> dict[UsageKey, UsageCounters]:
    """`cells` (per-key buckets) with their organizations' buckets added."""
    totals: dict[UsageKey, UsageCounters] = {}
    for key, cell in cells.items():
        org_key = UsageKey(key.org_id, org_wide_id(cell.env), key.granularity, key.start)
        total = totals.get(org_key)
        if total is None:
            total = totals[org_key] = UsageCounters(env=cell.env)
        total.merge(cell)
    cells.update(totals)
    return cells
