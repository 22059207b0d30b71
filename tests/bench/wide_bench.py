# Copyright (c) airgap.ngc contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A wide catalog (thousands of tiny tags): ngc_catalog_info and ngc_image_mirror against skopeo, by time and requests.

Runs against a test bed that is already up (``--testbed DIR``, from ``python -m tests.testbed up --dir DIR --no-engine``;
give the bench a test bed of its own: its seed file gets the wide repositories), or starts one without an engine
(``--start-testbed DIR``) and stops it at the end (also on Ctrl-C or TERM), emptying its destination registry. For each ``--tags N`` it seeds N tiny tags over
N/20 repositories ``nvidia/wide-<N>-<i>`` (tests/testbed/seed.py ``seed_wide``: one shared base layer, one tiny
layer and config per tag), then, side by side, with no added latency and with ``--latency`` seconds added to every
request of the source side (the test bed's fault proxy in front of the token registry and the NGC stand-in, which
is also the token realm, both get a ``delay`` rule for every request):

- list: ``ngc_catalog_info`` of the wide repositories (with digests) vs one ``skopeo list-tags`` per repository;
- first mirror registry -> registry: ``ngc_image_mirror`` with its default ``parallel_images`` (and, without
  latency, with ``parallel_images: 1``) vs one ``skopeo sync --src docker --dest docker`` per repository;
- no-op: the module again with its facts file, and with a fresh facts file (every destination is looked at), vs
  ``skopeo sync`` again into the same namespace.

