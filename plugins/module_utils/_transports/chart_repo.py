# Copyright (c) airgap.ngc contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private: the ``chart_repo`` destination: a classic Helm repository in a directory. Not a public API.

It takes charts only (the copy engine hands it nothing else): each chart's .tgz byte for byte as
``<dir>/<name>-<version>.tgz``, and ``<dir>/index.yaml`` listing them, so a web server in front of the directory is a
repository for ``helm repo add``. The .tgz appears whole (written beside, synced, renamed), then the index is written
whole (``atomic_write``): a reader sees a chart in the index only once its file is complete.
"""

from __future__ import annotations

import json
import os
from typing import Any

try:
    import yaml
except ImportError:
    HAS_YAML = False
else:
    HAS_YAML = True

from ansible_collections.airgap.ngc.plugins.module_utils._clients.helm_repo import load_yaml
from ansible_collections.airgap.ngc.plugins.module_utils._formats.files import (
    GONE,
    KEPT,
    BlobFile,
    atomic_write,
    remove_recorded_file,
    safe_path,
    under,
)
from ansible_collections.airgap.ngc.plugins.module_utils._state.facts import utc_now
from ansible_collections.airgap.ngc.plugins.module_utils._transports.base import (
    BlobSink,
    Committed,
    Destination,
    ImageWrite,
    PlanContext,
    ResolvedImage,
    fetched,
)
from ansible_collections.airgap.ngc.plugins.module_utils._types.chart_artifact import (
    chart_file_name,
    chart_layer,
    index_entry,
    is_chart,
    repository_index,
)
from ansible_collections.airgap.ngc.plugins.module_utils._types.errors import AirgapError, ConfigError
from ansible_collections.airgap.ngc.plugins.module_utils._types.oci import ImageContent, check_small
from ansible_collections.airgap.ngc.plugins.module_utils._types.plan import SourceImage, Step

INDEX_FILE = "index.yaml"
MAX_INDEX_BYTES = 16 * 1024 * 1024


def dump_yaml(data: Any, what: str) -> bytes:
    """``data`` as block-style YAML (the safe dumper); AirgapError if PyYAML is missing."""
    if not HAS_YAML:
        raise AirgapError(f"writing {what} needs the PyYAML library")
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False).encode("utf-8")


def chart_name_version(image: SourceImage) -> tuple[str, str]:
    """A chart's name and version from its OCI reference (``.../<name>:<version, + as _>``)."""
    return image.ref.repository.rsplit("/", 1)[-1], (image.ref.tag or "").replace("_", "+")


