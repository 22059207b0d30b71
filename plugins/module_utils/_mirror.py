# Copyright (c) airgap.ngc contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private: ``ngc_image_mirror``'s work: observe, plan, then copy each image and record it. Not a public API.

Per image: one HEAD on the source for its digest, one look at each destination (a HEAD on a
registry, the facts file and a stat for an archive). Only images with something missing are
fetched. Their blobs are read once each and fed to every destination that lacks them; a blob
a destination registry has in another repository is mounted; a blob an archive of this run
already holds is copied from that archive instead of the network. The facts file is written
after each image, so an interrupted run resumes where it stopped.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import tarfile
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Iterator

from ansible_collections.airgap.ngc.plugins.module_utils._archive import ArchiveClosedError, ArchiveWriter
from ansible_collections.airgap.ngc.plugins.module_utils._files import cleanup_stale_partials, cleanup_tree
from ansible_collections.airgap.ngc.plugins.module_utils._oci import descriptor
from ansible_collections.airgap.ngc.plugins.module_utils._engine import DOCKER_IMPORT_ERROR, HAS_DOCKER, DockerEngine, DockerSdkMissingError, tag_targets
from ansible_collections.airgap.ngc.plugins.module_utils._errors import AirgapError, ConfigError
from ansible_collections.airgap.ngc.plugins.module_utils._options import registry_from, source_registry_from
from ansible_collections.airgap.ngc.plugins.module_utils._plan import (
    COPY,
    SKIP,
    ImagePlan,
    SourceImage,
    Step,
    archive_path,
    blob_sizes,
    decide,
    filtered_index,
    registry_target,
    select_children,
    source_images,
)
from ansible_collections.airgap.ngc.plugins.module_utils._progress import ProgressReporter
from ansible_collections.airgap.ngc.plugins.module_utils._registry import Manifest
from ansible_collections.airgap.ngc.plugins.module_utils._state import RunLock, StateStore, utc_now
from ansible_collections.airgap.ngc.plugins.module_utils._reference import ImageReference, registry_host
from ansible_collections.airgap.ngc.plugins.module_utils._transfer import LocalBlob, LocalBlobChanged, UploadSink, fan_out, index_archive_blobs

SOURCE_DIGEST_ANNOTATION = "io.github.airgap-ngc.source.digest"
SPOOL_SHARE = 0.5  # of the free space an archive leaves on its filesystem, at most, for blobs spooled meanwhile
MAX_MESSAGES = 3  # failed images named in the task's message; all of them are in failure_messages
MAX_MESSAGE_CHARS = 300


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


def failure_summary(result: dict[str, Any]) -> str:
    """The task's message for failed images: how many, and the first few reasons, each shortened."""
    messages = result.get("failure_messages") or []
    shown = [m if len(m) <= MAX_MESSAGE_CHARS else m[:MAX_MESSAGE_CHARS - 3] + "..." for m in messages[:MAX_MESSAGES]]
    more = f" (and {len(messages) - MAX_MESSAGES} more)" if len(messages) > MAX_MESSAGES else ""
    return (f"{len(messages)} of {len(result.get('images') or [])} image(s) could not be copied: " + "; ".join(shown) + more
            + "; every reason is in failure_messages")


def _sinks_of(writes: list[Any], digest: str, size: int) -> list[_GuardedSink]:
    """The sinks of one blob in the destinations that still work and lack it; a destination that fails here is dropped."""
    sinks = []
    for write in writes:
        if write.error is not None:
            continue
        try:
            sink = write.sink(digest, size)
        except (AirgapError, OSError) as exc:
            _note_error(write, exc)
            continue
        if sink is not None:
            sinks.append(_GuardedSink(write, sink))
    return sinks


def _note_error(write: Any, exc: BaseException) -> None:
    """Keep a destination's first real error: a closed archive is only the echo of the failure that closed it."""
    if write.error is None or (isinstance(write.error, ArchiveClosedError) and not isinstance(exc, ArchiveClosedError)):
        write.error = exc


