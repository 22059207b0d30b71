# Copyright (c) airgap.ngc contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private: disk space before writing. Not a public API.

Each destination that writes files says, per image, what it will need under its directory (``space_needed``):
bytes that stay (archives, bundle blobs, the finished files) and bytes needed only while the image is written
(a flattened image's staging). The run adds up what stays and the largest of the rest for each filesystem, and
compares it, with a margin, with what that filesystem has free, before anything is written. A destination whose
filesystem is short writes nothing; the others go ahead.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from ansible_collections.airgap.ngc.plugins.module_utils._types.sizes import size_text


MARGIN_SHARE = 0.02  # of the filesystem's size kept free beyond the need, at most MARGIN_CAP
MARGIN_CAP = 1 << 30


@dataclass
class SpaceNeed:
    """What one destination will write for one run, under ``directory``."""

    option: str
    directory: str
    lasting: int = 0
    transient: int = 0
    images: int = 0

    def add(self, lasting: int, transient: int = 0) -> None:
        self.lasting += lasting
        self.transient = max(self.transient, transient)
        self.images += 1


@dataclass
class _Filesystem:
    needs: list[SpaceNeed] = field(default_factory=list)
    free: int = 0
    size: int = 0


def _existing(directory: str) -> str:
    path = os.path.abspath(directory)
    while not os.path.exists(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    return path


def space_report(needs: list[SpaceNeed]) -> list[dict[str, Any]]:
    """One entry per filesystem written to: the directories, the bytes needed, the margin kept and what is free."""
    filesystems: dict[int, _Filesystem] = {}
    for need in needs:
        if not need.images:
            continue
        path = _existing(need.directory)
        stat = os.statvfs(path)
        entry = filesystems.setdefault(
            os.stat(path).st_dev, _Filesystem(free=stat.f_bavail * stat.f_frsize, size=stat.f_blocks * stat.f_frsize)
        )
        entry.needs.append(need)
    report = []
    for entry in filesystems.values():
        needed = sum(n.lasting for n in entry.needs) + max(n.transient for n in entry.needs)
        margin = min(int(entry.size * MARGIN_SHARE), MARGIN_CAP)
        report.append(
            {
                "dirs": [n.directory for n in entry.needs],
                "options": [n.option for n in entry.needs],
                "images": sum(n.images for n in entry.needs),
                "needed": needed,
                "margin": margin,
                "free": entry.free,
                "enough": needed + margin <= entry.free,
            }
        )
    return report


def space_shortfalls(report: list[dict[str, Any]]) -> dict[str, str]:
    """For each option (``archive.dir``...) whose filesystem cannot take what the run would write there: why, in one
    line. The other destinations go ahead: each destination fails alone."""
    short: dict[str, str] = {}
    for entry in report:
        if entry["enough"]:
            continue
        where = " and ".join(f"{option} {directory}" for option, directory in zip(entry["options"], entry["dirs"]))
        message = (
            f"not enough disk space, so nothing was written to {where}: {size_text(entry['needed'])} needed for "
            f"{entry['images']} image write(s) (and {size_text(entry['margin'])} kept free), but {size_text(entry['free'])} "
            "is free there. Free space or choose another directory, or select fewer images"
        )
        for option in entry["options"]:
            short[option] = message
    return short
