# Copyright (c) airgap.ngc contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""ngc_catalog_info when the catalog lists tags the registry cannot resolve: one bad tag is one entry of
``unresolved``, every good tag is still listed, and the run fails only with fail_on_unresolved (or when the
registry itself refuses the credentials or cannot be reached). Also what the listing asks the registry: no image
config when the catalog or an index names the platform, and each config at most once. skopeo is the judge of
what the registry holds."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.testbed.seed import (
    UNRESOLVED,
    UNRESOLVED_ALIAS,
    UNRESOLVED_BROKEN_INDEX,
    UNRESOLVED_MISSING_TAG,
    seed_unresolved,
)

NGC_USERNAME = "$oauthtoken"
REPOSITORY = UNRESOLVED.repository
GOOD = f"{REPOSITORY}:1.0-good"
ALIAS = f"{REPOSITORY}:{UNRESOLVED_ALIAS[0]}"  # 1.0-good's manifest under another tag
BROKEN = f"{REPOSITORY}:{UNRESOLVED_BROKEN_INDEX[0]}"
MISSING = f"{REPOSITORY}:{UNRESOLVED_MISSING_TAG}"


@pytest.fixture(scope="module")
def unresolved_repo(testbed: Any) -> dict[str, Any]:
    """UNRESOLVED pushed into the token registry (its broken index's child deleted); its catalog record."""
    cache = Path(testbed.workdir) / "seed-cache.json"
    return seed_unresolved(
        testbed.source_registry_url,
        testbed.seed,
        testbed.scale,
        NGC_USERNAME,
        testbed.api_key,
        cache if cache.exists() else None,
    )


@pytest.fixture
def listed(faults: Any, unresolved_repo: dict[str, Any]) -> dict[str, Any]:
    """The NGC stand-in lists UNRESOLVED for this test only (the faults fixture resets it after)."""
    faults.ngc(extra_repositories=[unresolved_repo])
    return {tag["tag"]: tag for tag in unresolved_repo["tags"]}


def args(testbed: Any, **extra: Any) -> dict[str, Any]:
    values = {
        "api_url": testbed.ngc_api_url,
        "registry_url": testbed.source_registry_url,
        "images": [UNRESOLVED.name],
        "strict_name_match": True,
    }
    values.update(extra)
    return values


def skopeo_raw(testbed: Any, authfile: Any, reference: str) -> subprocess.CompletedProcess:
    return subprocess.run(
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
        check=False,
    )


def by_reference(items: list[dict[str, Any]], host: str) -> dict[str, dict[str, Any]]:
    return {item["reference"][len(host) + 1 :]: item for item in items}


def test_the_test_bed_really_lacks_the_tag_and_the_child(
    testbed: Any, testbed_authfile: Any, listed: dict[str, Any]
) -> None:
    assert skopeo_raw(testbed, testbed_authfile, GOOD).returncode == 0
    assert skopeo_raw(testbed, testbed_authfile, BROKEN).returncode == 0  # the index itself is there
    assert skopeo_raw(testbed, testbed_authfile, MISSING).returncode != 0
    (child,) = listed[UNRESOLVED_BROKEN_INDEX[0]]["missing_manifests"]
    assert skopeo_raw(testbed, testbed_authfile, f"{REPOSITORY}@{child}").returncode != 0


def test_one_bad_tag_is_one_bad_entry(
    ansible: Any, testbed: Any, testbed_authfile: Any, listed: dict[str, Any]
) -> None:
    run = ansible.module("ngc_catalog_info", args(testbed), api_key=testbed.api_key)
    assert run.rc == 0, run.stdout + run.stderr
    host = testbed.source_registry_host
    images = by_reference(run.result["images"], host)
    assert list(images) == [ALIAS, GOOD]
    raw = skopeo_raw(testbed, testbed_authfile, GOOD).stdout
    assert images[GOOD]["digest"] == "sha256:" + hashlib.sha256(raw).hexdigest() == listed["1.0-good"]["digest"]
    assert images[ALIAS]["digest"] == images[GOOD]["digest"]
    assert images[GOOD]["platforms"] == images[ALIAS]["platforms"] == ["linux/amd64"]
    unresolved = run.result["unresolved"]
    assert [(u["image"], u["tag"], u["reference"]) for u in unresolved] == [
        (REPOSITORY, UNRESOLVED_BROKEN_INDEX[0], f"{host}/{BROKEN}"),
        (REPOSITORY, UNRESOLVED_MISSING_TAG, f"{host}/{MISSING}"),
    ]
    reasons = {u["tag"]: u["reason"] for u in unresolved}
    (child,) = listed[UNRESOLVED_BROKEN_INDEX[0]]["missing_manifests"]
    assert (
        child in reasons[UNRESOLVED_BROKEN_INDEX[0]]
        and UNRESOLVED_BROKEN_INDEX[1] in reasons[UNRESOLVED_BROKEN_INDEX[0]]
    )
    assert "no such tag" in reasons[UNRESOLVED_MISSING_TAG]
    assert all("\n" not in reason and len(reason) <= 200 for reason in reasons.values())
    assert testbed.api_key not in run.stdout + run.stderr


