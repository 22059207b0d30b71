# Copyright (c) airgap.ngc contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private: what must be copied where, decided before anything is written. Not a public API.

Pure data and decisions: no network, no files. The mirror observes the source and each
destination, and these functions turn the observations into a plan that check mode returns
as it is and a real run executes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

from ansible_collections.airgap.ngc.plugins.module_utils._types.errors import ConfigError
from ansible_collections.airgap.ngc.plugins.module_utils._types.reference import ImageReference, registry_host

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


def requested_images(items: Iterable[Any], default_registry: str | None = None) -> list[SourceImage]:
    """The ``images`` option read as given: references, or dicts as ``ngc_catalog_info`` returns them; no duplicates.

    A reference without a host gets ``default_registry`` (or none); a reference without tag or digest means ``latest``.
    """
    images: list[SourceImage] = []
    seen: set[str] = set()
    for position, item in enumerate(items, start=1):
        description = None
        if isinstance(item, dict):
            text = _reference_of(item, position)
            description = item.get("description") or None
        elif isinstance(item, str):
            text = item
        else:
            raise ConfigError(
                f"images item {position} is a {type(item).__name__}: "
                "give a reference such as nvidia/pytorch:24.01-py3 or a dict with name and tag"
            )
        ref = ImageReference.parse(text, default_registry=default_registry)
        if ref.tag is None and ref.digest is None:
            ref = ref.with_tag("latest")
        image = SourceImage(ref=ref, description=description)
        if image.key not in seen:
            seen.add(image.key)
            images.append(image)
    return images


def source_images(items: Iterable[Any], default_registry: str, check_host: bool = True) -> list[SourceImage]:
    """The images to read from the registry ``default_registry``: a reference without a host is on it.

    With ``check_host``, a reference naming another host is refused (credentials go only to ``default_registry``).
    """
    images = requested_images(items, default_registry)
    source = registry_host(default_registry)
    for position, image in enumerate(images, start=1):
        if check_host and image.ref.registry != source:
            raise ConfigError(
                f"images item {position} ({image.ref}) names the registry {image.ref.registry}, but images are read from "
                f"registry_url {default_registry} ({source}): give the reference without a host, or set registry_url "
                f"to {image.ref.registry}; credentials are only sent to registry_url"
            )
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
    record: dict[str, Any] | None = None  # the facts record of what it holds already, unrecorded: the copier records it
    # A delta bundle: the earlier bundles whose blobs the image needs on the far side, and whether it carries any
    # blob of its own (False: every blob is in those bundles, the image is only named in this one).
    relies_on: list[str] | None = None
    carries_blobs: bool | None = None

    def as_dict(self) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "kind": self.kind,
            "target": self.target,
            "action": self.action,
            "reason": self.reason,
            "before": self.before,
            "after": self.after,
        }
        if self.relies_on is not None:
            entry.update(relies_on=self.relies_on, carries_blobs=self.carries_blobs)
        return entry


@dataclass
class ImagePlan:
    """The plan for one image: its source digest and one step per destination."""

    source: SourceImage
    digest: str | None = None
    media_type: str | None = None
    steps: list[Step] = field(default_factory=list)
    error: str | None = None
    written: bool = False
    note: str | None = None  # what the source said about the image (digests it cannot keep)

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


def registry_target(source: SourceImage, url: str, prefix: str | None) -> ImageReference:
    """Where an image goes on a destination registry: the same path, under ``prefix`` if set."""
    repository = source.ref.repository
    if prefix:
        repository = f"{prefix.strip('/')}/{repository}"
    return ImageReference(
        registry=registry_host(url),
        repository=repository,
        tag=source.ref.tag,
        digest=None if source.ref.tag else source.ref.digest,
    )


def archive_path(directory: str, source: SourceImage, fmt: str) -> str:
    """``<dir>/<name>/<tag>.tar`` (docker) or ``<dir>/<name>/<tag>.oci.tar`` (oci)."""
    suffix = ".oci.tar" if fmt == "oci" else ".tar"
    return "/".join((directory.rstrip("/"), source.ref.repository, source.label + suffix))


MAX_MESSAGES = 3  # failed images named in the task's message; all of them are in failure_messages
MAX_MESSAGE_CHARS = 300


def plan_result(
    plans: list[ImagePlan], check_mode: bool, diff_mode: bool, transferred: int, reused: int
) -> dict[str, Any]:
    """The module result: one entry per image (status, message, each destination's before and after), totals, diff."""
    images = []
    for plan in plans:
        if plan.error:
            status, message = "failed", plan.error
        elif plan.needs_copy:
            status = "would copy" if check_mode else "copied"
            message = "; ".join(f"{s.kind}: {s.reason}" for s in plan.steps if s.action == COPY)
        else:
            status, message = "skipped", "up to date"
        entry = {
            "reference": plan.source.key,
            "digest": plan.digest,
            "media_type": plan.media_type,
            "status": status,
            "message": message,
            "destinations": [step.as_dict() for step in plan.steps],
        }
        if plan.note:
            entry["note"] = plan.note
        images.append(entry)
    failed = [p for p in plans if p.error]
    result: dict[str, Any] = {
        "changed": any(p.needs_copy for p in plans) if check_mode else any(p.written for p in plans),
        "images": images,
        "bytes_transferred": transferred,
        "bytes_reused": reused,
        "failed_images": [p.source.key for p in failed],
        "failure_messages": [f"{p.source.key}: {p.error}" for p in failed],
    }
    if diff_mode:
        result["diff"] = {
            "before": {s.dest_key: s.before for p in plans for s in p.steps},
            "after": {s.dest_key: s.after for p in plans for s in p.steps},
        }
    return result


def failure_summary(result: dict[str, Any]) -> str:
    """The task's message for failed images: how many, and the first few reasons, each shortened."""
    messages = result.get("failure_messages") or []
    shown = [m if len(m) <= MAX_MESSAGE_CHARS else m[: MAX_MESSAGE_CHARS - 3] + "..." for m in messages[:MAX_MESSAGES]]
    more = f" (and {len(messages) - MAX_MESSAGES} more)" if len(messages) > MAX_MESSAGES else ""
    return (
        f"{len(messages)} of {len(result.get('images') or [])} image(s) could not be copied: "
        + "; ".join(shown)
        + more
        + "; every reason is in failure_messages"
    )
