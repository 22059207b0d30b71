# Copyright (c) airgap.ngc contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A big blob through nvcr.io's CDN, stood in (tests/testbed/cdn.py): redirects to presigned URLs that refuse
credentials, several Range requests at once, a connection dropped mid-body, a token that expires mid-download.

Judged by skopeo (the destination's manifest bytes), by hashing the bundle's blob file, and by what the CDN
stand-in counted (requests, ranges, Authorization headers, bytes served).
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.integration.test_image_mirror import kill_run
from tests.testbed._common import ProcessRecord
from tests.testbed.cdn import BigImage, Cdn, seed_big_image, start_cdn

PART = 8 * 1024 * 1024  # _blobs.RANGE_PART_SIZE
# The big layer: more than blob_reads.RANGE_THRESHOLD (64 MiB: fetched in parts), more than the two pieces of an upload
# (32 MiB each) that pass its half, and big enough that the rest a cut-off run fetches (at most half, plus two parts in
# flight) is less than the whole; `make bench` cuts off a 1 GiB one (cdn_bench --only resume).
SIZE = 72 * 1024 * 1024
SLOW = 8_000_000  # bytes/s per connection: the 72 MiB blob takes a few seconds over 4 connections


@pytest.fixture(scope="module")
def cdn(testbed: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cdn]:
    """The test bed's CDN stand-in if it started one (AIRGAP_TESTBED_CDN=1), else one of this module's own."""
    if testbed.cdn_proxy_url:
        yield Cdn(
            testbed.cdn_proxy_url,
            testbed.cdn_url,
            ProcessRecord("cdn", testbed.pids["cdn"], testbed.process_markers["cdn"]),
        )
        return
    stand_in = start_cdn(
        tmp_path_factory.mktemp("cdn"),
        testbed.source_registry_url,
        Path(testbed.workdir) / "registry-token" / "data",
        f"{testbed.ngc_api_url}/token",
    )
    try:
        yield stand_in
    finally:
        stand_in.stop()


@pytest.fixture(scope="module")
def big(testbed: Any) -> BigImage:
    return seed_big_image(testbed.source_registry_url, "$oauthtoken", testbed.api_key, size=SIZE)


@pytest.fixture
def fresh_cdn(cdn: Cdn, faults: Any) -> Iterator[Cdn]:
    cdn.reset()
    try:
        yield cdn
    finally:
        cdn.reset()


@pytest.fixture
def ns(request: pytest.FixtureRequest) -> str:
    return f"cdn{os.getpid()}-{request.node.name[5:25].replace('_', '-')}-{int(time.time() * 1000) % 100000}"


def mirror(ansible: Any, testbed: Any, cdn: Cdn, big: BigImage, tmp_path: Path, ns: str, **destinations: Any) -> Any:
    args = {
        "registry_url": cdn.url,
        "images": [f"{big.repository}:{big.tag}"],
        "facts_file": str(tmp_path / "facts" / "ngc_mirror.fact"),
        **(destinations or {"registry": {"url": testbed.open_registry_url, "prefix": ns}}),
    }
    run = ansible.module("ngc_image_mirror", args, api_key=testbed.api_key)
    assert run.rc == 0, run.stdout + run.stderr
    assert [i["status"] for i in run.result["images"]] == ["copied"], run.result
    return run


def dest_digest(testbed: Any, ns: str, big: BigImage) -> str:
    raw = subprocess.run(
        [
            "skopeo",
            "inspect",
            "--raw",
            "--tls-verify=false",
            f"docker://{testbed.open_registry_host}/{ns}/{big.repository}:{big.tag}",
        ],
        capture_output=True,
        check=True,
    ).stdout
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def downloads(cdn: Cdn, big: BigImage) -> list[dict[str, Any]]:
    return [d for d in cdn.stats()["downloads"] if d["digest"] == big.layer_digest]


def served(entries: list[dict[str, Any]]) -> int:
    return sum(d["bytes"] for d in entries)


def test_the_cdn_refuses_credentials_and_serves_ranges(testbed: Any, fresh_cdn: Cdn, big: BigImage) -> None:
    """The stand-in itself: what the collection is tested against behaves like nvcr.io and S3."""
    import requests  # pylint: disable=import-outside-toplevel

    challenge = requests.get(f"{fresh_cdn.url}/v2/", timeout=10).headers["WWW-Authenticate"]
    assert challenge.startswith("Bearer realm=") and "service=" not in challenge
    token = requests.get(
        f"{testbed.ngc_api_url}/proxy_auth",
        params={"scope": f"repository:{big.repository}:pull"},
        auth=("$oauthtoken", testbed.api_key),
        timeout=10,
    ).json()["token"]
    auth = {"Authorization": f"Bearer {token}"}
    redirect = requests.get(
        f"{fresh_cdn.url}/v2/{big.repository}/blobs/{big.layer_digest}", headers=auth, allow_redirects=False, timeout=10
    )
    assert redirect.status_code == 307
    location = redirect.headers["Location"]
    assert location.startswith(fresh_cdn.cdn_url)
    assert requests.get(location, headers=auth, timeout=10).status_code == 400
    part = requests.get(location, headers={"Range": "bytes=100-199"}, timeout=10)
    assert (part.status_code, part.headers["Content-Range"], len(part.content)) == (
        206,
        f"bytes 100-199/{big.layer_size}",
        100,
    )
    assert requests.get(location.replace("signature=", "signature=0"), timeout=10).status_code == 403


def test_big_blob_comes_in_parallel_ranges_without_credentials(
    ansible: Any, testbed: Any, fresh_cdn: Cdn, big: BigImage, tmp_path: Path, ns: str
) -> None:
    fresh_cdn.settings(bandwidth=SLOW, latency=0.02)
    bundle = tmp_path / "bundle"
    mirror(
        ansible,
        testbed,
        fresh_cdn,
        big,
        tmp_path,
        ns,
        registry={"url": testbed.open_registry_url, "prefix": ns},
        bundle={"dir": str(bundle)},
    )
    assert dest_digest(testbed, ns, big) == big.digest  # skopeo reads the destination's manifest: the digest is kept
    hex_digest = big.layer_digest.split(":", 1)[1]
    with open(bundle / "blobs" / "sha256" / hex_digest, "rb") as handle:
        assert hashlib.file_digest(handle, "sha256").hexdigest() == hex_digest
    entries = downloads(fresh_cdn, big)
    ranged = [d for d in entries if d["status"] == 206]
    assert len(ranged) >= big.layer_size // PART  # several Range requests, not one stream
    assert all(d["range"] for d in ranged)
    assert not any(d["authorization"] for d in fresh_cdn.stats()["downloads"])  # no credentials went to the CDN
    assert fresh_cdn.stats()["authorization_refused"] == 0
    assert served(entries) == big.layer_size  # read once for both destinations, every byte once


MIRROR_PLAYBOOK = """\
- name: Mirror the big image
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


@pytest.mark.parametrize("kind", ["open", "token"])
def test_a_registry_upload_killed_half_way_is_continued_by_the_next_run(
    ansible: Any,
    testbed: Any,
    fresh_cdn: Cdn,
    faults: Any,
    big: BigImage,
    testbed_authfile: Path,
    tmp_path: Path,
    ns: str,
    kind: str,
) -> None:
    """kill -9 once the registry holds half the big layer (its session recorded beside the facts file, distribution's
    own upload data that long): the next run asks the registry where the session stands, fetches only the rest from
    the CDN and sends only the rest; skopeo reads the source's manifest digest and the blob the registry stored hashes
    to its name. Into the open registry, and into the token-auth one (through the counting proxy: the bytes the next
    run sends are the rest, under 10% of the layer more) with tokens that expire between two pieces (the registry's 401
    on a PATCH is answered by a new token and the same piece, and the next run starts with none)."""
    fresh_cdn.settings(bandwidth=2_000_000)  # about 8 MB/s over 4 connections: a 32 MiB piece every 4 s
    destination: dict[str, Any] = {"url": testbed.open_registry_url, "prefix": ns}
    host, data = (
        testbed.open_registry_host,
        Path(testbed.workdir) / "registry-open" / "data" / "docker" / "registry" / "v2",
    )
    if kind == "token":
        faults.ngc(token_lifetime=2)
        faults.registry(
            rewrite_expired_realm=False
        )  # the proxy only counts: the registry's own realm renews its tokens
        destination = {
            "url": testbed.source_proxy_url,
            "prefix": ns,
            "username": "$oauthtoken",
            "password": testbed.api_key,
        }
        host, data = (
            testbed.source_proxy_host,
            Path(testbed.workdir) / "registry-token" / "data" / "docker" / "registry" / "v2",
        )
    playbook = tmp_path / "mirror.yml"
    playbook.write_text(MIRROR_PLAYBOOK)
    variables = {
        "source": fresh_cdn.url,
        "images": [f"{big.repository}:{big.tag}"],
        "facts_file": str(tmp_path / "facts" / "ngc_mirror.fact"),
        "destination": destination,
    }
    vars_file = tmp_path / "vars.json"  # the password goes in a file, not on a command line
    vars_file.write_text(json.dumps(variables))
    vars_file.chmod(0o600)
    (tmp_path / "facts").mkdir()
    argv = [str(Path(sys.executable).parent / "ansible-playbook"), str(playbook), "-e", f"@{vars_file}"]
    proc = subprocess.Popen(
        argv,
        env=dict(ansible.env, NGC_API_KEY=testbed.api_key),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    record = tmp_path / "facts" / ".ngc_mirror.fact.uploads"
    uploads = data / "repositories" / ns / big.repository / "_uploads"

    def confirmed() -> int:
        try:
            entries = json.loads(record.read_text())["uploads"]
        except (OSError, ValueError):
            return 0
        return max([e["offset"] for e in entries.values() if e["digest"] == big.layer_digest] or [0])

    def received() -> list[int]:  # what distribution holds of each upload session of the repository
        return (
            [(d / "data").stat().st_size for d in uploads.iterdir() if (d / "data").exists()]
            if uploads.is_dir()
            else []
        )

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None and confirmed() < big.layer_size // 2:
        time.sleep(0.05)
    assert proc.poll() is None, "the upload ended before it could be cut off"
    kill_run(proc, tmp_path / "facts" / "ngc_mirror.fact.lock")
    settled, last = time.monotonic() + 30, None
    while time.monotonic() < settled and received() != last:  # the registry may still be reading what was in flight
        last = received()
        time.sleep(1)
    held = confirmed()
    assert big.layer_size // 2 <= held < big.layer_size
    assert received() == [held]  # the registry holds exactly what the record says: the session can be continued
    assert testbed.api_key not in record.read_text()  # the session's URL is kept, no credentials
    fresh_cdn.reset()
    before = len(faults.stats("registry")["requests"])  # the requests of the first run (the proxy keeps the last 2000)
    again = ansible.playbook(playbook, variables, env={"NGC_API_KEY": testbed.api_key})
    assert again.rc == 0 and [i["status"] for i in again.result["images"]] == ["copied"], again.stdout + again.stderr
    fetched = served(downloads(fresh_cdn, big))
    assert fetched <= big.layer_size - held + 2 * PART, (fetched, held, big.layer_size)  # the rest, not the whole layer
    if kind == "token":  # and only the rest was sent to the registry
        sent = sum(
            r["bytes"]
            for r in faults.stats("registry")["requests"][before:]
            if r["method"] == "PATCH" and f"/{ns}/" in r["path"]
        )
        assert big.layer_size - held <= sent <= big.layer_size - held + big.layer_size // 10, (
            sent,
            held,
            big.layer_size,
        )
    raw = subprocess.run(
        [
            "skopeo",
            "inspect",
            "--raw",
            "--tls-verify=false",
            "--authfile",
            str(testbed_authfile),
            f"docker://{host}/{ns}/{big.repository}:{big.tag}",
        ],
        capture_output=True,
        check=True,
    ).stdout
    assert "sha256:" + hashlib.sha256(raw).hexdigest() == big.digest
    hexdigest = big.layer_digest.split(":", 1)[1]
    stored = data / "blobs" / "sha256" / hexdigest[:2] / hexdigest / "data"
    assert "sha256:" + hashlib.sha256(stored.read_bytes()).hexdigest() == big.layer_digest
    assert (
        data / "repositories" / ns / big.repository / "_layers" / "sha256" / hexdigest / "link"
    ).exists()  # committed there
    assert not record.exists() and not [p for p in (tmp_path / "facts").iterdir() if ".upload" in p.name]
    assert received() == []  # the session was committed, none left behind
    if kind == "token":  # tokens ran out during the upload and were renewed at the destination's realm
        assert faults.stats("ngc")["paths"].get("/proxy_auth", 0) >= 3


def test_a_connection_dropped_mid_body_is_resumed_with_range(
    ansible: Any, testbed: Any, fresh_cdn: Cdn, big: BigImage, tmp_path: Path, ns: str
) -> None:
    fresh_cdn.settings(bandwidth=SLOW)
    fresh_cdn.cdn_fault(abort_after_bytes=3 * 1024 * 1024 + 5, path_contains=big.layer_digest, count=1)
    mirror(ansible, testbed, fresh_cdn, big, tmp_path, ns)
    assert dest_digest(testbed, ns, big) == big.digest
    entries = downloads(fresh_cdn, big)
    # A continuation starts inside a part (not on a part boundary), and the blob was not fetched again from the start.
    starts = [int(d["range"].split("=")[1].split("-")[0]) for d in entries if d["range"]]
    assert any(start % PART for start in starts), starts
    assert big.layer_size <= served(entries) < big.layer_size + PART


def test_a_token_that_expires_during_the_download_is_renewed(
    ansible: Any, testbed: Any, fresh_cdn: Cdn, faults: Any, big: BigImage, tmp_path: Path, ns: str
) -> None:
    # Presigned URLs live two seconds, registry tokens one; the download (4 connections of 3.8 MB/s) takes about five.
    fresh_cdn.settings(bandwidth=3_800_000, token_lifetime=1, url_lifetime=2)
    mirror(ansible, testbed, fresh_cdn, big, tmp_path, ns)
    assert dest_digest(testbed, ns, big) == big.digest
    entries = downloads(fresh_cdn, big)
    assert any(d["status"] == 403 for d in entries)  # a reused URL expired mid-blob...
    front = fresh_cdn.stats(cdn=False)["requests"]
    blob_path = f"/v2/{big.repository}/blobs/{big.layer_digest}"
    assert sum(1 for r in front if r["path"] == blob_path and r["status"] == 401) >= 1  # ...and so had the token
    assert faults.stats("ngc")["paths"].get("/token", 0) >= 1  # renewed at the realm the expired challenge named
    assert big.layer_size <= served(entries) < big.layer_size + PART  # continued, not restarted


@pytest.fixture(scope="module")
def big_tar(testbed: Any) -> BigImage:
    """A big image whose layer is a real tar (one file, /big.bin), for destinations that unpack layers."""
    return seed_big_image(
        testbed.source_registry_url,
        "$oauthtoken",
        testbed.api_key,
        reference="nvidia/big-tar:1",
        size=SIZE,
        as_tar=True,
    )


def kept_file(kind: str, image: BigImage, out: Path) -> Path:
    """Where a destination keeps the bytes of a big blob a run was cut off in."""
    hex_digest = image.layer_digest.split(":")[1]
    return {
        "bundle": out / "blobs" / "sha256" / f".{hex_digest}.resume",
        "archive": out / image.repository / f".{image.tag}.tar.resume",
        "enroot": out / f".enroot-sha256-{hex_digest}.resume",
        "apptainer": out / f".apptainer-sha256-{hex_digest}.resume",
    }[kind]


def held_bytes(kind: str, kept: Path) -> int:
    """The layer's bytes in a kept file (an archive's also holds tar headers: two directories and the layer's)."""
    return kept.stat().st_size - (3 * 512 if kind == "archive" else 0)


def judge(kind: str, image: BigImage, out: Path) -> None:
    """The finished file, judged by its bytes (bundle, archive: the layer hashes to its digest; skopeo reads the
    archive and unpacks the layer to the config's diff_id) or by unsquashfs (enroot, and the partition siftool dumps of a
    SIF: /big.bin holds the seeded bytes)."""
    if kind == "bundle":
        with open(out / "blobs" / "sha256" / image.layer_digest.split(":")[1], "rb") as handle:
            assert "sha256:" + hashlib.file_digest(handle, "sha256").hexdigest() == image.layer_digest
    elif kind == "archive":
        archive = out / image.repository / f"{image.tag}.tar"
        with tarfile.open(archive) as tar:
            member = tar.extractfile(f"blobs/sha256/{image.layer_digest.split(':')[1]}")
            assert member is not None
            assert "sha256:" + hashlib.file_digest(member, "sha256").hexdigest() == image.layer_digest
        inspected = json.loads(
            subprocess.run(
                ["skopeo", "inspect", f"docker-archive:{archive}"], capture_output=True, text=True, check=True
            ).stdout
        )
        assert inspected["Layers"] == [image.diff_id]  # skopeo names a docker archive's layers by what they unpack to
    else:
        if kind == "enroot":
            sqsh = out / f"{image.repository.replace('/', '+')}+{image.tag}.sqsh"
        else:  # the SIF's primary partition, as siftool dumps it
            sqsh = out.with_suffix(".squashfs")
            sif = out / f"{image.repository}:{image.tag}"
            listed = subprocess.run(["siftool", "list", str(sif)], capture_output=True, text=True, check=True).stdout
            fs_id = next(
                line.split("|")[0].strip()
                for line in listed.splitlines()
                if "|" in line and line.split("|")[-1].strip().startswith("FS")
            )
            with open(sqsh, "wb") as handle:
                subprocess.run(["siftool", "dump", fs_id, str(sif)], stdout=handle, check=True)
        data = subprocess.run(["unsquashfs", "-cat", str(sqsh), "big.bin"], capture_output=True, check=True).stdout
        assert hashlib.sha256(data).hexdigest() == image.content_sha256


@pytest.mark.parametrize("kind", ["bundle", "archive", "enroot", "apptainer"])
def test_a_run_killed_half_way_through_a_big_layer_is_continued_by_the_next_run(
    ansible: Any, testbed: Any, fresh_cdn: Cdn, big: BigImage, big_tar: BigImage, tmp_path: Path, kind: str
) -> None:
    """kill -9 in the middle of the big layer: its bytes stay beside the destination, and the next run fetches only the
    rest (judged by the bytes the CDN served), then the result is whole and right."""
    image = big if kind == "bundle" else big_tar
    fresh_cdn.settings(bandwidth=4_000_000)
    out = tmp_path / kind
    args = {
        "registry_url": fresh_cdn.url,
        "images": [f"{image.repository}:{image.tag}"],
        "facts_file": str(tmp_path / "facts" / "ngc_mirror.fact"),
        kind: {"dir": str(out)},
    }
    (tmp_path / "facts").mkdir()
    argv = [
        str(Path(sys.executable).parent / "ansible"),
        "localhost",
        "-m",
        "airgap.ngc.ngc_image_mirror",
        "-a",
        json.dumps(args),
    ]
    proc = subprocess.Popen(
        argv,
        env=dict(ansible.env, NGC_API_KEY=testbed.api_key),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    kept = kept_file(kind, image, out)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if kept.exists() and held_bytes(kind, kept) >= image.layer_size // 2:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be cut off"
    kill_run(proc, tmp_path / "facts" / "ngc_mirror.fact.lock")  # the module too: it runs in a session of its own
    held = held_bytes(kind, kept)
    assert image.layer_size // 2 <= held < image.layer_size
    fresh_cdn.reset()
    run = ansible.module("ngc_image_mirror", args, api_key=testbed.api_key)
    assert run.rc == 0, run.stdout + run.stderr
    assert [i["status"] for i in run.result["images"]] == ["copied"], run.result
    again = served(downloads(fresh_cdn, image))
    assert again <= image.layer_size - held + 2 * PART, (again, held, image.layer_size)  # the rest, not the whole layer
    judge(kind, image, out)
    assert not kept.exists()
    assert not [p for p in out.rglob(".*") if p.is_file()]  # nothing left behind


def test_a_destination_registry_away_for_seven_seconds_mid_upload_costs_nothing(
    ansible: Any, testbed: Any, fresh_cdn: Cdn, big: BigImage, tmp_path: Path, ns: str
) -> None:
    """The site registry stops right after it confirmed the first piece of the big layer and comes back 7 s later on
    the same port (a restart): at the defaults the run waits, continues the same upload session and copies the image;
    the registry holds the blob, whole, and no upload session is left behind."""
    from tests.testbed.registry import _launch, start_registry  # pylint: disable=import-outside-toplevel

    site = start_registry("open", tmp_path / "site")
    try:
        fresh_cdn.settings(bandwidth=2_000_000)  # about 8 MB/s over 4 connections: a 32 MiB piece every 4 s
        playbook = tmp_path / "mirror.yml"
        playbook.write_text(MIRROR_PLAYBOOK)
        variables = {
            "source": fresh_cdn.url,
            "images": [f"{big.repository}:{big.tag}"],
            "facts_file": str(tmp_path / "facts" / "ngc_mirror.fact"),
            "destination": {"url": site.url, "prefix": ns},
        }
        vars_file = tmp_path / "vars.json"
        vars_file.write_text(json.dumps(variables))
        (tmp_path / "facts").mkdir()
        argv = [str(Path(sys.executable).parent / "ansible-playbook"), str(playbook), "-e", f"@{vars_file}"]
        proc = subprocess.Popen(
            argv,
            env=dict(ansible.env, NGC_API_KEY=testbed.api_key),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        record = tmp_path / "facts" / ".ngc_mirror.fact.uploads"

        def confirmed() -> int:
            try:
                return max([e["offset"] for e in json.loads(record.read_text())["uploads"].values()] or [0])
            except (OSError, ValueError):
                return 0

        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None and confirmed() == 0:
            time.sleep(0.02)
        assert proc.poll() is None and confirmed() > 0, "the upload ended before the registry could be stopped"
        assert site.proc is not None
        site.proc.kill()
        site.proc.wait()
        time.sleep(7)
        site = _launch("open", tmp_path / "site", None, site.port, 30)
        out = proc.communicate(timeout=600)[0]
        assert proc.returncode == 0, out
        raw = subprocess.run(
            [
                "skopeo",
                "inspect",
                "--raw",
                "--tls-verify=false",
                f"docker://{site.host}/{ns}/{big.repository}:{big.tag}",
            ],
            capture_output=True,
            check=True,
        ).stdout
        assert "sha256:" + hashlib.sha256(raw).hexdigest() == big.digest
        v2 = tmp_path / "site" / "data" / "docker" / "registry" / "v2"
        hexdigest = big.layer_digest.split(":", 1)[1]
        stored = v2 / "blobs" / "sha256" / hexdigest[:2] / hexdigest / "data"
        assert "sha256:" + hashlib.sha256(stored.read_bytes()).hexdigest() == big.layer_digest
        uploads = v2 / "repositories" / ns / big.repository / "_uploads"
        assert not (uploads.is_dir() and list(uploads.iterdir())), "an upload session was left in the registry"
        assert not record.exists()
    finally:
        if site.proc is not None and site.proc.poll() is None:
            site.proc.kill()
            site.proc.wait()


def export_bundle(ansible: Any, testbed: Any, cdn: Cdn, image: BigImage, tmp_path: Path) -> Path:
    """A bundle of ``image`` exported from the CDN stand-in at full speed (the connected side's run)."""
    bundle = tmp_path / "bundle"
    args = {
        "registry_url": cdn.url,
        "images": [f"{image.repository}:{image.tag}"],
        "facts_file": str(tmp_path / "export.fact"),
        "bundle": {"dir": str(bundle)},
    }
    run = ansible.module("ngc_image_mirror", args, api_key=testbed.api_key)
    assert run.rc == 0, run.stdout + run.stderr
    return bundle


def module_pid(proc: subprocess.Popen[Any], lock: Path) -> int:
    """The pid of the module a run started (it names itself in the facts file's lock)."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            return int(lock.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            time.sleep(0.01)
    raise AssertionError("the run ended or never took its lock")


def held_still_once(pid: int, reached: Any) -> None:
    """Let the module run in slices of 20 ms (SIGCONT, a moment, SIGSTOP) until ``reached()`` holds while it stands
    still: a local copy that takes a second at full speed is caught half way. SIGKILL ends it stopped."""
    deadline = time.monotonic() + 120
    os.kill(pid, signal.SIGSTOP)
    while not reached():
        assert time.monotonic() < deadline and Path(f"/proc/{pid}").exists(), "the run ended before it could be cut off"
        os.kill(pid, signal.SIGCONT)
        time.sleep(0.02)
        os.kill(pid, signal.SIGSTOP)


@pytest.mark.parametrize("kind", ["enroot", "apptainer"])
def test_a_cache_write_from_a_bundle_killed_half_way_is_continued_from_its_kept_bytes(
    ansible: Any, testbed: Any, fresh_cdn: Cdn, big_tar: BigImage, tmp_path: Path, kind: str
) -> None:
    """kill -9 half way through the big layer of an import from a bundle into an enroot or Apptainer cache: the
    layer's bytes stay in the cache's .resume file, and the next run reads only the rest from the bundle (its kept
    bytes are compared with the bundle's, not thrown away); the image is whole (unsquashfs, siftool)."""
    bundle = export_bundle(ansible, testbed, fresh_cdn, big_tar, tmp_path)
    out = tmp_path / kind
    facts = tmp_path / "facts" / "ngc_mirror.fact"
    facts.parent.mkdir()
    args = {"source": "bundle", "source_dir": str(bundle), "facts_file": str(facts), kind: {"dir": str(out)}}
    argv = [
        str(Path(sys.executable).parent / "ansible"),
        "localhost",
        "-m",
        "airgap.ngc.ngc_image_mirror",
        "-a",
        json.dumps(args),
    ]
    proc = subprocess.Popen(
        argv, env=ansible.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    kept = kept_file(kind, big_tar, out)
    lock = facts.parent / "ngc_mirror.fact.lock"
    held_still_once(module_pid(proc, lock), lambda: kept.exists() and kept.stat().st_size >= big_tar.layer_size // 2)
    kill_run(proc, lock)
    held = kept.stat().st_size
    assert big_tar.layer_size // 2 <= held < big_tar.layer_size
    run = ansible.module("ngc_image_mirror", args)
    assert run.rc == 0, run.stdout + run.stderr
    assert [i["status"] for i in run.result["images"]] == ["copied"], run.result
    assert run.result["bytes_reused"] >= held  # the kept bytes were used...
    assert (
        run.result["bytes_transferred"] <= big_tar.layer_size - held + big_tar.layer_size // 10
    )  # ...and only the rest read
    judge(kind, big_tar, out)
    assert not kept.exists()
    assert not [p for p in out.rglob(".*") if p.is_file()]  # nothing left behind
    assert not [p.name for p in facts.parent.iterdir() if ".upload" in p.name or ".partial-" in p.name]


IMPORT_PLAYBOOK = """\
- name: Import the bundle
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Import
      airgap.ngc.ngc_image_mirror:
        source: bundle
        source_dir: "{{ bundle }}"
        facts_file: "{{ facts_file }}"
        registry: "{{ destination }}"
"""


@dataclass
class KilledImport:
    """An import from a bundle into the site registry, killed with the first piece of the big layer in an intact session."""

    playbook: Path
    variables: dict[str, Any]
    bundle: Path
    held: int  # bytes the registry holds in the session
    data: Path  # the registry's storage (v2)
    uploads: Path  # its upload sessions of the repository
    facts: Path


def import_killed_after_one_piece(
    ansible: Any, testbed: Any, cdn: Cdn, faults: Any, big: BigImage, tmp_path: Path, ns: str
) -> KilledImport:
    """The import goes through the counting proxy, which refuses every PATCH after the first (503): the run waits to
    send the second piece again, and is killed -9 meanwhile. The registry then holds the first piece, as recorded."""
    bundle = export_bundle(ansible, testbed, cdn, big, tmp_path)
    data = Path(testbed.workdir) / "registry-token" / "data" / "docker" / "registry" / "v2"
    uploads = data / "repositories" / ns / big.repository / "_uploads"
    facts = tmp_path / "facts" / "ngc_mirror.fact"
    facts.parent.mkdir()
    record = facts.parent / ".ngc_mirror.fact.uploads"
    playbook = tmp_path / "import.yml"
    playbook.write_text(IMPORT_PLAYBOOK)
    variables = {
        "bundle": str(bundle),
        "facts_file": str(facts),
        "destination": {
            "url": testbed.source_proxy_url,
            "prefix": ns,
            "username": "$oauthtoken",
            "password": testbed.api_key,
        },
    }
    vars_file = tmp_path / "vars.json"  # the password goes in a file, not on a command line
    vars_file.write_text(json.dumps(variables))
    vars_file.chmod(0o600)
    faults.registry(status=503, method="PATCH", path_contains=f"/{ns}/", count=None, after=1)
    argv = [str(Path(sys.executable).parent / "ansible-playbook"), str(playbook), "-e", f"@{vars_file}"]
    proc = subprocess.Popen(
        argv, env=ansible.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )

    def confirmed() -> int:
        try:
            return max([e["offset"] for e in json.loads(record.read_text())["uploads"].values()] or [0])
        except (OSError, ValueError):
            return 0

    deadline = time.monotonic() + 120
    while (
        time.monotonic() < deadline
        and proc.poll() is None
        and not (faults.stats("registry")["faults_served"] and confirmed())
    ):
        time.sleep(0.05)
    assert proc.poll() is None, "the import ended before it could be cut off"
    kill_run(proc, facts.parent / "ngc_mirror.fact.lock")
    held = confirmed()
    assert 0 < held < big.layer_size and session_bytes(uploads) == [held]  # an intact session holds the first piece
    faults.reset()
    return KilledImport(playbook, variables, bundle, held, data, uploads, facts)


def session_bytes(uploads: Path) -> list[int]:
    """What distribution holds of each open upload session of a repository (a cancelled one keeps an empty directory)."""
    return (
        [(d / "data").stat().st_size for d in uploads.iterdir() if (d / "startedat").exists()]
        if uploads.is_dir()
        else []
    )


def nothing_left(killed: KilledImport) -> None:
    """No upload session open in the registry, no sessions record, spool or temporary file beside the facts file."""
    assert session_bytes(killed.uploads) == [], "an upload session was left in the registry"
    assert not [p.name for p in killed.facts.parent.iterdir() if ".upload" in p.name or ".partial-" in p.name]


def test_a_registry_upload_from_a_bundle_killed_half_way_is_continued(
    ansible: Any, testbed: Any, fresh_cdn: Cdn, faults: Any, big: BigImage, tmp_path: Path, ns: str
) -> None:
    """The next run continues the session the killed import left: the bytes it sends (counted at the proxy) are the
    rest of the layer, under 10% of it more; the layer the registry stored is whole, and nothing is left behind."""
    killed = import_killed_after_one_piece(ansible, testbed, fresh_cdn, faults, big, tmp_path, ns)
    again = ansible.playbook(killed.playbook, killed.variables)
    assert again.rc == 0 and [i["status"] for i in again.result["images"]] == ["copied"], again.stdout + again.stderr
    sent = sum(
        r["bytes"] for r in faults.stats("registry")["requests"] if r["method"] == "PATCH" and f"/{ns}/" in r["path"]
    )
    held = killed.held
    assert big.layer_size - held <= sent <= big.layer_size - held + big.layer_size // 10, (sent, held, big.layer_size)
    hexdigest = big.layer_digest.split(":", 1)[1]
    stored = killed.data / "blobs" / "sha256" / hexdigest[:2] / hexdigest / "data"
    assert "sha256:" + hashlib.sha256(stored.read_bytes()).hexdigest() == big.layer_digest
    assert (
        killed.data / "repositories" / ns / big.repository / "_layers" / "sha256" / hexdigest / "link"
    ).exists()  # committed there
    nothing_left(killed)


def test_a_damaged_bundle_blob_after_a_kill_cancels_the_kept_session(
    ansible: Any, testbed: Any, fresh_cdn: Cdn, faults: Any, big: BigImage, tmp_path: Path, ns: str
) -> None:
    """The bundle's copy of the layer is damaged after the bytes the registry holds, before the next run: that run
    fails the image naming the damaged file, and the session it continued is cancelled at the registry (nothing of a
    blob that did not hash to its digest is kept), with no record or spool left."""
    killed = import_killed_after_one_piece(ansible, testbed, fresh_cdn, faults, big, tmp_path, ns)
    blob = killed.bundle / "blobs" / "sha256" / big.layer_digest.split(":", 1)[1]
    with open(blob, "r+b") as handle:
        handle.seek(killed.held + 1000)
        byte = handle.read(1)
        handle.seek(killed.held + 1000)
        handle.write(bytes([byte[0] ^ 0xFF]))
    again = ansible.playbook(killed.playbook, killed.variables)
    assert again.rc != 0 and [i["status"] for i in again.result["images"]] == ["failed"], again.stdout + again.stderr
    assert big.layer_digest in again.result["images"][0]["message"], again.result["images"][0]
    nothing_left(killed)
