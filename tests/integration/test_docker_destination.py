# Copyright (c) airgap.ngc contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The docker destination and the node pre-load playbook, against the test bed's real Docker engine."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
REF = "nvidia/pytorch:24.01-py3"

pytestmark = pytest.mark.engine


@pytest.fixture
def engine(testbed: Any) -> dict[str, str]:
    if not testbed.docker_host:
        pytest.skip("this test bed was started without a Docker engine")
    return dict(os.environ, DOCKER_HOST=testbed.docker_host)


def docker(env: dict[str, str], *args: str, check: bool = True) -> str:
    return subprocess.run(["docker", *args], env=env, capture_output=True, text=True, check=check).stdout


def inspect(env: dict[str, str], name: str) -> dict[str, Any] | None:
    out = subprocess.run(["docker", "image", "inspect", name], env=env, capture_output=True, text=True, check=False)
    return json.loads(out.stdout)[0] if out.returncode == 0 else None


def remove(env: dict[str, str], *names: str) -> None:
    for name in names:
        subprocess.run(["docker", "rmi", "-f", name], env=env, capture_output=True, check=False)


def source_digest(testbed: Any, ref: str) -> str:
    for repo in testbed.seed_document()["repositories"]:
        for tag in repo.get("tags") or []:
            if f"{repo['repository']}:{tag['tag']}" == ref:
                return str(tag["digest"])
    raise KeyError(ref)


def test_pull_from_the_mirror_registry_with_tag_as(
    ansible: Any, testbed: Any, engine: dict[str, str], tmp_path: Path
) -> None:
    prefix = f"pull{os.getpid()}"
    mirrored = f"{testbed.open_registry_host}/{prefix}/{REF}"
    alias = f"nvcr.io/{REF}"
    remove(engine, mirrored, alias)
    args = {
        "registry_url": testbed.source_registry_url,
        "images": [REF],
        "registry": {"url": testbed.open_registry_url, "prefix": prefix},
        "docker": {"host": testbed.docker_host, "tag_as": ["nvcr.io"]},
        "facts_file": str(tmp_path / "f.fact"),
    }
    check = ansible.module("ngc_image_mirror", args, api_key=testbed.api_key, check=True)
    assert check.rc == 0 and check.result["changed"] is True
    assert inspect(engine, mirrored) is None
    run = ansible.module("ngc_image_mirror", args, api_key=testbed.api_key)
    assert run.rc == 0, run.stdout
    pulled = inspect(engine, mirrored)
    assert pulled is not None
    assert (
        f"{testbed.open_registry_host}/{prefix}/nvidia/pytorch@{source_digest(testbed, REF)}" in pulled["RepoDigests"]
    )
    assert inspect(engine, alias)["Id"] == pulled["Id"]  # type: ignore[index]
    again = ansible.module("ngc_image_mirror", args, api_key=testbed.api_key)
    assert again.result["changed"] is False
    recorded = json.loads((tmp_path / "f.fact").read_text())["images"][f"{testbed.source_registry_host}/{REF}"][
        "destinations"
    ]
    assert any(entry["type"] == "docker" and entry["image_id"] == pulled["Id"] for entry in recorded.values())


def test_pull_from_the_token_registry_keeps_the_key_secret(
    ansible: Any, testbed: Any, engine: dict[str, str], tmp_path: Path
) -> None:
    ref = "nvidia/clara/clara-parabricks:4.1.1-1"
    name = f"{testbed.source_registry_host}/{ref}"
    remove(engine, name)
    log = Path(testbed.engine_dir) / "dockerd.log"
    log_before = log.stat().st_size if log.exists() else 0
    seen: list[str] = []
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            seen.append(subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=False).stdout)
            time.sleep(0.1)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        args = {
            "registry_url": testbed.source_registry_url,
            "images": [ref],
            "docker": {"host": testbed.docker_host},
            "facts_file": str(tmp_path / "f.fact"),
        }
        run = ansible.module("ngc_image_mirror", args, api_key=testbed.api_key, verbosity=4)
    finally:
        done.set()
        watcher.join()
    assert run.rc == 0, run.stdout + run.stderr
    assert inspect(engine, name) is not None
    assert seen and not any(testbed.api_key in sample for sample in seen)
    assert testbed.api_key not in run.stdout + run.stderr
    if log.exists():
        with open(log, "rb") as handle:
            handle.seek(log_before)
            assert testbed.api_key.encode() not in handle.read()
    assert testbed.api_key not in (tmp_path / "f.fact").read_text()


