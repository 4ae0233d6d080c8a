"""One key, one answer: an expired key says so before and after the expiry worker retired it."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from application.registry import IssuedKey
from domain.actors import OPERATOR
from domain.key_format import Environment, KeyType
from domain.key_states import EXPIRED_AT_EXPIRY
from support.api import Api, assert_error, bearer
from workers.expiry import ExpiryWorker


async def expired_key(api: Api, how: str) -> IssuedKey:
    org = api.org()
    if how == "its expiry time":
        issued = api.registry.create_key(
            org.id,
            name="expiring",
            env=Environment.LIVE,
            key_type=KeyType.SECRET,
            actor=OPERATOR,
            expires_at=datetime.now(UTC) + timedelta(seconds=1),
        )
        await asyncio.sleep(1.1)
    else:
        issued = await api.key(org)
        api.registry.roll_key(issued.key.id, grace=timedelta(0), actor=OPERATOR)
    await api.process.services.mirror.refresh()
    return issued


@pytest.mark.parametrize("how", ["its expiry time", "the end of its roll's grace"])
async def test_an_expired_key_answers_api_key_expired_before_and_after_the_expiry_worker(
    api: Api, how: str
) -> None:
    issued = await expired_key(api, how)
    before = await api.client.get("/v1/affiliates", headers=bearer(issued))
    assert_error(before, 401, "api_key_expired")

    assert ExpiryWorker(api.registry).run_once() == 1
    await api.process.services.mirror.refresh()  # the API's (compact) mirror sees the Revoked
    after = await api.client.get("/v1/affiliates", headers=bearer(issued))

    assert_error(after, 401, "api_key_expired")


async def test_a_key_revoked_by_a_person_answers_api_key_revoked_even_past_its_expiry(
    api: Api,
) -> None:
    issued = api.registry.create_key(
        api.org().id,
        name="expiring",
        env=Environment.LIVE,
        key_type=KeyType.SECRET,
        actor=OPERATOR,
        expires_at=datetime.now(UTC) + timedelta(seconds=1),
    )
    # A person's reason may read like the worker's: who revoked decides, as in the domain.
    api.registry.revoke_key(issued.key.id, actor=OPERATOR, reason=EXPIRED_AT_EXPIRY)
    await asyncio.sleep(1.1)
    assert ExpiryWorker(api.registry).run_once() == 0
    await api.process.services.mirror.refresh()

    response = await api.client.get("/v1/affiliates", headers=bearer(issued))

    assert_error(response, 401, "api_key_revoked")
