# Copyright (c) airgap.ngc contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Sizes print one way everywhere: powers of 1024 with their unit, zero as ``0 B``, never raw bytes."""

from __future__ import annotations

import pytest

from ansible_collections.airgap.ngc.plugins.filter.size_text import FilterModule
from ansible_collections.airgap.ngc.plugins.module_utils._types.sizes import size_text


@pytest.mark.parametrize(
    "size, text",
    [
        (0, "0 B"),
        (80, "80 B"),
        (1023, "1023 B"),
        (1024, "1.0 KiB"),
        (1536, "1.5 KiB"),
        (300 * 1024**2, "300 MiB"),
        (int(1.5 * 1024**3), "1.5 GiB"),
        (5 * 1024**4, "5.0 TiB"),
        (3 * 1024**5, "3.0 PiB"),
        ("2048", "2.0 KiB"),
    ],
)
def test_a_size_has_its_unit(size: object, text: str) -> None:
    assert size_text(size) == text


@pytest.mark.parametrize("value", [None, "many", float("nan"), float("inf")])
def test_what_is_not_a_size_says_so_instead_of_failing(value: object) -> None:
    assert size_text(value) == "unknown size"


def test_the_filter_is_the_same_helper() -> None:
    assert FilterModule().filters()["size_text"] is size_text
