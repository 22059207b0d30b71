# Copyright (c) airgap.ngc contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Carried media are untrusted input: a bundle names only its own regular files, its documents follow their schemas,
its index agrees with its contents record, a bundle still being written is refused, and the import and ``verify``
reach one verdict on each image. Bundles are built by hand (test_verify's builder, from the OCI image-layout spec)."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import subprocess
from pathlib import Path
from typing import Any, Callable

import pytest

from ansible_collections.airgap.ngc.plugins.module_utils._transports import upload_sessions as _upload_sessions
from ansible_collections.airgap.ngc.plugins.module_utils._formats.bundle import BundleReader
from ansible_collections.airgap.ngc.plugins.module_utils._transports.bundle import INVENTORY_KIND, known_from_paths
from ansible_collections.airgap.ngc.plugins.module_utils._formats.carried import (
    CarriedError,
    CarriedMissing,
    open_inside,
    schema_problem,
)
from ansible_collections.airgap.ngc.plugins.module_utils._types.errors import (
    AirgapError,
    ConfigError,
    DigestMismatchError,
)
from ansible_collections.airgap.ngc.plugins.module_utils._types.oci import MAX_MANIFEST_BYTES
from ansible_collections.airgap.ngc.plugins.module_utils._transports.sources import ArchiveSource, BundleSource
from ansible_collections.airgap.ngc.plugins.module_utils._transports.fanout import fan_out
from ansible_collections.airgap.ngc.plugins.module_utils._transports.upload_sessions import (
    SessionUpload,
    UploadSessions,
)
from ansible_collections.airgap.ngc.plugins.module_utils._formats.bundle_check import affected_images, verify_bundle
from ansible_collections.airgap.ngc.tests.unit.plugins.module_utils.test_upload_sessions import (
    DATA,
    DIGEST,
    PIECE,
    Registry,
)
from ansible_collections.airgap.ngc.tests.unit.plugins.module_utils.test_verify import CUDA, PYTORCH, Bundle

REFS = [PYTORCH, CUDA]


@pytest.fixture
def bundle(tmp_path: Path) -> Bundle:
    root = tmp_path / "bundle"
    root.mkdir()
    return Bundle(root)


def import_verdict(directory: Path) -> set[str]:
    """The images an import of the bundle fails: each name found, its manifests read, every blob read to its end
    (what the copy engine asks of the bundle source)."""
    source = BundleSource(str(directory))
    failed = set()
    for image in source.images(None):
        try:
            found = source.resolve(image)
            assert found is not None
            top = source.manifest(image, found.digest, found.media_type)
            manifests = (
                [source.manifest(image, e["digest"], e["mediaType"]) for e in top.data["manifests"]]
                if top.is_index
                else [top]
            )
            for manifest in manifests:
                for desc in [manifest.data["config"]] + manifest.data["layers"]:
                    with source.open_blob(image, desc["digest"], desc["size"]) as chunks:
                        for _chunk in chunks:
                            pass
        except AirgapError:
            failed.add(str(image.ref))
    return failed


def rewrite(path: Path, change: Callable[[Any], Any]) -> None:
    document = json.loads(path.read_text())
    path.write_text(json.dumps(change(document) or document))


def blob_entry(bundle: Bundle, ref: str) -> str:
    return f"blobs/sha256/{bundle.own[ref].split(':')[1]}"


# -- paths and files taken from a bundle -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name", ["../../../etc/passwd", "/etc/passwd", "blobs/../../x", "a\0b", "blobs//x", "./index.json", ""]
)
def test_a_name_that_is_not_a_plain_one_inside_the_bundle_is_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(CarriedError, match="not a plain name inside"):
        open_inside(str(tmp_path), name)


