# Copyright (c) airgap.ngc contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private: Helm charts as this collection names them, without I/O: references, selections, images, OCI paths.

A chart is ``<org>[/<team>]/<name>`` in NGC's Helm repository (``https://helm.ngc.nvidia.com/<org>[/<team>]``),
at a version (``nvidia/gpu-operator:v26.7.0``). A selection adds the values the site installs it with and the
OS of its GPU nodes (``driver_os``), which decide which images the chart deploys. In an OCI registry a chart lives at
``[<prefix>/]charts/<org>[/<team>]/<name>``, a path of its own beside the image of the same name. Not a public API.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from ansible_collections.airgap.ngc.plugins.module_utils._types.errors import ConfigError
from ansible_collections.airgap.ngc.plugins.module_utils._types.reference import path_component_problem

DEFAULT_ORG = "nvidia"
CHARTS_PATH = "charts"
"""The first path component of every chart in an OCI registry: ``charts/nvidia/gpu-operator`` cannot collide with the
image ``nvidia/gpu-operator``."""

MAX_CHART_BYTES = 64 * 1024 * 1024
"""The largest chart archive (.tgz) fetched or opened: the GPU Operator's is about 100 KiB."""

_VERSION_RE = re.compile(r"^[0-9A-Za-z][0-9A-Za-z.+_-]{0,127}$")
_DRIVER_OS_RE = re.compile(r"^[a-z]+[0-9]+(?:\.[0-9]+)*$")
_SELECTION_KEYS = ("name", "version", "values", "driver_os")


def _where(option: str | None) -> str:
    return f" in {option}" if option else ""


def version_problem(version: Any) -> str | None:
    """Why ``version`` is not a chart version (SemVer such as ``v26.7.0`` or ``1.2.3+build.4``), or None."""
    if not isinstance(version, str):
        return f"the version {version!r} must be a string (quote it in YAML: '1.10' is not 1.1)"
    if not _VERSION_RE.match(version):
        return (
            f"the version {version!r} must be 1-128 letters, digits, '.', '+', '_' or '-', "
            "starting with a letter or digit, such as v26.7.0"
        )
    return None


def validate_driver_os(values: Any, option: str = "driver_os") -> list[str]:
    """The OS suffixes of a site's GPU nodes (``ubuntu22.04``, ``rhel9.6``), without duplicates; ConfigError otherwise."""
    if values is None:
        return []
    if not isinstance(values, (list, tuple)):
        raise ConfigError(f"invalid {option} {values!r}: expected a list of OS names such as [ubuntu22.04, rhel9.6]")
    found: list[str] = []
    for position, value in enumerate(values, start=1):
        if not isinstance(value, str) or not _DRIVER_OS_RE.match(value):
            raise ConfigError(
                f"invalid {option} item {position} {value!r}: expected an OS name and version as the GPU "
                "Operator appends it to driver tags, such as ubuntu22.04, ubuntu24.04 or rhel9.6"
            )
        if value not in found:
            found.append(value)
    return found


def validate_values(values: Any, option: str = "values") -> dict[str, Any]:
    """Chart value overrides: a mapping with string keys (an empty one for None); ConfigError otherwise."""
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ConfigError(
            f"invalid {option}: expected a mapping of chart values (as in a values.yaml), "
            f"got {type(values).__name__} {str(values)[:60]!r}"
        )
    for key in values:
        if not isinstance(key, str):
            raise ConfigError(f"invalid {option}: the key {key!r} is not a string")
    return values


