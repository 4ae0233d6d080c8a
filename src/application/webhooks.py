"""Managing an organization's webhook endpoints: what `/v1/webhooks`, Settings > Webhooks and
`icodrip webhooks` all do.

Every command asks the access policy (`domain.access`) with the endpoint and organization read
in the same attempt, like the key commands of `KeyRegistry`. A URL is judged by `check_url`,
given by the caller: the pure rules of `domain.webhook_urls`, plus, where the caller can,
resolving the host (`adapters.webhook_urls`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from uuid import UUID

from application.registry import KeyRegistry
from domain.access import Command, WebhookFacts, WebhookGrant, authorize, sees
from domain.actors import SYSTEM, Actor, KeyActor
from domain.errors import NotFound, ValidationError
from domain.ids import parse_webhook_id
from domain.key_format import Environment
from domain.organization import Organization
from domain.webhook import (
    MAX_ENDPOINTS_PER_ORG,
    WebhookEndpoint,
    parse_event_types,
)
from domain.webhook_urls import check_url as check_url_offline

#: Judges a URL: returns it normalized, or raises WebhookUrlNotAllowed.
UrlCheck = Callable[[str], str]


def webhook_ref(text: str) -> UUID:
    """The endpoint an id names; a malformed id names none (NotFound, like another org's)."""
    try:
        return parse_webhook_id(text)
    except ValidationError:
        raise NotFound("no such webhook endpoint") from None


@dataclass(frozen=True)
class EndpointWithSecret:
    """An endpoint just added, or whose secret was just rotated: show the secret once."""

    endpoint: WebhookEndpoint
    secret: str = field(repr=False)  # never in a repr, a log or an error


def facts(endpoint: WebhookEndpoint) -> WebhookFacts:
    """What the access policy knows of an endpoint."""
    return WebhookFacts(endpoint.id, endpoint.org_id, endpoint.env)


class Webhooks:
    """An organization's webhook endpoints, for one actor per call."""

    def __init__(
        self,
        registry: KeyRegistry,
        *,
        pepper: bytes,
        check_url: UrlCheck | None = None,
    ) -> None:
        self.registry = registry
        self._pepper = pepper
        self._check_url = check_url or (lambda url: check_url_offline(url, allow_private=False))

    # -- reads ---------------------------------------------------------------------------

    def endpoints(self, actor: Actor, org_id: UUID) -> list[WebhookEndpoint]:
        """The org's endpoints `actor` may see, oldest first (deleted ones are not live)."""
        authorize(actor, Command.READ_WEBHOOKS, org_id=org_id)
        org = self.registry.get_organization(org_id)
        return [e for e in self.live_endpoints(org) if sees(actor, facts(e))]

    def endpoint(self, actor: Actor, webhook_id: UUID) -> WebhookEndpoint:
        """One endpoint `actor` may see; NotFound otherwise (deleted ones included)."""
        endpoint = self.get(webhook_id)
        authorize(actor, Command.READ_WEBHOOKS, webhook=facts(endpoint))
        return endpoint

    def get(self, webhook_id: UUID) -> WebhookEndpoint:
        """The endpoint, whoever asks (the system's own use); NotFound when deleted."""
        endpoint = self.registry.get_webhook(webhook_id)
        if endpoint.deleted:
            raise NotFound("no such webhook endpoint")
        return endpoint

    def live_endpoints(self, org: Organization) -> list[WebhookEndpoint]:
        """The org's endpoints not deleted, oldest first (the system's own use)."""
        found = []
        for webhook_id in org.live_webhook_ids:
            endpoint: object = self.registry.repository.get(webhook_id)
            if isinstance(endpoint, WebhookEndpoint):
                found.append(endpoint)
        return found

    # -- changes -------------------------------------------------------------------------

    def add(
        self,
        actor: Actor,
        org_id: UUID,
        *,
        url: str,
        events: Sequence[str],
        description: str = "",
        env: Environment | None = None,
    ) -> EndpointWithSecret:
        """A new endpoint of `org_id`, with its secret (shown once).

        Its environment is the one asked, else the acting key's, else live.
        """
        chosen = parse_event_types(tuple(events))
        if env is None:
            env = actor.env if isinstance(actor, KeyActor) else Environment.LIVE
        env = Environment(env)

        def attempt() -> EndpointWithSecret:
            org = self.registry.get_organization(org_id)
            grant = WebhookGrant(org_id, env, frozenset(chosen))
            authorize(self.registry.acting(actor, org), Command.MANAGE_WEBHOOKS, grant=grant)
            if len(org.live_webhook_ids) >= MAX_ENDPOINTS_PER_ORG:
                raise ValidationError(
                    f"an organization has at most {MAX_ENDPOINTS_PER_ORG} webhook endpoints: "
                    "delete one first"
                )
            endpoint = WebhookEndpoint.add(
                org_id,
                env=env,
                url=self._check_url(url),
                events=chosen,
                description=description,
                actor=actor,
            )
            org.add_webhook(endpoint.id, actor)
            self.registry.save(org, endpoint)
            return EndpointWithSecret(endpoint, self.secret(endpoint))

        return self.registry.retrying(attempt)

    def change(
        self,
        actor: Actor,
        webhook_id: UUID,
        *,
        url: str | None = None,
        events: Sequence[str] | None = None,
        description: str | None = None,
        enabled: bool | None = None,
    ) -> WebhookEndpoint:
        """Change what is given, all judged and saved together, or nothing."""
        chosen = None if events is None else parse_event_types(tuple(events))
        checked = None if url is None else self._check_url(url)

        def attempt() -> WebhookEndpoint:
            changes_where = url is not None or chosen is not None or enabled is True
            endpoint = self._manageable(actor, webhook_id, chosen, changes_where=changes_where)
            endpoint.change(actor, url=checked, events=chosen, description=description)
            if enabled is True:
                endpoint.enable(actor)
            elif enabled is False:
                endpoint.disable(actor, f"disabled by {actor.name}")
            self.registry.save(endpoint)
            return endpoint

        return self.registry.retrying(attempt)

    def delete(self, actor: Actor, webhook_id: UUID) -> WebhookEndpoint:
        """Delete the endpoint: nothing more is sent to it (its history stays)."""

        def attempt() -> WebhookEndpoint:
            endpoint = self._manageable(actor, webhook_id)
            org = self.registry.get_organization(endpoint.org_id)
            endpoint.delete(actor)
            # Off the org's live list, so that the org's reads (and every fan-out) skip it.
            org.remove_webhook(endpoint.id, actor)
            self.registry.save(org, endpoint)
            return endpoint

        return self.registry.retrying(attempt)

    def rotate_secret(self, actor: Actor, webhook_id: UUID) -> EndpointWithSecret:
        """A new secret (shown once); the old one keeps signing beside it for 24 hours."""
        endpoint = self._update(
            actor, webhook_id, lambda e: e.rotate_secret(actor, self.registry.clock())
        )
        return EndpointWithSecret(endpoint, self.secret(endpoint))

    def request_test(self, actor: Actor, webhook_id: UUID) -> WebhookEndpoint:
        """Ask the webhook worker to send a `webhook.test` event to this endpoint."""
        return self._update(actor, webhook_id, lambda e: e.request_test(actor))

    def request_retry(self, actor: Actor, webhook_id: UUID, delivery_id: str) -> WebhookEndpoint:
        """Ask the webhook worker to send one of this endpoint's deliveries again now."""
        return self._update(actor, webhook_id, lambda e: e.request_retry(delivery_id, actor))

    def disable_failing(self, webhook_id: UUID, reason: str) -> bool:
        """The system disables an endpoint that kept failing; True when it was enabled."""

        def attempt() -> bool:
            endpoint = self.get(webhook_id)
            changed = endpoint.disable(SYSTEM, reason)
            if changed:
                self.registry.save(endpoint)
            return changed

        return self.registry.retrying(attempt)

    # -- secrets -------------------------------------------------------------------------

    def secret(self, endpoint: WebhookEndpoint) -> str:
        """The endpoint's current signing secret."""
        return endpoint.secrets(self._pepper, self.registry.clock())[0]

    def signing_secrets(self, endpoint: WebhookEndpoint) -> list[str]:
        """The secrets that sign a delivery to it now (two during a rotation's overlap)."""
        return endpoint.secrets(self._pepper, self.registry.clock())

    # -- plumbing ------------------------------------------------------------------------

    def _manageable(
        self,
        actor: Actor,
        webhook_id: UUID,
        events: Sequence[str] | None = None,
        *,
        changes_where: bool = False,
    ) -> WebhookEndpoint:
        """The endpoint, if `actor` may manage it; `changes_where`: and change what it receives
        or where it sends (the policy then judges what the endpoint will be)."""
        endpoint = self.get(webhook_id)
        org = self.registry.get_organization(endpoint.org_id)
        after = frozenset(endpoint.events if events is None else events)
        grant = WebhookGrant(endpoint.org_id, endpoint.env, after) if changes_where else None
        authorize(
            self.registry.acting(actor, org),
            Command.MANAGE_WEBHOOKS,
            webhook=facts(endpoint),
            grant=grant,
        )
        return endpoint

    def _update(
        self, actor: Actor, webhook_id: UUID, change: Callable[[WebhookEndpoint], object]
    ) -> WebhookEndpoint:
        def attempt() -> WebhookEndpoint:
            endpoint = self._manageable(actor, webhook_id)
            change(endpoint)
            self.registry.save(endpoint)
            return endpoint

        return self.registry.retrying(attempt)
