# Copyright (c) airgap.ngc contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private: a carried bundle checked against its contents record, before anything is imported from it. Not a public API.

``verify_bundle(directory)`` reads every file the bundle's ``contents.json`` lists (its size and sha256, or only its
size with ``sizes_only``) and returns the problems by path: ``missing``, ``extra`` (a file under ``blobs/`` that
the record does not list and no image needs), ``corrupt`` (the bytes do not hash to the record, or a manifest cannot
be read), ``size``. Each problem names the images that need the file. It also walks every image of ``index.json``
(manifests, then configs and layers), so that the images a file belongs to are known and a blob the record forgot is
still found missing. Manifests and image configs are always hashed, even with ``sizes_only``: they are small, and
whoever lists the bundle reads them. Blobs a delta bundle expects from an earlier bundle (``expected``) are no
problem when they are absent. Without a readable record (a problem itself, on ``contents.json``) every blob file is
checked against its name and every image's tree must be present. Files are read in 1 MiB chunks; nothing is written.

The bundle is read as the import reads it (``_bundle.read_contents``, ``read_index``, ``_carried.open_inside``): a
file that is a link, a FIFO or a device is ``corrupt``; a wrong entry of ``contents.json`` or ``index.json`` (one
that does not follow its schema, a name given twice, an entry that differs from the record) names the images the
import refuses for it; a record that cannot be used at all names every image. One verdict for both.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from typing import Any, Iterable

from ansible_collections.airgap.ngc.plugins.module_utils._formats.bundle import (
    Contents,
    Index,
    find_volumes,
    metadata_dir,
    path_digest,
    read_contents,
    read_index,
    ref_of,
    refuse_unfinished,
)
from ansible_collections.airgap.ngc.plugins.module_utils._formats.carried import (
    CarriedError,
    CarriedMissing,
    open_inside,
)
from ansible_collections.airgap.ngc.plugins.module_utils._types.errors import ConfigError
from ansible_collections.airgap.ngc.plugins.module_utils._types.oci import (
    CHUNK_SIZE,
    INDEX_MEDIA_TYPES,
    MAX_MANIFEST_BYTES,
    blob_descriptors,
    blob_path,
)
from ansible_collections.airgap.ngc.plugins.module_utils._types.reference import is_digest

CONTENTS_FILE = "contents.json"
INDEX_FILE = "index.json"
LAYOUT_FILE = "oci-layout"
MANIFEST_LIMIT = MAX_MANIFEST_BYTES  # what registries accept for a manifest; a larger "manifest" is not one
PROBLEMS = ("missing", "extra", "corrupt", "size")
RECORD = "the contents record"
NAME = "its name"

_PARTIAL_RE = re.compile(r"^\..+\.(?:partial-\d+(?:\.[A-Za-z0-9_-]+)?|resume)$")


def is_partial(name: str) -> bool:
    """A temporary file of a writer ('.<name>.partial-<pid>[.<suffix>]', or '.<name>.resume' kept for the next
    run), not part of the bundle."""
    return bool(_PARTIAL_RE.match(name))


