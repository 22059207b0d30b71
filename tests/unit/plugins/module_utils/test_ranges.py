# Copyright (c) airgap.ngc contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Ranged parallel downloads of a big blob: range planning, reassembly in order, bounded memory, fallbacks, resumes."""

from __future__ import annotations

import hashlib
import os
import threading
import time
from typing import Any, Iterator

import pytest
import requests

from ansible_collections.airgap.ngc.plugins.module_utils._http.blob_reads import (
    AheadBudget,
    BlobReader,
    RangedBlobReader,
    open_reader,
    parse_content_range,
    plan_ranges,
    wants_ranges,
)
from ansible_collections.airgap.ngc.plugins.module_utils._types.errors import (
    AuthError,
    DigestMismatchError,
    RegistryError,
)
from ansible_collections.airgap.ngc.plugins.module_utils._http.transport import RetryPolicy

PART = 1000
BLOB = os.urandom(10 * PART + 123)  # 11 parts, the last one short
DIGEST = "sha256:" + hashlib.sha256(BLOB).hexdigest()
REGISTRY = "registry.test:5000"
CDN_URL = "https://cdn.test/blob?signature=abc"


class FakeResponse:
    """A streamed answer: status, headers, url, iter_content; breaks after `break_after` bytes if asked."""

    def __init__(
        self,
        status: int,
        body: bytes,
        headers: dict[str, str],
        url: str,
        break_after: int | None = None,
        delay: float = 0.0,
    ) -> None:
        self.status_code, self.headers, self.url = status, headers, url
        self._body, self._break_after, self._delay = body, break_after, delay
        self.closed = False

    def iter_content(self, chunk_size: int) -> Iterator[bytes]:
        sent = 0
        while sent < len(self._body):
            if self._delay:
                time.sleep(self._delay)
            piece = self._body[sent : sent + chunk_size]
            if self._break_after is not None and sent + len(piece) > self._break_after:
                yield piece[: self._break_after - sent]
                raise requests.exceptions.ChunkedEncodingError("Connection broken: IncompleteRead")
            sent += len(piece)
            yield piece

    def close(self) -> None:
        self.closed = True


class FakeServer:
    """Answers fetch(offset, end, location) from BLOB like a registry that redirects to a CDN; records every call."""

    def __init__(self, honour_range: bool = True, redirect: bool = True, delay: float = 0.0) -> None:
        self.honour_range, self.redirect, self.delay = honour_range, redirect, delay
        self.calls: list[tuple[int, int | None, str | None]] = []
        self.breaks: dict[int, int] = {}  # offset -> bytes to send before the connection breaks (once)
        self.expire_location_after: int | None = None  # refuse the reused URL after this many calls
        self.lock = threading.Lock()
        self.active = 0
        self.max_active = 0

    def fetch(self, offset: int, end: int | None = None, location: str | None = None) -> FakeResponse:
        with self.lock:
            self.calls.append((offset, end, location))
            calls = len(self.calls)
        if location is not None and self.expire_location_after is not None and calls > self.expire_location_after:
            self.expire_location_after = None
            raise AuthError(
                "403 from cdn.test, where registry.test redirected the blob: AccessDenied: Request has expired",
                status=403,
            )
        url = CDN_URL if self.redirect else f"https://{REGISTRY}/v2/x/blobs/{DIGEST}"
        if not self.honour_range or (offset == 0 and end is None):
            return FakeResponse(200, BLOB, {"Content-Length": str(len(BLOB))}, url)
        last = len(BLOB) - 1 if end is None else end
        body = BLOB[offset : last + 1]
        headers = {"Content-Length": str(len(body)), "Content-Range": f"bytes {offset}-{last}/{len(BLOB)}"}
        return FakeResponse(206, body, headers, url, break_after=self.breaks.pop(offset, None), delay=self.delay)


def reader_for(server: FakeServer, size: int | None = len(BLOB), connections: int = 4, threshold: int = PART) -> Any:
    return open_reader(
        server.fetch,
        REGISTRY,
        "x",
        DIGEST,
        size,
        256,
        RetryPolicy(retries=3, backoff=0.0),
        lambda _s: None,
        connections=connections,
        threshold=threshold,
        part_size=PART,
    )


