# Copyright (c) airgap.ngc contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private: an image's layers applied into a rootfs directory, and the rootfs made into squashfs. Not a public API.

Layers are applied in order as overlayfs would show them (OCI whiteouts ``.wh.NAME`` and ``.wh..wh..opq``, ``/dev``
entries left out, no path followed out of the root); ``mksquashfs`` makes the file. Why a directory rather than a
tar stream into ``tar2sqfs``: docs/design/flattened.md.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import shutil
import stat
import subprocess
import tarfile
from datetime import datetime
from typing import Any

from ansible_collections.airgap.ngc.plugins.module_utils._types.errors import AirgapError, shorten
from ansible_collections.airgap.ngc.plugins.module_utils._formats.files import os_error
from ansible_collections.airgap.ngc.plugins.module_utils._types.oci import CHUNK_SIZE, platform_string

WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"
MAX_NOTED = 3  # paths named in an image's note of what flattening left out or changed
_CREATED_RE = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.\d+)?(Z|[+-]\d\d:\d\d)$")


def created_time(config: dict[str, Any]) -> int:
    """The image's ``created`` time in seconds (0 if it has none): the time of what a destination adds, so that
    one image always makes the same file (enroot and apptainer take the time of the import)."""
    match = _CREATED_RE.match(str(config.get("created") or ""))
    if not match:
        return 0
    zone = "+00:00" if match.group(2) == "Z" else match.group(2)
    return max(int(datetime.fromisoformat(match.group(1) + zone).timestamp()), 0)


def check_config_platform(config: dict[str, Any], wanted: str, option: str, name: str, from_index: bool) -> None:
    """Fail unless the image config is of the wanted platform: an image of one platform is never written labelled as
    another. A variant is compared only when both name one; a config that names no platform is taken as it is."""
    if not (config.get("os") or config.get("architecture")):
        return
    parts = wanted.split("/")
    have = platform_string(config)
    if (
        config.get("os") == parts[0]
        and config.get("architecture") == parts[1]
        and (len(parts) < 3 or not config.get("variant") or config.get("variant") == parts[2])
    ):
        return
    if from_index:
        raise AirgapError(
            f"the index of {name} lists a {wanted} image whose config says {have}: a wrong or "
            f"tampered index, not written as {wanted}"
        )
    raise AirgapError(
        f"{name} has only the platform {have}, not {option} {wanted}: set {option} to {have} or leave this image out"
    )


def image_config(conf: dict[str, Any]) -> dict[str, Any]:
    """The ``config`` object of an image config (Env, Entrypoint, Cmd, ...), empty when it has none."""
    found = conf.get("config")
    return found if isinstance(found, dict) else {}


def member_parts(name: str) -> list[str] | None:
    """A member's path as components below the root, or None for the root itself or a path that climbs out."""
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if not parts or ".." in parts:
        return None
    return parts


def layer_member_parts(name: str, what: str = "member") -> list[str] | None:
    """A layer member's path as components below the root (a leading '/' is the root's), None for the root itself;
    a path with a '..' component is an error naming it (overlayfs and enroot never write outside the root)."""
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise AirgapError(f"the {what} {name!r} has a '..' component: a layer names only paths inside the image")
    return parts or None


def _listed(paths: list[str]) -> str:
    shown = ", ".join(f"/{p}" for p in paths[:MAX_NOTED])
    return shown + (f" and {len(paths) - MAX_NOTED} more" if len(paths) > MAX_NOTED else "")


def _remove(path: str) -> None:
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if stat.S_ISDIR(mode):
        shutil.rmtree(path)
    else:
        os.unlink(path)


def is_dir(path: str) -> bool:
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except FileNotFoundError:
        return False


def enroot_mode(mode: int, directory: bool, depth: int) -> int:
    """The mode enroot's common::fixperms leaves: u+r, u+x on directories and executables, u+w on directories 5 deep."""
    mode = (mode & 0o7777) | stat.S_IRUSR
    if directory or mode & 0o111:
        mode |= stat.S_IXUSR
    if directory and depth <= 5:
        mode |= stat.S_IWUSR
    return mode


def layer_mode(mode: int, directory: bool, depth: int) -> int:  # pylint: disable=unused-argument
    """The mode as the layer has it (apptainer without --fix-perms)."""
    return mode & 0o7777


