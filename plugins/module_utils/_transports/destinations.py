# Copyright (c) airgap.ngc contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private: destinations of the transport interface (``base.Destination``): registry, per-tag archive, README, Docker
engine. The bundle, enroot, Apptainer and containerd destinations have files of their own. Not a public API.
"""

from __future__ import annotations

import os
import threading
from typing import Any, Callable, Iterator

from ansible_collections.airgap.ngc.plugins.module_utils._formats.image_archive import ArchiveWriter
from ansible_collections.airgap.ngc.plugins.module_utils._clients.docker_engine import (
    DOCKER_IMPORT_ERROR,
    HAS_DOCKER,
    DockerEngine,
    DockerSdkMissingError,
    tag_targets,
)
from ansible_collections.airgap.ngc.plugins.module_utils._types.errors import AirgapError, ConfigError
from ansible_collections.airgap.ngc.plugins.module_utils._formats.files import RESUME_MIN, atomic_write, safe_path
from ansible_collections.airgap.ngc.plugins.module_utils._types.oci import (
    SOURCE_DIGEST_ANNOTATION,
    ImageContent,
    Manifest,
    blob_sizes,
    compute_digest,
    descriptor,
    filtered_index,
    select_children,
)
from ansible_collections.airgap.ngc.plugins.module_utils._types.plan import (
    COPY,
    SourceImage,
    Step,
    archive_path,
    registry_target,
)
from ansible_collections.airgap.ngc.plugins.module_utils._formats.files import remove_recorded_file, under
from ansible_collections.airgap.ngc.plugins.module_utils._types.reference import ImageReference, registry_host
from ansible_collections.airgap.ngc.plugins.module_utils._formats.signatures import update_referrers_tag
from ansible_collections.airgap.ngc.plugins.module_utils._transports.sources import read_archive_head
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
from ansible_collections.airgap.ngc.plugins.module_utils._transports.fanout import (
    LocalBlob,
    Totals,
    UploadSink,
    index_archive_blobs,
)
from ansible_collections.airgap.ngc.plugins.module_utils._transports.upload_sessions import (
    SessionUpload,
    UploadSessions,
)

TAR_OVERHEAD = 1024  # a tar member header and its padding, at most
SPOOL_SHARE = 0.5  # of the free space an archive leaves on its filesystem, at most, for blobs spooled meanwhile
LOOK_MIN = 64 * 1024
"""A blob smaller than this, not known to be in the registry, is sent without asking first (HEAD): sending it costs
two requests whether or not it is there, asking one more when it is not, and a new image's small blobs seldom are."""


def registry_entry(target: str, digest: str | None) -> dict[str, Any]:
    """The facts record of an image in a destination registry."""
    return {"type": "registry", "reference": target, "digest": digest, "written": utc_now()}


def spool_budget(directory: str, planned: int) -> int | None:
    """Bytes an archive may spool beside itself: half of what the filesystem has left after the archive, or no bound."""
    try:
        stat = os.statvfs(directory)
    except (OSError, AttributeError):
        return None
    return max(int((stat.f_bavail * stat.f_frsize - planned) * SPOOL_SHARE), 0)


class Selection(Destination):
    """A destination that copies an image's manifests for a platform choice (None: all platforms, byte for byte)."""

    keeps_blobs = True

    def want(self, image: SourceImage, digest: str, ctx: PlanContext) -> str:
        """The digest this destination should hold: the source's, or that of the platform-filtered index."""
        if not self.platforms:
            return digest
        top = ctx.top(image, digest)
        return (
            compute_digest(filtered_index(top.raw, top.data, select_children(top.data, self.platforms)))
            if top.is_index
            else digest
        )


