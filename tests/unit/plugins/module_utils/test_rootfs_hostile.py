# Copyright (c) airgap.ngc contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Hostile layers flattened: no device node is made, -all-root makes no file setuid root, a whiteout of '.', '..' or
nothing and a member with '..' are errors naming it; an image of one platform is never written as another."""

from __future__ import annotations

import io
import os
import stat
import tarfile
from pathlib import Path

import pytest

from ansible_collections.airgap.ngc.plugins.module_utils._types.errors import AirgapError
from ansible_collections.airgap.ngc.plugins.module_utils._formats.layers import (
    Rootfs,
    check_config_platform,
    layer_mode,
)


def layer(path: Path, members: list[tarfile.TarInfo | tuple[str, bytes]]) -> str:
    """A plain layer tar of TarInfo members (no data) and (name, data) files."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for member in members:
            if isinstance(member, tuple):
                info = tarfile.TarInfo(member[0])
                info.size, info.mode = len(member[1]), 0o644
                tar.addfile(info, io.BytesIO(member[1]))
            else:
                tar.addfile(member)
    path.write_bytes(buffer.getvalue())
    return str(path)


def info(
    name: str, kind: bytes = tarfile.REGTYPE, mode: int = 0o644, uid: int = 0, gid: int = 0, **extra: int
) -> tarfile.TarInfo:
    member = tarfile.TarInfo(name)
    member.type, member.mode, member.uid, member.gid = kind, mode, uid, gid
    for key, value in extra.items():
        setattr(member, key, value)
    return member


def listing(root: Path) -> dict[str, int]:
    """Each path below root and its st_mode."""
    return {str(p.relative_to(root)): os.lstat(p).st_mode for p in root.rglob("*")}


@pytest.mark.parametrize("keep_owner", [False, True])
def test_device_nodes_are_left_out_everywhere_and_noted(tmp_path: Path, keep_owner: bool) -> None:
    root = tmp_path / "rootfs"
    root.mkdir()
    rootfs = Rootfs(str(root), mode=layer_mode, keep_owner=keep_owner)
    rootfs.apply(
        layer(
            tmp_path / "1.tar",
            [
                info("mem", tarfile.CHRTYPE, 0o666, devmajor=1, devminor=1),
                info("etc/", tarfile.DIRTYPE, 0o755),
                info("etc/sda", tarfile.BLKTYPE, 0o660, devmajor=8, devminor=0),
                ("mem-was-a-file", b"x"),
                info("dev/", tarfile.DIRTYPE, 0o755),
                info("dev/null", tarfile.CHRTYPE, 0o666, devmajor=1, devminor=3),
                info("fifo", tarfile.FIFOTYPE, 0o644),
            ],
        )
    )
    rootfs.apply(layer(tmp_path / "2.tar", [info("mem-was-a-file", tarfile.CHRTYPE, 0o666, devmajor=1, devminor=2)]))
    modes = listing(root)
    assert not [p for p, m in modes.items() if stat.S_ISCHR(m) or stat.S_ISBLK(m)], modes
    assert sorted(modes) == ["dev", "etc", "fifo"]  # a device over a lower file hides it, as overlayfs shows it
    assert stat.S_ISFIFO(modes["fifo"])
    note = rootfs.note()
    assert note is not None and "left out 3 device node(s)" in note and "/mem, /etc/sda, /mem-was-a-file" in note
    assert "/dev/null" not in note  # /dev is left out as enroot does, without a word


def test_all_root_drops_setuid_and_setgid_of_files_the_layer_gives_to_others(tmp_path: Path) -> None:
    root = tmp_path / "rootfs"
    root.mkdir()
    rootfs = Rootfs(str(root), mode=layer_mode)  # the files become root's (mksquashfs -all-root)
    rootfs.apply(
        layer(
            tmp_path / "1.tar",
            [
                info("user-suid", mode=0o4755, uid=1000, gid=0),
                info("group-sgid", mode=0o2755, uid=0, gid=1000),
                info("both", mode=0o6755, uid=1000, gid=1000),
                info("user-sgid-root-group", mode=0o6750, uid=1000, gid=0),
                info("root-suid", mode=0o4755),
                info("user-plain", mode=0o755, uid=1000, gid=1000),
                info("dir-sgid/", tarfile.DIRTYPE, 0o2775, uid=1000, gid=1000),
            ],
        )
    )
    modes = {p: stat.S_IMODE(m) for p, m in listing(root).items()}
    assert modes == {
        "user-suid": 0o755,
        "group-sgid": 0o755,
        "both": 0o755,
        "user-sgid-root-group": 0o2750,
        "root-suid": 0o4755,
        "user-plain": 0o755,
        "dir-sgid": 0o2775,
    }
    note = rootfs.note()
    assert (
        note is not None
        and "setuid/setgid bit of 4 file(s)" in note
        and "/user-suid, /group-sgid, /both and 1 more" in note
    )


