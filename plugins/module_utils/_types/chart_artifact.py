# Copyright (c) airgap.ngc contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private: a Helm chart as an OCI artifact (what ``helm push`` writes), and its classic repository index. Not a public API.

A chart travels like an image: one manifest, the Chart.yaml fields as its config blob, and the chart's .tgz as its
one layer, byte for byte. The manifest is built the same way from the same chart on every run and on both sides of
the air gap, so its digest is the chart's identity everywhere (facts, bundles, deltas, prune). No I/O.
"""

from __future__ import annotations

import json
from typing import Any

from ansible_collections.airgap.ngc.plugins.module_utils._types.oci import (
    MEDIA_HELM_CHART,
    MEDIA_HELM_CONFIG,
    MEDIA_OCI_MANIFEST,
    Manifest,
    compute_digest,
)


def chart_manifest(config: bytes, chart_digest: str, chart_size: int) -> Manifest:
    """The OCI manifest of a chart: ``config`` (the Chart.yaml fields as JSON) and the .tgz (its digest and size)."""
    data = {
        "schemaVersion": 2,
        "mediaType": MEDIA_OCI_MANIFEST,
        "config": {"mediaType": MEDIA_HELM_CONFIG, "digest": compute_digest(config), "size": len(config)},
        "layers": [{"mediaType": MEDIA_HELM_CHART, "digest": chart_digest, "size": chart_size}],
    }
    raw = json.dumps(data, sort_keys=True, separators=(",", ":")).encode("utf-8")
    return Manifest(raw=raw, media_type=MEDIA_OCI_MANIFEST, digest=compute_digest(raw), data=data)


def is_chart(manifest: dict[str, Any]) -> bool:
    """True for the manifest of a Helm chart (its config is a Helm config)."""
    return isinstance(manifest.get("config"), dict) and manifest["config"].get("mediaType") == MEDIA_HELM_CONFIG


def chart_layer(manifest: dict[str, Any]) -> dict[str, Any] | None:
    """The descriptor of a chart manifest's .tgz, or None if it has none."""
    return next(
        (
            layer
            for layer in manifest.get("layers") or []
            if isinstance(layer, dict) and layer.get("mediaType") == MEDIA_HELM_CHART
        ),
        None,
    )


def chart_file_name(name: str, version: str) -> str:
    """How a classic Helm repository names a chart's .tgz: ``<name>-<version>.tgz``."""
    return f"{name}-{version}.tgz"


INDEX_FIELDS = (
    "apiVersion",
    "name",
    "version",
    "appVersion",
    "description",
    "type",
    "keywords",
    "home",
    "sources",
    "maintainers",
    "icon",
    "kubeVersion",
    "dependencies",
    "annotations",
    "deprecated",
)


def index_entry(metadata: dict[str, Any], chart_digest: str, created: str) -> dict[str, Any]:
    """A chart's entry in a classic repository's ``index.yaml``: its Chart.yaml fields, the .tgz's sha256, its URL
    (relative: the repository can be served from anywhere)."""
    entry = {key: metadata[key] for key in INDEX_FIELDS if metadata.get(key) not in (None, "", [], {})}
    entry.update(
        {
            "digest": chart_digest.split(":", 1)[-1],
            "created": created,
            "urls": [chart_file_name(str(metadata["name"]), str(metadata["version"]))],
        }
    )
    return entry


def repository_index(entries: dict[str, list[dict[str, Any]]], generated: str) -> dict[str, Any]:
    """A classic repository's ``index.yaml`` document, each chart's versions in a stable order."""
    return {
        "apiVersion": "v1",
        "entries": {
            name: sorted(versions, key=lambda e: str(e.get("version")), reverse=True)
            for name, versions in sorted(entries.items())
        },
        "generated": generated,
    }
