# Copyright (c) airgap.ngc contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Charts through the copy engine: a chart is an OCI artifact built the same way on every run, it goes only where
charts are kept (and a chart repository takes nothing else), the images it deploys come with it, an image outside
nvcr.io is read from its own registry without the NGC key, and bad chart options are named."""

from __future__ import annotations

import gzip
import io
import json
import os
import tarfile
from typing import Any

import pytest
import yaml

from ansible_collections.airgap.ngc.plugins.module_utils._copy.charts import charts_result, upstream_source
from ansible_collections.airgap.ngc.plugins.module_utils._copy.validate import validate_mirror
from ansible_collections.airgap.ngc.plugins.module_utils._state.facts import StateStore
from ansible_collections.airgap.ngc.plugins.module_utils._transports.chart_repo import ChartRepoDestination
from ansible_collections.airgap.ngc.plugins.module_utils._transports.fanout import Totals
from ansible_collections.airgap.ngc.plugins.module_utils._transports.helm_source import ChartSources
from ansible_collections.airgap.ngc.plugins.module_utils._types.chart_artifact import (
    chart_manifest,
    index_entry,
    is_chart,
)
from ansible_collections.airgap.ngc.plugins.module_utils._types.charts import ChartSelection
from ansible_collections.airgap.ngc.plugins.module_utils._types.errors import ConfigError
from ansible_collections.airgap.ngc.plugins.module_utils._types.oci import MEDIA_HELM_CHART, MEDIA_HELM_CONFIG

from .test_copy_engine import MemoryDestination, MemorySource, digest_of
from ansible_collections.airgap.ngc.plugins.module_utils._copy.copier import CopyEngine

VALUES = {
    "operator": {"repository": "nvcr.io/nvidia", "image": "pytorch", "version": "24.01"},
    "nfd": {"image": {"repository": "registry.k8s.io/nfd/node-feature-discovery", "tag": "v0.17.0"}},
}


def chart_tgz(version: str = "1.0.0") -> bytes:
    """A chart archive as ``helm package`` writes one (Chart.yaml, values.yaml)."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as archive:
        for name, data in (
            ("Chart.yaml", {"apiVersion": "v2", "name": "demo", "version": version, "appVersion": "24.01"}),
            ("values.yaml", VALUES),
        ):
            raw = yaml.safe_dump(data).encode()
            info = tarfile.TarInfo(f"demo/{name}")
            info.size = len(raw)
            info.mtime = 1
            archive.addfile(info, io.BytesIO(raw))
    return gzip.compress(out.getvalue(), mtime=0)


class FakeHelm:
    """NGC's Helm repository for one org, in memory (the real client is tested against the test bed)."""

    url = "https://helm.example/nvidia"

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.fetched = 0

    def index(self) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "entries": {"demo": [{"name": "demo", "version": "1.0.0", "urls": ["demo-1.0.0.tgz"]}]},
        }

    def versions(self, name: str) -> list[dict[str, Any]]:
        return list(self.index()["entries"].get(name) or [])

    def fetch(self, entry: dict[str, Any], dest_dir: str) -> str:
        self.fetched += 1
        path = os.path.join(dest_dir, "demo-1.0.0.tgz")
        with open(path, "wb") as handle:
            handle.write(self.data)
        return path


class ChartKeeper(MemoryDestination):
    carries_charts = True


class ChartsOnly(ChartKeeper):
    charts_only = True


@pytest.fixture
def memory() -> MemorySource:
    source = MemorySource()
    source.add_image("nvcr.io/nvidia/pytorch:24.01", [b"pytorch layer" * 40])
    return source


def sources(memory: MemorySource, upstream: MemorySource, selection: str = "nvidia/demo:1.0.0") -> ChartSources:
    return ChartSources(
        memory,
        [ChartSelection.from_value(selection)],
        helm=lambda _s: FakeHelm(chart_tgz()),
        upstream=lambda host: upstream if host == "registry.k8s.io" else None,
        helm_host="helm.example",
    )