def _while_wanted(chunks: Iterator[bytes], sinks: list[Any]) -> Iterator[bytes]:
    """The chunks, until every sink has failed (no point reading on)."""
    for data in chunks:
        if all(getattr(sink, "failed", False) for sink in sinks):
            return
        yield data


class _GuardedSink:
    """A destination's sink in a shared read: if it fails, the destination is dropped from the read, not the others."""

    def __init__(self, write: Any, sink: Any) -> None:
        self.write_to, self.sink = write, sink

    @property
    def failed(self) -> bool:
        return self.write_to.error is not None

    def _failed(self, exc: BaseException) -> None:
        _note_error(self.write_to, exc)
        try:
            self.sink.abort()
        except Exception:  # pylint: disable=broad-exception-caught
            pass

    def write(self, data: bytes) -> None:
        if self.write_to.error is None:
            try:
                self.sink.write(data)
            except (AirgapError, OSError) as exc:
                self._failed(exc)

    def close(self) -> None:
        if self.write_to.error is None:
            try:
                self.sink.close()
            except (AirgapError, OSError) as exc:
                self._failed(exc)
        else:
            self.abort()

    def abort(self) -> None:
        try:
            self.sink.abort()
        except Exception:  # pylint: disable=broad-exception-caught
            pass


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


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


class RegistryDestination:
    """A destination registry: HEAD to observe, mount or upload blobs, push manifests."""

    kind = "registry"

    def __init__(self, spec: dict[str, Any], params: dict[str, Any]) -> None:
        self.url = spec["url"]
        self.prefix = spec.get("prefix")
        self.client = registry_from(params, self.url, spec.get("username"), spec.get("password"),
                                    validate_certs=spec.get("validate_certs", True), ca_path=spec.get("ca_path"))
        self.known_blobs: dict[str, str] = {}  # digest -> a repository of this registry that holds it
        self.credentials = (spec.get("username"), spec.get("password"))

    def target(self, source: SourceImage) -> str:
        return str(registry_target(source, self.url, self.prefix))

    def observe(self, source: SourceImage) -> str | None:
        ref = registry_target(source, self.url, self.prefix)
        found = self.client.head_manifest(ref.repository, ref.manifest_reference)
        return found.digest if found else None

    def prepare_blob(self, repository: str, digest: str) -> bool:
        """True if the registry already has the blob in ``repository`` (present, or mounted from another one)."""
        if self.client.head_blob(repository, digest) is not None:
            self.known_blobs[digest] = repository
            return True
        origin = self.known_blobs.get(digest)
        if origin and origin != repository and self.client.mount_blob(repository, digest, origin):
            self.known_blobs[digest] = repository
            return True
        return False

    def begin(self, image: SourceImage, content: ImageContent, platforms: list[str] | None, totals: Totals) -> _RegistryWrite:
        """Start copying one image: blobs the registry has (or can mount) are settled now, the rest are sinks."""
        ref = registry_target(image, self.url, self.prefix)
        entries = select_children(content.top.data, platforms) if content.top.is_index else None
        manifests = content.images_for(entries)
        missing = {}
        for digest, size in blob_sizes(m.data for m in manifests).items():
            if self.prepare_blob(ref.repository, digest):
                totals.add(reused=size)
            else:
                missing[digest] = size
        return _RegistryWrite(self, ref, content, entries, manifests, missing)

    def upload_sink(self, repository: str, digest: str, size: int) -> UploadSink:
        def upload(chunks: Iterator[bytes]) -> Any:
            # fan_out ends the chunks only after the reader has checked the digest (until then the
            # upload holds back its last chunk), and the registry checks it too: no second hash here.
            result = self.client.upload_blob(repository, digest, size, chunks, verify=False)
            self.known_blobs[digest] = repository
            return result

        return UploadSink(upload, f"upload of {digest} to {self.client.host}/{repository}")

    def close(self) -> None:
        self.client.close()


