"""What each dashboard page shows, as typed, frozen structs, and the one place they are built.

Templates read these structs' attributes (`key.name`, `reveal.old.hint`); `pages.page` hands
a page's struct to its template field by field, beside the `Frame` every page shares. A key
looks as the API's key object says (`application.views.api_key_view`): ids, times and statuses
are formatted there once, and read here as typed values. What a role may do is asked of the
access policy (`allows`); nothing here decides it. The audit log's structs are `audit_views`'s.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import msgspec

from api.dashboard.usage_views import KeySpark, KeyUsage
from application.key_lifetimes import key_findings
from application.key_management import ManagedKey, NewKey, OrgKeys
from application.views import api_key_view
from domain.access import Command, KeyFacts, allows
from domain.actors import UserActor
from domain.lifetime_policy import describe
from domain.organization import Organization
from domain.user import User


class View(msgspec.Struct, frozen=True, kw_only=True):
    """A page's context: its fields are the names its template reads."""


class Choice(msgspec.Struct, frozen=True):
    """One option of a select: the value sent, the label shown."""

    value: int
    label: str


#: Grace periods offered when rolling a key.
GRACE_CHOICES = (
    Choice(0, "now"),
    Choice(3600, "1 hour"),
    Choice(86400, "24 hours"),
    Choice(604800, "7 days"),
)
#: Expiry choices when creating a key, in days; 0 = never.
EXPIRY_CHOICES = (
    Choice(0, "never"),
    Choice(1, "1 day"),
    Choice(7, "7 days"),
    Choice(30, "30 days"),
    Choice(90, "90 days"),
    Choice(365, "1 year"),
)


# -- what every page shows ---------------------------------------------------------------------


class UserView(msgspec.Struct, frozen=True):
    """The signed-in user, as the menu shows them."""

    email: str
    role: str


class Flash(msgspec.Struct, frozen=True):
    """A one-time message from the previous action."""

    message: str
    kind: str = "success"


class Frame(View, frozen=True, kw_only=True):
    """What every page shows: the user and menu, the flash message, the CSRF token, the path."""

    user: UserView | None
    may_audit: bool
    flash: Flash | None
    csrf_token: str
    path: str


class ErrorPage(View, frozen=True, kw_only=True):
    """A refusal or failure, as a page (never a trace)."""

    title: str
    message: str
    signed_in: bool


class LoginPage(View, frozen=True, kw_only=True):
    """The sign-in form, with the email typed and what went wrong."""

    email: str = ""
    error: str | None = None


def user_view(user: User | None) -> UserView | None:
    """The user as the menu shows them."""
    return None if user is None else UserView(user.email, user.role.value)


def flash_of(stored: object) -> Flash | None:
    """The flash message kept in the session, if it is one."""
    try:
        return msgspec.convert(stored, Flash) if stored else None
    except msgspec.ValidationError:
        return None


# -- keys --------------------------------------------------------------------------------------


class OrgView(msgspec.Struct, frozen=True):
    """The organization above its keys."""

    name: str
    plan: str
    rate_limit_per_minute: int


class KeyView(msgspec.Struct, frozen=True, kw_only=True):
    """One key as the pages show it; never its secret."""

    id: str
    name: str
    env: str
    type: str
    hint: str
    status: str
    permissions: tuple[str, ...]
    restricted: bool
    created_at: datetime | None
    creator: str
    expires_at: datetime | None
    last_used_at: datetime | None
    last_used_addr: str | None
    revoked_at: datetime | None
    revoker: str
    revocation_reason: str | None
    rolled_from: str | None
    rolled_to: str | None
    # What an active key breaks of its organization's lifetime policy, in words (empty: nothing);
    # None when the organization has no policy, so the pages say nothing about one.
    policy: tuple[str, ...] | None = None
    idle_revocation: str | None = None  # a rolled key's "once unused for 15 minutes"


class Reveal(msgspec.Struct, frozen=True, kw_only=True):
    """A secret shown once (create, roll), and for a roll the old key and its last use."""

    title: str
    secret: str
    key: KeyView
    old: KeyView | None = None


class KeysPage(View, frozen=True, kw_only=True):
    """Settings > API Keys: the keys, newest first, and the Create API Key form."""

    org: OrgView
    keys: tuple[KeyView, ...]
    permissions: tuple[str, ...]
    expiry_choices: tuple[Choice, ...] = EXPIRY_CHOICES
    may_create: bool
    reveal: Reveal | None = None
    refresh_table: bool = False
    form_error: str | None = None
    usage: dict[str, KeySpark] | None = None  # each key's last 24 h, by id (None: not read)
    # Not read although the user may read usage: the column still shows ("unavailable"), so the
    # header and rows refreshed by htmx after the usage model answers again agree.
    usage_unavailable: bool = False


class Change(msgspec.Struct, frozen=True):
    """An attribute an event changed, and its value afterwards."""

    name: str
    to: Any


class HistoryEntry(msgspec.Struct, frozen=True, kw_only=True):
    """One lifecycle event of a key: what, when, by whom, what it changed."""

    type: str
    occurred_at: datetime | None
    actor: str
    changes: tuple[Change, ...]


#: How long a key page follows a rolled key's last use live; reloading it follows it again.
#: (The grace period may last 30 days: an unattended tab must not poll, nor keep its session
#: alive, all that time.)
LIVE_FOR_SECONDS = 30 * 60


class LiveUpdates(msgspec.Struct, frozen=True, kw_only=True):
    """A key page's live last use: followed since `since` (epoch seconds), still while `on`."""

    since: int
    on: bool
    minutes: int = LIVE_FOR_SECONDS // 60


