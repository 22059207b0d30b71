# Copyright (c) airgap.ngc contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The blob reads of a run: ``parallel`` at once, the largest waiting first; one read of a blob at a time."""

from __future__ import annotations

import threading
import time

from ansible_collections.airgap.ngc.plugins.module_utils._copy.read_slots import (
    BlobClaims,
    ReadSlots,
    share_malloc_arenas,
)


def test_a_freed_slot_goes_to_the_largest_blob_waiting() -> None:
    slots = ReadSlots(1)
    order: list[int] = []
    release = threading.Event()

    def read(size: int) -> None:
        with slots.held(size):
            order.append(size)

    def first() -> None:
        with slots.held(5):
            release.wait(5)

    holder = threading.Thread(target=first)
    holder.start()
    time.sleep(0.05)
    waiting = []
    for size in (1, 300, 20, 300):  # asked in this order while the only slot is taken
        thread = threading.Thread(target=read, args=(size,))
        thread.start()
        waiting.append(thread)
        time.sleep(0.05)
    release.set()
    for thread in [holder] + waiting:
        thread.join(5)
    assert order == [300, 300, 20, 1]


def test_no_more_reads_than_slots_at_once() -> None:
    slots = ReadSlots(3)
    lock = threading.Lock()
    active = most = 0

    def read(size: int) -> None:
        nonlocal active, most
        with slots.held(size):
            with lock:
                active += 1
                most = max(most, active)
            time.sleep(0.02)
            with lock:
                active -= 1

    threads = [threading.Thread(target=read, args=(n,)) for n in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(5)
    assert most == 3


def test_a_blob_is_read_by_one_claim_at_a_time_and_the_next_knows_it_was_claimed_before() -> None:
    claims = BlobClaims()
    seen: list[tuple[str, bool]] = []
    inside = threading.Event()
    release = threading.Event()

    def first() -> None:
        with claims.claim("sha256:a") as waited:
            seen.append(("first", waited))
            inside.set()
            release.wait(5)

    def second() -> None:
        with claims.claim("sha256:a") as waited:
            seen.append(("second", waited))

    one = threading.Thread(target=first)
    one.start()
    inside.wait(5)
    two = threading.Thread(target=second)
    two.start()
    with claims.claim("sha256:other") as waited:  # another blob is not held up
        assert waited is False
    time.sleep(0.05)
    assert seen == [("first", False)]
    release.set()
    one.join(5)
    two.join(5)
    assert seen == [("first", False), ("second", True)]
    with claims.claim("sha256:a") as before:  # claimed earlier in the run, no longer read now
        assert before is True


def test_sharing_malloc_arenas_never_fails() -> None:
    assert share_malloc_arenas() in (True, False)