def test_links_fifos_and_devices_are_refused_by_what_they_are_and_a_missing_file_is_missing(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.write_text("secret")
    (tmp_path / "m" / "blobs").mkdir(parents=True)
    (tmp_path / "m" / "blobs" / "link").symlink_to(outside)
    (tmp_path / "m" / "blobs" / "zero").symlink_to("/dev/zero")
    (tmp_path / "m" / "linked").symlink_to(tmp_path / "m" / "blobs")
    os.mkfifo(tmp_path / "m" / "blobs" / "fifo")
    root = str(tmp_path / "m")
    for name, what, named in (
        ("blobs/link", "a symbolic link", "blobs/link"),
        ("blobs/zero", "a symbolic link", "blobs/zero"),
        ("blobs/fifo", "a FIFO", "blobs/fifo"),
        ("linked/fifo", "a symbolic link, not a directory", "linked"),
        ("blobs", "a directory", "blobs"),
    ):
        with pytest.raises(CarriedError, match=what) as raised:
            open_inside(root, name)
        assert not isinstance(raised.value, CarriedMissing) and f"{os.path.join(root, named)} is" in str(raised.value)
    with pytest.raises(CarriedMissing, match="does not exist"):
        open_inside(root, "blobs/nothing")
    with os.fdopen(open_inside(str(tmp_path), "outside"), "rb") as handle:
        assert handle.read() == b"secret"


def test_a_blob_that_is_a_link_out_of_the_bundle_fails_its_image_in_the_import_and_in_verify(
    bundle: Bundle, tmp_path: Path
) -> None:
    victim = bundle.dir / blob_entry(bundle, CUDA)
    outside = tmp_path / "outside-copy"
    outside.write_bytes(victim.read_bytes())  # the right bytes, but outside the bundle
    victim.unlink()
    victim.symlink_to(outside)
    assert import_verdict(bundle.dir) == {CUDA}
    (problem,) = verify_bundle(str(bundle.dir))
    assert problem["problem"] == "corrupt" and "symbolic link" in problem["detail"] and problem["images"] == [CUDA]


def test_a_fifo_or_dev_zero_as_a_blob_is_named_as_such_not_as_missing(bundle: Bundle) -> None:
    fifo = bundle.dir / blob_entry(bundle, CUDA)
    fifo.unlink()
    os.mkfifo(fifo)
    zero = bundle.dir / blob_entry(bundle, PYTORCH)
    zero.unlink()
    zero.symlink_to("/dev/zero")
    reader = BundleReader(str(bundle.dir))
    with pytest.raises(CarriedError, match="a FIFO") as raised:
        reader.open_blob(bundle.own[CUDA])
    assert "does not exist" not in str(raised.value)
    with pytest.raises(CarriedError, match="a symbolic link"):
        reader.open_blob(bundle.own[PYTORCH])
    assert {(p["images"][0], p["problem"]) for p in verify_bundle(str(bundle.dir))} == {
        (CUDA, "corrupt"),
        (PYTORCH, "corrupt"),
    }
    assert import_verdict(bundle.dir) == {CUDA, PYTORCH}


def test_a_part_path_out_of_the_bundle_fails_the_image_that_needs_it(bundle: Bundle, tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "x").write_bytes((bundle.dir / blob_entry(bundle, PYTORCH)).read_bytes())
    for bad in ("../../etc/x", str(tmp_path / "etc" / "x")):
        rewrite(
            bundle.dir / "contents.json",
            lambda c, bad=bad: c["files"][blob_entry(bundle, PYTORCH)].update(
                parts=[{"volume": 1, "path": bad, "size": 1}]
            ),
        )
        assert import_verdict(bundle.dir) == {PYTORCH}
        problems = verify_bundle(str(bundle.dir))
        assert affected_images(problems) == {PYTORCH}
        assert "not a plain name inside a volume" in problems[0]["detail"] and "contents.json" in problems[0]["detail"]


# -- documents against their schemas: one verdict ---------------------------------------------------------------------------
def _annotation_string(index: Any) -> None:
    index["manifests"][1]["annotations"] = "nvcr.io/nvidia/cuda:12.2.0-base-ubuntu22.04"


def _duplicate(index: Any) -> None:
    index["manifests"].append(dict(index["manifests"][0]))


def _tampered(index: Any) -> None:
    index["manifests"][0] = dict(index["manifests"][1], annotations=index["manifests"][0]["annotations"])


CASES: dict[str, tuple[str, Callable[[Any], Any], set[str], str]] = {
    "contents.json is a list": ("contents.json", lambda c: [c], set(REFS), "is a list, not an object"),
    "contents.json cut in half": ("contents.json", None, set(REFS), "cut short"),  # type: ignore[dict-item]
    "images[ref] is a string": (
        "contents.json",
        lambda c: c["images"].update({PYTORCH: "sha256:" + "0" * 64}),
        {PYTORCH},
        f"images['{PYTORCH}'] is a string",
    ),
    "a files entry is a string": (
        "contents.json",
        lambda c: c["files"].update({"blobs/sha256/" + c["images"][CUDA]["blobs"][0][7:]: "x"}),
        {CUDA},
        "is a string 'x', not an object",
    ),
    "a part's volume is a string": (
        "contents.json",
        lambda c: next(iter(c["files"].values())).update(parts=[{"volume": "one", "path": "p"}]),
        None,
        "volume is a string 'one'",
    ),  # type: ignore[dict-item]
    "a part without a volume": (
        "contents.json",
        lambda c: next(iter(c["files"].values())).update(parts=[{"path": "p"}]),
        None,
        "has no 'volume'",
    ),  # type: ignore[dict-item]
    "an index annotation is a string": ("index.json", _annotation_string, {CUDA}, "annotations is a string"),
    "a name given twice": ("index.json", _duplicate, {PYTORCH}, "2 times"),
    "an entry pointed at another image's manifest": ("index.json", _tampered, {PYTORCH}, "the index was changed"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_bad_entry_fails_the_images_it_concerns_alike_in_the_import_and_in_verify(bundle: Bundle, case: str) -> None:
    name, change, affected, words = CASES[case]
    path = bundle.dir / name
    if change is None:
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    else:
        rewrite(path, change)
    problems = verify_bundle(str(bundle.dir))
    if affected is None:  # the first file entry: whichever images use that file
        affected = affected_images(problems)
        assert affected
    assert any(words in p["detail"] and p["path"] == name for p in problems), problems
    assert affected_images(problems) == affected
    assert import_verdict(bundle.dir) == affected  # one reader, one verdict: the sound images are imported


def test_a_rejected_name_says_which_file_and_key(bundle: Bundle) -> None:
    rewrite(bundle.dir / "contents.json", lambda c: c["images"].update({PYTORCH: "sha256:" + "0" * 64}))
    reader = BundleReader(str(bundle.dir))
    assert reader.references() == REFS
    with pytest.raises(CarriedError, match=r"contents.json images\['nvcr.io/nvidia/pytorch:24.01-py3'\] is a string"):
        reader.find(PYTORCH)
    assert reader.find(CUDA)["digest"] == bundle.manifest[CUDA]


def test_a_manifest_over_the_limit_is_not_read(bundle: Bundle) -> None:
    big = json.dumps({"schemaVersion": 2, "layers": [], "pad": "x" * MAX_MANIFEST_BYTES}).encode()
    digest = "sha256:" + hashlib.sha256(big).hexdigest()
    (bundle.dir / "blobs" / "sha256" / digest[7:]).write_bytes(big)
    with pytest.raises(
        CarriedError, match="more than the 4194304 \\(4 MiB\\) a manifest, an index or an image config may have"
    ):
        BundleReader(str(bundle.dir)).manifest(digest)


# -- a bundle still being written ---------------------------------------------------------------------------------------------
def test_a_bundle_an_export_holds_is_refused_naming_the_writer(bundle: Bundle) -> None:
    fd = os.open(bundle.dir, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # what an export's RunLock holds for its whole run
        for read in (BundleReader, verify_bundle):
            with pytest.raises(
                ConfigError, match=rf"still being written: an ngc_image_mirror run \(pid {os.getpid()}\) holds its lock"
            ):
                read(str(bundle.dir))
    finally:
        os.close(fd)
    assert BundleReader(str(bundle.dir)).references() == REFS


def test_a_bundle_with_a_temporary_file_a_live_process_writes_is_refused_naming_it(bundle: Bundle) -> None:
    blobs = bundle.dir / "blobs" / "sha256"
    (blobs / f".{'cd' * 32}.partial-1").write_bytes(b"left by an export on another host, where pid 1 was that export")
    assert BundleReader(str(bundle.dir)).references() == REFS  # pid 1 is alive here, but holds no such file
    with subprocess.Popen(
        ["sh", "-c", 'exec 3>"$0"; echo ready; exec sleep 60', str(blobs / ".placeholder")], stdout=subprocess.PIPE
    ) as writer:
        try:
            assert writer.stdout is not None and writer.stdout.readline() == b"ready\n"
            partial = blobs / f".{'ab' * 32}.partial-{writer.pid}"
            os.rename(blobs / ".placeholder", partial)  # the file the live process writes, by its name
            with pytest.raises(ConfigError, match=rf"pid {writer.pid} is writing {partial}"):
                BundleReader(str(bundle.dir))
        finally:
            writer.kill()
    writer.wait()
    assert BundleReader(str(bundle.dir)).references() == REFS  # its writer is gone: a leftover, not a writer


# -- since: inventories and earlier records ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "document, words",
    [
        ({"schema": 1, "kind": INVENTORY_KIND, "images": ["a"], "blobs": {}}, "images is a list"),
        ({"schema": 1, "kind": INVENTORY_KIND, "images": {}, "blobs": []}, "blobs is a list"),
        ({"schema": 1, "kind": INVENTORY_KIND, "images": {}}, "has no 'blobs'"),
        ({"schema": 1, "kind": INVENTORY_KIND, "images": {}, "blobs": {"sha256:zz": "x"}}, "not a digest"),
        ({"schema": 1, "files": {}, "images": {PYTORCH: "sha256:" + "0" * 64}}, "is a string"),
        ({"schema": 1, "files": {}, "images": []}, "images is a list"),
        ([], "neither a bundle contents record nor a far-side inventory"),
    ],
)
def test_a_malformed_since_record_fails_rather_than_meaning_the_far_side_has_nothing(
    tmp_path: Path, document: Any, words: str
) -> None:
    path = tmp_path / "far.json"
    path.write_text(json.dumps(document))
    with pytest.raises(ConfigError, match=words) as raised:
        known_from_paths([str(path)])
    assert str(path) in str(raised.value) and raised.value.args[0].startswith("bundle.since")
    path.write_text('{"schema": 1, "kind": "airgap')
    with pytest.raises(ConfigError, match="cut short"):
        known_from_paths([str(path)])


def test_a_sound_inventory_and_contents_record_are_read(bundle: Bundle, tmp_path: Path) -> None:
    inventory = tmp_path / "inv.json"
    inventory.write_text(
        json.dumps(
            {
                "schema": 1,
                "kind": INVENTORY_KIND,
                "images": {PYTORCH: bundle.manifest[PYTORCH]},
                "blobs": {bundle.own[PYTORCH]: PYTORCH},
            }
        )
    )
    known = known_from_paths([str(inventory), str(bundle.dir)])
    assert known[bundle.own[PYTORCH]]["image"] == PYTORCH and bundle.own[CUDA] in known


# -- an archive source pointed at a bundle -------------------------------------------------------------------------------------
def test_an_archive_source_pointed_at_a_bundle_says_what_it_is(bundle: Bundle) -> None:
    with pytest.raises(
        ConfigError, match=r"is a bundle \(it holds index.json\), not a directory of per-tag archives: .*source: bundle"
    ):
        ArchiveSource(str(bundle.dir))


# -- a blob whose digest failed leaves nothing behind ---------------------------------------------------------------------------
def test_an_upload_whose_blob_failed_its_digest_keeps_no_spool(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_upload_sessions, "UPLOAD_PIECE", PIECE)
    registry = Registry()
    sessions = UploadSessions(str(tmp_path / "mirror.fact"))
    upload = SessionUpload(registry, sessions, "ns/big", DIGEST, len(DATA))

    def damaged() -> Any:
        for start in range(0, len(DATA) - PIECE, PIECE):
            yield DATA[start : start + PIECE]
        raise DigestMismatchError(f"blob {DIGEST} hashes to something else: the file is damaged")

    with pytest.raises(DigestMismatchError):
        fan_out(damaged(), [upload])
    assert [p.name for p in tmp_path.iterdir() if ".upload-" in p.name] == []
    assert sessions.get(UploadSessions.key(registry.host, "ns/big", DIGEST)) is None
    assert registry.cancelled and DIGEST not in registry.blobs


def test_schema_problems_name_the_key() -> None:
    schema = {"images": {"a": [int]}}
    assert (
        schema_problem({"images": {"a": [1, "2"]}}, schema, "f.json")
        == "f.json.images.a[1] is a string '2', not a number"
    )
    assert (
        schema_problem({"images": {"a": [True]}}, schema, "f.json")
        == "f.json.images.a[0] is true/false True, not a number"
    )
    assert schema_problem({"images": {"a": []}}, schema, "f.json") is None
