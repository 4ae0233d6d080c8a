"""Settings > API Keys: the keys, Create API Key, and one key's page (roll, rename, revoke),
whose last use it follows live while a roll's grace period lasts (`/last-use`, polled by htmx
for half an hour at most, without renewing the session).

Handlers read the form (`forms`), run one `KeyManagement` operation as the user's actor, and
render what `views` builds. Each declares its command (`opt`), asked of the access policy
before any form is read: by `pages.acting_user`, or with the key's facts by `owned_key`.
"""

from __future__ import annotations

import asyncio
import time
from typing import Annotated, Any

import msgspec
import structlog
from litestar import Controller, Request, Response, get, post
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath, FromQuery, QueryParameter
from litestar.response import Redirect, Template

from api.dashboard import forms, usage_views, views
from api.dashboard.context import DashboardContext
from api.dashboard.pages import USER_DEPENDENCY, declared_command, flash, is_htmx, page
from api.dashboard.security import LEAVES_SESSION_IDLE
from api.errors import STORE_ERRORS
from api.key_dependencies import provide_key_management
from application.key_management import KeyManagement, ManagedKey, NewKey, key_ref
from application.registry import utc_now
from domain.access import KEY_CHANGES, Command, KeyFacts, allows, authorize
from domain.actors import UserActor
from domain.errors import DomainError, NotFound
from domain.ids import format_key_id
from domain.user import User
from projections.usage import Granularity
from projections.usage_report import dense

log = structlog.get_logger()

#: How the key pages reach keys: as `/v1/api-keys` does, last-use failures logged as theirs.
KEY_MANAGEMENT = {"management": provide_key_management("dashboard.last_used_unavailable")}
#: A key page's usage range (`24h`, `7d`, `30d`), as its links name it.
UsageRangeQuery = Annotated[str | None, QueryParameter(name="range", required=False)]


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
        range_: UsageRangeQuery = None,
        by: FromQuery[str | None] = None,
    ) -> Template:
        """One key: its details, its last use, its usage over the range asked (`range`, `by`),
        the actions, and its lifecycle history."""
        usage_range = usage_views.usage_choice(range_, by)
        view = await asyncio.to_thread(_key_page, dashboard, management, actor, key, usage_range)
        return page(request, "key.html.j2", view, user=user)

    @get(
        "/{key_id:str}/last-use",
        opt={"command": Command.READ_KEYS, LEAVES_SESSION_IDLE: True},
    )
    async def key_last_use(
        self,
        request: Request[Any, Any, Any],
        management: NamedDependency[KeyManagement],
        user: NamedDependency[User],
        key: NamedDependency[ManagedKey],
        since: FromQuery[str | None] = None,
    ) -> Template:
        """The key's last use and grace, which its page polls while the key is expiring, for
        `views.LIVE_FOR_SECONDS` from `since` (when the page started, as the poll sends it);
        the fragment stops asking once the key is no longer expiring, or the time is up. A
        poll does not renew the session: an unattended page still times out."""

        def load() -> views.LastUsePage:
            record = management.with_last_use(key)
            live = views.live_updates(since, time.time())
            return views.LastUsePage(key=views.key_view(record, utc_now(), {}), live=live)

        view = await asyncio.to_thread(load)
        return page(request, "_key_last_use.html.j2", view, user=user)

    @get("/{key_id:str}/usage.csv", opt={"command": Command.READ_USAGE})
    async def key_usage_csv(
        self,
        dashboard: NamedDependency[DashboardContext],
        actor: NamedDependency[UserActor],
        key: NamedDependency[ManagedKey],
        range_: UsageRangeQuery = None,
        by: FromQuery[str | None] = None,
    ) -> Response[str]:
        """The key's usage over the range asked, every bucket a line (the chart's numbers)."""
        choice, granularity = usage_views.usage_choice(range_, by)
        window = usage_views.usage_window(choice, granularity, time.time())
        key_id = format_key_id(key.key.id)

        def load() -> str:
            rows = dashboard.services.usage.rows(actor, key.org.id, window, key_id=key.key.id)
            return usage_views.usage_csv(dense(rows, window).get(key_id), window)

        name = f"usage-{key_id}-{choice.value}-{granularity.label}.csv"
        return Response(
            await asyncio.to_thread(load),
            media_type="text/csv; charset=utf-8",
            headers={"content-disposition": f'attachment; filename="{name}"'},
        )

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
        """Issue the key's successor (shown once); the old key works for the grace period, or
        until unused for the minutes asked; a refusal (the key policy's too) is shown with it."""
        form = await request.form()

        def roll() -> NewKey:
            return management.roll(
                actor,
                key.key.id,
                grace=forms.grace(form),
                expires_at=forms.successor_expiry(form),
                revoke_when_idle=forms.revoke_when_idle(form),
            )

        try:
            new = await asyncio.to_thread(roll)
        except DomainError as error:
            if isinstance(error, NotFound):
                raise
            if is_htmx(request):  # shown above the form, which keeps what was chosen
                message = f"Not rolled: {error.message}"
                refusal = views.ErrorPage(title="Not rolled", message=message, signed_in=True)
                return page(request, "_error.html.j2", refusal, status_code=422, user=user)
            usage_range = usage_views.usage_choice(None, None)
            refused = await asyncio.to_thread(
                _key_page, dashboard, management, actor, key, usage_range, roll_error=error.message
            )
            return page(request, "key.html.j2", refused, status_code=422, user=user)
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


