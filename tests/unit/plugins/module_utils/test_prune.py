# Copyright (c) airgap.ngc contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""keep: the newest N tags of each repository the run selects, by version order; and removing a recorded file."""

from __future__ import annotations

from pathlib import Path

from ansible_collections.airgap.ngc.plugins.module_utils._types.plan import requested_images
from ansible_collections.airgap.ngc.plugins.module_utils._copy.prune import keep_newest
from ansible_collections.airgap.ngc.plugins.module_utils._formats.files import remove_recorded_file


def keys(images: list) -> list[str]:
    return [image.key for image in images]


def test_keep_counts_selected_and_recorded_tags_of_selected_repositories() -> None:
    selected = requested_images(
        ["nvcr.io/nvidia/pytorch:24.10-py3", "nvcr.io/nvidia/pytorch:24.02-py3", "nvcr.io/nvidia/cuda:12.2.0"]
    )
    recorded = [
        "nvcr.io/nvidia/pytorch:24.09-py3",
        "nvcr.io/nvidia/pytorch:23.12-py3",
        "nvcr.io/nvidia/tritonserver:24.01-py3",
    ]
    wanted, kept = keep_newest(selected, recorded, 2)
    assert keys(wanted) == [
        "nvcr.io/nvidia/pytorch:24.10-py3",
        "nvcr.io/nvidia/cuda:12.2.0",
    ]  # 24.10 > 24.09 > 24.02 as numbers
    assert kept == {
        "nvcr.io/nvidia/pytorch:24.10-py3",
        "nvcr.io/nvidia/pytorch:24.09-py3",
        "nvcr.io/nvidia/cuda:12.2.0",
    }
    assert keep_newest(selected, recorded, None) == (selected, set(keys(selected)))


def test_a_recorded_file_is_removed_only_if_it_is_the_one_written(tmp_path: Path) -> None:
    top = tmp_path / "archives"
    path = top / "nvidia" / "pytorch" / "24.01-py3.tar"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"x" * 10)
    assert remove_recorded_file({"path": str(path), "size": 11}, str(top), False)[0] == "kept"
    assert remove_recorded_file({"path": str(path), "size": 10}, str(top), True) == (
        "would remove",
        f"remove {path}",
        10,
    )
    assert path.exists()
    assert remove_recorded_file({"path": str(path), "size": 10}, str(top), False)[0] == "removed"
    assert not (top / "nvidia").exists() and top.is_dir()  # emptied directories go, up to the destination's own
    assert remove_recorded_file({"path": str(path), "size": 10}, str(top), False)[0] == "already gone"
