# Copyright (c) airgap.ngc contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private: a big blob's upload to a registry that a run cut off is continued by the next one. Not a public API.

A blob of ``RESUME_MIN`` bytes or more goes to a registry destination through an upload session (the distribution
spec's chunked upload): POST, then PATCH requests of ``UPLOAD_PIECE`` bytes or a little more (the last one less),
then ``PUT ?digest=`` with no body. The session (registry host, repository, digest, size, the upload URL as the
registry last gave it, the bytes it confirmed) is recorded in ``UploadSessions`` before any body is sent and after
each PATCH. The next run asks the registry where the session stands (GET of the upload URL: 204 and
``Range: 0-<last byte>``) and sends only the rest.

What CNCF distribution 2.8 does (measured, and why the pieces are gathered on disk before each PATCH): its upload
URL carries the offset in a signed ``_state``, and only the URL of the latest PATCH is accepted. A PATCH cut off
mid-body keeps the bytes that arrived, so the size no longer matches any URL's offset: every later request on the
session answers 404 BLOB_UPLOAD_INVALID ("upload resumed at wrong offset"), the session is lost. A PATCH whose
Content-Range does not start where the session stands is not refused either: its bytes are appended and the session
is lost the same way. So a PATCH is only ever sent whole from a file (``.<facts file>.upload-<key>.<start>``, a
piece kept with the session) at the offset the registry last confirmed, and the time spent inside one is the time
to send a piece from local disk: a kill then almost always falls between two PATCH requests, where the session is
intact. A kill during one loses that blob's session (the next run starts it again from byte 0). While one piece is
sent, the next is gathered, so the download does not pause for the upload unless the registry is the slower side.

Digest: the registry checks the whole upload against the digest at the final PUT (400 DIGEST_INVALID), so a sink of
this kind ``verifies_digest`` and a resumed read needs no bytes from here to hash (``_transfer.resume_point``).
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from typing import Any, Callable

from ansible_collections.airgap.ngc.plugins.module_utils._types.blob_sink import BlobSink
from ansible_collections.airgap.ngc.plugins.module_utils._types.errors import (
    AirgapError,
    AuthError,
    DigestMismatchError,
    NotFoundError,
    RegistryError,
)
from ansible_collections.airgap.ngc.plugins.module_utils._formats.files import RESUME_MIN, atomic_write, os_error
from ansible_collections.airgap.ngc.plugins.module_utils._http.transport import RETRY_STATUSES, RetryPolicy, budgeted

UPLOAD_PIECE = 32 * 1024 * 1024
"""Bytes gathered on disk and sent by one PATCH request of a big blob's upload."""
SESSION_MAX_AGE = 7 * 24 * 3600
"""Seconds a session record is kept: distribution purges unfinished uploads after a week by default."""
SCHEMA = 1


def sessions_path(facts_path: str) -> str:
    """Where the upload sessions of the facts file ``facts_path`` are recorded: '.<name>.uploads' beside it."""
    directory, name = os.path.split(os.path.abspath(facts_path))
    return os.path.join(directory, f".{name}.uploads")


class UploadSessions:
    """The upload sessions of big blobs in flight to registries, in a JSON file (mode 0600) beside the facts file.

    One entry per blob in flight (registry host, repository, digest), holding its size, the session's upload URL as
    the registry last gave it (no credentials: the registry's own opaque state), the bytes it confirmed and when the
    entry was written. Each entry's spool file holds the bytes of the piece being gathered. An entry is removed when
    its blob is committed or its session refused; entries older than ``SESSION_MAX_AGE`` and spool files of no entry
    are removed when the file is first read in a run, so what is kept is bounded by the blobs in flight.

    Guarantees: one writer process (the run holds the facts file's lock); within it the methods are thread-safe, each
    change replaces the file whole (``atomic_write``: a reader or a kill sees the old entries or the new ones) in the
    order of the calls. Nothing is read or written until a session is asked for (check mode touches nothing).
    """

    def __init__(self, facts_path: str, now: Callable[[], float] = time.time) -> None:
        self.path = sessions_path(facts_path)
        self._directory, self._name = os.path.split(self.path)
        self._now = now
        self._lock = threading.Lock()
        self._entries: dict[str, dict[str, Any]] | None = None

    @staticmethod
    def key(host: str, repository: str, digest: str) -> str:
        return f"{host}/{repository}@{digest}"

    def _stem(self, key: str) -> str:
        return f"{self._name[: -len('.uploads')]}.upload-{hashlib.sha256(key.encode()).hexdigest()[:16]}."

    def spool(self, key: str, start: int) -> str:
        """The spool file of an entry's piece that starts at byte ``start`` of the blob:
        '.<facts name>.upload-<16 hex of the key's sha256>.<start>' beside the facts file."""
        return os.path.join(self._directory, f"{self._stem(key)}{start}")

    def spools(self, key: str) -> dict[int, str]:
        """An entry's spool files, by where their piece starts."""
        stem = self._stem(key)
        found = {}
        for name in self._names():
            if name.startswith(stem) and name[len(stem) :].isdigit():
                found[int(name[len(stem) :])] = os.path.join(self._directory, name)
        return found

    def _names(self) -> list[str]:
        try:
            return os.listdir(self._directory)
        except OSError:
            return []

    def _load(self) -> dict[str, dict[str, Any]]:
        """The entries (read once a run): unreadable or foreign content counts as none; old entries and orphan spools go."""
        if self._entries is not None:
            return self._entries
        entries: dict[str, dict[str, Any]] = {}
        try:
            with open(self.path, "rb") as handle:
                data = json.loads(handle.read().decode("utf-8"))
            if isinstance(data, dict) and data.get("schema") == SCHEMA and isinstance(data.get("uploads"), dict):
                entries = {
                    k: v
                    for k, v in data["uploads"].items()
                    if _valid(v) and self._now() - v["written"] < SESSION_MAX_AGE
                }
        except (OSError, UnicodeDecodeError, ValueError):
            pass
        self._entries = entries
        kept = tuple(self._stem(key) for key in entries)
        prefix = self._stem("").rsplit("-", 1)[0] + "-"
        for name in self._names():
            if name.startswith(prefix) and not name.startswith(kept):
                _remove(os.path.join(self._directory, name))
        return entries

    def _save(self) -> None:
        entries = self._entries or {}
        if not entries:
            _remove(self.path)
            return
        document = {"schema": SCHEMA, "uploads": entries}
        # Not synced: a kill keeps what the kernel holds, and a record that waited for the disk (the spools' dirty pieces
        # go first) would lag the PATCH it follows; after a crash of the machine a stale record only costs the session.
        atomic_write(
            self.path,
            (json.dumps(document, indent=1, sort_keys=True) + "\n").encode("utf-8"),
            mode=0o600,
            what="upload sessions file",
            sync=False,
        )

    def get(self, key: str) -> dict[str, Any] | None:
        with self._lock:
            entry = self._load().get(key)
            return dict(entry) if entry else None

    def put(self, key: str, host: str, repository: str, digest: str, size: int, location: str, offset: int) -> None:
        """Record (or update) a session; returns once the file holds it."""
        with self._lock:
            self._load()[key] = {
                "host": host,
                "repository": repository,
                "digest": digest,
                "size": size,
                "location": location,
                "offset": offset,
                "written": int(self._now()),
            }
            self._save()

    def drop(self, key: str) -> None:
        """Forget a session and its spool (nothing is written if there was none)."""
        with self._lock:
            entries = self._load()
            for path in self.spools(key).values():
                _remove(path)
            if entries.pop(key, None) is not None:
                self._save()


def _valid(entry: Any) -> bool:
    return (
        isinstance(entry, dict)
        and all(isinstance(entry.get(k), str) for k in ("host", "repository", "digest", "location"))
        and all(isinstance(entry.get(k), int) and entry[k] >= 0 for k in ("size", "offset", "written"))
    )


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


class SessionUpload(BlobSink):
    """A sink uploading one big blob through a recorded upload session; what a cut-off run sent is continued.

    The blob's bytes are gathered in pieces of ``UPLOAD_PIECE`` on disk (a spool file per piece, named by where its
    bytes start in the blob). A full piece is PATCHed by a sender thread while the next one is gathered, so the read
    feeding this sink waits only when two pieces are on disk and the registry has not yet taken the first.

    ``resume_from`` is what the registry confirmed for the recorded session (GET of its URL) plus the spooled pieces
    that follow it without a gap; 0 when there is no record, the registry does not know the session, or anything is
    in doubt. ``restart(offset)`` keeps the first ``offset`` bytes if they are at or past the registry's confirmed
    bytes (the spools are cut), else cancels the session: the blob then starts over at 0. ``verifies_digest``: the
    registry checks the digest of the whole upload at the final PUT, so no bytes are offered to hash (no ``held``).

    Guarantees: a PATCH is sent only whole, from a spool, at the offset the registry last confirmed, one at a time,
    and the session is recorded before the first and after each; at most two pieces are on disk per blob. The blob
    is committed (PUT) only in ``close()``, which fan_out calls only once the source's chunks ended without error.
    ``abort()`` waits for a PATCH in flight, then keeps the session and its spools for the next run, unless the
    whole blob was sent (then it was refused or unverified: cancelled). A refused PATCH or PUT drops the session.
    ``write``, ``restart``, ``close`` and ``abort`` are called by one thread at a time.
    """

    verifies_digest = True

    def __init__(
        self,
        client: Any,
        sessions: UploadSessions,
        repository: str,
        digest: str,
        size: int,
        committed: Callable[[], None] = lambda: None,
        policy: RetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if size < RESUME_MIN:
            raise ValueError(f"a blob of {size} bytes is uploaded in one request")
        self.client, self.sessions, self.repository, self.digest, self.size = client, sessions, repository, digest, size
        self.key = UploadSessions.key(client.host, repository, digest)
        self.what = f"upload of {digest} to {client.host}/{repository}"
        self._committed = committed
        self._policy = policy or RetryPolicy(retries=0)
        self._sleep = sleep
        # The sender thread changes _location and _offset; the caller's thread reads them only once it is joined.
        self._location: str | None = None
        self._offset = 0  # bytes the registry confirmed
        self._full: tuple[int, int] | None = None  # (start, length) of a whole piece not yet confirmed
        self._gather_start = 0  # where the piece being gathered starts
        self._spool: Any = None  # its file
        self._sender: threading.Thread | None = None
        self._send_error: BaseException | None = None
        self._done = False
        self.resume_from = self._continued()
        self.written = self.resume_from

    def _continued(self) -> int:
        """Where the recorded session of this blob stands (0 and the record dropped if it cannot be continued)."""
        record = self.sessions.get(self.key)
        if record is None:
            return 0
        held = None
        if record["size"] == self.size and record["host"] == self.client.host:
            try:
                held = self.client.upload_offset(self.repository, record["location"])
            except AirgapError:
                held = None
        if held is None or held == 0 or held >= self.size:
            if record["host"] == self.client.host:
                self.client.cancel_upload(self.repository, record["location"])  # best effort: free what it holds
            self.sessions.drop(self.key)  # gone, refused or in doubt: quietly start a fresh one
            return 0
        self._location, self._offset = record["location"], held
        spools = self.sessions.spools(self.key)
        chain: list[tuple[int, int]] = []  # the pieces that follow the confirmed bytes without a gap
        at = held
        while at in spools and len(chain) < 2:
            length = _size(spools[at])
            if length <= 0:
                break
            chain.append((at, length))
            at += length
        if at >= self.size or (len(chain) == 2 and chain[0][1] < UPLOAD_PIECE):
            chain, at = [], held
        for start, path in spools.items():
            if all(start != first for first, _length in chain):
                _remove(path)  # sent before the kill, or cut off from the chain
        if chain and chain[0][1] >= UPLOAD_PIECE:
            self._full = chain.pop(0)
        self._gather(chain[0][0] if chain else at, keep=chain[0][1] if chain else 0)
        return at

    def _gather(self, start: int, keep: int = 0) -> None:
        """Gather the piece that starts at ``start`` (its spool holding its first ``keep`` bytes, positioned after them)."""
        if self._spool is not None and self._gather_start != start:
            self._spool.close()
            self._spool = None
        path = self.sessions.spool(self.key, start)
        try:
            if self._spool is None:
                flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)
                self._spool = os.fdopen(os.open(path, flags, 0o600), "r+b")
            self._spool.truncate(keep)
            self._spool.seek(keep)
        except OSError as exc:
            raise os_error(exc, "spooling blob", path) from None
        self._gather_start = start

    def restart(self, offset: int = 0) -> None:
        """Keep only the first ``offset`` bytes (another sink of the blob holds fewer); the registry's confirmed bytes
        cannot be cut, so below them the session is cancelled and the blob starts over."""
        if offset == self.resume_from:
            return
        if self._location is not None and self._offset <= offset < self.resume_from:
            if self._full is not None and offset <= self._full[0] + self._full[1]:
                _remove(self.sessions.spool(self.key, self._gather_start))  # the piece after it goes
                self._gather(self._full[0], keep=offset - self._full[0])  # the whole piece is cut: gathered again
                self._full = None
            else:
                self._gather(self._gather_start, keep=offset - self._gather_start)
            self.written = self.resume_from = offset
            return
        self._drop()
        self.written = self.resume_from = 0

    def forget(self) -> None:
        """The bytes were not the blob (its digest failed): cancel the session once the PATCH in flight ended, and
        remove its spools; nothing is kept for a next run."""
        if self._sender is not None:
            self._sender.join()
            self._sender = None
        self._drop()
        self.written = self.resume_from = 0

    def _drop(self) -> None:
        """Cancel the session (best effort) and forget it with its spools."""
        if self._location is not None:
            self.client.cancel_upload(self.repository, self._location)
        self._location, self._offset, self._full = None, 0, None
        if self._spool is not None:
            self._spool.close()
            self._spool = None
        self.sessions.drop(self.key)

    def _spool_error(self, exc: OSError) -> AirgapError:
        """What a failed read or write of the piece being gathered is reported as."""
        return os_error(exc, "spooling blob", self.sessions.spool(self.key, self._gather_start))

    def _record(self) -> None:
        self.sessions.put(
            self.key, self.client.host, self.repository, self.digest, self.size, self._location or "", self._offset
        )

    def write(self, data: bytes) -> None:
        if self._location is None:
            self._location = self.client.start_upload(self.repository)
            self._offset = 0
            self._record()  # before any body is sent
            self._gather(0)
        if self.written + len(data) > self.size:
            raise DigestMismatchError(f"{self.what}: the data is longer than its {self.size} bytes")
        try:
            self._spool.write(data)
        except OSError as exc:
            raise self._spool_error(exc) from None
        self.written += len(data)
        if self._full is not None and self._sender is None:
            self._start_sending()  # a whole piece kept by a cut-off run
        if self.written - self._gather_start >= UPLOAD_PIECE:
            self._settle()
            try:
                self._spool.flush()
            except OSError as exc:
                raise self._spool_error(exc) from None
            self._full = (self._gather_start, self.written - self._gather_start)
            self._gather(self.written)
            self._start_sending()

    def _start_sending(self) -> None:
        """PATCH the whole piece on the sender thread (none is in flight)."""
        self._send_error = None
        self._sender = threading.Thread(target=self._send_full, name=f"send {self.what}", daemon=True)
        self._sender.start()

    def _send_full(self) -> None:
        try:
            if self._full is not None:  # set before the thread starts
                self._send(*self._full)
        except BaseException as exc:  # pylint: disable=broad-exception-caught
            self._send_error = exc

    def _settle(self) -> None:
        """Wait for the PATCH in flight; raise its error. Afterwards no whole piece is waiting."""
        if self._sender is not None:
            self._sender.join()
            self._sender = None
            if self._send_error is not None:
                error, self._send_error = self._send_error, None
                raise error
        if self._full is not None:
            self._send(*self._full)

    def _send(self, start: int, length: int) -> None:
        """PATCH the piece at ``start`` (the registry's confirmed offset) from its spool; record the new URL and offset;
        remove the spool."""
        path = self.sessions.spool(self.key, start)
        try:
            with open(path, "rb") as body:
                location = self._patch(body, start, length)
        except OSError as exc:
            raise os_error(exc, "spooling blob", path) from None
        self._location, self._offset, self._full = location, start + length, None
        self._record()  # at once: the registry's URL moved on with this PATCH, the recorded one is stale until then
        _remove(path)  # a kill before this leaves a piece the next run removes (it starts below the confirmed bytes)

    def _patch(self, body: Any, start: int, length: int) -> str:
        """PATCH the piece in ``body`` at ``start``; the session's new URL.

        A PATCH refused for an expired token, or that failed for a reason worth another attempt (a connection refused
        or broken, 429, 5xx: the registry was briefly away), is sent again, after the retry policy's wait, if the
        registry says the session still stands at ``start`` (it took none of the piece). Otherwise the error stands:
        a session holding part of a piece cannot be continued, and the next run starts that blob again.
        """
        failures = 0
        waited = 0.0
        challenged = False
        while True:
            try:
                return self.client.patch_upload(self.repository, self._location, start, body, length)
            except (DigestMismatchError, NotFoundError):
                raise
            except AuthError:
                # The token ran out between two pieces: the status GET below answers the new challenge.
                if challenged:
                    raise
                challenged = True
            except RegistryError as exc:
                if exc.status is not None and exc.status not in RETRY_STATUSES:
                    raise
                delay = self._policy.backoff_delay(failures)
                if not self._policy.allows(failures + 1, waited, delay):
                    raise
                self._sleep(delay)
                waited += budgeted(delay)
                failures += 1
            if self.client.upload_offset(self.repository, self._location) != start:
                raise RegistryError(
                    f"{self.what}: the registry lost the session while bytes {start}-{start + length - 1} "
                    "were sent; the next run starts the blob again"
                )
            body.seek(0)

    def close(self) -> None:
        if self.written != self.size:
            self.abort()
            raise DigestMismatchError(f"{self.what}: got {self.written} bytes, {self.size} expected")
        try:
            self._settle()
            if self.written > self._gather_start:
                self._spool.flush()
                self._send(self._gather_start, self.written - self._gather_start)
            self.client.finish_upload(self.repository, self._location, self.digest)
        except (AirgapError, OSError) as exc:
            self._drop()  # refused: the next run starts again
            if isinstance(exc, OSError):
                raise self._spool_error(exc) from None
            raise
        self._done = True
        self._location = None
        if self._spool is not None:
            self._spool.close()
            self._spool = None
        self.sessions.drop(self.key)
        self._committed()

    def abort(self) -> None:
        """Keep the session for the next run (a run cut off or failed elsewhere) once the PATCH in flight ended; drop it
        if the whole blob was sent (its digest failed, or it was refused) or nothing was ever started."""
        if self._done:
            return
        self._done = True
        if self._sender is not None:
            self._sender.join()
            self._sender = None
        if self._location is None or self.written >= self.size:
            self._drop()
            return
        try:
            self._spool.flush()
            self._spool.close()
        except (OSError, AttributeError):
            pass
        self._spool = None


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return -1
