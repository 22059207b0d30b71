# Copyright (c) airgap.ngc contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private: the facts file (ansible_local.ngc_mirror): run lock, atomic writes, per-image records. Not a public API."""
from __future__ import annotations

import copy
import errno
import fcntl
import json
import os
from datetime import datetime, timezone
from typing import Any, Callable

from ansible_collections.airgap.ngc.plugins.module_utils._errors import AirgapError
from ansible_collections.airgap.ngc.plugins.module_utils._files import atomic_write

DEFAULT_FACTS_PATH = "/etc/ansible/facts.d/ngc_mirror.fact"
SCHEMA = 1
FILE_MODE = 0o644
DIR_MODE = 0o755
MAX_ERROR_CHARS = 2000

# Keys that would hold a credential: refused anywhere in a record, the facts file is world-readable.
_SECRET_KEYS = ("password", "passwd", "token", "api_key", "apikey", "secret", "authorization", "credential", "auth")


def utc_now() -> str:
    """The current time as ISO 8601 UTC, second precision: 2026-11-22T13:10:00Z."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


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
            raise AirgapError(f"cannot open the lock file {self.path}: {exc.strerror or exc} "
                              f"(is {os.path.dirname(self.path)} writable?)") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = "" if directory else _read_pid(fd)
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                who = f" (pid {holder})" if holder else ""
                raise AirgapError(f"another ngc_image_mirror run holds the lock on {self.what}{who}; wait for it to finish") from None
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


class StateStore:
    """What has been mirrored where, kept in a JSON facts file that Ansible's setup shows as ansible_local.ngc_mirror.

    Layout: {"schema": 1, "updated": iso, "images": {key: {"source_digest", "destinations": {dest_key: entry},
    "last_error"?: {"message", "time"}}}}. Every change is written at once (temporary file, fsync, rename), so a crash
    loses nothing already recorded. Writers hold an exclusive lock on '<path>.lock' for their whole run;
    read_only=True (check mode) neither locks, nor creates, nor writes anything.
    """

    def __init__(self, path: str = DEFAULT_FACTS_PATH, read_only: bool = False, now: Callable[[], str] = utc_now) -> None:
        if not path or path.endswith(os.sep):
            raise AirgapError(f"state file path {path!r} must name a file")
        self.path = os.path.abspath(path)
        self.lock_path = self.path + ".lock"
        self.read_only = read_only
        self._now = now
        self._lock = RunLock(self.lock_path)
        self._data: dict[str, Any] | None = None

    # -- open / close ----------------------------------------------------------------------------------------------
    def __enter__(self) -> StateStore:
        self.open()
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self.close()

    def open(self) -> StateStore:
        """Lock (unless read-only) and load the file; a missing file is an empty state."""
        if self._data is not None:
            return self
        if not self.read_only:
            self._make_dir()
            self._lock.acquire()
        try:
            self._data = self._load()
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        """Release the lock. The data were already written by each change."""
        self._data = None
        self._lock.release()

    # -- reading ---------------------------------------------------------------------------------------------------
    @property
    def data(self) -> dict[str, Any]:
        """A copy of the whole document."""
        return copy.deepcopy(self._doc())

    def images(self) -> dict[str, dict[str, Any]]:
        return copy.deepcopy(self._doc()["images"])

    def image(self, key: str) -> dict[str, Any] | None:
        record = self._doc()["images"].get(key)
        return copy.deepcopy(record) if record is not None else None

    def destination(self, key: str, dest_key: str) -> dict[str, Any] | None:
        record = self._doc()["images"].get(key) or {}
        entry = (record.get("destinations") or {}).get(dest_key)
        return copy.deepcopy(entry) if entry is not None else None

    def is_current(self, key: str, dest_key: str, source_digest: str) -> bool:
        """True if dest_key was last written from this source digest."""
        entry = self.destination(key, dest_key)
        return bool(entry) and entry.get("source_digest") == source_digest

    # -- writing (each call is written to disk before it returns) --------------------------------------------------
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

    def record_failure(self, key: str, message: str) -> None:
        """Remember the last error for an image (shown in the facts); the caller must not pass secrets."""
        self._writable()
        _check_key(key, "image key")
        images = self._doc()["images"]
        before = copy.deepcopy(images.get(key))
        record = images.setdefault(key, {"destinations": {}})
        record["last_error"] = {"message": str(message)[:MAX_ERROR_CHARS], "time": self._now()}
        self._save_or_restore(key, before)

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
            raise AirgapError(f"cannot create the directory {directory} for the state file {self.path}: {exc.strerror or exc}") from None
        if not os.path.isdir(directory):
            raise AirgapError(f"cannot use the state file {self.path}: {directory} is not a directory")

    def _load(self) -> dict[str, Any]:
        try:
            with open(self.path, "rb") as handle:
                raw = handle.read()
        except FileNotFoundError:
            return {"schema": SCHEMA, "updated": None, "images": {}}
        except OSError as exc:
            raise AirgapError(f"cannot read the state file {self.path}: {exc.strerror or exc}") from None
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
            raise AirgapError(f"state file {self.path} has schema {schema}, written by a newer airgap.ngc; upgrade the collection")
        if schema != SCHEMA or not isinstance(doc.get("images"), dict):
            raise AirgapError(f"state file {self.path} is not an ngc_mirror state file (schema {SCHEMA} with an 'images' mapping): {fix}")
        for key, record in doc["images"].items():
            if not isinstance(record, dict) or not isinstance(record.get("destinations", {}), dict):
                raise AirgapError(f"state file {self.path}: the record of {key!r} is malformed: {fix}")
        return doc

    def _save_or_restore(self, key: str, before: dict[str, Any] | None) -> None:
        """Write the document; if that fails put the in-memory record back so memory matches the disk."""
        try:
            self._save()
        except BaseException:
            images = self._doc()["images"]
            if before is None:
                images.pop(key, None)
            else:
                images[key] = before
            raise

    def _save(self) -> None:
        doc = self._doc()
        doc["updated"] = self._now()
        atomic_write(self.path, (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode("utf-8"), FILE_MODE, "state file")


def _check_key(key: str, what: str) -> None:
    if not isinstance(key, str) or not key:
        raise AirgapError(f"{what} must be a non-empty string, got {key!r}")


def _refuse_secrets(value: Any, where: str) -> None:
    if isinstance(value, dict):
        for name, item in value.items():
            lowered = str(name).lower().replace("-", "_")
            if any(lowered == bad or lowered.endswith("_" + bad) for bad in _SECRET_KEYS):
                raise AirgapError(f"refusing to store {name!r} for {where} in the state file: it is world-readable and must hold no secrets")
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
