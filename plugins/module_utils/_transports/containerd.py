# Copyright (c) airgap.ngc contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private: the containerd destination: images imported into a node's containerd under their source names. Not a public API.

The image is streamed, every platform with the registry's own manifest bytes, into an OCI archive in a temporary
directory, whose ``index.json`` names it (``io.containerd.image.name``, the source reference); containerd's own client
imports it: ``ctr --address SOCKET --namespace NS images import --all-platforms FILE``. containerd then holds the
top manifest or index at the registry's digest (a docker archive would give other digests, containerd#6307), every
platform's content, and the node's platform unpacked for the kubelet. ``ctr`` is used rather than containerd's gRPC API:
it ships with containerd, needs no Python gRPC stack on the node, and no credential goes to it (the module fetches the
content itself), so no secret is ever on its command line. A namespace that does not exist yet is created by the import.

Read from the site registry (or from media exported there), an image is named as its pods name it with ``name_as``
(the registry it stands for, ``nvcr.io``) and ``strip_prefix`` (the path the site registry keeps it under): the site's
``registry.site:5000/ngc/nvidia/pytorch:24.01-py3`` becomes ``nvcr.io/nvidia/pytorch:24.01-py3``, at the same digest.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import replace
from typing import Any

from ansible_collections.airgap.ngc.plugins.module_utils._formats.image_archive import ArchiveWriter
from ansible_collections.airgap.ngc.plugins.module_utils._types.errors import AirgapError, ConfigError
from ansible_collections.airgap.ngc.plugins.module_utils._types.oci import (
    SOURCE_DIGEST_ANNOTATION,
    ImageContent,
    blob_sizes,
    descriptor,
)
from ansible_collections.airgap.ngc.plugins.module_utils._types.plan import SourceImage, Step
from ansible_collections.airgap.ngc.plugins.module_utils._types.reference import valid_host, validate_namespace
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

CTR = "ctr"
DEFAULT_ADDRESS = "/run/containerd/containerd.sock"
DEFAULT_NAMESPACE = "k8s.io"
CONNECT_TIMEOUT = "10s"
COMMAND_TIMEOUT = 3600
NAMESPACE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,74}[A-Za-z0-9])?\Z")  # containerd's identifier rule


class Ctr:
    """containerd's client, ``ctr``, for one socket and namespace."""

    def __init__(self, address: str, namespace: str) -> None:
        self.address, self.namespace = address, namespace
        self.binary = shutil.which(CTR)

    def run(self, *args: str, what: str) -> str:
        """ctr's output; an AirgapError naming the socket, the namespace and ctr's own reason if it fails."""
        if self.binary is None:
            raise ConfigError(
                "ctr (containerd's client) is not on the PATH: install containerd on the node, or drop containerd"
            )
        argv = [
            self.binary,
            "--address",
            self.address,
            "--namespace",
            self.namespace,
            "--connect-timeout",
            CONNECT_TIMEOUT,
            *args,
        ]
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=COMMAND_TIMEOUT, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise AirgapError(f"{what} at containerd.address {self.address}: {exc}") from None
        if proc.returncode != 0:
            reason = " ".join((proc.stderr or proc.stdout).split())[-300:] or f"exit status {proc.returncode}"
            raise AirgapError(f"{what} at containerd.address {self.address} (namespace {self.namespace}): {reason}")
        return proc.stdout

    def ping(self) -> None:
        """Fail at once if the socket is not a containerd that answers."""
        if not os.path.exists(self.address):
            raise ConfigError(f"containerd.address {self.address} does not exist: is containerd running on this node?")
        self.run("version", what="containerd did not answer (is it a containerd socket?)")

    def images(self) -> dict[str, str]:
        """``ctr images ls``: name -> the digest of its top manifest or index."""
        found = {}
        for line in self.run("images", "ls", what="cannot list images").splitlines()[1:]:
            parts = line.split()
            if len(parts) >= 3 and parts[2].startswith("sha256:"):
                found[parts[0]] = parts[2]
        return found

    def import_archive(self, path: str) -> None:
        self.run("images", "import", "--all-platforms", path, what="ctr images import failed")

    def remove(self, name: str) -> None:
        self.run("images", "rm", name, what=f"cannot remove {name}")


