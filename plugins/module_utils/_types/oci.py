# Copyright (c) airgap.ngc contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private: the OCI / Docker image vocabulary, without I/O: media types, manifests, descriptors, digests, platforms.

Every transport (registry, bundle, archive, engine) speaks it; nothing here reads a file or a socket. Not a public API.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, Sequence

from ansible_collections.airgap.ngc.plugins.module_utils._types.errors import (
    AirgapError,
    ConfigError,
    DigestMismatchError,
)

MEDIA_OCI_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MEDIA_DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
MEDIA_HELM_CONFIG = "application/vnd.cncf.helm.config.v1+json"
"""The config of a Helm chart stored in an OCI registry: the fields of its Chart.yaml as JSON."""
MEDIA_HELM_CHART = "application/vnd.cncf.helm.chart.content.v1.tar+gzip"
"""The one layer of a Helm chart stored in an OCI registry: the chart's .tgz byte for byte."""
MANIFEST_MEDIA_TYPES = (MEDIA_OCI_INDEX, MEDIA_DOCKER_LIST, MEDIA_OCI_MANIFEST, MEDIA_DOCKER_MANIFEST)
INDEX_MEDIA_TYPES = frozenset((MEDIA_OCI_INDEX, MEDIA_DOCKER_LIST))
MANIFEST_ACCEPT = ", ".join(MANIFEST_MEDIA_TYPES)
"""The Accept of a manifest HEAD or GET: every manifest type, so a multi-arch tag is not served as one platform's manifest."""
OCI_TYPED = frozenset((MEDIA_OCI_INDEX, MEDIA_OCI_MANIFEST))

ANNOTATION_REF_NAME = "org.opencontainers.image.ref.name"
ANNOTATION_IMAGE_NAME = "io.containerd.image.name"
SOURCE_DIGEST_ANNOTATION = "io.github.airgap-ngc.source.digest"
OCI_LAYOUT = b'{"imageLayoutVersion":"1.0.0"}'
CHUNK_SIZE = 1024 * 1024
"""The bytes read or written at once when a blob or a file streams (from a registry, a file, an archive, to an engine)."""
MAX_MANIFEST_BYTES = 4 * 1024 * 1024
"""The most a manifest, an index or an image config may have: the distribution spec's limit, which registries apply.
A bigger one is refused from every source, before it is read whole."""


def blob_path(digest: str) -> str:
    """Where a blob lies in an OCI image layout (a bundle, an image tar), relative to its top: blobs/<algorithm>/<hex>."""
    algorithm, encoded = digest.split(":", 1)
    return f"blobs/{algorithm}/{encoded}"


def compute_digest(data: bytes, algorithm: str = "sha256") -> str:
    """``<algorithm>:<hex>`` of some bytes."""
    return f"{algorithm}:{hashlib.new(algorithm, data).hexdigest()}"


def check_bytes(data: bytes, digest: str, what: str) -> bytes:
    """The bytes, if they hash to ``digest``; else DigestMismatchError naming ``what``."""
    actual = compute_digest(data, digest.split(":", 1)[0])
    if actual != digest:
        raise DigestMismatchError(f"{what} hashes to {actual}, not {digest}")
    return data


@dataclass(frozen=True)
class ManifestDescriptor:
    """What a HEAD (or an index entry) tells about a manifest."""

    digest: str
    media_type: str
    size: int


@dataclass(frozen=True)
class Manifest:
    """A manifest as its source holds it: the exact bytes (hash these, never a re-serialisation), and their JSON."""

    raw: bytes = field(repr=False)
    media_type: str
    digest: str
    data: Dict[str, Any] = field(repr=False, compare=False, hash=False)

    @property
    def size(self) -> int:
        return len(self.raw)

    @property
    def is_index(self) -> bool:
        """True for an OCI index or Docker manifest list (a multi-architecture image)."""
        return self.media_type in INDEX_MEDIA_TYPES

    @property
    def descriptor(self) -> ManifestDescriptor:
        return ManifestDescriptor(digest=self.digest, media_type=self.media_type, size=self.size)


def guess_media_type(data: Dict[str, Any]) -> str:
    """The media type a manifest declares, or the OCI one its shape implies."""
    media_type = data.get("mediaType")
    if isinstance(media_type, str) and media_type:
        return media_type
    if "manifests" in data:
        return MEDIA_OCI_INDEX
    if "layers" in data or "config" in data:
        return MEDIA_OCI_MANIFEST
    return ""


def check_small(size: Any, what: str) -> None:
    """Refuse ``what`` (a manifest, an index or an image config) of ``size`` bytes over MAX_MANIFEST_BYTES."""
    if isinstance(size, int) and size > MAX_MANIFEST_BYTES:
        raise AirgapError(
            f"{what} has {size} bytes, more than the {MAX_MANIFEST_BYTES} (4 MiB) a manifest, an index or an "
            "image config may have: refused"
        )


def read_small(chunks: Iterable[bytes], what: str) -> bytes:
    """The bytes of a manifest, an index or an image config, from its chunks; refused as soon as they pass
    MAX_MANIFEST_BYTES, so a bigger one is never held whole (the chunks are closed, if they can be, either way)."""
    parts, total = [], 0
    try:
        for chunk in chunks:
            total += len(chunk)
            if total > MAX_MANIFEST_BYTES:
                check_small(total, f"{what} (read so far)")
            parts.append(chunk)
    finally:
        close = getattr(chunks, "close", None)
        if callable(close):
            close()
    return b"".join(parts)


