"""The authorization matrix: every `/v1` route and dashboard action by every kind of actor.

One table says what each actor gets from each route; the test asks every cell of it of a real
API process (real NATS, Redis and store) and reports every cell that answers otherwise. The
route list comes from the app itself: a route that is in neither `MATRIX` nor `NOT_ACTIONS`
fails the test, so a new route (or command) joins the table before it ships.

Actors and what each acts on (its "target": a live, unrestricted secret key made by the owner
of the actor's organization, unless a case says otherwise; for `other_org` and `other_owner`,
a key of another organization; for a route naming `{webhook_id}`, a fresh webhook endpoint of
that organization, live unless a case says otherwise, and `{delivery_id}` a delivery to it):

- keys: `live` and `test` (pro plan), `restricted` (api_keys:read, api_keys:write,
  affiliates:read), `public` (pk_live_…), `other_org` (another org's live key), `free`
  (a live key of a free-plan org), `dev_made` (a key a dashboard developer created), `rolled`
  (a live key rolled a moment ago, in its grace period);
- dashboard users: `owner`, `admin`, `developer`, `auditor` (pro plan), `free_owner` (owner of
  a free-plan org), `other_owner` (owner of another org).
"""

from __future__ import annotations

import dataclasses
import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import httpx
import pytest

from adapters.settings import Settings
from adapters.users import hash_password
from application.registry import IssuedKey
from application.stores import open_user_directory
from bootstrap.api import api_process
from dashboard.asgi import PASSWORD, csrf_token_in
from domain.access import Command
from domain.actors import OPERATOR, UserActor
from domain.ids import format_org_id, format_webhook_id
from domain.key_format import Environment, KeyType
from domain.organization import Organization
from domain.plans import Permission, Plan
from domain.user import Role, User
from support.api import Api, bearer, serving
from support.webhook_api import delivery_to

KEYS = ("live", "test", "restricted", "public", "other_org", "free", "dev_made", "rolled")
USERS = ("owner", "admin", "developer", "auditor", "free_owner", "other_owner")
RESTRICTION = {Permission.API_KEYS_READ, Permission.API_KEYS_WRITE, Permission.AFFILIATES_READ}
#: An endpoint every key with webhooks:write may add (an IP literal: the check needs no DNS).
NEW_WEBHOOK = {"url": "https://93.184.215.14/hook", "events": ["api_key.created"]}


def row(*statuses: int, actors: tuple[str, ...] = KEYS) -> dict[str, int]:
    """Expected statuses, in the order of `actors`."""
    assert len(statuses) == len(actors)
    return dict(zip(actors, statuses, strict=True))


def users(*statuses: int) -> dict[str, int]:
    return row(*statuses, actors=USERS)


@dataclass(frozen=True)
class Case:
    """One request to one route, and what each actor must get."""

    method: str
    route: str  # as the app lists it, path parameters without their types
    expected: dict[str, int]
    body: dict[str, Any] | None = None
    form: dict[str, str] = field(default_factory=dict)
    label: str = ""
    target_env: Environment = Environment.LIVE
    target_by_self: bool = False  # a key the acting user made (the operator, for an auditor)