class RegistryDestination(Selection):
    """A destination registry: HEAD to observe, mount or upload blobs, push manifests (children first).

    A blob of ``RESUME_MIN`` bytes or more is uploaded through a session recorded in ``sessions`` (when given), which a
    run cut off leaves for the next one to continue (``_upload_sessions``); a smaller one as one streamed PUT.
    """

    kind = "registry"
    carries_companions = True  # signatures and attestations travel with the images
    carries_charts = True  # a Helm chart is an OCI artifact here
    concurrent = True  # begin and commit may run for several images at once: a registry takes pushes side by side
    shares_blobs = True  # a blob another image put here is mounted, not sent again (``_RegistryWrite.holds``)

    def __init__(
        self,
        spec: dict[str, Any],
        client: Any,
        platforms: list[str] | None,
        totals: Totals,
        origins: dict[str, SourceImage] | None = None,
        sessions: UploadSessions | None = None,
    ) -> None:
        self.url, self.prefix, self.client, self.platforms, self.totals = (
            spec["url"],
            spec.get("prefix"),
            client,
            platforms,
            totals,
        )
        self.sessions = sessions
        self.credentials = (spec.get("username"), spec.get("password"))
        self.known_blobs: dict[str, str] = {}  # digest -> a repository of this registry that holds it
        self._present: set[tuple[str, str]] = set()  # (repository, digest) seen or put there by this run
        self.referrers_lock = threading.Lock()  # a referrers tag is read, changed and written back: one image at a time
        self._blob_locks: dict[tuple[str, str], threading.Lock] = {}  # (repository, digest) -> its look and mount
        self._blob_locks_lock = threading.Lock()
        self.referrers_from: Callable[[SourceImage, str], Manifest | None] | None = (
            None  # a source's referrers tag index
        )
        for digest, image in (origins or {}).items():  # blobs an earlier import put here, under another image
            self.known_blobs[digest] = self.reference(image).repository

    def reference(self, image: SourceImage) -> ImageReference:
        return registry_target(image, self.url, self.prefix)

    def plan(self, image: SourceImage, found: ResolvedImage, ctx: PlanContext) -> Step:
        ref = self.reference(image)
        have = self.client.head_manifest(ref.repository, ref.manifest_reference)
        step = ctx.step(self.kind, str(ref), self.want(image, found.digest, ctx), have.digest if have else None)
        if step.action != COPY and ctx.store.destination(image.key, step.dest_key) is None:
            step.record = registry_entry(step.target, step.after)  # there already, written by another tool or run
        return step

    def owns(self, dest_key: str, record: dict[str, Any]) -> bool:
        """A record of an image this destination wrote: this registry, under ``prefix``."""
        if record.get("type") != "registry" or not dest_key.startswith(f"{self.kind}:"):
            return False
        try:
            ref = ImageReference.parse(str(record.get("reference") or ""))
        except ConfigError:
            return False
        prefix = (self.prefix or "").strip("/")
        return ref.registry == registry_host(self.url) and (not prefix or ref.repository.startswith(prefix + "/"))

    def _blobs(self, repository: str, digest: str) -> dict[str, int]:
        """Every blob of a manifest or index held here (children's too)."""
        top = self.client.get_manifest(repository, digest)
        manifests = (
            [self.client.get_manifest(repository, e["digest"]) for e in top.data.get("manifests") or []]
            if top.is_index
            else [top]
        )
        found = blob_sizes(m.data for m in manifests)
        found.update({m.digest: m.size for m in manifests})
        return found

    def remove(
        self, key: str, record: dict[str, Any], wanted: dict[str, dict[str, Any]], check_mode: bool
    ) -> tuple[str, str, int]:
        """DELETE the manifest by digest, only if the tag still points at the digest written and no wanted image
        shares it; what it frees is the blobs no wanted image of the repository uses, once the registry collects garbage."""
        ref = ImageReference.parse(record["reference"])
        have = self.client.head_manifest(ref.repository, ref.manifest_reference)
        if have is None:
            return "already gone", f"{ref} is no longer there", 0
        if record.get("digest") and have.digest != record["digest"]:
            return "kept", f"re-pushed since: {ref} points at {have.digest}, not the {record['digest']} written", 0
        others = [
            (k, e)
            for k, r in wanted.items()
            for dk, e in (r.get("destinations") or {}).items()
            if self.owns(dk, e) and ImageReference.parse(e["reference"]).repository == ref.repository
        ]
        for other, entry in others:
            if entry.get("digest") == have.digest:
                return "kept", f"{other} is wanted and is the same manifest there (a registry deletes by digest)", 0
        used: set[str] = set()
        for _other, entry in others:
            if entry.get("digest"):
                used.update(self._blobs(ref.repository, entry["digest"]))
        freed = sum(size for digest, size in self._blobs(ref.repository, have.digest).items() if digest not in used)
        note = "the registry's garbage collection frees its unreferenced blobs"
        if check_mode:
            return "would remove", f"delete manifest {have.digest} of {ref}; {note}", freed
        self.client.delete_manifest(ref.repository, have.digest)
        return "removed", f"deleted manifest {have.digest} of {ref}; {note}", freed

    def _has_blob(self, repository: str, digest: str, size: int) -> bool:
        """True if the registry already has the blob in ``repository`` (seen there or put there by this run, mounted
        from another repository that holds it, or there when asked); False if it is to be sent.

        Images begun at once look at and mount one blob into one repository one after another: distribution writes
        the repository's link to a mounted blob in place, and a HEAD that reads it meanwhile gets a 500."""
        with self._blob_locks_lock:
            lock = self._blob_locks.setdefault((repository, digest), threading.Lock())
        with lock:
            if (repository, digest) in self._present:
                return True
            origin = self.known_blobs.get(digest)
            if origin and origin != repository and self.client.mount_blob(repository, digest, origin):
                self._placed(repository, digest)
                return True
            if size < LOOK_MIN and not origin:
                return False
            if self.client.head_blob(repository, digest) is not None:
                self._placed(repository, digest)
                return True
            return False

    def open_held_blob(self, image: SourceImage, digest: str, size: int, start: int = 0, held: Any = ()) -> Any:
        """A blob this registry holds (where an earlier import or this run put it, or in the image's own repository),
        read back as verified chunks (from byte ``start`` on, ``held`` the bytes before it), for the destinations that
        need the bytes of a blob a delta bundle left out; None if it is in neither."""
        repository = self.holding_repository(image, digest)
        if repository is None:
            return None
        part = {"start": start, "held": held} if start else {}
        return self.client.open_blob(repository, digest, expected_size=size, **part)

    def holding_repository(self, image: SourceImage, digest: str) -> str | None:
        """The repository of this registry that holds the blob (where an earlier import or this run put it, or the
        image's own), asked with HEAD; None if neither does."""
        target = self.reference(image).repository
        for repository in dict.fromkeys(r for r in (self.known_blobs.get(digest), target) if r):
            if (repository, digest) in self._present or self.client.head_blob(repository, digest) is not None:
                return repository
        return None

    @property
    def name(self) -> str:
        return self.client.host

    def _placed(self, repository: str, digest: str) -> None:
        """The blob is in ``repository`` now (a HEAD saw it, a mount or an upload put it there)."""
        self.known_blobs[digest] = repository
        self._present.add((repository, digest))

    def begin(self, image: SourceImage, content: ImageContent | None, step: Step) -> _RegistryWrite:
        content = fetched(content, self.kind)
        ref = self.reference(image)
        _entries, manifests, top_raw = content.selection(self.platforms)
        missing = {}
        for digest, size in blob_sizes(m.data for m in manifests).items():
            if self._has_blob(ref.repository, digest, size):
                self.totals.add(reused=size)
                if (
                    self.sessions is not None and size >= RESUME_MIN
                ):  # committed by a run cut off before it forgot the session
                    self.sessions.drop(UploadSessions.key(self.client.host, ref.repository, digest))
            else:
                missing[digest] = size
        return _RegistryWrite(self, ref, content, manifests, top_raw, missing)

    def upload_sink(self, repository: str, digest: str, size: int) -> Any:
        if self.sessions is not None and size >= RESUME_MIN:
            return SessionUpload(
                self.client,
                self.sessions,
                repository,
                digest,
                size,
                committed=lambda: self._placed(repository, digest),
                policy=self.client.retry_policy,
                sleep=self.client.sleep,
            )

        def upload(chunks: Iterator[bytes]) -> Any:
            # The reader ends the chunks only after it has checked the digest (until then the upload holds back its
            # last chunk), and the registry checks it too: no second hash here.
            result = self.client.upload_blob(repository, digest, size, chunks, verify=False)
            self._placed(repository, digest)
            return result

        return UploadSink(upload, f"upload of {digest} to {self.client.host}/{repository}")

    def close(self) -> None:
        self.client.close()


