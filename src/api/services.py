"""What the API process holds for its lifetime, built at start-up, never per request."""

from __future__ import annotations

from dataclasses import dataclass

from nats.aio.client import Client

from adapters.affiliates import AffiliateStore
from adapters.github_scanning_keys import GitHubScanningKeys
from adapters.idempotency_store import IdempotencyStore
from adapters.rate_limiter import RateLimiter
from adapters.request_event_publisher import RequestEventPublisher
from adapters.settings import Settings
from adapters.tracked_events import TrackedEventStore
from api.exposure import ExposureFlagger
from api.key_cards import KeyCards
from api.key_mirror import KeyMirror
from application.registry import KeyRegistry
from application.webhooks import Webhooks
from projections.key_listing_reader import KeyListingReader
from projections.live_key_lookup import LiveKeyLookupView
from projections.request_audit_live import LiveRequestAuditStore
from projections.usage_report import UsageReports
from projections.webhook_deliveries import DeliveryLog


@dataclass
class Services:
    """The process's parts, assembled by the composition root (`bootstrap.api`).

    `nats_client` and `publisher` are the two made when the app starts (they need its event
    loop): None before that, and for good when no NATS is configured.
    """

    settings: Settings
    registry: KeyRegistry
    key_lookup: LiveKeyLookupView
    listing: KeyListingReader
    mirror: KeyMirror
    limiter: RateLimiter
    affiliates: AffiliateStore
    tracked_events: TrackedEventStore
    cards: KeyCards
    audit: LiveRequestAuditStore
    usage: UsageReports
    exposure: ExposureFlagger
    webhooks: Webhooks
    deliveries: DeliveryLog
    idempotency: IdempotencyStore
    github_keys: GitHubScanningKeys
    publisher: RequestEventPublisher | None = None
    nats_client: Client | None = None
