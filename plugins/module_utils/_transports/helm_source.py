# Copyright (c) airgap.ngc contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private: the run's source with the charts it carries: each chart as an OCI artifact, and every image it deploys.

``ChartSources`` wraps the run's source (a registry, a bundle) and adds, for each selected chart (``charts``): the
chart itself, an OCI artifact (``_types/chart_artifact``) built from the chart's .tgz (fetched from NGC's Helm
repository on the connected side, read from the bundle or registry on the far side), and the images the chart
deploys with the selection's values (``_formats/helm_chart``). An image outside the source registry (the NFD
subchart's ``registry.k8s.io/...``) is read from its own registry (``upstream``), never with the NGC key. Everything
else is the wrapped source's: the copy engine sees one source and one list of images. Not a public API.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Mapping

from ansible_collections.airgap.ngc.plugins.module_utils._formats.helm_chart import ChartPackage, helm_oci_config
from ansible_collections.airgap.ngc.plugins.module_utils._transports.base import ResolvedImage, Source
from ansible_collections.airgap.ngc.plugins.module_utils._transports.sources import BundleSource
from ansible_collections.airgap.ngc.plugins.module_utils._types.chart_artifact import (
    chart_layer,
    chart_manifest,
    is_chart,
)
from ansible_collections.airgap.ngc.plugins.module_utils._types.charts import (
    CHARTS_PATH,
    ChartImage,
    ChartRef,
    ChartSelection,
    oci_chart_repository,
    oci_chart_tag,
)
from ansible_collections.airgap.ngc.plugins.module_utils._types.errors import AirgapError, ConfigError
from ansible_collections.airgap.ngc.plugins.module_utils._types.filters import tag_sort_key
from ansible_collections.airgap.ngc.plugins.module_utils._types.oci import Manifest
from ansible_collections.airgap.ngc.plugins.module_utils._types.plan import SourceImage
from ansible_collections.airgap.ngc.plugins.module_utils._types.reference import ImageReference

CHUNK = 1024 * 1024


@dataclass
class Chart:
    """A chart of the run: what was selected, where it is, its package, and the images it deploys (with their values
    path)."""

    selection: ChartSelection | None
    artifact: SourceImage
    name: str
    version: str
    package: Any = None
    images: list[tuple[ChartImage, SourceImage]] = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"{self.artifact.ref.repository[len(CHARTS_PATH) + 1 :]}:{self.version}"


@dataclass
class _Held:
    """A chart artifact built here: its manifest, its config's bytes and its .tgz file."""

    manifest: Manifest
    config: bytes
    path: str


def _file_digest(path: str) -> tuple[str, int]:
    sha, size = hashlib.sha256(), 0
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK), b""):
            sha.update(chunk)
            size += len(chunk)
    return "sha256:" + sha.hexdigest(), size


def _file_chunks(path: str, start: int = 0) -> Iterator[bytes]:
    with open(path, "rb") as handle:
        handle.seek(start)
        yield from iter(lambda: handle.read(CHUNK), b"")


