"""Which `eventsourcing` persistence module the registry uses: SQLite or PostgreSQL."""

from __future__ import annotations

from urllib.parse import unquote, urlsplit

from adapters.settings import Settings, SettingsError


def event_store_env(settings: Settings) -> dict[str, str]:
    """The `eventsourcing` environment for these settings."""
    if settings.database_url is None:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        return {
            "PERSISTENCE_MODULE": "eventsourcing.sqlite",
            "SQLITE_DBNAME": str(settings.data_dir / "events.sqlite3"),
            "SQLITE_LOCK_TIMEOUT": "10",
        }
    url = urlsplit(settings.database_url)
    if url.scheme not in ("postgres", "postgresql", "postgresql+psycopg"):
        raise SettingsError("ICODRIP_DATABASE_URL must be a postgresql:// URL")
    return {
        "PERSISTENCE_MODULE": "eventsourcing.postgres",
        "POSTGRES_DBNAME": url.path.lstrip("/") or "postgres",
        "POSTGRES_HOST": url.hostname or "127.0.0.1",
        "POSTGRES_PORT": str(url.port or 5432),
        "POSTGRES_USER": unquote(url.username or "postgres"),
        "POSTGRES_PASSWORD": unquote(url.password or ""),
        "POSTGRES_CONNECT_TIMEOUT": "5",
        "POSTGRES_LOCK_TIMEOUT": "5",
        "POSTGRES_POOL_SIZE": "5",
        "POSTGRES_MAX_OVERFLOW": "10",
    }
