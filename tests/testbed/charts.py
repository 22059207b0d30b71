# Copyright (c) airgap.ngc contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A GPU-Operator-shaped Helm chart in two versions, the Helm repository that serves it, and its images.

``seed_charts`` writes NGC's Helm repository for the org ``nvidia`` under ``<helm_dir>/nvidia/`` (``index.yaml`` and
``charts/<name>-<version>.tgz``, served by the NGC stand-in under ``/helm``), pushes every image the chart can name
(small generated images: one base layer shared by all and one layer of their own) into the token registry
(``nvcr.io/...`` images, at the same path) and the k8s registry (``registry.k8s.io/...``, anonymous), and returns
the oracle: for each chart version, each image record with its values path, whether it is enabled by default, the OS
it is for (driver, GDS and GDRCopy tags end in ``-<os>``) and the digest the registry took.

The chart follows NVIDIA/gpu-operator's ``deployments/gpu-operator``: ``values.yaml`` names each component as
``repository`` / ``image`` / ``version`` with ``enabled`` where it can be switched off, the operator and validator
without a version (the chart's ``appVersion``), GDS, GDRCopy, the node status exporter, DCGM, CC manager and the vGPU
manager disabled, and the ``node-feature-discovery`` subchart (a nested .tgz, ``condition: nfd.enabled``) whose image
is ``registry.k8s.io/nfd/node-feature-discovery`` with its appVersion as tag. Templates render the operator's
Deployment, the ClusterPolicy (the components as fields, as the real chart passes them) and NFD's DaemonSet.
v26.7.0 differs from v26.3.0 by its operator and validator (their tag is the appVersion) and by two new images: a new
driver (one tag per OS) and a new device plugin (also GFD's).
Archives are byte-for-byte the same on every run (fixed mtimes, sorted members, gzip without a time stamp).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import tarfile
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ._blobs import BlobInfo, LayerSpec, LayerStream, image_config, image_manifest
from ._common import write_json
from ._push import Pusher, PushError

ORG = "nvidia"
CHART = "gpu-operator"
NFD = "node-feature-discovery"
NGC_HOST = "nvcr.io"
K8S_HOST = "registry.k8s.io"
HELM_PATH = "/helm"
"""Where the NGC stand-in serves the Helm repository: ``<ngc_api_url>/helm/<org>/index.yaml``."""
DRIVER_OS = ("ubuntu22.04", "ubuntu24.04", "rhel9.6")
"""The OS tags the bed pushes for the driver, GDS and GDRCopy. ``rhel8.10`` is missing on purpose."""
MISSING_OS = "rhel8.10"
MTIME = 1700000000
CREATED = {"v26.3.0": "2026-03-17T12:00:00.000000000Z", "v26.7.0": "2026-07-21T12:00:00.000000000Z"}
VERSIONS = tuple(CREATED)
NFD_VERSION = ("0.17.2", "v0.17.2")
BASE_LAYER = LayerSpec(name="chart-base", size=4096, file_max=4096, level=1)
OWN_LAYER_BYTES = 256


@dataclass(frozen=True)
class Component:
    """One image field group of values.yaml."""

    path: str  # values path: driver, driver.manager, node-feature-discovery.image
    repository: str
    image: str
    version: str | None  # None: the chart's appVersion
    enabled: bool = True
    os_suffixed: bool = False
    pushed: bool = True

    def tags(self, app_version: str) -> list[tuple[str, str | None]]:
        """(tag, os) of every tag of this component the bed pushes."""
        version = self.version or app_version
        if self.os_suffixed:
            return [(f"{version}-{system}", system) for system in DRIVER_OS]
        return [(version, None)]


def components(version: str) -> list[Component]:
    """The components of the chart at ``version``, in values.yaml order."""
    newer = version == "v26.7.0"
    driver = "595.91.07" if newer else "580.82.07"
    plugin = "v0.18.0" if newer else "v0.17.4"
    return [
        Component("operator", f"{NGC_HOST}/nvidia", "gpu-operator", None),
        Component("validator", f"{NGC_HOST}/nvidia/cloud-native", "gpu-operator-validator", None),
        Component("driver", f"{NGC_HOST}/nvidia", "driver", driver, os_suffixed=True),
        Component("driver.manager", f"{NGC_HOST}/nvidia/cloud-native", "k8s-driver-manager", "v0.8.1"),
        Component("toolkit", f"{NGC_HOST}/nvidia/k8s", "container-toolkit", "v1.17.8-ubuntu20.04"),
        Component("devicePlugin", f"{NGC_HOST}/nvidia", "k8s-device-plugin", plugin),
        Component("dcgm", f"{NGC_HOST}/nvidia/cloud-native", "dcgm", "4.2.3-1-ubuntu22.04", enabled=False),
        Component("dcgmExporter", f"{NGC_HOST}/nvidia/k8s", "dcgm-exporter", "4.2.3-4.1.3-ubuntu22.04"),
        Component("gfd", f"{NGC_HOST}/nvidia", "k8s-device-plugin", plugin),
        Component("migManager", f"{NGC_HOST}/nvidia/cloud-native", "k8s-mig-manager", "v0.12.2-ubuntu20.04"),
        Component(
            "nodeStatusExporter", f"{NGC_HOST}/nvidia/cloud-native", "gpu-operator-validator", None, enabled=False
        ),
        Component("gds", f"{NGC_HOST}/nvidia/cloud-native", "nvidia-fs", "2.20.5", enabled=False, os_suffixed=True),
        Component("gdrcopy", f"{NGC_HOST}/nvidia/cloud-native", "gdrdrv", "v2.5", enabled=False, os_suffixed=True),
        Component("vgpuManager", "", "vgpu-manager", "", enabled=False, pushed=False),
        Component("vgpuDeviceManager", f"{NGC_HOST}/nvidia/cloud-native", "vgpu-device-manager", "v0.3.0"),
        Component("sandboxDevicePlugin", f"{NGC_HOST}/nvidia", "kubevirt-gpu-device-plugin", "v1.3.1"),
        Component("ccManager", f"{NGC_HOST}/nvidia/cloud-native", "k8s-cc-manager", "v0.1.1", enabled=False),
    ]


NFD_IMAGE = Component(f"{NFD}.image", f"{K8S_HOST}/nfd", "node-feature-discovery", None)


def _values(version: str) -> dict[str, Any]:
    """values.yaml of the chart: the real structure, with fields around the image fields as the real one has them."""
    values: dict[str, Any] = {
        "platform": {"openshift": False},
        "nfd": {"enabled": True, "nodefeaturerules": False},
        "psa": {"enabled": False},
        "cdi": {"enabled": True, "default": False},
        "sandboxWorkloads": {"enabled": False, "defaultWorkload": "container"},
        "hostPaths": {"rootFS": "/", "driverInstallDir": "/run/nvidia/driver"},
        "daemonsets": {
            "labels": {},
            "annotations": {},
            "priorityClassName": "system-node-critical",
            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        },
    }
    for component in components(version):
        head, _sep, tail = component.path.partition(".")
        node = values.setdefault(head, {})
        if tail:
            node = node.setdefault(tail, {})
        if component.path not in ("operator", "validator", "driver.manager"):
            node["enabled"] = component.enabled
        node["repository"] = component.repository
        node["image"] = component.image
        if component.version is not None:
            node["version"] = component.version
        node["imagePullPolicy"] = "IfNotPresent"
        node.setdefault("env", [])
    values["operator"].update(
        {
            "priorityClassName": "system-node-critical",
            "defaultRuntime": "docker",
            "runtimeClass": "nvidia",
            "initContainer": {},
            "resources": {"limits": {"cpu": "500m"}},
        }
    )
    values["validator"]["plugin"] = {"env": [{"name": "WITH_WORKLOAD", "value": "false"}]}
    values["driver"].update(
        {
            "usePrecompiled": False,
            "kernelModuleType": "auto",
            "upgradePolicy": {"autoUpgrade": True},
            "licensingConfig": {"configMapName": ""},
            "repoConfig": {"configMapName": ""},
        }
    )
    values["toolkit"]["installDir"] = "/usr/local/nvidia"
    values["devicePlugin"]["config"] = {"name": "", "default": ""}
    values["dcgmExporter"]["serviceMonitor"] = {"enabled": False}
    values["migManager"]["config"] = {"name": "default-mig-parted-config", "default": "all-disabled"}
    values[NFD] = {
        "enableNodeFeatureApi": True,
        "priorityClassName": "system-node-critical",
        "worker": {
            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Equal", "value": "present", "effect": "NoSchedule"}]
        },
    }
    return values


_OPERATOR_TEMPLATE = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: gpu-operator
  namespace: {{ .Release.Namespace }}
  labels:
    app: gpu-operator
spec:
  replicas: 1
  selector:
    matchLabels:
      app: gpu-operator
  template:
    metadata:
      labels:
        app: gpu-operator
    spec:
      serviceAccountName: gpu-operator
      containers:
      - name: gpu-operator
        image: {{ .Values.operator.repository }}/{{ .Values.operator.image }}:{{ .Values.operator.version | default .Chart.AppVersion }}
        imagePullPolicy: {{ .Values.operator.imagePullPolicy }}
        env:
        - name: OPERATOR_NAMESPACE
          value: {{ .Release.Namespace }}
"""

_CLUSTERPOLICY_TEMPLATE = """\
apiVersion: nvidia.com/v1
kind: ClusterPolicy
metadata:
  name: cluster-policy
spec:
  operator:
    defaultRuntime: {{ .Values.operator.defaultRuntime }}
    runtimeClass: {{ .Values.operator.runtimeClass }}
  daemonsets:
    priorityClassName: {{ .Values.daemonsets.priorityClassName }}
  validator:
    repository: {{ .Values.validator.repository }}
    image: {{ .Values.validator.image }}
    version: {{ .Values.validator.version | default .Chart.AppVersion | quote }}
  nodeStatusExporter:
    enabled: {{ .Values.nodeStatusExporter.enabled }}
    repository: {{ .Values.nodeStatusExporter.repository }}
    image: {{ .Values.nodeStatusExporter.image }}
    version: {{ .Values.nodeStatusExporter.version | default .Chart.AppVersion | quote }}
{{- range $key := list "driver" "toolkit" "devicePlugin" "dcgm" "dcgmExporter" "gfd" "migManager" "gds" "gdrcopy" \
"vgpuManager" "vgpuDeviceManager" "sandboxDevicePlugin" "ccManager" }}
  {{ $key }}:
    {{- toYaml (index $.Values $key) | nindent 4 }}
{{- end }}
"""

_NFD_TEMPLATE = """\
apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: {{ .Release.Name }}-node-feature-discovery-worker
  namespace: {{ .Release.Namespace }}
spec:
  selector:
    matchLabels:
      app: nfd-worker
  template:
    metadata:
      labels:
        app: nfd-worker
    spec:
      containers:
      - name: worker
        image: {{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
        imagePullPolicy: {{ .Values.image.pullPolicy }}
"""


def _tgz(files: dict[str, bytes]) -> bytes:
    """A deterministic .tgz of files (sorted, fixed times and owners, gzip without a name or time)."""
    plain = io.BytesIO()
    with tarfile.open(fileobj=plain, mode="w", format=tarfile.USTAR_FORMAT) as archive:
        for name in sorted(files):
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode, info.uname, info.gname = len(files[name]), MTIME, 0o644, "root", "root"
            archive.addfile(info, io.BytesIO(files[name]))
    packed = io.BytesIO()
    with gzip.GzipFile(fileobj=packed, mode="wb", mtime=0, filename="") as handle:
        handle.write(plain.getvalue())
    return packed.getvalue()


def _yaml(data: Any) -> bytes:
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False).encode("utf-8")


def nfd_chart() -> bytes:
    chart = {
        "apiVersion": "v2",
        "name": NFD,
        "version": NFD_VERSION[0],
        "appVersion": NFD_VERSION[1],
        "description": "Detects hardware features available on each node in a Kubernetes cluster, and advertises "
        "those features using node labels",
        "type": "application",
    }
    values = {
        "image": {"repository": f"{K8S_HOST}/nfd/node-feature-discovery", "pullPolicy": "IfNotPresent", "tag": ""},
        "enableNodeFeatureApi": False,
        "priorityClassName": "",
        "worker": {"tolerations": [], "config": {"sources": {"pci": {"deviceLabelFields": ["vendor"]}}}},
    }
    return _tgz(
        {
            f"{NFD}/Chart.yaml": _yaml(chart),
            f"{NFD}/values.yaml": _yaml(values),
            f"{NFD}/templates/worker.yaml": _NFD_TEMPLATE.encode("utf-8"),
        }
    )


def chart_metadata(version: str) -> dict[str, Any]:
    return {
        "apiVersion": "v2",
        "name": CHART,
        "version": version,
        "appVersion": version,
        "kubeVersion": ">= 1.16.0-0",
        "description": "NVIDIA GPU Operator creates/configures/manages GPUs atop Kubernetes",
        "home": "https://github.com/NVIDIA/gpu-operator",
        "icon": "https://assets.nvidiagrid.net/ngc/logos/GPUoperator.png",
        "keywords": ["gpu", "cuda", "compute", "operator", "deep learning", "monitoring", "tesla"],
        "dependencies": [
            {
                "name": NFD,
                "version": NFD_VERSION[0],
                "condition": "nfd.enabled",
                "repository": "https://kubernetes-sigs.github.io/node-feature-discovery/charts",
            }
        ],
    }


def gpu_operator_chart(version: str) -> bytes:
    """The chart archive of one version."""
    return _tgz(
        {
            f"{CHART}/Chart.yaml": _yaml(chart_metadata(version)),
            f"{CHART}/values.yaml": _yaml(_values(version)),
            f"{CHART}/templates/operator.yaml": _OPERATOR_TEMPLATE.encode("utf-8"),
            f"{CHART}/templates/clusterpolicy.yaml": _CLUSTERPOLICY_TEMPLATE.replace("\\\n", "").encode("utf-8"),
            f"{CHART}/charts/{NFD}-{NFD_VERSION[0]}.tgz": nfd_chart(),
        }
    )


def chart_file(version: str) -> str:
    return f"{CHART}-{version}.tgz"


def write_repository(helm_dir: Path, helm_url: str) -> dict[str, dict[str, Any]]:
    """index.yaml and the archives under ``<helm_dir>/<org>/``; the older version's URL is relative, the newer's
    absolute (NGC's index has both kinds). Returns the archive facts by version."""
    org_dir = helm_dir / ORG
    (org_dir / "charts").mkdir(parents=True, exist_ok=True)
    facts: dict[str, dict[str, Any]] = {}
    entries = []
    for version in reversed(VERSIONS):  # newest first, as Helm writes the index
        data = gpu_operator_chart(version)
        (org_dir / "charts" / chart_file(version)).write_bytes(data)
        digest = hashlib.sha256(data).hexdigest()
        relative = f"charts/{chart_file(version)}"
        url = f"{helm_url}/{ORG}/{relative}" if version == VERSIONS[-1] else relative
        metadata = chart_metadata(version)
        entries.append({**metadata, "created": CREATED[version], "digest": digest, "urls": [url]})
        facts[version] = {
            "file": chart_file(version),
            "digest": f"sha256:{digest}",
            "size": len(data),
            "url": f"{helm_url}/{ORG}/{relative}",
            "app_version": version,
        }
    index = {"apiVersion": "v1", "entries": {CHART: entries}, "generated": "2026-07-21T12:00:00.000000000Z"}
    (org_dir / "index.yaml").write_bytes(_yaml(index))
    return facts


class _ImagePusher:
    """Pushes small images: one shared base layer per registry and a layer, a config and a manifest of their own."""

    def __init__(self, pusher: Pusher, seed: int) -> None:
        self.pusher = pusher
        self.seed = seed
        self.base: dict[str, Any] | None = None

    def _base(self, repository: str) -> BlobInfo:
        if self.base is None:
            stream = LayerStream(self.seed, BASE_LAYER)
            data = b"".join(stream)
            if stream.info is None:
                raise PushError("the chart images' base layer did not generate")
            self.pusher.upload_bytes(repository, data)
            self.base = {"info": stream.info, "repo": repository}
            return stream.info
        info: BlobInfo = self.base["info"]
        if not self.pusher.blob_exists(repository, info.digest):
            location = self.pusher.mount(repository, info.digest, self.base["repo"])
            if location is not None:
                raise PushError(f"the registry would not mount the chart images' base layer into {repository}")
        return info

    def push(self, repository: str, tag: str) -> str:
        base = self._base(repository)
        name = f"{repository}:{tag}"
        stream = LayerStream(
            self.seed,
            LayerSpec(
                name=name.replace("/", "_").replace(":", "_"), size=OWN_LAYER_BYTES, file_max=OWN_LAYER_BYTES, level=1
            ),
        )
        data = b"".join(stream)
        if stream.info is None:
            raise PushError(f"layer of {name} did not generate")
        own = self.pusher.upload_bytes(repository, data)
        own.diff_id = stream.info.diff_id
        labels = {"com.nvidia.testbed.image": name, "com.nvidia.testbed.seed": str(self.seed)}
        config = self.pusher.upload_bytes(
            repository,
            image_config("amd64", "2026-07-01T00:00:00Z", [base.diff_id, own.diff_id], ["chart-base", name], labels),
        )
        media_type, body = image_manifest(False, config, [base, own])
        return self.pusher.put_manifest(repository, tag, media_type, body)


def seed_charts(
    helm_dir: Path,
    helm_url: str,
    ngc_registry_url: str,
    k8s_registry_url: str,
    api_key: str,
    out: Path,
    seed: int = 1,
    workers: int = 4,
) -> dict[str, Any]:
    """Write the Helm repository, push every image the chart's versions can name, write the oracle to ``out``."""
    archives = write_repository(helm_dir, helm_url)
    logins = {
        NGC_HOST: (ngc_registry_url.rstrip("/"), "$oauthtoken", api_key),
        K8S_HOST: (k8s_registry_url.rstrip("/"), "", ""),
    }
    wanted: dict[str, tuple[str, str, str]] = {}  # reference -> (host, repository path, tag)
    for version in VERSIONS:
        for component in components(version) + [NFD_IMAGE]:
            host, _sep, path = component.repository.partition("/")
            for tag, _system in component.tags(NFD_VERSION[1] if component is NFD_IMAGE else version):
                if component.pushed:
                    wanted.setdefault(
                        f"{component.repository}/{component.image}:{tag}", (host, f"{path}/{component.image}", tag)
                    )
    first = {host: _ImagePusher(Pusher(*logins[host]), seed) for host in logins}
    local = threading.local()
    made: list[Pusher] = [item.pusher for item in first.values()]
    lock = threading.Lock()

    def push(reference: str) -> str:
        host, path, tag = wanted[reference]
        pushers = getattr(local, "pushers", None)
        if pushers is None:
            pushers = local.pushers = {}
        if host not in pushers:
            pushers[host] = _ImagePusher(Pusher(*logins[host]), seed)
            pushers[host].base = first[host].base
            with lock:
                made.append(pushers[host].pusher)
        return pushers[host].push(path, tag)

    try:
        pushed: dict[str, str] = {}
        for host, pusher in first.items():  # the base layer of each registry first, then the rest in parallel
            reference = next(ref for ref, item in wanted.items() if item[0] == host)
            pushed[reference] = pusher.push(wanted[reference][1], wanted[reference][2])
        rest = [reference for reference in wanted if reference not in pushed]
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            pushed.update(zip(rest, pool.map(push, rest)))
    finally:
        for pusher in made:
            pusher.session.close()
    charts: dict[str, Any] = {}
    for version in VERSIONS:
        records = []
        for component in components(version) + [NFD_IMAGE]:
            for tag, system in component.tags(NFD_VERSION[1] if component is NFD_IMAGE else version):
                reference = f"{component.repository}/{component.image}:{tag}"
                if component.pushed:
                    records.append(
                        {
                            "reference": reference,
                            "digest": pushed[reference],
                            "from": component.path,
                            "enabled": component.enabled,
                            "os": system,
                        }
                    )
        charts[version] = {**archives[version], "images": records}
    document = {
        "helm_url": helm_url,
        "org": ORG,
        "name": f"{ORG}/{CHART}",
        "chart": CHART,
        "versions": list(VERSIONS),
        "driver_os": list(DRIVER_OS),
        "missing_os": MISSING_OS,
        "ngc_host": NGC_HOST,
        "k8s_host": K8S_HOST,
        "charts": charts,
    }
    write_json(out, document, mode=0o644)
    return document


def expected_images(
    document: dict[str, Any],
    version: str,
    driver_os: list[str],
    enabled: tuple[str, ...] = (),
    disabled: tuple[str, ...] = (),
) -> dict[str, str]:
    """The oracle: reference -> digest of every image the chart at ``version`` deploys for ``driver_os``, with the
    components (values paths) in ``enabled`` switched on and those in ``disabled`` off."""
    found: dict[str, str] = {}
    for record in document["charts"][version]["images"]:
        head = record["from"].split(".")[0]
        on = (record["enabled"] or head in enabled) and head not in disabled
        if on and (record["os"] is None or record["os"] in driver_os):
            found[record["reference"]] = record["digest"]
    return found


@dataclass
class ChartOracle:
    """What the bed's Helm repository holds, as the chart seeder recorded it: the fixture ``helm_charts``."""

    __test__ = False

    document: dict[str, Any]

    @property
    def url(self) -> str:
        """The Helm repository root (``helm_url``): the org's index is ``<url>/nvidia/index.yaml``."""
        return str(self.document["helm_url"])

    @property
    def name(self) -> str:
        """The chart as the collection names it: ``nvidia/gpu-operator``."""
        return str(self.document["name"])

    @property
    def versions(self) -> list[str]:
        """The chart's versions, oldest first."""
        return list(self.document["versions"])

    @property
    def driver_os(self) -> list[str]:
        """The OS tags pushed for the driver, GDS and GDRCopy; ``missing_os`` is one that is not."""
        return list(self.document["driver_os"])

    @property
    def missing_os(self) -> str:
        return str(self.document["missing_os"])

    def archive(self, version: str) -> dict[str, Any]:
        """``file``, ``digest`` (sha256 of the .tgz), ``size``, ``url`` and ``app_version`` of one version."""
        return {k: v for k, v in self.document["charts"][version].items() if k != "images"}

    def records(self, version: str) -> list[dict[str, Any]]:
        """Every image record of one version: ``reference``, ``digest``, ``from``, ``enabled``, ``os``."""
        return list(self.document["charts"][version]["images"])

    def images(
        self, version: str, driver_os: list[str], enabled: tuple[str, ...] = (), disabled: tuple[str, ...] = ()
    ) -> dict[str, str]:
        """reference -> digest of every image the version deploys (see ``expected_images``)."""
        return expected_images(self.document, version, driver_os, enabled, disabled)