The source is always reached through the fault proxy and the destination (the open registry) through a counting
proxy started here (tests/testbed/proxy.py, stopped at the end), so every case's requests are counted per side
(``GET /_testbed/stats``): source registry, NGC stand-in (catalog API and tokens), destination. skopeo gets the key
in an auth file and an empty blob-info cache of its own per N and latency (as root, a private mount namespace).
Every case checks its result: the listing names every tag with the seeded digest (skopeo's, every tag); every
destination tag has the source's digest (HEAD of each, after the clock stops); a module no-op is
``changed: false`` with every image skipped. The facts cost is measured on its own: the collection's facts store
(imported from ``--collections``) records N and 3N image records, then closes (the end-of-run compaction).

Prints a table and writes JSON (``--out``). Uses requests, the standard library, tests/testbed and skopeo.

    python tests/bench/wide_bench.py --testbed DIR|--start-testbed DIR --collections BUILD_DIR --work DIR --tags 1000 [--tags 3000] \\
        [--latency 0.05] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import requests

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from tests.testbed._common import ProcessRecord, python_env, python_module_argv, spawn, wait_ready_file, write_json  # noqa: E402  pylint: disable=wrong-import-position
from tests.testbed.seed import seed_wide  # noqa: E402  pylint: disable=wrong-import-position
from tests.testbed.testbed import NGC_USERNAME, Testbed, TestbedInfo, running_testbed, write_authfile  # noqa: E402  pylint: disable=wrong-import-position

MIRROR = "ansible_collections.airgap.ngc.plugins.modules.ngc_image_mirror"
CATALOG = "ansible_collections.airgap.ngc.plugins.modules.ngc_catalog_info"
STATE = "ansible_collections.airgap.ngc.plugins.module_utils._state.facts"
TIME = "/usr/bin/time"
SKOPEO_SYSTEM_CACHE = "/var/lib/containers/cache"
ACCEPT = ", ".join(
    (
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    )
)
AIMS = {"first mirror": 0.5, "no-op": 0.2, "no-op requests per tag per side": 1.0}
UNSIGNED_NOOP = "module, facts file, signatures off"
"""A no-op without any signature discovery."""
RELISTED_NOOP = "module, relisting signatures"
"""A no-op that lists each repository's tags again (``signatures_relist_after: 0``): what relisting costs in requests."""
SIDES = ("source", "ngc", "destination")
KINDS = (
    ("token", re.compile(r"^/(token|proxy_auth)$")),
    ("ping", re.compile(r"^/v2/$")),
    ("manifests", re.compile(r"/manifests/")),
    ("blobs", re.compile(r"/blobs/")),
    ("tags", re.compile(r"/tags/list$")),
    ("catalog API", re.compile(r"^/v2/(org|orgs|search)")),
)


class BenchError(Exception):
    """A case failed or its result is wrong."""


@dataclass
class Case:
    name: str
    group: str  # list, first mirror, no-op
    client: str  # module or skopeo
    tags: int
    latency: float
    seconds: float = 0.0
    requests: dict[str, int] = field(default_factory=dict)  # side -> count
    kinds: dict[str, dict[str, int]] = field(default_factory=dict)  # side -> kind -> count
    per_tag: dict[str, float] = field(default_factory=dict)
    rss_mib: float | None = None
    ok: bool = True
    note: str = ""
    ratio: float | None = None  # seconds over skopeo's in the same group, tags and latency


# -- request counters --------------------------------------------------------------------------------------------------
class Counters:
    """The stats and delay rules of the source proxy, the NGC stand-in and the destination proxy."""

    def __init__(self, info: TestbedInfo, destination_url: str) -> None:
        self.urls = {"source": info.source_proxy_url, "ngc": info.ngc_api_url, "destination": destination_url}

    def delay(self, seconds: float) -> None:
        """Every request to the source side (registry proxy and NGC stand-in) waits `seconds` before its answer."""
        for side in ("source", "ngc"):
            requests.delete(f"{self.urls[side]}/_testbed/faults", timeout=10).raise_for_status()
            if seconds > 0:
                requests.post(
                    f"{self.urls[side]}/_testbed/faults", json={"delay": seconds, "count": None}, timeout=10
                ).raise_for_status()

    def reset(self) -> None:
        for url in self.urls.values():
            requests.delete(f"{url}/_testbed/stats", timeout=10).raise_for_status()

    def read(self) -> tuple[dict[str, int], dict[str, dict[str, int]]]:
        time.sleep(0.3)  # a server counts a request once its handler is done, which may be just after the client
        totals, kinds = {}, {}
        for side, url in self.urls.items():
            stats = requests.get(f"{url}/_testbed/stats", timeout=10).json()
            totals[side] = int(stats["total"])
            counted: dict[str, int] = {}
            for path, count in stats["paths"].items():
                kind = next((name for name, pattern in KINDS if pattern.search(path)), "other")
                counted[kind] = counted.get(kind, 0) + count
            kinds[side] = counted
        return totals, kinds


def start_destination_proxy(work: Path, upstream: str) -> tuple[str, ProcessRecord]:
    """A counting proxy (tests/testbed/proxy.py) in front of the open registry; its URL and process."""
    directory = work / "destination-proxy"
    directory.mkdir(parents=True, exist_ok=True)
    ready, config = directory / "ready.json", directory / "config.json"
    ready.unlink(missing_ok=True)
    write_json(config, {"upstream": upstream, "ready_file": str(ready)})
    proc = spawn(
        python_module_argv("tests.testbed.proxy", "--config", str(config)),
        directory / "proxy.log",
        cwd=directory,
        env=python_env(),
    )
    record = ProcessRecord("destination-proxy", proc.pid, str(config))
    try:
        url = wait_ready_file(ready, proc, "destination proxy", directory / "proxy.log")["url"]
    except BaseException:
        record.stop()
        proc.wait()
        raise
    return url, record


# -- running things ----------------------------------------------------------------------------------------------------
def timed(
    argv: list[str], work: Path, env: dict[str, str] | None = None
) -> tuple[subprocess.CompletedProcess, float, int]:
    """Run argv (under /usr/bin/time -v when there is one); the process, its seconds and its peak RSS in KiB."""
    timing = work / "time.txt"
    timing.unlink(missing_ok=True)
    prefix = [TIME, "-v", "-o", str(timing)] if os.path.exists(TIME) else []
    started = time.monotonic()
    proc = subprocess.run([*prefix, *argv], env=env, capture_output=True, text=True, check=False)
    seconds = time.monotonic() - started
    text = timing.read_text(encoding="utf-8") if timing.exists() else ""
    match = re.search(r"Maximum resident set size \(kbytes\): (\d+)", text)
    return proc, seconds, int(match.group(1)) if match else 0


def skopeo_sandbox(cache: Path) -> tuple[list[str], dict[str, str]]:
    """A command prefix and environment giving skopeo the blob-info cache `cache` (empty at first) instead of the system's."""
    cache.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, XDG_DATA_HOME=str(cache))
    if os.geteuid() != 0 or not shutil.which("unshare"):
        return [], env
    if subprocess.run(["unshare", "--mount", "true"], capture_output=True, check=False).returncode != 0:
        return [], env
    script = 'mkdir -p "$2" && mount --bind "$1" "$2" && shift 2 && exec "$@"'
    return ["unshare", "--mount", "sh", "-c", script, "sh", str(cache), SKOPEO_SYSTEM_CACHE], env


