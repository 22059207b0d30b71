# Copyright (c) airgap.ngc contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private: the facts file (ansible_local.ngc_mirror): run lock, journal and compaction, per-image records. Not a public API."""

from __future__ import annotations

import copy
import errno
import fcntl
import json
import functools
import os
import threading
from datetime import datetime, timezone
from typing import Any, Callable, TypeVar, cast

from ansible_collections.airgap.ngc.plugins.module_utils._types.errors import AirgapError, no_room
from ansible_collections.airgap.ngc.plugins.module_utils._formats.files import atomic_write, fsync_dir

DEFAULT_FACTS_PATH = "/etc/ansible/facts.d/ngc_mirror.fact"
SCHEMA = 1
FILE_MODE = 0o644
DIR_MODE = 0o755
MAX_ERROR_CHARS = 2000
# Within a run the journal is compacted into the facts file once it is larger than this and than the facts file:
# rewrites then cost at most about twice the bytes journaled, and the facts file is never far behind in a long run.
JOURNAL_COMPACT_BYTES = 4 << 20
_READ_ATTEMPTS = 20

_Method = TypeVar("_Method", bound=Callable[..., Any])

# Keys that would hold a credential: refused anywhere in a record, the facts file is world-readable.
_SECRET_KEYS = ("password", "passwd", "token", "api_key", "apikey", "secret", "authorization", "credential", "auth")


_STAMP = "%Y-%m-%dT%H:%M:%SZ"


def journal_path(path: str) -> str:
    """Where the journal of the facts file ``path`` lives: '.<name>.journal' beside it (setup reads only '*.fact')."""
    directory, name = os.path.split(os.path.abspath(path))
    return os.path.join(directory, f".{name}.journal")


def utc_now() -> str:
    """The current time as ISO 8601 UTC, second precision: 2026-11-22T13:10:00Z."""
    return datetime.now(timezone.utc).strftime(_STAMP)


def seconds_since(stamp: Any) -> float | None:
    """How many seconds ago a ``utc_now`` time stamp was (negative if it is ahead of the clock); None if it is not one."""
    try:
        then = datetime.strptime(stamp, _STAMP).replace(tzinfo=timezone.utc)
    except (TypeError, ValueError):
        return None
    return (datetime.now(timezone.utc) - then).total_seconds()


