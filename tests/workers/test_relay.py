"""The relay puts every stored key event on JetStream exactly once, in order, without secrets."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta

import nats
import pytest
from nats.js.client import JetStreamContext

from adapters import nats as nats_adapter
from adapters.key_events import KeyEventMessage, decode, position_of
from adapters.settings import Settings
from application.registry import KeyRegistry
from domain.actors import OPERATOR
from domain.key_format import Environment, KeyType
from domain.plans import Plan
from support.servers import NatsServer
from workers.relay import Relay


async def stream_messages(js: JetStreamContext, stream: str) -> list[tuple[str, bytes]]:
    """(Nats-Msg-Id, payload) of every message in the stream, in stream order."""
    info = await js.stream_info(stream)
    found = []
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        msg = await js.get_msg(stream, seq=seq)
        found.append(((msg.headers or {})["Nats-Msg-Id"], msg.data or b""))
    return found


def make_history(registry: KeyRegistry) -> list[str]:
    """An org with keys created, renamed, rolled and revoked; returns the plaintext keys."""
    org = registry.register_organization("Acme", Plan.PRO, OPERATOR)
    secrets = []
    for env in (Environment.LIVE, Environment.TEST):
        issued = registry.create_key(
            org.id, name=f"Backend {env}", env=env, key_type=KeyType.SECRET, actor=OPERATOR
        )
        secrets.append(issued.secret)
        registry.rename_key(issued.key.id, name="Renamed", actor=OPERATOR)
        rolled = registry.roll_key(issued.key.id, grace=timedelta(hours=1), actor=OPERATOR)
        secrets.append(rolled.secret)
        registry.revoke_key(issued.key.id, actor=OPERATOR, reason="rotated")
    registry.change_plan(org.id, Plan.AGENCY, OPERATOR)
    registry.set_rate_limit(org.id, 5000, OPERATOR)
    return secrets


@pytest.fixture
async def js(nats_server: NatsServer, settings: Settings) -> AsyncIterator[JetStreamContext]:
    client = await nats.connect(nats_server.url)
    context = client.jetstream()
    await nats_adapter.ensure_keys_stream(context, settings.keys_stream, settings.keys_subject)
    yield context
    await client.drain()


def relay_for(registry: KeyRegistry, js: JetStreamContext, settings: Settings) -> Relay:
    return Relay(registry, js, stream=settings.keys_stream, subject_prefix=settings.keys_subject)


async def test_every_stored_event_is_published_once_in_store_order(
    registry: KeyRegistry, js: JetStreamContext, settings: Settings
) -> None:
    make_history(registry)
    await relay_for(registry, js, settings).run_until_caught_up()

    stored = [n.id for n in registry.recorder.select_notifications(start=None, limit=1000)]
    published = [
        position_of(msg_id) for msg_id, _ in await stream_messages(js, settings.keys_stream)
    ]
    assert published == stored


async def test_messages_are_versioned_structs_naming_type_org_and_actor(
    registry: KeyRegistry, js: JetStreamContext, settings: Settings
) -> None:
    make_history(registry)
    await relay_for(registry, js, settings).run_until_caught_up()

    messages = [decode(data) for _, data in await stream_messages(js, settings.keys_stream)]
    assert all(isinstance(m, KeyEventMessage) and m.v == 1 for m in messages)
    assert [m.type for m in messages[:4]] == [
        "organization.registered",
        "organization.key_added",
        "api_key.created",
        "api_key.renamed",
    ]
    org_ids = {m.org_id for m in messages}
    assert len(org_ids) == 1 and org_ids.pop().startswith("org_")
    assert {m.actor for m in messages} == {OPERATOR.name}
    revoked = next(m for m in messages if m.type == "api_key.revoked")
    assert revoked.data == {"reason": "rotated"}


async def test_no_secret_hash_or_pepper_travels_on_the_stream(
    registry: KeyRegistry, js: JetStreamContext, settings: Settings
) -> None:
    secrets = make_history(registry)
    await relay_for(registry, js, settings).run_until_caught_up()

    everything = b"".join(data for _, data in await stream_messages(js, settings.keys_stream))
    hashes = [
        registry.get_key(k).key_hash
        for k in registry.get_organization(
            registry.list_keys(next(iter(_org_ids(registry))))[0].org_id
        ).key_ids
    ]
    for forbidden in [*secrets, *hashes, settings.key_pepper.decode()]:
        assert forbidden.encode() not in everything
    for secret in secrets:
        assert secret[8:-6].encode() not in everything  # not even the random part


def _org_ids(registry: KeyRegistry) -> set:
    return {
        registry.mapper.to_domain_event(n).originator_id
        for n in registry.recorder.select_notifications(start=None, limit=1)
    }


async def test_a_restarted_relay_resumes_after_the_last_published_event(
    registry: KeyRegistry, js: JetStreamContext, settings: Settings
) -> None:
    make_history(registry)
    await relay_for(registry, js, settings).run_until_caught_up()
    make_history(registry)

    second = relay_for(registry, js, settings)
    await second.run_until_caught_up()

    stored = [n.id for n in registry.recorder.select_notifications(start=None, limit=1000)]
    published = [position_of(i) for i, _ in await stream_messages(js, settings.keys_stream)]
    assert published == stored
    assert second.published == len(stored) // 2


async def test_a_republished_event_is_dropped_by_the_stream(
    registry: KeyRegistry, js: JetStreamContext, settings: Settings
) -> None:
    make_history(registry)
    relay = relay_for(registry, js, settings)
    await relay.run_until_caught_up()
    # Forget the position, as a relay would whose ack was lost: the stream drops the repeats.
    relay.position = 0
    batch = await asyncio.to_thread(relay._next_notifications)
    await relay._publish(batch)

    stored = [n.id for n in registry.recorder.select_notifications(start=None, limit=1000)]
    published = [position_of(i) for i, _ in await stream_messages(js, settings.keys_stream)]
    assert published == stored
