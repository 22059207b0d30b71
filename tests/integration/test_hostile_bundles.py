# Copyright (c) airgap.ngc contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Hostile carried media: a bundle exported from the test bed is changed on the way in the ways an attacker or a broken
copy would change it (a blob that is a link out of the bundle, a FIFO, a part path out of it, a tampered or doubled
index entry, a contents record cut in half or of the wrong shape), or imported while an export still holds it.

One playbook imports every variant into the open registry (each under its own prefix) and verifies it with
ngc_catalog_info: each variant fails exactly the images it concerns, with the file named, the sound ones arrive
(judged with skopeo), verify and the import give the same verdict, nothing outside the bundle was read or changed, and
no task ended in a traceback. A second playbook covers the options that would read or write the wrong place: an
archive source pointed at a bundle, enroot.dir inside the bundle, a malformed ``since`` inventory. A third imports a
bundle whose big layer fails its digest into the registry: no byte of it is kept beside the facts file."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml

from tests.integration._carried import export_bundle, full, own_layer
from tests.integration.test_image_mirror import raw_digest, seeded

EXPORT = ["nvidia/pytorch:24.01-py3", "nvidia/pytorch:24.02-py3", "nvidia/cuda:12.2.0-base-ubuntu22.04"]
REF_NAME = "org.opencontainers.image.ref.name"