def _key_page(
    dashboard: DashboardContext,
    management: KeyManagement,
    actor: UserActor,
    key: ManagedKey,
    usage_range: tuple[usage_views.UsageRange, Granularity],
    *,
    roll_error: str | None = None,
) -> views.KeyPage:
    """One key's page for `actor`, with its last use read now and its usage over the range."""
    choice, granularity = usage_range
    record = management.with_last_use(key)
    history = management.history(actor, key.key.id)
    people = dashboard.people(e.get("actor") for e in history)
    usage, unavailable = _key_usage(dashboard, actor, key, choice, granularity)
    shown = views.key_page(record, history, actor, utc_now(), people)
    return msgspec.structs.replace(
        shown,
        usage=usage,
        usage_unavailable=unavailable,
        roll_error=roll_error,
        live=views.live_updates(None, time.time()),
    )


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
        view = views.keys_page(
            listing,
            actor,
            now,
            people,
            reveal=shown,
            refresh_table=refresh_table,
            form_error=form_error,
        )
        usage, unavailable = _org_sparks(dashboard, actor)
        return msgspec.structs.replace(view, usage=usage, usage_unavailable=unavailable)

    return await asyncio.to_thread(load)


def _org_sparks(
    dashboard: DashboardContext, actor: UserActor
) -> tuple[dict[str, usage_views.KeySpark] | None, bool]:
    """Every key's last 24 hours, read at once; none, and logged, while the usage model cannot
    answer (the keys still list). Also: whether it could not."""
    if not allows(actor, Command.READ_USAGE):
        return None, False
    window = usage_views.usage_window(usage_views.SPARK_RANGE, Granularity.HOUR, time.time())
    try:
        rows = dashboard.services.usage.rows(actor, actor.org_id, window)
        return usage_views.key_sparks(rows, window), False
    except STORE_ERRORS as error:  # the usage model is unreachable; the keys still list
        log.warning("dashboard.usage_unavailable", error=type(error).__name__)
        return None, True


def _key_usage(
    dashboard: DashboardContext,
    actor: UserActor,
    record: ManagedKey,
    choice: usage_views.UsageRange,
    granularity: Granularity,
) -> tuple[usage_views.KeyUsage | None, bool]:
    """The key's usage over the range chosen; none, and logged, while the usage model cannot
    answer (the rest of the page still shows). Also: whether it could not."""
    if not allows(actor, Command.READ_USAGE, key=KeyFacts.of(record.key, record.org)):
        return None, False
    window = usage_views.usage_window(choice, granularity, time.time())
    try:
        report = dashboard.services.usage.report(
            actor, record.org.id, window, key_id=record.key.id, limit=len(window.buckets)
        )
    except STORE_ERRORS as error:  # the usage model is unreachable; the page still shows
        log.warning("dashboard.usage_unavailable", error=type(error).__name__)
        return None, True
    key_id = format_key_id(record.key.id)
    return usage_views.key_usage(key_id, choice, granularity, report), False
