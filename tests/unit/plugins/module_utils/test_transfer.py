# Copyright (c) airgap.ngc contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Fan-out of one read to many sinks: order, bounded memory, failure handling, local blobs in archives."""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
import threading
from pathlib import Path
from typing import Iterator

import pytest

from ansible_collections.airgap.ngc.plugins.module_utils._types.errors import (
    AirgapError,
    DigestMismatchError,
    RegistryError,
)
from ansible_collections.airgap.ngc.plugins.module_utils._transports.fanout import (
    LocalBlobChanged,
    UploadSink,
    fan_out,
    index_archive_blobs,
)


class ListSink:
    def __init__(self, fail_at: int | None = None) -> None:
        self.chunks: list[bytes] = []
        self.closed = False
        self.aborted = False
        self.fail_at = fail_at

    def write(self, data: bytes) -> None:
        if self.fail_at is not None and len(self.chunks) == self.fail_at:
            raise AirgapError("disk full")
        self.chunks.append(data)

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = True


def chunks(n: int) -> Iterator[bytes]:
    for i in range(n):
        yield bytes([i]) * 10


def test_every_sink_gets_every_chunk_once() -> None:
    a, b = ListSink(), ListSink()
    seen: list[int] = []
    assert fan_out(chunks(5), [a, b], seen.append) == 50
    assert a.chunks == b.chunks == list(chunks(5))
    assert a.closed and b.closed
    assert seen == [10] * 5


def test_a_failing_sink_aborts_all() -> None:
    a, b = ListSink(), ListSink(fail_at=2)
    with pytest.raises(AirgapError, match="disk full"):
        fan_out(chunks(5), [a, b])
    assert a.aborted and b.aborted and not a.closed


def test_upload_sink_streams_through_a_bounded_queue() -> None:
    received: list[bytes] = []
    gate = threading.Event()

    def upload(body: Iterator[bytes]) -> None:
        gate.wait(5)
        received.extend(body)

    sink = UploadSink(upload, "test upload", depth=2)
    sink.write(b"a")
    sink.write(b"b")
    assert sink._queue.full()  # pylint: disable=protected-access
    gate.set()
    for data in (b"c", b"d"):
        sink.write(data)
    sink.close()
    assert received == [b"a", b"b", b"c", b"d"]


def test_upload_failure_reaches_the_writer() -> None:
    def upload(body: Iterator[bytes]) -> None:
        next(body)
        raise RegistryError("401 from registry: check the password")

    sink = UploadSink(upload, "test upload", depth=1)
    with pytest.raises(RegistryError, match="401"):
        for _round in range(100):
            sink.write(b"x" * 10)
        sink.close()


def test_abort_ends_the_upload_without_completing_it() -> None:
    finished: list[bool] = []

    def upload(body: Iterator[bytes]) -> None:
        for _round in body:
            pass
        finished.append(True)

    sink = UploadSink(upload, "test upload")
    sink.write(b"x")
    sink.abort()
    assert finished == []


def _archive_with_blob(path: Path, payload: bytes, name_digest: str | None = None) -> str:
    digest = name_digest or "sha256:" + hashlib.sha256(payload).hexdigest()
    with tarfile.open(path, "w") as archive:
        for name, data in (("manifest.json", b"[]"), ("blobs/sha256/" + digest.split(":", 1)[1], payload)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return digest


def test_index_archive_blobs_finds_blob_members(tmp_path: Path) -> None:
    path = tmp_path / "a.tar"
    payload = b"layer-bytes" * 100
    digest = _archive_with_blob(path, payload)
    found = index_archive_blobs(str(path))
    assert list(found) == [digest]
    assert b"".join(found[digest].open(chunk_size=7)) == payload


def test_a_local_blob_whose_bytes_do_not_match_its_digest_is_refused_before_its_last_chunk(tmp_path: Path) -> None:
    path = tmp_path / "a.tar"
    digest = _archive_with_blob(path, b"not what the name says" * 10, name_digest="sha256:" + "c" * 64)
    delivered = []
    with pytest.raises(DigestMismatchError, match="hashes to sha256:"):
        for chunk in index_archive_blobs(str(path))[digest].open(chunk_size=16):
            delivered.append(chunk)
    assert sum(map(len, delivered)) < 220  # the last chunk was held back


def test_a_local_blob_in_a_replaced_file_is_not_taken(tmp_path: Path) -> None:
    path = tmp_path / "a.tar"
    payload = b"layer-bytes" * 100
    digest = _archive_with_blob(path, payload)
    blob = index_archive_blobs(str(path))[digest]
    other = tmp_path / "b.tar"
    _archive_with_blob(other, b"x" * 50 + payload)  # same name, other content at the recorded offset
    os.replace(other, path)
    with pytest.raises(LocalBlobChanged, match="replaced"):
        blob.open()
    path.unlink()
    with pytest.raises(LocalBlobChanged, match="gone"):
        blob.open()
