# Copyright (c) airgap.ngc contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private: the layers of an image whose flattening is hard: replaced files, whiteouts, an opaque directory, symlinks,
hard links, special modes and owners, /dev entries, long paths and a symlink that becomes a directory.

Built with tarfile, byte for byte the same on every run (fixed mtimes, gzip without a time stamp).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import tarfile
from dataclasses import dataclass

MTIME = 1700000000
LONG_DIR = "opt/" + "/".join(f"deeply-nested-directory-{n:02d}" for n in range(6))  # > 100 characters
LONG_NAME = LONG_DIR + "/" + "a-file-name-that-is-long-as-well-" * 3 + "end.txt"


@dataclass
class Layer:
    """One layer: the tar bytes (diff_id) and their gzip (the blob)."""

    tar: bytes

    @property
    def diff_id(self) -> str:
        return "sha256:" + hashlib.sha256(self.tar).hexdigest()

    @property
    def blob(self) -> bytes:
        return gzip.compress(self.tar, compresslevel=6, mtime=0)


class _Writer:
    """Adds members to one tar in memory, each with the layer's fixed time and root ownership unless told."""

    def __init__(self, layer_format: int, mtime: int) -> None:
        self.raw = io.BytesIO()
        self.tar = tarfile.open(fileobj=self.raw, mode="w", format=layer_format)  # pylint: disable=consider-using-with
        self.mtime = mtime

    def _info(self, name: str, kind: bytes, mode: int, uid: int, gid: int) -> tarfile.TarInfo:
        info = tarfile.TarInfo(name)
        info.type, info.mode, info.mtime = kind, mode, self.mtime
        info.uid, info.gid = uid, gid
        info.uname = "root" if uid == 0 else ""
        info.gname = "root" if gid == 0 else ""
        return info

    def dir(self, name: str, mode: int = 0o755, uid: int = 0, gid: int = 0) -> None:
        self.tar.addfile(self._info(name + "/", tarfile.DIRTYPE, mode, uid, gid))

    def file(self, name: str, data: bytes, mode: int = 0o644, uid: int = 0, gid: int = 0) -> None:
        info = self._info(name, tarfile.REGTYPE, mode, uid, gid)
        info.size = len(data)
        self.tar.addfile(info, io.BytesIO(data))

    def symlink(self, name: str, target: str, uid: int = 0, gid: int = 0) -> None:
        info = self._info(name, tarfile.SYMTYPE, 0o777, uid, gid)
        info.linkname = target
        self.tar.addfile(info)

    def hardlink(self, name: str, target: str) -> None:
        info = self._info(name, tarfile.LNKTYPE, 0o644, 0, 0)
        info.linkname = target
        self.tar.addfile(info)

    def chardev(self, name: str, major: int, minor: int, mode: int = 0o666) -> None:
        info = self._info(name, tarfile.CHRTYPE, mode, 0, 0)
        info.devmajor, info.devminor = major, minor
        self.tar.addfile(info)

    def blockdev(self, name: str, major: int, minor: int, mode: int = 0o660) -> None:
        info = self._info(name, tarfile.BLKTYPE, mode, 0, 0)
        info.devmajor, info.devminor = major, minor
        self.tar.addfile(info)

    def close(self) -> Layer:
        self.tar.close()
        return Layer(self.raw.getvalue())


