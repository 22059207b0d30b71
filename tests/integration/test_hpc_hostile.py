# Copyright (c) airgap.ngc contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The HPC caches (enroot .sqsh, Apptainer SIF) against hostile options, hostile layers and missing platforms.

- ``squash_options`` that would make mksquashfs run a command (a pseudo file ``-p 'x f 644 0 0 CMD'``) or read a
  file (``-pf``, ``-sort``) are refused by the module, by the ngc_mirror role and by the hpc_cache playbook, in one
  ansible-playbook run: the command never ran (its marker file is absent) and nothing was written.
- Hand-made layers pushed to the test bed's token registry: device nodes outside /dev and setuid files of uid 1000
  are flattened without the devices and (in the .sqsh, which -all-root gives to root) without the setuid bit, as the
  image's note says; whiteouts of '.', '..' or nothing and members with '..' fail their image naming the layer and
  member, and nothing is left behind. Judged by unsquashfs and siftool.
- A platform an image lacks fails that image naming the platforms it has (the test bed's amd64-only, arm64-only
  and two-platform images), and no file is written for it.
"""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration._layers import HOSTILE_MEMBERS, hostile_layers
from tests.testbed._blobs import image_config, image_manifest
from tests.testbed._push import Pusher

REPOSITORY = "nvidia/hostile-flatten"
GOOD_TAG = "devices-setuid"
TAGS = [GOOD_TAG, *HOSTILE_MEMBERS]


def run(*argv: str) -> str:
    proc = subprocess.run(list(argv), capture_output=True, text=True, check=False)
    assert proc.returncode == 0, f"{' '.join(argv)}: {proc.stderr}{proc.stdout}"
    return proc.stdout


def modes(root: Path) -> dict[str, os.stat_result]:
    """Every path below an extracted rootfs and its lstat."""
    return {str(p.relative_to(root)): os.lstat(p) for p in root.rglob("*")}


def sif_rootfs(sif: Path, out: Path) -> Path:
    """The SIF's system partition (found and dumped by siftool) extracted by unsquashfs."""
    partition = next(
        line.split("|")[0].strip() for line in run("siftool", "list", str(sif)).splitlines() if "|FS (Squashfs/" in line
    )
    with open(out.with_suffix(".squashfs"), "wb") as handle:
        subprocess.run(["siftool", "dump", partition, str(sif)], stdout=handle, check=True)
    run("unsquashfs", "-no-progress", "-d", str(out), str(out.with_suffix(".squashfs")))
    return out


@pytest.fixture(scope="module")
def pushed(testbed: Any) -> dict[str, dict[str, str]]:
    """Each hostile image in the token registry, as NGC would serve it: tag -> its layers' digests."""
    pusher = Pusher(testbed.source_registry_url, "$oauthtoken", testbed.api_key)
    digests = {}
    for tag in TAGS:
        layers = hostile_layers(tag)
        blobs = [pusher.upload_bytes(REPOSITORY, layer.blob) for layer in layers]
        config = pusher.upload_bytes(
            REPOSITORY,
            image_config(
                "amd64",
                "2024-05-01T00:00:00Z",
                [layer.diff_id for layer in layers],
                ["base", tag],
                {"com.nvidia.testbed.image": f"{REPOSITORY}:{tag}"},
            ),
        )
        media_type, manifest = image_manifest(True, config, blobs)
        pusher.put_manifest(REPOSITORY, tag, media_type, manifest)
        digests[tag] = {"layer 2": blobs[1].digest}
    return digests


# -- squash_options -----------------------------------------------------------------------------------------------