def test_plan_ranges_covers_the_blob_once_in_order() -> None:
    assert plan_ranges(10, 4) == [(0, 3), (4, 7), (8, 9)]
    assert plan_ranges(8, 4) == [(0, 3), (4, 7)]
    assert plan_ranges(3, 4) == [(0, 2)]
    parts = plan_ranges(len(BLOB), PART)
    assert b"".join(BLOB[a : b + 1] for a, b in parts) == BLOB
    with pytest.raises(ValueError):
        plan_ranges(0, 4)


def test_content_range_is_parsed() -> None:
    assert parse_content_range("bytes 0-99/1000") == (0, 99, 1000)
    assert parse_content_range("bytes 5-9/*") == (5, 9, None)
    assert parse_content_range("items 0-1/2") is None
    assert parse_content_range(None) is None


def test_only_big_blobs_of_known_size_are_ranged() -> None:
    assert wants_ranges(64 * 1024 * 1024)
    assert not wants_ranges(64 * 1024 * 1024 - 1)
    assert not wants_ranges(None)
    assert not wants_ranges(10**9, connections=1)


def test_small_blob_is_one_plain_stream() -> None:
    server = FakeServer()
    with reader_for(server, threshold=len(BLOB) + 1) as reader:
        assert isinstance(reader, BlobReader)
        assert b"".join(reader) == BLOB
        assert reader.verified
    assert server.calls == [(0, None, None)]


def test_big_blob_is_fetched_in_parallel_ranges_and_reassembled_in_order() -> None:
    server = FakeServer(delay=0.002)
    active = {"now": 0, "max": 0}
    inner = server.fetch

    def counting(offset: int, end: int | None = None, location: str | None = None) -> Any:
        response = inner(offset, end, location)
        body = response.iter_content

        def tracked(chunk_size: int) -> Iterator[bytes]:
            with server.lock:
                active["now"] += 1
                active["max"] = max(active["max"], active["now"])
            try:
                yield from body(chunk_size)
            finally:
                with server.lock:
                    active["now"] -= 1

        response.iter_content = tracked  # type: ignore[method-assign]
        return response

    server.fetch = counting  # type: ignore[method-assign]
    with reader_for(server) as reader:
        assert isinstance(reader, RangedBlobReader)
        data = b"".join(reader)
        assert reader.verified
    assert data == BLOB
    asked = sorted((offset, end) for offset, end, _location in server.calls)
    assert asked == plan_ranges(len(BLOB), PART)
    assert active["max"] > 1  # several ranges were in flight at once
    # The first part went to the registry; the others reused the URL it redirected to, without asking it again.
    assert server.calls[0][2] is None
    assert all(location == CDN_URL for _o, _e, location in server.calls[1:])


def test_read_n_gives_the_same_bytes() -> None:
    with reader_for(FakeServer()) as reader:
        pieces = []
        while True:
            piece = reader.read(777)
            if not piece:
                break
            pieces.append(piece)
    assert b"".join(pieces) == BLOB


def test_parts_are_fetched_at_most_a_window_ahead_of_the_reader() -> None:
    server = FakeServer()
    reader = reader_for(server, connections=2)
    try:
        time.sleep(0.3)  # the reader reads nothing: the workers must stop after connections + 1 parts
        assert len(server.calls) == 3
        assert reader.read(PART + 1) == BLOB[: PART + 1]  # the first part is taken: one more may start
        time.sleep(0.3)
        assert len(server.calls) == 4
        assert reader.read() == BLOB[PART + 1 :]
        assert reader.verified
    finally:
        reader.close()


def ranged(server: FakeServer, ahead: int, budget: AheadBudget) -> RangedBlobReader:
    return RangedBlobReader(
        server.fetch,
        server.fetch(0, PART - 1),
        REGISTRY,
        "x",
        DIGEST,
        len(BLOB),
        100,
        RetryPolicy(retries=0),
        lambda _s: None,
        connections=4,
        part_size=PART,
        ahead=ahead,
        budget=budget,
    )


