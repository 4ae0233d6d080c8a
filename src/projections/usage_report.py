"""Reading usage for an actor: what `GET /v1/usage`, the dashboard's charts and `icodrip usage`
share — the window asked for (checked and aligned), the access policy, the scoping.

The policy is asked as for every read (`domain.access`, `Command.READ_USAGE`): another
organization's key, or a live key asked about with a test key, does not exist (NotFound); a
test key sees test-mode usage only. Buckets without a request are not stored and not listed;
`dense` fills them in for charts.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Protocol
from uuid import UUID

from application.registry import KeyRegistry
from domain.access import Command, authorize, visible_envs
from domain.actors import Actor
from domain.errors import NotFound, PermissionExceeded, ValidationError
from domain.ids import format_key_id, format_org_id
from domain.key_format import Environment
from projections.usage import Granularity, UsageCounters
from projections.usage_query import UsageCursor, UsageQuery, UsageRow

#: The longest window each granularity answers (buckets per key stay in the thousands).
MAX_SPAN_DAYS = {Granularity.MINUTE: 7, Granularity.HOUR: 90, Granularity.DAY: 3_660}
#: The window when none is given: the last hour of minutes, day of hours, 30 days of days.
DEFAULT_SPAN = {Granularity.MINUTE: 3_600, Granularity.HOUR: 86_400, Granularity.DAY: 30 * 86_400}
#: The latest time a window may name (Unix seconds, 2999-12-31): ISO-8601 years have 4 digits.
LATEST = 32_503_593_600
#: Rows a page holds at most.
MAX_PAGE = 10_000


class UsageReader(Protocol):
    """The reads of the usage model a report needs (`LiveUsageStore`, or one copy)."""

    def query(self, query: UsageQuery, limit: int) -> list[UsageRow]: ...
    def totals(
        self,
        org_id: str,
        start: int,
        end: int,
        key_ids: Sequence[str] | None = None,
        env: str | None = None,
    ) -> UsageCounters: ...
    def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class UsageWindow:
    """Whole buckets of one granularity: [start, end), Unix seconds, aligned in UTC."""

    granularity: Granularity
    start: int
    end: int

    @classmethod
    def of(
        cls,
        granularity: str | None,
        start: float | None,
        end: float | None,
        *,
        now: float,
    ) -> UsageWindow:
        """The window asked for, widened to whole buckets; ValidationError when it cannot be
        answered (unknown granularity, `from` not before `to`, too long for the granularity).

        Without `to`, the window ends with the bucket holding `now`; without `from`, it spans
        `DEFAULT_SPAN` of the granularity (hour when none is named).

        `MAX_SPAN_DAYS` bounds the span asked for, not the widened one: `from` to `to` when both
        are given (so the last 7 days by minute are answered, as 7 days and a minute); without
        `to` (whose end is our `now`, not the caller's), the widened window less the one bucket
        widening may add. Either way the window holds at most the limit and one bucket.
        """
        try:
            g = Granularity.parse(granularity or Granularity.HOUR.label)
        except ValueError:
            raise ValidationError(
                f"granularity: expected minute, hour or day, not {str(granularity)[:20]!r}"
            ) from None
        size = g.seconds
        for name, moment in (("from", start), ("to", end)):
            if moment is not None and not 0 <= moment <= LATEST:
                raise ValidationError(f"{name}: expected a time between 1970 and 2999")
        if start is not None and end is not None and start >= end:
            raise ValidationError("from must be before to")
        last = math.ceil((now if end is None else end) / size) * size
        if end is None and last == now:  # `now` on a boundary: its bucket has just begun
            last += size
        first = g.align(last - DEFAULT_SPAN[g] if start is None else start)
        if first >= last:
            raise ValidationError("from must be before to (now, when to is not given)")
        limit_days = MAX_SPAN_DAYS[g]
        limit = limit_days * 86_400
        asked_too_long = start is not None and end is not None and end - start > limit
        if asked_too_long or last - first > limit + size:  # widening adds at most one bucket
            raise ValidationError(
                f"a window of {g.label}s spans at most {limit_days} days: "
                "ask for a coarser granularity or a shorter window"
            )
        return cls(g, first, last)

    @property
    def buckets(self) -> range:
        """Every bucket start of the window, in order."""
        return range(self.start, self.end, self.granularity.seconds)


@dataclass(frozen=True, slots=True)
class UsageReport:
    """One page of an organization's (or one key's) usage, and the window's totals."""

    window: UsageWindow
    org_id: str
    env: str | None  # the environment it is limited to (None: both)
    totals: UsageCounters
    rows: list[UsageRow]
    next_cursor: UsageCursor | None


