# Copyright (c) airgap.ngc contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The benchmark behind ``make bench``: ngc_image_mirror against skopeo, the Docker engine and a raw stream.

Runs against a test bed that is already up (``scripts/bench.sh`` starts and stops it) and, in
one run and side by side, copies the same tags (every seeded tag) with each client:

- registry to registry: the module, ``skopeo copy --all``, the Docker engine (pull, tag, push),
  and the raw stream (each unique blob GET from the source piped into a monolithic upload on
  the open registry: the limit of this machine);
- registry to docker archive: the module, ``skopeo copy docker-archive:``, the Docker engine
  (pull, save), and a plain download of the unique blobs to files;
- registry to bundle (one OCI layout, the air-gap carry): the module (``bundle: {dir}``), NVIDIA's
  air-gap guide (``skopeo copy --all --preserve-digests`` to a ``dir:`` per tag), and a plain
  download of every platform's unique blobs to files;
- bundle to registry (the far side; no source registry): the module (``source: bundle``),
  ``skopeo copy --all --preserve-digests`` from those ``dir:`` copies, and a raw PUT of the
  downloaded files (a monolithic upload per unique blob);
- bytes on disk of a bundle, of per-tag docker archives and of per-tag ``dir:`` copies;
- a no-op re-run of the module (both destinations), which must report ``changed: false``.

Every case checks its result, so a fast wrong answer cannot win: a registry holds every tag with
the source's digest, a bundle or ``dir:`` copy has every tag and every blob, each file hashing to
its name (the hashing is done after the clock stops).

Each case writes into a fresh namespace (prefix) or directory, starts after ``sync`` and its
time includes a final ``sync``, so every client pays for getting its data to disk. MB/s is the
unique bytes a case has to move divided by its seconds; the ratio is per byte, a case's seconds
per byte over its baseline's (1.00 = as fast as the baseline). The baselines and the module
run ``--rounds`` times, interleaved, and the best round counts (the machine is shared and noisy).
The module runs as its own process under ``/usr/bin/time -v``, which gives its peak memory, CPU
time and disk writes. Only requests and the standard library are used; nothing from plugins/.
"""
from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator
from urllib.parse import urljoin

import requests

CHUNK = 1024 * 1024
MB = 1000 * 1000
USERNAME = "$oauthtoken"
MODULE = "ansible_collections.airgap.ngc.plugins.modules.ngc_image_mirror"
TIME = "/usr/bin/time"
SKOPEO_SYSTEM_CACHE = "/var/lib/containers/cache"
ARCHIVE_PLATFORM = "linux/amd64"
INDEX_TYPES = frozenset(("application/vnd.oci.image.index.v1+json", "application/vnd.docker.distribution.manifest.list.v2+json"))
ACCEPT = ", ".join((
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
))
AIMS = {"registry": 1.1, "archive": 1.5, "bundle": 1.15, "import": 1.1}
MAX_RSS_MIB = 150.0
MAX_DISK_OVERHEAD = 0.01  # a bundle: the unique blob bytes + under 1%
FLOOR = "plain download + copies, each archive's blobs"
BUNDLE = "module registry -> bundle"
BASELINE_NAMES = {"registry": "raw stream", "archive": "plain download", "bundle": "plain download (all platforms)",
                  "import": "raw PUT from files"}
REF_NAME = "org.opencontainers.image.ref.name"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
_TIME_FIELDS = {
    "rss_kib": re.compile(r"Maximum resident set size \(kbytes\): (\d+)"),
    "user": re.compile(r"User time \(seconds\): ([\d.]+)"),
    "system": re.compile(r"System time \(seconds\): ([\d.]+)"),
    "blocks_out": re.compile(r"File system outputs: (\d+)"),
}


class BenchError(Exception):
    """A case could not run or gave a wrong result."""


# -- what is copied -----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Blob:
    digest: str
    size: int
    repository: str  # a source repository that holds it


@dataclass
class Inventory:
    """The tags, their digests, and the unique blobs a registry copy (all platforms) and a docker archive (one platform) need."""

    tags: list[str] = field(default_factory=list)
    digests: dict[str, str] = field(default_factory=dict)
    registry_blobs: dict[str, Blob] = field(default_factory=dict)
    archive_blobs: dict[str, Blob] = field(default_factory=dict)
    per_archive: dict[str, list[Blob]] = field(default_factory=dict)
    per_image: dict[str, list[Blob]] = field(default_factory=dict)  # every platform's config and layers, once per tag
    children: dict[str, list[str]] = field(default_factory=dict)  # the manifests an index names

    @property
    def manifest_digests(self) -> set[str]:
        """Every tag's manifest or index and the manifests of the indexes: what a layout holds beside the blobs."""
        return set(self.digests.values()) | {digest for children in self.children.values() for digest in children}

    @staticmethod
    def total(blobs: Iterable[Blob]) -> int:
        return sum(blob.size for blob in blobs)

    @property
    def archive_file_bytes(self) -> int:
        """What all archives hold together: each archive has its own copy of the layers it shares with others."""
        return sum(self.total(blobs) for blobs in self.per_archive.values())

    @property
    def per_image_bytes(self) -> int:
        """What per-tag copies of every platform (skopeo ``dir:``) hold together."""
        return sum(self.total(blobs) for blobs in self.per_image.values())


def split_reference(reference: str) -> tuple[str, str]:
    """``nvidia/pytorch:24.01-py3`` -> (``nvidia/pytorch``, ``24.01-py3``)."""
    repository, tag = reference.rsplit(":", 1)
    return repository, tag


def _platform(entry: dict[str, Any]) -> str:
    platform = entry.get("platform") or {}
    text = f"{platform.get('os')}/{platform.get('architecture')}"
    return f"{text}/{platform['variant']}" if platform.get("variant") else text


def _blobs_of(manifest: dict[str, Any], repository: str) -> list[Blob]:
    descriptors = [manifest["config"]] + list(manifest.get("layers") or [])
    unique = {d["digest"]: Blob(d["digest"], int(d["size"]), repository) for d in descriptors}
    return list(unique.values())


