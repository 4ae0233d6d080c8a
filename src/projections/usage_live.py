"""The live copy of the usage model: what readers and the usage-ingest worker use.

Generation 1 is `Usage`; a rebuild (`projections.usage_projection`) fills `Usage_g<n>` beside
it and moves the pointer. Readers (the API, the dashboard, the CLI) go through
`LiveUsageStore` and the worker through `live_usage_follower`: both follow the pointer
(re-checked about once a second) and close a copy they left behind.
"""

from __future__ import annotations

from collections.abc import Sequence

from adapters.settings import Settings
from projections.generation_follower import GenerationFollower
from projections.generation_store import open_generation_store
from projections.usage import UsageCounters
from projections.usage_query import DEFAULT_NAME, UsageQuery, UsageRow, UsageStore
from projections.usage_store import open_usage_store

#: The usage model's row in the pointer table.
USAGE = "usage"


class LiveUsageStore:
    """The usage model's live copy for readers, following a rebuild's switch (reads only)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._follower = live_usage_follower(settings)

    @property
    def name(self) -> str:
        return self._follower.generation.view_name

    def position(self) -> int:
        return self._follower.read(lambda store: store.position())

    def count(self) -> int:
        return self._follower.read(lambda store: store.count())

    def query(self, query: UsageQuery, limit: int) -> list[UsageRow]:
        return self._follower.read(lambda store: store.query(query, limit))

    def totals(
        self,
        org_id: str,
        start: int,
        end: int,
        key_ids: Sequence[str] | None = None,
        env: str | None = None,
    ) -> UsageCounters:
        return self._follower.read(lambda store: store.totals(org_id, start, end, key_ids, env))

    def close(self) -> None:
        self._follower.close()


def live_usage_follower(settings: Settings) -> GenerationFollower[UsageStore]:
    """The live copy of the usage model, opened on demand and followed across rebuilds."""
    return GenerationFollower(
        open_generation_store(settings),
        USAGE,
        DEFAULT_NAME,
        open_copy=lambda name: open_usage_store(settings, name),
        close_copy=lambda store: store.close(),  # the follower logs a failure to close
    )
