# Copyright (c) airgap.ngc contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private: streaming docker-archive / OCI image layout tar writers (push-style blob sinks). Not a public API."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import tarfile
import tempfile
import threading
from dataclasses import asdict, dataclass, field
from typing import Any, Iterator

from ansible_collections.airgap.ngc.plugins.module_utils._types.blob_sink import BlobSink
from ansible_collections.airgap.ngc.plugins.module_utils._types.errors import (
    AirgapError,
    ConfigError,
    DigestMismatchError,
)
from ansible_collections.airgap.ngc.plugins.module_utils._formats.files import (
    RESUME_MIN,
    claim_live,
    kept_beside,
    publish,
    os_error,
    partial_name,
    register_live,
    remove_quietly,
    unregister_live,
)
from ansible_collections.airgap.ngc.plugins.module_utils._types.oci import (
    CHUNK_SIZE,
    blob_path as layout_blob_path,
    ANNOTATION_IMAGE_NAME,
    INDEX_MEDIA_TYPES,
    MEDIA_OCI_INDEX,
    MEDIA_OCI_MANIFEST,
    OCI_LAYOUT,
    descriptor,
    is_attestation,
)
from ansible_collections.airgap.ngc.plugins.module_utils._types.reference import is_digest

FORMATS = ("docker", "oci")

_BLOCK = 512
_RECORD = 20 * _BLOCK
_KEEP_SMALL_MAX = 4 << 20


@dataclass(frozen=True)
class ArchiveResult:
    """A committed archive: where it is, how big, and the sha256 of the whole file."""

    path: str
    fmt: str
    size: int
    sha256: str
    blobs: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def blob_path(digest: str) -> str:
    """Member name of a blob inside the tar (the layout's ``blob_path``), for a digest checked first."""
    return layout_blob_path(_check_digest(digest))


class ArchiveClosedError(AirgapError):
    """The archive was committed or aborted (often by another thread's failure, which is the error to report)."""

    echo = True  # the failure that closed it is the one to report


class ArchiveBlobSink(BlobSink):
    """Receives one blob's bytes: write(chunk) any number of times, then close(); abort() drops the blob.

    Used as a context manager it closes on success and aborts on an exception.
    """

    skipped = False
    bad = False  # what was written is not the blob (too long, too short, another digest): never kept for a next run

    def __init__(self, writer: ArchiveWriter, digest: str, size: int) -> None:
        self.writer = writer
        self.digest = digest
        self.size = size
        self.written = 0
        self._done = False
        self._hash = hashlib.new(digest.split(":", 1)[0]) if writer.verify_digests else None

    def __enter__(self) -> ArchiveBlobSink:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def write(self, data: bytes) -> None:
        if self._done:
            raise AirgapError(f"blob {self.digest} for archive {self.writer.path} is already closed")
        if self.written + len(data) > self.size:
            self.bad = True
            self.abort()
            raise AirgapError(
                f"blob {self.digest} for archive {self.writer.path}: more than the declared {self.size} bytes were written"
            )
        self._write(data)
        self.written += len(data)
        if self._hash is not None:
            self._hash.update(data)

    def close(self) -> None:
        if self._done:
            return
        if self.written != self.size:
            self.bad = True
            self.abort()
            raise AirgapError(
                f"blob {self.digest} for archive {self.writer.path}: got {self.written} bytes, expected {self.size}"
            )
        if self._hash is not None and f"{self._hash.name}:{self._hash.hexdigest()}" != self.digest:
            self.bad = True
            self.abort()
            raise DigestMismatchError(f"blob for archive {self.writer.path} does not hash to {self.digest}")
        self._done = True
        self._finish()

    def abort(self) -> None:
        if self._done:
            return
        self._done = True
        self._drop()

    def _write(self, data: bytes) -> None:
        raise NotImplementedError

    def _finish(self) -> None:
        raise NotImplementedError

    def _drop(self) -> None:
        raise NotImplementedError


class _SkipSink(ArchiveBlobSink):
    """The blob is already in the archive (or being written by another sink): count and discard."""

    skipped = True

    def _write(self, data: bytes) -> None:
        return

    def _finish(self) -> None:
        return

    def _drop(self) -> None:
        return


