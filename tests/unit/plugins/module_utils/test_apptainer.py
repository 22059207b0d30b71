# Copyright (c) airgap.ngc contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The Apptainer texts and the SIF layout: sh runs the scripts, siftool (when installed) reads the file."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Iterator

import pytest

from ansible_collections.airgap.ngc.plugins.module_utils._transports.apptainer import (
    env_script,
    go_json,
    go_quote,
    labels,
    oci_config,
    runscript,
    sif_path,
)
from ansible_collections.airgap.ngc.plugins.module_utils._transports.rootfs import squash
from ansible_collections.airgap.ngc.plugins.module_utils._types.errors import AirgapError, ConfigError
from ansible_collections.airgap.ngc.plugins.module_utils._formats.sif import (
    DATA_DEFFILE,
    DATA_GENERIC_JSON,
    SifLayout,
    SifObject,
    arch_code,
    read_descriptors,
)


def test_runscript_and_environment_run_as_apptainer_runs_them(tmp_path: Path) -> None:
    """sh runs our runscript with entrypoints and commands holding quotes, spaces and $: the words reach the program."""
    show = tmp_path / "show"
    show.write_text('#!/bin/sh\nfor a in "$@"; do printf "[%s]" "$a"; done\n')
    show.chmod(0o755)
    cases = [
        ({"Entrypoint": [str(show), "it's", "a b"], "Cmd": ["$HOME", 'x"y']}, [], "[it's][a b][$HOME][x\"y]"),
        ({"Entrypoint": [str(show)], "Cmd": ["default"]}, ["given one", "two"], "[given one][two]"),
        ({"Cmd": [str(show), "only cmd"]}, [], "[only cmd]"),
        ({"Entrypoint": [str(show), "e"]}, ["arg"], "[e][arg]"),
    ]
    for conf, args, want in cases:
        script = tmp_path / "runscript"
        script.write_text(runscript(conf))
        for no_eval in ("", "1"):
            got = subprocess.run(
                ["sh", str(script), *args],
                capture_output=True,
                text=True,
                check=True,
                env={"PATH": "/usr/bin:/bin", "HOME": "/home/x", "SINGULARITY_NO_EVAL": no_eval},
            ).stdout
            assert got == want, (conf, args, no_eval, got)
    env = tmp_path / "env.sh"
    env.write_text(env_script({"Env": ["PATH=/opt/bin:/usr/bin", "A=has space", "D=plain value", "C"]}))
    got = subprocess.run(
        ["sh", "-c", f'. {env}; printf "%s|%s|%s|%s" "$PATH" "$A" "$D" "${{C-unset}}"'],
        capture_output=True,
        text=True,
        check=True,
        env={"A": "kept"},
    ).stdout
    assert got == "/opt/bin:/usr/bin|kept|plain value|"  # a value set at run time wins, but PATH's


def test_the_texts_are_quoted_as_apptainer_quotes_them() -> None:
    assert runscript({"Entrypoint": ["/bin/echo", "it's"], "Cmd": ["a b"]}).splitlines()[1:3] == [
        'OCI_ENTRYPOINT=\'"/bin/echo" "it\'"\'"\'s"\'',
        "OCI_CMD='\"a b\"'",
    ]
    assert runscript({}).splitlines()[1:3] == ["OCI_ENTRYPOINT=''", "OCI_CMD=''"]
    assert env_script({"Env": ["PATH=/a:$B", "X=1", "Y"]}) == (
        '#!/bin/sh\nexport PATH="/a:\\\\$B"\nexport X="${X:-"1"}"\nexport Y="${Y:-}"\n'
    )
    assert go_quote("tab\there\x01") == '"tab\\there\\x01"'
    assert go_json({"b": "<&>", "a": 1}) == '{"a":1,"b":"\\u003c\\u0026\\u003e"}'
    assert oci_config({"Env": ["A=1"], "Cmd": ["x"], "Volumes": {"/data": {}}, "Tty": False}) == (
        b'{"Cmd":["x"],"Env":["A=1"],"Volumes":{"/data":{}}}'
    )
    found = labels(
        {
            "created": "2024-01-02T03:04:05Z",
            "config": {"Labels": {"org.label-schema.schema-version": "mine", "own": "x"}},
        },
        "nvcr.io/nvidia/pytorch:24.01-py3",
        "sha256:" + "a" * 64,
        "amd64",
        None,
    )
    assert found["own"] == "x" and found["org.label-schema.schema-version"] == "1.0"
    assert found["org.label-schema.build-date"] == "Tuesday_2_January_2024_3:4:5_UTC"
    assert found["org.opencontainers.image.created"] == "2024-01-02T03:04:05Z"


