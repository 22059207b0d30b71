# Copyright (c) airgap.ngc contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A delta bundle's left-out blobs: read from the earlier bundle beside it in the drop directory (or another one
there), else from where an earlier import put them (the destination registry), each checked against its digest; with
none of those the image fails, naming the digest and the bundle that carried it. Bundles are built here by hand."""
from __future__ import annotations

import contextlib
import hashlib
import json
from pathlib import Path
from typing import Any, Iterator

import pytest

from ansible_collections.airgap.ngc.plugins.module_utils._types.errors import AirgapError, DigestMismatchError
from ansible_collections.airgap.ngc.plugins.module_utils._types.plan import SourceImage
from ansible_collections.airgap.ngc.plugins.module_utils._types.reference import ImageReference
from ansible_collections.airgap.ngc.plugins.module_utils._transports.sources import BundleSource

REF = "nvcr.io/nvidia/pytorch:24.02-py3"
BASE = b"base layer the first bundle carried " * 200
NEW = b"layer only the delta carries " * 100


def digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def write_bundle(directory: Path, blobs: list[bytes], left_out: dict[bytes, str] | None = None) -> None:
    """An OCI layout of one image (REF) whose layers are ``blobs``; ``left_out`` are layers it does not hold, each
    with the bundle that carried it (a delta bundle's ``expected``)."""
    left_out = left_out or {}
    config = json.dumps({"architecture": "amd64", "os": "linux"}).encode()
    layers = [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": digest(b), "size": len(b)} for b in blobs]
    manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                           "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest(config), "size": len(config)},
                           "layers": layers}).encode()
    (directory / "blobs" / "sha256").mkdir(parents=True)
    for data in [config, manifest] + [b for b in blobs if b not in left_out]:
        (directory / "blobs" / "sha256" / digest(data).split(":")[1]).write_bytes(data)
    (directory / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    (directory / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": digest(manifest), "size": len(manifest),
         "annotations": {"org.opencontainers.image.ref.name": REF}}]}))
    (directory / "contents.json").write_text(json.dumps({"schema": 1, "bundle": directory.name, "delta": bool(left_out), "images": {}, "files": {},
                                                         "expected": {digest(b): {"bundle": name, "image": REF} for b, name in left_out.items()}}))


def read(source: BundleSource, data: bytes) -> bytes:
    with source.open_blob(SourceImage(ref=ImageReference.parse(REF)), digest(data), len(data)) as chunks:
        return b"".join(chunks)


class Registry:
    """Where an earlier import put blobs (``open_held_blob``, as the destination registry answers it)."""

    name = "registry.site.example"

    def __init__(self, blobs: dict[str, bytes]) -> None:
        self.blobs, self.asked = blobs, []

    def open_held_blob(self, image: SourceImage, wanted: str, size: int) -> Any:
        self.asked.append(wanted)
        if wanted not in self.blobs:
            return None

        def chunks() -> Iterator[bytes]:
            yield self.blobs[wanted]

        return contextlib.closing(chunks())


def test_a_left_out_blob_is_read_from_the_earlier_bundle_beside_it(tmp_path: Path) -> None:
    write_bundle(tmp_path / "drop" / "ngc-2026-11", [BASE])
    write_bundle(tmp_path / "drop" / "ngc-2026-12", [BASE, NEW], {BASE: "ngc-2026-11"})
    source = BundleSource(str(tmp_path / "drop" / "ngc-2026-12"))
    registry = Registry({digest(BASE): BASE})
    source.read_also_from(registry)
    assert read(source, BASE) == BASE and read(source, NEW) == NEW
    assert registry.asked == []  # the bundle beside it is enough


def test_another_bundle_beside_it_serves_when_the_carrier_is_gone(tmp_path: Path) -> None:
    write_bundle(tmp_path / "drop" / "ngc-2026-10-full", [BASE])  # a full bundle that also holds it
    write_bundle(tmp_path / "drop" / ".ngc-2026-09", [BASE[:-1] + b"!"])  # still being copied: never read
    write_bundle(tmp_path / "drop" / "ngc-2026-12", [BASE, NEW], {BASE: "ngc-2026-11"})
    assert read(BundleSource(str(tmp_path / "drop" / "ngc-2026-12")), BASE) == BASE


def test_a_damaged_blob_beside_it_is_refused_by_its_digest(tmp_path: Path) -> None:
    write_bundle(tmp_path / "drop" / "ngc-2026-11", [BASE])
    write_bundle(tmp_path / "drop" / "ngc-2026-12", [BASE, NEW], {BASE: "ngc-2026-11"})
    damaged = tmp_path / "drop" / "ngc-2026-11" / "blobs" / "sha256" / digest(BASE).split(":")[1]
    damaged.write_bytes(b"X" + BASE[1:])  # same size, other bytes
    with pytest.raises(DigestMismatchError, match="damaged"):
        read(BundleSource(str(tmp_path / "drop" / "ngc-2026-12")), BASE)


def test_without_a_bundle_beside_it_the_registry_an_earlier_import_filled_is_read(tmp_path: Path) -> None:
    write_bundle(tmp_path / "usb" / "ngc-2026-12", [BASE, NEW], {BASE: "ngc-2026-11"})
    source = BundleSource(str(tmp_path / "usb" / "ngc-2026-12"))
    registry = Registry({digest(BASE): BASE})
    source.read_also_from(registry)
    assert read(source, BASE) == BASE and registry.asked == [digest(BASE)]


def test_a_blob_nowhere_names_the_bundle_that_carried_it(tmp_path: Path) -> None:
    write_bundle(tmp_path / "usb" / "ngc-2026-12", [BASE, NEW], {BASE: "ngc-2026-11"})
    source = BundleSource(str(tmp_path / "usb" / "ngc-2026-12"))
    source.read_also_from(Registry({}))
    with pytest.raises(AirgapError) as caught:
        read(source, BASE)
    message = str(caught.value)
    for expected in (digest(BASE), "import bundle ngc-2026-11 first", str(tmp_path / "usb"), "registry.site.example does not hold it"):
        assert expected in message, message
