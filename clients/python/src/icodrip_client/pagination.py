"""Pages of the API's lists, and iterating over every item of every page.

`client.api_keys.list()` fetches the first page. Iterating over it yields every item of every
page, fetching the next page when needed (`next_cursor`); `.data` is that page alone, and
`.next_page()` / `.iter_pages()` walk the pages yourself. The async pager is awaited for the
first page, or iterated with `async for` over every item.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Iterator
from typing import Any, Generic, TypeVar

from icodrip_client._core import Cursor, PageData
from icodrip_client._models.fields import Raw

T = TypeVar("T")


class _PageBase(Generic[T]):
    def __init__(self, data: PageData[T], cursor: Cursor | None) -> None:
        self._page = data
        self.cursor = cursor
        """The cursor this page was fetched with (None: the first page)."""

    @property
    def data(self) -> tuple[T, ...]:
        """This page's items."""
        return self._page.items

    @property
    def next_cursor(self) -> Cursor | None:
        """The cursor of the next page; None on the last one."""
        return self._page.next_cursor

    @property
    def raw(self) -> Raw:
        """The page's JSON (`{"object": "list", "data": [...], "next_cursor": ...}`)."""
        return self._page.raw

    def has_next_page(self) -> bool:
        # A server handing back the cursor it was given would otherwise loop forever.
        return self.next_cursor is not None and self.next_cursor != self.cursor

    def __repr__(self) -> str:
        return f"{type(self).__name__}(items={len(self.data)}, next_cursor={self.next_cursor!r})"


class Page(_PageBase[T]):
    """One page of a list; iterating over it yields the items of this page and the next ones."""

    def __init__(
        self, data: PageData[T], cursor: Cursor | None, fetch: Callable[[Cursor], Page[T]]
    ) -> None:
        super().__init__(data, cursor)
        self._fetch = fetch

    def next_page(self) -> Page[T] | None:
        """The next page (a request), or None after the last one."""
        if self.next_cursor is None or not self.has_next_page():
            return None
        return self._fetch(self.next_cursor)

    def iter_pages(self) -> Iterator[Page[T]]:
        """This page, then every following one."""
        page: Page[T] | None = self
        while page is not None:
            yield page
            page = page.next_page()

    def __iter__(self) -> Iterator[T]:
        for page in self.iter_pages():
            yield from page.data


class AsyncPage(_PageBase[T]):
    """One page of a list; `async for` over it yields this page's items and the next ones."""

    def __init__(
        self,
        data: PageData[T],
        cursor: Cursor | None,
        fetch: Callable[[Cursor], Awaitable[AsyncPage[T]]],
    ) -> None:
        super().__init__(data, cursor)
        self._fetch = fetch

    async def next_page(self) -> AsyncPage[T] | None:
        if self.next_cursor is None or not self.has_next_page():
            return None
        return await self._fetch(self.next_cursor)

    async def iter_pages(self) -> AsyncIterator[AsyncPage[T]]:
        page: AsyncPage[T] | None = self
        while page is not None:
            yield page
            page = await page.next_page()

    async def __aiter__(self) -> AsyncIterator[T]:
        async for page in self.iter_pages():
            for item in page.data:
                yield item


class AsyncPager(Generic[T]):
    """What an async `list()` returns: `await` it for the first page, or `async for` over it
    for every item of every page."""

    def __init__(self, first: Callable[[], Awaitable[AsyncPage[T]]]) -> None:
        self._first = first

    def __await__(self) -> Generator[Any, None, AsyncPage[T]]:
        return self._first().__await__()

    async def __aiter__(self) -> AsyncIterator[T]:
        page = await self._first()
        async for item in page:
            yield item
