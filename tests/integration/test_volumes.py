# Copyright (c) airgap.ngc contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Bundles in volumes of a fixed size: none larger than the medium takes, a blob larger than a volume split into parts,
volumes imported in any order from several mount points, a missing volume named, a corrupt part failing its image."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_image_mirror import raw_digest, seeded

IMAGES = ["nvidia/pytorch:24.01-py3", "nvidia/cuda:12.2.0-base-ubuntu22.04", "nvidia/clara/clara-parabricks:4.2.0-1"]
VOLUME = 1024 * 1024  # smaller than the pytorch base layer of the small test bed (1 MiB + the tar's own bytes)


def tree_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


@pytest.fixture(scope="module")
def volumes(ansible: Any, testbed: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("volumes")
    run = ansible.module(
        "ngc_image_mirror",
        {
            "registry_url": testbed.source_registry_url,
            "images": IMAGES,
            "facts_file": str(base / "f.fact"),
            "bundle": {"dir": str(base / "ngc-vol"), "volume_size": "1MiB"},
        },
        api_key=testbed.api_key,
    )
    assert run.rc == 0, run.stdout
    return base / "ngc-vol"


@pytest.fixture
def ns(request: pytest.FixtureRequest) -> str:
    return f"vol{os.getpid()}-{request.node.name[5:18].replace('_', '-')}-{int(time.time() * 1000) % 100000}"


def test_no_volume_is_larger_than_volume_size_and_big_blobs_are_split(volumes: Path, testbed: Any) -> None:
    dirs = sorted(p for p in volumes.iterdir() if p.is_dir())
    assert [d.name for d in dirs] == [f"vol-{n:04d}" for n in range(1, len(dirs) + 1)] and len(dirs) >= 3
    for directory in dirs:
        assert tree_bytes(directory) <= VOLUME, directory
    contents = json.loads((volumes / "vol-0001" / "contents.json").read_text())
    assert contents["volumes"] == len(dirs)
    split = [entry for entry in contents["files"].values() if entry.get("parts")]
    assert split and all(len(entry["parts"]) >= 2 for entry in split)
    assert {f"{testbed.source_registry_host}/{ref}" for ref in IMAGES} == set(contents["images"])


def test_volumes_import_in_any_order_from_two_mount_points(
    ansible: Any, testbed: Any, volumes: Path, tmp_path: Path, ns: str
) -> None:
    media = tmp_path / "media"
    dirs = sorted(p for p in volumes.iterdir() if p.is_dir())
    for position, directory in enumerate(reversed(dirs)):
        shutil.copytree(directory, media / f"usb{position % 2}" / directory.name)
    args = {
        "source": "bundle",
        "source_dir": str(media),
        "registry": {"url": testbed.open_registry_url, "prefix": ns},
        "facts_file": str(tmp_path / "far.fact"),
    }
    run = ansible.module("ngc_image_mirror", args)
    assert run.rc == 0, run.stdout
    for ref in IMAGES:
        assert raw_digest(testbed.open_registry_host, f"{ns}/{ref}") == seeded(testbed)[ref]["digest"], ref
    listed = ansible.module("ngc_catalog_info", {"source": "bundle", "source_dir": str(media), "verify": True})
    assert listed.rc == 0 and len(listed.result["images"]) == len(IMAGES)
    assert listed.result["problems"] == []


def test_a_missing_volume_is_named_and_a_corrupt_part_fails_its_image(
    ansible: Any, testbed: Any, volumes: Path, tmp_path: Path, ns: str
) -> None:
    contents = json.loads((volumes / "vol-0001" / "contents.json").read_text())
    split_digest, split_entry = next(
        (f"sha256:{k.rsplit('/', 1)[1]}", e) for k, e in contents["files"].items() if e.get("parts")
    )
    last = split_entry["parts"][-1]
    carried = tmp_path / "carried"
    shutil.copytree(volumes, carried)
    missing_volume = carried / f"vol-{last['volume']:04d}"
    shutil.rmtree(missing_volume)
    args = {
        "source": "bundle",
        "source_dir": str(carried),
        "registry": {"url": testbed.open_registry_url, "prefix": ns},
        "facts_file": str(tmp_path / "far.fact"),
    }
    run = ansible.module("ngc_image_mirror", args)
    assert run.rc != 0
    messages = " ".join(i["message"] for i in run.result["images"] if i["status"] == "failed")
    assert f"volume {last['volume']} of {contents['volumes']} (vol-{last['volume']:04d})" in messages, messages

    shutil.rmtree(carried)
    shutil.copytree(volumes, carried)
    part = carried / f"vol-{split_entry['parts'][0]['volume']:04d}" / split_entry["parts"][0]["path"]
    data = bytearray(part.read_bytes())
    data[10] ^= 0xFF
    part.write_bytes(bytes(data))
    users = {ref for ref, image in contents["images"].items() if split_digest in image["blobs"]}
    checked = ansible.module("ngc_catalog_info", {"source": "bundle", "source_dir": str(carried), "verify": True})
    assert checked.rc == 0, checked.stdout
    assert [(p["path"], p["problem"]) for p in checked.result["problems"]] == [
        (f"blobs/sha256/{split_digest.split(':')[1]}", "corrupt")
    ]
    assert {i["reference"] for i in checked.result["images"] if not i["verified"]} == users
    run = ansible.module(
        "ngc_image_mirror", dict(args, registry={"url": testbed.open_registry_url, "prefix": f"{ns}-c"})
    )
    assert run.rc != 0
    failed = {i["reference"] for i in run.result["images"] if i["status"] == "failed"}
    assert failed == users, (failed, users)
    for image in run.result["images"]:
        if image["reference"] not in users:
            ref = image["reference"].split("/", 1)[1]
            assert raw_digest(testbed.open_registry_host, f"{ns}-c/{ref}") == seeded(testbed)[ref]["digest"]
    with pytest.raises(subprocess.CalledProcessError):
        raw_digest(testbed.open_registry_host, f"{ns}-c/{next(iter(users)).split('/', 1)[1]}")
