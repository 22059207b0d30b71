# Copyright (c) airgap.ngc contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""ngc_image_mirror against real registries, judged by skopeo and the Docker engine."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
TAGS = [
    "nvidia/pytorch:24.01-py3",
    "nvidia/pytorch:24.02-py3",
    "nvidia/cuda:12.2.0-base-ubuntu22.04",
    "nvidia/clara/clara-parabricks:4.2.0-1",
]


def seeded(testbed: Any) -> dict[str, dict[str, Any]]:
    found = {}
    for repo in testbed.seed_document()["repositories"]:
        for tag in repo.get("tags") or []:
            found[f"{repo['repository']}:{tag['tag']}"] = dict(tag, description=repo.get("description"))
    return found


def skopeo(*args: str) -> bytes:
    return subprocess.run(["skopeo", *args], capture_output=True, check=True).stdout


def raw_digest(host: str, reference: str, authfile: Any = None) -> str:
    extra = ["--authfile", str(authfile)] if authfile else []
    raw = skopeo("inspect", "--raw", "--tls-verify=false", *extra, f"docker://{host}/{reference}")
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def mirror_args(testbed: Any, tmp_path: Path, images: list[Any], **extra: Any) -> dict[str, Any]:
    args: dict[str, Any] = {
        "registry_url": testbed.source_registry_url,
        "images": images,
        "facts_file": str(tmp_path / "facts" / "ngc_mirror.fact"),
    }
    args.update(extra)
    return args


@pytest.fixture
def ns(request: pytest.FixtureRequest) -> str:
    """A destination namespace of this test's own, so that reruns against a reused test bed start empty."""
    return (
        f"t{os.getpid()}-{request.node.name.split('[')[0][5:25].replace('_', '-')}-{int(time.time() * 1000) % 100000}"
    )