def test_a_chart_goes_only_where_charts_are_kept_with_every_image_it_deploys(
    memory: MemorySource, tmp_path: Any
) -> None:
    upstream = MemorySource()
    upstream.add_image("registry.k8s.io/nfd/node-feature-discovery:v0.17.0", [b"nfd layer" * 40])
    source = sources(memory, upstream)
    images = source.images(None)
    assert [image.key for image in images] == [
        "helm.example/charts/nvidia/demo:1.0.0",
        "registry.k8s.io/nfd/node-feature-discovery:v0.17.0",
        "nvcr.io/nvidia/pytorch:24.01",
    ]
    registry, archive, chart_repo = ChartKeeper("registry"), MemoryDestination("archive"), ChartsOnly("chart_repo")
    with StateStore(str(tmp_path / "facts.json")) as store:
        plans = CopyEngine(source, [registry, archive, chart_repo], Totals()).run(images, store)
    assert [p.error for p in plans] == [None, None, None]
    assert {p.source.key: sorted(s.kind for s in p.steps) for p in plans} == {
        "helm.example/charts/nvidia/demo:1.0.0": ["chart_repo", "registry"],
        "nvcr.io/nvidia/pytorch:24.01": ["archive", "registry"],
        "registry.k8s.io/nfd/node-feature-discovery:v0.17.0": ["archive", "registry"],
    }
    chart = source.resolve(images[0])
    top = source.manifest(images[0], chart.digest)
    assert is_chart(top.data) and top.data["layers"][0]["mediaType"] == MEDIA_HELM_CHART
    assert registry.blobs[top.data["layers"][0]["digest"]] == chart_tgz()  # the .tgz byte for byte
    assert json.loads(registry.blobs[top.data["config"]["digest"]])["name"] == "demo"
    assert upstream.reads and digest_of(b"nfd layer" * 40) in upstream.reads  # read from its own registry
    assert digest_of(b"nfd layer" * 40) not in memory.reads
    result = charts_result(source, plans, {}, False)
    assert [(c["name"], c["version"], c["status"]) for c in result] == [("nvidia/demo", "1.0.0", "copied")]
    assert sorted((i["reference"], i["from"]) for i in result[0]["images"]) == [
        ("nvcr.io/nvidia/pytorch:24.01", "operator"),
        ("registry.k8s.io/nfd/node-feature-discovery:v0.17.0", "nfd.image"),
    ]
    source.close()


def test_the_chart_artifact_is_the_same_on_every_run(memory: MemorySource) -> None:
    first, second = sources(memory, MemorySource()), sources(memory, MemorySource())
    digests = []
    for source in (first, second):
        image = source.images(None)[0]
        digests.append(source.resolve(image).digest)
        source.close()
    assert digests[0] == digests[1]
    config = b'{"name":"demo"}'
    built = chart_manifest(config, digest_of(b"tgz"), 3)
    assert built.digest == chart_manifest(config, digest_of(b"tgz"), 3).digest
    assert built.data["config"] == {"mediaType": MEDIA_HELM_CONFIG, "digest": digest_of(config), "size": len(config)}


def test_an_image_the_chart_names_that_is_missing_names_the_chart_and_values_path(
    memory: MemorySource, tmp_path: Any
) -> None:
    source = sources(memory, MemorySource())  # the upstream registry does not hold the NFD image
    images = source.images(None)
    with StateStore(str(tmp_path / "facts.json")) as store:
        plans = CopyEngine(source, [ChartKeeper("registry")], Totals()).run(images, store)
    failed = [p for p in plans if p.error]
    assert [p.source.key for p in failed] == ["registry.k8s.io/nfd/node-feature-discovery:v0.17.0"]
    assert "chart nvidia/demo:1.0.0 names it at nfd.image" in (failed[0].error or "")
    result = charts_result(source, plans, {}, False)
    assert result[0]["status"] == "failed" and "nfd/node-feature-discovery" in result[0]["message"]
    source.close()


def test_a_chart_or_version_that_does_not_exist_is_named(memory: MemorySource) -> None:
    with pytest.raises(
        ConfigError,
        match=r"chart nvidia/nope does not exist in the Helm repository https://helm.example/nvidia: it holds demo",
    ):
        sources(memory, MemorySource(), "nvidia/nope:1.0.0").images(None)
    with pytest.raises(
        ConfigError, match=r"chart nvidia/demo has no version 9.9.9 in https://helm.example/nvidia: it has 1.0.0"
    ):
        sources(memory, MemorySource(), "nvidia/demo:9.9.9").images(None)
    with pytest.raises(ConfigError, match=r"chart nvidia/demo:1.0.0: .*values.*operator"):
        ChartSources(
            memory,
            [ChartSelection.from_value({"name": "nvidia/demo:1.0.0", "values": {"operator": "pytorch"}})],
            helm=lambda _s: FakeHelm(chart_tgz()),
            upstream=lambda host: None,
            helm_host="helm.example",
        ).images(None)