#                               live test restr pub other free dev_m rolled
MATRIX = [
    Case("GET", "/v1/affiliates", row(200, 200, 200, 403, 200, 200, 200, 200)),
    Case("POST", "/v1/affiliates", row(201, 201, 403, 403, 201, 201, 201, 201), {"name": "A"}),
    Case("GET", "/v1/affiliates/{affiliate_id}", row(200, 404, 200, 403, 404, 404, 200, 200)),
    Case("POST", "/v1/api-keys", row(201, 201, 201, 403, 201, 201, 403, 403), {"name": "m"}),
    Case(
        "POST",
        "/v1/api-keys",
        row(201, 403, 201, 403, 201, 201, 403, 403),
        {"name": "m", "env": "live"},
        label="a live key",
    ),
    Case(
        "POST",
        "/v1/api-keys",
        row(201, 201, 403, 403, 201, 403, 403, 403),
        {"name": "m", "permissions": ["audit:read"]},
        label="with audit:read",
    ),
    Case("GET", "/v1/api-keys", row(200, 200, 200, 403, 200, 200, 200, 200)),
    Case("GET", "/v1/api-keys/current", row(200, 200, 200, 403, 200, 200, 200, 200)),
    Case("GET", "/v1/api-keys/{key_id}", row(200, 404, 200, 403, 404, 200, 200, 200)),
    Case(
        "GET",
        "/v1/api-keys/{key_id}",
        row(200, 200, 200, 403, 404, 200, 200, 200),
        label="a test key",
        target_env=Environment.TEST,
    ),
    Case(
        "PATCH",
        "/v1/api-keys/{key_id}",
        row(200, 404, 403, 403, 404, 200, 403, 403),
        {"name": "n"},
    ),
    Case(
        "PATCH",
        "/v1/api-keys/{key_id}",
        row(200, 404, 403, 403, 404, 200, 403, 403),
        {"allowed_ips": ["203.0.113.0/24"]},
        label="allowed IPs",
    ),
    Case("POST", "/v1/api-keys/{key_id}/roll", row(200, 404, 403, 403, 404, 200, 403, 403), {}),
    Case(
        "POST",
        "/v1/api-keys/{key_id}/roll",
        row(200, 200, 403, 403, 404, 200, 403, 403),
        {},
        label="a test key",
        target_env=Environment.TEST,
    ),
    Case("POST", "/v1/api-keys/{key_id}/revoke", row(200, 404, 403, 403, 404, 200, 403, 403), {}),
    Case("GET", "/v1/api-keys/{key_id}/history", row(200, 404, 200, 403, 404, 200, 200, 200)),
    Case("GET", "/v1/audit/events", row(200, 200, 403, 403, 200, 403, 200, 200)),
    Case("GET", "/v1/audit/requests", row(200, 200, 403, 403, 200, 403, 200, 200)),
    # Without key_id, another organization's key reads its own organization's usage.
    Case("GET", "/v1/usage", row(200, 200, 403, 403, 200, 200, 200, 200)),
    # The org's key-lifetime policy: read with api_keys:read; changed with api_keys:write by a
    # live, unrestricted key that is not retiring (it governs, and may revoke, every key).
    Case("GET", "/v1/organization/policy", row(200, 200, 200, 403, 200, 200, 200, 200)),
    Case(
        "PATCH",
        "/v1/organization/policy",
        row(200, 403, 403, 403, 200, 200, 403, 403),
        {"require_expiry": "none"},
    ),
    # Webhooks: a developer's key lacks webhooks:write; a test key sees test endpoints only.
    Case("GET", "/v1/webhooks", row(200, 200, 403, 403, 200, 200, 200, 200)),
    Case("POST", "/v1/webhooks", row(201, 201, 403, 403, 201, 201, 403, 403), NEW_WEBHOOK),
    Case(
        "POST",
        "/v1/webhooks",
        row(201, 403, 403, 403, 201, 201, 403, 403),
        {**NEW_WEBHOOK, "env": "live"},
        label="a live endpoint",
    ),
    Case("GET", "/v1/webhooks/{webhook_id}", row(200, 404, 403, 403, 404, 200, 200, 200)),
    Case(
        "GET",
        "/v1/webhooks/{webhook_id}",
        row(200, 200, 403, 403, 404, 200, 200, 200),
        label="a test endpoint",
        target_env=Environment.TEST,
    ),
    Case(
        "PATCH",
        "/v1/webhooks/{webhook_id}",
        row(200, 404, 403, 403, 404, 200, 403, 403),
        {"description": "n"},
    ),
    Case(
        "PATCH",
        "/v1/webhooks/{webhook_id}",
        row(200, 200, 403, 403, 404, 200, 403, 403),
        {"description": "n"},
        label="a test endpoint",
        target_env=Environment.TEST,
    ),
    Case("DELETE", "/v1/webhooks/{webhook_id}", row(200, 404, 403, 403, 404, 200, 403, 403)),
    Case(
        "POST",
        "/v1/webhooks/{webhook_id}/rotate-secret",
        row(200, 404, 403, 403, 404, 200, 403, 403),
    ),
    Case("POST", "/v1/webhooks/{webhook_id}/test", row(202, 404, 403, 403, 404, 202, 403, 403)),
    Case(
        "GET",
        "/v1/webhooks/{webhook_id}/deliveries",
        row(200, 404, 403, 403, 404, 200, 200, 200),
    ),
    Case(
        "GET",
        "/v1/webhooks/{webhook_id}/deliveries/{delivery_id}",
        row(200, 404, 403, 403, 404, 200, 200, 200),
    ),
    Case(
        "POST",
        "/v1/webhooks/{webhook_id}/deliveries/{delivery_id}/retry",
        row(202, 404, 403, 403, 404, 202, 403, 403),
    ),
    Case("POST", "/v1/events", row(202, 202, 403, 202, 202, 202, 202, 202), {"event": "e"}),
    Case(
        "POST",
        "/v1/events",
        row(202, 202, 403, 202, 202, 202, 202, 202),
        {"batch": [{"event": "e"}, {"event": "f"}]},
        label="a batch",
    ),
    # What was tracked is read with a secret key (events:read on every plan); another
    # organization's key reads its own organization's events.
    Case("GET", "/v1/events", row(200, 200, 403, 403, 200, 200, 200, 200)),
    # Leak reports are signed by the scanner, not sent with a key: a key opens nothing there.
    Case("POST", "/v1/leaks", row(401, 401, 401, 401, 401, 401, 401, 401), {}),
    Case("POST", "/v1/leaks/github", row(401, 401, 401, 401, 401, 401, 401, 401), {}),
    # Public revocation takes no key and uses none: every sender gets the same 202.
    Case("POST", "/v1/public/revoke", row(202, 202, 202, 202, 202, 202, 202, 202), {"keys": ["x"]}),
    #                                owner admin  dev  audit free other
    Case("GET", "/dashboard/keys", users(200, 200, 200, 200, 200, 200)),
    Case("POST", "/dashboard/keys", users(200, 200, 200, 403, 200, 200), form={"name": "k"}),
    Case("GET", "/dashboard/keys/{key_id}", users(200, 200, 200, 200, 200, 404)),
    Case("GET", "/dashboard/keys/{key_id}/usage.csv", users(200, 200, 200, 200, 200, 404)),
    Case("GET", "/dashboard/keys/{key_id}/last-use", users(200, 200, 200, 200, 200, 404)),
    Case(
        "POST",
        "/dashboard/keys/{key_id}/rename",
        users(303, 303, 403, 403, 303, 404),
        form={"name": "n"},
    ),
    Case(
        "POST",
        "/dashboard/keys/{key_id}/roll",
        users(200, 200, 403, 403, 200, 404),
        form={"grace_seconds": "0"},
    ),
    Case(
        "POST",
        "/dashboard/keys/{key_id}/roll",
        users(200, 200, 200, 403, 200, 200),
        form={"grace_seconds": "0"},
        label="its own key",
        target_by_self=True,
    ),
    Case("GET", "/dashboard/keys/{key_id}/revoke", users(200, 200, 403, 403, 200, 404)),
    Case("POST", "/dashboard/keys/{key_id}/revoke", users(303, 303, 403, 403, 303, 404)),
    Case(
        "POST",
        "/dashboard/keys/{key_id}/revoke",
        users(303, 303, 303, 403, 303, 303),
        label="its own key",
        target_by_self=True,
    ),
    Case("GET", "/dashboard/audit", users(200, 200, 200, 200, 403, 200)),
    # Settings > Key policy: every role reads it; owners and admins change it (its own org's).
    Case("GET", "/dashboard/settings/key-policy", users(200, 200, 200, 200, 200, 200)),
    Case(
        "POST",
        "/dashboard/settings/key-policy",
        users(303, 303, 403, 403, 303, 303),
        form={"max_lifetime_days": "", "require_expiry": "none", "revoke_unused_after_days": ""},
    ),
    # Settings > Webhooks: owners and admins manage; developers and auditors only read.
    Case("GET", "/dashboard/webhooks", users(200, 200, 200, 200, 200, 200)),
    Case(
        "POST",
        "/dashboard/webhooks",
        users(200, 200, 403, 403, 200, 200),
        form={"url": "https://93.184.215.14/hook", "events": "api_key.created"},
    ),
    Case("GET", "/dashboard/webhooks/{webhook_id}", users(200, 200, 200, 200, 200, 404)),
    Case(
        "POST",
        "/dashboard/webhooks/{webhook_id}/edit",
        users(303, 303, 403, 403, 303, 404),
        form={"url": "https://93.184.215.14/hook", "events": "api_key.revoked"},
    ),
    Case("POST", "/dashboard/webhooks/{webhook_id}/disable", users(303, 303, 403, 403, 303, 404)),
    Case("POST", "/dashboard/webhooks/{webhook_id}/enable", users(303, 303, 403, 403, 303, 404)),
    Case("POST", "/dashboard/webhooks/{webhook_id}/rotate", users(200, 200, 403, 403, 200, 404)),
    Case(
        "POST",
        "/dashboard/webhooks/{webhook_id}/delete",
        users(303, 303, 403, 403, 303, 404),
        form={"confirm": "yes"},
    ),
    Case("POST", "/dashboard/webhooks/{webhook_id}/test", users(303, 303, 403, 403, 303, 404)),
    Case(
        "POST",
        "/dashboard/webhooks/{webhook_id}/deliveries/{delivery_id}/retry",
        users(303, 303, 403, 403, 303, 404),
    ),
]

