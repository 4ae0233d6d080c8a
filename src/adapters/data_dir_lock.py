"""A lock file in the data dir: what processes sharing it must not do at the same moment.

On the embedded default every process (`serve`'s workers, `worker`, commands) opens the same
SQLite files, and creating a store is not safe to do in two of them at once: `eventsourcing`'s
tracking recorders (the key-lookup view, the request-audit model) look for their table in
one transaction and create it and its `__migration__` row in another, so the second of two
processes fails with `Failed to record tracking for __migration__ 1`; switching a new file to
WAL fails with `database is locked`. Holding `schema.lock` while a store opens serializes
that. Stores take it through `adapters.event_store.schema_lock`, which takes PostgreSQL's
advisory lock instead on that backend.
"""

from __future__ import annotations

import fcntl
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from adapters.private_files import private_file

#: The lock file's name in the data dir.
SCHEMA_LOCK = "schema.lock"

_held = threading.local()


@contextmanager
def data_dir_lock(data_dir: Path, name: str = SCHEMA_LOCK) -> Iterator[None]:
    """Hold `<data_dir>/<name>` exclusively: across processes and across threads.

    `flock` on a descriptor of its own, so two threads of one process exclude each other as two
    processes do; re-entrant within a thread (a store opened while opening another one). The
    kernel releases it when the process dies, so a crash leaves nothing to clean up.
    """
    key = os.path.abspath(data_dir / name)
    counts: dict[str, int] = _held.__dict__.setdefault("counts", {})
    if counts.get(key):
        counts[key] += 1
        try:
            yield
        finally:
            counts[key] -= 1
        return
    fd = os.open(private_file(Path(key)), os.O_RDWR | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        counts[key] = 1
        try:
            yield
        finally:
            counts.pop(key, None)
    finally:
        os.close(fd)  # releases the lock
