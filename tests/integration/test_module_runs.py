# Copyright (c) airgap.ngc contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Each module through the real ``ansible`` ad hoc (AnsiballZ packs the module_utils layer sub-packages), and the same
call through the tests' fast path (the module file alone): both show the operator the same thing."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Callable

import pytest

Args = Callable[[Any, Path], dict[str, Any]]

CASES: dict[str, tuple[str, Args, bool]] = {
    "a listing with a warning": (
        "ngc_catalog_info",
        lambda bed, tmp: {
            "source": "registry",
            "registry_url": bed.source_registry_url,
            "teams": ["nosuchteam"],
            "allow_empty": True,
        },
        False,
    ),
    "a listing": (
        "ngc_catalog_info",
        lambda bed, tmp: {
            "api_url": bed.ngc_api_url,
            "registry_url": bed.source_registry_url,
            "images": ["pytorch"],
            "latest": 1,
        },
        False,
    ),
    "an unknown option": (
        "ngc_catalog_info",
        lambda bed, tmp: {"api_url": bed.ngc_api_url, "imagez": ["pytorch"]},
        False,
    ),
    "a copy planned in check mode": (
        "ngc_image_mirror",
        lambda bed, tmp: {
            "registry_url": bed.source_registry_url,
            "images": ["nvidia/pytorch:24.02-py3"],
            "facts_file": str(tmp / "m.fact"),
            "archive": {"dir": str(tmp / "archives")},
        },
        True,
    ),
    "a copy": (
        "ngc_image_mirror",
        lambda bed, tmp: {
            "registry_url": bed.source_registry_url,
            "images": ["nvidia/pytorch:24.02-py3"],
            "facts_file": str(tmp / "c.fact"),
            "archive": {"dir": str(tmp / "copied")},
        },
        False,
    ),
    "a bad destination": (
        "ngc_image_mirror",
        lambda bed, tmp: {
            "registry_url": bed.source_registry_url,
            "images": ["nvidia/pytorch:24.02-py3"],
            "archive": {"dir": "/"},
        },
        False,
    ),
}
# What differs from one run to the next whichever way it runs (times, the free space of a disk others write to).
VARYING = re.compile(r"seconds|elapsed|duration|_at$|^started|^finished|free|available")


def comparable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: "<varies>" if VARYING.search(k) else comparable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [comparable(v) for v in value]
    return value


def shown(run: Any) -> tuple[list[str], list[str]]:
    """The status lines and the warnings the operator sees."""
    output = run.stdout + run.stderr
    return re.findall(r"^localhost \| [A-Z]+!? =>|^\[ERROR\]: .*", run.stdout, re.MULTILINE), re.findall(
        r"^\[WARNING\]: .*", output, re.MULTILINE
    )


@pytest.mark.parametrize("case", list(CASES))
def test_the_module_alone_shows_what_ansible_shows(ansible: Any, testbed: Any, tmp_path: Path, case: str) -> None:
    name, args, check = CASES[case]
    real = ansible.module(name, args(testbed, tmp_path / "real"), check=check, api_key=testbed.api_key, controller=True)
    alone = ansible.module(name, args(testbed, tmp_path / "alone"), check=check, api_key=testbed.api_key)
    assert real.results, real.stdout + real.stderr
    assert alone.rc == real.rc, (alone.stdout + alone.stderr, real.stdout + real.stderr)
    assert shown(alone) == shown(real)
    assert bool(shown(real)[1]) == ("warning" in case), real.stderr
    expected = comparable(real.result)
    got = comparable(alone.result)
    if case.startswith("a copy"):  # each run wrote to its own directory
        expected, got = (re.sub(r"/(real|alone)/", "/", json.dumps(r, sort_keys=True)) for r in (expected, got))
    assert got == expected
    assert testbed.api_key not in alone.stdout + alone.stderr + real.stdout + real.stderr
