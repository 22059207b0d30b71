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
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from typing import Any, Iterable

from ansible_collections.airgap.ngc.plugins.module_utils._bundle import find_volumes, metadata_dir
from ansible_collections.airgap.ngc.plugins.module_utils._errors import ConfigError
from ansible_collections.airgap.ngc.plugins.module_utils._oci import ANNOTATION_REF_NAME, INDEX_MEDIA_TYPES, blob_descriptors, is_digest

CONTENTS_FILE = "contents.json"
INDEX_FILE = "index.json"
LAYOUT_FILE = "oci-layout"
CONTENTS_SCHEMA = 1
CHUNK = 1024 * 1024
MANIFEST_LIMIT = 4 * 1024 * 1024  # what registries accept for a manifest; a larger "manifest" is not one
RECORD_LIMIT = 256 * 1024 * 1024
PROBLEMS = ("missing", "extra", "corrupt", "size")
RECORD = "the contents record"
NAME = "its name"

_HEX = {"sha256": re.compile(r"^[a-f0-9]{64}$"), "sha512": re.compile(r"^[a-f0-9]{128}$")}
_PARTIAL_RE = re.compile(r"^\..+\.(?:partial-\d+(?:\.[A-Za-z0-9_-]+)?|resume)$")


def is_partial(name: str) -> bool:
    """A temporary file of a writer ('.<name>.partial-<pid>[.<suffix>]', or '.<name>.resume' kept for the next
    run), not part of the bundle."""
    return bool(_PARTIAL_RE.match(name))


def blob_path(digest: str) -> str:
    """The relative path of a blob in a bundle: blobs/<algorithm>/<hex>."""
    algorithm, encoded = digest.split(":", 1)
    return f"blobs/{algorithm}/{encoded}"


def path_digest(path: str) -> str | None:
    """The digest a relative path under blobs/ names, or None for any other path."""
    parts = path.split("/")
    if len(parts) == 3 and parts[0] == "blobs" and parts[1] in _HEX and _HEX[parts[1]].match(parts[2]):
        return f"{parts[1]}:{parts[2]}"
    return None


def _safe_relative(path: Any) -> bool:
    if not isinstance(path, str) or not path or path.startswith("/") or "\\" in path or "\0" in path:
        return False
    return all(part not in ("", ".", "..") for part in path.split("/"))


def _record_problem(record: Any) -> str | None:
    """Why a parsed contents.json cannot be used as the record of the files, or None when it can."""
    if not isinstance(record, dict):
        return "it is not a JSON object"
    if record.get("schema") != CONTENTS_SCHEMA:
        return f"its schema is {record.get('schema')!r}, not {CONTENTS_SCHEMA}"
    files = record.get("files")
    if not isinstance(files, dict):
        return "it has no files"
    for path, entry in files.items():
        if not _safe_relative(path):
            return f"it lists a file {path!r} that is not a path inside the bundle"
        if not isinstance(entry, dict) or isinstance(entry.get("size"), bool) or not isinstance(entry.get("size"), int) \
                or entry["size"] < 0 or not isinstance(entry.get("sha256"), str) or not _HEX["sha256"].match(entry["sha256"]):
            return f"its entry of {path} has no size and sha256"
        digest = path_digest(path)
        if digest and digest.startswith("sha256:") and digest != f"sha256:{entry['sha256']}":
            return f"it gives {path} the sha256 {entry['sha256']}, not the one its name says"
    images = record.get("images", {})
    if not isinstance(images, dict) or not all(isinstance(i, dict) and isinstance(i.get("blobs", []), list) for i in images.values()):
        return "its images are not a map of reference to record"
    expected = record.get("expected", {})
    if not isinstance(expected, dict) or not all(is_digest(d) for d in expected):
        return "its expected blobs are not a map of digest to record"
    return None


