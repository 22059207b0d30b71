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

from ansible_collections.airgap.ngc.plugins.module_utils._formats.files import RESUME_MIN, BlobFile
from ansible_collections.airgap.ngc.plugins.module_utils._types.blob_sink import BlobSink
from ansible_collections.airgap.ngc.plugins.module_utils._types.errors import AirgapError, DigestMismatchError
from ansible_collections.airgap.ngc.plugins.module_utils._types.plan import SourceImage
from ansible_collections.airgap.ngc.plugins.module_utils._types.reference import ImageReference
from ansible_collections.airgap.ngc.plugins.module_utils._transports.fanout import GuardedSink, Totals, transfer
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
    layers = [
        {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": digest(b), "size": len(b)} for b in blobs
    ]
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": digest(config),
                "size": len(config),
            },
            "layers": layers,
        }
    ).encode()
    (directory / "blobs" / "sha256").mkdir(parents=True)
    for data in [config, manifest] + [b for b in blobs if b not in left_out]:
        (directory / "blobs" / "sha256" / digest(data).split(":")[1]).write_bytes(data)
    (directory / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    (directory / "index.json").write_text(
        json.dumps(
            {
                "schemaVersion": 2,
                "manifests": [
                    {
                        "mediaType": "application/vnd.oci.image.manifest.v1+json",
                        "digest": digest(manifest),
                        "size": len(manifest),
                        "annotations": {"org.opencontainers.image.ref.name": REF},
                    }
                ],
            }
        )
    )
    (directory / "contents.json").write_text(
        json.dumps(
            {
                "schema": 1,
                "bundle": directory.name,
                "delta": bool(left_out),
                "images": {},
                "files": {},
                "expected": {digest(b): {"bundle": name, "image": REF} for b, name in left_out.items()},
            }
        )
    )


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
    for expected in (
        digest(BASE),
        "import bundle ngc-2026-11 first",
        str(tmp_path / "usb"),
        "registry.site.example does not hold it",
    ):
        assert expected in message, message


BIG = bytes(range(256)) * (RESUME_MIN // 256 + 4096)  # big enough to be kept when a run is cut off in it


class Verifying(BlobSink):
    """A sink that checks the digest itself (as a registry does at its final PUT) and holds ``kept`` bytes already."""

    verifies_digest = True

    def __init__(self, kept: int) -> None:
        self.resume_from, self.received = kept, b""

    def write(self, data: bytes) -> None:
        self.received += data

    def close(self) -> None:
        """Nothing to commit."""

    def abort(self) -> None:
        """Nothing to free."""


class Owner:
    """A destination's write of one image: the first error of its sinks."""

    error: BaseException | None = None


def transfer_big(source: BundleSource, sinks: list[Any]) -> Totals:
    """One transfer of BIG from ``source`` to ``sinks``, as the copier runs it (each sink guarded for its destination,
    the source saying whether it can start part way); the first error of a sink is raised."""
    image = SourceImage(ref=ImageReference.parse(REF))
    totals, owner = Totals(), Owner()
    guarded = [GuardedSink(owner, sink) for sink in sinks]
    transfer(
        {digest(BIG): len(BIG)},
        lambda d, s: guarded,
        lambda d, s, start=0, held=(): (
            source.open_blob(image, d, s, start, held) if start else source.open_blob(image, d, s)
        ),
        {},
        1,
        totals,
        lambda n: None,
        resumes=bool(getattr(source, "resumes", False)),
    )
    if owner.error is not None:
        raise owner.error
    return totals


def test_a_blob_a_run_was_cut_off_in_is_continued_from_a_bundle(tmp_path: Path) -> None:
    """An enroot or Apptainer spool (a kept file) and a registry session hold the first bytes: only the rest is passed
    on; the kept file ends whole (its kept bytes were compared with the bundle's, which hash to the digest)."""
    write_bundle(tmp_path / "bundle", [BIG])
    out = tmp_path / "cache"
    out.mkdir()
    first = BlobFile(str(out / "blob"), digest(BIG), len(BIG), keep=str(out / ".blob.resume"))
    first.write(BIG[:5_000_000])
    first.abort()  # cut off: the bytes stay for the next run
    kept = BlobFile(str(out / "blob"), digest(BIG), len(BIG), keep=str(out / ".blob.resume"))
    assert kept.resume_from == 5_000_000
    totals = transfer_big(BundleSource(str(tmp_path / "bundle")), [kept])
    assert (totals.reused, totals.transferred) == (5_000_000, len(BIG) - 5_000_000)
    assert (out / "blob").read_bytes() == BIG and not (out / ".blob.resume").exists()
    session = Verifying(3 * 1024 * 1024)
    totals = transfer_big(BundleSource(str(tmp_path / "bundle")), [session])
    assert session.received == BIG[3 * 1024 * 1024 :] and totals.transferred == len(BIG) - 3 * 1024 * 1024


def test_kept_bytes_that_are_not_the_blobs_are_not_used(tmp_path: Path) -> None:
    write_bundle(tmp_path / "bundle", [BIG])
    out = tmp_path / "cache"
    out.mkdir()
    (out / ".blob.resume").write_bytes(BIG[:4_000_000] + b"?" + BIG[4_000_001:5_000_000])
    kept = BlobFile(str(out / "blob"), digest(BIG), len(BIG), keep=str(out / ".blob.resume"))
    assert kept.resume_from == 5_000_000
    with pytest.raises(DigestMismatchError, match="not the blob's"):
        transfer_big(BundleSource(str(tmp_path / "bundle")), [kept])
    assert not (out / "blob").exists() and not (out / ".blob.resume").exists()  # nothing of it kept


def test_a_damaged_bundle_blob_fails_a_continued_read_too(tmp_path: Path) -> None:
    write_bundle(tmp_path / "bundle", [BIG])
    blob = tmp_path / "bundle" / "blobs" / "sha256" / digest(BIG).split(":")[1]
    blob.write_bytes(b"X" + BIG[1:])  # damaged before the bytes the sink holds: still found
    session = Verifying(3 * 1024 * 1024)
    with pytest.raises(DigestMismatchError, match="damaged"):
        transfer_big(BundleSource(str(tmp_path / "bundle")), [session])