#: Routes that are no action on an organization's keys or data, and why.
NOT_ACTIONS = {
    ("GET", "/dashboard"): "the front door: redirects to sign-in or to the keys",
    ("GET", "/dashboard/login"): "the sign-in form",
    ("POST", "/dashboard/login"): "signing in (throttled; tests/dashboard/test_sessions.py)",
    ("POST", "/dashboard/logout"): "signing out",
    ("GET", "/dashboard/static/{file_path}"): "the dashboard's CSS and scripts",
    ("HEAD", "/dashboard/static/{file_path}"): "the dashboard's CSS and scripts",
    ("GET", "/sdk/v1/icodrip.js"): "the browser SDK's public script (tests/api/test_sdk_script.py)",
}


@pytest.fixture
async def api(api_settings: Settings) -> AsyncIterator[Api]:
    """The API process, with leak reports switched on (so their refusal is the signature's)."""
    settings = dataclasses.replace(api_settings, leak_signing_key=b"matrix-" + uuid.uuid4().bytes)
    async with serving(api_process(settings)) as served:
        yield served


def app_routes(api: Api) -> set[tuple[str, str]]:
    """Every (method, path) of `/v1`, `/dashboard` and `/sdk` the app serves."""
    found = set()
    for route in api.process.litestar.routes:
        path = re.sub(r"\{(\w+):[^}]+\}", r"{\1}", route.path).rstrip("/") or "/"
        if not path.startswith(("/v1", "/dashboard", "/sdk")):
            continue
        for method in getattr(route, "methods", ()):
            if method != "OPTIONS":
                found.add((method, path))
    return found


