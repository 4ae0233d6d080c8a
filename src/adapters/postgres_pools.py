"""Pooled PostgreSQL connections a server restart costs no request (issue 11; ADR 0015).

A restart kills every connection the pools hold, and a pool hands out dead connections as if
they were fine: each would fail the request it went to (503 `store_unavailable`, which also
closes the API's store gate until the next probe). So every pool checks a connection before
handing it out, in a way that costs no round trip:

- An idle connection's socket has nothing to read, unless the server wrote to it: its goodbye
  before closing (`57P01` on a fast shutdown, EOF on a crash), or something harmless (a
  notification, a notice). Only then is the connection tried with an empty query
  (`ConnectionPool.check_connection`), which tells the two apart.
- A dead one means the server went away, and every idle connection of the pool went with it.
  If a new connection can be made (the server is back), the pool is drained (all of them
  replaced) and the check fails, so the request waits for a new connection instead of drawing
  the next dead one (psycopg_pool waits 1 s before a third check, 2 s before a fourth, …).
- If none can be made (the server is still down), the dead connection is handed out: the
  request fails at once, as before, and the API's store gate closes (ADR 0010) instead of
  requests waiting out the pool's timeout.

Nothing is retried: a statement only ever goes to a connection that was alive just before, so
no write can be sent twice. A connection that dies while in use still fails its request: that
request met the outage.

`eventsourcing` builds its own pools (`POSTGRES_PRE_PING` would add a round trip to every
checkout and leave the dead ones to fail one by one), so `CheckedPostgresFactory` is named as
the persistence module instead of `eventsourcing.postgres`: the same factory, its pool checked.
"""

from __future__ import annotations

import select
from typing import Any

import psycopg
from eventsourcing.postgres import PostgresFactory
from eventsourcing.utils import Environment, EnvType
from psycopg_pool import ConnectionPool

#: The `PERSISTENCE_MODULE` topic that selects the checked factory below.
CHECKED_POSTGRES_FACTORY = f"{__name__}:CheckedPostgresFactory"

#: Seconds a check waits for a new connection to tell whether the server is back.
PROBE_CONNECT_TIMEOUT = 5


def raise_if_dead(conn: Any) -> None:
    """Raise when the server behind this idle connection is gone; a poll, no round trip."""
    if not hasattr(select, "poll"):  # not on Linux or macOS: the library's check, a round trip
        ConnectionPool.check_connection(conn)
        return
    poller = select.poll()
    poller.register(conn.fileno(), select.POLLIN)
    if poller.poll(0):  # the server wrote while it was idle: its goodbye, or a notification
        ConnectionPool.check_connection(conn)


def server_answers(pool: ConnectionPool[Any]) -> bool:
    """Whether a new connection to the pool's server can be made right now."""
    conninfo = pool.conninfo() if callable(pool.conninfo) else pool.conninfo
    kwargs = (pool.kwargs() if callable(pool.kwargs) else pool.kwargs) or {}
    try:
        psycopg.connect(conninfo, **{"connect_timeout": PROBE_CONNECT_TIMEOUT, **kwargs}).close()
    except psycopg.Error:
        return False
    return True


class DeadConnectionCheck:
    """A pool's `check` (see the module's docstring): dead and the server back → drain, raise;
    dead and the server still down → hand it out, to fail its request at once."""

    def __init__(self, pool: ConnectionPool[Any] | None = None) -> None:
        self.pool = pool

    def __call__(self, conn: Any) -> None:
        try:
            raise_if_dead(conn)
        except Exception:
            if self.pool is None or not server_answers(self.pool):
                return  # the server is down: this request meets the outage now, not in 5 s
            self.pool.drain()  # the others died with the old server: replace them all at once
            raise


def checked_pool(conninfo: str, **kwargs: Any) -> ConnectionPool[Any]:
    """A `psycopg_pool.ConnectionPool` (same arguments) that checks connections as above."""
    check = DeadConnectionCheck()
    pool: ConnectionPool[Any] = ConnectionPool(conninfo, check=check, **kwargs)
    check.pool = pool
    return pool


class CheckedPostgresFactory(PostgresFactory):
    """`eventsourcing.postgres`'s factory, its datastore's pool checked like `checked_pool`."""

    def __init__(self, env: Environment | EnvType | None) -> None:
        super().__init__(env)
        pool = self.datastore.pool
        # psycopg_pool takes `check` only in its constructor, which the library calls for us.
        pool._check = DeadConnectionCheck(pool)
