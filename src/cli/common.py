"""What every command shares: settings, the registry, output, and one-line errors."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from functools import wraps
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import click

from adapters.registry import open_registry
from adapters.settings import Settings, SettingsError
from application.registry import KeyRegistry
from domain.errors import DomainError

P = ParamSpec("P")
R = TypeVar("R")

USAGE_ERROR = 2

json_option = click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")


def settings_from(ctx: click.Context) -> Settings:
    """Settings from `ICODRIP_*`, with the group's `--data-dir` taking precedence."""
    obj = ctx.find_root().obj
    data_dir = obj.get("data_dir") if isinstance(obj, dict) else None
    return Settings.from_env(data_dir=Path(data_dir) if data_dir else None)


@contextmanager
def registry_for(ctx: click.Context) -> Iterator[KeyRegistry]:
    """The key registry for this invocation, closed afterwards."""
    registry = open_registry(settings_from(ctx))
    try:
        yield registry
    finally:
        registry.close()


def fail(message: str, code: str = "usage_error") -> None:
    """One line on stderr and exit status 2."""
    click.echo(f"error: {message} ({code})", err=True)
    sys.exit(USAGE_ERROR)


def friendly_errors(command: Callable[P, R]) -> Callable[P, R]:
    """Turn the product's errors into one clear line and exit 2, never a traceback."""

    @wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except DomainError as error:
            fail(error.message, error.code)
        except SettingsError as error:
            fail(str(error), "settings_error")
        raise AssertionError("unreachable")

    return wrapper


def emit(document: Any, as_json: bool, human: Callable[[], None]) -> None:
    """Print `document` as JSON (exactly one document) or call `human` for readable output."""
    if as_json:
        click.echo(json.dumps(document, indent=2, ensure_ascii=False))
    else:
        human()


_DURATION = re.compile(r"^(\d+)([smhd]?)$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> timedelta:
    """`0`, `90s`, `30m`, `24h`, `7d` → a timedelta; ValidationError-style exit otherwise."""
    match = _DURATION.match(text.strip())
    if not match:
        fail(f"bad duration {text!r}: use e.g. 0, 30m, 24h or 7d", "validation_error")
        raise AssertionError("unreachable")
    return timedelta(seconds=int(match.group(1)) * _UNITS[match.group(2)])
