# Copyright (c) airgap.ngc contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private: the transport interface the copier is written against. Not a public API.

A ``Source`` reads, a ``Destination`` plans and begins an ``ImageWrite`` per image, which gives a ``BlobSink`` for
each blob it lacks and commits. Every optional ability is declared here once with its default (containers/image's
``internal/imagedestination/stubs`` do the same): a kind that has one overrides it, and the copier never probes for
it. See docs/design/transports.md.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from contextlib import AbstractContextManager
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Callable, Iterable, Mapping

from ansible_collections.airgap.ngc.plugins.module_utils._state.facts import StateStore
from ansible_collections.airgap.ngc.plugins.module_utils._transports.fanout import LocalBlob
from ansible_collections.airgap.ngc.plugins.module_utils._types.blob_sink import BlobSink
from ansible_collections.airgap.ngc.plugins.module_utils._types.errors import AirgapError
from ansible_collections.airgap.ngc.plugins.module_utils._types.oci import ImageContent, Manifest
from ansible_collections.airgap.ngc.plugins.module_utils._types.plan import COPY, SourceImage, Step, decide

__all__ = [
    "BlobSink",
    "Committed",
    "Destination",
    "FailedWrite",
    "ResolvedImage",
    "ImageWrite",
    "PlanContext",
    "Source",
    "fetched",
]


@dataclass(frozen=True)
class ResolvedImage:
    """What a source holds for an image: its top manifest's digest and type, and what the source says about it."""

    digest: str
    media_type: str | None = None
    config_digest: str | None = None  # known without fetching (an archive's manifest.json)
    note: str | None = None  # said in the result (for example: the digest of the original is not kept)
    manifest: Manifest | None = None  # the top manifest itself, when resolving fetched it (``resolve(fetch=True)``)


@dataclass(frozen=True)
class Committed:
    """What an image write's ``commit`` returns: the digest the destination holds now, and the record the copier
    keeps of it in the facts file (None: nothing to record)."""

    digest: str
    record: dict[str, Any] | None = None


@dataclass
class PlanContext:
    """What every destination's plan needs: the facts (to read), the run's mode, and the image's top manifest on demand."""

    store: StateStore
    force: bool
    check_mode: bool
    top: Callable[[SourceImage, str], Manifest]  # by digest, fetched once a run

    def step(self, kind: str, target: str, want: str | None, have: str | None, missing_reason: str = "missing") -> Step:
        """One destination's step. ``after`` is what it holds: the wanted digest only in check mode's plan, or once written."""
        action, reason = decide(want, have, self.force, missing_reason)
        return Step(
            kind=kind,
            dest_key=f"{kind}:{target}",
            target=target,
            action=action,
            reason=reason,
            before=have,
            after=want if action == COPY and self.check_mode else have,
            want=want,
        )


class Source(ABC):
    """Where images are read: names them, resolves one to its top manifest's digest, gives manifests by digest as their
    exact bytes and blobs as chunks checked against their digest while they stream."""

    kind: str
    name: str  # what messages call it: the registry's host, the bundle's or the directory's path

    resumes: bool = False
    """``open_blob`` can start part way (``start``, with ``held`` the bytes before it): a cut-off download continues."""
    carries_archives: bool = False
    """Each image is a per-tag archive file (``path_of``), which a Docker engine can load."""
    listings: Mapping[str, dict[str, Any]] = MappingProxyType({})
    """By image key: what ``companions`` listed afresh this run, for the copier to remember in the facts file."""

    @abstractmethod
    def images(self, items: list[Any] | None) -> list[SourceImage]:
        """The images ``items`` (the module's ``images``) names, or every image a carried medium holds."""

    @abstractmethod
    def resolve(self, image: SourceImage, fetch: bool = False) -> ResolvedImage | None:
        """The image's top manifest (with ``fetch``, the manifest itself too), or None if the source lacks it."""

    @abstractmethod
    def manifest(self, image: SourceImage, digest: str, media_type: str | None = None) -> Manifest:
        """A manifest of the image by digest, as its exact bytes."""

    @abstractmethod
    def open_blob(
        self, image: SourceImage, digest: str, size: int, start: int = 0, held: Iterable[bytes] | None = ()
    ) -> AbstractContextManager[Iterable[bytes]]:
        """A blob's chunks, checked against its digest as they stream (from ``start`` only if ``resumes``)."""

    @abstractmethod
    def missing(self, image: SourceImage) -> str:
        """Why ``resolve`` found nothing, said so that a person can act on it."""

    @abstractmethod
    def close(self) -> None:
        """Release what the source holds open."""

    def companions(self, image: SourceImage, digest: str, known: dict[str, Any] | None = None) -> list[SourceImage]:
        """The images that travel with an image's digest (signatures, attestations); ``known`` is an earlier run's
        listing still to be trusted. A source that cannot list them has none."""
        return []

    def referrers_index(self, image: SourceImage, subject: str) -> Manifest | None:
        """The index of ``subject``'s referrers tag (``sha256-<hex>``) as the source holds it, or None."""
        return None

    def image_blobs(self, image: SourceImage) -> list[str]:
        """Every blob the image needs, if the source records it (a bundle's contents, for the far side's inventory)."""
        return []

    def origins(self) -> dict[str, SourceImage]:
        """Blobs the source left out (a delta bundle), each with an image an earlier import put it under."""
        return {}

    def is_chart(self, image: SourceImage) -> bool:
        """``image`` is a Helm chart (an OCI artifact), not a container image: it goes only where charts are kept."""
        return False

    def check_left_out(self, image: SourceImage, needed: Mapping[str, int]) -> None:  # noqa: B027 (a default: empty on purpose)
        """Fail the image, before anything of it is written, when a blob it needs is held by none of the places it may
        come from (a delta bundle whose earlier bundle is missing). A source that holds every blob checks nothing."""

    def read_also_from(self, holder: Any) -> None:  # noqa: B027 (a default: empty on purpose)
        """Where else a blob the source left out may be read (a destination registry's ``open_held_blob``). A source
        that leaves none out needs no other place."""

    def path_of(self, image: SourceImage) -> str:
        """The archive file that holds the image; only for a source that ``carries_archives``."""
        raise NotImplementedError(f"the {self.kind} source holds no per-tag archive files")