def test_images_of_another_registry_never_get_the_ngc_key() -> None:
    quay = {"url": "https://quay.example", "username": "robot", "password": "pw"}
    params = {
        "registry_url": "https://nvcr.io",
        "api_key": "nvapi-secret",
        "username": "$oauthtoken",
        "validate_certs": True,
        "ca_path": None,
        "timeout": 5.0,
        "retries": 0,
        "upstream_registries": {"quay.io": quay},
    }
    assert upstream_source(params, "nvcr.io") is None
    anonymous = upstream_source(params, "registry.k8s.io")
    assert anonymous is not None and anonymous.url == "https://registry.k8s.io" and anonymous.client.username is None
    mapped = upstream_source(params, "quay.io")
    assert mapped is not None and mapped.url == "https://quay.example" and mapped.client.username == "robot"


def test_index_entry_names_the_tgz_relative_with_its_sha256() -> None:
    entry = index_entry(
        {"apiVersion": "v2", "name": "demo", "version": "1.0.0+build.1", "appVersion": "24.01", "icon": ""},
        "sha256:" + "a" * 64,
        "2026-12-01T00:00:00Z",
    )
    assert entry == {
        "apiVersion": "v2",
        "name": "demo",
        "version": "1.0.0+build.1",
        "appVersion": "24.01",
        "digest": "a" * 64,
        "created": "2026-12-01T00:00:00Z",
        "urls": ["demo-1.0.0+build.1.tgz"],
    }


def test_a_chart_repository_directory_with_a_foreign_index_is_never_overwritten(tmp_path: Any) -> None:
    (tmp_path / "index.yaml").write_text("- not\n- an index\n")
    with pytest.raises(Exception, match=r"chart_repo.dir .*index.yaml cannot be read as a Helm repository index"):
        ChartRepoDestination({"dir": str(tmp_path)})._read_index()  # pylint: disable=protected-access
    assert (tmp_path / "index.yaml").read_text() == "- not\n- an index\n"


def mirror_params(tmp_path: Any, **extra: Any) -> dict[str, Any]:
    params: dict[str, Any] = {
        "api_key": "not-a-key",
        "username": "$oauthtoken",
        "registry_url": "https://nvcr.io",
        "images": None,
        "charts": ["nvidia/gpu-operator:v26.7.0"],
        "helm_url": "https://helm.ngc.nvidia.com",
        "facts_file": str(tmp_path / "facts"),
        "timeout": 60.0,
        "retries": 5,
        "validate_certs": True,
        "ca_path": None,
        "parallel": 4,
        "force": False,
        "fail_on_error": True,
        "offline": False,
        "registry": {"url": "https://site.example"},
    }
    params.update(extra)
    return params


@pytest.mark.parametrize(
    "extra, message",
    [
        (
            {"charts": [{"name": "nvidia/gpu-operator", "version": "v26.7.0", "driver_os": ["Ubuntu 22"]}]},
            r"charts item 1 driver_os item 1 'Ubuntu 22'",
        ),
        ({"charts": [{"name": "nvidia/gpu-operator", "values": ["gds"]}]}, r"charts item 1 values: expected a mapping"),
        (
            {"charts": ["nvidia/gpu-operator:v26.7.0", "nvidia/gpu-operator:v26.7.0"]},
            r"charts item 2 names nvidia/gpu-operator:v26.7.0 again",
        ),
        (
            {"values_dir": "/srv/values", "registry": None, "bundle": {"dir": "/srv/b"}},
            r"invalid values_dir .*set registry",
        ),
        (
            {"upstream_registries": {"registry.k8s.io": {"url": "https://mirror.example", "token": "x"}}},
            r"invalid upstream_registries\['registry.k8s.io'\]: unknown key 'token'",
        ),
        (
            {"upstream_registries": {"registry.k8s.io": {"url": "ftp://mirror.example"}}},
            r"upstream_registries\['registry.k8s.io'\].url",
        ),
        (
            {"chart_repo": {"dir": "/srv/b"}, "bundle": {"dir": "/srv/b"}},
            r"invalid chart_repo.dir '/srv/b': it is also bundle.dir",
        ),
        ({"source": "archive", "source_dir": "/srv/a"}, r"invalid charts .*not from per-tag archives"),
    ],
)
def test_bad_chart_options_are_named(tmp_path: Any, extra: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        validate_mirror(mirror_params(tmp_path, **extra))


def test_charts_alone_are_enough_to_mirror(tmp_path: Any) -> None:
    validate_mirror(mirror_params(tmp_path))
