"""Actors for tests: a dashboard user of an organization, an API key acting on its own."""

from __future__ import annotations

from uuid import uuid4

from domain.actors import KeyActor, UserActor
from domain.api_key import ApiKey
from domain.organization import Organization
from domain.roles import Role


def user_of(org: Organization, role: Role = Role.ADMIN) -> UserActor:
    """A (new) user of `org` with `role`, under the org's current plan."""
    return UserActor(uuid4(), org.id, role, org.permissions)


def key_actor(key: ApiKey, org: Organization) -> KeyActor:
    """`key` acting, with its effective permissions in `org`."""
    return KeyActor(key.id, key.org_id, key.env, key.type, key.effective_permissions(org))
