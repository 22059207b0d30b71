# Copyright (c) airgap.ngc contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A big blob's registry upload cut off is continued by the next run from what the registry confirmed.

The registry here is an in-memory one with distribution 2.8's session rules (measured, see _upload_sessions): the
upload URL carries the offset, only the latest URL is accepted, and a session whose bytes do not match its URL's
offset is gone.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import threading
from pathlib import Path
from typing import Any

import pytest

from ansible_collections.airgap.ngc.plugins.module_utils._transports import upload_sessions as _upload_sessions
from ansible_collections.airgap.ngc.plugins.module_utils._formats.bundle import BundleWriter
from ansible_collections.airgap.ngc.plugins.module_utils._types.errors import (
    DigestMismatchError,
    NotFoundError,
    RegistryError,
)
from ansible_collections.airgap.ngc.plugins.module_utils._formats.files import RESUME_MIN
from ansible_collections.airgap.ngc.plugins.module_utils._transports.fanout import resume_point
from ansible_collections.airgap.ngc.plugins.module_utils._types.blob_sink import BlobSink
from ansible_collections.airgap.ngc.plugins.module_utils._transports.upload_sessions import (
    SESSION_MAX_AGE,
    SessionUpload,
    UploadSessions,
)

PIECE = 4 * 1024 * 1024
DATA = bytes(range(256)) * ((RESUME_MIN + 3 * PIECE + 12345) // 256)
DIGEST = "sha256:" + hashlib.sha256(DATA).hexdigest()
HOST = "registry.test:5000"


@pytest.fixture(autouse=True)
def small_pieces(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_upload_sessions, "UPLOAD_PIECE", PIECE)


class Registry:
    """Upload sessions as distribution 2.8 keeps them."""

    host = HOST

    def __init__(self) -> None:
        self.uploads: dict[str, bytearray] = {}
        self.blobs: dict[str, bytes] = {}
        self.cancelled: list[str] = []
        self.patched: list[tuple[int, int]] = []
        self.count = 0

    @staticmethod
    def _parse(location: str) -> tuple[str, int]:
        uuid, state = location.rsplit("/", 1)[1].split("?_state=")
        return uuid, int(state)

    def _location(self, uuid: str) -> str:
        return f"https://{HOST}/v2/ns/big/blobs/uploads/{uuid}?_state={len(self.uploads[uuid])}"

    def _session(self, location: str) -> str:
        uuid, offset = self._parse(location)
        if uuid not in self.uploads or len(self.uploads[uuid]) != offset:
            raise NotFoundError("404 from registry.test: BLOB_UPLOAD_INVALID", status=404)
        return uuid

    def start_upload(self, name: str) -> str:
        self.count += 1
        uuid = f"u{self.count}"
        self.uploads[uuid] = bytearray()
        return self._location(uuid)

    def upload_offset(self, name: str, location: str) -> int | None:
        try:
            return len(self.uploads[self._session(location)])
        except NotFoundError:
            return None

    def patch_upload(self, name: str, location: str, offset: int, body: Any, length: int) -> str:
        uuid = self._session(location)
        data = body.read(length)
        assert len(data) == length and offset == len(self.uploads[uuid])
        self.uploads[uuid] += data
        self.patched.append((offset, length))
        return self._location(uuid)

    def finish_upload(self, name: str, location: str, digest: str) -> None:
        uuid = self._session(location)
        if "sha256:" + hashlib.sha256(self.uploads[uuid]).hexdigest() != digest:
            raise DigestMismatchError("registry.test refused the upload: DIGEST_INVALID", status=400)
        self.blobs[digest] = bytes(self.uploads.pop(uuid))

    def cancel_upload(self, name: str, location: str) -> None:
        uuid = self._parse(location)[0]
        self.uploads.pop(uuid, None)
        self.cancelled.append(uuid)


def sink(registry: Registry, sessions: UploadSessions, data: bytes = DATA) -> SessionUpload:
    return SessionUpload(registry, sessions, "ns/big", "sha256:" + hashlib.sha256(data).hexdigest(), len(data))


def write(target: Any, data: bytes, chunk: int = 1024 * 1024) -> None:
    for first in range(0, len(data), chunk):
        target.write(data[first : first + chunk])


def test_a_cut_off_upload_is_continued_from_what_the_registry_confirmed_and_its_spool(tmp_path: Path) -> None:
    registry, facts = Registry(), str(tmp_path / "ngc_mirror.fact")
    first = sink(registry, UploadSessions(facts))
    assert first.resume_from == 0
    cut = 2 * PIECE + 1000
    write(first, DATA[:cut])
    first.abort()  # the run failed elsewhere (a kill leaves the same: the record and the spool)
    record_file = tmp_path / ".ngc_mirror.fact.uploads"
    assert stat.S_IMODE(record_file.stat().st_mode) == 0o600
    (entry,) = json.loads(record_file.read_text())["uploads"].values()
    assert (
        entry["offset"] == 2 * PIECE and entry["size"] == len(DATA) and entry["location"].startswith(f"https://{HOST}/")
    )
    assert registry.patched == [(0, PIECE), (PIECE, PIECE)] and not registry.cancelled
    again = sink(registry, UploadSessions(facts))  # the next run
    assert again.resume_from == cut  # 2 pieces at the registry, the rest of the third in the spool
    write(again, DATA[cut:])
    again.close()
    assert registry.blobs == {DIGEST: DATA}
    assert registry.patched[2][0] == 2 * PIECE  # the spool's bytes went first, once
    assert not record_file.exists() and [p.name for p in tmp_path.iterdir()] == []


class RecordWatchingRegistry(Registry):
    """Notes, as each PATCH after the first arrives, which URL the sessions record holds: the one the registry gave for
    the PATCH before (the record did not lag it); disk syncs are counted meanwhile."""

    def __init__(self, record: Path) -> None:
        super().__init__()
        self.record, self.seen, self.latest = record, [], ""

    def patch_upload(self, name: str, location: str, offset: int, body: Any, length: int) -> str:
        if self.latest:
            (entry,) = json.loads(self.record.read_text())["uploads"].values()
            self.seen.append(entry["location"] == self.latest == location)
        self.latest = super().patch_upload(name, location, offset, body, length)
        return self.latest


def test_the_record_follows_each_patch_without_waiting_for_the_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A kill right after a PATCH must find its URL recorded: the record is replaced at once, not after syncing the disk
    (whose journal commit waits for the spools' dirty pieces: seconds on a busy disk)."""
    registry = RecordWatchingRegistry(tmp_path / ".ngc_mirror.fact.uploads")
    upload = sink(registry, UploadSessions(str(tmp_path / "ngc_mirror.fact")))
    synced: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd))[-1])
    write(upload, DATA)
    upload.close()
    assert registry.blobs == {DIGEST: DATA} and registry.seen and all(registry.seen)
    assert synced == []


