"""Webhook endpoints managed over a registry, as every entry point (API, worker, CLI) builds them.

Kept apart from `bootstrap.api` so that the workers do not import the web framework.
"""

from __future__ import annotations

from adapters.settings import Settings
from adapters.webhook_urls import resolving_url_check
from application.registry import KeyRegistry
from application.webhooks import Webhooks


def webhooks_for(registry: KeyRegistry, settings: Settings) -> Webhooks:
    """Webhook endpoints managed over `registry`, their URLs judged as `settings` say."""
    return Webhooks(
        registry,
        pepper=settings.key_pepper,
        check_url=resolving_url_check(allow_private=settings.webhooks_allow_private),
    )