class _DirectSink(ArchiveBlobSink):
    """Streams straight into the tar: header first (the size is known), then the data, then the padding.

    A resumed one (``kept``: the member an earlier run was cut off in, its header and first bytes already in the file)
    starts after those bytes: ``resume_from`` of them, which ``held()`` reads back for the reader's hash and
    ``restart(offset)`` cuts back.
    """

    holds_bytes = True

    def __init__(self, writer: ArchiveWriter, digest: str, size: int, kept: _KeptMember | None = None) -> None:
        super().__init__(writer, digest, size)
        if kept is None:
            self._mark = writer._out.mark()
            writer._write_header(blob_path(digest), size)
            self._data_start = writer._out.pos
        else:
            self._mark, self._data_start = kept.mark, kept.data_start
            self.written = self.resume_from = kept.have
            for chunk in self.held() if self._hash is not None else ():
                self._hash.update(chunk)

    @property
    def keepable(self) -> bool:
        """Whether what came of the blob is worth keeping for the next run when it is cut off: RESUME_MIN bytes or more
        of a resumable archive, none of them known to be wrong."""
        return self.writer.resumable and self.written >= RESUME_MIN and not self.bad

    def held(self) -> Iterator[bytes]:
        """The blob's first ``resume_from`` bytes, as the archive holds them."""
        return _read_range(self.writer._out.fd, self._data_start, self.resume_from, self.writer.path)

    def restart(self, offset: int = 0) -> None:
        """Keep only the first ``offset`` bytes held (another sink of the blob holds fewer, or the source cannot
        start part way)."""
        with self.writer._lock:
            self.writer._check_open()
            pos, sha = self._mark
            sha = sha.copy()
            try:
                for chunk in _read_range(self.writer._out.fd, pos, self._data_start + offset - pos, self.writer.path):
                    sha.update(chunk)
                self.writer._out.rollback((self._data_start + offset, sha))
            except OSError as exc:
                raise self.writer._fail(exc, "writing") from None
            self.written = self.resume_from = offset

    def _write(self, data: bytes) -> None:
        self.writer._write_direct(data)

    def _finish(self) -> None:
        self.writer._direct_done(self, keep=True)

    def _drop(self) -> None:
        self.writer._direct_done(self, keep=False)


class _SpoolSink(ArchiveBlobSink):
    """Another blob is streaming into the tar: spool this one to a temporary file beside it, append it afterwards."""

    def __init__(self, writer: ArchiveWriter, digest: str, size: int) -> None:
        super().__init__(writer, digest, size)
        fd, self.spool_path = writer._mkstemp(".spool-")
        self._file = os.fdopen(fd, "wb")

    def _write(self, data: bytes) -> None:
        self.writer._check_open()
        try:
            self._file.write(data)
        except OSError as exc:
            raise self.writer._fail(exc, "spooling a blob for") from None

    def _finish(self) -> None:
        try:
            self._file.close()
        except OSError as exc:
            raise self.writer._fail(exc, "spooling a blob for") from None
        self.writer._spool_done(self)

    def _drop(self) -> None:
        try:
            self._file.close()
        except OSError:
            pass
        self.writer._spool_dropped(self)


class _HashingFile:
    """Append-only file descriptor that hashes everything written; can roll back to a mark."""

    def __init__(self, fd: int, pos: int = 0, sha: Any = None) -> None:
        self.fd = fd
        self.pos = pos
        self.sha = sha if sha is not None else hashlib.sha256()

    def write(self, data: bytes) -> None:
        _write_all(self.fd, data)
        self.sha.update(data)
        self.pos += len(data)

    def mark(self) -> tuple[int, Any]:
        return self.pos, self.sha.copy()

    def rollback(self, mark: tuple[int, Any]) -> None:
        pos, sha = mark
        os.ftruncate(self.fd, pos)
        os.lseek(self.fd, pos, os.SEEK_SET)
        self.pos = pos
        self.sha = sha.copy()


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