class ChartRepoDestination(Destination):
    """A directory served as a classic Helm repository (``chart_repo.dir``)."""

    kind = "chart_repo"
    carries_charts = True
    charts_only = True  # images are not its business: the copy engine does not plan them here
    dir: str

    def __init__(self, spec: dict[str, Any]) -> None:
        self.dir = spec["dir"]
        self.index_path = os.path.join(self.dir, INDEX_FILE)

    def target(self, image: SourceImage) -> str:
        name, version = chart_name_version(image)
        return os.path.join(self.dir, chart_file_name(name, version))

    def plan(self, image: SourceImage, found: ResolvedImage, ctx: PlanContext) -> Step:
        path = self.target(image)
        recorded = ctx.store.destination(image.key, f"{self.kind}:{path}")
        have, why = None, "missing"
        if recorded and os.path.isfile(path):
            if os.path.getsize(path) == recorded.get("size") and self._indexed(*chart_name_version(image)):
                have = recorded.get("digest")
            else:
                why = "the file or its index entry is not the one recorded"
        return ctx.step(self.kind, path, found.digest, have, why)

    def _read_index(self) -> dict[str, Any]:
        """The repository's index, or an empty one; one this collection cannot read is refused, never overwritten."""
        try:
            with open(self.index_path, "rb") as handle:
                raw = handle.read(MAX_INDEX_BYTES + 1)
        except FileNotFoundError:
            return {"apiVersion": "v1", "entries": {}}
        except OSError as exc:
            raise AirgapError(f"chart_repo.dir {self.dir}: cannot read {INDEX_FILE} ({exc.strerror or exc})") from None
        try:
            if len(raw) > MAX_INDEX_BYTES:
                raise AirgapError(f"it has more than {MAX_INDEX_BYTES} bytes")
            index = load_yaml(raw, INDEX_FILE) or {}
            if not isinstance(index, dict) or not isinstance(index.get("entries") or {}, dict):
                raise AirgapError("it is not a Helm repository index (no entries mapping)")
        except AirgapError as exc:
            raise AirgapError(
                f"chart_repo.dir {self.dir}: {INDEX_FILE} cannot be read as a Helm repository index ({exc}): "
                "move it away, or give another directory"
            ) from None
        index.setdefault("entries", {})
        return index

    def _indexed(self, name: str, version: str) -> bool:
        try:
            versions = self._read_index()["entries"].get(name) or []
        except AirgapError:
            return False
        return any(isinstance(e, dict) and str(e.get("version")) == version for e in versions)

    def _write_index(self, update: Any) -> None:
        index = self._read_index()
        entries: dict[str, list[dict[str, Any]]] = {
            name: [e for e in versions or [] if isinstance(e, dict)] for name, versions in index["entries"].items()
        }
        update(entries)
        document = repository_index({name: versions for name, versions in entries.items() if versions}, utc_now())
        atomic_write(self.index_path, dump_yaml(document, "a Helm repository index"), what="Helm repository index")

    def owns(self, dest_key: str, record: dict[str, Any]) -> bool:
        return (
            record.get("type") == self.kind
            and dest_key.startswith(f"{self.kind}:")
            and under(record.get("path"), self.dir)
        )

    def remove(
        self, key: str, record: dict[str, Any], wanted: dict[str, dict[str, Any]], check_mode: bool
    ) -> tuple[str, str, int]:
        """The chart's .tgz (unless it changed since) and its index entry."""
        action, reason, freed = remove_recorded_file(record, self.dir, check_mode)
        if action in (KEPT,) or check_mode:
            return action, reason, freed
        name, version = str(record.get("chart")), str(record.get("version"))
        self._write_index(
            lambda entries: entries.__setitem__(
                name, [e for e in entries.get(name, []) if str(e.get("version")) != version]
            )
        )
        return action, reason + (f" and its entry in {INDEX_FILE}" if action != GONE else ""), freed

    def begin(self, image: SourceImage, content: ImageContent | None, step: Step) -> ImageWrite:
        top = fetched(content, self.kind).top
        layer = chart_layer(top.data)
        if top.is_index or not is_chart(top.data) or layer is None:
            raise AirgapError(f"{image.ref} is not a Helm chart (its manifest names no Helm config and chart layer)")
        safe_path(self.dir, step.target, "chart_repo")
        try:
            os.makedirs(self.dir, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot create chart_repo.dir {self.dir}: {exc.strerror or exc}") from None
        return _ChartRepoWrite(self, step.target, top.data["config"], layer)

    def close(self) -> None:
        """Nothing is held open."""


class _MemorySink(BlobSink):
    """A small blob (a chart's config) kept in memory; its digest is the reader's to check."""

    def __init__(self, size: int) -> None:
        self.size, self.data = size, bytearray()

    def write(self, data: bytes) -> None:
        self.data += data
        check_small(len(self.data), "a Helm chart's config")

    def close(self) -> None:
        if len(self.data) != self.size:
            raise AirgapError(f"a Helm chart's config: got {len(self.data)} bytes, {self.size} expected")

    def abort(self) -> None:
        self.data = bytearray()


class _ChartRepoWrite(ImageWrite):
    def __init__(self, dest: ChartRepoDestination, path: str, config: dict[str, Any], layer: dict[str, Any]) -> None:
        self.dest, self.path, self.config, self.layer = dest, path, config, layer
        self.blobs = {config["digest"]: int(config["size"]), layer["digest"]: int(layer["size"])}
        self._config: _MemorySink | None = None
        self._file: BlobFile | None = None

    def sink(self, digest: str, size: int) -> BlobSink | None:
        if digest == self.config["digest"]:
            self._config = _MemorySink(size)
            return self._config
        if digest == self.layer["digest"]:
            self._file = BlobFile(self.path, digest, size)
            return self._file
        return None

    def commit(self, image: SourceImage, step: Step, source_digest: str) -> Committed:
        if self._config is None or self._file is None:
            raise AirgapError(f"{image.ref}: the chart's config or .tgz was not received")
        try:
            metadata = json.loads(bytes(self._config.data).decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise AirgapError(f"{image.ref}: its Helm config is not JSON ({exc})") from None
        name, version = chart_name_version(image)
        if (
            not isinstance(metadata, dict)
            or str(metadata.get("name")) != name
            or str(metadata.get("version")) != version
        ):
            raise AirgapError(
                f"{image.ref}: its Helm config names {metadata.get('name') if isinstance(metadata, dict) else metadata} "
                f"{metadata.get('version') if isinstance(metadata, dict) else ''}, not {name} {version}"
            )
        entry = index_entry(metadata, self.layer["digest"], utc_now())

        def update(entries: dict[str, list[dict[str, Any]]]) -> None:
            entries[name] = [e for e in entries.get(name, []) if str(e.get("version")) != version] + [entry]

        self.dest._write_index(update)  # pylint: disable=protected-access
        return Committed(
            source_digest,
            {
                "type": self.dest.kind,
                "path": self.path,
                "size": int(self.layer["size"]),
                "digest": source_digest,
                "chart": name,
                "version": version,
                "written": utc_now(),
            },
        )

    def abort(self) -> None:
        """The .tgz sink removes its partial file itself; nothing else was written."""
