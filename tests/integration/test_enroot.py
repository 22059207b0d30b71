# Copyright (c) airgap.ngc contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The enroot destination: images from the test bed's registry and from a bundle become the .sqsh files enroot
imports. Judged by unsquashfs (compression, owners, listing, extracted files) against the layers themselves."""

from __future__ import annotations

import hashlib
import json
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import pytest

IMAGES = {
    "nvidia/pytorch:24.01-py3": "nvidia+pytorch+24.01-py3.sqsh",
    "nvidia/cuda:12.10.0-base-ubuntu22.04": "nvidia+cuda+12.10.0-base-ubuntu22.04.sqsh",
}  # cuda: multi-platform
INDEX_TYPES = ("application/vnd.oci.image.index.v1+json", "application/vnd.docker.distribution.manifest.list.v2+json")


def unsquashfs(*args: str) -> str:
    return subprocess.run(["unsquashfs", *args], capture_output=True, text=True, check=True).stdout


def listing(path: Path) -> str:
    return unsquashfs("-lls", "-d", "squashfs-root", str(path))


@pytest.fixture(scope="module")
def runs(ansible: Any, testbed: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Export to a bundle; the registry to enroot twice; the bundle to enroot."""
    base = tmp_path_factory.mktemp("enroot")
    common = {"registry_url": testbed.source_registry_url, "images": list(IMAGES)}
    export = ansible.module(
        "ngc_image_mirror",
        dict(common, facts_file=str(base / "export.fact"), bundle={"dir": str(base / "bundle")}),
        api_key=testbed.api_key,
    )
    assert export.rc == 0, export.stdout
    args = dict(common, facts_file=str(base / "mirror.fact"), enroot={"dir": str(base / "sqsh")})
    first = ansible.module("ngc_image_mirror", args, api_key=testbed.api_key)
    second = ansible.module("ngc_image_mirror", args, api_key=testbed.api_key)
    imported = ansible.module(
        "ngc_image_mirror",
        {
            "source": "bundle",
            "source_dir": str(base / "bundle"),
            "images": list(IMAGES),
            "facts_file": str(base / "far.fact"),
            "enroot": {"dir": str(base / "far")},
        },
    )
    return {"base": base, "first": first, "second": second, "imported": imported}


def amd64_layers(bundle: Path, ref: str) -> tuple[list[Path], dict[str, Any]]:
    """The layer files and config of the image's linux/amd64 manifest, read from the bundle's OCI layout."""

    def blob(digest: str) -> Path:
        return bundle / "blobs" / digest.replace(":", "/")

    index = json.loads((bundle / "index.json").read_text())
    entry = next(
        m for m in index["manifests"] if m["annotations"]["org.opencontainers.image.ref.name"].endswith("/" + ref)
    )
    manifest = json.loads(blob(entry["digest"]).read_text())
    if entry["mediaType"] in INDEX_TYPES:
        child = next(m for m in manifest["manifests"] if m["platform"]["architecture"] == "amd64")
        manifest = json.loads(blob(child["digest"]).read_text())
    return [blob(layer["digest"]) for layer in manifest["layers"]], json.loads(
        blob(manifest["config"]["digest"]).read_text()
    )


def expected_files(layers: list[Path]) -> dict[str, str]:
    """Each regular file of the layers (the testbed's hold no whiteouts) by path, with its sha256, upper layers winning."""
    files = {}
    for path in layers:
        with tarfile.open(path) as tar:
            for member in tar:
                name = member.name.lstrip("./")
                if member.isfile() and not name.startswith("dev/"):
                    files[name] = hashlib.sha256(tar.extractfile(member).read()).hexdigest()
    return files


