# Copyright (c) airgap.ngc contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The ngc_mirror role's retention: ngc_mirror_keep 1 and ngc_mirror_prune true, archives as the destination.

The role is applied to localhost against the test bed (the NGC catalog stand-in and the token registry), every
path it writes under a directory of its own. The first run mirrors pytorch 24.01-py3 and a cuda tag; then the
selection takes pytorch 24.01-py3 and 24.02-py3, so keep 1 leaves only 24.02-py3 and prune must remove the 24.01
archive. A check-mode run lists that removal and removes nothing; the real run removes exactly that archive,
frees its size (measured here, before), leaves the cuda archive untouched, and the summary says so; skopeo reads
the archive that stays and its config is the source's. A third run prunes nothing. The far side of the air gap is in
test_role_prune_far_side.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_image_mirror import seeded
from tests.integration.test_role_inputs import role_paths

OLD, NEW, OTHER = "nvidia/pytorch:24.01-py3", "nvidia/pytorch:24.02-py3", "nvidia/cuda:12.2.0-base-ubuntu22.04"
FIRST = [
    {"name": "pytorch 24.01", "images": ["pytorch"], "strict_name_match": True, "tag_regex": r"^24\.01-py3$"},
    {"name": "cuda 12.2", "images": ["cuda"], "strict_name_match": True, "tag_regex": r"^12\.2\.0-base-"},
]
# The second selection adds 24.02-py3: with keep 1 the newer tag is the one kept, so 24.01-py3 must go.
LATER = [dict(FIRST[0], name="pytorch 24.01 and 24.02", tag_regex=r"^24\.0[12]-py3$"), FIRST[1]]

PLAYBOOK = """\
- name: Apply airgap.ngc.ngc_mirror
  hosts: localhost
  connection: local
  gather_facts: false
  roles:
    - role: airgap.ngc.ngc_mirror
"""


def role_vars(root: Path, **extra: Any) -> dict[str, Any]:
    """No schedule, no installs, every path the role writes or removes under root."""
    values: dict[str, Any] = {
        "ngc_mirror_install_requirements": False,
        "ngc_mirror_schedule": "none",
        **role_paths(root),
    }
    values.update(extra)
    return values


def archive(root: Path, ref: str) -> Path:
    return root / "archives" / f"{ref.replace(':', '/')}.tar"


class RoleRun:
    """One ansible-playbook run of the role: its exit code, output, ngc_mirror_summary and the summary's lines."""

    def __init__(self, run: Any) -> None:
        self.rc, self.output = run.rc, run.stdout + run.stderr
        facts = [
            r["ansible_facts"]["ngc_mirror_summary"]
            for r in run.results
            if isinstance(r.get("ansible_facts"), dict) and "ngc_mirror_summary" in r["ansible_facts"]
        ]
        self.summary: dict[str, Any] = facts[-1] if facts else {}
        shown = [
            r["msg"]
            for r in run.results
            if isinstance(r.get("msg"), list) and r["msg"] and str(r["msg"][0]).startswith(("NGC mirror", "NGC import"))
        ]
        self.lines: list[str] = shown[-1] if shown else []
        decoder = json.JSONDecoder()
        self.failures = [
            decoder.raw_decode(run.stdout, m.end())[0].get("msg", "")
            for m in re.finditer(r"^\S+ \| FAILED! => ", run.stdout, re.MULTILINE)
        ]

    def pruned(self, ref: str) -> list[dict[str, Any]]:
        return [r for r in self.summary.get("pruned", []) if r["image"].endswith("/" + ref)]