def playbook(work: Path, marker: Path, testbed: Any, role_root: Path, hpc_dir: Path) -> str:
    """One run: the module with a hostile enroot and apptainer squash_options (the image would reach mksquashfs), the
    role asked to mirror now and schedule a run with one, and hpc_cache.yml with one. Results as JSON lines."""
    pseudo = f"-p 'x f 644 0 0 touch {marker}'"
    pseudo_file = work / "pseudo"
    pseudo_file.write_text(f"y f 644 0 0 touch {marker}\n")
    common = {
        "registry_url": testbed.source_registry_url,
        "images": [f"{REPOSITORY}:{GOOD_TAG}"],
        "facts_file": str(work / "module.fact"),
    }
    role_vars = {
        "ngc_mirror_run": True,
        "ngc_mirror_install_requirements": False,
        "ngc_mirror_schedule": "systemd",
        "ngc_mirror_source_registry_url": testbed.source_registry_url,
        "ngc_mirror_api_key": testbed.api_key,
        "ngc_mirror_selections": [{"images": [REPOSITORY.split("/")[1]], "strict_name_match": True}],
        "ngc_mirror_enroot": {"dir": f"{role_root}/srv/enroot", "squash_options": f"-comp xz -sort {pseudo_file}"},
        "ngc_mirror_facts_file": f"{role_root}/etc/ansible/facts.d/ngc_mirror.fact",
        "ngc_mirror_config_dir": f"{role_root}/etc/ngc-mirror",
        "ngc_mirror_state_dir": f"{role_root}/var/lib/ngc-mirror",
        "ngc_mirror_wrapper_path": f"{role_root}/usr/local/sbin/ngc-mirror",
        "ngc_mirror_systemd_dir": f"{role_root}/etc/systemd/system",
        "ngc_mirror_cron_dir": f"{role_root}/etc/cron.d",
        "ngc_mirror_cron_log": f"{role_root}/var/log/ngc-mirror.log",
        "ngc_mirror_ansible_playbook": str(Path(sys.executable).parent / "ansible-playbook"),
    }
    plays = [
        {
            "name": "The module, the role",
            "hosts": "localhost",
            "gather_facts": False,
            "tasks": [
                {
                    "name": "enroot",
                    "airgap.ngc.ngc_image_mirror": dict(
                        common, enroot={"dir": str(work / "enroot"), "squash_options": pseudo}
                    ),
                    "environment": {"NGC_API_KEY": testbed.api_key},
                    "register": "enroot_run",
                    "ignore_errors": True,
                },
                {
                    "name": "apptainer",
                    "airgap.ngc.ngc_image_mirror": dict(
                        common, apptainer={"dir": str(work / "sif"), "squash_options": f"-pf {pseudo_file}"}
                    ),
                    "environment": {"NGC_API_KEY": testbed.api_key},
                    "register": "apptainer_run",
                    "ignore_errors": True,
                },
                {
                    "name": "role",
                    "block": [{"ansible.builtin.include_role": {"name": "airgap.ngc.ngc_mirror"}, "vars": role_vars}],
                    "rescue": [{"ansible.builtin.set_fact": {"role_failure": "{{ ansible_failed_result }}"}}],
                },
                {
                    "name": "Results",
                    "ansible.builtin.debug": {
                        "msg": {
                            "enroot": "{{ enroot_run }}",
                            "apptainer": "{{ apptainer_run }}",
                            "role": "{{ role_failure | default('did not fail') }}",
                        }
                    },
                },
            ],
        },
        {
            "ansible.builtin.import_playbook": "airgap.ngc.hpc_cache",
            "vars": {
                "hpc_source": "registry",
                "hpc_registry_url": testbed.source_registry_url,
                "hpc_images": [f"{REPOSITORY}:{GOOD_TAG}"],
                "hpc_registry_password": testbed.api_key,
                "hpc_registry_username": "$oauthtoken",
                "hpc_enroot_dir": str(hpc_dir),
                "hpc_squash_options": pseudo,
                "hpc_facts_file": str(work / "hpc.fact"),
            },
        },
    ]
    path = work / "hostile-options.yml"
    path.write_text(yaml.safe_dump(plays, sort_keys=False))
    return str(path)


