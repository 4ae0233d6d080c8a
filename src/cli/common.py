"""What every command shares: settings, the registry, one-line errors and `--json` output.

Errors: whatever goes wrong reaches the operator as ONE line on stderr,
`error: <message> (<code>)`, never a traceback. Bad input (a malformed id, an unknown
org, a bad plan or duration, a broken domain rule, unusable settings) exits 2 and is
refused before anything is written; an unreachable event store exits 1.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import timedelta
from functools import wraps
from pathlib import Path
from typing import IO, Any, ParamSpec, TypeVar, cast

import click
from eventsourcing.persistence import PersistenceError

from adapters.settings import Settings, SettingsError
from application.registry import KeyRegistry
from application.stores import open_registry
from domain.errors import DomainError

P = ParamSpec("P")
R = TypeVar("R")

#: Exit status for bad input or settings: the command was refused and wrote nothing.
USAGE_ERROR = 2
#: Exit status when the event store cannot be reached or used.
UNAVAILABLE = 1

_SETTINGS = "icodrip.settings"
_REGISTRY = "icodrip.registry"


# -- errors ------------------------------------------------------------------------------


class CliError(click.ClickException):
    """Bad input, refused: one line, `error: <message> (<code>)`, and exit status 2."""

    exit_code = USAGE_ERROR

    def __init__(self, message: str, code: str = "usage_error") -> None:
        super().__init__(_one_line(message))
        self.code = code

    def format_message(self) -> str:
        return f"{self.message} ({self.code})"

    def show(self, file: IO[Any] | None = None) -> None:
        click.echo(f"error: {self.format_message()}", err=True, file=file)


class StoreUnavailable(CliError):
    """The event store could not be reached or used: one line and exit status 1."""

    exit_code = UNAVAILABLE


def _one_line(text: str) -> str:
    return " ".join(text.split()) or "unknown error"


@contextmanager
def one_line_errors() -> Iterator[None]:
    """Turn the product's, the settings' and click's errors into a `CliError`."""
    try:
        yield
    except (CliError, click.exceptions.NoArgsIsHelpError):
        raise  # already one line / the group's help text, shown as click intends
    except DomainError as error:
        raise CliError(error.message, error.code) from error
    except SettingsError as error:
        raise CliError(str(error), "settings_error") from error
    except PersistenceError as error:
        raise StoreUnavailable(
            f"the event store is unavailable: {error}", "store_unavailable"
        ) from error
    except click.ClickException as error:  # bad options or arguments, unknown command, ...
        raise CliError(error.format_message(), "usage_error") from error


def friendly_errors(command: Callable[P, R]) -> Callable[P, R]:
    """Decorator form of `one_line_errors`, for a command used outside `Group`."""

    @wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with one_line_errors():
            return command(*args, **kwargs)

    return wrapper


class Group(click.Group):
    """A click group whose parse and command errors are all one line (see `one_line_errors`).

    Nested groups' parsing and every subcommand run inside the outer group's `invoke`, so
    using it for the root group covers the whole tree.
    """

    def make_context(
        self,
        info_name: str | None,
        args: list[str],
        parent: click.Context | None = None,
        **extra: Any,
    ) -> click.Context:
        with one_line_errors():
            return super().make_context(info_name, args, parent, **extra)

    def invoke(self, ctx: click.Context) -> Any:
        with one_line_errors():
            return super().invoke(ctx)


# -- settings and the registry, opened on first use -----------------------------------------


def data_dir_from(ctx: click.Context) -> Path | None:
    """The root group's `--data-dir`, if given (it takes precedence over ICODRIP_DATA_DIR)."""
    obj = ctx.find_root().obj
    value = obj.get("data_dir") if isinstance(obj, dict) else None
    return Path(value) if value else None


def settings_from(ctx: click.Context) -> Settings:
    """Settings from `ICODRIP_*` and `--data-dir`, read once per invocation."""
    meta = ctx.find_root().meta
    if _SETTINGS not in meta:
        try:
            meta[_SETTINGS] = Settings.from_env(data_dir=data_dir_from(ctx))
        except OSError as error:
            raise CliError(f"cannot use the data directory: {error}", "settings_error") from error
    return cast(Settings, meta[_SETTINGS])


def registry_from(ctx: click.Context) -> KeyRegistry:
    """The key registry, opened on first use and closed when the command is done.

    Commands validate their input before calling this, so a refused command neither
    writes an event nor creates a store.
    """
    root = ctx.find_root()
    if _REGISTRY not in root.meta:
        settings = settings_from(ctx)
        try:
            registry = open_registry(settings)
        except ValueError as error:  # e.g. ICODRIP_DATABASE_URL is not a postgresql:// URL
            raise CliError(str(error), "settings_error") from error
        except OSError as error:
            raise CliError(f"cannot use the data directory: {error}", "settings_error") from error
        root.meta[_REGISTRY] = registry
        # eventsourcing's Application.close() closes the recorder's connections (pool).
        root.call_on_close(registry.close)
    return cast(KeyRegistry, root.meta[_REGISTRY])


# -- output ----------------------------------------------------------------------------------

json_option = click.option(
    "--json", "as_json", is_flag=True, help="Print exactly one JSON document on stdout."
)


def print_json(document: Any) -> None:
    """One JSON document on stdout, nothing else."""
    click.echo(json.dumps(document, indent=2, ensure_ascii=False))


def emit(document: Any, as_json: bool, human: Callable[[], None]) -> None:
    """Print `document` as JSON, or call `human` for the readable form."""
    if as_json:
        print_json(document)
    else:
        human()


def print_table(
    header: Sequence[str], rows: Sequence[Sequence[str]], *, left: int | None = None
) -> None:
    """Columns as wide as their widest cell; the first `left` (all, when None) left-aligned,
    the rest (numbers) right-aligned."""
    lines = [header, *rows]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    aligned = len(header) if left is None else left
    for line in lines:
        cells = (
            cell.ljust(width) if i < aligned else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(line, widths, strict=True))
        )
        click.echo("  ".join(cells).rstrip())


def when(iso: str | None) -> str:
    """`2026-11-26T21:09:10.123Z` → `2026-11-26 21:09` (UTC) for tables; `-` for none."""
    return "-" if iso is None else iso[:16].replace("T", " ")


# -- durations -------------------------------------------------------------------------------

_DURATION = re.compile(r"(\d{1,9})([smhd]?)")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> timedelta:
    """`0`, `90s`, `30m`, `24h`, `7d` → a timedelta (a bare number is seconds)."""
    match = _DURATION.fullmatch(text.strip())
    if not match:
        raise ValueError(f"bad duration {text[:40]!r}: use e.g. 0, 30m, 24h or 7d")
    return timedelta(seconds=int(match.group(1)) * _UNIT_SECONDS[match.group(2)])


class DurationType(click.ParamType[timedelta]):
    """A click parameter holding a duration such as `24h` (see `parse_duration`)."""

    name = "duration"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> timedelta:
        if isinstance(value, timedelta):
            return value
        try:
            return parse_duration(str(value))
        except ValueError as error:
            self.fail(str(error), param, ctx)


DURATION = DurationType()
