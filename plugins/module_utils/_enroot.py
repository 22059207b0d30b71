# Copyright (c) airgap.ngc contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private: the enroot destination: ``<dir>/<name with / and : as +>.sqsh`` as ``enroot import`` makes it. Not a public API.

The image's layers (linux/amd64 of a multi-platform image) are spooled under ``<dir>``, applied in order into a
staging rootfs there with OCI whiteouts (``.wh.NAME``, ``.wh..wh..opq``), ``/dev`` entries left out; the files
enroot's ``docker::configure`` writes (``/etc/rc``, ``/etc/rc.local``, ``/etc/environment``, ``/etc/fstab``) are
added from the config, and ``mksquashfs -all-root`` makes the image under a temporary name, renamed when complete.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import stat
import subprocess
import tarfile
import tempfile
from datetime import datetime
from typing import Any

from ansible_collections.airgap.ngc.plugins.module_utils._destinations import PlanContext, Write
from ansible_collections.airgap.ngc.plugins.module_utils._errors import AirgapError, ConfigError, shorten
from ansible_collections.airgap.ngc.plugins.module_utils._files import fsync_dir, os_error, partial_name, pid_alive, register_live, remove_quietly
from ansible_collections.airgap.ngc.plugins.module_utils._oci import ImageContent, Manifest
from ansible_collections.airgap.ngc.plugins.module_utils._plan import SourceImage, Step
from ansible_collections.airgap.ngc.plugins.module_utils._state import StateStore, utc_now

DEFAULT_SQUASH_OPTIONS = "-comp lzo -noD"  # enroot's ENROOT_SQUASH_OPTIONS
PLATFORM = "linux/amd64"
STAGING_PREFIX = ".enroot-staging-"  # <dir>/.enroot-staging-<pid>-XXXX: spooled blobs and the rootfs of one image
WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"
RC_LOCAL = ("# This file is sourced by /etc/rc when the container starts.\n"
            "# It can be used to manipulate the entrypoint or the command of the container.\n")
COPY_CHUNK = 1024 * 1024
_CREATED_RE = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.\d+)?(Z|[+-]\d\d:\d\d)$")


def created_time(config: dict[str, Any]) -> int:
    """The image's ``created`` time in seconds (0 if it has none): the time of what this destination adds, so that
    one image always makes the same file (enroot takes the time of the import)."""
    match = _CREATED_RE.match(str(config.get("created") or ""))
    if not match:
        return 0
    zone = "+00:00" if match.group(2) == "Z" else match.group(2)
    return max(int(datetime.fromisoformat(match.group(1) + zone).timestamp()), 0)


def sqsh_name(repository: str, tag: str | None) -> str:
    """The file enroot names an import: ``nvidia/pytorch:24.01-py3`` -> ``nvidia+pytorch+24.01-py3.sqsh``."""
    return (f"{repository}:{tag}" if tag else repository).replace("/", "+").replace(":", "+") + ".sqsh"


# The texts of enroot's docker::configure (src/docker.sh) -----------------------------------------------------

def _jq_values(value: Any) -> list[str]:
    """What ``jq -r '(X[])? // empty'`` prints for X: the array's items but null and false, strings raw."""
    if not isinstance(value, list):
        return []
    return [v if isinstance(v, str) else json.dumps(v, separators=(",", ":")) for v in value if v is not None and v is not False]


def _lines(values: list[str]) -> list[str]:
    """The array ``readarray -t`` makes of those values printed one a line."""
    return [line for v in values for line in v.split("\n")]


def _printable(char: str) -> bool:
    return 0x20 <= ord(char) < 0x7f if ord(char) < 0x80 else char.isprintable()


_ANSIC = {"\x1b": "\\E", "\a": "\\a", "\v": "\\v", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t",
          "\\": "\\\\", "'": "\\'"}


