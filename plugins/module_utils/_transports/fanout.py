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
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Sequence

from ansible_collections.airgap.ngc.plugins.module_utils._types.blob_sink import BlobSink
from ansible_collections.airgap.ngc.plugins.module_utils._types.oci import CHUNK_SIZE
from ansible_collections.airgap.ngc.plugins.module_utils._types.errors import AirgapError, DigestMismatchError, is_echo

QUEUE_DEPTH = 8
_END = object()


class _Aborted(Exception):
    """Raised inside an upload's body iterator to abandon the request."""


class UploadSink(BlobSink):
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
                    raise AirgapError(
                        f"{self.path} ended before blob {self.digest} it holds: the archive changed during the run"
                    )
                left -= len(data)
                hasher.update(data)
                if held:
                    yield held
                held = data
        if hasher.hexdigest() != expected:
            raise DigestMismatchError(
                f"blob {self.digest} read back from {self.path} hashes to {algorithm}:{hasher.hexdigest()}: "
                "the file was changed; run again to rewrite it"
            )
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


def forget_held(sinks: Sequence[BlobSink]) -> None:
    """The blob's bytes were not the blob (a digest mismatch): nothing a sink holds of it may be kept for a next run."""
    for sink in sinks:
        try:
            sink.inner().forget()  # an upload session is cancelled, a file cut back to nothing
        except (AirgapError, OSError, ValueError):
            pass


def fan_out(chunks: Iterable[bytes], sinks: Sequence[BlobSink], advance: Callable[[int], None] | None = None) -> int:
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
    except BaseException as exc:
        if isinstance(exc, DigestMismatchError):
            forget_held(sinks)
        for sink in sinks:
            try:
                sink.abort()
            except Exception:  # pylint: disable=broad-exception-caught
                pass
        raise
    return total


@dataclass
class Totals:
    """Bytes read from the source and bytes not needed, added to from several transfer threads."""

    transferred: int = 0
    reused: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, transferred: int = 0, reused: int = 0) -> None:
        with self._lock:
            self.transferred += transferred
            self.reused += reused


class GuardedSink(BlobSink):
    """A destination's sink in a shared read: if it fails, that destination (``owner``) is dropped, not the others.

    ``owner`` is any object with an ``error`` attribute (a destination's per-image write); its first real error is kept.
    """

    def __init__(self, owner: Any, sink: BlobSink) -> None:
        self.owner, self.sink = owner, sink

    @property
    def failed(self) -> bool:
        return self.owner.error is not None

    def inner(self) -> BlobSink:
        return self.sink

    def _failed(self, exc: BaseException) -> None:
        note_error(self.owner, exc)
        self.abort()

    def write(self, data: bytes) -> None:
        if self.owner.error is None:
            try:
                self.sink.write(data)
            except (AirgapError, OSError) as exc:
                self._failed(exc)

    def close(self) -> None:
        if self.owner.error is not None:
            self.abort()
            return
        try:
            self.sink.close()
        except (AirgapError, OSError) as exc:
            self._failed(exc)

    def abort(self) -> None:
        try:
            self.sink.abort()
        except Exception:  # pylint: disable=broad-exception-caught
            pass


def note_error(owner: Any, exc: BaseException) -> None:
    """Keep an owner's first real error: an error marked ``echo`` (a closed archive) gives way to its cause."""
    if owner.error is None or (is_echo(owner.error) and not is_echo(exc)):
        owner.error = exc


def sinks_of(owners: Sequence[Any], digest: str, size: int) -> list[GuardedSink]:
    """The guarded sinks of one blob in the owners that still work and lack it (``owner.sink()`` returns None)."""
    sinks = []
    for owner in owners:
        if owner.error is not None:
            continue
        try:
            sink = owner.sink(digest, size)
        except (AirgapError, OSError) as exc:
            note_error(owner, exc)
            continue
        if sink is not None:
            sinks.append(GuardedSink(owner, sink))
    return sinks


def _while_wanted(chunks: Iterable[bytes], sinks: Sequence[BlobSink]) -> Iterator[bytes]:
    """The chunks, until every sink has failed (no point reading on)."""
    for data in chunks:
        if all(sink.failed for sink in sinks):
            return
        yield data


def resume_point(sinks: Sequence[BlobSink], allowed: bool) -> tuple[int, Iterable[bytes] | None]:
    """Where a blob's download can start, and what the reader hashes first: (0, ()) for the whole blob.

    ``start`` is what every sink already holds from a run that was cut off (a sink's ``resume_from``): sinks holding
    more are cut back (``restart``; all of them to nothing when the read cannot start part way), until they agree (a
    registry session cut back below what its registry holds starts over at 0, and then so does every sink). The bytes
    before ``start`` are a sink's ``held()`` (a file kept here), hashed by the reader so the whole blob's digest is
    still checked; if only sinks that check the digest themselves hold them (``verifies_digest``: a registry checks
    the upload at its final PUT) there are none to hash: ``None``, the read starts there and its digest is left to
    them (its size is still checked). A sink that neither holds the bytes nor checks the digest never gets such a
    read: everything starts over instead."""
    inner = [sink.inner() for sink in sinks]
    start = 0
    while inner:
        start = min(sink.resume_from for sink in inner) if allowed else 0
        higher = [sink for sink in inner if sink.resume_from > start]
        if not higher:
            break
        for sink in higher:
            sink.restart(start)
    if start == 0:
        return 0, ()
    keeper = next((sink for sink in inner if sink.holds_bytes), None)
    if keeper is not None:
        return start, keeper.held()
    if all(sink.verifies_digest for sink in inner):
        return start, None
    for sink in inner:  # a sink holding them with no way to check the digest: no unverified read for it
        sink.restart(0)
    return 0, ()