def test_every_route_is_in_the_matrix(api: Api) -> None:
    listed = {(case.method, case.route) for case in MATRIX} | set(NOT_ACTIONS)
    missing = app_routes(api) - listed
    assert not missing, f"routes missing from the access matrix: {sorted(missing)}"
    gone = listed - app_routes(api)
    assert not gone, f"the matrix lists routes the app does not serve: {sorted(gone)}"


def test_every_v1_handler_names_its_command(api: Api) -> None:
    for route in api.process.litestar.routes:
        if not route.path.startswith("/v1"):
            continue
        for handler in getattr(route, "route_handlers", ()):
            if set(handler.http_methods) == {"OPTIONS"}:
                continue  # Litestar's own answer to OPTIONS (CORS preflights)
            assert "command" in handler.opt, f"{route.path}: declare opt={{'command': …}}"


def test_every_dashboard_action_names_its_command(api: Api) -> None:
    for route in api.process.litestar.routes:
        path = re.sub(r"\{(\w+):[^}]+\}", r"{\1}", route.path).rstrip("/") or "/"
        if not path.startswith("/dashboard"):
            continue
        for handler in getattr(route, "route_handlers", ()):
            actions = {(m, path) for m in handler.http_methods if m != "OPTIONS"}
            if not actions or actions <= NOT_ACTIONS.keys():
                continue
            assert isinstance(handler.opt.get("command"), Command), (
                f"{sorted(actions)}: a dashboard action declares opt={{'command': …}}"
            )


