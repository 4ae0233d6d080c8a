"""Settings > Key policy: the organization's key-lifetime policy, and changing it.

Every dashboard role reads it; owners and admins change it (`Command.SET_KEY_POLICY`, asked of
the access policy by `pages.acting_user` before the form is read, and again by `KeyLifetimes`).
The form reader and what the page shows are `policy_forms`'s; the rules are the domain's.
"""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
import structlog
from litestar import Controller, Request, Response, get, post
from litestar.di import NamedDependency
from litestar.response import Redirect, Template

from api.dashboard import policy_forms as forms
from api.dashboard.context import DashboardContext
from api.dashboard.pages import USER_DEPENDENCY, flash, page
from application.key_lifetimes import KeyLifetimes
from domain.access import Command, allows
from domain.actors import UserActor
from domain.errors import ValidationError
from domain.user import User

log = structlog.get_logger()

PATH = "/dashboard/settings/key-policy"


class PolicyPages(Controller):
    path = "/settings/key-policy"
    dependencies = USER_DEPENDENCY

    @get("/", opt={"command": Command.READ_KEY_POLICY})
    async def key_policy(
        self,
        request: Request[Any, Any, Any],
        dashboard: NamedDependency[DashboardContext],
        user: NamedDependency[User],
        actor: NamedDependency[UserActor],
    ) -> Template:
        """The policy in force and, for those who may change it, its form."""
        view = await asyncio.to_thread(_policy_page, dashboard, actor)
        return page(request, "key_policy.html.j2", view, user=user)

    @post("/", status_code=200, opt={"command": Command.SET_KEY_POLICY})
    async def set_key_policy(
        self,
        request: Request[Any, Any, Any],
        dashboard: NamedDependency[DashboardContext],
        user: NamedDependency[User],
        actor: NamedDependency[UserActor],
    ) -> Response[Any]:
        """Replace the policy (keys already issued keep their expiry); a refusal is shown in
        the form, as it was typed."""
        asked = forms.policy_form(await request.form())
        lifetimes = KeyLifetimes(dashboard.services.registry)

        def save() -> None:
            lifetimes.set_policy(actor, actor.org_id, forms.policy_of(asked))

        try:
            await asyncio.to_thread(save)
        except ValidationError as error:  # a refusal of the access policy is the 403 page's
            refused = msgspec.structs.replace(asked, error=error.message)
            view = await asyncio.to_thread(_policy_page, dashboard, actor, form=refused)
            return page(request, "key_policy.html.j2", view, status_code=422, user=user)
        log.info("dashboard.key_policy_set")
        flash(request, "Saved the key policy. Keys already issued keep their expiry.")
        return Redirect(PATH, status_code=303)


def _policy_page(
    dashboard: DashboardContext, actor: UserActor, *, form: forms.PolicyForm | None = None
) -> forms.KeyPolicyPage:
    """Settings > Key policy for `actor`, with the form as typed when it was refused."""
    policy = KeyLifetimes(dashboard.services.registry).policy_for(actor, actor.org_id)
    may_set = allows(actor, Command.SET_KEY_POLICY, org_id=actor.org_id)
    return forms.policy_page(policy, may_set=may_set, form=form)
