# Copyright (c) airgap.ngc contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private: deterministic image content: streamed gzip'd tar layers, config JSON and manifests.

A layer is a tar archive of incompressible pseudo-random files (AES-CTR keystream keyed by the
seed and the layer name), gzip-compressed on the fly. Nothing is held in memory beyond one chunk:
the stream reports its digest, size and diff_id (sha256 of the uncompressed tar) once consumed.
"""

from __future__ import annotations

import hashlib
import json
import tarfile
import zlib
from dataclasses import dataclass
from typing import Any, Iterator

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

CHUNK = 1 << 20
BLOCK = 512
MTIME = 1700000000

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"


@dataclass(frozen=True)
class LayerSpec:
    """What goes into one layer: `size` bytes of random data in files of at most `file_max` bytes."""

    name: str
    size: int
    file_max: int
    level: int  # gzip level; 0 (stored) keeps multi-GiB seeding fast


@dataclass
class BlobInfo:
    digest: str
    size: int
    diff_id: str = ""


def sha256_digest(data: bytes) -> str:
    return f"sha256:{hashlib.sha256(data).hexdigest()}"


def _keystream(seed: int, label: str, size: int) -> Iterator[bytes]:
    key = hashlib.sha256(f"airgap.ngc testbed:{seed}:{label}".encode("utf-8")).digest()
    encryptor = Cipher(algorithms.AES(key), modes.CTR(b"\0" * 16)).encryptor()
    zeros = b"\0" * CHUNK
    remaining = size
    while remaining > 0:
        take = min(CHUNK, remaining)
        yield encryptor.update(zeros[:take])
        remaining -= take


def _tar_header(name: str, size: int, directory: bool = False) -> bytes:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE if directory else tarfile.REGTYPE
    info.mode = 0o755 if directory else 0o644
    info.size = 0 if directory else size
    info.mtime = MTIME
    info.uname = info.gname = "root"
    return info.tobuf(format=tarfile.USTAR_FORMAT, encoding="utf-8", errors="strict")


def _padding(size: int) -> bytes:
    return b"\0" * (-size % BLOCK)


def tar_stream(seed: int, spec: LayerSpec) -> Iterator[bytes]:
    """The uncompressed layer tar, in pieces."""
    base = f"opt/testbed/{spec.name}"
    for directory in ("opt/", "opt/testbed/", f"{base}/"):
        yield _tar_header(directory, 0, directory=True)
    note = f"airgap.ngc test bed layer {spec.name} (seed {seed}, {spec.size} random bytes)\n".encode("utf-8")
    yield _tar_header(f"{base}/LAYER.txt", len(note)) + note + _padding(len(note))
    remaining, index = spec.size, 0
    while remaining > 0:
        size = min(spec.file_max, remaining)
        yield _tar_header(f"{base}/data-{index:03d}.bin", size)
        yield from _keystream(seed, f"{spec.name}/{index}", size)
        yield _padding(size)
        remaining -= size
        index += 1
    yield b"\0" * (BLOCK * 2)


class LayerStream:
    """Iterate to get the gzip'd layer; afterwards `info` holds digest, size and diff_id."""

    def __init__(self, seed: int, spec: LayerSpec) -> None:
        self.seed = seed
        self.spec = spec
        self.info: BlobInfo | None = None

    def __iter__(self) -> Iterator[bytes]:
        compressor = zlib.compressobj(self.spec.level, zlib.DEFLATED, 31)  # 31: gzip wrapper, mtime 0
        plain, packed, size = hashlib.sha256(), hashlib.sha256(), 0
        for piece in tar_stream(self.seed, self.spec):
            plain.update(piece)
            out = compressor.compress(piece)
            if out:
                packed.update(out)
                size += len(out)
                yield out
        out = compressor.flush()
        packed.update(out)
        size += len(out)
        yield out
        self.info = BlobInfo(digest=f"sha256:{packed.hexdigest()}", size=size, diff_id=f"sha256:{plain.hexdigest()}")


def dump_manifest(data: dict[str, Any]) -> bytes:
    """Manifests and configs the way docker writes them (3-space indent): clients must keep the bytes."""
    return json.dumps(data, indent=3).encode("utf-8")


def image_config(
    architecture: str, created: str, diff_ids: list[str], layer_names: list[str], labels: dict[str, str]
) -> bytes:
    config = {
        "architecture": architecture,
        "os": "linux",
        "created": created,
        "config": {
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "NVIDIA_VISIBLE_DEVICES=all"],
            "Cmd": ["/bin/sh"],
            "WorkingDir": "/",
            "Labels": labels,
        },
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created": created, "created_by": f"airgap.ngc testbed: layer {name}"} for name in layer_names],
    }
    return dump_manifest(config)


def image_manifest(oci: bool, config: BlobInfo, layers: list[BlobInfo]) -> tuple[str, bytes]:
    """(media type, bytes) of a Docker v2 schema 2 or OCI image manifest."""
    media_type = OCI_MANIFEST if oci else DOCKER_MANIFEST
    manifest = {
        "schemaVersion": 2,
        "mediaType": media_type,
        "config": {"mediaType": OCI_CONFIG if oci else DOCKER_CONFIG, "size": config.size, "digest": config.digest},
        "layers": [
            {"mediaType": OCI_LAYER if oci else DOCKER_LAYER, "size": b.size, "digest": b.digest} for b in layers
        ],
    }
    return media_type, dump_manifest(manifest)


def image_index(oci: bool, children: list[tuple[str, str, BlobInfo]]) -> tuple[str, bytes]:
    """(media type, bytes) of an OCI index or Docker manifest list; children are (platform, media type, blob)."""
    media_type = OCI_INDEX if oci else DOCKER_LIST
    manifests = []
    for platform, child_type, blob in children:
        os_name, architecture = platform.split("/")[:2]
        manifests.append(
            {
                "mediaType": child_type,
                "size": blob.size,
                "digest": blob.digest,
                "platform": {"architecture": architecture, "os": os_name},
            }
        )
    return media_type, dump_manifest({"schemaVersion": 2, "mediaType": media_type, "manifests": manifests})