@pytest.fixture(scope="module")
def exported(ansible: Any, testbed: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_bundle(ansible, testbed, EXPORT, tmp_path_factory.mktemp("hostile-export"))


def edit(path: Path, change: Callable[[Any], Any]) -> None:
    document = json.loads(path.read_text())
    path.write_text(json.dumps(change(document) or document, indent=2))


def run_batch(
    ansible: Any, tmp_path: Path, tasks: list[dict[str, Any]], api_key: str | None = None
) -> list[dict[str, Any]]:
    """One ansible-playbook run of ``tasks`` (each with ignore_errors); their results in order."""
    playbook = tmp_path / "batch.yml"
    play = {
        "name": "Hostile carried media",
        "hosts": "localhost",
        "gather_facts": False,
        "tasks": [dict(task, ignore_errors=True) for task in tasks],
    }
    playbook.write_text(yaml.safe_dump([play], sort_keys=False))
    run = ansible.playbook(playbook, env={"NGC_API_KEY": api_key} if api_key else None)
    assert len(run.results) == len(tasks), run.stdout + run.stderr
    output = run.stdout + run.stderr
    assert "Traceback" not in output, output[max(output.find("Traceback") - 2000, 0) : output.find("Traceback") + 3000]
    for result in run.results:  # a failure is a message a person can act on, not an exception
        assert "exception" not in result and not str(result.get("msg", "")).startswith(
            ("Module failed", "MODULE FAILURE")
        ), result
    return run.results


def test_hostile_bundles_fail_the_images_they_concern_and_verify_agrees(
    ansible: Any, exported: Path, testbed: Any, tmp_path: Path
) -> None:
    ns = f"hostile{os.getpid()}-{int(time.time() * 1000) % 100000}"
    pytorch1, pytorch2, cuda = (full(testbed, ref) for ref in EXPORT)
    outside = tmp_path / "outside"
    outside.mkdir()
    victim = outside / "victim"
    victim.write_bytes(b"a file outside the bundle: never read, never changed")
    variants: dict[str, tuple[set[str], str]] = {}  # name -> (the images that fail, words in their messages)

    def variant(name: str, failing: set[str], words: str) -> Path:
        carried = tmp_path / "usb" / name
        shutil.copytree(exported, carried)
        variants[name] = (failing, words)
        return carried

    carried = variant("link", {cuda}, "is a symbolic link")
    layer = carried / own_layer(testbed, EXPORT, EXPORT[2])
    shutil.copy(layer, outside / "copy")  # the right bytes, but outside the bundle
    layer.unlink()
    layer.symlink_to(outside / "copy")
    carried = variant("fifo", {pytorch2}, "is a FIFO")
    (carried / own_layer(testbed, EXPORT, EXPORT[1])).unlink()
    os.mkfifo(carried / own_layer(testbed, EXPORT, EXPORT[1]))
    carried = variant("part", {cuda}, "not a plain name inside a volume")
    edit(
        carried / "contents.json",
        lambda c: c["files"][own_layer(testbed, EXPORT, EXPORT[2])].update(
            parts=[{"volume": 1, "path": f"../../../{os.path.relpath(victim, carried)}", "size": victim.stat().st_size}]
        ),
    )
    carried = variant("tampered", {pytorch1}, "the index was changed")

    def point_at_24_02(index: Any) -> None:
        entries = {e["annotations"][REF_NAME]: e for e in index["manifests"]}
        entries[pytorch1].update({k: entries[pytorch2][k] for k in ("digest", "size", "mediaType")})

    edit(carried / "index.json", point_at_24_02)
    carried = variant("twice", {cuda}, "2 times")
    edit(
        carried / "index.json",
        lambda i: i["manifests"].append(next(e for e in i["manifests"] if e["annotations"][REF_NAME] == cuda)),
    )
    carried = variant("half", {pytorch1, pytorch2, cuda}, "cut short")
    record = (carried / "contents.json").read_bytes()
    (carried / "contents.json").write_bytes(record[: len(record) // 2])
    carried = variant("list", {pytorch1, pytorch2, cuda}, "is a list, not an object")
    edit(carried / "contents.json", lambda c: [c])
    carried = variant("string", {pytorch2}, f"images['{pytorch2}'] is a string")
    edit(carried / "contents.json", lambda c: c["images"].update({pytorch2: "sha256:" + "0" * 64}))
    carried = variant("annotation", {pytorch1}, "annotations is a string")
    edit(
        carried / "index.json",
        lambda i: next(e for e in i["manifests"] if e["annotations"][REF_NAME] == pytorch1).update(
            annotations=pytorch1
        ),
    )
    before = {path: path.read_bytes() for path in outside.iterdir()}

    tasks = []
    for name in variants:
        tasks.append(
            {
                "name": f"verify {name}",
                "airgap.ngc.ngc_catalog_info": {
                    "source": "bundle",
                    "source_dir": str(tmp_path / "usb" / name),
                    "verify": True,
                },
            }
        )
        tasks.append(
            {
                "name": f"import {name}",
                "airgap.ngc.ngc_image_mirror": {
                    "source": "bundle",
                    "source_dir": str(tmp_path / "usb" / name),
                    "facts_file": str(tmp_path / "far" / f"{name}.fact"),
                    "inventory_file": str(tmp_path / "far" / f"{name}.inventory.json"),
                    "registry": {"url": testbed.open_registry_url, "prefix": f"{ns}-{name}"},
                },
            }
        )
    results = run_batch(ansible, tmp_path, tasks)
    source = seeded(testbed)
    for number, (name, (failing, words)) in enumerate(variants.items()):
        verified, imported = results[2 * number], results[2 * number + 1]
        rejected = {i["reference"] for i in verified.get("images") or [] if not i["verified"]}
        problems = {ref for p in verified.get("problems") or [] for ref in p["images"]}
        assert rejected | problems == failing, (name, verified)  # one reader, one verdict
        assert set(imported["failed_images"]) == failing, (name, imported)
        for message in imported["failure_messages"]:
            assert words in message and str(tmp_path / "usb" / name) in message and "\n" not in message, (name, message)
        assert "does not exist" not in " ".join(imported["failure_messages"]), name
        for ref in EXPORT:
            if full(testbed, ref) in failing:
                with pytest.raises(subprocess.CalledProcessError):  # nothing was tagged for it
                    raw_digest(testbed.open_registry_host, f"{ns}-{name}/{ref}")
            else:
                assert raw_digest(testbed.open_registry_host, f"{ns}-{name}/{ref}") == source[ref]["digest"], (
                    name,
                    ref,
                )
        inventory = json.loads((tmp_path / "far" / f"{name}.inventory.json").read_text())
        assert set(inventory["images"]) == {full(testbed, ref) for ref in EXPORT} - failing, (
            name
        )  # written after the copies
    assert {path: path.read_bytes() for path in outside.iterdir()} == before


def test_a_bundle_an_export_still_holds_is_not_imported(
    ansible: Any, exported: Path, testbed: Any, tmp_path: Path
) -> None:
    carried = tmp_path / "usb" / "bundle"
    shutil.copytree(exported, carried)
    fd = os.open(carried, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # what an export's directory lock is, held for its whole run
        results = run_batch(
            ansible,
            tmp_path,
            [
                {
                    "name": "import",
                    "airgap.ngc.ngc_image_mirror": {
                        "source": "bundle",
                        "source_dir": str(carried),
                        "facts_file": str(tmp_path / "far.fact"),
                        "registry": {"url": testbed.open_registry_url, "prefix": f"locked{os.getpid()}"},
                    },
                },
                {
                    "name": "verify",
                    "airgap.ngc.ngc_catalog_info": {"source": "bundle", "source_dir": str(carried), "verify": True},
                },
            ],
        )
    finally:
        os.close(fd)
    for result in results:
        assert result["msg"].startswith(f"the bundle {carried} is still being written: "), result
        assert f"(pid {os.getpid()}) holds its lock" in result["msg"]
        assert not result.get("images")
    assert not (tmp_path / "far.fact").exists() or not json.loads((tmp_path / "far.fact").read_text() or "{}").get(
        "images"
    )


def test_options_that_would_read_or_write_the_wrong_place_are_refused(
    ansible: Any, exported: Path, testbed: Any, tmp_path: Path
) -> None:
    carried = tmp_path / "usb" / "bundle"
    shutil.copytree(exported, carried)
    files_before = sorted(str(p.relative_to(carried)) for p in carried.rglob("*"))
    inventory = tmp_path / "far.inventory.json"
    inventory.write_text(
        json.dumps(
            {"schema": 1, "kind": "airgap.ngc far-side inventory", "images": ["nvidia/pytorch:24.01-py3"], "blobs": {}}
        )
    )
    results = run_batch(
        ansible,
        tmp_path,
        [
            {
                "name": "archive source at a bundle",
                "airgap.ngc.ngc_image_mirror": {
                    "source": "archive",
                    "source_dir": str(carried),
                    "facts_file": str(tmp_path / "a.fact"),
                    "registry": {"url": testbed.open_registry_url, "prefix": f"wrong{os.getpid()}"},
                },
            },
            {
                "name": "enroot.dir inside the bundle",
                "airgap.ngc.ngc_image_mirror": {
                    "source": "bundle",
                    "source_dir": str(carried),
                    "facts_file": str(tmp_path / "b.fact"),
                    "enroot": {"dir": str(carried / "enroot")},
                },
            },
            {
                "name": "apptainer.dir inside the bundle",
                "airgap.ngc.ngc_image_mirror": {
                    "source": "bundle",
                    "source_dir": str(carried),
                    "facts_file": str(tmp_path / "c.fact"),
                    "apptainer": {"dir": str(carried / "sif")},
                },
            },
            {
                "name": "a malformed since inventory",
                "airgap.ngc.ngc_image_mirror": {
                    "registry_url": testbed.source_registry_url,
                    "images": EXPORT[:1],
                    "facts_file": str(tmp_path / "d.fact"),
                    "bundle": {"dir": str(tmp_path / "delta"), "since": [str(inventory)]},
                },
            },
        ],
        api_key=testbed.api_key,
    )
    archive, enroot, apptainer, since = results
    assert archive["msg"] == (
        f"source_dir {carried} is a bundle (it holds index.json), not a directory of per-tag "
        "archives: import it with source: bundle"
    ), archive
    assert enroot["msg"].startswith(
        f"enroot.dir {carried / 'enroot'} is inside source_dir {carried}: it would write"
    ), enroot
    assert apptainer["msg"].startswith(f"apptainer.dir {carried / 'sif'} is inside source_dir {carried}"), apptainer
    assert since["msg"].startswith(f"bundle.since: {inventory} is not a usable far-side inventory: "), since
    assert "images is a list" in since["msg"]
    assert (
        sorted(str(p.relative_to(carried)) for p in carried.rglob("*")) == files_before
    )  # nothing appeared in the bundle
    assert not (tmp_path / "delta" / "index.json").exists()  # no bundle was written, full or delta


def _hand_made_bundle(directory: Path, layer: bytes, ref: str) -> str:
    """An OCI layout of one image (a config, one layer), written from the image-layout spec; the layer's digest."""
    blobs = directory / "blobs" / "sha256"
    blobs.mkdir(parents=True)

    def put(data: bytes, media_type: str) -> dict[str, Any]:
        digest = hashlib.sha256(data).hexdigest()
        (blobs / digest).write_bytes(data)
        return {"mediaType": media_type, "digest": f"sha256:{digest}", "size": len(data)}

    config = put(
        json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}}).encode(),
        "application/vnd.oci.image.config.v1+json",
    )
    layer_desc = put(layer, "application/vnd.oci.image.layer.v1.tar")
    manifest = put(
        json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": config,
                "layers": [layer_desc],
            }
        ).encode(),
        "application/vnd.oci.image.manifest.v1+json",
    )
    (directory / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    (directory / "index.json").write_text(
        json.dumps({"schemaVersion": 2, "manifests": [dict(manifest, annotations={REF_NAME: ref})]})
    )
    return layer_desc["digest"]


def test_a_big_blob_that_fails_its_digest_leaves_no_bytes_beside_the_facts_file(
    ansible: Any, testbed: Any, tmp_path: Path
) -> None:
    carried = tmp_path / "usb" / "bundle"
    layer = os.urandom(
        20 * 1024 * 1024
    )  # an upload session (16 MiB or more), gathered in a spool beside the facts file
    digest = _hand_made_bundle(carried, layer, f"{testbed.source_registry_host}/nvidia/big-damaged:1")
    damaged = bytearray(layer)
    damaged[-10] ^= 0xFF  # found only at the end of the read, once the pieces before it were spooled and sent
    (carried / "blobs" / "sha256" / digest.split(":")[1]).write_bytes(bytes(damaged))
    facts = tmp_path / "far" / "mirror.fact"
    results = run_batch(
        ansible,
        tmp_path,
        [
            {
                "name": "import",
                "airgap.ngc.ngc_image_mirror": {
                    "source": "bundle",
                    "source_dir": str(carried),
                    "facts_file": str(facts),
                    "registry": {"url": testbed.open_registry_url, "prefix": f"digest{os.getpid()}"},
                },
            }
        ],
    )
    (result,) = results
    assert result["failed_images"] and "the file is damaged" in result["failure_messages"][0], result
    kept = [p.name for p in facts.parent.iterdir() if ".upload-" in p.name]
    assert kept == [], kept
    uploads = facts.parent / f".{facts.name}.uploads"
    assert not uploads.exists() or json.loads(uploads.read_text()).get("uploads", {}) == {}
