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
from typing import Any

from ansible_collections.airgap.ngc.plugins.module_utils._types.oci import ImageContent
from ansible_collections.airgap.ngc.plugins.module_utils._types.plan import SourceImage
from ansible_collections.airgap.ngc.plugins.module_utils._formats.layers import (
    Rootfs,
    created_time,
    image_config,
    member_parts,
)
from ansible_collections.airgap.ngc.plugins.module_utils._transports.rootfs import FlattenedDestination

DEFAULT_SQUASH_OPTIONS = "-comp lzo -noD"  # enroot's ENROOT_SQUASH_OPTIONS
RC_LOCAL = (
    "# This file is sourced by /etc/rc when the container starts.\n"
    "# It can be used to manipulate the entrypoint or the command of the container.\n"
)


def sqsh_name(repository: str, tag: str | None) -> str:
    """The file enroot names an import: ``nvidia/pytorch:24.01-py3`` -> ``nvidia+pytorch+24.01-py3.sqsh``."""
    return (f"{repository}:{tag}" if tag else repository).replace("/", "+").replace(":", "+") + ".sqsh"


# The texts of enroot's docker::configure (src/docker.sh) -----------------------------------------------------


def _jq_values(value: Any) -> list[str]:
    """What ``jq -r '(X[])? // empty'`` prints for X: the array's items but null and false, strings raw."""
    if not isinstance(value, list):
        return []
    return [
        v if isinstance(v, str) else json.dumps(v, separators=(",", ":"))
        for v in value
        if v is not None and v is not False
    ]


def _lines(values: list[str]) -> list[str]:
    """The array ``readarray -t`` makes of those values printed one a line."""
    return [line for v in values for line in v.split("\n")]


def _printable(char: str) -> bool:
    return 0x20 <= ord(char) < 0x7F if ord(char) < 0x80 else char.isprintable()


_ANSIC = {
    "\x1b": "\\E",
    "\a": "\\a",
    "\v": "\\v",
    "\b": "\\b",
    "\f": "\\f",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
    "\\": "\\\\",
    "'": "\\'",
}


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
    conf = image_config(config)
    volumes = conf.get("Volumes")
    volumes = volumes if isinstance(volumes, dict) else {}
    labels = conf.get("Labels")
    labels = labels if isinstance(labels, dict) else {}
    rc = "".join(
        f"# {k} {v if isinstance(v, str) else json.dumps(v, separators=(',', ':'))}\n" for k, v in labels.items()
    )
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
    rc += (
        f'mkdir -p "{workdir}" 2> /dev/null\n'
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
        "fi\n"
    )
    return {
        "etc/fstab": "".join(
            f"${{ENROOT_ROOTFS}}{k} {k} none x-create=dir,bind,rw,nosuid,nodev\n" for k in sorted(volumes)
        ),
        "etc/environment": "".join(f"{line}\n" for line in _jq_values(conf.get("Env"))),
        "etc/rc": rc,
        "etc/rc.local": RC_LOCAL,
        "workdir": workdir,
    }


# The destination ---------------------------------------------------------------------------------------------


class EnrootDestination(FlattenedDestination):
    """enroot squashfs images under a directory: ``<dir>/nvidia+pytorch+24.01-py3.sqsh``."""

    kind = "enroot"
    default_options = DEFAULT_SQUASH_OPTIONS
    collision_hint = "their enroot names are the same"

    def target(self, image: SourceImage) -> str:
        return os.path.join(self.dir, sqsh_name(image.ref.repository, image.ref.tag or image.ref.digest))

    def configure(self, rootfs: Rootfs, config: dict[str, Any], image: SourceImage, content: ImageContent) -> None:
        """Add enroot's files on top; the root, /etc and the working directory are then as enroot's top layer has them."""
        files = enroot_files(config)
        now = created_time(config)
        workdir = member_parts(files.pop("workdir")) or []
        for parts in [["etc"]] + [workdir[: i + 1] for i in range(len(workdir))]:
            rootfs.make_dir(parts, now)
        os.chmod(rootfs.root, 0o755)
        for name, text in files.items():
            rootfs.add_file(name, text, now)
        rootfs.finish(now)
