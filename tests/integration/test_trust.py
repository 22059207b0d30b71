# Copyright (c) airgap.ngc contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Trust and integrity of ngc_image_mirror: where images are read from, one read per blob, archives never silently
corrupt, nothing left behind by a failed or killed run, and results that say what is really there."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_image_mirror import REPO, facts, mirror_args, raw_digest, seeded

MULTI = "nvidia/cuda:12.10.0-base-ubuntu22.04"  # a Docker manifest list: linux/amd64 and linux/arm64
PYTORCH = "nvidia/pytorch:24.01-py3"


@pytest.fixture
def ns(request: pytest.FixtureRequest) -> str:
    return f"trust{os.getpid()}-{request.node.name[5:22].replace('_', '-')}-{int(time.time() * 1000) % 100000}"


@pytest.mark.parametrize(
    "reference",
    ["somehost:5000/nvidia/pytorch:24.03-py3", "docker.io/library/ubuntu:22.04", "nvcr.io/nvidia/pytorch:24.01-py3"],
)
def test_a_reference_on_another_registry_is_refused_before_any_request(
    ansible: Any, testbed: Any, tmp_path: Path, faults: Any, reference: str
) -> None:
    args = mirror_args(
        testbed,
        tmp_path,
        [PYTORCH, reference],
        registry_url=testbed.source_proxy_url,
        docker={"host": testbed.docker_host or None},
        archive={"dir": str(tmp_path / "archives")},
    )
    run = ansible.module("ngc_image_mirror", args, api_key=testbed.api_key)
    assert run.rc != 0
    msg = run.result["msg"]
    host = reference.split("/", 1)[0]
    assert f"names the registry {host}" in msg and testbed.source_proxy_host in msg and "registry_url" in msg, msg
    assert testbed.api_key not in run.stdout + run.stderr
    assert faults.stats("registry")["total"] == 0  # refused at the door: not even the good image was fetched
    assert not (tmp_path / "archives").exists()


def test_a_reference_with_the_source_host_is_the_source(ansible: Any, testbed: Any, tmp_path: Path) -> None:
    with_host = f"{testbed.source_registry_host}/{PYTORCH}"
    run = ansible.module(
        "ngc_image_mirror",
        mirror_args(testbed, tmp_path, [with_host, PYTORCH], archive={"dir": str(tmp_path / "a")}),
        api_key=testbed.api_key,
    )
    assert run.rc == 0, run.stdout
    assert [i["reference"] for i in run.result["images"]] == [with_host]  # one image, named once


def test_registry_and_archive_in_one_task_read_each_blob_once(
    ansible: Any, testbed: Any, tmp_path: Path, ns: str, faults: Any
) -> None:
    images = [PYTORCH, "nvidia/pytorch:24.02-py3", MULTI]
    args = mirror_args(
        testbed,
        tmp_path,
        images,
        registry_url=testbed.source_proxy_url,
        registry={"url": testbed.open_registry_url, "prefix": ns},
        archive={"dir": str(tmp_path / "archives")},
    )
    run = ansible.module("ngc_image_mirror", args, api_key=testbed.api_key)
    assert run.rc == 0, run.stdout
    gets: dict[str, int] = {}
    for request in faults.stats("registry")["requests"]:
        if request["method"] == "GET" and "/blobs/" in request["path"] and request["status"] == 200:
            digest = request["path"].rsplit("/", 1)[-1]
            gets[digest] = gets.get(digest, 0) + 1
    assert gets and max(gets.values()) == 1, {d: n for d, n in gets.items() if n > 1}
    source = seeded(testbed)
    for ref in images:
        assert raw_digest(testbed.open_registry_host, f"{ns}/{ref}") == source[ref]["digest"]
        assert (tmp_path / "archives" / f"{ref.replace(':', '/')}.tar").is_file()


def _docker_archive_config(path: Path) -> str:
    with tarfile.open(path) as archive:
        manifest = json.load(archive.extractfile("manifest.json"))  # type: ignore[arg-type]
    return "sha256:" + manifest[0]["Config"].rsplit("/", 1)[-1]