class _RegistryWrite:
    """One image going into a registry: its missing blobs as upload sinks, then the manifests (children first)."""

    def __init__(self, dest: RegistryDestination, ref: ImageReference, content: ImageContent,
                 entries: list[dict[str, Any]] | None, manifests: list[Manifest], missing: dict[str, int]) -> None:
        self.dest, self.ref, self.content, self.entries, self.manifests = dest, ref, content, entries, manifests
        self.blobs = missing
        self.error: BaseException | None = None

    def sink(self, digest: str, size: int) -> Any:
        return self.dest.upload_sink(self.ref.repository, digest, size) if digest in self.blobs else None

    def commit(self, image: SourceImage, store: StateStore, step: Step) -> str:
        client, top = self.dest.client, self.content.top
        for manifest in self.manifests if top.is_index else []:
            client.put_manifest(self.ref.repository, manifest.digest, manifest.raw, manifest.media_type)
        raw = filtered_index(top.raw, top.data, self.entries or []) if top.is_index else top.raw
        digest = client.put_manifest(self.ref.repository, self.ref.manifest_reference if self.ref.tag else _sha256(raw), raw,
                                     top.media_type)
        store.record_destination(image.key, top.digest, step.dest_key, registry_entry(step.target, digest))
        return digest

    def abort(self) -> None:
        """Nothing to undo: uploaded blobs without a manifest are the registry's garbage to collect."""


