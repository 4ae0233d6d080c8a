"""PostgreSQL restarted under load costs no request once it is back (issue 11, item 4).

An API process (in-process, over ASGI) on a PostgreSQL cluster of the test's own, driven by
steady requests on routes that need the store: reads and writes of affiliates, tracked events,
keys (the event store, its views and the request-audit model). The cluster is stopped and
started again on the same data dir while the requests keep coming. While it is down a request
may get 503 `store_unavailable`; once the API has answered a store route again, no request may
fail: each pooled connection that died with the old server must be noticed before it is used,
not by the request it was handed to.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from adapters.settings import Settings
from bootstrap.api import api_process
from domain.actors import OPERATOR
from domain.ids import format_key_id
from domain.plans import Plan
from support.api import Api, bearer, serving
from support.postgres_cluster import PostgresCluster

pytestmark = pytest.mark.slow

#: Concurrent request loops: more than one connection per pool is in use when the server goes.
CONCURRENCY = 8


@dataclass
class Outcome:
    route: str
    status: int
    code: str | None
    sent: float
    took: float


@dataclass
class StoreLoad:
    """`CONCURRENCY` loops, each sending one request at a time round the store routes."""

    api: Api
    key: str
    key_id: str
    writer_key: str
    outcomes: list[Outcome] = field(default_factory=list)
    _stopping: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def routes(self) -> list[tuple[str, str, str, object | None]]:
        """(label, method, path, JSON body): reads and writes of every store the API uses."""
        return [
            ("list affiliates", "GET", "/v1/affiliates", None),
            ("add affiliate", "POST", "/v1/affiliates", {"name": "restart"}),
            ("list keys", "GET", "/v1/api-keys", None),
            ("get key", "GET", f"/v1/api-keys/{self.key_id}", None),
            ("key history", "GET", f"/v1/api-keys/{self.key_id}/history", None),
            ("audit requests", "GET", "/v1/audit/requests?limit=5", None),
            ("track event", "POST", "/v1/events", {"event": "restart"}),
            ("create key", "POST", "/v1/api-keys", {"name": "restart"}),
        ]

    async def __aenter__(self) -> StoreLoad:
        self._tasks = [asyncio.create_task(self._loop(i)) for i in range(CONCURRENCY)]
        return self

    async def __aexit__(self, *_: object) -> None:
        self._stopping.set()
        await asyncio.gather(*self._tasks)

    async def _loop(self, i: int) -> None:
        routes = self.routes()
        n = i
        while not self._stopping.is_set():
            label, method, path, body = routes[n % len(routes)]
            n += 1
            # Keys are made in an organization of their own, so the listed one stays short.
            key = self.writer_key if label == "create key" else self.key
            sent = time.time()
            response = await self.api.client.request(method, path, json=body, headers=bearer(key))
            code = None
            if response.status_code >= 400:
                code = response.json().get("error", {}).get("code")
            took = time.time() - sent
            self.outcomes.append(Outcome(label, response.status_code, code, sent, took))
            await asyncio.sleep(0.005)

    def statuses(self, outcomes: list[Outcome]) -> Counter[tuple[str, int, str | None]]:
        return Counter((o.route, o.status, o.code) for o in outcomes)


async def beside_the_api(call: Callable[..., object], *args: object) -> None:
    """Run `call` in a thread of its own: the API's requests may hold every default one."""
    with ThreadPoolExecutor(1) as thread:
        await asyncio.get_running_loop().run_in_executor(thread, call, *args)


@pytest.fixture
def cluster() -> Iterator[PostgresCluster]:
    postgres = PostgresCluster()
    postgres.start()
    try:
        yield postgres
    finally:
        print(postgres.log()[-3000:])
        postgres.remove()


@asynccontextmanager
async def api_on(
    cluster: PostgresCluster, tmp_path: Path
) -> AsyncIterator[Callable[[], StoreLoad]]:
    """An API process on the cluster, with two organizations; yields a maker of loads."""
    stream = f"KEYS_{uuid.uuid4().hex[:8]}"
    settings = Settings.from_env(
        {
            "ICODRIP_DATA_DIR": str(tmp_path / "data"),
            "ICODRIP_DATABASE_URL": cluster.url,
            "ICODRIP_KEY_PEPPER": "restart-pepper-" + uuid.uuid4().hex,
            "ICODRIP_KEYS_STREAM": stream,
            "ICODRIP_KEYS_SUBJECT": f"restart.{stream.lower()}",
        }
    )
    async with serving(api_process(settings)) as api:
        org, writers = api.org(Plan.AGENCY), api.org(Plan.AGENCY)
        for each in (org, writers):
            api.registry.set_rate_limit(each.id, 1_000_000, OPERATOR)
        admin, writer = await api.key(org), await api.key(writers)
        yield lambda: StoreLoad(api, admin.secret, format_key_id(admin.key.id), writer.secret)


def assert_every_route_answered(load: StoreLoad, outcomes: list[Outcome], at_least: int) -> None:
    answered = Counter(o.route for o in outcomes if o.status < 500)
    assert min(answered[label] for label, *_ in load.routes()) >= at_least, answered


@pytest.mark.parametrize("mode", ["fast", "immediate"])
async def test_postgres_restarted_under_load_fails_no_request_once_it_is_back(
    cluster: PostgresCluster, tmp_path: Path, mode: str
) -> None:
    async with api_on(cluster, tmp_path) as new_load, new_load() as load:
        await asyncio.sleep(2.0)  # every pool holds several connections now
        before = len(load.outcomes)
        await beside_the_api(cluster.stop, mode)
        down = time.time()
        await asyncio.sleep(1.0)
        await beside_the_api(cluster.start)  # the same port and data dir
        up = time.time()
        await asyncio.sleep(5.0)

    outcomes = load.outcomes
    print(load.statuses(outcomes))
    assert all(o.status < 500 for o in outcomes[:before]), load.statuses(outcomes[:before])
    assert_every_route_answered(load, outcomes[:before], 1)
    failed = [o for o in outcomes if o.status >= 500]
    assert {(o.status, o.code) for o in failed} <= {(503, "store_unavailable")}
    assert any(o.sent < up and o.sent + o.took > down for o in outcomes), "none met the outage"
    # Back = the first store route answered after the restart; from then on none may fail.
    back = min(o.sent for o in outcomes if o.sent >= up and o.status < 500)
    assert back - up < 3.0, f"the API took {back - up:.1f} s to use the restarted store"
    after = [o for o in outcomes if o.sent >= back]
    assert all(o.status < 500 for o in after), load.statuses([o for o in after if o.status >= 500])
    assert_every_route_answered(load, after, 10)


async def test_postgres_restarted_between_requests_fails_none_of_the_next(
    cluster: PostgresCluster, tmp_path: Path
) -> None:
    """No request meets the outage, so none may fail: the first request on every pooled
    connection that died with the old server is served all the same."""
    async with api_on(cluster, tmp_path) as new_load:
        async with new_load() as warm_up:
            await asyncio.sleep(2.0)  # every pool holds several connections now
        await beside_the_api(cluster.stop, "fast")
        await beside_the_api(cluster.start)
        async with new_load() as load:
            await asyncio.sleep(3.0)
    assert all(o.status < 500 for o in warm_up.outcomes), load.statuses(warm_up.outcomes)
    assert all(o.status < 500 for o in load.outcomes), load.statuses(load.outcomes)
    assert_every_route_answered(load, load.outcomes, 10)