def bash_quote(word: str) -> str:
    """bash's ``${word@Q}``: ``''`` when empty, ``$'...'`` when it holds a non-printable character, else '...'."""
    if not word:
        return "''"
    if all(_printable(c) for c in word):
        return "'" + word.replace("'", "'\\''") + "'"
    out = []
    for char in word:
        if char in _ANSIC:
            out.append(_ANSIC[char])
        elif _printable(char):
            out.append(char)
        else:
            out.extend(f"\\{b:03o}" for b in char.encode("utf-8"))
    return "$'" + "".join(out) + "'"


def enroot_files(config: dict[str, Any]) -> dict[str, str]:
    """The texts enroot's docker::configure writes for an image config, by path in the rootfs."""
    conf = config.get("config") if isinstance(config.get("config"), dict) else {}
    volumes = conf.get("Volumes") if isinstance(conf.get("Volumes"), dict) else {}
    labels = conf.get("Labels") if isinstance(conf.get("Labels"), dict) else {}
    rc = "".join(f"# {k} {v if isinstance(v, str) else json.dumps(v, separators=(',', ':'))}\n" for k, v in labels.items())
    if rc:
        rc += "\n"
    workdir_value = conf.get("WorkingDir")
    workdir = "" if workdir_value is None or workdir_value is False else _jq_values([workdir_value])[0]
    workdir = workdir.split("\n", 1)[0].strip(" \t") or "/"
    entrypoint = " ".join(bash_quote(w) for w in _lines(_jq_values(conf.get("Entrypoint"))))
    cmd_words = _lines(_jq_values(conf.get("Cmd")))
    if not entrypoint and not cmd_words:
        cmd_words = ["/bin/sh"]
    cmd = " ".join(bash_quote(w) for w in cmd_words)
    rc += (f'mkdir -p "{workdir}" 2> /dev/null\n'
           f'cd "{workdir}" && unset OLDPWD || exit 1\n'
           "\n"
           "if [ -s /etc/rc.local ]; then\n"
           "    . /etc/rc.local\n"
           "fi\n"
           "\n"
           "if [ $# -gt 0 ]; then\n"
           f'    exec {entrypoint} "$@"\n'
           "else\n"
           f"    exec {entrypoint} {cmd}\n"
           "fi\n")
    return {
        "etc/fstab": "".join(f"${{ENROOT_ROOTFS}}{k} {k} none x-create=dir,bind,rw,nosuid,nodev\n" for k in sorted(volumes)),
        "etc/environment": "".join(f"{line}\n" for line in _jq_values(conf.get("Env"))),
        "etc/rc": rc,
        "etc/rc.local": RC_LOCAL,
        "workdir": workdir,
    }


# Applying layers ---------------------------------------------------------------------------------------------

def _member_parts(name: str) -> list[str] | None:
    """A member's path as components below the root, or None for the root itself or a path that climbs out."""
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if not parts or ".." in parts:
        return None
    return parts


def _remove(path: str) -> None:
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if stat.S_ISDIR(mode):
        shutil.rmtree(path)
    else:
        os.unlink(path)


def _is_dir(path: str) -> bool:
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except FileNotFoundError:
        return False


