"""NATS connections and the JetStream stream that carries key lifecycle events."""

from __future__ import annotations

import asyncio

import nats
import structlog
from nats.aio.client import Client
from nats.js.api import DiscardPolicy, StorageType, StreamConfig
from nats.js.client import JetStreamContext
from nats.js.errors import NotFoundError

log = structlog.get_logger()


async def connect(url: str, name: str, *, wait: float = 30.0) -> Client:
    """A client that reconnects forever; waits up to `wait` seconds for a first connection."""
    deadline = asyncio.get_running_loop().time() + wait
    while True:
        try:
            return await nats.connect(
                url,
                name=name,
                connect_timeout=2,
                max_reconnect_attempts=-1,
                reconnect_time_wait=0.25,
                allow_reconnect=True,
            )
        except Exception as error:  # nats-py raises several unrelated types on refusal
            if asyncio.get_running_loop().time() >= deadline:
                raise
            log.warning("nats.connect_retry", url=url, error=type(error).__name__)
            await asyncio.sleep(0.5)


async def ensure_keys_stream(
    js: JetStreamContext, name: str, subject_prefix: str, replicas: int = 1
) -> None:
    """The key-event stream: file storage, kept forever, never silently trimmed or purged."""
    config = StreamConfig(
        name=name,
        subjects=[f"{subject_prefix}.>"],
        storage=StorageType.FILE,
        discard=DiscardPolicy.NEW,
        deny_delete=True,
        deny_purge=True,
        duplicate_window=120.0,
        num_replicas=replicas,
    )
    try:
        await js.stream_info(name)
    except NotFoundError:
        await js.add_stream(config)
        log.info("nats.stream_created", stream=name)
