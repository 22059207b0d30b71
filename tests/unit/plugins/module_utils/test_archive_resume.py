# Copyright (c) airgap.ngc contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""An archive a run was cut off in is continued by the next run: whole blobs kept (after hashing), the blob it was cut
off in continued from its last byte, anything else cut away; the result is a valid tar whose recorded hash is its own."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from pathlib import Path
from typing import Iterator

import pytest

from ansible_collections.airgap.ngc.plugins.module_utils._formats.image_archive import ArchiveWriter, blob_path
from ansible_collections.airgap.ngc.plugins.module_utils._types.errors import DigestMismatchError
from ansible_collections.airgap.ngc.plugins.module_utils._formats.files import (
    RESUME_MIN,
    BlobFile,
    kept_beside,
    unregister_live,
)
from ansible_collections.airgap.ngc.plugins.module_utils._transports.fanout import fan_out
from ansible_collections.airgap.ngc.plugins.module_utils._transports.sources import ArchiveSource
from ansible_collections.airgap.ngc.plugins.module_utils._types.plan import SourceImage, archive_path
from ansible_collections.airgap.ngc.plugins.module_utils._types.reference import ImageReference

CONFIG = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}}).encode()
SMALL = bytes(range(256)) * 4001  # a whole blob (not a multiple of 512: padding follows it)
BIG = hashlib.sha256(b"big").digest() * (RESUME_MIN // 32 + 4099)
HALF = RESUME_MIN + 123457  # a kill lands here: more than RESUME_MIN of the big blob came


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


WANTED = {sha(CONFIG): len(CONFIG), sha(SMALL): len(SMALL), sha(BIG): len(BIG)}


def writer(path: Path, wanted: dict[str, int] | None = None) -> ArchiveWriter:
    return ArchiveWriter(str(path), "docker", resumable=True, wanted=WANTED if wanted is None else wanted)


def feed(sink, data: bytes, chunk: int = 1 << 20) -> None:
    for start in range(0, len(data), chunk):
        sink.write(data[start : start + chunk])


def cut_off(path: Path, big_bytes: int = HALF) -> None:
    """A run that wrote the small blob whole and the big one part way, then was killed (nothing cleaned up)."""
    first = writer(path)
    sink = first.begin_blob(sha(SMALL), len(SMALL))
    feed(sink, SMALL)
    sink.close()
    big = first.begin_blob(sha(BIG), len(BIG))
    feed(big, BIG[:big_bytes])
    os.close(first._out.fd)  # kill -9: the descriptor goes, the file stays as it is
    unregister_live(first.temp_path)


def finish(second: ArchiveWriter, blobs: list[bytes]) -> Path:
    for data in blobs:
        sink = second.begin_blob(sha(data), len(data))
        if not sink.skipped:
            feed(sink, data[sink.resume_from :])
            sink.close()
    second.add_bytes_blob(sha(CONFIG), CONFIG)
    second.set_docker_image(sha(CONFIG), [sha(SMALL), sha(BIG)], ["nvidia/x:1"])
    result = second.commit()
    path = Path(result.path)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == result.sha256  # the recorded hash is the file's own
    assert result.size == path.stat().st_size
    return path


def members(path: Path) -> dict[str, bytes]:
    with tarfile.open(path) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}


def test_a_cut_off_archive_is_continued_where_it_stopped(tmp_path: Path) -> None:
    target = tmp_path / "x.tar"
    cut_off(target)
    kept = Path(kept_beside(str(target)))
    assert kept.stat().st_size > HALF
    second = writer(target)
    assert second.has_blob(sha(SMALL))  # kept, after hashing: not fetched again
    big = second.begin_blob(sha(BIG), len(BIG))
    assert big.resume_from == HALF and b"".join(big.held()) == BIG[:HALF]
    feed(big, BIG[HALF:])
    big.close()
    path = finish(second, [])
    inside = members(path)
    assert inside[blob_path(sha(BIG))] == BIG and inside[blob_path(sha(SMALL))] == SMALL
    assert json.loads(inside["manifest.json"])[0]["Layers"] == [blob_path(sha(SMALL)), blob_path(sha(BIG))]
    assert not kept.exists()


def test_cut_back_when_the_read_cannot_start_part_way(tmp_path: Path) -> None:
    target = tmp_path / "x.tar"
    cut_off(target)
    second = writer(target)
    big = second.begin_blob(sha(BIG), len(BIG))
    big.restart(1000)  # another destination of the blob holds only 1000 bytes
    assert big.resume_from == 1000 and b"".join(big.held()) == BIG[:1000]
    feed(big, BIG[1000:])
    big.close()
    assert members(finish(second, []))[blob_path(sha(BIG))] == BIG


def test_a_damaged_member_and_what_follows_it_are_fetched_again(tmp_path: Path) -> None:
    target = tmp_path / "x.tar"
    cut_off(target)
    kept = Path(kept_beside(str(target)))
    with open(kept, "r+b") as handle:  # one byte of the whole small blob changed on disk
        handle.seek(3 * 512 + 100)
        byte = handle.read(1)
        handle.seek(3 * 512 + 100)
        handle.write(bytes([byte[0] ^ 1]))
    second = writer(target)
    assert not second.has_blob(sha(SMALL))
    assert second.begin_blob(sha(BIG), len(BIG)).resume_from == 0
    second.abort(keep=False)
    third = writer(target)
    path = finish(third, [BIG, SMALL])
    assert members(path)[blob_path(sha(SMALL))] == SMALL


