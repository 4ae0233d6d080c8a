"""Building the KeyRegistry from settings (one place decides SQLite or PostgreSQL)."""

from __future__ import annotations

from adapters.event_store import event_store_env, schema_lock
from adapters.settings import Settings
from application.registry import KeyRegistry


def open_registry(settings: Settings) -> KeyRegistry:
    """The registry on the store these settings name."""
    with schema_lock(settings):
        return KeyRegistry(event_store_env(settings), pepper=settings.key_pepper)