class ArchiveWriter:
    """Writes one tar: fmt "docker" (docker-archive of one platform) or "oci" (OCI image layout, any platforms).

    Blobs live at blobs/<alg>/<hex>; manifest.json (docker load) and oci-layout + index.json (OCI) are written by
    commit(), so one tar can carry both layouts. The tar is written under '.<name>.partial-<pid>' beside the final path
    and renamed into place by commit(); abort() (or leaving the context manager without commit) removes it.
    Thread-safe: while one blob streams into the tar, blobs begun by other threads are spooled to temporary files
    beside it and appended when it is done. ``spool_budget`` bounds the bytes spooled at once (None: no bound): a blob
    that would exceed it waits in begin_blob() until it can stream into the tar itself, so the disk never holds more
    than the archive plus the budget.

    A ``resumable`` writer writes under '.<name>.resume' instead, which a run cut off (a kill, or an error once the
    tar holds RESUME_MIN bytes) leaves behind. The next writer of that path continues it: each whole blob member in
    it is hashed and kept if it is one of ``wanted`` (digest -> size), the member a run was cut off in is continued
    from its last byte (its sink's ``resume_from``) if that blob is wanted, and everything from the first member
    that is not is cut off. Until that blob begins, other blobs are spooled (it holds the end of the tar).
    """

    def __init__(
        self,
        path: str,
        fmt: str = "docker",
        verify_digests: bool = False,
        mtime: int = 0,
        spool_budget: int | None = None,
        resumable: bool = False,
        wanted: dict[str, int] | None = None,
    ) -> None:
        if fmt not in FORMATS:
            raise ConfigError(f"unknown archive format {fmt!r}: use one of {', '.join(FORMATS)}")
        if not path or path.endswith(os.sep):
            raise ConfigError(f"archive path {path!r} must name a file")
        self.path = os.path.abspath(path)
        self.fmt = fmt
        self.verify_digests = verify_digests
        self.mtime = int(mtime)
        self.directory, self.name = os.path.split(self.path)
        if not os.path.isdir(self.directory):
            raise ConfigError(f"cannot write archive {self.path}: directory {self.directory} does not exist")
        if os.path.isdir(self.path):
            raise ConfigError(f"cannot write archive {self.path}: it is a directory")
        self.resumable = resumable
        self.temp_path = kept_beside(self.path) if resumable else os.path.join(self.directory, partial_name(self.name))
        self._lock = threading.RLock()
        self._room = threading.Condition(self._lock)  # notified when the direct slot or spool budget frees up
        self.spool_budget = spool_budget
        self._spooled = 0
        self._state = "open"
        self._blobs: dict[str, int] = {}
        self._pending: set[str] = set()
        self._small: dict[str, bytes] = {}
        self._queue: list[Any] = []
        self._spools: set[_SpoolSink] = set()
        self._direct: _DirectSink | None = None
        self._dirs: set[str] = set()
        self._docker: list[dict[str, Any]] = []
        self._index: list[dict[str, Any]] | None = None
        self._index_annotations: dict[str, str] | None = None
        self._reserved: _KeptMember | None = None  # the blob a run was cut off in, until it begins again
        self.kept_bytes = 0  # bytes of an earlier run's tar that this one keeps
        if resumable:
            self._out = self._continue(wanted or {})
            if self._out.pos:
                return
        else:
            self._out = _HashingFile(self._open_temp())
        try:
            self._add_dir("blobs/")
            self._add_dir("blobs/sha256/")
        except OSError as exc:
            raise self._fail(exc, "writing") from None

    # -- context manager -------------------------------------------------------------------------------------------
    def __enter__(self) -> ArchiveWriter:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self.abort()

    @property
    def committed(self) -> bool:
        return self._state == "committed"

    # -- blobs -----------------------------------------------------------------------------------------------------
    def has_blob(self, digest: str) -> bool:
        """True if the blob is in the archive or being written into it."""
        with self._lock:
            return digest in self._blobs or digest in self._pending

    def begin_blob(self, digest: str, size: int) -> ArchiveBlobSink:
        """A sink for one blob of a known size. A blob already present gives a sink that discards (sink.skipped)."""
        _check_digest(digest)
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise AirgapError(f"blob {digest} for archive {self.path}: invalid size {size!r}")
        with self._lock:
            self._check_open()
            while not self._may_begin(digest, size):
                if self._reserved is not None and self._direct is None:
                    self._release_reserved()  # no room to spool while it waits for its blob: start that blob over
                    continue
                self._room.wait(timeout=1.0)
                self._check_open()
            if digest in self._blobs or digest in self._pending:
                return _SkipSink(self, digest, size)
            self._pending.add(digest)
            try:
                kept = self._reserved
                if kept is not None and kept.digest == digest and kept.size == size:
                    self._reserved = None
                    self._direct = _DirectSink(self, digest, size, kept)
                    return self._direct
                if self._direct is None and self._reserved is None:
                    self._ensure_dir(digest)
                    self._direct = _DirectSink(self, digest, size)
                    return self._direct
                sink = _SpoolSink(self, digest, size)
                self._spools.add(sink)
                self._spooled += size
                return sink
            except OSError as exc:
                self._pending.discard(digest)
                raise self._fail(exc, "writing") from None

    def _may_begin(self, digest: str, size: int) -> bool:
        """Whether a blob can start now: present already, the direct slot is free (or kept for it), or its spool fits
        the budget."""
        free = self._direct is None and (self._reserved is None or self._reserved.digest == digest)
        if free or self.spool_budget is None or digest in self._blobs or digest in self._pending:
            return True
        return self._spooled + size <= self.spool_budget

    def add_bytes_blob(self, digest: str, data: bytes) -> bool:
        """Add a small blob (manifest, config, index) held in memory; False if it was already there."""
        algorithm = _check_digest(digest).split(":", 1)[0]
        if f"{algorithm}:{hashlib.new(algorithm, data).hexdigest()}" != digest:
            raise DigestMismatchError(f"bytes given for {digest} in archive {self.path} hash to something else")
        data = bytes(data)
        with self._lock:
            self._check_open()
            if digest in self._blobs or digest in self._pending:
                return False
            if len(data) <= _KEEP_SMALL_MAX:
                self._small[digest] = data
            if self._direct is not None or self._reserved is not None:
                self._pending.add(digest)
                self._queue.append((digest, data))
                return True
            try:
                self._ensure_dir(digest)
                self._write_member(blob_path(digest), data)
            except OSError as exc:
                raise self._fail(exc, "writing") from None
            self._blobs[digest] = len(data)
            return True

    # -- image metadata --------------------------------------------------------------------------------------------
    def set_docker_image(
        self, config_digest: str, layer_digests: list[str], repo_tags: list[str] | None = None
    ) -> None:
        """Add an entry to manifest.json (what docker load reads); call once per image, tags of one image merge."""
        _check_digest(config_digest)
        for digest in layer_digests:
            _check_digest(digest)
        tags = list(repo_tags or [])
        for tag in tags:
            last = tag.rsplit("/", 1)[-1]
            if "@" in tag or ":" not in last:
                raise ConfigError(
                    f"docker archive tag {tag!r} must be name:tag (docker load cannot use a digest reference)"
                )
        config = blob_path(config_digest)
        layers = [blob_path(digest) for digest in layer_digests]
        with self._lock:
            self._check_open()
            for entry in self._docker:
                if entry["Config"] == config and entry["Layers"] == layers:
                    entry["RepoTags"].extend(tag for tag in tags if tag not in entry["RepoTags"])
                    return
            self._docker.append({"Config": config, "RepoTags": tags, "Layers": layers})

    def set_oci_index(self, manifests: list[dict[str, Any]], annotations: dict[str, str] | None = None) -> None:
        """Set the descriptors of index.json (image manifests or image indexes stored as blobs in this archive)."""
        checked = []
        for desc in manifests:
            if not isinstance(desc, dict) or not desc.get("mediaType") or not isinstance(desc.get("size"), int):
                raise ConfigError(f"index.json entry for {self.path} needs mediaType, digest and size: {desc!r}")
            _check_digest(desc.get("digest", ""))
            checked.append(json.loads(json.dumps(desc)))
        with self._lock:
            self._check_open()
            self._index = checked
            self._index_annotations = dict(annotations) if annotations else None

    # -- end -------------------------------------------------------------------------------------------------------
    def commit(self) -> ArchiveResult:
        """Write the layout files, close the tar, fsync and rename it into place."""
        with self._lock:
            self._check_open()
            if self._reserved is not None:
                try:
                    self._release_reserved()
                except OSError as exc:
                    raise self._fail(exc, "writing") from None
            if self._pending or self._direct is not None:
                raise AirgapError(
                    f"archive {self.path}: blobs still being written: {', '.join(sorted(self._pending)[:5])}"
                )
            docker = [dict(entry) for entry in self._docker]
            index = self._index
            if self.fmt == "docker" and not docker:
                raise AirgapError(f"archive {self.path}: no image was added (set_docker_image)")
            if self.fmt == "oci" and index is None:
                raise AirgapError(f"archive {self.path}: no OCI index was set (set_oci_index)")
            if self.fmt == "oci" and not docker:
                docker = self._derive_docker(index or [])
            if index is None:
                index = self._derive_index(docker)
            self._check_complete(docker, index or [])
            try:
                if index is not None:
                    body: dict[str, Any] = {"schemaVersion": 2, "mediaType": MEDIA_OCI_INDEX, "manifests": index}
                    if self._index_annotations:
                        body["annotations"] = self._index_annotations
                    self._write_member("oci-layout", OCI_LAYOUT)
                    self._write_member("index.json", _json(body))
                if docker:
                    self._write_member("manifest.json", _json(docker))
                end = 2 * _BLOCK
                end += (-(self._out.pos + end)) % _RECORD
                self._out.write(b"\0" * end)
                os.fsync(self._out.fd)
                os.close(self._out.fd)
                self._out.fd = -1
                publish(self.temp_path, self.path)
            except OSError as exc:
                raise self._fail(exc, "writing") from None
            self._state = "committed"
            unregister_live(self.temp_path)
            return ArchiveResult(self.path, self.fmt, self._out.pos, self._out.sha.hexdigest(), len(self._blobs))

    def abort(self, keep: bool = True) -> None:
        """Drop the temporary file(s); nothing appears at the final path. Safe to call more than once.

        A resumable writer keeps its tar for the next run (``keep``) once it holds RESUME_MIN bytes: the whole members
        and the blob being streamed in, if RESUME_MIN of it came (else it is cut off)."""
        with self._lock:
            if self._state != "open":
                return
            direct = self._direct
            if direct is not None and not direct.keepable:
                try:
                    self._out.rollback(direct._mark)
                except OSError:
                    keep = False
            kept = keep and self.resumable and self._out.pos >= RESUME_MIN
            self._state = "kept" if kept else "aborted"
            if self._out.fd >= 0:
                try:
                    os.close(self._out.fd)
                except OSError:
                    pass
                self._out.fd = -1
            if kept:
                unregister_live(self.temp_path)
            else:
                remove_quietly(self.temp_path)
            for sink in list(self._spools) + [item for item in self._queue if isinstance(item, _SpoolSink)]:
                remove_quietly(sink.spool_path)
            self._spools.clear()
            self._queue.clear()
            self._pending.clear()
            self._direct = None
            self._spooled = 0
            self._room.notify_all()

    # -- internals -------------------------------------------------------------------------------------------------
    def _open_temp(self) -> int:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
        if not claim_live(self.temp_path):
            raise ConfigError(f"archive {self.path} is already being written by this run")
        for attempt in (1, 2):
            try:
                return os.open(self.temp_path, flags, 0o644)
            except FileExistsError:
                if attempt == 2:
                    unregister_live(self.temp_path)
                    raise ConfigError(
                        f"cannot write archive {self.path}: {self.temp_path} exists and cannot be replaced"
                    ) from None
                # Our pid, but not one of our writers: left by a killed process that had the same pid.
                try:
                    os.unlink(self.temp_path)
                except OSError:
                    pass
            except OSError as exc:
                unregister_live(self.temp_path)
                raise _os_error(exc, "creating", self.path) from None
        raise AssertionError("unreachable")

    def _continue(self, wanted: dict[str, int]) -> _HashingFile:
        """Open '.<name>.resume' (created empty if absent) and keep what an earlier run left in it that is still wanted."""
        if not claim_live(self.temp_path):
            raise ConfigError(f"archive {self.path} is already being written by this run")
        try:
            fd = os.open(
                self.temp_path,
                os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0),
                0o644,
            )
        except OSError as exc:
            unregister_live(self.temp_path)
            raise _os_error(exc, "creating", self.path) from None
        try:
            kept = _scan_kept(fd, wanted)
            os.ftruncate(fd, kept.end)
            os.lseek(fd, kept.end, os.SEEK_SET)
        except OSError as exc:
            os.close(fd)
            remove_quietly(self.temp_path)
            raise _os_error(exc, "continuing", self.path) from None
        out = _HashingFile(fd, kept.end, kept.sha)
        if kept.end:
            self._dirs, self._blobs, self._small, self._reserved = kept.dirs, kept.blobs, kept.small, kept.partial
            self.kept_bytes = kept.end
            try:
                out.write(b"\0" * kept.padding)  # a whole blob whose padding was cut off
            except OSError as exc:
                self._out = out
                raise self._fail(exc, "writing") from None
        return out

    def _release_reserved(self) -> None:
        """The blob a run was cut off in is not coming (or there is no room to wait for it): cut it off the tar."""
        kept, self._reserved = self._reserved, None
        if kept is not None:
            self._out.rollback(kept.mark)
            self._flush_queue()
            self._room.notify_all()

    def _mkstemp(self, suffix: str) -> tuple[int, str]:
        try:
            fd, path = tempfile.mkstemp(prefix=partial_name(self.name) + suffix, dir=self.directory)
        except OSError as exc:
            raise self._fail(exc, "spooling a blob for") from None
        register_live(path)
        return fd, path

    def _check_open(self) -> None:
        if self._state != "open":
            raise ArchiveClosedError(f"archive {self.path} is already {self._state}")

    def _fail(self, exc: OSError, what: str) -> AirgapError:
        """Abort (a half-written archive is useless, and on a full disk the space is wanted back) and explain."""
        self.abort(keep=False)
        return _os_error(exc, what, self.path)

    def _add_dir(self, name: str) -> None:
        self._out.write(_header(name, 0, self.mtime, directory=True))
        self._dirs.add(name)

    def _ensure_dir(self, digest: str) -> None:
        name = f"blobs/{digest.split(':', 1)[0]}/"
        if name not in self._dirs:
            self._add_dir(name)

    def _write_header(self, name: str, size: int) -> None:
        self._out.write(_header(name, size, self.mtime))

    def _write_member(self, name: str, data: bytes) -> None:
        self._write_header(name, len(data))
        self._out.write(data + b"\0" * ((-len(data)) % _BLOCK))

    def _write_direct(self, data: bytes) -> None:
        # Under the lock so that abort() from another thread cannot close the descriptor mid-write.
        with self._lock:
            self._check_open()
            try:
                self._out.write(data)
            except OSError as exc:
                raise self._fail(exc, "writing") from None

    def _direct_done(self, sink: _DirectSink, keep: bool) -> None:
        with self._lock:
            if self._state != "open":
                if keep:
                    self._check_open()
                return
            if not keep and sink.keepable:
                self.abort()  # cut off in a big blob: the tar is kept as it is for the next run to continue
                return
            try:
                if keep:
                    self._out.write(b"\0" * ((-sink.size) % _BLOCK))
                    self._blobs[sink.digest] = sink.size
                else:
                    self._out.rollback(sink._mark)
                self._pending.discard(sink.digest)
                self._direct = None
                self._flush_queue()
            except OSError as exc:
                raise self._fail(exc, "writing") from None
            finally:
                self._room.notify_all()

    def _spool_done(self, sink: _SpoolSink) -> None:
        with self._lock:
            self._spools.discard(sink)
            if self._state != "open":
                remove_quietly(sink.spool_path)
                self._check_open()
            self._queue.append(sink)
            if self._direct is None and self._reserved is None:
                try:
                    self._flush_queue()
                except OSError as exc:
                    raise self._fail(exc, "writing") from None

    def _spool_dropped(self, sink: _SpoolSink) -> None:
        with self._lock:
            self._spools.discard(sink)
            self._pending.discard(sink.digest)
            remove_quietly(sink.spool_path)
            unregister_live(sink.spool_path)
            self._spooled -= sink.size
            self._room.notify_all()

    def _flush_queue(self) -> None:
        while self._queue:
            item = self._queue.pop(0)
            if isinstance(item, _SpoolSink):
                try:
                    self._append_spool(item)
                except BaseException:
                    remove_quietly(item.spool_path)  # out of the queue and of _spools: abort() would not find it
                    raise
                digest, size = item.digest, item.size
            else:
                digest, data = item
                self._ensure_dir(digest)
                self._write_member(blob_path(digest), data)
                size = len(data)
            self._blobs[digest] = size
            self._pending.discard(digest)

    def _append_spool(self, sink: _SpoolSink) -> None:
        self._ensure_dir(sink.digest)
        self._write_header(blob_path(sink.digest), sink.size)
        copied = 0
        with open(sink.spool_path, "rb") as spool:
            while True:
                chunk = spool.read(CHUNK_SIZE)
                if not chunk:
                    break
                self._out.write(chunk)
                copied += len(chunk)
        if copied != sink.size:
            raise OSError(errno.EIO, f"spool file for {sink.digest} holds {copied} bytes, expected {sink.size}")
        self._out.write(b"\0" * ((-sink.size) % _BLOCK))
        remove_quietly(sink.spool_path)
        unregister_live(sink.spool_path)
        self._spooled -= sink.size
        self._room.notify_all()

    def _json_blob(self, digest: str) -> dict[str, Any] | None:
        data = self._small.get(digest)
        if data is None:
            return None
        try:
            parsed = json.loads(data)
        except ValueError:
            return None
        return parsed if isinstance(parsed, dict) else None

    def _image_manifests(
        self, descs: list[dict[str, Any]], depth: int = 0
    ) -> list[tuple[dict[str, Any], dict[str, Any] | None]]:
        """(descriptor, parsed manifest or None) for every image manifest reachable from descs, attestations skipped."""
        found: list[tuple[dict[str, Any], dict[str, Any] | None]] = []
        for desc in descs:
            if is_attestation(desc):
                continue
            body = self._json_blob(str(desc.get("digest")))
            if desc.get("mediaType") in INDEX_MEDIA_TYPES:
                if body is not None and depth < 4:
                    found.extend(self._image_manifests(body.get("manifests") or [], depth + 1))
                continue
            found.append((desc, body))
        return found

    def _derive_docker(self, index: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """OCI format with exactly one platform: also write manifest.json so docker load can read the tar."""
        images = self._image_manifests(index)
        if len(images) != 1 or images[0][1] is None:
            return []
        manifest = images[0][1] or {}
        config = (manifest.get("config") or {}).get("digest")
        layers = [layer.get("digest") for layer in manifest.get("layers") or []]
        if not config or not all(is_digest(d) for d in [config] + layers):
            return []
        tags = []
        for desc in index:
            name = (desc.get("annotations") or {}).get(ANNOTATION_IMAGE_NAME)
            if name and "@" not in name and ":" in name.rsplit("/", 1)[-1] and name not in tags:
                tags.append(name)
        return [{"Config": blob_path(config), "RepoTags": tags, "Layers": [blob_path(d) for d in layers]}]

    def _derive_index(self, docker: list[dict[str, Any]]) -> list[dict[str, Any]] | None:
        """docker format without set_oci_index: point index.json at the stored manifest of each image, if there is one."""
        manifests: dict[str, tuple[str, str, int]] = {}
        for digest, data in self._small.items():
            body = self._json_blob(digest)
            config = body.get("config") if body else None
            if body and isinstance(config, dict) and is_digest(config.get("digest")):
                manifests[blob_path(config["digest"])] = (
                    digest,
                    body.get("mediaType") or MEDIA_OCI_MANIFEST,
                    len(data),
                )
        entries = []
        for image in docker:
            if image["Config"] not in manifests:
                return None
            digest, media_type, size = manifests[image["Config"]]
            for tag in image["RepoTags"] or [None]:
                entries.append(
                    descriptor(
                        media_type, digest, size, ref_name=tag.rsplit(":", 1)[1] if tag else None, image_name=tag
                    )
                )
        return entries

    def _check_complete(self, docker: list[dict[str, Any]], index: list[dict[str, Any]]) -> None:
        """Refuse to commit an archive whose manifests name blobs it does not hold (it would fail at the site)."""
        by_path = {blob_path(digest): digest for digest in self._blobs}
        missing: list[str] = []
        for image in docker:
            missing.extend(path for path in [image["Config"]] + image["Layers"] if path not in by_path)
        seen: set[str] = set()

        def walk(descs: list[dict[str, Any]], depth: int) -> None:
            for desc in descs:
                digest = desc.get("digest")
                if not isinstance(digest, str) or digest in seen:
                    continue
                seen.add(digest)
                if desc.get("urls") and digest not in self._blobs:
                    continue  # foreign layer, fetched from its URLs
                if digest not in self._blobs:
                    missing.append(digest)
                    continue
                if isinstance(desc.get("size"), int) and desc["size"] != self._blobs[digest]:
                    raise AirgapError(
                        f"archive {self.path}: {digest} is {self._blobs[digest]} bytes but a descriptor says {desc['size']}"
                    )
                body = self._json_blob(digest)
                if body is None or depth > 4:
                    continue
                children = list(body.get("manifests") or [])
                if "config" in body or "layers" in body:
                    children += [body.get("config") or {}] + list(body.get("layers") or [])
                walk([child for child in children if isinstance(child, dict)], depth + 1)

        walk(index, 0)
        if missing:
            shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
            raise AirgapError(f"archive {self.path} is incomplete, missing blob(s): {shown}")


@dataclass(frozen=True)
class _KeptMember:
    """The blob member a run was cut off in: where its header starts (with the tar's hash there), where its data
    starts, and how much of it the file holds."""

    digest: str
    size: int
    mark: tuple[int, Any]
    data_start: int
    have: int


@dataclass
class _Kept:
    """What an earlier run's tar holds that a resumed writer keeps: its first ``end`` bytes (``sha`` their hash)."""

    end: int = 0
    sha: Any = field(default_factory=hashlib.sha256)
    padding: int = 0
    dirs: set[str] = field(default_factory=set)
    blobs: dict[str, int] = field(default_factory=dict)
    small: dict[str, bytes] = field(default_factory=dict)
    partial: _KeptMember | None = None


def _scan_kept(fd: int, wanted: dict[str, int]) -> _Kept:
    """Read an earlier run's tar once: its directory members and whole blob members that are wanted and hash to their
    names are kept, in order, up to the first member that is anything else; a wanted blob whose data was cut off is
    kept as the partial member (at least one byte of it)."""
    kept = _Kept()
    length = os.fstat(fd).st_size
    members: list[tarfile.TarInfo] = []
    with os.fdopen(os.dup(fd), "rb") as handle:
        try:
            with tarfile.open(fileobj=handle, mode="r:") as tar:
                for member in tar:
                    members.append(member)
        except (tarfile.TarError, EOFError, OSError):
            pass  # the tar ends early: what was read so far is all there is
    for member in members:
        name, start, size = member.name.rstrip("/"), member.offset_data, member.size
        if (
            member.isdir()
            and (name == "blobs" or (name.startswith("blobs/") and name.count("/") == 1))
            and start <= length
        ):
            kept.sha.update(b"".join(_read_range(fd, kept.end, start - kept.end, "")))
            kept.end = start
            kept.dirs.add(name + "/")
            continue
        parts = name.split("/")
        digest = f"{parts[1]}:{parts[2]}" if len(parts) == 3 and parts[0] == "blobs" and member.isfile() else ""
        if not is_digest(digest) or wanted.get(digest) != size or digest in kept.blobs or start > length:
            break
        mark = (kept.end, kept.sha.copy())
        head = b"".join(_read_range(fd, kept.end, start - kept.end, ""))
        if start + size > length:  # the member a run was cut off in
            if length > start:
                kept.sha.update(head)
                have = length - start
                for chunk in _read_range(fd, start, have, ""):
                    kept.sha.update(chunk)
                kept.end, kept.partial = length, _KeptMember(digest, size, mark, start, have)
            break
        blob = hashlib.new(digest.split(":", 1)[0])
        whole = kept.sha.copy()
        whole.update(head)
        small = [] if size <= _KEEP_SMALL_MAX else None
        for chunk in _read_range(fd, start, size, ""):
            blob.update(chunk)
            whole.update(chunk)
            if small is not None:
                small.append(chunk)
        if f"{blob.name}:{blob.hexdigest()}" != digest:
            break
        pad = (-size) % _BLOCK
        on_disk = min(pad, length - start - size)
        whole.update(b"\0" * on_disk)
        kept.sha, kept.end, kept.padding = whole, start + size + on_disk, pad - on_disk
        kept.blobs[digest] = size
        if small is not None:
            kept.small[digest] = b"".join(small)
        if kept.padding:
            break
    if not kept.blobs and kept.partial is None:
        return _Kept()  # nothing worth keeping: the tar starts over
    return kept


def _read_range(fd: int, offset: int, count: int, path: str) -> Iterator[bytes]:
    """``count`` bytes of a file from ``offset``, in chunks (pread: the descriptor's position is not moved)."""
    while count > 0:
        chunk = os.pread(fd, min(count, CHUNK_SIZE), offset)
        if not chunk:
            raise OSError(errno.EIO, f"{path or 'the archive'} ended {count} bytes early")
        offset += len(chunk)
        count -= len(chunk)
        yield chunk


def _check_digest(digest: str) -> str:
    if not is_digest(digest):
        raise AirgapError(f"invalid blob digest {digest!r}: expected sha256:<64 hex>")
    return digest


def _header(name: str, size: int, mtime: int, directory: bool = False) -> bytes:
    info = tarfile.TarInfo(name)
    info.size = 0 if directory else size
    info.mtime = mtime
    info.mode = 0o755 if directory else 0o644
    info.type = tarfile.DIRTYPE if directory else tarfile.REGTYPE
    info.uname = info.gname = ""
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


def _json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode("utf-8")


def _os_error(exc: OSError, what: str, path: str) -> AirgapError:
    return os_error(exc, what, path, "archive", refused=ConfigError)
