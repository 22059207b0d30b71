# Copyright (c) airgap.ngc contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private: files that appear whole or not at all: temporary names, atomic writes with fsync, leftovers. Not a public API.

Every file this collection writes goes first to ``.<name>.partial-<pid>[.<suffix>]`` in the same directory and is
renamed into place once complete and synced. A killed run leaves only such names behind, which the next run
removes (the pid tells a dead writer from a live one).
"""

from __future__ import annotations

import errno
import os
import re
import tempfile
import threading
from typing import Any, Iterator

from ansible_collections.airgap.ngc.plugins.module_utils._types.blob_sink import BlobSink
from ansible_collections.airgap.ngc.plugins.module_utils._types.errors import AirgapError, DigestMismatchError, no_room
from ansible_collections.airgap.ngc.plugins.module_utils._types.oci import CHUNK_SIZE

# What removing a recorded file did (prune's vocabulary).
REMOVED, WOULD_REMOVE, KEPT, GONE = "removed", "would remove", "kept", "already gone"

_PARTIAL_RE = re.compile(r"^\.(?P<name>.+)\.partial-(?P<pid>\d+)(?:\.[A-Za-z0-9_-]+)?$")

# Temporary files of live writers of this process: cleanup_stale_partials() never removes them.
_LIVE: set[str] = set()
_LIVE_LOCK = threading.Lock()


def partial_name(name: str) -> str:
    """The temporary name of ``name`` for this process: '.<name>.partial-<pid>'."""
    return f".{name}.partial-{os.getpid()}"


def resume_name(name: str) -> str:
    """The name a big blob's bytes are kept under when a run is cut off, for the next run to continue: '.<name>.resume'.
    It carries no pid: it outlives the run (cleanup_stale_partials leaves it)."""
    return f".{name}.resume"


def kept_beside(path: str) -> str:
    """Where the bytes of ``path`` are kept when a run is cut off: '.<name>.resume' in the same directory."""
    return os.path.join(os.path.dirname(path), resume_name(os.path.basename(path)))


def register_live(path: str) -> None:
    with _LIVE_LOCK:
        _LIVE.add(path)


def claim_live(path: str) -> bool:
    """Register ``path`` as this process's live temporary file; False if a writer of this process already has it."""
    with _LIVE_LOCK:
        if path in _LIVE:
            return False
        _LIVE.add(path)
        return True


def unregister_live(path: str) -> None:
    with _LIVE_LOCK:
        _LIVE.discard(path)


def remove_quietly(path: str) -> None:
    """Remove a temporary file if it is there, and forget it."""
    try:
        os.unlink(path)
    except OSError:
        pass
    unregister_live(path)


def fsync_dir(directory: str) -> None:
    """Make a rename in ``directory`` durable (filesystems that cannot sync a directory are let be)."""
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP):
            raise
    finally:
        os.close(fd)


def publish(temp: str, path: str, fd: int | None = None, sync: bool = True) -> None:
    """Put a finished temporary file in place: fsync it (by ``fd``, when still open), rename it over ``path`` (in the
    same directory) and fsync the directory, so that after a crash ``path`` is the old file or the whole new one."""
    if sync and fd is not None:
        os.fsync(fd)
    os.replace(temp, path)
    if sync:
        fsync_dir(os.path.dirname(os.path.abspath(path)))


