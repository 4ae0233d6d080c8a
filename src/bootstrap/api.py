"""Assembling an API process from settings, retried while its stores are not usable yet.

`icodrip serve`'s workers build their `ApiProcess` when granian loads `bootstrap.asgi`. Started
with the store (compose), beside `icodrip worker`, or as two workers on one new data dir, they
can find the database not there yet, or another process creating the read models' tables: such
a transient error is retried with backoff (`adapters.startup`, logged as `startup.retrying`)
instead of ending the worker (ADR 0014). A signal ends the wait (granian's workers keep the
default SIGTERM action until the app is loaded).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

from adapters.affiliates import open_affiliate_store
from adapters.github_scanning_keys import GitHubScanningKeys
from adapters.idempotency_store import idempotency_store_for
from adapters.rate_limiter import rate_limiter_for
from adapters.settings import Settings
from adapters.startup import retry_start
from adapters.tracked_events import open_tracked_event_store
from api.exposure import ExposureFlagger
from api.key_cards import KeyCards
from api.key_mirror import KeyMirror
from api.process import ApiProcess
from api.services import Services
from application.stores import open_registry
from bootstrap.webhooks import webhooks_for
from projections.key_listing_reader import KeyListingReader
from projections.live_key_lookup import LiveKeyLookupView
from projections.request_audit_live import LiveRequestAuditStore
from projections.usage_live import LiveUsageStore
from projections.usage_report import UsageReports
from projections.webhook_delivery_store import open_delivery_log


def api_services(settings: Settings, *, rate_limit_fail_closed: bool = False) -> Services:
    """Every part an API process holds for its lifetime, opened on the stores `settings` name.

    Each store is used once here (which creates its tables), so a store that is not usable
    yet fails now; what was opened by then is closed again, and the caller may retry.
    """
    with contextlib.ExitStack() as opened:
        registry = open_registry(settings)
        opened.callback(registry.close)
        registry.recorder.max_notification_id()
        key_lookup = LiveKeyLookupView(settings)
        opened.callback(key_lookup.close)
        key_lookup.generation  # noqa: B018 - reads the pointer and opens (creates) the live view
        mirror = KeyMirror(registry, key_lookup, subject=f"{settings.keys_subject}.>")
        affiliates = open_affiliate_store(settings)
        opened.callback(affiliates.close)
        tracked_events = open_tracked_event_store(settings)
        opened.callback(tracked_events.close)
        audit = LiveRequestAuditStore(settings)
        opened.callback(audit.close)
        audit.name  # noqa: B018 - reads the pointer and opens (creates) the live audit copy
        usage = LiveUsageStore(settings)
        opened.callback(usage.close)
        usage.name  # noqa: B018 - reads the pointer and opens (creates) the live usage copy
        deliveries = open_delivery_log(settings)
        opened.callback(deliveries.close)
        idempotency = idempotency_store_for(settings)
        cards = KeyCards(registry, audit.last_used)
        mirror.listeners.append(cards.forget)
        services = Services(
            settings=settings,
            registry=registry,
            key_lookup=key_lookup,
            listing=KeyListingReader(registry, key_lookup),
            mirror=mirror,
            limiter=rate_limiter_for(settings.redis_url, fail_closed=rate_limit_fail_closed),
            affiliates=affiliates,
            tracked_events=tracked_events,
            cards=cards,
            audit=audit,
            usage=UsageReports(registry, usage),
            exposure=ExposureFlagger(registry, mirror, settings.key_pepper),
            webhooks=webhooks_for(registry, settings),
            deliveries=deliveries,
            idempotency=idempotency,
            github_keys=GitHubScanningKeys(settings.github_scanning_keys_url),
        )
        opened.pop_all()  # built: the process closes them when it stops
        return services


def api_process(
    settings: Settings,
    *,
    trusted_proxies: Sequence[str] = (),
    rate_limit_fail_closed: bool = False,
) -> ApiProcess:
    """An API process over freshly assembled services (stores opened, nothing started yet)."""
    services = api_services(settings, rate_limit_fail_closed=rate_limit_fail_closed)
    return ApiProcess(services, trusted_proxies=trusted_proxies)


def start_api_process(
    settings: Settings,
    *,
    trusted_proxies: Sequence[str] = (),
    rate_limit_fail_closed: bool = False,
) -> ApiProcess:
    """The process's `ApiProcess`, once its stores can be used (retried until then)."""

    def attempt() -> ApiProcess:
        return api_process(
            settings,
            trusted_proxies=trusted_proxies,
            rate_limit_fail_closed=rate_limit_fail_closed,
        )

    return retry_start("api", attempt)
