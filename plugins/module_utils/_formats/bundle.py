# Copyright (c) airgap.ngc contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private: a bundle, the OCI image layout directory carried across the air gap: read it and write it. Not a public API.

Layout: ``oci-layout``, ``index.json`` (one entry per image, named by ``org.opencontainers.image.ref.name`` with the
full source reference), ``blobs/sha256/<hex>`` (every blob and manifest once, byte for byte), and ``contents.json``
(every file's size and sha256, the images with their digests, when and from where) for checking a carried copy.
Blobs are written under temporary names and renamed once their digest is checked; ``index.json`` and
``contents.json`` are replaced atomically after each image, so a bundle is at every moment a valid layout of the
images its index lists.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
from dataclasses import dataclass, field
from typing import Any, Iterator

from ansible_collections.airgap.ngc.plugins.module_utils._formats.carried import (
    RECORD_LIMIT,
    CarriedError,
    CarriedMissing,
    Check,
    MapOf,
    Required,
    open_inside,
    plain_directory,
    plain_name,
    read_inside,
    schema_problem,
    writer_of,
)
from ansible_collections.airgap.ngc.plugins.module_utils._types.blob_sink import BlobSink
from ansible_collections.airgap.ngc.plugins.module_utils._types.errors import (
    AirgapError,
    ConfigError,
    DigestMismatchError,
)
from ansible_collections.airgap.ngc.plugins.module_utils._formats.files import (
    BlobFile,
    atomic_write,
    fsync_dir,
    kept_beside,
    remove_quietly,
)
from ansible_collections.airgap.ngc.plugins.module_utils._types.oci import (
    ANNOTATION_REF_NAME,
    CHUNK_SIZE,
    MAX_MANIFEST_BYTES,
    MEDIA_OCI_INDEX,
    OCI_LAYOUT,
    Manifest,
    blob_path,
    check_bytes,
    parse_manifest,
)
from ansible_collections.airgap.ngc.plugins.module_utils._types.reference import ImageReference, is_digest

INDEX_FILE = "index.json"
VOLUME_FILE = "volume.json"
FIRST_VOLUME = "vol-0001"  # holds the layout files, index.json and contents.json of a bundle in volumes
LAYOUT_FILE = "oci-layout"
CONTENTS_FILE = "contents.json"
CONTENTS_SCHEMA = 1


def blob_file(directory: str, digest: str) -> str:
    """Where a blob lives in a bundle: <dir>/blobs/<algorithm>/<hex>."""
    if not is_digest(digest):
        raise AirgapError(f"invalid digest {digest!r} in bundle {directory}")
    return os.path.join(directory, *blob_path(digest).split("/"))


def _load_json(path: str, what: str) -> Any:
    """A JSON document this collection writes for itself (a bundle being written), or None if it is not there."""
    try:
        with open(path, "rb") as handle:
            return json.loads(handle.read().decode("utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise AirgapError(
            f"{path} is not a valid {what} ({getattr(exc, 'strerror', None) or exc}): write the bundle again"
        ) from None


def read_blob_chunks(
    pieces: list[tuple[str, str]], digest: str, size: int | None, what: str, limit: int | None = None
) -> Iterator[bytes]:
    """A blob's bytes in chunks (from one file, or its parts in order: each ``(medium directory, path inside it)``),
    hashed as they go: the last chunk is held back until the digest is checked. Every file is opened at once (see
    ``open_inside``): one that is missing, not a plain name or not a regular file is reported before any chunk; so is
    a blob larger than ``limit``."""
    handles = []
    try:
        for root, relative in pieces:
            try:
                handles.append(os.fdopen(open_inside(root, relative), "rb"))
            except CarriedMissing:
                raise CarriedMissing(
                    f"blob {digest} is missing from {what}: {os.path.join(root, relative)} does not exist"
                ) from None
            except CarriedError as exc:
                raise CarriedError(f"blob {digest} of {what} cannot be read: {exc}") from None
        total = sum(os.fstat(h.fileno()).st_size for h in handles)
        if limit is not None and total > limit:
            raise CarriedError(
                f"manifest {digest} in {what} has {total} bytes, more than the {limit} (4 MiB) a manifest, an index "
                "or an image config may have: refused"
            )
    except BaseException:
        for handle in handles:
            handle.close()
        raise
    return _verified(handles, [os.path.join(*piece) for piece in pieces], digest, size)


def _verified(handles: list[Any], paths: list[str], digest: str, size: int | None) -> Iterator[bytes]:
    algorithm, expected = digest.split(":", 1)
    hasher = hashlib.new(algorithm)
    total = 0
    held = b""
    path = paths[0]
    try:
        for path, handle in zip(paths, handles):
            while True:
                try:
                    data = handle.read(CHUNK_SIZE)
                except OSError as exc:
                    raise AirgapError(f"cannot read blob {digest} from {path}: {exc.strerror or exc}") from None
                if not data:
                    break
                total += len(data)
                hasher.update(data)
                if held:
                    yield held
                held = data
    finally:
        for handle in handles:
            handle.close()
    if size is not None and total != size:
        raise DigestMismatchError(f"blob {digest} in {path} has {total} bytes, {size} expected: the file is damaged")
    if hasher.hexdigest() != expected:
        raise DigestMismatchError(
            f"blob {digest} in {path} hashes to {algorithm}:{hasher.hexdigest()}: the file is damaged"
        )
    if held:
        yield held


def volume_name(number: int) -> str:
    return f"vol-{number:04d}"


def metadata_dir(directory: str) -> str:
    """Where a bundle's index.json is: the directory itself, or its first volume."""
    first = os.path.join(directory, FIRST_VOLUME)
    return first if not os.path.lexists(os.path.join(directory, INDEX_FILE)) and plain_directory(first) else directory


def find_volumes(directory: str, name: str | None) -> dict[int, str]:
    """The volume directories of bundle ``name`` found in ``directory``, its children or grandchildren: {number: path}.

    Volumes may be copied into one directory or sit on several mount points under it, in any order. A symbolic link
    below ``directory`` is not followed, nor a volume record that is not a regular file.
    """
    found: dict[int, str] = {}
    levels = [[directory]]
    for _depth in (1, 2):
        levels.append(
            [
                os.path.join(base, entry)
                for base in levels[-1]
                if os.path.isdir(base)
                for entry in sorted(os.listdir(base))
                if plain_directory(os.path.join(base, entry))
            ]
        )
    for base in (b for level in levels for b in level):
        try:
            record = json.loads(read_inside(base, VOLUME_FILE, 64 * 1024, "volume record").decode("utf-8"))
        except (CarriedError, UnicodeDecodeError, ValueError):
            continue
        if (
            isinstance(record, dict)
            and isinstance(record.get("volume"), int)
            and not isinstance(record["volume"], bool)
            and record["volume"] >= 1
            and (name is None or record.get("bundle") == name)
        ):
            found.setdefault(record["volume"], base)
    return found


def bundle_entry(directory: str, reference: str) -> dict[str, Any] | None:
    """The index.json entry of ``reference`` in a bundle directory, read without creating anything."""
    index = _load_json(os.path.join(metadata_dir(directory), INDEX_FILE), "OCI index")
    for entry in (
        (index or {}).get("manifests") or []
        if isinstance(index, dict) and isinstance(index.get("manifests"), list)
        else []
    ):
        if (
            isinstance(entry, dict)
            and isinstance(entry.get("annotations"), dict)
            and entry["annotations"].get(ANNOTATION_REF_NAME) == reference
        ):
            return entry
    return None


def removable_blobs(directory: str, reference: str) -> dict[str, int]:
    """The blob files of ``reference`` in a bundle (not in volumes) that no other image of it needs, with their
    sizes, read without changing anything."""
    contents = _load_json(os.path.join(directory, CONTENTS_FILE), "bundle contents record")
    images = (contents or {}).get("images") if isinstance(contents, dict) else None
    if not isinstance(images, dict) or not isinstance(images.get(reference), dict):
        return {}
    used = {
        d
        for ref, image in images.items()
        if ref != reference and isinstance(image, dict)
        for d in image.get("blobs") or []
    }
    found = {}
    for digest in images[reference].get("blobs") or []:
        if digest in used or not is_digest(digest):
            continue
        try:
            found[digest] = os.stat(blob_file(directory, digest)).st_size
        except OSError:
            continue
    return found


# -- the carried documents: one reader for the import and for verify ------------------------------------------------------
_HEX_RE = re.compile(r"^[a-f0-9]{64}$")
DIGEST = Check(is_digest, "a digest (sha256:<64 hex>)")
SIZE = Check(lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0, "a size in bytes")
VOLUME = Check(lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1, "a volume number (1, 2, ...)")
INDEX_ENTRY = {"digest": Required(DIGEST), "mediaType": str, "size": SIZE, "annotations": MapOf(str), "platform": dict}
IMAGE_RECORD = {
    "digest": Required(DIGEST),
    "source_digest": DIGEST,
    "media_type": Check(lambda v: v is None or isinstance(v, str), "a media type"),
    "blobs": [DIGEST],
    "expected": MapOf(str, key=DIGEST),
    "written": str,
}
FILE_RECORD = {
    "size": Required(SIZE),
    "sha256": Required(Check(lambda v: isinstance(v, str) and bool(_HEX_RE.match(v)), "a sha256 in hex")),
    "volume": VOLUME,
    "parts": [
        {"volume": Required(VOLUME), "path": Required(Check(plain_name, "a plain name inside a volume")), "size": SIZE}
    ],
}
EXPECTED_RECORD = {"bundle": str, "image": str, "size": SIZE}
CONTENTS_RECORD = {
    "schema": Required(
        Check(
            lambda v: v == CONTENTS_SCHEMA and not isinstance(v, bool), f"{CONTENTS_SCHEMA} (this collection's schema)"
        )
    ),
    "files": Required(dict),
    "images": Required(dict),
    "expected": dict,
    "volumes": VOLUME,
    "bundle": str,
    "source": str,
    "delta": bool,
    "updated": str,
}


@dataclass
class Contents:
    """A bundle's contents.json as read: the sound part of the record (None if there is none or it is unusable as a
    whole), why it is unusable (``problem``), and which entries are wrong (``bad_files``, ``bad_images``: key ->
    reason naming the file and key). ``rejected`` is every image a wrong entry concerns."""

    record: dict[str, Any] | None = None
    missing: bool = False
    problem: str | None = None
    bad_files: dict[str, str] = field(default_factory=dict)
    bad_images: dict[str, str] = field(default_factory=dict)
    rejected: dict[str, str] = field(default_factory=dict)


def read_contents(directory: str) -> Contents:
    """contents.json of the bundle whose metadata is in ``directory``, checked against its schema entry by entry."""
    where = os.path.join(directory, CONTENTS_FILE)
    try:
        raw = read_inside(directory, CONTENTS_FILE, RECORD_LIMIT, "contents record")
        record = json.loads(raw.decode("utf-8"))
    except CarriedMissing:
        return Contents(missing=True)
    except CarriedError as exc:
        return Contents(problem=str(exc))
    except (UnicodeDecodeError, ValueError) as exc:
        return Contents(problem=f"{where} is not JSON ({str(exc).splitlines()[0]}): it is damaged or cut short")
    return contents_from(record, where)


def contents_from(record: Any, where: str) -> Contents:
    """A parsed contents record (read from ``where``) checked against its schema entry by entry."""
    problem = schema_problem(record, CONTENTS_RECORD, CONTENTS_FILE)
    if problem:
        return Contents(problem=f"{where} is not a contents record this collection wrote: {problem}")
    found = Contents(record={k: v for k, v in record.items() if k not in ("files", "images", "expected")})
    files, images, expected = {}, {}, {}
    for path, entry in record["files"].items():
        problem = (
            None
            if plain_name(path)
            else f"{CONTENTS_FILE} lists a file {path[:200]!r} that is not a plain name inside the bundle"
        )
        problem = problem or schema_problem(entry, FILE_RECORD, f"{CONTENTS_FILE} files[{path!r}]")
        digest = path_digest(path)
        if not problem and digest and digest.startswith("sha256:") and digest != f"sha256:{entry['sha256']}":
            problem = f"{CONTENTS_FILE} files[{path!r}].sha256 is {entry['sha256']}, not the one its name says"
        if problem:
            found.bad_files[path] = problem
        else:
            files[path] = entry
    for ref, image in record["images"].items():
        problem = schema_problem(image, IMAGE_RECORD, f"{CONTENTS_FILE} images[{ref!r}]")
        if problem:
            found.bad_images[ref] = found.rejected[ref] = problem
        else:
            images[ref] = image
    for digest, entry in (record.get("expected") or {}).items():
        problem = DIGEST.problem(digest, f"a key of {CONTENTS_FILE} expected") or schema_problem(
            entry, EXPECTED_RECORD, f"{CONTENTS_FILE} expected[{digest!r}]"
        )
        if problem:
            found.bad_files[f"expected[{digest}]"] = problem
            for ref, image in images.items():
                if digest in (image.get("blobs") or []):
                    found.rejected.setdefault(ref, problem)
        else:
            expected[digest] = entry
    for path, problem in found.bad_files.items():
        digest = path_digest(path)
        for ref, image in images.items():
            if digest and (digest in (image.get("blobs") or []) or digest == image.get("digest")):
                found.rejected.setdefault(ref, problem)
    found.record.update(
        files=files, images={r: i for r, i in images.items() if r not in found.rejected}, expected=expected
    )
    return found


def path_digest(path: str) -> str | None:
    """The digest a relative path under blobs/ names, or None for any other path."""
    parts = path.split("/")
    if len(parts) == 3 and parts[0] == "blobs" and is_digest(f"{parts[1]}:{parts[2]}"):
        return f"{parts[1]}:{parts[2]}"
    return None


@dataclass
class Index:
    """A bundle's index.json as read: its sound entries in order (named or not), and the names that cannot be trusted
    (``rejected``: a wrong entry, a name given twice, an entry that differs from the contents record), with why."""

    entries: list[dict[str, Any]] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    rejected: dict[str, str] = field(default_factory=dict)
    unnamed: list[str] = field(default_factory=list)  # problems of entries that name no image


def ref_of(entry: Any) -> str | None:
    """The reference an index entry is named by, if it has one."""
    notes = entry.get("annotations") if isinstance(entry, dict) else None
    name = notes.get(ANNOTATION_REF_NAME) if isinstance(notes, dict) else None
    return name if isinstance(name, str) and name else None


def read_index(directory: str, contents: Contents | None = None) -> Index:
    """index.json of the bundle whose metadata is in ``directory``, each entry checked against its schema and, with a
    contents record, against that record's entry of its name. Raises CarriedError if there is no usable index at all."""
    where = os.path.join(directory, INDEX_FILE)
    try:
        document = json.loads(read_inside(directory, INDEX_FILE, RECORD_LIMIT, "OCI index").decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise CarriedError(f"{where} is not JSON ({str(exc).splitlines()[0]}): it is damaged or cut short") from None
    problem = schema_problem(document, {"manifests": Required(list)}, INDEX_FILE)
    if problem:
        raise CarriedError(f"{where} is not an OCI index: {problem}")
    index = Index()
    record = contents.record if contents is not None else None
    recorded = (record or {}).get("images") or {}
    rejected_by_record = contents.rejected if contents is not None else {}
    seen: dict[str, list[int]] = {}
    for number, entry in enumerate(document["manifests"]):
        name = ref_of(entry)
        problem = schema_problem(entry, INDEX_ENTRY, f"{INDEX_FILE} manifests[{number}]")
        if problem:
            digest = entry.get("digest") if isinstance(entry, dict) else None
            names = [name] if name else [r for r, i in recorded.items() if digest and i.get("digest") == digest]
            for one in names:
                index.rejected.setdefault(one, problem)
            if not names:
                index.unnamed.append(problem)
            continue
        index.entries.append(entry)
        if name is None:
            continue
        seen.setdefault(name, []).append(number)
        if name in rejected_by_record:
            index.rejected.setdefault(name, rejected_by_record[name])
        elif record is not None and name not in recorded:
            index.rejected.setdefault(
                name, f"{INDEX_FILE} names {name}, which {CONTENTS_FILE} does not record: the index was changed"
            )
        elif record is not None and recorded[name]["digest"] != entry["digest"]:
            index.rejected.setdefault(
                name,
                f"{INDEX_FILE} names {name} with the manifest {entry['digest']}, but {CONTENTS_FILE} records "
                f"{recorded[name]['digest']} for it: the index was changed (tampered or damaged)",
            )
    for name, numbers in seen.items():
        if len(numbers) > 1:
            index.rejected[name] = (
                f"{INDEX_FILE} names {name} {len(numbers)} times (manifests[{'], manifests['.join(map(str, numbers))}]): "
                "which one is meant is not known"
            )
    if contents is not None and contents.problem:
        for name in seen:
            index.rejected.setdefault(name, contents.problem)
    index.names = list(dict.fromkeys(list(seen) + list(index.rejected)))
    return index


def refuse_unfinished(root: str, directory: str) -> None:
    """Raise ConfigError if a run is still writing the bundle in ``root`` (its metadata in ``directory``): what it holds
    then is what is complete so far, not the bundle."""
    for place in dict.fromkeys([root, directory]):
        writer = writer_of(place)
        if writer:
            raise ConfigError(
                f"the bundle {root} is still being written: {writer}. Wait for the export to finish "
                "(a bundle is complete once its export ended), then import or verify it"
            )


class BundleReader:
    """A bundle read as a source: its images by reference, manifests and blobs checked against their digests.

    Everything is read as untrusted (``_carried``): index.json and contents.json are checked against their schemas and
    against each other when the reader is made; a name whose entry is wrong is ``rejected`` (``find`` raises, naming
    the file and key), the others are read. A bundle that is still being written is refused.
    """

    def __init__(self, directory: str) -> None:
        root = os.path.abspath(directory)
        if not os.path.isdir(root):
            raise ConfigError(
                f"source_dir {directory} does not exist: give the directory of a bundle (it holds index.json)"
            )
        self.dir = metadata_dir(root)
        self.volumes: dict[int, str] = {}
        if not os.path.lexists(os.path.join(self.dir, INDEX_FILE)):
            first = find_volumes(root, None).get(1)
            if first is None and find_volumes(root, None):
                raise ConfigError(
                    f"source_dir {directory}: volume 1 ({FIRST_VOLUME}, which holds the bundle's index) is missing: "
                    "mount it or copy it there"
                )
            self.dir = first or self.dir
        refuse_unfinished(root, self.dir)
        self.contents_read = read_contents(self.dir)
        try:
            self.index = read_index(self.dir, self.contents_read)
        except CarriedMissing:
            raise ConfigError(
                f"source_dir {directory} is not a bundle: it has no {INDEX_FILE} (an OCI image layout)"
            ) from None
        except CarriedError as exc:
            raise ConfigError(f"source_dir {directory} is not a usable bundle: {exc}") from None
        for name in list(self.index.names):
            try:
                ImageReference.parse(name)
            except AirgapError as exc:
                self.index.names.remove(name)
                self.index.unnamed.append(f"{INDEX_FILE} names {name[:200]!r}, which is not an image reference ({exc})")
        self.entries: list[dict[str, Any]] = self.index.entries
        self.contents: dict[str, Any] = self.contents_read.record or {}
        if self.contents.get("volumes"):
            self.volumes = find_volumes(root, self.contents.get("bundle"))
            if not self.volumes:
                self.volumes = find_volumes(os.path.dirname(self.dir), self.contents.get("bundle"))

    def blob_paths(self, digest: str) -> list[tuple[str, str]]:
        """The file holding a blob, or its parts in order, wherever its volumes are, each as (medium directory, path
        inside it); a missing volume is named."""
        if not is_digest(digest):
            raise CarriedError(f"invalid digest {str(digest)[:80]!r} in the bundle {self.dir}")
        name = blob_path(digest)
        if name in self.contents_read.bad_files:
            raise CarriedError(self.contents_read.bad_files[name])
        entry = (self.contents.get("files") or {}).get(name) or {}
        pieces = entry.get("parts") or ([{"volume": entry["volume"], "path": name}] if entry.get("volume") else [])
        if not pieces:
            return [(self.dir, name)]
        paths = []
        for piece in pieces:
            base = self.volumes.get(piece["volume"])
            if base is None:
                raise AirgapError(
                    f"blob {digest} is in volume {piece['volume']} of {self.contents.get('volumes')} "
                    f"({volume_name(piece['volume'])}), which is not in the source: mount it or copy it there"
                )
            paths.append((base, piece["path"]))
        return paths

    def references(self) -> list[str]:
        """Every image the bundle names, in index order (those whose entries cannot be trusted too: they fail)."""
        return list(self.index.names)

    @staticmethod
    def ref_name(entry: dict[str, Any]) -> str | None:
        return ref_of(entry)

    def find(self, reference: str) -> dict[str, Any] | None:
        """The index entry named ``reference``: the full reference, or the same without its registry host. A name
        whose entry cannot be trusted raises CarriedError saying why."""
        for name in self.index.names:
            if name == reference or name.split("/", 1)[-1] == reference:
                if name in self.index.rejected:
                    raise CarriedError(f"{name} in the bundle {self.dir} is not imported: {self.index.rejected[name]}")
                return next(e for e in self.entries if ref_of(e) == name)
        return None

    def manifest(self, digest: str, media_type: str | None = None) -> Manifest:
        raw = b"".join(
            read_blob_chunks(self.blob_paths(digest), digest, None, f"the bundle {self.dir}", MAX_MANIFEST_BYTES)
        )
        return parse_manifest(raw, digest, f"manifest {digest} in the bundle {self.dir}", media_type)

    def holds(self, digest: str, size: int | None = None) -> bool:
        """The blob's file (or every part of it) is here, of ``size`` bytes if given (the read checks its digest)."""
        try:
            paths = [os.path.join(root, relative) for root, relative in self.blob_paths(digest)]
            return all(os.path.isfile(p) and not os.path.islink(p) for p in paths) and size in (
                None,
                sum(os.path.getsize(p) for p in paths),
            )
        except (AirgapError, OSError):
            return False

    def carrier(self, digest: str) -> str | None:
        """The earlier bundle that carried a blob this delta bundle left out; None if the blob is not one of those."""
        info = (self.contents.get("expected") or {}).get(digest)
        return str(info.get("bundle") or "?") if isinstance(info, dict) else None

    def open_blob(self, digest: str, size: int | None = None) -> Iterator[bytes]:
        pieces = self.blob_paths(digest)
        carried = (self.contents.get("expected") or {}).get(digest)
        if carried and len(pieces) == 1 and not os.path.lexists(os.path.join(*pieces[0])):
            raise AirgapError(
                f"blob {digest} is not in the delta bundle {self.dir}, nor on the destination: it was carried by "
                f"bundle {carried.get('bundle')}; import bundle {carried.get('bundle')} first"
            )
        return read_blob_chunks(pieces, digest, size, f"the bundle {self.dir}")

    def origins(self) -> dict[str, str]:
        """For each blob a delta bundle expects on the far side: an image of the earlier bundle that uses it."""
        return {d: info["image"] for d, info in (self.contents.get("expected") or {}).items() if info.get("image")}


def bundles_beside(directory: str) -> list[str]:
    """The other bundles in the drop directory that holds bundle ``directory`` (its parent): each subdirectory with an
    ``index.json`` (or its first volume), in name order, but those whose name starts with '.' (still being copied)."""
    root = os.path.abspath(directory)
    parent = os.path.dirname(root)
    try:
        names = sorted(os.listdir(parent))
    except OSError:
        return []
    found = []
    for name in names:
        path = os.path.join(parent, name)
        if name.startswith(".") or path == root or not os.path.isdir(path):
            continue
        if os.path.isfile(os.path.join(metadata_dir(path), INDEX_FILE)):
            found.append(path)
    return found


_SIZE_RE = re.compile(r"^\s*(\d+)\s*([KMGT]i?B?|B)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "B": 1, "K": 1000, "M": 1000**2, "G": 1000**3, "T": 1000**4}


def parse_size(value: Any) -> int:
    """Bytes of a size such as 4GiB, 700MB, 4000000000 (KiB, MiB... are powers of 1024; KB, MB... of 1000)."""
    text = str(value)
    match = _SIZE_RE.match(text)
    if isinstance(value, bool) or not match:
        raise ConfigError(
            f"invalid bundle.volume_size {value!r}: give a size such as 4GiB, 700MiB or a number of bytes"
        )
    unit = (match.group(2) or "").upper()
    factor = 1024 ** (" KMGT".index(unit[0])) if "I" in unit else _UNITS[unit[:1] if unit != "B" else "B"]
    return int(match.group(1)) * factor


class _Volumes:
    """Numbered volume directories of a bundle, none larger than ``size`` bytes: where each blob (or part) goes.

    Volume 1 keeps room for the layout files, index.json and contents.json. A blob goes whole into the first volume
    with room for it; one larger than a volume is split into parts that fill volumes in order.
    """

    def __init__(self, root: str, size: int, name: str, contents: dict[str, Any]) -> None:
        self.root, self.size, self.name = root, size, name
        self.reserve = max(64 * 1024, size // 100)
        if size < 4 * self.reserve:
            raise ConfigError(
                f"invalid bundle.volume_size {size}: too small for a volume with room for the bundle's index; "
                "give at least 1MiB"
            )
        self._lock = threading.Lock()
        self.used: dict[int, int] = {}
        self.present: dict[str, tuple[int, dict[str, Any]]] = {}
        for entry in sorted(os.listdir(root)):
            match = re.match(r"^vol-(\d{4})$", entry)
            if not match:
                continue
            number, base = int(match.group(1)), os.path.join(root, entry)
            self.used[number] = sum(
                os.path.getsize(os.path.join(d, f)) for d, _s, files in os.walk(base) for f in files
            )
            blobs = os.path.join(base, "blobs", "sha256")
            for name_ in os.listdir(blobs) if os.path.isdir(blobs) else []:
                if not name_.startswith("."):
                    self.present[f"sha256:{name_}"] = (os.path.getsize(os.path.join(blobs, name_)), {"volume": number})
        for path, entry in (contents.get("files") or {}).items():
            parts = entry.get("parts") if isinstance(entry, dict) else None
            if parts and all(
                os.path.isfile(os.path.join(self.directory(p["volume"], create=False), p["path"])) for p in parts
            ):
                self.present["sha256:" + path.rsplit("/", 1)[-1]] = (entry["size"], {"parts": parts})

    def directory(self, number: int, create: bool = True) -> str:
        base = os.path.join(self.root, volume_name(number))
        if create and not os.path.isfile(os.path.join(base, VOLUME_FILE)):
            for sub in ("blobs/sha256", "parts"):
                os.makedirs(os.path.join(base, sub), exist_ok=True)
            record = json.dumps({"bundle": self.name, "volume": number}).encode("utf-8")
            atomic_write(os.path.join(base, VOLUME_FILE), record, what="volume record")
            self.used[number] = self.used.get(number, 0) + len(record)
        return base

    def count(self) -> int:
        return max(self.used) if self.used else 1

    def _room(self, number: int) -> int:
        return (
            self.size - (self.reserve if number == 1 else 0) - self.used.get(number, 0) - 4096
        )  # 4096: its volume.json

    def allocate(self, digest: str, size: int) -> list[tuple[str, int, dict[str, Any]]]:
        """Where a blob of ``size`` bytes goes: [(file path, bytes, placement of that piece)], in order."""
        encoded = digest.split(":", 1)[1]
        with self._lock:
            numbers = sorted(self.used) or [1]
            fit = next((n for n in numbers if self._room(n) >= size), None)
            if fit is None and size <= self._room(max(numbers) + 1):
                fit = max(numbers) + 1
            if fit is not None:
                self.used[fit] = self.used.get(fit, 0) + size
                return [(os.path.join(self.directory(fit), "blobs", "sha256", encoded), size, {"volume": fit})]
            pieces, left, number = [], size, min(numbers)
            while left > 0:
                take = min(max(self._room(number), 0), left)
                if take > 0:
                    self.used[number] = self.used.get(number, 0) + take
                    rel = f"parts/{encoded}.{len(pieces) + 1:03d}"
                    pieces.append(
                        (os.path.join(self.directory(number), rel), take, {"volume": number, "path": rel, "size": take})
                    )
                    left -= take
                number += 1
            return pieces


class _PartsFile(BlobSink):
    """A sink writing one blob as parts in several volumes: each part checked, synced and renamed on close."""

    def __init__(self, pieces: list[tuple[str, int, dict[str, Any]]], digest: str, size: int) -> None:
        self.digest, self.size = digest, size
        self.files = [BlobFile(path, digest, length) for path, length, _placement in pieces]
        self._current = 0

    def write(self, data: bytes) -> None:
        while data:
            part = self.files[self._current]
            room = part.size - part.written
            if room <= 0 and self._current + 1 < len(self.files):
                self._current += 1
                continue
            if room <= 0:  # more than declared: the last part's size check refuses it on close
                part.write(data)
                return
            part.write(data[:room])
            data = data[room:]

    def close(self) -> None:
        for part in self.files:
            part.close()

    def abort(self) -> None:
        for part in self.files:
            part.abort()


class BundleWriter:
    """Writes images into a bundle directory; ``add_image`` publishes one in index.json and contents.json.

    With ``volume_size`` the bundle is written as numbered volume directories (``vol-0001``, ...), none larger.
    """

    def __init__(self, directory: str, source: str, volume_size: int | None = None) -> None:
        self.root = os.path.abspath(directory)
        if volume_size and os.path.isfile(os.path.join(self.root, INDEX_FILE)):
            raise ConfigError(
                f"bundle.dir {self.root} holds a bundle without volumes: write the volumes into a new directory"
            )
        self.dir = os.path.join(self.root, FIRST_VOLUME) if volume_size else self.root
        self.source = source
        self.blob_dir = os.path.join(self.dir, "blobs", "sha256")
        try:
            os.makedirs(self.blob_dir, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot create bundle.dir {self.dir}: {exc.strerror or exc}") from None
        layout = os.path.join(self.dir, LAYOUT_FILE)
        if not os.path.exists(layout):
            atomic_write(layout, OCI_LAYOUT, what="OCI layout file")
        index = _load_json(os.path.join(self.dir, INDEX_FILE), "OCI index")
        if index is not None and not (isinstance(index, dict) and isinstance(index.get("manifests"), list)):
            raise ConfigError(
                f"bundle.dir {self.dir} holds an {INDEX_FILE} that is not an OCI index: choose another directory"
            )
        self.index: dict[str, Any] = index or {"schemaVersion": 2, "mediaType": MEDIA_OCI_INDEX, "manifests": []}
        contents = _load_json(os.path.join(self.dir, CONTENTS_FILE), "bundle contents record")
        self.contents: dict[str, Any] = (
            contents
            if isinstance(contents, dict) and contents.get("schema") == CONTENTS_SCHEMA
            else {"schema": CONTENTS_SCHEMA, "images": {}, "files": {}}
        )
        self.volumes = (
            _Volumes(self.root, volume_size, os.path.basename(self.root), self.contents) if volume_size else None
        )
        if self.volumes is not None:
            self.volumes.directory(1)
        self._placed: dict[str, dict[str, Any]] = {}

    def has_blob(self, digest: str, size: int) -> bool:
        """A blob file of the right size is there (it was only renamed into place after its digest was checked)."""
        if self.volumes is not None:
            held = self.volumes.present.get(digest) or (None, None)
            if held[0] == size:
                self._placed.setdefault(digest, held[1])
            return held[0] == size
        try:
            return os.stat(blob_file(self.dir, digest)).st_size == size
        except OSError:
            return False

    def blob_sink(self, digest: str, size: int) -> BlobSink:
        if self.volumes is None:
            return BlobFile(blob_file(self.dir, digest), digest, size, keep=kept_beside(blob_file(self.dir, digest)))
        pieces = self.volumes.allocate(digest, size)
        placement = pieces[0][2] if len(pieces) == 1 else {"parts": [p[2] for p in pieces]}
        sink: BlobSink = BlobFile(pieces[0][0], digest, size) if len(pieces) == 1 else _PartsFile(pieces, digest, size)
        volumes, placed = self.volumes, self._placed

        class _Placed(BlobSink):
            """Records where the blob went once it is complete (so the contents record can say which volume)."""

            def write(self, data: bytes) -> None:
                sink.write(data)

            def close(self) -> None:
                sink.close()
                placed[digest] = placement
                volumes.present[digest] = (size, placement)

            def abort(self) -> None:
                sink.abort()

        return _Placed()

    def put_bytes(self, digest: str, data: bytes) -> None:
        """A manifest or config held in memory, if not there yet."""
        check_bytes(data, digest, f"data for {digest}")
        if self.has_blob(digest, len(data)):
            return
        if self.volumes is None:
            atomic_write(blob_file(self.dir, digest), data, what="blob")
            return
        sink = self.blob_sink(digest, len(data))
        try:
            sink.write(data)
            sink.close()
        except BaseException:
            sink.abort()
            raise

    def remove_image(self, reference: str, written: str) -> int:
        """Take an image out of index.json and contents.json (both atomically), then delete the blobs no other
        image needs; returns the bytes freed. A crash in between leaves unused blobs, never a missing one."""
        if self.volumes is not None:
            raise ConfigError(
                f"bundle.dir {self.root} is written in volumes: such a bundle is not pruned, write a new one"
            )
        doomed = removable_blobs(self.dir, reference)
        self.index["manifests"] = [
            e for e in self.index["manifests"] if (e.get("annotations") or {}).get(ANNOTATION_REF_NAME) != reference
        ]
        self.contents["images"].pop(reference, None)
        files = self.contents.setdefault("files", {})
        for digest in doomed:
            files.pop(blob_path(digest), None)
        index_bytes = (json.dumps(self.index, indent=2) + "\n").encode("utf-8")
        files[INDEX_FILE] = {"size": len(index_bytes), "sha256": hashlib.sha256(index_bytes).hexdigest()}
        self.contents["updated"] = written
        atomic_write(os.path.join(self.dir, INDEX_FILE), index_bytes, what="bundle index")
        atomic_write(
            os.path.join(self.dir, CONTENTS_FILE),
            (json.dumps(self.contents, indent=2, sort_keys=True) + "\n").encode("utf-8"),
            what="bundle contents record",
        )
        for digest in doomed:
            remove_quietly(blob_file(self.dir, digest))
        fsync_dir(self.blob_dir)
        return sum(doomed.values())

    def add_image(self, reference: str, top: dict[str, Any], record: dict[str, Any], written: str, name: str) -> None:
        """Name an image in index.json (replacing an entry of the same name) and contents.json, both atomically.

        ``record["blobs"]`` is every blob the image needs, by digest with its size; ``record["expected"]`` those that
        are deliberately not here (a delta bundle), each with the earlier bundle that carried it.
        """
        blobs, expected = record["blobs"], record.get("expected") or {}
        present = {d: size for d, size in blobs.items() if d not in expected}
        missing = [d for d, size in present.items() if not self.has_blob(d, size)]
        if missing:
            raise AirgapError(f"bundle {self.dir}: blob {missing[0]} of {reference} is not there after writing it")
        entries = [
            e for e in self.index["manifests"] if (e.get("annotations") or {}).get(ANNOTATION_REF_NAME) != reference
        ]
        # by name: the same index whatever order the images were written in (they may be written side by side)
        self.index["manifests"] = sorted(
            entries + [top], key=lambda e: str((e.get("annotations") or {}).get(ANNOTATION_REF_NAME) or "")
        )
        files = self.contents.setdefault("files", {})
        for digest, size in present.items():
            files[blob_path(digest)] = dict(self._placed.get(digest) or {}, size=size, sha256=digest.split(":", 1)[1])
        if self.volumes is not None:
            self.contents["volumes"] = self.volumes.count()
        index_bytes = (json.dumps(self.index, indent=2) + "\n").encode("utf-8")
        files[INDEX_FILE] = {"size": len(index_bytes), "sha256": hashlib.sha256(index_bytes).hexdigest()}
        files[LAYOUT_FILE] = {"size": len(OCI_LAYOUT), "sha256": hashlib.sha256(OCI_LAYOUT).hexdigest()}
        waiting = self.contents.setdefault("expected", {})
        waiting.update(expected)
        for digest in present:
            waiting.pop(digest, None)
        self.contents["images"][reference] = dict(
            record, blobs=sorted(blobs), expected={d: i["bundle"] for d, i in expected.items()}, written=written
        )
        self.contents.update(source=self.source, updated=written, bundle=name, delta=bool(waiting))
        atomic_write(os.path.join(self.dir, INDEX_FILE), index_bytes, what="bundle index")
        record = (json.dumps(self.contents, indent=2, sort_keys=True) + "\n").encode("utf-8")
        if self.volumes is not None and len(record) + len(index_bytes) > self.volumes.reserve:
            raise AirgapError(
                f"bundle.volume_size {self.volumes.size} leaves too little room in {FIRST_VOLUME} for the bundle's index "
                f"({len(record) + len(index_bytes)} bytes): give a larger volume_size"
            )
        atomic_write(os.path.join(self.dir, CONTENTS_FILE), record, what="bundle contents record")
        fsync_dir(self.blob_dir)