def kill_run(proc: subprocess.Popen[Any], lock_file: Path) -> None:
    """SIGKILL a running module (its pid is in the facts file's lock: it runs in a session of its own and would outlive
    its parent) and the ansible process that started it, and wait until the module is gone."""
    module_pid = int(lock_file.read_text().split()[0])
    for kill, pid in ((os.kill, module_pid), (os.killpg, proc.pid)):
        try:
            kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass  # it ended on its own between the last look and the kill: the next run must converge all the same
    proc.wait()
    deadline = time.monotonic() + 30
    while Path(f"/proc/{module_pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.1)


def facts(tmp_path: Path) -> dict[str, Any]:
    return json.loads((tmp_path / "facts" / "ngc_mirror.fact").read_text())


def test_registry_copy_keeps_every_digest_and_is_idempotent(
    ansible: Any, testbed: Any, tmp_path: Path, ns: str, faults: Any
) -> None:
    dest = {"url": testbed.open_registry_url, "prefix": ns}
    args = mirror_args(testbed, tmp_path, TAGS, registry=dest, registry_url=testbed.source_proxy_url)
    first = ansible.module("ngc_image_mirror", args, api_key=testbed.api_key)
    assert first.rc == 0, first.stdout + first.stderr
    assert first.result["changed"] is True
    assert [i["status"] for i in first.result["images"]] == ["copied"] * len(TAGS)
    source = seeded(testbed)
    for ref in TAGS:
        # The judge: skopeo reads the destination's manifest bytes; they hash to the source digest.
        assert raw_digest(testbed.open_registry_host, f"{ns}/{ref}") == source[ref]["digest"], ref
    assert first.result["bytes_transferred"] > 0
    assert first.result["bytes_reused"] > 0  # the pytorch tags share their base layer

    recorded = facts(tmp_path)["images"]
    for ref in TAGS:
        entry = recorded[f"{testbed.source_proxy_host}/{ref}"]
        assert entry["source_digest"] == source[ref]["digest"]
        (dest_entry,) = entry["destinations"].values()
        assert dest_entry["digest"] == source[ref]["digest"]

    faults.reset()
    second = ansible.module("ngc_image_mirror", args, api_key=testbed.api_key)
    assert second.rc == 0
    assert second.result["changed"] is False
    assert [i["status"] for i in second.result["images"]] == ["skipped"] * len(TAGS)
    assert second.result["bytes_transferred"] == 0
    # At most two requests per image: one HEAD on the source (counted here), one HEAD on the destination.
    stats = faults.stats("registry")
    manifest_requests = [r for r in stats["requests"] if "/manifests/" in r["path"] and r["status"] != 401]
    assert len(manifest_requests) == len(TAGS)
    assert all(r["method"] == "HEAD" for r in manifest_requests)
    repositories = len({ref.rsplit(":", 1)[0] for ref in TAGS})
    # One HEAD per tag; with signatures (the default) one tag list per repository and one referrers check a run;
    # the token realm is learnt from one challenge.
    assert stats["total"] <= len(TAGS) + repositories + 2, stats["requests"]
    assert not [r for r in stats["requests"] if "/blobs/" in r["path"]]


def test_check_mode_writes_nothing(ansible: Any, testbed: Any, tmp_path: Path, ns: str) -> None:
    archive_dir = tmp_path / "archives"
    args = mirror_args(
        testbed,
        tmp_path,
        TAGS[:2],
        registry={"url": testbed.open_registry_url, "prefix": ns},
        archive={"dir": str(archive_dir)},
    )
    run = ansible.module("ngc_image_mirror", args, api_key=testbed.api_key, check=True, diff=True)
    assert run.rc == 0, run.stdout
    assert run.result["changed"] is True
    assert {i["status"] for i in run.result["images"]} == {"would copy"}
    assert not (tmp_path / "facts").exists()
    assert not archive_dir.exists()
    with pytest.raises(subprocess.CalledProcessError):
        skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{testbed.open_registry_host}/{ns}/{TAGS[0]}")


def test_diff_shows_before_and_after(ansible: Any, testbed: Any, tmp_path: Path, ns: str) -> None:
    args = mirror_args(testbed, tmp_path, TAGS[:1], registry={"url": testbed.open_registry_url, "prefix": ns})
    run = ansible.module("ngc_image_mirror", args, api_key=testbed.api_key, diff=True)
    key = f"registry:{testbed.open_registry_host}/{ns}/{TAGS[0]}"
    assert f'-    "{key}": null' in run.stdout
    assert f'+    "{key}": "{seeded(testbed)[TAGS[0]]["digest"]}"' in run.stdout


@pytest.mark.engine
def test_docker_archive_loads_in_the_engine(ansible: Any, testbed: Any, tmp_path: Path) -> None:
    if not testbed.docker_host:
        pytest.skip("this test bed was started without a Docker engine")
    archive_dir = tmp_path / "archives"
    images = ["nvidia/pytorch:24.01-py3", "nvidia/cuda:12.2.0-base-ubuntu22.04"]
    run = ansible.module(
        "ngc_image_mirror",
        mirror_args(testbed, tmp_path, images, archive={"dir": str(archive_dir)}),
        api_key=testbed.api_key,
    )
    assert run.rc == 0, run.stdout
    env = dict(os.environ, DOCKER_HOST=testbed.docker_host)
    source = seeded(testbed)
    for ref in images:
        path = archive_dir / f"{ref.replace(':', '/')}.tar"
        assert path.is_file()
        loaded = subprocess.run(
            ["docker", "load", "-i", str(path)], env=env, capture_output=True, text=True, check=True
        ).stdout
        name = f"{testbed.source_registry_host}/{ref}"
        assert name in loaded
        image_id = subprocess.run(
            ["docker", "image", "inspect", "-f", "{{.Id}}", name], env=env, capture_output=True, text=True, check=True
        ).stdout.strip()
        manifest = source[ref]["manifests"][0]  # amd64 is the first platform seeded
        assert image_id == manifest["config_digest"]
        inspected = json.loads(skopeo("inspect", f"docker-archive:{path}"))
        # skopeo names a docker-archive's layers by their uncompressed digests (the config's diff_ids).
        config = json.loads(skopeo("inspect", "--config", f"docker-archive:{path}"))
        assert inspected["Layers"] == config["rootfs"]["diff_ids"]
        assert len(inspected["Layers"]) == len(manifest["layer_digests"])
        assert inspected["Architecture"] == "amd64"
        subprocess.run(["docker", "rmi", name], env=env, capture_output=True, check=False)


def test_oci_archive_holds_all_platforms(ansible: Any, testbed: Any, tmp_path: Path) -> None:
    archive_dir = tmp_path / "oci"
    ref = "nvidia/cuda:12.2.0-base-ubuntu22.04"
    run = ansible.module(
        "ngc_image_mirror",
        mirror_args(testbed, tmp_path, [ref], archive={"dir": str(archive_dir), "format": "oci"}),
        api_key=testbed.api_key,
    )
    assert run.rc == 0, run.stdout
    path = archive_dir / "nvidia/cuda/12.2.0-base-ubuntu22.04.oci.tar"
    with tarfile.open(path) as archive:
        index = json.load(archive.extractfile("index.json"))  # type: ignore[arg-type]
    assert index["manifests"][0]["digest"] == seeded(testbed)[ref]["digest"]
    for arch in ("amd64", "arm64"):
        out = tmp_path / f"copy-{arch}"
        skopeo("--override-arch", arch, "copy", f"oci-archive:{path}", f"dir:{out}")
        assert (out / "manifest.json").is_file()
    second = ansible.module(
        "ngc_image_mirror",
        mirror_args(testbed, tmp_path, [ref], archive={"dir": str(archive_dir), "format": "oci"}),
        api_key=testbed.api_key,
    )
    assert second.result["changed"] is False


def test_platform_subset_and_prefix_on_a_basic_auth_registry(
    ansible: Any, testbed: Any, tmp_path: Path, ns: str
) -> None:
    ref = "nvidia/cuda:12.10.0-base-ubuntu22.04"
    playbook = tmp_path / "mirror.yml"
    playbook.write_text(
        """
- hosts: localhost
  gather_facts: false
  tasks:
    - airgap.ngc.ngc_image_mirror:
        registry_url: "{{ src }}"
        images: ["%s"]
        platforms: [linux/arm64]
        facts_file: "{{ facts_file }}"
        registry:
          url: "{{ dest }}"
          username: "{{ user }}"
          password: "{{ password }}"
          prefix: "{{ prefix }}"
"""
        % ref
    )
    variables = {
        "src": testbed.source_registry_url,
        "dest": testbed.basic_registry_url,
        "user": testbed.basic_username,
        "password": testbed.basic_password,
        "facts_file": str(tmp_path / "facts" / "ngc_mirror.fact"),
        "prefix": f"site/{ns}",
    }
    env = {"NGC_API_KEY": testbed.api_key}
    run = ansible.playbook(playbook, variables, env=env, verbosity=4)
    assert run.rc == 0, run.stdout + run.stderr
    assert testbed.basic_password not in run.stdout + run.stderr
    assert testbed.api_key not in run.stdout + run.stderr
    authfile = tmp_path / "auth.json"
    authfile.write_text(
        json.dumps(
            {"auths": {testbed.basic_registry_host: {"auth": _basic(testbed.basic_username, testbed.basic_password)}}}
        )
    )
    raw = json.loads(
        skopeo(
            "inspect",
            "--raw",
            "--tls-verify=false",
            "--authfile",
            str(authfile),
            f"docker://{testbed.basic_registry_host}/site/{ns}/{ref}",
        )
    )
    assert [m["platform"]["architecture"] for m in raw["manifests"]] == ["arm64"]
    again = ansible.playbook(playbook, variables, env=env)
    assert again.rc == 0 and again.result["changed"] is False
    assert testbed.basic_password not in (tmp_path / "facts" / "ngc_mirror.fact").read_text()


def _basic(user: str, password: str) -> str:
    import base64  # pylint: disable=import-outside-toplevel

    return base64.b64encode(f"{user}:{password}".encode()).decode()


def test_bad_image_fails_alone_and_loses_nothing(ansible: Any, testbed: Any, tmp_path: Path, ns: str) -> None:
    images = ["nvidia/pytorch:24.01-py3", "nvidia/pytorch:99.99-nope", "nvidia/clara/clara-parabricks:4.2.0-1"]
    args = mirror_args(testbed, tmp_path, images, registry={"url": testbed.open_registry_url, "prefix": ns})
    run = ansible.module("ngc_image_mirror", args, api_key=testbed.api_key)
    assert run.rc != 0
    result = run.result
    assert "nvidia/pytorch:99.99-nope" in result["msg"] and "does not exist" in result["msg"]
    assert [i["status"] for i in result["images"]] == ["copied", "failed", "copied"]
    assert (
        raw_digest(testbed.open_registry_host, f"{ns}/nvidia/clara/clara-parabricks:4.2.0-1")
        == seeded(testbed)[images[2]]["digest"]
    )
    recorded = facts(tmp_path)["images"]
    assert recorded[f"{testbed.source_registry_host}/{images[0]}"]["destinations"]
    assert "last_error" in recorded[f"{testbed.source_registry_host}/{images[1]}"]
    lenient = ansible.module("ngc_image_mirror", dict(args, fail_on_error=False), api_key=testbed.api_key)
    assert lenient.rc == 0 and lenient.result["failed_images"] == [f"{testbed.source_registry_host}/{images[1]}"]


@pytest.mark.parametrize("case", ["wrong key", "push refused", "archive dir unwritable", "bad reference"])
def test_clear_errors(ansible: Any, testbed: Any, tmp_path: Path, ns: str, case: str) -> None:
    args = mirror_args(testbed, tmp_path, TAGS[:1], registry={"url": testbed.open_registry_url, "prefix": ns})
    key = testbed.api_key
    expect = ""
    if case == "wrong key":
        key, expect = "wrong-key-123", "check the NGC API key"
    elif case == "push refused":
        args["registry"] = {
            "url": testbed.basic_registry_url,
            "username": testbed.basic_username,
            "password": "wrong-password-456",
        }
        expect = "401"
    elif case == "archive dir unwritable":
        blocker = tmp_path / "a-file"
        blocker.write_text("x")
        args.pop("registry")
        args["archive"] = {"dir": str(blocker / "archives")}
        expect = "cannot create archive directory"
    elif case == "bad reference":
        args["images"] = ["nvidia/Py Torch::x"]
        expect = "invalid image reference"
    # A password among the arguments: the controller's own output (its error line, its result) must not show it either.
    run = ansible.module("ngc_image_mirror", args, api_key=key, controller=case == "push refused")
    assert run.rc != 0
    assert "| FAILED! =>" in run.stdout
    msg = run.result["msg"]
    assert expect in msg, msg
    assert "Traceback" not in msg
    assert "wrong-key-123" not in run.stdout and "wrong-password-456" not in run.stdout


def test_interrupted_run_leaves_no_partial_file_and_resumes(
    ansible: Any, testbed: Any, tmp_path: Path, ns: str, faults: Any
) -> None:
    ref = "nvidia/pytorch:24.02-py3"
    archive_dir = tmp_path / "archives"
    progress = tmp_path / "progress.json"
    # Slow every blob download down so that the run can be killed in the middle of a layer.
    faults.registry(delay=3, count=None, path_contains="/blobs/sha256:")
    args = mirror_args(
        testbed,
        tmp_path,
        [ref],
        registry_url=testbed.source_proxy_url,
        archive={"dir": str(archive_dir)},
        registry={"url": testbed.open_registry_url, "prefix": ns},
        progress_file=str(progress),
        parallel=1,
    )
    argv = [
        str(Path(sys.executable).parent / "ansible"),
        "localhost",
        "-m",
        "airgap.ngc.ngc_image_mirror",
        "-a",
        json.dumps(args),
    ]
    env = dict(ansible.env, NGC_API_KEY=testbed.api_key)
    proc = subprocess.Popen(
        argv, env=env, cwd=str(REPO), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    deadline = time.monotonic() + 120
    seen_running = False
    while time.monotonic() < deadline and proc.poll() is None:
        if progress.exists() and json.loads(progress.read_text() or "{}").get("state") == "running":
            seen_running = True
            if list(archive_dir.rglob(".*partial*")) or list(archive_dir.rglob(".*.resume")):
                break
        time.sleep(0.2)
    assert seen_running and proc.poll() is None, "the run ended before it could be interrupted"
    # The API key is in no process's arguments while the run goes on.
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True).stdout
    assert testbed.api_key not in ps
    kill_run(proc, tmp_path / "facts" / "ngc_mirror.fact.lock")
    visible = [p for p in archive_dir.rglob("*") if p.is_file() and not p.name.startswith(".")]
    assert visible == []
    faults.reset()
    resumed = ansible.module(
        "ngc_image_mirror", dict(args, registry_url=testbed.source_registry_url), api_key=testbed.api_key
    )
    assert resumed.rc == 0, resumed.stdout
    final = archive_dir / "nvidia/pytorch/24.02-py3.tar"
    assert final.is_file()
    assert not list(archive_dir.rglob(".*partial*")) and not list(archive_dir.rglob(".*.resume"))
    assert json.loads(skopeo("inspect", f"docker-archive:{final}"))["Digest"]
    assert raw_digest(testbed.open_registry_host, f"{ns}/{ref}") == seeded(testbed)[ref]["digest"]


def test_secrets_never_written(ansible: Any, testbed: Any, tmp_path: Path) -> None:
    archive_dir = tmp_path / "archives"
    catalog = ansible.module(
        "ngc_catalog_info",
        {
            "api_url": testbed.ngc_api_url,
            "registry_url": testbed.source_registry_url,
            "images": ["clara"],
            "include_descriptions": True,
            "latest": 1,
        },
        api_key=testbed.api_key,
    )
    args = mirror_args(
        testbed,
        tmp_path,
        catalog.result["images"],
        archive={"dir": str(archive_dir)},
        save_readme=True,
        progress_file=str(tmp_path / "progress.json"),
    )
    run = ansible.module("ngc_image_mirror", args, api_key=testbed.api_key, verbosity=4)
    assert run.rc == 0, run.stdout
    assert testbed.api_key not in run.stdout + run.stderr
    readme = archive_dir / "nvidia/clara/clara-parabricks/README.md"
    assert readme.read_text().startswith("# ")
    key = testbed.api_key.encode()
    for path in [*tmp_path.rglob("*")]:
        if path.is_file():
            assert key not in path.read_bytes(), path


@pytest.fixture
def small_disk(tmp_path: Path) -> Any:
    """A 600 KiB tmpfs: smaller than one test image."""
    mountpoint = tmp_path / "small-disk"
    mountpoint.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=600k", "tmpfs", str(mountpoint)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.strip()}")
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], check=False)


def test_full_disk_is_a_clear_error_before_anything_is_written_there(
    ansible: Any, testbed: Any, tmp_path: Path, ns: str, small_disk: Path
) -> None:
    ref = "nvidia/pytorch:24.01-py3"
    args = mirror_args(
        testbed,
        tmp_path,
        [ref],
        registry={"url": testbed.open_registry_url, "prefix": ns},
        archive={"dir": str(small_disk)},
    )
    run = ansible.module("ngc_image_mirror", args, api_key=testbed.api_key)
    assert run.rc != 0
    msg = run.result["msg"]
    assert "not enough disk space, so nothing was written" in msg and str(small_disk) in msg, msg
    assert "Traceback" not in run.stdout
    assert [p for p in small_disk.rglob("*") if p.is_file()] == []
    # Each destination fails alone: the registry copy beside the full disk went ahead.
    present = subprocess.run(
        ["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{testbed.open_registry_host}/{ns}/{ref}"],
        capture_output=True,
        check=False,
    )
    assert present.returncode == 0
