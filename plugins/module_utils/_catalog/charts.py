# Copyright (c) airgap.ngc contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private: what ``ngc_catalog_info`` lists of NGC's Helm charts: the index, then filters, then each chart's images
with their digests. Not a public API.

Each selected chart version is fetched (checked against the index's sha256) into a temporary directory, read as
untrusted media and its images discovered with the site's ``values`` and ``driver_os``; each image is then looked
up in its own registry: ``nvcr.io`` is ``registry_url`` with the NGC key, another host its ``upstream_registries``
entry (by default ``https://<host>``, anonymous). Nothing is rendered, no cluster and no ``helm`` binary is needed.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from ansible_collections.airgap.ngc.plugins.module_utils._types.charts import (
    ChartImage,
    ChartRef,
    validate_driver_os,
    validate_values,
)
from ansible_collections.airgap.ngc.plugins.module_utils._types.errors import AirgapError, ConfigError
from ansible_collections.airgap.ngc.plugins.module_utils._types.filters import ImageFilter, TagCandidate, tag_sort_key
from ansible_collections.airgap.ngc.plugins.module_utils._types.reference import ImageReference, redact_url
from ansible_collections.airgap.ngc.plugins.module_utils._clients.helm_repo import HelmRepository
from ansible_collections.airgap.ngc.plugins.module_utils._clients.registry import RegistryClient
from ansible_collections.airgap.ngc.plugins.module_utils._formats.helm_chart import ChartPackage

# The options that only mean something with charts, in the order the module documents them.
CHART_ONLY_OPTIONS = ("values", "driver_os")
# The filters an empty chart selection names.
_FILTERS = ("teams", "charts", "strict_name_match", "min_version", "tag_regex", "tag_exclude_regex", "latest")


def lists_images(params: dict[str, Any]) -> bool:
    """Whether ``ngc_catalog_info`` lists images: always without ``charts``, with them only when ``images`` is set."""
    return params.get("charts") is None or params.get("images") is not None


def check_chart_options(params: dict[str, Any]) -> None:
    """The chart options of ``ngc_catalog_info`` (``charts``, ``values``, ``driver_os``, ``helm_url``,
    ``upstream_registries``); ConfigError naming the first bad one. Opens no connection."""
    # Imported here: _options needs ansible.module_utils, which the pure parts of this file do not.
    from ansible_collections.airgap.ngc.plugins.module_utils._clients.options import (  # pylint: disable=import-outside-toplevel
        parse_upstream_registries,
    )

    charts = params.get("charts")
    if charts is None:
        for option in CHART_ONLY_OPTIONS:
            if params.get(option) not in (None, [], {}):
                raise ConfigError(
                    f"{option} is used only with charts: give charts (such as [nvidia/gpu-operator]) as well"
                )
    else:
        if (params.get("source") or "ngc") != "ngc":
            raise ConfigError(
                f"charts are listed from NGC's Helm repository (helm_url), not with source={params.get('source')}"
            )
        for position, item in enumerate(charts, start=1):
            _chart_item(item, f"charts item {position}", params.get("org") or "nvidia")
    validate_values(params.get("values"), "values")
    validate_driver_os(params.get("driver_os"))
    url = params.get("helm_url")
    if url is not None:
        shown = redact_url(url) if isinstance(url, str) else url
        if (
            not isinstance(url, str)
            or not url.startswith(("http://", "https://"))
            or len(url.split("://", 1)[1].strip("/")) == 0
        ):
            raise ConfigError(
                f"invalid helm_url {shown!r}: expected an http or https URL such as https://helm.ngc.nvidia.com"
            )
        if "@" in url.split("://", 1)[1].split("/", 1)[0]:
            raise ConfigError(f"invalid helm_url {shown!r}: no user name or password in it; give the key in api_key")
    parse_upstream_registries(params.get("upstream_registries"))


def _chart_item(item: Any, option: str, org: str) -> ChartRef | None:
    """A ``charts`` item: a ChartRef for ``<org>[/<team>]/<name>:<version>`` (one exact version), None for a name filter."""
    if not isinstance(item, str) or not item.strip():
        raise ConfigError(
            f"invalid {option} {item!r}: give a chart name such as gpu-operator, nvidia/gpu-operator, or "
            "one version such as nvidia/gpu-operator:v26.7.0"
        )
    if ":" in item:
        return ChartRef.parse(item, option=option, default_org=org)
    if any(char not in "abcdefghijklmnopqrstuvwxyz0123456789._-/" for char in item):
        raise ConfigError(
            f"invalid {option} {item!r}: a chart name is lower-case letters, digits, '.', '_', '-' and '/'"
        )
    return None


@dataclass
class ChartEntry:
    """One chart version as ``ngc_catalog_info`` returns it."""

    namespace: str
    name: str
    version: str
    app_version: str = ""
    description: str = ""
    created: str = ""
    url: str = ""
    digest: str | None = None
    size: int | None = None
    images: list[ChartImage] = field(default_factory=list)

    @property
    def path(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def label(self) -> str:
        return f"chart {self.path} {self.version}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.path,
            "version": self.version,
            "app_version": self.app_version,
            "digest": self.digest,
            "size": self.size,
            "url": self.url,
            "description": self.description,
            "created": self.created,
            "images": [image.as_dict() for image in self.images],
        }


class ChartCatalog:
    """Lists the chart versions a query selects, each with every image it deploys, sorted by name then version.

    A chart version named exactly (``nvidia/gpu-operator:v26.7.0``) that the repository lacks is an error naming the
    versions it has; an image a chart names that its registry does not have is an error naming the chart, the image
    and the values path. Refused credentials fail the listing.
    """

    def __init__(
        self,
        params: dict[str, Any],
        repository_for: Callable[[str, str | None], HelmRepository],
        registry_for: Callable[[str], RegistryClient],
        parallel: int = 4,
    ) -> None:
        self.params = params
        self.org = params.get("org") or "nvidia"
        self.repository_for = repository_for
        self.registry_for = registry_for
        self.parallel = max(1, parallel)
        self.values = validate_values(params.get("values"))
        self.driver_os = validate_driver_os(params.get("driver_os"))
        self.include_digests = params.get("include_digests", True)
        self.warnings: list[str] = []
        self._repositories: dict[tuple[str, str | None], HelmRepository] = {}
        self._lock = threading.Lock()
        items = params.get("charts") or []
        parsed = [
            (item, _chart_item(item, f"charts item {position}", self.org))
            for position, item in enumerate(items, start=1)
        ]
        self.exact = [ref for _item, ref in parsed if ref is not None]
        names = [item for item, ref in parsed if ref is None]
        self.by_name = bool(names) or not items  # [] lists every chart
        self.filter = ImageFilter.create(
            images=names,
            strict_name_match=params.get("strict_name_match", False),
            min_version=params.get("min_version"),
            tag_regex=params.get("tag_regex"),
            tag_exclude_regex=params.get("tag_exclude_regex"),
            latest=params.get("latest"),
        )

    def _repository(self, org: str, team: str | None) -> HelmRepository:
        with self._lock:
            if (org, team) not in self._repositories:
                self._repositories[(org, team)] = self.repository_for(org, team)
            return self._repositories[(org, team)]

    def _teams(self) -> list[str | None]:
        teams = self.params.get("teams")
        if teams is None:
            return [None]
        return list(dict.fromkeys(team or None for team in teams))

    def _selected(self) -> list[tuple[HelmRepository, dict[str, Any]]]:
        chosen: dict[tuple[str, str, str], tuple[HelmRepository, dict[str, Any]]] = {}
        for ref in self.exact:
            repository = self._repository(ref.org, ref.team)
            entry = repository.entry(ref)
            chosen[(repository.namespace, ref.name, str(entry["version"]))] = (repository, entry)
        if self.by_name:
            for team in self._teams():
                repository = self._repository(self.org, team)
                for name, versions in sorted((repository.index().get("entries") or {}).items()):
                    if not self.filter.match_name(f"{repository.namespace}/{name}"):
                        continue
                    by_version = {str(entry["version"]): entry for entry in versions}
                    candidates = [
                        TagCandidate(version, str(entry.get("created") or "")) for version, entry in by_version.items()
                    ]
                    for candidate in self.filter.select_tags(candidates):
                        chosen.setdefault(
                            (repository.namespace, name, candidate.tag), (repository, by_version[candidate.tag])
                        )
        return list(chosen.values())

    def charts(self) -> list[ChartEntry]:
        selected = self._selected()
        workdir = tempfile.mkdtemp(prefix="airgap-ngc-charts-")
        try:
            entries = self._map(lambda pair: self._read(pair[0], pair[1], workdir), selected)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        if self.include_digests:
            self._add_digests(entries)
        entries.sort(key=lambda entry: (entry.path, tag_sort_key(entry.version, entry.created)))
        return entries

    def _read(self, repository: HelmRepository, entry: dict[str, Any], workdir: str) -> ChartEntry:
        found = ChartEntry(
            namespace=repository.namespace,
            name=str(entry["name"] if entry.get("name") else ""),
            version=str(entry["version"]),
            app_version=str(entry.get("appVersion") or ""),
            description=str(entry.get("description") or ""),
            created=str(entry.get("created") or ""),
            url=repository.chart_url(entry),
        )
        if not found.name:
            raise AirgapError(f"the Helm repository {repository.url} lists a version {found.version} without a name")
        path = repository.fetch(entry, workdir)
        chart = ChartPackage.open(path, found.label)
        if chart.name != found.name or chart.version != found.version:
            raise AirgapError(
                f"{found.label} from {found.url} holds the chart {chart.name} {chart.version}, not the one the "
                "index names"
            )
        found.digest = chart.digest  # fetch() checked it against the index's
        found.size = chart.size
        found.app_version = chart.app_version or found.app_version
        found.images = chart.images(self.values, self.driver_os)
        return found

    def _add_digests(self, entries: list[ChartEntry]) -> None:
        wanted: dict[str, tuple[ChartEntry, ChartImage]] = {}
        for entry in entries:
            for image in entry.images:
                wanted.setdefault(image.reference, (entry, image))
        digests = dict(zip(wanted, self._map(lambda pair: self._digest(*pair), list(wanted.values()))))
        for entry in entries:
            entry.images = [
                ChartImage(image.reference, image.from_path, digests[image.reference]) for image in entry.images
            ]

    def _digest(self, entry: ChartEntry, image: ChartImage) -> str:
        ref = ImageReference.parse(image.reference)
        registry = self.registry_for(ref.registry or "docker.io")
        named = f"{entry.label}: the image {image.reference} (values {image.from_path})"
        try:
            descriptor = registry.head_manifest(ref.repository, ref.manifest_reference)
        except AirgapError as exc:
            raise AirgapError(f"{named} cannot be looked up: {exc}") from None
        if descriptor is None:
            raise AirgapError(
                f"{named} is missing upstream: {registry.host} has no such manifest; check the values and "
                "driver_os, or mirror that image first"
            )
        return descriptor.digest

    def _map(self, function: Callable[[Any], Any], items: Iterable[Any]) -> list[Any]:
        items = list(items)
        if len(items) <= 1 or self.parallel <= 1:
            return [function(item) for item in items]
        with ThreadPoolExecutor(max_workers=self.parallel) as pool:
            return list(pool.map(function, items))


class RegistryPool:
    """One registry client per host, made on first use (threads share them), all closed at the end."""

    def __init__(self, make: Callable[[str], RegistryClient]) -> None:
        self._make = make
        self._clients: dict[str, RegistryClient] = {}
        self._lock = threading.Lock()

    def __call__(self, host: str) -> RegistryClient:
        with self._lock:
            if host not in self._clients:
                self._clients[host] = self._make(host)
            return self._clients[host]

    def close(self) -> None:
        for client in self._clients.values():
            client.close()


def inspect_charts(params: dict[str, Any]) -> dict[str, Any]:
    """The ``charts`` of ``ngc_catalog_info`` with its module parameters, and its ``warnings``."""
    # Imported here: _options needs ansible.module_utils, which the pure parts above do not.
    from ansible_collections.airgap.ngc.plugins.module_utils._clients.options import (  # pylint: disable=import-outside-toplevel
        helm_repository_from,
        parse_upstream_registries,
        transport_from,
        upstream_registry_from,
    )

    upstream = parse_upstream_registries(params.get("upstream_registries"))
    transport = transport_from(params)
    registries = RegistryPool(lambda host: upstream_registry_from(params, host, upstream))
    try:
        catalog = ChartCatalog(
            params,
            lambda org, team: helm_repository_from(params, transport, org, team),
            registries,
            parallel=int(params.get("parallel") or 1),
        )
        entries = catalog.charts()
    finally:
        registries.close()
        transport.close()
    return {"charts": [entry.as_dict() for entry in entries], "warnings": catalog.warnings}


def empty_chart_selection(params: dict[str, Any], charts: list[dict[str, Any]]) -> str | None:
    """Why ``ngc_catalog_info`` fails for a chart selection that picked nothing, or None (see ``empty_selection``)."""
    if params.get("allow_empty") or params.get("charts") is None or charts:
        return None
    filters = [
        f"{name} {json.dumps(params[name])}" for name in _FILTERS if params.get(name) not in (None, [], "", False)
    ]
    label = f"Selection {json.dumps(params['label'])}" if params.get("label") else "The selection"
    where = f"the Helm repository {params.get('helm_url')}/{params.get('org') or 'nvidia'}"
    return (
        f"{label} picked no chart from {where} with {', '.join(filters) if filters else 'no filters'}: nothing would be "
        "mirrored. Check the names and patterns, or set allow_empty where an empty selection is expected."
    )
