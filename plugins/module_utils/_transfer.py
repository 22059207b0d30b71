# Copyright (c) airgap.ngc contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private: one read of a blob, fed to many sinks at once, in constant memory. Not a public API.

A blob is read once (from the source registry, or from an archive this run already wrote)
and every chunk goes to each sink: registry uploads (each on its own thread, fed through a
small bounded queue) and archive writers. Memory is bounded by the chunk size times the
queue depth per sink, whatever the blob's size.
"""
from __future__ import annotations

import hashlib
import os
import queue
import tarfile
import threading
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Protocol, Sequence

from ansible_collections.airgap.ngc.plugins.module_utils._errors import AirgapError, DigestMismatchError

CHUNK_SIZE = 1024 * 1024
QUEUE_DEPTH = 8
_END = object()


class Sink(Protocol):
    """Where a blob's bytes go: write() each chunk, then close(), or abort()."""

    def write(self, data: bytes) -> None: ...  # pragma: no cover

    def close(self) -> None: ...  # pragma: no cover

    def abort(self) -> None: ...  # pragma: no cover


class _Aborted(Exception):
    """Raised inside an upload's body iterator to abandon the request."""


class UploadSink:
    """Streams a blob into a registry upload that runs on its own thread."""

    def __init__(self, upload: Callable[[Iterator[bytes]], Any], what: str, depth: int = QUEUE_DEPTH) -> None:
        self.what = what
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(upload,), name=f"upload {what}", daemon=True)
        self._thread.start()

    def _chunks(self) -> Iterator[bytes]:
        while True:
            item = self._queue.get()
            if item is _END:
                return
            if isinstance(item, _Aborted):
                raise item
            yield item

    def _run(self, upload: Callable[[Iterator[bytes]], Any]) -> None:
        try:
            upload(self._chunks())
        except BaseException as exc:  # pylint: disable=broad-exception-caught
            self._error = exc
            while True:  # unblock a writer waiting on a full queue
                try:
                    self._queue.get_nowait()
                except queue.Empty:
                    break

    def _put(self, item: Any) -> None:
        while self._thread.is_alive():
            try:
                self._queue.put(item, timeout=0.5)
                return
            except queue.Full:
                continue
        self._raise()

    def _raise(self) -> None:
        if self._error is not None and not isinstance(self._error, _Aborted):
            if isinstance(self._error, AirgapError):
                raise self._error
            raise AirgapError(f"{self.what} failed: {self._error}")

    def write(self, data: bytes) -> None:
        if self._error is not None:
            self._raise()
        self._put(data)

    def close(self) -> None:
        self._put(_END)
        self._thread.join()
        self._raise()

    def abort(self) -> None:
        if self._thread.is_alive():
            try:
                self._queue.put(_Aborted(), timeout=5)
            except queue.Full:
                pass
        self._thread.join(timeout=30)


class LocalBlobChanged(AirgapError):
    """The file a local blob was indexed in is no longer the same file: read the blob from its source instead."""


@dataclass(frozen=True)
class LocalBlob:
    """A blob inside an archive this run wrote: the file, where its data starts, its size and digest.

    ``identity`` is the file's (device, inode, size, mtime) when it was indexed. ``open()`` refuses a file that
    changed since (another process may have replaced it), and the chunks it yields are hashed: the last one is
    held back until the data hashes to ``digest``, so a sink never completes a blob with other content.
    """

    path: str
    offset: int
    size: int
    digest: str
    identity: tuple[int, int, int, int]

    def open(self, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
        """The blob's chunks; raises LocalBlobChanged at once (before any chunk) if the file is not the one indexed."""
        try:
            handle = open(self.path, "rb")  # pylint: disable=consider-using-with
        except OSError:
            raise LocalBlobChanged(f"{self.path} is gone") from None
        if _identity(os.fstat(handle.fileno())) != self.identity:
            handle.close()
            raise LocalBlobChanged(f"{self.path} was replaced after this run wrote it")
        return self._chunks(handle, chunk_size)

    def _chunks(self, handle: Any, chunk_size: int) -> Iterator[bytes]:
        algorithm, expected = self.digest.split(":", 1)
        hasher = hashlib.new(algorithm)
        held = b""
        with handle:
            handle.seek(self.offset)
            left = self.size
            while left > 0:
                data = handle.read(min(chunk_size, left))
                if not data:
                    raise AirgapError(f"{self.path} ended before blob {self.digest} it holds: the archive changed during the run")
                left -= len(data)
                hasher.update(data)
                if held:
                    yield held
                held = data
        if hasher.hexdigest() != expected:
            raise DigestMismatchError(f"blob {self.digest} read back from {self.path} hashes to {algorithm}:{hasher.hexdigest()}: "
                                      "the file was changed; run again to rewrite it")
        if held:
            yield held


def _identity(stat: os.stat_result) -> tuple[int, int, int, int]:
    return (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns)


def index_archive_blobs(path: str) -> dict[str, LocalBlob]:
    """Where each ``blobs/<alg>/<hex>`` member of a finished archive lies, by digest."""
    found: dict[str, LocalBlob] = {}
    with open(path, "rb") as handle:
        identity = _identity(os.fstat(handle.fileno()))
        with tarfile.open(fileobj=handle, mode="r:") as archive:
            for member in archive:
                parts = member.name.split("/")
                if member.isfile() and len(parts) == 3 and parts[0] == "blobs":
                    digest = f"{parts[1]}:{parts[2]}"
                    found[digest] = LocalBlob(os.path.abspath(path), member.offset_data, member.size, digest, identity)
    return found


def fan_out(chunks: Iterator[bytes], sinks: Sequence[Sink], advance: Callable[[int], None] | None = None) -> int:
    """Send every chunk to every sink, then close them; abort them all if anything fails. Returns the bytes read."""
    total = 0
    try:
        for data in chunks:
            for sink in sinks:
                sink.write(data)
            total += len(data)
            if advance is not None:
                advance(len(data))
        for sink in sinks:
            sink.close()
    except BaseException:
        for sink in sinks:
            try:
                sink.abort()
            except Exception:  # pylint: disable=broad-exception-caught
                pass
        raise
    return total
