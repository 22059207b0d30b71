# Copyright (c) airgap.ngc contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private: the flattened destination (the base of the enroot and Apptainer destinations). Not a public API.

The layers of one platform's image are spooled under the destination directory, applied in order into a staging
rootfs there (``_formats/layers.py``), the destination adds its own files, and ``mksquashfs`` makes the image under
a temporary name, renamed when complete; the copier records it with its size and sha256.
"""

from __future__ import annotations

import json
import os
import shutil
import tarfile
import tempfile
from typing import Any

from ansible_collections.airgap.ngc.plugins.module_utils._transports.base import (
    BlobSink,
    Committed,
    Destination,
    ImageWrite,
    PlanContext,
    ResolvedImage,
    fetched,
)
from ansible_collections.airgap.ngc.plugins.module_utils._types.errors import AirgapError, ConfigError
from ansible_collections.airgap.ngc.plugins.module_utils._formats.files import (
    RESUME_MIN,
    BlobFile,
    os_error,
    partial_name,
    publish,
    pid_alive,
    register_live,
    remove_quietly,
    resume_name,
    safe_path,
)
from ansible_collections.airgap.ngc.plugins.module_utils._types.oci import ImageContent, Manifest
from ansible_collections.airgap.ngc.plugins.module_utils._formats.layers import (
    Rootfs,
    check_config_platform,
    created_time,
    sha256_file,
    squash,
)
from ansible_collections.airgap.ngc.plugins.module_utils._types.plan import SourceImage, Step
from ansible_collections.airgap.ngc.plugins.module_utils._formats.files import remove_recorded_file, under
from ansible_collections.airgap.ngc.plugins.module_utils._types.squash_options import squash_words
from ansible_collections.airgap.ngc.plugins.module_utils._state.facts import utc_now

DEFAULT_PLATFORM = "linux/amd64"
STAGING_PREFIX = ".flatten-staging-"  # <dir>/.flatten-staging-<pid>-XXXX: spooled blobs and the rootfs of one image
OLD_STAGING_PREFIXES = (STAGING_PREFIX, ".enroot-staging-")
UNPACKED_RATIO = 2  # unpacked size of a layer against its compressed size, for the space estimate


class FlattenedDestination(Destination):
    """A directory of files each holding one image flattened into squashfs. Subclasses name the file (``target``),
    add their files (``configure``) and make it (``package``)."""

    kind = "flattened"
    measures_space = True
    dir: str
    default_options = ""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.dir = os.path.abspath(spec["dir"])
        text = self.default_options if spec.get("squash_options") is None else spec["squash_options"]
        try:
            self.options = squash_words(text)
        except ValueError as exc:
            raise ConfigError(f"invalid {self.kind}.squash_options {text!r}: {exc}") from None
        self.platform = spec.get("platform") or DEFAULT_PLATFORM
        self.platforms = [self.platform]
        self._swept = False
        self._targets: dict[str, str] = {}  # file -> the image planned to it this run

    def target(self, image: SourceImage) -> str:
        raise NotImplementedError

    def record_extra(self) -> dict[str, Any]:
        """What else the facts record of a file says (a changed value means the file is written again)."""
        return {"squash_options": " ".join(self.options)}

    def plan(self, image: SourceImage, found: ResolvedImage, ctx: PlanContext) -> Step:
        path = self.target(image)
        other = self._targets.setdefault(path, image.key)
        if other != image.key:
            raise ConfigError(f"{image.ref} and {other} would both be written to {path}: {self.collision_hint}")
        recorded = ctx.store.destination(image.key, f"{self.kind}:{path}")
        have, why = None, "missing"
        if recorded:
            try:
                size = os.stat(path).st_size
            except OSError:
                size = None
            now = dict(self.record_extra(), selected_platform=self.platform)
            changed = [k for k, v in now.items() if recorded.get(k, v) != v]
            if size is not None and size != recorded.get("size"):
                why = "the file is not the one recorded"
            elif size is not None and changed:
                why = f"written with {changed[0]} {recorded.get(changed[0])!r}, now {now[changed[0]]!r}"
            elif size is not None:
                have = recorded.get("digest")
        return ctx.step(self.kind, path, found.digest, have, why)

    collision_hint = "select only one of them"

    def sweep(self, directory: str) -> None:
        """Remove the staging directories of runs that died (the run holds the lock on the directory)."""
        if self._swept:
            return
        self._swept = True
        for entry in os.listdir(directory) if os.path.isdir(directory) else []:
            prefix = next((p for p in OLD_STAGING_PREFIXES if entry.startswith(p)), None)
            pid = entry[len(prefix) :].split("-", 1)[0] if prefix else ""
            if pid.isdigit() and int(pid) != os.getpid() and not pid_alive(int(pid)):
                shutil.rmtree(os.path.join(directory, entry), ignore_errors=True)

    def begin(self, image: SourceImage, content: ImageContent | None, step: Step) -> FlattenedWrite:
        content = fetched(content, self.kind)
        safe_path(self.dir, step.target, f"{self.kind} file")
        try:
            os.makedirs(self.dir, exist_ok=True)
            self.sweep(self.dir)
            staging = tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{os.getpid()}-", dir=self.dir)
        except OSError as exc:
            raise os_error(exc, "creating the staging directory in", self.dir) from None
        _entries, manifests, _raw = content.selection(self.platforms)
        return FlattenedWrite(self, content, manifests[0], staging)

    def owns(self, dest_key: str, record: dict[str, Any]) -> bool:
        return (
            record.get("type") == self.kind
            and dest_key.startswith(f"{self.kind}:")
            and under(record.get("path"), self.dir)
        )

    def remove(
        self, key: str, record: dict[str, Any], wanted: dict[str, dict[str, Any]], check_mode: bool
    ) -> tuple[str, str, int]:
        return remove_recorded_file(record, self.dir, check_mode)

    def space_needed(self, image: SourceImage, content: ImageContent, step: Step) -> tuple[int, int]:
        """An estimate from the layers' compressed sizes: the file stays (about the unpacked size, UNPACKED_RATIO
        times the layers), the spooled layers and the unpacked rootfs only while the image is written."""
        _entries, manifests, _raw = content.selection(self.platforms)
        layers = sum(
            int(layer.get("size") or 0) for layer in manifests[0].data.get("layers") or [] if isinstance(layer, dict)
        )
        return UNPACKED_RATIO * layers, layers + UNPACKED_RATIO * layers

    def rootfs(self, root: str) -> Rootfs:
        return Rootfs(root)

    def configure(self, rootfs: Rootfs, config: dict[str, Any], image: SourceImage, content: ImageContent) -> None:
        """Add the destination's files to the applied layers."""

    def package(
        self, rootfs: Rootfs, temp: str, config: dict[str, Any], image: SourceImage, content: ImageContent, staging: str
    ) -> None:
        """Write the file to ``temp`` (it exists, empty)."""
        squash(rootfs.root, temp, self.options, created_time(config), option_name=f"{self.kind}.squash_options")

    def close(self) -> None:
        """Nothing is held open."""