# -- the actors and their targets ----------------------------------------------------------


@dataclass
class World:
    """Three organizations, their keys and people, and a way to make a target per cell."""

    api: Api
    acme: Organization
    other: Organization
    free: Organization
    keys: dict[str, IssuedKey]
    people: dict[str, User]
    sessions: dict[str, tuple[httpx.AsyncClient, str]]
    affiliate_id: str

    def org_of(self, actor: str) -> Organization:
        own = {"other_org": self.other, "other_owner": self.other}
        return own.get(actor, self.free if actor.startswith("free") else self.acme)

    def target_org(self, actor: str) -> Organization:
        """`other_*` act on Acme's keys; everyone else on its own organization's."""
        return self.acme if actor.startswith("other") else self.org_of(actor)

    async def target(self, actor: str, case: Case) -> str:
        """A fresh key for one cell (see the module's docstring), as the path names it."""
        org = self.target_org(actor)
        owner = self.people["free_owner" if org is self.free else "owner"]
        maker: Any = owner.acting(org.permissions)
        if case.target_by_self:
            org = self.org_of(actor)
            person = self.people[actor]
            maker = OPERATOR if person.role is Role.AUDITOR else person.acting(org.permissions)
        issued = self.api.registry.create_key(
            org.id, name="target", env=case.target_env, key_type=KeyType.SECRET, actor=maker
        )
        await self.api.process.services.mirror.refresh()
        return f"key_{issued.key.id.hex}"

    def clear_webhooks(self, actor: str) -> None:
        """Delete the endpoints of the actor's target organization: it may have only a few at
        once (`MAX_ENDPOINTS_PER_ORG`), and each cell may add one."""
        org = self.api.registry.get_organization(self.target_org(actor).id)
        webhooks = self.api.process.services.webhooks
        for endpoint in webhooks.live_endpoints(org):
            if not endpoint.deleted:
                webhooks.delete(OPERATOR, endpoint.id)

    def webhook_target(self, actor: str, case: Case) -> tuple[str, str]:
        """A fresh endpoint of the actor's target organization in the case's environment, and
        a delivery to it, as the path names them."""
        org = self.target_org(actor)
        services = self.api.process.services
        endpoint = services.webhooks.add(
            OPERATOR, org.id, env=case.target_env, **NEW_WEBHOOK
        ).endpoint
        delivery = delivery_to(endpoint.id, org.id)
        services.deliveries.enqueue([delivery])
        return format_webhook_id(endpoint.id), delivery.id


