# Copyright (c) airgap.ngc contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Charts: references and selections, a chart archive read as untrusted media, and the images a GPU-Operator-shaped
chart deploys (every component, enabled and disabled ones, appVersion defaults, OS suffixes, digests, NFD)."""

from __future__ import annotations

import io
import json
import tarfile
from typing import Any

import pytest
import yaml

from ansible_collections.airgap.ngc.plugins.module_utils._formats import helm_chart
from ansible_collections.airgap.ngc.plugins.module_utils._formats.helm_chart import ChartPackage, helm_oci_config
from ansible_collections.airgap.ngc.plugins.module_utils._types.charts import (
    ChartRef,
    ChartSelection,
    oci_chart_repository,
    oci_chart_tag,
    validate_driver_os,
)
from ansible_collections.airgap.ngc.plugins.module_utils._types.errors import AirgapError, ConfigError

DIGEST = "sha256:" + "ab" * 32
LABEL = "chart nvidia/gpu-operator v26.7.0"


def tgz(files: dict[str, Any], links: dict[str, str] | None = None, hardlinks: dict[str, str] | None = None) -> bytes:
    """A .tgz of files (dicts and lists become YAML), symbolic links and hard links."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, data in files.items():
            if isinstance(data, (dict, list)):
                data = yaml.safe_dump(data).encode()
            elif isinstance(data, str):
                data = data.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        for kind, table in ((tarfile.SYMTYPE, links or {}), (tarfile.LNKTYPE, hardlinks or {})):
            for name, target in table.items():
                info = tarfile.TarInfo(name)
                info.type, info.linkname = kind, target
                archive.addfile(info)
    return buffer.getvalue()


def nfd_chart(tag: str = "") -> bytes:
    return tgz(
        {
            "node-feature-discovery/Chart.yaml": {
                "apiVersion": "v2",
                "name": "node-feature-discovery",
                "version": "0.17.2",
                "appVersion": "v0.17.2",
            },
            "node-feature-discovery/values.yaml": {
                "image": {
                    "repository": "registry.k8s.io/nfd/node-feature-discovery",
                    "pullPolicy": "IfNotPresent",
                    "tag": tag,
                }
            },
        }
    )


def operator_values() -> dict[str, Any]:
    """The structure of NVIDIA/gpu-operator's deployments/gpu-operator/values.yaml, shortened."""
    return {
        "nfd": {"enabled": True},
        "sandboxWorkloads": {"enabled": False},
        "operator": {
            "repository": "nvcr.io/nvidia",
            "image": "gpu-operator",
            "imagePullPolicy": "IfNotPresent",
            "initContainer": {},
            "defaultRuntime": "docker",
        },
        "validator": {
            "repository": "nvcr.io/nvidia/cloud-native",
            "image": "gpu-operator-validator",
            "plugin": {"env": [{"name": "WITH_WORKLOAD", "value": "false"}]},
        },
        "driver": {
            "enabled": True,
            "usePrecompiled": False,
            "repository": "nvcr.io/nvidia",
            "image": "driver",
            "version": "595.91.07",
            "repoConfig": {"configMapName": ""},
            "manager": {
                "image": "k8s-driver-manager",
                "repository": "nvcr.io/nvidia/cloud-native",
                "version": "v0.8.1",
            },
        },
        "toolkit": {
            "enabled": True,
            "repository": "nvcr.io/nvidia/k8s",
            "image": "container-toolkit",
            "version": "v1.17.8-ubuntu20.04",
        },
        "devicePlugin": {
            "enabled": True,
            "repository": "nvcr.io/nvidia",
            "image": "k8s-device-plugin",
            "version": "v0.18.0",
        },
        "dcgm": {
            "enabled": False,
            "repository": "nvcr.io/nvidia/cloud-native",
            "image": "dcgm",
            "version": "4.2.3-1-ubuntu22.04",
        },
        "dcgmExporter": {
            "enabled": True,
            "repository": "nvcr.io/nvidia/k8s",
            "image": "dcgm-exporter",
            "version": "4.2.3-4.1.3-ubuntu22.04",
            "serviceMonitor": {"enabled": False},
        },
        "gfd": {"enabled": True, "repository": "nvcr.io/nvidia", "image": "k8s-device-plugin", "version": "v0.18.0"},
        "migManager": {
            "enabled": True,
            "repository": "nvcr.io/nvidia/cloud-native",
            "image": "k8s-mig-manager",
            "version": "v0.12.2-ubuntu20.04",
        },
        "nodeStatusExporter": {
            "enabled": False,
            "repository": "nvcr.io/nvidia/cloud-native",
            "image": "gpu-operator-validator",
        },
        "gds": {
            "enabled": False,
            "repository": "nvcr.io/nvidia/cloud-native",
            "image": "nvidia-fs",
            "version": "2.20.5",
        },
        "gdrcopy": {
            "enabled": False,
            "repository": "nvcr.io/nvidia/cloud-native",
            "image": "gdrdrv",
            "version": "v2.5",
        },
        "vgpuManager": {
            "enabled": False,
            "repository": "",
            "image": "vgpu-manager",
            "version": "",
            "driverManager": {
                "repository": "nvcr.io/nvidia/cloud-native",
                "image": "k8s-driver-manager",
                "version": "v0.8.1",
            },
        },
        "ccManager": {
            "enabled": False,
            "repository": "nvcr.io/nvidia/cloud-native",
            "image": "k8s-cc-manager",
            "version": "v0.1.1",
        },
        "node-feature-discovery": {"enableNodeFeatureApi": True, "worker": {"tolerations": []}},
    }


