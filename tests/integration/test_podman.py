# Copyright (c) airgap.ngc contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The OCI archives (``archive: {format: oci}``) as Podman takes them on an HPC login node: ``podman load`` of each
archive into a private store (``--root``/``--runroot``/``--tmpdir`` under the test's temporary directory, vfs, no
events), judged by skopeo reading the source registry: the loaded image has the source's digest, the platform's
manifest and config digests, the name it was mirrored from, and the layers' files; ``skopeo copy oci-archive:`` of
the same files gives the source's manifest bytes. Running a container is not checked: runc cannot set the rlimits
podman asks for inside this test container."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path
from typing import Any, Iterator

import pytest

# Docker schema 2, a Docker manifest list, an OCI index and a team image: the media types an NGC mirror holds.
IMAGES = [
    "nvidia/pytorch:24.01-py3",
    "nvidia/cuda:12.10.0-base-ubuntu22.04",
    "nvidia/cuda:12.2.0-base-ubuntu22.04",
    "nvidia/clara/clara-parabricks:4.2.0-1",
]
INDEX_TYPES = ("application/vnd.oci.image.index.v1+json", "application/vnd.docker.distribution.manifest.list.v2+json")

pytestmark = pytest.mark.skipif(
    shutil.which("podman") is None,
    reason="podman is not installed (the Debian package podman; scripts/bootstrap.sh adds it)",
)


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def skopeo(*args: str) -> bytes:
    proc = subprocess.run(["skopeo", *args], capture_output=True, check=False)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    return proc.stdout


class Podman:
    """podman with its whole state under one directory: storage, run state, temporary files; no events journal."""

    def __init__(self, base: Path, runroot: Path) -> None:
        self.base = base
        self.argv = [
            "podman",
            "--root",
            str(base / "root"),
            "--runroot",
            str(runroot),
            "--tmpdir",
            str(base / "tmp"),
            "--storage-driver",
            "vfs",
            "--cgroup-manager",
            "cgroupfs",
            "--events-backend",
            "none",
        ]

    def __call__(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*self.argv, *args], capture_output=True, text=True, check=False, timeout=300)