class Rootfs:
    """A staging directory the layers are applied to; no path is followed out of it, no device node is made.

    ``mode`` turns a member's mode into the one written; ``keep_owner`` gives files the layer's owners (when run as
    root; otherwise everything belongs to the module's user, and mksquashfs -all-root makes it root's, so a file the
    layer gives to another user or group loses its setuid or setgid bit). Device nodes are left out everywhere, as
    enroot leaves out ``/dev``; what was left out or changed outside ``/dev`` is said by ``note()``.
    """

    def __init__(self, root: str, mode: Any = enroot_mode, keep_owner: bool = False) -> None:
        self.root = root
        self.mode = mode
        self.keep_owner = keep_owner and os.geteuid() == 0
        self.dir_times: dict[str, float] = {}  # the mtime of each directory from the topmost layer that has it
        self.devices: list[str] = []  # device nodes of the layers left out (outside /dev)
        self.unprivileged: list[str] = []  # files whose setuid or setgid bit was dropped

    def note(self) -> str | None:
        """What the image's result says of the flattening: device nodes left out, setuid/setgid bits dropped."""
        said = []
        if self.devices:
            said.append(
                f"left out {len(self.devices)} device node(s) of the layers ({_listed(self.devices)}): "
                "no device node is written into an image"
            )
        if self.unprivileged:
            said.append(
                f"dropped the setuid/setgid bit of {len(self.unprivileged)} file(s) the layers give to another "
                f"user or group than root ({_listed(self.unprivileged)}), as every file becomes root's"
            )
        return "; ".join(said) or None

    def path(self, parts: list[str]) -> str:
        return os.path.join(self.root, *parts)

    def _lower(self, parts: list[str]) -> str | None:
        """The path of an entry if every parent of it is a real directory (never a symlink), else None."""
        for i in range(len(parts) - 1):
            if not is_dir(self.path(parts[: i + 1])):
                return None
        return self.path(parts)

    def parents(self, parts: list[str], mtime: float) -> None:
        """Make every parent a real directory: what overlayfs shows when an upper layer has a directory there."""
        for i in range(len(parts) - 1):
            path = self.path(parts[: i + 1])
            if not is_dir(path):
                _remove(path)
                os.mkdir(path, 0o755)
                self.dir_times[path] = mtime

    def apply(self, path: str) -> None:
        """Apply one layer tar (gzip, bzip2, xz or plain): its whiteouts first, then its entries. A member with a
        '..' component, or a whiteout of '.', '..' or no name, is an error naming it."""
        with open(path, "rb") as handle:
            magic = handle.read(4)
        if magic == b"\x28\xb5\x2f\xfd":
            raise AirgapError("a zstd-compressed layer cannot be applied here (Python's tarfile reads gzip, bzip2, xz)")
        with tarfile.open(path, mode="r|*") as layer:
            for member in layer:
                parts = layer_member_parts(member.name)
                if parts is None or parts[0] == "dev" and len(parts) > 1 or not parts[-1].startswith(WHITEOUT):
                    continue
                if (
                    parts[-1] != OPAQUE
                    and not parts[-1].startswith(WHITEOUT + WHITEOUT)
                    and parts[-1][len(WHITEOUT) :] in ("", ".", "..")
                ):
                    raise AirgapError(
                        f"the whiteout {member.name!r} names {parts[-1][len(WHITEOUT) :] or 'nothing'!r}, "
                        "not an entry of its directory: a hostile or broken layer"
                    )
                target = self._lower(parts[:-1] + [""])
                if target is None:
                    continue
                if parts[-1] == OPAQUE:
                    directory = os.path.dirname(target)
                    for child in os.listdir(directory) if is_dir(directory) else []:
                        _remove(os.path.join(directory, child))
                elif not parts[-1].startswith(WHITEOUT + WHITEOUT):
                    _remove(os.path.join(os.path.dirname(target), parts[-1][len(WHITEOUT) :]))
        with tarfile.open(path, mode="r|*") as layer:
            for member in layer:
                parts = layer_member_parts(member.name)
                if parts is None or parts[0] == "dev" and len(parts) > 1 or parts[-1].startswith(WHITEOUT):
                    continue
                self._entry(layer, member, parts)

    def _own(self, path: str, member: tarfile.TarInfo) -> None:
        if self.keep_owner:
            os.lchown(path, member.uid, member.gid)

    def _entry(self, layer: tarfile.TarFile, member: tarfile.TarInfo, parts: list[str]) -> None:
        self.parents(parts, member.mtime)
        path = self.path(parts)
        if member.isdir():
            if not is_dir(path):
                _remove(path)
                os.mkdir(path, 0o700)
            self._own(path, member)
            os.chmod(path, self.mode(member.mode, True, len(parts)))
            self.dir_times[path] = member.mtime
            return
        if member.islnk():
            link_parts = layer_member_parts(member.linkname, f"hard link {member.name!r} to")
            source = self._lower(link_parts) if link_parts else None
            if source is None or not os.path.lexists(source) or is_dir(source):
                raise AirgapError(
                    f"the layer's hard link {member.name} points to {member.linkname}, which no layer holds"
                )
            if os.path.lexists(path) and os.path.samestat(os.lstat(path), os.lstat(source)):
                return
            _remove(path)
            os.link(source, path, follow_symlinks=False)
            return
        _remove(path)
        if member.issym():
            os.symlink(member.linkname, path)
            self._own(path, member)
            os.utime(path, (member.mtime, member.mtime), follow_symlinks=False)
            return
        if member.isfile():
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "wb") as out:
                data = layer.extractfile(member)
                if data is not None:
                    shutil.copyfileobj(data, out, CHUNK_SIZE)
        elif member.isfifo():
            os.mkfifo(path, 0o600)
        elif member.ischr() or member.isblk():
            self.devices.append("/".join(parts))
            return
        else:
            return
        self._own(path, member)  # before chmod: chown clears setuid bits
        mode = member.mode
        if not self.keep_owner and (mode & stat.S_ISUID and member.uid != 0 or mode & stat.S_ISGID and member.gid != 0):
            mode &= ~((stat.S_ISUID if member.uid != 0 else 0) | (stat.S_ISGID if member.gid != 0 else 0))
            self.unprivileged.append("/".join(parts))
        os.chmod(path, self.mode(mode, False, len(parts)))
        os.utime(path, (member.mtime, member.mtime))

    def make_dir(self, parts: list[str], mtime: float, mode: int = 0o755, replace: bool = True) -> None:
        """A directory the destination adds (and its parents); an existing one keeps its mode unless ``replace``."""
        self.parents(parts + [""], mtime)
        path = self.path(parts)
        if is_dir(path) and not replace:
            return
        if not is_dir(path):
            _remove(path)
            os.mkdir(path)
        os.chmod(path, mode)
        self.dir_times[path] = mtime

    def add_file(self, name: str, text: str, mtime: float, mode: int = 0o644) -> None:
        """A file the destination adds, replacing what the layers have there (a symlink is replaced, never followed)."""
        parts = name.split("/")
        self.parents(parts, mtime)
        path = self.path(parts)
        _remove(path)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(text.encode("utf-8"))
        os.chmod(path, mode)
        os.utime(path, (mtime, mtime))

    def add_symlink(self, name: str, target: str, mtime: float) -> None:
        """A symlink the destination adds where the layers have nothing."""
        path = self.path(name.split("/"))
        if not os.path.lexists(path):
            os.symlink(target, path)
            os.utime(path, (mtime, mtime), follow_symlinks=False)

    def finish(self, mtime: float) -> None:
        """Set every directory's time, the root's to ``mtime`` (children first: setting a time changes none)."""
        self.dir_times[self.root] = mtime
        for path in sorted(self.dir_times, key=lambda p: -p.count("/")):
            if is_dir(path):
                os.utime(path, (self.dir_times[path], self.dir_times[path]), follow_symlinks=False)