@dataclass
class Catalog:
    """The wide repositories of one N as seeded: repository -> {tag: digest}."""

    tags: int
    repositories: dict[str, dict[str, str]]
    seed_seconds: float

    @property
    def references(self) -> list[str]:
        return [f"{repo}:{tag}" for repo, tags in self.repositories.items() for tag in tags]

    @property
    def digests(self) -> dict[str, str]:
        return {f"{repo}:{tag}": digest for repo, tags in self.repositories.items() for tag, digest in tags.items()}


class WideBench:
    def __init__(self, args: argparse.Namespace, info: TestbedInfo, work: Path) -> None:
        self.args = args
        self.info = info
        self.work = work
        self.collections = args.collections.resolve()
        self.open_url = info.open_registry_url.rstrip("/")
        self.cases: list[Case] = []
        self.run_id = time.strftime("%H%M%S")
        self.authfile = write_authfile(work / "auth.json", info)
        self.dest_url = ""
        self.counters: Counters | None = None

    # The module -------------------------------------------------------------------------
    def module(self, case: Case, module: str, args: dict[str, Any]) -> dict[str, Any]:
        args_file = self.work / "module-args.json"
        args_file.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": args}), encoding="utf-8")
        env = dict(os.environ, NGC_API_KEY=self.info.api_key, PYTHONPATH=str(self.collections))
        proc, case.seconds, rss = timed([sys.executable, "-m", module, str(args_file)], self.work, env)
        case.rss_mib = round(rss / 1024, 1)
        try:
            result = json.loads(proc.stdout[proc.stdout.index("{") :])
        except ValueError:
            raise BenchError(f"the module printed no result (rc {proc.returncode}): {proc.stderr[-800:]}") from None
        if result.get("failed") or proc.returncode != 0:
            raise BenchError(f"the module failed: {str(result.get('msg'))[:500]}")
        return result

    def mirror_args(self, catalog: Catalog, prefix: str, facts: Path, **extra: Any) -> dict[str, Any]:
        return {
            "registry_url": self.info.source_proxy_url,
            "images": catalog.references,
            "facts_file": str(facts),
            "registry": {"url": self.dest_url, "prefix": prefix},
            **extra,
        }

    def module_list(self, case: Case, catalog: Catalog) -> None:
        result = self.module(
            case,
            CATALOG,
            {
                "api_url": self.info.ngc_api_url,
                "registry_url": self.info.source_proxy_url,
                "images": [f"wide-{catalog.tags}-"],
            },
        )
        got = {f"{i['name']}:{i['tag']}": i.get("digest") for i in result.get("images") or []}
        if got != catalog.digests:
            wrong = sorted(set(got.items()) ^ set(catalog.digests.items()))
            raise BenchError(f"the listing differs from the seed in {len(wrong)} entries, e.g. {wrong[:2]}")
        if result.get("unresolved"):
            raise BenchError(f"{len(result['unresolved'])} tags unresolved")

    def module_mirror(self, case: Case, catalog: Catalog, prefix: str, facts: Path, **extra: Any) -> None:
        result = self.module(case, MIRROR, self.mirror_args(catalog, prefix, facts, **extra))
        if not result.get("changed"):
            raise BenchError("the module copied nothing (changed=false)")
        self.check_destination(catalog, lambda repo: f"{prefix}/{repo}")

    def module_noop(self, case: Case, catalog: Catalog, prefix: str, facts: Path, **extra: Any) -> None:
        result = self.module(case, MIRROR, self.mirror_args(catalog, prefix, facts, **extra))
        acted = [i["reference"] for i in result.get("images") or [] if i.get("status") != "skipped"]
        case.note = (
            f"changed={str(bool(result.get('changed'))).lower()}, {catalog.tags - len(acted)}/{catalog.tags} skipped"
        )
        if result.get("changed") or acted or len(result.get("images") or []) != catalog.tags:
            raise BenchError(f"the re-run was not a no-op: {', '.join(acted[:3]) or 'changed=true'}")

    # skopeo -----------------------------------------------------------------------------
    def skopeo_each(self, case: Case, catalog: Catalog, argv_of: Callable[[str], list[str]], cache: Path) -> list[str]:
        """One skopeo process per repository, one after another; their outputs."""
        sandbox, env = skopeo_sandbox(cache)
        outputs, rss = [], 0
        started = time.monotonic()
        for repository in catalog.repositories:
            proc, _seconds, kib = timed([*sandbox, "skopeo", *argv_of(repository)], self.work, env)
            if proc.returncode != 0:
                raise BenchError(f"skopeo {argv_of(repository)[0]} {repository} failed: {proc.stderr[-600:]}")
            outputs.append(proc.stdout)
            rss = max(rss, kib)
        case.seconds = time.monotonic() - started
        case.rss_mib = round(rss / 1024, 1)
        case.note = f"{len(catalog.repositories)} skopeo processes, one per repository"
        return outputs

    def skopeo_list(self, case: Case, catalog: Catalog, cache: Path) -> None:
        host = self.info.source_proxy_host
        outputs = self.skopeo_each(
            case,
            catalog,
            lambda repo: [
                "list-tags",
                "--authfile",
                str(self.authfile),
                "--tls-verify=false",
                f"docker://{host}/{repo}",
            ],
            cache,
        )
        for repository, output in zip(catalog.repositories, outputs):
            if set(json.loads(output)["Tags"]) != set(catalog.repositories[repository]):
                raise BenchError(f"skopeo listed other tags for {repository}")

    def skopeo_sync(self, case: Case, catalog: Catalog, prefix: str, cache: Path) -> None:
        source, destination = self.info.source_proxy_host, self.dest_url.split("://", 1)[1]
        self.skopeo_each(
            case,
            catalog,
            lambda repo: [
                "sync",
                "--src",
                "docker",
                "--dest",
                "docker",
                "--src-authfile",
                str(self.authfile),
                "--src-tls-verify=false",
                "--dest-tls-verify=false",
                f"{source}/{repo}",
                f"{destination}/{prefix}",
            ],
            cache,
        )
        # skopeo sync names a destination repository by the source's last path component.
        self.check_destination(catalog, lambda repo: f"{prefix}/{repo.rsplit('/', 1)[1]}")

    # Checks -----------------------------------------------------------------------------
    def check_destination(self, catalog: Catalog, where: Callable[[str], str]) -> None:
        """Every tag at the destination (the open registry, directly) has the source's digest."""

        def wrong(item: tuple[str, str]) -> str | None:
            reference, digest = item
            repo, tag = reference.rsplit(":", 1)
            response = requests.head(
                f"{self.open_url}/v2/{where(repo)}/manifests/{tag}", headers={"Accept": ACCEPT}, timeout=60
            )
            return (
                None
                if response.status_code == 200 and response.headers.get("Docker-Content-Digest") == digest
                else reference
            )

        with ThreadPoolExecutor(max_workers=8) as pool:
            bad = [r for r in pool.map(wrong, catalog.digests.items()) if r]
        if bad:
            raise BenchError(
                f"{len(bad)} of {catalog.tags} tags missing or with another digest at the destination, e.g. {bad[0]}"
            )

    # Measuring --------------------------------------------------------------------------
    def measure(self, case: Case, action: Callable[[Case], None]) -> Case:
        assert self.counters is not None
        print(f"wide: {case.tags} tags, {case.latency * 1000:.0f} ms: {case.name} ...", file=sys.stderr, flush=True)
        self.counters.reset()
        try:
            action(case)
        except (BenchError, requests.RequestException, OSError, ValueError, KeyError) as exc:
            case.ok = False
            case.note = (case.note + "; " if case.note else "") + f"FAILED: {exc}"
        case.requests, case.kinds = self.counters.read()
        case.per_tag = {side: round(count / case.tags, 2) for side, count in case.requests.items()}
        print(
            f"wide: {case.name}: {case.seconds:.1f}s, requests {case.requests}{' (' + case.note + ')' if case.note else ''}",
            file=sys.stderr,
            flush=True,
        )
        self.cases.append(case)
        return case

    def seed(self, tags: int) -> Catalog:
        print(f"wide: seeding {tags} tiny tags ...", file=sys.stderr, flush=True)
        started = time.monotonic()
        records = seed_wide(
            self.info.source_registry_url,
            tags,
            self.args.repos,
            self.info.seed,
            NGC_USERNAME,
            self.info.api_key,
            Path(self.info.seed_file),
        )
        repositories = {r["repository"]: {t["tag"]: t["digest"] for t in r["tags"]} for r in records}
        return Catalog(tags, repositories, round(time.monotonic() - started, 1))

    def round(self, catalog: Catalog, latency: float) -> None:
        """Every case for one N at one latency, side by side."""
        assert self.counters is not None
        self.counters.delay(latency)
        n, tag = catalog.tags, f"{catalog.tags}-{int(latency * 1000)}ms"
        cache = self.work / f"skopeo-cache-{tag}"

        def case(name: str, group: str, client: str, action: Callable[[Case], None]) -> None:
            self.measure(Case(name, group, client, n, latency), action)

        module_prefix, single_prefix, skopeo_prefix = (
            f"wide-{self.run_id}-{tag}-{what}" for what in ("module", "serial", "skopeo")
        )
        facts = self.work / f"facts-{tag}.fact"
        case("module ngc_catalog_info", "list", "module", lambda c: self.module_list(c, catalog))
        case("skopeo list-tags per repository", "list", "skopeo", lambda c: self.skopeo_list(c, catalog, cache))
        case(
            "module, parallel_images default",
            "first mirror",
            "module",
            lambda c: self.module_mirror(c, catalog, module_prefix, facts),
        )
        if latency == 0 or self.args.serial_at_latency:
            case(
                "module, parallel_images 1",
                "first mirror",
                "module variant",
                lambda c: self.module_mirror(
                    c, catalog, single_prefix, self.work / f"facts-{tag}-serial.fact", parallel_images=1
                ),
            )
        case(
            "skopeo sync per repository",
            "first mirror",
            "skopeo",
            lambda c: self.skopeo_sync(c, catalog, skopeo_prefix, cache),
        )
        case(
            "module, with the facts file",
            "no-op",
            "module",
            lambda c: self.module_noop(c, catalog, module_prefix, facts),
        )
        case(
            UNSIGNED_NOOP,
            "no-op",
            "module variant",
            lambda c: self.module_noop(c, catalog, module_prefix, facts, signatures=False),
        )
        case(
            RELISTED_NOOP,
            "no-op",
            "module variant",
            lambda c: self.module_noop(c, catalog, module_prefix, facts, signatures_relist_after=0),
        )
        case(
            "module, fresh facts file",
            "no-op",
            "module variant",
            lambda c: self.module_noop(
                c, catalog, module_prefix, self.work / f"facts-{tag}-fresh-{time.monotonic_ns()}.fact"
            ),
        )
        case("skopeo sync again", "no-op", "skopeo", lambda c: self.skopeo_sync(c, catalog, skopeo_prefix, cache))
        self.counters.delay(0)

    def facts_cost(self, counts: list[int]) -> list[dict[str, Any]]:
        """The collection's facts store alone: record `count` images (one destination each), then close (compaction)."""
        if str(self.collections) not in sys.path:
            sys.path.insert(0, str(self.collections))
        state = __import__(STATE, fromlist=["StateStore"])
        rows = []
        for count in counts:
            path = self.work / f"facts-cost-{count}.fact"
            started = time.monotonic()
            store = state.StateStore(str(path)).open()
            opened = time.monotonic()
            for index in range(count):
                digest = f"sha256:{index:064x}"
                store.record_destination(
                    f"nvidia/wide-{index % 50}:1.{index}",
                    digest,
                    "registry:http://127.0.0.1:1/wide",
                    {"digest": digest, "reference": f"127.0.0.1:1/wide/nvidia/wide-{index % 50}:1.{index}"},
                )
            recorded = time.monotonic()
            store.close()
            closed = time.monotonic()
            reopened_store = state.StateStore(str(path), read_only=True).open()
            if len(reopened_store.images()) != count:
                raise BenchError(f"the facts file holds {len(reopened_store.images())} images, not {count}")
            reopened_store.close()
            rows.append(
                {
                    "images": count,
                    "record_seconds": round(recorded - opened, 3),
                    "close_seconds": round(closed - recorded, 3),
                    "total_seconds": round(closed - started, 3),
                    "us_per_image": round((closed - started) / count * 1e6, 1),
                    "file_bytes": path.stat().st_size,
                }
            )
        return rows

    def run(self) -> dict[str, Any]:
        self.dest_url, record = start_destination_proxy(self.work, self.open_url)
        self.counters = Counters(self.info, self.dest_url)
        catalogs = {}
        try:
            for tags in self.args.tags:
                catalog = catalogs[tags] = self.seed(tags)
                for latency in sorted({0.0, self.args.latency}):
                    self.round(catalog, latency)
        finally:
            if self.counters is not None:
                try:
                    self.counters.delay(0)
                except requests.RequestException:
                    pass
            record.stop()
        counts = sorted(set(self.args.tags) | {3 * min(self.args.tags)})
        facts = self.facts_cost(counts)
        score(self.cases)
        spread = {n: {"repositories": len(c.repositories), "seed_seconds": c.seed_seconds} for n, c in catalogs.items()}
        return {
            "latency": self.args.latency,
            "catalogs": spread,
            "aims": AIMS,
            "cases": [asdict(c) for c in self.cases],
            "facts_cost": facts,
            "checks": verdict(self.cases, facts),
        }


