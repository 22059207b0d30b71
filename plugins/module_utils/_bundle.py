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
from typing import Any, Iterator

from ansible_collections.airgap.ngc.plugins.module_utils._errors import AirgapError, ConfigError, DigestMismatchError
from ansible_collections.airgap.ngc.plugins.module_utils._files import (
    atomic_write,
    fsync_dir,
    os_error,
    partial_name,
    register_live,
    remove_quietly,
    unregister_live,
)
from ansible_collections.airgap.ngc.plugins.module_utils._oci import (
    ANNOTATION_REF_NAME,
    MEDIA_OCI_INDEX,
    OCI_LAYOUT,
    Manifest,
    check_bytes,
    is_digest,
    parse_manifest,
)

INDEX_FILE = "index.json"
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


def read_blob_chunks(path: str, digest: str, size: int | None, what: str) -> Iterator[bytes]:
    """A blob file's bytes in chunks, hashed as they go: the last chunk is held back until the digest is checked."""
    try:
        handle = open(path, "rb")  # pylint: disable=consider-using-with
    except FileNotFoundError:
        raise AirgapError(f"blob {digest} is missing from {what}: {path} does not exist") from None
    except OSError as exc:
        raise AirgapError(f"cannot read blob {digest} from {path}: {exc.strerror or exc}") from None
    return _verified(handle, path, digest, size)


def _verified(handle: Any, path: str, digest: str, size: int | None) -> Iterator[bytes]:
    algorithm, expected = digest.split(":", 1)
    hasher = hashlib.new(algorithm)
    total = 0
    held = b""
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


def bundle_entry(directory: str, reference: str) -> dict[str, Any] | None:
    """The index.json entry of ``reference`` in a bundle directory, read without creating anything."""
    index = _load_json(os.path.join(directory, INDEX_FILE), "OCI index")
    for entry in (index or {}).get("manifests") or [] if isinstance(index, dict) else []:
        if isinstance(entry, dict) and (entry.get("annotations") or {}).get(ANNOTATION_REF_NAME) == reference:
            return entry
    return None


class BundleReader:
    """A bundle read as a source: its images by reference, manifests and blobs checked against their digests."""

    def __init__(self, directory: str) -> None:
        self.dir = os.path.abspath(directory)
        if not os.path.isdir(self.dir):
            raise ConfigError(f"source_dir {directory} does not exist: give the directory of a bundle (it holds index.json)")
        index = _load_json(os.path.join(self.dir, INDEX_FILE), "OCI index")
        if not isinstance(index, dict) or not isinstance(index.get("manifests"), list):
            raise ConfigError(f"source_dir {directory} is not a bundle: it has no valid {INDEX_FILE} (an OCI image layout)")
        self.entries: list[dict[str, Any]] = [e for e in index["manifests"] if isinstance(e, dict) and is_digest(e.get("digest"))]
        self.contents = _load_json(os.path.join(self.dir, CONTENTS_FILE), "bundle contents record") or {}

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
        path = blob_file(self.dir, digest)
        try:
            with open(path, "rb") as handle:
                raw = handle.read()
        except FileNotFoundError:
            raise AirgapError(f"manifest {digest} is missing from the bundle {self.dir}: {path} does not exist") from None
        except OSError as exc:
            raise AirgapError(f"cannot read manifest {digest} from {path}: {exc.strerror or exc}") from None
        return parse_manifest(raw, digest, f"manifest {path}", media_type)

    def open_blob(self, digest: str, size: int | None = None) -> Iterator[bytes]:
        path = blob_file(self.dir, digest)
        carried = (self.contents.get("expected") or {}).get(digest)
        if carried and not os.path.exists(path):
            raise AirgapError(f"blob {digest} is not in the delta bundle {self.dir}, nor on the destination: it was carried by "
                              f"bundle {carried.get('bundle')}; import bundle {carried.get('bundle')} first")
        return read_blob_chunks(path, digest, size, f"the bundle {self.dir}")

    def origins(self) -> dict[str, str]:
        """For each blob a delta bundle expects on the far side: an image of the earlier bundle that uses it."""
        return {d: info["image"] for d, info in (self.contents.get("expected") or {}).items() if info.get("image")}


class _BlobFile:
    """A sink writing one blob to ``.<hex>.partial-<pid>``: size checked, synced and renamed on close.

    Its digest is the reader's to check: fan_out closes a sink only after the source's chunks ended without a digest
    error (each reader holds back or fails on its last chunk), and aborts it otherwise, so no second hash here.
    """

    def __init__(self, path: str, digest: str, size: int) -> None:
        self.path, self.digest, self.size = path, digest, size
        self.temp = os.path.join(os.path.dirname(path), partial_name(os.path.basename(path)))
        self._written = 0
        try:
            self._file = open(self.temp, "wb")  # pylint: disable=consider-using-with
        except OSError as exc:
            raise os_error(exc, "writing blob", path) from None
        register_live(self.temp)

    def write(self, data: bytes) -> None:
        try:
            self._file.write(data)
        except OSError as exc:
            self.abort()
            raise os_error(exc, "writing blob", self.path) from None
        self._written += len(data)

    def close(self) -> None:
        if self._written != self.size:
            self.abort()
            raise DigestMismatchError(f"blob {self.digest} for {self.path}: got {self._written} bytes, {self.size} expected")
        try:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            os.replace(self.temp, self.path)
        except OSError as exc:
            self.abort()
            raise os_error(exc, "writing blob", self.path) from None
        unregister_live(self.temp)

    def abort(self) -> None:
        try:
            self._file.close()
        except OSError:
            pass
        remove_quietly(self.temp)


class BundleWriter:
    """Writes images into a bundle directory; ``add_image`` publishes one in index.json and contents.json."""

    def __init__(self, directory: str, source: str) -> None:
        self.dir = os.path.abspath(directory)
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

    def has_blob(self, digest: str, size: int) -> bool:
        """A blob file of the right size is there (it was only renamed into place after its digest was checked)."""
        try:
            return os.stat(blob_file(self.dir, digest)).st_size == size
        except OSError:
            return False

    def blob_sink(self, digest: str, size: int) -> _BlobFile:
        return _BlobFile(blob_file(self.dir, digest), digest, size)

    def put_bytes(self, digest: str, data: bytes) -> None:
        """A manifest or config held in memory, if not there yet."""
        check_bytes(data, digest, f"data for {digest}")
        if not self.has_blob(digest, len(data)):
            atomic_write(blob_file(self.dir, digest), data, what="blob")

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
        self.index["manifests"] = entries + [top]
        files = self.contents.setdefault("files", {})
        for digest, size in present.items():
            files[f"blobs/{digest.replace(':', '/')}"] = {"size": size, "sha256": digest.split(":", 1)[1]}
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
        atomic_write(os.path.join(self.dir, CONTENTS_FILE), (json.dumps(self.contents, indent=2, sort_keys=True) + "\n").encode("utf-8"),
                     what="bundle contents record")
        fsync_dir(self.blob_dir)
