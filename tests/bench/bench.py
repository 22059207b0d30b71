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
- a monthly update (``--only update``): after a full bundle of the seeded tags and its import, one release of new
  tags sharing base layers is published on the source (release.py); then the bytes carried, and the time to write
  and to import, of the module's delta bundle (``since: last``), a full bundle of everything, per-tag docker
  archives of the new tags and skopeo ``dir:`` copies of them; the delta must hold exactly the new blobs;
- registry to enroot ``.sqsh`` (``--only enroot``): the module (``enroot: {dir}``) against the reference pipeline
  (skopeo to an OCI layout, ``umoci unpack``, ``mksquashfs`` with enroot's options) for a few amd64 images, the
  listings compared with ``unsquashfs -lls``.

Every case checks its result, so a fast wrong answer cannot win: a registry holds every tag with
the source's digest, a bundle or ``dir:`` copy has every tag and every blob, each file hashing to
its name (the hashing is done after the clock stops).

Each case writes into a fresh namespace (prefix) or directory, starts after ``sync`` and its
time includes a final ``sync``, so every client pays for getting its data to disk. MB/s is the
unique bytes a case has to move divided by its seconds; the ratio is per byte, a case's seconds
per byte over its baseline's (1.00 = as fast as the baseline). The baselines and the module
run ``--rounds`` times, interleaved, and the best round counts (the machine is shared and noisy).
The module runs as its own process under ``/usr/bin/time -v``, which gives its peak memory, CPU
time and disk writes. Only requests and the standard library are used, and the test bed's seeder
(tests/testbed, through release.py) to publish the monthly release; nothing from plugins/.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import importlib
import json
import os
import re
import resource
import shlex
import shutil
import subprocess
import sys
import tarfile
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
INDEX_TYPES = frozenset(
    ("application/vnd.oci.image.index.v1+json", "application/vnd.docker.distribution.manifest.list.v2+json")
)
ACCEPT = ", ".join(
    (
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    )
)
AIMS = {"registry": 1.1, "archive": 1.5, "bundle": 1.15, "import": 1.1}
MAX_RSS_MIB = 150.0
MAX_DISK_OVERHEAD = 0.01  # a bundle: the unique blob bytes + under 1%
COPY_GROUPS = frozenset(("info", "registry", "archive", "bundle", "import", "noop"))
FLOOR = "plain download + copies, each archive's blobs"
BUNDLE = "module registry -> bundle"
BASELINE_NAMES = {
    "registry": "raw stream",
    "archive": "plain download",
    "bundle": "plain download (all platforms)",
    "import": "raw PUT from files",
    "charts": "plain download of the chart's unique blobs",
    "containerd": "ctr images pull",
}
REF_NAME = "org.opencontainers.image.ref.name"
# --only: the copies of the seeded tags; the monthly update (issue 10); registry -> .sqsh (issue 11); the issue 22 aims
# alone (the module's registry, bundle and import cases beside their baselines, and its memory for one image and all)
# charts (issue 24): the GPU-Operator chart for two node OSes into a bundle, against the floor and skopeo per image;
# containerd (issue 25): the seeded tags from the site registry into a containerd, against ctr pull and ctr import
GROUPS = ("copy", "update", "enroot", "aims", "charts", "containerd")
CHART_K8S_HOST = "registry.k8s.io"  # what the chart names; the test bed's anonymous registry stands for it
ONE_IMAGE = "module registry -> registry, the largest image alone"
MAX_RSS_GROWTH = 1.25  # memory flat in the tag count: all the tags at most this much over the largest image alone
UPDATE_EARLIER = "update: module full bundle of the earlier release (last month)"
UPDATE_EARLIER_IMPORT = "update: module import of the earlier release"
UPDATE_PUBLISH = "update: publish one release on the source (release.py)"
UPDATE_DELTA = "update: module delta bundle (since: last)"
UPDATE_DELTA_IMPORT = "update: module delta bundle -> registry holding last month"
UPDATE_FULL = "update: module full bundle of everything"
UPDATE_FULL_IMPORT = "update: module full bundle -> empty registry"
UPDATE_ARCHIVES = "update: module docker archive per new tag"
UPDATE_DIRS = "update: skopeo copy --all --preserve-digests -> dir: per new tag"
UPDATE_DIRS_IMPORT = "update: skopeo dir: -> registry holding last month"
UPDATE_CARRIED = (UPDATE_DELTA, UPDATE_FULL, UPDATE_ARCHIVES, UPDATE_DIRS)
UPDATE_IMPORTS = {UPDATE_DELTA: UPDATE_DELTA_IMPORT, UPDATE_FULL: UPDATE_FULL_IMPORT, UPDATE_DIRS: UPDATE_DIRS_IMPORT}
MAX_DELTA_OVERHEAD = 0.01  # a delta bundle: the new blobs' bytes + under 1%
# registry -> .sqsh: the amd64 images both sides make (a subset of the seeded tags, to keep the bench short): Docker
# schema 2 (the 1.1 GB pytorch and a small one), an OCI manifest, a multi-platform index, a team repository.
ENROOT_IMAGES = (
    "nvidia/pytorch:24.01-py3",
    "nvidia/pytorch:19.09-py2",
    "nvidia/tensorflow:24.01-tf2-py3",
    "nvidia/cuda:12.2.0-base-ubuntu22.04",
    "nvidia/clara/clara-parabricks:4.2.0-1",
)
ENROOT_MODULE = "enroot: module registry -> .sqsh"
ENROOT_REFERENCE = "enroot: skopeo oci: + umoci unpack + mksquashfs"
ENROOT_FILES = ("etc/rc", "etc/rc.local", "etc/environment", "etc/fstab")  # what enroot adds to the image's files
ENROOT_AIM = 1.0
SQUASH_OPTIONS = "-comp lzo -noD"  # enroot's ENROOT_SQUASH_OPTIONS, the module's default squash_options
SQUASH_FLAGS = ("-noappend", "-no-progress", "-all-root")  # what the module passes to mksquashfs besides them
_LISTING_RE = re.compile(
    r"^([-dlcbps][-rwxsStT]{9}) (\S+)\s+(\d+|\d+,\s*\d+) \d{4}-\d\d-\d\d \d\d:\d\d (squashfs-root.*)$"
)
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
            response = requests.get(
                self._realm,
                params={"service": self._service, "scope": f"repository:{repository}:pull"},
                auth=(USERNAME, self._key),
                timeout=30,
            )
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


def load_release() -> Any:
    """tests/bench/release.py, which publishes with the test bed's own seeder (tests.testbed, from the repository root)."""
    root = str(Path(__file__).resolve().parents[2])
    if root not in sys.path:
        sys.path.append(root)
    return importlib.import_module("release")


def sqsh_name(reference: str) -> str:
    """The file enroot v4 names an import: ``nvidia/pytorch:24.01-py3`` -> ``nvidia+pytorch+24.01-py3.sqsh``."""
    return reference.replace("/", "+").replace(":", "+") + ".sqsh"


def sqsh_listing(path: Path) -> dict[str, tuple[str, str, str, str]]:
    """{path inside (the root is ""): (type and mode, owner/group, size (a directory's: ""), link target)} from
    ``unsquashfs -lls``."""
    proc = subprocess.run(["unsquashfs", "-lls", str(path)], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise BenchError(f"unsquashfs -lls cannot list {path.name}: {(proc.stderr or proc.stdout)[-300:]}")
    entries = {}
    for line in proc.stdout.splitlines():
        match = _LISTING_RE.match(line)
        if match is None:
            continue
        mode, owner, size, name = match.groups()
        name, _arrow, target = name.partition(" -> ") if mode.startswith("l") else (name, "", "")
        entries[name[len("squashfs-root/") :] if name != "squashfs-root" else ""] = (
            mode,
            owner,
            "" if mode.startswith("d") else size,
            target,
        )
    if "" not in entries:
        raise BenchError(f"unsquashfs -lls listed no root directory for {path.name}")
    return entries


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
        put = session.put(
            location, data=_Body(chunks, blob.size), headers={"Content-Type": "application/octet-stream"}, timeout=600
        )
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
        hex_part = path.name[: len(path.name) - len(suffix)] if suffix and path.name.endswith(suffix) else path.name
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


def run(
    argv: list[str], work: Path, env: dict[str, str] | None = None, stdin: str | None = None, check: bool = True
) -> Proc:
    timing = work / "time.txt"
    timing.unlink(missing_ok=True)
    proc = subprocess.run(
        [TIME, "-v", "-o", str(timing), *argv], env=env, input=stdin, capture_output=True, text=True, check=False
    )
    text = timing.read_text(encoding="utf-8") if timing.exists() else ""
    found = {name: (pattern.search(text) or [None, "0"])[1] for name, pattern in _TIME_FIELDS.items()}
    result = Proc(
        proc.returncode,
        proc.stdout,
        proc.stderr,
        rss_kib=int(found["rss_kib"]),
        cpu=float(found["user"]) + float(found["system"]),
        bytes_out=int(found["blocks_out"]) * 512,
    )
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
class AnonymousSource(Source):
    """A registry that answers without credentials (the test bed's stand-in for registry.k8s.io)."""

    def __init__(self, url: str, host: str) -> None:  # pylint: disable=super-init-not-called
        self.url, self.host = url.rstrip("/"), host
        self._local = threading.local()

    def get(self, repository: str, path: str, **kwargs: Any) -> requests.Response:
        response = self.session().get(f"{self.url}/v2/{repository}/{path}", timeout=120, **kwargs)
        if response.status_code != 200:
            response.close()
            raise BenchError(f"GET {repository}/{path} on {self.host} answered {response.status_code}")
        return response


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
        self.update: dict[str, Any] = {}  # the monthly update's release: its new tags and blobs
        self.auth_file = self.work / "auth.json"
        seed = json.loads(Path(self.info["seed_file"]).read_text(encoding="utf-8"))
        tags = [t["reference"] for repo in seed["repositories"] for t in repo.get("tags") or []]
        self.inv = self.source.inventory(tags)

    def prefix(self, case: str) -> str:
        return f"bench-{self.run_id}-{case}"

    # Measuring ----------------------------------------------------------------------------
    def measure(
        self,
        case: Case,
        action: Callable[[Case], None],
        in_process: bool = False,
        check: Callable[[Case], None] | None = None,
    ) -> Case:
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
        print(
            f"bench: {case.name}: {case.seconds:.1f}s{' (' + case.note + ')' if case.note else ''}",
            file=sys.stderr,
            flush=True,
        )
        self.cases.append(case)
        return case

    def check_registry(self, case: Case, prefix: str, inv: Inventory | None = None) -> None:
        """Every tag (of inv, the seeded tags by default) at the destination has the source's digest; a case whose copy
        has not fails."""
        wrong = []
        for reference, digest in (inv or self.inv).digests.items():
            repository, tag = split_reference(reference)
            response = requests.head(
                f"{self.open_url}/v2/{prefix}/{repository}/manifests/{tag}", headers={"Accept": ACCEPT}, timeout=30
            )
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

    def check_bundle(self, case: Case, directory: Path, inv: Inventory | None = None) -> None:
        """An OCI layout: index.json names every tag with the source's digest; every blob needed is there, and every
        file in blobs/sha256 hashes to its name. Written from the image-layout spec, not from the module's code."""
        inv = inv or self.inv
        blobs = self.check_layout(directory, inv)
        missing = (set(inv.registry_blobs) | inv.manifest_digests) - set(blobs.values())
        if missing:
            raise BenchError(f"{len(missing)} blob(s) missing from the bundle, e.g. {sorted(missing)[0]}")
        bad = misnamed(blobs, self.args.parallel)
        if bad:
            raise BenchError(f"{len(bad)} blob file(s) of the bundle wrong: {bad[0]}")
        self.record_disk(case, directory)
        case.note += f"; {len(blobs)} blob files, each hashing to its name"

    def check_layout(self, directory: Path, inv: Inventory) -> dict[Path, str]:
        """oci-layout says 1.0.0, index.json names every tag of inv with the source's digest, blobs/sha256 holds only
        files named by a digest: those files, {path: digest}."""
        if json.loads((directory / "oci-layout").read_text(encoding="utf-8")).get("imageLayoutVersion") != "1.0.0":
            raise BenchError("oci-layout does not say imageLayoutVersion 1.0.0")
        index = json.loads((directory / "index.json").read_text(encoding="utf-8"))
        names = {
            (entry.get("annotations") or {}).get(REF_NAME): entry.get("digest")
            for entry in index.get("manifests") or []
        }
        wrong = [ref for ref, digest in inv.digests.items() if names.get(f"{self.source.host}/{ref}") != digest]
        if wrong:
            raise BenchError(f"index.json lacks {len(wrong)} tag(s) or names another digest, e.g. {wrong[0]}")
        blobs = digest_named(directory / "blobs" / "sha256")
        others = [p.name for p in (directory / "blobs" / "sha256").iterdir() if p not in blobs]
        if others:
            raise BenchError(f"blobs/sha256 holds {len(others)} file(s) not named by a digest, e.g. {others[0]}")
        return blobs

    def check_dirs(self, case: Case, root: Path, inv: Inventory | None = None) -> None:
        """skopeo's ``dir:`` per tag: manifest.json has the tag's digest (--preserve-digests), every manifest of an
        index and every blob of every platform is there, and every file named by a digest hashes to it."""
        inv = inv or self.inv
        files: dict[Path, str] = {}
        for reference, digest in inv.digests.items():
            repository, tag = split_reference(reference)
            directory = root / repository / tag
            named = {**digest_named(directory), **digest_named(directory, ".manifest.json")}
            wanted = {blob.digest for blob in inv.per_image[reference]} | set(inv.children.get(reference, []))
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
    def module(
        self, case: Case, facts: Path, params: dict[str, Any], images: list[str] | None = None
    ) -> dict[str, Any]:
        """Run the module as its own process, on images (the seeded tags by default); with ``source: bundle`` it gets no
        key, no images (every image of the bundle) and a registry_url nothing listens on, so it cannot have read from the
        source registry."""
        if params.get("source", "registry") == "registry":
            args = {"registry_url": self.info["source_registry_url"]}
            if "charts" not in params:
                args["images"] = images or self.inv.tags
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
            result = json.loads(proc.stdout[proc.stdout.index("{") :])
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

    def module_archive(self, case: Case, directory: Path, facts: Path, inv: Inventory | None = None) -> None:
        inv = inv or self.inv
        result = self.module(case, facts, {"archive": {"dir": str(directory), "format": "docker"}}, images=inv.tags)
        if not result.get("changed"):
            raise BenchError("the module wrote nothing (changed=false)")
        case.note += (
            f"; wrote {case.disk_write_mb:.0f} MB to disk, the archives hold {inv.archive_file_bytes / MB:.0f} MB"
        )

    def module_bundle(
        self, case: Case, directory: Path, facts: Path, images: list[str] | None = None, since: Any = None
    ) -> None:
        bundle: dict[str, Any] = {"dir": str(directory)}
        if since is not None:
            bundle["since"] = since
        result = self.module(case, facts, {"bundle": bundle}, images=images)
        if not result.get("changed"):
            raise BenchError("the module wrote nothing (changed=false)")
        case.note += f"; wrote {case.disk_write_mb:.0f} MB to disk"

    def module_import(
        self,
        case: Case,
        directory: Path,
        prefix: str,
        facts: Path,
        inv: Inventory | None = None,
        copies: int | None = None,
    ) -> None:
        """Import a bundle into prefix: copies images (every tag of inv by default) must be copied, and then every tag of
        inv must be at the destination with the source's digest."""
        inv = inv or self.inv
        copies = len(inv.tags) if copies is None else copies
        result = self.module(
            case,
            facts,
            {"source": "bundle", "source_dir": str(directory), "registry": {"url": self.open_url, "prefix": prefix}},
        )
        copied = [i for i in result.get("images") or [] if i.get("status") == "copied"]
        if len(copied) != copies:
            raise BenchError(f"the module copied {len(copied)} images from the bundle, not {copies}")
        self.check_registry(case, prefix, inv)

    def module_noop(self, case: Case, prefix: str, directory: Path, facts: Path) -> None:
        result = self.module(
            case,
            facts,
            {
                "registry": {"url": self.open_url, "prefix": prefix},
                "archive": {"dir": str(directory), "format": "docker"},
            },
        )
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
        probe = (
            subprocess.run(["unshare", "--mount", "true"], capture_output=True, check=False)
            if shutil.which("unshare")
            else None
        )
        if probe is None or probe.returncode != 0:
            case.note = (
                "skopeo's blob-info cache is the system's (no unshare): it may mount blobs an earlier run pushed"
            )
            return [], env
        script = 'mkdir -p "$2" && mount --bind "$1" "$2" && shift 2 && exec "$@"'
        return ["unshare", "--mount", "sh", "-c", script, "sh", str(cache), SKOPEO_SYSTEM_CACHE], env

    def skopeo(
        self,
        case: Case,
        destination: Callable[[str, str], str],
        extra: list[str],
        source: Callable[[str, str], str] | None = None,
        tags: list[str] | None = None,
    ) -> None:
        """One ``skopeo copy`` per tag (the seeded tags by default): from the source registry (with the auth file) or
        from source(repo, tag)."""
        sandbox, env = self.skopeo_sandbox(case)
        pull = [] if source is not None else ["--src-authfile", str(self.auth_file), "--src-tls-verify=false"]
        tags = tags or self.inv.tags
        rss = 0
        for reference in tags:
            repository, tag = split_reference(reference)
            origin = source(repository, tag) if source is not None else f"docker://{self.source.host}/{reference}"
            argv = [*sandbox, "skopeo", "copy", "--quiet", *pull, *extra, origin, destination(repository, tag)]
            proc = run(argv, self.work, env=env)
            rss, case.client_cpu = max(rss, proc.rss_kib), case.client_cpu + proc.cpu
        case.rss_mib = rss / 1024
        case.note = "; ".join(filter(None, (case.note, f"{len(tags)} skopeo processes, one per tag")))

    def skopeo_registry(self, case: Case) -> None:
        prefix = self.prefix("skopeo")
        self.skopeo(
            case,
            lambda repo, tag: f"docker://{self.open_host}/{prefix}/{repo}:{tag}",
            ["--all", "--dest-tls-verify=false"],
        )
        self.check_registry(case, prefix)

    def skopeo_archive(self, case: Case) -> None:
        root = self.work / "skopeo-archive"

        def destination(repo: str, tag: str) -> str:
            (root / repo).mkdir(parents=True, exist_ok=True)
            return f"docker-archive:{root / repo / tag}.tar:{self.source.host}/{repo}:{tag}"

        self.skopeo(case, destination, [])

    def skopeo_dirs(self, case: Case, root: Path, inv: Inventory | None = None) -> None:
        """NVIDIA's air-gap guide: ``skopeo copy --all --preserve-digests docker://... dir:<root>/<repo>/<tag>``."""
        inv = inv or self.inv

        def destination(repo: str, tag: str) -> str:
            (root / repo).mkdir(parents=True, exist_ok=True)
            return f"dir:{root / repo / tag}"

        self.skopeo(case, destination, ["--all", "--preserve-digests"], tags=inv.tags)
        case.note += f"; the dirs must hold {inv.per_image_bytes / MB:.0f} MB, a copy of each shared layer per tag"

    def skopeo_from_dirs(
        self,
        case: Case,
        root: Path,
        prefix: str | None = None,
        inv: Inventory | None = None,
        judge: Inventory | None = None,
    ) -> None:
        """The far side of the guide: ``skopeo copy --all --preserve-digests dir:... docker://<open>/<prefix>/...`` for
        each tag of inv; then every tag of judge (inv by default) must be at the destination with the source's digest."""
        prefix, inv = prefix or self.prefix("skopeo-import"), inv or self.inv
        self.skopeo(
            case,
            lambda repo, tag: f"docker://{self.open_host}/{prefix}/{repo}:{tag}",
            ["--all", "--preserve-digests", "--dest-tls-verify=false"],
            source=lambda repo, tag: f"dir:{root / repo / tag}",
            tags=inv.tags,
        )
        self.check_registry(case, prefix, judge or inv)

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
        self.measure(
            Case("plain download of the blobs to files, all platforms", "bundle", size, baseline=True),
            lambda c: download(self.source, blobs, files, parallel),
            in_process=True,
            check=lambda c: self.check_files(c, files),
        )
        self.measure(
            Case(BUNDLE, "bundle", size),
            lambda c: self.module_bundle(c, bundle, self.work / f"bundle{number}.fact"),
            check=lambda c: self.check_bundle(c, bundle),
        )
        self.measure(
            Case("raw PUT of the blobs from files", "import", size, baseline=True),
            lambda c: raw_put(files, blobs, self.open_url, raw_prefix, parallel),
            in_process=True,
            check=lambda c: self.check_blobs(c, raw_prefix),
        )
        self.measure(
            Case("module bundle -> registry", "import", size),
            lambda c: self.module_import(c, bundle, prefix, self.work / f"import{number}.fact"),
        )
        shutil.rmtree(files, ignore_errors=True)
        shutil.rmtree(bundle, ignore_errors=True)

    def execute(self) -> list[Case]:
        """The groups of --only, in this order: the copies, the monthly update (which publishes a release on the
        source, so it comes after the copies of the seeded tags), registry -> .sqsh."""
        inv, parallel = self.inv, self.args.parallel
        reg_bytes, arc_bytes = inv.total(inv.registry_blobs.values()), inv.total(inv.archive_blobs.values())
        print(
            f"bench: {len(inv.tags)} tags; registry copy: {len(inv.registry_blobs)} unique blobs, {reg_bytes / MB:.0f} MB; "
            f"docker archives: {len(inv.archive_blobs)} unique blobs, {arc_bytes / MB:.0f} MB "
            f"({inv.archive_file_bytes / MB:.0f} MB in all archives); "
            f"{inv.per_image_bytes / MB:.0f} MB in dir: copies per tag; groups: {', '.join(g for g in GROUPS if g in self.args.only)}",
            file=sys.stderr,
            flush=True,
        )
        self.write_authfile()
        self.measure(
            Case("source read only (GET, discard)", "info", reg_bytes),
            lambda c: read_only(self.source, inv.registry_blobs.values(), parallel),
            in_process=True,
        )
        if "copy" in self.args.only:
            self.copy_groups()
        if "aims" in self.args.only:
            self.one_image() if "copy" in self.args.only else self.aims_group()
        if "update" in self.args.only:
            self.update_group()
        if "enroot" in self.args.only:
            self.enroot_group()
        if "charts" in self.args.only:
            self.charts_group()
        if "containerd" in self.args.only:
            self.containerd_group()
        return self.cases

    def charts_group(self) -> None:
        """Issue 24: the test bed's GPU-Operator chart (its newest version) for two node OSes into a bundle, by the
        module (chart and images found by the chart's values) against the floor (each unique blob of the images the bed
        pushed for that version and those OSes, fetched once) and the manual procedure (one skopeo copy per image of
        that list, NVIDIA's air-gap guide). The note says how many images the module found against the bed's list."""
        root = str(Path(__file__).resolve().parents[2])
        if root not in sys.path:
            sys.path.append(root)
        expected_images = importlib.import_module("tests.testbed.charts").expected_images
        oracle = json.loads(Path(self.info["chart_file"]).read_text(encoding="utf-8"))
        version, oses = oracle["versions"][-1], list(oracle["driver_os"][:2])
        wanted = expected_images(oracle, version, oses)
        k8s = AnonymousSource(self.info["k8s_registry_url"], self.info["k8s_registry_host"])
        ngc_refs = [ref.split("/", 1)[1] for ref in wanted if not ref.startswith(CHART_K8S_HOST + "/")]
        k8s_refs = [ref.split("/", 1)[1] for ref in wanted if ref.startswith(CHART_K8S_HOST + "/")]
        ngc_inv, k8s_inv = self.source.inventory(ngc_refs), k8s.inventory(k8s_refs)
        unique = ngc_inv.total(ngc_inv.registry_blobs.values()) + k8s_inv.total(k8s_inv.registry_blobs.values())
        selection = {"name": oracle["name"], "version": version, "driver_os": oses}
        for number in range(1, self.args.rounds + 1):
            floor = self.work / f"charts-floor{number}"

            def fetch(case: Case, floor: Path = floor) -> None:
                download(self.source, ngc_inv.registry_blobs.values(), floor, self.args.parallel)
                download(k8s, k8s_inv.registry_blobs.values(), floor, self.args.parallel)

            self.measure(
                Case("charts: plain download of each unique blob once", "charts", unique, baseline=True),
                fetch,
                in_process=True,
            )

            def module_charts(case: Case, number: int = number) -> None:
                result = self.module(
                    case,
                    self.work / f"charts{number}.fact",
                    {
                        "charts": [selection],
                        "helm_url": oracle["helm_url"],
                        "upstream_registries": {CHART_K8S_HOST: {"url": self.info["k8s_registry_url"]}},
                        "bundle": {"dir": str(self.work / f"charts-bundle{number}")},
                    },
                )
                (chart,) = result.get("charts") or [{}]
                found = {image["reference"] for image in chart.get("images") or []}
                missed = sorted(set(wanted) - found)
                case.note += (
                    f"; found {len(found)} images, the bed pushed {len(wanted)} for {version} on {', '.join(oses)}"
                )
                if missed:
                    raise BenchError(f"the module missed {', '.join(missed)}")

            self.measure(Case("charts: module chart + its images -> bundle", "charts", unique), module_charts)

            def manual(case: Case, number: int = number) -> None:
                sandbox, env = self.skopeo_sandbox(case)
                root, rss = self.work / f"charts-skopeo{number}", 0
                for reference in sorted(wanted):
                    host_path, tag = reference.rsplit(":", 1)
                    path = host_path.split("/", 1)[1]
                    if reference.startswith(CHART_K8S_HOST + "/"):
                        origin, pull = f"docker://{k8s.host}/{path}:{tag}", ["--src-tls-verify=false"]
                    else:
                        origin, pull = (
                            f"docker://{self.source.host}/{path}:{tag}",
                            ["--src-authfile", str(self.auth_file), "--src-tls-verify=false"],
                        )
                    (root / path).mkdir(parents=True, exist_ok=True)
                    proc = run(
                        [
                            *sandbox,
                            "skopeo",
                            "copy",
                            "--quiet",
                            *pull,
                            "--all",
                            "--preserve-digests",
                            origin,
                            f"dir:{root / path / tag}",
                        ],
                        self.work,
                        env=env,
                    )
                    rss, case.client_cpu = max(rss, proc.rss_kib), case.client_cpu + proc.cpu
                case.rss_mib = rss / 1024
                case.note = "; ".join(
                    filter(None, (case.note, f"{len(wanted)} skopeo processes, one per image of the list"))
                )

            self.measure(Case("charts: skopeo copy of each image of the list (manual)", "charts", unique), manual)

    def containerd_group(self) -> None:
        """Issue 25: the seeded tags, mirrored (untimed) into the site registry under a prefix, put into a containerd of
        the bench's own, each round into fresh namespaces: by ``ctr images pull --all-platforms`` of each tag from the
        site registry (the baseline), by the module's containerd destination (from the site registry, named as the
        source with ``name_as`` and ``strip_prefix``), and by ``ctr images import --all-platforms`` of each tag's OCI
        archive (written untimed by the module). Each case is checked (untimed) to hold every tag at the source's
        digest, then its images are removed and garbage-collected (``ctr images rm --sync``), so that no case finds the
        content of another. The note adds containerd's own CPU time."""
        root = str(Path(__file__).resolve().parents[2])
        if root not in sys.path:
            sys.path.append(root)
        start_containerd = importlib.import_module("tests.testbed.containerd").start_containerd
        inv = self.inv
        unique = inv.total(inv.registry_blobs.values())
        prefix, archives = self.prefix("containerd"), self.work / "containerd-oci"
        setup = Case("containerd: setup", "containerd", unique)
        self.module(setup, self.work / "containerd-site.fact", {"registry": {"url": self.open_url, "prefix": prefix}})
        self.check_registry(setup, prefix)
        shutil.rmtree(archives, ignore_errors=True)
        self.module(setup, self.work / "containerd-oci.fact", {"archive": {"dir": str(archives), "format": "oci"}})
        files = sorted(archives.rglob("*.tar"))
        if len(files) != len(inv.tags):
            raise BenchError(f"the module wrote {len(files)} OCI archives for {len(inv.tags)} tags")
        node = start_containerd()
        try:
            for number in range(1, self.args.rounds + 1):
                self.containerd_round(node, number, prefix, files)
        finally:
            node.stop()

    def containerd_round(self, node: Any, number: int, prefix: str, files: list[Path]) -> None:
        """One round of the containerd group: pull, the module, import, each into a namespace of its own."""
        inv, unique = self.inv, self.inv.total(self.inv.registry_blobs.values())
        site = {f"{self.open_host}/{prefix}/{ref}": digest for ref, digest in inv.digests.items()}
        named = {f"{self.source.host}/{ref}": digest for ref, digest in inv.digests.items()}

        def timed(
            key: str, name: str, names: dict[str, str], action: Callable[[Case, str], None], baseline: bool = False
        ) -> None:
            namespace = f"bench-{key}-{number}"
            before = process_cpu([node.pid])

            def check(case: Case) -> None:
                held = node.images(namespace)
                wrong = [ref for ref, digest in names.items() if held.get(ref) != digest]
                if wrong:
                    raise BenchError(
                        f"{len(wrong)} image(s) missing from containerd or at another digest, e.g. {wrong[0]} "
                        f"({held.get(wrong[0]) or 'absent'})"
                    )
                case.note = "; ".join(
                    filter(None, (case.note, f"{len(names)} images at the source's digests in namespace {namespace}"))
                )

            case = self.measure(
                Case(f"containerd: {name}", "containerd", unique, baseline=baseline),
                lambda c: action(c, namespace),
                check=check,
            )
            case.note += f"; containerd CPU {process_cpu([node.pid]) - before:.1f}s"
            held = node.images(namespace)
            if held:
                node.ctr("images", "rm", "--sync", *held, namespace=namespace, check=False)

        def ctr_each(case: Case, argvs: list[list[str]]) -> None:
            rss = 0
            for argv in argvs:
                proc = run(["ctr", "--address", node.address, *argv], self.work)
                rss, case.client_cpu = max(rss, proc.rss_kib), case.client_cpu + proc.cpu
            case.rss_mib = rss / 1024
            case.note = f"{len(argvs)} ctr processes, one per tag"

        def pull(case: Case, namespace: str) -> None:
            ctr_each(
                case,
                [["-n", namespace, "images", "pull", "--plain-http", "--all-platforms", ref] for ref in sorted(site)],
            )

        def module(case: Case, namespace: str) -> None:
            result = self.module(
                case,
                self.work / f"containerd{number}.fact",
                {
                    "registry_url": self.open_url,
                    "containerd": {
                        "address": node.address,
                        "namespace": namespace,
                        "name_as": self.source.host,
                        "strip_prefix": prefix,
                    },
                },
                images=[f"{prefix}/{ref}" for ref in inv.tags],
            )
            if not result.get("changed"):
                raise BenchError("the module imported nothing (changed=false)")

        def load(case: Case, namespace: str) -> None:
            ctr_each(case, [["-n", namespace, "images", "import", "--all-platforms", str(path)] for path in files])

        timed("pull", "ctr images pull --all-platforms of each tag from the site registry", site, pull, baseline=True)
        timed("module", "module site registry -> containerd (name_as, strip_prefix)", named, module)
        timed("import", "ctr images import --all-platforms of each tag's OCI archive", named, load)

    def copy_groups(self) -> None:
        """Every seeded tag copied by each client: registry, archive, bundle, import, no-op and the Docker engine."""
        inv, parallel = self.inv, self.args.parallel
        reg_bytes, arc_bytes = inv.total(inv.registry_blobs.values()), inv.total(inv.archive_blobs.values())
        first: tuple[str, Path, Path] | None = None
        for number in range(1, self.args.rounds + 1):
            prefix, facts, archives = (
                self.prefix(f"module{number}"),
                self.work / f"module{number}.fact",
                self.work / f"module-archive{number}",
            )
            first = first or (prefix, archives, facts)
            self.measure(
                Case("raw stream (GET piped into PUT)", "registry", reg_bytes, baseline=True),
                lambda c, n=number: raw_stream(
                    self.source, inv.registry_blobs.values(), self.open_url, self.prefix(f"raw{n}"), parallel
                ),
                in_process=True,
                check=lambda c, n=number: self.check_blobs(c, self.prefix(f"raw{n}")),
            )
            self.measure(
                Case("module registry -> registry", "registry", reg_bytes),
                lambda c, p=prefix, f=facts: self.module_registry(c, p, f),
            )
            plain = self.work / "plain"
            self.measure(
                Case("plain download of the blobs to files", "archive", arc_bytes, baseline=True),
                lambda c, d=plain: download(self.source, inv.archive_blobs.values(), d, parallel),
                in_process=True,
            )
            shutil.rmtree(plain, ignore_errors=True)
            # What the format costs: every archive holds its own copy of the layers it shares with other tags.
            per_tag = self.work / "per-archive"
            case = Case(FLOOR, "archive", arc_bytes)
            case.note = f"writes {inv.archive_file_bytes / MB:.0f} MB as the archives do; a blob an earlier tag got is copied from disk"
            self.measure(case, lambda c, d=per_tag: self.write_per_archive(d), in_process=True)
            shutil.rmtree(per_tag, ignore_errors=True)
            self.measure(
                Case("module registry -> docker archive", "archive", arc_bytes),
                lambda c, d=archives, f=facts: self.module_archive(c, d, f),
                check=lambda c, d=archives: self.record_disk(c, d),
            )
            if number > 1:
                shutil.rmtree(archives, ignore_errors=True)
            self.bundle_round(number)

        self.measure(Case("skopeo copy --all registry -> registry", "registry", reg_bytes), self.skopeo_registry)
        self.measure(Case("skopeo copy -> docker-archive", "archive", arc_bytes), self.skopeo_archive)
        shutil.rmtree(self.work / "skopeo-archive", ignore_errors=True)
        dirs = self.work / "skopeo-dirs"
        self.measure(
            Case("skopeo copy --all --preserve-digests -> dir: per tag", "bundle", reg_bytes),
            lambda c: self.skopeo_dirs(c, dirs),
            check=lambda c: self.check_dirs(c, dirs),
        )
        self.measure(
            Case("skopeo copy --all --preserve-digests dir: -> registry", "import", reg_bytes),
            lambda c: self.skopeo_from_dirs(c, dirs),
        )
        shutil.rmtree(dirs, ignore_errors=True)

        if first is not None:
            prefix, archives, facts = first
            self.measure(
                Case("module no-op re-run (registry + archive)", "noop", 0),
                lambda c: self.module_noop(c, prefix, archives, facts),
            )
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

    def aims_group(self) -> None:
        """The figures issue 22 aims at, without the other clients: registry -> registry beside the raw stream, registry
        -> bundle beside the plain download, bundle -> registry beside the raw PUT (``--rounds`` interleaved rounds), and
        the peak memory of a registry copy of the largest image alone beside that of every tag (flat in the tag count).
        With ``copy`` these rows come from copy_groups, and only the memory case is added."""
        inv, parallel = self.inv, self.args.parallel
        reg_bytes = inv.total(inv.registry_blobs.values())
        for number in range(1, self.args.rounds + 1):
            prefix, facts = self.prefix(f"module{number}"), self.work / f"module{number}.fact"
            self.measure(
                Case("raw stream (GET piped into PUT)", "registry", reg_bytes, baseline=True),
                lambda c, n=number: raw_stream(
                    self.source, inv.registry_blobs.values(), self.open_url, self.prefix(f"raw{n}"), parallel
                ),
                in_process=True,
                check=lambda c, n=number: self.check_blobs(c, self.prefix(f"raw{n}")),
            )
            self.measure(
                Case("module registry -> registry", "registry", reg_bytes),
                lambda c, p=prefix, f=facts: self.module_registry(c, p, f),
            )
            self.bundle_round(number)
        self.one_image()

    def one_image(self) -> None:
        """The module's registry copy of the largest image (all platforms) alone: its peak memory against every tag's."""
        largest = max(self.inv.tags, key=lambda ref: self.inv.total(self.inv.per_image[ref]))
        one = Inventory(tags=[largest], digests={largest: self.inv.digests[largest]})
        prefix, facts = self.prefix("one-image"), self.work / "one-image.fact"

        def copy(case: Case) -> None:
            result = self.module(case, facts, {"registry": {"url": self.open_url, "prefix": prefix}}, images=[largest])
            if not result.get("changed"):
                raise BenchError("the module copied nothing (changed=false)")
            self.check_registry(case, prefix, one)
            case.note += f"; {largest}"

        self.measure(Case(ONE_IMAGE, "memory", self.inv.total(self.inv.per_image[largest])), copy)

    # The monthly update (issue 10) --------------------------------------------------------
    def update_group(self) -> None:
        """A monthly update, on the same data in one run. Last month: a full bundle of the seeded tags, written with the
        connected side's facts file, and its import into two far-side registries (namespaces). Then one release of new
        tags sharing base layers is published on the source (release.py), and each way of carrying it is written and
        imported: the module's delta bundle (``since: last``, the same facts file) into a far side holding last month,
        a full bundle of everything into an empty one, per-tag docker archives of the new tags (written only), and
        skopeo ``dir:`` copies of the new tags into the other far side holding last month."""
        old = self.inv
        connected = self.work / "update-connected.fact"  # the connected side's record: every bundle it wrote
        earlier = self.work / "update-earlier"
        far = {
            name: (self.prefix(f"update-far-{name}"), self.work / f"update-far-{name}.fact")
            for name in ("delta", "skopeo")
        }
        old_bytes = old.total(old.registry_blobs.values())
        setup = [
            self.measure(
                Case(UPDATE_EARLIER, "update-setup", old_bytes),
                lambda c: self.module_bundle(c, earlier, connected),
                check=lambda c: self.check_bundle(c, earlier),
            )
        ]
        for name, (prefix, facts) in far.items():
            setup.append(
                self.measure(
                    Case(f"{UPDATE_EARLIER_IMPORT} ({name} far side)", "update-setup", old_bytes),
                    lambda c, p=prefix, f=facts: self.module_import(c, earlier, p, f),
                )
            )
        published: list[dict[str, Any]] = []
        setup.append(
            self.measure(Case(UPDATE_PUBLISH, "update-setup", 0), lambda c: published.extend(self.publish_release(c)))
        )
        shutil.rmtree(earlier, ignore_errors=True)
        if not all(case.ok for case in setup):
            print("bench: the monthly update's setup failed; its cases do not run", file=sys.stderr, flush=True)
            return
        new_tags = [record["reference"] for record in published]
        new, every = self.source.inventory(new_tags), self.source.inventory(old.tags + new_tags)
        fresh = {digest: blob for digest, blob in every.registry_blobs.items() if digest not in old.registry_blobs}
        self.update = {
            "new_tags": new_tags,
            "new_blobs": len(fresh),
            "new_blob_bytes": every.total(fresh.values()),
            "all_tags": len(every.tags),
            "all_blob_bytes": every.total(every.registry_blobs.values()),
        }
        print(
            f"bench: the release: {len(new_tags)} new tags, {len(fresh)} new blobs, {self.update['new_blob_bytes'] / MB:.1f} MB; "
            f"{len(every.tags)} tags in all",
            file=sys.stderr,
            flush=True,
        )
        fresh_bytes, every_bytes = self.update["new_blob_bytes"], self.update["all_blob_bytes"]

        delta, full = self.work / "update-delta", self.work / "update-full"
        self.measure(
            Case(UPDATE_DELTA, "update", fresh_bytes),
            lambda c: self.module_bundle(c, delta, connected, images=every.tags, since="last"),
            check=lambda c: self.check_delta(c, delta, every, fresh),
        )
        prefix, facts = far["delta"]
        self.measure(
            Case(UPDATE_DELTA_IMPORT, "update-import", fresh_bytes),
            lambda c: self.module_import(c, delta, prefix, facts, inv=every, copies=len(new_tags)),
        )
        shutil.rmtree(delta, ignore_errors=True)
        self.measure(
            Case(UPDATE_FULL, "update", every_bytes),
            lambda c: self.module_bundle(c, full, self.work / "update-full.fact", images=every.tags),
            check=lambda c: self.check_bundle(c, full, every),
        )
        self.measure(
            Case(UPDATE_FULL_IMPORT, "update-import", every_bytes),
            lambda c: self.module_import(
                c, full, self.prefix("update-full-import"), self.work / "update-full-import.fact", inv=every
            ),
        )
        shutil.rmtree(full, ignore_errors=True)
        archives = self.work / "update-archives"
        self.measure(
            Case(UPDATE_ARCHIVES, "update", new.total(new.archive_blobs.values())),
            lambda c: self.module_archive(c, archives, self.work / "update-archives.fact", inv=new),
            check=lambda c: self.check_archives(c, archives, new),
        )
        shutil.rmtree(archives, ignore_errors=True)
        dirs = self.work / "update-dirs"
        new_bytes = new.total(new.registry_blobs.values())
        self.measure(
            Case(UPDATE_DIRS, "update", new_bytes),
            lambda c: self.skopeo_dirs(c, dirs, new),
            check=lambda c: self.check_dirs(c, dirs, new),
        )
        prefix, _facts = far["skopeo"]
        self.measure(
            Case(UPDATE_DIRS_IMPORT, "update-import", new_bytes),
            lambda c: self.skopeo_from_dirs(c, dirs, prefix, new, judge=every),
        )
        shutil.rmtree(dirs, ignore_errors=True)

    def publish_release(self, case: Case) -> list[dict[str, Any]]:
        """release.py's tags on the source registry, checked: each has the digest the seeder computed."""
        try:
            records = load_release().publish_on_testbed(self.info)
        except RuntimeError as exc:  # the seeder's PushError
            raise BenchError(f"publishing the release failed: {exc}") from None
        for record in records:
            repository, tag = split_reference(record["reference"])
            digest = self.source.manifest(repository, tag)[1]
            if digest != record["digest"]:
                raise BenchError(
                    f"the source serves {record['reference']} as {digest}, the seeder pushed {record['digest']}"
                )
        case.note = f"{len(records)} tags: {', '.join(r['reference'] for r in records)}"
        return records

    def check_delta(self, case: Case, directory: Path, inv: Inventory, fresh: dict[str, Blob]) -> None:
        """A delta bundle: a layout naming every tag of inv with the source's digest, whose blobs/sha256 holds exactly the
        blobs the earlier release lacks (fresh) and the manifests of every tag (always written), each hashing to its
        name; a blob the far side already has is a wrong result, and so is a missing one."""
        blobs = self.check_layout(directory, inv)
        held = set(blobs.values())
        wanted = set(fresh) | inv.manifest_digests
        extra, missing = sorted(held - wanted), sorted(wanted - held)
        if extra:
            raise BenchError(f"the delta holds {len(extra)} blob(s) the far side already has, e.g. {extra[0]}")
        if missing:
            raise BenchError(f"the delta lacks {len(missing)} new blob(s) or manifest(s), e.g. {missing[0]}")
        bad = misnamed(blobs, self.args.parallel)
        if bad:
            raise BenchError(f"{len(bad)} blob file(s) of the delta wrong: {bad[0]}")
        contents = json.loads((directory / "contents.json").read_text(encoding="utf-8"))
        if contents.get("delta") is not True:
            raise BenchError("contents.json does not say delta: true")
        self.record_disk(case, directory)
        case.note += (
            f"; exactly the {len(fresh)} new blobs ({inv.total(fresh.values()) / MB:.1f} MB) and "
            f"{len(inv.manifest_digests)} manifests, each hashing to its name"
        )

    def check_archives(self, case: Case, directory: Path, inv: Inventory) -> None:
        """The module's docker archives, ``<dir>/<repository>/<tag>.tar``: manifest.json names the source's config and
        layers of the archive's platform (by digest), and each of those members is there and hashes to its name."""
        for reference in inv.tags:
            repository, tag = split_reference(reference)
            path = directory / repository / f"{tag}.tar"
            if not path.is_file():
                raise BenchError(f"no archive {path}")
            wanted = {blob.digest: blob.size for blob in inv.per_archive[reference]}
            with tarfile.open(path) as archive:
                members = {member.name: member for member in archive.getmembers() if member.isfile()}
                if "manifest.json" not in members:
                    raise BenchError(f"{path.name} has no manifest.json")
                entries = json.loads(archive.extractfile(members["manifest.json"]).read())  # type: ignore[union-attr]
                named = {entry["Config"] for entry in entries} | {
                    layer for entry in entries for layer in entry["Layers"]
                }
                digests = {"sha256:" + Path(name).name for name in named}
                if digests != set(wanted):
                    raise BenchError(
                        f"{reference}: manifest.json names {len(digests)} blobs, not the {len(wanted)} of {ARCHIVE_PLATFORM}"
                    )
                for name in named:
                    handle = archive.extractfile(members[name]) if name in members else None
                    if handle is None or hashlib.file_digest(handle, "sha256").hexdigest() != Path(name).name:
                        raise BenchError(f"{reference}: {name} is missing from the archive or hashes to something else")
        self.record_disk(case, directory)
        case.note += f"; {len(inv.tags)} archives, each member named by manifest.json hashing to its name"

    # registry -> .sqsh (issue 11) ---------------------------------------------------------
    def enroot_group(self) -> None:
        """ENROOT_IMAGES, each as an enroot ``.sqsh``: the module (``enroot: {dir}``) next to the reference pipeline
        (skopeo to an OCI layout, umoci unpack, mksquashfs with the same options), reference first, ``--rounds`` times.
        Each module result is checked with unsquashfs and its listing compared with the reference's."""
        missing = [tool for tool in ("umoci", "mksquashfs", "unsquashfs") if shutil.which(tool) is None]
        for number in range(1, self.args.rounds + 1):
            for reference in ENROOT_IMAGES:
                size = self.inv.total(self.inv.per_archive[reference])
                group = f"enroot {reference}"
                ours, theirs = self.work / f"enroot-module{number}", self.work / f"enroot-reference{number}"
                facts = self.work / f"enroot{number}.fact"
                if missing:
                    case = Case(
                        f"{ENROOT_REFERENCE}: {reference}",
                        group,
                        size,
                        baseline=True,
                        ok=False,
                        note=f"FAILED: not installed: {', '.join(missing)} (Debian packages umoci, squashfs-tools)",
                    )
                    self.cases.append(case)
                    continue
                made = self.measure(
                    Case(f"{ENROOT_REFERENCE}: {reference}", group, size, baseline=True),
                    lambda c, r=reference, d=theirs: self.enroot_reference(c, r, d),
                    check=lambda c, d=theirs: self.check_sqsh(c, d / "out.sqsh"),
                )
                expected = theirs / "out.sqsh" if made.ok else None
                self.measure(
                    Case(f"{ENROOT_MODULE}: {reference}", group, size),
                    lambda c, r=reference, d=ours, f=facts: self.module_enroot(c, r, d, f),
                    check=lambda c, r=reference, d=ours, e=expected: self.check_enroot(c, d / sqsh_name(r), e),
                )
                shutil.rmtree(ours, ignore_errors=True)
                shutil.rmtree(theirs, ignore_errors=True)

    def enroot_reference(self, case: Case, reference: str, root: Path) -> None:
        """``skopeo copy`` (linux/amd64) to an OCI layout, ``umoci unpack`` (``--rootless`` unless root), then
        ``mksquashfs <rootfs> out.sqsh`` with the flags the module passes and SQUASH_OPTIONS."""
        tag = split_reference(reference)[1]
        layout, bundle, out = root / "oci", root / "bundle", root / "out.sqsh"
        root.mkdir(parents=True)
        sandbox, env = self.skopeo_sandbox(case)
        rootless = ["--rootless"] if os.geteuid() != 0 else []
        steps = [
            (
                "skopeo copy",
                [
                    *sandbox,
                    "skopeo",
                    "copy",
                    "--quiet",
                    "--src-authfile",
                    str(self.auth_file),
                    "--src-tls-verify=false",
                    "--override-os",
                    "linux",
                    "--override-arch",
                    "amd64",
                    f"docker://{self.source.host}/{reference}",
                    f"oci:{layout}:{tag}",
                ],
                env,
            ),
            ("umoci unpack", ["umoci", "unpack", *rootless, "--image", f"{layout}:{tag}", str(bundle)], None),
            (
                "mksquashfs",
                ["mksquashfs", str(bundle / "rootfs"), str(out), *SQUASH_FLAGS, *shlex.split(SQUASH_OPTIONS)],
                None,
            ),
        ]
        rss, times = 0, []
        for name, argv, step_env in steps:
            started = time.monotonic()
            proc = run(argv, self.work, env=step_env)
            times.append(f"{name} {time.monotonic() - started:.1f}s, {proc.rss_kib / 1024:.0f} MiB")
            rss, case.client_cpu = max(rss, proc.rss_kib), case.client_cpu + proc.cpu
        case.rss_mib = rss / 1024
        case.note = "; ".join(filter(None, (case.note, "; ".join(times))))

    def module_enroot(self, case: Case, reference: str, directory: Path, facts: Path) -> None:
        result = self.module(case, facts, {"enroot": {"dir": str(directory)}}, images=[reference])
        if not result.get("changed"):
            raise BenchError("the module wrote nothing (changed=false)")

    def check_sqsh(self, case: Case, path: Path) -> None:
        """The file is there and ``unsquashfs -s`` reads it: a squashfs 4.0 superblock with the compression of
        SQUASH_OPTIONS."""
        if not path.is_file():
            raise BenchError(f"no file {path.name}")
        proc = subprocess.run(["unsquashfs", "-s", str(path)], capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise BenchError(f"unsquashfs -s cannot read {path.name}: {(proc.stderr or proc.stdout)[-300:]}")
        compression = re.search(r"^Compression (\S+)", proc.stdout, re.MULTILINE)
        wanted = shlex.split(SQUASH_OPTIONS)[shlex.split(SQUASH_OPTIONS).index("-comp") + 1]
        if compression is None or compression.group(1) != wanted:
            raise BenchError(
                f"unsquashfs -s says compression {compression.group(1) if compression else '?'}, not {wanted}"
            )
        if "-noD" in shlex.split(SQUASH_OPTIONS) and "Data is uncompressed" not in proc.stdout:
            raise BenchError("unsquashfs -s does not say 'Data is uncompressed' (-noD)")
        size = path.stat().st_size
        case.disk_bytes, case.disk_apparent_bytes, case.disk_files = path.stat().st_blocks * 512, size, 1
        case.note = "; ".join(
            filter(None, (case.note, f"{path.name}: {size / MB:.1f} MB, {compression.group(1)}, read by unsquashfs -s"))
        )

    def check_enroot(self, case: Case, path: Path, reference: Path | None) -> None:
        """check_sqsh, then the listing (``unsquashfs -lls``: type and mode, owner, size, path, link target) equals the
        reference's, apart from the files enroot adds (ENROOT_FILES, and /etc if the image has none) and /dev."""
        self.check_sqsh(case, path)
        if reference is None:
            raise BenchError("the reference pipeline failed, so there is nothing to compare the listing with")
        ours, theirs = sqsh_listing(path), sqsh_listing(reference)
        added = [name for name in ENROOT_FILES if name not in ours]
        if added:
            raise BenchError(f"the .sqsh lacks enroot's {', '.join(added)}")
        ignored = set(ENROOT_FILES) | ({"etc"} if "etc" not in theirs else set())
        ours = {k: v for k, v in ours.items() if k not in ignored and k != "dev" and not k.startswith("dev/")}
        theirs = {k: v for k, v in theirs.items() if k != "dev" and not k.startswith("dev/")}
        only_ours, only_theirs = sorted(set(ours) - set(theirs)), sorted(set(theirs) - set(ours))
        if only_ours or only_theirs:
            raise BenchError(
                f"the listings differ: {len(only_ours)} path(s) only in ours (e.g. {only_ours[:1]}), "
                f"{len(only_theirs)} only in the reference (e.g. {only_theirs[:1]})"
            )
        differ = sorted(k for k in ours if ours[k] != theirs[k])
        if differ:
            raise BenchError(
                f"{len(differ)} entr(ies) differ from the reference, e.g. /{differ[0]}: {ours[differ[0]]} against {theirs[differ[0]]}"
            )
        case.note += f"; same {len(ours)} entries as the reference (unsquashfs -lls, enroot's files and /dev aside)"


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


def baseline_name(group: str) -> str:
    """What a group's ratio is measured against."""
    return "reference pipeline" if group.startswith("enroot") else BASELINE_NAMES.get(group, "")


def table(cases: list[Case]) -> str:
    header = (
        "case",
        "seconds",
        "MB/s",
        "ratio",
        "vs",
        "client CPU s",
        "registries CPU s",
        "peak RSS MiB",
        "on disk MB",
        "over unique",
        "note",
    )
    rows = [header]
    for case in cases:
        rows.append(
            (
                case.name + (f" (best of {len(case.rounds)})" if len(case.rounds) > 1 else ""),
                f"{case.seconds:.1f}",
                f"{case.mbps:.0f}" if case.mbps else "-",
                f"{case.ratio:.2f}x" if case.ratio else "-",
                baseline_name(case.group) if case.ratio else "",
                f"{case.client_cpu:.1f}" if case.client_cpu else "-",
                f"{case.registry_cpu:.1f}",
                f"{case.rss_mib:.0f}" if case.rss_mib else "-",
                f"{case.disk_bytes / MB:.0f}" if case.disk_bytes is not None else "-",
                f"{overhead(case):+.2%}" if overhead(case) is not None else "-",
                ("" if case.ok else "FAILED ") + case.note,
            )
        )
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
        if not case.name.startswith("module") or case.group not in COPY_GROUPS:
            continue
        if not case.ok:
            lines.append(f"{case.name}: FAILED: {case.note}")
            continue
        aim = AIMS.get(case.group)
        if aim is not None and case.ratio is not None:
            met = "met" if case.ratio <= aim else "NOT met"
            lines.append(
                f"{case.name}: {case.ratio:.2f}x the {BASELINE_NAMES[case.group]} per byte (aim <= {aim}x): {met}"
            )
        skopeo = next((c for c in cases if c.group == case.group and c.name.startswith("skopeo") and c.ok), None)
        if case.group in ("bundle", "import") and skopeo is not None:
            line = f"{case.name}: {case.seconds / skopeo.seconds:.2f}x the time of {skopeo.name}"
            if case.group == "bundle":
                line += f" (aim: ahead of it): {'met' if case.seconds < skopeo.seconds else 'NOT met'}"
            lines.append(line)
        floor = next((c for c in cases if c.name == FLOOR and c.ok and c.seconds > 0), None)
        if case.group == "archive" and floor is not None:
            lines.append(
                f"{case.name}: {case.seconds / floor.seconds:.2f}x the time of writing the same files plainly ({FLOOR})"
            )
        if case.rss_mib is not None:
            lines.append(
                f"{case.name}: peak RSS {case.rss_mib:.0f} MiB (aim < {MAX_RSS_MIB:.0f} MiB): {'met' if case.rss_mib < MAX_RSS_MIB else 'NOT met'}"
            )
    copies = any(case.group in COPY_GROUPS - {"info"} for case in cases)
    return (
        lines
        + memory_verdict(cases)
        + (disk_verdict(cases) if copies else [])
        + update_verdict(cases)
        + enroot_verdict(cases)
    )


def memory_verdict(cases: list[Case]) -> list[str]:
    """Peak memory flat in the tag count: the registry copy of every tag against the largest image alone."""
    named = {case.name: case for case in cases}
    one, every = named.get(ONE_IMAGE), named.get("module registry -> registry")
    if one is None or every is None or not (one.ok and every.ok and one.rss_mib and every.rss_mib):
        return []
    growth = every.rss_mib / one.rss_mib
    return [
        f"{every.name}: peak RSS {every.rss_mib:.0f} MiB for every tag, {one.rss_mib:.0f} MiB for the largest image alone: "
        f"{growth:.2f}x (aim: flat, <= {MAX_RSS_GROWTH}x): {'met' if growth <= MAX_RSS_GROWTH else 'NOT met'}"
    ]


def update_verdict(cases: list[Case]) -> list[str]:
    """The monthly update: what each way carries (bytes on disk) against the delta bundle, the delta against the new
    blobs' bytes, and the time to write and to import each."""
    named = {case.name: case for case in cases}
    if not any(case.group.startswith("update") for case in cases):
        return []
    lines = [f"{case.name}: {case.note}" for case in cases if case.group.startswith("update") and not case.ok]
    delta = named.get(UPDATE_DELTA)
    if delta is not None and delta.ok and delta.disk_bytes is not None:
        share = overhead(delta) or 0.0
        lines.append(
            f"monthly update: the delta bundle carries {delta.disk_bytes / MB:.1f} MB for {delta.bytes / MB:.1f} MB of new blobs: "
            f"{share:+.2%} (aim < +{MAX_DELTA_OVERHEAD:.0%}): {'met' if share < MAX_DELTA_OVERHEAD else 'NOT met'}; "
            "it holds exactly the new blobs and the manifests"
        )
    for name in UPDATE_CARRIED:
        case = named.get(name)
        if case is None or not case.ok or case.disk_bytes is None:
            continue
        line = f"monthly update: carried by {name}: {case.disk_bytes / MB:.1f} MB in {case.disk_files} files"
        if delta is not None and delta.ok and delta.disk_bytes and case is not delta:
            line += f", {case.disk_bytes / delta.disk_bytes:.1f}x the delta bundle"
        line += f"; written in {case.seconds:.1f}s"
        imported = named.get(UPDATE_IMPORTS.get(name, ""))
        if imported is not None and imported.ok:
            line += f", imported in {imported.seconds:.1f}s"
        lines.append(line)
    return lines


def enroot_verdict(cases: list[Case]) -> list[str]:
    """registry -> .sqsh: the module's time against the reference pipeline's, image by image and in all (aim <= 1.0x),
    and peak memory against image size (aim: flat)."""
    pairs = []
    for case in cases:
        if case.group.startswith("enroot") and not case.baseline:
            reference = next((c for c in cases if c.group == case.group and c.baseline), None)
            pairs.append((case, reference))
    lines = []
    for ours, theirs in pairs:
        image = ours.group.split(" ", 1)[1]
        if not ours.ok or theirs is None or not theirs.ok:
            failed = ours if not ours.ok else theirs
            lines.append(f"enroot {image}: {failed.note if failed else 'FAILED: no reference case'}")
            continue
        lines.append(
            f"enroot {image} ({ours.bytes / MB:.0f} MB): module {ours.seconds:.1f}s, reference {theirs.seconds:.1f}s: "
            f"{ours.seconds / theirs.seconds:.2f}x (aim <= {ENROOT_AIM}x): {'met' if ours.seconds <= ENROOT_AIM * theirs.seconds else 'NOT met'}; "
            f"peak RSS {ours.rss_mib or 0:.0f} MiB against {theirs.rss_mib or 0:.0f} MiB"
        )
    done = [(o, t) for o, t in pairs if o.ok and t is not None and t.ok]
    if done:
        mine, theirs_total = sum(o.seconds for o, _t in done), sum(t.seconds for _o, t in done)
        lines.append(
            f"enroot, all {len(done)} images: module {mine:.1f}s, reference {theirs_total:.1f}s: {mine / theirs_total:.2f}x "
            f"(aim <= {ENROOT_AIM}x): {'met' if mine <= ENROOT_AIM * theirs_total else 'NOT met'}"
        )
        for side, rows in (("module", [o for o, _t in done]), ("reference", [t for _o, t in done])):
            rss = [(c.bytes, c.rss_mib or 0.0) for c in rows]
            small, large = min(rss), max(rss)
            lines.append(
                f"enroot peak RSS, {side}: {min(r for _b, r in rss):.0f} to {max(r for _b, r in rss):.0f} MiB; "
                f"{small[1]:.0f} MiB for the smallest image ({small[0] / MB:.0f} MB), {large[1]:.0f} MiB for the largest "
                f"({large[0] / MB:.0f} MB)"
            )
    return lines


def disk_verdict(cases: list[Case]) -> list[str]:
    """Bytes on disk of each result that has them, against its unique blob bytes; the bundle against its aim."""
    lines = []
    bundle = next((c for c in cases if c.name == BUNDLE and c.ok and c.disk_bytes), None)
    for case in cases:
        share = overhead(case)
        if case.group not in COPY_GROUPS or share is None or case.disk_bytes is None or not case.ok:
            continue
        line = (
            f"bytes on disk: {case.name}: {case.disk_bytes / MB:.1f} MB in {case.disk_files} files, "
            f"{share:+.2%} over the {case.bytes / MB:.1f} MB of unique blobs it holds"
        )
        if case is bundle:
            line += f" (aim < +{MAX_DISK_OVERHEAD:.0%}): {'met' if share < MAX_DISK_OVERHEAD else 'NOT met'}"
        elif bundle is not None and bundle.disk_bytes:
            line += f"; {case.disk_bytes / bundle.disk_bytes:.2f}x the bundle"
        lines.append(line)
    if bundle is None:
        lines.append(f"bytes on disk: {BUNDLE}: not measured (the case failed or did not run)")
    return lines


def update_document(release: dict[str, Any], cases: list[Case]) -> dict[str, Any] | None:
    """The monthly update in results.json: the release, bytes carried and seconds to write and to import each way."""
    if not release:
        return None
    named = {case.name: case for case in cases}
    ways = {}
    for name in UPDATE_CARRIED:
        case, imported = named.get(name), named.get(UPDATE_IMPORTS.get(name, ""))
        if case is not None:
            ways[name] = {
                "ok": case.ok,
                "carried_bytes": case.disk_bytes,
                "carried_apparent_bytes": case.disk_apparent_bytes,
                "files": case.disk_files,
                "export_seconds": round(case.seconds, 2),
                "import": imported.name if imported else None,
                "import_seconds": round(imported.seconds, 2) if imported else None,
                "import_ok": imported.ok if imported else None,
            }
    delta = named.get(UPDATE_DELTA)
    return {
        **release,
        "aim_delta_overhead": MAX_DELTA_OVERHEAD,
        "ways": ways,
        "delta_overhead": overhead(delta) if delta is not None and delta.ok else None,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n", 1)[0])
    parser.add_argument(
        "--testbed", required=True, type=Path, help="the directory of a running test bed (testbed.json)"
    )
    parser.add_argument(
        "--collections", required=True, type=Path, help="a directory holding ansible_collections/airgap/ngc"
    )
    parser.add_argument(
        "--work", required=True, type=Path, help="scratch directory (emptied first, removed at the end)"
    )
    parser.add_argument("--out", required=True, type=Path, help="where to write the results as JSON")
    parser.add_argument(
        "--parallel", type=int, default=4, help="concurrent blob transfers of the module and the baselines"
    )
    parser.add_argument(
        "--rounds", type=int, default=3, help="rounds of the baselines and the module cases (the best counts)"
    )
    parser.add_argument("--no-docker", action="store_true", help="skip the Docker engine cases")
    parser.add_argument(
        "--only",
        default=",".join(GROUPS),
        help=f"comma-separated groups to run, of {', '.join(GROUPS)} (default: all): copy = the copies of the "
        "seeded tags, update = the monthly update (delta bundles), enroot = registry -> .sqsh",
    )
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.parallel < 1:
        parser.error("--rounds and --parallel must be at least 1")
    args.testbed, args.collections, args.work, args.out = (
        path.resolve() for path in (args.testbed, args.collections, args.work, args.out)
    )
    args.only = {group.strip() for group in args.only.split(",") if group.strip()}
    unknown = sorted(args.only - set(GROUPS))
    if unknown or not args.only:
        parser.error(
            f"--only: unknown group(s) {', '.join(unknown) or '(none given)'}; use some of {', '.join(GROUPS)}"
        )
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
    print(
        f"\n{len(bench.inv.tags)} tags; unique bytes: {bench.inv.total(bench.inv.registry_blobs.values()) / MB:.0f} MB to a registry "
        f"(all platforms), {bench.inv.total(bench.inv.archive_blobs.values()) / MB:.0f} MB to docker archives ({ARCHIVE_PLATFORM}); "
        f"parallel {args.parallel}. Ratio: seconds per byte over the baseline's (registry cases: raw stream; "
        f"archive cases: plain download; bundle cases: plain download of every platform's blobs; "
        f"import cases: raw PUT of those files).\n"
    )
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
        "aims": {
            "registry_ratio": AIMS["registry"],
            "archive_ratio": AIMS["archive"],
            "bundle_ratio": AIMS["bundle"],
            "import_ratio": AIMS["import"],
            "peak_rss_mib": MAX_RSS_MIB,
            "bundle_disk_overhead": MAX_DISK_OVERHEAD,
        },
        "disk": {
            case.name: {
                "bytes": case.disk_bytes,
                "apparent_bytes": case.disk_apparent_bytes,
                "files": case.disk_files,
                "unique_bytes": case.bytes,
                "overhead": overhead(case),
            }
            for case in cases
            if case.disk_bytes is not None
        },
        "groups": [group for group in GROUPS if group in args.only],
        "update": update_document(bench.update, cases),
        "enroot": {"images": list(ENROOT_IMAGES), "squash_options": SQUASH_OPTIONS, "aim_ratio": ENROOT_AIM}
        if "enroot" in args.only
        else None,
        "cases": [asdict(case) for case in cases],
        "checks": checks,
        "seconds": round(time.monotonic() - started, 1),
    }
    args.out.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    print(f"\nresults: {args.out}; the benchmark took {document['seconds']:.0f}s")
    return 0 if all(case.ok for case in cases) else 1


if __name__ == "__main__":
    sys.exit(main())
