# Copyright (c) airgap.ngc contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private: carried media (bundles, their volumes, far-side inventories) read as untrusted input. Not a public API.

Whatever arrived on a disk or through a data diode is read through here, by the import and by ``verify`` alike, so
both reach one verdict on it:

- ``open_inside`` opens a file by a path taken from the medium: a plain name inside the medium's directory (no ``..``,
  not absolute, no NUL), every directory on the way and the file itself opened without following a symbolic link, and
  the file a regular one (a FIFO, a device or a symbolic link is refused, naming it).
- ``read_inside`` reads such a file whole, refusing one larger than its kind may be (``MAX_MANIFEST_BYTES`` for a
  manifest, ``RECORD_LIMIT`` for index.json and contents.json).
- ``schema_problem`` checks a parsed document against a small declarative schema and says which key is wrong.
- ``writer_of`` says which run is still writing a bundle (its directory lock, or a temporary file a live process
  holds open).
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import stat
from typing import Any, Callable, Iterator

from ansible_collections.airgap.ngc.plugins.module_utils._types.errors import AirgapError
from ansible_collections.airgap.ngc.plugins.module_utils._types.oci import CHUNK_SIZE
from ansible_collections.airgap.ngc.plugins.module_utils._formats.files import pid_alive

RECORD_LIMIT = 256 * 1024 * 1024
"""The largest index.json, contents.json or inventory read from a carried medium."""

_PARTIAL_RE = re.compile(r"^\..+\.partial-(?P<pid>\d+)(?:\.[A-Za-z0-9_-]+)?$")
_KINDS = (
    (stat.S_ISLNK, "a symbolic link"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISDIR, "a directory"),
)


class CarriedError(AirgapError):
    """A carried medium holds something it must not: a path outside it, a file that is not a regular one, a document
    that does not follow its schema. The message names the file (and the key)."""


class CarriedMissing(CarriedError):
    """A file a carried medium names is not there."""


def plain_name(path: Any) -> bool:
    """True if ``path`` is a relative path inside a directory: no ``..`` or ``.``, not absolute, no NUL or backslash."""
    if not isinstance(path, str) or not path or path.startswith("/") or "\\" in path or "\0" in path:
        return False
    return all(part not in ("", ".", "..") for part in path.split("/"))


def kind_of(mode: int) -> str:
    """What a file of this mode is, in words (``a regular file`` when none of the others)."""
    return next((name for test, name in _KINDS if test(mode)), "a regular file")


