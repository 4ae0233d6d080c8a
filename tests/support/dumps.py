"""Everything a deployment wrote, as bytes to search: NATS messages, database rows, Redis keys and
values, files. For the secrets audit (no plaintext key anywhere) and the fault tests."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import redis
from nats.aio.client import Client
from nats.js.errors import NotFoundError
from psycopg import sql


@dataclass(frozen=True)
class Item:
    """One thing found in a store: where it is, and its content as bytes."""

    where: str
    content: bytes


def _as_bytes(value: object) -> bytes:
    if value is None:
        return b""
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    return str(value).encode("utf-8", errors="surrogateescape")


def postgres_rows(url: str) -> list[Item]:
    """Every row of every table in every user schema of the database, one item per row."""
    items: list[Item] = []
    with psycopg.connect(url, autocommit=True) as conn:
        tables = conn.execute(
            "SELECT table_schema, table_name FROM information_schema.tables "
            "WHERE table_type = 'BASE TABLE' "
            "AND table_schema NOT IN ('pg_catalog', 'information_schema')"
        ).fetchall()
        for schema, table in tables:
            query = sql.SQL("SELECT * FROM {}.{}").format(
                sql.Identifier(schema), sql.Identifier(table)
            )
            for n, row in enumerate(conn.execute(query)):
                items.append(
                    Item(f"postgres {schema}.{table} row {n}", b"\x1f".join(map(_as_bytes, row)))
                )
    return items


def redis_entries(url: str) -> list[Item]:
    """Every key of the Redis database with its value, read by type (never DUMP: compressed)."""
    items: list[Item] = []
    client = redis.Redis.from_url(url)
    try:
        for key in client.scan_iter(count=1000):
            kind = client.type(key).decode()
            value: object
            if kind == "string":
                value = client.get(key)
            elif kind == "hash":
                value = client.hgetall(key)
            elif kind == "list":
                value = client.lrange(key, 0, -1)
            elif kind == "set":
                value = client.smembers(key)
            elif kind == "zset":
                value = client.zrange(key, 0, -1, withscores=True)
            elif kind == "stream":
                value = client.xrange(key)
            else:
                value = kind
            items.append(Item(f"redis {key!r} ({kind})", bytes(key) + b"\x1f" + _flatten(value)))
    finally:
        client.close()
    return items


def _flatten(value: object) -> bytes:
    if isinstance(value, dict):
        return b"\x1f".join(_flatten(k) + b"=" + _flatten(v) for k, v in value.items())
    if isinstance(value, list | tuple | set):
        return b"\x1f".join(_flatten(v) for v in value)
    return _as_bytes(value)


async def nats_messages(url: str) -> list[Item]:
    """Every message still held by every JetStream stream on the server: subject, headers, data."""
    client = Client()
    await client.connect(url, connect_timeout=5, max_reconnect_attempts=1)
    items: list[Item] = []
    try:
        js = client.jetstream()
        for info in await js.streams_info():
            name = info.config.name
            state = info.state
            for seq in range(state.first_seq, state.last_seq + 1):
                with contextlib.suppress(NotFoundError):  # deleted or skipped sequence
                    msg = await js.get_msg(name, seq)
                    headers = b"".join(
                        _as_bytes(k) + b": " + _as_bytes(v) + b"\n"
                        for k, v in (msg.headers or {}).items()
                    )
                    items.append(
                        Item(
                            f"nats {name} #{seq} {msg.subject}",
                            _as_bytes(msg.subject) + b"\n" + headers + (msg.data or b""),
                        )
                    )
    finally:
        await client.close()
    return items


def nats_messages_sync(url: str) -> list[Item]:
    return asyncio.run(nats_messages(url))


def files_under(*roots: Path, extensions: set[str] | None = None) -> list[Item]:
    """Every regular file under these directories (logs, spool files, SQLite databases), or
    only those with these extensions."""
    items: list[Item] = []
    for root in roots:
        for path in sorted(root.rglob("*")):
            if extensions is not None and path.suffix not in extensions:
                continue
            if path.is_file() and not path.is_symlink():
                with contextlib.suppress(OSError):
                    items.append(Item(f"file {path}", path.read_bytes()))
    return items


def needles(secret: str) -> list[bytes]:
    """What must not appear for this key: the key, its random part with and without checksum."""
    prefix_length = len("ak_live_")
    random_part = secret[prefix_length : prefix_length + 27]
    return [secret.encode(), secret[prefix_length:].encode(), random_part.encode()]


def hits(items: Iterable[Item], secrets: Iterable[str]) -> Iterator[str]:
    """`where: which secret` for every item that contains any needle of any secret."""
    wanted = [(secret, needle) for secret in secrets for needle in needles(secret)]
    for item in items:
        for secret, needle in wanted:
            if needle in item.content:
                what = "the key" if needle == secret.encode() else "the random part of"
                yield f"{item.where}: contains {what} {secret[:8]}…{secret[-4:]}"
                break