class Rootfs:
    """A staging directory the layers are applied to, as overlayfs would show them; no path is followed out of it."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.dir_times: dict[str, float] = {}  # the mtime of each directory from the topmost layer that has it

    def _path(self, parts: list[str]) -> str:
        return os.path.join(self.root, *parts)

    def _lower(self, parts: list[str]) -> str | None:
        """The path of an entry if every parent of it is a real directory (never a symlink), else None."""
        for i in range(len(parts) - 1):
            if not _is_dir(self._path(parts[:i + 1])):
                return None
        return self._path(parts)

    def _parents(self, parts: list[str], mtime: float) -> None:
        """Make every parent a real directory: what overlayfs shows when an upper layer has a directory there."""
        for i in range(len(parts) - 1):
            path = self._path(parts[:i + 1])
            if not _is_dir(path):
                _remove(path)
                os.mkdir(path, 0o755)
                self.dir_times[path] = mtime

    def apply(self, path: str) -> None:
        """Apply one layer tar (gzip, bzip2, xz or plain): its whiteouts first, then its entries."""
        with open(path, "rb") as handle:
            magic = handle.read(4)
        if magic == b"\x28\xb5\x2f\xfd":
            raise AirgapError("a zstd-compressed layer cannot be applied here (Python's tarfile reads gzip, bzip2, xz)")
        with tarfile.open(path, mode="r|*") as layer:
            for member in layer:
                parts = _member_parts(member.name)
                if parts is None or parts[0] == "dev" and len(parts) > 1 or not parts[-1].startswith(WHITEOUT):
                    continue
                target = self._lower(parts[:-1] + [""])
                if target is None:
                    continue
                if parts[-1] == OPAQUE:
                    directory = os.path.dirname(target)
                    for child in os.listdir(directory) if _is_dir(directory) else []:
                        _remove(os.path.join(directory, child))
                elif not parts[-1].startswith(WHITEOUT + WHITEOUT):
                    _remove(os.path.join(os.path.dirname(target), parts[-1][len(WHITEOUT):]))
        with tarfile.open(path, mode="r|*") as layer:
            for member in layer:
                parts = _member_parts(member.name)
                if parts is None or parts[0] == "dev" and len(parts) > 1 or parts[-1].startswith(WHITEOUT):
                    continue
                self._entry(layer, member, parts)

    def _entry(self, layer: tarfile.TarFile, member: tarfile.TarInfo, parts: list[str]) -> None:
        self._parents(parts, member.mtime)
        path = self._path(parts)
        if member.isdir():
            if not _is_dir(path):
                _remove(path)
                os.mkdir(path, 0o700)
            os.chmod(path, _mode(member.mode, True, len(parts)))
            self.dir_times[path] = member.mtime
            return
        if member.islnk():
            link_parts = _member_parts(member.linkname)
            source = self._lower(link_parts) if link_parts else None
            if source is None or not os.path.lexists(source) or _is_dir(source):
                raise AirgapError(f"the layer's hard link {member.name} points to {member.linkname}, which no layer holds")
            if os.path.lexists(path) and os.path.samestat(os.lstat(path), os.lstat(source)):
                return
            _remove(path)
            os.link(source, path, follow_symlinks=False)
            return
        _remove(path)
        if member.issym():
            os.symlink(member.linkname, path)
            os.utime(path, (member.mtime, member.mtime), follow_symlinks=False)
            return
        if member.isfile():
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "wb") as out:
                data = layer.extractfile(member)
                if data is not None:
                    shutil.copyfileobj(data, out, COPY_CHUNK)
        elif member.isfifo():
            os.mkfifo(path, 0o600)
        elif member.ischr() or member.isblk():
            kind = stat.S_IFCHR if member.ischr() else stat.S_IFBLK
            os.mknod(path, 0o600 | kind, os.makedev(member.devmajor, member.devminor))
        else:
            return
        os.chmod(path, _mode(member.mode, False, len(parts)))
        os.utime(path, (member.mtime, member.mtime))

    def configure(self, config: dict[str, Any]) -> None:
        """Add enroot's files on top; the root, /etc and the working directory are then as enroot's top layer has them."""
        files = enroot_files(config)
        now = created_time(config)
        workdir = _member_parts(files.pop("workdir")) or []
        for parts in [["etc"]] + [workdir[:i + 1] for i in range(len(workdir))]:
            self._parents(parts + [""], now)
            path = self._path(parts)
            if not _is_dir(path):
                _remove(path)
                os.mkdir(path)
            os.chmod(path, 0o755)
            self.dir_times[path] = now
        os.chmod(self.root, 0o755)
        for name, text in files.items():
            path = self._path(name.split("/"))
            _remove(path)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
            with os.fdopen(fd, "wb") as out:
                out.write(text.encode("utf-8"))
            os.chmod(path, 0o644)
            os.utime(path, (now, now))
        self.dir_times[self.root] = now
        for path in sorted(self.dir_times, key=lambda p: -p.count("/")):  # children first: setting a time changes none
            if _is_dir(path):
                os.utime(path, (self.dir_times[path], self.dir_times[path]), follow_symlinks=False)


def _mode(mode: int, is_dir: bool, depth: int) -> int:
    """The mode enroot's common::fixperms leaves: u+r, u+x on directories and executables, u+w on directories 5 deep."""
    mode = (mode & 0o7777) | stat.S_IRUSR
    if is_dir or mode & 0o111:
        mode |= stat.S_IXUSR
    if is_dir and depth <= 5:
        mode |= stat.S_IWUSR
    return mode


