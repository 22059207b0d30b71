# Copyright (c) airgap.ngc contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private: a Helm chart archive (.tgz) read as untrusted media, and the images it deploys. Not a public API.

``ChartPackage.open(path)`` reads ``<name>/Chart.yaml``, ``<name>/values.yaml`` and the subcharts under
``<name>/charts/`` (directories or nested .tgz), refusing links, special files, paths outside ``<name>/``, archives
over ``MAX_CHART_BYTES``, more than ``MAX_MEMBERS`` members or ``MAX_UNPACKED_BYTES`` unpacked, and YAML that is not
YAML, each with a message naming the chart and the file. Nothing is written anywhere.

Image discovery (``ChartPackage.images``) works on the chart's values merged with the site's overrides, subcharts
included (under their name or alias, when their ``condition`` holds), without rendering a template:

* ``repository`` + ``image`` [+ ``version``] (the GPU Operator's ClusterPolicy fields): ``<repository>/<image>:<version>``
  (``@<version>`` for a digest);
* ``[registry +] repository`` [+ ``tag``] [+ ``digest``] (the Helm convention, e.g. the NFD subchart's ``image``);
* an ``image:`` string holding a full reference (``busybox:1.36``, ``quay.io/x/y:1``);
* a missing or empty version or tag is the ``appVersion`` of the chart whose values name the image;
* a mapping with ``enabled: false`` is left out with all it holds, unless the overrides enable it;
* the GPU Operator (a chart named ``gpu-operator``) appends ``-<os>`` to the ``driver``, ``gds`` and ``gdrcopy``
  versions for each of ``driver_os``, unless the version is a digest, as the operator does at run time.

``site_values`` gives the overrides with every discovered image's repository pointed at a site registry (the
repository path kept: ``nvcr.io/nvidia/cloud-native`` becomes ``<site>[/<prefix>]/nvidia/cloud-native``,
``registry.k8s.io/nfd/node-feature-discovery`` becomes ``<site>[/<prefix>]/nfd/node-feature-discovery``): the file
``helm install -f`` takes on the far side. ``helm_oci_config`` is the config blob of the chart as an OCI artifact.
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import os
import tarfile
import zlib
from dataclasses import dataclass, field
from typing import Any

from ansible_collections.airgap.ngc.plugins.module_utils._types.charts import (
    MAX_CHART_BYTES,
    ChartImage,
    validate_driver_os,
    validate_values,
    version_problem,
)
from ansible_collections.airgap.ngc.plugins.module_utils._types.errors import AirgapError, ConfigError
from ansible_collections.airgap.ngc.plugins.module_utils._types.reference import ImageReference, registry_host
from ansible_collections.airgap.ngc.plugins.module_utils._clients.helm_repo import load_yaml

MAX_MEMBERS = 10000
"""Most files and directories one chart archive (subcharts' included) may hold."""
MAX_UNPACKED_BYTES = 256 * 1024 * 1024
"""Most bytes one chart archive may unpack to, nested archives counted once each."""
MAX_YAML_BYTES = 8 * 1024 * 1024
"""The largest Chart.yaml, values.yaml or requirements.yaml read."""
MAX_NESTING = 5
"""Subcharts within subcharts, at most."""

OS_SUFFIXED = ("driver", "gds", "gdrcopy")
"""The GPU Operator's components whose version gets ``-<os>`` of each node at run time."""
GPU_OPERATOR = "gpu-operator"
DEFAULT_REGISTRY = "docker.io"
"""Where a node pulls a reference without a registry host from."""

_IMAGE_FIELDS = ("registry", "repository", "image", "version", "tag", "digest")
_READ_NAMES = ("Chart.yaml", "values.yaml", "requirements.yaml")


def _kind(value: Any) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return type(value).__name__


def _show(value: Any) -> str:
    text = json.dumps(value, default=str) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _same_kind(base: Any, value: Any) -> bool:
    if isinstance(base, bool) or isinstance(value, bool):
        return isinstance(base, bool) and isinstance(value, bool)
    if isinstance(base, (int, float)):
        return isinstance(value, (int, float))
    return _kind(base) == _kind(value)


def merge_values(base: dict[str, Any], overrides: dict[str, Any], what: str, path: str = "") -> dict[str, Any]:
    """``base`` with ``overrides`` merged in as Helm merges ``-f`` files (mappings key by key, a null removes a key),
    refusing an override of another kind than the chart's own value (ConfigError naming ``what`` and the values path)."""
    merged = dict(base)
    for key, value in overrides.items():
        where = f"{path}.{key}" if path else str(key)
        if not isinstance(key, str):
            raise ConfigError(f"{what}: values key {key!r} at {path or 'the top'} is not a string")
        if value is None:
            merged.pop(key, None)
            continue
        current = base.get(key)
        if key in _IMAGE_FIELDS and not isinstance(value, str) and not isinstance(value, dict):
            raise ConfigError(
                f"{what}: values.{where} is {_kind(value)} {_show(value)}: expected a string "
                "(quote it in YAML: 1.10 is the number 1.1)"
            )
        if key == "enabled" and not isinstance(value, bool):
            raise ConfigError(f"{what}: values.{where} is {_kind(value)} {_show(value)}: expected true or false")
        if current is not None and not _same_kind(current, value):
            raise ConfigError(
                f"{what}: values.{where} is {_kind(value)} {_show(value)}: expected {_kind(current)}, "
                "as the chart's values.yaml has it"
            )
        merged[key] = merge_values(current, value, what, where) if isinstance(current, dict) else copy.deepcopy(value)
    return merged


def _lookup(values: dict[str, Any], dotted: str) -> Any:
    node: Any = values
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


@dataclass
class _Found:
    """One image node of the values: where it is, what it names, and how to point it at a site registry."""

    path: tuple[str, ...]
    style: str  # "fields" (repository+image+version), "helm" (registry?+repository+tag), "string" (image: ref)
    reference: ImageReference
    suffixed: bool = False
    directory: str = ""  # "fields" style: the repository field's path without its host (nvidia/cloud-native)

    @property
    def dotted(self) -> str:
        return ".".join(self.path)


@dataclass
class ChartPackage:
    """A chart read from its archive: Chart.yaml, values.yaml and its subcharts (by their key in the values)."""

    name: str
    metadata: dict[str, Any]
    own_values: dict[str, Any]
    subcharts: dict[str, ChartPackage] = field(default_factory=dict)
    conditions: dict[str, str] = field(default_factory=dict)  # subchart key -> Chart.yaml's condition
    what: str = ""
    digest: str = ""
    size: int = 0

    # Reading -----------------------------------------------------------------------------------

    @classmethod
    def open(cls, path: str, what: str | None = None) -> ChartPackage:
        """The chart in the archive at ``path``; AirgapError naming ``what`` (default: the file name) if it is unsafe."""
        label = what or f"chart {os.path.basename(path)}"
        try:
            with open(path, "rb") as handle:
                data = handle.read(MAX_CHART_BYTES + 1)
        except OSError as exc:
            raise AirgapError(f"cannot read {label} at {path}: {exc.strerror or exc}") from None
        return cls.from_bytes(data, label)

    @classmethod
    def from_bytes(cls, data: bytes, what: str, depth: int = 0) -> ChartPackage:
        if len(data) > MAX_CHART_BYTES:
            raise AirgapError(f"{what} has more than {MAX_CHART_BYTES} bytes: refused")
        budget = [MAX_MEMBERS, MAX_UNPACKED_BYTES]
        top, files = _read_archive(data, what, budget)
        chart = _build(files, top, "", what, depth, budget)
        chart.digest = f"sha256:{hashlib.sha256(data).hexdigest()}"
        chart.size = len(data)
        return chart

    # Values ------------------------------------------------------------------------------------

    @property
    def version(self) -> str:
        return str(self.metadata.get("version") or "")

    @property
    def app_version(self) -> str:
        value = self.metadata.get("appVersion")
        return "" if value is None else str(value)

    @property
    def values(self) -> dict[str, Any]:
        """values.yaml with each subchart's values merged in under its key (the chart's own values for it win)."""
        merged = copy.deepcopy(self.own_values)
        for key, sub in self.subcharts.items():
            mine = merged.get(key)
            merged[key] = merge_values(sub.values, mine, self.what, key) if isinstance(mine, dict) else sub.values
        return merged

    def merged_values(self, overrides: Any) -> dict[str, Any]:
        """The values the chart installs with: its own (subcharts' included) with ``overrides`` merged in, checked."""
        return merge_values(self.values, validate_values(overrides, f"{self.what}: values"), self.what)

    # Discovery ---------------------------------------------------------------------------------

    def _found(self, values: dict[str, Any]) -> list[_Found]:
        found: list[_Found] = []
        self._walk_chart(values, (), found, 0)
        return found

    def _walk_chart(self, values: dict[str, Any], prefix: tuple[str, ...], found: list[_Found], depth: int) -> None:
        skip = set()
        for key, sub in self.subcharts.items():
            skip.add(key)
            if not self._enabled(key, values):
                continue
            node = values.get(key)
            sub._walk_chart(node if isinstance(node, dict) else {}, prefix + (key,), found, depth + 1)
        for key, value in values.items():
            if key not in skip and key != "global":
                self._walk(value, prefix + (str(key),), found, len(prefix) == 0 and self.name == GPU_OPERATOR)

    def _enabled(self, key: str, values: dict[str, Any]) -> bool:
        condition = self.conditions.get(key)
        for dotted in (condition or "").split(","):
            value = _lookup(values, dotted.strip()) if dotted.strip() else None
            if isinstance(value, bool):
                return value
        return True

    def _walk(self, node: Any, path: tuple[str, ...], found: list[_Found], operator_top: bool) -> None:
        if isinstance(node, list):
            for position, item in enumerate(node):
                self._walk(item, path[:-1] + (f"{path[-1]}[{position}]",), found, False)
            return
        if not isinstance(node, dict):
            return
        if node.get("enabled") is False:
            return
        image = self._image_of(node, path, operator_top)
        if image is not None:
            found.append(image)
        for key, value in node.items():
            if key == "image" and isinstance(value, str):
                if image is None:
                    self._image_string(value, path + ("image",), found)
                continue
            self._walk(value, path + (str(key),), found, False)

    def _reference(self, text: str, path: tuple[str, ...]) -> ImageReference:
        try:
            ref = ImageReference.parse(text, DEFAULT_REGISTRY)
        except ConfigError as exc:
            raise ConfigError(
                f"{self.what}: values.{'.'.join(path)} names an image that is not a valid reference: {exc}"
            ) from None
        if ref.registry == DEFAULT_REGISTRY and "/" not in ref.repository:
            ref = ImageReference(ref.registry, f"library/{ref.repository}", ref.tag, ref.digest)
        return ref

    def _version(self, value: Any, path: tuple[str, ...], key: str) -> str:
        """A version or tag field, or the chart's appVersion when it is unset or empty."""
        if value is None or value == "":
            if not self.app_version:
                raise ConfigError(
                    f"{self.what}: values.{'.'.join(path)} gives no {key} and the chart {self.name} "
                    "has no appVersion to default to"
                )
            return self.app_version
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise ConfigError(f"{self.what}: values.{'.'.join(path)}.{key} is {_kind(value)}: expected a string")
        return str(value)

    def _image_of(self, node: dict[str, Any], path: tuple[str, ...], operator_top: bool) -> _Found | None:
        repository = node.get("repository")
        if not isinstance(repository, str) or "://" in repository:
            return None
        dotted = ".".join(path)
        if isinstance(node.get("image"), str):  # the GPU Operator's repository + image + version
            if not repository or not node["image"]:
                raise ConfigError(
                    f"{self.what}: values.{dotted} is enabled but its repository or image is empty: give "
                    f"values.{dotted}.repository and .image, or set values.{dotted}.enabled to false"
                )
            version = self._version(node.get("version"), path, "version")
            sep = "@" if version.startswith("sha256:") else ":"
            ref = self._reference(f"{repository.rstrip('/')}/{node['image']}{sep}{version}", path)
            suffixed = operator_top and len(path) == 1 and path[0] in OS_SUFFIXED and ref.digest is None
            if suffixed and node.get("usePrecompiled") is True:
                raise ConfigError(
                    f"{self.what}: values.{dotted}.usePrecompiled is true: precompiled drivers are tagged "
                    "<branch>-<kernel>-<os>, which needs the nodes' kernels; mirror them as images instead"
                )
            image = node["image"].strip("/")
            directory = (
                ref.repository[: -len(image) - 1]
                if ref.repository.endswith(f"/{image}")
                else ref.repository.rpartition("/")[0]
            )
            return _Found(path, "fields", ref, suffixed, directory)
        if not repository or "image" in node and not isinstance(node["image"], (str, type(None))):
            return None
        registry = node.get("registry")
        text = f"{registry.rstrip('/')}/{repository}" if isinstance(registry, str) and registry else repository
        digest = node.get("digest")
        if isinstance(digest, str) and digest:
            ref = self._reference(f"{text}@{digest}", path)
            tag = node.get("tag")
            return _Found(
                path,
                "helm",
                ImageReference(ref.registry, ref.repository, tag if isinstance(tag, str) and tag else None, ref.digest),
            )
        tag = self._version(node.get("tag"), path, "tag")
        return _Found(path, "helm", self._reference(f"{text}:{tag}", path))

    def _image_string(self, text: str, path: tuple[str, ...], found: list[_Found]) -> None:
        value = text.strip()
        if not value or "/" not in value and ":" not in value and "@" not in value:
            return  # a bare name (a component's image field with its repository elsewhere), not a reference
        if "{{" in value:
            return  # a template, rendered at install time from other values
        found.append(_Found(path, "string", self._reference(value, path)))

    def images(self, overrides: Any = None, driver_os: Any = None) -> list[ChartImage]:
        """Every image the chart deploys with ``overrides``: one per reference (``from`` names each values path that
        names it), in the order of the values. The GPU Operator's driver, GDS and GDRCopy get one per ``driver_os``."""
        systems = validate_driver_os(driver_os)
        by_reference: dict[str, list[str]] = {}
        for item in self._found(self.merged_values(overrides)):
            if item.suffixed:
                if not systems:
                    raise ConfigError(
                        f"{self.what}: values.{item.dotted} ({item.reference}) is tagged with the OS of each "
                        "GPU node at run time: give driver_os (such as [ubuntu22.04]), or set "
                        f"values.{item.dotted}.enabled to false"
                    )
                references = [str(item.reference.with_tag(f"{item.reference.tag}-{system}")) for system in systems]
            else:
                references = [str(item.reference)]
            for reference in references:
                paths = by_reference.setdefault(reference, [])
                if item.dotted not in paths:
                    paths.append(item.dotted)
        return [ChartImage(reference, ", ".join(paths)) for reference, paths in by_reference.items()]

    def site_values(self, overrides: Any, registry: str, prefix: str | None = None) -> dict[str, Any]:
        """``overrides`` with every image the chart deploys pointed at ``registry`` (a host[:port] or URL) under
        ``prefix``, the repository path kept: what ``helm install -f`` needs on the far side."""
        host = registry_host(registry)
        base = f"{host}/{prefix.strip('/')}" if prefix and prefix.strip("/") else host
        result = copy.deepcopy(validate_values(overrides, f"{self.what}: values"))
        merged = self.merged_values(overrides)
        for item in self._found(merged):
            ref = item.reference
            node = result
            keys = list(item.path) if item.style != "string" else list(item.path[:-1])
            for key in keys:
                node = _child(node, key)
            if item.style == "fields":
                node["repository"] = f"{base}/{item.directory}" if item.directory else base
            elif item.style == "helm":
                if isinstance(_lookup_path(merged, item.path + ("registry",)), str):
                    node["registry"] = host
                    node["repository"] = (
                        f"{prefix.strip('/')}/{ref.repository}" if prefix and prefix.strip("/") else ref.repository
                    )
                else:
                    node["repository"] = f"{base}/{ref.repository}"
            else:
                node[item.path[-1]] = str(ImageReference(None, f"{base}/{ref.repository}", ref.tag, ref.digest))
        return result


def _lookup_path(values: dict[str, Any], path: tuple[str, ...]) -> Any:
    node: Any = values
    for key in path:
        if "[" in key:
            name, _sep, rest = key.partition("[")
            node = node.get(name) if isinstance(node, dict) else None
            node = node[int(rest.rstrip("]"))] if isinstance(node, list) else None
        else:
            node = node.get(key) if isinstance(node, dict) else None
    return node


def _child(node: Any, key: str) -> Any:
    """The mapping at ``key`` of a values node (created when missing); ``name[3]`` is an item of a list."""
    if "[" in key:
        raise ConfigError(
            f"an image inside a list ({key}) cannot be pointed at the site registry by values; "
            "give that list in the chart's values overrides"
        )
    if not isinstance(node.get(key), dict):
        node[key] = {}
    return node[key]


# Archive ---------------------------------------------------------------------------------------


def _read_archive(data: bytes, what: str, budget: list[int]) -> tuple[str, dict[str, bytes]]:
    """(the top directory, the files under it that discovery reads, by path below it), every member checked."""
    try:
        archive = tarfile.open(fileobj=io.BytesIO(data), mode="r:gz")
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        raise AirgapError(f"{what} is not a gzip-compressed tar archive: {type(exc).__name__}") from None
    top: str | None = None
    files: dict[str, bytes] = {}
    try:
        for member in iter(archive.next, None):
            budget[0] -= 1
            if budget[0] < 0:
                raise AirgapError(f"{what} holds more than {MAX_MEMBERS} files: refused")
            name = member.name
            parts = name.split("/")
            if name.startswith("/") or any(part in ("", ".", "..") for part in parts) or "\\" in name:
                raise AirgapError(
                    f"{what} holds the path {name[:120]!r}, which leads outside the chart's directory: refused"
                )
            if top is None:
                top = parts[0]
            if parts[0] != top or (len(parts) == 1 and not member.isdir()):
                raise AirgapError(
                    f"{what} holds {name[:120]!r} outside its directory {top}/: a chart keeps all its "
                    "files under <name>/: refused"
                )
            if member.issym() or member.islnk():
                raise AirgapError(
                    f"{what} holds a link {name[:120]!r}: a chart has only files and directories: refused"
                )
            if member.isdir():
                continue
            if not member.isfile():
                raise AirgapError(f"{what} holds {name[:120]!r}, which is neither a file nor a directory: refused")
            budget[1] -= member.size
            if budget[1] < 0:
                raise AirgapError(f"{what} unpacks to more than {MAX_UNPACKED_BYTES} bytes: refused")
            relative = "/".join(parts[1:])
            if _wanted(relative):
                limit = MAX_CHART_BYTES if relative.endswith(".tgz") else MAX_YAML_BYTES
                if member.size > limit:
                    raise AirgapError(
                        f"{what}: {name[:120]} has {member.size} bytes, more than the {limit} allowed: refused"
                    )
                handle = archive.extractfile(member)
                files[relative] = handle.read() if handle is not None else b""
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        raise AirgapError(f"{what} is a damaged archive: {type(exc).__name__}: {exc}") from None
    finally:
        archive.close()
    if top is None:
        raise AirgapError(f"{what} is an empty archive")
    return top, files


def _wanted(relative: str) -> bool:
    """Whether discovery reads this file: a chart's (or a directory subchart's) YAML, or a nested subchart archive."""
    parts = relative.split("/")
    if (
        parts[-1] in _READ_NAMES
        and all(parts[i] == "charts" for i in range(0, len(parts) - 1, 2))
        and len(parts) % 2 == 1
    ):
        return True
    return (
        len(parts) >= 2
        and parts[-2] == "charts"
        and parts[-1].endswith(".tgz")
        and all(parts[i] == "charts" for i in range(0, len(parts) - 1, 2))
    )


def _yaml_file(files: dict[str, bytes], top: str, path: str, what: str, required: bool) -> dict[str, Any]:
    shown = f"{top}/{path}"
    if path not in files:
        if required:
            raise AirgapError(f"{what} has no {shown}: not a Helm chart")
        return {}
    data = load_yaml(files[path], f"{what}: {shown}")
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise AirgapError(f"{what}: {shown} is {_kind(data)}, not a mapping")
    return data


def _build(files: dict[str, bytes], top: str, prefix: str, what: str, depth: int, budget: list[int]) -> ChartPackage:
    metadata = _yaml_file(files, top, f"{prefix}Chart.yaml", what, True)
    name = metadata.get("name")
    if not isinstance(name, str) or not name:
        raise AirgapError(f"{what}: {top}/{prefix}Chart.yaml has no name")
    problem = (
        version_problem(str(metadata.get("version"))) if metadata.get("version") is not None else "it has no version"
    )
    if problem:
        raise AirgapError(f"{what}: {top}/{prefix}Chart.yaml: {problem}")
    if not prefix and name != top:
        raise AirgapError(f"{what} keeps the chart {name!r} under {top}/, not {name}/: refused")
    values = _yaml_file(files, top, f"{prefix}values.yaml", what, False)
    dependencies = metadata.get("dependencies")
    if dependencies is None:
        dependencies = _yaml_file(files, top, f"{prefix}requirements.yaml", what, False).get("dependencies")
    chart = ChartPackage(name=name, metadata=metadata, own_values=values, what=what)
    found: dict[str, ChartPackage] = {}
    for path in sorted(files):
        if not path.startswith(f"{prefix}charts/"):
            continue
        rest = path[len(prefix) + len("charts/") :]
        if "/" not in rest and rest.endswith(".tgz"):
            if depth >= MAX_NESTING:
                raise AirgapError(f"{what} nests subcharts more than {MAX_NESTING} deep: refused")
            inner = _nested(files[path], f"{what}: {top}/{prefix}charts/{rest}", depth + 1, budget)
            found[inner.name] = inner
        elif rest.count("/") == 1 and rest.endswith("/Chart.yaml"):
            inner = _build(files, top, f"{prefix}charts/{rest.split('/')[0]}/", what, depth + 1, budget)
            found[inner.name] = inner
    for dependency in dependencies if isinstance(dependencies, list) else []:
        if not isinstance(dependency, dict) or dependency.get("name") not in found:
            continue
        sub = found.pop(dependency["name"])
        alias = dependency.get("alias")
        key = alias if isinstance(alias, str) and alias else sub.name
        chart.subcharts[key] = sub
        if isinstance(dependency.get("condition"), str):
            chart.conditions[key] = dependency["condition"]
    for sub_name, sub in found.items():  # subcharts Chart.yaml does not list are still installed
        chart.subcharts[sub_name] = sub
    return chart


def _nested(data: bytes, what: str, depth: int, budget: list[int]) -> ChartPackage:
    top, files = _read_archive(data, what, budget)
    return _build(files, top, "", what, depth, budget)


# The chart as an OCI artifact ------------------------------------------------------------------

_METADATA_FIELDS = (
    "name",
    "home",
    "sources",
    "version",
    "description",
    "keywords",
    "maintainers",
    "icon",
    "apiVersion",
    "condition",
    "tags",
    "appVersion",
    "deprecated",
    "annotations",
    "kubeVersion",
    "dependencies",
    "type",
)
_MAINTAINER_FIELDS = ("name", "email", "url")
_DEPENDENCY_FIELDS = ("name", "version", "repository", "condition", "tags", "enabled", "import-values", "alias")
_LIST_FIELDS = frozenset(("sources", "keywords"))


def _ordered(value: Any, fields: tuple[str, ...]) -> dict[str, Any]:
    return {
        key: value[key] for key in fields if isinstance(value, dict) and value.get(key) not in (None, "", [], {}, False)
    }


def helm_oci_config(metadata: dict[str, Any]) -> bytes:
    """The config blob of a chart in an OCI registry: the Chart.yaml fields as JSON, in the order and with the empty
    fields left out as Helm writes them, so the same chart gives the same manifest digest on every run and both sides."""
    config: dict[str, Any] = {}
    for key, value in _ordered(metadata, _METADATA_FIELDS).items():
        if key == "maintainers" and isinstance(value, list):
            value = [_ordered(item, _MAINTAINER_FIELDS) for item in value if isinstance(item, dict)]
        elif key == "dependencies" and isinstance(value, list):
            value = [_ordered(item, _DEPENDENCY_FIELDS) for item in value if isinstance(item, dict)]
        elif key == "annotations" and isinstance(value, dict):
            value = {str(k): str(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
        elif key in _LIST_FIELDS and isinstance(value, list):
            value = [str(item) for item in value]
        elif key != "deprecated" and not isinstance(value, (dict, list)):
            value = str(value)
        config[key] = value
    text = json.dumps(config, separators=(",", ":"), ensure_ascii=False, sort_keys=False, default=str)
    for char, escaped in (
        ("&", "\\u0026"),
        ("<", "\\u003c"),
        (">", "\\u003e"),
        ("\u2028", "\\u2028"),
        ("\u2029", "\\u2029"),
    ):
        text = text.replace(char, escaped)
    return text.encode("utf-8")