@pytest.fixture(scope="module")
def runs(ansible: Any, testbed: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("role-prune")
    playbook = root / "role.yml"
    playbook.write_text(PLAYBOOK)
    common = {
        "ngc_mirror_api_url": testbed.ngc_api_url,
        "ngc_mirror_source_registry_url": testbed.source_registry_url,
        "ngc_mirror_archive": {"dir": str(root / "archives")},
        "ngc_mirror_keep": 1,
        "ngc_mirror_prune": True,
    }
    env = {"NGC_API_KEY": testbed.api_key}  # the role's default ngc_mirror_api_key reads it on the controller

    def apply(selections: list[dict[str, Any]], check: bool = False) -> RoleRun:
        values = role_vars(root, ngc_mirror_selections=selections, **common)
        return RoleRun(ansible.playbook(playbook, values, check=check, env=env))

    def archives() -> list[str]:
        return sorted(str(p.relative_to(root / "archives")) for p in (root / "archives").rglob("*") if p.is_file())

    first = apply(FIRST)
    assert first.rc == 0, first.output[-6000:]
    after_first = archives()
    before = {ref: archive(root, ref).stat() for ref in (OLD, OTHER)}
    check = apply(LATER, check=True)
    after_check = archives()
    second = apply(LATER)
    third = apply(LATER)
    return {
        "root": root,
        "first": first,
        "check": check,
        "second": second,
        "third": third,
        "before": before,
        "after_first": after_first,
        "after_check": after_check,
        "after_third": archives(),
    }


def test_first_run_mirrors_the_selection_and_prunes_nothing(runs: dict[str, Any]) -> None:
    first = runs["first"]
    assert runs["after_first"] == sorted(f"{ref.replace(':', '/')}.tar" for ref in (OLD, OTHER)), first.output[-6000:]
    assert first.summary["pruned"] == [] and first.summary["bytes_freed"] == 0
    assert any(line.startswith("prune    0 removed, 0 kept") for line in first.lines), first.lines


def test_check_mode_lists_the_removal_and_removes_nothing(runs: dict[str, Any]) -> None:
    check, root = runs["check"], runs["root"]
    assert check.rc == 0, check.output[-6000:]
    assert check.summary["check_mode"] is True
    (removal,) = check.pruned(OLD)
    assert removal["kind"] == "archive" and removal["action"] == "would remove"
    assert removal["target"] == str(archive(root, OLD))
    assert check.summary["bytes_freed"] == runs["before"][OLD].st_size
    assert f"to prune archive {archive(root, OLD)}" in "\n".join(check.lines), check.lines
    assert runs["after_check"] == runs["after_first"]


def test_prune_removes_the_archive_keep_drops_and_the_summary_says_so(runs: dict[str, Any], testbed: Any) -> None:
    second, root = runs["second"], runs["root"]
    assert second.rc == 0, second.output[-6000:]
    # The filesystem: the 24.01 archive is gone, 24.02 is there, cuda's is the very file written by the first run.
    assert not archive(root, OLD).exists()
    assert archive(root, NEW).is_file()
    kept = archive(root, OTHER).stat()
    assert (kept.st_ino, kept.st_mtime_ns) == (runs["before"][OTHER].st_ino, runs["before"][OTHER].st_mtime_ns)
    # The summary: one removal, the bytes the file held, and 24.01 reported as not kept rather than copied.
    summary = second.summary
    (removal,) = second.pruned(OLD)
    assert (removal["kind"], removal["action"], removal["target"]) == ("archive", "removed", str(archive(root, OLD)))
    assert removal["bytes"] == runs["before"][OLD].st_size == summary["bytes_freed"]
    assert [r for r in summary["pruned"] if r["action"] != "kept" and r is not removal] == []
    assert [ref.split("/", 1)[1] for ref in summary["not_kept"]] == [OLD]
    assert [ref.split("/", 1)[1] for ref in summary["copied"]] == [NEW]
    text = "\n".join(second.lines)
    assert "prune    1 removed, 0 kept" in text, text
    assert f"pruned   archive {archive(root, OLD)}" in text, text
    assert f"not kept {summary['not_kept'][0]}: older than the newest 1" in text, text
    # The facts file forgets what was removed.
    facts = json.loads((root / "etc/ansible/facts.d/ngc_mirror.fact").read_text())
    assert not any(key.endswith("/" + OLD) for key in facts["images"]), sorted(facts["images"])
    # skopeo reads the archive that stays, and its config is the one seeded in the source registry.
    config = subprocess.run(
        ["skopeo", "inspect", "--raw", "--config", f"docker-archive:{archive(root, NEW)}"],
        capture_output=True,
        check=True,
    ).stdout
    assert "sha256:" + hashlib.sha256(config).hexdigest() == seeded(testbed)[NEW]["manifests"][0]["config_digest"]


def test_a_third_run_prunes_nothing_more(runs: dict[str, Any]) -> None:
    third = runs["third"]
    assert third.rc == 0, third.output[-6000:]
    assert [r for r in third.summary["pruned"] if r["action"] != "kept"] == []
    assert third.summary["copied"] == [] and third.summary["bytes_freed"] == 0
    assert runs["after_third"] == sorted(f"{ref.replace(':', '/')}.tar" for ref in (NEW, OTHER))
