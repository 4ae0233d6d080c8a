"""No response without its audit record (issue 11, item 3): `icodrip serve --workers 2` under
steady authenticated load — 200s, the 401s and 429s of the failed-key limiter, the 429s of a
key's own limit — is killed -9 with its workers, twice (once with NATS healthy, once while
NATS hangs so that the last answers are certainly unacknowledged), and started again on the
same data dir each time. Every response the client received then has exactly one audit row.

Without the request-event log (docs/adr/0016) the answers of the second kill are lost: the
events were in the killed processes' memory only.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from e2e.harness import Child, make_test_pki
from faults.stack import Load, Outcome, Stack, start_stack, stop_stack

pytestmark = pytest.mark.slow

#: Well-formed enough to be read as a key, never a valid one: 401s, then the failed-key 429s.
NOT_A_KEY = "ak_live_" + "x" * 40


@pytest.fixture
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    pki = make_test_pki(tmp_path_factory.mktemp("kill9-pki"))
    deployment = start_stack(pki, tmp_path_factory.mktemp("kill9"))
    try:
        assert deployment.serve is not None
        deployment.serve.stop()  # this test runs its own, with two workers
        yield deployment
    finally:
        stop_stack(deployment)


def start_serve(stack: Stack) -> Child:
    """`icodrip serve --workers 2` on the stack's port, on the same data dir every time."""
    return stack.start_serve(workers=2, name="serve-kill9")


def kill_9(serve: Child) -> None:
    """SIGKILL to the server and its workers at once (its process group), as a crash would."""
    assert serve.proc is not None
    os.killpg(serve.proc.pid, signal.SIGKILL)
    serve.proc.wait(10)


async def test_every_response_of_a_server_killed_9_is_audited_exactly_once(stack: Stack) -> None:
    serve = await asyncio.to_thread(start_serve, stack)
    keys = [str(stack.create_key(f"kill9 {i}")["key"]) for i in range(2)]
    limited = str(stack.create_key("kill9 limited", admin_key=stack.limited_admin_key)["key"])
    nats = stack.nats.proc
    assert nats is not None
    async with Load(stack, [*keys, NOT_A_KEY, keys[0], limited], concurrency=6, pause=0) as load:
        await asyncio.sleep(2.0)
        await asyncio.to_thread(kill_9, serve)  # NATS healthy: the last ~20 ms unacknowledged
        first_kill = time.time()
        serve = await asyncio.to_thread(start_serve, stack)
        await asyncio.sleep(1.5)
        nats.send_signal(signal.SIGSTOP)  # NATS hangs: nothing answered from now on is acked
        try:
            frozen = time.time()
            await asyncio.sleep(0.7)
            await asyncio.to_thread(kill_9, serve)
        finally:
            nats.send_signal(signal.SIGCONT)
        second_kill = time.time()
        serve = await asyncio.to_thread(start_serve, stack)
        await asyncio.sleep(1.5)

    statuses = load.statuses()
    assert load.since(second_kill), "no request was answered after the second restart"
    assert [o for o in load.outcomes if frozen <= o.at < second_kill], statuses
    assert {(200, None), (401, "malformed_api_key"), (429, "rate_limit_exceeded")} <= set(
        statuses
    ), statuses
    assert (429, "too_many_failed_attempts") in statuses, statuses
    assert_audited_exactly_once(stack, load.outcomes, first_kill, second_kill)
    recovered = [int(n) for n in re.findall(r'"events": (\d+), "already_settled"', serve.output())]
    print(
        f"{len(load.outcomes)} responses ({dict(statuses)}), "
        f"{sum(1 for o in load.outcomes if frozen <= o.at < second_kill)} while NATS hung; "
        f"events recovered from the killed processes' logs: {recovered}; "
        f"transport errors {dict(load.errors)}"
    )
    assert sum(recovered) > 0, "the kills found no event unacknowledged: the test tests nothing"

    await asyncio.to_thread(serve.stop)  # SIGTERM: a clean stop leaves nothing behind
    spool = Path(serve.env["ICODRIP_DATA_DIR"]) / "spool" / "request-events"
    assert list(spool.iterdir()) == []


def assert_audited_exactly_once(
    stack: Stack, outcomes: list[Outcome], first_kill: float, second_kill: float
) -> None:
    ids = [o.request_id for o in outcomes]
    assert len(ids) == len(set(ids)), "a request id was handed out twice"
    counts = stack.wait_until_audited(ids, timeout=45)
    missing = [o for o in outcomes if counts[o.request_id] == 0]
    doubled = {i: n for i, n in counts.items() if n != 1}
    by_status = Counter((o.status, o.code) for o in missing)
    first = sum(1 for o in missing if o.at < first_kill)
    second = sum(1 for o in missing if first_kill <= o.at < second_kill)
    assert not missing, (
        f"{len(missing)} of {len(ids)} answered requests have no audit row: {dict(by_status)}; "
        f"{first} answered before the first kill, {second} before the second"
    )
    assert not doubled, f"requests with more than one audit row: {doubled}"
