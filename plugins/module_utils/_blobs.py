# Copyright (c) airgap.ngc contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private: blob streams checked against their digest: a download that resumes with Range, an upload body. Not a public API.

Neither holds a blob in memory nor knows the registry API: the download asks a callable for the
answer from a byte offset, the upload body is handed to requests as ``data``.
"""
from __future__ import annotations

import hashlib
import re
from typing import Any, Callable, Iterable, Iterator, Optional

from ansible_collections.airgap.ngc.plugins.module_utils._errors import DigestMismatchError, RegistryError, exception_reason
from ansible_collections.airgap.ngc.plugins.module_utils._http import TRANSIENT_EXCEPTIONS, RetryPolicy, content_length, strip_query

DEFAULT_CHUNK_SIZE = 1024 * 1024

_HASH_ALGORITHMS = ("sha256", "sha512")


def _new_hasher(digest: str) -> Any:
    algorithm = digest.split(":", 1)[0]
    if algorithm not in _HASH_ALGORITHMS:
        raise RegistryError(f"unsupported digest algorithm in {digest!r}")
    return hashlib.new(algorithm)


class BlobReader:
    """A blob being downloaded: iterate over it for chunks, or read(n) like a file; use it as a context manager.

    The sha256 and the size are checked on the way; when the last byte has been read a mismatch
    raises DigestMismatchError. A connection that breaks mid-way is resumed with a Range request
    (a server that ignores Range is read again from the start, skipping what was already read),
    up to ``policy.retries`` times with its backoff. A reader closed before its end checks nothing.
    ``fetch(offset)`` returns the streamed answer (200, or 206 for an offset) of a GET of the blob.
    """

    def __init__(self, fetch: Callable[[int], Any], host: str, name: str, digest: str, expected_size: int | None,
                 chunk_size: int, policy: RetryPolicy, sleep: Callable[[float], None]) -> None:
        self.name = name
        self.digest = digest
        self.size: Optional[int] = expected_size
        self.bytes_read = 0
        self._fetch = fetch
        self._host = host
        self._policy = policy
        self._sleep = sleep
        self._chunk_size = chunk_size
        self._hasher = _new_hasher(digest)
        self._response: Any = None
        self._chunks: Optional[Iterator[bytes]] = None
        self._pending = b""
        self._current = b""
        self._position = 0
        self._done = False
        self._verified = False
        self._closed = False
        self._resumes = 0
        self._open(0)

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
        if self._resumes >= self._policy.retries:
            self._close_response()
            raise RegistryError(
                f"download of blob {self.digest} from {self._host} for {self.name} broke off at byte "
                f"{self.bytes_read} of {self.size if self.size is not None else '?'} {self._resumes + 1} times: {reason}"
            )
        self._close_response()
        self._sleep(self._policy.backoff_delay(self._resumes))
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
        if self.size is not None and self.bytes_read != self.size:
            raise DigestMismatchError(
                f"blob {self.digest} from {self._host} for {self.name}: got {self.bytes_read} bytes, expected {self.size}"
            )
        actual = f"{self.digest.split(':', 1)[0]}:{self._hasher.hexdigest()}"
        if actual != self.digest:
            raise DigestMismatchError(
                f"blob {self.digest} from {self._host} for {self.name} hashed to {actual}: "
                "the download was corrupted or the registry served other content"
            )
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

    # -- public ------------------------------------------------------------------------------

    def __iter__(self) -> Iterator[bytes]:
        while True:
            if self._position < len(self._current):
                chunk = self._current[self._position:]
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
            parts = [self._current[self._position:]]
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
            piece = self._current[self._position:self._position + wanted]
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

    def _close_response(self) -> None:
        if self._response is not None:
            self._response.close()
            self._response = None
            self._chunks = None

    def close(self) -> None:
        self._closed = True
        self._close_response()

    def __enter__(self) -> BlobReader:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()


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
