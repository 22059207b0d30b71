# Copyright (c) airgap.ngc contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""playbooks/hpc_cache.yml against the test bed: the enroot cache and the Apptainer SIF cache of a Slurm login node,
filled from the site registry (credentials from a vars file; SIF tree) and from a carried bundle (checked first; SIF
flat). Judged by unsquashfs (superblock, listing) and siftool (descriptors, the dumped partition), not by the collection."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import REPO

PLAYBOOK = REPO / "playbooks" / "hpc_cache.yml"
IMAGES = {
    "nvidia/pytorch:24.01-py3": "nvidia+pytorch+24.01-py3.sqsh",
    "nvidia/cuda:12.10.0-base-ubuntu22.04": "nvidia+cuda+12.10.0-base-ubuntu22.04.sqsh",  # multi-platform
    "nvidia/clara/clara-parabricks:4.2.0-1": "nvidia+clara+clara-parabricks+4.2.0-1.sqsh",
}  # a team image
SIF_TREE = {ref: ref for ref in IMAGES}  # <dir>/nvidia/pytorch:24.01-py3, Determined's singularity_image_root
SIF_FLAT = {ref: ref.rsplit("/", 1)[1].replace(":", "_") + ".sif" for ref in IMAGES}  # apptainer pull's name


def superblock(path: Path) -> str:
    return subprocess.run(["unsquashfs", "-s", str(path)], capture_output=True, text=True, check=True).stdout


def listing(path: Path) -> list[str]:
    out = subprocess.run(
        ["unsquashfs", "-lls", "-d", "squashfs-root", str(path)], capture_output=True, text=True, check=True
    ).stdout
    return [line for line in out.splitlines() if line[:1] in "-dlcbps" and "squashfs-root" in line]


def siftool(*args: str) -> str:
    return subprocess.run(["siftool", *args], capture_output=True, text=True, check=True).stdout


def mirror_task(run: Any) -> dict[str, Any]:
    """The result of the playbook's ngc_image_mirror task (the one result that lists images with destinations)."""
    found = [r for r in run.results if isinstance(r.get("images"), list) and "bytes_transferred" in r]
    assert len(found) == 1, run.stdout + run.stderr
    return found[0]


