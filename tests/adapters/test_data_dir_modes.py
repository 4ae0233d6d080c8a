"""The data dir is its owner's alone: 0700 directories and 0600 files, new or already there.

It holds the pepper, the users' password hashes, every key's hash and the audit trail.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from adapters.embedded_nats import EmbeddedNats
from adapters.settings import Settings
from adapters.tls import ensure_self_signed
from cli.dev import create_read_models, first_start


@pytest.fixture(autouse=True)
def usual_umask() -> Iterator[None]:
    """The common default (files 0644), so a pass does not come from a strict test runner."""
    previous = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(previous)


def start_like_dev(data_dir: Path) -> Settings:
    """What `icodrip dev` creates in a data dir before it serves: every store, TLS, NATS."""
    settings = Settings.from_env({}, data_dir=data_dir)
    ensure_self_signed(data_dir)
    nats = EmbeddedNats(data_dir)
    nats.start()
    try:
        first_start(settings)
        create_read_models(settings)
    finally:
        nats.stop()
    return settings


def modes(data_dir: Path) -> dict[str, str]:
    """Every path under `data_dir` (and itself, as "."), with its permission bits in octal."""
    found = {".": oct(stat.S_IMODE(data_dir.stat().st_mode))}
    for path in data_dir.rglob("*"):
        found[str(path.relative_to(data_dir))] = oct(stat.S_IMODE(path.lstat().st_mode))
    return found


def not_owner_only(data_dir: Path) -> dict[str, str]:
    return {
        name: mode
        for name, mode in modes(data_dir).items()
        if mode != (oct(0o700) if (data_dir / name).is_dir() else oct(0o600))
    }


def test_a_new_data_dir_and_every_file_its_stores_create_are_owner_only(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    start_like_dev(data_dir)
    names = set(modes(data_dir))
    expected = {"pepper", "events.sqlite3", "users.sqlite3", "tls/key.pem", "nats/jetstream"}
    assert expected <= names, sorted(names)
    assert any(name.startswith("keylookup") for name in names), sorted(names)
    assert not_owner_only(data_dir) == {}


def test_a_data_dir_left_readable_by_others_is_tightened_at_the_next_start(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "data"
    start_like_dev(data_dir)
    for path in [data_dir, *data_dir.rglob("*")]:  # as an older version left it
        path.chmod(0o755 if path.is_dir() else 0o644)
    start_like_dev(data_dir)
    assert not_owner_only(data_dir) == {}


def test_files_of_others_in_the_data_dir_keep_their_modes_behind_its_0700(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "home"
    data_dir.mkdir()
    notes = data_dir / "notes.txt"
    notes.write_text("not ours")
    notes.chmod(0o644)
    Settings.from_env({}, data_dir=data_dir)
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE(notes.stat().st_mode) == 0o644
