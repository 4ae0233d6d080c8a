"""Opening the applications on the stores the settings name (SQLite files or PostgreSQL)."""

from __future__ import annotations

from adapters.event_store import event_store_env, schema_lock
from adapters.settings import Settings
from application.registry import KeyRegistry
from application.users import UserDirectory


def open_registry(settings: Settings) -> KeyRegistry:
    """The registry on the store these settings name."""
    with schema_lock(settings):
        return KeyRegistry(event_store_env(settings), pepper=settings.key_pepper)


def open_user_directory(settings: Settings) -> UserDirectory:
    """The users' store: its own SQLite file on the embedded default, its own table otherwise."""
    env = event_store_env(settings, sqlite_file="users.sqlite3")
    with schema_lock(settings):
        return UserDirectory(env)