@pytest.mark.skipif(os.geteuid() != 0, reason="owners are kept only when run as root")
def test_kept_owners_keep_their_setuid_bits(tmp_path: Path) -> None:
    root = tmp_path / "rootfs"
    root.mkdir()
    rootfs = Rootfs(str(root), mode=layer_mode, keep_owner=True)
    rootfs.apply(layer(tmp_path / "1.tar", [info("user-suid", mode=0o4755, uid=1000, gid=1000)]))
    found = os.lstat(root / "user-suid")
    assert stat.S_IMODE(found.st_mode) == 0o4755 and (found.st_uid, found.st_gid) == (1000, 1000)
    assert rootfs.note() is None


@pytest.mark.parametrize(
    "name, said",
    [
        (".wh..", "names '.'"),
        (".wh.", "names 'nothing'"),
        (".wh...", "names '..'"),
        ("sub/.wh..", "names '.'"),
        ("../escape.txt", "'../escape.txt' has a '..' component"),
        ("/../../etc/x", "'/../../etc/x' has a '..' component"),
        ("sub/../../x", "has a '..' component"),
        ("../.wh.x", "has a '..' component"),
    ],
)
def test_hostile_names_are_errors_that_name_the_member(tmp_path: Path, name: str, said: str) -> None:
    root = tmp_path / "staging" / "rootfs"
    root.mkdir(parents=True)
    (tmp_path / "staging" / "blobs").mkdir()
    rootfs = Rootfs(str(root))
    rootfs.apply(layer(tmp_path / "1.tar", [info("sub/", tarfile.DIRTYPE, 0o755), ("sub/kept", b"k"), ("kept", b"k")]))
    with pytest.raises(AirgapError, match=said) as raised:
        rootfs.apply(layer(tmp_path / "2.tar", [info(name)]))
    assert repr(name) in str(raised.value)
    assert sorted(os.listdir(tmp_path / "staging")) == ["blobs", "rootfs"]  # the staging directory is whole
    assert sorted(listing(root)) == ["kept", "sub", "sub/kept"]
    assert not (tmp_path / "escape.txt").exists() and not (tmp_path / "staging" / "escape.txt").exists()


def test_a_hard_link_out_of_the_root_is_an_error_naming_it(tmp_path: Path) -> None:
    root = tmp_path / "rootfs"
    root.mkdir()
    with pytest.raises(AirgapError, match=r"the hard link 'passwd' to '../../etc/passwd' has a '\.\.' component"):
        Rootfs(str(root)).apply(
            layer(tmp_path / "1.tar", [info("passwd", tarfile.LNKTYPE, linkname="../../etc/passwd")])
        )


def test_an_absolute_member_is_a_path_below_the_root(tmp_path: Path) -> None:
    """A leading '/' names the image's root, as tar, umoci and containerd read it."""
    root = tmp_path / "rootfs"
    root.mkdir()
    Rootfs(str(root)).apply(layer(tmp_path / "1.tar", [("/opt/abs.txt", b"inside")]))
    assert (root / "opt" / "abs.txt").read_text() == "inside"


@pytest.mark.parametrize(
    "config, wanted, from_index, error",
    [
        ({"os": "linux", "architecture": "amd64"}, "linux/amd64", False, None),
        ({"os": "linux", "architecture": "arm64", "variant": "v8"}, "linux/arm64", False, None),
        ({"os": "linux", "architecture": "arm64"}, "linux/arm64/v8", True, None),  # the index named the variant
        ({}, "linux/arm64", False, None),  # a config that names no platform is taken as it is
        (
            {"os": "linux", "architecture": "amd64"},
            "linux/arm64",
            False,
            "nvidia/pytorch:24.01-py3 has only the platform linux/amd64, not enroot.platform linux/arm64",
        ),
        ({"os": "linux", "architecture": "amd64"}, "linux/s390x", False, "set enroot.platform to linux/amd64"),
        (
            {"os": "linux", "architecture": "arm", "variant": "v6"},
            "linux/arm/v7",
            False,
            "only the platform linux/arm/v6",
        ),
        (
            {"os": "linux", "architecture": "amd64"},
            "linux/arm64",
            True,
            "lists a linux/arm64 image whose config says linux/amd64",
        ),
    ],
)
def test_an_image_is_written_only_as_the_platform_its_config_says(
    config: dict, wanted: str, from_index: bool, error: str | None
) -> None:
    if error is None:
        check_config_platform(config, wanted, "enroot.platform", "nvidia/pytorch:24.01-py3", from_index)
        return
    with pytest.raises(AirgapError, match=error.replace(".", r"\.")):
        check_config_platform(config, wanted, "enroot.platform", "nvidia/pytorch:24.01-py3", from_index)