# -- the source registry (token auth, like nvcr.io) -------------------------------------------------------------------
class Source:
    """Reads manifests and blobs from the token registry with Bearer tokens from its realm; one session per thread."""

    def __init__(self, info: dict[str, Any]) -> None:
        self.url = info["source_registry_url"].rstrip("/")
        self.host = info["source_registry_host"]
        self._realm = info["token_realm"]
        self._service = info["registry_service"]
        self._key = info["api_key"]
        self._tokens: dict[str, tuple[str, float]] = {}
        self._lock = threading.Lock()
        self._local = threading.local()

    def session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
            session.trust_env = False
        return session

    def token(self, repository: str) -> str:
        with self._lock:
            cached = self._tokens.get(repository)
            if cached and cached[1] > time.monotonic():
                return cached[0]
            response = requests.get(self._realm, params={"service": self._service, "scope": f"repository:{repository}:pull"},
                                    auth=(USERNAME, self._key), timeout=30)
            if response.status_code != 200:
                raise BenchError(f"the token realm answered {response.status_code} for {repository}")
            data = response.json()
            token = data.get("token") or data["access_token"]
            self._tokens[repository] = (token, time.monotonic() + max(float(data.get("expires_in") or 60) / 2, 10.0))
            return token

    def get(self, repository: str, path: str, **kwargs: Any) -> requests.Response:
        headers = dict(kwargs.pop("headers", {}))
        headers["Authorization"] = f"Bearer {self.token(repository)}"
        response = self.session().get(f"{self.url}/v2/{repository}/{path}", headers=headers, timeout=120, **kwargs)
        if response.status_code != 200:
            response.close()
            raise BenchError(f"GET {repository}/{path} on the source answered {response.status_code}")
        return response

    def manifest(self, repository: str, reference: str) -> tuple[str, str, dict[str, Any]]:
        """(media type, digest, parsed body) of a manifest or index."""
        response = self.get(repository, f"manifests/{reference}", headers={"Accept": ACCEPT})
        data = response.json()
        media_type = response.headers.get("Content-Type", "").split(";")[0].strip() or data.get("mediaType", "")
        return media_type, response.headers.get("Docker-Content-Digest", ""), data

    def blob(self, blob: Blob) -> requests.Response:
        return self.get(blob.repository, f"blobs/{blob.digest}", stream=True)

    def inventory(self, tags: list[str]) -> Inventory:
        inv = Inventory(tags=tags)
        for reference in tags:
            repository, tag = split_reference(reference)
            media_type, digest, top = self.manifest(repository, tag)
            inv.digests[reference] = digest
            archive: list[Blob] = []
            image: dict[str, Blob] = {}
            if media_type in INDEX_TYPES:
                inv.children[reference] = [entry["digest"] for entry in top.get("manifests") or []]
                for entry in top.get("manifests") or []:
                    blobs = _blobs_of(self.manifest(repository, entry["digest"])[2], repository)
                    for blob in blobs:
                        inv.registry_blobs.setdefault(blob.digest, blob)
                        image.setdefault(blob.digest, blob)
                    if _platform(entry) == ARCHIVE_PLATFORM and not archive:
                        archive = blobs
            else:
                archive = _blobs_of(top, repository)
                for blob in archive:
                    inv.registry_blobs.setdefault(blob.digest, blob)
                    image.setdefault(blob.digest, blob)
            inv.per_image[reference] = list(image.values())
            if not archive:
                raise BenchError(f"{reference} has no {ARCHIVE_PLATFORM} image for a docker archive")
            for blob in archive:
                inv.archive_blobs.setdefault(blob.digest, blob)
            inv.per_archive[reference] = archive
        return inv


# -- the baselines: a few lines of requests -------------------------------------------------------------------------------
class _Body:
    """A request body of known length that streams chunks (requests then sends Content-Length, not chunked)."""

    def __init__(self, chunks: Iterator[bytes], size: int) -> None:
        self._chunks = chunks
        self._size = size

    def __len__(self) -> int:
        return self._size

    def __iter__(self) -> Iterator[bytes]:
        return self._chunks


def _in_parallel(work: Callable[[Blob], None], blobs: Iterable[Blob], parallel: int) -> None:
    ordered = sorted(blobs, key=lambda b: b.size, reverse=True)  # the big ones first: the best a pool can do
    with ThreadPoolExecutor(max_workers=max(parallel, 1)) as pool:
        for future in [pool.submit(work, blob) for blob in ordered]:
            future.result()


def blob_file(directory: Path, blob: Blob) -> Path:
    """Where download() puts a blob."""
    return directory / blob.digest.replace(":", "-")


class _Uploader:
    """Monolithic uploads (POST, then one PUT with ``?digest=``) to an open registry; one session per thread."""

    def __init__(self, dest_url: str, prefix: str) -> None:
        self.dest_url = dest_url
        self.prefix = prefix
        self._local = threading.local()

    def upload(self, blob: Blob, chunks: Iterator[bytes]) -> None:
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
            session.trust_env = False
        start = session.post(f"{self.dest_url}/v2/{self.prefix}/{blob.repository}/blobs/uploads/", timeout=60)
        if start.status_code != 202:
            raise BenchError(f"starting an upload of {blob.digest} answered {start.status_code}")
        location = urljoin(self.dest_url + "/", start.headers["Location"])
        location += ("&" if "?" in location else "?") + f"digest={blob.digest}"
        put = session.put(location, data=_Body(chunks, blob.size), headers={"Content-Type": "application/octet-stream"},
                          timeout=600)
        if put.status_code != 201:
            raise BenchError(f"uploading {blob.digest} answered {put.status_code}: {put.text[:200]}")


def raw_stream(source: Source, blobs: Iterable[Blob], dest_url: str, prefix: str, parallel: int) -> None:
    """GET each blob from the source and pipe it into a monolithic upload (POST, then one PUT) on the destination."""
    uploader = _Uploader(dest_url, prefix)

    def one(blob: Blob) -> None:
        with source.blob(blob) as response:
            uploader.upload(blob, response.iter_content(CHUNK))

    _in_parallel(one, blobs, parallel)


def raw_put(directory: Path, blobs: Iterable[Blob], dest_url: str, prefix: str, parallel: int) -> None:
    """Read each blob from its file (as download() wrote it) into a monolithic upload (POST, then one PUT)."""
    uploader = _Uploader(dest_url, prefix)

    def one(blob: Blob) -> None:
        with open(blob_file(directory, blob), "rb") as handle:
            uploader.upload(blob, iter(lambda: handle.read(CHUNK), b""))

    _in_parallel(one, blobs, parallel)


