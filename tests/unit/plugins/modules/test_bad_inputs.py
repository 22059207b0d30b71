# Copyright (c) airgap.ngc contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Every row of the bad-input table (bad_input_cases.py) through the module's own entry point: the argument spec and
the validators fail it with a one-line message naming the option and the value, no secret in the result, no
connection opened, and nothing an earlier run wrote changed. The integration test runs a batch of the same rows
through Ansible against the test bed (request counters, the registry's digests)."""

from __future__ import annotations

import io
import json
import socket
import tarfile
from pathlib import Path
from typing import Any

import pytest

from ansible.module_utils.testing import patch_module_args

from ansible_collections.airgap.ngc.plugins.modules import ngc_catalog_info, ngc_image_mirror
from ansible_collections.airgap.ngc.tests.unit.plugins.modules.bad_input_cases import (
    C,
    CASES,
    IMAGES,
    M,
    PASSWORD,
    URL_PASSWORD,
    Case,
    call_args,
    fill,
    good_calls,
)

MODULES = {M: ngc_image_mirror, C: ngc_catalog_info}
KEY = "unit-key-SECRET-7c1d"


def tiny_tar() -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        data = b"[]"
        member = tarfile.TarInfo("manifest.json")
        member.size = len(data)
        tar.addfile(member, io.BytesIO(data))
    return buffer.getvalue()


@pytest.fixture
def places(tmp_path: Path) -> dict[str, str]:
    """What a good run leaves behind: an archive per image, a facts file, a finished progress file; and notes.txt."""
    archive, facts, progress = tmp_path / "archives", tmp_path / "facts" / "ngc_mirror.fact", tmp_path / "progress.json"
    for ref in IMAGES:
        path = archive / f"{ref.replace(':', '/')}.tar"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(tiny_tar())
    facts.parent.mkdir()
    facts.write_text(json.dumps({"images": {}}))
    progress.write_text(
        json.dumps({"state": "done", "images_done": 2, "images_total": 2, "bytes_done": 0, "bytes_total": 0})
    )
    (tmp_path / "notes.txt").write_text("notes that are not a certificate, nor a progress file\n")
    return {
        "proxy": "http://127.0.0.1:9",
        "open": "http://127.0.0.1:5000",
        "ngc": "http://127.0.0.1:8",
        "ns": "bad-inputs",
        "archive": str(archive),
        "facts": str(facts),
        "progress": str(progress),
        "tmp": str(tmp_path),
        "key": KEY,
    }


@pytest.fixture
def connections(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every connection a module tries to open (refused): a bad input must be turned away before any."""
    tried: list[Any] = []

    def refuse(self: socket.socket, address: Any) -> None:
        tried.append(address)
        raise ConnectionRefusedError(f"test: no connection allowed to {address}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    return tried


def tree(root: Path) -> list[tuple[str, bytes | None, int]]:
    return sorted(
        (str(p.relative_to(root)), p.read_bytes() if p.is_file() else None, p.stat().st_mtime_ns)
        for p in root.rglob("*")
    )


def test_the_table_covers_both_modules() -> None:
    assert len(CASES) >= 60
    assert len({case.id for case in CASES}) == len(CASES)
    assert {case.module for case in CASES} == {M, C}


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input_fails_at_the_door(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    places: dict[str, str],
    connections: list[Any],
    case: Case,
) -> None:
    before = tree(tmp_path)
    monkeypatch.setenv("NGC_API_KEY", fill(case.api_key, places))
    with patch_module_args(dict(call_args(case, good_calls(places), places), _ansible_check_mode=case.check)):
        with pytest.raises(SystemExit):
            MODULES[case.module].main()
    result = json.loads(capsys.readouterr().out)
    assert result["failed"] is True, result
    msg = result["msg"]
    for expected in case.expect:
        assert fill(expected, places) in msg, msg
    assert "\n" not in msg.strip(), msg
    for word in ("Traceback", "Module failed", "MODULE FAILURE"):
        assert word not in msg, msg
    # The module echoes its options under `invocation` (Ansible drops it below -vvv, and masks the no_log ones): a
    # password put in a URL is the operator's own text there; nothing else the module returns may repeat it.
    shown = json.dumps({k: v for k, v in result.items() if k != "invocation"})
    for secret in (KEY, PASSWORD, URL_PASSWORD):
        assert secret not in shown
    for secret in (KEY, PASSWORD):
        assert secret not in json.dumps(result)
    assert connections == []
    assert tree(tmp_path) == before
