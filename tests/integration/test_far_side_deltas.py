# Copyright (c) airgap.ngc contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The far side fills the site registry and the HPC caches from a drop directory of one full and two delta bundles.

Three releases are published on the stand-in, each built on the one before; the connected side exports a full
bundle and two deltas (``since: last``), so the third relies on blobs both earlier bundles carried. The role imports
the drop directory into the site registry and an enroot cache in one run, and again with nothing to do;
playbooks/hpc_cache.yml writes the caches from the last delta alone, its blobs completed from the bundles beside it.
The registry is judged by skopeo (every digest the source's), the .sqsh files by unsquashfs (every release's file).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import REPO
from tests.integration.test_delta import release_layer
from tests.integration.test_docker_destination import inspect, remove
from tests.integration.test_hpc_cache import listing, mirror_task, siftool
from tests.integration.test_image_mirror import raw_digest, seeded
from tests.integration.test_role_prune import PLAYBOOK, RoleRun, role_vars
from tests.testbed._blobs import BlobInfo, image_config, image_manifest
from tests.testbed._push import Pusher

HPC = REPO / "playbooks" / "hpc_cache.yml"
BASE = "nvidia/pytorch:24.02-py3"
BUNDLES = ("ngc-2026-11", "ngc-2026-12", "ngc-2027-01")


def publish_release(testbed: Any, authfile: Path, base: str, tag: str) -> str:
    """Push ``nvidia/pytorch:<tag>``: the layers of ``base`` plus one holding ``opt/pytorch/<tag>.txt``; its digest."""
    where = ["--tls-verify=false", "--authfile", str(authfile), f"docker://{testbed.source_registry_host}/{base}"]
    raw = subprocess.run(["skopeo", "inspect", "--raw", *where], capture_output=True, check=True).stdout
    layers = [BlobInfo(layer["digest"], layer["size"]) for layer in json.loads(raw)["layers"]]
    diff_ids = json.loads(
        subprocess.run(["skopeo", "inspect", "--config", "--raw", *where], capture_output=True, check=True).stdout
    )["rootfs"]["diff_ids"]
    plain = release_layer(tag)
    pusher = Pusher(testbed.source_registry_url, "$oauthtoken", testbed.api_key)
    layers.append(pusher.upload_bytes("nvidia/pytorch", gzip.compress(plain, mtime=0)))
    diff_ids.append("sha256:" + hashlib.sha256(plain).hexdigest())
    config = pusher.upload_bytes(
        "nvidia/pytorch",
        image_config("amd64", "2026-12-01T00:00:00Z", diff_ids, [str(n) for n in range(len(layers))], {}),
    )
    media_type, manifest = image_manifest(False, config, layers)
    return pusher.put_manifest("nvidia/pytorch", tag, media_type, manifest)