def download(source: Source, blobs: Iterable[Blob], directory: Path, parallel: int) -> None:
    """GET each blob and write it to a file in directory."""
    directory.mkdir(parents=True, exist_ok=True)

    def one(blob: Blob) -> None:
        with source.blob(blob) as response, open(blob_file(directory, blob), "wb") as handle:
            for chunk in response.iter_content(CHUNK):
                handle.write(chunk)

    _in_parallel(one, blobs, parallel)


def read_only(source: Source, blobs: Iterable[Blob], parallel: int) -> None:
    """GET each blob and drop it: the source side alone (and it warms the source's page cache)."""

    def one(blob: Blob) -> None:
        with source.blob(blob) as response:
            deque(response.iter_content(CHUNK), maxlen=0)

    _in_parallel(one, blobs, parallel)


# -- judging what a case wrote to disk -------------------------------------------------------------------------------
def sha256_file(path: Path) -> str:
    with open(path, "rb") as handle:
        return "sha256:" + hashlib.file_digest(handle, "sha256").hexdigest()


def misnamed(files: dict[Path, str], parallel: int) -> list[str]:
    """The files (of {path: the digest it must have}) that are missing or hash to something else; hashed in parallel."""

    def wrong(item: tuple[Path, str]) -> str | None:
        path, digest = item
        try:
            return None if sha256_file(path) == digest else f"{path.name} hashes to something else"
        except OSError as exc:
            return f"{path.name}: {exc.strerror or exc}"

    with ThreadPoolExecutor(max_workers=max(parallel, 1)) as pool:
        return [problem for problem in pool.map(wrong, files.items()) if problem]


def digest_named(directory: Path, suffix: str = "") -> dict[Path, str]:
    """{file: sha256:<its name>} for the files of directory named by a sha256 hex digest (then suffix)."""
    found = {}
    for path in directory.iterdir():
        hex_part = path.name[:len(path.name) - len(suffix)] if suffix and path.name.endswith(suffix) else path.name
        if (not suffix or path.name.endswith(suffix)) and re.fullmatch(r"[0-9a-f]{64}", hex_part):
            found[path] = f"sha256:{hex_part}"
    return found


@dataclass(frozen=True)
class DiskUsage:
    allocated: int  # what du counts: allocated blocks of every file and directory, a hard link once
    apparent: int  # the files' sizes
    files: int


def disk_usage(root: Path) -> DiskUsage:
    allocated = apparent = files = 0
    seen: set[tuple[int, int]] = set()
    for path in [root, *root.rglob("*")]:
        status = path.lstat()
        if (status.st_dev, status.st_ino) in seen:
            continue
        seen.add((status.st_dev, status.st_ino))
        allocated += status.st_blocks * 512
        if path.is_file() and not path.is_symlink():
            apparent, files = apparent + status.st_size, files + 1
    return DiskUsage(allocated, apparent, files)


# -- processes ----------------------------------------------------------------------------------------------------------
@dataclass
class Proc:
    """A finished command: exit code, output, and what /usr/bin/time -v saw."""

    rc: int
    stdout: str
    stderr: str
    rss_kib: int = 0
    cpu: float = 0.0
    bytes_out: int = 0


def run(argv: list[str], work: Path, env: dict[str, str] | None = None, stdin: str | None = None, check: bool = True) -> Proc:
    timing = work / "time.txt"
    timing.unlink(missing_ok=True)
    proc = subprocess.run([TIME, "-v", "-o", str(timing), *argv], env=env, input=stdin, capture_output=True, text=True, check=False)
    text = timing.read_text(encoding="utf-8") if timing.exists() else ""
    found = {name: (pattern.search(text) or [None, "0"])[1] for name, pattern in _TIME_FIELDS.items()}
    result = Proc(proc.returncode, proc.stdout, proc.stderr, rss_kib=int(found["rss_kib"]),
                  cpu=float(found["user"]) + float(found["system"]), bytes_out=int(found["blocks_out"]) * 512)
    if check and proc.returncode != 0:
        raise BenchError(f"{' '.join(argv[:3])} ... failed ({proc.returncode}): {(proc.stderr or proc.stdout)[-800:]}")
    return result


def process_cpu(pids: Iterable[int]) -> float:
    """CPU seconds (user + system) the processes used so far; 0 for those that are gone."""
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8").rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    return total