@pytest.fixture(scope="module")
def caches(
    ansible: Any, testbed: Any, collection_tree: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """A bundle exported with the module; the playbook from the registry twice and from the bundle twice."""
    base = tmp_path_factory.mktemp("hpc")
    export = ansible.module(
        "ngc_image_mirror",
        {
            "registry_url": testbed.source_registry_url,
            "images": list(IMAGES),
            "facts_file": str(base / "export.fact"),
            "bundle": {"dir": str(base / "bundle")},
        },
        api_key=testbed.api_key,
    )
    assert export.rc == 0, export.stdout
    registry = {
        "hpc_source": "registry",
        "hpc_registry_url": testbed.source_registry_url,
        "hpc_registry_username": "$oauthtoken",
        "hpc_registry_password": testbed.api_key,
        "hpc_images": list(IMAGES),
        "hpc_enroot_dir": str(base / "registry" / "enroot"),
        "hpc_sif_dir": str(base / "registry" / "sif"),
        "hpc_facts_file": str(base / "registry.fact"),
    }
    bundle = {
        "hpc_source": "bundle",
        "hpc_source_dir": str(base / "bundle"),
        "hpc_enroot_dir": str(base / "far" / "enroot"),
        "hpc_sif_dir": str(base / "far" / "sif"),
        "hpc_sif_layout": "flat",
        "hpc_facts_file": str(base / "far.fact"),
    }
    runs = {
        name: [ansible.playbook(PLAYBOOK, variables), ansible.playbook(PLAYBOOK, variables)]
        for name, variables in (("registry", registry), ("bundle", bundle))
    }
    return {"base": base, "runs": runs, "key": testbed.api_key, "host": testbed.source_registry_host}


@pytest.mark.parametrize("side", ["registry", "bundle"])
def test_the_playbook_writes_enroot_files_that_unsquashfs_reads(caches: dict[str, Any], side: str) -> None:
    first = caches["runs"][side][0]
    assert first.rc == 0, first.stdout + first.stderr
    result = mirror_task(first)
    assert result["changed"] is True
    assert [image["status"] for image in result["images"]] == ["copied"] * len(IMAGES)
    enroot = caches["base"] / ("registry" if side == "registry" else "far") / "enroot"
    assert sorted(p.name for p in enroot.iterdir()) == sorted(IMAGES.values())  # nothing staged or partial left
    for name in IMAGES.values():
        sqsh = enroot / name
        info = superblock(sqsh)
        assert "Compression lzo" in info, info
        entries = listing(sqsh)
        assert any(line.endswith(" squashfs-root/etc/rc") for line in entries), entries
        assert all(line.split()[1] == "root/root" for line in entries)
        # The playbook says where each file went, and the pyxis line that uses it.
        assert f"srun --container-image={sqsh}" in first.stdout
    assert caches["key"] not in first.stdout + first.stderr


def test_a_carried_bundle_and_the_registry_give_the_same_files(caches: dict[str, Any]) -> None:
    base = caches["base"]
    for name in IMAGES.values():
        near, far = base / "registry" / "enroot" / name, base / "far" / "enroot" / name
        assert hashlib.sha256(near.read_bytes()).digest() == hashlib.sha256(far.read_bytes()).digest(), name


def test_the_bundle_is_checked_before_anything_is_written(caches: dict[str, Any]) -> None:
    first = caches["runs"]["bundle"][0]
    checked = [r for r in first.results if "problems" in r]
    assert len(checked) == 1 and checked[0]["problems"] == [], first.stdout
    assert sorted(image["reference"] for image in checked[0]["images"]) == sorted(
        f"{caches['host']}/{ref}" for ref in IMAGES
    )
    assert all(image["verified"] for image in checked[0]["images"])


@pytest.mark.parametrize("side", ["registry", "bundle"])
def test_a_second_run_changes_nothing(caches: dict[str, Any], side: str) -> None:
    again = caches["runs"][side][1]
    assert again.rc == 0, again.stdout + again.stderr
    assert mirror_task(again)["changed"] is False
    assert " | CHANGED" not in again.stdout
    assert [image["status"] for image in mirror_task(again)["images"]] == ["skipped"] * len(IMAGES)


def test_the_sif_caches_are_written_in_both_layouts(caches: dict[str, Any], tmp_path: Path) -> None:
    base = caches["base"]
    assert (
        f"resource_manager.singularity_image_root: {base / 'registry' / 'sif'}" in caches["runs"]["registry"][0].stdout
    )
    for root, names in ((base / "registry" / "sif", SIF_TREE), (base / "far" / "sif", SIF_FLAT)):
        assert sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) == sorted(names.values())
        for ref, name in names.items():
            sif = root / name
            rows = [
                [cell.strip() for cell in line.split("|")]
                for line in siftool("list", str(sif)).splitlines()
                if "|" in line
            ]
            assert [row[-1] for row in rows[1:]] == [
                "Def.FILE",
                "JSON.Generic",
                "JSON.Generic",
                "FS (Squashfs/*System/amd64)",
            ], rows
            partition = tmp_path / (name.replace("/", "+") + ".squashfs")
            partition.write_bytes(
                subprocess.run(["siftool", "dump", rows[-1][0], str(sif)], capture_output=True, check=True).stdout
            )
            assert "Compression gzip" in superblock(partition)
            inside = {line.split()[-1] for line in listing(partition)}
            assert "squashfs-root/.singularity.d/runscript" in inside
            enroot = base / ("registry" if root.parent.name == "registry" else "far") / "enroot" / IMAGES[ref]
            layer_files = {line.split()[-1] for line in listing(enroot) if line.startswith("-")} - {
                f"squashfs-root/etc/{added}" for added in ("rc", "rc.local", "environment", "fstab")
            }
            assert layer_files and layer_files <= inside, sorted(layer_files - inside)[:5]


def test_a_damaged_bundle_is_named_and_its_sound_images_are_written(
    ansible: Any, caches: dict[str, Any], tmp_path: Path
) -> None:
    carried = tmp_path / "carried"
    shutil.copytree(caches["base"] / "bundle", carried)
    index = json.loads((carried / "index.json").read_text())
    entry = next(
        m
        for m in index["manifests"]
        if m["annotations"]["org.opencontainers.image.ref.name"].endswith("/nvidia/pytorch:24.01-py3")
    )
    config = json.loads((carried / "blobs" / entry["digest"].replace(":", "/")).read_text())["config"]["digest"]
    damaged = carried / "blobs" / config.replace(":", "/")
    damaged.write_bytes(b"{}" + damaged.read_bytes()[2:])  # same size, other bytes
    run = ansible.playbook(
        PLAYBOOK,
        {
            "hpc_source_dir": str(carried),
            "hpc_enroot_dir": str(tmp_path / "enroot"),
            "hpc_facts_file": str(tmp_path / "far.fact"),
        },
    )
    assert run.rc != 0, run.stdout
    assert str(damaged.relative_to(carried)) in run.stdout, run.stdout
    assert sorted(p.name for p in (tmp_path / "enroot").iterdir()) == sorted(
        v for k, v in IMAGES.items() if k != "nvidia/pytorch:24.01-py3"
    )


def test_bad_settings_are_refused_before_anything_is_done(ansible: Any, tmp_path: Path) -> None:
    run = ansible.playbook(PLAYBOOK, {"hpc_source": "bundle", "hpc_enroot_dir": str(tmp_path / "enroot")})
    assert run.rc != 0
    assert "hpc_source_dir" in run.stdout and "Traceback" not in run.stdout + run.stderr
    assert not (tmp_path / "enroot").exists()
    run = ansible.playbook(PLAYBOOK, {"hpc_source": "bundle", "hpc_source_dir": str(tmp_path)})
    assert run.rc != 0 and "hpc_enroot_dir or hpc_sif_dir" in run.stdout
