"""Faults under steady load, on throwaway servers: NATS killed -9 and restarted on its store,
Redis stopped and started, PostgreSQL crashed and restarted, the worker killed -9, the API
process stopped and started again. During each fault, authentication keeps answering from the
in-memory key mirror; after it, every request that got a response has exactly one audit row,
no key state is lost and the limits are enforced again.

The tests share one deployment and run in order; each leaves it whole again.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Iterator

import httpx
import pytest
import redis

from e2e.harness import ICODRIP, bearer, make_test_pki, not_at_a_minute_boundary
from faults.stack import Load, Outcome, Stack, start_stack, stop_stack

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    pki = make_test_pki(tmp_path_factory.mktemp("faults-pki"))
    deployment = start_stack(pki, tmp_path_factory.mktemp("faults"))
    try:
        yield deployment
    finally:
        stop_stack(deployment)


def assert_audited_exactly_once(stack: Stack, outcomes: list[Outcome]) -> None:
    ids = [o.request_id for o in outcomes]
    assert len(ids) == len(set(ids)), "a request id was handed out twice"
    counts = stack.wait_until_audited(ids)
    missing = [i for i in ids if counts[i] == 0]
    doubled = {i: n for i, n in counts.items() if n != 1}
    assert not missing, f"{len(missing)} of {len(ids)} answered requests have no audit row"
    assert not doubled, f"requests with more than one audit row: {doubled}"


def between(outcomes: list[Outcome], start: float, end: float) -> list[Outcome]:
    return [o for o in outcomes if start <= o.at < end]


async def api_post(stack: Stack, path: str, body: object, key: str) -> httpx.Response:
    async with stack.async_http(2) as http:
        return await http.post(path, json=body, headers=bearer(key))


async def test_nats_killed_and_restarted_under_load_loses_no_request_event(stack: Stack) -> None:
    keys = [str(stack.create_key(f"nats {i}")["key"]) for i in range(2)]
    async with Load(stack, keys) as load:
        await asyncio.sleep(1.5)
        await asyncio.to_thread(stack.nats.kill)
        down = time.time()
        await asyncio.sleep(1.0)
        # Keys can still be managed: they are committed to PostgreSQL, relayed later.
        created = await api_post(stack, "/v1/api-keys", {"name": "made without NATS"}, keys[0])
        await asyncio.sleep(1.0)
        await asyncio.to_thread(stack.nats.start)  # the same port and store dir
        up = time.time()
        await asyncio.sleep(2.0)
    assert created.status_code == 201, created.text
    stack.created[created.json()["id"]] = created.json()["key"]
    during = between(load.outcomes, down, up)
    assert len(during) >= 10, load.statuses()
    assert load.statuses() == Counter({(200, None): len(load.outcomes)}), load.statuses()
    assert not load.errors
    assert_audited_exactly_once(stack, load.outcomes)


async def test_redis_stopped_and_started_under_load_loses_no_request_event(stack: Stack) -> None:
    keys = [str(stack.create_key(f"redis {i}")["key"]) for i in range(2)]
    serve = stack.serve
    assert serve is not None
    async with Load(stack, keys) as load:
        await asyncio.sleep(1.5)
        await asyncio.to_thread(stack.redis.stop)
        down = time.time()
        await asyncio.sleep(2.0)
        await asyncio.to_thread(stack.redis.start)
        up = time.time()
        await asyncio.to_thread(serve.wait_for_output, "rate_limiter.redis_restored", 15)
        await asyncio.sleep(0.5)
    during = between(load.outcomes, down, up)
    assert len(during) >= 10, load.statuses()
    # Fail-open by default: each process limits on its own while Redis is away.
    assert load.statuses() == Counter({(200, None): len(load.outcomes)}), load.statuses()
    assert_audited_exactly_once(stack, load.outcomes)


def test_after_redis_came_back_the_limit_is_enforced_by_redis_again(stack: Stack) -> None:
    not_at_a_minute_boundary(margin=5)
    limited = stack.create_key("limited", admin_key=stack.limited_admin_key)
    key, key_id = str(limited["key"]), str(limited["id"])
    with stack.http() as http:
        statuses = [http.get("/v1/affiliates", headers=bearer(key)).status_code for _ in range(8)]
    assert statuses == [200] * 5 + [429] * 3
    client = redis.Redis.from_url(stack.redis.url)
    try:
        counters = [client.get(k) for k in client.scan_iter(f"icodrip:rl:{key_id[4:]}:*")]
    finally:
        client.close()
    assert counters == [b"5"], "the restarted Redis does not hold the key's counter"


async def test_postgres_crashed_and_restarted_under_load(stack: Stack) -> None:
    """During the outage a valid key is never refused as invalid (the mirror answers), a
    revoked one still is, key management is 503 `store_unavailable`; afterwards every answered
    request has exactly one audit row."""
    keys = [str(stack.create_key(f"postgres {i}")["key"]) for i in range(2)]
    victim = stack.create_key("revoked before the outage")
    revoked = await api_post(stack, f"/v1/api-keys/{victim['id']}/revoke", {}, stack.admin_key)
    assert revoked.status_code == 200, revoked.text
    stack.revoked.add(str(victim["id"]))
    async with Load(stack, keys) as load:
        await asyncio.sleep(1.5)
        await asyncio.to_thread(stack.postgres.crash)
        down = time.time()
        await asyncio.sleep(0.5)
        management = await api_post(stack, "/v1/api-keys", {"name": "no store"}, stack.admin_key)
        async with stack.async_http(2) as http:
            refused = await http.get("/v1/affiliates", headers=bearer(str(victim["key"])))
        await asyncio.sleep(1.0)
        await asyncio.to_thread(stack.postgres.start)
        up = time.time()
        for _ in range(100):  # until key management answers again
            after = await api_post(stack, "/v1/api-keys", {"name": "after"}, stack.admin_key)
            if after.status_code == 201:
                stack.created[after.json()["id"]] = after.json()["key"]
                break
            await asyncio.sleep(0.2)
        await asyncio.sleep(1.0)
    assert management.status_code == 503, management.text
    assert management.json()["error"]["code"] == "store_unavailable"
    assert management.headers["retry-after"]
    assert refused.status_code == 401
    assert refused.json()["error"]["code"] == "api_key_revoked"
    assert after.status_code == 201, after.text
    during = between(load.outcomes, down, up)
    assert during, load.statuses()
    allowed = {(200, None), (503, "store_unavailable")}
    assert set(load.statuses()) <= allowed, load.statuses()
    assert (503, "store_unavailable") in load.statuses(during)
    assert_audited_exactly_once(stack, load.outcomes)


async def test_a_worker_killed_mid_batch_loses_and_doubles_no_audit_row(stack: Stack) -> None:
    keys = [str(stack.create_key(f"worker {i}")["key"]) for i in range(2)]
    worker = stack.worker
    assert worker is not None and worker.proc is not None
    async with Load(stack, keys, concurrency=6, pause=0.0) as load:
        await asyncio.sleep(2.0)
        os.killpg(worker.proc.pid, signal.SIGKILL)
        await asyncio.to_thread(worker.proc.wait, 10)
        await asyncio.sleep(1.0)
        await asyncio.to_thread(stack.start_worker)
        await asyncio.sleep(1.0)
    assert load.statuses() == Counter({(200, None): len(load.outcomes)}), load.statuses()
    assert_audited_exactly_once(stack, load.outcomes)


async def test_an_api_process_stopped_under_load_leaves_every_answered_request_audited(
    stack: Stack,
) -> None:
    keys = [str(stack.create_key(f"api {i}")["key"]) for i in range(2)]
    serve = stack.serve
    assert serve is not None
    async with Load(stack, keys) as load:
        await asyncio.sleep(1.5)
        await asyncio.to_thread(serve.stop)  # SIGTERM, as an orchestrator stops a replica
        stopped = time.time()
        await asyncio.to_thread(stack.start_serve)
        restarted = time.time()
        await asyncio.sleep(1.5)
    assert load.since(restarted), "no request was answered by the new process"
    assert [o for o in load.outcomes if o.at < stopped]
    assert set(load.statuses()) == {(200, None)}, load.statuses()
    assert_audited_exactly_once(stack, load.outcomes)


def test_after_all_faults_no_key_state_is_lost(stack: Stack) -> None:
    """Every key made during the run (before, during and after the faults) is listed with its
    status, and still authenticates — or is still refused, if it was revoked."""
    with stack.http() as http:
        listing = http.get("/v1/api-keys", headers=bearer(stack.admin_key))
        assert listing.status_code == 200, listing.text
        status = {k["id"]: k["status"] for k in listing.json()["data"]}
        assert len(stack.created) >= 12
        for key_id, secret in stack.created.items():
            expected = "revoked" if key_id in stack.revoked else "active"
            assert status.get(key_id) == expected, (key_id, status.get(key_id))
            response = http.get("/v1/affiliates", headers=bearer(secret))
            if expected == "revoked":
                assert response.json()["error"]["code"] == "api_key_revoked"
            else:
                assert response.status_code == 200, (key_id, response.text)


def test_after_all_faults_the_audit_chains_verify(stack: Stack) -> None:
    result = subprocess.run(
        [ICODRIP, "audit", "verify", "--json"],
        env={**stack.env, "ICODRIP_DATA_DIR": str(stack.root / "verify")},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    document = json.loads(result.stdout)
    assert document["intact"] is True
    assert document["rows"] > 1000