def own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# -- the cases ------------------------------------------------------------------------------------------------------------
@dataclass
class Case:
    name: str
    group: str  # registry or archive (each with a baseline), noop, info
    bytes: int
    baseline: bool = False
    seconds: float = 0.0
    seconds_before_sync: float = 0.0
    client_cpu: float = 0.0
    registry_cpu: float = 0.0
    rss_mib: float | None = None
    disk_write_mb: float | None = None
    disk_bytes: int | None = None  # what the result takes on disk (du), for the cases that write files
    disk_apparent_bytes: int | None = None
    disk_files: int | None = None
    ok: bool = True
    note: str = ""
    rounds: list[float] = field(default_factory=list)
    mbps: float | None = None
    ratio: float | None = None


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.info: dict[str, Any] = json.loads((args.testbed / "testbed.json").read_text(encoding="utf-8"))
        self.source = Source(self.info)
        self.work: Path = args.work
        self.run_id = time.strftime("%Y%m%d%H%M%S")
        self.open_url = self.info["open_registry_url"].rstrip("/")
        self.open_host = self.info["open_registry_host"]
        pids = self.info.get("pids") or {}
        self.registry_pids = [pids[name] for name in ("registry-token", "registry-open") if name in pids]
        self.engine_pids = [pids[name] for name in ("dockerd", "containerd") if name in pids]
        self.cases: list[Case] = []
        self.auth_file = self.work / "auth.json"
        seed = json.loads(Path(self.info["seed_file"]).read_text(encoding="utf-8"))
        tags = [t["reference"] for repo in seed["repositories"] for t in repo.get("tags") or []]
        self.inv = self.source.inventory(tags)

    def prefix(self, case: str) -> str:
        return f"bench-{self.run_id}-{case}"

    # Measuring ----------------------------------------------------------------------------
    def measure(self, case: Case, action: Callable[[Case], None], in_process: bool = False,
                check: Callable[[Case], None] | None = None) -> Case:
        """Time action from a synced start to a synced end; then, with the clock stopped, run check (hashing, du).

        An exception of either marks the case failed, so its time cannot count.
        """
        print(f"bench: {case.name} ...", file=sys.stderr, flush=True)
        os.sync()
        registries, mine = process_cpu(self.registry_pids), own_cpu()
        started = time.monotonic()
        errors = (BenchError, requests.RequestException, OSError, ValueError, KeyError)
        try:
            action(case)
        except errors as exc:
            case.ok = False
            case.note = (case.note + "; " if case.note else "") + f"FAILED: {exc}"
        case.seconds_before_sync = time.monotonic() - started
        os.sync()
        case.seconds = time.monotonic() - started
        case.registry_cpu = process_cpu(self.registry_pids) - registries
        if in_process:
            case.client_cpu = own_cpu() - mine
        if check is not None and case.ok:
            try:
                check(case)
            except errors as exc:
                case.ok = False
                case.note = (case.note + "; " if case.note else "") + f"FAILED the check: {exc}"
        print(f"bench: {case.name}: {case.seconds:.1f}s{' (' + case.note + ')' if case.note else ''}", file=sys.stderr, flush=True)
        self.cases.append(case)
        return case

    def check_registry(self, case: Case, prefix: str) -> None:
        """Every tag at the destination has the source's digest; a case whose copy has not fails."""
        wrong = []
        for reference, digest in self.inv.digests.items():
            repository, tag = split_reference(reference)
            response = requests.head(f"{self.open_url}/v2/{prefix}/{repository}/manifests/{tag}", headers={"Accept": ACCEPT}, timeout=30)
            if response.status_code != 200 or response.headers.get("Docker-Content-Digest") != digest:
                wrong.append(reference)
        if wrong:
            raise BenchError(f"{len(wrong)} tag(s) missing or with another digest at the destination, e.g. {wrong[0]}")

    def check_blobs(self, case: Case, prefix: str) -> None:
        """Every unique blob is in the destination repository a raw upload put it in, with its size."""
        wrong = []
        for blob in self.inv.registry_blobs.values():
            response = requests.head(f"{self.open_url}/v2/{prefix}/{blob.repository}/blobs/{blob.digest}", timeout=30)
            if response.status_code != 200 or int(response.headers.get("Content-Length", -1)) != blob.size:
                wrong.append(blob.digest)
        if wrong:
            raise BenchError(f"{len(wrong)} blob(s) missing or of another size at the destination, e.g. {wrong[0]}")

    def record_disk(self, case: Case, root: Path) -> DiskUsage:
        usage = disk_usage(root)
        case.disk_bytes, case.disk_apparent_bytes, case.disk_files = usage.allocated, usage.apparent, usage.files
        return usage

    def check_files(self, case: Case, directory: Path) -> None:
        """download()'s files: one per unique blob (every platform), each hashing to its digest."""
        wanted = {blob_file(directory, blob): blob.digest for blob in self.inv.registry_blobs.values()}
        bad = misnamed(wanted, self.args.parallel)
        if bad:
            raise BenchError(f"{len(bad)} downloaded blob(s) wrong: {bad[0]}")
        self.record_disk(case, directory)

    def check_bundle(self, case: Case, directory: Path) -> None:
        """An OCI layout: index.json names every tag with the source's digest; every blob needed is there, and every
        file in blobs/sha256 hashes to its name. Written from the image-layout spec, not from the module's code."""
        if json.loads((directory / "oci-layout").read_text(encoding="utf-8")).get("imageLayoutVersion") != "1.0.0":
            raise BenchError("oci-layout does not say imageLayoutVersion 1.0.0")
        index = json.loads((directory / "index.json").read_text(encoding="utf-8"))
        names = {(entry.get("annotations") or {}).get(REF_NAME): entry.get("digest")
                 for entry in index.get("manifests") or []}
        wrong = [ref for ref, digest in self.inv.digests.items() if names.get(f"{self.source.host}/{ref}") != digest]
        if wrong:
            raise BenchError(f"index.json lacks {len(wrong)} tag(s) or names another digest, e.g. {wrong[0]}")
        blobs = digest_named(directory / "blobs" / "sha256")
        others = [p.name for p in (directory / "blobs" / "sha256").iterdir() if p not in blobs]
        if others:
            raise BenchError(f"blobs/sha256 holds {len(others)} file(s) not named by a digest, e.g. {others[0]}")
        missing = (set(self.inv.registry_blobs) | self.inv.manifest_digests) - set(blobs.values())
        if missing:
            raise BenchError(f"{len(missing)} blob(s) missing from the bundle, e.g. {sorted(missing)[0]}")
        bad = misnamed(blobs, self.args.parallel)
        if bad:
            raise BenchError(f"{len(bad)} blob file(s) of the bundle wrong: {bad[0]}")
        self.record_disk(case, directory)
        case.note += f"; {len(blobs)} blob files, each hashing to its name"

    def check_dirs(self, case: Case, root: Path) -> None:
        """skopeo's ``dir:`` per tag: manifest.json has the tag's digest (--preserve-digests), every manifest of an
        index and every blob of every platform is there, and every file named by a digest hashes to it."""
        files: dict[Path, str] = {}
        for reference, digest in self.inv.digests.items():
            repository, tag = split_reference(reference)
            directory = root / repository / tag
            named = {**digest_named(directory), **digest_named(directory, ".manifest.json")}
            wanted = {blob.digest for blob in self.inv.per_image[reference]} | set(self.inv.children.get(reference, []))
            missing = wanted - set(named.values())
            if missing:
                raise BenchError(f"{reference}: {len(missing)} blob(s) or manifest(s) missing, e.g. {min(missing)}")
            files.update(named)
            files[directory / "manifest.json"] = digest
        bad = misnamed(files, self.args.parallel)
        if bad:
            raise BenchError(f"{len(bad)} file(s) of the dir: copies wrong: {bad[0]}")
        self.record_disk(case, root)

    # The module ---------------------------------------------------------------------------
    def module(self, case: Case, facts: Path, params: dict[str, Any]) -> dict[str, Any]:
        """Run the module as its own process; with ``source: bundle`` it gets no key, no images (every image of the
        bundle) and a registry_url nothing listens on, so it cannot have read from the source registry."""
        if params.get("source", "registry") == "registry":
            args = {"registry_url": self.info["source_registry_url"], "images": self.inv.tags}
            env = dict(os.environ, NGC_API_KEY=self.info["api_key"])
        else:
            args = {"registry_url": "http://127.0.0.1:9"}
            env = {name: value for name, value in os.environ.items() if name != "NGC_API_KEY"}
        args.update({"facts_file": str(facts), "parallel": self.args.parallel, **params})
        args_file = self.work / "module-args.json"
        args_file.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": args}), encoding="utf-8")
        env["PYTHONPATH"] = str(self.args.collections)
        proc = run([sys.executable, "-m", MODULE, str(args_file)], self.work, env=env, check=False)
        case.rss_mib, case.client_cpu, case.disk_write_mb = proc.rss_kib / 1024, proc.cpu, proc.bytes_out / MB
        try:
            result = json.loads(proc.stdout[proc.stdout.index("{"):])
        except ValueError:
            raise BenchError(f"the module printed no result (rc {proc.rc}): {proc.stderr[-800:]}") from None
        if result.get("failed") or proc.rc != 0:
            raise BenchError(f"the module failed: {result.get('msg')}")
        case.note = f"reports {result.get('bytes_transferred', 0) / MB:.0f} MB transferred, {result.get('bytes_reused', 0) / MB:.0f} MB reused"
        return result

    def module_registry(self, case: Case, prefix: str, facts: Path) -> None:
        result = self.module(case, facts, {"registry": {"url": self.open_url, "prefix": prefix}})
        if not result.get("changed"):
            raise BenchError("the module copied nothing (changed=false)")
        self.check_registry(case, prefix)

    def module_archive(self, case: Case, directory: Path, facts: Path) -> None:
        result = self.module(case, facts, {"archive": {"dir": str(directory), "format": "docker"}})
        if not result.get("changed"):
            raise BenchError("the module wrote nothing (changed=false)")
        case.note += f"; wrote {case.disk_write_mb:.0f} MB to disk, the archives hold {self.inv.archive_file_bytes / MB:.0f} MB"

    def module_bundle(self, case: Case, directory: Path, facts: Path) -> None:
        result = self.module(case, facts, {"bundle": {"dir": str(directory)}})
        if not result.get("changed"):
            raise BenchError("the module wrote nothing (changed=false)")
        case.note += f"; wrote {case.disk_write_mb:.0f} MB to disk"

    def module_import(self, case: Case, directory: Path, prefix: str, facts: Path) -> None:
        result = self.module(case, facts, {"source": "bundle", "source_dir": str(directory),
                                           "registry": {"url": self.open_url, "prefix": prefix}})
        copied = [i for i in result.get("images") or [] if i.get("status") == "copied"]
        if len(copied) != len(self.inv.tags):
            raise BenchError(f"the module copied {len(copied)} of {len(self.inv.tags)} images from the bundle")
        self.check_registry(case, prefix)

    def module_noop(self, case: Case, prefix: str, directory: Path, facts: Path) -> None:
        result = self.module(case, facts, {"registry": {"url": self.open_url, "prefix": prefix},
                                           "archive": {"dir": str(directory), "format": "docker"}})
        copied = [i["reference"] for i in result.get("images") or [] if i.get("status") != "skipped"]
        case.note = f"changed={str(bool(result.get('changed'))).lower()}, {len(self.inv.tags) - len(copied)}/{len(self.inv.tags)} skipped"
        if result.get("changed") or copied:
            raise BenchError(f"the re-run was not a no-op: {', '.join(copied) or 'changed=true'}")

    # skopeo -------------------------------------------------------------------------------
    def write_authfile(self) -> None:
        token = base64.b64encode(f"{USERNAME}:{self.info['api_key']}".encode("utf-8")).decode("ascii")
        fd = os.open(self.auth_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump({"auths": {self.source.host: {"auth": token}}}, handle)

    def skopeo_sandbox(self, case: Case) -> tuple[list[str], dict[str, str]]:
        """A command prefix and environment that give skopeo an empty blob-info cache of its own for this case.

        skopeo remembers where it saw each blob and mounts it from there next time: with the
        system's cache it could mount what an earlier run pushed instead of copying it. As root
        the cache is /var/lib/containers/cache, so a private mount namespace covers it with an
        empty directory; otherwise the cache follows XDG_DATA_HOME.
        """
        cache = self.work / f"skopeo-cache-{len(self.cases)}"
        cache.mkdir(parents=True)
        env = dict(os.environ, XDG_DATA_HOME=str(cache))
        if os.geteuid() != 0:
            return [], env
        probe = subprocess.run(["unshare", "--mount", "true"], capture_output=True, check=False) if shutil.which("unshare") else None
        if probe is None or probe.returncode != 0:
            case.note = "skopeo's blob-info cache is the system's (no unshare): it may mount blobs an earlier run pushed"
            return [], env
        script = 'mkdir -p "$2" && mount --bind "$1" "$2" && shift 2 && exec "$@"'
        return ["unshare", "--mount", "sh", "-c", script, "sh", str(cache), SKOPEO_SYSTEM_CACHE], env

    def skopeo(self, case: Case, destination: Callable[[str, str], str], extra: list[str],
               source: Callable[[str, str], str] | None = None) -> None:
        """One ``skopeo copy`` per tag: from the source registry (with the auth file) or from source(repo, tag)."""
        sandbox, env = self.skopeo_sandbox(case)
        pull = [] if source is not None else ["--src-authfile", str(self.auth_file), "--src-tls-verify=false"]
        rss = 0
        for reference in self.inv.tags:
            repository, tag = split_reference(reference)
            origin = source(repository, tag) if source is not None else f"docker://{self.source.host}/{reference}"
            argv = [*sandbox, "skopeo", "copy", "--quiet", *pull, *extra, origin, destination(repository, tag)]
            proc = run(argv, self.work, env=env)
            rss, case.client_cpu = max(rss, proc.rss_kib), case.client_cpu + proc.cpu
        case.rss_mib = rss / 1024
        case.note = "; ".join(filter(None, (case.note, f"{len(self.inv.tags)} skopeo processes, one per tag")))

    def skopeo_registry(self, case: Case) -> None:
        prefix = self.prefix("skopeo")
        self.skopeo(case, lambda repo, tag: f"docker://{self.open_host}/{prefix}/{repo}:{tag}", ["--all", "--dest-tls-verify=false"])
        self.check_registry(case, prefix)

    def skopeo_archive(self, case: Case) -> None:
        root = self.work / "skopeo-archive"

        def destination(repo: str, tag: str) -> str:
            (root / repo).mkdir(parents=True, exist_ok=True)
            return f"docker-archive:{root / repo / tag}.tar:{self.source.host}/{repo}:{tag}"

        self.skopeo(case, destination, [])

    def skopeo_dirs(self, case: Case, root: Path) -> None:
        """NVIDIA's air-gap guide: ``skopeo copy --all --preserve-digests docker://... dir:<root>/<repo>/<tag>``."""

        def destination(repo: str, tag: str) -> str:
            (root / repo).mkdir(parents=True, exist_ok=True)
            return f"dir:{root / repo / tag}"

        self.skopeo(case, destination, ["--all", "--preserve-digests"])
        case.note += f"; the dirs must hold {self.inv.per_image_bytes / MB:.0f} MB, a copy of each shared layer per tag"

    def skopeo_from_dirs(self, case: Case, root: Path) -> None:
        """The far side of the guide: ``skopeo copy --all --preserve-digests dir:... docker://<open>/<prefix>/...``."""
        prefix = self.prefix("skopeo-import")
        self.skopeo(case, lambda repo, tag: f"docker://{self.open_host}/{prefix}/{repo}:{tag}",
                    ["--all", "--preserve-digests", "--dest-tls-verify=false"],
                    source=lambda repo, tag: f"dir:{root / repo / tag}")
        self.check_registry(case, prefix)

    # The Docker engine --------------------------------------------------------------------
    def docker_env(self) -> dict[str, str]:
        return dict(os.environ, DOCKER_HOST=self.info["docker_host"], DOCKER_CONFIG=str(self.work / "docker-config"))

    def docker(self, case: Case | None, *argv: str, stdin: str | None = None) -> Proc:
        proc = run(["docker", *argv], self.work, env=self.docker_env(), stdin=stdin)
        if case is not None:
            case.client_cpu += proc.cpu
        return proc

    def docker_clean(self) -> None:
        """Remove every image, so that pulls are real."""
        ids = sorted(set(self.docker(None, "image", "ls", "-aq").stdout.split()))
        if ids:
            self.docker(None, "image", "rm", "-f", *ids)
        self.docker(None, "image", "prune", "-af")

    def docker_login(self) -> None:
        self.docker(None, "login", "-u", USERNAME, "--password-stdin", self.source.host, stdin=self.info["api_key"])

    def docker_push(self, case: Case) -> None:
        engine = process_cpu(self.engine_pids)
        prefix = self.prefix("docker")
        for reference in self.inv.tags:
            source = f"{self.source.host}/{reference}"
            target = f"{self.open_host}/{prefix}/{reference}"
            self.docker(case, "pull", "-q", source)
            self.docker(case, "tag", source, target)
            self.docker(case, "push", target)
        case.client_cpu += process_cpu(self.engine_pids) - engine
        case.note = f"{len(self.inv.tags)} tags, one platform each (an index becomes its linux/amd64 image)"

    def docker_save(self, case: Case) -> None:
        engine = process_cpu(self.engine_pids)
        root = self.work / "docker-archive"
        for reference in self.inv.tags:
            repository, tag = split_reference(reference)
            (root / repository).mkdir(parents=True, exist_ok=True)
            source = f"{self.source.host}/{reference}"
            self.docker(case, "pull", "-q", source)
            self.docker(case, "save", "-o", f"{root / repository / tag}.tar", source)
        case.client_cpu += process_cpu(self.engine_pids) - engine
        case.note = f"{len(self.inv.tags)} archives"

    def write_per_archive(self, root: Path) -> None:
        """Every archive's blobs into a directory of its own, tag by tag: a blob is downloaded once, then copied from disk."""
        have: dict[str, Path] = {}
        for reference, blobs in self.inv.per_archive.items():
            directory = root / reference.replace("/", "_")
            directory.mkdir(parents=True)

            def one(blob: Blob, directory: Path = directory) -> None:
                target = directory / blob.digest.replace(":", "-")
                earlier = have.get(blob.digest)
                if earlier is not None:
                    shutil.copyfile(earlier, target)
                    return
                with self.source.blob(blob) as response, open(target, "wb") as handle:
                    for chunk in response.iter_content(CHUNK):
                        handle.write(chunk)

            _in_parallel(one, blobs, self.args.parallel)
            for blob in blobs:
                have.setdefault(blob.digest, directory / blob.digest.replace(":", "-"))

    # The run ------------------------------------------------------------------------------
    def bundle_round(self, number: int) -> None:
        """Both sides of the air gap, each next to its baseline: the plain download's files are what the raw PUT reads,
        the module's bundle is what the module imports. Each starts from its own fresh directory or namespace."""
        parallel, blobs = self.args.parallel, self.inv.registry_blobs.values()
        size = self.inv.total(blobs)
        files, bundle = self.work / f"plain-all{number}", self.work / f"bundle{number}"
        raw_prefix, prefix = self.prefix(f"rawput{number}"), self.prefix(f"import{number}")
        self.measure(Case("plain download of the blobs to files, all platforms", "bundle", size, baseline=True),
                     lambda c: download(self.source, blobs, files, parallel), in_process=True,
                     check=lambda c: self.check_files(c, files))
        self.measure(Case(BUNDLE, "bundle", size),
                     lambda c: self.module_bundle(c, bundle, self.work / f"bundle{number}.fact"),
                     check=lambda c: self.check_bundle(c, bundle))
        self.measure(Case("raw PUT of the blobs from files", "import", size, baseline=True),
                     lambda c: raw_put(files, blobs, self.open_url, raw_prefix, parallel), in_process=True,
                     check=lambda c: self.check_blobs(c, raw_prefix))
        self.measure(Case("module bundle -> registry", "import", size),
                     lambda c: self.module_import(c, bundle, prefix, self.work / f"import{number}.fact"))
        shutil.rmtree(files, ignore_errors=True)
        shutil.rmtree(bundle, ignore_errors=True)

    def execute(self) -> list[Case]:
        inv, parallel = self.inv, self.args.parallel
        reg_bytes, arc_bytes = inv.total(inv.registry_blobs.values()), inv.total(inv.archive_blobs.values())
        print(f"bench: {len(inv.tags)} tags; registry copy: {len(inv.registry_blobs)} unique blobs, {reg_bytes / MB:.0f} MB; "
              f"docker archives: {len(inv.archive_blobs)} unique blobs, {arc_bytes / MB:.0f} MB "
              f"({inv.archive_file_bytes / MB:.0f} MB in all archives); "
              f"{inv.per_image_bytes / MB:.0f} MB in dir: copies per tag",
              file=sys.stderr, flush=True)
        self.write_authfile()
        self.measure(Case("source read only (GET, discard)", "info", reg_bytes),
                     lambda c: read_only(self.source, inv.registry_blobs.values(), parallel), in_process=True)

        first: tuple[str, Path, Path] | None = None
        for number in range(1, self.args.rounds + 1):
            prefix, facts, archives = self.prefix(f"module{number}"), self.work / f"module{number}.fact", self.work / f"module-archive{number}"
            first = first or (prefix, archives, facts)
            self.measure(Case("raw stream (GET piped into PUT)", "registry", reg_bytes, baseline=True),
                         lambda c, n=number: raw_stream(self.source, inv.registry_blobs.values(), self.open_url, self.prefix(f"raw{n}"), parallel),
                         in_process=True, check=lambda c, n=number: self.check_blobs(c, self.prefix(f"raw{n}")))
            self.measure(Case("module registry -> registry", "registry", reg_bytes),
                         lambda c, p=prefix, f=facts: self.module_registry(c, p, f))
            plain = self.work / "plain"
            self.measure(Case("plain download of the blobs to files", "archive", arc_bytes, baseline=True),
                         lambda c, d=plain: download(self.source, inv.archive_blobs.values(), d, parallel), in_process=True)
            shutil.rmtree(plain, ignore_errors=True)
            # What the format costs: every archive holds its own copy of the layers it shares with other tags.
            per_tag = self.work / "per-archive"
            case = Case(FLOOR, "archive", arc_bytes)
            case.note = f"writes {inv.archive_file_bytes / MB:.0f} MB as the archives do; a blob an earlier tag got is copied from disk"
            self.measure(case, lambda c, d=per_tag: self.write_per_archive(d), in_process=True)
            shutil.rmtree(per_tag, ignore_errors=True)
            self.measure(Case("module registry -> docker archive", "archive", arc_bytes),
                         lambda c, d=archives, f=facts: self.module_archive(c, d, f),
                         check=lambda c, d=archives: self.record_disk(c, d))
            if number > 1:
                shutil.rmtree(archives, ignore_errors=True)
            self.bundle_round(number)

        self.measure(Case("skopeo copy --all registry -> registry", "registry", reg_bytes), self.skopeo_registry)
        self.measure(Case("skopeo copy -> docker-archive", "archive", arc_bytes), self.skopeo_archive)
        shutil.rmtree(self.work / "skopeo-archive", ignore_errors=True)
        dirs = self.work / "skopeo-dirs"
        self.measure(Case("skopeo copy --all --preserve-digests -> dir: per tag", "bundle", reg_bytes),
                     lambda c: self.skopeo_dirs(c, dirs), check=lambda c: self.check_dirs(c, dirs))
        self.measure(Case("skopeo copy --all --preserve-digests dir: -> registry", "import", reg_bytes),
                     lambda c: self.skopeo_from_dirs(c, dirs))
        shutil.rmtree(dirs, ignore_errors=True)

        if first is not None:
            prefix, archives, facts = first
            self.measure(Case("module no-op re-run (registry + archive)", "noop", 0), lambda c: self.module_noop(c, prefix, archives, facts))
            shutil.rmtree(archives, ignore_errors=True)

        if self.info.get("docker_host") and not self.args.no_docker:
            try:
                self.docker_login()
                self.docker_clean()
            except BenchError as exc:
                print(f"bench: the Docker engine is not usable, skipping its cases: {exc}", file=sys.stderr)
            else:
                self.measure(Case("docker pull + tag + push", "registry", arc_bytes), self.docker_push)
                self.docker_clean()
                self.measure(Case("docker pull + save", "archive", arc_bytes), self.docker_save)
                self.docker_clean()
                shutil.rmtree(self.work / "docker-archive", ignore_errors=True)
        return self.cases


# -- the report -----------------------------------------------------------------------------------------------------------
def best_rounds(cases: list[Case]) -> list[Case]:
    """One row per case name, in first-seen order: the fastest successful round, with every round's seconds and the highest peak RSS."""
    rows: dict[str, Case] = {}
    peak: dict[str, float] = {}
    for case in cases:
        if case.rss_mib is not None:
            peak[case.name] = max(peak.get(case.name, 0.0), case.rss_mib)
        row = rows.get(case.name)
        if row is None or (case.ok and (not row.ok or case.seconds < row.seconds)):
            rounds = (row.rounds if row else []) + [round(case.seconds, 2)]
            case.rounds = rounds
            if row is not None and not row.ok:
                case.ok, case.note = False, row.note
            rows[case.name] = case
        else:
            row.rounds.append(round(case.seconds, 2))
            if not case.ok:
                row.ok, row.note = False, case.note
    for name, row in rows.items():
        if name in peak:
            row.rss_mib = peak[name]  # memory: the worst round, not the fastest
    return list(rows.values())


def score(cases: list[Case]) -> None:
    """Fill in MB/s and the per-byte ratio against each group's baseline."""
    baselines = {c.group: c for c in cases if c.baseline and c.ok}
    for case in cases:
        if case.bytes and case.seconds > 0:
            case.mbps = case.bytes / MB / case.seconds
        base = baselines.get(case.group)
        if base is not None and base.mbps and case.mbps and case.ok:
            case.ratio = base.mbps / case.mbps


def overhead(case: Case) -> float | None:
    """How much more a case's result takes on disk than the unique bytes it holds (0.004 = 0.4%)."""
    return case.disk_bytes / case.bytes - 1 if case.disk_bytes is not None and case.bytes else None


def table(cases: list[Case]) -> str:
    header = ("case", "seconds", "MB/s", "ratio", "vs", "client CPU s", "registries CPU s", "peak RSS MiB",
              "on disk MB", "over unique", "note")
    rows = [header]
    for case in cases:
        rows.append((
            case.name + (f" (best of {len(case.rounds)})" if len(case.rounds) > 1 else ""),
            f"{case.seconds:.1f}",
            f"{case.mbps:.0f}" if case.mbps else "-",
            f"{case.ratio:.2f}x" if case.ratio else "-",
            BASELINE_NAMES.get(case.group, "") if case.ratio else "",
            f"{case.client_cpu:.1f}" if case.client_cpu else "-",
            f"{case.registry_cpu:.1f}",
            f"{case.rss_mib:.0f}" if case.rss_mib else "-",
            f"{case.disk_bytes / MB:.0f}" if case.disk_bytes is not None else "-",
            f"{overhead(case):+.2%}" if overhead(case) is not None else "-",
            ("" if case.ok else "FAILED ") + case.note,
        ))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]
    lines = []
    for index, row in enumerate(rows):
        cells = [row[i].ljust(widths[i]) if i in (0, 4) else row[i].rjust(widths[i]) for i in range(len(widths))]
        lines.append("  ".join(cells + [row[-1]]).rstrip())
        if index == 0:
            lines.append("  ".join("-" * w for w in widths) + "  ----")
    return "\n".join(lines)