class RunLock:
    """An exclusive, non-blocking lock on a file for a whole run: a second run is refused, naming the holder's pid.

    The lock is flock(2) on ``path`` (created 0644 if missing, holding the pid), so it ends with the process however the
    process ends. ``path`` may be a directory: then it is locked itself and nothing is written into it.
    """

    def __init__(self, path: str, what: str = "") -> None:
        self.path = path
        self.what = what or path
        self._fd = -1

    def acquire(self) -> None:
        if self._fd >= 0:
            return
        directory = os.path.isdir(self.path)
        flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) if directory else os.O_RDWR | os.O_CREAT
        try:
            fd = os.open(self.path, flags | getattr(os, "O_CLOEXEC", 0), FILE_MODE)
        except OSError as exc:
            raise AirgapError(
                f"cannot open the lock file {self.path}: {exc.strerror or exc} "
                f"(is {os.path.dirname(self.path)} writable?)"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = "" if directory else _read_pid(fd)
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                who = f" (pid {holder})" if holder else ""
                raise AirgapError(
                    f"another ngc_image_mirror run holds the lock on {self.what}{who}; wait for it to finish"
                ) from None
            raise AirgapError(f"cannot lock {self.path}: {exc.strerror or exc}") from None
        if not directory:
            try:
                os.ftruncate(fd, 0)
                os.write(fd, f"{os.getpid()}\n".encode())
            except OSError:
                pass  # the pid is only a hint for the message above
        self._fd = fd

    def release(self) -> None:
        if self._fd < 0:
            return
        try:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            os.close(self._fd)
            self._fd = -1


def _serialised(method: _Method) -> _Method:
    """Run a StateStore method under the store's own (re-entrant) lock."""

    @functools.wraps(method)
    def locked(self: StateStore, *args: Any, **kwargs: Any) -> Any:
        with self._mutex:
            return method(self, *args, **kwargs)

    return cast(_Method, locked)


class StateStore:
    """What has been mirrored where, kept in a JSON facts file that Ansible's setup shows as ansible_local.ngc_mirror.

    Layout: {"schema": 1, "updated": iso, "images": {key: {"source_digest", "destinations": {dest_key: entry},
    "last_error"?: {"message", "time"}, "companions"?: {"digest", "found", "listed"}}}}.

    Every change is appended to a journal beside the file ('.<name>.journal', one JSON line holding the image's whole
    record, synced) before its call returns, so recording an image costs the same with ten images or ten thousand
    and a crash or kill -9 loses nothing already recorded. The facts file itself is only ever replaced whole
    (temporary file, fsync, rename), so a reader of it always sees one valid JSON document: it takes in the journal
    when the store is closed, when a writer opens it, and during a long run once the journal outgrows it; the journal
    is removed only after the new file is in place. Loading is the file plus the journal replayed; a line cut off by
    a kill is ignored (its call never returned). Replaying is idempotent, so a journal left behind after a
    compaction does no harm.

    Writers hold an exclusive lock on '<path>.lock' for their whole run; read_only=True (check mode) neither locks,
    nor creates, nor writes anything, and reads a consistent file and journal while a writer goes on. Within a
    process the methods are thread-safe: each change is journaled whole, one at a time, in the order of the calls.
    """

    def __init__(
        self, path: str = DEFAULT_FACTS_PATH, read_only: bool = False, now: Callable[[], str] = utc_now
    ) -> None:
        if not path or path.endswith(os.sep):
            raise AirgapError(f"state file path {path!r} must name a file")
        self.path = os.path.abspath(path)
        self.lock_path = self.path + ".lock"
        self.journal_path = journal_path(self.path)
        self.read_only = read_only
        self._now = now
        self._lock = RunLock(self.lock_path)
        self._mutex = threading.RLock()
        self._data: dict[str, Any] | None = None
        self._journal_fd = -1
        self._journal_bytes = 0  # the journal's length up to its last complete line
        self._journal_torn = False  # a failed append may have left a partial line: the next one starts on a new line
        self._pending = False  # the journal holds changes the facts file does not
        self._compact_at = JOURNAL_COMPACT_BYTES

    # -- open / close ----------------------------------------------------------------------------------------------
    def __enter__(self) -> StateStore:
        self.open()
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.close()
            return
        try:
            self.close()
        except AirgapError:
            pass  # the run's own error is the one to report; the journal keeps every record for the next run

    @_serialised
    def open(self) -> StateStore:
        """Lock (unless read-only) and load the file and its journal; a missing file is an empty state.

        A writer then compacts what it found in the journal into the file (if that fails, for example on a full
        disk, the journal is kept and appended to: nothing is lost, and the next compaction tries again).
        """
        if self._data is not None:
            return self
        if not self.read_only:
            self._make_dir()
            self._lock.acquire()
        try:
            self._data, journaled, main_bytes = self._load()
            self._compact_at = max(JOURNAL_COMPACT_BYTES, main_bytes)
            if journaled is not None and not self.read_only:
                self._pending = journaled > 0
                try:
                    if self._pending:
                        self._compact()
                    else:
                        self._drop_journal()
                except AirgapError:
                    pass
        except BaseException:
            self.close()
            raise
        return self

    @_serialised
    def close(self) -> None:
        """Compact the journal into the file (if this run changed anything) and release the lock.

        Every change was already on disk in the journal; a failure here (a full disk) is raised and loses nothing.
        """
        try:
            if self._data is not None and self._pending and not self.read_only:
                self._compact()
        finally:
            self._close_journal()
            self._data = None
            self._lock.release()

    # -- reading ---------------------------------------------------------------------------------------------------
    @property
    @_serialised
    def data(self) -> dict[str, Any]:
        """A copy of the whole document."""
        return copy.deepcopy(self._doc())

    @_serialised
    def images(self) -> dict[str, dict[str, Any]]:
        return copy.deepcopy(self._doc()["images"])

    @_serialised
    def image(self, key: str) -> dict[str, Any] | None:
        record = self._doc()["images"].get(key)
        return copy.deepcopy(record) if record is not None else None

    @_serialised
    def destination(self, key: str, dest_key: str) -> dict[str, Any] | None:
        record = self._doc()["images"].get(key) or {}
        entry = (record.get("destinations") or {}).get(dest_key)
        return copy.deepcopy(entry) if entry is not None else None

    @_serialised
    def is_current(self, key: str, dest_key: str, source_digest: str) -> bool:
        """True if dest_key was last written from this source digest."""
        entry = self.destination(key, dest_key)
        return entry is not None and entry.get("source_digest") == source_digest

    # -- writing (each call is on disk, in the journal, before it returns) -----------------------------------------
    @_serialised
    def record_destination(self, key: str, source_digest: str, dest_key: str, entry: dict[str, Any]) -> dict[str, Any]:
        """Record that key (at source_digest) was written to dest_key; returns the stored entry."""
        self._writable()
        _check_key(key, "image key")
        _check_key(dest_key, "destination key")
        if not isinstance(entry, dict):
            raise AirgapError(f"state entry for {key} -> {dest_key} must be a mapping")
        _refuse_secrets(entry, f"{key} -> {dest_key}")
        stored = _plain(entry, f"{key} -> {dest_key}")
        stored.setdefault("source_digest", source_digest)
        stored.setdefault("written", self._now())
        images = self._doc()["images"]
        before = copy.deepcopy(images.get(key))
        record = images.setdefault(key, {"source_digest": source_digest, "destinations": {}})
        record["source_digest"] = source_digest
        record.setdefault("destinations", {})[dest_key] = stored
        self._save_or_restore(key, before)
        return copy.deepcopy(stored)

    @_serialised
    def remove(self, key: str, dest_key: str | None = None) -> bool:
        """Forget an image, or one destination of it; True if something was removed."""
        self._writable()
        images = self._doc()["images"]
        if key not in images:
            return False
        before = copy.deepcopy(images[key])
        if dest_key is None:
            del images[key]
        elif dest_key in (images[key].get("destinations") or {}):
            del images[key]["destinations"][dest_key]
        else:
            return False
        self._save_or_restore(key, before)
        return True

    @_serialised
    def record_failure(self, key: str, message: str) -> None:
        """Remember the last error for an image (shown in the facts); the caller must not pass secrets."""
        self._writable()
        _check_key(key, "image key")
        images = self._doc()["images"]
        before = copy.deepcopy(images.get(key))
        record = images.setdefault(key, {"destinations": {}})
        record["last_error"] = {"message": str(message)[:MAX_ERROR_CHARS], "time": self._now()}
        self._save_or_restore(key, before)

    @_serialised
    def record_companions(self, listings: dict[str, dict[str, Any]]) -> int:
        """Remember what travels with images already recorded (their signatures and attestations, as the source
        listed them: ``{"digest": <the image's digest>, "found": [...]}``), stamped ``listed`` with the time, in the
        image's record as ``companions``. All in one journal write; returns how many images were recorded."""
        self._writable()
        images = self._doc()["images"]
        changed: list[tuple[str, dict[str, Any] | None]] = []
        for key, listing in sorted(listings.items()):
            record = images.get(key)
            if record is None:
                continue
            _refuse_secrets(listing, f"{key} companions")
            stored = _plain(listing, f"{key} companions")
            changed.append((key, copy.deepcopy(record)))
            record["companions"] = dict(stored, listed=self._now())
        if changed:
            self._save_or_restore_all(changed)
        return len(changed)

    @_serialised
    def clear_failure(self, key: str) -> bool:
        """Drop the last error of an image; True (and a write) only if there was one."""
        self._writable()
        record = self._doc()["images"].get(key)
        if not record or "last_error" not in record:
            return False
        before = copy.deepcopy(record)
        del record["last_error"]
        self._save_or_restore(key, before)
        return True

    # -- internals -------------------------------------------------------------------------------------------------
    def _doc(self) -> dict[str, Any]:
        if self._data is None:
            raise AirgapError(f"state file {self.path} is not open (use 'with StateStore(...)')")
        return self._data

    def _writable(self) -> None:
        self._doc()
        if self.read_only:
            raise AirgapError(f"state file {self.path} was opened read-only (check mode) and cannot be changed")

    def _make_dir(self) -> None:
        directory = os.path.dirname(self.path)
        try:
            os.makedirs(directory, mode=DIR_MODE, exist_ok=True)
        except OSError as exc:
            raise AirgapError(
                f"cannot create the directory {directory} for the state file {self.path}: {exc.strerror or exc}"
            ) from None
        if not os.path.isdir(directory):
            raise AirgapError(f"cannot use the state file {self.path}: {directory} is not a directory")

    def _load(self) -> tuple[dict[str, Any], int | None, int]:
        """The document (file + journal), the number of journal records replayed (None: no journal) and the file's size."""
        raw, journal = self._read_both()
        doc = self._parse(raw) if raw is not None else {"schema": SCHEMA, "updated": None, "images": {}}
        replayed = self._replay(doc, journal) if journal is not None else None
        return doc, replayed, len(raw or b"")

    def _read_both(self) -> tuple[bytes | None, bytes | None]:
        """The file's and the journal's bytes, taken together: the file did not change while the journal was read.

        A writer holds the lock, so nothing else changes them. A reader without the lock keeps the file open (so its
        inode cannot be reused) while it reads the journal, and starts again if a compaction replaced the file
        meanwhile: it never pairs a new file with an older journal, nor an old file with a newer one.
        """
        for _attempt in range(_READ_ATTEMPTS):
            handle = None
            try:
                try:
                    handle = open(self.path, "rb")
                except FileNotFoundError:
                    pass
                raw = handle.read() if handle is not None else None
                seen = _identity(os.fstat(handle.fileno())) if handle is not None else None
                journal = self._read_journal()
                if not self.read_only:
                    return raw, journal
                try:
                    now = _identity(os.stat(self.path))
                except FileNotFoundError:
                    now = None
                if now == seen:
                    return raw, journal
            except OSError as exc:
                raise AirgapError(f"cannot read the state file {self.path}: {exc.strerror or exc}") from None
            finally:
                if handle is not None:
                    handle.close()
        raise AirgapError(f"state file {self.path} was replaced {_READ_ATTEMPTS} times while it was read; try again")

    def _read_journal(self) -> bytes | None:
        try:
            with open(self.journal_path, "rb") as handle:
                return handle.read()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise AirgapError(
                f"cannot read the journal {self.journal_path} of the state file {self.path}: {exc.strerror or exc}"
            ) from None

    def _parse(self, raw: bytes) -> dict[str, Any]:
        fix = "fix it or remove it (it is rebuilt as images are mirrored again)"
        try:
            doc = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError:
            raise AirgapError(f"state file {self.path} is not UTF-8 text: {fix}") from None
        except ValueError as exc:
            raise AirgapError(f"state file {self.path} is not valid JSON ({exc}): {fix}") from None
        if not isinstance(doc, dict):
            raise AirgapError(f"state file {self.path} does not hold a JSON object: {fix}")
        schema = doc.get("schema")
        if isinstance(schema, int) and not isinstance(schema, bool) and schema > SCHEMA:
            raise AirgapError(
                f"state file {self.path} has schema {schema}, written by a newer airgap.ngc; upgrade the collection"
            )
        if schema != SCHEMA or not isinstance(doc.get("images"), dict):
            raise AirgapError(
                f"state file {self.path} is not an ngc_mirror state file (schema {SCHEMA} with an 'images' mapping): {fix}"
            )
        for key, record in doc["images"].items():
            if not _is_record(record):
                raise AirgapError(f"state file {self.path}: the record of {key!r} is malformed: {fix}")
        return doc

    def _replay(self, doc: dict[str, Any], journal: bytes) -> int:
        """Apply the journal's records to ``doc`` in order; returns how many there were.

        A line that is not JSON is a write cut off by a kill (or one that failed and was reported): it is skipped.
        A JSON line that is not a record was not written by this collection and is an error, like a bad file.
        """
        fix = f"fix it or remove it (it holds changes not yet in {os.path.basename(self.path)})"
        replayed = 0
        for number, line in enumerate(journal.split(b"\n"), 1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line.decode("utf-8"))
            except ValueError:  # UnicodeDecodeError is a ValueError
                continue
            where = f"journal {self.journal_path} line {number}"
            schema = entry.get("schema") if isinstance(entry, dict) else None
            if isinstance(schema, int) and not isinstance(schema, bool) and schema > SCHEMA:
                raise AirgapError(f"{where} has schema {schema}, written by a newer airgap.ngc; upgrade the collection")
            key = entry.get("key") if isinstance(entry, dict) else None
            if (
                schema != SCHEMA
                or not isinstance(key, str)
                or not key
                or "record" not in entry
                or not (entry["record"] is None or _is_record(entry["record"]))
            ):
                raise AirgapError(f"{where} is not an ngc_mirror state record: {fix}")
            if entry["record"] is None:
                doc["images"].pop(key, None)
            else:
                doc["images"][key] = entry["record"]
            if isinstance(entry.get("updated"), str):
                doc["updated"] = entry["updated"]
            replayed += 1
        return replayed

    def _save_or_restore(self, key: str, before: dict[str, Any] | None) -> None:
        self._save_or_restore_all([(key, before)])

    def _save_or_restore_all(self, changed: list[tuple[str, dict[str, Any] | None]]) -> None:
        """Journal the new records of the images changed (with each one's record before the change), in one write;
        if that fails put the in-memory records back so memory matches the disk."""
        doc = self._doc()
        updated = doc.get("updated")
        doc["updated"] = self._now()
        try:
            self._append([(key, doc["images"].get(key)) for key, _before in changed])
        except BaseException:
            images = doc["images"]
            for key, before in changed:
                if before is None:
                    images.pop(key, None)
                else:
                    images[key] = before
            doc["updated"] = updated
            raise
        if self._journal_bytes >= self._compact_at:
            try:
                self._compact()
            except AirgapError:
                self._compact_at = 2 * self._journal_bytes  # the change is journaled; try again when it has doubled

    def _append(self, records: list[tuple[str, dict[str, Any] | None]]) -> None:
        """Append one line per image (its whole record, or null once it is forgotten) to the journal and sync it.

        Lines are whole or cut off at the end: a failed write is truncated away, or if even that fails the next line
        starts on a line of its own. Only the lock holder appends, so lines never interleave.
        """
        updated = self._doc()["updated"]
        data = "".join(
            json.dumps(
                {"schema": SCHEMA, "updated": updated, "key": key, "record": record},
                sort_keys=True,
                separators=(",", ":"),
            )
            + "\n"
            for key, record in records
        ).encode("utf-8")
        try:
            self._open_journal()
            if self._journal_torn:
                data = b"\n" + data
            view = memoryview(data)
            done = 0
            while done < len(data):
                done += os.write(self._journal_fd, view[done:])
            getattr(os, "fdatasync", os.fsync)(self._journal_fd)
        except OSError as exc:
            if self._journal_fd >= 0:
                try:
                    os.ftruncate(self._journal_fd, self._journal_bytes)
                    self._journal_torn = False
                except OSError:
                    self._journal_torn = True
            raise self._write_error(exc, self.journal_path) from None
        self._journal_bytes += len(data)
        self._journal_torn = False
        self._pending = True

    def _open_journal(self) -> None:
        if self._journal_fd >= 0:
            return
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)
        fd = os.open(self.journal_path, flags, FILE_MODE)
        try:
            os.fchmod(fd, FILE_MODE)
            size = os.fstat(fd).st_size
            if size:  # left by a compaction that could not complete: carry on after its last line
                with open(self.journal_path, "rb") as handle:
                    handle.seek(size - 1)
                    self._journal_torn = handle.read(1) != b"\n"
            else:
                fsync_dir(os.path.dirname(self.path))  # the journal's name is durable before anything relies on it
        except BaseException:
            os.close(fd)
            raise
        self._journal_fd, self._journal_bytes = fd, size

    def _close_journal(self) -> None:
        if self._journal_fd >= 0:
            try:
                os.close(self._journal_fd)
            except OSError:
                pass
            self._journal_fd = -1

    def _compact(self) -> None:
        """Write the whole document to the facts file (atomically, synced), then remove the journal.

        If the run stops between the two, the next load replays the journal over the new file: same result.
        """
        data = (json.dumps(self._doc(), indent=2, sort_keys=True) + "\n").encode("utf-8")
        atomic_write(self.path, data, FILE_MODE, "state file")
        self._pending = False
        self._compact_at = max(JOURNAL_COMPACT_BYTES, len(data))
        self._drop_journal()

    def _drop_journal(self) -> None:
        """Remove the journal (everything in it is in the facts file, or it holds no record)."""
        self._close_journal()
        self._journal_bytes = 0
        self._journal_torn = False
        try:
            os.unlink(self.journal_path)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise self._write_error(exc, self.journal_path) from None
        try:
            fsync_dir(os.path.dirname(self.path))
        except OSError:
            pass  # should the removal be lost, the journal is replayed over the file it is already in: no change

    def _write_error(self, exc: OSError, path: str) -> AirgapError:
        directory = os.path.dirname(path)
        return no_room(exc, f"the state file {self.path} (its journal {path})", directory) or AirgapError(
            f"cannot write the state file {self.path} (its journal {path}): {exc.strerror or exc} (is {directory} writable?)"
        )


