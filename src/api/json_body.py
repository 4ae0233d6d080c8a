"""JSON request bodies: refused before decoding when nested deeper than `MAX_JSON_DEPTH`.

msgspec (like any recursive parser) decodes nested arrays and objects on the C stack, guarded
by Python's recursion limit: a 2 KB body of 1,000 `[` raises `RecursionError`, and a body just
shallow enough to decode can still exhaust the stack further on (encoding it again, formatting
an error). No body this API accepts nests anywhere near the limit, so a deeper one is malformed
JSON, answered as such by every route (see `api.errors.handle_http`).
"""

from __future__ import annotations

import re
from itertools import accumulate
from typing import Any

from litestar import Request
from litestar.exceptions import SerializationException

MAX_JSON_DEPTH = 64

_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_A_BRACKET = bytes(b for b in range(256) if b not in b"[]{}")
_DEPTH_CHANGE = [0] * 256
for _opening in b"[{":
    _DEPTH_CHANGE[_opening] = 1
for _closing in b"]}":
    _DEPTH_CHANGE[_closing] = -1


def nested_deeper_than(body: bytes, limit: int = MAX_JSON_DEPTH) -> bool:
    """True when the JSON text `body` opens more than `limit` arrays or objects at once."""
    if body.count(b"[") + body.count(b"{") <= limit:  # the usual body: no scan at all
        return False
    brackets = _STRING.sub(b"", body).translate(None, _NOT_A_BRACKET)
    return max(accumulate(map(_DEPTH_CHANGE.__getitem__, brackets)), default=0) > limit


class ApiRequest(Request[Any, Any, Any]):
    """Litestar's request, with the body's nesting checked before it is decoded as JSON."""

    async def json(self) -> Any:
        """The decoded JSON body; SerializationException (a 400) when nested too deep."""
        if nested_deeper_than(await self.body()):
            raise SerializationException(f"JSON is nested deeper than {MAX_JSON_DEPTH} levels")
        return await super().json()