class _Spool(BlobSink):
    """One blob spooled to a file of the staging directory; the reader checked its digest before close()."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.handle = open(path, "wb")  # pylint: disable=consider-using-with

    def write(self, data: bytes) -> None:
        self.handle.write(data)

    def close(self) -> None:
        self.handle.close()

    def abort(self) -> None:
        self.handle.close()
        remove_quietly(self.path)


class FlattenedWrite(ImageWrite):
    def __init__(self, dest: FlattenedDestination, content: ImageContent, manifest: Manifest, staging: str) -> None:
        super().__init__()
        self.dest, self.content, self.manifest, self.staging = dest, content, manifest, staging
        self.config = manifest.data["config"]
        self.layers = [
            layer for layer in manifest.data.get("layers") or [] if isinstance(layer, dict) and layer.get("digest")
        ]
        self.blobs = {b["digest"]: int(b.get("size") or 0) for b in [self.config] + self.layers}
        self.temp: str | None = None
        self.note: str | None = None  # what flattening left out or changed, said in the image's result
        os.mkdir(os.path.join(staging, "blobs"))

    def _blob(self, digest: str) -> str:
        return os.path.join(self.staging, "blobs", digest.replace(":", "-"))

    def sink(self, digest: str, size: int) -> BlobSink | None:
        """A spool file in the staging directory; a big blob's bytes are kept in the destination directory instead
        (``.<kind>-<alg>-<hex>.resume``) until it is whole, so that a run cut off in it is continued by the next."""
        if digest not in self.blobs:
            return None
        if size < RESUME_MIN:
            return _Spool(self._blob(digest))
        keep = os.path.join(self.dest.dir, resume_name(f"{self.dest.kind}-{digest.replace(':', '-')}"))
        return BlobFile(self._blob(digest), digest, size, keep=keep, sync=False)

    def _read_config(self, image: SourceImage) -> dict[str, Any]:
        try:
            with open(self._blob(self.config["digest"]), "rb") as handle:
                config = json.loads(handle.read().decode("utf-8"))
            if not isinstance(config, dict):
                raise ValueError("not a JSON object")
        except (UnicodeDecodeError, ValueError) as exc:
            raise AirgapError(
                f"the config {self.config['digest']} of {image.ref} is not an image config ({exc})"
            ) from None
        return config

    def commit(self, image: SourceImage, step: Step, source_digest: str) -> Committed:
        path, top, dest = step.target, self.content.top, self.dest
        directory, name = os.path.split(path)
        config = self._read_config(image)
        check_config_platform(config, dest.platform, f"{dest.kind}.platform", str(image.ref), top.is_index)
        rootfs = dest.rootfs(os.path.join(self.staging, "rootfs"))
        os.mkdir(rootfs.root, 0o755)
        for index, layer in enumerate(self.layers):
            try:
                rootfs.apply(self._blob(layer["digest"]))
            except (tarfile.TarError, EOFError, OSError, AirgapError) as exc:
                raise AirgapError(
                    f"cannot apply layer {index + 1} ({layer['digest']}) of {image.ref}: "
                    f"{(exc.strerror if isinstance(exc, OSError) else None) or exc}"
                ) from None
        dest.configure(rootfs, config, image, self.content)
        self.note = rootfs.note()
        safe_path(dest.dir, path, f"{dest.kind} file")
        try:
            os.makedirs(directory, exist_ok=True)
        except OSError as exc:
            raise os_error(exc, "creating", directory) from None
        fd, self.temp = tempfile.mkstemp(prefix=partial_name(name) + ".", dir=directory)
        os.close(fd)
        register_live(self.temp)
        dest.package(rootfs, self.temp, config, image, self.content, self.staging)
        os.chmod(self.temp, 0o644)
        size, sha256 = os.stat(self.temp).st_size, sha256_file(self.temp)
        publish(self.temp, path)  # mksquashfs closed the file: the rename and the directory are made durable
        self.temp = None
        return Committed(
            top.digest,
            dict(
                {
                    "type": dest.kind,
                    "path": path,
                    "size": size,
                    "sha256": sha256,
                    "digest": top.digest,
                    "config_digest": self.config["digest"],
                    "platform": dest.platform if top.is_index else None,
                    "selected_platform": dest.platform,
                    "written": utc_now(),
                },
                **dest.record_extra(),
            ),
        )

    def abort(self) -> None:
        """Remove the staging directory and an unfinished file (also after a commit: the staging is not needed)."""
        shutil.rmtree(self.staging, ignore_errors=True)
        if self.temp:
            remove_quietly(self.temp)
            self.temp = None
