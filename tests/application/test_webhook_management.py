"""Managing webhook endpoints through the one policy, and their place in the org's history."""

from __future__ import annotations

from datetime import timedelta

import pytest

from application.history import History
from application.registry import KeyRegistry
from application.webhooks import Webhooks
from domain.access import key_actor
from domain.actors import OPERATOR
from domain.errors import NotFound, PermissionExceeded, ValidationError
from domain.key_format import Environment, KeyType
from domain.plans import Plan
from domain.roles import Role
from domain.webhook import MAX_ENDPOINTS_PER_ORG
from domain.webhook_urls import WebhookUrlNotAllowed
from support.actors import user_of

URL = "https://hooks.example.com/in"


@pytest.fixture
def hooks(registry: KeyRegistry) -> Webhooks:
    return Webhooks(registry, pepper=b"p" * 32)


def test_an_added_endpoint_is_in_the_orgs_feed_without_its_secret(
    registry: KeyRegistry, hooks: Webhooks
) -> None:
    org = registry.register_organization("Acme", Plan.PRO, OPERATOR)
    added = hooks.add(user_of(org, Role.OWNER), org.id, url=URL, events=["api_key.revoked"])
    hooks.rotate_secret(OPERATOR, added.endpoint.id)
    feed = History(registry, user_of(org, Role.AUDITOR)).org_events(org.id).events
    types = [e["type"] for e in feed]
    assert types[-3:] == ["organization.webhook_added", "webhook.created", "webhook.secret_rotated"]
    assert added.secret not in str(feed) and added.endpoint.salt not in str(feed)


def test_a_test_keys_feed_leaves_out_live_endpoints(registry: KeyRegistry, hooks: Webhooks) -> None:
    org = registry.register_organization("Acme", Plan.PRO, OPERATOR)
    test = registry.create_key(
        org.id, name="t", env=Environment.TEST, key_type=KeyType.SECRET, actor=OPERATOR
    )
    hooks.add(OPERATOR, org.id, url=URL, events=["api_key.revoked"], env=Environment.LIVE)
    test_key = key_actor(test.key, registry.get_organization(org.id), registry.clock())
    hooks.add(test_key, org.id, url=URL + "/test", events=["api_key.revoked"])
    feed = History(registry, test_key).org_events(org.id).events
    created = [e for e in feed if e["type"] == "webhook.created"]
    assert [e["data"]["env"] for e in created] == ["test"]
    assert [e.url for e in hooks.endpoints(test_key, org.id)] == [URL + "/test"]


def test_a_key_cannot_see_or_touch_another_organizations_endpoint(
    registry: KeyRegistry, hooks: Webhooks
) -> None:
    mine = registry.register_organization("Mine", Plan.PRO, OPERATOR)
    theirs = registry.register_organization("Theirs", Plan.PRO, OPERATOR)
    their_hook = hooks.add(OPERATOR, theirs.id, url=URL, events=["api_key.revoked"])
    issued = registry.create_key(
        mine.id, name="k", env=Environment.LIVE, key_type=KeyType.SECRET, actor=OPERATOR
    )
    me = key_actor(issued.key, registry.get_organization(mine.id), registry.clock())
    with pytest.raises(NotFound):
        hooks.endpoint(me, their_hook.endpoint.id)
    with pytest.raises(NotFound):
        hooks.delete(me, their_hook.endpoint.id)
    with pytest.raises(NotFound):
        hooks.add(me, theirs.id, url=URL, events=["api_key.revoked"])


def test_a_rolled_key_adds_no_endpoint(registry: KeyRegistry, hooks: Webhooks) -> None:
    org = registry.register_organization("Acme", Plan.PRO, OPERATOR)
    issued = registry.create_key(
        org.id, name="k", env=Environment.LIVE, key_type=KeyType.SECRET, actor=OPERATOR
    )
    before = key_actor(issued.key, registry.get_organization(org.id), registry.clock())
    registry.roll_key(issued.key.id, grace=timedelta(hours=1), actor=OPERATOR)
    with pytest.raises(PermissionExceeded, match="rolled"):
        hooks.add(before, org.id, url=URL, events=["api_key.revoked"])


def test_urls_inside_are_refused_before_anything_is_stored(
    registry: KeyRegistry, hooks: Webhooks
) -> None:
    org = registry.register_organization("Acme", Plan.PRO, OPERATOR)
    for url in ("https://127.0.0.1/x", "https://169.254.169.254/latest", "http://example.com/"):
        with pytest.raises(WebhookUrlNotAllowed):
            hooks.add(OPERATOR, org.id, url=url, events=["api_key.revoked"])
    assert registry.get_organization(org.id).webhook_ids == []


def test_an_organization_has_a_bounded_number_of_endpoints(
    registry: KeyRegistry, hooks: Webhooks
) -> None:
    org = registry.register_organization("Acme", Plan.PRO, OPERATOR)
    for n in range(MAX_ENDPOINTS_PER_ORG):
        hooks.add(OPERATOR, org.id, url=f"{URL}/{n}", events=["api_key.revoked"])
    with pytest.raises(ValidationError, match="at most"):
        hooks.add(OPERATOR, org.id, url=URL, events=["api_key.revoked"])
    first = hooks.endpoints(OPERATOR, org.id)[0]
    hooks.delete(OPERATOR, first.id)
    hooks.add(OPERATOR, org.id, url=URL, events=["api_key.revoked"])
    with pytest.raises(NotFound):
        hooks.endpoint(OPERATOR, first.id)