def pieces_in_order(registry: Registry) -> bool:
    """Every PATCH started where the one before ended, and together they hold the whole blob."""
    ends = [0] + [offset + length for offset, length in registry.patched]
    return all(offset == ends[i] for i, (offset, _length) in enumerate(registry.patched)) and ends[-1] == len(DATA)


class SlowRegistry(Registry):
    """Takes a PATCH only once the test opens the gate."""

    def __init__(self) -> None:
        super().__init__()
        self.gate, self.entered = threading.Event(), threading.Event()

    def patch_upload(self, name: str, location: str, offset: int, body: Any, length: int) -> str:
        self.entered.set()
        assert self.gate.wait(30)
        return super().patch_upload(name, location, offset, body, length)


def test_the_next_piece_is_gathered_while_one_is_sent(tmp_path: Path) -> None:
    registry, facts = SlowRegistry(), str(tmp_path / "ngc_mirror.fact")
    upload = sink(registry, UploadSessions(facts))
    write(upload, DATA[: 2 * PIECE - 1024 * 1024])  # the first piece is sent while the second is gathered
    assert registry.entered.wait(30) and registry.patched == []
    assert len([p for p in tmp_path.iterdir() if ".upload-" in p.name]) == 2  # two pieces on disk, no more
    registry.gate.set()
    write(upload, DATA[2 * PIECE - 1024 * 1024 :])
    upload.close()
    assert registry.blobs == {DIGEST: DATA} and pieces_in_order(registry)
    assert [p.name for p in tmp_path.iterdir()] == []


