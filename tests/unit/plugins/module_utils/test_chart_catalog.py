# Copyright (c) airgap.ngc contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""ngc_catalog_info's chart listing: which versions the filters and exact references select, what each entry holds,
and the messages for a version that is not there and an image its registry lacks. The Helm repository is a requests
adapter, the registries are in memory (no network)."""

from __future__ import annotations

import hashlib
from typing import Any, Dict, Optional
from urllib.parse import urlsplit

import pytest
import requests
import yaml

from ansible_collections.airgap.ngc.plugins.module_utils._catalog.charts import (
    ChartCatalog,
    empty_chart_selection,
    lists_images,
)
from ansible_collections.airgap.ngc.plugins.module_utils._clients.helm_repo import HelmRepository
from ansible_collections.airgap.ngc.plugins.module_utils._http.transport import HttpTransport
from ansible_collections.airgap.ngc.plugins.module_utils._types.errors import AirgapError, ConfigError, NotFoundError
from ansible_collections.airgap.ngc.plugins.module_utils._types.oci import MEDIA_OCI_MANIFEST, ManifestDescriptor
from ansible_collections.airgap.ngc.tests.unit.plugins.module_utils.test_charts import nfd_chart, operator_values, tgz
from ansible_collections.airgap.ngc.tests.unit.plugins.module_utils.test_ngc_errors import Answer, FakeApi

HELM = "https://helm.test"
VERSIONS = ("v25.10.0", "v26.3.0", "v26.7.0")


def _versioned(version: str, values: Dict[str, Any]) -> bytes:
    return tgz(
        {
            "gpu-operator/Chart.yaml": {
                "apiVersion": "v2",
                "name": "gpu-operator",
                "version": version,
                "appVersion": version,
                "dependencies": [{"name": "node-feature-discovery", "version": "0.17.2", "condition": "nfd.enabled"}],
            },
            "gpu-operator/values.yaml": values,
            "gpu-operator/charts/node-feature-discovery-0.17.2.tgz": nfd_chart(),
        }
    )


def _plugin(version: str) -> Dict[str, Any]:
    return dict(operator_values()["devicePlugin"], version=f"plugin-{version}")


ARCHIVES = {
    version: _versioned(version, dict(operator_values(), devicePlugin=_plugin(version))) for version in VERSIONS
}


def helm_app(request: requests.PreparedRequest) -> Answer:
    path = urlsplit(request.url).path
    if path == "/nvidia/index.yaml":
        entries = [
            {
                "name": "gpu-operator",
                "version": version,
                "appVersion": version,
                "created": f"2026-0{number}-01T00:00:00Z",
                "digest": hashlib.sha256(ARCHIVES[version]).hexdigest(),
                "description": "GPU Operator",
                "urls": [f"charts/gpu-operator-{version}.tgz"],
            }
            for number, version in enumerate(VERSIONS, start=1)
        ]
        other = [{"name": "network-operator", "version": "25.7.0", "urls": ["charts/network-operator-25.7.0.tgz"]}]
        return (
            200,
            {},
            yaml.safe_dump(
                {"apiVersion": "v1", "entries": {"gpu-operator": entries, "network-operator": other}}
            ).encode(),
        )
    for version, data in ARCHIVES.items():
        if path == f"/nvidia/charts/gpu-operator-{version}.tgz":
            return 200, {}, data
    return 404, {}, b"not found"


class Registry:
    """The manifests a registry holds, by repository and tag."""

    def __init__(self, host: str, missing: tuple[str, ...] = ()) -> None:
        self.host = host
        self.missing = missing
        self.asked: list[str] = []

    def head_manifest(self, name: str, reference: str) -> Optional[ManifestDescriptor]:
        shown = f"{self.host}/{name}:{reference}"
        self.asked.append(shown)
        if shown in self.missing:
            return None
        return ManifestDescriptor("sha256:" + hashlib.sha256(shown.encode()).hexdigest(), MEDIA_OCI_MANIFEST, 100)


def catalog(missing: tuple[str, ...] = (), **params: Any) -> tuple[ChartCatalog, Dict[str, Registry]]:
    transport = HttpTransport(retries=0)
    transport.session.mount(HELM, FakeApi(helm_app))
    registries: Dict[str, Registry] = {}

    def registry_for(host: str) -> Any:
        return registries.setdefault(host, Registry(host, missing))

    params.setdefault("driver_os", ["ubuntu22.04"])
    listing = ChartCatalog(
        dict(org="nvidia", **params),
        lambda org, team: HelmRepository(transport, HELM, org, team, "key"),
        registry_for,
        parallel=2,
    )
    return listing, registries


def test_name_filters_and_latest_select_versions() -> None:
    listing, _registries = catalog(charts=["gpu-operator"], strict_name_match=True, latest=2)
    found = listing.charts()
    assert [(c.path, c.version) for c in found] == [
        ("nvidia/gpu-operator", "v26.3.0"),
        ("nvidia/gpu-operator", "v26.7.0"),
    ]
    entry = found[-1].as_dict()
    assert entry["digest"] == "sha256:" + hashlib.sha256(ARCHIVES["v26.7.0"]).hexdigest()
    assert (
        entry["size"] == len(ARCHIVES["v26.7.0"]) and entry["url"] == f"{HELM}/nvidia/charts/gpu-operator-v26.7.0.tgz"
    )
    assert entry["app_version"] == "v26.7.0"
    images = {image["reference"]: image for image in entry["images"]}
    assert images["nvcr.io/nvidia/k8s-device-plugin:plugin-v26.7.0"]["from"] == "devicePlugin"
    assert (
        images["nvcr.io/nvidia/gpu-operator:v26.7.0"]["digest"]
        == "sha256:" + hashlib.sha256(b"nvcr.io/nvidia/gpu-operator:v26.7.0").hexdigest()
    )
    assert images["registry.k8s.io/nfd/node-feature-discovery:v0.17.2"]["from"] == "node-feature-discovery.image"


def test_version_filters_as_for_images() -> None:
    listing, _registries = catalog(charts=["gpu-operator"], min_version="26.0")
    assert [c.version for c in listing.charts()] == ["v26.3.0", "v26.7.0"]
    listing, _registries = catalog(charts=["operator"], tag_regex="^v26", tag_exclude_regex="7")
    assert [(c.path, c.version) for c in listing.charts()] == [("nvidia/gpu-operator", "v26.3.0")]


def test_an_exact_version_and_one_that_is_not_there() -> None:
    listing, _registries = catalog(charts=["nvidia/gpu-operator:v25.10.0"])
    assert [c.version for c in listing.charts()] == ["v25.10.0"]
    listing, _registries = catalog(charts=["nvidia/gpu-operator:v9.9.9"])
    with pytest.raises(
        NotFoundError,
        match=r"chart nvidia/gpu-operator has no version 'v9.9.9' in .* \(it has v25.10.0, v26.3.0, v26.7.0\)",
    ):
        listing.charts()


def test_each_image_is_looked_up_in_its_own_registry_once() -> None:
    listing, registries = catalog(charts=["gpu-operator"], strict_name_match=True)
    listing.charts()
    assert set(registries) == {"nvcr.io", "registry.k8s.io"}
    assert registries["registry.k8s.io"].asked == ["registry.k8s.io/nfd/node-feature-discovery:v0.17.2"]
    assert len(registries["nvcr.io"].asked) == len(set(registries["nvcr.io"].asked))


def test_an_image_missing_upstream_names_the_chart_the_image_and_the_values_path() -> None:
    missing = ("nvcr.io/nvidia/driver:595.91.07-rhel9.6",)
    listing, _registries = catalog(
        missing, charts=["nvidia/gpu-operator:v26.7.0"], driver_os=["ubuntu22.04", "rhel9.6"]
    )
    with pytest.raises(AirgapError) as error:
        listing.charts()
    assert str(error.value).startswith(
        "chart nvidia/gpu-operator v26.7.0: the image nvcr.io/nvidia/driver:595.91.07-rhel9.6 "
        "(values driver) is missing upstream: nvcr.io has no such manifest"
    )


def test_values_of_the_wrong_kind_name_the_chart() -> None:
    listing, _registries = catalog(charts=["nvidia/gpu-operator:v26.7.0"], values={"driver": {"enabled": "no"}})
    with pytest.raises(
        ConfigError, match=r"^chart nvidia/gpu-operator v26.7.0: values.driver.enabled is a string 'no'"
    ):
        listing.charts()


def test_without_digests_nothing_is_looked_up() -> None:
    listing, registries = catalog(charts=["nvidia/gpu-operator:v26.7.0"], include_digests=False)
    assert all(image.digest is None for image in listing.charts()[0].images)
    assert registries == {}


def test_images_are_listed_with_charts_only_when_asked_and_an_empty_selection_is_named() -> None:
    assert lists_images({"charts": None}) and not lists_images({"charts": ["gpu-operator"]})
    assert lists_images({"charts": ["gpu-operator"], "images": ["pytorch"]})
    message = empty_chart_selection({"charts": ["gpu-operater"], "helm_url": HELM, "strict_name_match": True}, [])
    expected = f'The selection picked no chart from the Helm repository {HELM}/nvidia with charts ["gpu-operater"], strict_name_match true'
    assert message is not None and message.startswith(expected)
    assert empty_chart_selection({"charts": ["x"], "allow_empty": True}, []) is None