class ArchiveDestination:
    """Tar archives under a directory, one per image and format."""

    kind = "archive"

    def __init__(self, spec: dict[str, Any]) -> None:
        self.dir = spec["dir"]
        self.fmt = spec.get("format") or "docker"
        self.platform = spec.get("platform") or "linux/amd64"

    def target(self, source: SourceImage) -> str:
        return archive_path(self.dir, source, self.fmt)

    def observe(self, source: SourceImage, recorded: dict[str, Any] | None) -> tuple[str | None, str]:
        """The source digest the archive was written from, if the file is there as recorded, or None and why not."""
        if not recorded:
            return None, "missing"
        try:
            size = os.stat(self.target(source)).st_size
        except OSError:
            return None, "missing"
        if size != recorded.get("size"):
            return None, "the file is not the one recorded"
        if self.fmt == "docker" and recorded.get("platform", "unknown") not in (None, self.platform):
            return None, f"holds platform {recorded.get('platform', 'unknown')}, archive.platform is {self.platform}"
        return recorded.get("digest"), "missing"

    def begin(self, image: SourceImage, content: ImageContent, path: str) -> _ArchiveWrite:
        """Start writing one image's archive (under a temporary name until commit)."""
        directory = os.path.dirname(path)
        try:
            os.makedirs(directory, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot create archive directory {directory}: {exc.strerror or exc}") from None
        platforms = [self.platform] if self.fmt == "docker" else None
        entries = select_children(content.top.data, platforms) if content.top.is_index else None
        manifests = content.images_for(entries)
        blobs = blob_sizes(m.data for m in manifests)
        writer = ArchiveWriter(path, self.fmt, spool_budget=spool_budget(directory, sum(blobs.values())))
        return _ArchiveWrite(self, writer, content, manifests, blobs)

    def read(self, source: SourceImage) -> tuple[str, str]:
        """The source digest and config digest an archive written by this module holds (for offline runs)."""
        path = self.target(source)
        try:
            with tarfile.open(path, "r:") as archive:
                index = json.load(archive.extractfile("index.json"))  # type: ignore[arg-type]
                docker = json.load(archive.extractfile("manifest.json"))  # type: ignore[arg-type]
        except FileNotFoundError:
            raise AirgapError(f"there is no archive {path} for {source.ref}: mirror it to the archive directory first") from None
        except (OSError, KeyError, ValueError, tarfile.TarError) as exc:
            raise AirgapError(f"{path} is not an archive written by ngc_image_mirror ({exc}): write it again") from None
        top = (index.get("manifests") or [{}])[0]
        digest = (top.get("annotations") or {}).get(SOURCE_DIGEST_ANNOTATION) or top.get("digest")
        config = "sha256:" + str(docker[0]["Config"]).rsplit("/", 1)[-1]
        return str(digest), config


class _ArchiveWrite:
    """One image going into a tar archive: every blob it lacks is a sink; commit() writes the layouts and renames."""

    def __init__(self, dest: ArchiveDestination, writer: ArchiveWriter, content: ImageContent, manifests: list[Manifest],
                 blobs: dict[str, int]) -> None:
        self.dest, self.writer, self.content, self.manifests, self.blobs = dest, writer, content, manifests, blobs
        self.error: BaseException | None = None
        self.result: Any = None

    def sink(self, digest: str, size: int) -> Any:
        return None if self.writer.has_blob(digest) else self.writer.begin_blob(digest, size)

    def commit(self, image: SourceImage, store: StateStore, step: Step) -> str:
        writer, top, manifests = self.writer, self.content.top, self.manifests
        name = str(image.ref) if image.ref.tag else None
        for manifest in manifests:
            writer.add_bytes_blob(manifest.digest, manifest.raw)
        if self.dest.fmt == "docker":
            first = manifests[0]
            writer.set_docker_image(first.data["config"]["digest"], [b["digest"] for b in first.data.get("layers") or []],
                                    [name] if name else [])
            entry = first
        else:
            writer.add_bytes_blob(top.digest, top.raw)
            entry = top
        writer.set_oci_index([descriptor(entry.media_type, entry.digest, entry.size, ref_name=image.ref.tag, image_name=name,
                                         annotations={SOURCE_DIGEST_ANNOTATION: top.digest})])
        self.result = result = writer.commit()
        store.record_destination(image.key, top.digest, step.dest_key, {
            "type": "archive", "path": result.path, "format": self.dest.fmt, "size": result.size, "sha256": result.sha256,
            "digest": top.digest, "config_digest": manifests[0].data["config"]["digest"], "written": utc_now(),
            "platform": self.dest.platform if self.dest.fmt == "docker" and top.is_index else None,
        })
        return top.digest

    def abort(self) -> None:
        self.writer.abort()


class EngineDestination:
    """A Docker engine: pulls from a registry, or loads the docker archive of the same run."""

    kind = "docker"

    def __init__(self, spec: dict[str, Any]) -> None:
        if not HAS_DOCKER:
            raise DockerSdkMissingError("the docker Python SDK is required for the docker destination", DOCKER_IMPORT_ERROR)
        self.source = spec.get("source") or "registry"
        self.tag_as = spec.get("tag_as") or []
        self.engine = DockerEngine(spec.get("host"))

    def target(self, image: SourceImage) -> str:
        return f"{self.engine.host}#{image.ref}"

    def tags_for(self, image: SourceImage) -> list[str]:
        """The extra names, relative to the image's own path (nvcr.io -> nvcr.io/nvidia/pytorch:TAG), whatever registry it came from."""
        return list(tag_targets(image.ref, self.tag_as))

    def close(self) -> None:
        self.engine.close()


@dataclass
class Totals:
    """Bytes read from the source and bytes not needed, added to from several transfer threads."""

    transferred: int = 0
    reused: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, transferred: int = 0, reused: int = 0) -> None:
        with self._lock:
            self.transferred += transferred
            self.reused += reused


