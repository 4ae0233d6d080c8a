"""The stored details of the keys an API process serves, so that a key asking about itself
(`GET /v1/api-keys/current`) is answered from memory.

Authentication's mirror packs only what authentication needs (no names, no history), to fit
millions of keys; the API key object also shows the name, who created it, exposures and the
roll chain. A card holds the key's and its organization's stored state: read once (one
off-loop store read) the first time a key asks, kept while the process serves it (least
recently used dropped past `capacity`), and forgotten as soon as the mirror applies any event
of that key or organization, so it is never staler than revocation itself (within a second on
every process; at once on the process that made the change). Last use comes from the
request-audit read model, re-read at most every `last_use_ttl` seconds per key.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

import structlog
from litestar.response.base import ASGIResponse
from litestar.serialization import encode_json

from application.registry import KeyRegistry
from application.views import api_key_view
from domain.api_key import ApiKey
from domain.organization import Organization
from projections.request_audit import LastUsed

log = structlog.get_logger()

#: Seconds a key's last use is served before the audit model is asked again.
LAST_USE_TTL = 5.0


@dataclass(slots=True)
class KeyCard:
    """A key and its organization as stored, and its last use as the audit model saw it."""

    key: ApiKey
    org: Organization
    last_used: LastUsed | None = None
    last_used_read: float = float("-inf")  # monotonic time of the audit model's answer
    epoch: int = 0  # `KeyCards.epoch` when read: a card read before a `forget` is not kept
    _response: ASGIResponse | None = None  # the API key object, encoded, sent as is
    _response_until: datetime | None = None  # the key's expiry: its status changes then

    def note_last_use(self, used: LastUsed | None) -> None:
        """What the audit model says now of the key's last use (the object is rendered again)."""
        self.last_used, self.last_used_read, self._response = used, time.monotonic(), None

    def response(self, now: datetime) -> ASGIResponse:
        """The API key object (`application.views.api_key_view`) as a ready 200 response,
        rendered once per change. It holds no per-request state: the edge adds each request's
        headers to a copy of its header list."""
        until = self._response_until
        if self._response is None or (until is not None and now >= until):
            used = None if self.last_used is None else self.last_used.moment
            view = api_key_view(self.key, self.org, now, last_used_at=used)
            self._response = ASGIResponse(body=encode_json(view), media_type="application/json")
            expires = self.key.expires_at
            self._response_until = expires if expires is not None and now < expires else None
        return self._response


class KeyCards:
    """Cards by key id; see the module docstring."""

    def __init__(
        self,
        registry: KeyRegistry,
        last_used: Callable[[list[UUID]], dict[UUID, LastUsed]],
        *,
        capacity: int = 10_000,
        last_use_ttl: float = LAST_USE_TTL,
    ) -> None:
        self.registry = registry
        self._last_used = last_used
        self.capacity = capacity
        self.last_use_ttl = last_use_ttl
        self._cards: OrderedDict[UUID, KeyCard] = OrderedDict()
        # One read at a time per key: the requests that find no fresh card meanwhile wait for it.
        self._loading: dict[UUID, asyncio.Future[KeyCard]] = {}
        self.epoch = 0

    def __len__(self) -> int:
        return len(self._cards)

    async def card(self, key_id: UUID) -> KeyCard:
        """The key's card: from memory, or read off the event loop and kept."""
        found = self._cards.get(key_id)
        if found is not None and time.monotonic() - found.last_used_read <= self.last_use_ttl:
            self._cards.move_to_end(key_id)
            return found
        loading = self._loading.get(key_id)
        if loading is None:
            loading = asyncio.ensure_future(self._load_and_keep(key_id))
            self._loading[key_id] = loading
            loading.add_done_callback(lambda done: self._loaded(key_id, done))
        # Shielded: a request that goes away does not cancel the read the others wait for.
        return await asyncio.shield(loading)

    def forget(self, aggregate_ids: Iterable[UUID]) -> None:
        """Drop the cards of these keys and of every key of these organizations."""
        ids = set(aggregate_ids)
        self.epoch += 1
        self._loading.clear()  # reads begun before the change serve only those already waiting
        for key_id, card in list(self._cards.items()):
            if key_id in ids or card.org.id in ids:
                del self._cards[key_id]

    async def _load_and_keep(self, key_id: UUID) -> KeyCard:
        card = await asyncio.to_thread(self._load, key_id, self.epoch, self._cards.get(key_id))
        if card.epoch == self.epoch:  # not forgotten meanwhile
            self._cards[key_id] = card
            self._cards.move_to_end(key_id)
            while len(self._cards) > self.capacity:
                self._cards.popitem(last=False)
        return card

    def _loaded(self, key_id: UUID, done: asyncio.Future[KeyCard]) -> None:
        if self._loading.get(key_id) is done:
            del self._loading[key_id]
        if not done.cancelled():
            done.exception()  # retrieved here too: every waiter may have gone

    def _load(self, key_id: UUID, epoch: int, held: KeyCard | None) -> KeyCard:
        """In a worker thread: a new card (a held one is never changed off the event loop),
        the key and its org read from the store unless held, and the key's last use."""
        if held is None:
            key = self.registry.get_key(key_id)
            held = KeyCard(key, self.registry.get_organization(key.org_id))
        card = KeyCard(held.key, held.org, epoch=epoch)
        card.note_last_use(self._read_last_use(key_id, held.last_used))
        return card

    def _read_last_use(self, key_id: UUID, known: LastUsed | None) -> LastUsed | None:
        # The key still answers while the audit model is unavailable, with what it knew.
        try:
            return self._last_used([key_id]).get(key_id, known)
        except Exception as error:
            log.warning("key_cards.last_used_unavailable", error=type(error).__name__)
            return known