# -- the report --------------------------------------------------------------------------------------------------------
def score(cases: list[Case]) -> None:
    """Each case's seconds over skopeo's in the same group, tags and latency."""
    for case in cases:
        skopeo = next(
            (
                c
                for c in cases
                if c.client == "skopeo"
                and c.ok
                and (c.group, c.tags, c.latency) == (case.group, case.tags, case.latency)
            ),
            None,
        )
        if case.ok and skopeo is not None and skopeo.seconds > 0:
            case.ratio = round(case.seconds / skopeo.seconds, 3)


def verdict(cases: list[Case], facts: list[dict[str, Any]]) -> list[str]:
    lines = []
    for case in cases:
        if case.name in (UNSIGNED_NOOP, RELISTED_NOOP) and case.ok:
            what = "signatures off" if case.name == UNSIGNED_NOOP else "signatures_relist_after 0"
            lines.append(
                f"info: no-op {case.tags} tags, {case.latency * 1000:.0f} ms, {what}: requests per tag source "
                f"{case.per_tag.get('source')}, NGC {case.per_tag.get('ngc')}, destination {case.per_tag.get('destination')}"
            )
        if case.client != "module" or case.ratio is None:
            continue
        at = f"{case.tags} tags, {case.latency * 1000:.0f} ms"
        if case.group == "first mirror":
            lines.append(
                f"{'ok' if case.ratio <= AIMS['first mirror'] else 'MISSED'}: first mirror {at}: {case.ratio:.2f}x skopeo sync "
                f"(aim <= {AIMS['first mirror']}x)"
            )
        if case.group == "no-op":
            aim = AIMS["no-op"]
            mark = ("ok" if case.ratio <= aim else "MISSED") if case.latency > 0 else "info"
            lines.append(
                f"{mark}: no-op {at}: {case.ratio:.2f}x skopeo sync again (aim <= {aim}x at the added latency)"
            )
            worst = max(case.per_tag.get("source", 0), case.per_tag.get("destination", 0))
            lines.append(
                f"{'ok' if worst <= AIMS['no-op requests per tag per side'] else 'MISSED'}: no-op {at}: requests per tag "
                f"source {case.per_tag.get('source')}, NGC {case.per_tag.get('ngc')}, destination {case.per_tag.get('destination')} "
                f"(aim <= 1 per side)"
            )
    for case in cases:
        if not case.ok:
            lines.append(f"FAILED: {case.name} ({case.tags} tags, {case.latency * 1000:.0f} ms): {case.note}")
    if len(facts) > 1:
        first, last = facts[0], facts[-1]
        growth = last["us_per_image"] / first["us_per_image"] if first["us_per_image"] else 0
        lines.append(
            f"{'ok' if growth <= 1.5 else 'MISSED'}: facts cost per image {first['us_per_image']} us at {first['images']}, "
            f"{last['us_per_image']} us at {last['images']} ({growth:.2f}x; linear is 1x)"
        )
    return lines


