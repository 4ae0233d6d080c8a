"""Probes: alive at once; ready only once the key mirror has caught up."""

from __future__ import annotations

import httpx

from adapters.settings import Settings
from bootstrap.api import api_process
from support.api import Api


async def test_healthz_answers_over_plain_http_for_load_balancers(api: Api) -> None:
    transport = httpx.ASGITransport(app=api.process.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://api.test") as plain:
        assert (await plain.get("/healthz")).json() == {"status": "ok"}


async def test_readyz_is_503_until_the_mirror_has_loaded(settings: Settings) -> None:
    process = api_process(settings)
    transport = httpx.ASGITransport(app=process.app)
    async with httpx.AsyncClient(transport=transport, base_url="https://api.test") as client:
        before = await client.get("/readyz")
        await process.services.mirror.start()
        after = await client.get("/readyz")
    await process.stop()
    assert before.status_code == 503 and before.json()["status"] == "starting"
    assert after.status_code == 200 and after.json()["status"] == "ready"