@pytest.fixture(scope="module")
def archives(ansible: Any, testbed: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    base = tmp_path_factory.mktemp("podman")
    run = ansible.module(
        "ngc_image_mirror",
        {
            "registry_url": testbed.source_registry_url,
            "images": IMAGES,
            "facts_file": str(base / "mirror.fact"),
            "archive": {"dir": str(base / "oci"), "format": "oci"},
        },
        api_key=testbed.api_key,
    )
    assert run.rc == 0, run.stdout
    files = {ref: base / "oci" / (ref.rsplit(":", 1)[0] + "/" + ref.rsplit(":", 1)[1] + ".oci.tar") for ref in IMAGES}
    assert all(path.is_file() for path in files.values()), sorted(str(p) for p in (base / "oci").rglob("*"))
    return {"base": base, "files": files}


@pytest.fixture(scope="module")
def podman(archives: dict[str, Any]) -> Iterator[Podman]:
    runroot = Path(
        tempfile.mkdtemp(prefix="podman-run-")
    )  # podman refuses a run root over 50 characters (a worker's tmp_path is longer)
    try:
        tool = Podman(archives["base"] / "podman", runroot)
        probe = tool("info", "--format", "{{.Store.GraphDriverName}}")
        assert probe.returncode == 0 and probe.stdout.strip() == "vfs", (
            probe.stderr
        )  # podman is installed: it must run here
        yield tool
    finally:
        shutil.rmtree(runroot, ignore_errors=True)


def source(testbed: Any, authfile: Path, ref: str) -> dict[str, Any]:
    """What skopeo reads from the source registry: the top digest, the linux/amd64 manifest's digest, its config digest."""
    options = ["--tls-verify=false", "--authfile", str(authfile)]
    where = [*options, f"docker://{testbed.source_registry_host}/{ref}"]
    top = skopeo("inspect", "--raw", *where)
    manifest = top
    if json.loads(top).get("mediaType") in INDEX_TYPES:
        child = next(m for m in json.loads(top)["manifests"] if m["platform"]["architecture"] == "amd64")
        repository = ref.rsplit(":", 1)[0]
        manifest = skopeo(
            "inspect", "--raw", *options, f"docker://{testbed.source_registry_host}/{repository}@{child['digest']}"
        )
        assert child["digest"] == sha256(manifest)
    config = skopeo("inspect", "--config", "--raw", "--override-os", "linux", "--override-arch", "amd64", *where)
    assert json.loads(manifest)["config"]["digest"] == sha256(config)
    return {
        "digest": sha256(top),
        "manifest": manifest,
        "manifest_digest": sha256(manifest),
        "config_digest": sha256(config),
    }


def layer_files(layers: list[Path]) -> dict[str, str]:
    """Each regular file of the layers (the test bed's carry no whiteouts) with its sha256, upper layers winning."""
    files = {}
    for path in layers:
        with tarfile.open(path) as tar:
            for member in tar:
                if member.isfile():
                    files[member.name.lstrip("./")] = hashlib.sha256(tar.extractfile(member).read()).hexdigest()
    return files


@pytest.mark.parametrize("ref", IMAGES)
def test_podman_loads_the_oci_archive_with_the_source_digests(
    ref: str, archives: dict[str, Any], podman: Podman, testbed: Any, testbed_authfile: Path
) -> None:
    name = f"{testbed.source_registry_host}/{ref}"
    loaded = podman("load", "-i", str(archives["files"][ref]))
    assert loaded.returncode == 0, loaded.stderr
    assert f"Loaded image: {name}" in loaded.stdout + loaded.stderr
    inspected = podman("image", "inspect", name)
    assert inspected.returncode == 0, inspected.stderr
    image = json.loads(inspected.stdout)[0]
    judge = source(testbed, testbed_authfile, ref)
    assert image["Digest"] == judge["digest"]
    assert "sha256:" + image["Id"] == judge["config_digest"]
    assert f"{testbed.source_registry_host}/{ref.rsplit(':', 1)[0]}@{judge['manifest_digest']}" in image["RepoDigests"]
    assert image["RepoTags"] == [name]
    assert (image["Os"], image["Architecture"]) == ("linux", "amd64")


@pytest.mark.parametrize("ref", IMAGES)
def test_the_loaded_root_filesystem_holds_the_layers_files(
    ref: str, archives: dict[str, Any], podman: Podman, testbed: Any, tmp_path: Path
) -> None:
    name = f"{testbed.source_registry_host}/{ref}"
    if podman("image", "exists", name).returncode != 0:
        assert podman("load", "-i", str(archives["files"][ref])).returncode == 0
    copied = tmp_path / "dir"
    skopeo(
        "copy",
        "--override-os",
        "linux",
        "--override-arch",
        "amd64",
        f"oci-archive:{archives['files'][ref]}",
        f"dir:{copied}",
    )
    manifest = json.loads((copied / "manifest.json").read_bytes())
    files = layer_files([copied / layer["digest"].split(":", 1)[1] for layer in manifest["layers"]])
    assert files
    mounted = podman("image", "mount", name)
    assert mounted.returncode == 0, mounted.stderr
    root = Path(mounted.stdout.strip())
    try:
        for path, digest in files.items():
            assert hashlib.sha256((root / path).read_bytes()).hexdigest() == digest, path
    finally:
        podman("image", "unmount", name)


@pytest.mark.parametrize("ref", IMAGES)
def test_skopeo_copies_the_oci_archive_with_the_source_manifest(
    ref: str, archives: dict[str, Any], testbed: Any, testbed_authfile: Path, tmp_path: Path
) -> None:
    judge = source(testbed, testbed_authfile, ref)
    copied = tmp_path / "dir"
    skopeo(
        "copy",
        "--override-os",
        "linux",
        "--override-arch",
        "amd64",
        f"oci-archive:{archives['files'][ref]}",
        f"dir:{copied}",
    )
    assert (copied / "manifest.json").read_bytes() == judge["manifest"]
    manifest = json.loads(judge["manifest"])
    for descriptor in [manifest["config"], *manifest["layers"]]:
        blob = copied / descriptor["digest"].split(":", 1)[1]
        assert sha256(blob.read_bytes()) == descriptor["digest"] and blob.stat().st_size == descriptor["size"]
