# Copyright (c) airgap.ngc contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Unit tests for the enroot destination: layers applied as overlayfs shows them, enroot's files, names."""

from __future__ import annotations

import gzip
import io
import os
import shutil
import stat
import subprocess
import tarfile
from pathlib import Path

import pytest

from ansible_collections.airgap.ngc.plugins.module_utils._transports.enroot import (
    EnrootDestination,
    Rootfs,
    bash_quote,
    enroot_files,
    sqsh_name,
)
from ansible_collections.airgap.ngc.plugins.module_utils._types.errors import AirgapError, ConfigError


def layer(path: Path, entries: list[tuple], compress: bool = False) -> str:
    """A layer tar of (name, kind, payload) entries: kind file (payload bytes), dir, symlink/link (payload target)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, kind, payload in entries:
            info = tarfile.TarInfo(name)
            info.mtime, info.uid, info.gid, info.uname = 1700000000, 1000, 1000, "someone"
            if kind == "file":
                info.size, info.mode = len(payload), 0o640
                tar.addfile(info, io.BytesIO(payload))
                continue
            if kind == "dir":
                info.type, info.mode = tarfile.DIRTYPE, 0o755
            elif kind == "symlink":
                info.type, info.linkname = tarfile.SYMTYPE, payload
            elif kind == "link":
                info.type, info.linkname = tarfile.LNKTYPE, payload
            elif kind == "chr":
                info.type, info.devmajor, info.devminor = tarfile.CHRTYPE, 1, 3
            tar.addfile(info)
    data = buffer.getvalue()
    path.write_bytes(gzip.compress(data) if compress else data)
    return str(path)


def tree(root: Path) -> dict[str, str]:
    """Each path below root: file contents, 'dir', or '-> target' for a symlink."""
    found = {}
    for current, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(current) / name
            rel = str(path.relative_to(root))
            if path.is_symlink():
                found[rel] = "-> " + os.readlink(path)
            elif path.is_dir():
                found[rel] = "dir"
            else:
                found[rel] = path.read_text()
    return found


def test_whiteouts_opaque_dirs_hard_links_and_dev_across_layers(tmp_path: Path) -> None:
    root = tmp_path / "rootfs"
    root.mkdir()
    rootfs = Rootfs(str(root))
    rootfs.apply(
        layer(
            tmp_path / "1.tar",
            [
                ("etc", "dir", None),
                ("etc/passwd", "file", b"root\n"),
                ("etc/gone", "file", b"x"),
                ("opt", "dir", None),
                ("opt/old", "file", b"old"),
                ("opt/sub", "dir", None),
                ("opt/sub/deep", "file", b"deep"),
                ("usr/bin/python3.10", "file", b"#!python"),
                ("dev", "dir", None),
                ("dev/null", "chr", None),
                ("./dev/shm", "dir", None),
                ("lib", "symlink", "usr/lib"),
            ],
            compress=True,
        )
    )
    rootfs.apply(
        layer(
            tmp_path / "2.tar",
            [
                ("opt/new", "file", b"new"),  # the opaque entry comes after it in the tar and still applies first
                ("opt/.wh..wh..opq", "file", b""),
                ("etc/.wh.gone", "file", b""),
                ("usr/bin/python3", "link", "usr/bin/python3.10"),  # a hard link into the lower layer
                (".wh.lib", "file", b""),
                ("lib/x.so", "file", b"elf"),  # replaced by a directory
                ("etc/.wh.passwd", "file", b""),
                ("etc/passwd", "file", b"root:x:0:0\n"),  # removed below, written here
                ("dev/sda", "chr", None),
            ],
        )
    )
    assert tree(root) == {
        "etc": "dir",
        "etc/passwd": "root:x:0:0\n",
        "opt": "dir",
        "opt/new": "new",
        "usr": "dir",
        "usr/bin": "dir",
        "usr/bin/python3.10": "#!python",
        "usr/bin/python3": "#!python",
        "dev": "dir",
        "lib": "dir",
        "lib/x.so": "elf",
    }
    assert os.stat(root / "usr/bin/python3").st_ino == os.stat(root / "usr/bin/python3.10").st_ino
    assert stat.S_IMODE(os.stat(root / "opt/new").st_mode) == 0o640  # as in the layer (u+r already there)


def test_a_whiteout_only_removes_lower_content_and_never_follows_symlinks(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_text("host file")
    root = tmp_path / "rootfs"
    root.mkdir()
    rootfs = Rootfs(str(root))
    rootfs.apply(
        layer(
            tmp_path / "1.tar", [("escape", "symlink", str(outside)), ("data", "dir", None), ("data/a", "file", b"a")]
        )
    )
    rootfs.apply(
        layer(
            tmp_path / "2.tar",
            [
                ("escape/.wh.keep", "file", b""),
                ("escape/new", "file", b"in the image"),
                ("data/b", "file", b"b"),
                ("data/.wh.b", "file", b""),
            ],
        )
    )
    assert (outside / "keep").read_text() == "host file" and not (outside / "new").exists()
    assert tree(root) == {"escape": "dir", "escape/new": "in the image", "data": "dir", "data/a": "a", "data/b": "b"}


def test_fixperms_modes_and_a_hard_link_to_nothing(tmp_path: Path) -> None:
    root = tmp_path / "rootfs"
    root.mkdir()
    rootfs = Rootfs(str(root))
    path = tmp_path / "1.tar"
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, mode, kind in (
            ("ro", 0o500, tarfile.DIRTYPE),
            ("ro/exe", 0o011, tarfile.REGTYPE),
            ("ro/plain", 0o004, tarfile.REGTYPE),
        ):
            info = tarfile.TarInfo(name)
            info.type, info.mode = kind, mode
            tar.addfile(info, io.BytesIO(b""))
    path.write_bytes(buffer.getvalue())
    rootfs.apply(str(path))
    assert stat.S_IMODE(os.stat(root / "ro").st_mode) == 0o700
    assert stat.S_IMODE(os.stat(root / "ro/exe").st_mode) == 0o511
    assert stat.S_IMODE(os.stat(root / "ro/plain").st_mode) == 0o404
    with pytest.raises(AirgapError, match="hard link"):
        rootfs.apply(layer(tmp_path / "2.tar", [("bad", "link", "no/such/file")]))


CONFIG = {
    "architecture": "amd64",
    "config": {
        "Env": ["PATH=/usr/local/bin:/usr/bin", "NVIDIA_VISIBLE_DEVICES=all", "PS1=it's $ "],
        "Entrypoint": ["/opt/nvidia/nvidia_entrypoint.sh"],
        "Cmd": ["python", "-c", "print('hi there')", "a\tb", ""],
        "WorkingDir": "/workspace",
        "Volumes": {"/data": {}, "/cache": {}},
        "Labels": {"maintainer": "NVIDIA CORPORATION", "com.nvidia.build.id": "123"},
    },
}

# Derived by hand from enroot's src/docker.sh (docker::configure): jq's keys[] sorts the volumes; the labels become
# comments then an empty line; the heredoc (<<-) loses its leading tabs; ${array[@]@Q} joins the quoted words.
RC = """# maintainer NVIDIA CORPORATION
# com.nvidia.build.id 123

