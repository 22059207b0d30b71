# Copyright (c) airgap.ngc contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Manifests, indexes and image configs over 4 MiB (the distribution spec's limit) are refused from every source, before
they are read whole: a registry's answer, a bundle's blob, an archive's member."""

from __future__ import annotations

import hashlib
import io
import json
import socket
import tarfile
import threading
import tracemalloc
from pathlib import Path
from typing import Any, Iterator

import pytest

from ansible_collections.airgap.ngc.plugins.module_utils._formats.bundle import BundleReader
from ansible_collections.airgap.ngc.plugins.module_utils._types.errors import AirgapError
from ansible_collections.airgap.ngc.plugins.module_utils._types.oci import (
    MAX_MANIFEST_BYTES,
    MEDIA_OCI_MANIFEST,
    parse_manifest,
    read_small,
)
from ansible_collections.airgap.ngc.plugins.module_utils._clients.registry import RegistryClient
from ansible_collections.airgap.ngc.plugins.module_utils._transports.sources import read_archive_head

MIB = 1024 * 1024


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def manifest_bytes(pad: int, config_size: int = 2) -> bytes:
    """An image manifest of about ``pad`` bytes (an annotation fills it) naming a config of ``config_size`` bytes."""
    return json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": MEDIA_OCI_MANIFEST,
            "layers": [],
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": "sha256:" + "a" * 64,
                "size": config_size,
            },
            "annotations": {"pad": "x" * pad},
        }
    ).encode()


def test_the_limit_is_the_distribution_spec_s() -> None:
    assert MAX_MANIFEST_BYTES == 4 * MIB


def test_read_small_stops_at_the_limit_and_closes_the_chunks() -> None:
    closed = []

    def chunks() -> Iterator[bytes]:
        try:
            for _mib in range(1000):  # 1000 MiB if it were read to the end
                yield b"x" * MIB
        finally:
            closed.append(True)

    with pytest.raises(
        AirgapError, match=r"the thing \(read so far\) has 5242880 bytes, more than the 4194304 \(4 MiB\)"
    ):
        read_small(chunks(), "the thing")
    assert closed == [True]
    assert read_small(iter([b"a" * (4 * MIB - 1), b"b"]), "exactly the limit") == b"a" * (4 * MIB - 1) + b"b"


def test_a_manifest_over_the_limit_or_naming_a_config_over_it_is_refused() -> None:
    big = manifest_bytes(4 * MIB)
    with pytest.raises(AirgapError, match=r"manifest m has \d+ bytes, more than the 4194304"):
        parse_manifest(big, digest_of(big), "manifest m")
    named = manifest_bytes(10, config_size=4 * MIB + 1)
    with pytest.raises(AirgapError, match=r"manifest m: its config sha256:a{64} has 4194305 bytes, more than"):
        parse_manifest(named, digest_of(named), "manifest m")
    index = json.dumps(
        {
            "schemaVersion": 2,
            "manifests": [{"mediaType": MEDIA_OCI_MANIFEST, "digest": "sha256:" + "b" * 64, "size": 5 * MIB}],
        }
    ).encode()
    with pytest.raises(AirgapError, match=r"index i: its manifest sha256:b{64} has 5242880 bytes"):
        parse_manifest(index, digest_of(index), "index i")
    fine = manifest_bytes(4 * MIB - 1024)
    assert parse_manifest(fine, digest_of(fine), "manifest m").size == len(fine)


def test_a_bundle_manifest_over_the_limit_is_refused_before_it_is_read_whole(tmp_path: Path) -> None:
    raw = manifest_bytes(64 * MIB)
    digest = digest_of(raw)
    (tmp_path / "blobs" / "sha256").mkdir(parents=True)
    (tmp_path / "blobs" / "sha256" / digest.split(":")[1]).write_bytes(raw)
    (tmp_path / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    (tmp_path / "index.json").write_text(
        json.dumps(
            {
                "schemaVersion": 2,
                "manifests": [
                    {
                        "mediaType": MEDIA_OCI_MANIFEST,
                        "digest": digest,
                        "size": len(raw),
                        "annotations": {"org.opencontainers.image.ref.name": "x/y:1"},
                    }
                ],
            }
        )
    )
    del raw
    reader = BundleReader(str(tmp_path))
    tracemalloc.start()
    try:
        with pytest.raises(
            AirgapError, match=rf"manifest {digest} in the bundle .* has \d+ bytes, more than the 4194304"
        ):
            reader.manifest(digest)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 * MIB  # the 64 MiB were never held


def test_an_archive_whose_index_is_over_the_limit_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "x.tar"
    with tarfile.open(path, "w") as archive:
        data = json.dumps({"schemaVersion": 2, "manifests": [], "annotations": {"pad": "x" * (5 * MIB)}}).encode()
        member = tarfile.TarInfo("index.json")
        member.size = len(data)
        archive.addfile(member, io.BytesIO(data))
    with pytest.raises(AirgapError, match=r"index.json in the archive .*x.tar has \d+ bytes, more than the 4194304"):
        read_archive_head(str(path))


class _Streamer:
    """A registry that answers every manifest GET with a chunked body of ``total`` bytes (no Content-Length), or with a
    Content-Length of ``announce`` and a short body; it counts what it could send."""

    def __init__(self, total: int = 0, announce: int | None = None, body: bytes = b"") -> None:
        self.total, self.announce, self.body, self.sent = total, announce, body, 0
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(4)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _addr = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        with conn:
            conn.recv(65536)
            head = f"HTTP/1.1 200 OK\r\nContent-Type: {MEDIA_OCI_MANIFEST}\r\n"
            try:
                if self.announce is not None:
                    conn.sendall(f"{head}Content-Length: {self.announce}\r\n\r\n".encode() + self.body)
                    return
                conn.sendall(f"{head}Transfer-Encoding: chunked\r\n\r\n".encode())
                piece = b"x" * (256 * 1024)
                while self.sent < self.total:
                    conn.sendall(b"%x\r\n" % len(piece) + piece + b"\r\n")
                    self.sent += len(piece)
                conn.sendall(b"0\r\n\r\n")
            except OSError:
                return

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def streamer() -> Iterator[Any]:
    made: list[_Streamer] = []

    def make(**kwargs: Any) -> _Streamer:
        made.append(_Streamer(**kwargs))
        return made[-1]

    yield make
    for one in made:
        one.close()


def test_a_registry_manifest_without_length_is_read_only_up_to_the_limit(streamer: Any) -> None:
    server = streamer(total=1024 * MIB)
    with RegistryClient(server.url, retries=0, timeout=20) as client:
        tracemalloc.start()
        try:
            with pytest.raises(
                AirgapError,
                match=r"manifest x/y:1 on 127.0.0.1:\d+ \(read so far\) has \d+ bytes, more than the 4194304",
            ):
                client.get_manifest("x/y", "1")
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert peak < 32 * MIB
    assert server.sent < 256 * MIB  # the registry could not push the gigabyte: the client stopped reading


def test_a_registry_manifest_announced_over_the_limit_is_refused_unread(streamer: Any) -> None:
    server = streamer(announce=5 * MIB, body=b"{}")
    with RegistryClient(server.url, retries=0, timeout=20) as client:
        with pytest.raises(
            AirgapError, match=r"manifest x/y:1 on 127.0.0.1:\d+ has 5242880 bytes, more than the 4194304"
        ):
            client.get_manifest("x/y", "1")
