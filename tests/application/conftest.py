"""A KeyRegistry on each real backend: SQLite in a temporary directory, PostgreSQL in a schema.

`store` is one empty event store of the parametrized kind; `store.open()` gives a new
registry on it (as another process would), so a test can prove what a restart, or a second
replica, reads back. Every registry opened is closed after the test.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from adapters.event_store import event_store_env
from adapters.settings import Settings
from application.registry import KeyRegistry, utc_now


@dataclass
class Store:
    """One event store and every registry opened on it."""

    kind: str
    env: dict[str, str]
    pepper: bytes
    sqlite_path: Path | None = None
    postgres_url: str | None = None
    postgres_schema: str | None = None
    opened: list[KeyRegistry] = field(default_factory=list)

    def open(self, clock: Callable[[], datetime] = utc_now) -> KeyRegistry:
        """A new registry on this store, sharing nothing in memory with the others."""
        registry = KeyRegistry(dict(self.env), pepper=self.pepper, clock=clock)
        self.opened.append(registry)
        return registry

    def close_all(self) -> None:
        while self.opened:
            self.opened.pop().close()

    def everything_stored(self) -> bytes:
        """Every byte the store holds: the SQLite files, or every row of every table."""
        if self.sqlite_path is not None:
            files = sorted(self.sqlite_path.parent.glob(self.sqlite_path.name + "*"))
            assert files, f"no SQLite files at {self.sqlite_path}"
            return b"\n".join(f.read_bytes() for f in files)
        assert self.postgres_url is not None and self.postgres_schema is not None
        chunks: list[bytes] = []
        with psycopg.connect(self.postgres_url) as conn:
            tables = [
                row[0]
                for row in conn.execute(
                    "SELECT table_name FROM information_schema.tables WHERE table_schema = %s",
                    (self.postgres_schema,),
                )
            ]
            assert tables, f"no tables in schema {self.postgres_schema}"
            for table in tables:
                name = sql.Identifier(self.postgres_schema, table)
                for row in conn.execute(sql.SQL("SELECT * FROM {}").format(name)):
                    for value in row:
                        if isinstance(value, bytes | bytearray | memoryview):
                            chunks.append(bytes(value))
                        else:
                            chunks.append(str(value).encode())
                query = sql.SQL("SELECT t::text FROM {} AS t").format(name)
                chunks.extend(text.encode() for (text,) in conn.execute(query))
        return b"\n".join(chunks)


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """An empty event store: SQLite in tmp_path, or a fresh schema in the session database."""
    pepper = f"test-pepper-{uuid.uuid4().hex}".encode()
    if request.param == "sqlite":
        settings = Settings(data_dir=tmp_path / "data", key_pepper=pepper)
        env = event_store_env(settings)
        the_store = Store("sqlite", env, pepper, sqlite_path=Path(env["SQLITE_DBNAME"]))
        yield the_store
        the_store.close_all()
        return

    url: str = request.getfixturevalue("postgres_url")
    schema = f"keys_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    settings = Settings(data_dir=tmp_path / "data", database_url=url, key_pepper=pepper)
    env = {**event_store_env(settings), "POSTGRES_SCHEMA": schema}
    the_store = Store("postgres", env, pepper, postgres_url=url, postgres_schema=schema)
    try:
        yield the_store
    finally:
        the_store.close_all()
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


@pytest.fixture
def registry(store: Store) -> KeyRegistry:
    """A registry on the parametrized store (closed with the store after the test)."""
    return store.open()
