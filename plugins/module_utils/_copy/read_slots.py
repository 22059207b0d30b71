# Copyright (c) airgap.ngc contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private: the blob reads of a run, ``parallel`` at once, the largest waiting first; and one read of a blob at a time.
Not a public API.

The images copied at once share ``ReadSlots``: a read waits for a free slot, and when one frees, the largest blob
waiting takes it (the order a raw copy of the unique blobs would use), so a big layer is not left to stream alone at
the end behind the small blobs of other images. ``BlobClaims`` lets only one image read a blob at a time: an image
that needs a blob another image is reading waits for that read (not for the whole image), then takes it from where
that read put it, if its destination holds it now. ``share_malloc_arenas`` keeps the memory of those reads' threads
from spreading over one malloc arena per thread.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import heapq
import itertools
import threading
from contextlib import contextmanager
from typing import Iterator


MALLOC_ARENAS = 2
"""malloc arenas the process's threads share (glibc's M_ARENA_MAX; its default is 8 per core)."""
_M_ARENA_MAX = -8  # mallopt's parameter number in glibc's malloc.h


def share_malloc_arenas(arenas: int = MALLOC_ARENAS) -> bool:
    """Have the threads share ``arenas`` malloc arenas (glibc only; elsewhere nothing is done): a copy's chunks are
    allocated by a reading thread and freed by an uploading one, and with an arena per thread each keeps what it freed,
    which the process's peak memory then counts several times over. True if it was set."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        return bool(libc is not None and hasattr(libc, "mallopt") and libc.mallopt(_M_ARENA_MAX, arenas) == 1)
    except (OSError, AttributeError):
        return False


class ReadSlots:
    """``count`` slots; ``held(size)`` waits for one, the largest size waiting first (the first come among equals)."""

    def __init__(self, count: int) -> None:
        self._free = max(count, 1)
        self._waiting: list[tuple[int, int]] = []  # (-size, ticket): a heap, the largest blob first
        self._tickets = itertools.count()
        self._cond = threading.Condition()

    @contextmanager
    def held(self, size: int) -> Iterator[None]:
        with self._cond:
            mine = (-size, next(self._tickets))
            heapq.heappush(self._waiting, mine)
            while self._free == 0 or self._waiting[0] != mine:
                self._cond.wait()
            heapq.heappop(self._waiting)
            self._free -= 1
            self._cond.notify_all()  # the next waiter may take another free slot
        try:
            yield
        finally:
            with self._cond:
                self._free += 1
                self._cond.notify_all()


class BlobClaims:
    """One reader per blob digest at a time. ``claim(digest)`` yields True if the blob was claimed before (it waited
    for another reader, or one came earlier in the run): the claimant then looks whether that read put it in place."""

    def __init__(self) -> None:
        self._reading: set[str] = set()
        self._claimed: set[str] = set()
        self._cond = threading.Condition()

    @contextmanager
    def claim(self, digest: str) -> Iterator[bool]:
        with self._cond:
            while digest in self._reading:
                self._cond.wait()
            before = digest in self._claimed
            self._reading.add(digest)
            self._claimed.add(digest)
        try:
            yield before
        finally:
            with self._cond:
                self._reading.discard(digest)
                self._cond.notify_all()