def operator_chart(values: dict[str, Any] | None = None, nfd: bytes | None = None, name: str = "gpu-operator") -> bytes:
    return tgz(
        {
            f"{name}/Chart.yaml": {
                "apiVersion": "v2",
                "name": name,
                "version": "v26.7.0",
                "appVersion": "v26.7.0",
                "description": "NVIDIA GPU Operator",
                "keywords": ["gpu", "cuda"],
                "dependencies": [
                    {
                        "name": "node-feature-discovery",
                        "version": "0.17.2",
                        "condition": "nfd.enabled",
                        "repository": "https://kubernetes-sigs.github.io/node-feature-discovery/charts",
                    }
                ],
            },
            f"{name}/values.yaml": operator_values() if values is None else values,
            f"{name}/templates/operator.yaml": "kind: Deployment\n",
            f"{name}/charts/node-feature-discovery-0.17.2.tgz": nfd_chart() if nfd is None else nfd,
        }
    )


@pytest.fixture
def chart() -> ChartPackage:
    return ChartPackage.from_bytes(operator_chart(), LABEL)


def refs(images: list[Any]) -> dict[str, str]:
    return {image.reference: image.from_path for image in images}


DEFAULT = {
    "registry.k8s.io/nfd/node-feature-discovery:v0.17.2": "node-feature-discovery.image",
    "nvcr.io/nvidia/gpu-operator:v26.7.0": "operator",
    "nvcr.io/nvidia/cloud-native/gpu-operator-validator:v26.7.0": "validator",
    "nvcr.io/nvidia/driver:595.91.07-ubuntu22.04": "driver",
    "nvcr.io/nvidia/driver:595.91.07-rhel9.6": "driver",
    "nvcr.io/nvidia/cloud-native/k8s-driver-manager:v0.8.1": "driver.manager",
    "nvcr.io/nvidia/k8s/container-toolkit:v1.17.8-ubuntu20.04": "toolkit",
    "nvcr.io/nvidia/k8s-device-plugin:v0.18.0": "devicePlugin, gfd",
    "nvcr.io/nvidia/k8s/dcgm-exporter:4.2.3-4.1.3-ubuntu22.04": "dcgmExporter",
    "nvcr.io/nvidia/cloud-native/k8s-mig-manager:v0.12.2-ubuntu20.04": "migManager",
}


# -- references and selections ---------------------------------------------------------------------


