# Copyright (c) airgap.ngc contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The benchmark behind ``make bench``: ngc_image_mirror against skopeo, the Docker engine and a raw stream.

Runs against a test bed that is already up (``scripts/bench.sh`` starts and stops it) and, in
one run and side by side, copies the same set of tags (every seeded tag) with each client:

- registry to registry: the module, ``skopeo copy --all``, the Docker engine (pull, tag, push),
  and the raw stream (each unique blob GET from the source piped into a monolithic upload on
  the open registry: the limit of this machine);
- registry to docker archive: the module, ``skopeo copy docker-archive:``, the Docker engine
  (pull, save), and a plain download of the blobs to files;
- a no-op re-run of the module (both destinations), which must report ``changed: false``.

Each case writes into a fresh namespace (prefix) or directory, starts after ``sync`` and its
time includes a final ``sync``, so every client pays for getting its data to disk. Ratios are
per byte: a case's seconds per byte divided by its baseline's (1.00 = as fast as the baseline).
The module runs as its own process under ``/usr/bin/time -v``, which gives its peak memory.
Only requests and the standard library are used; nothing from plugins/ is imported.
"""
from __future__ import annotations

import argparse
import base64
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator
from urllib.parse import urljoin

import requests

CHUNK = 1024 * 1024
MIB = 1024 * 1024
MB = 1000 * 1000
USERNAME = "$oauthtoken"
MODULE = "ansible_collections.airgap.ngc.plugins.modules.ngc_image_mirror"
TIME = "/usr/bin/time"
ARCHIVE_PLATFORM = "linux/amd64"
INDEX_TYPES = frozenset(("application/vnd.oci.image.index.v1+json", "application/vnd.docker.distribution.manifest.list.v2+json"))
ACCEPT = ", ".join((
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
))
TARGETS = {"registry": 1.1, "archive": 1.5}
MAX_RSS_MIB = 150.0
_RSS_RE = re.compile(r"Maximum resident set size \(kbytes\): (\d+)")


class BenchError(Exception):
    """A case could not run or gave a wrong result."""


# -- what is copied ------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Blob:
    digest: str
    size: int
    repository: str  # a source repository that holds it


@dataclass
class Inventory:
    """The tags, and the unique blobs a registry copy (all platforms) and a docker archive (one platform) need."""

    tags: list[str] = field(default_factory=list)
    registry_blobs: dict[str, Blob] = field(default_factory=dict)
    archive_blobs: dict[str, Blob] = field(default_factory=dict)
    archive_file_bytes: int = 0  # each archive holds its own copy of shared layers: what all archives add up to

    @staticmethod
    def total(blobs: dict[str, Blob]) -> int:
        return sum(blob.size for blob in blobs.values())


def _platform(entry: dict[str, Any]) -> str:
    platform = entry.get("platform") or {}
    text = f"{platform.get('os')}/{platform.get('architecture')}"
    return f"{text}/{platform['variant']}" if platform.get("variant") else text


def _blobs_of(manifest: dict[str, Any], repository: str) -> list[Blob]:
    descriptors = [manifest["config"]] + list(manifest.get("layers") or [])
    return [Blob(d["digest"], int(d["size"]), repository) for d in descriptors]


# -- the source registry (token auth, like nvcr.io) ---------------------------------------------------------------------
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
            response.raise_for_status()
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

    def manifest(self, repository: str, reference: str) -> tuple[str, dict[str, Any]]:
        response = self.get(repository, f"manifests/{reference}", headers={"Accept": ACCEPT})
        data = response.json()
        media_type = response.headers.get("Content-Type", "").split(";")[0].strip() or data.get("mediaType", "")
        return media_type, data

    def blob(self, blob: Blob) -> requests.Response:
        return self.get(blob.repository, f"blobs/{blob.digest}", stream=True)

    def inventory(self, tags: list[str]) -> Inventory:
        inv = Inventory(tags=tags)
        for reference in tags:
            repository, _, tag = reference.rpartition(":")
            media_type, top = self.manifest(repository, tag)
            archive: list[Blob] = []
            if media_type in INDEX_TYPES:
                for entry in top.get("manifests") or []:
                    _, child = self.manifest(repository, entry["digest"])
                    blobs = _blobs_of(child, repository)
                    for blob in blobs:
                        inv.registry_blobs.setdefault(blob.digest, blob)
                    if _platform(entry) == ARCHIVE_PLATFORM and not archive:
                        archive = blobs
            else:
                archive = _blobs_of(top, repository)
                for blob in archive:
                    inv.registry_blobs.setdefault(blob.digest, blob)
            if not archive:
                raise BenchError(f"{reference} has no {ARCHIVE_PLATFORM} image for a docker archive")
            for blob in archive:
                inv.archive_blobs.setdefault(blob.digest, blob)
            inv.archive_file_bytes += sum({b.digest: b.size for b in archive}.values())
        return inv


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


def raw_stream(source: Source, blobs: dict[str, Blob], dest_url: str, prefix: str, parallel: int) -> None:
    """GET each blob from the source and pipe it into a monolithic upload (POST, then one PUT) on the destination."""
    local = threading.local()

    def one(blob: Blob) -> None:
        session = getattr(local, "session", None)
        if session is None:
            session = local.session = requests.Session()
            session.trust_env = False
        start = session.post(f"{dest_url}/v2/{prefix}/{blob.repository}/blobs/uploads/", timeout=60)
        if start.status_code != 202:
            raise BenchError(f"starting an upload of {blob.digest} answered {start.status_code}")
        location = urljoin(dest_url + "/", start.headers["Location"])
        location += ("&" if "?" in location else "?") + f"digest={blob.digest}"
        with source.blob(blob) as response:
            put = session.put(location, data=_Body(response.iter_content(CHUNK), blob.size),
                              headers={"Content-Type": "application/octet-stream"}, timeout=600)
        if put.status_code != 201:
            raise BenchError(f"uploading {blob.digest} answered {put.status_code}: {put.text[:200]}")

    _in_parallel(one, blobs.values(), parallel)


def plain_download(source: Source, blobs: dict[str, Blob], directory: Path, parallel: int) -> None:
    """GET each blob and write it to a file."""
    directory.mkdir(parents=True, exist_ok=True)

    def one(blob: Blob) -> None:
        with source.blob(blob) as response, open(directory / blob.digest.replace(":", "-"), "wb") as handle:
            for chunk in response.iter_content(CHUNK):
                handle.write(chunk)

    _in_parallel(one, blobs.values(), parallel)


def read_only(source: Source, blobs: dict[str, Blob], parallel: int) -> None:
    """GET each blob and drop it (warms the source's page cache; the source side alone)."""

    def one(blob: Blob) -> None:
        with source.blob(blob) as response:
            for _ in response.iter_content(CHUNK):
                pass

    _in_parallel(one, blobs.values(), parallel)


# -- processes --------------------------------------------------------------------------------------------------------------
@dataclass
class Proc:
    """A finished command: exit code, output, and its peak resident memory (from /usr/bin/time -v)."""

    rc: int
    stdout: str
    stderr: str
    rss_kib: int


def run(argv: list[str], work: Path, env: dict[str, str] | None = None, stdin: str | None = None, check: bool = True) -> Proc:
    timing = work / "time.txt"
    proc = subprocess.run([TIME, "-v", "-o", str(timing), *argv], env=env, input=stdin, capture_output=True, text=True, check=False)
    match = _RSS_RE.search(timing.read_text(encoding="utf-8") if timing.exists() else "")
    result = Proc(proc.returncode, proc.stdout, proc.stderr, int(match.group(1)) if match else 0)
    if check and proc.returncode != 0:
        raise BenchError(f"{' '.join(argv[:3])} ... failed ({proc.returncode}): {(proc.stderr or proc.stdout)[-800:]}")
    return result


# -- the cases --------------------------------------------------------------------------------------------------------------
@dataclass
class Case:
    name: str
    group: str  # registry, archive or noop
    bytes: int
    seconds: float = 0.0
    seconds_before_sync: float = 0.0
    rss_mib: float | None = None
    ok: bool = True
    note: str = ""
    baseline: bool = False
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
        self.cases: list[Case] = []
        self.facts = self.work / "module.fact"
        self.module_archive = self.work / "module-archive"
        self.module_prefix = self.prefix("module")
        self.auth_file = self.work / "auth.json"
        seed = json.loads(Path(self.info["seed_file"]).read_text(encoding="utf-8"))
        tags = [t["reference"] for repo in seed["repositories"] for t in repo.get("tags") or []]
        self.inv = self.source.inventory(tags)

    def prefix(self, case: str) -> str:
        return f"bench-{self.run_id}-{case}"

    # Measuring ------------------------------------------------------------------------------
    def measure(self, case: Case, action: Callable[[Case], None]) -> Case:
        print(f"bench: {case.name} ...", file=sys.stderr, flush=True)
        os.sync()
        started = time.monotonic()
        try:
            action(case)
        except (BenchError, requests.RequestException, OSError, ValueError, KeyError) as exc:
            case.ok = False
            case.note = (case.note + "; " if case.note else "") + f"FAILED: {exc}"
        case.seconds_before_sync = time.monotonic() - started
        os.sync()
        case.seconds = time.monotonic() - started
        print(f"bench: {case.name}: {case.seconds:.1f}s{' ' + case.note if case.note else ''}", file=sys.stderr, flush=True)
        self.cases.append(case)
        return case

    # The module -------------------------------------------------------------------------------
    def module(self, case: Case, params: dict[str, Any]) -> dict[str, Any]:
        args = {"registry_url": self.info["source_registry_url"], "images": self.inv.tags, "facts_file": str(self.facts),
                "parallel": self.args.parallel, **params}
        args_file = self.work / "module-args.json"
        args_file.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": args}), encoding="utf-8")
        env = dict(os.environ, NGC_API_KEY=self.info["api_key"], PYTHONPATH=str(self.args.collections))
        proc = run([sys.executable, "-m", MODULE, str(args_file)], self.work, env=env, check=False)
        case.rss_mib = proc.rss_kib / 1024
        try:
            result = json.loads(proc.stdout[proc.stdout.index("{"):])
        except ValueError:
            raise BenchError(f"the module printed no result (rc {proc.rc}): {proc.stderr[-800:]}") from None
        if result.get("failed") or proc.rc != 0:
            raise BenchError(f"the module failed: {result.get('msg')}")
        case.note = f"transferred {result.get('bytes_transferred', 0) / MB:.0f} MB, reused {result.get('bytes_reused', 0) / MB:.0f} MB"
        return result

    def module_registry(self, case: Case) -> None:
        result = self.module(case, {"registry": {"url": self.open_url, "prefix": self.module_prefix}})
        if not result.get("changed"):
            raise BenchError("the module copied nothing (changed=false)")

    def module_archive_case(self, case: Case) -> None:
        result = self.module(case, {"archive": {"dir": str(self.module_archive), "format": "docker"}})
        if not result.get("changed"):
            raise BenchError("the module wrote nothing (changed=false)")

    def module_noop(self, case: Case) -> None:
        result = self.module(case, {"registry": {"url": self.open_url, "prefix": self.module_prefix},
                                    "archive": {"dir": str(self.module_archive), "format": "docker"}})
        copied = [i["reference"] for i in result.get("images") or [] if i.get("status") != "skipped"]
        case.note = f"changed={str(bool(result.get('changed'))).lower()}"
        if result.get("changed") or copied:
            raise BenchError(f"the re-run was not a no-op: {', '.join(copied) or 'changed=true'}")

    # skopeo -----------------------------------------------------------------------------------
    def write_authfile(self) -> None:
        token = base64.b64encode(f"{USERNAME}:{self.info['api_key']}".encode("utf-8")).decode("ascii")
        fd = os.open(self.auth_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump({"auths": {self.source.host: {"auth": token}}}, handle)

    def skopeo(self, case: Case, destination: Callable[[str, str], str], extra: list[str]) -> None:
        rss = 0
        for reference in self.inv.tags:
            repository, _, tag = reference.rpartition(":")
            argv = ["skopeo", "copy", "--quiet", "--src-authfile", str(self.auth_file), "--src-tls-verify=false", *extra,
                    f"docker://{self.source.host}/{reference}", destination(repository, tag)]
            rss = max(rss, run(argv, self.work).rss_kib)
        case.rss_mib = rss / 1024

    def skopeo_registry(self, case: Case) -> None:
        prefix = self.prefix("skopeo")
        self.skopeo(case, lambda repo, tag: f"docker://{self.open_host}/{prefix}/{repo}:{tag}", ["--all", "--dest-tls-verify=false"])

    def skopeo_archive(self, case: Case) -> None:
        root = self.work / "skopeo-archive"

        def destination(repo: str, tag: str) -> str:
            (root / repo).mkdir(parents=True, exist_ok=True)
            return f"docker-archive:{root / repo / tag}.tar:{self.source.host}/{repo}:{tag}"

        self.skopeo(case, destination, [])

    # The Docker engine ------------------------------------------------------------------------
    def docker_env(self) -> dict[str, str]:
        return dict(os.environ, DOCKER_HOST=self.info["docker_host"], DOCKER_CONFIG=str(self.work / "docker-config"))

    def docker(self, *argv: str, stdin: str | None = None) -> Proc:
        return run(["docker", *argv], self.work, env=self.docker_env(), stdin=stdin)

    def docker_clean(self) -> None:
        """Remove every image, so that pulls are real."""
        ids = sorted(set(self.docker("image", "ls", "-aq").stdout.split()))
        if ids:
            self.docker("image", "rm", "-f", *ids)
        self.docker("image", "prune", "-af")

    def docker_login(self) -> None:
        self.docker("login", "-u", USERNAME, "--password-stdin", self.source.host, stdin=self.info["api_key"])

    def docker_push(self, case: Case) -> None:
        prefix = self.prefix("docker")
        for reference in self.inv.tags:
            source = f"{self.source.host}/{reference}"
            target = f"{self.open_host}/{prefix}/{reference}"
            self.docker("pull", "-q", source)
            self.docker("tag", source, target)
            self.docker("push", target)
        case.note = f"{len(self.inv.tags)} tags, one platform each"

    def docker_save(self, case: Case) -> None:
        root = self.work / "docker-archive"
        for reference in self.inv.tags:
            repository, _, tag = reference.rpartition(":")
            (root / repository).mkdir(parents=True, exist_ok=True)
            source = f"{self.source.host}/{reference}"
            self.docker("pull", "-q", source)
            self.docker("save", "-o", f"{root / repository / tag}.tar", source)
        case.note = f"{len(self.inv.tags)} archives"

    # The run ----------------------------------------------------------------------------------
    def execute(self) -> list[Case]:
        inv, parallel = self.inv, self.args.parallel
        reg_bytes, arc_bytes = inv.total(inv.registry_blobs), inv.total(inv.archive_blobs)
        print(f"bench: {len(inv.tags)} tags; registry copy: {len(inv.registry_blobs)} unique blobs, {reg_bytes / MB:.0f} MB; "
              f"docker archives: {len(inv.archive_blobs)} unique blobs, {arc_bytes / MB:.0f} MB "
              f"({inv.archive_file_bytes / MB:.0f} MB in all archives)", file=sys.stderr, flush=True)
        self.write_authfile()
        warm = Case("source read only (GET, discard)", "info", reg_bytes)
        self.measure(warm, lambda c: read_only(self.source, inv.registry_blobs, parallel))

        # Registry to registry.
        self.measure(Case("raw stream (GET piped into PUT)", "registry", reg_bytes, baseline=True),
                     lambda c: raw_stream(self.source, inv.registry_blobs, self.open_url, self.prefix("raw"), parallel))
        self.measure(Case("module registry -> registry", "registry", reg_bytes), self.module_registry)
        self.measure(Case("skopeo copy --all registry -> registry", "registry", reg_bytes), self.skopeo_registry)

        # Registry to docker archive.
        plain = self.work / "plain"
        self.measure(Case("plain download of the blobs to files", "archive", arc_bytes, baseline=True),
                     lambda c: plain_download(self.source, inv.archive_blobs, plain, parallel))
        shutil.rmtree(plain, ignore_errors=True)
        self.measure(Case("module registry -> docker archive", "archive", arc_bytes), self.module_archive_case)
        self.measure(Case("skopeo copy -> docker-archive", "archive", arc_bytes), self.skopeo_archive)
        shutil.rmtree(self.work / "skopeo-archive", ignore_errors=True)

        # Nothing to do.
        self.measure(Case("module no-op re-run (registry + archive)", "noop", 0), self.module_noop)
        shutil.rmtree(self.module_archive, ignore_errors=True)

        # The Docker engine.
        if self.info.get("docker_host") and not self.args.no_docker:
            try:
                self.docker_login()
                self.docker_clean()
            except BenchError as exc:
                print(f"bench: the Docker engine is not usable: {exc}", file=sys.stderr)
            else:
                self.measure(Case("docker pull + tag + push", "registry", arc_bytes), self.docker_push)
                self.docker_clean()
                self.measure(Case("docker pull + save", "archive", arc_bytes), self.docker_save)
                self.docker_clean()
                shutil.rmtree(self.work / "docker-archive", ignore_errors=True)
        return self.cases


# -- the report ---------------------------------------------------------------------------------------------------------------
def score(cases: list[Case]) -> None:
    """Fill in MB/s and the per-byte ratio against each group's baseline."""
    baselines = {c.group: c for c in cases if c.baseline and c.ok}
    for case in cases:
        if case.bytes and case.seconds > 0:
            case.mbps = case.bytes / MB / case.seconds
        base = baselines.get(case.group)
        if base is not None and base.mbps and case.mbps and case.ok:
            case.ratio = base.mbps / case.mbps


def table(cases: list[Case]) -> str:
    rows = [("case", "seconds", "MB/s", "ratio", "vs", "peak RSS MiB", "note")]
    for case in cases:
        base = {"registry": "raw stream", "archive": "plain download"}.get(case.group, "")
        rows.append((
            case.name,
            f"{case.seconds:.1f}",
            f"{case.mbps:.0f}" if case.mbps else "-",
            f"{case.ratio:.2f}x" if case.ratio else "-",
            base if case.ratio else "",
            f"{case.rss_mib:.0f}" if case.rss_mib else "-",
            case.note,
        ))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    lines = []
    for index, row in enumerate(rows):
        cells = [row[0].ljust(widths[0])] + [cell.rjust(width) if i != 3 else cell.ljust(width)
                                             for i, (cell, width) in enumerate(zip(row[1:-1], widths[1:]), start=1)]
        lines.append("  ".join(cells + [row[-1]]).rstrip())
        if index == 0:
            lines.append("  ".join("-" * w for w in widths) + "  ----")
    return "\n".join(lines)


def verdict(cases: list[Case]) -> list[str]:
    """How the module did against the issue's aims."""
    lines = []
    for case in cases:
        if not case.name.startswith("module"):
            continue
        aim = TARGETS.get(case.group)
        if aim is not None and case.ratio is not None:
            lines.append(f"{case.name}: {case.ratio:.2f}x the baseline (aim <= {aim}x): {'met' if case.ratio <= aim else 'NOT met'}")
        if case.rss_mib is not None:
            lines.append(f"{case.name}: peak RSS {case.rss_mib:.0f} MiB (aim < {MAX_RSS_MIB:.0f}): {'met' if case.rss_mib < MAX_RSS_MIB else 'NOT met'}")
        if not case.ok:
            lines.append(f"{case.name}: FAILED")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--testbed", required=True, type=Path, help="the directory of a running test bed (testbed.json)")
    parser.add_argument("--collections", required=True, type=Path, help="a directory holding ansible_collections/airgap/ngc")
    parser.add_argument("--work", required=True, type=Path, help="scratch directory (emptied first)")
    parser.add_argument("--out", required=True, type=Path, help="where to write the results as JSON")
    parser.add_argument("--parallel", type=int, default=4, help="concurrent blob transfers for the module and the raw stream")
    parser.add_argument("--no-docker", action="store_true", help="skip the Docker engine cases")
    args = parser.parse_args(argv)
    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    started = time.monotonic()
    bench = Bench(args)
    cases = bench.execute()
    score(cases)
    report = table(cases)
    checks = verdict(cases)
    print()
    print(report)
    print()
    print("\n".join(checks))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "schema_version": 1,
        "tags": bench.inv.tags,
        "parallel": args.parallel,
        "registry_unique_bytes": bench.inv.total(bench.inv.registry_blobs),
        "archive_unique_bytes": bench.inv.total(bench.inv.archive_blobs),
        "archive_file_bytes": bench.inv.archive_file_bytes,
        "aims": {"registry_ratio": TARGETS["registry"], "archive_ratio": TARGETS["archive"], "peak_rss_mib": MAX_RSS_MIB},
        "cases": [asdict(case) for case in cases],
        "checks": checks,
        "seconds": round(time.monotonic() - started, 1),
    }
    args.out.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    shutil.rmtree(args.work, ignore_errors=True)
    return 0 if all(case.ok for case in cases) else 1


if __name__ == "__main__":
    sys.exit(main())