class ImageWrite(ABC):
    """One destination's write of one image: the blobs it lacks (``blobs``), a sink for each, then ``commit`` (visible
    whole or not at all) or ``abort``. ``error`` is set by the copier when one of its sinks failed."""

    blobs: Mapping[str, int] = MappingProxyType({})
    """digest -> size of each blob it lacks (a sink is asked for each of them)."""
    error: BaseException | None = None
    note: str | None = None
    """Said in the result after the commit (for example what a flattened file could not keep)."""

    def sink(self, digest: str, size: int) -> BlobSink | None:
        """Where one blob's bytes go, or None if the destination does not need that blob."""
        return None

    def holds(self, digest: str, size: int) -> bool:
        """Whether the destination holds the blob now (another image's write put it there meanwhile); the copier then
        drops it from ``blobs``. Only asked of a destination that ``shares_blobs``."""
        return False

    @abstractmethod
    def commit(self, image: SourceImage, step: Step, source_digest: str) -> Committed:
        """Finish the image (manifests, files, rename, import) and say what to record; the copier records it."""

    def local_blobs(self) -> dict[str, LocalBlob]:
        """Blobs the committed write holds in a local file, for later images of the run to read from there."""
        return {}

    def abort(self) -> None:  # noqa: B027 (a default: empty on purpose)
        """Undo what was not committed (called after a commit too: it then only cleans up)."""


class FailedWrite(ImageWrite):
    """The write of a destination that could not begin the image: nothing to stream, nothing to commit."""

    def __init__(self, error: BaseException) -> None:
        self.error = error

    def commit(self, image: SourceImage, step: Step, source_digest: str) -> Committed:
        raise self.error or AssertionError("a failed write is never committed")


class Destination(ABC):
    """Where images are written: plans its own step for an image (observe, decide) and, for a copy, begins the write."""

    kind: str

    needs_content: bool = True
    """It needs the image's manifests (and blobs): False for one that pulls or reads elsewhere (an engine, a README)."""
    platforms: list[str] | None = None
    """The children of an index it needs (None: all of them, so that the index keeps its digest)."""
    keeps_blobs: bool = False
    """A blob written here stays here: a later image of the run finds it (and reads none of it again)."""
    carries_companions: bool = False
    """Signatures and attestations travel to it with their images."""
    concurrent: bool = False
    """``begin`` and ``commit`` may run for several images at once (else one image at a time)."""
    shares_blobs: bool = False
    """A blob one image's write put here serves the next images without its bytes (a registry mounts it, a bundle
    holds each blob once): images sharing a blob may be copied at once (the copier asks ``ImageWrite.holds``)."""
    carries_charts: bool = False
    """Helm charts (OCI artifacts) are written here as well as images."""
    charts_only: bool = False
    """Only Helm charts are written here (a chart repository): images are never planned for it."""
    dir: str | None = None
    """The directory it writes, locked against other runs for the whole run (None: it writes no directory)."""
    measures_space: bool = False
    """It writes to ``dir``'s filesystem and says how much (``space_needed``), checked before anything is written."""

    @abstractmethod
    def plan(self, image: SourceImage, found: ResolvedImage, ctx: PlanContext) -> Step | None:
        """This destination's step for the image (None: nothing to do for it here), from what it holds."""

    @abstractmethod
    def begin(self, image: SourceImage, content: ImageContent | None, step: Step) -> ImageWrite:
        """Begin the image's write (``content``: its manifests, None for a destination that ``needs_content`` not)."""

    @abstractmethod
    def close(self) -> None:
        """Release what the destination holds open."""

    def ping(self) -> None:  # noqa: B027 (a default: empty on purpose)
        """Fail at once, before any plan, if it cannot be reached. A destination with nothing to reach passes."""

    def owns(self, dest_key: str, record: dict[str, Any]) -> bool:
        """True for a facts record of an image this destination wrote (prune may then ``remove`` it)."""
        return False

    def remove(
        self, key: str, record: dict[str, Any], wanted: dict[str, dict[str, Any]], check_mode: bool
    ) -> tuple[str, str, int]:
        """Remove an image it ``owns``: (action, reason, bytes freed)."""
        raise NotImplementedError(f"the {self.kind} destination removes no images")

    def space_needed(self, image: SourceImage, content: ImageContent, step: Step) -> tuple[int, int]:
        """Bytes the image's copy leaves on ``dir``'s filesystem and bytes it needs only meanwhile; only for a
        destination that ``measures_space``."""
        raise NotImplementedError(f"the {self.kind} destination does not measure the space it writes")


def fetched(content: ImageContent | None, kind: str) -> ImageContent:
    """The manifests the copier hands to ``begin`` of a destination that ``needs_content`` (never None for it)."""
    if content is None:
        raise AirgapError(f"internal error: the {kind} destination was begun without the image's manifests")
    return content
