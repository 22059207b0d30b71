# Copyright (c) airgap.ngc contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private: sources of the transport interface (``base.Source``): a registry, a bundle, or per-tag archives. Not a public API."""

from __future__ import annotations

import contextlib
import json
import os
import tarfile
import threading
from dataclasses import replace
from typing import Any, Iterable, Iterator, Mapping

from ansible_collections.airgap.ngc.plugins.module_utils._formats.bundle import DIGEST, BundleReader, bundles_beside
from ansible_collections.airgap.ngc.plugins.module_utils._formats.carried import MapOf, Required, schema_problem
from ansible_collections.airgap.ngc.plugins.module_utils._types.errors import AirgapError, ConfigError, NotFoundError
from ansible_collections.airgap.ngc.plugins.module_utils._types.oci import (
    ANNOTATION_IMAGE_NAME,
    SOURCE_DIGEST_ANNOTATION,
    Manifest,
    check_small,
    parse_manifest,
    read_small,
)
from ansible_collections.airgap.ngc.plugins.module_utils._types.plan import (
    SourceImage,
    archive_path,
    requested_images,
    source_images,
)
from ansible_collections.airgap.ngc.plugins.module_utils._types.reference import ImageReference, is_digest
from ansible_collections.airgap.ngc.plugins.module_utils._formats.signatures import (
    MAX_DEPTH,
    companion_kind,
    companion_tags,
    cosign_subject,
    digest_tag,
    listed_referrers,
    subject_of,
)
from ansible_collections.airgap.ngc.plugins.module_utils._transports.base import ResolvedImage, Source
from ansible_collections.airgap.ngc.plugins.module_utils._transports.fanout import (
    LocalBlob,
    continued,
    index_archive_blobs,
)