def table(report: dict[str, Any]) -> str:
    head = (
        f"{'tags':>5} {'ms':>4}  {'group':<13}{'case':<34}{'seconds':>9}{'x skopeo':>9}{'src req':>9}{'/tag':>6}"
        f"{'ngc req':>8}{'/tag':>6}{'dst req':>8}{'/tag':>6}{'peak MiB':>9}"
    )
    lines = [head]
    for c in report["cases"]:
        ratio = f"{c['ratio']:.2f}" if c["ratio"] is not None else ("FAILED" if not c["ok"] else "")
        req, per = c["requests"], c["per_tag"]
        lines.append(
            f"{c['tags']:>5} {c['latency'] * 1000:>4.0f}  {c['group']:<13}{c['name']:<34}{c['seconds']:>9.2f}{ratio:>9}"
            f"{req.get('source', 0):>9}{per.get('source', 0):>6.2f}{req.get('ngc', 0):>8}{per.get('ngc', 0):>6.2f}"
            f"{req.get('destination', 0):>8}{per.get('destination', 0):>6.2f}{c['rss_mib'] or 0:>9.1f}"
        )
    lines.append("")
    lines.append("facts store alone: images, record s, close (compaction) s, us per image, file bytes")
    for row in report["facts_cost"]:
        lines.append(
            f"  {row['images']:>6} {row['record_seconds']:>8.3f} {row['close_seconds']:>8.3f} {row['us_per_image']:>8.1f} {row['file_bytes']:>10}"
        )
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--testbed", type=Path, help="directory of a running test bed (the bench's own)")
    where.add_argument(
        "--start-testbed",
        type=Path,
        metavar="DIR",
        help="start a test bed without an engine in DIR, stop it at the end and empty its destination registry",
    )
    parser.add_argument(
        "--collections",
        type=Path,
        default=REPO / "build",
        help="directory holding ansible_collections/airgap/ngc (scripts/collection-tree.sh builds one)",
    )
    parser.add_argument("--work", type=Path, help="scratch directory (default: a temporary one, removed at the end)")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    parser.add_argument(
        "--tags", type=int, action="append", help="tags of the wide catalog; repeat for several (default 1000)"
    )
    parser.add_argument("--repos", type=int, help="repositories to spread the tags over (default: one per 20 tags)")
    parser.add_argument(
        "--latency", type=float, default=0.05, help="seconds added to every source-side request in the second round"
    )
    parser.add_argument(
        "--serial-at-latency", action="store_true", help="also run parallel_images 1 with the added latency (slow)"
    )
    return parser


def _terminate(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


def main() -> int:
    args = _parser().parse_args()
    args.tags = args.tags or [1000]
    if any(n < 1 for n in args.tags) or args.latency < 0:
        raise SystemExit("--tags must be at least 1 and --latency at least 0")
    if not shutil.which("skopeo"):
        raise SystemExit("skopeo is not installed (Debian package skopeo)")
    signal.signal(signal.SIGTERM, _terminate)  # a TERM stops what this process started, as Ctrl-C does
    testbed: Testbed | None = None
    if args.start_testbed is not None:
        print(f"wide: starting a test bed in {args.start_testbed} ...", file=sys.stderr, flush=True)
        testbed = Testbed()
        info = testbed.up(args.start_testbed, engine=False)
    else:
        info = running_testbed(args.testbed.resolve())
        if info is None:
            raise SystemExit(
                f"no running test bed in {args.testbed}: start one with python -m tests.testbed up --dir {args.testbed} --no-engine"
            )
    work = (args.work or Path(tempfile.mkdtemp(prefix="wide-bench-"))).resolve()
    work.mkdir(parents=True, exist_ok=True)
    try:
        report = WideBench(args, info, work).run()
    finally:
        if testbed is not None:
            testbed.down()
            # The destination starts empty next time; the seeded source (and its wide repositories) stays.
            shutil.rmtree(args.start_testbed / "registry-open", ignore_errors=True)
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    spread = ", ".join(f"{n} tags over {c['repositories']} repositories" for n, c in report["catalogs"].items())
    print(
        f"wide catalog: {spread}; "
        f"source side reached through the fault proxy, {args.latency * 1000:.0f} ms added per request in the second round"
    )
    print(table(report))
    print("\n".join(report["checks"]))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return 1 if any(not c["ok"] for c in report["cases"]) else 0


if __name__ == "__main__":
    sys.exit(main())