def test_a_changed_archive_platform_rewrites_the_archive(ansible: Any, testbed: Any, tmp_path: Path) -> None:
    archive_dir = tmp_path / "archives"
    path = archive_dir / f"{MULTI.replace(':', '/')}.tar"
    configs = {m["platform"]: m["config_digest"] for m in seeded(testbed)[MULTI]["manifests"]}
    first = ansible.module(
        "ngc_image_mirror",
        mirror_args(testbed, tmp_path, [MULTI], archive={"dir": str(archive_dir)}),
        api_key=testbed.api_key,
    )
    assert first.rc == 0, first.stdout
    assert _docker_archive_config(path) == configs["linux/amd64"]
    arm = mirror_args(testbed, tmp_path, [MULTI], archive={"dir": str(archive_dir), "platform": "linux/arm64"})
    second = ansible.module("ngc_image_mirror", arm, api_key=testbed.api_key)
    assert second.rc == 0, second.stdout
    assert second.result["changed"] is True
    assert "holds platform linux/amd64, archive.platform is linux/arm64" in second.result["images"][0]["message"]
    assert _docker_archive_config(path) == configs["linux/arm64"]
    third = ansible.module("ngc_image_mirror", arm, api_key=testbed.api_key)
    assert third.result["changed"] is False


def test_two_runs_into_one_archive_directory_are_locked_out(
    ansible: Any, testbed: Any, tmp_path: Path, faults: Any
) -> None:
    archive_dir = tmp_path / "archives"
    progress = tmp_path / "progress.json"
    # Every blob waits 10 s until the second run has been refused (then the faults are cleared): however slow this
    # machine, the first run still holds the lock when the second asks for it.
    faults.registry(delay=10, count=None, path_contains="/blobs/sha256:")
    first_args = mirror_args(
        testbed,
        tmp_path,
        [PYTORCH],
        registry_url=testbed.source_proxy_url,
        archive={"dir": str(archive_dir)},
        progress_file=str(progress),
        parallel=1,
    )
    argv = [
        str(Path(sys.executable).parent / "ansible"),
        "localhost",
        "-m",
        "airgap.ngc.ngc_image_mirror",
        "-a",
        json.dumps(first_args),
    ]
    proc = subprocess.Popen(
        argv,
        env=dict(ansible.env, NGC_API_KEY=testbed.api_key),
        cwd=str(REPO),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (
            progress.exists() and json.loads(progress.read_text() or "{}").get("state") == "running"
        ):
            time.sleep(0.1)
        other = dict(first_args, facts_file=str(tmp_path / "other" / "facts.fact"), images=["nvidia/pytorch:24.02-py3"])
        del other["progress_file"]
        second = ansible.module("ngc_image_mirror", other, api_key=testbed.api_key)
        assert second.rc != 0
        assert f"holds the lock on archive.dir {archive_dir}" in second.result["msg"], second.result["msg"]
    finally:
        faults.reset()
        out = proc.communicate(timeout=300)[0]
    assert proc.returncode == 0, out
    assert json.loads(
        subprocess.run(
            ["skopeo", "inspect", f"docker-archive:{archive_dir}/nvidia/pytorch/24.01-py3.tar"],
            capture_output=True,
            check=True,
        ).stdout
    )["Digest"]


def test_a_failed_upload_is_cancelled_and_its_result_shows_what_is_there(
    ansible: Any, testbed: Any, tmp_path: Path, ns: str, faults: Any
) -> None:
    layer = seeded(testbed)[PYTORCH]["layer_digests"][1]
    faults.registry(status=500, count=None, path_contains=f"/blobs/{layer}", method="GET")
    args = mirror_args(
        testbed,
        tmp_path,
        [PYTORCH],
        registry_url=testbed.source_proxy_url,
        registry={"url": testbed.open_registry_url, "prefix": ns},
        retries=0,
        parallel=1,
    )
    run = ansible.module("ngc_image_mirror", args, api_key=testbed.api_key)
    assert run.rc != 0
    (image,) = run.result["images"]
    assert image["status"] == "failed"
    assert [d["after"] for d in image["destinations"]] == [None]  # nothing was written: after is what is there
    uploads = (
        Path(testbed.workdir)
        / "registry-open"
        / "data"
        / "docker"
        / "registry"
        / "v2"
        / "repositories"
        / ns
        / "nvidia"
        / "pytorch"
        / "_uploads"
    )
    # distribution keeps an empty hashstates/ directory of a cancelled session; an open one has its startedat file.
    assert list(uploads.rglob("startedat")) == [], list(uploads.rglob("*"))


def test_what_a_killed_run_left_is_removed_by_the_next_one(ansible: Any, testbed: Any, tmp_path: Path) -> None:
    archive_dir = tmp_path / "archives"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    leftovers = [
        archive_dir / "nvidia/cuda" / f".12.2.0-base-ubuntu22.04.tar.partial-{dead.pid}",
        archive_dir / "nvidia/cuda" / f".12.2.0-base-ubuntu22.04.tar.partial-{dead.pid}.spool-ab12_cd",
        archive_dir / "nvidia/pytorch" / f".README.md.partial-{dead.pid}.x1y2z3",
        tmp_path / "facts" / f".ngc_mirror.fact.partial-{dead.pid}.abc123",
    ]
    for path in leftovers:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"left by a killed run")
    live = archive_dir / "nvidia/cuda" / f".other.tar.partial-{os.getpid()}"  # a live process's file is kept
    live.write_bytes(b"in use")
    run = ansible.module(
        "ngc_image_mirror",
        mirror_args(testbed, tmp_path, [PYTORCH], archive={"dir": str(archive_dir)}),
        api_key=testbed.api_key,
    )
    assert run.rc == 0, run.stdout
    assert [p for p in leftovers if p.exists()] == []
    assert live.exists()


