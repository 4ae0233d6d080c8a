"""Settings > API Keys: the keys, Create API Key, and one key's page (roll, rename, revoke)."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any
from uuid import UUID

import structlog
from litestar import Controller, Request, get, post
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath
from litestar.response import Redirect, Template

from api.dashboard.context import DashboardContext
from api.dashboard.pages import (
    USER_DEPENDENCY,
    flash,
    form_text,
    is_htmx,
    page,
)
from api.services import Services
from application.history import History
from application.registry import utc_now
from application.views import api_key_view
from domain.access import Command, KeyFacts, allows, authorize
from domain.actors import UserActor
from domain.api_key import ApiKey
from domain.errors import DomainError, NotFound, ValidationError
from domain.ids import format_key_id, parse_key_id
from domain.key_format import Environment, KeyType
from domain.naming import clean_name
from domain.organization import Organization
from domain.plans import parse_permissions
from domain.user import User
from projections.request_audit_shared import last_used

log = structlog.get_logger()

#: Grace periods offered when rolling a key: (seconds, label).
GRACE_CHOICES = [(0, "now"), (3600, "1 hour"), (86400, "24 hours"), (604800, "7 days")]
#: Expiry choices when creating a key: (days, label); 0 = never.
EXPIRY_CHOICES = [
    (0, "never"),
    (1, "1 day"),
    (7, "7 days"),
    (30, "30 days"),
    (90, "90 days"),
    (365, "1 year"),
]


async def owned_key(
    dashboard: NamedDependency[DashboardContext],
    actor: NamedDependency[UserActor],
    key_id: FromPath[str],
) -> ApiKey:
    """The key of the path, if the user may see it (its organization's); otherwise not found."""
    try:
        uuid = parse_key_id(key_id)
    except ValidationError:
        raise NotFound("no such API key") from None
    return await asyncio.to_thread(dashboard.services.registry.key_for, actor, uuid)


class KeyPages(Controller):
    path = "/keys"
    dependencies = {**USER_DEPENDENCY, "key": Provide(owned_key)}

    @get("/")
    async def list_keys(
        self,
        request: Request[Any, Any, Any],
        dashboard: NamedDependency[DashboardContext],
        user: NamedDependency[User],
        actor: NamedDependency[UserActor],
    ) -> Template:
        """The organization's keys and the Create API Key form."""
        context = await _keys_page(dashboard, actor)
        return page(request, "keys.html.j2", user=user, **context)

    @post("/", status_code=200)
    async def create_key(
        self,
        request: Request[Any, Any, Any],
        dashboard: NamedDependency[DashboardContext],
        user: NamedDependency[User],
        actor: NamedDependency[UserActor],
    ) -> Template:
        """Create a key and show its secret, this once."""
        authorize(actor, Command.CREATE_KEY)  # before the form: a refusal is a 403, not a 422
        form = await request.form()
        services = dashboard.services
        try:
            name = clean_name(form_text(form, "name"), "key name")
            env = Environment(form_text(form, "env", "live"))
            permissions = None
            if form_text(form, "restricted") == "on":
                permissions = parse_permissions(form.getall("permissions", []))
            days = int(form_text(form, "expires_in_days", "0") or 0)
            if days not in {d for d, _ in EXPIRY_CHOICES}:
                raise ValidationError("choose an expiry from the list")
            expires_at = utc_now() + timedelta(days=days) if days else None
            issued = await asyncio.to_thread(
                services.registry.create_key,
                user.org_id,
                name=name,
                env=env,
                key_type=KeyType.SECRET,
                actor=actor,
                permissions=permissions,
                expires_at=expires_at,
            )
        except (DomainError, ValueError) as error:
            message = error.message if isinstance(error, DomainError) else "check the form"
            context = await _keys_page(dashboard, actor)
            template = "_create_error.html.j2" if is_htmx(request) else "keys.html.j2"
            return page(
                request, template, status_code=422, user=user, form_error=message, **context
            )
        await services.mirror.refresh()
        log.info("dashboard.key_created", key_id=format_key_id(issued.key.id))
        org = await asyncio.to_thread(services.registry.get_organization, user.org_id)
        reveal = {
            "title": "API key created",
            "secret": issued.secret,
            "key": api_key_view(issued.key, org, utc_now()),
        }
        template = "_reveal.html.j2" if is_htmx(request) else "keys.html.j2"
        return page(
            request,
            template,
            user=user,
            reveal=reveal,
            refresh_table=is_htmx(request),
            **await _keys_page(dashboard, actor),
        )

    @get("/{key_id:str}")
    async def key_detail(
        self,
        request: Request[Any, Any, Any],
        dashboard: NamedDependency[DashboardContext],
        user: NamedDependency[User],
        actor: NamedDependency[UserActor],
        key: NamedDependency[ApiKey],
    ) -> Template:
        """One key: its details, its last use, the actions, and its lifecycle history."""
        context = await _key_page(dashboard, actor, key)
        return page(request, "key.html.j2", user=user, **context)

    @post("/{key_id:str}/rename", status_code=200)
    async def rename_key(
        self,
        request: Request[Any, Any, Any],
        dashboard: NamedDependency[DashboardContext],
        actor: NamedDependency[UserActor],
        key: NamedDependency[ApiKey],
    ) -> Redirect:
        """Give the key a new name."""
        await _require(dashboard, actor, Command.RENAME_KEY, key)
        form = await request.form()
        name = clean_name(form_text(form, "name"), "key name")
        await asyncio.to_thread(
            dashboard.services.registry.rename_key, key.id, name=name, actor=actor
        )
        flash(request, f"Renamed the key to “{name}”.")
        return Redirect(f"/dashboard/keys/{format_key_id(key.id)}", status_code=303)

    @post("/{key_id:str}/roll", status_code=200)
    async def roll_key(
        self,
        request: Request[Any, Any, Any],
        dashboard: NamedDependency[DashboardContext],
        user: NamedDependency[User],
        actor: NamedDependency[UserActor],
        key: NamedDependency[ApiKey],
    ) -> Template:
        """Issue the key's successor (shown once); the old key works for the grace period."""
        await _require(dashboard, actor, Command.ROLL_KEY, key)
        form = await request.form()
        grace_text = form_text(form, "grace_seconds", "86400")
        if not grace_text.isdigit() or int(grace_text) not in {s for s, _ in GRACE_CHOICES}:
            raise ValidationError("choose a grace period from the list")
        services = dashboard.services
        issued = await asyncio.to_thread(
            services.registry.roll_key,
            key.id,
            grace=timedelta(seconds=int(grace_text)),
            actor=actor,
        )
        await services.mirror.refresh()
        log.info("dashboard.key_rolled", key_id=format_key_id(key.id))

        def load() -> tuple[Organization, ApiKey, dict[UUID, Any]]:
            org = services.registry.get_organization(user.org_id)
            return org, services.registry.get_key(key.id), _last_used(services, [key.id])

        org, old, used = await asyncio.to_thread(load)
        now = utc_now()
        old_use = used.get(key.id)
        reveal = {
            "title": "API key rolled",
            "secret": issued.secret,
            "key": api_key_view(issued.key, org, now),
            "old": api_key_view(old, org, now, last_used_at=None),
            "old_last_used": None if old_use is None else old_use.at,
            "old_last_used_addr": None if old_use is None else old_use.addr,
        }
        template = "_reveal.html.j2" if is_htmx(request) else "keys.html.j2"
        return page(
            request, template, user=user, reveal=reveal, **await _keys_page(dashboard, actor)
        )

    @get("/{key_id:str}/revoke")
    async def confirm_revoke(
        self,
        request: Request[Any, Any, Any],
        dashboard: NamedDependency[DashboardContext],
        user: NamedDependency[User],
        actor: NamedDependency[UserActor],
        key: NamedDependency[ApiKey],
    ) -> Template:
        """Ask before revoking: it cannot be undone."""
        await _require(dashboard, actor, Command.REVOKE_KEY, key)
        org = await asyncio.to_thread(dashboard.services.registry.get_organization, user.org_id)
        return page(request, "revoke.html.j2", user=user, key=api_key_view(key, org, utc_now()))

    @post("/{key_id:str}/revoke", status_code=200)
    async def revoke_key(
        self,
        request: Request[Any, Any, Any],
        dashboard: NamedDependency[DashboardContext],
        actor: NamedDependency[UserActor],
        key: NamedDependency[ApiKey],
    ) -> Redirect:
        """Revoke the key at once, on every API process."""
        await _require(dashboard, actor, Command.REVOKE_KEY, key)
        form = await request.form()
        reason = form_text(form, "reason")[:500]
        services = dashboard.services
        await asyncio.to_thread(services.registry.revoke_key, key.id, actor=actor, reason=reason)
        await services.mirror.refresh()
        log.info("dashboard.key_revoked", key_id=format_key_id(key.id))
        flash(request, f"Revoked “{key.name}” ({key.hint}). It no longer works.")
        return Redirect("/dashboard/keys", status_code=303)


async def _require(
    dashboard: DashboardContext, actor: UserActor, command: Command, key: ApiKey
) -> None:
    """Refuse before a form is read, so a refusal is a 403, never a complaint about the form.

    The registry asks again when it runs the command; this only answers sooner.
    """
    authorize(actor, command, key=await asyncio.to_thread(dashboard.services.registry.facts, key))


def _last_used(services: Services, key_ids: list[UUID]) -> dict[UUID, Any]:
    try:
        return last_used(services.settings, key_ids)
    except Exception as error:  # the audit model may be unavailable; keys still list
        log.warning("dashboard.last_used_unavailable", error=type(error).__name__)
        return {}


def _people(dashboard: DashboardContext, actors: set[str | None]) -> dict[str, str]:
    """Actor strings → what people recognize (a user's email)."""
    names: dict[str, str] = {}
    for actor in actors:
        if actor and actor.startswith("user:usr_"):
            try:
                user = dashboard.users.get_user(UUID(hex=actor.removeprefix("user:usr_")))
            except (NotFound, ValueError):
                continue
            names[actor] = user.email
    return names


async def _keys_page(dashboard: DashboardContext, actor: UserActor) -> dict[str, Any]:
    services = dashboard.services

    def load() -> dict[str, Any]:
        org = services.registry.get_organization(actor.org_id)
        keys = services.registry.keys_for(actor, org.id)
        used = _last_used(services, [k.id for k in keys])
        now = utc_now()
        views = []
        for k in reversed(keys):  # newest first
            view = api_key_view(k, org, now)
            use = used.get(k.id)
            view["last_used_unix"] = None if use is None else use.at
            view["may_revoke"] = allows(actor, Command.REVOKE_KEY, key=KeyFacts.of(k, org))
            views.append(view)
        return {
            "org": org,
            "keys": views,
            "people": _people(dashboard, {k.created_by for k in keys}),
            "permissions": sorted(p.value for p in org.permissions),
            "expiry_choices": EXPIRY_CHOICES,
            "may_create": allows(actor, Command.CREATE_KEY),
        }

    return await asyncio.to_thread(load)


async def _key_page(dashboard: DashboardContext, actor: UserActor, key: ApiKey) -> dict[str, Any]:
    services = dashboard.services

    def load() -> dict[str, Any]:
        org = services.registry.get_organization(actor.org_id)
        history = History(services.registry, actor).key_history(key.id)
        use = _last_used(services, [key.id]).get(key.id)
        facts = KeyFacts.of(key, org)
        return {
            "org": org,
            "key": api_key_view(key, org, utc_now()),
            "last_used": None if use is None else use.at,
            "last_used_addr": None if use is None else use.addr,
            "history": history,
            "people": _people(dashboard, {e.get("actor") for e in history}),
            "grace_choices": GRACE_CHOICES,
            "may_roll": allows(actor, Command.ROLL_KEY, key=facts),
            "may_rename": allows(actor, Command.RENAME_KEY, key=facts),
            "may_revoke": allows(actor, Command.REVOKE_KEY, key=facts),
        }

    return await asyncio.to_thread(load)
