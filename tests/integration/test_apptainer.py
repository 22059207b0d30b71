# Copyright (c) airgap.ngc contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The Apptainer destination: images from the test bed's registry and from a bundle become SIF files.

Judged by siftool (the SIF's header, descriptors and objects, Debian package siftool), unsquashfs (the partition
dumped by siftool) against the layers themselves, and sh running the runscript and environment script."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_enroot import amd64_layers, expected_files

IMAGES = {
    "nvidia/pytorch:24.01-py3": ("nvidia/pytorch:24.01-py3", "pytorch_24.01-py3.sif"),
    "nvidia/cuda:12.10.0-base-ubuntu22.04": (
        "nvidia/cuda:12.10.0-base-ubuntu22.04",
        "cuda_12.10.0-base-ubuntu22.04.sif",
    ),
}


def siftool(*args: str) -> str:
    return subprocess.run(["siftool", *args], capture_output=True, text=True, check=True).stdout


def descriptors(sif: Path) -> list[list[str]]:
    """``siftool list``'s table: ID, group, link, offsets, type (the header line left out)."""
    rows = [
        [cell.strip() for cell in line.split("|")] for line in siftool("list", str(sif)).splitlines() if "|" in line
    ]
    return [row for row in rows if row[0].isdigit()]


@pytest.fixture(scope="module")
def runs(ansible: Any, testbed: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Export to a bundle; the registry to a SIF tree twice; the bundle to flat SIF files."""
    base = tmp_path_factory.mktemp("apptainer")
    common = {"registry_url": testbed.source_registry_url, "images": list(IMAGES)}
    export = ansible.module(
        "ngc_image_mirror",
        dict(common, facts_file=str(base / "export.fact"), bundle={"dir": str(base / "bundle")}),
        api_key=testbed.api_key,
    )
    assert export.rc == 0, export.stdout
    args = dict(common, facts_file=str(base / "mirror.fact"), apptainer={"dir": str(base / "tree")})
    first = ansible.module("ngc_image_mirror", args, api_key=testbed.api_key)
    second = ansible.module("ngc_image_mirror", args, api_key=testbed.api_key)
    flat = ansible.module(
        "ngc_image_mirror",
        {
            "source": "bundle",
            "source_dir": str(base / "bundle"),
            "images": list(IMAGES),
            "facts_file": str(base / "far.fact"),
            "apptainer": {"dir": str(base / "flat"), "layout": "flat"},
        },
    )
    return {"base": base, "first": first, "second": second, "flat": flat}


def partition(sif: Path, out: Path) -> Path:
    """The primary partition, dumped by siftool and unpacked by unsquashfs."""
    rows = descriptors(sif)
    fs_id = next(row[0] for row in rows if row[-1].startswith("FS"))
    image = out.with_suffix(".squashfs")
    with open(image, "wb") as handle:
        subprocess.run(["siftool", "dump", fs_id, str(sif)], stdout=handle, check=True)
    subprocess.run(["unsquashfs", "-d", str(out), str(image)], capture_output=True, check=True)
    return image


def test_registry_images_become_a_sif_tree(runs: dict[str, Any], tmp_path: Path) -> None:
    first, base = runs["first"], runs["base"]
    assert first.rc == 0, first.stdout
    assert first.result["changed"] is True
    assert sorted(p.name for p in (base / "tree").iterdir()) == ["nvidia"]  # no staging or partial left
    for ref, (path, _flat) in IMAGES.items():
        sif = base / "tree" / path
        header = siftool("header", str(sif))
        assert "amd64" in header and "01" in header, header
        rows = descriptors(sif)
        kinds = [row[-1] for row in rows]
        assert kinds[0].startswith("Def.FILE"), rows
        assert kinds[1].startswith("JSON.Generic") and kinds[2].startswith("JSON.Generic"), rows
        assert kinds[3].startswith("FS") and "Squashfs" in kinds[3] and "*System" in kinds[3] and "amd64" in kinds[3], (
            rows
        )
        deffile = subprocess.run(
            ["siftool", "dump", rows[0][0], str(sif)], capture_output=True, text=True, check=True
        ).stdout
        assert deffile == f"bootstrap: docker\nfrom: {ref}\n\n" or deffile.endswith(f"/{ref}\n\n"), deffile
        layers, config = amd64_layers(base / "bundle", ref)
        oci = json.loads(
            subprocess.run(["siftool", "dump", rows[2][0], str(sif)], capture_output=True, check=True).stdout
        )
        assert oci["Env"] == config["config"]["Env"] and oci.get("Labels") == config["config"].get("Labels")
        metadata = json.loads(
            subprocess.run(["siftool", "dump", rows[1][0], str(sif)], capture_output=True, check=True).stdout
        )
        assert metadata["type"] == "container" and metadata["data"]["attributes"]["deffile"] == deffile
        out = tmp_path / sif.name
        image = partition(sif, out)
        assert (
            "Compression gzip"
            in subprocess.run(["unsquashfs", "-s", str(image)], capture_output=True, text=True, check=True).stdout
        )
        for name, digest in expected_files(layers).items():
            if name not in ("etc/hosts", "etc/resolv.conf"):
                assert hashlib.sha256((out / name).read_bytes()).hexdigest() == digest, name
        for name in ("dev", "proc", "sys", "tmp", "var/tmp", "home", "root", ".singularity.d/libs"):
            assert (out / name).is_dir(), name
        assert os.readlink(out / "singularity") == ".singularity.d/runscript"
        labels = json.loads((out / ".singularity.d/labels.json").read_text())
        assert labels["org.label-schema.usage.singularity.deffile.bootstrap"] == "docker"
        assert labels["org.opencontainers.image.architecture"] == "amd64"
        for key, value in (config["config"].get("Labels") or {}).items():
            assert labels[key] == value
        assert metadata["data"]["attributes"]["labels"] == labels
        env = (out / ".singularity.d/env/10-docker2singularity.sh").read_text()
        assert env.startswith("#!/bin/sh\n") and len(env.splitlines()) == 1 + len(config["config"]["Env"])
        assert (out / ".singularity.d/runscript").stat().st_mode & 0o111
    facts = json.loads((base / "mirror.fact").read_text())
    records = [
        e for record in facts["images"].values() for e in record["destinations"].values() if e["type"] == "apptainer"
    ]
    assert len(records) == len(IMAGES)
    for record in records:
        data = Path(record["path"]).read_bytes()
        assert record["size"] == len(data) and record["sha256"] == "sha256:" + hashlib.sha256(data).hexdigest()
        assert record["layout"] == "tree" and record["squash_options"] == "-comp gzip"


def test_a_second_run_changes_nothing(runs: dict[str, Any]) -> None:
    second = runs["second"]
    assert second.rc == 0, second.stdout
    assert second.result["changed"] is False


def test_a_bundle_becomes_flat_files_with_the_same_content(runs: dict[str, Any]) -> None:
    flat, base = runs["flat"], runs["base"]
    assert flat.rc == 0, flat.stdout
    assert flat.result["changed"] is True
    assert sorted(p.name for p in (base / "flat").iterdir()) == sorted(name for _path, name in IMAGES.values())
    for path, name in IMAGES.values():
        # the same image from a registry and from a bundle: the same file, byte for byte
        assert (base / "flat" / name).read_bytes() == (base / "tree" / path).read_bytes()


def test_check_mode_writes_nothing_and_a_changed_file_is_written_again(ansible: Any, runs: dict[str, Any]) -> None:
    base = runs["base"]
    args = {
        "source": "bundle",
        "source_dir": str(base / "bundle"),
        "images": ["nvidia/pytorch:24.01-py3"],
        "facts_file": str(base / "far.fact"),
        "apptainer": {"dir": str(base / "flat"), "layout": "flat"},
    }
    sif = base / "flat" / "pytorch_24.01-py3.sif"
    good = sif.read_bytes()
    sif.write_bytes(good[:40960])
    check = ansible.module("ngc_image_mirror", args, check=True)
    assert check.rc == 0 and check.result["changed"] is True, check.stdout
    assert sif.stat().st_size == 40960
    again = ansible.module("ngc_image_mirror", args)
    assert again.rc == 0 and again.result["changed"] is True, again.stdout
    assert sif.read_bytes() == good


def test_an_arm64_platform_makes_an_arm64_sif(ansible: Any, runs: dict[str, Any]) -> None:
    base = runs["base"]
    run = ansible.module(
        "ngc_image_mirror",
        {
            "source": "bundle",
            "source_dir": str(base / "bundle"),
            "images": ["nvidia/cuda:12.10.0-base-ubuntu22.04"],
            "facts_file": str(base / "arm.fact"),
            "apptainer": {"dir": str(base / "arm"), "platform": "linux/arm64"},
        },
    )
    assert run.rc == 0, run.stdout
    sif = base / "arm" / "nvidia/cuda:12.10.0-base-ubuntu22.04"
    assert "arm64" in siftool("header", str(sif))
    assert any("arm64" in row[-1] for row in descriptors(sif))
