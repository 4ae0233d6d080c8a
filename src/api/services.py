"""What the API process holds for its lifetime, built at start-up, never per request."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from adapters.affiliates import AffiliateStore
from adapters.rate_limiter import RateLimiter
from adapters.request_event_publisher import RequestEventPublisher
from adapters.settings import Settings
from adapters.tracked_events import TrackedEventStore
from api.exposure import ExposureFlagger
from api.key_mirror import KeyMirror
from application.registry import KeyRegistry


@dataclass
class Services:
    settings: Settings
    registry: KeyRegistry
    mirror: KeyMirror
    limiter: RateLimiter
    affiliates: AffiliateStore
    publisher: RequestEventPublisher | None = None
    nats_client: Any | None = None
    exposure: ExposureFlagger | None = None
    tracked_events: TrackedEventStore | None = None