def live_updates(since: str | None, now: float) -> LiveUpdates:
    """The live updates of a page that started them at `since` (as its poll sends it back):
    one missing, unreadable or later than `now` starts now, so none lasts past
    `LIVE_FOR_SECONDS` from now (the fragment sends the clamped time on)."""
    started = int(now)
    if since is not None and since.isascii() and since.isdigit() and len(since) <= 12:
        started = min(int(since), started)
    return LiveUpdates(since=started, on=int(now) - started < LIVE_FOR_SECONDS)


class KeyPage(View, frozen=True, kw_only=True):
    """One key: its details, the actions the user may take, its history (oldest first)."""

    key: KeyView
    history: tuple[HistoryEntry, ...]
    grace_choices: tuple[Choice, ...] = GRACE_CHOICES
    expiry_choices: tuple[Choice, ...] = EXPIRY_CHOICES[1:]  # a successor's; "never" is inherited
    may_roll: bool
    may_rename: bool
    may_revoke: bool
    usage: KeyUsage | None = None  # None: not shown (not allowed, or unavailable)
    usage_unavailable: bool = False
    roll_note: str | None = None  # why the successor needs an expiry of its own (the policy)
    roll_error: str | None = None
    live: LiveUpdates | None = None  # an expiring key's last use, followed from now


class LastUsePage(View, frozen=True, kw_only=True):
    """A rolled key's last use, which its page follows live through the grace period."""

    key: KeyView
    live: LiveUpdates


class RevokePage(View, frozen=True, kw_only=True):
    """The question before a key is revoked."""

    key: KeyView


def actor_label(name: str | None) -> str:
    """`user:usr_…` → `user usr_…`; `key:key_…` → `API key key_…`; others as they are."""
    if not name:
        return "—"
    kind, _, who = name.partition(":")
    return {"user": f"user {who}", "key": f"API key {who}"}.get(kind, name)


def who(name: str | None, people: Mapping[str, str]) -> str:
    """An actor as people recognize it: a user's email, else its label."""
    return (people.get(name) if name else None) or actor_label(name)


def key_view(record: ManagedKey, now: datetime, people: Mapping[str, str]) -> KeyView:
    """A key as the pages show it, from the API's key object at `now`."""
    key = record.key
    shown = api_key_view(key, record.org, now, last_used_at=record.last_used_at)
    idle = key.idle_revocation
    return msgspec.convert(
        {
            **shown,
            "creator": who(key.created_by, people),
            "revoker": who(key.revoked_by, people),
            "last_used_addr": None if record.last_use is None else record.last_use.addr,
            "policy": policy_status(record, now),
            "idle_revocation": None if idle is None else describe(idle[1]),
        },
        KeyView,
    )


def policy_status(record: ManagedKey, now: datetime) -> tuple[str, ...] | None:
    """What the key breaks of its org's lifetime policy, in words; None without a policy."""
    if record.org.lifetime_policy.is_empty:
        return None
    found = key_findings(record.key, record.org, record.last_used_at, now)
    return tuple(finding.text for finding in found)


def org_view(org: Organization) -> OrgView:
    """The organization as the keys page names it."""
    return OrgView(org.name, org.plan.value, org.rate_limit_per_minute)


def keys_page(
    listing: OrgKeys,
    actor: UserActor,
    now: datetime,
    people: Mapping[str, str],
    *,
    reveal: Reveal | None = None,
    refresh_table: bool = False,
    form_error: str | None = None,
) -> KeysPage:
    """Settings > API Keys for `actor`, newest key first."""
    org = listing.org
    return KeysPage(
        org=org_view(org),
        keys=tuple(key_view(r, now, people) for r in reversed(listing.keys)),
        permissions=tuple(sorted(p.value for p in org.permissions)),
        may_create=allows(actor, Command.CREATE_KEY),
        reveal=reveal,
        refresh_table=refresh_table,
        form_error=form_error,
    )


def reveal_of(
    title: str,
    new: NewKey,
    now: datetime,
    people: Mapping[str, str],
    old: ManagedKey | None = None,
) -> Reveal:
    """The one-time secret of `new`; for a roll, the old key with its last use."""
    return Reveal(
        title=title,
        secret=new.secret,
        key=key_view(new.record, now, people),
        old=None if old is None else key_view(old, now, people),
    )


def history_entry(event: Mapping[str, Any], people: Mapping[str, str]) -> HistoryEntry:
    """A lifecycle event (its public shape, `application.history`) as the key's page lists it."""
    changes = event.get("changes") or {}
    return HistoryEntry(
        type=event["type"],
        occurred_at=msgspec.convert(event.get("occurred_at"), datetime | None),
        actor=who(event.get("actor"), people),
        changes=tuple(Change(name, change.get("to")) for name, change in changes.items()),
    )


def key_page(
    record: ManagedKey,
    history: list[dict[str, Any]],
    actor: UserActor,
    now: datetime,
    people: Mapping[str, str],
) -> KeyPage:
    """One key's page for `actor`: details, the actions offered, its history."""
    facts = KeyFacts.of(record.key, record.org)
    key = record.key
    inherited = record.org.lifetime_policy.violation(key.env, key.expires_at, now)
    return KeyPage(
        key=key_view(record, now, people),
        history=tuple(history_entry(e, people) for e in history),
        may_roll=allows(actor, Command.ROLL_KEY, key=facts),
        may_rename=allows(actor, Command.RENAME_KEY, key=facts),
        may_revoke=allows(actor, Command.REVOKE_KEY, key=facts),
        roll_note=None if inherited is None else inherited.message,
    )