def squash(
    rootfs: str,
    output: str,
    options: list[str],
    mkfs_time: int = 0,
    offset: int = 0,
    all_root: bool = True,
    option_name: str = "squash_options",
) -> None:
    """mksquashfs the rootfs into ``output`` (at ``offset`` bytes into it); an error names what mksquashfs said."""
    command = ["mksquashfs", rootfs, output, "-noappend", "-no-progress", "-mkfs-time", str(mkfs_time)]
    command += (["-all-root"] if all_root else []) + (["-o", str(offset)] if offset else []) + options
    try:
        result = subprocess.run(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, check=False
        )
    except FileNotFoundError:
        raise AirgapError(
            "mksquashfs was not found: install squashfs-tools for the enroot and apptainer destinations"
        ) from None
    if result.returncode != 0:
        said = result.stdout.decode("utf-8", "replace").strip().splitlines()
        for code in (errno.ENOSPC, getattr(errno, "EDQUOT", None)):
            if code is not None and any(
                os.strerror(code) in line for line in said
            ):  # "Write failed because No space left on device"
                raise os_error(OSError(code, os.strerror(code)), "squashing the image into", output) from None
        raise AirgapError(
            f"mksquashfs {' '.join(options)} failed for {output} (exit {result.returncode}): "
            f"{shorten(' '.join(said[-3:]) or 'no output')}; check {option_name} and the free space"
        )


def sha256_file(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK_SIZE), b""):
            digest.update(chunk)
    return "sha256:" + digest.hexdigest()