async def make_world(api: Api) -> World:
    acme, other, free = api.org(Plan.PRO), api.org(Plan.PRO), api.org(Plan.FREE)
    keys = {
        "live": await api.key(acme),
        "test": await api.key(acme, Environment.TEST),
        "restricted": await api.key(acme, permissions=RESTRICTION),
        "public": await api.key(acme, key_type=KeyType.PUBLIC),
        "other_org": await api.key(other),
        "free": await api.key(free),
        "rolled": await api.key(acme),
    }
    developer = UserActor(uuid.uuid4(), acme.id, Role.DEVELOPER, acme.permissions)
    keys["dev_made"] = api.registry.create_key(
        acme.id, name="dev's", env=Environment.LIVE, key_type=KeyType.SECRET, actor=developer
    )
    api.registry.roll_key(keys["rolled"].key.id, grace=timedelta(hours=1), actor=OPERATOR)
    await api.process.services.mirror.refresh()
    users_dir = open_user_directory(api.process.services.settings)
    people: dict[str, User] = {}
    for name, org, role in [
        ("owner", acme, Role.OWNER),
        ("admin", acme, Role.ADMIN),
        ("developer", acme, Role.DEVELOPER),
        ("auditor", acme, Role.AUDITOR),
        ("free_owner", free, Role.OWNER),
        ("other_owner", other, Role.OWNER),
    ]:
        people[name] = users_dir.register_user(
            org.id,
            email=f"{name}-{uuid.uuid4().hex[:8]}@example.com",
            role=role,
            password_hash=hash_password(PASSWORD),
            actor=OPERATOR,
        )
    affiliate = api.process.services.affiliates.add(
        format_org_id(acme.id), Environment.LIVE.value, "Acme's affiliate", None
    )
    world = World(api, acme, other, free, keys, people, {}, affiliate.id)
    users_dir.close()
    for name, user in people.items():
        world.sessions[name] = await signed_in(api, user)
    return world


async def signed_in(api: Api, user: User) -> tuple[httpx.AsyncClient, str]:
    """A client with its own cookies, signed in as `user`, and its CSRF token."""
    transport = httpx.ASGITransport(
        app=api.process.app, client=(f"127.9.{uuid.uuid4().int % 250}.{len(user.email)}", 4000)
    )
    client = httpx.AsyncClient(transport=transport, base_url="https://api.test")
    form = await client.get("/dashboard/login")
    answer = await client.post(
        "/dashboard/login",
        data={"email": user.email, "password": PASSWORD, "_csrf_token": csrf_token_in(form)},
    )
    assert answer.status_code == 303, answer.text
    keys = await client.get("/dashboard/keys/")
    return client, csrf_token_in(keys)


# -- asking every cell ---------------------------------------------------------------------


async def ask(world: World, case: Case, actor: str) -> httpx.Response:
    path = case.route.replace("{affiliate_id}", world.affiliate_id)
    if "{key_id}" in path:
        path = path.replace("{key_id}", await world.target(actor, case))
    if "/webhooks" in path:
        world.clear_webhooks(actor)
    if "{webhook_id}" in path:
        webhook_id, delivery_id = world.webhook_target(actor, case)
        path = path.replace("{webhook_id}", webhook_id).replace("{delivery_id}", delivery_id)
    if case.route.startswith("/v1"):
        return await world.api.client.request(
            case.method, path, json=case.body, headers=bearer(world.keys[actor])
        )
    client, token = world.sessions[actor]
    if case.method == "GET":
        return await client.get(path)
    return await client.request(case.method, path, data={**case.form, "_csrf_token": token})


async def test_every_actor_gets_what_the_matrix_says_from_every_route(api: Api) -> None:
    world = await make_world(api)
    wrong: list[str] = []
    for case in MATRIX:
        for actor, status in case.expected.items():
            response = await ask(world, case, actor)
            if response.status_code != status:
                name = f"{case.method} {case.route}{f' ({case.label})' if case.label else ''}"
                wrong.append(
                    f"{name} as {actor}: {response.status_code}, expected {status}: "
                    f"{response.text[:160]}"
                )
    assert not wrong, "\n".join(wrong)