class FailingRegistry(Registry):
    """Refuses the PATCH at one offset, once, before reading it (a dropped connection)."""

    def __init__(self, refuse_at: int) -> None:
        super().__init__()
        self.refuse_at: int | None = refuse_at

    def patch_upload(self, name: str, location: str, offset: int, body: Any, length: int) -> str:
        if offset == self.refuse_at:
            self.refuse_at = None
            raise RegistryError("connection to registry.test reset")
        return super().patch_upload(name, location, offset, body, length)


def test_a_piece_the_registry_did_not_take_is_kept_with_the_one_gathered_after_it(tmp_path: Path) -> None:
    registry, facts = FailingRegistry(refuse_at=PIECE), str(tmp_path / "ngc_mirror.fact")
    first = sink(registry, UploadSessions(facts))
    with pytest.raises(RegistryError, match="reset"):
        write(first, DATA)  # the error of the second piece's PATCH comes back with a later write
    first.abort()
    assert registry.patched == [(0, PIECE)] and not registry.cancelled
    again = sink(registry, UploadSessions(facts))
    assert again.resume_from == 3 * PIECE  # the registry's piece, the one it did not take, the one gathered after it
    write(again, DATA[3 * PIECE :])
    again.close()
    assert registry.blobs == {DIGEST: DATA} and pieces_in_order(registry)
    assert [p.name for p in tmp_path.iterdir()] == []


def test_restart_into_a_whole_piece_gathers_it_again(tmp_path: Path) -> None:
    registry, facts = FailingRegistry(refuse_at=PIECE), str(tmp_path / "ngc_mirror.fact")
    first = sink(registry, UploadSessions(facts))
    with pytest.raises(RegistryError):
        write(first, DATA)
    first.abort()
    again = sink(registry, UploadSessions(facts))
    again.restart(PIECE + 100)  # another destination holds less: the whole piece is cut, the one after it removed
    assert again.resume_from == PIECE + 100 and not registry.cancelled
    assert len([p for p in tmp_path.iterdir() if ".upload-" in p.name]) == 1
    write(again, DATA[PIECE + 100 :])
    again.close()
    assert registry.blobs == {DIGEST: DATA} and pieces_in_order(registry)


class AwayRegistry(Registry):
    """Refuses the connection for the next ``away`` PATCH requests (the registry restarts), taking none of their bytes."""

    def __init__(self, away: int) -> None:
        super().__init__()
        self.away = away

    def patch_upload(self, name: str, location: str, offset: int, body: Any, length: int) -> str:
        if self.patched and self.away > 0:
            self.away -= 1
            raise RegistryError(f"cannot reach {HOST} for upload of bytes {offset}: Connection refused")
        return super().patch_upload(name, location, offset, body, length)


def test_a_registry_briefly_away_between_two_pieces_gets_the_piece_again_after_a_wait(tmp_path: Path) -> None:
    from ansible_collections.airgap.ngc.plugins.module_utils._http.transport import RetryPolicy

    registry, sleeps = AwayRegistry(away=3), []
    target = SessionUpload(
        registry,
        UploadSessions(str(tmp_path / "f.fact")),
        "ns/big",
        DIGEST,
        len(DATA),
        policy=RetryPolicy(retries=None, budget=60.0),
        sleep=sleeps.append,
    )
    write(target, DATA)
    target.close()
    assert registry.blobs == {DIGEST: DATA} and pieces_in_order(registry)
    assert len(sleeps) == 3 and registry.count == 1  # one session throughout, continued after each wait


