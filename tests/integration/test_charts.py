# Copyright (c) airgap.ngc contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Helm charts across the air gap, judged by Helm's own engine (``helm_python``, a test dependency only) and the test
bed's record of what it pushed (``helm_charts``): the GPU-Operator-shaped chart is exported into a bundle with every
image it deploys for the site's OSes, imported on the far side into a registry that never saw the source (as an OCI
chart) and a classic chart repository; Helm pulls it back from both, renders it with the values file the module wrote,
and every image of the rendered objects and of the ClusterPolicy (composed as the operator does, each OS suffix) is in
the far registry with the source's digest. A newer version's delta carries only its new images; prune removes a
deselected version and the images only it needed; bad input is named."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import http.server
import json
import os
import re
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

from tests.integration.test_image_mirror import raw_digest

helm_python = pytest.importorskip("helm_python")

OS_SUFFIXED = ("driver", "gds", "gdrcopy")
SYSTEMS = ["ubuntu22.04", "rhel9.6"]
OLD, NEW = "v26.3.0", "v26.7.0"
K8S = "registry.k8s.io"


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002  # pylint: disable=redefined-builtin
        pass


@contextlib.contextmanager
def serve(directory: Path) -> Iterator[str]:
    """``directory`` over HTTP (a classic chart repository, as a web server in front of it is)."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(directory)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def operands(node: Any, systems: list[str], top: bool = True) -> Iterator[str]:
    """The images the GPU Operator composes from a ClusterPolicy's spec: ``repository/image:version`` of each enabled
    component (nested ones too, such as the driver's manager), with ``-<os>`` for each node OS appended to the
    driver's, GDS's and GDRCopy's version unless it is a digest."""
    for key, value in (node or {}).items():
        if not isinstance(value, dict) or value.get("enabled") is False:
            continue
        if value.get("repository") and value.get("image"):
            version = str(value.get("version"))
            if version.startswith("sha256:"):
                yield f"{value['repository']}/{value['image']}@{version}"
            elif top and key in OS_SUFFIXED:
                yield from (f"{value['repository']}/{value['image']}:{version}-{system}" for system in systems)
            else:
                yield f"{value['repository']}/{value['image']}:{version}"
        yield from operands(value, systems, top=False)


def images_rendered(chart: Path, values: dict[str, Any], systems: list[str]) -> set[str]:
    """Every image of the objects Helm renders from ``chart`` with ``values``: the containers' ``image`` strings and
    the ClusterPolicy's operands."""
    rendered = helm_python.Chart.load(str(chart)).render(values, name="gpu", namespace="gpu-operator")
    found: set[str] = set()
    for text in rendered.values():
        for document in yaml.safe_load_all(text):
            if not isinstance(document, dict):
                continue
            if document.get("kind") == "ClusterPolicy":
                found.update(operands(document["spec"], systems))
            for container in ((document.get("spec") or {}).get("template") or {}).get("spec", {}).get(
                "containers"
            ) or []:
                found.add(container["image"])
    return found


def path_of(reference: str) -> str:
    """A reference without its registry host (the path an image keeps at every destination)."""
    return reference.split("/", 1)[1]


def export_args(testbed: Any, helm_charts: Any, tmp: Path, charts: list[Any], **extra: Any) -> dict[str, Any]:
    args = {
        "registry_url": testbed.source_registry_url,
        "helm_url": helm_charts.url,
        "charts": charts,
        "upstream_registries": {K8S: {"url": testbed.k8s_registry_url}},
        "facts_file": str(tmp / "export.fact"),
    }
    args.update(extra)
    return args


def selection(version: str, systems: list[str] | None = None, **values: Any) -> dict[str, Any]:
    return {"name": "nvidia/gpu-operator", "version": version, "driver_os": systems or SYSTEMS, "values": values}


@pytest.fixture
def ns(request: pytest.FixtureRequest) -> str:
    return f"far{os.getpid()}-{request.node.name[5:20].replace('_', '-')}-{int(time.time() * 1000) % 100000}"


@pytest.fixture(scope="module")
def exported(ansible: Any, testbed: Any, helm_charts: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The connected side: the older version (GDS switched on) exported into a bundle, in check mode first."""
    base = tmp_path_factory.mktemp("export")
    chosen = selection(OLD, gds={"enabled": True})
    args = export_args(testbed, helm_charts, base, [chosen], bundle={"dir": str(base / "bundle-1")})
    check = ansible.module("ngc_image_mirror", args, check=True, api_key=testbed.api_key)
    written_by_check = (base / "bundle-1").exists()
    first = ansible.module("ngc_image_mirror", args, api_key=testbed.api_key)
    second = ansible.module("ngc_image_mirror", args, api_key=testbed.api_key)
    return {
        "base": base,
        "args": args,
        "selection": chosen,
        "check": check,
        "first": first,
        "second": second,
        "bundle": base / "bundle-1",
        "written_by_check": written_by_check,
    }


def test_export_lists_the_chart_and_every_image_with_its_values_path(
    exported: dict[str, Any], helm_charts: Any
) -> None:
    wanted = helm_charts.images(OLD, SYSTEMS, enabled=("gds",))
    check = exported["check"]
    assert check.rc == 0, check.stdout
    chart = check.result["charts"][0]
    assert (chart["name"], chart["version"], chart["status"]) == ("nvidia/gpu-operator", OLD, "would copy")
    assert {i["reference"] for i in chart["images"]} == set(wanted)
    records: dict[str, set[str]] = {}
    for record in helm_charts.records(OLD):
        records.setdefault(record["reference"], set()).add(record["from"])
    for image in chart[
        "images"
    ]:  # each with the values paths that name it (a disabled one that names it too is left out)
        assert set(image["from"].split(", ")) <= records[image["reference"]], image
    assert any(i["from"] == "node-feature-discovery.image" for i in chart["images"])
    assert not exported["written_by_check"]  # check mode wrote nothing

    first, second = exported["first"], exported["second"]
    assert first.rc == 0, first.stdout
    assert first.result["charts"][0]["status"] == "copied"
    assert {i["reference"]: i["digest"] for i in first.result["charts"][0]["images"]} == wanted
    assert second.rc == 0 and not second.result["changed"], second.stdout
    assert (
        first.result["charts"][0]["digest"] == second.result["charts"][0]["digest"]
    )  # the chart's artifact, every run
    contents = json.loads((exported["bundle"] / "contents.json").read_text())
    assert first.result["charts"][0]["reference"] in contents["images"]
    assert set(wanted) <= set(contents["images"])


def test_the_far_side_installs_the_chart_from_the_site_registry(
    ansible: Any, testbed: Any, helm_charts: Any, exported: dict[str, Any], tmp_path: Path, ns: str, faults: Any
) -> None:
    carried = tmp_path / "carried"
    shutil.copytree(exported["bundle"], carried)
    far = tmp_path / "far"
    args = {
        "source": "bundle",
        "source_dir": str(carried),
        "registry_url": "http://127.0.0.1:9",
        "charts": [exported["selection"]],
        "registry": {"url": testbed.open_registry_url, "prefix": ns},
        "chart_repo": {"dir": str(far / "charts")},
        "values_dir": str(far / "values"),
        "facts_file": str(far / "far.fact"),
    }
    imported = ansible.module("ngc_image_mirror", args)
    assert imported.rc == 0, imported.stdout
    assert faults.stats("registry")["total"] == 0  # the source was never asked
    chart = imported.result["charts"][0]
    values_file = Path(chart["values_file"])
    assert values_file == far / "values" / f"gpu-operator-{OLD}.values.yaml"
    again = ansible.module("ngc_image_mirror", args)
    assert again.rc == 0 and not again.result["changed"], again.stdout

    archive = helm_charts.archive(OLD)
    pulled = tmp_path / "pulled"
    pulled.mkdir()
    helm_python.RegistryClient(plain_http=True).pull(
        f"oci://{testbed.open_registry_host}/{ns}/charts/nvidia/gpu-operator", version=OLD, destination=str(pulled)
    )
    tgz = pulled / f"gpu-operator-{OLD}.tgz"
    assert "sha256:" + hashlib.sha256(tgz.read_bytes()).hexdigest() == archive["digest"]  # byte for byte
    with serve(far / "charts") as site_repo:
        index = helm_python.repo_index(site_repo)
        assert [e["version"] for e in index["entries"]["gpu-operator"]] == [OLD], index
        from_repo = tmp_path / "from-repo"
        from_repo.mkdir()
        helm_python.pull("gpu-operator", repo_url=site_repo, version=OLD, destination=str(from_repo))
    assert (from_repo / f"gpu-operator-{OLD}.tgz").read_bytes() == tgz.read_bytes()

    wanted = {path_of(ref): digest for ref, digest in helm_charts.images(OLD, SYSTEMS, enabled=("gds",)).items()}
    images = images_rendered(tgz, yaml.safe_load(values_file.read_text()), SYSTEMS)
    site = f"{testbed.open_registry_host}/{ns}/"
    assert all(image.startswith(site) for image in images), images
    assert {image[len(site) :] for image in images} == set(wanted)  # every image, nothing more
    for image in sorted(images):
        assert raw_digest(testbed.open_registry_host, path_of(image)) == wanted[image[len(site) :]], image


def blob_files(bundle: Path) -> set[str]:
    return {f"sha256:{p.name}" for p in (bundle / "blobs" / "sha256").iterdir() if not p.name.startswith(".")}


def test_a_newer_version_in_a_delta_carries_only_its_new_images(
    ansible: Any, testbed: Any, helm_charts: Any, exported: dict[str, Any]
) -> None:
    base = exported["base"]
    newer = export_args(
        testbed,
        helm_charts,
        base,
        [selection(NEW, gds={"enabled": True})],
        bundle={"dir": str(base / "bundle-2"), "since": "last"},
    )
    run = ansible.module("ngc_image_mirror", newer, api_key=testbed.api_key)
    assert run.rc == 0, run.stdout
    old, new = blob_files(exported["bundle"]), blob_files(base / "bundle-2")
    contents = json.loads((base / "bundle-2" / "contents.json").read_text())
    manifests = {entry["digest"] for entry in contents["images"].values()}
    assert new & old <= manifests  # nothing the far side has is carried again, but the manifests that name it
    before = set(helm_charts.images(OLD, SYSTEMS, enabled=("gds",)))
    added = [ref for ref in helm_charts.images(NEW, SYSTEMS, enabled=("gds",)) if ref not in before]
    assert "nvcr.io/nvidia/driver:595.91.07-rhel9.6" in added and len(added) < len(before), added
    for ref in added:
        assert set(contents["images"][ref]["blobs"]) - old <= new and set(contents["images"][ref]["blobs"]) - old, ref
    carried = set().union(*(set(contents["images"][ref]["blobs"]) for ref in added)) | manifests
    chart = run.result["charts"][0]
    carried |= set(contents["images"][chart["reference"]]["blobs"])
    assert new <= carried  # only the new images' blobs and the new chart


def test_prune_removes_a_deselected_version_and_the_images_only_it_needed(
    ansible: Any, testbed: Any, helm_charts: Any, tmp_path: Path, ns: str
) -> None:
    both = export_args(
        testbed,
        helm_charts,
        tmp_path,
        [selection(OLD, ["ubuntu22.04"]), selection(NEW, ["ubuntu22.04"])],
        registry={"url": testbed.open_registry_url, "prefix": ns},
        chart_repo={"dir": str(tmp_path / "charts")},
    )
    assert ansible.module("ngc_image_mirror", both, api_key=testbed.api_key).rc == 0
    pruned = ansible.module(
        "ngc_image_mirror", dict(both, charts=[selection(NEW, ["ubuntu22.04"])], prune=True), api_key=testbed.api_key
    )
    assert pruned.rc == 0, pruned.stdout
    kept, gone = helm_charts.images(NEW, ["ubuntu22.04"]), helm_charts.images(OLD, ["ubuntu22.04"])
    only_old = sorted(ref for ref in gone if ref not in kept)
    removed = {(r["image"], r["kind"]) for r in pruned.result["pruned"] if r["action"] == "removed"}
    old_chart = [
        r["image"] for r in pruned.result["pruned"] if r["image"].endswith(f"/charts/nvidia/gpu-operator:{OLD}")
    ]
    assert old_chart and {(old_chart[0], "registry"), (old_chart[0], "chart_repo")} <= removed
    assert {image for image, _kind in removed} == set(only_old) | {old_chart[0]}
    for ref in only_old:
        with pytest.raises(subprocess.CalledProcessError):
            raw_digest(testbed.open_registry_host, f"{ns}/{path_of(ref)}")
    for ref, digest in kept.items():
        assert raw_digest(testbed.open_registry_host, f"{ns}/{path_of(ref)}") == digest, ref
    index = yaml.safe_load((tmp_path / "charts" / "index.yaml").read_text())
    assert [e["version"] for e in index["entries"]["gpu-operator"]] == [NEW]
    assert not (tmp_path / "charts" / f"gpu-operator-{OLD}.tgz").exists()


@pytest.mark.parametrize(
    "chart, message",
    [
        (
            {"name": "nvidia/gpu-operatr", "version": OLD},
            r"chart nvidia/gpu-operatr does not exist in the Helm repository .*/nvidia: it holds gpu-operator",
        ),
        (
            {"name": "nvidia/gpu-operator", "version": "v1.0.0"},
            r"chart nvidia/gpu-operator has no version v1.0.0 in .*: it has v26.7.0, v26.3.0",
        ),
        (
            {
                "name": "nvidia/gpu-operator",
                "version": OLD,
                "driver_os": ["ubuntu22.04"],
                "values": {"driver": {"version": ["580"]}},
            },
            r"values.driver.version is a list",
        ),
        (
            {
                "name": "nvidia/gpu-operator",
                "version": OLD,
                "driver_os": ["ubuntu22.04"],
                "values": {"devicePlugin": "v1"},
            },
            r"devicePlugin",
        ),
    ],
)
def test_bad_charts_are_named(
    ansible: Any, testbed: Any, helm_charts: Any, tmp_path: Path, chart: dict[str, Any], message: str
) -> None:
    run = ansible.module(
        "ngc_image_mirror",
        export_args(testbed, helm_charts, tmp_path, [chart], bundle={"dir": str(tmp_path / "b")}),
        check=True,
        api_key=testbed.api_key,
    )
    assert run.rc != 0
    failure = run.result["msg"]
    assert "Traceback" not in run.stdout and re.search(message, failure), failure


@pytest.mark.parametrize(
    "values, systems, path, reference",
    [
        ({}, ["ubuntu22.04", "rhel8.10"], "driver", "nvcr.io/nvidia/driver:580.82.07-rhel8.10"),
        (
            {"devicePlugin": {"version": "v9.9.9"}},
            ["ubuntu22.04"],
            "devicePlugin",
            "nvcr.io/nvidia/k8s-device-plugin:v9.9.9",
        ),
    ],
)
def test_an_image_missing_upstream_fails_its_chart_naming_the_values_path(
    ansible: Any,
    testbed: Any,
    helm_charts: Any,
    tmp_path: Path,
    values: dict[str, Any],
    systems: list[str],
    path: str,
    reference: str,
) -> None:
    run = ansible.module(
        "ngc_image_mirror",
        export_args(
            testbed, helm_charts, tmp_path, [selection(OLD, systems, **values)], bundle={"dir": str(tmp_path / "b")}
        ),
        check=True,
        api_key=testbed.api_key,
    )
    assert run.rc != 0
    chart = run.result["charts"][0]
    assert chart["status"] == "failed"
    assert (
        f"{reference}" in chart["message"] and f"chart nvidia/gpu-operator:{OLD} names it at {path}" in chart["message"]
    )
    assert f"{reference}" in run.result["msg"] and "Traceback" not in run.stdout


def test_the_playbook_carries_the_gpu_operator_across(
    ansible: Any, testbed: Any, helm_charts: Any, tmp_path: Path, ns: str
) -> None:
    common = {
        "k8s_gpu_bundle_dir": str(tmp_path / "bundle"),
        "k8s_gpu_charts": [{"name": "nvidia/gpu-operator", "version": OLD}],
        "k8s_gpu_driver_os": ["ubuntu22.04"],
    }
    exported = ansible.playbook(
        "playbooks/k8s_gpu_stack.yml",
        dict(
            common,
            k8s_gpu_side="export",
            k8s_gpu_registry_url=testbed.source_registry_url,
            k8s_gpu_helm_url=helm_charts.url,
            k8s_gpu_upstream_registries={K8S: {"url": testbed.k8s_registry_url}},
            k8s_gpu_facts_file=str(tmp_path / "export.fact"),
            ngc_mirror_api_key=testbed.api_key,
        ),
    )
    assert exported.rc == 0, exported.stdout + exported.stderr
    imported = ansible.playbook(
        "playbooks/k8s_gpu_stack.yml",
        dict(
            common,
            k8s_gpu_side="import",
            k8s_gpu_registry={"url": testbed.open_registry_url, "prefix": ns},
            k8s_gpu_chart_repo_dir=str(tmp_path / "charts"),
            k8s_gpu_values_dir=str(tmp_path / "values"),
            k8s_gpu_facts_file=str(tmp_path / "import.fact"),
        ),
    )
    assert imported.rc == 0, imported.stdout + imported.stderr
    values = tmp_path / "values" / f"gpu-operator-{OLD}.values.yaml"
    assert (
        f"helm install gpu-operator oci://{testbed.open_registry_host}/{ns}/charts/nvidia/gpu-operator --version {OLD} "
        f"-f {values}"
    ) in imported.stdout
    wanted = {path_of(ref): digest for ref, digest in helm_charts.images(OLD, ["ubuntu22.04"]).items()}
    site = f"{testbed.open_registry_host}/{ns}/"
    images = images_rendered(
        tmp_path / "charts" / f"gpu-operator-{OLD}.tgz", yaml.safe_load(values.read_text()), ["ubuntu22.04"]
    )
    assert {image[len(site) :] for image in images} == set(wanted)
    for image in sorted(images):
        assert raw_digest(testbed.open_registry_host, path_of(image)) == wanted[image[len(site) :]], image


def test_the_role_mirrors_charts_beside_its_selections(
    ansible: Any, testbed: Any, helm_charts: Any, tmp_path: Path, ns: str
) -> None:
    from tests.integration.test_role_prune import PLAYBOOK, role_vars  # pylint: disable=import-outside-toplevel

    playbook = tmp_path / "role.yml"
    playbook.write_text(PLAYBOOK)
    values = role_vars(
        tmp_path,
        ngc_mirror_api_url=testbed.ngc_api_url,
        ngc_mirror_source_registry_url=testbed.source_registry_url,
        ngc_mirror_helm_url=helm_charts.url,
        ngc_mirror_upstream_registries={K8S: {"url": testbed.k8s_registry_url}},
        ngc_mirror_charts=[selection(NEW, ["ubuntu22.04"])],
        ngc_mirror_chart_repo={"dir": str(tmp_path / "charts")},
        ngc_mirror_registry={"url": testbed.open_registry_url, "prefix": ns},
        ngc_mirror_values_dir=str(tmp_path / "values"),
    )
    run = ansible.playbook(playbook, values, env={"NGC_API_KEY": testbed.api_key})
    assert run.rc == 0, (run.stdout + run.stderr)[-6000:]
    index = yaml.safe_load((tmp_path / "charts" / "index.yaml").read_text())
    assert [e["version"] for e in index["entries"]["gpu-operator"]] == [NEW]
    assert (tmp_path / "values" / f"gpu-operator-{NEW}.values.yaml").is_file()
    for ref, digest in helm_charts.images(NEW, ["ubuntu22.04"]).items():
        assert raw_digest(testbed.open_registry_host, f"{ns}/{path_of(ref)}") == digest, ref