class _RegistryWrite(ImageWrite):
    def __init__(
        self,
        dest: RegistryDestination,
        ref: ImageReference,
        content: ImageContent,
        manifests: list[Manifest],
        top_raw: bytes,
        missing: dict[str, int],
    ) -> None:
        super().__init__()
        self.dest, self.ref, self.content, self.manifests, self.top_raw, self.blobs = (
            dest,
            ref,
            content,
            manifests,
            top_raw,
            missing,
        )

    def sink(self, digest: str, size: int) -> BlobSink | None:
        return self.dest.upload_sink(self.ref.repository, digest, size) if digest in self.blobs else None

    def holds(self, digest: str, size: int) -> bool:
        if not self.dest._has_blob(self.ref.repository, digest, size):  # pylint: disable=protected-access
            return False
        self.dest.totals.add(reused=size)  # as begin() counts a blob the registry holds
        return True

    def commit(self, image: SourceImage, step: Step, source_digest: str) -> Committed:
        client, top = self.dest.client, self.content.top
        for manifest in self.manifests if top.is_index else []:
            client.put_manifest(self.ref.repository, manifest.digest, manifest.raw, manifest.media_type)
        digest = client.put_manifest(
            self.ref.repository,
            self.ref.manifest_reference if self.ref.tag else compute_digest(self.top_raw),
            self.top_raw,
            top.media_type,
        )
        if (
            self.top_raw == top.raw
        ):  # an artifact with a subject is listed in the referrers tag, where the registry has no API
            source_index = self.dest.referrers_from
            theirs = (lambda subject: source_index(image, subject)) if source_index is not None else None
            with self.dest.referrers_lock:
                update_referrers_tag(client, self.ref.repository, top, theirs)
        return Committed(digest, registry_entry(step.target, digest))