def test_chart_reference_forms() -> None:
    assert ChartRef.parse("nvidia/gpu-operator:v26.7.0") == ChartRef("nvidia", None, "gpu-operator", "v26.7.0")
    assert ChartRef.parse("nvidia/nim/nim-llm") == ChartRef("nvidia", "nim", "nim-llm", None)
    assert ChartRef.parse("gpu-operator:1.2.3+build.4") == ChartRef("nvidia", None, "gpu-operator", "1.2.3+build.4")
    assert str(ChartRef.parse("nvidia/nim/nim-llm:1.0")) == "nvidia/nim/nim-llm:1.0"


@pytest.mark.parametrize(
    "text,fragment",
    [
        ("", "expected <org>[/<team>]/<name>"),
        ("nvidia/GPU-operator:v1", "must be lower case"),
        ("nvidia/gpu-operator:", "the version '' must be"),
        ("nvidia/gpu-operator:v1 2", "the version 'v1 2' must be"),
        ("a/b/c/d", "not 4 parts"),
    ],
)
def test_chart_reference_refused(text: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as error:
        ChartRef.parse(text, option="charts item 1")
    assert fragment in str(error.value) and "charts item 1" in str(error.value)


def test_selection_from_a_dict_and_a_string() -> None:
    chosen = ChartSelection.from_value(
        {
            "name": "nvidia/gpu-operator",
            "version": "v26.7.0",
            "values": {"gds": {"enabled": True}},
            "driver_os": ["ubuntu22.04", "rhel9.6", "ubuntu22.04"],
        }
    )
    assert chosen.ref == ChartRef("nvidia", None, "gpu-operator", "v26.7.0")
    assert chosen.values == {"gds": {"enabled": True}} and chosen.driver_os == ["ubuntu22.04", "rhel9.6"]
    plain = ChartSelection.from_value("nvidia/gpu-operator:v26.7.0", driver_os=["ubuntu24.04"])
    assert plain.driver_os == ["ubuntu24.04"] and plain.values == {}


@pytest.mark.parametrize(
    "item,fragment",
    [
        ({"name": "gpu-operator", "verison": "1"}, "unknown key 'verison'"),
        ({"name": "gpu-operator:v1", "version": "v2"}, "give one"),
        ({"name": "gpu-operator", "version": 26.7}, "must be a string"),
        ({"name": "gpu-operator", "values": ["driver"]}, "invalid charts item 2 values: expected a mapping"),
        (
            {"name": "gpu-operator", "driver_os": ["Ubuntu 22.04"]},
            "invalid charts item 2 driver_os item 1 'Ubuntu 22.04'",
        ),
        ({"name": "gpu-operator", "driver_os": "ubuntu22.04"}, "expected a list"),
        (7, "invalid charts item 2 7"),
    ],
)
def test_selection_refused_naming_the_item(item: Any, fragment: str) -> None:
    with pytest.raises(ConfigError) as error:
        ChartSelection.from_value(item, "charts item 2")
    assert fragment in str(error.value)


@pytest.mark.parametrize("value", ["ubuntu22.04", "ubuntu24.04", "rhel9.6", "rhcos4.16", "rhel8"])
def test_driver_os_forms(value: str) -> None:
    assert validate_driver_os([value]) == [value]


@pytest.mark.parametrize("value", ["ubuntu", "22.04", "ubuntu-22.04", "Ubuntu22.04", "ubuntu22.04/x", ""])
def test_driver_os_refused(value: str) -> None:
    with pytest.raises(ConfigError, match="driver_os item 1"):
        validate_driver_os([value])


def test_oci_paths_cannot_collide_with_images() -> None:
    ref = ChartRef.parse("nvidia/gpu-operator:v26.7.0")
    assert oci_chart_repository(None, ref) == "charts/nvidia/gpu-operator"
    assert oci_chart_repository("/site/ngc/", ref) == "site/ngc/charts/nvidia/gpu-operator"
    assert oci_chart_repository("m", ChartRef.parse("nvidia/nim/nim-llm")) == "m/charts/nvidia/nim/nim-llm"
    assert oci_chart_tag("1.2.3+build.4") == "1.2.3_build.4"


# -- discovery ---------------------------------------------------------------------------------------


def test_every_component_of_the_default_values(chart: ChartPackage) -> None:
    assert refs(chart.images(None, ["ubuntu22.04", "rhel9.6"])) == DEFAULT
    assert chart.name == "gpu-operator" and chart.app_version == "v26.7.0" and chart.digest.startswith("sha256:")


def test_disabled_components_are_enabled_by_overrides(chart: ChartPackage) -> None:
    found = refs(
        chart.images(
            {"gds": {"enabled": True}, "dcgm": {"enabled": True}, "nodeStatusExporter": {"enabled": True}},
            ["ubuntu22.04"],
        )
    )
    assert found["nvcr.io/nvidia/cloud-native/nvidia-fs:2.20.5-ubuntu22.04"] == "gds"
    assert found["nvcr.io/nvidia/cloud-native/dcgm:4.2.3-1-ubuntu22.04"] == "dcgm"
    assert set(found["nvcr.io/nvidia/cloud-native/gpu-operator-validator:v26.7.0"].split(", ")) == {
        "validator",
        "nodeStatusExporter",
    }
    assert not any("gdrdrv" in reference for reference in found)


def test_a_disabled_component_takes_what_it_holds_along(chart: ChartPackage) -> None:
    found = refs(chart.images({"driver": {"enabled": False}, "nfd": {"enabled": False}}))
    assert not any("driver" in reference or "node-feature-discovery" in reference for reference in found)
    assert "nvcr.io/nvidia/gpu-operator:v26.7.0" in found


def test_overrides_change_versions_and_repositories(chart: ChartPackage) -> None:
    found = refs(
        chart.images(
            {
                "driver": {"version": "580.82.07", "manager": {"repository": "quay.io/acme"}},
                "node-feature-discovery": {"image": {"tag": "v0.17.9"}},
            },
            ["ubuntu24.04"],
        )
    )
    assert "nvcr.io/nvidia/driver:580.82.07-ubuntu24.04" in found
    assert found["quay.io/acme/k8s-driver-manager:v0.8.1"] == "driver.manager"
    assert "registry.k8s.io/nfd/node-feature-discovery:v0.17.9" in found


def test_app_version_is_the_default_of_the_chart_that_names_the_image(chart: ChartPackage) -> None:
    found = refs(chart.images({"operator": {"version": "v26.7.1"}}, ["ubuntu22.04"]))
    assert "nvcr.io/nvidia/gpu-operator:v26.7.1" in found
    assert "nvcr.io/nvidia/cloud-native/gpu-operator-validator:v26.7.0" in found  # the top chart's appVersion
    assert "registry.k8s.io/nfd/node-feature-discovery:v0.17.2" in found  # the subchart's own appVersion


def test_a_digest_version_gets_no_os_suffix(chart: ChartPackage) -> None:
    found = refs(chart.images({"driver": {"version": DIGEST}}, ["ubuntu22.04", "rhel9.6"]))
    assert found[f"nvcr.io/nvidia/driver@{DIGEST}"] == "driver"
    assert not any(reference.startswith("nvcr.io/nvidia/driver:") for reference in found)


def test_os_suffixed_components_need_driver_os(chart: ChartPackage) -> None:
    with pytest.raises(ConfigError) as error:
        chart.images()
    assert str(error.value).startswith(
        f"{LABEL}: values.driver (nvcr.io/nvidia/driver:595.91.07) is tagged with the OS"
    )
    assert "give driver_os" in str(error.value)
    assert "nvcr.io/nvidia/driver:595.91.07" not in refs(chart.images({"driver": {"enabled": False}}))


def test_precompiled_drivers_are_refused_with_a_reason(chart: ChartPackage) -> None:
    with pytest.raises(ConfigError, match="values.driver.usePrecompiled is true"):
        chart.images({"driver": {"usePrecompiled": True}}, ["ubuntu22.04"])


def test_an_enabled_component_without_a_repository_is_named(chart: ChartPackage) -> None:
    with pytest.raises(ConfigError) as error:
        chart.images({"vgpuManager": {"enabled": True}}, ["ubuntu22.04"])
    assert "values.vgpuManager is enabled but its repository or image is empty" in str(error.value)


@pytest.mark.parametrize(
    "overrides,fragment",
    [
        ({"driver": "yes"}, "values.driver is a string 'yes': expected a mapping"),
        ({"driver": {"version": 595.91}}, "values.driver.version is a number 595.91: expected a string"),
        ({"nfd": {"enabled": "false"}}, "values.nfd.enabled is a string 'false': expected true or false"),
        ({"gds": {"enabled": 1}}, "values.gds.enabled is a number 1: expected true or false"),
        ({"validator": {"plugin": {"env": {"name": "x"}}}}, "values.validator.plugin.env is a mapping"),
        ({"node-feature-discovery": {"image": {"tag": ["v1"]}}}, "values.node-feature-discovery.image.tag is a list"),
    ],
)
def test_overrides_of_the_wrong_kind_name_the_chart_and_the_path(
    chart: ChartPackage, overrides: dict[str, Any], fragment: str
) -> None:
    with pytest.raises(ConfigError) as error:
        chart.images(overrides, ["ubuntu22.04"])
    assert str(error.value).startswith(LABEL) and fragment in str(error.value)


def test_a_null_override_removes_a_value(chart: ChartPackage) -> None:
    found = refs(chart.images({"operator": {"version": None}, "driver": None}))
    assert "nvcr.io/nvidia/gpu-operator:v26.7.0" in found and not any("/driver:" in reference for reference in found)


def test_helm_convention_and_image_strings() -> None:
    values = {
        "image": {"registry": "quay.io", "repository": "acme/server", "tag": "1.2"},
        "sidecar": {"image": "busybox:1.36"},
        "init": {"image": {"repository": "ghcr.io/acme/init", "digest": DIGEST}},
        "jobs": [{"image": "docker.io/acme/job:3"}],
        "templated": {"image": "{{ .Values.x }}"},
        "chartRepo": {"repository": "https://charts.example.com"},
        "bare": {"image": "gpu-operator"},
        "plain": {"image": {"repository": "acme/plain"}},
    }
    archive = tgz(
        {
            "app/Chart.yaml": {"apiVersion": "v2", "name": "app", "version": "1.0.0", "appVersion": "2.0"},
            "app/values.yaml": values,
        }
    )
    found = refs(ChartPackage.from_bytes(archive, "chart app").images())
    assert found == {
        "quay.io/acme/server:1.2": "image",
        "docker.io/library/busybox:1.36": "sidecar.image",
        f"ghcr.io/acme/init@{DIGEST}": "init.image",
        "docker.io/acme/job:3": "jobs[0].image",
        "docker.io/acme/plain:2.0": "plain.image",
    }


def test_a_subchart_directory_and_an_alias() -> None:
    archive = tgz(
        {
            "app/Chart.yaml": {
                "apiVersion": "v2",
                "name": "app",
                "version": "1.0.0",
                "dependencies": [{"name": "db", "version": "1", "alias": "database", "condition": "database.enabled"}],
            },
            "app/values.yaml": {"database": {"image": {"tag": "16"}}},
            "app/charts/db/Chart.yaml": {"apiVersion": "v2", "name": "db", "version": "1.0.0", "appVersion": "15"},
            "app/charts/db/values.yaml": {"enabled": True, "image": {"repository": "postgres", "tag": ""}},
        }
    )
    chart = ChartPackage.from_bytes(archive, "chart app")
    assert refs(chart.images()) == {"docker.io/library/postgres:16": "database.image"}
    assert refs(chart.images({"database": {"enabled": False}})) == {}
    assert chart.values["database"]["image"] == {"repository": "postgres", "tag": "16"}


def test_site_values_point_every_image_at_the_site_registry(chart: ChartPackage) -> None:
    site = chart.site_values({"gds": {"enabled": True}}, "registry.site:5000", "ngc")
    assert site["gds"] == {"enabled": True, "repository": "registry.site:5000/ngc/nvidia/cloud-native"}
    assert site["driver"] == {
        "repository": "registry.site:5000/ngc/nvidia",
        "manager": {"repository": "registry.site:5000/ngc/nvidia/cloud-native"},
    }
    assert site["node-feature-discovery"] == {
        "image": {"repository": "registry.site:5000/ngc/nfd/node-feature-discovery"}
    }
    assert site["operator"] == {"repository": "registry.site:5000/ngc/nvidia"}
    assert "dcgm" not in site and "vgpuManager" not in site  # disabled: nothing to point anywhere
    # The site values give the same images as the source, with the site registry in front of each.
    source = refs(chart.images({"gds": {"enabled": True}}, ["ubuntu22.04"]))
    moved = refs(chart.images(site, ["ubuntu22.04"]))
    assert {
        ref.replace("nvcr.io/", "registry.site:5000/ngc/").replace("registry.k8s.io/", "registry.site:5000/ngc/")
        for ref in source
    } == set(moved)


def test_site_values_of_helm_convention_fields() -> None:
    values = {
        "image": {"registry": "quay.io", "repository": "acme/server", "tag": "1.2"},
        "sidecar": {"image": "busybox:1.36"},
    }
    archive = tgz(
        {"app/Chart.yaml": {"apiVersion": "v2", "name": "app", "version": "1.0.0"}, "app/values.yaml": values}
    )
    site = ChartPackage.from_bytes(archive, "chart app").site_values({}, "https://mirror.site", None)
    assert site == {
        "image": {"registry": "mirror.site", "repository": "acme/server"},
        "sidecar": {"image": "mirror.site/library/busybox:1.36"},
    }


def test_helm_oci_config_is_deterministic_in_helms_field_order(chart: ChartPackage) -> None:
    config = helm_oci_config(chart.metadata)
    assert config == helm_oci_config(dict(reversed(list(chart.metadata.items()))))
    assert list(json.loads(config)) == [
        "name",
        "version",
        "description",
        "keywords",
        "apiVersion",
        "appVersion",
        "dependencies",
    ]
    assert config.startswith(b'{"name":"gpu-operator","version":"v26.7.0","description":"NVIDIA GPU Operator"')
    assert b" " not in config.replace(b"NVIDIA GPU Operator", b"")
    assert (
        helm_oci_config({"name": "a", "version": "1", "description": "<b>&"})
        == b'{"name":"a","version":"1","description":"\\u003cb\\u003e\\u0026"}'
    )


# -- hostile archives --------------------------------------------------------------------------------


CHART_YAML = {"apiVersion": "v2", "name": "evil", "version": "1.0.0"}


@pytest.mark.parametrize(
    "archive,fragment",
    [
        (tgz({"evil/Chart.yaml": CHART_YAML, "evil/../../etc/cron.d/x": "x"}), "leads outside the chart's directory"),
        (tgz({"evil/Chart.yaml": CHART_YAML, "/etc/passwd": "x"}), "leads outside the chart's directory"),
        (tgz({"evil/Chart.yaml": CHART_YAML, "other/values.yaml": "a: 1"}), "outside its directory evil/"),
        (
            tgz({"evil/Chart.yaml": CHART_YAML}, links={"evil/values.yaml": "/etc/shadow"}),
            "holds a link 'evil/values.yaml'",
        ),
        (tgz({"evil/Chart.yaml": CHART_YAML}, hardlinks={"evil/values.yaml": "evil/Chart.yaml"}), "holds a link"),
        (
            tgz({"evil/Chart.yaml": CHART_YAML, "evil/values.yaml": "a: [1, 2\nb: {"}),
            "evil/values.yaml is not valid YAML (line",
        ),
        (tgz({"evil/Chart.yaml": "- a\n- b\n"}), "Chart.yaml is a list, not a mapping"),
        (tgz({"evil/values.yaml": "a: 1"}), "has no evil/Chart.yaml: not a Helm chart"),
        (
            tgz({"evil/Chart.yaml": {"apiVersion": "v2", "name": "other", "version": "1.0.0"}}),
            "keeps the chart 'other' under evil/",
        ),
        (tgz({"evil/Chart.yaml": {"apiVersion": "v2", "name": "evil"}}), "Chart.yaml: it has no version"),
        (b"not a gzip file at all", "is not a gzip-compressed tar archive"),
        (
            tgz({"evil/Chart.yaml": CHART_YAML, "evil/values.yaml": "!!python/object/apply:os.system ['id']"}),
            "is not valid YAML",
        ),
    ],
)
def test_hostile_archives_are_refused_naming_the_chart(archive: bytes, fragment: str) -> None:
    with pytest.raises(AirgapError) as error:
        ChartPackage.from_bytes(archive, "chart acme/evil 1.0.0")
    assert str(error.value).startswith("chart acme/evil 1.0.0") and fragment in str(error.value), str(error.value)


def test_a_hostile_nested_subchart_is_refused_naming_its_path() -> None:
    inner = tgz(
        {"nfd/Chart.yaml": {"apiVersion": "v2", "name": "nfd", "version": "1.0.0"}}, links={"nfd/values.yaml": "/etc"}
    )
    with pytest.raises(AirgapError) as error:
        ChartPackage.from_bytes(operator_chart(nfd=inner), LABEL)
    assert f"{LABEL}: gpu-operator/charts/node-feature-discovery-0.17.2.tgz holds a link 'nfd/values.yaml'" in str(
        error.value
    )


def test_oversized_archives_and_files_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    archive = operator_chart()
    monkeypatch.setattr(helm_chart, "MAX_CHART_BYTES", len(archive) - 1)
    with pytest.raises(AirgapError, match=f"{LABEL} has more than {len(archive) - 1} bytes: refused"):
        ChartPackage.from_bytes(archive, LABEL)
    monkeypatch.undo()
    monkeypatch.setattr(helm_chart, "MAX_YAML_BYTES", 100)
    with pytest.raises(
        AirgapError, match="gpu-operator/(Chart|values).yaml has [0-9]+ bytes, more than the 100 allowed"
    ):
        ChartPackage.from_bytes(archive, LABEL)
    monkeypatch.undo()
    monkeypatch.setattr(helm_chart, "MAX_UNPACKED_BYTES", 500)
    with pytest.raises(AirgapError, match="unpacks to more than 500 bytes"):
        ChartPackage.from_bytes(archive, LABEL)
    monkeypatch.undo()
    monkeypatch.setattr(helm_chart, "MAX_MEMBERS", 3)
    with pytest.raises(AirgapError, match="holds more than 3 files"):
        ChartPackage.from_bytes(archive, LABEL)


def test_subcharts_nested_too_deep_are_refused() -> None:
    archive = tgz({"c0/Chart.yaml": {"apiVersion": "v2", "name": "c0", "version": "1.0.0"}})
    for depth in range(1, 8):
        archive = tgz(
            {
                f"c{depth}/Chart.yaml": {"apiVersion": "v2", "name": f"c{depth}", "version": "1.0.0"},
                f"c{depth}/charts/c{depth - 1}-1.0.0.tgz": archive,
            }
        )
    with pytest.raises(AirgapError, match="nests subcharts more than 5 deep"):
        ChartPackage.from_bytes(archive, "chart deep")


def test_open_reads_a_file_and_names_a_missing_one(tmp_path: Any) -> None:
    path = tmp_path / "gpu-operator-v26.7.0.tgz"
    path.write_bytes(operator_chart())
    assert ChartPackage.open(str(path)).what == "chart gpu-operator-v26.7.0.tgz"
    with pytest.raises(AirgapError, match="cannot read chart x at .*: No such file"):
        ChartPackage.open(str(tmp_path / "missing.tgz"), "chart x")