def test_what_this_image_does_not_use_is_cut_away(tmp_path: Path) -> None:
    target = tmp_path / "x.tar"
    cut_off(target)
    other = writer(target, wanted={sha(SMALL): len(SMALL)})  # another image now: its only blob is the small one
    assert other.has_blob(sha(SMALL))
    assert other._out.pos < 4 * 512 + len(SMALL)  # the big blob's member is gone
    other.abort(keep=False)


def test_the_kept_blob_waits_for_its_own_sink_and_others_spool(tmp_path: Path) -> None:
    target = tmp_path / "x.tar"
    cut_off(target)
    second = writer(target)
    config = second.begin_blob(sha(SMALL + b"x"), len(SMALL) + 1)  # another blob first: it may not go behind the cut
    assert type(config).__name__ == "_SpoolSink"
    feed(config, SMALL + b"x")
    config.close()
    big = second.begin_blob(sha(BIG), len(BIG))
    assert big.resume_from == HALF
    feed(big, BIG[HALF:])
    big.close()
    assert second.has_blob(sha(SMALL + b"x"))
    second.add_bytes_blob(sha(CONFIG), CONFIG)
    second.set_docker_image(sha(CONFIG), [sha(SMALL), sha(BIG)], ["nvidia/x:1"])
    inside = members(Path(second.commit().path))
    assert inside[blob_path(sha(SMALL + b"x"))] == SMALL + b"x" and inside[blob_path(sha(BIG))] == BIG


def test_a_kept_blob_that_never_comes_is_cut_off_at_commit(tmp_path: Path) -> None:
    target = tmp_path / "x.tar"
    cut_off(target)
    second = writer(target)
    second.add_bytes_blob(sha(CONFIG), CONFIG)
    second.set_docker_image(sha(CONFIG), [sha(SMALL)], ["nvidia/x:1"])
    inside = members(Path(second.commit().path))
    assert blob_path(sha(BIG)) not in inside and inside[blob_path(sha(SMALL))] == SMALL


def test_an_error_keeps_a_big_blob_and_drops_a_small_start(tmp_path: Path) -> None:
    target = tmp_path / "x.tar"
    first = writer(target)
    big = first.begin_blob(sha(BIG), len(BIG))
    feed(big, BIG[:HALF])
    big.abort()  # the source broke off: what came is kept
    first.abort()
    assert Path(kept_beside(str(target))).stat().st_size > HALF
    assert writer(target).begin_blob(sha(BIG), len(BIG)).resume_from == HALF
    small = tmp_path / "y.tar"
    early = writer(small)
    sink = early.begin_blob(sha(BIG), len(BIG))
    feed(sink, BIG[:1000])
    sink.abort()
    early.abort()
    assert not Path(kept_beside(str(small))).exists()  # too little to be worth keeping


def test_bytes_that_are_not_the_blob_are_never_kept(tmp_path: Path) -> None:
    target = tmp_path / "x.tar"
    first = writer(target)
    big = first.begin_blob(sha(BIG), len(BIG))
    feed(big, BIG[:HALF])
    try:
        big.close()  # too short: not the blob
    except Exception:  # pylint: disable=broad-exception-caught
        pass
    first.abort()
    assert writer(target).begin_blob(sha(BIG), len(BIG)).resume_from == 0


def test_bytes_of_a_read_that_did_not_hash_to_the_digest_are_not_kept(tmp_path: Path) -> None:
    """The reader fails on its last chunk when the data is not the blob: every sink forgets what it holds."""

    def wrong() -> Iterator[bytes]:
        yield BIG[:HALF]
        raise DigestMismatchError(f"blob {sha(BIG)} hashes to something else")

    target = tmp_path / "x.tar"
    first = writer(target)
    bundle_blob = BlobFile(str(tmp_path / "blob"), sha(BIG), len(BIG), keep=kept_beside(str(tmp_path / "blob")))
    with pytest.raises(DigestMismatchError):
        fan_out(wrong(), [first.begin_blob(sha(BIG), len(BIG)), bundle_blob])
    first.abort()
    assert not Path(kept_beside(str(target))).exists()
    assert not Path(kept_beside(str(tmp_path / "blob"))).exists()


def test_an_archive_source_gives_a_blob_from_part_way(tmp_path: Path) -> None:
    """Per-tag archives as a source continue a blob a run was cut off in: the bytes before ``start`` are read from the
    archive for its digest (compared with what a destination kept, when it offers them), the rest is given."""
    data = bytes(range(256)) * (RESUME_MIN // 256 + 100)
    image = SourceImage(ref=ImageReference.parse("nvcr.io/nvidia/pytorch:24.02-py3"))
    path = Path(archive_path(str(tmp_path), image, "docker"))
    path.parent.mkdir(parents=True)
    entry = {
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": sha(b"{}"),
        "size": 2,
        "annotations": {"io.containerd.image.name": str(image.ref)},
    }
    index = json.dumps({"schemaVersion": 2, "manifests": [entry]}).encode()
    with tarfile.open(path, "w") as tar:
        for name, content in (("index.json", index), (f"blobs/sha256/{sha(data).split(':')[1]}", data)):
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    source = ArchiveSource(str(tmp_path))
    assert source.resumes
    with source.open_blob(image, sha(data), len(data), 5_000_000, None) as chunks:
        assert b"".join(chunks) == data[5_000_000:]
    with source.open_blob(image, sha(data), len(data), 5_000_000, iter([data[:1000], data[1000:5_000_000]])) as chunks:
        assert b"".join(chunks) == data[5_000_000:]
    with pytest.raises(DigestMismatchError, match="not the blob's"):
        with source.open_blob(
            image, sha(data), len(data), 5_000_000, iter([data[:4_999_999] + bytes([(data[4_999_999] + 1) % 256])])
        ) as chunks:
            b"".join(chunks)
