# Copyright (c) airgap.ngc contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""ngc_catalog_info against the test bed's NGC stand-in and nvcr.io-like registry; skopeo is the judge."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]


def base_args(testbed: Any, **extra: Any) -> dict[str, Any]:
    args = {"api_url": testbed.ngc_api_url, "registry_url": testbed.source_registry_url}
    args.update(extra)
    return args


def seeded_tags(testbed: Any) -> dict[str, dict[str, Any]]:
    """reference path:tag -> the seeder's record of it."""
    found = {}
    for repo in testbed.seed_document()["repositories"]:
        for tag in repo.get("tags") or []:
            found[f"{repo['repository']}:{tag['tag']}"] = tag
    return found


def skopeo_raw_digest(testbed: Any, authfile: Any, reference: str) -> str:
    raw = subprocess.run(
        [
            "skopeo",
            "inspect",
            "--raw",
            "--tls-verify=false",
            "--authfile",
            str(authfile),
            f"docker://{testbed.source_registry_host}/{reference}",
        ],
        capture_output=True,
        check=True,
    ).stdout
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def test_lists_every_seeded_tag_with_digests(ansible: Any, testbed: Any, testbed_authfile: Any) -> None:
    run = ansible.module("ngc_catalog_info", base_args(testbed), api_key=testbed.api_key)
    assert run.rc == 0, run.stdout + run.stderr
    images = run.result["images"]
    seeded = seeded_tags(testbed)
    listed = {f"{i['name']}:{i['tag']}": i for i in images}
    assert set(listed) == set(seeded)
    for key, image in listed.items():
        assert image["digest"] == seeded[key]["digest"], key
        assert image["reference"] == f"{testbed.source_registry_host}/{key}"
    # The judge: skopeo reads the same digest from the registry.
    assert listed["nvidia/pytorch:24.01-py3"]["digest"] == skopeo_raw_digest(
        testbed, testbed_authfile, "nvidia/pytorch:24.01-py3"
    )
    assert run.result["changed"] is False


def test_sorted_by_name_then_version(ansible: Any, testbed: Any) -> None:
    run = ansible.module(
        "ngc_catalog_info",
        base_args(testbed, images=["nvidia/cuda"], strict_name_match=True, include_digests=False),
        api_key=testbed.api_key,
    )
    assert [i["tag"] for i in run.result["images"]] == [
        "11.8.0-runtime-ubuntu20.04",
        "12.2.0-base-ubuntu22.04",
        "12.10.0-base-ubuntu22.04",
    ]


def test_team_image_is_listed(ansible: Any, testbed: Any) -> None:
    run = ansible.module("ngc_catalog_info", base_args(testbed, teams=["clara"]), api_key=testbed.api_key)
    names = {i["name"] for i in run.result["images"]}
    assert names == {"nvidia/clara/clara-parabricks"}
    assert all(i["digest"].startswith("sha256:") for i in run.result["images"])


def test_empty_selection_fails_unless_allowed(ansible: Any, testbed: Any) -> None:
    # A repository without tags, and a misspelt name: the selection picks nothing, which fails by default.
    run = ansible.module(
        "ngc_catalog_info",
        base_args(testbed, images=["empty-repo"], label="Nightly", tag_regex="^24"),
        api_key=testbed.api_key,
    )
    assert run.rc != 0 and "| FAILED! =>" in run.stdout, run.stdout
    assert run.result["msg"].startswith('Selection "Nightly" picked no image from the NGC catalog at ')
    assert 'images ["empty-repo"], tag_regex "^24":' in run.result["msg"] and "allow_empty" in run.result["msg"]
    assert run.result["images"] == []
    run = ansible.module(
        "ngc_catalog_info", base_args(testbed, images=["empty-repo"], allow_empty=True), api_key=testbed.api_key
    )
    assert run.rc == 0, run.stdout
    assert run.result["images"] == []


def test_multi_arch_platforms_listed(ansible: Any, testbed: Any, testbed_authfile: Any) -> None:
    run = ansible.module(
        "ngc_catalog_info", base_args(testbed, images=["cuda"], tag_regex="^12\\.2\\.0"), api_key=testbed.api_key
    )
    (image,) = run.result["images"]
    assert image["platforms"] == ["linux/amd64", "linux/arm64"]
    assert image["media_type"] in (
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
    )
    assert image["digest"] == skopeo_raw_digest(testbed, testbed_authfile, "nvidia/cuda:12.2.0-base-ubuntu22.04")


def test_filters_through_the_module(ansible: Any, testbed: Any) -> None:
    args = base_args(
        testbed, images=["tensorflow"], strict_name_match=True, py_version="py3", latest=1, include_digests=False
    )
    run = ansible.module("ngc_catalog_info", args, api_key=testbed.api_key)
    assert [(i["name"], i["tag"]) for i in run.result["images"]] == [("nvidia/tensorflow", "24.01-tf2-py3")]
    loose = ansible.module(
        "ngc_catalog_info", base_args(testbed, images=["tensorflow"], include_digests=False), api_key=testbed.api_key
    )
    assert {i["name"] for i in loose.result["images"]} == {"nvidia/tensorflow", "nvidia/l4t-tensorflow"}
    dotted = ansible.module(
        "ngc_catalog_info",
        base_args(testbed, images=["cuda"], min_version="12.2.0", include_digests=False),
        api_key=testbed.api_key,
    )
    assert [i["tag"] for i in dotted.result["images"]] == ["12.2.0-base-ubuntu22.04", "12.10.0-base-ubuntu22.04"]


