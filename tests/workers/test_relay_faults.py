"""Exactly once, in order, even when the relay process and the NATS server are killed."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time
from pathlib import Path

import nats

from adapters.key_events import position_of
from adapters.settings import Settings
from application.stores import open_registry
from domain.actors import OPERATOR
from domain.key_format import Environment, KeyType
from domain.plans import Plan
from support.servers import NatsServer, env_with

ICODRIP = str(Path(sys.executable).parent / "icodrip")


class Writer(threading.Thread):
    """Keeps committing key changes to the store, as admins would, until stopped."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(daemon=True)
        self.settings = settings
        self.halt = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        registry = open_registry(self.settings)
        try:
            org = registry.register_organization("Steady", Plan.FREE, OPERATOR)
            while not self.halt.is_set():
                issued = registry.create_key(
                    org.id, name="k", env=Environment.LIVE, key_type=KeyType.SECRET, actor=OPERATOR
                )
                registry.revoke_key(issued.key.id, actor=OPERATOR)
                time.sleep(0.005)
        except BaseException as error:  # surfaced by the test
            self.error = error
        finally:
            registry.close()


def start_relay(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen([ICODRIP, "worker", "relay"], env=env, stdout=out, stderr=out)


async def published_positions(url: str, stream: str) -> list[int]:
    client = await nats.connect(url)
    try:
        js = client.jetstream()
        info = await js.stream_info(stream)
        positions = []
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            msg = await js.get_msg(stream, seq=seq)
            positions.append(position_of((msg.headers or {})["Nats-Msg-Id"]))
        return positions
    finally:
        await client.close()


def test_each_event_reaches_the_stream_once_in_order_across_relay_and_nats_kills(
    store_env: dict[str, str], private_nats: NatsServer, tmp_path: Path
) -> None:
    settings = Settings.from_env(store_env)
    env = env_with(**store_env, ICODRIP_NATS_URL=private_nats.url)
    log = tmp_path / "relay.log"
    writer = Writer(settings)
    writer.start()
    relay = start_relay(env, log)
    try:
        time.sleep(1.5)
        relay.kill()  # SIGKILL mid-stream
        relay.wait()
        time.sleep(0.3)
        relay = start_relay(env, log)
        time.sleep(1.5)
        private_nats.kill()  # the bus dies under the running relay
        time.sleep(1.0)
        private_nats.start()
        time.sleep(1.5)
        relay.kill()
        relay.wait()
        relay = start_relay(env, log)
        time.sleep(1.0)
    finally:
        writer.halt.set()
        writer.join(10)
    assert writer.error is None, writer.error

    registry = open_registry(settings)
    try:
        stored = [n.id for n in registry.recorder.select_notifications(start=None, limit=100_000)]
    finally:
        registry.close()
    deadline = time.monotonic() + 60
    published: list[int] = []
    while time.monotonic() < deadline:
        published = asyncio.run(published_positions(private_nats.url, settings.keys_stream))
        if published and published[-1] == stored[-1]:
            break
        time.sleep(0.5)
    relay.terminate()
    relay.wait(10)

    assert len(stored) > 200, "the writer should have produced a steady stream of events"
    assert published == stored, log.read_text()[-3000:]