class _Verifier:
    """One pass over one bundle: each file is read at most once; problems are kept one per path."""

    def __init__(self, directory: str, sizes_only: bool) -> None:
        self.root = os.path.abspath(directory)
        self.dir = metadata_dir(self.root)
        self.volumes = find_volumes(self.root, None) if not os.path.isfile(os.path.join(self.dir, "index.json")) else {}
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

    # -- the pass ------------------------------------------------------------------------------------------------------
    def run(self) -> list[dict[str, Any]]:
        if not os.path.isdir(self.root):
            raise ConfigError(f"source_dir {self.root} does not exist: give the directory of a bundle")
        record = self._record()
        if record is not None:
            self.placement = {path: entry for path, entry in (record.get("files") or {}).items()
                              if isinstance(entry, dict) and (entry.get("volume") or entry.get("parts"))}
            self.expected = {blob_path(d) for d in record.get("expected") or {}}
            for ref, image in (record.get("images") or {}).items():
                self.refs.append(ref)
                for digest in (image.get("expected") or {}) if isinstance(image.get("expected"), dict) else ():
                    if is_digest(digest):
                        self.expected.add(blob_path(digest))
                for digest in list(image.get("blobs") or []) + [image.get("digest")]:
                    if is_digest(digest):
                        self.users.setdefault(blob_path(digest), set()).add(ref)
        self._walk_index()
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
        path = os.path.join(self.dir, CONTENTS_FILE)
        fallback = "every blob was checked against its name instead"
        try:
            if os.path.getsize(path) > RECORD_LIMIT:
                raise ValueError(f"larger than {RECORD_LIMIT} bytes")
            with open(path, "rb") as handle:
                record = json.loads(handle.read().decode("utf-8"))
        except FileNotFoundError:
            self._problem(CONTENTS_FILE, "missing", f"the bundle has no contents record: {fallback}")
            return None
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            reason = getattr(exc, "strerror", None) or str(exc).splitlines()[0]
            self._problem(CONTENTS_FILE, "corrupt", f"not a JSON contents record ({reason}): {fallback}")
            return None
        why = _record_problem(record)
        if why:
            self._problem(CONTENTS_FILE, "corrupt", f"not a usable contents record ({why}): {fallback}")
            return None
        return record

    def _walk_index(self) -> None:
        """Every image of index.json down to its layers: who needs which blob, and each manifest checked."""
        path = os.path.join(self.dir, INDEX_FILE)
        try:
            with open(path, "rb") as handle:
                index = json.loads(handle.read(RECORD_LIMIT).decode("utf-8"))
        except FileNotFoundError:
            self._problem(INDEX_FILE, "missing", "the bundle has no OCI index: no image can be read from it")
            return
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            self._problem(INDEX_FILE, "corrupt", f"not a JSON OCI index ({getattr(exc, 'strerror', None) or exc}): no image can be read from it")
            return
        entries = index.get("manifests") if isinstance(index, dict) else None
        if not isinstance(entries, list):
            self._problem(INDEX_FILE, "corrupt", "not an OCI index (it has no manifests list): no image can be read from it")
            return
        for entry in entries:
            if not isinstance(entry, dict):
                continue
            ref = (entry.get("annotations") or {}).get(ANNOTATION_REF_NAME) if isinstance(entry.get("annotations"), dict) else None
            ref = ref if isinstance(ref, str) and ref else f"{INDEX_FILE} entry {entry.get('digest')}"
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
                self._problem(path, "corrupt", f"it names a blob without a valid digest ({str(blob.get('digest'))[:80]!r})", ref)
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
        full = self._files(path)[0]
        try:
            if os.path.getsize(full) > MANIFEST_LIMIT:
                self._problem(path, "corrupt", f"larger than {MANIFEST_LIMIT} bytes, so not the manifest {digest}")
                return None
            with open(full, "rb") as handle:
                raw = handle.read()
        except FileNotFoundError:
            if path not in self.expected:
                self._problem(path, "missing", f"manifest {digest} is not there")
            return None
        except OSError as exc:
            self._problem(path, "corrupt", f"manifest {digest} cannot be read ({exc.strerror or exc})")
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

    def _check_file(self, path: str, size: int | None, hex_digest: str, against: str, algorithm: str = "sha256") -> None:
        """One file against a size and a hash (the hash skipped with sizes_only, except for manifests and configs)."""
        if path in self.checked:
            return
        self.checked.add(path)
        files = self._files(path)
        if len(files) > 1 or files[0] != os.path.join(self.dir, path):
            self._check_placed(path, files, size, hex_digest, against, algorithm)
            return
        full = files[0]
        try:
            info = os.stat(full)
        except FileNotFoundError:
            if path not in self.expected:
                listed = f"the contents record lists it ({size} bytes)" if against == RECORD else "a manifest of the images names it"
                self._problem(path, "missing", f"not there; {listed}")
            return
        except OSError as exc:
            self._problem(path, "corrupt", f"cannot be read ({exc.strerror or exc})")
            return
        if not os.path.isfile(full):
            self._problem(path, "corrupt", "not a regular file")
            return
        if size is not None and info.st_size != size:
            self._problem(path, "size", f"{info.st_size} bytes, {against} says {size}")
            return
        if self.sizes_only and path not in self.small:
            return
        actual = _hash_file(full, algorithm)
        if actual is None:
            self._problem(path, "corrupt", "cannot be read to the end")
        elif actual != hex_digest:
            self._problem(path, "corrupt", f"hashes to {algorithm}:{actual}, {against} says {algorithm}:{hex_digest}")

    def _files(self, path: str) -> list[str]:
        """The file(s) holding a logical path: itself, or for a bundle in volumes its volume's copy or its parts."""
        entry = self.placement.get(path)
        if not entry:
            return [os.path.join(self.dir, path)]
        pieces = entry.get("parts") or [{"volume": entry["volume"], "path": path}]
        return [os.path.join(self.volumes.get(p["volume"], os.path.join(self.root, f"vol-{p['volume']:04d}")), p["path"]) for p in pieces]

    def _check_placed(self, path: str, files: list[str], size: int | None, hex_digest: str, against: str, algorithm: str) -> None:
        """A blob kept in another volume or in parts: every piece there, their sizes adding up, their bytes hashing right."""
        absent = [f for f in files if not os.path.isfile(f)]
        if absent:
            if path not in self.expected:
                self._problem(path, "missing", f"{absent[0]} is not there (is its volume mounted?)")
            return
        total = sum(os.path.getsize(f) for f in files)
        if size is not None and total != size:
            self._problem(path, "size", f"{total} bytes in {len(files)} piece(s), {against} says {size}")
            return
        if self.sizes_only and path not in self.small:
            return
        hasher = hashlib.new(algorithm)
        for one in files:
            with open(one, "rb") as handle:
                for data in iter(lambda h=handle: h.read(CHUNK), b""):
                    hasher.update(data)
        if hasher.hexdigest() != hex_digest:
            self._problem(path, "corrupt", f"its pieces hash to {algorithm}:{hasher.hexdigest()}, {against} says {algorithm}:{hex_digest}")

    def _extras(self, record: dict[str, Any] | None) -> None:
        """Files under blobs/ that nothing accounts for; blob files nobody listed are also checked against their name."""
        listed = set((record or {}).get("files") or {})
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
    def _problem(self, path: str, problem: str, detail: str, ref: str | None = None) -> None:
        found = self.problems.setdefault(path, {"path": path, "problem": problem, "detail": detail, "refs": set()})
        if ref:
            found["refs"].add(ref)

    def _result(self) -> list[dict[str, Any]]:
        result = []
        for path in sorted(self.problems, key=lambda p: (p != CONTENTS_FILE, p)):
            problem = self.problems[path]
            refs = set(problem["refs"]) | self.users.get(path, set())
            if path == INDEX_FILE:  # every image is named there
                refs |= set(self.refs)
            if path in (CONTENTS_FILE, LAYOUT_FILE):
                refs = set()
            result.append({"path": path, "problem": problem["problem"], "detail": problem["detail"],
                           "images": [ref for ref in self.refs if ref in refs] + sorted(refs - set(self.refs))})
        return result


def _hash_file(path: str, algorithm: str) -> str | None:
    """The hex digest of a file read in CHUNK pieces, or None if it cannot be read."""
    hasher = hashlib.new(algorithm)
    try:
        with open(path, "rb") as handle:
            while True:
                data = handle.read(CHUNK)
                if not data:
                    break
                hasher.update(data)
    except OSError:
        return None
    return hasher.hexdigest()


def verify_bundle(directory: str, sizes_only: bool = False) -> list[dict[str, Any]]:
    """The problems of the bundle in ``directory``, by path (contents.json first); an empty list for a sound bundle.

    Each is ``{"path", "problem" (missing|extra|corrupt|size), "detail" (one line), "images" (references)}``.
    """
    return _Verifier(directory, sizes_only).run()


def affected_images(problems: Iterable[dict[str, Any]]) -> set[str]:
    """Every image reference some problem names."""
    return {ref for problem in problems for ref in problem.get("images") or []}
