# Copyright (c) airgap.ngc contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Disk space first: a run whose archives cannot fit on their filesystem (a tmpfs of a given size) fails before
writing anything, naming the directory, what it needs and what is free; its registry destination is not started."""

from __future__ import annotations

import subprocess
import tarfile
from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.integration.test_image_mirror import mirror_args, skopeo

IMAGES = ["nvidia/pytorch:24.01-py3", "nvidia/pytorch:24.02-py3", "nvidia/cuda:12.2.0-base-ubuntu22.04"]


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Any]:
    """A function mounting a tmpfs of some bytes at a fresh directory; every mount is removed at the end."""
    mounts: list[Path] = []

    def mount(size: int) -> Path:
        point = tmp_path / f"small{len(mounts)}"
        point.mkdir()
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(point)],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip()}): the test needs root and mount rights")
        mounts.append(point)
        return point

    yield mount
    for point in mounts:
        subprocess.run(["umount", str(point)], check=False)


def test_check_mode_shows_the_space_each_filesystem_needs(ansible: Any, testbed: Any, tmp_path: Path) -> None:
    args = mirror_args(
        testbed, tmp_path, IMAGES, archive={"dir": str(tmp_path / "archives")}, bundle={"dir": str(tmp_path / "bundle")}
    )
    run = ansible.module("ngc_image_mirror", args, check=True, api_key=testbed.api_key)
    assert run.rc == 0, run.stdout
    space = run.result["space"]
    assert len(space) == 1 and space[0]["enough"] is True  # both on the same filesystem: one entry, both needs added
    assert sorted(space[0]["options"]) == ["archive.dir", "bundle.dir"] and space[0]["images"] == 2 * len(IMAGES)
    assert space[0]["needed"] > 0 and space[0]["free"] > space[0]["needed"]
    assert not (tmp_path / "archives").exists() and not (tmp_path / "bundle").exists()


def test_archives_that_cannot_fit_write_nothing_while_the_registry_beside_them_goes_ahead(
    ansible: Any, testbed: Any, tmp_path: Path, small_fs: Any
) -> None:
    def need(images: list[str]) -> int:
        plan = ansible.module(
            "ngc_image_mirror",
            mirror_args(testbed, tmp_path, images, archive={"dir": str(tmp_path / "big")}),
            check=True,
            api_key=testbed.api_key,
        )
        assert plan.rc == 0, plan.stdout
        return int(plan.result["space"][0]["needed"])

    everything, alone = need(IMAGES), need(IMAGES[2:])
    size = (alone * 3 // 2 + 65536) // 4096 * 4096
    assert size < everything, (alone, everything)  # the test bed's images: the cuda one alone fits, all three do not
    small = small_fs(size)
    ns = f"space-{tmp_path.name[-12:]}"
    args = mirror_args(
        testbed,
        tmp_path,
        IMAGES,
        archive={"dir": str(small)},
        registry={"url": testbed.open_registry_url, "prefix": ns},
    )
    for check in (True, False):
        run = ansible.module("ngc_image_mirror", args, check=check, api_key=testbed.api_key)
        assert run.rc != 0, run.stdout
        message = run.result["msg"]
        assert f"not enough disk space, so nothing was written to archive.dir {small}" in message, message
        assert "is free there" in message and "for 3 image write(s)" in message, message
        assert "Traceback" not in run.stdout + run.stderr
        assert sorted(p.name for p in small.iterdir()) == []  # no archive, no partial file, no spooled blob
        for image in IMAGES:  # the registry destination of the same task went ahead (each destination fails alone)
            inspect = subprocess.run(
                [
                    "skopeo",
                    "inspect",
                    "--raw",
                    "--tls-verify=false",
                    f"docker://{testbed.open_registry_host}/{ns}/{image}",
                ],
                capture_output=True,
                check=False,
            )
            assert (inspect.returncode == 0) is (not check), image
    fits = ansible.module(
        "ngc_image_mirror", dict(args, images=IMAGES[2:]), api_key=testbed.api_key
    )  # the small image alone fits
    assert fits.rc == 0, fits.stdout
    assert fits.result["space"][0]["enough"] is True and fits.result["space"][0]["needed"] == alone
    assert len(list(small.iterdir())) == 1
    assert skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{testbed.open_registry_host}/{ns}/{IMAGES[2]}")


def test_an_archive_written_beside_a_registry_holds_only_its_platform(
    ansible: Any, testbed: Any, tmp_path: Path
) -> None:
    """The registry reads every platform's blobs of a multi-platform image; the docker archive takes only its own."""
    image = IMAGES[2]  # nvidia/cuda: amd64 and arm64
    alone = ansible.module(
        "ngc_image_mirror",
        mirror_args(
            testbed,
            tmp_path,
            [image],
            archive={"dir": str(tmp_path / "alone")},
            facts_file=str(tmp_path / "alone.fact"),
        ),
        api_key=testbed.api_key,
    )
    beside = ansible.module(
        "ngc_image_mirror",
        mirror_args(
            testbed,
            tmp_path,
            [image],
            archive={"dir": str(tmp_path / "beside")},
            facts_file=str(tmp_path / "beside.fact"),
            registry={"url": testbed.open_registry_url, "prefix": f"beside{tmp_path.name[-8:]}"},
        ),
        api_key=testbed.api_key,
    )
    assert alone.rc == 0 and beside.rc == 0, alone.stdout + beside.stdout
    name = "nvidia/cuda/12.2.0-base-ubuntu22.04.tar"

    def members(path: Path) -> dict[str, bytes]:  # by name: blobs land in the order they arrive
        with tarfile.open(path) as tar:
            return {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}  # type: ignore[union-attr]

    assert members(tmp_path / "beside" / name) == members(tmp_path / "alone" / name)
    assert (tmp_path / "beside" / name).stat().st_size == (tmp_path / "alone" / name).stat().st_size