def test_descriptions_on_request(ansible: Any, testbed: Any) -> None:
    run = ansible.module(
        "ngc_catalog_info",
        base_args(testbed, images=["pytorch"], latest=1, include_descriptions=True, include_digests=False),
        api_key=testbed.api_key,
    )
    assert run.result["images"][0]["description"].startswith("# PyTorch")


def test_check_mode_runs_fully(ansible: Any, testbed: Any) -> None:
    run = ansible.module(
        "ngc_catalog_info", base_args(testbed, images=["pytorch"], latest=2), api_key=testbed.api_key, check=True
    )
    assert run.rc == 0
    assert len(run.result["images"]) == 2
    assert all(i["digest"] for i in run.result["images"])


def test_source_registry_lists_the_registry_catalog(ansible: Any, testbed: Any) -> None:
    run = ansible.module(
        "ngc_catalog_info",
        {"source": "registry", "registry_url": testbed.source_registry_url, "images": ["clara"]},
        api_key=testbed.api_key,
    )
    assert run.rc == 0, run.stdout
    assert {(i["name"], i["tag"]) for i in run.result["images"]} == {
        ("nvidia/clara/clara-parabricks", t["tag"]) for t in _repo(testbed, "nvidia/clara/clara-parabricks")["tags"]
    }


def _repo(testbed: Any, path: str) -> dict[str, Any]:
    return next(r for r in testbed.seed_document()["repositories"] if r["repository"] == path)


def _one_line_failure(run: Any) -> str:
    assert run.rc != 0
    result = run.result
    assert "| FAILED! =>" in run.stdout
    msg = result["msg"]
    assert "\n" not in msg and "Traceback" not in msg
    return msg


def test_wrong_key_is_a_clear_error(ansible: Any, testbed: Any) -> None:
    run = ansible.module("ngc_catalog_info", base_args(testbed), api_key="not-the-key")
    msg = _one_line_failure(run)
    assert "API key" in msg
    assert "not-the-key" not in run.stdout + run.stderr


def test_unknown_org_is_a_clear_error(ansible: Any, testbed: Any) -> None:
    run = ansible.module("ngc_catalog_info", base_args(testbed, org="no-such-org"), api_key=testbed.api_key)
    assert "no-such-org" in _one_line_failure(run)


@pytest.mark.parametrize("option", ["tag_regex", "tag_exclude_regex", "image_regex"])
def test_invalid_regex_is_a_clear_error(ansible: Any, testbed: Any, option: str) -> None:
    run = ansible.module("ngc_catalog_info", base_args(testbed, **{option: "py3("}), api_key=testbed.api_key)
    assert f"invalid {option}" in _one_line_failure(run)


def test_a_429_burst_from_ngc_is_retried(ansible: Any, testbed: Any, faults: Any) -> None:
    faults.ngc(status=429, count=3, retry_after=1, path_prefix="/v2/org/")
    run = ansible.module(
        "ngc_catalog_info",
        base_args(testbed, images=["pytorch"], include_digests=False, retries=5),
        api_key=testbed.api_key,
    )
    assert run.rc == 0, run.stdout
    assert run.result["images"]
    stats = faults.stats("ngc")
    assert stats["faults_served"] == 3
    assert stats["statuses"].get("429") == 3


def test_a_429_burst_from_the_registry_is_retried(ansible: Any, testbed: Any, faults: Any) -> None:
    faults.registry(status=429, count=2, retry_after=1, path_prefix="/v2/nvidia/pytorch/manifests/")
    args = {
        "api_url": testbed.ngc_api_url,
        "registry_url": testbed.source_proxy_url,
        "images": ["pytorch"],
        "latest": 1,
    }
    run = ansible.module("ngc_catalog_info", args, api_key=testbed.api_key)
    assert run.rc == 0, run.stdout
    assert run.result["images"][0]["digest"] == seeded_tags(testbed)["nvidia/pytorch:24.02-py3"]["digest"]
    assert faults.stats("registry")["faults_served"] == 2


def test_key_never_in_output_at_vvvv(ansible: Any, testbed: Any) -> None:
    run = ansible.module(
        "ngc_catalog_info", base_args(testbed, images=["pytorch"], latest=1), api_key=testbed.api_key, verbosity=4
    )
    assert run.rc == 0
    assert testbed.api_key not in run.stdout + run.stderr


def test_catalog_playbook_prints_a_table(ansible: Any, testbed: Any) -> None:
    env = {"NGC_API_KEY": testbed.api_key, "ANSIBLE_STDOUT_CALLBACK": "ansible.builtin.default"}
    run = ansible.playbook(
        REPO / "playbooks" / "catalog.yml",
        {
            "catalog_api_url": testbed.ngc_api_url,
            "catalog_registry_url": testbed.source_registry_url,
            "catalog_images": ["pytorch"],
            "catalog_latest": 2,
        },
        env=env,
    )
    assert run.rc == 0, run.stdout + run.stderr
    assert "nvidia/pytorch" in run.stdout and "24.02-py3" in run.stdout and "23.12-py3" not in run.stdout
    assert "2 tag(s) of 1 image(s)" in run.stdout
