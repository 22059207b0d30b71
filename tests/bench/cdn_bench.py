# Copyright (c) airgap.ngc contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A big blob through nvcr.io's CDN, stood in: ngc_image_mirror (ranged parallel download) vs one stream vs skopeo.

Runs against a test bed that is already up (``python -m tests.testbed up --dir DIR``). It seeds one image of one
big layer (``--size-mib``, default 192) into the token registry, puts the CDN stand-in (tests/testbed/cdn.py: the
test bed's own if it started one, else one started here and stopped at the end) in front of it with
``--bandwidth`` bytes/s per connection and ``--latency`` seconds per request, and in one run, side by side, copies
the image through it:

- the module: ``ngc_image_mirror`` from the CDN front to the open registry (its own process under
  ``/usr/bin/time -v``: peak memory); a big blob is fetched as several Range requests at once;
- one stream: a token, then one GET of the blob following the redirect (Python requests), hashed, not stored;
- skopeo: ``skopeo copy`` from the CDN front to a new ``dir:`` (one stream per blob);
- the module on a 1 MiB image (its fixed cost: ansible, auth, planning, facts), subtracted from its big-blob time
  for ``net_seconds``; and the collection's blob reader alone (imported from ``--collections``: the download the
  module does, hashed and not stored), to compare with the single stream byte for byte.