class _Verifier:
    """One pass over one bundle: each file is read at most once; problems are kept one per path (and one per name
    index.json or contents.json cannot vouch for)."""

    def __init__(self, directory: str, sizes_only: bool) -> None:
        self.root = os.path.abspath(directory)
        self.dir = metadata_dir(self.root)
        self.volumes = (
            find_volumes(self.root, None) if not os.path.lexists(os.path.join(self.dir, "index.json")) else {}
        )
        if self.volumes.get(1):
            self.dir = self.volumes[1]
        self.placement: dict[str, Any] = {}  # logical path -> the record's volume or parts, for a bundle in volumes
        self.sizes_only = sizes_only
        self.problems: dict[str, dict[str, Any]] = {}
        self.users: dict[str, set[str]] = {}  # path -> the images that need it
        self.refs: list[str] = []
        self.needed: dict[str, int | None] = {}  # path under blobs/ -> the size a descriptor gives
        self.small: set[str] = set()  # manifests and configs: hashed even with sizes_only
        self.checked: set[str] = set()
        self.parsed: dict[str, dict[str, Any]] = {}  # manifests read and checked, by path
        self.expected: set[str] = set()
        self.contents = Contents()
        self.index: Index | None = None

    # -- the pass ------------------------------------------------------------------------------------------------------
    def run(self) -> list[dict[str, Any]]:
        if not os.path.isdir(self.root):
            raise ConfigError(f"source_dir {self.root} does not exist: give the directory of a bundle")
        refuse_unfinished(self.root, self.dir)
        record = self._record()
        if record is not None:
            self.placement = {
                path: entry
                for path, entry in (record.get("files") or {}).items()
                if entry.get("volume") or entry.get("parts")
            }
            self.expected = {blob_path(d) for d in record.get("expected") or {}}
            for ref, image in (record.get("images") or {}).items():
                self.refs.append(ref)
                for digest in image.get("expected") or {}:
                    self.expected.add(blob_path(digest))
                for digest in list(image.get("blobs") or []) + [image.get("digest")]:
                    self.users.setdefault(blob_path(digest), set()).add(ref)
        self._walk_index()
        for ref in self.contents.rejected:
            self._problem(CONTENTS_FILE, "corrupt", "", ref)
        if record is not None:
            for path, entry in sorted(record["files"].items()):
                self._check_file(path, entry["size"], entry["sha256"], RECORD)
        for path, size in sorted(self.needed.items()):  # what an image needs and the record forgot (or there is none)
            if path not in self.checked and path not in self.expected:
                digest = path_digest(path) or ""
                algorithm, encoded = digest.split(":", 1) if digest else ("sha256", "")
                self._check_file(path, size, encoded, NAME, algorithm)
        self._extras(record)
        return self._result()

    def _record(self) -> dict[str, Any] | None:
        """The sound part of contents.json (None without a usable one: a problem, and blobs are checked by name)."""
        self.contents = read_contents(self.dir)
        fallback = "every blob was checked against its name instead"
        if self.contents.missing:
            self._problem(CONTENTS_FILE, "missing", f"the bundle has no contents record: {fallback}")
            return None
        if self.contents.problem:
            self._problem(
                CONTENTS_FILE,
                "corrupt",
                f"not a usable contents record ({self.contents.problem}): {fallback}; "
                "no image is imported from the bundle while it is so",
            )
            return None
        wrong = {**self.contents.bad_files, **self.contents.bad_images}
        if wrong:
            more = f" (and {len(wrong) - 1} more entries)" if len(wrong) > 1 else ""
            self._problem(
                CONTENTS_FILE, "corrupt", f"{next(iter(wrong.values()))}{more}: the images it concerns are not imported"
            )
        return self.contents.record

    def _walk_index(self) -> None:
        """Every image of index.json down to its layers: who needs which blob, and each manifest checked."""
        try:
            self.index = read_index(self.dir, self.contents)
        except CarriedMissing:
            self._problem(INDEX_FILE, "missing", "the bundle has no OCI index: no image can be read from it")
            return
        except CarriedError as exc:
            self._problem(INDEX_FILE, "corrupt", f"{exc}: no image can be read from it")
            return
        for name, why in self.index.rejected.items():
            if name not in self.contents.rejected and why != self.contents.problem:
                self._problem(INDEX_FILE, "corrupt", why, name, key=f"{INDEX_FILE}#{name}")
            if name not in self.refs:
                self.refs.append(name)
        for number, why in enumerate(self.index.unnamed):
            self._problem(
                INDEX_FILE,
                "corrupt",
                f"{why}: the entry names no image, none is imported from it",
                key=f"{INDEX_FILE}#{number}",
            )
        for entry in self.index.entries:
            ref = ref_of(entry) or f"{INDEX_FILE} entry {entry.get('digest')}"
            if ref not in self.refs:
                self.refs.append(ref)
            self.users.setdefault(INDEX_FILE, set()).add(ref)
            self._walk(entry, ref, INDEX_FILE, 0)

    def _walk(self, desc: dict[str, Any], ref: str, parent: str, depth: int) -> None:
        digest = desc.get("digest")
        if not is_digest(digest):
            self._problem(parent, "corrupt", f"it names a manifest without a valid digest ({str(digest)[:80]!r})", ref)
            return
        path = blob_path(digest)
        self.users.setdefault(path, set()).add(ref)
        self._need(path, desc.get("size"))
        self.small.add(path)
        data = self._manifest(path, digest, desc.get("size"))
        if data is None or depth > 2:
            return
        if desc.get("mediaType") in INDEX_MEDIA_TYPES or (not desc.get("mediaType") and "manifests" in data):
            for child in data.get("manifests") or [] if isinstance(data.get("manifests"), list) else []:
                if isinstance(child, dict):
                    self._walk(child, ref, path, depth + 1)
            return
        config = data.get("config")
        if isinstance(config, dict) and is_digest(config.get("digest")):
            self.small.add(blob_path(config["digest"]))
        for blob in blob_descriptors(data):
            if not is_digest(blob.get("digest")):
                self._problem(
                    path, "corrupt", f"it names a blob without a valid digest ({str(blob.get('digest'))[:80]!r})", ref
                )
                continue
            blob_at = blob_path(blob["digest"])
            self.users.setdefault(blob_at, set()).add(ref)
            self._need(blob_at, blob.get("size"))

    def _need(self, path: str, size: Any) -> None:
        self.needed.setdefault(path, size if isinstance(size, int) and not isinstance(size, bool) else None)

    def _manifest(self, path: str, digest: str, size: Any) -> dict[str, Any] | None:
        """A manifest's JSON once its bytes are checked; None (and a problem, unless expected) when they cannot be."""
        if path in self.checked:
            return self.parsed.get(path)
        self.checked.add(path)
        try:
            raw = self._read_all(path, MANIFEST_LIMIT)
        except CarriedMissing:
            if path not in self.expected:
                self._problem(path, "missing", f"manifest {digest} is not there")
            return None
        except (CarriedError, OSError) as exc:
            self._problem(path, "corrupt", f"manifest {digest} cannot be read: {getattr(exc, 'strerror', None) or exc}")
            return None
        if raw is None:
            self._problem(path, "corrupt", f"larger than {MANIFEST_LIMIT} bytes, so not the manifest {digest}")
            return None
        algorithm, encoded = digest.split(":", 1)
        actual = hashlib.new(algorithm, raw).hexdigest()
        if isinstance(size, int) and len(raw) != size:
            self._problem(path, "size", f"{len(raw)} bytes, {size} expected for manifest {digest}")
            return None
        if actual != encoded:
            self._problem(path, "corrupt", f"hashes to {algorithm}:{actual}, not its name: the manifest is damaged")
            return None
        try:
            data = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            data = None
        if not isinstance(data, dict):
            self._problem(path, "corrupt", f"manifest {digest} is not a JSON manifest")
            return None
        self.parsed[path] = data
        return data

    def _read_all(self, path: str, limit: int) -> bytes | None:
        """The bytes of a logical path (its pieces in order), or None if they are more than ``limit``."""
        handles = self._open(path)
        try:
            if sum(os.fstat(h.fileno()).st_size for h in handles) > limit:
                return None
            return b"".join(h.read(limit + 1) for h in handles)
        finally:
            for handle in handles:
                handle.close()

    def _open(self, path: str) -> list[Any]:
        """The file(s) of a logical path opened as carried files (see ``_carried.open_inside``), all or none."""
        handles: list[Any] = []
        try:
            for root, relative in self._files(path):
                handles.append(os.fdopen(open_inside(root, relative), "rb"))
        except BaseException:
            for handle in handles:
                handle.close()
            raise
        return handles

    def _check_file(
        self, path: str, size: int | None, hex_digest: str, against: str, algorithm: str = "sha256"
    ) -> None:
        """One file (or its pieces) against a size and a hash (the hash skipped with sizes_only, except for manifests and
        configs)."""
        if path in self.checked:
            return
        self.checked.add(path)
        pieces = self._files(path)
        try:
            handles = self._open(path)
        except CarriedMissing as exc:
            if path not in self.expected:
                listed = (
                    f"the contents record lists it ({size} bytes)"
                    if against == RECORD
                    else "a manifest of the images names it"
                )
                where = (
                    f"{exc} (is its volume mounted?)"
                    if len(pieces) > 1 or pieces[0] != (self.dir, path)
                    else "not there"
                )
                self._problem(path, "missing", f"{where}; {listed}")
            return
        except CarriedError as exc:
            self._problem(path, "corrupt", str(exc))
            return
        try:
            total = sum(os.fstat(h.fileno()).st_size for h in handles)
            if size is not None and total != size:
                self._problem(
                    path,
                    "size",
                    f"{total} bytes{f' in {len(handles)} piece(s)' if len(handles) > 1 else ''}, {against} says {size}",
                )
                return
            if self.sizes_only and path not in self.small:
                return
            hasher = hashlib.new(algorithm)
            try:
                for handle in handles:
                    for data in iter(lambda h=handle: h.read(CHUNK_SIZE), b""):
                        hasher.update(data)
            except OSError:
                self._problem(path, "corrupt", "cannot be read to the end")
                return
            if hasher.hexdigest() != hex_digest:
                self._problem(
                    path,
                    "corrupt",
                    f"hashes to {algorithm}:{hasher.hexdigest()}, {against} says {algorithm}:{hex_digest}",
                )
        finally:
            for handle in handles:
                handle.close()

    def _files(self, path: str) -> list[tuple[str, str]]:
        """Where a logical path is, as (medium directory, path inside it): the bundle itself, or for a bundle in volumes
        its volume's copy or its parts."""
        entry = self.placement.get(path)
        if not entry:
            return [(self.dir, path)]
        pieces = entry.get("parts") or [{"volume": entry["volume"], "path": path}]
        return [
            (self.volumes.get(p["volume"], os.path.join(self.root, f"vol-{p['volume']:04d}")), p["path"])
            for p in pieces
        ]

    def _extras(self, record: dict[str, Any] | None) -> None:
        """Files under blobs/ that nothing accounts for; blob files nobody listed are also checked against their name."""
        listed = set((record or {}).get("files") or {}) | set(self.contents.bad_files)
        for path in self._blob_files():
            if path in listed or path in self.needed or path in self.checked:
                continue
            digest = path_digest(path)
            if path in self.expected and digest:
                algorithm, encoded = digest.split(":", 1)
                self._check_file(path, None, encoded, NAME, algorithm)
                continue
            why = "not in the contents record" if record is not None else "no image of index.json needs it"
            self._problem(path, "extra", why if digest else f"{why}, and its name is not a digest")

    def _blob_files(self) -> Iterable[str]:
        top = os.path.join(self.dir, "blobs")
        for current, subdirs, files in os.walk(top):
            subdirs.sort()
            for name in sorted(files):
                if not is_partial(name):
                    yield os.path.relpath(os.path.join(current, name), self.dir).replace(os.sep, "/")

    # -- results -------------------------------------------------------------------------------------------------------
    def _problem(self, path: str, problem: str, detail: str, ref: str | None = None, key: str | None = None) -> None:
        found = self.problems.setdefault(
            key or path, {"path": path, "problem": problem, "detail": detail, "refs": set()}
        )
        if ref:
            found["refs"].add(ref)

    def _result(self) -> list[dict[str, Any]]:
        """The problems, contents.json first. A damaged index.json or contents.json names every image when nothing can
        be read from it, else the images whose entries it cannot vouch for (those the import refuses)."""
        result = []
        index_rejected = {
            n
            for n, why in (self.index.rejected if self.index else {}).items()
            if n not in self.contents.rejected and why != self.contents.problem
        }
        for key in sorted(self.problems, key=lambda k: (k != CONTENTS_FILE, k)):
            problem = self.problems[key]
            path = problem["path"]
            if path == INDEX_FILE:
                whole = key == INDEX_FILE
                refs = (
                    set(self.refs)
                    if whole and self.index is None
                    else set(problem["refs"]) | (index_rejected if whole else set())
                )
            elif path in (CONTENTS_FILE, LAYOUT_FILE):
                refs = set(self.refs) if key == CONTENTS_FILE and self.contents.problem else set(problem["refs"])
            else:
                refs = set(problem["refs"]) | self.users.get(path, set())
            result.append(
                {
                    "path": path,
                    "problem": problem["problem"],
                    "detail": problem["detail"],
                    "images": [ref for ref in self.refs if ref in refs] + sorted(refs - set(self.refs)),
                }
            )
        return result


def verify_bundle(directory: str, sizes_only: bool = False) -> list[dict[str, Any]]:
    """The problems of the bundle in ``directory``, by path (contents.json first); an empty list for a sound bundle.

    Each is ``{"path", "problem" (missing|extra|corrupt|size), "detail" (one line), "images" (references)}``.
    """
    return _Verifier(directory, sizes_only).run()


def affected_images(problems: Iterable[dict[str, Any]]) -> set[str]:
    """Every image reference some problem names."""
    return {ref for problem in problems for ref in problem.get("images") or []}