def _content(label: str, size: int) -> bytes:
    """`size` bytes that depend on the label (different files must differ)."""
    seed = hashlib.sha256(label.encode("utf-8")).digest()
    return (seed * (size // len(seed) + 1))[:size]


def flatten_layers() -> list[Layer]:
    """Three layers, bottom first. What each one does to the ones below is said next to it."""
    base = _Writer(tarfile.GNU_FORMAT, MTIME)  # GNU long names (././@LongLink) for the long path
    for directory in (
        "bin",
        "etc",
        "usr",
        "usr/bin",
        "usr/lib",
        "opt",
        "var",
        "var/log",
        "data",
        "gone-dir",
        "gone-dir/sub",
        "opaque",
        "opaque/old-sub",
        "real-target",
    ):
        base.dir(directory)
    base.dir("dev")
    base.dir("dev/pts")
    base.chardev("dev/null", 1, 3)
    base.chardev("dev/zero", 1, 5)
    base.file("etc/hostname", b"flatten-test\n")
    base.file("etc/os-release", b'NAME="flatten"\n')
    base.file("replaced.txt", b"version 1\n" * 50)
    base.file("was-file", b"a directory in layer 3\n")
    base.file("type-changes", b"a file in layer 1, a symlink in layer 2\n")
    base.file("gone-file.txt", b"whited out in layer 2\n")
    base.file("gone-dir/a.txt", b"a\n")
    base.file("gone-dir/sub/b.txt", b"b\n")
    base.file("opaque/old.txt", b"hidden by the opaque marker of layer 2\n")
    base.file("opaque/kept-name.txt", b"old content, replaced in the opaque layer\n")
    base.file("opaque/old-sub/c.txt", b"c\n")
    base.file("usr/bin/tool", _content("tool", 70000), mode=0o755)
    base.hardlink("usr/bin/tool-alias", "usr/bin/tool")  # a hard link within the layer
    base.file("usr/bin/su-like", _content("su-like", 3000), mode=0o4755)  # setuid
    base.file(
        "usr/bin/wall-like", _content("wall-like", 2000), mode=0o2711, gid=5
    )  # setgid, group tty, no u+r for others
    base.file("usr/lib/private.so", _content("private", 5000), mode=0o600)
    base.file("usr/lib/unreadable", b"mode 000: enroot's fixperms adds u+r\n", mode=0o000)
    base.file("usr/lib/exec-only", b"#!/bin/sh\n", mode=0o111)  # u+r and (already) u+x
    base.dir("home")
    base.dir("home/user", mode=0o750, uid=1000, gid=1000)
    base.file("home/user/notes.txt", b"owned by 1000:1000\n", uid=1000, gid=1000)
    base.file("home/user/shared.txt", b"owned by 1000:100\n", mode=0o640, uid=1000, gid=100)
    base.symlink("home/user/link", "notes.txt", uid=1000, gid=1000)
    base.file("home/user/setuid-user", _content("setuid-user", 100), mode=0o4750, uid=1000, gid=1000)
    base.dir("var/spool", mode=0o1777)  # sticky
    base.dir("locked", mode=0o500)  # fixperms adds u+w on directories near the root
    base.dir("locked/deeper", mode=0o555)
    base.dir("locked/deeper/3", mode=0o555)
    base.dir("locked/deeper/3/4", mode=0o555)
    base.dir("locked/deeper/3/4/5", mode=0o555)
    base.dir("locked/deeper/3/4/5/6", mode=0o555)  # depth 6: no u+w
    base.file("locked/deeper/3/4/5/6/leaf", b"leaf\n", mode=0o444)
    base.symlink("sbin", "usr/bin")  # relative
    base.symlink("bin/sh", "/usr/bin/tool")  # absolute
    base.symlink("etc/escape", "../../../../../../etc/shadow")  # climbs out of the root
    base.symlink("etc/dangling", "/no/such/file")
    base.symlink("mixed", "real-target")  # a symlink here, a real directory in layer 2
    base.file("real-target/under-target.txt", b"stays in real-target\n")
    path = "opt"
    for part in LONG_DIR.split("/")[1:]:
        path += "/" + part
        base.dir(path)
    base.file(LONG_NAME, b"a long path (GNU) in layer 1\n")

    middle = _Writer(tarfile.PAX_FORMAT, MTIME + 100)  # PAX long names in this one
    middle.file("replaced.txt", b"version 2, longer than the first\n" * 70)
    middle.file("etc/hostname", b"flatten-test-2\n")
    middle.symlink("type-changes", "/etc/hostname")
    middle.file(".wh.gone-file.txt", b"")
    middle.file(".wh.gone-dir", b"")
    middle.file("opaque/kept-name.txt", b"new content of the opaque layer\n")  # before the marker: stays
    middle.file("opaque/.wh..wh..opq", b"")
    middle.dir("opaque/new-sub")
    middle.file("opaque/new-sub/d.txt", b"d\n")  # after the marker: stays as well
    middle.file("data/short-lived.txt", b"whited out in layer 3\n")
    middle.dir("was-dir")
    middle.file("was-dir/child", b"replaced by a file in layer 3\n")
    middle.file("data/from-middle.txt", _content("from-middle", 12345))
    middle.hardlink("data/link-to-lower", "etc/os-release")  # a hard link to a file of a lower layer
    middle.hardlink("data/link-in-layer", "data/from-middle.txt")
    middle.dir("mixed")  # replaces the symlink of layer 1 with a real directory
    middle.file("mixed/inside.txt", b"in the directory that replaced the symlink\n")
    middle.file(LONG_NAME, b"a long path (PAX) replaced in layer 2\n")
    middle.file(LONG_DIR + "/" + "x" * 120, b"a long final component\n")
    middle.file(".wh.sbin", b"")
    middle.dir("sbin")  # a whited-out symlink comes back as a directory in the same layer
    middle.file("sbin/init", b"#!/bin/sh\n", mode=0o755)
    middle.dir("dev/shm", mode=0o1777)
    middle.file("dev/leftover", b"anything under /dev is left out\n")

    top = _Writer(tarfile.PAX_FORMAT, MTIME + 200)
    top.file("replaced.txt", b"version 3\n")
    top.file("gone-file.txt.bak", b"similar name, not whited out\n")
    top.file("data/.wh.short-lived.txt", b"")  # a whiteout of a file the layer below wrote
    top.file("was-dir", b"a file where layer 2 had a directory\n")
    top.file(".wh.was-file", b"")
    top.dir("was-file")
    top.file("was-file/child", b"a directory where layer 1 had a file\n")
    top.file("usr/bin/tool", _content("tool v2", 1000), mode=0o755)  # tool-alias keeps the old inode
    top.dir("home/user", mode=0o700, uid=1000, gid=1000)  # only the mode changes
    top.file("etc/unicode-\u00e9\u00e8.txt", "non-ASCII name\n".encode("utf-8"))
    top.file("empty", b"")
    return [base.close(), middle.close(), top.close()]


HOSTILE_MEMBERS = {  # tag -> the one member of its second layer that must fail the image (named in the message)
    "whiteout-dot": ".wh..",
    "whiteout-empty": ".wh.",
    "whiteout-dotdot": "etc/.wh...",
    "dotdot-member": "../escape.txt",
    "absolute-dotdot": "/../../../../../../../../tmp/airgap-hostile-victim.txt",
}


def hostile_layers(tag: str) -> list[Layer]:
    """A small base layer, then what tag ``devices-setuid`` or one of HOSTILE_MEMBERS holds.

    ``devices-setuid``: device nodes outside /dev (``/mem`` 1,1 mode 0666, the block device ``/etc/sda``), one in
    /dev, and setuid/setgid files of uid/gid 1000 beside a setuid file of root's.
    """
    base = _Writer(tarfile.PAX_FORMAT, MTIME)
    for directory in ("etc", "usr", "usr/bin", "dev"):
        base.dir(directory)
    base.file("etc/hostname", b"hostile\n")
    base.file("usr/bin/su-root", _content("su-root", 1000), mode=0o4755)
    base.file("usr/bin/setuid-user", _content("setuid-user", 1000), mode=0o4755, uid=1000, gid=1000)
    base.file("usr/bin/setgid-group", _content("setgid-group", 1000), mode=0o2755, gid=1000)
    upper = _Writer(tarfile.PAX_FORMAT, MTIME + 100)
    if tag == "devices-setuid":
        upper.chardev("mem", 1, 1)
        upper.blockdev("etc/sda", 8, 0)
        upper.chardev("dev/null", 1, 3)
        upper.file("etc/motd", b"devices left out\n")
    else:
        upper.file("etc/motd", b"before the hostile member\n")
        upper.file(HOSTILE_MEMBERS[tag], b"hostile\n")
    return [base.close(), upper.close()]
