# Copyright (c) airgap.ngc contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Faults at the defaults, and nothing left behind: storms of throttled or unavailable answers from the source are
ridden out (no ``retries`` set), every image arriving with the source's digests (judged by skopeo); a killed run's
temporary files and a failed run's empty directory do not stay."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path
from typing import Any

import pytest

TAGS = [
    "nvidia/pytorch:24.01-py3",
    "nvidia/pytorch:24.02-py3",
    "nvidia/cuda:12.2.0-base-ubuntu22.04",
    "nvidia/clara/clara-parabricks:4.2.0-1",
]


def source_digests(testbed: Any) -> dict[str, str]:
    return {
        f"{repo['repository']}:{tag['tag']}": tag["digest"]
        for repo in testbed.seed_document()["repositories"]
        for tag in repo.get("tags") or []
    }


@pytest.mark.parametrize("status,count", [(429, 30), (503, 8)])
def test_a_storm_at_the_defaults_costs_no_image(
    ansible: Any, testbed: Any, faults: Any, tmp_path: Path, status: int, count: int
) -> None:
    ns = f"storm{status}-{tmp_path.name[-12:]}".lower().replace("_", "-")
    faults.registry(status=status, count=count, retry_after=0, path_prefix="/v2/nvidia/")
    args = {
        "registry_url": testbed.source_proxy_url,
        "images": TAGS,
        "signatures": False,
        "registry": {"url": testbed.open_registry_url, "prefix": ns},
        "facts_file": str(tmp_path / "ngc_mirror.fact"),
    }
    run = ansible.module("ngc_image_mirror", args, api_key=testbed.api_key)
    assert run.rc == 0, run.stdout + run.stderr
    assert faults.stats("registry")["faults_served"] == count  # the storm happened, and all of it was answered
    assert [image["status"] for image in run.result["images"]] == ["copied"] * len(TAGS)
    expected = source_digests(testbed)
    for ref in TAGS:
        raw = subprocess.run(
            ["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{testbed.open_registry_host}/{ns}/{ref}"],
            capture_output=True,
            check=True,
        ).stdout
        assert "sha256:" + hashlib.sha256(raw).hexdigest() == expected[ref], ref


def test_the_next_run_removes_what_a_killed_run_left_beside_the_facts_file(
    ansible: Any, testbed: Any, tmp_path: Path
) -> None:
    """A kill while the upload sessions record was being replaced leaves its temporary file (a dead pid in its name)."""
    facts = tmp_path / "ngc_mirror.fact"
    dead = 4_000_000  # above pid_max: no process has it
    leftovers = [
        tmp_path / f"..ngc_mirror.fact.uploads.partial-{dead}.k3x9q2ab",
        tmp_path / f".ngc_mirror.fact.partial-{dead}",
    ]
    for path in leftovers:
        path.write_bytes(b"{}")
    args = {
        "registry_url": testbed.source_registry_url,
        "images": TAGS[2:3],
        "signatures": False,
        "archive": {"dir": str(tmp_path / "archives")},
        "facts_file": str(facts),
    }
    run = ansible.module("ngc_image_mirror", args, api_key=testbed.api_key)
    assert run.rc == 0, run.stdout + run.stderr
    assert [path.name for path in leftovers if path.exists()] == []


def test_a_run_whose_every_image_fails_leaves_no_empty_bundle_directory(
    ansible: Any, testbed: Any, tmp_path: Path
) -> None:
    bundle = tmp_path / "drop" / "ngc-2026-12"
    args = {
        "registry_url": testbed.source_registry_url,
        "images": ["nvidia/no-such-image:1.0"],
        "signatures": False,
        "bundle": {"dir": str(bundle)},
        "facts_file": str(tmp_path / "ngc_mirror.fact"),
    }
    run = ansible.module("ngc_image_mirror", args, api_key=testbed.api_key)
    assert run.rc != 0 and "no-such-image" in run.result["msg"], run.stdout
    assert not bundle.exists()