class RegistrySource(Source):
    """Images on a registry (``registry_url``): HEAD (or GET) to resolve, GET manifests and blobs, all checked by digest."""

    kind = "registry"

    def __init__(self, client: Any, url: str) -> None:
        self.client, self.url = client, url
        self.name = client.host
        self._tags: dict[str, set[str]] = {}  # by repository, listed once a run
        self._referrers_api: bool | None = None  # None until the registry answered once
        self._notes: dict[str, str] = {}  # by companion key: what it travels with, said in the result
        self._heads: dict[str, Any] = {}  # by companion key: its HEAD, taken when it was found (resolve reuses it)
        self.listings: dict[str, dict[str, Any]] = {}  # by image key: what ``companions`` listed this run, to remember
        self._indexes: dict[tuple[str, str], Manifest | None] = {}  # (repository, subject): its referrers tag index

    def images(self, items: list[Any] | None) -> list[SourceImage]:
        return source_images(items or [], self.url)

    def resolve(self, image: SourceImage, fetch: bool = False) -> ResolvedImage | None:
        """The image's digest (HEAD); with ``fetch`` (the manifest will most likely be needed) GET it instead and
        hand it over: one request where HEAD and GET would be two."""
        note = self._notes.get(image.key)
        if fetch and image.key not in self._heads:
            try:
                top = self.client.get_manifest(image.ref.repository, image.ref.manifest_reference)
            except NotFoundError:
                return None
            return ResolvedImage(top.digest, top.media_type, note=note, manifest=top)
        found = self._heads.get(image.key) or self.client.head_manifest(
            image.ref.repository, image.ref.manifest_reference
        )
        return ResolvedImage(found.digest, found.media_type, note=note) if found else None

    def manifest(self, image: SourceImage, digest: str, media_type: str | None = None) -> Manifest:
        return self.client.get_manifest(image.ref.repository, digest)

    resumes = True  # a blob can be read from part way (a download a run cut off is continued)

    def open_blob(
        self, image: SourceImage, digest: str, size: int, start: int = 0, held: Iterable[bytes] | None = ()
    ) -> Any:
        return self.client.open_blob(image.ref.repository, digest, expected_size=size, start=start, held=held)

    def missing(self, image: SourceImage) -> str:
        return f"{image.ref} does not exist on {self.name}: check the image name and tag"

    def companions(self, image: SourceImage, digest: str, known: dict[str, Any] | None = None) -> list[SourceImage]:
        """The signatures and attestations of an image's digest, and theirs in turn (``MAX_DEPTH`` deep): cosign's tags
        ``sha256-<hex>.sig``/``.att``/``.sbom`` from the repository's tag list, and the OCI 1.1 referrers (the
        referrers API, else the referrers tag schema's index ``sha256-<hex>``), the latter by digest.

        What was listed is kept in ``listings`` (by image key) for the caller to remember. ``known`` is such a listing
        from an earlier run: if it is about this digest and each tag in it still names the digest it named, it is the
        answer and no tag list or referrers are read (one HEAD per signature tag, which resolving the tag needs
        anyway); otherwise the image is listed afresh."""
        where = f"{image.ref.name}@{digest}"
        try:
            reused = self._known_companions(image, digest, known) if known is not None else None
        except AirgapError as exc:
            raise self._listing_error(where, exc) from None
        if reused is not None:
            return reused
        found: list[SourceImage] = []
        listing: list[dict[str, str]] = []
        keys = {image.key}
        level = [(image.ref, digest)]
        for _depth in range(MAX_DEPTH):
            following = []
            for ref, subject in level:
                for companion, companion_digest, kind in self._companions_of(ref, subject):
                    if companion.key not in keys:
                        keys.add(companion.key)
                        found.append(companion)
                        following.append((companion.ref, companion_digest))
                        self._notes.setdefault(companion.key, f"travels with {ref} as {kind}")
                        listing.append(
                            {"ref": str(companion.ref), "digest": companion_digest, "kind": kind, "about": str(ref)}
                        )
            level = following
        self.listings[image.key] = {"digest": digest, "found": listing}
        return found

    def _known_companions(self, image: SourceImage, digest: str, known: dict[str, Any]) -> list[SourceImage] | None:
        """The companions an earlier run listed for ``digest``, if that listing still holds; else None. They are all in
        the image's own repository: a listing naming another is not one this collection wrote."""
        entries = known.get("found")
        if known.get("digest") != digest or not isinstance(entries, list):
            return None
        found: list[SourceImage] = []
        for entry in entries:
            try:
                companion = SourceImage(ref=ImageReference.parse(entry["ref"]))
                was, note = str(entry["digest"]), f"travels with {entry['about']} as {entry['kind']}"
            except (AirgapError, KeyError, TypeError):
                return None  # not a listing this collection wrote: list afresh
            ref = companion.ref
            if (ref.registry, ref.repository) != (image.ref.registry, image.ref.repository):
                return None
            if ref.tag is not None:  # a tag can move (cosign adds a signature to the same .sig tag): look again
                head = self.client.head_manifest(ref.repository, ref.tag)
                if head is None or head.digest != was:
                    return None
                self._heads[companion.key] = head
            self._notes.setdefault(companion.key, note)
            found.append(companion)
        return found

    def _listing_error(self, where: str, exc: AirgapError) -> AirgapError:
        return AirgapError(
            f"listing the signatures and attestations of {where} on {self.name} failed: {exc}; "
            "set signatures: false to mirror the images without them"
        )

    def _companions_of(self, ref: ImageReference, digest: str) -> list[tuple[SourceImage, str, str]]:
        """One level: each companion of ``digest`` in ``ref``'s repository, with its own digest and what it is."""
        repository = ref.repository
        try:
            if repository not in self._tags:
                self._tags[repository] = set(self.client.list_tags(repository))
            tags = self._tags[repository]
            found: list[tuple[SourceImage, str, str]] = []
            for tag in companion_tags(digest, tags):
                head = self.client.head_manifest(repository, tag)
                if head is not None:
                    companion = SourceImage(ref=ImageReference(ref.registry, repository, tag=tag))
                    self._heads[companion.key] = head
                    found.append((companion, head.digest, companion_kind(tag)))
            for entry in self._referrers(repository, digest, tags):
                found.append(
                    (
                        SourceImage(ref=ImageReference(ref.registry, repository, digest=entry["digest"])),
                        entry["digest"],
                        companion_kind(None, entry.get("artifactType")),
                    )
                )
            return found
        except AirgapError as exc:
            raise self._listing_error(f"{ref.name}@{digest}", exc) from None

    def _referrers(self, repository: str, digest: str, tags: set[str]) -> list[dict[str, Any]]:
        if self._referrers_api is not False:
            listed = self.client.referrers(repository, digest)
            self._referrers_api = listed is not None
            if listed is not None:
                return listed_referrers({"manifests": listed})
        tag = digest_tag(digest)
        if tag not in tags:
            return []
        index = self.client.get_manifest(repository, tag)
        self._indexes[(repository, digest)] = index
        return listed_referrers(index.data) if index.is_index else []

    def referrers_index(self, image: SourceImage, subject: str) -> Manifest | None:
        """The referrers tag schema's index of ``subject`` in the image's repository (``sha256-<hex>``), as its bytes
        are here, or None if there is none (or it cannot be read: the destination then lists the referrer itself)."""
        key = (image.ref.repository, subject)
        if key not in self._indexes:
            try:
                self._indexes[key] = self.client.get_manifest(image.ref.repository, digest_tag(subject))
            except AirgapError:
                self._indexes[key] = None
        return self._indexes[key]

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
        match = next(
            (
                ref
                for ref in held.values()
                if ref == wanted.ref or (wanted.ref.registry is None and replace(ref, registry=None) == wanted.ref)
            ),
            None,
        )
        image = SourceImage(ref=match, description=wanted.description) if match else wanted
        if image not in chosen:
            chosen.append(image)
    return chosen


