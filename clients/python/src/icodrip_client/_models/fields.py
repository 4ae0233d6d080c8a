"""Reading the fields of the API's JSON objects into typed values.

Fields the API documents as always present are required here (a response without one is an
`UnexpectedResponseError`: the contract says fields are never removed); nullable ones become
None when absent; fields the client does not know are simply kept in each object's `raw`.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from icodrip_client.errors import UnexpectedResponseError

Raw = Mapping[str, Any]


def obj(value: Any, what: str = "response") -> Raw:
    """`value` as a JSON object."""
    if not isinstance(value, Mapping):
        raise UnexpectedResponseError(f"expected a JSON object as the {what}")
    return value


def text(raw: Raw, name: str) -> str:
    value = raw.get(name)
    if not isinstance(value, str):
        raise UnexpectedResponseError(f"{name}: expected a string")
    return value


def opt_text(raw: Raw, name: str) -> str | None:
    value = raw.get(name)
    return value if isinstance(value, str) else None


def integer(raw: Raw, name: str) -> int:
    value = raw.get(name)
    if isinstance(value, bool) or not isinstance(value, int):
        raise UnexpectedResponseError(f"{name}: expected an integer")
    return value


def opt_int(raw: Raw, name: str) -> int | None:
    value = raw.get(name)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def opt_float(raw: Raw, name: str) -> float | None:
    value = raw.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def flag(raw: Raw, name: str) -> bool:
    return raw.get(name) is True


def texts(raw: Raw, name: str) -> tuple[str, ...]:
    value = raw.get(name)
    if not isinstance(value, list):
        return ()
    return tuple(item for item in value if isinstance(item, str))


def objects(raw: Raw, name: str) -> tuple[Raw, ...]:
    value = raw.get(name)
    if not isinstance(value, list):
        return ()
    return tuple(item for item in value if isinstance(item, Mapping))


def opt_obj(raw: Raw, name: str) -> Raw | None:
    value = raw.get(name)
    return value if isinstance(value, Mapping) else None


def parse_time(value: Any) -> datetime | None:
    """An RFC 3339 time (`…Z` or with an offset) or Unix seconds, as an aware datetime."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value, UTC)
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            return None
        return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
    return None


def time(raw: Raw, name: str) -> datetime:
    moment = parse_time(raw.get(name))
    if moment is None:
        raise UnexpectedResponseError(f"{name}: expected a time")
    return moment


def opt_time(raw: Raw, name: str) -> datetime | None:
    return parse_time(raw.get(name))