def atomic_write(path: str, data: bytes, mode: int = 0o644, what: str = "file", sync: bool = True) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same directory, fsync it, rename it into place.

    Readers see the old content or the new, never a mix; errors are AirgapError naming ``what`` and the path.
    """
    directory, name = os.path.split(os.path.abspath(path))
    temp = None
    try:
        fd, temp = tempfile.mkstemp(prefix=partial_name(name) + ".", dir=directory)
        register_live(temp)
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), mode)
            handle.write(data)
            handle.flush()
            publish(temp, path, handle.fileno(), sync)
        unregister_live(temp)
        temp = None
    except OSError as exc:
        raise no_room(exc, f"the {what} {path}", directory) or AirgapError(
            f"cannot write the {what} {path}: {exc.strerror or exc} (is {directory} writable?)"
        ) from None
    finally:
        if temp is not None:
            remove_quietly(temp)


def safe_path(directory: str, path: str, what: str = "file") -> str:
    """``path`` (made absolute) if it lies below ``directory`` once every symbolic link on the way is resolved; else
    AirgapError naming both. Whatever writes or removes a file of a destination directory asks this first, so a link
    there (``<dir>/nvidia/link -> /etc``) never leads a write or a removal outside. Parts not there yet are fine."""
    top, full = os.path.realpath(directory), os.path.abspath(path)
    real = os.path.realpath(full)
    if real == top or os.path.commonpath([top, real]) != top:
        through = f" (it resolves to {real}: a symbolic link on the way leads out)" if real != full else ""
        raise AirgapError(f"refused to touch the {what} {path}: it is not inside {directory}{through}")
    return full


def os_error(
    exc: OSError, doing: str, path: str, what: str = "", refused: type[AirgapError] = AirgapError
) -> AirgapError:
    """One line for a failed file operation on ``path`` (a ``what``: "archive"): a full disk (``no_room``) and a
    place that is not writable (raised as ``refused``) are named as such."""
    directory, target = os.path.dirname(path), f"{what} {path}".lstrip()
    full = no_room(exc, target, directory)
    if full is not None:
        return full
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return refused(f"cannot write {target}: directory {directory} is not writable ({exc.strerror})")
    return AirgapError(f"{doing} {target} failed: {exc.strerror or exc}")


def cleanup_stale_partials(directory: str, name: str | None = None) -> list[str]:
    """Remove '.<name>.partial-<pid>*' files left by dead writers; keeps files of live ones. Returns removed paths."""
    try:
        entries = sorted(os.listdir(directory))
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise AirgapError(f"cannot list {directory} to remove stale partial files: {exc.strerror or exc}") from None
    removed = []
    for entry in entries:
        match = _PARTIAL_RE.match(entry)
        if not match or (name is not None and match.group("name") != name):
            continue
        path = os.path.join(directory, entry)
        with _LIVE_LOCK:
            live = path in _LIVE
        pid = int(match.group("pid"))
        if live or (pid != os.getpid() and pid_alive(pid)):
            continue
        try:
            os.unlink(path)
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise AirgapError(f"cannot remove stale partial file {path}: {exc.strerror or exc}") from None
        removed.append(path)
    return removed


def cleanup_tree(directory: str) -> list[str]:
    """cleanup_stale_partials() in ``directory`` and every directory below it."""
    removed: list[str] = []
    for current, _subdirs, _files in os.walk(directory):
        removed += cleanup_stale_partials(current)
    return removed


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    return True


RESUME_MIN = 16 * 1024 * 1024  # a blob this big cut off by a kill or an error is kept and continued by the next run


class BlobFile(BlobSink):
    """A sink writing one blob to ``.<hex>.partial-<pid>``: size checked, synced and renamed on close.

    A resumable one (a big blob, ``keep`` naming where its bytes are kept: ``.<hex>.resume`` beside a bundle's blob, or
    in the directory of an enroot or Apptainer destination for the blobs it spools) writes there instead, and a run
    cut off leaves it behind: the next run's sink starts with those bytes (``resume_from``), the reader hashes them
    (``held``) and the source sends only the rest.

    Its digest is the reader's to check: fan_out closes a sink only after the source's chunks ended without a digest
    error (each reader holds back or fails on its last chunk), and aborts it otherwise, so no second hash here.
    """

    holds_bytes = True

    def __init__(self, path: str, digest: str, size: int, keep: str | None = None, sync: bool = True) -> None:
        self.path, self.digest, self.size, self.sync = path, digest, size, sync
        self.resumable = keep is not None and size >= RESUME_MIN
        self.temp = (
            keep
            if keep is not None and self.resumable
            else os.path.join(os.path.dirname(path), partial_name(os.path.basename(path)))
        )
        self.written = self.resume_from = 0
        try:
            if (
                self.resumable
                and os.path.isfile(self.temp)
                and not os.path.islink(self.temp)
                and 0 < os.path.getsize(self.temp) < size
            ):
                self.written = self.resume_from = os.path.getsize(self.temp)  # what a run that was cut off received
                self._file = open(self.temp, "r+b")  # pylint: disable=consider-using-with
                self._file.seek(self.written)
            else:
                self._file = open(self.temp, "w+b")  # pylint: disable=consider-using-with
        except OSError as exc:
            raise os_error(exc, "writing blob", path) from None
        if not self.resumable:
            register_live(self.temp)

    def held(self) -> Iterator[bytes]:
        """The bytes received by an earlier run (``resume_from`` of them), for the reader's hash."""
        with open(self.temp, "rb") as handle:
            left = self.resume_from
            while left > 0:
                chunk = handle.read(min(left, CHUNK_SIZE))
                if not chunk:
                    raise AirgapError(f"blob {self.digest}: {self.temp} shrank while it was read")
                left -= len(chunk)
                yield chunk

    def restart(self, offset: int = 0) -> None:
        """Keep only the first ``offset`` bytes held (another sink of the blob holds fewer)."""
        self._file.truncate(offset)
        self._file.seek(offset)
        self.written = self.resume_from = offset

    def write(self, data: bytes) -> None:
        try:
            self._file.write(data)
        except OSError as exc:
            self.abort()
            raise os_error(exc, "writing blob", self.path) from None
        self.written += len(data)

    def close(self) -> None:
        if self.written != self.size:
            self.abort()
            raise DigestMismatchError(
                f"blob {self.digest} for {self.path}: got {self.written} bytes, {self.size} expected"
            )
        try:
            self._file.flush()
            if self.sync:
                os.fsync(self._file.fileno())
            self._file.close()
            os.replace(self.temp, self.path)
        except OSError as exc:
            self.abort()
            raise os_error(exc, "writing blob", self.path) from None
        unregister_live(self.temp)

    def abort(self) -> None:
        """Drop the blob; a big one cut off before its end is kept for the next run to continue."""
        try:
            self._file.flush()
            self._file.close()
        except OSError:
            pass
        if not self.resumable or not 0 < self.written < self.size:
            remove_quietly(self.temp)


