# Copyright (c) airgap.ngc contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Nothing is written or removed outside a destination's directory, not even through a symbolic link inside it."""

from __future__ import annotations

from pathlib import Path

import pytest

from ansible_collections.airgap.ngc.plugins.module_utils._types.errors import AirgapError
from ansible_collections.airgap.ngc.plugins.module_utils._formats.files import safe_path
from ansible_collections.airgap.ngc.plugins.module_utils._formats.files import remove_recorded_file


@pytest.fixture
def layout(tmp_path: Path) -> tuple[Path, Path]:
    """``archives/nvidia/link`` points at ``outside``, which holds ``victim``."""
    top, outside = tmp_path / "archives", tmp_path / "outside"
    (top / "nvidia").mkdir(parents=True)
    outside.mkdir()
    (outside / "victim").write_bytes(b"precious")
    (top / "nvidia" / "link").symlink_to(outside)
    return top, outside


def test_a_path_through_a_link_out_of_the_directory_is_refused_naming_it(layout: tuple[Path, Path]) -> None:
    top, outside = layout
    with pytest.raises(
        AirgapError,
        match=r"refused to touch the archive .*/nvidia/link/victim: it is not inside .*archives "
        r"\(it resolves to .*/outside/victim",
    ):
        safe_path(str(top), str(top / "nvidia" / "link" / "victim"), "archive")
    for bad in (top / ".." / "outside" / "victim", top, Path("/etc/passwd")):
        with pytest.raises(AirgapError, match="is not inside"):
            safe_path(str(top), str(bad))


def test_paths_inside_are_given_back_even_before_they_exist(layout: tuple[Path, Path], tmp_path: Path) -> None:
    top, _outside = layout
    assert safe_path(str(top), str(top / "nvidia" / "pytorch" / "24.01-py3.tar")) == str(
        top / "nvidia" / "pytorch" / "24.01-py3.tar"
    )
    (top / "nvidia" / "inner").symlink_to(top / "nvidia")  # a link that stays inside is no way out
    assert safe_path(str(top), str(top / "nvidia" / "inner" / "x.tar")) == str(top / "nvidia" / "inner" / "x.tar")
    alias = tmp_path / "alias"
    alias.symlink_to(top)  # the operator may name the directory through a link of their own
    assert safe_path(str(alias), str(alias / "nvidia" / "x.tar")) == str(alias / "nvidia" / "x.tar")


def test_prune_leaves_a_file_reached_through_a_link_out_of_its_directory(layout: tuple[Path, Path]) -> None:
    top, outside = layout
    record = {"path": str(top / "nvidia" / "link" / "victim"), "size": len(b"precious")}
    for check_mode in (True, False):
        action, reason, freed = remove_recorded_file(record, str(top), check_mode)
        assert (action, freed) == ("kept", 0)
        assert str(top / "nvidia" / "link" / "victim") in reason and "left alone" in reason
    assert (outside / "victim").read_bytes() == b"precious"
    assert (top / "nvidia" / "link").is_symlink()