class BundleSource(Source):
    """Images in a bundle (an OCI layout directory), named as they were exported.

    A delta bundle leaves out blobs earlier bundles carried (its ``expected``): such a blob is read from an earlier
    bundle beside it in the drop directory, else from a place given with ``read_also_from`` (the destination
    registry, where an earlier import put it), each checked against its digest as it streams."""

    kind = "bundle"

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self.reader = BundleReader(directory)
        self.name = self.reader.dir
        self._companions: dict[tuple[str, str], list[tuple[str, str]]] | None = None
        self._notes: dict[str, str] = {}
        self._beside: list[tuple[str, BundleReader]] | None = None  # the drop directory's other bundles, once needed
        self._beside_lock = threading.Lock()
        self._also: list[Any] = []  # where else a left-out blob may be (``open_held_blob``): the destination registry

    def read_also_from(self, holder: Any) -> None:
        """Look for the blobs a delta bundle left out in ``holder`` too (its ``open_held_blob``, after the drop
        directory's earlier bundles)."""
        self._also.append(holder)

    def images(self, items: list[Any] | None) -> list[SourceImage]:
        """What ``items`` names, or every image the bundle holds but the signatures and attestations that travel with
        another image (``companions`` brings those)."""
        held = self.reader.references()
        if not items:
            carried = {ref for refs in self._companion_map().values() for ref, _kind in refs}
            held = [ref for ref in held if ref not in carried]
        return _select(held, items)

    def _companion_map(self) -> dict[tuple[str, str], list[tuple[str, str]]]:
        """The bundle's companions by (image name, digest they are about): cosign tags by their name, images held by
        digest only by their manifest's ``subject``."""
        if self._companions is None:
            self._companions = {}
            for text in self.reader.references():
                ref = ImageReference.parse(text)
                subject, kind = cosign_subject(ref.tag), companion_kind(ref.tag)
                if subject is None and ref.tag is None:
                    try:
                        entry = self.reader.find(text) or {}
                        data = self.reader.manifest(entry["digest"], entry.get("mediaType")).data
                    except (AirgapError, KeyError):
                        data = {}  # a damaged entry: its import fails, naming it
                    subject, kind = subject_of(data), companion_kind(None, data.get("artifactType"))
                if subject is not None:
                    self._companions.setdefault((ref.name, subject), []).append((text, kind))
        return self._companions

    def companions(self, image: SourceImage, digest: str, known: dict[str, Any] | None = None) -> list[SourceImage]:  # pylint: disable=unused-argument
        """The signatures and attestations stored with an image (under its digest here or its source's), and theirs in
        turn; read from the bundle's own index, so an earlier run's listing (``known``) is not needed."""
        table = self._companion_map()
        found: list[SourceImage] = []
        keys = {image.key}
        level = [(image.ref, digest, (self.reader.find(str(image.ref)) or {}))]
        for _depth in range(MAX_DEPTH):
            following = []
            for ref, subject, entry in level:
                original = (entry.get("annotations") or {}).get(SOURCE_DIGEST_ANNOTATION)
                listed = table.get((ref.name, subject), []) + (
                    table.get((ref.name, original), []) if original and original != subject else []
                )
                for text, kind in listed:
                    companion = SourceImage(ref=ImageReference.parse(text))
                    if text in self.reader.index.rejected and companion.key not in keys:
                        keys.add(companion.key)
                        found.append(companion)  # planned like the others: its resolve fails, saying why
                        continue
                    held = self.reader.find(text) or {}
                    if companion.key not in keys and held.get("digest"):
                        keys.add(companion.key)
                        found.append(companion)
                        following.append((companion.ref, held["digest"], held))
                        self._notes.setdefault(companion.key, f"travels with {ref} as {kind}")
            level = following
        return found

    def resolve(self, image: SourceImage, fetch: bool = False) -> ResolvedImage | None:  # pylint: disable=unused-argument
        entry = self.reader.find(str(image.ref))
        return (
            ResolvedImage(entry["digest"], entry.get("mediaType"), note=self._notes.get(image.key)) if entry else None
        )

    def manifest(self, image: SourceImage, digest: str, media_type: str | None = None) -> Manifest:
        return self.reader.manifest(digest, media_type)

    resumes = True  # a blob can be read from part way (a run cut off in it is continued: ``continued``)

    def open_blob(
        self, image: SourceImage, digest: str, size: int, start: int = 0, held: Iterable[bytes] | None = ()
    ) -> Any:
        """The blob's verified chunks (from byte ``start`` on, ``held`` the sinks' bytes before it: ``continued``)."""
        carrier = self.reader.carrier(digest)
        if carrier is None or self.reader.holds(digest):
            return _local(self.reader.open_blob(digest, size), start, held, f"blob {digest} in the bundle {self.name}")
        return self._left_out(image, digest, size, carrier, start, held)

    def _left_out(
        self, image: SourceImage, digest: str, size: int, carrier: str, start: int = 0, held: Any = ()
    ) -> Any:
        """A blob this delta bundle left out: from the earlier bundle that carried it, or another one beside it in the
        drop directory, else from where an earlier import put it (``read_also_from``); the first that holds it."""
        beside = self._bundles_beside()
        for name, other in [b for b in beside if b[0] == carrier] + [b for b in reversed(beside) if b[0] != carrier]:
            if other.holds(digest, size):
                return _local(other.open_blob(digest, size), start, held, f"blob {digest} in the bundle {name}")
        tried = []
        for holder in self._also:
            try:
                found = (
                    holder.open_held_blob(image, digest, size, start, held)
                    if start
                    else holder.open_held_blob(image, digest, size)
                )
            except AirgapError as exc:
                tried.append(f"{holder.name} could not be asked ({exc})")
                continue
            if found is not None:
                return found
            tried.append(f"{holder.name} does not hold it")
        where = os.path.dirname(os.path.abspath(self.directory))
        also = "".join(f", and {said}" for said in tried)
        raise AirgapError(
            f"blob {digest} of {image.ref} is not in the delta bundle {self.name}: it was carried by "
            f"bundle {carrier}, which is not beside it in {where}{also}; import bundle {carrier} first, "
            f"or copy it into {where} beside this one"
        )

    def check_left_out(self, image: SourceImage, needed: Mapping[str, int]) -> None:
        """Before anything of the image is written: every blob of ``needed`` this delta bundle left out is in a bundle
        beside it or where an earlier import put it (``read_also_from``, asked with HEAD); else the image fails here,
        naming the bundles it relies on that are missing, and nothing of it is pushed."""
        missing: dict[str, list[str]] = {}
        for digest, size in needed.items():
            carrier = self.reader.carrier(digest)
            if carrier is None or self.reader.holds(digest):
                continue
            if any(other.holds(digest, size) for _name, other in self._bundles_beside()):
                continue
            if any(self._holds_elsewhere(holder, image, digest) for holder in self._also):
                continue
            missing.setdefault(carrier, []).append(digest)
        if missing:
            where = os.path.dirname(os.path.abspath(self.directory))
            elsewhere = "".join(f" nor in {holder.name}" for holder in self._also)
            bases = ", ".join(
                f"bundle {carrier} ({len(digests)} blob(s), such as {digests[0]})"
                for carrier, digests in sorted(missing.items())
            )
            first = sorted(missing)[0]
            raise AirgapError(
                f"{image.ref} is in the delta bundle {self.name}, which relies on {bases}: not beside it in "
                f"{where}{elsewhere}; import bundle {first} first, or copy it into {where} beside this one "
                f"(nothing of {image.ref} was written)"
            )

    @staticmethod
    def _holds_elsewhere(holder: Any, image: SourceImage, digest: str) -> bool:
        """Whether ``holder`` (the destination registry) has the blob; one that cannot be asked does not."""
        try:
            return holder.holding_repository(image, digest) is not None
        except AirgapError:
            return False

    def _bundles_beside(self) -> list[tuple[str, BundleReader]]:
        """The other bundles of the drop directory (name, reader), read once; one that cannot be read is passed over."""
        with self._beside_lock:
            if self._beside is None:
                self._beside = []
                for path in bundles_beside(self.directory):
                    try:
                        self._beside.append((os.path.basename(path), BundleReader(path)))
                    except AirgapError:
                        continue
            return self._beside

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