@pytest.fixture(scope="module")
def hostile_options(
    pushed: Any, ansible: Any, testbed: Any, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    work = tmp_path_factory.mktemp("hostile-options")
    marker, role_root, hpc_dir = work / "EXECUTED", work / "role-root", work / "hpc-enroot"
    role_root.mkdir()
    result = ansible.playbook(playbook(work, marker, testbed, role_root, hpc_dir))
    return {"run": result, "work": work, "marker": marker, "role_root": role_root, "hpc_dir": hpc_dir}


def test_hostile_squash_options_are_refused_by_module_role_and_playbook(hostile_options: dict[str, Any]) -> None:
    result, work = hostile_options["run"], hostile_options["work"]
    output = result.stdout + result.stderr
    assert not hostile_options["marker"].exists(), "mksquashfs ran the pseudo file's command"
    outcome = next(r["msg"] for r in result.results if isinstance(r.get("msg"), dict) and "role" in r["msg"])
    enroot, apptainer, role = outcome["enroot"], outcome["apptainer"], outcome["role"]
    assert (
        enroot["failed"]
        and enroot["msg"].startswith("invalid enroot.squash_options \"-p 'x f 644 0 0 touch ")
        and "-p is refused" in enroot["msg"]
    ), enroot
    assert (
        apptainer["failed"]
        and "invalid apptainer.squash_options" in apptainer["msg"]
        and "-pf is refused" in apptainer["msg"]
    ), apptainer
    said = json.dumps(role)
    assert (
        role != "did not fail"
        and "ngc_mirror_enroot.squash_options" in said
        and "-sort is refused: it reads a file" in said
    ), role
    hpc = [r["msg"] for r in result.results if "hpc_squash_options" in str(r.get("msg"))]
    assert hpc and re.match(
        r"hpc_squash_options \"-p 'x f 644 0 0 touch [^\"]*'\" is refused: -p is refused", hpc[0]
    ), output[-3000:]
    assert result.rc != 0  # the hpc_cache play failed
    assert not (work / "enroot").exists() and not (work / "sif").exists() and not hostile_options["hpc_dir"].exists()
    assert not (work / "module.fact").exists() and not (work / "hpc.fact").exists()
    assert list(hostile_options["role_root"].iterdir()) == [], "the role wrote before refusing"


# -- hostile layers ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def flattened(pushed: Any, ansible: Any, testbed: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Every hostile image to enroot and Apptainer in one run (owners kept in the SIF when run as root)."""
    base = tmp_path_factory.mktemp("hostile-layers")
    result = ansible.module(
        "ngc_image_mirror",
        {
            "registry_url": testbed.source_registry_url,
            "images": [f"{REPOSITORY}:{t}" for t in TAGS],
            "facts_file": str(base / "mirror.fact"),
            "enroot": {"dir": str(base / "sqsh")},
            "apptainer": {"dir": str(base / "sif"), "layout": "flat"},
            "fail_on_error": False,
        },
        api_key=testbed.api_key,
    )
    assert result.rc == 0, result.stdout
    images = {image["reference"].rsplit(":", 1)[1]: image for image in result.result["images"]}
    return {"base": base, "result": result.result, "images": images}


def test_device_nodes_are_left_out_and_setuid_is_not_given_to_root(flattened: dict[str, Any], tmp_path: Path) -> None:
    base, image = flattened["base"], flattened["images"][GOOD_TAG]
    assert image["status"] == "copied", image
    sqsh = base / "sqsh" / f"nvidia+hostile-flatten+{GOOD_TAG}.sqsh"
    run("unsquashfs", "-no-progress", "-d", str(tmp_path / "sqsh"), str(sqsh))
    sif = sif_rootfs(base / "sif" / f"hostile-flatten_{GOOD_TAG}.sif", tmp_path / "sif")
    for rootfs in (tmp_path / "sqsh", sif):
        found = modes(rootfs)
        assert not [p for p, st in found.items() if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode)], sorted(found)
        assert "mem" not in found and "etc/sda" not in found and "etc/motd" in found
        assert found["usr/bin/su-root"].st_mode & stat.S_ISUID and found["usr/bin/su-root"].st_uid == 0
    sqsh_modes = modes(tmp_path / "sqsh")
    assert (
        stat.S_IMODE(sqsh_modes["usr/bin/setuid-user"].st_mode) == 0o755
        and sqsh_modes["usr/bin/setuid-user"].st_uid == 0
    )
    assert (
        stat.S_IMODE(sqsh_modes["usr/bin/setgid-group"].st_mode) == 0o755
        and sqsh_modes["usr/bin/setgid-group"].st_gid == 0
    )
    note = image["note"]
    assert "enroot: left out 2 device node(s) of the layers (/mem, /etc/sda)" in note, note
    assert (
        "dropped the setuid/setgid bit of 2 file(s)" in note and "/usr/bin/setuid-user, /usr/bin/setgid-group" in note
    ), note
    assert "apptainer: left out 2 device node(s)" in note, note
    if os.geteuid() == 0:  # the SIF keeps the layer's owners: uid 1000's setuid file stays uid 1000's
        sif_modes = modes(sif)
        assert (
            sif_modes["usr/bin/setuid-user"].st_uid == 1000 and sif_modes["usr/bin/setuid-user"].st_mode & stat.S_ISUID
        )