mkdir -p "/workspace" 2> /dev/null
cd "/workspace" && unset OLDPWD || exit 1

if [ -s /etc/rc.local ]; then
    . /etc/rc.local
fi

if [ $# -gt 0 ]; then
    exec '/opt/nvidia/nvidia_entrypoint.sh' "$@"
else
    exec '/opt/nvidia/nvidia_entrypoint.sh' 'python' '-c' 'print('\\''hi there'\\'')' $'a\\tb' ''
fi
"""


def test_enroot_files_are_the_texts_of_docker_configure() -> None:
    files = enroot_files(CONFIG)
    assert files["etc/rc"] == RC
    assert files["etc/fstab"] == (
        "${ENROOT_ROOTFS}/cache /cache none x-create=dir,bind,rw,nosuid,nodev\n"
        "${ENROOT_ROOTFS}/data /data none x-create=dir,bind,rw,nosuid,nodev\n"
    )
    assert files["etc/environment"] == "PATH=/usr/local/bin:/usr/bin\nNVIDIA_VISIBLE_DEVICES=all\nPS1=it's $ \n"
    assert files["etc/rc.local"] == (
        "# This file is sourced by /etc/rc when the container starts.\n"
        "# It can be used to manipulate the entrypoint or the command of the container.\n"
    )
    assert files["workdir"] == "/workspace"


def test_with_neither_entrypoint_nor_cmd_rc_runs_bin_sh_from_the_root() -> None:
    files = enroot_files({"config": {"Env": None}})
    assert files["etc/rc"].startswith('mkdir -p "/" 2> /dev/null\ncd "/" && unset OLDPWD || exit 1\n\n')
    assert files["etc/rc"].endswith("    exec  \"$@\"\nelse\n    exec  '/bin/sh'\nfi\n")
    assert files["etc/environment"] == files["etc/fstab"] == ""
    only_entry = enroot_files({"config": {"Entrypoint": ["/bin/bash", "-l"]}})["etc/rc"]
    assert "    exec '/bin/bash' '-l' \"$@\"\nelse\n    exec '/bin/bash' '-l' \nfi\n" in only_entry


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
@pytest.mark.parametrize(
    "word", ["plain", "", "it's", "a\tb", "x\x1by", "back\\slash", "new\nline", "$HOME `id`", "\x01"]
)
def test_bash_quote_is_bash_at_q(word: str) -> None:
    bash = subprocess.run(
        ["bash", "-c", 'printf %s "${1@Q}"', "_", word], capture_output=True, check=True, env={"LC_ALL": "C"}
    )
    assert bash_quote(word) == bash.stdout.decode()


def test_configure_writes_the_files_over_the_layers(tmp_path: Path) -> None:
    root = tmp_path / "rootfs"
    root.mkdir()
    rootfs = Rootfs(str(root))
    rootfs.apply(
        layer(
            tmp_path / "1.tar",
            [("etc", "dir", None), ("etc/environment", "file", b"OLD=1\n"), ("workspace", "symlink", "/tmp")],
        )
    )
    EnrootDestination({"dir": str(tmp_path / "sqsh")}).configure(rootfs, CONFIG, None, None)  # type: ignore[arg-type]
    assert (root / "etc/rc").read_text() == RC
    assert (root / "etc/environment").read_text().startswith("PATH=")
    assert (root / "workspace").is_dir() and not (root / "workspace").is_symlink()
    assert stat.S_IMODE(os.stat(root / "etc/rc").st_mode) == 0o644


def test_names_and_options() -> None:
    assert sqsh_name("nvidia/pytorch", "24.01-py3") == "nvidia+pytorch+24.01-py3.sqsh"
    assert sqsh_name("nvidia/clara/clara-parabricks", "4.2.0-1") == "nvidia+clara+clara-parabricks+4.2.0-1.sqsh"
    assert sqsh_name("nvidia/cuda", None) == "nvidia+cuda.sqsh"
    assert EnrootDestination({"dir": "/srv/enroot"}).options == ["-comp", "lzo", "-noD"]
    assert EnrootDestination(
        {"dir": "/srv/enroot", "squash_options": "-comp zstd -Xcompression-level '3'"}
    ).options == ["-comp", "zstd", "-Xcompression-level", "3"]
    with pytest.raises(ConfigError, match="squash_options"):
        EnrootDestination({"dir": "/srv/enroot", "squash_options": "-comp 'lzo"})
