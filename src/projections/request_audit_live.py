"""The live copy of the request-audit model: what readers and the ingest worker use.

Generation 1 is `RequestAudit`; a rebuild (`projections.request_audit_projection`) fills
`RequestAudit_g<n>` beside it and moves the pointer. Readers (the API, the CLI) go through
`LiveRequestAuditStore` and the ingest worker through `live_audit_follower`: both follow the
pointer (re-checked about once a second) and close a copy they left behind.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from adapters.settings import Settings
from projections.generation_follower import GenerationFollower
from projections.generation_store import open_generation_store
from projections.request_audit import AuditRow, ChainHead, LastUsed
from projections.request_audit_query import (
    DEFAULT_NAME,
    AuditQuery,
    ChainReport,
    K,
    RequestAuditStore,
)
from projections.request_audit_store import open_request_audit_store

#: The audit model's row in the pointer table.
REQUEST_AUDIT = "request-audit"


def open_live_audit_store(settings: Settings) -> RequestAuditStore:
    """The live copy of the audit model, opened on its own (not following later switches)."""
    pointers = open_generation_store(settings)
    try:
        name = pointers.live(REQUEST_AUDIT, DEFAULT_NAME).view_name
    finally:
        pointers.close()
    return open_request_audit_store(settings, name)


class LiveRequestAuditStore:
    """The audit model's live copy for readers (the API, the CLI), following a rebuild's switch.

    Reads only: the ingest worker writes through its own follower (`live_audit_follower`).
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._follower = live_audit_follower(settings)

    @property
    def name(self) -> str:
        return self._follower.generation.view_name

    def position(self) -> int:
        return self._follower.read(lambda store: store.position())

    def count(self) -> int:
        return self._follower.read(lambda store: store.count())

    def last_used(self, key_ids: Iterable[K]) -> dict[K, LastUsed]:
        wanted = list(key_ids)
        return self._follower.read(lambda store: store.last_used(wanted))

    def page(self, query: AuditQuery, limit: int) -> list[AuditRow]:
        return self._follower.read(lambda store: store.page(query, limit))

    def heads(self) -> dict[str, ChainHead]:
        return self._follower.read(lambda store: store.heads())

    def verify(
        self, org_id: str | None = None, progress: Callable[[int], None] | None = None
    ) -> list[ChainReport]:
        return self._follower.read(lambda store: store.verify(org_id, progress))

    def close(self) -> None:
        self._follower.close()


def live_audit_follower(settings: Settings) -> GenerationFollower[RequestAuditStore]:
    """The live copy of the audit model, opened on demand and followed across rebuilds."""
    return GenerationFollower(
        open_generation_store(settings),
        REQUEST_AUDIT,
        DEFAULT_NAME,
        open_copy=lambda name: open_request_audit_store(settings, name),
        close_copy=lambda store: store.close(),  # the follower logs a failure to close
    )
