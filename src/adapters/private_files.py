"""Owner-only modes for the data dir: 0700 for it and its directories, 0600 for its files.

The data dir holds the pepper, password hashes (users.sqlite3), every key's hash and the
audit trail, so nobody but the service's own user may read any of it. Modes are set where
each file or directory is made (not by a process umask: that would change the modes of
whatever else the process, its libraries or a program embedding it create) and tightened
on open, so a data dir made by an older version, or copied in, is fixed at the next start.
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

import structlog

log = structlog.get_logger()

PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600
#: A child process (the embedded NATS server) creates its files with this umask.
PRIVATE_UMASK = 0o077
#: What SQLite keeps beside a database; it creates them with the database's own mode.
SQLITE_SIDECARS = ("-wal", "-shm", "-journal")
#: What this service keeps in a data dir: only these are tightened there, so a data dir
#: pointed at a directory with other contents (a home directory, say) keeps their modes.
OWN_ENTRIES = ("pepper", "bootstrap.json", "tls", "nats", "spool", "schema.lock")
OWN_SUFFIXES = (".sqlite3", *(f".sqlite3{sidecar}" for sidecar in SQLITE_SIDECARS))


def private_dir(path: Path) -> Path:
    """`path` made if missing and set to 0700; missing parents are made 0700 as well."""
    if not path.parent.is_dir():
        private_dir(path.parent)
    with contextlib.suppress(FileExistsError):
        path.mkdir(mode=PRIVATE_DIR)
    _chmod(path, PRIVATE_DIR)
    return path


def private_file(path: Path) -> Path:
    """`path` made empty if missing, and set to 0600; its directory is made private."""
    private_dir(path.parent)
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE))
    _chmod(path, PRIVATE_FILE)
    return path


def private_sqlite(path: Path) -> Path:
    """A SQLite database's path, the file and its sidecars 0600 before SQLite opens it.

    SQLite would create the file 0644; an empty file is a valid empty database, and the
    -wal, -shm and -journal files SQLite adds later take the database's mode.
    """
    private_file(path)
    for sidecar in SQLITE_SIDECARS:
        _chmod(Path(f"{path}{sidecar}"), PRIVATE_FILE)
    return path


def write_private(path: Path, data: bytes) -> None:
    """Replace `path`'s content with `data`, the file 0600 before anything is written."""
    private_dir(path.parent)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_FILE)
    with os.fdopen(fd, "wb") as f:
        os.fchmod(f.fileno(), PRIVATE_FILE)
        f.write(data)


def tighten_data_dir(data_dir: Path) -> None:
    """Set the data dir to 0700 and what this service keeps in it to 0700/0600, recursively."""
    if not data_dir.is_dir():
        return
    _chmod(data_dir, PRIVATE_DIR)
    for entry in data_dir.iterdir():
        if entry.name in OWN_ENTRIES or entry.name.endswith(OWN_SUFFIXES):
            tighten_tree(entry)


def tighten_tree(path: Path) -> None:
    """`path` and everything beneath it: directories 0700, files 0600 (links left alone)."""
    if path.is_symlink():
        return
    if not path.is_dir():
        _chmod(path, PRIVATE_FILE)
        return
    _chmod(path, PRIVATE_DIR)
    for root, dirs, files in os.walk(path):
        for name in dirs:
            if not os.path.islink(os.path.join(root, name)):
                _chmod(Path(root, name), PRIVATE_DIR)
        for name in files:
            if not os.path.islink(os.path.join(root, name)):
                _chmod(Path(root, name), PRIVATE_FILE)


def _chmod(path: Path, mode: int) -> None:
    try:
        if stat.S_IMODE(path.lstat().st_mode) != mode:
            path.chmod(mode)
    except FileNotFoundError:
        pass  # gone meanwhile (a SQLite sidecar removed, a spool file delivered)
    except OSError as error:
        # Another user's file or a read-only mount: refusing to start over it would turn a
        # hardening into an outage; the operator is told instead.
        log.warning("data_dir.mode_not_set", path=str(path), mode=oct(mode), error=str(error))
