"""Every request that presented a key leaves one request event on JetStream — never the key."""

from __future__ import annotations

import httpx
import msgspec
import nats
import pytest

from adapters.request_events import AUDIT_STREAM, RequestEventBatch
from domain.key_format import Environment, KeyType, generate_key, hint_for
from domain.plans import Permission
from support.api import Api, bearer
from support.servers import NatsServer


async def audit_events(url: str) -> tuple[list, bytes]:
    client = await nats.connect(url)
    try:
        js = client.jetstream()
        info = await js.stream_info(AUDIT_STREAM)
        events, raw = [], b""
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            data = (await js.get_msg(AUDIT_STREAM, seq=seq)).data or b""
            raw += data
            events += msgspec.json.decode(data, type=RequestEventBatch).events
        return events, raw
    finally:
        await client.close()


async def test_each_keyed_request_is_one_event_with_its_outcome(
    api: Api, nats_server: NatsServer
) -> None:
    org = api.org()
    good = await api.key(org)
    reader = await api.key(org, permissions={Permission.AFFILIATES_READ})
    stranger = generate_key(KeyType.SECRET, Environment.LIVE)
    responses = [
        await api.client.get("/v1/affiliates", headers={**bearer(good), "User-Agent": "svc/1.0"}),
        await api.client.post("/v1/affiliates", json={"name": "x"}, headers=bearer(reader)),
        await api.client.get("/v1/affiliates", headers=bearer(stranger)),
        await api.client.get("/v1/affiliates", headers=bearer(good.secret[:-2])),
    ]
    await api.process.services.publisher.flush()  # type: ignore[union-attr]

    events, raw = await audit_events(nats_server.url)
    by_request = {e.request_id: e for e in events}
    ours = [by_request[r.headers["x-request-id"]] for r in responses]
    assert [e.status for e in ours] == [200, 403, 401, 401]
    ok = ours[0]
    assert ok.key_id == f"key_{good.key.id.hex}" and ok.org_id == f"org_{org.id.hex}"
    assert (ok.method, ok.route, ok.env, ok.user_agent) == (
        "GET",
        "/v1/affiliates",
        "live",
        "svc/1.0",
    )
    assert ok.latency_ms > 0 and ok.client_addr
    assert ours[1].key_id == f"key_{reader.key.id.hex}"
    assert ours[2].key_id is None and ours[2].key_hint == stranger[:8] + "…" + stranger[-4:]
    assert ours[3].key_hint is None  # not even a hint of a malformed key
    assert len({e.id for e in ours}) == 4
    for secret in (good.secret, reader.secret, stranger):
        assert secret.encode() not in raw


async def test_requests_without_a_key_leave_no_event(api: Api, nats_server: NatsServer) -> None:
    response = await api.client.get("/v1/affiliates")
    await api.process.services.publisher.flush()  # type: ignore[union-attr]
    events, _ = await audit_events(nats_server.url)
    assert response.headers["x-request-id"] not in {e.request_id for e in events}


async def test_a_key_typed_into_a_path_user_agent_or_forwarded_for_is_not_published_or_logged(
    api: Api, nats_server: NatsServer, capsys: pytest.CaptureFixture[str]
) -> None:
    org = api.org()
    good = await api.key(org)
    planted = generate_key(KeyType.SECRET, Environment.LIVE)
    hint = hint_for(planted)
    proxy = httpx.ASGITransport(app=api.process.app, client=("10.1.2.3", 40000))
    async with httpx.AsyncClient(transport=proxy, base_url="https://api.test") as proxied:
        responses = [
            await api.client.get(
                f"/v1/affiliates/{planted}",
                headers={**bearer(good), "User-Agent": f"svc/1.0 ({planted})"},
            ),
            await api.client.get(f"/v1/no-such-route/{planted}", headers=bearer(good)),
            await api.client.get(
                "/v1/affiliates", headers={**bearer(good), "User-Agent": "x" * 290 + planted}
            ),
            await proxied.get(
                "/v1/affiliates",
                headers={
                    **bearer(good),
                    "X-Forwarded-Proto": "https",
                    "X-Forwarded-For": f"1.2.3.4,{planted}",
                },
            ),
        ]
    await api.process.services.publisher.flush()  # type: ignore[union-attr]

    events, raw = await audit_events(nats_server.url)
    by_request = {e.request_id: e for e in events}
    # No route, no authentication and no event: the path is only logged (as the route).
    ours = [by_request.get(r.headers["x-request-id"]) for r in responses]
    assert ours[0] and ours[2] and ours[3] and ours[1] is None
    assert (ours[0].path, ours[0].user_agent) == (f"/v1/affiliates/{hint}", f"svc/1.0 ({hint})")
    assert ours[2].user_agent == ("x" * 290 + hint)[:300]  # redacted, then cut
    assert ours[3].client_addr == hint
    logged = capsys.readouterr()
    assert f"/v1/no-such-route/{hint}" in logged.out + logged.err
    for text in (raw.decode(), logged.out, logged.err, *(r.text for r in responses)):
        assert planted not in text
        assert planted[8:-6] not in text
