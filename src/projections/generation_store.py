"""Opening the generation pointers' store on the backend the settings name."""

from __future__ import annotations

from adapters.event_store import schema_lock
from adapters.settings import Settings
from projections.generations import GenerationStore
from projections.generations_postgres import PostgresGenerationStore
from projections.generations_sqlite import SQLiteGenerationStore


def open_generation_store(settings: Settings) -> GenerationStore:
    """The pointer store on the backend the settings name."""
    if settings.database_url is None:
        return SQLiteGenerationStore(settings.data_dir / "projections.sqlite3")
    with schema_lock(settings):
        return PostgresGenerationStore(settings.database_url)
