# Copyright (c) airgap.ngc contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A full disk is said one way wherever a write meets it: what was full, for which file, and what to do."""

from __future__ import annotations

import errno
import os
import re
from pathlib import Path
from typing import Any

import pytest

from ansible_collections.airgap.ngc.plugins.module_utils._copy import copier
from ansible_collections.airgap.ngc.plugins.module_utils._formats import image_archive
from ansible_collections.airgap.ngc.plugins.module_utils._formats.files import atomic_write, os_error
from ansible_collections.airgap.ngc.plugins.module_utils._state.facts import StateStore
from ansible_collections.airgap.ngc.plugins.module_utils._types.errors import AirgapError

ADVICE = "free space there and run again (what was already mirrored is kept)"


def said(text: str, target: str, directory: str) -> bool:
    return (
        re.fullmatch(
            rf"disk full: cannot write {re.escape(target)}: no space left on the filesystem of {re.escape(directory)}; "
            rf"{re.escape(ADVICE)}",
            text,
        )
        is not None
    )


def test_a_file_operation_an_archive_and_the_copier_say_a_full_disk_alike(tmp_path: Path) -> None:
    path = str(tmp_path / "nvidia" / "pytorch" / "24.01.tar")
    full = OSError(errno.ENOSPC, "No space left on device", path)
    assert said(str(os_error(full, "writing blob", path)), path, os.path.dirname(path))
    assert said(str(image_archive._os_error(full, "writing", path)), f"archive {path}", os.path.dirname(path))
    assert said(copier._message(full), path, os.path.dirname(path))


def test_a_whole_file_write_and_the_facts_file_say_a_full_disk_alike(tmp_path: Path, monkeypatch: Any) -> None:
    def full(src: str, dst: str) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    store = StateStore(str(tmp_path / "s.fact")).open()
    store.record_destination("nvcr.io/nvidia/pytorch:24.01", "sha256:" + "a" * 64, "d", {"type": "registry"})
    monkeypatch.setattr(os, "replace", full)
    with pytest.raises(AirgapError) as written:
        atomic_write(str(tmp_path / "README.md"), b"text", what="README")
    assert said(str(written.value), f"the README {tmp_path / 'README.md'}", str(tmp_path))
    with pytest.raises(AirgapError) as compacted:
        store.close()
    assert said(str(compacted.value), f"the state file {tmp_path / 's.fact'}", str(tmp_path))
    journal = str(tmp_path / ".s.fact.journal")
    assert said(
        str(store._write_error(OSError(errno.ENOSPC, "No space left on device"), journal)),
        f"the state file {tmp_path / 's.fact'} (its journal {journal})",
        str(tmp_path),
    )


def test_a_used_up_quota_is_named_as_such(tmp_path: Path) -> None:
    path = str(tmp_path / "x.sqsh")
    assert str(os_error(OSError(errno.EDQUOT, "Disk quota exceeded"), "writing", path)) == (
        f"disk quota exceeded: cannot write {path} in {tmp_path}; {ADVICE}"
    )