def squash(rootfs: str, output: str, options: list[str], mkfs_time: int = 0) -> None:
    """mksquashfs the rootfs into ``output`` with -all-root and the options; an error names what mksquashfs said."""
    command = ["mksquashfs", rootfs, output, "-noappend", "-no-progress", "-all-root", "-mkfs-time", str(mkfs_time)] + options
    try:
        result = subprocess.run(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, check=False)
    except FileNotFoundError:
        raise AirgapError("mksquashfs was not found: install squashfs-tools for the enroot destination") from None
    if result.returncode != 0:
        said = result.stdout.decode("utf-8", "replace").strip().splitlines()
        raise AirgapError(f"mksquashfs {' '.join(options)} failed for {output} (exit {result.returncode}): "
                          f"{shorten(' '.join(said[-3:]) or 'no output')}; check enroot.squash_options and the free space")


# The destination ---------------------------------------------------------------------------------------------

class EnrootDestination:
    """enroot squashfs images under a directory: ``<dir>/nvidia+pytorch+24.01-py3.sqsh``."""

    kind = "enroot"
    needs_content = True
    platforms = [PLATFORM]

    def __init__(self, spec: dict[str, Any]) -> None:
        self.dir = os.path.abspath(spec["dir"])
        text = DEFAULT_SQUASH_OPTIONS if spec.get("squash_options") is None else spec["squash_options"]
        try:
            self.options = shlex.split(text)
        except ValueError as exc:
            raise ConfigError(f"invalid enroot.squash_options {text!r}: {exc}") from None
        self._swept = False

    def target(self, image: SourceImage) -> str:
        return os.path.join(self.dir, sqsh_name(image.ref.repository, image.ref.tag or image.ref.digest))

    def plan(self, image: SourceImage, found: Any, ctx: PlanContext) -> Step:
        path = self.target(image)
        recorded = ctx.store.destination(image.key, f"{self.kind}:{path}")
        have, why = None, "missing"
        if recorded:
            try:
                size = os.stat(path).st_size
            except OSError:
                size = None
            options = " ".join(self.options)
            if size is not None and size != recorded.get("size"):
                why = "the file is not the one recorded"
            elif size is not None and recorded.get("squash_options", options) != options:
                why = f"written with squash_options {recorded.get('squash_options')!r}, enroot.squash_options is {options!r}"
            elif size is not None:
                have = recorded.get("digest")
        return ctx.step(self.kind, path, found.digest, have, why)

    def sweep(self) -> None:
        """Remove the staging directories of runs that died (the run holds the lock on the directory)."""
        if self._swept:
            return
        self._swept = True
        for entry in os.listdir(self.dir) if os.path.isdir(self.dir) else []:
            pid = entry[len(STAGING_PREFIX):].split("-", 1)[0]
            if entry.startswith(STAGING_PREFIX) and pid.isdigit() and int(pid) != os.getpid() and not pid_alive(int(pid)):
                shutil.rmtree(os.path.join(self.dir, entry), ignore_errors=True)

    def begin(self, image: SourceImage, content: ImageContent, step: Step) -> _EnrootWrite:
        try:
            os.makedirs(self.dir, exist_ok=True)
            self.sweep()
            staging = tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{os.getpid()}-", dir=self.dir)
        except OSError as exc:
            raise os_error(exc, "creating the staging directory in", self.dir) from None
        _entries, manifests, _raw = content.selection(self.platforms)
        return _EnrootWrite(self, content, manifests[0], staging)

    def close(self) -> None:
        """Nothing is held open."""