def open_inside(root: str, relative: str) -> int:
    """A read-only descriptor of the regular file ``relative`` inside ``root``, reached without a symbolic link.

    ``root`` is the medium's own directory (what the operator named, or a volume found below it). Raises CarriedMissing
    if the file is not there, CarriedError if the path is not a plain name or leads through or to anything but
    directories and a regular file.
    """
    if not plain_name(relative):
        raise CarriedError(
            f"{str(relative)[:200]!r} is not a plain name inside {root}: a carried bundle names only its own files"
        )
    full = os.path.join(root, relative)
    parts = relative.split("/")
    nofollow = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        current = os.open(root, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise CarriedMissing(f"{full} does not exist") from None
    except OSError as exc:
        raise CarriedError(f"cannot open {root}: {exc.strerror or exc}") from None
    try:
        for number, part in enumerate(parts):
            last = number == len(parts) - 1
            here = os.path.join(root, *parts[: number + 1])
            try:
                info = os.stat(part, dir_fd=current, follow_symlinks=False)
            except (FileNotFoundError, NotADirectoryError):
                raise CarriedMissing(f"{full} does not exist") from None
            wanted = stat.S_ISREG(info.st_mode) if last else stat.S_ISDIR(info.st_mode)
            if not wanted:
                raise CarriedError(
                    f"{here} is {kind_of(info.st_mode)}, not {'a regular file' if last else 'a directory'}: "
                    "a carried bundle holds only directories and regular files"
                )
            try:
                opened = os.open(
                    part, nofollow | (os.O_NONBLOCK if last else getattr(os, "O_DIRECTORY", 0)), dir_fd=current
                )
            except OSError as exc:
                why = (
                    "it changed while it was opened"
                    if exc.errno in (errno.ELOOP, errno.ENOTDIR)
                    else exc.strerror or str(exc)
                )
                raise CarriedError(f"cannot read {here}: {why}") from None
            os.close(current)
            current = opened
            now = os.fstat(current)
            if (now.st_dev, now.st_ino) != (info.st_dev, info.st_ino):
                raise CarriedError(f"cannot read {here}: it changed while it was opened")
        os.set_blocking(current, True)
        found, current = current, -1
        return found
    finally:
        if current >= 0:
            os.close(current)


def read_inside(root: str, relative: str, limit: int, what: str) -> bytes:
    """The whole of a carried file (see ``open_inside``), refused if it is larger than ``limit`` bytes."""
    fd = open_inside(root, relative)
    with os.fdopen(fd, "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        if size > limit:
            raise CarriedError(
                f"{os.path.join(root, relative)} has {size} bytes, more than a {what} may have ({limit})"
            )
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise CarriedError(f"{os.path.join(root, relative)} grew past {limit} bytes while it was read: not a {what}")
    return data


def chunks_inside(root: str, relative: str) -> Iterator[bytes]:
    """A carried file's bytes in CHUNK_SIZE pieces (opened at once, so a refused file is reported before any chunk)."""
    handle = os.fdopen(open_inside(root, relative), "rb")

    def chunks() -> Iterator[bytes]:
        with handle:
            while True:
                data = handle.read(CHUNK_SIZE)
                if not data:
                    return
                yield data

    return chunks()


def size_inside(root: str, relative: str) -> int:
    """The size of a carried regular file (see ``open_inside``)."""
    fd = open_inside(root, relative)
    try:
        return os.fstat(fd).st_size
    finally:
        os.close(fd)


def plain_directory(path: str) -> bool:
    """True if ``path`` is a directory, not a symbolic link to one (a volume found inside a medium)."""
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False


# -- schemas -------------------------------------------------------------------------------------------------------------
_NOUNS = {str: "a string", int: "a number", bool: "true/false", dict: "an object", list: "a list"}


class Check:
    """A schema made of a predicate: ``Check(test, "a digest")``."""

    def __init__(self, test: Callable[[Any], bool], description: str) -> None:
        self.test, self.description = test, description

    def problem(self, value: Any, where: str) -> str | None:
        return None if self.test(value) else f"{where} is {describe(value)}, not {self.description}"


class Required:
    """A key an object must have: ``{"digest": Required(DIGEST)}``."""

    def __init__(self, schema: Any) -> None:
        self.schema = schema


class MapOf:
    """An object of any keys (each passing ``key``), each value following ``schema``."""

    def __init__(self, schema: Any, key: Check | None = None) -> None:
        self.schema, self.key = schema, key


def describe(value: Any) -> str:
    """A value in a message: what it is, and the value itself if short."""
    kinds = (
        (bool, "true/false"),
        (int, "a number"),
        (float, "a number"),
        (str, "a string"),
        (list, "a list"),
        (dict, "an object"),
    )
    kind = (
        "null" if value is None else next((name for cls, name in kinds if isinstance(value, cls)), type(value).__name__)
    )
    shown = repr(value) if isinstance(value, (str, int, float, bool)) and len(repr(value)) <= 60 else ""
    return f"{kind} {shown}".rstrip()


def schema_problem(value: Any, schema: Any, where: str) -> str | None:
    """The first way ``value`` breaks ``schema`` (``where`` names it: a file and key), or None.

    A schema is a type (``str``, ``int``: not a bool, ``bool``, ``dict``, ``list``), a ``Check``, a dict of key to
    schema (an object; keys wrapped in ``Required`` must be there, others may be, unknown keys are allowed), a
    one-element list (a list of that), or a ``MapOf``.
    """
    if isinstance(schema, Check):
        return schema.problem(value, where)
    if isinstance(schema, type):
        ok = isinstance(value, schema) and not (schema is int and isinstance(value, bool))
        return None if ok else f"{where} is {describe(value)}, not {_NOUNS.get(schema, schema.__name__)}"
    if isinstance(schema, list):
        if not isinstance(value, list):
            return f"{where} is {describe(value)}, not a list"
        return next(
            (p for i, item in enumerate(value) if (p := schema_problem(item, schema[0], f"{where}[{i}]"))), None
        )
    if not isinstance(value, dict):
        return f"{where} is {describe(value)}, not an object"
    if isinstance(schema, MapOf):
        for key, item in value.items():
            found = schema.key.problem(key, f"a key of {where}") if schema.key else None
            found = found or schema_problem(item, schema.schema, f"{where}[{key!r}]")
            if found:
                return found
        return None
    for key, sub in schema.items():
        required = isinstance(sub, Required)
        if key not in value:
            if required:
                return f"{where} has no {key!r}"
            continue
        found = schema_problem(value[key], sub.schema if required else sub, f"{where}.{key}")
        if found:
            return found
    return None


# -- writers -------------------------------------------------------------------------------------------------------------
def writer_of(directory: str) -> str | None:
    """Who is still writing the bundle in ``directory``, in words, or None: a run holding its directory lock (an
    export takes it for the whole run), or the live process that holds one of its temporary files open
    (``.<name>.partial-<pid>``)."""
    try:
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            fcntl.flock(fd, fcntl.LOCK_UN)
        except OSError as exc:
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                holder = _lock_holder(os.fstat(fd))
                return f"an ngc_image_mirror run{f' (pid {holder})' if holder else ''} holds its lock"
    finally:
        os.close(fd)
    for current, subdirs, files in os.walk(directory):
        subdirs[:] = sorted(d for d in subdirs if d in ("blobs", "parts") or d.startswith(("sha", "vol-")))
        for name in sorted(files):
            match = _PARTIAL_RE.match(name)
            path = os.path.join(current, name)
            if match and int(match.group("pid")) != os.getpid() and _holds_open(int(match.group("pid")), path):
                return f"pid {match.group('pid')} is writing {path}"
    return None


def _holds_open(pid: int, path: str) -> bool:
    """True if process ``pid`` has ``path`` open (Linux /proc). A pid in a temporary file's name alone proves nothing:
    the bundle may come from another host, where that pid was another process."""
    if not pid_alive(pid):
        return False
    try:
        info = os.stat(path, follow_symlinks=False)
        descriptors = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for fd in descriptors:
        try:
            opened = os.stat(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if (opened.st_dev, opened.st_ino) == (info.st_dev, info.st_ino):
            return True
    return False


def _lock_holder(info: os.stat_result) -> str | None:
    """The pid /proc/locks gives for the flock on the file ``info`` describes (Linux), or None."""
    key = f"{os.major(info.st_dev):02x}:{os.minor(info.st_dev):02x}:{info.st_ino}"
    try:
        with open("/proc/locks", encoding="ascii", errors="replace") as handle:
            for line in handle:
                fields = line.split()
                if len(fields) > 5 and fields[1] == "FLOCK" and fields[5] == key:
                    return fields[4] if fields[4] != "0" else None
    except OSError:
        return None
    return None
