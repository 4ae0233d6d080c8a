"""Handing freed heap memory back to the operating system after a big load."""

from __future__ import annotations

import ctypes
from functools import cache


@cache
def _malloc_trim() -> ctypes._NamedFuncPointer | None:
    try:
        return ctypes.CDLL(None).malloc_trim  # the process's own C library
    except (OSError, AttributeError):  # not glibc: nothing to do
        return None


def release_free_heap() -> bool:
    """Return free heap pages to the OS (glibc's `malloc_trim`); False where there is none.

    Loading the key mirror frees many temporary objects between long-lived ones; glibc keeps
    the freed pages resident unless asked (about 15-40 bytes a key, bench/mirror_memory.py).
    """
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True
