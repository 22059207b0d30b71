# Copyright (c) airgap.ngc contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The modules' own plumbing: bad input ends in fail_json with a one-line message, before any network use."""

from __future__ import annotations

import json
from typing import Any

import pytest

from ansible.module_utils.testing import patch_module_args

from ansible_collections.airgap.ngc.plugins.modules import ngc_catalog_info, ngc_image_mirror


def run_module(module: Any, args: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    with patch_module_args(args):
        with pytest.raises(SystemExit):
            module.main()
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize(
    "args, message",
    [
        ({"tag_regex": "py3("}, "invalid tag_regex 'py3('"),
        ({"min_version": "newest"}, "invalid min_version 'newest'"),
        ({"latest": 0}, "invalid latest 0"),
        ({"py_version": "python3"}, "invalid py_version 'python3'"),
    ],
)
def test_catalog_bad_filters(capsys: pytest.CaptureFixture[str], args: dict[str, Any], message: str) -> None:
    result = run_module(ngc_catalog_info, dict(args, api_key="secret-key-1"), capsys)
    assert result["failed"] is True
    assert result["msg"].startswith(message)
    assert "secret-key-1" not in json.dumps(result)


@pytest.mark.parametrize(
    "args, message",
    [
        ({"images": ["nvidia/py torch:1"], "registry": {"url": "http://127.0.0.1:9"}}, "invalid image reference"),
        ({"images": [7], "archive": {"dir": "/nonexistent"}}, "images item 1 is a int"),
        ({"images": ["nvidia/pytorch:1"]}, "one of the following is required: registry, archive, docker"),
    ],
)
def test_mirror_bad_input(
    capsys: pytest.CaptureFixture[str], tmp_path: Any, args: dict[str, Any], message: str
) -> None:
    result = run_module(
        ngc_image_mirror, dict(args, api_key="secret-key-2", facts_file=str(tmp_path / "f.fact")), capsys
    )
    assert result["failed"] is True
    assert message in result["msg"]
    assert "secret-key-2" not in json.dumps(result)
    assert not (tmp_path / "f.fact").exists()
