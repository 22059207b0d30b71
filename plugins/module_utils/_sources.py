# Copyright (c) airgap.ngc contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private: the read side of the transport interface: a registry, a bundle, or per-tag archives. Not a public API.

A source names its images (``images``), resolves one to the digest of its top manifest (``resolve``), gives a
manifest by digest as its exact bytes (``manifest``) and opens a blob as chunks checked against the digest as they
stream (``open_blob``, a context manager). The copy engine needs nothing else from it.
"""
from __future__ import annotations

import contextlib
import json
import os
import tarfile
from dataclasses import dataclass, replace
from typing import Any, Iterator

from ansible_collections.airgap.ngc.plugins.module_utils._bundle import BundleReader
from ansible_collections.airgap.ngc.plugins.module_utils._errors import AirgapError, ConfigError
from ansible_collections.airgap.ngc.plugins.module_utils._oci import (
    ANNOTATION_IMAGE_NAME,
    SOURCE_DIGEST_ANNOTATION,
    Manifest,
    parse_manifest,
)
from ansible_collections.airgap.ngc.plugins.module_utils._plan import SourceImage, archive_path, requested_images, source_images
from ansible_collections.airgap.ngc.plugins.module_utils._reference import ImageReference
from ansible_collections.airgap.ngc.plugins.module_utils._transfer import LocalBlob, index_archive_blobs


@dataclass(frozen=True)
class Found:
    """What a source holds for an image: its top manifest's digest and type, and what the source says about it."""

    digest: str
    media_type: str | None = None
    config_digest: str | None = None  # known without fetching (an archive's manifest.json)
    note: str | None = None  # said in the result (for example: the digest of the original is not kept)


class RegistrySource:
    """Images on a registry (``registry_url``): HEAD to resolve, GET manifests and blobs, all checked by digest."""

    kind = "registry"

    def __init__(self, client: Any, url: str) -> None:
        self.client, self.url = client, url
        self.name = client.host

    def images(self, items: list[Any] | None) -> list[SourceImage]:
        return source_images(items or [], self.url)

    def resolve(self, image: SourceImage) -> Found | None:
        found = self.client.head_manifest(image.ref.repository, image.ref.manifest_reference)
        return Found(found.digest, found.media_type) if found else None

    def manifest(self, image: SourceImage, digest: str, media_type: str | None = None) -> Manifest:
        return self.client.get_manifest(image.ref.repository, digest)

    def open_blob(self, image: SourceImage, digest: str, size: int) -> Any:
        return self.client.open_blob(image.ref.repository, digest, expected_size=size)

    def missing(self, image: SourceImage) -> str:
        return f"{image.ref} does not exist on {self.name}: check the image name and tag"

    def close(self) -> None:
        self.client.close()


def _select(names: list[str], items: list[Any] | None) -> list[SourceImage]:
    """The images of a carried medium: all it holds, or those ``items`` names (with or without the registry host).

    A name that matches nothing is kept as given, and resolves to nothing (the image then fails, naming the medium).
    """
    held = {name: ImageReference.parse(name) for name in names}
    if not items:
        return [SourceImage(ref=ref) for ref in held.values()]
    chosen: list[SourceImage] = []
    for wanted in requested_images(items):
        match = next((ref for ref in held.values() if ref == wanted.ref
                      or (wanted.ref.registry is None and replace(ref, registry=None) == wanted.ref)), None)
        image = SourceImage(ref=match, description=wanted.description) if match else wanted
        if image not in chosen:
            chosen.append(image)
    return chosen


class BundleSource:
    """Images in a bundle (an OCI layout directory), named as they were exported."""

    kind = "bundle"

    def __init__(self, directory: str) -> None:
        self.reader = BundleReader(directory)
        self.name = self.reader.dir

    def images(self, items: list[Any] | None) -> list[SourceImage]:
        return _select(self.reader.references(), items)

    def resolve(self, image: SourceImage) -> Found | None:
        entry = self.reader.find(str(image.ref))
        return Found(entry["digest"], entry.get("mediaType")) if entry else None

    def manifest(self, image: SourceImage, digest: str, media_type: str | None = None) -> Manifest:
        return self.reader.manifest(digest, media_type)

    def open_blob(self, image: SourceImage, digest: str, size: int) -> Any:
        return contextlib.closing(self.reader.open_blob(digest, size))

    def missing(self, image: SourceImage) -> str:
        return f"{image.ref} is not in the bundle {self.name}: it holds {', '.join(self.reader.references()[:5]) or 'no image'}"

    def image_blobs(self, image: SourceImage) -> list[str]:
        """Every blob an image of the bundle needs (carried or expected), as its contents record lists them."""
        return list(((self.reader.contents.get("images") or {}).get(str(image.ref)) or {}).get("blobs") or [])

    def origins(self) -> dict[str, SourceImage]:
        """A delta bundle's expected blobs, each with an image of the earlier bundle that brought it (where to mount from)."""
        return {digest: SourceImage(ref=ImageReference.parse(ref)) for digest, ref in self.reader.origins().items()}

    def close(self) -> None:
        """Nothing is held open between calls."""