@pytest.fixture
def tight_disk(tmp_path: Path) -> Any:
    """A tmpfs that holds one archive of PYTORCH with 256 KiB to spare (sized from a first write elsewhere)."""
    mountpoint = tmp_path / "tight"
    mountpoint.mkdir()

    def mount(size: int) -> Path:
        mounted = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mountpoint)],
            capture_output=True,
            text=True,
            check=False,
        )
        if mounted.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
        return mountpoint

    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], check=False)


def test_spooling_is_bounded_by_the_space_left(ansible: Any, testbed: Any, tmp_path: Path, tight_disk: Any) -> None:
    probe = ansible.module(
        "ngc_image_mirror",
        mirror_args(
            testbed,
            tmp_path,
            [PYTORCH],
            archive={"dir": str(tmp_path / "probe")},
            facts_file=str(tmp_path / "probe.fact"),
        ),
        api_key=testbed.api_key,
    )
    assert probe.rc == 0, probe.stdout
    size = (tmp_path / "probe" / "nvidia/pytorch/24.01-py3.tar").stat().st_size
    layers = seeded(testbed)[PYTORCH]["manifests"][0]["layer_digests"]
    assert len(layers) == 3  # one big layer streams into the tar while the others would spool beside it
    disk = tight_disk(((size + 256 * 1024) // 4096 + 4) * 4096)
    run = ansible.module(
        "ngc_image_mirror",
        mirror_args(testbed, tmp_path, [PYTORCH], archive={"dir": str(disk)}, parallel=4),
        api_key=testbed.api_key,
    )
    assert run.rc == 0, run.result.get("msg")
    assert (disk / "nvidia/pytorch/24.01-py3.tar").stat().st_size == size
    assert facts(tmp_path)["images"][f"{testbed.source_registry_host}/{PYTORCH}"]["destinations"]


def test_the_task_message_is_a_short_summary(ansible: Any, testbed: Any, tmp_path: Path) -> None:
    missing = [f"nvidia/pytorch:99.{n:02d}-nope" for n in range(8)]
    run = ansible.module(
        "ngc_image_mirror",
        mirror_args(testbed, tmp_path, missing, archive={"dir": str(tmp_path / "a")}),
        api_key=testbed.api_key,
    )
    assert run.rc != 0
    msg = run.result["msg"]
    assert msg.startswith("8 of 8 image(s) could not be copied: ") and "(and 5 more)" in msg, msg
    assert len(msg) < 1200
    assert len(run.result["failure_messages"]) == 8