def test_the_rest_of_the_catalog_is_listed_as_before(ansible: Any, testbed: Any, listed: dict[str, Any]) -> None:
    run = ansible.module(
        "ngc_catalog_info", args(testbed, images=None, strict_name_match=False), api_key=testbed.api_key
    )
    assert run.rc == 0, run.stdout + run.stderr
    seeded = {
        f"{r['repository']}:{t['tag']}": t["digest"] for r in testbed.seed_document()["repositories"] for t in r["tags"]
    }
    images = by_reference(run.result["images"], testbed.source_registry_host)
    good = listed["1.0-good"]["digest"]
    assert {key: image["digest"] for key, image in images.items()} == {**seeded, GOOD: good, ALIAS: good}
    assert [u["tag"] for u in run.result["unresolved"]] == [UNRESOLVED_BROKEN_INDEX[0], UNRESOLVED_MISSING_TAG]


def test_fail_on_unresolved_fails_and_still_returns_both_lists(
    ansible: Any, testbed: Any, listed: dict[str, Any]
) -> None:
    run = ansible.module("ngc_catalog_info", args(testbed, fail_on_unresolved=True), api_key=testbed.api_key)
    assert run.rc != 0 and "| FAILED! =>" in run.stdout
    msg = run.result["msg"]
    assert msg.startswith("2 selected tags could not be resolved in the registry (fail_on_unresolved is set): ")
    assert BROKEN in msg and MISSING in msg and "\n" not in msg
    assert [i["tag"] for i in run.result["images"]] == [UNRESOLVED_ALIAS[0], "1.0-good"]
    assert len(run.result["unresolved"]) == 2
    assert testbed.api_key not in run.stdout + run.stderr


def test_fail_on_unresolved_needs_the_registry_lookups(ansible: Any, testbed: Any) -> None:
    run = ansible.module(
        "ngc_catalog_info", args(testbed, fail_on_unresolved=True, include_digests=False), api_key=testbed.api_key
    )
    assert run.rc != 0
    assert run.result["msg"].startswith("invalid fail_on_unresolved True: ") and "include_digests" in run.result["msg"]


def test_an_answer_that_stays_an_error_after_the_retries_is_unresolved(
    ansible: Any, testbed: Any, faults: Any, listed: dict[str, Any]
) -> None:
    faults.registry(status=503, count=None, retry_after=0, path_prefix=f"/v2/{REPOSITORY}/manifests/1.0-good")
    run = ansible.module(
        "ngc_catalog_info",
        args(testbed, registry_url=testbed.source_proxy_url, images=[UNRESOLVED.name, "cuda"], retries=1),
        api_key=testbed.api_key,
    )
    assert run.rc == 0, run.stdout + run.stderr
    assert {(i["name"], i["tag"]) for i in run.result["images"]} == {(REPOSITORY, UNRESOLVED_ALIAS[0])} | {
        ("nvidia/cuda", t["tag"])
        for r in testbed.seed_document()["repositories"]
        if r["repository"] == "nvidia/cuda"
        for t in r["tags"]
    }
    reasons = {u["tag"]: u["reason"] for u in run.result["unresolved"]}
    assert set(reasons) == {"1.0-good", UNRESOLVED_BROKEN_INDEX[0], UNRESOLVED_MISSING_TAG}
    assert reasons["1.0-good"].startswith(f"503 from {testbed.source_proxy_host} for manifest {GOOD} after 2 attempts")
    assert faults.stats("registry")["paths"][f"/v2/{REPOSITORY}/manifests/1.0-good"] == 2


def test_nothing_resolved_but_the_registry_answers_is_not_an_error(
    ansible: Any, testbed: Any, faults: Any, listed: dict[str, Any]
) -> None:
    faults.registry(status=503, count=None, retry_after=0, path_prefix=f"/v2/{REPOSITORY}/manifests/1.0-")
    run = ansible.module(
        "ngc_catalog_info", args(testbed, registry_url=testbed.source_proxy_url, retries=0), api_key=testbed.api_key
    )
    assert run.rc == 0, run.stdout + run.stderr
    assert run.result["images"] == [] and len(run.result["unresolved"]) == 4