class ChartSources(Source):
    """The run's source (``base``) and the charts of ``selections`` with their images; see the module's docstring.

    ``helm(selection)`` gives the Helm repository client of a selection's org and team (connected side only);
    ``upstream(host)`` the source for images of a registry host (None: the wrapped source's registry).
    """

    def __init__(
        self,
        base: Any,
        selections: list[ChartSelection],
        helm: Callable[[ChartSelection], Any] | None = None,
        upstream: Callable[[str], Any] | None = None,
        helm_host: str | None = None,
    ) -> None:
        self.base, self.selections, self.helm, self.upstream = base, selections, helm, upstream
        self.helm_host = helm_host
        self.charts: list[Chart] = []
        self._held: dict[str, _Held] = {}  # by artifact key: charts fetched from a Helm repository
        self._chart_keys: set[str] = set()
        self._named_by: dict[str, list[tuple[Chart, str]]] = {}  # image key -> (chart, values path) naming it
        self._upstream: dict[str, Any] = {}
        self._workdir: str | None = None
        # What the copier asks of a source is the wrapped source's, for every image that is not a fetched chart.
        self.kind, self.name, self.resumes = base.kind, base.name, base.resumes
        self.carries_archives, self.listings = base.carries_archives, base.listings

    @property
    def carried(self) -> bool:
        """True if the charts are read from the wrapped source (a bundle or registry on the far side)."""
        return self.helm is None

    def _dir(self) -> str:
        if self._workdir is None:
            self._workdir = tempfile.mkdtemp(prefix="airgap-ngc-charts-")
        return self._workdir

    # Listing -------------------------------------------------------------------------------------

    def images(self, items: list[Any] | None) -> list[SourceImage]:
        """The images ``items`` names (all the wrapped source holds if neither images nor charts are named), then each
        chart and the images it deploys, each once."""
        found: list[SourceImage] = self.base.images(items) if items or not self.selections else []
        if not self.selections and self.carried:
            for image in found:
                self._note_carried_chart(image)
        keys = {image.key for image in found}
        for selection in self.selections:
            chart = self._chart(selection)
            for image in [chart.artifact] + [image for _found, image in chart.images]:
                if image.key not in keys:
                    keys.add(image.key)
                    found.append(image)
        return found

    def _note_carried_chart(self, image: SourceImage) -> None:
        """A carried image under ``charts/`` whose manifest is a Helm chart's is a chart (imported with no selection)."""
        if not image.ref.repository.startswith(CHARTS_PATH + "/") or not image.ref.tag:
            return
        try:
            found = self.base.resolve(image)
            manifest = self.base.manifest(image, found.digest, found.media_type) if found else None
        except (AirgapError, OSError):
            return  # its import fails, saying why
        if manifest is not None and not manifest.is_index and is_chart(manifest.data):
            name, version = image.ref.repository.rsplit("/", 1)[-1], image.ref.tag.replace("_", "+")
            self._add(Chart(None, image, name, version))

    def _add(self, chart: Chart) -> None:
        self.charts.append(chart)
        self._chart_keys.add(chart.artifact.key)

    def _chart(self, selection: ChartSelection) -> Chart:
        chart = self._carried_chart(selection) if self.carried else self._fetched_chart(selection)
        self._add(chart)
        try:
            discovered = chart.package.images(selection.values, selection.driver_os)
        except ConfigError as exc:
            raise ConfigError(f"chart {chart.label}: {exc}") from None
        for image in discovered:
            source = SourceImage(ref=ImageReference.parse(image.reference))
            chart.images.append((image, source))
            self._named_by.setdefault(source.key, []).append((chart, image.from_path))
        return chart

    def _fetched_chart(self, selection: ChartSelection) -> Chart:
        """A chart from NGC's Helm repository: its index entry, its .tgz (checked against the index), its artifact."""
        ref = selection.ref
        repository = self.helm(selection) if self.helm else None
        if repository is None:
            raise ConfigError("charts need a Helm repository: set helm_url")
        versions = [e for e in repository.versions(ref.name) if isinstance(e, dict)]
        if not versions:
            names = sorted(repository.index().get("entries") or {})
            raise ConfigError(
                f"chart {ref.path} does not exist in the Helm repository {repository.url}: it holds "
                f"{', '.join(names[:8]) or 'no chart'}{' ...' if len(names) > 8 else ''}; check the charts item's name"
            )
        entry = self._version(ref.path, ref.version, {str(e.get("version")): e for e in versions}, repository.url)
        path = repository.fetch(entry, self._dir())
        package = self._open(path, ref.path)
        version = str(package.metadata.get("version"))
        config = helm_oci_config(package.metadata)
        digest, size = _file_digest(path)
        manifest = chart_manifest(config, digest, size)
        artifact = SourceImage(
            ref=ImageReference(
                registry=self.helm_host, repository=oci_chart_repository(None, ref), tag=oci_chart_tag(version)
            )
        )
        self._held[artifact.key] = _Held(manifest, config, path)
        return Chart(selection, artifact, ref.name, version, package)

    @staticmethod
    def _version(chart: str, wanted: str | None, versions: dict[str, Any], where: str) -> Any:
        if wanted is None:
            return versions[sorted(versions, key=tag_sort_key)[-1]]
        if wanted not in versions:
            shown = sorted(versions, key=tag_sort_key, reverse=True)
            raise ConfigError(
                f"chart {chart} has no version {wanted} in {where}: it has {', '.join(shown[:8])}"
                f"{' ...' if len(shown) > 8 else ''}; check the charts item's version"
            )
        return versions[wanted]

    def _carried_chart(self, selection: ChartSelection) -> Chart:
        """A chart the wrapped source carries (a bundle, the far side's registry), at the path an export gave it."""
        ref = selection.ref
        repository = oci_chart_repository(None, ref)
        held = [ImageReference.parse(name) for name in self._carried_names()]
        tags = {r.tag: r for r in held if r.repository == repository and r.tag}
        if not tags:
            raise ConfigError(
                f"chart {ref.path} is not in {self.base.kind} {self.base.name}: export it with charts first"
            )
        wanted = None if ref.version is None else oci_chart_tag(ref.version)
        if wanted is not None and wanted not in tags:
            raise ConfigError(
                f"chart {ref.path} has no version {ref.version} in {self.base.kind} {self.base.name}: it has "
                f"{', '.join(t.replace('_', '+') for t in sorted(tags, key=tag_sort_key, reverse=True))}"
            )
        tag = wanted or sorted(tags, key=tag_sort_key)[-1]
        artifact = SourceImage(ref=tags[tag])
        found = self.base.resolve(artifact)
        if found is None:
            raise AirgapError(self.base.missing(artifact))
        manifest = self.base.manifest(artifact, found.digest, found.media_type)
        layer = chart_layer(manifest.data) if not manifest.is_index and is_chart(manifest.data) else None
        if layer is None:
            raise AirgapError(f"{artifact.ref} in {self.base.kind} {self.base.name} is not a Helm chart")
        path = os.path.join(self._dir(), f"{ref.name}-{tag}.tgz")
        with open(path, "wb") as handle, self.base.open_blob(artifact, layer["digest"], int(layer["size"])) as chunks:
            for chunk in chunks:
                handle.write(chunk)
        package = self._open(path, ref.path)
        return Chart(selection, artifact, ref.name, str(package.metadata.get("version")), package)

    def _carried_names(self) -> list[str]:
        if not isinstance(self.base, BundleSource):
            raise ConfigError(
                f"charts are read from NGC's Helm repository or a bundle, not from the {self.base.kind} {self.base.name}"
            )
        return list(self.base.reader.references())

    @staticmethod
    def _open(path: str, chart: str) -> Any:
        try:
            return ChartPackage.open(path)
        except AirgapError as exc:
            raise AirgapError(f"chart {chart}: {exc}") from None

    def package_of(self, chart: Chart) -> Any:
        """The chart's package (read from the wrapped source for a chart carried without a selection)."""
        if chart.package is None:
            chart.package = self._carried_chart(ChartSelection(_ref_of(chart), {}, [])).package
        return chart.package

    # The source interface ----------------------------------------------------------------------

    def is_chart(self, image: SourceImage) -> bool:
        return image.key in self._chart_keys

    def _owner(self, image: SourceImage) -> Source:
        """The source that reads ``image``: the wrapped one, or for an image of another registry (connected side) the
        source of that registry."""
        if self.carried or self.upstream is None or image.key in self._held:
            return self.base
        host = image.ref.registry
        if host is None:
            return self.base
        if host not in self._upstream:
            self._upstream[host] = self.upstream(host)
        return self._upstream[host] or self.base

    def resolve(self, image: SourceImage, fetch: bool = False) -> ResolvedImage | None:
        held = self._held.get(image.key)
        if held is not None:
            return ResolvedImage(held.manifest.digest, held.manifest.media_type, manifest=held.manifest)
        return self._owner(image).resolve(image, fetch=fetch)

    def manifest(self, image: SourceImage, digest: str, media_type: str | None = None) -> Manifest:
        held = self._held.get(image.key)
        if held is not None:
            if digest != held.manifest.digest:
                raise AirgapError(f"{image.ref} has no manifest {digest}")
            return held.manifest
        return self._owner(image).manifest(image, digest, media_type)

    def open_blob(
        self, image: SourceImage, digest: str, size: int, start: int = 0, held: Iterable[bytes] | None = ()
    ) -> Any:
        chart = self._held.get(image.key)
        if chart is None:
            return self._owner(image).open_blob(image, digest, size, start, held)
        if digest == chart.manifest.data["config"]["digest"]:
            return contextlib.nullcontext(iter([chart.config[start:]]))
        if digest == chart.manifest.data["layers"][0]["digest"]:
            return contextlib.closing(_file_chunks(chart.path, start))
        raise AirgapError(f"{image.ref} has no blob {digest}")

    def missing(self, image: SourceImage) -> str:
        said = self._owner(image).missing(image)
        named = self._named_by.get(image.key)
        if not named:
            return said
        where = "; ".join(f"chart {chart.label} names it at {path}" for chart, path in named)
        return f"{said} ({where}: check the chart's values and driver_os)"

    def companions(self, image: SourceImage, digest: str, known: dict[str, Any] | None = None) -> list[SourceImage]:
        if image.key in self._held:
            return []
        return self._owner(image).companions(image, digest, known)

    def referrers_index(self, image: SourceImage, subject: str) -> Manifest | None:
        return None if image.key in self._held else self._owner(image).referrers_index(image, subject)

    def image_blobs(self, image: SourceImage) -> list[str]:
        return [] if image.key in self._held else self._owner(image).image_blobs(image)

    def check_left_out(self, image: SourceImage, needed: Mapping[str, int]) -> None:
        if image.key not in self._held:
            self._owner(image).check_left_out(image, needed)

    def origins(self) -> dict[str, SourceImage]:
        return self.base.origins()

    def read_also_from(self, holder: Any) -> None:
        self.base.read_also_from(holder)

    def path_of(self, image: SourceImage) -> str:
        return self.base.path_of(image)

    def close(self) -> None:
        for source in self._upstream.values():
            if source is not None:
                source.close()
        self.base.close()
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None


def _ref_of(chart: Chart) -> ChartRef:
    return ChartRef.parse(f"{chart.artifact.ref.repository[len(CHARTS_PATH) + 1 :]}:{chart.version}")