def read_archive_head(path: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The ``index.json`` and ``manifest.json`` (empty if absent) of an archive this collection wrote."""
    try:
        with tarfile.open(path, "r:") as archive:
            names = set(archive.getnames())
            index = json.load(archive.extractfile("index.json"))  # type: ignore[arg-type]
            docker = json.load(archive.extractfile("manifest.json")) if "manifest.json" in names else []  # type: ignore[arg-type]
    except FileNotFoundError:
        raise AirgapError(f"there is no archive {path}: mirror the image to the archive directory first") from None
    except (OSError, KeyError, ValueError, tarfile.TarError) as exc:
        raise AirgapError(f"{path} is not an archive written by ngc_image_mirror ({exc}): write it again") from None
    if not isinstance(index, dict) or not isinstance(docker, list):
        raise AirgapError(f"{path} is not an archive written by ngc_image_mirror: write it again")
    return index, docker


class ArchiveSource:
    """Images in per-tag archives this collection wrote (``<dir>/<name>/<tag>.tar`` or ``.oci.tar``)."""

    kind = "archive"

    def __init__(self, directory: str) -> None:
        self.dir = os.path.abspath(directory)
        self.name = self.dir
        self._archives: dict[str, dict[str, Any]] = {}  # by path: index, manifest.json, blobs

    def _open(self, path: str) -> dict[str, Any]:
        if path not in self._archives:
            index, docker = read_archive_head(path)
            self._archives[path] = {"index": index, "docker": docker, "blobs": index_archive_blobs(path)}
        return self._archives[path]

    def _path(self, image: SourceImage) -> str | None:
        for fmt in ("oci", "docker"):
            path = archive_path(self.dir, image, fmt)
            if os.path.isfile(path):
                return path
        return None

    def images(self, items: list[Any] | None) -> list[SourceImage]:
        names = []
        if not items:
            if not os.path.isdir(self.dir):
                raise ConfigError(f"source_dir {self.dir} does not exist: give the directory of the per-tag archives")
            for current, _dirs, files in sorted(os.walk(self.dir)):
                for name in sorted(f for f in files if f.endswith(".tar") and not f.startswith(".")):
                    entry = (self._open(os.path.join(current, name))["index"].get("manifests") or [{}])[0]
                    names.append((entry.get("annotations") or {}).get(ANNOTATION_IMAGE_NAME) or "")
        return _select([n for n in names if n], items)

    def resolve(self, image: SourceImage) -> Found | None:
        path = self._path(image)
        if path is None:
            return None
        held = self._open(path)
        top = (held["index"].get("manifests") or [{}])[0]
        original = (top.get("annotations") or {}).get(SOURCE_DIGEST_ANNOTATION)
        config = "sha256:" + str(held["docker"][0]["Config"]).rsplit("/", 1)[-1] if held["docker"] else None
        note = None
        if original and original != top.get("digest"):
            note = f"the archive holds one platform of {original}: destinations get that platform's manifest {top.get('digest')}"
        return Found(str(top.get("digest")), top.get("mediaType"), config_digest=config, note=note)

    def path_of(self, image: SourceImage) -> str:
        return self._path(image) or archive_path(self.dir, image, "docker")

    def _blob(self, image: SourceImage, digest: str) -> LocalBlob:
        path = self._path(image)
        blob = self._open(path)["blobs"].get(digest) if path else None
        if blob is None:
            raise AirgapError(f"blob {digest} of {image.ref} is missing from the archive {path}")
        return blob

    def manifest(self, image: SourceImage, digest: str, media_type: str | None = None) -> Manifest:
        blob = self._blob(image, digest)
        return parse_manifest(b"".join(blob.open()), digest, f"manifest {digest} in {blob.path}", media_type)

    def open_blob(self, image: SourceImage, digest: str, size: int) -> Iterator[bytes]:
        return contextlib.closing(self._blob(image, digest).open())

    def missing(self, image: SourceImage) -> str:
        return f"there is no archive for {image.ref} in {self.dir}: mirror it to the archive directory first"

    def close(self) -> None:
        self._archives.clear()