def test_sif_names() -> None:
    assert sif_path("/srv/sif", "nvidia/pytorch", "24.01-py3", None, "tree") == "/srv/sif/nvidia/pytorch:24.01-py3"
    assert (
        sif_path("/srv/sif", "nvidia/clara/parabricks", "4.2.0-1", None, "tree")
        == "/srv/sif/nvidia/clara/parabricks:4.2.0-1"
    )
    assert sif_path("/srv/sif", "nvidia/pytorch", "24.01-py3", None, "flat") == "/srv/sif/pytorch_24.01-py3.sif"
    assert sif_path("/srv/sif", "nvidia/pytorch", None, "sha256:ab", "flat") == "/srv/sif/pytorch_sha256-ab.sif"


def _sif(tmp_path: Path) -> tuple[Path, bytes]:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "hello").write_text("hello\n")
    objects = [
        SifObject(DATA_DEFFILE, "", b"bootstrap: docker\nfrom: x\n\n"),
        SifObject(DATA_GENERIC_JSON, "oci-config.json", b"{}"),
    ]
    layout = SifLayout(objects, "arm64", 1700000000, bytes(range(16)))
    out = tmp_path / "x.sif"
    subprocess.run(
        ["mksquashfs", str(root), str(out), "-noappend", "-no-progress", "-o", str(layout.partition_offset)],
        capture_output=True,
        check=True,
    )
    size = out.stat().st_size - layout.partition_offset
    with open(out, "r+b") as handle:
        handle.write(layout.head(size))
    return out, out.read_bytes()


def test_a_sif_layout_reads_back(tmp_path: Path) -> None:
    if not shutil.which("mksquashfs"):
        pytest.skip("mksquashfs (squashfs-tools) is not installed")
    _path, data = _sif(tmp_path)
    found = read_descriptors(data)
    assert [(d["type"], d["name"]) for d in found] == [(0x4001, ""), (0x4006, "oci-config.json"), (0x4004, "")]
    assert data[found[0]["offset"] : found[0]["offset"] + found[0]["size"]] == b"bootstrap: docker\nfrom: x\n\n"
    assert found[2]["offset"] % 4096 == 0 and data[found[2]["offset"] : found[2]["offset"] + 4] == b"hsqs"
    assert data[:31] == b"#!/usr/bin/env run-singularity\n"
    with pytest.raises(ConfigError, match="riscv"):
        arch_code("riscv")


def test_siftool_reads_our_sif(tmp_path: Path) -> None:
    if not shutil.which("siftool") or not shutil.which("mksquashfs"):
        pytest.skip("siftool or mksquashfs is not installed (Debian packages siftool, squashfs-tools)")
    path, _data = _sif(tmp_path)
    header = subprocess.run(["siftool", "header", str(path)], capture_output=True, text=True, check=True).stdout
    assert "arm64" in header
    listing = subprocess.run(["siftool", "list", str(path)], capture_output=True, text=True, check=True).stdout
    assert "Def.FILE" in listing and "JSON.Generic" in listing and "FS (Squashfs/*System/arm64)" in listing, listing
    dumped = subprocess.run(["siftool", "dump", "2", str(path)], capture_output=True, check=True).stdout
    assert json.loads(dumped) == {}


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 256 KiB tmpfs (root and mount rights needed, else skipped); unmounted at the end."""
    point = tmp_path / "small"
    point.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(point)], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip()})")
    try:
        yield point
    finally:
        subprocess.run(["umount", str(point)], check=False)


@pytest.mark.parametrize("offset", [0, 4096], ids=["enroot", "sif"])
def test_a_full_disk_under_the_squashfs_says_disk_full_and_where(tmp_path: Path, small_disk: Path, offset: int) -> None:
    """mksquashfs says "FATAL ERROR: Failed to write to output filesystem": the run says the disk is full, and where,
    as every other write of the collection does (enroot's sqsh, and the SIF's partition written at its offset)."""
    if not shutil.which("mksquashfs"):
        pytest.skip("mksquashfs (squashfs-tools) is not installed")
    root = tmp_path / "root"
    root.mkdir()
    (root / "big.bin").write_bytes(os.urandom(1024 * 1024))  # does not compress: more than the filesystem holds
    output = small_disk / ".image.partial-1"
    with pytest.raises(AirgapError) as caught:
        squash(str(root), str(output), ["-comp", "gzip"], offset=offset, option_name="apptainer.squash_options")
    message = str(caught.value)
    assert message.startswith("disk full: ") and f"no space left on the filesystem of {small_disk};" in message, message
    assert str(output) in message and "FATAL" not in message
