# Copyright (c) airgap.ngc contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private: sizes as people read them, the one way the collection prints bytes. Not a public API."""

from __future__ import annotations

import math
from typing import Any

_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")


def size_text(size: Any) -> str:
    """``1.5 GiB``, ``300 MiB``, ``12 KiB``, ``80 B``, ``0 B``: powers of 1024, three significant figures at most.

    A value that is not a number of bytes (None, a word) is ``unknown size``, never an exception.
    """
    try:
        value = float(size)
    except (TypeError, ValueError):
        return "unknown size"
    if not math.isfinite(value):  # NaN and infinities are no size
        return "unknown size"
    for unit in _UNITS:
        if abs(value) < 1024 or unit == _UNITS[-1]:
            if unit == "B":
                return f"{value:.0f} B"
            return f"{value:.0f} {unit}" if abs(value) >= 100 else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")  # pragma: no cover