def verdict(cases: list[Case]) -> list[str]:
    """How the module did against the aims of the issue: time per byte against the baseline, against skopeo for the
    bundle, peak memory, and bytes on disk."""
    lines = []
    for case in cases:
        if not case.name.startswith("module"):
            continue
        if not case.ok:
            lines.append(f"{case.name}: FAILED: {case.note}")
            continue
        aim = AIMS.get(case.group)
        if aim is not None and case.ratio is not None:
            met = "met" if case.ratio <= aim else "NOT met"
            lines.append(f"{case.name}: {case.ratio:.2f}x the {BASELINE_NAMES[case.group]} per byte (aim <= {aim}x): {met}")
        skopeo = next((c for c in cases if c.group == case.group and c.name.startswith("skopeo") and c.ok), None)
        if case.group in ("bundle", "import") and skopeo is not None:
            line = f"{case.name}: {case.seconds / skopeo.seconds:.2f}x the time of {skopeo.name}"
            if case.group == "bundle":
                line += f" (aim: ahead of it): {'met' if case.seconds < skopeo.seconds else 'NOT met'}"
            lines.append(line)
        floor = next((c for c in cases if c.name == FLOOR and c.ok and c.seconds > 0), None)
        if case.group == "archive" and floor is not None:
            lines.append(f"{case.name}: {case.seconds / floor.seconds:.2f}x the time of writing the same files plainly ({FLOOR})")
        if case.rss_mib is not None:
            lines.append(f"{case.name}: peak RSS {case.rss_mib:.0f} MiB (aim < {MAX_RSS_MIB:.0f} MiB): {'met' if case.rss_mib < MAX_RSS_MIB else 'NOT met'}")
    return lines + disk_verdict(cases)


