# Copyright (c) airgap.ngc contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private: blob streams checked against their digest: a download (one stream that resumes with Range, or several
Range requests at once for a big blob), an upload body. Not a public API.

None holds a blob in memory nor knows the registry API: a download asks a callable for the answer to a GET of a
byte range, the upload body is handed to requests as ``data``.

Big blobs (``RANGE_THRESHOLD`` bytes and more, when the size is known) are fetched as parts of ``RANGE_PART_SIZE``
bytes over ``RANGE_CONNECTIONS`` connections at once, because CDNs cap each connection well below a site's link
(nvcr.io serves its blobs from one). The parts are handed on in order, so the reader is still one sequential stream
(each destination, a registry upload too, sees the bytes in order), hashed as it goes. The parts after the one being
read hold at most ``RANGE_AHEAD`` bytes between them, and those of every big blob read at once in the process at most
``RANGE_AHEAD_TOTAL`` (a worker past either stops reading its connection until a reader catches up): memory is bounded
whatever the blobs' sizes and however many are read at once. A server
that ignores Range (200 instead of 206) gets one stream. The URL a registry redirects a blob to (a presigned CDN
URL) is reused for the following parts, without credentials; once it is refused (400, 401 or 403: it expired) the
next part asks the registry again, which re-authenticates on its 401 (the new challenge's realm may differ) and
redirects anew. A part whose connection breaks continues with Range from the byte it reached.
"""

from __future__ import annotations

import collections
import hashlib
import re
import threading
from typing import Any, Callable, Deque, Iterable, Iterator, List, Optional, Tuple

from ansible_collections.airgap.ngc.plugins.module_utils._types.errors import (
    AirgapError,
    DigestMismatchError,
    RegistryError,
    exception_reason,
)
from ansible_collections.airgap.ngc.plugins.module_utils._types.oci import CHUNK_SIZE
from ansible_collections.airgap.ngc.plugins.module_utils._http.transport import (
    TRANSIENT_EXCEPTIONS,
    RetryPolicy,
    budgeted,
    content_length,
    host_of,
    strip_query,
)

DEFAULT_CHUNK_SIZE = CHUNK_SIZE

RANGE_THRESHOLD = 64 * 1024 * 1024
"""Blobs of at least this many bytes (size known beforehand) are downloaded as several Range requests at once."""
RANGE_CONNECTIONS = 4
"""Range requests in flight for one big blob."""
RANGE_PART_SIZE = 8 * 1024 * 1024
"""Bytes asked for by one Range request."""
RANGE_AHEAD = (RANGE_CONNECTIONS - 1) * RANGE_PART_SIZE
"""Bytes the parts after the one being read may hold at once (a worker past it waits, its connection unread, until the
reader has taken some): enough for every other connection to fetch a whole part while the reader takes the first."""
RANGE_AHEAD_TOTAL = 32 * 1024 * 1024
"""Bytes the parts ahead of their readers may hold at once in the process, all big blobs together."""


class AheadBudget:
    """Bytes that parts fetched ahead of their readers may hold, shared by the readers of a process."""

    def __init__(self, limit: int) -> None:
        self.limit = max(limit, 1)
        self.held = 0
        self.most = 0
        self._cond = threading.Condition()

    def take(self, size: int, stop: Callable[[], bool]) -> bool:
        """Wait until ``size`` more bytes fit (or none are held), then count them; False (nothing counted) if ``stop()``
        became true meanwhile. ``stop`` is polled: the readers' own events do not notify this condition."""
        with self._cond:
            while self.held and self.held + size > self.limit:
                if stop():
                    return False
                self._cond.wait(0.05)
            self.held += size
            self.most = max(self.most, self.held)
            return True

    def give(self, size: int) -> None:
        if size:
            with self._cond:
                self.held -= size
                self._cond.notify_all()


AHEAD = AheadBudget(RANGE_AHEAD_TOTAL)
"""The process's budget for the parts ahead of their readers."""
EXPIRED_STATUSES = frozenset((400, 401, 403))
"""Answers of a reused redirect URL that mean it is no longer valid (S3 and CDNs: 403 expired, 400 refused)."""

_HASH_ALGORITHMS = ("sha256", "sha512")
_CONTENT_RANGE_RE = re.compile(r"\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*$")

Fetch = Callable[..., Any]
"""``fetch(offset, end=None, location=None)``: the streamed answer to a GET of the blob from byte offset to byte end
(inclusive; None: to its end), from the registry, or from location (a URL the registry redirected an earlier GET to)."""


def _new_hasher(digest: str) -> Any:
    algorithm = digest.split(":", 1)[0]
    if algorithm not in _HASH_ALGORITHMS:
        raise RegistryError(f"unsupported digest algorithm in {digest!r}")
    return hashlib.new(algorithm)


def plan_ranges(size: int, part_size: int, start: int = 0) -> List[Tuple[int, int]]:
    """The (first, last) byte of each part of bytes ``start`` to the end of a blob of size bytes, in order: parts of
    part_size, the last one shorter."""
    if size <= 0 or part_size <= 0 or not 0 <= start < size:
        raise ValueError(f"cannot split {size} bytes from {start} into parts of {part_size}")
    return [(first, min(first + part_size, size) - 1) for first in range(start, size, part_size)]


def parse_content_range(value: str | None) -> Optional[Tuple[int, int, Optional[int]]]:
    """``bytes 0-99/1000`` -> (0, 99, 1000); the total is None for ``*``; None if the header is absent or unreadable."""
    match = _CONTENT_RANGE_RE.match(value or "")
    if not match:
        return None
    return int(match.group(1)), int(match.group(2)), (int(match.group(3)) if match.group(3) != "*" else None)


def wants_ranges(
    size: int | None,
    connections: int = RANGE_CONNECTIONS,
    threshold: int = RANGE_THRESHOLD,
    part_size: int = RANGE_PART_SIZE,
) -> bool:
    """Whether a blob of this size is worth downloading as several Range requests at once."""
    return size is not None and connections > 1 and part_size > 0 and size >= threshold and size > part_size


def open_reader(
    fetch: Fetch,
    host: str,
    name: str,
    digest: str,
    expected_size: int | None,
    chunk_size: int,
    policy: RetryPolicy,
    sleep: Callable[[float], None],
    connections: int = RANGE_CONNECTIONS,
    threshold: int = RANGE_THRESHOLD,
    part_size: int = RANGE_PART_SIZE,
    start: int = 0,
    held: Iterable[bytes] | None = (),
) -> Any:
    """A reader of a blob: a RangedBlobReader for a big one whose server honours Range, else a BlobReader.

    The first part is asked for with Range: a 206 starts the ranged download, a 200 (the server ignores Range) is
    read as the one stream of a BlobReader. With ``start``, the first ``start`` bytes are not downloaded: ``held``
    gives them (an earlier run received them), hashed first, so the digest is still checked over the whole blob.
    ``held`` None: nobody here has those bytes, the reader checks only the size, and the digest is the destinations'
    to check (a registry refuses an upload whose digest differs when it is committed).
    """
    hasher: Any = _new_hasher(digest) if held is not None else _NoHash()
    for chunk in held or ():
        hasher.update(chunk)
    if expected_size is None or not wants_ranges(expected_size - start, connections, threshold, part_size):
        return BlobReader(
            fetch, host, name, digest, expected_size, chunk_size, policy, sleep, start=start, hasher=hasher
        )
    first = fetch(start, min(start + part_size, expected_size) - 1)
    if first.status_code != 206:
        pending = [first]

        def again(offset: int, end: int | None = None, location: str | None = None) -> Any:
            return pending.pop() if pending and offset == start else fetch(offset)

        return BlobReader(
            again, host, name, digest, expected_size, chunk_size, policy, sleep, start=start, hasher=hasher
        )
    return RangedBlobReader(
        fetch,
        first,
        host,
        name,
        digest,
        expected_size,
        chunk_size,
        policy,
        sleep,
        connections,
        part_size,
        start=start,
        hasher=hasher,
    )


class _NoHash:
    """The hasher of a read whose digest is not checked here (it starts part way and no bytes before were given)."""

    def update(self, data: bytes) -> None:
        """Nothing to hash."""


def check_received(digest: str, host: str, name: str, received: int, size: int | None, hasher: Any) -> None:
    """A downloaded blob is whole (``size`` bytes, when known) and hashes to its digest, or DigestMismatchError."""
    if size is not None and received != size:
        raise DigestMismatchError(f"blob {digest} from {host} for {name}: got {received} bytes, expected {size}")
    if isinstance(hasher, _NoHash):
        return
    actual = f"{digest.split(':', 1)[0]}:{hasher.hexdigest()}"
    if actual != digest:
        raise DigestMismatchError(
            f"blob {digest} from {host} for {name} hashed to {actual}: "
            "the download was corrupted or the registry served other content"
        )


class _ChunkStream:
    """Iteration and read(n) over ``_next_chunk()`` (b"" at the end); a context manager that closes."""

    _current = b""
    _position = 0
    _verified = False

    def _next_chunk(self) -> bytes:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def __iter__(self) -> Iterator[bytes]:
        while True:
            if self._position < len(self._current):
                chunk = self._current[self._position :]
                self._current, self._position = b"", 0
                yield chunk
                continue
            chunk = self._next_chunk()
            if not chunk:
                return
            yield chunk

    def read(self, size: int = -1) -> bytes:
        """Up to size bytes (all the rest if size < 0); b"" at the end."""
        if size is None or size < 0:
            parts = [self._current[self._position :]]
            self._current, self._position = b"", 0
            parts.extend(iter(self._next_chunk, b""))
            return b"".join(parts)
        parts = []
        wanted = size
        while wanted > 0:
            if self._position >= len(self._current):
                self._current, self._position = self._next_chunk(), 0
                if not self._current:
                    break
            piece = self._current[self._position : self._position + wanted]
            self._position += len(piece)
            wanted -= len(piece)
            parts.append(piece)
        return b"".join(parts)

    def readable(self) -> bool:
        return True

    @property
    def verified(self) -> bool:
        """True once the whole blob was read and matched its digest and size."""
        return self._verified

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()


class BlobReader(_ChunkStream):
    """A blob being downloaded: iterate over it for chunks, or read(n) like a file; use it as a context manager.

    The sha256 and the size are checked on the way; when the last byte has been read a mismatch
    raises DigestMismatchError. A connection that breaks mid-way is resumed with a Range request
    (a server that ignores Range is read again from the start, skipping what was already read),
    up to ``policy.retries`` times with its backoff. A reader closed before its end checks nothing.
    ``fetch(offset)`` returns the streamed answer (200, or 206 for an offset) of a GET of the blob.
    """

    def __init__(
        self,
        fetch: Fetch,
        host: str,
        name: str,
        digest: str,
        expected_size: int | None,
        chunk_size: int,
        policy: RetryPolicy,
        sleep: Callable[[float], None],
        start: int = 0,
        hasher: Any = None,
    ) -> None:
        self.name = name
        self.digest = digest
        self.size: Optional[int] = expected_size
        self.bytes_read = start
        self._fetch = fetch
        self._host = host
        self._policy = policy
        self._sleep = sleep
        self._chunk_size = chunk_size
        self._hasher = hasher if hasher is not None else _new_hasher(digest)
        self._response: Any = None
        self._chunks: Optional[Iterator[bytes]] = None
        self._pending = b""
        self._current = b""
        self._position = 0
        self._done = False
        self._verified = False
        self._closed = False
        self._resumes = 0
        self._waited = 0.0
        self._open(start)

    # -- transport ---------------------------------------------------------------------------

    def _open(self, offset: int) -> None:
        response = self._fetch(offset)
        total = None
        skip = offset
        if response.status_code == 206:
            match = re.match(r"\s*bytes\s+(\d+)-(\d+)/(\d+|\*)", response.headers.get("Content-Range", ""))
            if not match or int(match.group(1)) != offset:
                response.close()
                raise RegistryError(
                    f"blob {self.digest} in {self.name} on {self._host}: the registry answered a resume at byte {offset} with another range",
                    status=206,
                )
            total = int(match.group(3)) if match.group(3) != "*" else None
            skip = 0
        else:
            total = content_length(response)
        if total is not None:
            if self.size is None:
                self.size = total
            elif total != self.size:
                response.close()
                raise DigestMismatchError(
                    f"blob {self.digest} in {self.name} on {self._host} is {total} bytes, expected {self.size}",
                    url=strip_query(response.url),
                )
        self._response = response
        self._chunks = response.iter_content(chunk_size=self._chunk_size)
        while skip > 0:
            chunk = next(self._chunks, b"")
            if not chunk:
                break
            if len(chunk) <= skip:
                skip -= len(chunk)
            else:
                self._pending = chunk[skip:]
                skip = 0

    def _resume(self, reason: str) -> None:
        delay = self._policy.backoff_delay(self._resumes)
        if not self._policy.allows(self._resumes + 1, self._waited, delay):
            self._close_response()
            raise RegistryError(
                f"download of blob {self.digest} from {self._host} for {self.name} broke off at byte "
                f"{self.bytes_read} of {self.size if self.size is not None else '?'} {self._resumes + 1} times: {reason}"
            )
        self._close_response()
        self._sleep(delay)
        self._waited += budgeted(delay)
        self._resumes += 1
        self._open(self.bytes_read)

    def _account(self, chunk: bytes) -> bytes:
        self.bytes_read += len(chunk)
        if self.size is not None and self.bytes_read > self.size:
            self.close()
            raise DigestMismatchError(
                f"blob {self.digest} from {self._host} for {self.name} is longer than its {self.size} bytes",
            )
        self._hasher.update(chunk)
        return chunk

    def _finish(self) -> None:
        self._close_response()
        self._done = True
        check_received(self.digest, self._host, self.name, self.bytes_read, self.size, self._hasher)
        self._verified = True

    def _next_chunk(self) -> bytes:
        if self._done or self._closed:
            return b""
        if self._pending:
            chunk, self._pending = self._pending, b""
            return self._account(chunk)
        while True:
            try:
                chunk = next(self._chunks) if self._chunks is not None else b""
            except StopIteration:
                if self.size is not None and self.bytes_read < self.size:
                    self._resume(f"the connection closed after {self.bytes_read} bytes")
                    if self._pending:
                        chunk, self._pending = self._pending, b""
                        return self._account(chunk)
                    continue
                self._finish()
                return b""
            except TRANSIENT_EXCEPTIONS as exc:
                self._resume(exception_reason(exc))
                if self._pending:
                    chunk, self._pending = self._pending, b""
                    return self._account(chunk)
                continue
            if chunk:
                return self._account(chunk)

    def _close_response(self) -> None:
        if self._response is not None:
            self._response.close()
            self._response = None
            self._chunks = None

    def close(self) -> None:
        self._closed = True
        self._close_response()


class _Part:
    """One Range request's bytes: received in order by a worker, taken in order by the reader."""

    __slots__ = ("start", "end", "received", "chunks", "done", "response")

    def __init__(self, start: int, end: int) -> None:
        self.start, self.end = start, end
        self.received = 0
        self.chunks: Deque[bytes] = collections.deque()
        self.done = False
        self.response: Any = None

    @property
    def length(self) -> int:
        return self.end - self.start + 1


class RangedBlobReader(_ChunkStream):
    """A big blob downloaded as parts over several connections at once, read as one stream in order.

    Guarantees: the chunks come out in the blob's order, hashed on the way; when the last byte has been read a
    size or digest mismatch raises DigestMismatchError (so an upload fed from it never completes with other bytes).
    Workers fetch parts ahead of the reader, at most ``connections + 1`` parts from the one being read, and the parts
    after the one being read hold at most ``ahead`` bytes between them (and a chunk per worker), counted against
    ``budget`` (the process's ``AHEAD``) too: memory is bounded by those plus the part being read, whatever the sizes.
    A part's broken connection is continued with Range from the byte it reached (up to ``policy.retries`` times per
    part, with its backoff); a reused redirect URL that is refused (400/401/403) is dropped and the registry asked
    again, which renews the token on a 401. The first error of any worker is raised to the reader, and ends the
    others. Closing the reader stops the workers and closes their connections.
    ``first`` is the answer (206) to the request for the first part.
    """

    def __init__(
        self,
        fetch: Fetch,
        first: Any,
        host: str,
        name: str,
        digest: str,
        size: int,
        chunk_size: int,
        policy: RetryPolicy,
        sleep: Callable[[float], None],
        connections: int = RANGE_CONNECTIONS,
        part_size: int = RANGE_PART_SIZE,
        start: int = 0,
        hasher: Any = None,
        ahead: int = RANGE_AHEAD,
        budget: AheadBudget | None = None,
    ) -> None:
        self.name = name
        self.digest = digest
        self.size: Optional[int] = size
        self.bytes_read = start
        self.requests = 1
        """Range requests sent (the first part's included), renewals and resumes too."""
        self.resumes = 0
        """Parts continued after a broken connection."""
        self.renewals = 0
        """Times a reused redirect URL was refused and the registry asked again."""
        self._fetch = fetch
        self._host = host
        self._policy = policy
        self._sleep = sleep
        self._chunk_size = chunk_size
        self._hasher = hasher if hasher is not None else _new_hasher(digest)
        self._parts = [_Part(first_byte, end) for first_byte, end in plan_ranges(size, part_size, start)]
        self._window = max(1, connections) + 1
        self._ahead = max(ahead, 1)
        self._held = 0  # bytes in the chunks of the parts after the head (the part being read), counted in the budget
        self._budget = budget if budget is not None else AHEAD
        self.most_held = 0
        """The most bytes the parts after the one being read held at once."""
        self._cond = threading.Condition()
        self._next = 1  # the first part is fetched by the first worker, from `first`
        self._head = 0
        self._error: Optional[BaseException] = None
        self._closed = False
        self._done = False
        self._verified = False
        self._location: Optional[str] = None
        self._check_range(first, start, self._parts[0].end)
        self._remember(first)
        self._threads = [
            threading.Thread(
                target=self._work,
                args=(first if index == 0 else None,),
                name=f"range {digest[7:19]} #{index}",
                daemon=True,
            )
            for index in range(min(max(1, connections), len(self._parts)))
        ]
        for thread in self._threads:
            thread.start()

    # -- workers -----------------------------------------------------------------------------

    def _work(self, first: Any) -> None:
        try:
            if first is not None:
                self._fetch_part(self._parts[0], first)
            while True:
                part = self._take()
                if part is None:
                    return
                self._fetch_part(part, None)
        except BaseException as exc:  # pylint: disable=broad-exception-caught
            # Handed to the reader, which raises it.
            with self._cond:
                if self._error is None and not self._closed:
                    self._error = exc
                self._cond.notify_all()
            if first is not None:
                first.close()

    def _take(self) -> Optional[_Part]:
        """The next part to fetch, once it is within the window of the part being read; None when there is none."""
        with self._cond:
            while (
                not self._closed and self._error is None and self._head + self._window <= self._next < len(self._parts)
            ):
                self._cond.wait()
            if self._closed or self._error is not None or self._next >= len(self._parts):
                return None
            part = self._parts[self._next]
            self._next += 1
            return part

    def _fetch_part(self, part: _Part, response: Any) -> None:
        failures = 0
        waited = 0.0
        while True:
            if response is None:
                response = self._open_range(part.start + part.received, part.end)
            with self._cond:
                if self._closed:
                    response.close()
                    return
                part.response = response
            reason = ""
            try:
                for chunk in response.iter_content(chunk_size=self._chunk_size):
                    if not chunk:
                        continue
                    if not self._keep(part, chunk):
                        return
            except Exception as exc:  # pylint: disable=broad-exception-caught
                if self._closed:
                    return  # the reader closed the connection under us
                if not isinstance(exc, TRANSIENT_EXCEPTIONS):
                    raise
                reason = exception_reason(exc)
            finally:
                with self._cond:
                    part.response = None
                response.close()
            response = None
            if part.received == part.length:
                with self._cond:
                    part.done = True
                    self._cond.notify_all()
                return
            reason = reason or f"the connection closed after {part.received} of {part.length} bytes"
            delay = self._policy.backoff_delay(failures)
            if not self._policy.allows(failures + 1, waited, delay):
                raise RegistryError(
                    f"download of blob {self.digest} from {self._host} for {self.name}: bytes {part.start}-{part.end} broke off "
                    f"at byte {part.start + part.received} {failures + 1} times: {reason}"
                )
            self._sleep(delay)
            waited += budgeted(delay)
            failures += 1
            with self._cond:
                self.resumes += 1

    def _keep(self, part: _Part, chunk: bytes) -> bool:
        """Hand a chunk of ``part`` to the reader; a part ahead of the one being read first waits until the chunk fits in
        ``ahead`` and in the budget (its connection is not read meanwhile). False if the reader closed."""

        def stopped() -> bool:
            return self._closed or self._error is not None or part is self._parts[self._head]

        with self._cond:
            while not stopped() and self._held and self._held + len(chunk) > self._ahead:
                self._cond.wait()  # far enough ahead: the connection waits unread until the reader catches up
            ahead = not stopped()
        counted = ahead and self._budget.take(len(chunk), stopped)  # not under the lock: the reader goes on meanwhile
        with self._cond:
            if self._closed:
                self._budget.give(len(chunk) if counted else 0)
                return False
            if part.received + len(chunk) > part.length:
                self._budget.give(len(chunk) if counted else 0)
                raise DigestMismatchError(
                    f"blob {self.digest} from {self._host} for {self.name}: the answer for bytes "
                    f"{part.start}-{part.end} is longer than asked for"
                )
            if counted and part is self._parts[self._head]:  # it became the part being read meanwhile
                self._budget.give(len(chunk))
                counted = False
            part.chunks.append(chunk)
            part.received += len(chunk)
            if counted:
                self._held += len(chunk)
                self.most_held = max(self.most_held, self._held)
            self._cond.notify_all()
        return True

    def _open_range(self, offset: int, end: int) -> Any:
        """The 206 answer for bytes offset-end: from the reused redirect URL, or (it was refused, or there is none) the registry."""
        with self._cond:
            location = self._location
            self.requests += 1
        response = None
        if location is not None:
            try:
                response = self._fetch(offset, end, location)
            except AirgapError as exc:
                if getattr(exc, "status", None) not in EXPIRED_STATUSES:
                    raise
                with self._cond:
                    if self._location == location:
                        self._location = None
                    self.renewals += 1
                    self.requests += 1
        if response is None:
            response = self._fetch(offset, end)
            self._remember(response)
        self._check_range(response, offset, end)
        return response

    def _remember(self, response: Any) -> None:
        """Keep the URL the registry redirected to (elsewhere than the registry) for the next parts."""
        url = getattr(response, "url", None)
        if url and host_of(url) != self._host:
            with self._cond:
                self._location = url

    def _check_range(self, response: Any, offset: int, end: int) -> None:
        found = parse_content_range(response.headers.get("Content-Range")) if response.status_code == 206 else None
        if found is None or found[0] != offset or found[1] != end:
            response.close()
            raise RegistryError(
                f"blob {self.digest} in {self.name} on {self._host}: asked for bytes {offset}-{end}, the server answered "
                f"{response.status_code} with {'the range ' + response.headers.get('Content-Range', '') if found else 'another range'}",
                status=response.status_code,
                url=strip_query(getattr(response, "url", "") or ""),
            )
        if found[2] is not None and found[2] != self.size:
            response.close()
            raise DigestMismatchError(
                f"blob {self.digest} in {self.name} on {self._host} is {found[2]} bytes, expected {self.size}",
                url=strip_query(getattr(response, "url", "") or ""),
            )

    # -- reader ------------------------------------------------------------------------------

    def _next_chunk(self) -> bytes:
        if self._done or self._closed:
            return b""
        chunk: Optional[bytes] = None
        error: Optional[BaseException] = None
        with self._cond:
            while True:
                if self._error is not None:
                    error = self._error
                    break
                part = self._parts[self._head]
                if part.chunks:
                    chunk = part.chunks.popleft()
                    break
                if part.done:
                    self._head += 1
                    if self._head < len(self._parts):  # the new head's bytes are the reader's now, not ahead of it
                        mine = sum(len(c) for c in self._parts[self._head].chunks)
                        self._held -= mine
                        self._budget.give(mine)
                    self._cond.notify_all()
                    if self._head == len(self._parts):
                        break
                    continue
                self._cond.wait()
        if error is not None:
            self.close()
            raise error
        if chunk is None:
            self._finish()
            return b""
        self.bytes_read += len(chunk)
        self._hasher.update(chunk)
        return chunk

    def _finish(self) -> None:
        self._done = True
        self.close()
        check_received(self.digest, self._host, self.name, self.bytes_read, self.size, self._hasher)
        self._verified = True

    def close(self) -> None:
        """Stop the workers: their connections are closed and what they fetched ahead is dropped."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            responses = [part.response for part in self._parts if part.response is not None]
            for part in self._parts:
                part.chunks.clear()
            held, self._held = self._held, 0
            self._budget.give(held)
            self._cond.notify_all()
        for response in responses:
            try:
                response.close()
            except Exception:  # pylint: disable=broad-exception-caught
                pass  # a connection being torn down by its worker at the same moment


class UploadBody:
    """A streaming request body of a known size: requests sends Content-Length and iterates without buffering.

    It checks the size and the digest of what it sends, and raises (aborting the request) on a mismatch.
    """

    def __init__(self, chunks: Iterable[bytes], size: int, digest: str, what: str, verify: bool = True) -> None:
        self._chunks = chunks
        self._size = size
        self._digest = digest
        self._what = what
        self._verify = verify
        self.sent = 0

    def __len__(self) -> int:
        return self._size

    def __iter__(self) -> Iterator[bytes]:
        # One chunk is held back until the next one arrives, and the last until the data is verified,
        # so a registry never receives a complete body with the wrong content.
        hasher = _new_hasher(self._digest) if self._verify else None
        held: Optional[bytes] = None
        for chunk in self._chunks:
            if not chunk:
                continue
            chunk = bytes(chunk)
            self.sent += len(chunk)
            if self.sent > self._size:
                raise DigestMismatchError(f"{self._what}: the data is longer than the declared {self._size} bytes")
            if hasher is not None:
                hasher.update(chunk)
            if held is not None:
                yield held
            held = chunk
        if self.sent != self._size:
            raise DigestMismatchError(f"{self._what}: the data has {self.sent} bytes, {self._size} were declared")
        actual = f"{self._digest.split(':', 1)[0]}:{hasher.hexdigest()}" if hasher is not None else self._digest
        if actual != self._digest:
            raise DigestMismatchError(f"{self._what}: the data hashes to {actual}")
        if held is not None:
            yield held
