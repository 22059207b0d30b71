# Copyright (c) airgap.ngc contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private: what must be copied where, decided before anything is written. Not a public API.

Pure data and decisions: no network, no files. The mirror observes the source and each
destination, and these functions turn the observations into a plan that check mode returns
as it is and a real run executes.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

from ansible_collections.airgap.ngc.plugins.module_utils._errors import ConfigError
from ansible_collections.airgap.ngc.plugins.module_utils._reference import ImageReference, registry_host

COPY = "copy"
SKIP = "skip"


@dataclass(frozen=True)
class SourceImage:
    """One image to mirror, as the operator named it."""

    ref: ImageReference
    description: str | None = None

    @property
    def key(self) -> str:
        """The image's key in the facts file: its full source reference."""
        return str(self.ref)

    @property
    def label(self) -> str:
        """The tag, or for a digest-only reference a file-safe form of the digest."""
        return self.ref.tag or (self.ref.digest or "latest").replace(":", "-")


def source_images(items: Iterable[Any], default_registry: str, check_host: bool = True) -> list[SourceImage]:
    """Read the ``images`` option: references, or dicts as ``ngc_catalog_info`` returns them.

    A reference without a host is on ``default_registry``; with ``check_host``, one naming another host is refused.
    """
    images: list[SourceImage] = []
    seen: set[str] = set()
    source = registry_host(default_registry)
    for position, item in enumerate(items, start=1):
        description = None
        if isinstance(item, dict):
            text = _reference_of(item, position)
            description = item.get("description") or None
        elif isinstance(item, str):
            text = item
        else:
            raise ConfigError(f"images item {position} is a {type(item).__name__}: "
                              "give a reference such as nvidia/pytorch:24.01-py3 or a dict with name and tag")
        ref = ImageReference.parse(text, default_registry=default_registry)
        if check_host and ref.registry != source:
            raise ConfigError(f"images item {position} ({text}) names the registry {ref.registry}, but images are read from "
                              f"registry_url {default_registry} ({source}): give the reference without a host, or set registry_url "
                              f"to {ref.registry}; credentials are only sent to registry_url")
        if ref.tag is None and ref.digest is None:
            ref = ref.with_tag("latest")
        image = SourceImage(ref=ref, description=description)
        if image.key not in seen:
            seen.add(image.key)
            images.append(image)
    return images


def _reference_of(item: dict[str, Any], position: int) -> str:
    if item.get("reference"):
        return str(item["reference"])
    if not item.get("name"):
        raise ConfigError(f"images item {position} is a dict without 'reference' or 'name'")
    text = str(item["name"])
    if item.get("tag"):
        text += f":{item['tag']}"
    if item.get("digest") and not item.get("tag"):
        text += f"@{item['digest']}"
    return text


@dataclass
class Step:
    """What one destination gets for one image."""

    kind: str
    dest_key: str
    target: str
    action: str
    reason: str
    before: str | None = None
    after: str | None = None
    want: str | None = None  # the digest the destination should hold when done

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "target": self.target, "action": self.action, "reason": self.reason, "before": self.before, "after": self.after}


@dataclass
class ImagePlan:
    """The plan for one image: its source digest and one step per destination."""

    source: SourceImage
    digest: str | None = None
    media_type: str | None = None
    steps: list[Step] = field(default_factory=list)
    error: str | None = None
    written: bool = False

    @property
    def needs_copy(self) -> bool:
        return self.error is None and any(step.action == COPY for step in self.steps)

    def copies(self, kind: str) -> list[Step]:
        return [step for step in self.steps if step.kind == kind and step.action == COPY]


def decide(want: str | None, have: str | None, force: bool, missing_reason: str = "missing") -> tuple[str, str]:
    """Copy or skip one destination, from the digest it should hold and the one it holds."""
    if force:
        return COPY, "forced"
    if have is None:
        return COPY, missing_reason
    if want is not None and have == want:
        return SKIP, "up to date"
    return COPY, f"holds {have}, source is {want}"


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
    """The index to push for a subset of platforms; the original bytes when nothing is left out."""
    if len(children) == len([c for c in index.get("manifests") or [] if isinstance(c, dict)]):
        return raw
    reduced = dict(index)
    reduced["manifests"] = children
    return json.dumps(reduced, indent=3, sort_keys=False).encode("utf-8")


def platform_string(spec: dict[str, Any]) -> str:
    """``os/architecture[/variant]`` of an index entry's ``platform`` or an image config."""
    text = f"{spec.get('os') or 'unknown'}/{spec.get('architecture') or 'unknown'}"
    return f"{text}/{spec['variant']}" if spec.get("variant") else text


def blob_descriptors(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """The config and layer descriptors of an image manifest."""
    blobs = [manifest["config"]] if isinstance(manifest.get("config"), dict) else []
    return blobs + [layer for layer in manifest.get("layers") or [] if isinstance(layer, dict) and layer.get("digest")]


def blob_sizes(manifests: Iterable[dict[str, Any]]) -> dict[str, int]:
    """Each distinct blob of some image manifests, by digest, with its size."""
    return {blob["digest"]: int(blob.get("size") or 0) for manifest in manifests for blob in blob_descriptors(manifest)}


def registry_target(source: SourceImage, url: str, prefix: str | None) -> ImageReference:
    """Where an image goes on a destination registry: the same path, under ``prefix`` if set."""
    repository = source.ref.repository
    if prefix:
        repository = f"{prefix.strip('/')}/{repository}"
    return ImageReference(registry=registry_host(url), repository=repository, tag=source.ref.tag, digest=None if source.ref.tag else source.ref.digest)


def archive_path(directory: str, source: SourceImage, fmt: str) -> str:
    """``<dir>/<name>/<tag>.tar`` (docker) or ``<dir>/<name>/<tag>.oci.tar`` (oci)."""
    suffix = ".oci.tar" if fmt == "oci" else ".tar"
    return "/".join((directory.rstrip("/"), source.ref.repository, source.label + suffix))
