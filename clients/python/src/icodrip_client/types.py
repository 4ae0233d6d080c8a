"""The typed results: frozen dataclasses, each keeping the whole JSON object in `.raw`."""

from icodrip_client._models.hooks import (
    DeliveryAttempt,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookTest,
)
from icodrip_client._models.keys import ApiKey, Exposure, LifecycleEvent
from icodrip_client._models.organization import KeyPolicy
from icodrip_client._models.records import (
    Affiliate,
    AuditRequest,
    ListedTrackedEvent,
    RateLimit,
    TrackedEvent,
    UsageCounts,
    UsageReport,
    UsageRow,
)

__all__ = [
    "Affiliate",
    "ApiKey",
    "AuditRequest",
    "DeliveryAttempt",
    "Exposure",
    "KeyPolicy",
    "LifecycleEvent",
    "ListedTrackedEvent",
    "RateLimit",
    "TrackedEvent",
    "UsageCounts",
    "UsageReport",
    "UsageRow",
    "WebhookDelivery",
    "WebhookEndpoint",
    "WebhookTest",
]