class UsageReports:
    """Usage as an actor may read it."""

    def __init__(self, registry: KeyRegistry, usage: UsageReader) -> None:
        self.registry = registry
        self.usage = usage

    def report(
        self,
        actor: Actor,
        org_id: UUID,
        window: UsageWindow,
        *,
        key_id: UUID | None = None,
        env: Environment | None = None,
        after: UsageCursor | None = None,
        limit: int = 1_000,
    ) -> UsageReport:
        """A page of rows (by key, then time) and the totals of the whole window."""
        query = self.scope(actor, org_id, window, key_id=key_id, env=env, after=after)
        limit = max(1, min(limit, MAX_PAGE))
        rows = self.usage.query(query, limit + 1)
        more = len(rows) > limit
        rows = rows[:limit]
        totals = self.usage.totals(query.org_id, window.start, window.end, query.key_ids, query.env)
        next_cursor = rows[-1].cursor if more else None
        return UsageReport(window, query.org_id, query.env, totals, rows, next_cursor)

    def close(self) -> None:
        """Close the usage model's reader."""
        self.usage.close()

    def rows(
        self,
        actor: Actor,
        org_id: UUID,
        window: UsageWindow,
        *,
        key_id: UUID | None = None,
        env: Environment | None = None,
        page_size: int = MAX_PAGE,
    ) -> Iterator[UsageRow]:
        """Every row of the window, read page by page (for exports, charts and the CLI).

        The policy is asked now, not at the first row: a refusal is raised before a response
        that streams the rows has begun.
        """
        query = self.scope(actor, org_id, window, key_id=key_id, env=env)
        return self._pages(query, page_size)

    def _pages(self, query: UsageQuery, page_size: int) -> Iterator[UsageRow]:
        while True:
            page = self.usage.query(query, page_size)
            yield from page
            if len(page) < page_size:
                return
            query = replace(query, after=page[-1].cursor)

    def scope(
        self,
        actor: Actor,
        org_id: UUID,
        window: UsageWindow,
        *,
        key_id: UUID | None = None,
        env: Environment | None = None,
        after: UsageCursor | None = None,
    ) -> UsageQuery:
        """The query `actor` may ask: its organization, its environments, a key it sees."""
        key_ids: list[str] | None = None
        if key_id is not None:
            key = self.registry.get_key(key_id)
            if key.org_id != org_id:
                raise NotFound("no such API key")
            authorize(actor, Command.READ_USAGE, org_id=org_id, key=self.registry.facts(key))
            key_ids = [format_key_id(key_id)]
        else:
            authorize(actor, Command.READ_USAGE, org_id=org_id)
        envs = visible_envs(actor)
        if env is not None and env not in envs:
            raise PermissionExceeded("a test key sees test-mode usage only")
        if env is None and len(envs) == 1:
            (env,) = envs
        return UsageQuery(
            format_org_id(org_id),
            window.granularity,
            window.start,
            window.end,
            key_ids,
            None if env is None else env.value,
            after,
        )


def dense(rows: Iterable[UsageRow], window: UsageWindow) -> dict[str, list[UsageCounters]]:
    """Each key's counters in every bucket of the window (empty buckets filled in), by key."""
    size, start, count = window.granularity.seconds, window.start, len(window.buckets)
    series: dict[str, list[UsageCounters]] = {}
    for row in rows:
        cells = series.get(row.key_id)
        if cells is None:
            cells = series[row.key_id] = [UsageCounters() for _ in range(count)]
        index = (row.start - start) // size
        if 0 <= index < count:
            cells[index] = row.counters
    return series
