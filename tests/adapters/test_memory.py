"""Freed heap pages go back to the operating system once the key mirror is loaded."""

from __future__ import annotations

import os

from adapters.memory import release_free_heap


def resident_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_freed_heap_pages_are_returned_when_asked() -> None:
    # 64 MB in 4 KB blocks (from malloc, not Python's small-object pools), then one block
    # kept at the top of the heap so that glibc cannot shrink the heap by itself.
    blocks = [bytearray(4096) for _ in range(16_384)]
    keeper = bytearray(4096)
    del blocks
    before = resident_bytes()

    assert release_free_heap()
    assert before - resident_bytes() > 32 * 1024 * 1024
    assert len(keeper) == 4096
