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
from typing import Any, Iterator

from ansible_collections.airgap.ngc.plugins.module_utils._errors import AirgapError, ConfigError, DigestMismatchError
from ansible_collections.airgap.ngc.plugins.module_utils._files import (
    BlobFile,
    atomic_write,
    fsync_dir,
    kept_beside,
    remove_quietly,
)
from ansible_collections.airgap.ngc.plugins.module_utils._oci import (
    ANNOTATION_REF_NAME,
    MEDIA_OCI_INDEX,
    OCI_LAYOUT,
    Manifest,
    check_bytes,
    is_digest,
    parse_manifest,
    read_small,
)

INDEX_FILE = "index.json"
VOLUME_FILE = "volume.json"
FIRST_VOLUME = "vol-0001"  # holds the layout files, index.json and contents.json of a bundle in volumes
LAYOUT_FILE = "oci-layout"
CONTENTS_FILE = "contents.json"
CONTENTS_SCHEMA = 1
CHUNK = 1024 * 1024


def blob_file(directory: str, digest: str) -> str:
    """Where a blob lives in a bundle: <dir>/blobs/<algorithm>/<hex>."""
    if not is_digest(digest):
        raise AirgapError(f"invalid digest {digest!r} in bundle {directory}")
    algorithm, encoded = digest.split(":", 1)
    return os.path.join(directory, "blobs", algorithm, encoded)