@pytest.fixture(scope="module")
def drop(
    ansible: Any, testbed: Any, testbed_authfile: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """A drop directory of a full bundle and two deltas, the third relying on both earlier ones."""
    base = tmp_path_factory.mktemp("far-deltas")
    stamp = f"{os.getpid()}{int(time.time() * 1000) % 100000}"
    first, second = f"26.12-py3-{stamp}", f"27.01-py3-{stamp}"
    digests = {BASE: seeded(testbed)[BASE]["digest"]}
    digests[f"nvidia/pytorch:{first}"] = publish_release(testbed, testbed_authfile, BASE, first)
    digests[f"nvidia/pytorch:{second}"] = publish_release(testbed, testbed_authfile, f"nvidia/pytorch:{first}", second)
    facts = str(base / "connected.fact")
    for number, name in enumerate(BUNDLES):
        args = {
            "registry_url": testbed.source_registry_url,
            "images": list(digests)[: number + 1],
            "facts_file": facts,
            "bundle": {"dir": str(base / "drop" / name), **({"since": "last"} if number else {})},
        }
        run = ansible.module("ngc_image_mirror", args, api_key=testbed.api_key)
        assert run.rc == 0, run.stdout
    contents = json.loads((base / "drop" / BUNDLES[2] / "contents.json").read_text())
    assert contents["delta"] is True and {info["bundle"] for info in contents["expected"].values()} == set(BUNDLES[:2])
    return {"base": base, "drop": base / "drop", "digests": digests, "tags": {"first": first, "second": second}}


def release_files(digests: dict[str, str], ref: str) -> set[str]:
    """The files the releases up to ``ref`` added, as unsquashfs lists them."""
    tags = [r.split(":", 1)[1] for r in digests if r != BASE]
    return (
        {f"squashfs-root/opt/pytorch/{tag}.txt" for tag in tags[: tags.index(ref.split(":", 1)[1]) + 1]}
        if ref != BASE
        else set()
    )


def sqsh(directory: Path, ref: str) -> Path:
    return directory / (ref.replace("/", "+").replace(":", "+") + ".sqsh")


def test_the_role_imports_a_drop_directory_of_deltas_into_the_registry_and_enroot(
    ansible: Any, testbed: Any, drop: dict[str, Any], tmp_path: Path
) -> None:
    playbook = tmp_path / "role.yml"
    playbook.write_text(PLAYBOOK)
    prefix = f"far{os.getpid()}-{int(time.time() * 1000) % 100000}"
    enroot = tmp_path / "enroot"
    values = role_vars(
        tmp_path,
        ngc_mirror_source="bundle",
        ngc_mirror_source_dir=str(drop["drop"]),
        ngc_mirror_api_key="",
        ngc_mirror_registry={"url": testbed.open_registry_url, "prefix": prefix},
        ngc_mirror_enroot={"dir": str(enroot)},
    )
    first = RoleRun(ansible.playbook(playbook, values))
    assert first.rc == 0, first.output[-6000:]
    for ref, digest in drop["digests"].items():
        assert raw_digest(testbed.open_registry_host, f"{prefix}/{ref}") == digest, ref
        files = {line.split()[-1] for line in listing(sqsh(enroot, ref)) if line.startswith("-")}
        assert release_files(drop["digests"], ref) <= files and any(
            f.startswith("squashfs-root/etc/rc") for f in files
        ), ref
    assert sorted(p.name for p in enroot.iterdir()) == sorted(sqsh(enroot, ref).name for ref in drop["digests"])
    again = RoleRun(ansible.playbook(playbook, values))
    assert again.rc == 0, again.output[-6000:]
    assert again.summary["copied"] == [] and again.summary["failed"] == [], again.summary


def test_hpc_cache_writes_the_caches_from_a_delta_completed_by_the_bundles_beside_it(
    ansible: Any, drop: dict[str, Any], tmp_path: Path
) -> None:
    variables = {
        "hpc_source": "bundle",
        "hpc_source_dir": str(drop["drop"] / BUNDLES[2]),
        "hpc_enroot_dir": str(tmp_path / "enroot"),
        "hpc_facts_file": str(tmp_path / "hpc.fact"),
    }
    run = ansible.playbook(HPC, variables)
    assert run.rc == 0, run.stdout[-6000:] + run.stderr[-2000:]
    assert [image["status"] for image in mirror_task(run)["images"]] == ["copied"] * len(drop["digests"])
    for ref in drop["digests"]:
        files = {line.split()[-1] for line in listing(sqsh(tmp_path / "enroot", ref)) if line.startswith("-")}
        assert release_files(drop["digests"], ref) <= files, ref
    # Without the earlier bundles beside it, the delta names the bundle that carried what it lacks.
    alone = tmp_path / "alone" / BUNDLES[2]
    shutil.copytree(drop["drop"] / BUNDLES[2], alone)
    lonely = ansible.playbook(
        HPC,
        dict(
            variables,
            hpc_source_dir=str(alone),
            hpc_enroot_dir=str(tmp_path / "alone-enroot"),
            hpc_facts_file=str(tmp_path / "alone.fact"),
        ),
    )
    assert lonely.rc != 0
    assert f"bundle {BUNDLES[0]}" in lonely.stdout and "Traceback" not in lonely.stdout + lonely.stderr, lonely.stdout[
        -4000:
    ]


def test_a_delta_carried_alone_is_completed_from_the_site_registry_for_every_destination_kind(
    ansible: Any, testbed: Any, drop: dict[str, Any], tmp_path: Path
) -> None:
    """The earlier bundles were imported into the site registry and are gone; the last delta alone writes archives,
    SIF files and the Docker engine, the blobs it left out read back from the registry."""
    prefix = f"alone{os.getpid()}-{int(time.time() * 1000) % 100000}"
    registry = {"url": testbed.open_registry_url, "prefix": prefix}
    facts = str(tmp_path / "far.fact")
    for name in BUNDLES[:2]:
        run = ansible.module(
            "ngc_image_mirror",
            {"source": "bundle", "source_dir": str(drop["drop"] / name), "registry": registry, "facts_file": facts},
        )
        assert run.rc == 0, run.stdout
    alone = tmp_path / "usb" / BUNDLES[2]
    shutil.copytree(drop["drop"] / BUNDLES[2], alone)
    engine = dict(os.environ, DOCKER_HOST=testbed.docker_host) if testbed.docker_host else None
    names = {ref: f"{testbed.source_registry_host}/{ref}" for ref in drop["digests"]}
    if engine:
        remove(engine, *names.values())
    args = {
        "source": "bundle",
        "source_dir": str(alone),
        "registry": registry,
        "facts_file": facts,
        "archive": {"dir": str(tmp_path / "archives")},
        "apptainer": {"dir": str(tmp_path / "sif")},
        **({"docker": {"host": testbed.docker_host, "source": "archive"}} if engine else {}),
    }
    run = ansible.module("ngc_image_mirror", args)
    assert run.rc == 0, run.stdout[-6000:]
    for ref, digest in drop["digests"].items():
        assert raw_digest(testbed.open_registry_host, f"{prefix}/{ref}") == digest, ref
        config = json.loads(
            subprocess.run(
                [
                    "skopeo",
                    "inspect",
                    "--raw",
                    "--tls-verify=false",
                    f"docker://{testbed.open_registry_host}/{prefix}/{ref}",
                ],
                capture_output=True,
                check=True,
            ).stdout
        )["config"]["digest"]
        tar = tmp_path / "archives" / f"{ref.replace(':', '/')}.tar"
        held = subprocess.run(
            ["skopeo", "inspect", "--raw", "--config", f"docker-archive:{tar}"], capture_output=True, check=True
        ).stdout
        assert "sha256:" + hashlib.sha256(held).hexdigest() == config, ref
        sif = tmp_path / "sif" / ref
        rows = [
            [cell.strip() for cell in line.split("|")] for line in siftool("list", str(sif)).splitlines() if "|" in line
        ]
        partition = tmp_path / "partition.squashfs"
        partition.write_bytes(
            subprocess.run(["siftool", "dump", rows[-1][0], str(sif)], capture_output=True, check=True).stdout
        )
        files = {line.split()[-1] for line in listing(partition) if line.startswith("-")}
        assert release_files(drop["digests"], ref) <= files, ref
        if engine:
            assert (inspect(engine, names[ref]) or {}).get("Id") == config, ref