class _Spool:
    """One blob spooled to a file of the staging directory; the reader checked its digest before close()."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.handle = open(path, "wb")  # pylint: disable=consider-using-with

    def write(self, data: bytes) -> None:
        self.handle.write(data)

    def close(self) -> None:
        self.handle.close()

    def abort(self) -> None:
        self.handle.close()
        remove_quietly(self.path)


class _EnrootWrite(Write):
    def __init__(self, dest: EnrootDestination, content: ImageContent, manifest: Manifest, staging: str) -> None:
        super().__init__()
        self.dest, self.content, self.manifest, self.staging = dest, content, manifest, staging
        self.config = manifest.data["config"]
        self.layers = [layer for layer in manifest.data.get("layers") or [] if isinstance(layer, dict) and layer.get("digest")]
        self.blobs = {b["digest"]: int(b.get("size") or 0) for b in [self.config] + self.layers}
        self.temp: str | None = None
        os.mkdir(os.path.join(staging, "blobs"))

    def _blob(self, digest: str) -> str:
        return os.path.join(self.staging, "blobs", digest.replace(":", "-"))

    def sink(self, digest: str, size: int) -> Any:
        return _Spool(self._blob(digest)) if digest in self.blobs else None

    def commit(self, image: SourceImage, store: StateStore, step: Step, source_digest: str) -> str:
        path, top = step.target, self.content.top
        directory, name = os.path.split(path)
        try:
            with open(self._blob(self.config["digest"]), "rb") as handle:
                config = json.loads(handle.read().decode("utf-8"))
            if not isinstance(config, dict):
                raise ValueError("not a JSON object")
        except (UnicodeDecodeError, ValueError) as exc:
            raise AirgapError(f"the config {self.config['digest']} of {image.ref} is not an image config ({exc})") from None
        rootfs = Rootfs(os.path.join(self.staging, "rootfs"))
        os.mkdir(rootfs.root, 0o755)
        for index, layer in enumerate(self.layers):
            try:
                rootfs.apply(self._blob(layer["digest"]))
            except (tarfile.TarError, EOFError, OSError) as exc:
                raise AirgapError(f"cannot apply layer {index + 1} ({layer['digest']}) of {image.ref}: "
                                  f"{getattr(exc, 'strerror', None) or exc}") from None
        rootfs.configure(config)
        fd, self.temp = tempfile.mkstemp(prefix=partial_name(name) + ".", dir=directory)
        os.close(fd)
        register_live(self.temp)
        squash(rootfs.root, self.temp, self.dest.options, created_time(config))
        os.chmod(self.temp, 0o644)
        size = os.stat(self.temp).st_size
        os.replace(self.temp, path)
        remove_quietly(self.temp)
        self.temp = None
        fsync_dir(directory)
        store.record_destination(image.key, top.digest, step.dest_key, {
            "type": "enroot", "path": path, "size": size, "digest": top.digest, "config_digest": self.config["digest"],
            "squash_options": " ".join(self.dest.options), "platform": PLATFORM if top.is_index else None, "written": utc_now(),
        })
        return top.digest

    def abort(self) -> None:
        """Remove the staging directory and an unfinished image (also after a commit: the staging is not needed)."""
        shutil.rmtree(self.staging, ignore_errors=True)
        if self.temp:
            remove_quietly(self.temp)
            self.temp = None
