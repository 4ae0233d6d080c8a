"""How the key store's events are read back: the library's mapper, and one compatibility read.

Before `ApiKey.Expired` existed, the expiry worker stored an expiry as an `ApiKey.Revoked` by
`system` whose reason was the expiry in words (`EXPIRED_AFTER_GRACE`, `EXPIRED_AT_EXPIRY`).
`KeyStoreMapper` reads such a stored event as what it was, an `ApiKey.Expired` of version 1
(which the library upcasts to version 2, reason → cause: `ApiKey.Expired.upcast_v1_v2`), so
every reader (aggregates, history, projections, the relay) sees one kind of expiry. Nothing
stored is rewritten; a revocation in other words, or by anyone else, stays a revocation.
"""

from __future__ import annotations

from uuid import UUID

from eventsourcing.domain import DomainEventProtocol
from eventsourcing.persistence import Mapper, StoredEvent
from eventsourcing.utils import get_topic

from domain.api_key import ApiKey

_EXPIRED_TOPIC = get_topic(ApiKey.Expired)


class KeyStoreMapper(Mapper[UUID]):
    """The library's mapper, reading an old-style expiry (a `Revoked`) as an `Expired`."""

    def to_domain_event(self, stored_event: StoredEvent) -> DomainEventProtocol[UUID]:
        domain_event = super().to_domain_event(stored_event)
        if isinstance(domain_event, ApiKey.Revoked) and domain_event.is_old_style_expiry:
            as_expiry = StoredEvent(
                originator_id=stored_event.originator_id,
                originator_version=stored_event.originator_version,
                topic=_EXPIRED_TOPIC,
                state=stored_event.state,
            )
            return super().to_domain_event(as_expiry)
        return domain_event
