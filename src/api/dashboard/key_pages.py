"""Settings > API Keys: the keys, Create API Key, and one key's page (roll, rename, revoke).

Handlers read the form (`forms`), run one `KeyManagement` operation as the user's actor, and
render what `views` builds. Each declares its command (`opt`), asked of the access policy
before any form is read: by `pages.acting_user`, or with the key's facts by `owned_key`.
"""

from __future__ import annotations

import asyncio
from typing import Any

import structlog
from litestar import Controller, Request, get, post
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath
from litestar.response import Redirect, Template

from api.dashboard import forms, views
from api.dashboard.context import DashboardContext
from api.dashboard.pages import USER_DEPENDENCY, declared_command, flash, is_htmx, page
from api.key_dependencies import provide_key_management
from application.key_management import KeyManagement, ManagedKey, NewKey, key_ref
from application.registry import utc_now
from domain.access import KEY_CHANGES, Command, KeyFacts, authorize
from domain.actors import UserActor
from domain.errors import DomainError
from domain.ids import format_key_id
from domain.user import User

log = structlog.get_logger()

#: How the key pages reach keys: as `/v1/api-keys` does, last-use failures logged as theirs.
KEY_MANAGEMENT = {"management": provide_key_management("dashboard.last_used_unavailable")}


async def owned_key(
    request: Request[Any, Any, Any],
    management: NamedDependency[KeyManagement],
    actor: NamedDependency[UserActor],
    key_id: FromPath[str],
) -> ManagedKey:
    """The path's key if the user may see it (its organization's), else not found; a change
    the handler declares is asked with the key's facts, before any form is read."""
    record = await asyncio.to_thread(management.key, actor, key_ref(key_id), with_use=False)
    command = declared_command(request)
    if command in KEY_CHANGES:
        authorize(actor, command, key=KeyFacts.of(record.key, record.org))
    return record