class Mirror:
    """Runs ``ngc_image_mirror``: ``Mirror(params, check_mode, diff_mode).run()`` returns the module result."""

    def __init__(self, params: dict[str, Any], check_mode: bool = False, diff_mode: bool = False) -> None:
        self.params = params
        self.check_mode = check_mode
        self.diff_mode = diff_mode
        self.force = bool(params.get("force"))
        self.parallel = max(int(params.get("parallel") or 1), 1)
        self.platforms = params.get("platforms") or None
        self.offline = bool(params.get("offline"))
        # Offline, images are named as their archives hold them, and no registry is contacted.
        self.images = source_images(params["images"], params["registry_url"], check_host=not self.offline)
        self.source = source_registry_from(params)
        self.registry = RegistryDestination(params["registry"], params) if params.get("registry") else None
        self.archive = ArchiveDestination(params["archive"]) if params.get("archive") else None
        self.docker = EngineDestination(params["docker"]) if params.get("docker") else None
        if self.offline and (self.registry or not self.archive or not self.docker or self.docker.source != "archive"):
            raise ConfigError("offline needs archive (where the archives are) and docker with source=archive, and no registry destination")
        if self.docker and self.docker.source == "archive" and not self.archive:
            raise ConfigError("docker.source=archive loads the archives of archive.dir: set archive")
        self.totals = Totals()
        self.local_blobs: dict[str, LocalBlob] = {}
        self._manifests: dict[str, Manifest] = {}  # by digest: content-addressed, so safe to keep for the run
        self.progress = ProgressReporter(None if check_mode else params.get("progress_file"))

    # Run ---------------------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        archive_lock = None
        try:
            if self.docker:
                self.docker.engine.ping()
            with StateStore(self.params["facts_file"], read_only=self.check_mode) as store:
                if not self.check_mode:
                    archive_lock = self._take_directories(store)
                plans = [self._plan(image, store) for image in self.images]
                if not self.check_mode:
                    self.progress.start(0, len(plans))
                    for plan in plans:
                        self._execute(plan, store)
                    self.progress.finish("failed" if any(p.error for p in plans) else "done")
        finally:
            if archive_lock is not None:
                archive_lock.release()
            self.source.close()
            for dest in (self.registry, self.docker):
                if dest is not None:
                    dest.close()
        return self._result(plans)

    def _take_directories(self, store: StateStore) -> RunLock | None:
        """Lock archive.dir itself against other runs, and remove what killed runs left in the directories written to.

        Two runs with different facts files must not write one archive directory: one could replace an archive the
        other is copying blobs from. The lock (flock on the directory, nothing written) is held until the end of the run.
        """
        for name in (self.params["facts_file"], self.params.get("progress_file")):
            if name:
                cleanup_stale_partials(os.path.dirname(os.path.abspath(name)), os.path.basename(name))
        if not self.archive:
            return None
        try:
            os.makedirs(self.archive.dir, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot create archive directory {self.archive.dir} (archive.dir): {exc.strerror or exc}") from None
        lock = RunLock(self.archive.dir, f"archive.dir {self.archive.dir}")
        lock.acquire()
        try:
            cleanup_tree(self.archive.dir)
        except BaseException:
            lock.release()
            raise
        del store  # the facts file is already locked by the caller: the archive lock is taken second, always
        return lock

    # Plan --------------------------------------------------------------------------------------

    def _plan(self, image: SourceImage, store: StateStore) -> ImagePlan:
        plan = ImagePlan(source=image)
        try:
            if self.offline and self.archive and self.docker:
                plan.digest, config_digest = self.archive.read(image)
                self._plan_docker(self.docker, plan, plan.digest, config_digest)
                return plan
            found = self.source.head_manifest(image.ref.repository, image.ref.manifest_reference)
            if found is None:
                raise AirgapError(f"{image.ref} does not exist on {self.source.host}: check the image name and tag")
            plan.digest, plan.media_type = found.digest, found.media_type
            registry_digest = plan.digest
            if self.registry:
                registry_digest = self._registry_digest(image, plan.digest)
                have = self.registry.observe(image)
                plan.steps.append(self._step("registry", self.registry.target(image), registry_digest, have))
            if self.archive:
                path = self.archive.target(image)
                have, why = self.archive.observe(image, store.destination(image.key, f"archive:{path}"))
                plan.steps.append(self._step("archive", path, plan.digest, have, why))
            if self.docker:
                recorded = store.destination(image.key, f"docker:{self.docker.target(image)}") or {}
                config = recorded.get("config_digest") if recorded.get("source_digest") == plan.digest else None
                self._plan_docker(self.docker, plan, registry_digest if self.docker.source == "registry" else plan.digest, config)
        except (AirgapError, OSError) as exc:
            plan.error = _message(exc)
        return plan

    def _engine_reference(self, image: SourceImage) -> ImageReference:
        """The name the engine holds the image under: where it pulls from, or the archive's tag."""
        if self.docker and self.docker.source == "registry" and self.registry:
            return registry_target(image, self.registry.url, self.registry.prefix)
        return image.ref

    def _plan_docker(self, docker: EngineDestination, plan: ImagePlan, want: str, config_digest: str | None) -> None:
        image = plan.source
        status = docker.engine.status(self._engine_reference(image), want, config_digest, docker.tags_for(image))
        step = self._step("docker", docker.target(image), want, want if status.up_to_date else None)
        if not status.up_to_date and not self.force:
            step.reason = status.reason
        plan.steps.append(step)

    def _step(self, kind: str, target: str, want: str | None, have: str | None, missing_reason: str = "missing") -> Step:
        """One destination's step. ``after`` is what it holds: the wanted digest only in check mode's plan, or once written."""
        action, reason = decide(want, have, self.force, missing_reason)
        return Step(kind=kind, dest_key=f"{kind}:{target}", target=target, action=action, reason=reason, before=have,
                    after=want if action == COPY and self.check_mode else have, want=want)

    def _registry_digest(self, image: SourceImage, digest: str) -> str:
        """The digest the destination registry should hold: the source's, or that of the platform-filtered index."""
        if not self.platforms:
            return digest
        top = self._top_manifest(image, digest)
        if not top.is_index:
            return digest
        return _sha256(filtered_index(top.raw, top.data, select_children(top.data, self.platforms)))

    def _top_manifest(self, image: SourceImage, digest: str) -> Manifest:
        """The image's manifest or index by digest, fetched once a run (planning with platforms needs it too)."""
        if digest not in self._manifests:
            self._manifests[digest] = self.source.get_manifest(image.ref.repository, digest)
        return self._manifests[digest]

    # Act ---------------------------------------------------------------------------------------

    def _execute(self, plan: ImagePlan, store: StateStore) -> None:
        if plan.error:
            store.record_failure(plan.source.key, plan.error)
            return
        image = plan.source
        self.progress.image(str(image.ref))
        try:
            errors = self._copy_content(plan, store)
            for step in plan.copies("docker") if self.docker else []:
                step.after = self._copy_to_engine(self.docker, image, plan, step, store)
                plan.written = True
            if self._save_readme(image, plan):
                plan.written = True
            for step in plan.steps:
                if step.kind == "registry" and step.action == SKIP and store.destination(image.key, step.dest_key) is None:
                    store.record_destination(image.key, plan.digest or "", step.dest_key, registry_entry(step.target, step.after))
            if errors:
                raise errors[0]
            store.clear_failure(image.key)
        except (AirgapError, OSError) as exc:
            plan.error = _message(exc)
            store.record_failure(image.key, plan.error)
        finally:
            self.progress.image_done()

    def _copy_content(self, plan: ImagePlan, store: StateStore) -> list[BaseException]:
        """Copy the image's blobs and manifests to every registry and archive step in one pass: each blob is read once.

        A destination that fails (a full archive disk, a refused upload) is dropped from the pass and its error
        returned; the others are completed and recorded. A failure of the read itself fails them all (raised).
        """
        image = plan.source
        steps = plan.copies("registry") + plan.copies("archive")
        if not steps:
            return []
        content = self._fetch(image, plan.digest or "")
        writes: list[tuple[Step, Any]] = []
        try:
            for step in steps:
                if step.kind == "registry" and self.registry:
                    writes.append((step, self.registry.begin(image, content, self.platforms, self.totals)))
                elif step.kind == "archive" and self.archive:
                    writes.append((step, self.archive.begin(image, content, step.target)))
            needed: dict[str, int] = {}
            for _step, write in writes:
                needed.update(write.blobs)
            self._transfer(image, needed, lambda digest, size: _sinks_of([write for _step, write in writes], digest, size))
            errors = []
            for step, write in writes:
                if write.error is None:
                    try:
                        step.after = write.commit(image, store, step)
                        plan.written = True
                        if step.kind == "archive":
                            self.local_blobs.update(index_archive_blobs(write.result.path))
                        continue
                    except (AirgapError, OSError) as exc:
                        write.error = exc
                errors.append(write.error)
            return errors
        finally:
            for _step, write in writes:
                write.abort()

    def _fetch(self, image: SourceImage, digest: str) -> ImageContent:
        content = ImageContent(top=self._top_manifest(image, digest))
        if content.top.is_index:
            wanted: dict[str, dict[str, Any]] = {}
            if self.registry:
                wanted.update((e["digest"], e) for e in select_children(content.top.data, self.platforms))
            if self.archive:
                platforms = [self.archive.platform] if self.archive.fmt == "docker" else None
                wanted.update((e["digest"], e) for e in select_children(content.top.data, platforms))
            for child in wanted:
                content.children[child] = self.source.get_manifest(image.ref.repository, child)
        return content

    def _transfer(self, image: SourceImage, blobs: dict[str, int], sinks_for: Any) -> None:
        """Read each blob once (locally if an archive of this run has it) and feed it to its sinks, in parallel.

        A read that fails raises (the first error, not its echoes); a sink that fails is dropped by _GuardedSink.
        """
        self.progress.add_total(sum(blobs.values()))

        def one(item: tuple[str, int]) -> None:
            digest, size = item
            sinks = sinks_for(digest, size)
            if not sinks:
                self.progress.advance(size)
                return
            try:
                local = self.local_blobs.get(digest)
                if local is not None and local.size == size:
                    try:
                        chunks = local.open()
                    except LocalBlobChanged:
                        self.local_blobs.pop(digest, None)  # not trusted: read it from the source below
                    else:
                        fan_out(_while_wanted(chunks, sinks), sinks, self.progress.advance)
                        self.totals.add(reused=size)
                        return
                with self.source.open_blob(image.ref.repository, digest, expected_size=size) as reader:
                    self.totals.add(transferred=fan_out(_while_wanted(iter(reader), sinks), sinks, self.progress.advance))
            except BaseException:
                for sink in sinks:  # a read that failed before fan_out began: free the sinks (upload sessions, tar slot)
                    sink.abort()
                raise

        # Largest first: a big layer starts at once instead of being left to stream alone at the end
        # (and, for an archive, goes straight into the tar rather than through a spool file).
        order = sorted(blobs.items(), key=lambda item: -item[1])
        if len(order) <= 1 or self.parallel == 1:
            for item in order:
                one(item)
            return
        errors: list[BaseException] = []

        def guarded(item: tuple[str, int]) -> None:
            try:
                one(item)
            except BaseException as exc:  # pylint: disable=broad-exception-caught
                errors.append(exc)

        with ThreadPoolExecutor(max_workers=self.parallel) as pool:
            list(pool.map(guarded, order))
        if errors:
            # A failure aborts the archive, and the other threads then fail on the closed archive: report the cause.
            raise next((exc for exc in errors if not isinstance(exc, ArchiveClosedError)), errors[0])

    def _copy_to_engine(self, docker: EngineDestination, image: SourceImage, plan: ImagePlan, step: Step, store: StateStore) -> str:
        reference = self._engine_reference(image)
        want = step.want or plan.digest or ""
        config_digest = None
        if docker.source == "archive" and self.archive:
            docker.engine.load(self.archive.target(image))
            config_digest = self.archive.read(image)[1]
        else:
            user, password = self._credentials_for(reference.registry)
            docker.engine.pull(reference, username=user, password=password)
        status = docker.engine.status(reference, want, config_digest, docker.tags_for(image))
        for target in status.missing_tags:
            docker.engine.tag(reference, target)
        final = docker.engine.status(reference, want, config_digest, docker.tags_for(image))
        if not final.up_to_date:
            raise AirgapError(f"the Docker engine at {docker.engine.host} does not hold {reference} with digest {want} after the "
                              f"{'load' if docker.source == 'archive' else 'pull'}: {final.reason}")
        store.record_destination(image.key, plan.digest or "", step.dest_key, {
            "type": "docker", "host": docker.engine.host, "reference": str(reference), "digest": want, "image_id": final.image_id,
            "config_digest": final.image_id, "tags": list(final.tag_targets), "written": utc_now(),
        })
        return want

    def _credentials_for(self, host: str | None) -> tuple[str | None, str | None]:
        """The credentials given for exactly this registry host, or none: a password never goes to another host."""
        if self.registry and self.registry.credentials[1] and host == registry_host(self.registry.url):
            return self.registry.credentials
        if self.params.get("api_key") and host == registry_host(self.params["registry_url"]):
            return self.params["username"], self.params["api_key"]
        return None, None

    def _save_readme(self, image: SourceImage, plan: ImagePlan) -> bool:
        """Write the image's description as README.md beside its archives; True if the file changed."""
        if not (self.params.get("save_readme") and self.archive and image.description):
            return False
        path = "/".join((self.archive.dir.rstrip("/"), image.ref.repository, "README.md"))
        data = image.description.encode("utf-8")
        try:
            with open(path, "rb") as handle:
                if handle.read() == data:
                    return False
        except OSError:
            pass
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd, temp = tempfile.mkstemp(prefix=f".README.md.partial-{os.getpid()}.", dir=os.path.dirname(path))
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.chmod(temp, 0o644)
            os.replace(temp, path)
        except BaseException:
            if os.path.exists(temp):
                os.unlink(temp)
            raise
        plan.steps.append(Step(kind="readme", dest_key=f"readme:{path}", target=path, action=COPY, reason="description changed", after=_sha256(data)))
        return True

    # Result ------------------------------------------------------------------------------------

    def _result(self, plans: list[ImagePlan]) -> dict[str, Any]:
        images = []
        for plan in plans:
            if plan.error:
                status, message = "failed", plan.error
            elif plan.needs_copy:
                status = "would copy" if self.check_mode else "copied"
                message = "; ".join(f"{s.kind}: {s.reason}" for s in plan.steps if s.action == COPY)
            else:
                status, message = "skipped", "up to date"
            images.append({"reference": plan.source.key, "digest": plan.digest, "media_type": plan.media_type, "status": status,
                           "message": message, "destinations": [step.as_dict() for step in plan.steps]})
        failed = [p for p in plans if p.error]
        result: dict[str, Any] = {
            "changed": any(p.needs_copy for p in plans) if self.check_mode else any(p.written for p in plans),
            "images": images,
            "bytes_transferred": self.totals.transferred,
            "bytes_reused": self.totals.reused,
            "failed_images": [p.source.key for p in failed],
            "failure_messages": [f"{p.source.key}: {p.error}" for p in failed],
        }
        if self.diff_mode:
            result["diff"] = {
                "before": {s.dest_key: s.before for p in plans for s in p.steps},
                "after": {s.dest_key: s.after for p in plans for s in p.steps},
            }
        return result


def _message(exc: BaseException) -> str:
    if isinstance(exc, AirgapError):
        return str(exc)
    if isinstance(exc, OSError):
        where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
        if exc.errno == errno.ENOSPC:
            return f"the disk is full{where}: free space and run again; what was already mirrored is kept"
        return f"{exc.strerror or exc}{where}"
    return str(exc)
