# Copyright (c) airgap.ngc contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Retention: keep the newest two tags, mirror to a registry, archives, a bundle and an enroot cache; publish a newer
tag; run again with prune: exactly the oldest is gone from every destination, the wanted ones keep their digests
(skopeo as judge), a tag re-pushed by someone else meanwhile is left alone, and check mode lists the same removals
and removes nothing."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_image_mirror import raw_digest
from tests.testbed._push import Pusher

OLD, MID, NEW = "nvidia/pytorch:24.01-py3", "nvidia/pytorch:24.02-py3", "nvidia/pytorch:24.99-py3"
OTHER = "nvidia/cuda:12.2.0-base-ubuntu22.04"


def skopeo(*args: str, check: bool = True) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["skopeo", *args], capture_output=True, check=check)


@pytest.fixture(scope="module")
def world(
    ansible: Any, testbed: Any, testbed_authfile: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    base = tmp_path_factory.mktemp("prune")
    ns = f"prune{base.name[-6:]}"
    dests = {
        "registry": {"url": testbed.open_registry_url, "prefix": ns},
        "archive": {"dir": str(base / "archives")},
        "bundle": {"dir": str(base / "bundle")},
        "enroot": {"dir": str(base / "sqsh")},
    }
    common = dict(dests, registry_url=testbed.source_registry_url, facts_file=str(base / "mirror.fact"), keep=2)
    first = ansible.module("ngc_image_mirror", dict(common, images=[OLD, MID, OTHER]), api_key=testbed.api_key)
    assert first.rc == 0, first.stdout
    # NGC publishes a newer tag (here: 24.02's manifest under a new tag)
    pusher = Pusher(testbed.source_registry_url, "$oauthtoken", testbed.api_key)
    raw = skopeo(
        "inspect",
        "--raw",
        "--tls-verify=false",
        "--authfile",
        str(testbed_authfile),
        f"docker://{testbed.source_registry_host}/{MID}",
    ).stdout
    pusher.put_manifest("nvidia/pytorch", NEW.split(":")[1], json.loads(raw)["mediaType"], raw)
    # someone else re-pushes the mirrored cuda tag with other content
    skopeo(
        "copy",
        "--quiet",
        "--all",
        "--src-tls-verify=false",
        "--dest-tls-verify=false",
        "--authfile",
        str(testbed_authfile),
        f"docker://{testbed.source_registry_host}/{OLD}",
        f"docker://{testbed.open_registry_host}/{ns}/{OTHER}",
    )
    later = dict(common, images=[OLD, MID, NEW], prune=True)
    check = ansible.module("ngc_image_mirror", later, check=True, diff=True, api_key=testbed.api_key)
    bundle_before = (base / "bundle" / "index.json").read_text()
    files_before = sorted(str(p) for p in base.rglob("*") if p.is_file())
    second = ansible.module("ngc_image_mirror", later, api_key=testbed.api_key)
    third = ansible.module("ngc_image_mirror", later, api_key=testbed.api_key)
    return {
        "base": base,
        "ns": ns,
        "check": check,
        "second": second,
        "third": third,
        "bundle_before": bundle_before,
        "files_before": files_before,
    }


def removals(run: Any) -> set[tuple[str, str, str]]:
    return {(r["image"].split("/", 1)[1], r["kind"], r["action"]) for r in run.result["pruned"]}


def test_check_mode_lists_the_removals_and_removes_nothing(world: dict[str, Any]) -> None:
    check = world["check"]
    assert check.rc == 0, check.stdout
    assert check.result["changed"] is True
    found = removals(check)
    for kind in ("registry", "archive", "bundle", "enroot"):
        assert (OLD, kind, "would remove") in found, found
    assert (OTHER, "registry", "kept") in found  # re-pushed by someone else
    for kind in ("archive", "bundle", "enroot"):
        assert (OTHER, kind, "would remove") in found
    assert check.result["bytes_freed"] > 0
    assert "archives" in check.result["prune_diff"]["before"]
    assert "--- before: pruned" in check.stdout and "-archive: " in check.stdout  # what ansible's --diff shows


def test_prune_removes_exactly_the_unwanted_from_every_destination(
    world: dict[str, Any], testbed: Any, testbed_authfile: Path
) -> None:
    second, base, ns = world["second"], world["base"], world["ns"]
    assert second.rc == 0, second.stdout
    assert removals(second) == {
        (a, k, "removed" if act == "would remove" else act) for a, k, act in removals(world["check"])
    }
    # the registry: the oldest is gone, the wanted keep the source's digests, the re-pushed tag is untouched
    assert (
        skopeo(
            "inspect", "--raw", "--tls-verify=false", f"docker://{testbed.open_registry_host}/{ns}/{OLD}", check=False
        ).returncode
        != 0
    )
    for image in (MID, NEW):
        assert raw_digest(testbed.open_registry_host, f"{ns}/{image}") == raw_digest(
            testbed.source_registry_host, image, testbed_authfile
        )
    source_old = json.loads(Path(base / "mirror.fact").read_text())  # facts: no record of what was removed
    assert not any(OLD in key for key in source_old["images"]), source_old["images"].keys()
    assert (
        skopeo(
            "inspect", "--raw", "--tls-verify=false", f"docker://{testbed.open_registry_host}/{ns}/{OTHER}"
        ).returncode
        == 0
    )
    # archives and enroot files: the oldest and the unselected are gone, the wanted are there
    names = sorted(
        str(p.relative_to(base))
        for p in base.rglob("*")
        if p.is_file() and p.parent.name != "blobs" and "sha256" not in str(p)
    )
    assert (
        "archives/nvidia/pytorch/24.01-py3.tar" not in names
        and "archives/nvidia/cuda/12.2.0-base-ubuntu22.04.tar" not in names
    )
    assert "archives/nvidia/pytorch/24.02-py3.tar" in names and "archives/nvidia/pytorch/24.99-py3.tar" in names
    assert "sqsh/nvidia+pytorch+24.01-py3.sqsh" not in names and "sqsh/nvidia+pytorch+24.99-py3.sqsh" in names
    assert not (base / "archives" / "nvidia" / "cuda").exists()  # an emptied directory goes too
    # the bundle: the index names only the wanted images, and it still verifies
    index = json.loads((base / "bundle" / "index.json").read_text())
    refs = sorted(m["annotations"]["org.opencontainers.image.ref.name"].split("/", 1)[1] for m in index["manifests"])
    assert refs == [MID, NEW]


def test_the_bundle_still_verifies_and_unused_blobs_are_gone(ansible: Any, world: dict[str, Any]) -> None:
    base = world["base"]
    verify = ansible.module(
        "ngc_catalog_info", {"source": "bundle", "source_dir": str(base / "bundle"), "verify": True}
    )
    assert verify.rc == 0, verify.stdout
    assert verify.result["problems"] == []
    contents = json.loads((base / "bundle" / "contents.json").read_text())
    needed = {d for image in contents["images"].values() for d in image["blobs"]}
    held = {f"sha256:{p.name}" for p in (base / "bundle" / "blobs" / "sha256").iterdir()}
    assert held == needed  # every blob only the removed images needed is gone, every needed one is there


def test_a_second_prune_changes_nothing(world: dict[str, Any]) -> None:
    third = world["third"]
    assert third.rc == 0, third.stdout
    assert third.result["changed"] is False
    assert [r for r in third.result["pruned"] if r["action"] != "kept"] == []


def test_keep_must_be_a_positive_whole_number(ansible: Any, testbed: Any, tmp_path: Path) -> None:
    run = ansible.module(
        "ngc_image_mirror",
        {
            "registry_url": testbed.source_registry_url,
            "images": [OLD],
            "keep": 0,
            "facts_file": str(tmp_path / "f.fact"),
            "archive": {"dir": str(tmp_path / "a")},
        },
        api_key=testbed.api_key,
    )
    assert run.rc != 0 and "keep" in run.result["msg"] and "at least 1" in run.result["msg"]
    assert not (tmp_path / "a").exists()


@pytest.mark.engine
def test_prune_in_a_node_engine_spares_an_image_a_container_uses(ansible: Any, testbed: Any, tmp_path: Path) -> None:
    """Two images loaded into the engine; the next run selects neither: the one a container uses stays, the other goes."""
    if not testbed.docker_host:
        pytest.skip("this test bed was started without a Docker engine")
    env = dict(os.environ, DOCKER_HOST=testbed.docker_host)
    prefix = f"prune{os.getpid()}"
    images = [MID, OTHER]
    names = {image: f"{testbed.open_registry_host}/{prefix}/{image}" for image in images}

    def docker(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["docker", *args], env=env, capture_output=True, text=True, check=check)

    args = {
        "registry_url": testbed.source_registry_url,
        "images": images,
        "facts_file": str(tmp_path / "f.fact"),
        "registry": {"url": testbed.open_registry_url, "prefix": prefix},
        "docker": {"host": testbed.docker_host},
    }
    first = ansible.module("ngc_image_mirror", args, api_key=testbed.api_key)
    assert first.rc == 0, first.stdout
    container = f"uses-{prefix}"
    docker("create", "--name", container, names[MID], "true")
    try:
        later = dict(args, images=[OLD], prune=True)
        check = ansible.module("ngc_image_mirror", later, check=True, api_key=testbed.api_key)
        assert check.rc == 0, check.stdout
        engine = {r["image"].split("/", 1)[1]: r for r in check.result["pruned"] if r["kind"] == "docker"}
        assert engine[MID]["action"] == "kept" and container in engine[MID]["reason"]
        assert engine[OTHER]["action"] == "would remove"
        assert docker("image", "inspect", names[OTHER], check=False).returncode == 0  # check mode removed nothing
        run = ansible.module("ngc_image_mirror", later, api_key=testbed.api_key)
        assert run.rc == 0, run.stdout
        assert docker("image", "inspect", names[OTHER], check=False).returncode != 0
        assert docker("image", "inspect", names[MID], check=False).returncode == 0
    finally:
        docker("rm", "-f", container, check=False)
        for name in names.values():
            docker("rmi", "-f", name, check=False)