def test_load_from_an_archive_then_offline_on_a_node(
    ansible: Any, testbed: Any, engine: dict[str, str], tmp_path: Path
) -> None:
    ref = "nvidia/cuda:12.2.0-base-ubuntu22.04"
    name = f"{testbed.source_registry_host}/{ref}"
    remove(engine, name)
    archive_dir = tmp_path / "shared"
    args = {
        "registry_url": testbed.source_registry_url,
        "images": [ref],
        "archive": {"dir": str(archive_dir)},
        "docker": {"host": testbed.docker_host, "source": "archive"},
        "facts_file": str(tmp_path / "mirror.fact"),
    }
    run = ansible.module("ngc_image_mirror", args, api_key=testbed.api_key)
    assert run.rc == 0, run.stdout
    loaded = inspect(engine, name)
    assert loaded is not None and loaded["Architecture"] == "amd64"
    assert ansible.module("ngc_image_mirror", args, api_key=testbed.api_key).result["changed"] is False

    # A node that reaches no registry: only the shared archive directory, no key, an unreachable registry_url.
    remove(engine, name)
    node = {
        "offline": True,
        "registry_url": "http://127.0.0.1:9",
        "images": [name],
        "archive": {"dir": str(archive_dir)},
        "docker": {"host": testbed.docker_host, "source": "archive", "tag_as": ["site.example/"]},
        "facts_file": str(tmp_path / "node.fact"),
    }
    first = ansible.module("ngc_image_mirror", node)
    assert first.rc == 0, first.stdout
    assert first.result["changed"] is True
    assert inspect(engine, name)["Id"] == loaded["Id"]  # type: ignore[index]
    assert inspect(engine, f"site.example/{ref}") is not None
    assert ansible.module("ngc_image_mirror", node).result["changed"] is False


def test_missing_archive_and_stopped_engine_are_clear_errors(
    ansible: Any, testbed: Any, engine: dict[str, str], tmp_path: Path
) -> None:
    node = {
        "offline": True,
        "images": ["nvidia/pytorch:1.0"],
        "archive": {"dir": str(tmp_path / "empty")},
        "docker": {"host": testbed.docker_host, "source": "archive"},
        "facts_file": str(tmp_path / "f.fact"),
    }
    run = ansible.module("ngc_image_mirror", node)
    assert run.rc != 0 and "there is no archive" in run.result["msg"]
    stopped = dict(node, docker={"host": f"unix://{tmp_path}/stopped-engine.sock", "source": "archive"})
    run = ansible.module("ngc_image_mirror", stopped)
    assert run.rc != 0
    assert run.result["msg"].startswith("cannot reach the Docker engine at unix://")
    assert "Traceback" not in run.stdout


def test_preload_nodes_playbook(ansible: Any, testbed: Any, engine: dict[str, str], tmp_path: Path) -> None:
    prefix = f"preload{os.getpid()}"
    ref = "nvidia/pytorch:23.12-py3"
    seed = ansible.module(
        "ngc_image_mirror",
        {
            "registry_url": testbed.source_registry_url,
            "images": [ref],
            "registry": {"url": testbed.open_registry_url, "prefix": prefix},
            "facts_file": str(tmp_path / "seed.fact"),
        },
        api_key=testbed.api_key,
    )
    assert seed.rc == 0, seed.stdout
    name = f"{testbed.open_registry_host}/{prefix}/{ref}"
    remove(engine, name)
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(
        f"gpu_nodes:\n  hosts:\n    node1:\n      ansible_connection: local\n      ansible_python_interpreter: {sys.executable}\n"
    )
    variables = {
        "preload_images": [f"{prefix}/{ref}"],
        "preload_registry": {"url": testbed.open_registry_url},
        "preload_docker_host": testbed.docker_host,
        "preload_facts_file": str(tmp_path / "node.fact"),
        "preload_become": False,
    }
    env = {"ANSIBLE_INVENTORY": str(inventory), "ANSIBLE_STDOUT_CALLBACK": "ansible.builtin.default"}
    run = ansible.playbook(REPO / "playbooks" / "preload_nodes.yml", variables, env=env)
    assert run.rc == 0, run.stdout + run.stderr
    assert inspect(engine, name) is not None
    assert "node1" in run.stdout
    again = ansible.playbook(REPO / "playbooks" / "preload_nodes.yml", variables, env=env)
    assert again.rc == 0
    assert "up_to_date" in again.stdout and name in again.stdout