def _identity(status: os.stat_result) -> tuple[int, int, int, int]:
    return status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns


def _is_record(record: Any) -> bool:
    return isinstance(record, dict) and isinstance(record.get("destinations", {}), dict)


def _check_key(key: str, what: str) -> None:
    if not isinstance(key, str) or not key:
        raise AirgapError(f"{what} must be a non-empty string, got {key!r}")


def _refuse_secrets(value: Any, where: str) -> None:
    if isinstance(value, dict):
        for name, item in value.items():
            lowered = str(name).lower().replace("-", "_")
            if any(lowered == bad or lowered.endswith("_" + bad) for bad in _SECRET_KEYS):
                raise AirgapError(
                    f"refusing to store {name!r} for {where} in the state file: it is world-readable and must hold no secrets"
                )
            _refuse_secrets(item, where)
    elif isinstance(value, (list, tuple)):
        for item in value:
            _refuse_secrets(item, where)


def _plain(entry: dict[str, Any], where: str) -> dict[str, Any]:
    try:
        return json.loads(json.dumps(entry))
    except (TypeError, ValueError) as exc:
        raise AirgapError(f"state entry for {where} is not plain JSON data: {exc}") from None


def _read_pid(fd: int) -> str:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        text = os.read(fd, 32).decode("ascii", "replace").strip()
    except OSError:
        return ""
    return text if text.isdigit() else ""
