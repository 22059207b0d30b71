# Copyright (c) airgap.ngc contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Verification before import: a bundle exported from the test bed, carried, damaged on the way (a changed byte, a lost
file, a file slipped in), checked at the scanning station with ngc_catalog_info, then imported: the damaged images are
named and refused, the others arrive. The damage and the verdicts are worked out from the seeder's record, and the
import is judged with skopeo."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.integration._carried import export_bundle, full, own_layer
from tests.integration.test_image_mirror import raw_digest, seeded

EXPORT = [
    "nvidia/pytorch:24.01-py3",
    "nvidia/cuda:12.2.0-base-ubuntu22.04",
    "nvidia/tensorflow:24.01-tf2-py3",
    "nvidia/clara/clara-parabricks:4.2.0-1",
]
CORRUPTED = "nvidia/clara/clara-parabricks:4.2.0-1"
LOST = "nvidia/tensorflow:24.01-tf2-py3"
EXTRA = "blobs/sha256/" + hashlib.sha256(b"slipped in on the way").hexdigest()


def blob(digest: str) -> str:
    return "blobs/sha256/" + digest.split(":", 1)[1]


@pytest.fixture(scope="module")
def exported(ansible: Any, testbed: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_bundle(ansible, testbed, EXPORT, tmp_path_factory.mktemp("verify-export"))


@pytest.fixture
def damaged(exported: Path, testbed: Any, tmp_path: Path) -> Path:
    """The bundle as it arrives: one image's own layer with a changed byte, another's own layer lost, a file added."""
    carried = tmp_path / "usb" / "bundle"
    shutil.copytree(exported, carried)
    victim = carried / own_layer(testbed, EXPORT, CORRUPTED)
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF
    victim.write_bytes(bytes(data))
    (carried / own_layer(testbed, EXPORT, LOST)).unlink()
    (carried / EXTRA).write_bytes(b"slipped in on the way")
    (carried / "blobs" / "sha256" / f".{'0' * 64}.partial-1").write_bytes(b"a writer's leftover is not a problem")
    return carried


@pytest.fixture
def ns(request: pytest.FixtureRequest) -> str:
    return f"verify{os.getpid()}-{request.node.name[5:20].replace('_', '-')}-{int(time.time() * 1000) % 100000}"


def test_a_sound_bundle_verifies(ansible: Any, exported: Path, testbed: Any) -> None:
    run = ansible.module(
        "ngc_catalog_info", {"source": "bundle", "source_dir": str(exported), "verify": True, "fail_on_problems": True}
    )
    assert run.rc == 0, run.stdout
    assert run.result["problems"] == []
    assert {i["reference"]: i["verified"] for i in run.result["images"]} == {full(testbed, ref): True for ref in EXPORT}
    assert run.result["changed"] is False


def test_damage_is_reported_by_path_with_the_images_it_breaks(ansible: Any, damaged: Path, testbed: Any) -> None:
    args = {"source": "bundle", "source_dir": str(damaged), "verify": True}
    run = ansible.module("ngc_catalog_info", args)
    assert run.rc == 0, run.stdout
    problems = {p["path"]: p for p in run.result["problems"]}
    assert {path: p["problem"] for path, p in problems.items()} == {
        own_layer(testbed, EXPORT, CORRUPTED): "corrupt",
        own_layer(testbed, EXPORT, LOST): "missing",
        EXTRA: "extra",
    }
    assert problems[own_layer(testbed, EXPORT, CORRUPTED)]["images"] == [full(testbed, CORRUPTED)]
    assert problems[own_layer(testbed, EXPORT, LOST)]["images"] == [full(testbed, LOST)]
    assert problems[EXTRA]["images"] == []
    assert all(p["detail"] and "\n" not in p["detail"] for p in problems.values())
    verdicts = {i["reference"]: i["verified"] for i in run.result["images"]}
    assert verdicts == {full(testbed, ref): ref not in (CORRUPTED, LOST) for ref in EXPORT}
    # The listing itself is unchanged: digests still come from the (intact) manifests.
    source = seeded(testbed)
    assert {i["reference"]: i["digest"] for i in run.result["images"]} == {
        full(testbed, ref): source[ref]["digest"] for ref in EXPORT
    }
    checked = ansible.module("ngc_catalog_info", args, check=True)  # it only reads: check mode gives the same verdict
    assert checked.rc == 0 and checked.result["problems"] == run.result["problems"]


def test_the_sizes_mode_misses_the_changed_byte_but_not_the_rest(ansible: Any, damaged: Path, testbed: Any) -> None:
    run = ansible.module(
        "ngc_catalog_info", {"source": "bundle", "source_dir": str(damaged), "verify": True, "verify_mode": "sizes"}
    )
    assert run.rc == 0, run.stdout
    assert {p["path"]: p["problem"] for p in run.result["problems"]} == {
        own_layer(testbed, EXPORT, LOST): "missing",
        EXTRA: "extra",
    }


def test_fail_on_problems_fails_with_a_short_message_and_still_reports(
    ansible: Any, damaged: Path, testbed: Any
) -> None:
    run = ansible.module(
        "ngc_catalog_info", {"source": "bundle", "source_dir": str(damaged), "verify": True, "fail_on_problems": True}
    )
    assert run.rc != 0
    result = run.result
    assert result["msg"].startswith(f"bundle {damaged} has 3 problems: "), result["msg"]
    assert own_layer(testbed, EXPORT, LOST) in result["msg"] and "\n" not in result["msg"] and len(result["msg"]) < 600
    assert len(result["problems"]) == 3 and len(result["images"]) == len(EXPORT)


def test_verify_needs_a_bundle(ansible: Any, testbed: Any) -> None:
    run = ansible.module(
        "ngc_catalog_info", {"source": "registry", "registry_url": testbed.open_registry_url, "verify": True}
    )
    assert run.rc != 0
    assert run.result["msg"].startswith("invalid verify True"), run.result["msg"]
    assert "source=bundle" in run.result["msg"]


def test_the_import_refuses_exactly_the_damaged_images(
    ansible: Any, damaged: Path, testbed: Any, tmp_path: Path, ns: str
) -> None:
    run = ansible.module(
        "ngc_image_mirror",
        {
            "source": "bundle",
            "source_dir": str(damaged),
            "facts_file": str(tmp_path / "far.fact"),
            "registry": {"url": testbed.open_registry_url, "prefix": ns},
        },
    )
    assert run.rc != 0
    status = {i["reference"]: i["status"] for i in run.result["images"]}
    assert status == {full(testbed, ref): "failed" if ref in (CORRUPTED, LOST) else "copied" for ref in EXPORT}
    source = seeded(testbed)
    for ref in EXPORT:
        if ref in (CORRUPTED, LOST):
            with pytest.raises(subprocess.CalledProcessError):  # nothing was tagged for it
                raw_digest(testbed.open_registry_host, f"{ns}/{ref}")
        else:
            assert raw_digest(testbed.open_registry_host, f"{ns}/{ref}") == source[ref]["digest"], ref


def test_a_delta_bundle_verifies_without_the_blobs_it_leaves_to_an_earlier_one(
    ansible: Any, testbed: Any, tmp_path: Path
) -> None:
    facts = str(tmp_path / "connected.fact")
    first, second = tmp_path / "first", tmp_path / "second"
    args = {"registry_url": testbed.source_registry_url, "facts_file": facts}
    assert (
        ansible.module(
            "ngc_image_mirror", dict(args, images=EXPORT[:1], bundle={"dir": str(first)}), api_key=testbed.api_key
        ).rc
        == 0
    )
    delta = ansible.module(
        "ngc_image_mirror",
        dict(args, images=EXPORT[:2], bundle={"dir": str(second), "since": [str(first)]}),
        api_key=testbed.api_key,
    )
    assert delta.rc == 0, delta.stdout
    contents = json.loads((second / "contents.json").read_text())
    left = [blob(d) for d in contents.get("expected") or {}]
    assert left and not [
        path for path in left if (second / path).exists()
    ]  # the test needs blobs left to the first bundle
    run = ansible.module(
        "ngc_catalog_info", {"source": "bundle", "source_dir": str(second), "verify": True, "fail_on_problems": True}
    )
    assert run.rc == 0, run.stdout
    assert run.result["problems"] == [] and {i["verified"] for i in run.result["images"]} == {True}
    carried = next(path for path in contents["files"] if path.startswith("blobs/"))
    (second / carried).unlink()  # a blob it does carry is still missed
    run = ansible.module("ngc_catalog_info", {"source": "bundle", "source_dir": str(second), "verify": True})
    assert [(p["path"], p["problem"]) for p in run.result["problems"]] == [(carried, "missing")]