def _local(chunks: Iterator[bytes], start: int, held: Any, what: str) -> Any:
    """A local file's verified chunks as a context manager: whole, or from ``start`` on (``continued``)."""
    return contextlib.closing(continued(chunks, start, held, what) if start else chunks)


def _small_member(archive: tarfile.TarFile, name: str, path: str) -> Any:
    """The JSON of a member of an archive (its index or its manifest list), refused past MAX_MANIFEST_BYTES."""
    member = archive.getmember(name)
    check_small(member.size, f"{name} in the archive {path}")
    return json.load(archive.extractfile(member))  # type: ignore[arg-type]


def read_archive_head(path: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The ``index.json`` and ``manifest.json`` (empty if absent) of an archive this collection wrote."""
    try:
        with tarfile.open(path, "r:") as archive:
            names = set(archive.getnames())
            index = _small_member(archive, "index.json", path)
            docker = _small_member(archive, "manifest.json", path) if "manifest.json" in names else []
    except FileNotFoundError:
        raise AirgapError(f"there is no archive {path}: mirror the image to the archive directory first") from None
    except (OSError, KeyError, ValueError, tarfile.TarError) as exc:
        raise AirgapError(f"{path} is not an archive written by ngc_image_mirror ({exc}): write it again") from None
    problem = schema_problem(
        index,
        {"manifests": Required([{"digest": Required(DIGEST), "mediaType": str, "annotations": MapOf(str)}])},
        "index.json",
    ) or schema_problem(docker, [{"Config": str}], "manifest.json")
    if problem or not index["manifests"]:
        raise AirgapError(
            f"{path} is not an archive written by ngc_image_mirror ({problem or 'its index.json names no image'}): write it again"
        )
    return index, docker


class ArchiveSource(Source):
    """Images in per-tag archives this collection wrote (``<dir>/<name>/<tag>.tar`` or ``.oci.tar``)."""

    kind = "archive"
    carries_archives = True

    def __init__(self, directory: str) -> None:
        self.dir = os.path.abspath(directory)
        self.name = self.dir
        held = next(
            (
                name
                for name in ("index.json", "oci-layout", "contents.json", "vol-0001")
                if os.path.lexists(os.path.join(self.dir, name))
            ),
            None,
        )
        if held:
            raise ConfigError(
                f"source_dir {directory} is a bundle (it holds {held}), not a directory of per-tag archives: "
                "import it with source: bundle"
            )
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

    def resolve(self, image: SourceImage, fetch: bool = False) -> ResolvedImage | None:  # pylint: disable=unused-argument
        path = self._path(image)
        if path is None:
            return None
        held = self._open(path)
        top = (held["index"].get("manifests") or [{}])[0]
        original = (top.get("annotations") or {}).get(SOURCE_DIGEST_ANNOTATION)
        config = "sha256:" + str(held["docker"][0]["Config"]).rsplit("/", 1)[-1] if held["docker"] else None
        config = config if is_digest(config) else None
        note = None
        if original and original != top.get("digest"):
            note = f"the archive holds one platform of {original}: destinations get that platform's manifest {top.get('digest')}"
        return ResolvedImage(str(top.get("digest")), top.get("mediaType"), config_digest=config, note=note)

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
        what = f"manifest {digest} in {blob.path}"
        return parse_manifest(read_small(blob.open(), what), digest, what, media_type)

    resumes = True  # a blob can be read from part way (a run cut off in it is continued: ``continued``)

    def open_blob(
        self, image: SourceImage, digest: str, size: int, start: int = 0, held: Iterable[bytes] | None = ()
    ) -> Any:
        """The blob's verified chunks (from byte ``start`` on, ``held`` the sinks' bytes before it: ``continued``)."""
        blob = self._blob(image, digest)
        return _local(blob.open(), start, held, f"blob {digest} in the archive {blob.path}")

    def missing(self, image: SourceImage) -> str:
        return f"there is no archive for {image.ref} in {self.dir}: mirror it to the archive directory first"

    def close(self) -> None:
        self._archives.clear()