def check_named_sizes(data: Dict[str, Any], what: str) -> None:
    """Refuse a manifest whose config, or an index whose manifests, are declared bigger than MAX_MANIFEST_BYTES: they
    are read whole (the readers check each blob against its declared size)."""
    config = data.get("config")
    named = [config] if isinstance(config, dict) else []
    children = data.get("manifests")
    named += [child for child in children if isinstance(child, dict)] if isinstance(children, list) else []
    for entry in named:
        kind = "config" if entry is config else "manifest"
        check_small(entry.get("size"), f"{what}: its {kind} {entry.get('digest')}")


def parse_manifest(raw: bytes, digest: str, what: str, media_type: str | None = None) -> Manifest:
    """A Manifest from bytes that must hash to ``digest``; ``media_type`` defaults to what the JSON declares. One
    over MAX_MANIFEST_BYTES, or naming a config or manifest over it, is refused."""
    check_small(len(raw), what)
    check_bytes(raw, digest, what)
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise DigestMismatchError(f"{what} is not a JSON manifest") from None
    if not isinstance(data, dict):
        raise DigestMismatchError(f"{what} is not a JSON manifest")
    check_named_sizes(data, what)
    return Manifest(raw=raw, media_type=media_type or guess_media_type(data), digest=digest, data=data)


def descriptor(
    media_type: str,
    digest: str,
    size: int,
    ref_name: str | None = None,
    image_name: str | None = None,
    platform: dict[str, Any] | None = None,
    annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    """An OCI descriptor for index.json; ref_name is the tag (or the full reference), image_name the full reference."""
    desc: dict[str, Any] = {"mediaType": media_type, "digest": digest, "size": int(size)}
    notes = dict(annotations or {})
    if image_name:
        notes[ANNOTATION_IMAGE_NAME] = image_name
    if ref_name:
        notes[ANNOTATION_REF_NAME] = ref_name
    if notes:
        desc["annotations"] = notes
    if platform:
        desc["platform"] = dict(platform)
    return desc


def is_attestation(entry: dict[str, Any]) -> bool:
    """An index entry that is not an image: BuildKit attestations (platform unknown/unknown)."""
    platform = entry.get("platform") or {}
    notes = entry.get("annotations") or {}
    return platform.get("os") == "unknown" or notes.get("vnd.docker.reference.type") == "attestation-manifest"


def platform_string(spec: dict[str, Any]) -> str:
    """``os/architecture[/variant]`` of an index entry's ``platform`` or an image config."""
    text = f"{spec.get('os') or 'unknown'}/{spec.get('architecture') or 'unknown'}"
    return f"{text}/{spec['variant']}" if spec.get("variant") else text


def platform_matches(spec: dict[str, Any], wanted: str) -> bool:
    """Whether an index entry's ``platform`` is ``os/arch[/variant]``; a missing variant matches any."""
    parts = wanted.strip().split("/")
    if len(parts) < 2:
        raise ConfigError(f"invalid platform {wanted!r}: expected os/architecture[/variant], for example linux/amd64")
    if spec.get("os") != parts[0] or spec.get("architecture") != parts[1]:
        return False
    return len(parts) < 3 or spec.get("variant") == parts[2]


def select_children(index: dict[str, Any], platforms: Sequence[str] | None) -> list[dict[str, Any]]:
    """The index entries to copy: those of the given platforms, or all image entries."""
    children = [c for c in index.get("manifests") or [] if isinstance(c, dict) and c.get("digest")]
    if not platforms:
        return children
    chosen = [c for c in children if any(platform_matches(c.get("platform") or {}, p) for p in platforms)]
    if not chosen:
        have = ", ".join(platform_string(c.get("platform") or {}) for c in children)
        raise ConfigError(f"none of the platforms {', '.join(platforms)} is in this image (it has {have})")
    return chosen


def filtered_index(raw: bytes, index: dict[str, Any], children: list[dict[str, Any]]) -> bytes:
    """The index to write for a subset of platforms; the original bytes when nothing is left out."""
    if len(children) == len([c for c in index.get("manifests") or [] if isinstance(c, dict)]):
        return raw
    reduced = dict(index)
    reduced["manifests"] = children
    return json.dumps(reduced, indent=3, sort_keys=False).encode("utf-8")


def blob_descriptors(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """The config and layer descriptors of an image manifest."""
    blobs = [manifest["config"]] if isinstance(manifest.get("config"), dict) else []
    return blobs + [layer for layer in manifest.get("layers") or [] if isinstance(layer, dict) and layer.get("digest")]


def blob_sizes(manifests: Iterable[dict[str, Any]]) -> dict[str, int]:
    """Each distinct blob of some image manifests, by digest, with its size."""
    return {blob["digest"]: int(blob.get("size") or 0) for manifest in manifests for blob in blob_descriptors(manifest)}


@dataclass
class ImageContent:
    """What was fetched of one image: the top manifest and the child manifests by digest."""

    top: Manifest
    children: dict[str, Manifest] = field(default_factory=dict)

    def images_for(self, entries: list[dict[str, Any]] | None) -> list[Manifest]:
        """The image manifests to copy: the top one itself, or the chosen children of an index."""
        if not self.top.is_index:
            return [self.top]
        return [self.children[entry["digest"]] for entry in entries or []]

    def selection(self, platforms: Sequence[str] | None) -> tuple[list[dict[str, Any]] | None, list[Manifest], bytes]:
        """For a platform choice: the index entries kept (None for a single manifest), the image manifests, the top bytes."""
        if not self.top.is_index:
            return None, [self.top], self.top.raw
        entries = select_children(self.top.data, platforms)
        return entries, self.images_for(entries), filtered_index(self.top.raw, self.top.data, entries)