def test_the_parts_ahead_of_the_reader_hold_at_most_ahead_bytes_whatever_the_part_size() -> None:
    budget = AheadBudget(10 * len(BLOB))
    with ranged(FakeServer(), ahead=PART // 2, budget=budget) as reader:
        time.sleep(0.3)  # the reader reads nothing: the workers of the parts after the first stop at PART // 2 bytes
        assert 0 < reader.most_held <= PART // 2 + 3 * 100  # (and a chunk of each of the 3 workers ahead, at most)
        assert b"".join(reader) == BLOB
        assert reader.verified and reader.most_held <= PART // 2 + 3 * 100
    assert budget.held == 0  # every byte counted was given back


def test_big_blobs_read_at_once_share_one_budget_for_the_parts_ahead() -> None:
    budget = AheadBudget(PART)
    first, second = (
        ranged(FakeServer(), ahead=len(BLOB), budget=budget),
        ranged(FakeServer(), ahead=len(BLOB), budget=budget),
    )
    try:
        time.sleep(
            0.3
        )  # neither reader reads: their parts ahead hold one part's bytes between them, not two blobs' worth
        assert 0 < budget.most <= PART
        assert b"".join(first) == BLOB and first.verified  # the part being read is never held back by the budget
        assert b"".join(second) == BLOB and second.verified
        assert budget.most <= PART
    finally:
        first.close()
        second.close()
    assert budget.held == 0


def test_a_reader_closed_early_gives_back_what_its_parts_ahead_held() -> None:
    budget = AheadBudget(10 * len(BLOB))
    reader = ranged(FakeServer(), ahead=len(BLOB), budget=budget)
    time.sleep(0.2)
    assert budget.held > 0
    reader.close()
    assert budget.held == 0


def test_server_that_ignores_range_gets_one_stream() -> None:
    server = FakeServer(honour_range=False)
    with reader_for(server) as reader:
        assert isinstance(reader, BlobReader)
        assert b"".join(reader) == BLOB
        assert reader.verified
    assert len(server.calls) == 1  # the answer to the first ranged request was read to the end, not asked again


def test_a_broken_part_continues_from_the_byte_it_reached() -> None:
    server = FakeServer()
    server.breaks[3 * PART] = 300
    with reader_for(server) as reader:
        assert b"".join(reader) == BLOB
        assert reader.resumes == 1
    assert (3 * PART + 300, 4 * PART - 1, CDN_URL) in server.calls
    assert sum(1 for offset, _e, _l in server.calls if offset == 3 * PART) == 1  # not fetched again from its start


def test_an_expired_redirect_url_is_renewed_through_the_registry() -> None:
    server = FakeServer()
    server.expire_location_after = 3
    with reader_for(server, connections=2) as reader:
        assert b"".join(reader) == BLOB
        assert reader.renewals == 1
    registry_calls = [call for call in server.calls if call[2] is None]
    assert len(registry_calls) == 2  # the first part, and the renewal after the CDN refused its URL
    offsets = [offset for offset, _e, _l in server.calls]
    assert (
        offsets.count(registry_calls[1][0]) == 2
    )  # the refused part is asked again from the registry, from the same byte


def test_other_errors_of_a_part_fail_the_read() -> None:
    server = FakeServer()
    inner = server.fetch

    def failing(offset: int, end: int | None = None, location: str | None = None) -> Any:
        if offset == 5 * PART:
            raise RegistryError("404 from cdn.test: blob not found", status=404)
        return inner(offset, end, location)

    server.fetch = failing  # type: ignore[method-assign]
    with reader_for(server) as reader:
        with pytest.raises(RegistryError, match="404"):
            b"".join(reader)


def test_wrong_content_is_refused_at_the_end() -> None:
    server = FakeServer()
    reader = open_reader(
        server.fetch,
        REGISTRY,
        "x",
        "sha256:" + "0" * 64,
        len(BLOB),
        256,
        RetryPolicy(retries=0),
        lambda _s: None,
        connections=4,
        threshold=PART,
        part_size=PART,
    )
    with reader, pytest.raises(DigestMismatchError, match="hashed to"):
        b"".join(reader)
    assert not reader.verified


def test_a_range_answer_for_other_bytes_is_refused() -> None:
    def shifted(offset: int, end: int | None = None, location: str | None = None) -> Any:
        body = BLOB[offset + 1 : (end or 0) + 2]
        return FakeResponse(206, body, {"Content-Range": f"bytes {offset + 1}-{(end or 0) + 1}/{len(BLOB)}"}, CDN_URL)

    with pytest.raises(RegistryError, match="asked for bytes 0-999"):
        open_reader(
            shifted,
            REGISTRY,
            "x",
            DIGEST,
            len(BLOB),
            256,
            RetryPolicy(retries=0),
            lambda _s: None,
            connections=4,
            threshold=PART,
            part_size=PART,
        )


def test_a_wrong_total_size_is_refused() -> None:
    def other_total(offset: int, end: int | None = None, location: str | None = None) -> Any:
        return FakeResponse(
            206, BLOB[offset : (end or 0) + 1], {"Content-Range": f"bytes {offset}-{end}/{len(BLOB) + 5}"}, CDN_URL
        )

    with pytest.raises(DigestMismatchError, match="expected"):
        open_reader(
            other_total,
            REGISTRY,
            "x",
            DIGEST,
            len(BLOB),
            256,
            RetryPolicy(retries=0),
            lambda _s: None,
            connections=4,
            threshold=PART,
            part_size=PART,
        )


def test_closing_early_stops_the_workers() -> None:
    server = FakeServer(delay=0.001)
    reader = reader_for(server)
    assert reader.read(10) == BLOB[:10]
    reader.close()
    for thread in reader._threads:  # pylint: disable=protected-access
        thread.join(timeout=5)
        assert not thread.is_alive()
    calls = len(server.calls)
    assert len(reader.read()) < 256  # at most the rest of the chunk already taken: nothing more is fetched
    assert not reader.verified
    assert len(server.calls) == calls


@pytest.mark.parametrize("connections,threshold", [(4, PART), (1, len(BLOB) * 2)])  # ranged, and one plain stream
def test_a_download_started_part_way_hashes_the_held_bytes_and_fetches_only_the_rest(
    connections: int, threshold: int
) -> None:
    server = FakeServer()
    start = len(BLOB) // 3
    reader = open_reader(
        server.fetch,
        REGISTRY,
        "x",
        DIGEST,
        len(BLOB),
        256,
        RetryPolicy(retries=3, backoff=0.0),
        lambda _s: None,
        connections=connections,
        threshold=threshold,
        part_size=PART,
        start=start,
        held=[BLOB[:start]],
    )
    with reader:
        assert b"".join(reader) == BLOB[start:]
    assert min(offset for offset, _end, _location in server.calls) == start
    bad = open_reader(
        FakeServer().fetch,
        REGISTRY,
        "x",
        DIGEST,
        len(BLOB),
        256,
        RetryPolicy(retries=0),
        lambda _s: None,
        connections=connections,
        threshold=threshold,
        part_size=PART,
        start=start,
        held=[b"\0" * start],
    )
    with pytest.raises(DigestMismatchError):
        with bad:
            b"".join(bad)  # held bytes that are not the blob's fail its digest


@pytest.mark.parametrize("connections,threshold", [(4, PART), (1, len(BLOB) * 2)])
def test_a_download_started_part_way_with_no_bytes_to_hash_checks_only_the_size(
    connections: int, threshold: int
) -> None:
    """held=None: the destinations check the digest (a registry at its final PUT); the reader still counts the bytes."""
    start = len(BLOB) // 3
    other = "sha256:" + "0" * 64  # not the blob's digest: unchecked here
    reader = open_reader(
        FakeServer().fetch,
        REGISTRY,
        "x",
        other,
        len(BLOB),
        256,
        RetryPolicy(retries=0),
        lambda _s: None,
        connections=connections,
        threshold=threshold,
        part_size=PART,
        start=start,
        held=None,
    )
    with reader:
        assert b"".join(reader) == BLOB[start:]
    assert reader.verified
    with pytest.raises(DigestMismatchError):  # the size is still checked
        with open_reader(
            FakeServer().fetch,
            REGISTRY,
            "x",
            other,
            len(BLOB) + 1,
            256,
            RetryPolicy(retries=0),
            lambda _s: None,
            connections=1,
            threshold=len(BLOB) * 4,
            part_size=PART,
            start=start,
            held=None,
        ) as longer:
            b"".join(longer)
