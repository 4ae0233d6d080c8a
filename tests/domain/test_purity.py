"""The domain is pure: only the standard library's pure modules and `eventsourcing.domain`.

No sockets, processes, files, databases or frameworks: every module of `src/domain` is read
with `ast`, so a forbidden import is caught even where it would never run.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

DOMAIN = Path(__file__).resolve().parents[2] / "src" / "domain"
MODULES = sorted(DOMAIN.glob("*.py"))

#: Third-party imports the domain may use, exactly.
ALLOWED_THIRD_PARTY = {"eventsourcing.domain"}

#: Standard-library modules that do I/O, start things or load code: not for the domain.
FORBIDDEN_STDLIB = {
    "asyncio",
    "ctypes",
    "dbm",
    "fileinput",
    "ftplib",
    "glob",
    "http",
    "imaplib",
    "importlib",
    "io",
    "logging",
    "mmap",
    "multiprocessing",
    "os",
    "pathlib",
    "pickle",
    "poplib",
    "select",
    "selectors",
    "shelve",
    "shutil",
    "signal",
    "smtplib",
    "socket",
    "socketserver",
    "sqlite3",
    "ssl",
    "subprocess",
    "sys",
    "tempfile",
    "threading",
    "urllib.request",
    "urllib.error",
    "webbrowser",
    "xmlrpc",
}

#: Builtins that read, write or load code.
FORBIDDEN_CALLS = {"open", "print", "input", "exec", "eval", "compile", "__import__", "breakpoint"}


def imported_modules(source: str) -> list[str]:
    """Every absolute name a source imports, dotted: `from a import b` gives `a.b`."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.extend(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def impurities(source: str) -> list[str]:
    """What makes a domain module impure, or nothing."""
    problems = []
    imported = imported_modules(source)
    for name in imported:
        top = name.partition(".")[0]
        if top in ("__future__", "domain"):
            continue
        if top in sys.stdlib_module_names:
            if any(name == f or name.startswith(f + ".") for f in FORBIDDEN_STDLIB):
                problems.append(f"imports {name} (does I/O)")
        elif not _allowed_third_party(name):
            problems.append(f"imports {name} (not stdlib nor eventsourcing.domain)")
    for node in ast.walk(ast.parse(source)):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in FORBIDDEN_CALLS
        ):
            problems.append(f"calls {node.func.id}()")
    return problems


def _allowed_third_party(name: str) -> bool:
    return any(name == a or name.startswith(a + ".") for a in ALLOWED_THIRD_PARTY)


def test_the_domain_package_has_modules_to_check() -> None:
    names = {m.stem for m in MODULES}

    assert {"__init__", "api_key", "organization", "key_format", "plans"} <= names


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.name)
def test_a_domain_module_imports_only_the_standard_library_and_eventsourcing_domain(
    module: Path,
) -> None:
    assert impurities(module.read_text()) == []


@pytest.mark.parametrize(
    "source",
    [
        "import socket",
        "import subprocess",
        "import sqlite3",
        "import io",
        "from os import path",
        "import os.path",
        "from pathlib import Path",
        "from urllib.request import urlopen",
        "import http.client",
        "from eventsourcing.application import Application",
        "from eventsourcing import application",
        "import eventsourcing.persistence",
        "import eventsourcing",
        "import psycopg",
        "from litestar import get",
        "import redis.asyncio",
        "import msgspec",
        "f = open('x')",
        "print('hello')",
        "__import__('socket')",
    ],
)
def test_the_purity_check_catches_impure_code(source: str) -> None:
    assert impurities(source) != []


@pytest.mark.parametrize(
    "source",
    [
        "from __future__ import annotations",
        "from eventsourcing.domain import Aggregate, event",
        "from eventsourcing import domain",
        "import eventsourcing.domain",
        "import hmac, secrets, zlib, re",
        "from urllib.parse import urlsplit",
        "from domain.errors import ValidationError",
        "from .errors import ValidationError",
    ],
)
def test_the_purity_check_accepts_pure_code(source: str) -> None:
    assert impurities(source) == []