@dataclass(frozen=True)
class ChartRef:
    """A chart of NGC's Helm repository: ``nvidia/gpu-operator`` (org nvidia, no team), at a version or the newest."""

    org: str
    team: str | None
    name: str
    version: str | None = None

    @classmethod
    def parse(cls, text: Any, *, option: str | None = None, default_org: str = DEFAULT_ORG) -> ChartRef:
        """``nvidia/gpu-operator:v26.7.0``, ``nvidia/<team>/<name>[:<version>]``, or a bare ``<name>`` in default_org."""
        if not isinstance(text, str) or not text.strip():
            raise ConfigError(
                f"invalid chart {text!r}{_where(option)}: expected <org>[/<team>]/<name>[:<version>], "
                "such as nvidia/gpu-operator:v26.7.0"
            )
        name, sep, version = text.strip().partition(":")
        if sep:
            problem = version_problem(version)
            if problem:
                raise ConfigError(f"invalid chart {text!r}{_where(option)}: {problem}")
        parts = name.strip("/").split("/")
        if len(parts) == 1:
            parts = [default_org] + parts
        if len(parts) > 3:
            raise ConfigError(
                f"invalid chart {text!r}{_where(option)}: expected <org>[/<team>]/<name>, not {len(parts)} parts"
            )
        for part in parts:
            problem = path_component_problem(part)
            if problem:
                raise ConfigError(f"invalid chart {text!r}{_where(option)}: {problem}")
        return cls(
            org=parts[0], team=parts[1] if len(parts) == 3 else None, name=parts[-1], version=version if sep else None
        )

    @property
    def namespace(self) -> str:
        """``nvidia`` or ``nvidia/<team>``: where NGC's Helm repository keeps the chart."""
        return f"{self.org}/{self.team}" if self.team else self.org

    @property
    def path(self) -> str:
        """``nvidia/gpu-operator``: the chart's name as the result names it."""
        return f"{self.namespace}/{self.name}"

    def with_version(self, version: str | None) -> ChartRef:
        return ChartRef(self.org, self.team, self.name, version)

    def __str__(self) -> str:
        return f"{self.path}:{self.version}" if self.version else self.path


@dataclass(frozen=True)
class ChartImage:
    """An image a chart deploys: its full reference, the values path that names it, and its digest once resolved."""

    reference: str
    """``host/path:tag`` (or ``host/path@sha256:...``), as a node pulls it."""
    from_path: str
    """The values path that names it: ``driver``, ``node-feature-discovery.image``."""
    digest: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"reference": self.reference, "digest": self.digest, "from": self.from_path}


@dataclass
class ChartSelection:
    """A chart to mirror: which one, the values the site installs it with, and the OS of the site's GPU nodes."""

    ref: ChartRef
    values: dict[str, Any] = field(default_factory=dict)
    driver_os: list[str] = field(default_factory=list)

    @classmethod
    def from_value(
        cls, item: Any, option: str = "charts", *, default_org: str = DEFAULT_ORG, driver_os: list[str] | None = None
    ) -> ChartSelection:
        """A selection from a string (``nvidia/gpu-operator:v26.7.0``) or a dict ``{name, version, values, driver_os}``;
        ``driver_os`` is the default for a string or a dict without one. Messages name ``option`` (``charts item 2``)."""
        if isinstance(item, str):
            return cls(ChartRef.parse(item, option=option, default_org=default_org), {}, list(driver_os or []))
        if not isinstance(item, dict):
            raise ConfigError(
                f"invalid {option} {item!r}: expected a chart such as nvidia/gpu-operator:v26.7.0, "
                "or a dict with name, version, values and driver_os"
            )
        unknown = [key for key in item if key not in _SELECTION_KEYS]
        if unknown:
            raise ConfigError(f"invalid {option}: unknown key {unknown[0]!r}; a chart has {', '.join(_SELECTION_KEYS)}")
        ref = ChartRef.parse(item.get("name"), option=f"{option} name", default_org=default_org)
        version = item.get("version")
        if version is not None:
            if ref.version is not None:
                raise ConfigError(
                    f"invalid {option}: {ref} names a version and version {version!r} names another: give one"
                )
            problem = version_problem(version)
            if problem:
                raise ConfigError(f"invalid {option} version for {ref}: {problem}")
            ref = ref.with_version(version)
        values = validate_values(item.get("values"), f"{option} values")
        chosen = item.get("driver_os")
        systems = validate_driver_os(chosen, f"{option} driver_os") if chosen is not None else list(driver_os or [])
        return cls(ref, values, systems)


def oci_chart_repository(prefix: str | None, ref: ChartRef) -> str:
    """``[<prefix>/]charts/<org>[/<team>]/<name>``: where a registry destination keeps the chart."""
    base = f"{CHARTS_PATH}/{ref.path}"
    return f"{prefix.strip('/')}/{base}" if prefix and prefix.strip("/") else base


def oci_chart_tag(version: str) -> str:
    """The OCI tag of a chart version: ``+`` (SemVer build metadata, not allowed in a tag) written as ``_``, as Helm does."""
    return version.replace("+", "_")
