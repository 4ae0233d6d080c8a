"""What the usage model reads of a request event, decoded straight from a stream message.

Pure (no I/O). The usage worker reads the whole request-event stream beside the audit worker;
decoding every field and cleaning the client's text (method, path, User-Agent: what the audit
model stores) would cost it half its time, for fields it never reads. `decode_usage` decodes
only the fields a count needs, with the audit model's limits as constraints, and hands a
message that does not fit them (an unreadable event, odd text in an id) to the audit model's
own decoding (`request_audit.decode_messages`), which keeps what it can and skips the rest.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Annotated, Protocol

import msgspec

from projections.request_audit import MAX_TEXT, Message, decode_messages


class CountedRequest(Protocol):
    """What a count reads of a request (an `AuditEntry` is one too)."""

    @property
    def event_id(self) -> str: ...
    @property
    def org_id(self) -> str | None: ...
    @property
    def key_id(self) -> str | None: ...
    @property
    def env(self) -> str | None: ...
    @property
    def status(self) -> int: ...
    @property
    def latency_ms(self) -> float: ...
    @property
    def occurred_at(self) -> float: ...


#: Per message: its stream sequence and the requests in it.
DecodedRequests = Sequence[tuple[int, Sequence[CountedRequest]]]

_Id = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
_Text = Annotated[str, msgspec.Meta(max_length=MAX_TEXT)]


class UsageEvent(msgspec.Struct, frozen=True, gc=False):
    """A request event's fields that usage counts (the rest of the event is skipped)."""

    event_id: _Id = msgspec.field(name="id")
    status: Annotated[int, msgspec.Meta(ge=0, le=999)]
    latency_ms: float
    occurred_at: float
    org_id: _Text | None
    key_id: _Text | None
    env: _Text | None


class _UsageBatch(msgspec.Struct, frozen=True):
    events: list[UsageEvent]


_decoder = msgspec.json.Decoder(_UsageBatch)
#: The longest key or organization id counted (the API's are 36 characters): an index entry
#: of the stores holds both.
MAX_ID = 100
#: The environments a key is in.
ENVIRONMENTS = ("live", "test")
#: The latest request time counted (2242): a bucket start must fit the stores' 64-bit integers.
LATEST_COUNTED = 2.0**33


def _plain(event: UsageEvent) -> bool:
    """Whether the event's text is stored as decoded (ASCII, no NUL: what `_text` keeps)."""
    for text in (event.org_id, event.key_id, event.env, event.event_id):
        if text is not None and (not text.isascii() or "\x00" in text):
            return False
    return True


def countable(request: CountedRequest) -> bool:
    """Whether a request is some key's usage (an id of a key and of an organization, as the
    API writes them, and a key's environment) at a time and latency a bucket can hold."""
    key_id, org_id = request.key_id, request.org_id
    return (
        key_id is not None
        and org_id is not None
        and key_id.startswith("key_")
        and org_id.startswith("org_")
        and len(key_id) <= MAX_ID
        and len(org_id) <= MAX_ID
        and request.env in ENVIRONMENTS
        and 0.0 <= request.occurred_at < LATEST_COUNTED
        and math.isfinite(request.latency_ms)
    )


def decode_usage(messages: Iterable[Message]) -> DecodedRequests:
    """Each message's requests, as the usage model counts them (see the module docstring)."""
    decoded: list[tuple[int, Sequence[CountedRequest]]] = []
    for message in messages:
        data = message.data
        try:
            events = _decoder.decode(data).events
        except (msgspec.DecodeError, RecursionError):  # the audit model's decoding says why
            events = None
        if events is None or not all(map(_plain, events)):
            for stream_seq, entries in decode_messages([message])[0]:
                decoded.append((stream_seq, [e for e in entries if countable(e)]))
            continue
        decoded.append((message.stream_seq, [e for e in events if countable(e)]))
    return decoded
