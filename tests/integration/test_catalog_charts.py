# Copyright (c) airgap.ngc contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""ngc_catalog_info lists the test bed's GPU-Operator-shaped chart from its NGC-like Helm repository, with every image
the chart deploys. Judges: the chart seeder's record (what it pushed, with the digests the registries took), Helm's own
engine (helm_python reads the index with Basic auth and loads the chart), skopeo (the digests in the registries)."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path
from typing import Any

import pytest
import requests

helm_python = pytest.importorskip("helm_python")


def chart_args(testbed: Any, **extra: Any) -> dict[str, Any]:
    args = {
        "api_url": testbed.ngc_api_url,
        "registry_url": testbed.source_registry_url,
        "helm_url": testbed.helm_url,
        "upstream_registries": {"registry.k8s.io": {"url": testbed.k8s_registry_url}},
    }
    args.update(extra)
    return args


def failure(run: Any, testbed: Any) -> str:
    assert run.rc != 0, run.stdout
    msg = run.result["msg"]
    assert "\n" not in msg and "Traceback" not in msg and "Module failed" not in msg
    assert testbed.api_key not in run.stdout + run.stderr
    return msg


def listed(chart: dict[str, Any]) -> dict[str, str]:
    return {image["reference"]: image["digest"] for image in chart["images"]}


def registry_digest(testbed: Any, authfile: Path, reference: str) -> str:
    """The digest of reference's manifest as skopeo reads it from the bed's registry standing for its host."""
    host, _sep, rest = reference.partition("/")
    where = {"nvcr.io": testbed.source_registry_host, "registry.k8s.io": testbed.k8s_registry_host}[host]
    raw = subprocess.run(
        ["skopeo", "inspect", "--raw", "--tls-verify=false", "--authfile", str(authfile), f"docker://{where}/{rest}"],
        capture_output=True,
        check=True,
    ).stdout
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def test_lists_the_chart_with_every_image_and_the_registries_digests(
    ansible: Any, testbed: Any, helm_charts: Any, testbed_authfile: Path, tmp_path: Path
) -> None:
    newest = helm_charts.versions[-1]
    systems = ["ubuntu22.04", "rhel9.6"]
    run = ansible.module(
        "ngc_catalog_info",
        chart_args(testbed, charts=[f"{helm_charts.name}:{newest}"], driver_os=systems),
        api_key=testbed.api_key,
    )
    assert run.rc == 0, run.stdout
    assert run.result["images"] == [] and run.result["changed"] is False
    [chart] = run.result["charts"]
    archive = helm_charts.archive(newest)
    assert (chart["name"], chart["version"], chart["app_version"]) == (helm_charts.name, newest, archive["app_version"])
    assert (chart["digest"], chart["size"], chart["url"]) == (archive["digest"], archive["size"], archive["url"])
    expected = helm_charts.images(newest, systems)
    assert listed(chart) == expected
    assert {
        "nvcr.io/nvidia/driver:595.91.07-ubuntu22.04",
        "nvcr.io/nvidia/driver:595.91.07-rhel9.6",
        "registry.k8s.io/nfd/node-feature-discovery:v0.17.2",
    } <= set(expected)
    froms = {image["reference"]: image["from"] for image in chart["images"]}
    assert froms["registry.k8s.io/nfd/node-feature-discovery:v0.17.2"] == "node-feature-discovery.image"
    assert froms["nvcr.io/nvidia/gpu-operator:v26.7.0"] == "operator"  # no version in values: the appVersion
    for reference, digest in listed(chart).items():
        assert registry_digest(testbed, testbed_authfile, reference) == digest, reference
    # Helm's engine reads the same index (with the key) and loads the archive the listing names.
    index = helm_python.repo_index(f"{testbed.helm_url}/nvidia", username="$oauthtoken", password=testbed.api_key)
    [entry] = [e for e in index["entries"]["gpu-operator"] if e["version"] == newest]
    assert "sha256:" + entry["digest"] == chart["digest"]
    data = requests.get(chart["url"], auth=("$oauthtoken", testbed.api_key), timeout=30).content
    assert "sha256:" + hashlib.sha256(data).hexdigest() == chart["digest"] and len(data) == chart["size"]
    (tmp_path / "chart.tgz").write_bytes(data)
    loaded = helm_python.Chart.load(tmp_path / "chart.tgz")
    assert (loaded.name, loaded.version, loaded.metadata["appVersion"]) == (
        "gpu-operator",
        newest,
        chart["app_version"],
    )