class ContainerdDestination(Destination):
    """A node's containerd: each image imported from an OCI archive of the registry's bytes (see the module docstring)."""

    kind = "containerd"  # keeps_blobs is False: the archive is removed once imported, the next image reads shared blobs again

    def __init__(self, spec: dict[str, Any]) -> None:
        self.address = spec.get("address") or DEFAULT_ADDRESS
        self.namespace = spec.get("namespace") or DEFAULT_NAMESPACE
        if not os.path.isabs(self.address):
            raise ConfigError(
                f"invalid containerd.address {self.address!r}: give the socket's absolute path, as in {DEFAULT_ADDRESS}"
            )
        if not NAMESPACE.match(self.namespace):
            raise ConfigError(
                f"invalid containerd.namespace {self.namespace!r}: letters, digits, '.', '_' and '-', "
                "starting and ending with a letter or digit, at most 76 characters"
            )
        self.name_as = spec.get("name_as") or None
        if self.name_as is not None and not valid_host(self.name_as):
            raise ConfigError(
                f"invalid containerd.name_as {self.name_as!r}: give the registry host[:port] the pods name, "
                "such as nvcr.io or registry.k8s.io"
            )
        self.strip_prefix = (
            validate_namespace(spec["strip_prefix"], "containerd.strip_prefix") if spec.get("strip_prefix") else ""
        )
        if self.strip_prefix and self.name_as is None:
            raise ConfigError(
                f"containerd.strip_prefix {self.strip_prefix!r} needs containerd.name_as: the registry the "
                "names without the prefix stand for (nvcr.io)"
            )
        self.ctr = Ctr(self.address, self.namespace)
        self._listed: dict[str, str] | None = None

    def name(self, image: SourceImage) -> str:
        """The name containerd holds the image under: its source reference, or, with name_as, that registry's name for
        it (the repository without strip_prefix). A ConfigError names an image that is not under strip_prefix."""
        ref = image.ref
        if self.strip_prefix:
            if not ref.repository.startswith(self.strip_prefix + "/"):
                raise ConfigError(
                    f"{ref} is not under containerd.strip_prefix {self.strip_prefix!r}: name the images "
                    f"as the registry keeps them ({self.strip_prefix}/{ref.repository}), or change the prefix"
                )
            ref = replace(ref, repository=ref.repository[len(self.strip_prefix) + 1 :])
        return str(replace(ref, registry=self.name_as) if self.name_as else ref)

    def target(self, image: SourceImage) -> str:
        return f"{self.address}#{self.namespace}/{self.name(image)}"

    def listed(self) -> dict[str, str]:
        """The images containerd holds in the namespace, listed once a run (commits update it)."""
        if self._listed is None:
            self._listed = self.ctr.images()
        return self._listed

    def plan(self, image: SourceImage, found: ResolvedImage, ctx: PlanContext) -> Step:
        return ctx.step(self.kind, self.target(image), found.digest, self.listed().get(self.name(image)))

    def owns(self, dest_key: str, record: dict[str, Any]) -> bool:
        return (
            record.get("type") == self.kind
            and record.get("address") == self.address
            and record.get("namespace") == self.namespace
            and dest_key.startswith(f"{self.kind}:")
        )

    def remove(
        self, key: str, record: dict[str, Any], wanted: dict[str, dict[str, Any]], check_mode: bool
    ) -> tuple[str, str, int]:
        """Remove the name this collection imported, unless it now names another image."""
        name = str(record.get("reference"))
        have = self.listed().get(name)
        if have is None:
            return "already gone", f"{name} is no longer in containerd", 0
        if have != record.get("digest"):
            return "kept", f"{name} now names {have}, not the {record.get('digest')} imported", 0
        if check_mode:
            return "would remove", f"remove {name} from containerd at {self.address}", 0
        self.ctr.remove(name)
        self.listed().pop(name, None)
        return "removed", f"removed {name} from containerd at {self.address} (namespace {self.namespace})", 0

    def ping(self) -> None:
        self.ctr.ping()

    def begin(self, image: SourceImage, content: ImageContent | None, step: Step) -> _ContainerdWrite:
        content = fetched(content, self.kind)
        _entries, manifests, _raw = content.selection(None)
        blobs = blob_sizes(m.data for m in manifests)
        directory = tempfile.mkdtemp(prefix="airgap-ngc-containerd-")
        writer = ArchiveWriter(os.path.join(directory, "image.oci.tar"), "oci")
        return _ContainerdWrite(self, writer, directory, content, manifests, blobs)

    def close(self) -> None:
        """Nothing is held open."""


class _ContainerdWrite(ImageWrite):
    def __init__(
        self,
        dest: ContainerdDestination,
        writer: ArchiveWriter,
        directory: str,
        content: ImageContent,
        manifests: list[Any],
        blobs: dict[str, int],
    ) -> None:
        self.dest, self.writer, self.directory, self.content, self.manifests, self.blobs = (
            dest,
            writer,
            directory,
            content,
            manifests,
            blobs,
        )

    def sink(self, digest: str, size: int) -> BlobSink | None:
        return (
            None if digest not in self.blobs or self.writer.has_blob(digest) else self.writer.begin_blob(digest, size)
        )

    def commit(self, image: SourceImage, step: Step, source_digest: str) -> Committed:
        """Write the archive's manifests and index.json (naming the image), import it, check containerd's digest, record."""
        writer, top, name = self.writer, self.content.top, self.dest.name(image)
        try:
            for manifest in self.manifests:
                writer.add_bytes_blob(manifest.digest, manifest.raw)
            writer.add_bytes_blob(top.digest, top.raw)
            writer.set_oci_index(
                [
                    descriptor(
                        top.media_type,
                        top.digest,
                        top.size,
                        ref_name=image.ref.tag,
                        image_name=name,
                        annotations={SOURCE_DIGEST_ANNOTATION: top.digest},
                    )
                ]
            )
            result = writer.commit()
            self.dest.ctr.import_archive(result.path)
        finally:
            shutil.rmtree(self.directory, ignore_errors=True)
        self.dest._listed = None  # pylint: disable=protected-access
        have = self.dest.listed().get(name)
        if have != top.digest:
            raise AirgapError(
                f"containerd at {self.dest.address} holds {name} at {have or 'no digest'} after the import, not {top.digest}"
            )
        return Committed(
            top.digest,
            {
                "type": self.dest.kind,
                "address": self.dest.address,
                "namespace": self.dest.namespace,
                "reference": name,
                "digest": top.digest,
                "written": utc_now(),
            },
        )

    def abort(self) -> None:
        try:
            self.writer.abort()
        finally:
            shutil.rmtree(self.directory, ignore_errors=True)