def test_a_registry_away_for_longer_than_the_policy_allows_keeps_the_session_for_the_next_run(tmp_path: Path) -> None:
    from ansible_collections.airgap.ngc.plugins.module_utils._http.transport import RetryPolicy

    registry, facts = AwayRegistry(away=10), str(tmp_path / "f.fact")
    target = SessionUpload(
        registry,
        UploadSessions(facts),
        "ns/big",
        DIGEST,
        len(DATA),
        policy=RetryPolicy(retries=2),
        sleep=lambda seconds: None,
    )
    with pytest.raises(RegistryError, match="Connection refused"):
        write(target, DATA)
        target.close()
    target.abort()
    registry.away = 0
    again = sink(registry, UploadSessions(facts))
    assert again.resume_from >= PIECE  # continued, not restarted
    write(again, DATA[again.resume_from :])
    again.close()
    assert registry.blobs == {DIGEST: DATA} and registry.count == 1


def test_a_recorded_session_the_registry_lost_is_cancelled_there(tmp_path: Path) -> None:
    registry, facts = Registry(), str(tmp_path / "f.fact")
    first = sink(registry, UploadSessions(facts))
    write(first, DATA[: PIECE + 10])
    first.abort()
    registry.uploads["u1"] += b"x"  # a PATCH cut off mid-body: the session no longer matches its URL
    again = sink(registry, UploadSessions(facts))
    assert again.resume_from == 0 and registry.cancelled == ["u1"]


def test_a_session_the_registry_lost_starts_over_quietly(tmp_path: Path) -> None:
    registry, facts = Registry(), str(tmp_path / "ngc_mirror.fact")
    first = sink(registry, UploadSessions(facts))
    write(first, DATA[: PIECE + 10])
    first.abort()
    assert len(registry.uploads) == 1
    uuid = next(iter(registry.uploads))
    registry.uploads[uuid] += b"torn"  # a PATCH cut off mid-body: distribution keeps its bytes, the session is lost
    again = sink(registry, UploadSessions(facts))
    assert again.resume_from == 0
    assert not (tmp_path / ".ngc_mirror.fact.uploads").exists()
    write(again, DATA)
    again.close()
    assert registry.blobs == {DIGEST: DATA}


def test_a_refused_digest_drops_the_session(tmp_path: Path) -> None:
    registry, facts = Registry(), str(tmp_path / "ngc_mirror.fact")
    bad = DATA[:-1] + bytes([DATA[-1] ^ 1])
    first = SessionUpload(registry, UploadSessions(facts), "ns/big", DIGEST, len(bad))
    write(first, bad)
    with pytest.raises(DigestMismatchError):
        first.close()
    first.abort()
    assert registry.cancelled and not registry.uploads and DIGEST not in registry.blobs
    assert sink(registry, UploadSessions(facts)).resume_from == 0 and list(tmp_path.iterdir()) == []


def test_an_upload_aborted_after_its_last_byte_is_not_kept(tmp_path: Path) -> None:
    registry, facts = Registry(), str(tmp_path / "ngc_mirror.fact")
    first = sink(registry, UploadSessions(facts))
    write(first, DATA)
    first.abort()  # the reader's digest check failed at the end
    assert registry.cancelled and list(tmp_path.iterdir()) == []


def test_restart_keeps_what_it_can_and_cancels_below_the_registrys_bytes(tmp_path: Path) -> None:
    registry, facts = Registry(), str(tmp_path / "ngc_mirror.fact")
    first = sink(registry, UploadSessions(facts))
    write(first, DATA[: PIECE + 5000])
    first.abort()
    again = sink(registry, UploadSessions(facts))
    assert again.resume_from == PIECE + 5000
    again.restart(PIECE + 100)  # within the spool: cut it
    assert again.resume_from == PIECE + 100 and not registry.cancelled
    again.restart(PIECE - 1)  # below what the registry holds: the session is cancelled, the blob starts over
    assert again.resume_from == 0 and registry.cancelled and not registry.uploads
    write(again, DATA)
    again.close()
    assert registry.blobs == {DIGEST: DATA}