def test_registry_images_become_enroot_squashfs_files(runs: dict[str, Any], tmp_path: Path) -> None:
    first, base = runs["first"], runs["base"]
    assert first.rc == 0, first.stdout
    assert first.result["changed"] is True
    assert sorted(p.name for p in (base / "sqsh").iterdir()) == sorted(IMAGES.values())  # no staging or partial left
    for ref, name in IMAGES.items():
        sqsh = base / "sqsh" / name
        assert "Compression lzo" in unsquashfs("-s", str(sqsh))
        lines = listing(sqsh).splitlines()
        entries = [line for line in lines if line[:1] in "-dlcbps" and "squashfs-root" in line]
        assert entries and all(line.split()[1] == "root/root" for line in entries)
        out = tmp_path / name
        unsquashfs("-d", str(out), str(sqsh))
        layers, config = amd64_layers(base / "bundle", ref)
        files = expected_files(layers)
        assert files
        for path, digest in files.items():
            assert hashlib.sha256((out / path).read_bytes()).hexdigest() == digest, path
        assert (out / "etc/environment").read_text() == "".join(f"{line}\n" for line in config["config"]["Env"])
        assert (out / "etc/fstab").read_text() == ""
        labels = "".join(f"# {k} {v}\n" for k, v in config["config"]["Labels"].items())
        assert (out / "etc/rc").read_text() == labels + (
            '\nmkdir -p "/" 2> /dev/null\ncd "/" && unset OLDPWD || exit 1\n\nif [ -s /etc/rc.local ]; then\n    . /etc/rc.local\n'
            "fi\n\nif [ $# -gt 0 ]; then\n    exec  \"$@\"\nelse\n    exec  '/bin/sh'\nfi\n"
        )
        assert (
            (out / "etc/rc.local")
            .read_text()
            .startswith("# This file is sourced by /etc/rc when the container starts.\n")
        )
    facts = json.loads((base / "mirror.fact").read_text())
    records = [
        e for record in facts["images"].values() for e in record["destinations"].values() if e["type"] == "enroot"
    ]
    assert sorted(Path(e["path"]).name for e in records) == sorted(IMAGES.values())
    assert all(e["size"] == Path(e["path"]).stat().st_size for e in records)


def test_a_second_run_changes_nothing(runs: dict[str, Any]) -> None:
    second = runs["second"]
    assert second.rc == 0, second.stdout
    assert second.result["changed"] is False


def test_an_import_from_a_bundle_makes_the_same_files(runs: dict[str, Any]) -> None:
    imported, base = runs["imported"], runs["base"]
    assert imported.rc == 0, imported.stdout
    assert imported.result["changed"] is True
    for name in IMAGES.values():
        assert listing(base / "far" / name) == listing(base / "sqsh" / name)
        assert (base / "far" / name).read_bytes() == (base / "sqsh" / name).read_bytes()


def test_a_changed_file_is_written_again_and_check_mode_writes_nothing(
    ansible: Any, testbed: Any, runs: dict[str, Any]
) -> None:
    base = runs["base"]
    args = {
        "source": "bundle",
        "source_dir": str(base / "bundle"),
        "images": ["nvidia/pytorch:24.01-py3"],
        "facts_file": str(base / "far.fact"),
        "enroot": {"dir": str(base / "far")},
    }
    sqsh = base / "far" / IMAGES["nvidia/pytorch:24.01-py3"]
    good = sqsh.read_bytes()
    sqsh.write_bytes(good[:4096])
    check = ansible.module("ngc_image_mirror", args, check=True)
    assert check.rc == 0 and check.result["changed"] is True, check.stdout
    assert sqsh.stat().st_size == 4096
    again = ansible.module("ngc_image_mirror", args)
    assert again.rc == 0 and again.result["changed"] is True, again.stdout
    assert sqsh.read_bytes() == good


def test_bad_squash_options_fail_and_leave_nothing(ansible: Any, runs: dict[str, Any]) -> None:
    """Options of the allowed shape that mksquashfs still refuses (an xz dictionary under 8 KiB) fail the image."""
    base = runs["base"]
    target = base / "bad"
    run = ansible.module(
        "ngc_image_mirror",
        {
            "source": "bundle",
            "source_dir": str(base / "bundle"),
            "images": ["nvidia/pytorch:24.01-py3"],
            "facts_file": str(base / "bad.fact"),
            "enroot": {"dir": str(target), "squash_options": "-comp xz -Xdict-size 3K"},
        },
    )
    assert run.rc != 0
    assert "mksquashfs" in run.stdout and "squash_options" in run.stdout
    assert not target.exists()  # made by the run, left empty: removed again