def test_every_version_with_one_os_and_the_newer_ones_new_images(ansible: Any, testbed: Any, helm_charts: Any) -> None:
    run = ansible.module(
        "ngc_catalog_info",
        chart_args(testbed, charts=["gpu-operator"], strict_name_match=True, latest=2, driver_os=["ubuntu24.04"]),
        api_key=testbed.api_key,
        check=True,
    )
    assert run.rc == 0, run.stdout
    charts = run.result["charts"]
    assert [c["version"] for c in charts] == helm_charts.versions
    for chart in charts:
        assert listed(chart) == helm_charts.images(chart["version"], ["ubuntu24.04"])
    older, newer = (set(listed(chart)) for chart in charts)
    assert {ref.rsplit(":", 1)[0] for ref in newer - older} == {  # the appVersion defaults, and two new images
        "nvcr.io/nvidia/gpu-operator",
        "nvcr.io/nvidia/cloud-native/gpu-operator-validator",
        "nvcr.io/nvidia/driver",
        "nvcr.io/nvidia/k8s-device-plugin",
    }


def test_values_decide_which_components_are_listed(ansible: Any, testbed: Any, helm_charts: Any) -> None:
    version = helm_charts.versions[0]
    run = ansible.module(
        "ngc_catalog_info",
        chart_args(
            testbed,
            charts=[f"nvidia/gpu-operator:{version}"],
            driver_os=["ubuntu22.04"],
            values={"gds": {"enabled": True}, "nfd": {"enabled": False}},
        ),
        api_key=testbed.api_key,
    )
    assert run.rc == 0, run.stdout
    expected = helm_charts.images(version, ["ubuntu22.04"], enabled=("gds",), disabled=("node-feature-discovery",))
    assert listed(run.result["charts"][0]) == expected
    assert "nvcr.io/nvidia/cloud-native/nvidia-fs:2.20.5-ubuntu22.04" in expected
    assert not any(ref.startswith("registry.k8s.io/") for ref in expected)


def test_without_the_key_the_private_org_answers_401(ansible: Any, testbed: Any, helm_charts: Any) -> None:
    run = ansible.module("ngc_catalog_info", chart_args(testbed, charts=[helm_charts.name], driver_os=["ubuntu22.04"]))
    msg = failure(run, testbed)
    host = testbed.helm_url.split("://", 1)[1].split("/", 1)[0]
    assert msg.startswith(
        f"401 from {host} for the Helm repository index of nvidia: the Helm repository of nvidia is not "
        "public: set api_key"
    )
    run = ansible.module(
        "ngc_catalog_info",
        chart_args(testbed, charts=[helm_charts.name], driver_os=["ubuntu22.04"]),
        api_key="not-the-key",
    )
    assert "check that the NGC API key may read the charts of nvidia" in failure(run, testbed)


@pytest.mark.parametrize(
    "extra,fragments",
    [
        (
            {"charts": ["nvidia/gpu-operator:v9.9.9"]},
            ["chart nvidia/gpu-operator has no version 'v9.9.9'", "(it has v26.7.0, v26.3.0)"],
        ),
        (
            {"charts": ["nvidia/gpu-operater"], "strict_name_match": True},
            ["picked no chart from the Helm repository", 'charts ["nvidia/gpu-operater"]'],
        ),
        (
            {"charts": ["nvidia/gpu-operator:v26.7.0"], "driver_os": ["ubuntu22.04", "rhel8.10"]},
            [
                "chart nvidia/gpu-operator v26.7.0: the image nvcr.io/nvidia/driver:595.91.07-rhel8.10 (values driver) is missing upstream"
            ],
        ),
        (
            {"charts": ["nvidia/gpu-operator:v26.7.0"], "values": {"driver": {"version": 595.91}}},
            ["chart nvidia/gpu-operator v26.7.0: values.driver.version is a number 595.91: expected a string"],
        ),
        (
            {"charts": ["nvidia/gpu-operator:v26.7.0"], "values": {"nfd": "off"}},
            ["chart nvidia/gpu-operator v26.7.0: values.nfd is a string 'off': expected a mapping"],
        ),
        (
            {"charts": ["nvidia/gpu-operator:v26.7.0"], "driver_os": []},
            [
                "chart nvidia/gpu-operator v26.7.0: values.driver (nvcr.io/nvidia/driver:595.91.07) is tagged with the OS",
                "give driver_os",
            ],
        ),
        (
            {"charts": ["nvidia/gpu-operator:v26.7.0"], "values": {"gdrcopy": {"enabled": True, "version": "v9.9"}}},
            ["the image nvcr.io/nvidia/cloud-native/gdrdrv:v9.9-ubuntu22.04 (values gdrcopy) is missing upstream"],
        ),
    ],
)
def test_bad_selections_name_the_chart_and_the_value(
    ansible: Any, testbed: Any, extra: dict[str, Any], fragments: list[str]
) -> None:
    args = chart_args(testbed, driver_os=["ubuntu22.04"])
    args.update(extra)
    msg = failure(ansible.module("ngc_catalog_info", args, api_key=testbed.api_key), testbed)
    for fragment in fragments:
        assert fragment in msg, msg