def test_old_records_and_orphan_spools_are_dropped_and_foreign_content_ignored(tmp_path: Path) -> None:
    facts = str(tmp_path / "ngc_mirror.fact")
    sessions = UploadSessions(facts, now=lambda: 10.0 + SESSION_MAX_AGE)
    record = {
        "host": HOST,
        "repository": "ns/big",
        "digest": DIGEST,
        "size": len(DATA),
        "location": "https://x/u?_state=1",
        "offset": 1,
    }
    uploads = {"old": dict(record, written=5), "new": dict(record, written=20)}
    Path(sessions.path).write_text(json.dumps({"schema": 1, "uploads": uploads}))
    orphan = Path(sessions.spool("nobody", 0))
    orphan.write_bytes(b"x")
    Path(sessions.spool("new", 1)).write_bytes(b"y")
    assert sessions.get("old") is None and sessions.get("new") is not None
    assert not orphan.exists() and Path(sessions.spool("new", 1)).exists()
    Path(sessions.path).write_text("not json")
    assert UploadSessions(facts).get("new") is None  # unreadable: no sessions, no traceback


class Plain(BlobSink):
    """A sink holding nothing from an earlier run."""

    def write(self, data: bytes) -> None:
        """Not fed here: only where a read may start is asked."""

    def close(self) -> None:
        """Nothing to complete."""

    def abort(self) -> None:
        """Nothing to drop."""


class Unverifying(Plain):
    """A sink that holds bytes from an earlier run but can neither give them nor check a digest."""

    def __init__(self, offset: int) -> None:
        self.resume_from = offset

    def restart(self, offset: int) -> None:
        self.resume_from = 0 if offset != self.resume_from else offset


def test_resume_point_with_registry_sessions(tmp_path: Path) -> None:
    registry, facts = Registry(), str(tmp_path / "facts" / "ngc_mirror.fact")
    os.makedirs(tmp_path / "facts")
    first = sink(registry, UploadSessions(facts))
    write(first, DATA[: 2 * PIECE])
    first.abort()

    only_registry = sink(registry, UploadSessions(facts))
    assert resume_point([only_registry], True) == (2 * PIECE, None)  # no bytes to hash: the registry checks the digest

    bundle = BundleWriter(str(tmp_path / "bundle"), "test")
    kept = bundle.blob_sink(DIGEST, len(DATA))
    write(kept, DATA[: 3 * PIECE])
    kept.abort()
    kept = bundle.blob_sink(DIGEST, len(DATA))
    start, held = resume_point([only_registry, kept], True)  # the bundle's file is cut back to the registry's bytes
    assert (
        start == 2 * PIECE
        and held is not None
        and b"".join(held) == DATA[: 2 * PIECE]
        and kept.resume_from == 2 * PIECE
    )

    assert resume_point([only_registry, Unverifying(2 * PIECE)], True) == (0, ())  # no unverifiable stream for it
    assert only_registry.resume_from == 0 and registry.cancelled

    second = sink(registry, UploadSessions(facts))
    write(second, DATA[:PIECE])
    second.abort()
    again = sink(registry, UploadSessions(facts))
    assert again.resume_from == PIECE
    assert (
        resume_point([again, Plain()], True) == (0, ()) and again.resume_from == 0
    )  # another destination needs it all
    third = sink(registry, UploadSessions(facts))
    write(third, DATA[:PIECE])
    third.abort()
    assert resume_point([sink(registry, UploadSessions(facts))], False) == (0, ())  # the source cannot start part way