def continued(chunks: Iterator[bytes], start: int, held: Iterable[bytes] | None, what: str) -> Iterator[bytes]:
    """A local source's blob from byte ``start`` on, for sinks holding the bytes before it (``resume_point``).

    ``chunks`` is the source's whole blob, checked against its digest as it streams (the last chunk held back until
    it is). Its first ``start`` bytes are read here, not passed on: reading them again costs only the local disk, and
    keeps the source's own digest check whole. With ``held`` (a sink's kept copy of them) each kept byte is compared
    with the source's: a kept file with other bytes raises DigestMismatchError, so nothing it kept is used. None: the
    sinks check the digest themselves (a registry, at its final PUT)."""
    kept = iter(held) if held is not None else None
    pending = b""  # kept bytes read but not compared yet
    skipped = 0
    try:
        for data in chunks:
            if skipped < start:
                take = min(len(data), start - skipped)
                if kept is not None:
                    view = memoryview(data)[:take]
                    while view:
                        if not pending:
                            pending = next(kept, b"")
                            if not pending:
                                raise DigestMismatchError(f"{what}: the kept bytes end before byte {start}")
                        size = min(len(pending), len(view))
                        if pending[:size] != view[:size]:
                            raise DigestMismatchError(
                                f"{what}: the bytes kept from a run that was cut off are not the "
                                f"blob's (they differ before byte {start}); it is read whole again"
                            )
                        pending, view = pending[size:], view[size:]
                skipped += take
                data = data[take:]
                if not data:
                    continue
            yield data
        if skipped < start:
            raise DigestMismatchError(f"{what}: the blob ended at byte {skipped}, before the {start} bytes kept of it")
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()


def transfer(
    blobs: dict[str, int],
    sinks_for: Callable[[str, int], list[Any]],
    open_blob: Callable[..., Any],
    local: dict[str, LocalBlob],
    parallel: int,
    totals: Totals,
    advance: Callable[[int], None],
    resumes: bool = False,
    claim: Callable[[str, int], AbstractContextManager[Any]] | None = None,
) -> None:
    """Read each blob once and feed it to its sinks, ``parallel`` blobs at a time, largest first.

    ``open_blob(digest, size)`` is a context manager of verified chunks from the source; a blob in ``local`` (an
    archive of this run) is read from there instead, if its file is still the one indexed. A read that fails aborts
    that blob's sinks and fails their owners (``GuardedSink``), not the owners that did not need the blob; with sinks
    of no owner it raises (the first error, not its echoes). A sink that fails is its owner's business. With
    ``resumes`` (a source that can start a blob part way, ``open_blob(digest, size, start, held)``), a blob whose
    sinks all hold its first bytes from a run that was cut off is read from there on (``held`` None: the sinks check
    the digest themselves, see ``resume_point``). ``claim(digest, size)``, when given, is held from before the sinks
    are asked for until the blob's read and its sinks ended (the copier: one read of a blob at a time in the run).
    """

    def one(item: tuple[str, int]) -> None:
        with claim(*item) if claim is not None else nullcontext():
            claimed(item)

    def claimed(item: tuple[str, int]) -> None:
        digest, size = item
        sinks = sinks_for(digest, size)
        if not sinks:
            advance(size)
            return
        try:
            read(digest, size, sinks)
        except (AirgapError, OSError) as exc:
            if not all(isinstance(sink, GuardedSink) for sink in sinks):
                raise
            for sink in sinks:
                note_error(sink.owner, exc)

    def read(digest: str, size: int, sinks: list[Any]) -> None:
        start, held = resume_point(sinks, resumes and digest not in local)
        if start:
            advance(start)
            totals.add(reused=start)
            try:
                with open_blob(digest, size, start, held) as reader:
                    totals.add(transferred=fan_out(_while_wanted(reader, sinks), sinks, advance))
            except BaseException:
                for sink in sinks:
                    sink.abort()
                raise
            return
        try:
            found = local.get(digest)
            if found is not None and found.size == size:
                try:
                    chunks = found.open()
                except LocalBlobChanged:
                    local.pop(digest, None)  # not trusted: read it from the source below
                else:
                    fan_out(_while_wanted(chunks, sinks), sinks, advance)
                    totals.add(reused=size)
                    return
            with open_blob(digest, size) as reader:
                totals.add(transferred=fan_out(_while_wanted(reader, sinks), sinks, advance))
        except BaseException:
            for sink in sinks:  # a read that failed before fan_out began: free the sinks (upload sessions, tar slot)
                sink.abort()
            raise

    # Largest first: a big layer starts at once instead of being left to stream alone at the end
    # (and, for an archive, goes straight into the tar rather than through a spool file).
    order = sorted(blobs.items(), key=lambda item: -item[1])
    if len(order) <= 1 or parallel <= 1:
        for item in order:
            one(item)
        return
    errors: list[BaseException] = []

    def guarded(item: tuple[str, int]) -> None:
        try:
            one(item)
        except BaseException as exc:  # pylint: disable=broad-exception-caught
            errors.append(exc)

    with ThreadPoolExecutor(max_workers=parallel) as pool:
        list(pool.map(guarded, order))
    if errors:
        raise next((exc for exc in errors if not is_echo(exc)), errors[0])