class ArchiveDestination(Selection):
    """Tar archives under a directory, one per image and format: ``<dir>/<name>/<tag>.tar`` or ``.oci.tar``."""

    kind = "archive"
    measures_space = True
    dir: str

    def __init__(self, spec: dict[str, Any]) -> None:
        self.dir = spec["dir"]
        self.fmt = spec.get("format") or "docker"
        self.platform = spec.get("platform") or "linux/amd64"
        self.platforms = [self.platform] if self.fmt == "docker" else None
        self.carries_companions = (
            self.fmt == "oci"
        )  # an OCI archive can hold a signature's manifest, a docker one cannot

    def target(self, image: SourceImage) -> str:
        return archive_path(self.dir, image, self.fmt)

    def plan(self, image: SourceImage, found: ResolvedImage, ctx: PlanContext) -> Step:
        path = self.target(image)
        have, why = self.observe(image, ctx.store.destination(image.key, f"{self.kind}:{path}"))
        return ctx.step(self.kind, path, found.digest, have, why)

    def observe(self, image: SourceImage, recorded: dict[str, Any] | None) -> tuple[str | None, str]:
        """The source digest the archive was written from, if the file is there as recorded, or None and why not."""
        if not recorded:
            return None, "missing"
        try:
            size = os.stat(self.target(image)).st_size
        except OSError:
            return None, "missing"
        if size != recorded.get("size"):
            return None, "the file is not the one recorded"
        if self.fmt == "docker" and recorded.get("platform", "unknown") not in (None, self.platform):
            return None, f"holds platform {recorded.get('platform', 'unknown')}, archive.platform is {self.platform}"
        return recorded.get("digest"), "missing"

    def owns(self, dest_key: str, record: dict[str, Any]) -> bool:
        return (
            record.get("type") == "archive"
            and dest_key.startswith(f"{self.kind}:")
            and under(record.get("path"), self.dir)
        )

    def remove(
        self, key: str, record: dict[str, Any], wanted: dict[str, dict[str, Any]], check_mode: bool
    ) -> tuple[str, str, int]:
        return remove_recorded_file(record, self.dir, check_mode)

    def space_needed(self, image: SourceImage, content: ImageContent, step: Step) -> tuple[int, int]:
        """An archive holds every blob of its image (a tar header and padding each) and its manifests; what is spooled
        beside it meanwhile is bounded by the room it leaves (spool_budget), so it needs nothing more."""
        _entries, manifests, raw = content.selection(self.platforms)
        blobs = blob_sizes(m.data for m in manifests)
        size = sum(blobs.values())
        return size + TAR_OVERHEAD * (len(blobs) + len(manifests) + 4) + sum(m.size for m in manifests) + len(raw), 0

    def begin(self, image: SourceImage, content: ImageContent | None, step: Step) -> _ArchiveWrite:
        content = fetched(content, self.kind)
        directory = os.path.dirname(safe_path(self.dir, step.target, "archive"))
        try:
            os.makedirs(directory, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot create archive directory {directory}: {exc.strerror or exc}") from None
        _entries, manifests, _raw = content.selection(self.platforms)
        blobs = blob_sizes(m.data for m in manifests)
        wanted = dict(
            blobs, **{m.digest: m.size for m in manifests}
        )  # what a tar an earlier run was cut off in may keep
        writer = ArchiveWriter(
            step.target,
            self.fmt,
            spool_budget=spool_budget(directory, sum(blobs.values())),
            resumable=True,
            wanted=wanted,
        )
        return _ArchiveWrite(self, writer, content, manifests, blobs)

    def close(self) -> None:
        """Nothing is held open."""


class _ArchiveWrite(ImageWrite):
    def __init__(
        self,
        dest: ArchiveDestination,
        writer: ArchiveWriter,
        content: ImageContent,
        manifests: list[Manifest],
        blobs: dict[str, int],
    ) -> None:
        super().__init__()
        self.dest, self.writer, self.content, self.manifests, self.blobs = dest, writer, content, manifests, blobs
        self.path: str | None = None

    def sink(self, digest: str, size: int) -> BlobSink | None:
        """Only the blobs of the archive's own manifests (another destination may read other platforms' too)."""
        return (
            None if digest not in self.blobs or self.writer.has_blob(digest) else self.writer.begin_blob(digest, size)
        )

    def commit(self, image: SourceImage, step: Step, source_digest: str) -> Committed:
        writer, top, manifests = self.writer, self.content.top, self.manifests
        name = str(image.ref) if image.ref.tag else None
        for manifest in manifests:
            writer.add_bytes_blob(manifest.digest, manifest.raw)
        if self.dest.fmt == "docker":
            entry = manifests[0]
            writer.set_docker_image(
                entry.data["config"]["digest"],
                [b["digest"] for b in entry.data.get("layers") or []],
                [name] if name else [],
            )
        else:
            writer.add_bytes_blob(top.digest, top.raw)
            entry = top
        writer.set_oci_index(
            [
                descriptor(
                    entry.media_type,
                    entry.digest,
                    entry.size,
                    ref_name=image.ref.tag,
                    image_name=name,
                    annotations={SOURCE_DIGEST_ANNOTATION: top.digest},
                )
            ]
        )
        result = writer.commit()
        self.path = result.path
        return Committed(
            top.digest,
            {
                "type": "archive",
                "path": result.path,
                "format": self.dest.fmt,
                "size": result.size,
                "sha256": result.sha256,
                "digest": top.digest,
                "config_digest": manifests[0].data["config"]["digest"],
                "written": utc_now(),
                "platform": self.dest.platform if self.dest.fmt == "docker" and top.is_index else None,
            },
        )

    def local_blobs(self) -> dict[str, LocalBlob]:
        """Where the committed archive holds each blob: later images of the run copy shared layers from there."""
        return index_archive_blobs(self.path) if self.path else {}

    def abort(self) -> None:
        self.writer.abort()


class ReadmeDestination(Destination):
    """``<dir>/<name>/README.md`` beside the archives, from the image's NGC description."""

    kind = "readme"
    needs_content = False
    dir: str

    def __init__(self, directory: str) -> None:
        self.dir = directory

    def plan(self, image: SourceImage, found: ResolvedImage, ctx: PlanContext) -> Step | None:
        if not image.description:
            return None
        path = "/".join((self.dir.rstrip("/"), image.ref.repository, "README.md"))
        want = compute_digest(image.description.encode("utf-8"))
        try:
            with open(path, "rb") as handle:
                have: str | None = compute_digest(handle.read())
        except OSError:
            have = None
        step = ctx.step(self.kind, path, want, have, "missing")
        if step.action == COPY and have is not None:
            step.reason = "description changed"
        return step

    def begin(self, image: SourceImage, content: ImageContent | None, step: Step) -> _ReadmeWrite:
        safe_path(self.dir, step.target, "README")
        return _ReadmeWrite(image.description or "")

    def close(self) -> None:
        """Nothing is held open."""


class _ReadmeWrite(ImageWrite):
    def __init__(self, text: str) -> None:
        super().__init__()
        self.data = text.encode("utf-8")

    def commit(self, image: SourceImage, step: Step, source_digest: str) -> Committed:
        os.makedirs(os.path.dirname(step.target), exist_ok=True)
        atomic_write(step.target, self.data, 0o644, "README")
        return Committed(compute_digest(self.data))


class EngineDestination(Destination):
    """A Docker engine: pulls from a registry, or loads a docker archive (written by this run or carried)."""

    kind = "docker"
    needs_content = False

    def __init__(
        self,
        spec: dict[str, Any],
        registry: RegistryDestination | None,
        archive_of: Callable[[SourceImage], str] | None,
        credentials_for: Callable[[str | None], tuple[str | None, str | None]],
    ) -> None:
        if not HAS_DOCKER:
            raise DockerSdkMissingError(
                "the docker Python SDK is required for the docker destination", DOCKER_IMPORT_ERROR
            )
        self.source = spec.get("source") or "registry"
        self.tag_as = spec.get("tag_as") or []
        self.engine = DockerEngine(spec.get("host"))
        self.registry, self.archive_of, self.credentials_for = registry, archive_of, credentials_for

    def target(self, image: SourceImage) -> str:
        return f"{self.engine.host}#{image.ref}"

    def tags_for(self, image: SourceImage) -> list[str]:
        """The extra names, relative to the image's own path (nvcr.io -> nvcr.io/nvidia/pytorch:TAG), whatever registry it came from."""
        return list(tag_targets(image.ref, self.tag_as))

    def reference(self, image: SourceImage) -> ImageReference:
        """The name the engine holds the image under: where it pulls from, or the archive's tag."""
        if self.source == "registry" and self.registry:
            return self.registry.reference(image)
        return image.ref

    def plan(self, image: SourceImage, found: ResolvedImage, ctx: PlanContext) -> Step:
        want = (
            self.registry.want(image, found.digest, ctx)
            if self.source == "registry" and self.registry
            else found.digest
        )
        recorded = ctx.store.destination(image.key, f"{self.kind}:{self.target(image)}") or {}
        config = found.config_digest or (
            recorded.get("config_digest") if recorded.get("source_digest") == found.digest else None
        )
        status = self.engine.status(self.reference(image), want, config, self.tags_for(image))
        step = ctx.step(self.kind, self.target(image), want, want if status.up_to_date else None)
        if not status.up_to_date and not ctx.force:
            step.reason = status.reason
        return step

    def owns(self, dest_key: str, record: dict[str, Any]) -> bool:
        return (
            record.get("type") == "docker"
            and record.get("host") == self.engine.host
            and dest_key.startswith(f"{self.kind}:")
        )

    def remove(
        self, key: str, record: dict[str, Any], wanted: dict[str, dict[str, Any]], check_mode: bool
    ) -> tuple[str, str, int]:
        """Remove the names this collection gave the image, unless they now name another image or a container uses it."""
        names = [record["reference"]] + [t for t in record.get("tags") or [] if t != record["reference"]]
        inspected = [(name, self.engine.inspect(name)) for name in names]
        held = [(name, image) for name, image in inspected if image is not None]
        if not held:
            return "already gone", f"{record['reference']} is no longer in the engine", 0
        ours = [name for name, image in held if image.id == record.get("image_id")]
        if not ours:
            return (
                "kept",
                f"re-pushed since: {held[0][0]} now names image {held[0][1].id}, not the {record.get('image_id')} loaded",
                0,
            )
        users = self.engine.containers_using(str(record.get("image_id")))
        if users:
            return "kept", f"the container(s) {', '.join(users[:3])} use it", 0
        if check_mode:
            return "would remove", f"remove {', '.join(ours)} from the engine at {self.engine.host}", 0
        for name in ours:
            self.engine.untag(name)
        return "removed", f"removed {', '.join(ours)} from the engine at {self.engine.host}", 0

    def begin(self, image: SourceImage, content: ImageContent | None, step: Step) -> _EngineWrite:
        return _EngineWrite(self)

    def ping(self) -> None:
        """Fail at once, before any plan, if the engine cannot be reached."""
        self.engine.ping()

    def close(self) -> None:
        self.engine.close()


class _EngineWrite(ImageWrite):
    def __init__(self, dest: EngineDestination) -> None:
        super().__init__()
        self.dest = dest

    def commit(self, image: SourceImage, step: Step, source_digest: str) -> Committed:
        dest, engine = self.dest, self.dest.engine
        reference, want = dest.reference(image), step.want or ""
        config_digest = None
        if dest.source == "archive" and dest.archive_of:
            path = dest.archive_of(image)
            engine.load(path)
            config_digest = archive_config(path)
        else:
            user, password = dest.credentials_for(reference.registry)
            engine.pull(reference, username=user, password=password)
        status = engine.status(reference, want, config_digest, dest.tags_for(image))
        for target in status.missing_tags:
            engine.tag(reference, target)
        final = engine.status(reference, want, config_digest, dest.tags_for(image))
        if not final.up_to_date:
            raise AirgapError(
                f"the Docker engine at {engine.host} does not hold {reference} with digest {want} after the "
                f"{'load' if dest.source == 'archive' else 'pull'}: {final.reason}"
            )
        return Committed(
            want,
            {
                "type": "docker",
                "host": engine.host,
                "reference": str(reference),
                "digest": want,
                "image_id": final.image_id,
                "config_digest": final.image_id,
                "tags": list(final.tag_targets),
                "written": utc_now(),
            },
        )


def archive_config(path: str) -> str:
    """The config digest of the image in a docker archive (its manifest.json names the config blob)."""
    docker = read_archive_head(path)[1]
    if not docker:
        raise AirgapError(f"{path} holds no docker image (no manifest.json): write it again as a docker archive")
    return "sha256:" + str(docker[0]["Config"]).rsplit("/", 1)[-1]


def credentials_matcher(
    registry: RegistryDestination | None, source_host: str | None, source_credentials: tuple[str | None, str | None]
) -> Callable[[str | None], tuple[str | None, str | None]]:
    """For a registry host, the credentials given for exactly that host, or none: a password never goes to another host."""

    def credentials_for(host: str | None) -> tuple[str | None, str | None]:
        if registry and registry.credentials[1] and host == registry_host(registry.url):
            return registry.credentials
        if source_credentials[1] and source_host and host == source_host:
            return source_credentials
        return None, None

    return credentials_for