class KeyPages(Controller):
    path = "/keys"
    dependencies = {**USER_DEPENDENCY, **KEY_MANAGEMENT, "key": Provide(owned_key)}

    @get("/", opt={"command": Command.READ_KEYS})
    async def list_keys(
        self,
        request: Request[Any, Any, Any],
        dashboard: NamedDependency[DashboardContext],
        management: NamedDependency[KeyManagement],
        user: NamedDependency[User],
        actor: NamedDependency[UserActor],
    ) -> Template:
        """The organization's keys and the Create API Key form."""
        view = await _keys_page(dashboard, management, actor)
        return page(request, "keys.html.j2", view, user=user)

    @post("/", status_code=200, opt={"command": Command.CREATE_KEY})
    async def create_key(
        self,
        request: Request[Any, Any, Any],
        dashboard: NamedDependency[DashboardContext],
        management: NamedDependency[KeyManagement],
        user: NamedDependency[User],
        actor: NamedDependency[UserActor],
    ) -> Template:
        """Create a key and show its secret, this once."""
        form = await request.form()
        try:
            order = forms.key_order(form)
            new = await asyncio.to_thread(management.create, actor, actor.org_id, order)
        except (DomainError, ValueError) as error:
            message = error.message if isinstance(error, DomainError) else "check the form"
            refused = await _keys_page(dashboard, management, actor, form_error=message)
            template = "_create_error.html.j2" if is_htmx(request) else "keys.html.j2"
            return page(request, template, refused, status_code=422, user=user)
        await dashboard.services.mirror.refresh()
        log.info("dashboard.key_created", key_id=format_key_id(new.record.key.id))
        htmx = is_htmx(request)
        view = await _keys_page(
            dashboard, management, actor, reveal=("API key created", new), refresh_table=htmx
        )
        return page(request, "_reveal.html.j2" if htmx else "keys.html.j2", view, user=user)

    @get("/{key_id:str}", opt={"command": Command.READ_KEYS})
    async def key_detail(
        self,
        request: Request[Any, Any, Any],
        dashboard: NamedDependency[DashboardContext],
        management: NamedDependency[KeyManagement],
        user: NamedDependency[User],
        actor: NamedDependency[UserActor],
        key: NamedDependency[ManagedKey],
    ) -> Template:
        """One key: its details, its last use, the actions, and its lifecycle history."""

        def load() -> views.KeyPage:
            record = management.with_last_use(key)
            history = management.history(actor, key.key.id)
            people = dashboard.people(e.get("actor") for e in history)
            return views.key_page(record, history, actor, utc_now(), people)

        return page(request, "key.html.j2", await asyncio.to_thread(load), user=user)

    @post("/{key_id:str}/rename", status_code=200, opt={"command": Command.RENAME_KEY})
    async def rename_key(
        self,
        request: Request[Any, Any, Any],
        dashboard: NamedDependency[DashboardContext],
        management: NamedDependency[KeyManagement],
        actor: NamedDependency[UserActor],
        key: NamedDependency[ManagedKey],
    ) -> Redirect:
        """Give the key a new name."""
        name = forms.key_name(await request.form())
        await asyncio.to_thread(management.rename, actor, key.key.id, name=name)
        await dashboard.services.mirror.refresh()  # the key's card shows its name
        flash(request, f"Renamed the key to “{name}”.")
        return Redirect(f"/dashboard/keys/{format_key_id(key.key.id)}", status_code=303)

    @post("/{key_id:str}/roll", status_code=200, opt={"command": Command.ROLL_KEY})
    async def roll_key(
        self,
        request: Request[Any, Any, Any],
        dashboard: NamedDependency[DashboardContext],
        management: NamedDependency[KeyManagement],
        user: NamedDependency[User],
        actor: NamedDependency[UserActor],
        key: NamedDependency[ManagedKey],
    ) -> Template:
        """Issue the key's successor (shown once); the old key works for the grace period."""
        grace = forms.grace(await request.form())
        new = await asyncio.to_thread(management.roll, actor, key.key.id, grace=grace)
        await dashboard.services.mirror.refresh()
        log.info("dashboard.key_rolled", key_id=format_key_id(key.key.id))
        view = await _keys_page(
            dashboard, management, actor, reveal=("API key rolled", new), rolled=key
        )
        template = "_reveal.html.j2" if is_htmx(request) else "keys.html.j2"
        return page(request, template, view, user=user)

    @get("/{key_id:str}/revoke", opt={"command": Command.REVOKE_KEY})
    async def confirm_revoke(
        self,
        request: Request[Any, Any, Any],
        user: NamedDependency[User],
        key: NamedDependency[ManagedKey],
    ) -> Template:
        """Ask before revoking: it cannot be undone."""
        view = views.RevokePage(key=views.key_view(key, utc_now(), {}))
        return page(request, "revoke.html.j2", view, user=user)

    @post("/{key_id:str}/revoke", status_code=200, opt={"command": Command.REVOKE_KEY})
    async def revoke_key(
        self,
        request: Request[Any, Any, Any],
        dashboard: NamedDependency[DashboardContext],
        management: NamedDependency[KeyManagement],
        actor: NamedDependency[UserActor],
        key: NamedDependency[ManagedKey],
    ) -> Redirect:
        """Revoke the key at once, on every API process."""
        reason = forms.revocation_reason(await request.form())
        await asyncio.to_thread(management.revoke, actor, key.key.id, reason=reason)
        await dashboard.services.mirror.refresh()
        log.info("dashboard.key_revoked", key_id=format_key_id(key.key.id))
        flash(request, f"Revoked “{key.key.name}” ({key.key.hint}). It no longer works.")
        return Redirect("/dashboard/keys", status_code=303)


async def _keys_page(
    dashboard: DashboardContext,
    management: KeyManagement,
    actor: UserActor,
    *,
    reveal: tuple[str, NewKey] | None = None,
    rolled: ManagedKey | None = None,
    refresh_table: bool = False,
    form_error: str | None = None,
) -> views.KeysPage:
    """Settings > API Keys for `actor`: with a secret to `reveal` (and the key it `rolled`)."""

    def load() -> views.KeysPage:
        listing = management.org_keys(actor, actor.org_id)
        people = dashboard.people({r.key.created_by for r in listing.keys})
        now = utc_now()
        shown = None
        if reveal is not None:
            title, new = reveal
            old = None if rolled is None else management.key(actor, rolled.key.id)
            shown = views.reveal_of(title, new, now, people, old)
        return views.keys_page(
            listing,
            actor,
            now,
            people,
            reveal=shown,
            refresh_table=refresh_table,
            form_error=form_error,
        )

    return await asyncio.to_thread(load)