def disk_verdict(cases: list[Case]) -> list[str]:
    """Bytes on disk of each result that has them, against its unique blob bytes; the bundle against its aim."""
    lines = []
    bundle = next((c for c in cases if c.name == BUNDLE and c.ok and c.disk_bytes), None)
    for case in cases:
        share = overhead(case)
        if share is None or case.disk_bytes is None or not case.ok:
            continue
        line = (f"bytes on disk: {case.name}: {case.disk_bytes / MB:.1f} MB in {case.disk_files} files, "
                f"{share:+.2%} over the {case.bytes / MB:.1f} MB of unique blobs it holds")
        if case is bundle:
            line += f" (aim < +{MAX_DISK_OVERHEAD:.0%}): {'met' if share < MAX_DISK_OVERHEAD else 'NOT met'}"
        elif bundle is not None and bundle.disk_bytes:
            line += f"; {case.disk_bytes / bundle.disk_bytes:.2f}x the bundle"
        lines.append(line)
    if bundle is None:
        lines.append(f"bytes on disk: {BUNDLE}: not measured (the case failed or did not run)")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n", 1)[0])
    parser.add_argument("--testbed", required=True, type=Path, help="the directory of a running test bed (testbed.json)")
    parser.add_argument("--collections", required=True, type=Path, help="a directory holding ansible_collections/airgap/ngc")
    parser.add_argument("--work", required=True, type=Path, help="scratch directory (emptied first, removed at the end)")
    parser.add_argument("--out", required=True, type=Path, help="where to write the results as JSON")
    parser.add_argument("--parallel", type=int, default=4, help="concurrent blob transfers of the module and the baselines")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the baselines and the module cases (the best counts)")
    parser.add_argument("--no-docker", action="store_true", help="skip the Docker engine cases")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.parallel < 1:
        parser.error("--rounds and --parallel must be at least 1")
    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    started = time.monotonic()
    try:
        bench = Bench(args)
        measured = bench.execute()
    finally:
        shutil.rmtree(args.work, ignore_errors=True)
    cases = best_rounds(measured)
    score(cases)
    checks = verdict(cases)
    print(f"\n{len(bench.inv.tags)} tags; unique bytes: {bench.inv.total(bench.inv.registry_blobs.values()) / MB:.0f} MB to a registry "
          f"(all platforms), {bench.inv.total(bench.inv.archive_blobs.values()) / MB:.0f} MB to docker archives ({ARCHIVE_PLATFORM}); "
          f"parallel {args.parallel}. Ratio: seconds per byte over the baseline's (registry cases: raw stream; "
          f"archive cases: plain download; bundle cases: plain download of every platform's blobs; "
          f"import cases: raw PUT of those files).\n")
    print(table(cases))
    print()
    print("\n".join(checks))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "schema_version": 1,
        "tags": bench.inv.tags,
        "parallel": args.parallel,
        "rounds": args.rounds,
        "registry_unique_bytes": bench.inv.total(bench.inv.registry_blobs.values()),
        "archive_unique_bytes": bench.inv.total(bench.inv.archive_blobs.values()),
        "archive_file_bytes": bench.inv.archive_file_bytes,
        "per_tag_dir_bytes": bench.inv.per_image_bytes,
        "aims": {"registry_ratio": AIMS["registry"], "archive_ratio": AIMS["archive"], "bundle_ratio": AIMS["bundle"],
                 "import_ratio": AIMS["import"], "peak_rss_mib": MAX_RSS_MIB, "bundle_disk_overhead": MAX_DISK_OVERHEAD},
        "disk": {case.name: {"bytes": case.disk_bytes, "apparent_bytes": case.disk_apparent_bytes,
                             "files": case.disk_files, "unique_bytes": case.bytes, "overhead": overhead(case)}
                 for case in cases if case.disk_bytes is not None},
        "cases": [asdict(case) for case in cases],
        "checks": checks,
        "seconds": round(time.monotonic() - started, 1),
    }
    args.out.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    print(f"\nresults: {args.out}; the benchmark took {document['seconds']:.0f}s")
    return 0 if all(case.ok for case in cases) else 1


if __name__ == "__main__":
    sys.exit(main())
