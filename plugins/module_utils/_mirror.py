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

from ansible_collections.airgap.ngc.plugins.module_utils._archive import ArchiveClosedError, ArchiveWriter, cleanup_stale_partials, descriptor
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
from ansible_collections.airgap.ngc.plugins.module_utils._state import StateStore, utc_now
from ansible_collections.airgap.ngc.plugins.module_utils._reference import ImageReference
from ansible_collections.airgap.ngc.plugins.module_utils._transfer import LocalBlob, UploadSink, fan_out, index_archive_blobs

SOURCE_DIGEST_ANNOTATION = "io.github.airgap-ngc.source.digest"


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


class ArchiveDestination:
    """Tar archives under a directory, one per image and format."""

    kind = "archive"

    def __init__(self, spec: dict[str, Any]) -> None:
        self.dir = spec["dir"]
        self.fmt = spec.get("format") or "docker"
        self.platform = spec.get("platform") or "linux/amd64"

    def target(self, source: SourceImage) -> str:
        return archive_path(self.dir, source, self.fmt)

    def observe(self, source: SourceImage, recorded: dict[str, Any] | None) -> str | None:
        """The source digest the archive was written from, if the file is there as recorded."""
        if not recorded:
            return None
        try:
            size = os.stat(self.target(source)).st_size
        except OSError:
            return None
        return recorded.get("digest") if size == recorded.get("size") else None

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
        self.images = source_images(params["images"], params["registry_url"])
        self.source = source_registry_from(params)
        self.registry = RegistryDestination(params["registry"], params) if params.get("registry") else None
        self.archive = ArchiveDestination(params["archive"]) if params.get("archive") else None
        self.docker = EngineDestination(params["docker"]) if params.get("docker") else None
        self.offline = bool(params.get("offline"))
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
        try:
            if self.docker:
                self.docker.engine.ping()
            with StateStore(self.params["facts_file"], read_only=self.check_mode) as store:
                plans = [self._plan(image, store) for image in self.images]
                if not self.check_mode:
                    self.progress.start(0, len(plans))
                    for plan in plans:
                        self._execute(plan, store)
                    self.progress.finish("failed" if any(p.error for p in plans) else "done")
        finally:
            self.source.close()
            for dest in (self.registry, self.docker):
                if dest is not None:
                    dest.close()
        return self._result(plans)

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
                key = f"archive:{path}"
                have = self.archive.observe(image, store.destination(image.key, key))
                plan.steps.append(self._step("archive", path, plan.digest, have))
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

    def _step(self, kind: str, target: str, want: str | None, have: str | None) -> Step:
        action, reason = decide(want, have, self.force)
        return Step(kind=kind, dest_key=f"{kind}:{target}", target=target, action=action, reason=reason, before=have,
                    after=want if action == COPY and not self.check_mode else have)

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
            if plan.copies("registry") or plan.copies("archive"):
                content = self._fetch(image, plan.digest or "")
                for step in plan.copies("registry") if self.registry else []:
                    step.after = self._copy_to_registry(self.registry, image, content)
                    plan.written = True
                    store.record_destination(image.key, content.top.digest, step.dest_key, self._registry_entry(step))
                for step in plan.copies("archive") if self.archive else []:
                    step.after = self._copy_to_archive(self.archive, image, content, step, store)
                    plan.written = True
            for step in plan.copies("docker") if self.docker else []:
                step.after = self._copy_to_engine(self.docker, image, plan, step, store)
                plan.written = True
            if self._save_readme(image, plan):
                plan.written = True
            for step in plan.steps:
                if step.kind == "registry" and step.action == SKIP and store.destination(image.key, step.dest_key) is None:
                    store.record_destination(image.key, plan.digest or "", step.dest_key, self._registry_entry(step))
            store.clear_failure(image.key)
        except (AirgapError, OSError) as exc:
            plan.error = _message(exc)
            store.record_failure(image.key, plan.error)
        finally:
            self.progress.image_done()

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
        """Read each blob once (locally if an archive of this run has it) and feed it to its sinks, in parallel."""
        self.progress.add_total(sum(blobs.values()))

        def one(item: tuple[str, int]) -> None:
            digest, size = item
            sinks = sinks_for(digest, size)
            if not sinks:
                self.progress.advance(size)
                return
            local = self.local_blobs.get(digest)
            if local is not None and local.size == size:
                fan_out(local.chunks(), sinks, self.progress.advance)
                self.totals.add(reused=size)
                return
            with self.source.open_blob(image.ref.repository, digest, expected_size=size) as reader:
                self.totals.add(transferred=fan_out(iter(reader), sinks, self.progress.advance))

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

    def _copy_to_registry(self, dest: RegistryDestination, image: SourceImage, content: ImageContent) -> str:
        ref = registry_target(image, dest.url, dest.prefix)
        entries = select_children(content.top.data, self.platforms) if content.top.is_index else None
        manifests = content.images_for(entries)
        blobs = blob_sizes(m.data for m in manifests)
        missing = {}
        for digest, size in blobs.items():
            if dest.prepare_blob(ref.repository, digest):
                self.totals.add(reused=size)
            else:
                missing[digest] = size
        self._transfer(image, missing, lambda digest, size: [dest.upload_sink(ref.repository, digest, size)])
        for manifest in manifests if content.top.is_index else []:
            dest.client.put_manifest(ref.repository, manifest.digest, manifest.raw, manifest.media_type)
        raw = filtered_index(content.top.raw, content.top.data, entries or []) if content.top.is_index else content.top.raw
        return dest.client.put_manifest(ref.repository, ref.manifest_reference if ref.tag else _sha256(raw), raw, content.top.media_type)

    def _copy_to_archive(self, dest: ArchiveDestination, image: SourceImage, content: ImageContent, step: Step, store: StateStore) -> str:
        path = step.target
        directory = os.path.dirname(path)
        try:
            os.makedirs(directory, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot create archive directory {directory}: {exc.strerror or exc}") from None
        cleanup_stale_partials(directory, os.path.basename(path))
        platforms = [dest.platform] if dest.fmt == "docker" else None
        entries = select_children(content.top.data, platforms) if content.top.is_index else None
        manifests = content.images_for(entries)
        blobs = blob_sizes(m.data for m in manifests)
        with ArchiveWriter(path, dest.fmt) as writer:
            self._transfer(image, blobs, lambda digest, size: [] if writer.has_blob(digest) else [writer.begin_blob(digest, size)])
            name = str(image.ref) if image.ref.tag else None
            for manifest in manifests:
                writer.add_bytes_blob(manifest.digest, manifest.raw)
            if dest.fmt == "docker":
                manifest = manifests[0]
                writer.set_docker_image(manifest.data["config"]["digest"], [b["digest"] for b in manifest.data.get("layers") or []],
                                        [name] if name else [])
                top = manifest
            else:
                writer.add_bytes_blob(content.top.digest, content.top.raw)
                top = content.top
            writer.set_oci_index([descriptor(top.media_type, top.digest, top.size, ref_name=image.ref.tag, image_name=name,
                                             annotations={SOURCE_DIGEST_ANNOTATION: content.top.digest})])
            result = writer.commit()
        self.local_blobs.update(index_archive_blobs(result.path))
        store.record_destination(image.key, content.top.digest, step.dest_key, {
            "type": "archive", "path": result.path, "format": dest.fmt, "size": result.size, "sha256": result.sha256,
            "digest": content.top.digest, "config_digest": manifests[0].data["config"]["digest"], "written": utc_now(),
        })
        return content.top.digest

    def _copy_to_engine(self, docker: EngineDestination, image: SourceImage, plan: ImagePlan, step: Step, store: StateStore) -> str:
        reference = self._engine_reference(image)
        want = step.after or plan.digest or ""
        config_digest = None
        if docker.source == "archive" and self.archive:
            docker.engine.load(self.archive.target(image))
            config_digest = self.archive.read(image)[1]
        else:
            if self.registry and reference.registry == registry_target(image, self.registry.url, None).registry:
                user, password = self.registry.credentials
            else:
                user, password = (self.params["username"], self.params.get("api_key")) if self.params.get("api_key") else (None, None)
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
        fd, temp = tempfile.mkstemp(prefix=".README.md.", dir=os.path.dirname(path))
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

    def _registry_entry(self, step: Step) -> dict[str, Any]:
        return {"type": "registry", "reference": step.target, "digest": step.after, "written": utc_now()}

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