def _load_json(path: str, what: str) -> Any:
    try:
        with open(path, "rb") as handle:
            return json.loads(handle.read().decode("utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise AirgapError(f"{path} is not a valid {what} ({getattr(exc, 'strerror', None) or exc}): write the bundle again") from None


def read_blob_chunks(path: str | list[str], digest: str, size: int | None, what: str) -> Iterator[bytes]:
    """A blob's bytes in chunks (from one file, or its parts in order), hashed as they go: the last chunk is held back
    until the digest is checked. A missing file is reported at once, before any chunk."""
    paths = [path] if isinstance(path, str) else list(path)
    for one in paths:
        if not os.path.isfile(one):
            raise AirgapError(f"blob {digest} is missing from {what}: {one} does not exist")
    return _verified(paths, digest, size)


def _verified(paths: list[str], digest: str, size: int | None) -> Iterator[bytes]:
    algorithm, expected = digest.split(":", 1)
    hasher = hashlib.new(algorithm)
    total = 0
    held = b""
    path = paths[0]
    for path in paths:
        try:
            handle = open(path, "rb")  # pylint: disable=consider-using-with
        except OSError as exc:
            raise AirgapError(f"cannot read blob {digest} from {path}: {exc.strerror or exc}") from None
        with handle:
            while True:
                data = handle.read(CHUNK)
                if not data:
                    break
                total += len(data)
                hasher.update(data)
                if held:
                    yield held
                held = data
    if size is not None and total != size:
        raise DigestMismatchError(f"blob {digest} in {path} has {total} bytes, {size} expected: the file is damaged")
    if hasher.hexdigest() != expected:
        raise DigestMismatchError(f"blob {digest} in {path} hashes to {algorithm}:{hasher.hexdigest()}: the file is damaged")
    if held:
        yield held


def volume_name(number: int) -> str:
    return f"vol-{number:04d}"


def metadata_dir(directory: str) -> str:
    """Where a bundle's index.json is: the directory itself, or its first volume."""
    first = os.path.join(directory, FIRST_VOLUME)
    return first if not os.path.exists(os.path.join(directory, INDEX_FILE)) and os.path.isdir(first) else directory


def find_volumes(directory: str, name: str | None) -> dict[int, str]:
    """The volume directories of bundle ``name`` found in ``directory``, its children or grandchildren: {number: path}.

    Volumes may be copied into one directory or sit on several mount points under it, in any order.
    """
    found: dict[int, str] = {}
    levels = [[directory]]
    for _depth in (1, 2):
        levels.append([os.path.join(base, entry) for base in levels[-1] if os.path.isdir(base)
                       for entry in sorted(os.listdir(base)) if os.path.isdir(os.path.join(base, entry))])
    for base in (b for level in levels for b in level):
        record = _load_json(os.path.join(base, VOLUME_FILE), "volume record") if os.path.isfile(os.path.join(base, VOLUME_FILE)) else None
        if isinstance(record, dict) and isinstance(record.get("volume"), int) and (name is None or record.get("bundle") == name):
            found.setdefault(record["volume"], base)
    return found


def bundle_entry(directory: str, reference: str) -> dict[str, Any] | None:
    """The index.json entry of ``reference`` in a bundle directory, read without creating anything."""
    index = _load_json(os.path.join(metadata_dir(directory), INDEX_FILE), "OCI index")
    for entry in (index or {}).get("manifests") or [] if isinstance(index, dict) else []:
        if isinstance(entry, dict) and (entry.get("annotations") or {}).get(ANNOTATION_REF_NAME) == reference:
            return entry
    return None


def removable_blobs(directory: str, reference: str) -> dict[str, int]:
    """The blob files of ``reference`` in a bundle (not in volumes) that no other image of it needs, with their
    sizes, read without changing anything."""
    contents = _load_json(os.path.join(directory, CONTENTS_FILE), "bundle contents record")
    images = (contents or {}).get("images") if isinstance(contents, dict) else None
    if not isinstance(images, dict) or reference not in images:
        return {}
    used = {d for ref, image in images.items() if ref != reference for d in image.get("blobs") or []}
    found = {}
    for digest in images[reference].get("blobs") or []:
        if digest in used:
            continue
        try:
            found[digest] = os.stat(blob_file(directory, digest)).st_size
        except OSError:
            continue
    return found


class BundleReader:
    """A bundle read as a source: its images by reference, manifests and blobs checked against their digests."""

    def __init__(self, directory: str) -> None:
        root = os.path.abspath(directory)
        if not os.path.isdir(root):
            raise ConfigError(f"source_dir {directory} does not exist: give the directory of a bundle (it holds index.json)")
        self.dir = metadata_dir(root)
        self.volumes: dict[int, str] = {}
        if not os.path.isfile(os.path.join(self.dir, INDEX_FILE)):
            first = find_volumes(root, None).get(1)
            if first is None and find_volumes(root, None):
                raise ConfigError(f"source_dir {directory}: volume 1 ({FIRST_VOLUME}, which holds the bundle's index) is missing: "
                                  "mount it or copy it there")
            self.dir = first or self.dir
        index = _load_json(os.path.join(self.dir, INDEX_FILE), "OCI index")
        if not isinstance(index, dict) or not isinstance(index.get("manifests"), list):
            raise ConfigError(f"source_dir {directory} is not a bundle: it has no valid {INDEX_FILE} (an OCI image layout)")
        self.entries: list[dict[str, Any]] = [e for e in index["manifests"] if isinstance(e, dict) and is_digest(e.get("digest"))]
        self.contents = _load_json(os.path.join(self.dir, CONTENTS_FILE), "bundle contents record") or {}
        if self.contents.get("volumes"):
            self.volumes = find_volumes(root, self.contents.get("bundle"))
            if not self.volumes:
                self.volumes = find_volumes(os.path.dirname(self.dir), self.contents.get("bundle"))

    def blob_paths(self, digest: str) -> str | list[str]:
        """The file holding a blob, or its parts in order, wherever its volumes are; a missing volume is named."""
        entry = (self.contents.get("files") or {}).get(f"blobs/{digest.replace(':', '/')}") or {}
        pieces = entry.get("parts") or ([{"volume": entry["volume"], "path": f"blobs/{digest.replace(':', '/')}"}] if entry.get("volume") else [])
        if not pieces:
            return blob_file(self.dir, digest)
        paths = []
        for piece in pieces:
            base = self.volumes.get(piece["volume"])
            if base is None:
                raise AirgapError(f"blob {digest} is in volume {piece['volume']} of {self.contents.get('volumes')} "
                                  f"({volume_name(piece['volume'])}), which is not in the source: mount it or copy it there")
            paths.append(os.path.join(base, piece["path"]))
        return paths

    def references(self) -> list[str]:
        """Every image the bundle names, in index order."""
        return [ref for ref in (self.ref_name(e) for e in self.entries) if ref]

    @staticmethod
    def ref_name(entry: dict[str, Any]) -> str | None:
        return (entry.get("annotations") or {}).get(ANNOTATION_REF_NAME)

    def find(self, reference: str) -> dict[str, Any] | None:
        """The index entry named ``reference``: the full reference, or the same without its registry host."""
        for entry in self.entries:
            name = self.ref_name(entry) or ""
            if name == reference or name.split("/", 1)[-1] == reference:
                return entry
        return None

    def manifest(self, digest: str, media_type: str | None = None) -> Manifest:
        chunks = read_blob_chunks(self.blob_paths(digest), digest, None, f"the bundle {self.dir}")
        raw = read_small(chunks, f"manifest {digest} in the bundle {self.dir}")
        return parse_manifest(raw, digest, f"manifest {digest} in the bundle {self.dir}", media_type)

    def holds(self, digest: str, size: int | None = None) -> bool:
        """The blob's file (or every part of it) is here, of ``size`` bytes if given (the read checks its digest)."""
        try:
            path = self.blob_paths(digest)
            paths = [path] if isinstance(path, str) else path
            return all(os.path.isfile(p) for p in paths) and size in (None, sum(os.path.getsize(p) for p in paths))
        except (AirgapError, OSError):
            return False

    def carrier(self, digest: str) -> str | None:
        """The earlier bundle that carried a blob this delta bundle left out; None if the blob is not one of those."""
        info = (self.contents.get("expected") or {}).get(digest)
        return str(info.get("bundle") or "?") if isinstance(info, dict) else None

    def open_blob(self, digest: str, size: int | None = None) -> Iterator[bytes]:
        path = self.blob_paths(digest)
        carried = (self.contents.get("expected") or {}).get(digest)
        if carried and isinstance(path, str) and not os.path.exists(path):
            raise AirgapError(f"blob {digest} is not in the delta bundle {self.dir}, nor on the destination: it was carried by "
                              f"bundle {carried.get('bundle')}; import bundle {carried.get('bundle')} first")
        return read_blob_chunks(path, digest, size, f"the bundle {self.dir}")

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
_UNITS = {"": 1, "B": 1, "K": 1000, "M": 1000 ** 2, "G": 1000 ** 3, "T": 1000 ** 4}


def parse_size(value: Any) -> int:
    """Bytes of a size such as 4GiB, 700MB, 4000000000 (KiB, MiB... are powers of 1024; KB, MB... of 1000)."""
    text = str(value)
    match = _SIZE_RE.match(text)
    if isinstance(value, bool) or not match:
        raise ConfigError(f"invalid bundle.volume_size {value!r}: give a size such as 4GiB, 700MiB or a number of bytes")
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
            raise ConfigError(f"invalid bundle.volume_size {size}: too small for a volume with room for the bundle's index; "
                              "give at least 1MiB")
        self._lock = threading.Lock()
        self.used: dict[int, int] = {}
        self.present: dict[str, tuple[int, dict[str, Any]]] = {}
        for entry in sorted(os.listdir(root)):
            match = re.match(r"^vol-(\d{4})$", entry)
            if not match:
                continue
            number, base = int(match.group(1)), os.path.join(root, entry)
            self.used[number] = sum(os.path.getsize(os.path.join(d, f)) for d, _s, files in os.walk(base) for f in files)
            blobs = os.path.join(base, "blobs", "sha256")
            for name_ in os.listdir(blobs) if os.path.isdir(blobs) else []:
                if not name_.startswith("."):
                    self.present[f"sha256:{name_}"] = (os.path.getsize(os.path.join(blobs, name_)), {"volume": number})
        for path, entry in (contents.get("files") or {}).items():
            parts = entry.get("parts") if isinstance(entry, dict) else None
            if parts and all(os.path.isfile(os.path.join(self.directory(p["volume"], create=False), p["path"])) for p in parts):
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
        return self.size - (self.reserve if number == 1 else 0) - self.used.get(number, 0) - 4096  # 4096: its volume.json

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
                    pieces.append((os.path.join(self.directory(number), rel), take, {"volume": number, "path": rel, "size": take}))
                    left -= take
                number += 1
            return pieces


class _PartsFile:
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
            raise ConfigError(f"bundle.dir {self.root} holds a bundle without volumes: write the volumes into a new directory")
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
            raise ConfigError(f"bundle.dir {self.dir} holds an {INDEX_FILE} that is not an OCI index: choose another directory")
        self.index: dict[str, Any] = index or {"schemaVersion": 2, "mediaType": MEDIA_OCI_INDEX, "manifests": []}
        contents = _load_json(os.path.join(self.dir, CONTENTS_FILE), "bundle contents record")
        self.contents: dict[str, Any] = contents if isinstance(contents, dict) and contents.get("schema") == CONTENTS_SCHEMA \
            else {"schema": CONTENTS_SCHEMA, "images": {}, "files": {}}
        self.volumes = _Volumes(self.root, volume_size, os.path.basename(self.root), self.contents) if volume_size else None
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

    def blob_sink(self, digest: str, size: int) -> Any:
        if self.volumes is None:
            return BlobFile(blob_file(self.dir, digest), digest, size, keep=kept_beside(blob_file(self.dir, digest)))
        pieces = self.volumes.allocate(digest, size)
        placement = pieces[0][2] if len(pieces) == 1 else {"parts": [p[2] for p in pieces]}
        sink: Any = BlobFile(pieces[0][0], digest, size) if len(pieces) == 1 else _PartsFile(pieces, digest, size)
        volumes, placed = self.volumes, self._placed

        class _Placed:
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
            raise ConfigError(f"bundle.dir {self.root} is written in volumes: such a bundle is not pruned, write a new one")
        doomed = removable_blobs(self.dir, reference)
        self.index["manifests"] = [e for e in self.index["manifests"] if (e.get("annotations") or {}).get(ANNOTATION_REF_NAME) != reference]
        self.contents["images"].pop(reference, None)
        files = self.contents.setdefault("files", {})
        for digest in doomed:
            files.pop(f"blobs/{digest.replace(':', '/')}", None)
        index_bytes = (json.dumps(self.index, indent=2) + "\n").encode("utf-8")
        files[INDEX_FILE] = {"size": len(index_bytes), "sha256": hashlib.sha256(index_bytes).hexdigest()}
        self.contents["updated"] = written
        atomic_write(os.path.join(self.dir, INDEX_FILE), index_bytes, what="bundle index")
        atomic_write(os.path.join(self.dir, CONTENTS_FILE), (json.dumps(self.contents, indent=2, sort_keys=True) + "\n").encode("utf-8"),
                     what="bundle contents record")
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
        entries = [e for e in self.index["manifests"] if (e.get("annotations") or {}).get(ANNOTATION_REF_NAME) != reference]
        # by name: the same index whatever order the images were written in (they may be written side by side)
        self.index["manifests"] = sorted(entries + [top], key=lambda e: str((e.get("annotations") or {}).get(ANNOTATION_REF_NAME) or ""))
        files = self.contents.setdefault("files", {})
        for digest, size in present.items():
            files[f"blobs/{digest.replace(':', '/')}"] = dict(self._placed.get(digest) or {}, size=size, sha256=digest.split(":", 1)[1])
        if self.volumes is not None:
            self.contents["volumes"] = self.volumes.count()
        index_bytes = (json.dumps(self.index, indent=2) + "\n").encode("utf-8")
        files[INDEX_FILE] = {"size": len(index_bytes), "sha256": hashlib.sha256(index_bytes).hexdigest()}
        files[LAYOUT_FILE] = {"size": len(OCI_LAYOUT), "sha256": hashlib.sha256(OCI_LAYOUT).hexdigest()}
        waiting = self.contents.setdefault("expected", {})
        waiting.update(expected)
        for digest in present:
            waiting.pop(digest, None)
        self.contents["images"][reference] = dict(record, blobs=sorted(blobs), expected={d: i["bundle"] for d, i in expected.items()},
                                                  written=written)
        self.contents.update(source=self.source, updated=written, bundle=name, delta=bool(waiting))
        atomic_write(os.path.join(self.dir, INDEX_FILE), index_bytes, what="bundle index")
        record = (json.dumps(self.contents, indent=2, sort_keys=True) + "\n").encode("utf-8")
        if self.volumes is not None and len(record) + len(index_bytes) > self.volumes.reserve:
            raise AirgapError(f"bundle.volume_size {self.volumes.size} leaves too little room in {FIRST_VOLUME} for the bundle's index "
                              f"({len(record) + len(index_bytes)} bytes): give a larger volume_size")
        atomic_write(os.path.join(self.dir, CONTENTS_FILE), record, what="bundle contents record")
        fsync_dir(self.blob_dir)