def test_refused_registry_credentials_still_fail_the_run(ansible: Any, testbed: Any, listed: dict[str, Any]) -> None:
    run = ansible.module(
        "ngc_catalog_info",
        args(testbed, images=[UNRESOLVED.name, "cuda"], username="not-the-user"),
        api_key=testbed.api_key,
    )
    assert run.rc != 0 and "| FAILED! =>" in run.stdout
    msg = run.result["msg"]
    assert "401" in msg and "\n" not in msg and "Traceback" not in msg
    assert "unresolved" not in run.result
    assert testbed.api_key not in run.stdout + run.stderr


def test_a_registry_that_cannot_be_reached_fails_the_run(ansible: Any, testbed: Any, listed: dict[str, Any]) -> None:
    run = ansible.module(
        "ngc_catalog_info", args(testbed, registry_url="http://127.0.0.1:9", retries=0), api_key=testbed.api_key
    )
    assert run.rc != 0
    assert run.result["msg"].startswith("cannot reach 127.0.0.1:9")


# -- what the listing asks the registry ----------------------------------------------------------------------------------
def answered(stats: dict[str, Any], part: str) -> dict[str, int]:
    """How often each path with part in it was answered 200 (401 challenges before a token are not counted)."""
    counts: dict[str, int] = {}
    for request in stats["requests"]:
        if part in request["path"] and request["status"] == 200:
            counts[request["path"]] = counts.get(request["path"], 0) + 1
    return counts


def test_the_listing_reads_no_config_when_the_catalog_or_an_index_names_the_platform(
    ansible: Any, testbed: Any, faults: Any
) -> None:
    run = ansible.module(
        "ngc_catalog_info",
        {"api_url": testbed.ngc_api_url, "registry_url": testbed.source_proxy_url, "images": ["pytorch", "cuda"]},
        api_key=testbed.api_key,
    )
    assert run.rc == 0, run.stdout + run.stderr
    seeded = {f"{r['repository']}:{t['tag']}": t for r in testbed.seed_document()["repositories"] for t in r["tags"]}
    images = by_reference(run.result["images"], testbed.source_proxy_host)
    assert {key: image["platforms"] for key, image in images.items()} == {
        key: tag["platforms"] for key, tag in seeded.items() if key.startswith(("nvidia/pytorch:", "nvidia/cuda:"))
    }
    stats = faults.stats("registry")
    assert answered(stats, "/blobs/") == {}
    children = sum(len(tag["manifests"]) for key, tag in seeded.items() if key in images and len(tag["manifests"]) > 1)
    assert sum(answered(stats, "/manifests/").values()) == len(images) + children  # one GET per tag and per index child


def test_without_the_catalog_each_config_is_read_once(ansible: Any, testbed: Any, faults: Any) -> None:
    run = ansible.module(
        "ngc_catalog_info",
        {"source": "registry", "registry_url": testbed.source_proxy_url, "images": ["pytorch"]},
        api_key=testbed.api_key,
    )
    assert run.rc == 0, run.stdout + run.stderr
    seeded = {f"{r['repository']}:{t['tag']}": t for r in testbed.seed_document()["repositories"] for t in r["tags"]}
    images = by_reference(run.result["images"], testbed.source_proxy_host)
    assert {key: image["platforms"] for key, image in images.items()} == {
        key: tag["platforms"] for key, tag in seeded.items() if key.startswith("nvidia/pytorch:")
    }
    configs = {digest for key in images for digest in seeded[key]["config_digests"]}
    gets = answered(faults.stats("registry"), "/blobs/")
    assert {path.rsplit("/", 1)[1] for path in gets} == configs
    assert set(gets.values()) == {1}


def test_tags_sharing_a_config_read_it_once_and_a_registry_listing_reports_unresolved_too(
    ansible: Any, testbed: Any, faults: Any, listed: dict[str, Any]
) -> None:
    run = ansible.module(
        "ngc_catalog_info",
        {
            "source": "registry",
            "registry_url": testbed.source_proxy_url,
            "images": [REPOSITORY],
            "strict_name_match": True,
        },
        api_key=testbed.api_key,
    )
    assert run.rc == 0, run.stdout + run.stderr
    assert [(i["tag"], i["platforms"]) for i in run.result["images"]] == [
        (UNRESOLVED_ALIAS[0], ["linux/amd64"]),
        ("1.0-good", ["linux/amd64"]),
    ]
    assert [u["tag"] for u in run.result["unresolved"]] == [
        UNRESOLVED_BROKEN_INDEX[0]
    ]  # the registry never had 1.0-missing
    (config,) = listed["1.0-good"]["config_digests"]
    assert answered(faults.stats("registry"), "/blobs/") == {f"/v2/{REPOSITORY}/blobs/{config}": 1}