@pytest.mark.parametrize("tag", list(HOSTILE_MEMBERS))
def test_hostile_members_fail_their_image_naming_layer_and_member(
    tag: str, flattened: dict[str, Any], pushed: Any
) -> None:
    image = flattened["images"][tag]
    assert image["status"] == "failed", image
    message = image["message"]
    assert f"cannot apply layer 2 ({pushed[tag]['layer 2']}) of " in message, message
    assert repr(HOSTILE_MEMBERS[tag]) in message, message
    assert ("whiteout" in message) if "/.wh." in "/" + HOSTILE_MEMBERS[tag] else ("'..' component" in message), message


def test_nothing_is_left_behind_and_nothing_escapes(flattened: dict[str, Any]) -> None:
    base = flattened["base"]
    assert sorted(p.name for p in (base / "sqsh").iterdir()) == [f"nvidia+hostile-flatten+{GOOD_TAG}.sqsh"]
    assert sorted(p.name for p in (base / "sif").iterdir()) == [f"hostile-flatten_{GOOD_TAG}.sif"]
    assert not (base / "escape.txt").exists() and not (base / "sqsh" / "escape.txt").exists()
    assert not Path("/tmp/airgap-hostile-victim.txt").exists()
    facts = json.loads((base / "mirror.fact").read_text())["images"]
    assert {key.rsplit(":", 1)[1] for key, record in facts.items() if record.get("destinations")} == {GOOD_TAG}


# -- platforms ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def platforms(ansible: Any, testbed: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """enroot for linux/arm64 and apptainer for linux/s390x, each over an amd64-only, an arm64-only and a two-platform
    image of the test bed."""
    base = tmp_path_factory.mktemp("platforms")
    images = [
        "nvidia/pytorch:24.01-py3",
        "nvidia/l4t-tensorflow:r35.3.1-tf2.11-py3",
        "nvidia/cuda:12.10.0-base-ubuntu22.04",
    ]
    runs = {}
    for kind, platform in (("enroot", "linux/arm64"), ("apptainer", "linux/s390x")):
        result = ansible.module(
            "ngc_image_mirror",
            {
                "registry_url": testbed.source_registry_url,
                "images": images,
                "fail_on_error": False,
                "facts_file": str(base / f"{kind}.fact"),
                kind: {"dir": str(base / kind), "platform": platform},
            },
            api_key=testbed.api_key,
        )
        assert result.rc == 0, result.stdout
        runs[kind] = {image["reference"].split("/", 1)[1]: image for image in result.result["images"]}
    return {"base": base, "runs": runs}


def test_a_platform_the_image_lacks_fails_it_naming_those_it_has(platforms: dict[str, Any]) -> None:
    enroot, apptainer, base = platforms["runs"]["enroot"], platforms["runs"]["apptainer"], platforms["base"]
    pytorch = enroot["nvidia/pytorch:24.01-py3"]
    assert (
        pytorch["status"] == "failed"
        and "has only the platform linux/amd64, not enroot.platform linux/arm64" in pytorch["message"]
    ), pytorch
    assert enroot["nvidia/l4t-tensorflow:r35.3.1-tf2.11-py3"]["status"] == "copied"
    assert enroot["nvidia/cuda:12.10.0-base-ubuntu22.04"]["status"] == "copied"
    assert sorted(p.name for p in (base / "enroot").iterdir()) == [
        "nvidia+cuda+12.10.0-base-ubuntu22.04.sqsh",
        "nvidia+l4t-tensorflow+r35.3.1-tf2.11-py3.sqsh",
    ]
    for ref, has in (
        ("nvidia/pytorch:24.01-py3", "linux/amd64"),
        ("nvidia/l4t-tensorflow:r35.3.1-tf2.11-py3", "linux/arm64"),
    ):
        assert (
            apptainer[ref]["status"] == "failed"
            and f"has only the platform {has}, not apptainer.platform linux/s390x" in apptainer[ref]["message"]
        ), apptainer[ref]
    cuda = apptainer["nvidia/cuda:12.10.0-base-ubuntu22.04"]
    assert (
        cuda["status"] == "failed"
        and "linux/s390x" in cuda["message"]
        and "linux/amd64, linux/arm64" in cuda["message"]
    ), cuda
    assert not (base / "apptainer").exists() or not [p for p in (base / "apptainer").rglob("*") if p.is_file()]