Each case checks its result (the destination's manifest hashes to the source's digest, the stream to the layer's)
and the CDN stand-in's count of bytes served for the blob. ``--rounds`` interleaves the cases and keeps each one's
best. These are the ``copy`` group.

The ``resume`` group (issue 13) cuts a download off and continues it in the next run: an image of one layer of
``--resume-size-mib`` (default 1024) is exported by the module to a bundle through the CDN front, side by side, once
uncut, and once killed (``kill -9`` of the module's process group and of ansible's) when the bytes it keeps beside the
bundle's blob (``.<hex>.resume``) reach half the layer, then run again to the end. It reports the bytes kept after the
kill, the bytes the CDN served on the re-run as a fraction of the layer (aim: at most 55%), and the re-run's seconds
over the uncut run's; both bundles' blob must hash to its digest, or the case fails. Then (issue 23) the same layer
is mirrored to the token registry through the test bed's counting proxy, killed once the registry confirmed half of
it, and run again: the bytes the registry held, and the bytes the re-run sent (aim: the rest and at most 10% of the
layer more) and fetched.

Prints a table and writes JSON (``--out``). Uses requests, the standard library and tests/testbed (and the
collection for the blob reader case). ``--only copy`` or ``--only resume`` runs one group.

    python tests/bench/cdn_bench.py --testbed DIR --collections BUILD_DIR [--work DIR] [--out FILE] [--only GROUPS]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import requests

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from tests.testbed._common import ProcessRecord  # noqa: E402  pylint: disable=wrong-import-position
from tests.testbed.cdn import BigImage, Cdn, seed_big_image, start_cdn  # noqa: E402  pylint: disable=wrong-import-position
from tests.testbed.testbed import TestbedInfo, running_testbed, write_authfile  # noqa: E402  pylint: disable=wrong-import-position

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
CHUNK = 1024 * 1024
GROUPS = ("copy", "resume")
BIG_CACHE = "bench-big-cache.json"  # in the test bed's directory: the big layers' digests, not regenerated next time
RESUME_AIM = 0.55  # the re-run fetches at most this fraction of the layer (issue 13)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--testbed", required=True, type=Path, help="directory of a running test bed")
    parser.add_argument(
        "--collections",
        type=Path,
        default=REPO / "build",
        help="directory holding ansible_collections/airgap/ngc (scripts/collection-tree.sh builds one)",
    )
    parser.add_argument("--work", type=Path, help="scratch directory (default: a temporary one)")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    parser.add_argument("--size-mib", type=int, default=192, help="size of the big layer (MiB)")
    parser.add_argument("--bandwidth", type=float, default=20e6, help="bytes/s per connection at the CDN")
    parser.add_argument("--latency", type=float, default=0.05, help="seconds added to every request (front and CDN)")
    parser.add_argument("--rounds", type=int, default=1, help="rounds of all cases, interleaved; the best counts")
    parser.add_argument(
        "--only", default=",".join(GROUPS), help=f"comma-separated groups to run (default all): {', '.join(GROUPS)}"
    )
    parser.add_argument(
        "--resume-size-mib", type=int, default=1024, help="size of the layer the resume group cuts off (MiB)"
    )
    return parser


def _cdn_of(info: TestbedInfo, work: Path) -> tuple[Cdn, bool]:
    if info.cdn_proxy_url:
        return Cdn(
            info.cdn_proxy_url, info.cdn_url, ProcessRecord("cdn", info.pids["cdn"], info.process_markers["cdn"])
        ), False
    return start_cdn(
        work / "cdn",
        info.source_registry_url,
        Path(info.workdir) / "registry-token" / "data",
        f"{info.ngc_api_url}/token",
    ), True


def _served(cdn: Cdn, digest: str) -> dict[str, int]:
    entries = [d for d in cdn.stats()["downloads"] if d["digest"] == digest]
    return {
        "requests": len(entries),
        "ranged": sum(1 for d in entries if d["status"] == 206),
        "bytes": sum(d["bytes"] for d in entries),
        "with_authorization": sum(1 for d in entries if d["authorization"]),
    }


def _manifest_digest(info: TestbedInfo, name: str, tag: str) -> str:
    response = requests.get(
        f"{info.open_registry_url}/v2/{name}/manifests/{tag}", headers={"Accept": OCI_MANIFEST}, timeout=60
    )
    response.raise_for_status()
    return "sha256:" + hashlib.sha256(response.content).hexdigest()


def _peak_kib(stderr: str) -> int | None:
    match = re.search(r"Maximum resident set size \(kbytes\): (\d+)", stderr)
    return int(match.group(1)) if match else None


def _module_env(info: TestbedInfo, work: Path, collections: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANSIBLE_", "NGC_"))}
    env.update(
        ANSIBLE_COLLECTIONS_PATH=str(collections),
        NGC_API_KEY=info.api_key,
        ANSIBLE_LOCALHOST_WARNING="0",
        ANSIBLE_INVENTORY_UNPARSED_WARNING="0",
        ANSIBLE_PYTHON_INTERPRETER=sys.executable,
        ANSIBLE_LOCAL_TEMP=str(work / "tmp"),
    )
    return env


def _module_argv(args: dict[str, Any]) -> list[str]:
    return [
        str(Path(sys.executable).parent / "ansible"),
        "localhost",
        "-m",
        "airgap.ngc.ngc_image_mirror",
        "-a",
        json.dumps(args),
    ]


def case_module(
    info: TestbedInfo, cdn: Cdn, big: BigImage, work: Path, collections: Path, prefix: str
) -> dict[str, Any]:
    args = {
        "registry_url": cdn.url,
        "images": [f"{big.repository}:{big.tag}"],
        "facts_file": str(work / f"{prefix}.fact"),
        "registry": {"url": info.open_registry_url, "prefix": prefix},
    }
    argv = ["/usr/bin/time", "-v", *_module_argv(args)]
    started = time.monotonic()
    proc = subprocess.run(argv, env=_module_env(info, work, collections), capture_output=True, text=True, check=False)
    seconds = time.monotonic() - started
    if proc.returncode != 0:
        raise RuntimeError(f"the module failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    if _manifest_digest(info, f"{prefix}/{big.repository}", big.tag) != big.digest:
        raise RuntimeError("the module's copy does not have the source's digest")
    return {"seconds": seconds, "peak_rss_mib": round((_peak_kib(proc.stderr) or 0) / 1024, 1)}


def case_stream(
    info: TestbedInfo, cdn: Cdn, big: BigImage, work: Path, collections: Path, prefix: str
) -> dict[str, Any]:
    started = time.monotonic()
    with requests.Session() as session:
        challenge = session.get(f"{cdn.url}/v2/", timeout=60).headers["WWW-Authenticate"]
        realm = re.search(r'realm="([^"]+)"', challenge).group(1)  # type: ignore[union-attr]
        token = session.get(
            realm, params={"scope": f"repository:{big.repository}:pull"}, auth=("$oauthtoken", info.api_key), timeout=60
        ).json()["token"]
        # requests drops the Authorization header on the redirect to the CDN's other host, as the CDN demands.
        response = session.get(
            f"{cdn.url}/v2/{big.repository}/blobs/{big.layer_digest}",
            headers={"Authorization": f"Bearer {token}"},
            stream=True,
            timeout=60,
        )
        response.raise_for_status()
        hasher = hashlib.sha256()
        for chunk in response.iter_content(CHUNK):
            hasher.update(chunk)
    seconds = time.monotonic() - started
    if f"sha256:{hasher.hexdigest()}" != big.layer_digest:
        raise RuntimeError("the single stream got other bytes")
    return {"seconds": seconds}


def case_skopeo(
    info: TestbedInfo, cdn: Cdn, big: BigImage, work: Path, collections: Path, prefix: str
) -> dict[str, Any]:
    """skopeo copy to a new ``dir:`` (a registry destination would let it mount the blob from an earlier run's repository,
    which its blob-info cache remembers)."""
    authfile = write_authfile(work / "auth.json", info)
    target = work / prefix
    argv = [
        "skopeo",
        "copy",
        "--quiet",
        "--authfile",
        str(authfile),
        "--src-tls-verify=false",
        f"docker://{cdn.host}/{big.repository}:{big.tag}",
        f"dir:{target}",
    ]
    started = time.monotonic()
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    subprocess.run(["sync"], check=False)
    seconds = time.monotonic() - started
    try:
        if proc.returncode != 0:
            raise RuntimeError(f"skopeo failed: {proc.stderr[-2000:]}")
        if "sha256:" + hashlib.sha256((target / "manifest.json").read_bytes()).hexdigest() != big.digest:
            raise RuntimeError("skopeo's copy does not have the source's digest")
    finally:
        shutil.rmtree(target, ignore_errors=True)
    return {"seconds": seconds}


def case_module_small(
    info: TestbedInfo, cdn: Cdn, big: BigImage, work: Path, collections: Path, prefix: str
) -> dict[str, Any]:
    """The module's fixed cost (ansible start, auth, planning, facts) on the same path: an image of one small layer."""
    small = seed_big_image(
        info.source_registry_url, "$oauthtoken", info.api_key, reference="nvidia/big-bench:small", size=1024 * 1024
    )
    return case_module(info, cdn, small, work, collections, prefix)


def case_client(
    info: TestbedInfo, cdn: Cdn, big: BigImage, work: Path, collections: Path, prefix: str
) -> dict[str, Any]:
    """The collection's blob reader alone (what the module downloads with), hashed, not stored: compare with one stream."""
    if str(collections) not in sys.path:
        sys.path.insert(0, str(collections))
    registry = __import__(
        "ansible_collections.airgap.ngc.plugins.module_utils._clients.registry", fromlist=["RegistryClient"]
    )
    started = time.monotonic()
    with registry.RegistryClient(cdn.url, "$oauthtoken", info.api_key) as client:
        with client.open_blob(big.repository, big.layer_digest, expected_size=big.layer_size) as reader:
            for _chunk in reader:
                pass
            verified = reader.verified
    seconds = time.monotonic() - started
    if not verified:
        raise RuntimeError("the blob reader did not verify the blob")
    return {"seconds": seconds}


def _blob_hashes_to(path: Path, digest: str) -> bool:
    with open(path, "rb") as handle:
        return "sha256:" + hashlib.file_digest(handle, "sha256").hexdigest() == digest


def _kill_module(proc: subprocess.Popen[Any], lock_file: Path) -> None:
    """kill -9 the module's process group (its pid is in the facts file's lock: ansible starts it in a session of its own)
    and ansible's, and wait until the module is gone."""
    module_pid = int(lock_file.read_text().split()[0])
    try:
        os.killpg(os.getpgid(module_pid), signal.SIGKILL)
    except ProcessLookupError:
        pass
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 30
    while Path(f"/proc/{module_pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)


def _export(
    info: TestbedInfo, cdn: Cdn, big: BigImage, work: Path, collections: Path, bundle: Path
) -> tuple[list[str], dict[str, str]]:
    (bundle.parent / "facts").mkdir(parents=True, exist_ok=True)
    args = {
        "registry_url": cdn.url,
        "images": [f"{big.repository}:{big.tag}"],
        "bundle": {"dir": str(bundle)},
        "facts_file": str(bundle.parent / "facts" / "ngc_mirror.fact"),
    }
    return _module_argv(args), _module_env(info, work, collections)


def _timed_export(argv: list[str], env: dict[str, str]) -> float:
    started = time.monotonic()
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    subprocess.run(["sync"], check=False)
    seconds = time.monotonic() - started
    if proc.returncode != 0:
        raise RuntimeError(f"the module failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return seconds


def _counted(cdn: Cdn, digest: str) -> dict[str, int]:
    time.sleep(0.5)  # the CDN counts a request once its handler is done, which may be just after the client
    return _served(cdn, digest)


def resume_round(
    info: TestbedInfo, cdn: Cdn, big: BigImage, work: Path, collections: Path, args: argparse.Namespace, round_: int
) -> dict[str, Any]:
    """One uncut export of the big image to a bundle, then one killed at half the layer and its re-run, side by side.

    Raises RuntimeError if a run fails, the cut run ends before half the layer is kept, or a bundle's blob does not
    hash to its digest."""
    hex_digest = big.layer_digest.split(":", 1)[1]
    size = big.layer_size
    outcome: dict[str, Any] = {"layer_bytes": size}

    cdn.reset()
    cdn.settings(bandwidth=args.bandwidth, latency=args.latency)
    full = work / f"resume-{os.getpid()}-r{round_}-full"
    argv, env = _export(info, cdn, big, work, collections, full / "bundle")
    outcome["full_seconds"] = round(_timed_export(argv, env), 2)
    try:
        if not _blob_hashes_to(full / "bundle" / "blobs" / "sha256" / hex_digest, big.layer_digest):
            raise RuntimeError("the uncut export's blob does not hash to its digest")
        outcome["full_served_bytes"] = _counted(cdn, big.layer_digest)["bytes"]
    finally:
        shutil.rmtree(full, ignore_errors=True)

    cdn.reset()
    cdn.settings(bandwidth=args.bandwidth, latency=args.latency)
    cut = work / f"resume-{os.getpid()}-r{round_}-cut"
    argv, env = _export(info, cdn, big, work, collections, cut / "bundle")
    kept = cut / "bundle" / "blobs" / "sha256" / f".{hex_digest}.resume"
    try:
        started = time.monotonic()
        proc = subprocess.Popen(
            argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        deadline = started + 600
        while time.monotonic() < deadline and proc.poll() is None:
            if kept.exists() and kept.stat().st_size >= size // 2:
                break
            time.sleep(0.02)
        if proc.poll() is not None:
            raise RuntimeError(
                f"the export ended (exit {proc.returncode}) before it kept half the layer: it could not be cut off"
            )
        _kill_module(proc, cut / "facts" / "ngc_mirror.fact.lock")
        outcome["cut_seconds"] = round(time.monotonic() - started, 2)
        held = kept.stat().st_size if kept.exists() else 0
        if not size // 2 <= held < size:
            raise RuntimeError(f"after the kill {held} bytes of {size} are kept, not at least half")
        outcome["held_bytes"] = held
        outcome["cut_served_bytes"] = _counted(cdn, big.layer_digest)["bytes"]

        cdn.reset()
        cdn.settings(bandwidth=args.bandwidth, latency=args.latency)
        outcome["rerun_seconds"] = round(_timed_export(argv, env), 2)
        served = _counted(cdn, big.layer_digest)
        if not _blob_hashes_to(cut / "bundle" / "blobs" / "sha256" / hex_digest, big.layer_digest):
            raise RuntimeError("the re-run's blob does not hash to its digest")
        if kept.exists():
            raise RuntimeError(f"the re-run left {kept.name} behind")
    finally:
        shutil.rmtree(cut, ignore_errors=True)
    outcome.update(
        rerun_served_bytes=served["bytes"],
        rerun_requests=served["requests"],
        rerun_ranged=served["ranged"],
        held_fraction=round(held / size, 3),
        rerun_served_fraction=round(served["bytes"] / size, 3),
        rerun_over_full=round(outcome["rerun_seconds"] / outcome["full_seconds"], 2),
    )
    return outcome


REGISTRY_PLAYBOOK = """\
- name: Mirror the big image to the site registry
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Mirror
      airgap.ngc.ngc_image_mirror:
        registry_url: "{{ source }}"
        images: "{{ images }}"
        facts_file: "{{ facts_file }}"
        registry: "{{ destination }}"
"""
RESUME_SENT_AIM = (
    0.10  # a continued registry upload sends the rest and at most this fraction of the layer more (issue 23)
)


def _patched_bytes(info: TestbedInfo, prefix: str) -> int:
    """Request body bytes the test bed's proxy passed to the token registry in PATCH requests of ``prefix``."""
    requests_seen = requests.get(f"{info.source_proxy_url}/_testbed/stats", timeout=10).json()["requests"]
    return sum(r.get("bytes", 0) for r in requests_seen if r["method"] == "PATCH" and f"/{prefix}/" in r["path"])


def resume_registry_round(
    info: TestbedInfo, cdn: Cdn, big: BigImage, work: Path, collections: Path, args: argparse.Namespace, round_: int
) -> dict[str, Any]:
    """A mirror of the big image from the CDN front to the token registry (through the test bed's counting proxy),
    killed once the registry confirmed half the layer (the upload sessions record says so), then run again: the
    bytes the registry held, the bytes sent to it again and fetched from the CDN again.

    Raises RuntimeError if a run fails, the cut run ends before half the layer is confirmed, or the registry's
    copy does not have the source's digest."""
    size = big.layer_size
    prefix = f"resumebench{os.getpid()}r{round_}"
    base = work / prefix
    (base / "facts").mkdir(parents=True, exist_ok=True)
    facts = base / "facts" / "ngc_mirror.fact"
    playbook = base / "mirror.yml"
    playbook.write_text(REGISTRY_PLAYBOOK)
    variables = {
        "source": cdn.url,
        "images": [f"{big.repository}:{big.tag}"],
        "facts_file": str(facts),
        "destination": {
            "url": info.source_proxy_url,
            "prefix": prefix,
            "username": "$oauthtoken",
            "password": info.api_key,
        },
    }
    vars_file = base / "vars.json"  # the password goes in a file, not on a command line
    vars_file.write_text(json.dumps(variables))
    vars_file.chmod(0o600)
    argv = [str(Path(sys.executable).parent / "ansible-playbook"), str(playbook), "-e", f"@{vars_file}"]
    env = _module_env(info, work, collections)
    record = base / "facts" / ".ngc_mirror.fact.uploads"

    def confirmed() -> int:
        try:
            return max([e["offset"] for e in json.loads(record.read_text())["uploads"].values()] or [0])
        except (OSError, ValueError):
            return 0

    cdn.reset()
    cdn.settings(bandwidth=args.bandwidth, latency=args.latency)
    requests.delete(f"{info.source_proxy_url}/_testbed/stats", timeout=10).raise_for_status()
    outcome: dict[str, Any] = {"layer_bytes": size}
    try:
        started = time.monotonic()
        proc = subprocess.Popen(
            argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        deadline = started + 600
        while time.monotonic() < deadline and proc.poll() is None and confirmed() < size // 2:
            time.sleep(0.02)
        if proc.poll() is not None:
            raise RuntimeError(f"the mirror ended (exit {proc.returncode}) before the registry held half the layer")
        _kill_module(proc, facts.parent / "ngc_mirror.fact.lock")
        outcome["cut_seconds"] = round(time.monotonic() - started, 2)
        time.sleep(1)  # the registry finishes reading what was in flight
        held = confirmed()
        outcome.update(
            held_bytes=held,
            cut_sent_bytes=_patched_bytes(info, prefix),
            cut_served_bytes=_counted(cdn, big.layer_digest)["bytes"],
        )
        cdn.reset()
        cdn.settings(bandwidth=args.bandwidth, latency=args.latency)
        requests.delete(f"{info.source_proxy_url}/_testbed/stats", timeout=10).raise_for_status()
        outcome["rerun_seconds"] = round(_timed_export(argv, env), 2)
        sent, served = _patched_bytes(info, prefix), _counted(cdn, big.layer_digest)
        authfile = write_authfile(base / "auth.json", info)  # skopeo judges: the registry's manifest bytes
        raw = subprocess.run(
            [
                "skopeo",
                "inspect",
                "--raw",
                "--tls-verify=false",
                "--authfile",
                str(authfile),
                f"docker://{info.source_proxy_host}/{prefix}/{big.repository}:{big.tag}",
            ],
            capture_output=True,
            check=True,
        ).stdout
        if "sha256:" + hashlib.sha256(raw).hexdigest() != big.digest:
            raise RuntimeError("the registry's copy does not have the source's digest")
    finally:
        shutil.rmtree(base, ignore_errors=True)
    outcome.update(
        held_fraction=round(held / size, 3),
        rerun_sent_bytes=sent,
        rerun_sent_fraction=round(sent / size, 3),
        rerun_sent_beyond_rest=round((sent - (size - held)) / size, 3),
        rerun_served_bytes=served["bytes"],
        rerun_served_fraction=round(served["bytes"] / size, 3),
    )
    return outcome


CASES: dict[str, Callable[..., dict[str, Any]]] = {
    "module": case_module,
    "module, 1 MiB": case_module_small,
    "blob reader": case_client,
    "single stream": case_stream,
    "skopeo": case_skopeo,
}


def run(args: argparse.Namespace) -> dict[str, Any]:
    info = running_testbed(args.testbed.resolve())
    if info is None:
        raise SystemExit(
            f"no running test bed in {args.testbed}: start one with python -m tests.testbed up --dir {args.testbed}"
        )
    groups = [g for g in args.only.split(",") if g]
    unknown = set(groups) - set(GROUPS)
    if unknown:
        raise SystemExit(f"unknown groups: {', '.join(sorted(unknown))} (known: {', '.join(GROUPS)})")
    work = (
        args.work or Path(tempfile.mkdtemp(prefix="cdn-bench-"))
    ).resolve()  # the CDN stand-in runs in a directory of its own
    work.mkdir(parents=True, exist_ok=True)
    cache = args.testbed.resolve() / BIG_CACHE
    cdn, own = _cdn_of(info, work)
    # The stand-in's front is a registry host of its own: skopeo needs the key for it in the auth file.
    info.cdn_proxy_host = cdn.host
    report: dict[str, Any] = {
        "groups": groups,
        "bandwidth_per_connection": args.bandwidth,
        "latency": args.latency,
        "rounds": args.rounds,
    }
    try:
        if "copy" in groups:
            big = seed_big_image(
                info.source_registry_url,
                "$oauthtoken",
                info.api_key,
                reference=f"nvidia/big-bench:{args.size_mib}m",
                size=args.size_mib * 1024 * 1024,
                cache_file=cache,
            )
            report.update(_copy_group(info, cdn, big, work, args))
        if "resume" in groups:
            big = seed_big_image(
                info.source_registry_url,
                "$oauthtoken",
                info.api_key,
                reference=f"nvidia/big-bench:{args.resume_size_mib}m",
                size=args.resume_size_mib * 1024 * 1024,
                cache_file=cache,
            )
            rounds = [
                resume_round(info, cdn, big, work, args.collections.resolve(), args, r)
                for r in range(max(1, args.rounds))
            ]
            best = min(rounds, key=lambda r: r["rerun_served_fraction"])
            report["resume"] = {
                "best": best,
                "all": rounds,
                "aim_served_fraction": RESUME_AIM,
                "check": "ok" if best["rerun_served_fraction"] <= RESUME_AIM else "MISSED",
            }
            uploads = [
                resume_registry_round(info, cdn, big, work, args.collections.resolve(), args, r)
                for r in range(max(1, args.rounds))
            ]
            best = min(uploads, key=lambda r: r["rerun_sent_beyond_rest"])
            report["resume_registry"] = {
                "best": best,
                "all": uploads,
                "aim_sent_beyond_rest": RESUME_SENT_AIM,
                "check": "ok" if best["rerun_sent_beyond_rest"] <= RESUME_SENT_AIM else "MISSED",
            }
    finally:
        cdn.reset()
        if own:
            cdn.stop()
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    return report


def _copy_group(info: TestbedInfo, cdn: Cdn, big: BigImage, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    size = big.layer_size
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in CASES}
    for round_ in range(max(1, args.rounds)):
        for name, case in CASES.items():
            cdn.reset()
            cdn.settings(bandwidth=args.bandwidth, latency=args.latency)
            prefix = f"cdnbench{os.getpid()}r{round_}{re.sub('[^a-z0-9]', '', name)}"
            outcome = case(info, cdn, big, work, args.collections.resolve(), prefix)
            time.sleep(0.5)  # the CDN counts a request once its handler is done, which may be just after the client
            outcome.update(_served(cdn, big.layer_digest))
            outcome["mb_per_s"] = round(size / outcome["seconds"] / 1e6, 1)
            results[name].append(outcome)
    best = {name: min(rounds, key=lambda r: r["seconds"]) for name, rounds in results.items()}
    stream = best["single stream"]["seconds"]
    for outcome in best.values():
        outcome["speedup_vs_single_stream"] = round(stream / outcome["seconds"], 2)
    # The module's time for the big blob without its fixed cost (the same run on a 1 MiB image).
    net = best["module"]["seconds"] - best["module, 1 MiB"]["seconds"]
    best["module, 1 MiB"]["mb_per_s"] = 0
    best["module"]["net_seconds"] = round(net, 2)
    best["module"]["net_speedup_vs_single_stream"] = round(stream / net, 2) if net > 0 else None
    return {"blob_bytes": size, "best": best, "all": results}


def _print(report: dict[str, Any]) -> None:
    per_connection = f"{report['bandwidth_per_connection'] / 1e6:g} MB/s per connection, {report['latency'] * 1000:.0f} ms per request"
    if "best" in report:
        print(f"big blob through the CDN stand-in: {report['blob_bytes'] / 2**20:.0f} MiB, {per_connection}")
        print(
            f"{'case':<15}{'seconds':>9}{'MB/s':>8}{'x stream':>10}{'requests':>10}{'ranged':>8}{'MiB served':>12}{'peak MiB':>10}"
        )
        for name, outcome in report["best"].items():
            print(
                f"{name:<15}{outcome['seconds']:>9.2f}{outcome['mb_per_s']:>8.1f}{outcome['speedup_vs_single_stream']:>10.2f}"
                f"{outcome['requests']:>10}{outcome['ranged']:>8}{outcome['bytes'] / 2**20:>12.1f}{outcome.get('peak_rss_mib', ''):>10}"
            )
        module = report["best"]["module"]
        print(
            f"module without its fixed cost (the 1 MiB run): {module['net_seconds']:.2f}s, "
            f"{module['net_speedup_vs_single_stream']}x the single stream"
        )
    if "resume" in report:
        best = report["resume"]["best"]
        mib = 2**20
        print(
            f"a bundle export killed half-way and run again: {best['layer_bytes'] / mib:.0f} MiB layer, {per_connection}"
        )
        print(f"  uncut run: {best['full_seconds']:.2f}s, {best['full_served_bytes'] / mib:.1f} MiB served")
        print(
            f"  cut run: killed after {best['cut_seconds']:.2f}s, {best['held_bytes'] / mib:.1f} MiB kept ({best['held_fraction']:.1%}), "
            f"{best['cut_served_bytes'] / mib:.1f} MiB served"
        )
        print(
            f"  re-run: {best['rerun_seconds']:.2f}s ({best['rerun_over_full']:.2f}x the uncut run), "
            f"{best['rerun_served_bytes'] / mib:.1f} MiB served = {best['rerun_served_fraction']:.1%} of the layer "
            f"(aim at most {RESUME_AIM:.0%}: {report['resume']['check']}), {best['rerun_requests']} requests; the blob hashes to its digest"
        )
    if "resume_registry" in report:
        best = report["resume_registry"]["best"]
        mib = 2**20
        print(
            f"a mirror to a registry killed half-way and run again: {best['layer_bytes'] / mib:.0f} MiB layer, {per_connection}"
        )
        print(
            f"  cut run: killed after {best['cut_seconds']:.2f}s, the registry held {best['held_bytes'] / mib:.1f} MiB "
            f"({best['held_fraction']:.1%}); {best['cut_sent_bytes'] / mib:.1f} MiB sent, {best['cut_served_bytes'] / mib:.1f} MiB served"
        )
        print(
            f"  re-run: {best['rerun_seconds']:.2f}s, {best['rerun_sent_bytes'] / mib:.1f} MiB sent = {best['rerun_sent_fraction']:.1%} "
            f"of the layer ({best['rerun_sent_beyond_rest']:.1%} beyond the rest; aim at most {RESUME_SENT_AIM:.0%}: "
            f"{report['resume_registry']['check']}), {best['rerun_served_bytes'] / mib:.1f} MiB served "
            f"= {best['rerun_served_fraction']:.1%}; the registry's manifest has the source's digest"
        )


def main() -> int:
    args = _parser().parse_args()
    report = run(args)
    _print(report)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
