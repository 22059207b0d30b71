# Copyright (c) airgap.ngc contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Unit tests for the streaming archive writers (no network, no Docker)."""

from __future__ import annotations

import errno
import gzip
import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile

import pytest

from ansible_collections.airgap.ngc.plugins.module_utils._formats import image_archive as _archive
from ansible_collections.airgap.ngc.plugins.module_utils._formats.image_archive import ArchiveWriter, blob_path
from ansible_collections.airgap.ngc.plugins.module_utils._formats.files import cleanup_stale_partials
from ansible_collections.airgap.ngc.plugins.module_utils._types.oci import (
    MEDIA_DOCKER_MANIFEST,
    MEDIA_OCI_INDEX,
    MEDIA_OCI_MANIFEST,
    descriptor,
)
from ansible_collections.airgap.ngc.plugins.module_utils._types.errors import (
    AirgapError,
    ConfigError,
    DigestMismatchError,
)

TAG = "nvcr.io/nvidia/pytorch:24.01-py3"


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def make_layer(seed: int, files: int = 3) -> tuple[bytes, str]:
    """A gzip layer and the diff_id (sha256 of the uncompressed tar)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for number in range(files):
            data = hashlib.sha256(f"{seed}-{number}".encode()).digest() * 40
            info = tarfile.TarInfo(f"opt/seed{seed}/file{number}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return gzip.compress(raw.getvalue(), mtime=0), sha(raw.getvalue())


def make_image(arch: str = "amd64", layers: tuple[int, ...] = (1, 2), media_type: str = MEDIA_DOCKER_MANIFEST) -> dict:
    blobs = [make_layer(seed) for seed in layers]
    config = json.dumps(
        {
            "architecture": arch,
            "os": "linux",
            "config": {},
            "rootfs": {"type": "layers", "diff_ids": [diff for _data, diff in blobs]},
        }
    ).encode()
    layer_type = (
        "application/vnd.docker.image.rootfs.diff.tar.gzip"
        if media_type == MEDIA_DOCKER_MANIFEST
        else "application/vnd.oci.image.layer.v1.tar+gzip"
    )
    config_type = (
        "application/vnd.docker.container.image.v1+json"
        if media_type == MEDIA_DOCKER_MANIFEST
        else "application/vnd.oci.image.config.v1+json"
    )
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": media_type,
            "config": {"mediaType": config_type, "digest": sha(config), "size": len(config)},
            "layers": [{"mediaType": layer_type, "digest": sha(data), "size": len(data)} for data, _diff in blobs],
        }
    ).encode()
    return {
        "layers": [data for data, _diff in blobs],
        "config": config,
        "manifest": manifest,
        "arch": arch,
        "media_type": media_type,
    }


def stream(writer: ArchiveWriter, data: bytes, chunk: int = 1000) -> None:
    sink = writer.begin_blob(sha(data), len(data))
    for start in range(0, len(data), chunk):
        sink.write(data[start : start + chunk])
    sink.close()


def write_image(writer: ArchiveWriter, image: dict, tags: list[str] | None = None) -> None:
    for layer in image["layers"]:
        if not writer.has_blob(sha(layer)):
            stream(writer, layer)
    writer.add_bytes_blob(sha(image["config"]), image["config"])
    writer.add_bytes_blob(sha(image["manifest"]), image["manifest"])
    if tags is not None:
        writer.set_docker_image(sha(image["config"]), [sha(layer) for layer in image["layers"]], tags)


def members(path: str) -> dict[str, bytes]:
    with tarfile.open(path) as tar:
        return {
            member.name: (tar.extractfile(member).read() if member.isfile() else b"") for member in tar.getmembers()
        }


def names(path: str) -> list[str]:
    with tarfile.open(path) as tar:
        return tar.getnames()


def test_docker_archive_layout(tmp_path):
    image = make_image()
    target = tmp_path / "pytorch.tar"
    with ArchiveWriter(str(target), "docker") as writer:
        write_image(writer, image, [TAG])
        writer.set_oci_index(
            [
                descriptor(
                    MEDIA_DOCKER_MANIFEST,
                    sha(image["manifest"]),
                    len(image["manifest"]),
                    ref_name="24.01-py3",
                    image_name=TAG,
                )
            ]
        )
        result = writer.commit()

    assert os.listdir(tmp_path) == ["pytorch.tar"]
    data = target.read_bytes()
    assert result.path == str(target) and result.fmt == "docker" and result.blobs == 4
    assert result.size == len(data) == os.path.getsize(target)
    assert result.sha256 == hashlib.sha256(data).hexdigest()
    assert len(data) % 10240 == 0

    content = members(str(target))
    blobs = image["layers"] + [image["config"], image["manifest"]]
    assert sorted(content) == sorted(
        ["blobs", "blobs/sha256", "oci-layout", "index.json", "manifest.json"] + [blob_path(sha(b)) for b in blobs]
    )
    for name, body in content.items():
        if name.startswith("blobs/sha256/"):
            assert sha(body) == "sha256:" + name.rsplit("/", 1)[1]
    assert json.loads(content["manifest.json"]) == [
        {
            "Config": blob_path(sha(image["config"])),
            "RepoTags": [TAG],
            "Layers": [blob_path(sha(layer)) for layer in image["layers"]],
        }
    ]
    assert json.loads(content["oci-layout"]) == {"imageLayoutVersion": "1.0.0"}
    index = json.loads(content["index.json"])
    assert index["schemaVersion"] == 2 and index["mediaType"] == MEDIA_OCI_INDEX
    assert index["manifests"] == [
        {
            "mediaType": MEDIA_DOCKER_MANIFEST,
            "digest": sha(image["manifest"]),
            "size": len(image["manifest"]),
            "annotations": {"org.opencontainers.image.ref.name": "24.01-py3", "io.containerd.image.name": TAG},
        }
    ]
    with tarfile.open(target) as tar:
        info = tar.getmember(blob_path(sha(image["layers"][0])))
        assert info.mode == 0o644 and info.mtime == 0 and info.size == len(image["layers"][0])


def test_docker_archive_derives_index_from_stored_manifest(tmp_path):
    image = make_image()
    target = tmp_path / "a.tar"
    with ArchiveWriter(str(target), "docker") as writer:
        write_image(writer, image, [TAG])
        writer.commit()
    index = json.loads(members(str(target))["index.json"])
    assert [entry["digest"] for entry in index["manifests"]] == [sha(image["manifest"])]
    assert index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"] == "24.01-py3"


def test_oci_multi_arch_shares_blobs_and_skips_manifest_json(tmp_path):
    amd = make_image("amd64", (1, 2), MEDIA_OCI_MANIFEST)
    arm = make_image("arm64", (1, 3), MEDIA_OCI_MANIFEST)
    shared = amd["layers"][0]
    assert shared == arm["layers"][0]
    index_blob = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": MEDIA_OCI_INDEX,
            "manifests": [
                descriptor(
                    MEDIA_OCI_MANIFEST,
                    sha(img["manifest"]),
                    len(img["manifest"]),
                    platform={"architecture": img["arch"], "os": "linux"},
                )
                for img in (amd, arm)
            ],
        }
    ).encode()
    target = tmp_path / "multi.oci.tar"
    with ArchiveWriter(str(target), "oci") as writer:
        write_image(writer, amd)
        assert writer.has_blob(sha(shared))
        sink = writer.begin_blob(sha(shared), len(shared))
        assert sink.skipped
        sink.write(shared)
        sink.close()
        write_image(writer, arm)
        assert writer.add_bytes_blob(sha(index_blob), index_blob)
        assert not writer.add_bytes_blob(sha(index_blob), index_blob)
        writer.set_oci_index(
            [descriptor(MEDIA_OCI_INDEX, sha(index_blob), len(index_blob), ref_name="24.01-py3", image_name=TAG)]
        )
        result = writer.commit()
    listing = names(str(target))
    assert listing.count(blob_path(sha(shared))) == 1
    assert "manifest.json" not in listing
    assert result.blobs == 3 + 2 + 2 + 1  # layers 1,2,3 + two configs + two manifests + index
    index = json.loads(members(str(target))["index.json"])
    assert index["manifests"][0]["digest"] == sha(index_blob)


def test_oci_single_platform_also_writes_manifest_json(tmp_path):
    image = make_image("amd64", (4,), MEDIA_OCI_MANIFEST)
    target = tmp_path / "one.oci.tar"
    with ArchiveWriter(str(target), "oci") as writer:
        write_image(writer, image)
        writer.set_oci_index(
            [
                descriptor(
                    MEDIA_OCI_MANIFEST,
                    sha(image["manifest"]),
                    len(image["manifest"]),
                    ref_name="24.01-py3",
                    image_name=TAG,
                )
            ]
        )
        writer.commit()
    assert json.loads(members(str(target))["manifest.json"]) == [
        {"Config": blob_path(sha(image["config"])), "RepoTags": [TAG], "Layers": [blob_path(sha(image["layers"][0]))]}
    ]


def test_same_image_two_tags_merge_into_one_entry(tmp_path):
    image = make_image()
    target = tmp_path / "t.tar"
    with ArchiveWriter(str(target), "docker") as writer:
        write_image(writer, image, [TAG])
        writer.set_docker_image(
            sha(image["config"]), [sha(layer) for layer in image["layers"]], ["nvcr.io/nvidia/pytorch:latest", TAG]
        )
        writer.commit()
    entries = json.loads(members(str(target))["manifest.json"])
    assert len(entries) == 1 and entries[0]["RepoTags"] == [TAG, "nvcr.io/nvidia/pytorch:latest"]


def test_exception_mid_write_leaves_nothing(tmp_path):
    image = make_image()
    layer = image["layers"][0]
    target = tmp_path / "x.tar"
    with pytest.raises(RuntimeError, match="network gone"):
        with ArchiveWriter(str(target), "docker") as writer:
            temp = writer.temp_path
            sink = writer.begin_blob(sha(layer), len(layer))
            sink.write(layer[:100])
            assert os.path.exists(temp) and os.path.basename(temp).startswith(".x.tar.partial-")
            raise RuntimeError("network gone")
    assert os.listdir(tmp_path) == []


def test_leaving_context_without_commit_aborts_and_keeps_old_archive(tmp_path):
    target = tmp_path / "x.tar"
    target.write_bytes(b"previous archive")
    with ArchiveWriter(str(target), "docker") as writer:
        write_image(writer, make_image(), [TAG])
    assert target.read_bytes() == b"previous archive"
    assert os.listdir(tmp_path) == ["x.tar"]


def test_old_archive_stays_until_commit(tmp_path):
    target = tmp_path / "x.tar"
    target.write_bytes(b"previous archive")
    with ArchiveWriter(str(target), "docker") as writer:
        write_image(writer, make_image(), [TAG])
        assert target.read_bytes() == b"previous archive"
        writer.commit()
    assert "manifest.json" in names(str(target))


def test_cleanup_stale_partials(tmp_path):
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], check=True, capture_output=True, text=True
    )
    dead_pid = int(dead.stdout)
    stale = tmp_path / f".x.tar.partial-{dead_pid}"
    stale_spool = tmp_path / f".x.tar.partial-{dead_pid}.spool-ab12_cd"
    other = tmp_path / f".y.tar.partial-{dead_pid}"
    alive = tmp_path / f".x.tar.partial-{os.getppid()}"
    keep = tmp_path / "x.tar.partial-1"
    for path in (stale, stale_spool, other, alive, keep):
        path.write_bytes(b"junk")
    with ArchiveWriter(str(tmp_path / "x.tar"), "docker") as writer:
        removed = cleanup_stale_partials(str(tmp_path), "x.tar")
        assert sorted(removed) == sorted([str(stale), str(stale_spool)])
        assert os.path.exists(writer.temp_path), "the live writer's own partial file must survive"
        assert alive.exists() and other.exists() and keep.exists()
        assert cleanup_stale_partials(str(tmp_path)) == [str(other)]
    assert cleanup_stale_partials(str(tmp_path / "missing")) == []


def test_leftover_with_own_pid_is_replaced(tmp_path):
    target = tmp_path / "x.tar"
    (tmp_path / f".x.tar.partial-{os.getpid()}").write_bytes(b"left by a killed process with a recycled pid")
    with ArchiveWriter(str(target), "docker") as writer:
        write_image(writer, make_image(), [TAG])
        writer.commit()
    assert os.listdir(tmp_path) == ["x.tar"]


def test_two_writers_for_one_path_in_one_run(tmp_path):
    with ArchiveWriter(str(tmp_path / "x.tar")):
        with pytest.raises(ConfigError, match="already being written"):
            ArchiveWriter(str(tmp_path / "x.tar"))


@pytest.mark.parametrize("short", [True, False])
def test_size_mismatch_is_an_error_and_rolls_back(tmp_path, short):
    image = make_image()
    layer = image["layers"][0]
    target = tmp_path / "x.tar"
    with ArchiveWriter(str(target), "docker") as writer:
        declared = len(layer) + 10 if short else len(layer) - 10
        sink = writer.begin_blob(sha(layer), declared)
        if short:
            sink.write(layer)
            with pytest.raises(AirgapError, match=f"got {len(layer)} bytes, expected {declared}"):
                sink.close()
        else:
            with pytest.raises(AirgapError, match=f"more than the declared {declared} bytes"):
                sink.write(layer)
        assert not writer.has_blob(sha(layer))
        write_image(writer, image, [TAG])
        writer.commit()
    listing = names(str(target))
    assert listing.count(blob_path(sha(layer))) == 1
    assert sha(members(str(target))[blob_path(sha(layer))]) == sha(layer)


def test_sink_abort_rolls_back_so_the_blob_can_be_retried(tmp_path):
    image = make_image()
    layer = image["layers"][0]
    target = tmp_path / "x.tar"
    with ArchiveWriter(str(target), "docker") as writer:
        with pytest.raises(ConnectionError):
            with writer.begin_blob(sha(layer), len(layer)) as sink:
                sink.write(layer[:50])
                raise ConnectionError("reset by peer")
        write_image(writer, image, [TAG])
        result = writer.commit()
    assert result.sha256 == hashlib.sha256(target.read_bytes()).hexdigest()
    assert names(str(target)).count(blob_path(sha(layer))) == 1


def test_blob_begun_while_another_streams_is_spooled(tmp_path):
    image = make_image()
    first, second = image["layers"]
    target = tmp_path / "x.tar"
    with ArchiveWriter(str(target), "docker") as writer:
        sink_a = writer.begin_blob(sha(first), len(first))
        sink_b = writer.begin_blob(sha(second), len(second))
        assert type(sink_a).__name__ == "_DirectSink" and type(sink_b).__name__ == "_SpoolSink"
        assert os.path.basename(sink_b.spool_path).startswith(".x.tar.partial-")
        sink_b.write(second)
        sink_b.close()
        writer.add_bytes_blob(sha(image["config"]), image["config"])
        assert writer.has_blob(sha(second)) and writer.has_blob(sha(image["config"]))
        sink_a.write(first)
        sink_a.close()
        assert not os.path.exists(sink_b.spool_path)
        writer.add_bytes_blob(sha(image["manifest"]), image["manifest"])
        writer.set_docker_image(sha(image["config"]), [sha(first), sha(second)], [TAG])
        writer.commit()
    content = members(str(target))
    for blob in (first, second, image["config"]):
        assert content[blob_path(sha(blob))] == blob
    listing = names(str(target))
    assert listing.index(blob_path(sha(first))) < listing.index(blob_path(sha(second)))
    assert os.listdir(tmp_path) == ["x.tar"]


def test_abort_removes_spool_files(tmp_path):
    image = make_image()
    first, second = image["layers"]
    writer = ArchiveWriter(str(tmp_path / "x.tar"), "docker")
    writer.begin_blob(sha(first), len(first)).write(first[:10])
    writer.begin_blob(sha(second), len(second)).write(second[:10])
    assert len(os.listdir(tmp_path)) == 2
    writer.abort()
    assert os.listdir(tmp_path) == []
    with pytest.raises(AirgapError, match="already aborted"):
        writer.begin_blob(sha(first), len(first))


def test_disk_full_says_so_and_cleans_up(tmp_path, monkeypatch):
    image = make_image()
    layer = image["layers"][0]
    writer = ArchiveWriter(str(tmp_path / "x.tar"), "docker")
    sink = writer.begin_blob(sha(layer), len(layer))

    def full(fd, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(_archive, "_write_all", full)
    with pytest.raises(AirgapError, match="disk full") as caught:
        sink.write(layer)
    assert str(tmp_path) in str(caught.value)
    assert os.listdir(tmp_path) == []


def test_disk_full_while_appending_a_spooled_blob_leaves_no_file(tmp_path, monkeypatch):
    image = make_image()
    first, second = image["layers"]
    writer = ArchiveWriter(str(tmp_path / "x.tar"), "docker")
    direct = writer.begin_blob(sha(first), len(first))
    spooled = writer.begin_blob(sha(second), len(second))
    spooled.write(second)
    spooled.close()  # queued: appended when the direct blob is done
    direct.write(first)
    write_header = ArchiveWriter._write_header  # pylint: disable=protected-access

    def full_at_the_spooled_blob(self, name, size):
        if name == _archive.blob_path(sha(second)):
            raise OSError(errno.ENOSPC, "No space left on device")
        return write_header(self, name, size)

    monkeypatch.setattr(ArchiveWriter, "_write_header", full_at_the_spooled_blob)
    with pytest.raises(AirgapError, match="disk full"):
        direct.close()
    assert os.listdir(tmp_path) == []


def test_missing_or_unwritable_directory(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="does not exist"):
        ArchiveWriter(str(tmp_path / "nope" / "x.tar"))
    with pytest.raises(ConfigError, match="is a directory"):
        ArchiveWriter(str(tmp_path))
    with pytest.raises(ConfigError, match="unknown archive format"):
        ArchiveWriter(str(tmp_path / "x.tar"), "squashfs")
    real_open = os.open

    def denied(path, *args, **kwargs):
        if str(path).startswith(str(tmp_path)):
            raise PermissionError(errno.EACCES, "Permission denied")
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", denied)
    with pytest.raises(ConfigError, match=f"directory {tmp_path} is not writable"):
        ArchiveWriter(str(tmp_path / "x.tar"))


def test_incomplete_archive_is_refused_until_blob_added(tmp_path):
    image = make_image()
    target = tmp_path / "x.tar"
    with ArchiveWriter(str(target), "docker") as writer:
        stream(writer, image["layers"][0])
        writer.add_bytes_blob(sha(image["config"]), image["config"])
        writer.set_docker_image(sha(image["config"]), [sha(layer) for layer in image["layers"]], [TAG])
        with pytest.raises(AirgapError, match=f"incomplete, missing blob.*{blob_path(sha(image['layers'][1]))}"):
            writer.commit()
        stream(writer, image["layers"][1])
        writer.commit()
    assert target.exists()


def test_index_child_manifest_missing_is_refused(tmp_path):
    amd = make_image("amd64", (1,), MEDIA_OCI_MANIFEST)
    arm = make_image("arm64", (2,), MEDIA_OCI_MANIFEST)
    index_blob = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": MEDIA_OCI_INDEX,
            "manifests": [
                descriptor(
                    MEDIA_OCI_MANIFEST,
                    sha(img["manifest"]),
                    len(img["manifest"]),
                    platform={"architecture": img["arch"], "os": "linux"},
                )
                for img in (amd, arm)
            ],
        }
    ).encode()
    with ArchiveWriter(str(tmp_path / "x.tar"), "oci") as writer:
        write_image(writer, amd)
        writer.add_bytes_blob(sha(index_blob), index_blob)
        writer.set_oci_index([descriptor(MEDIA_OCI_INDEX, sha(index_blob), len(index_blob))])
        with pytest.raises(AirgapError, match=sha(arm["manifest"])):
            writer.commit()


def test_descriptor_size_must_match(tmp_path):
    image = make_image()
    with ArchiveWriter(str(tmp_path / "x.tar"), "oci") as writer:
        write_image(writer, image)
        writer.set_oci_index([descriptor(MEDIA_DOCKER_MANIFEST, sha(image["manifest"]), len(image["manifest"]) + 1)])
        with pytest.raises(AirgapError, match="a descriptor says"):
            writer.commit()


def test_digest_checks(tmp_path):
    image = make_image()
    layer = image["layers"][0]
    with ArchiveWriter(str(tmp_path / "x.tar"), "docker", verify_digests=True) as writer:
        with pytest.raises(DigestMismatchError):
            writer.add_bytes_blob(sha(b"other"), image["config"])
        with pytest.raises(AirgapError, match="invalid blob digest"):
            writer.begin_blob("md5:abc", 3)
        sink = writer.begin_blob(sha(layer), len(layer))
        sink.write(layer[:-1] + b"X")
        with pytest.raises(DigestMismatchError):
            sink.close()
        assert not writer.has_blob(sha(layer))


def test_repo_tag_must_be_name_tag(tmp_path):
    with ArchiveWriter(str(tmp_path / "x.tar"), "docker") as writer:
        with pytest.raises(ConfigError, match="must be name:tag"):
            writer.set_docker_image(sha(b"c"), [], ["nvcr.io/nvidia/pytorch@" + sha(b"m")])
        with pytest.raises(ConfigError, match="must be name:tag"):
            writer.set_docker_image(sha(b"c"), [], ["localhost:5000/pytorch"])


def test_nothing_to_commit(tmp_path):
    with ArchiveWriter(str(tmp_path / "x.tar"), "docker") as writer:
        with pytest.raises(AirgapError, match="no image was added"):
            writer.commit()
    with ArchiveWriter(str(tmp_path / "y.tar"), "oci") as writer:
        with pytest.raises(AirgapError, match="no OCI index"):
            writer.commit()
    assert os.listdir(tmp_path) == []


def test_commit_with_open_sink_is_refused(tmp_path):
    layer = make_image()["layers"][0]
    with ArchiveWriter(str(tmp_path / "x.tar"), "docker") as writer:
        writer.begin_blob(sha(layer), len(layer)).write(layer[:3])
        with pytest.raises(AirgapError, match="still being written"):
            writer.commit()


def test_header_for_blob_over_8_gib_uses_pax():
    size = 9 << 30
    header = _archive._header(blob_path(sha(b"big")), size, 0)
    with tarfile.open(fileobj=io.BytesIO(header + b"\0" * 1024), mode="r:") as tar:
        info = tar.next()
    assert info.name == blob_path(sha(b"big")) and info.size == size


def test_many_threads_stream_blobs_into_one_archive(tmp_path):
    import threading

    layers = [make_layer(seed, files=8)[0] for seed in range(10, 22)]
    target = tmp_path / "x.tar"
    errors = []
    with ArchiveWriter(str(target), "oci") as writer:

        def work(blobs):
            try:
                for blob in blobs:
                    stream(writer, blob, chunk=97)
            except Exception as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(layers[number::4] + layers[:2],)) for number in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        config = json.dumps(
            {"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}}
        ).encode()
        manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": MEDIA_OCI_MANIFEST,
                "config": {"digest": sha(config), "size": len(config)},
                "layers": [{"digest": sha(layer), "size": len(layer)} for layer in layers],
            }
        ).encode()
        writer.add_bytes_blob(sha(config), config)
        writer.add_bytes_blob(sha(manifest), manifest)
        writer.set_oci_index([descriptor(MEDIA_OCI_MANIFEST, sha(manifest), len(manifest))])
        result = writer.commit()
    content = members(str(target))
    for layer in layers:
        assert content[blob_path(sha(layer))] == layer
    assert names(str(target)).count(blob_path(sha(layers[0]))) == 1
    assert result.sha256 == hashlib.sha256(target.read_bytes()).hexdigest()
    assert os.listdir(tmp_path) == ["x.tar"]


def test_a_blob_over_the_spool_budget_waits_for_the_tar_instead_of_spooling(tmp_path):
    import threading  # pylint: disable=import-outside-toplevel

    image = make_image()
    first, second = image["layers"]
    target = tmp_path / "x.tar"
    with ArchiveWriter(str(target), "docker", spool_budget=len(second) - 1) as writer:
        sink_a = writer.begin_blob(sha(first), len(first))
        got = []
        waiter = threading.Thread(target=lambda: got.append(writer.begin_blob(sha(second), len(second))))
        waiter.start()
        waiter.join(0.5)
        assert waiter.is_alive() and got == []  # no room to spool it: it waits
        assert [n for n in os.listdir(tmp_path) if ".spool-" in n] == []
        sink_a.write(first)
        sink_a.close()
        waiter.join(5)
        assert type(got[0]).__name__ == "_DirectSink"  # it streams into the tar itself once the slot is free
        got[0].write(second)
        got[0].close()
        writer.add_bytes_blob(sha(image["config"]), image["config"])
        writer.set_docker_image(sha(image["config"]), [sha(first), sha(second)], [TAG])
        writer.commit()
    assert members(str(target))[blob_path(sha(second))] == second


def test_a_blob_within_the_spool_budget_is_spooled_and_a_waiter_is_released_by_abort(tmp_path):
    import threading  # pylint: disable=import-outside-toplevel

    image = make_image()
    first, second = image["layers"]
    writer = ArchiveWriter(str(tmp_path / "x.tar"), "docker", spool_budget=len(second))
    writer.begin_blob(sha(first), len(first))
    assert type(writer.begin_blob(sha(second), len(second))).__name__ == "_SpoolSink"
    errors = []

    def wait_for_room():
        try:
            writer.begin_blob(sha(image["config"]), len(image["config"]))
        except AirgapError as exc:
            errors.append(exc)

    waiter = threading.Thread(target=wait_for_room)
    waiter.start()
    waiter.join(0.3)
    assert waiter.is_alive()
    writer.abort()
    waiter.join(5)
    assert not waiter.is_alive() and "aborted" in str(errors[0])
    assert os.listdir(tmp_path) == []
