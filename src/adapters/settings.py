"""Settings from `ICODRIP_*` environment variables, with the embedded default in `./.icodrip/`."""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from adapters.private_files import PRIVATE_FILE, private_dir, tighten_data_dir

DEFAULT_DATA_DIR = Path(".icodrip")


class SettingsError(Exception):
    """The environment does not describe a usable deployment."""


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    database_url: str | None = None
    nats_url: str | None = None
    redis_url: str | None = None
    key_pepper: bytes = field(default=b"", repr=False)
    keys_stream: str = "ICODRIP_KEYS"
    keys_subject: str = "icodrip.keys"
    stream_replicas: int = 1
    #: Shared secret authenticating leak reports (`POST /v1/leaks`); empty = endpoint disabled.
    leak_signing_key: bytes = field(default=b"", repr=False)
    #: GitHub's secret-scanning public keys (`POST /v1/leaks/github` checks reports with them).
    github_scanning_keys_url: str = "https://api.github.com/meta/public_keys/secret_scanning"
    #: Workers on PostgreSQL wait for the store's NOTIFY (ADR 0018); `ICODRIP_STORE_WAKEUP=0`
    #: makes them poll instead (behind a PgBouncer in transaction mode, which drops LISTEN).
    store_wakeup: bool = True
    #: Webhooks to `http://` and private addresses (development only; `icodrip dev` sets it).
    webhooks_allow_private: bool = False

    @property
    def is_embedded(self) -> bool:
        """True on the one-machine default: SQLite in the data dir."""
        return self.database_url is None

    @classmethod
    def from_env(
        cls, env: Mapping[str, str] | None = None, data_dir: Path | None = None
    ) -> Settings:
        """Read `ICODRIP_*`; on the embedded default, create the data dir and its pepper.

        An existing data dir is made owner-only first (see `adapters.private_files`).
        """
        env = os.environ if env is None else env
        data_dir = data_dir or Path(env.get("ICODRIP_DATA_DIR") or DEFAULT_DATA_DIR)
        tighten_data_dir(data_dir)
        database_url = env.get("ICODRIP_DATABASE_URL") or None
        pepper_text = env.get("ICODRIP_KEY_PEPPER") or ""
        if pepper_text:
            pepper = pepper_text.encode()
        elif database_url is None:
            pepper = _embedded_pepper(data_dir)
        else:
            raise SettingsError(
                "ICODRIP_KEY_PEPPER must be set when ICODRIP_DATABASE_URL is "
                "(every API process must hash keys with the same pepper)"
            )
        if len(pepper) < 16:
            raise SettingsError("ICODRIP_KEY_PEPPER must be at least 16 characters")
        return cls(
            data_dir=data_dir,
            database_url=database_url,
            nats_url=env.get("ICODRIP_NATS_URL") or None,
            redis_url=env.get("ICODRIP_REDIS_URL") or None,
            key_pepper=pepper,
            keys_stream=env.get("ICODRIP_KEYS_STREAM") or "ICODRIP_KEYS",
            keys_subject=env.get("ICODRIP_KEYS_SUBJECT") or "icodrip.keys",
            stream_replicas=int(env.get("ICODRIP_STREAM_REPLICAS") or 1),
            leak_signing_key=(env.get("ICODRIP_LEAK_SIGNING_KEY") or "").encode(),
            github_scanning_keys_url=env.get("ICODRIP_GITHUB_SCANNING_KEYS_URL")
            or cls.github_scanning_keys_url,
            store_wakeup=(env.get("ICODRIP_STORE_WAKEUP") or "1").strip().lower()
            not in ("0", "false", "no", "off"),
            webhooks_allow_private=(env.get("ICODRIP_WEBHOOKS_ALLOW_PRIVATE") or "0")
            .strip()
            .lower()
            in ("1", "true", "yes", "on"),
        )


def _embedded_pepper(data_dir: Path) -> bytes:
    """The data dir's pepper, generated (owner-readable only) on first use.

    Written whole under a name of its own, then linked into place: of processes started at
    the same moment on a new data dir, one makes it and every other reads that one, complete
    (creating it in place let a second process fail on `FileExistsError` or read it empty).
    """
    path = data_dir / "pepper"
    if not path.exists():
        private_dir(data_dir)
        draft = data_dir / f".pepper.{os.getpid()}.{secrets.token_hex(4)}"
        fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE)
        pepper = secrets.token_urlsafe(32)
        try:
            with os.fdopen(fd, "w") as f:
                f.write(pepper)
            try:
                os.link(draft, path)
            except FileExistsError:
                pass  # another process's came first
            except OSError:  # a filesystem without hard links: made in place, as before
                with contextlib.suppress(FileExistsError):
                    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE)
                    with os.fdopen(fd, "w") as f:
                        f.write(pepper)
        finally:
            draft.unlink(missing_ok=True)
    return path.read_text().strip().encode()
