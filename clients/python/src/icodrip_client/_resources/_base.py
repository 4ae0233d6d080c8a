"""What every resource stands on: a client that runs calls (sync or async) and pages lists."""

from __future__ import annotations

from typing import Protocol, TypeVar

from icodrip_client._core import Call, Cursor, Listing
from icodrip_client.pagination import AsyncPage, AsyncPager, Page

T = TypeVar("T")


class Runs(Protocol):
    def _run(self, call: Call[T]) -> T: ...


class RunsAsync(Protocol):
    async def _run(self, call: Call[T]) -> T: ...


class SyncResource:
    def __init__(self, client: Runs) -> None:
        self._client = client

    def _run(self, call: Call[T]) -> T:
        return self._client._run(call)

    def _page(self, listing: Listing[T], cursor: Cursor | None) -> Page[T]:
        def fetch(at: Cursor | None) -> Page[T]:
            return Page(self._client._run(listing.page(at)), at, fetch)

        return fetch(cursor)


class AsyncResource:
    def __init__(self, client: RunsAsync) -> None:
        self._client = client

    async def _run(self, call: Call[T]) -> T:
        return await self._client._run(call)

    def _pager(self, listing: Listing[T], cursor: Cursor | None) -> AsyncPager[T]:
        async def fetch(at: Cursor | None) -> AsyncPage[T]:
            return AsyncPage(await self._client._run(listing.page(at)), at, fetch)

        return AsyncPager(lambda: fetch(cursor))
