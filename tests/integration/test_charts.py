# Copyright (c) airgap.ngc contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Helm charts across the air gap, judged by Helm's own engine (``helm_python``, a test dependency only): a chart is
exported into a bundle with every image it deploys, imported on the far side into a registry that never saw the
source (as an OCI chart) and a classic chart repository; Helm pulls it back from both, renders it with the values file
the module wrote, and every image the rendered objects name is in the far registry with the source's digest."""
from __future__ import annotations

import contextlib
import functools
import hashlib
import http.server
import json
import os
import shutil
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

from tests.integration.test_image_mirror import raw_digest, seeded

helm_python = pytest.importorskip("helm_python")

CHART = "demo-operator"
UPSTREAM = "registry.k8s.io"  # stands for a registry outside nvcr.io, served by the test bed's open registry
CUDA = "nvidia/cuda:12.2.0-base-ubuntu22.04"
PYTORCH = "nvidia/pytorch:24.01-py3"
TENSORFLOW = "nvidia/tensorflow:24.01-tf2-py3"
TEMPLATE = """apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ .Release.Name }}-operator
spec:
  template:
    spec:
      containers:
        - name: operator
          image: "{{ .Values.operator.repository }}/{{ .Values.operator.image }}:{{ .Values.operator.version | default .Chart.AppVersion }}"
        - name: worker
          image: "{{ .Values.worker.image.repository }}:{{ .Values.worker.image.tag }}"
{{- if .Values.extra.enabled }}
        - name: extra
          image: "{{ .Values.extra.repository }}/{{ .Values.extra.image }}:{{ .Values.extra.version }}"
{{- end }}
        - name: discovery
          image: "{{ .Values.discovery.image.repository }}:{{ .Values.discovery.image.tag }}"
"""


def chart_values(upstream_path: str) -> dict[str, Any]:
    """The chart's values: GPU-Operator-style fields, Helm-style repository + tag, a disabled component, and an image
    of another registry."""
    return {
        "operator": {"repository": "nvcr.io/nvidia", "image": "cuda", "version": ""},
        "worker": {"image": {"repository": "nvcr.io/nvidia/pytorch", "tag": "24.01-py3"}},
        "extra": {"enabled": False, "repository": "nvcr.io/nvidia", "image": "tensorflow", "version": "24.01-tf2-py3"},
        "discovery": {"image": {"repository": f"{UPSTREAM}/{upstream_path}", "tag": "12.2.0-base-ubuntu22.04"}},
    }


def package_chart(where: Path, version: str, upstream_path: str) -> Path:
    """A chart packaged by Helm itself (appVersion names the operator's tag)."""
    source = where / f"src-{version}" / CHART
    (source / "templates").mkdir(parents=True)
    (source / "Chart.yaml").write_text(yaml.safe_dump({"apiVersion": "v2", "name": CHART, "version": version,
                                                       "appVersion": "12.2.0-base-ubuntu22.04", "description": "test chart"}))
    (source / "values.yaml").write_text(yaml.safe_dump(chart_values(upstream_path)))
    (source / "templates" / "deployment.yaml").write_text(TEMPLATE)
    return Path(helm_python.package(str(source), destination=str(where)))


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


def write_index(directory: Path, charts: list[Path]) -> None:
    """An index.yaml as NGC serves one (entries with digest and relative urls)."""
    entries: dict[str, list[dict[str, Any]]] = {}
    for path in charts:
        name, version = path.name[:-len(".tgz")].rsplit("-", 1)
        entries.setdefault(name, []).append({"apiVersion": "v2", "name": name, "version": version, "appVersion": "12.2.0-base-ubuntu22.04",
                                             "digest": hashlib.sha256(path.read_bytes()).hexdigest(), "urls": [f"charts/{path.name}"],
                                             "created": "2026-12-01T00:00:00Z"})
    (directory / "index.yaml").write_text(yaml.safe_dump({"apiVersion": "v1", "entries": entries}))


def images_rendered(chart: Path, values: dict[str, Any]) -> list[str]:
    """Every image in the objects Helm renders from ``chart`` with ``values``."""
    rendered = helm_python.Chart.load(str(chart)).render(values, name="gpu", namespace="gpu-operator")
    found = []
    for text in rendered.values():
        for document in yaml.safe_load_all(text):
            for container in ((document or {}).get("spec") or {}).get("template", {}).get("spec", {}).get("containers") or []:
                found.append(container["image"])
    return found