def under(path: str | None, directory: str) -> bool:
    """``path`` is below ``directory``."""
    if not path:
        return False
    base = os.path.abspath(directory).rstrip("/") + "/"
    return os.path.abspath(path).startswith(base)


def remove_recorded_file(record: dict[str, Any], top: str, check_mode: bool) -> tuple[str, str, int]:
    """Remove a file this collection wrote (``record["path"]``, recorded with its size) unless it changed since;
    then the directories it leaves empty, up to ``top``. A path a symbolic link leads out of ``top`` is left alone."""
    path = record["path"]
    try:
        safe_path(top, path, "recorded file")
    except AirgapError as exc:
        return KEPT, f"{exc}: left alone", 0
    try:
        size = os.lstat(path).st_size
    except FileNotFoundError:
        return GONE, "the file is no longer there", 0
    if not os.path.isfile(path) or os.path.islink(path) or (record.get("size") is not None and size != record["size"]):
        return KEPT, "changed since it was written (not the recorded size): left alone", 0
    if check_mode:
        return WOULD_REMOVE, f"remove {path}", size
    os.unlink(path)
    parent = os.path.dirname(os.path.abspath(path))
    while under(parent, top):
        try:
            os.rmdir(parent)
        except OSError:
            break
        parent = os.path.dirname(parent)
    return REMOVED, f"removed {path}", size
