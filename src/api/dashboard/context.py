"""What the dashboard's pages share for the process's lifetime."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterable
from uuid import UUID

from api.dashboard.security import SignInThrottle
from api.services import Services
from application.stores import open_user_directory
from application.users import UserDirectory
from domain.errors import NotFound

_USER_ACTOR = "user:usr_"


class DashboardContext:
    """What the dashboard's pages share for the process's lifetime."""

    def __init__(self, services: Services, throttle: SignInThrottle) -> None:
        self.services = services
        self.throttle = throttle
        self._users: UserDirectory | None = None
        self._lock = threading.Lock()

    @property
    def users(self) -> UserDirectory:
        """The users' directory, opened on first use (the API may serve without the dashboard)."""
        with self._lock:
            if self._users is None:
                self._users = open_user_directory(self.services.settings)
            return self._users

    def people(self, actors: Iterable[str | None]) -> dict[str, str]:
        """Actor names → what people recognize: a dashboard user's email (others left out)."""
        names: dict[str, str] = {}
        for actor in actors:
            if actor and actor.startswith(_USER_ACTOR):
                try:
                    user = self.users.get_user(UUID(hex=actor.removeprefix(_USER_ACTOR)))
                except (NotFound, ValueError):
                    continue
                names[actor] = user.email
        return names

    def close(self) -> None:
        """Close the users' directory (at shutdown)."""
        with self._lock:
            if self._users is not None:
                with contextlib.suppress(Exception):
                    self._users.close()
                self._users = None