@pytest.fixture(scope="module")
def repo(ansible: Any, testbed: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A Helm repository like NGC's (org ``nvidia``) holding two versions of the chart, the newer naming one more image;
    the upstream image is put on the open registry, which stands for registry.k8s.io."""
    base = tmp_path_factory.mktemp("helm")
    upstream_prefix = f"up{os.getpid()}"
    put = ansible.module("ngc_image_mirror", {"registry_url": testbed.source_registry_url, "images": [CUDA],
                                              "registry": {"url": testbed.open_registry_url, "prefix": upstream_prefix},
                                              "facts_file": str(base / "up.fact")}, api_key=testbed.api_key)
    assert put.rc == 0, put.stdout
    org = base / "served" / "nvidia"
    (org / "charts").mkdir(parents=True)
    old = package_chart(base, "1.0.0", f"{upstream_prefix}/nvidia/cuda")
    newer_source = package_chart(base / "v2", "1.1.0", f"{upstream_prefix}/nvidia/cuda")
    charts = [shutil.copy(old, org / "charts"), shutil.copy(newer_source, org / "charts")]
    write_index(org, [Path(c) for c in charts])
    with serve(base / "served") as url:
        yield {"url": url, "old": old, "new": newer_source, "upstream": f"{testbed.open_registry_host}/{upstream_prefix}",
               "base": base}


def export_args(testbed: Any, repo: dict[str, Any], tmp: Path, charts: list[Any], **extra: Any) -> dict[str, Any]:
    args = {"registry_url": testbed.source_registry_url, "helm_url": repo["url"], "charts": charts,
            "upstream_registries": {UPSTREAM: {"url": testbed.open_registry_url}}, "facts_file": str(tmp / "export.fact")}
    args.update(extra)
    return args


@pytest.fixture
def ns(request: pytest.FixtureRequest) -> str:
    return f"far{os.getpid()}-{request.node.name[5:20].replace('_', '-')}-{int(time.time() * 1000) % 100000}"


def test_a_chart_goes_across_and_helm_installs_it_from_the_site(ansible: Any, testbed: Any, repo: dict[str, Any], tmp_path: Path,
                                                                ns: str) -> None:
    source = seeded(testbed)
    bundle = tmp_path / "bundle"
    selection = {"name": f"nvidia/{CHART}", "version": "1.0.0", "values": {"extra": {"enabled": True}}}
    check = ansible.module("ngc_image_mirror", export_args(testbed, repo, tmp_path, [selection], bundle={"dir": str(bundle)}),
                           check=True, api_key=testbed.api_key)
    assert check.rc == 0, check.stdout
    listed = check.result["charts"][0]
    assert (listed["name"], listed["version"], listed["status"]) == (f"nvidia/{CHART}", "1.0.0", "would copy")
    assert {(i["reference"], i["from"]) for i in listed["images"]} == {
        (f"nvcr.io/{CUDA}", "operator"), (f"nvcr.io/{PYTORCH}", "worker.image"), (f"nvcr.io/{TENSORFLOW}", "extra"),
        (f"{UPSTREAM}/{repo['upstream'].split('/', 1)[1]}/nvidia/cuda:12.2.0-base-ubuntu22.04", "discovery.image")}
    assert not bundle.exists()

    export = ansible.module("ngc_image_mirror", export_args(testbed, repo, tmp_path, [selection], bundle={"dir": str(bundle)}),
                            api_key=testbed.api_key)
    assert export.rc == 0, export.stdout
    assert export.result["changed"] and export.result["charts"][0]["status"] == "copied"
    again = ansible.module("ngc_image_mirror", export_args(testbed, repo, tmp_path, [selection], bundle={"dir": str(bundle)}),
                           api_key=testbed.api_key)
    assert again.rc == 0 and not again.result["changed"], again.stdout
    contents = json.loads((bundle / "contents.json").read_text())
    chart_key = export.result["charts"][0]["reference"]
    assert chart_key.endswith(f"/charts/nvidia/{CHART}:1.0.0") and chart_key in contents["images"]

    # The far side: a registry that never saw the source, a chart repository, and the values file.
    carried = tmp_path / "carried"
    shutil.copytree(bundle, carried)
    far = tmp_path / "far"
    args = {"source": "bundle", "source_dir": str(carried), "registry_url": "http://127.0.0.1:9", "charts": [selection],
            "registry": {"url": testbed.open_registry_url, "prefix": ns}, "chart_repo": {"dir": str(far / "charts")},
            "values_dir": str(far / "values"), "facts_file": str(far / "far.fact")}
    imported = ansible.module("ngc_image_mirror", args)
    assert imported.rc == 0, imported.stdout
    chart = imported.result["charts"][0]
    values_file = Path(chart["values_file"])
    assert values_file == far / "values" / f"{CHART}-1.0.0.values.yaml"
    assert not ansible.module("ngc_image_mirror", args).result["changed"]

    # Helm pulls the chart back from the far registry and from the chart repository: the .tgz byte for byte.
    pulled = tmp_path / "pulled"
    pulled.mkdir()
    helm_python.RegistryClient(plain_http=True).pull(f"oci://{testbed.open_registry_host}/{ns}/charts/nvidia/{CHART}",
                                                     version="1.0.0", destination=str(pulled))
    assert (pulled / f"{CHART}-1.0.0.tgz").read_bytes() == repo["old"].read_bytes()
    with serve(far / "charts") as site_repo:
        index = helm_python.repo_index(site_repo)
        assert [e["version"] for e in index["entries"][CHART]] == ["1.0.0"], index
        from_repo = tmp_path / "from-repo"
        from_repo.mkdir()
        helm_python.pull(CHART, repo_url=site_repo, version="1.0.0", destination=str(from_repo))
    assert (from_repo / f"{CHART}-1.0.0.tgz").read_bytes() == repo["old"].read_bytes()

    # Rendered with the values file, every image is the site registry's, with the source's digest.
    values = yaml.safe_load(values_file.read_text())
    images = images_rendered(pulled / f"{CHART}-1.0.0.tgz", values)
    assert len(images) == 4, images
    site = f"{testbed.open_registry_host}/{ns}/"
    upstream_path = repo["upstream"].split("/", 1)[1]
    for image in images:
        assert image.startswith(site), image
        path = image[len(site):]
        want = source[path]["digest"] if path in source else raw_digest(testbed.open_registry_host, f"{upstream_path}/nvidia/cuda:12.2.0-base-ubuntu22.04")
        assert raw_digest(testbed.open_registry_host, image.split("/", 1)[1]) == want, image
