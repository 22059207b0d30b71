# Copyright (c) airgap.ngc contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The ngc_mirror role's retention on the far side of the air gap: a newer bundle imported in place of the first prunes
what it no longer holds, and prune with a drop directory of two bundles is refused before anything is imported.

A file of its own beside test_role_prune (whose role runs follow one another), so that a parallel run can give it to
the other worker.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.integration.test_role_prune import NEW, OLD, OTHER, PLAYBOOK, RoleRun, archive, role_vars


def test_far_side_prunes_what_the_newer_bundle_no_longer_holds(ansible: Any, testbed: Any, tmp_path: Path) -> None:
    """The far side imports one bundle, then the next one in its place (without 24.01-py3): prune removes that
    archive there too, and the summary shows it under the bundle it imported."""
    for name, images in (("2026-01", [OLD, OTHER]), ("2026-02", [NEW, OTHER])):
        export = ansible.module(
            "ngc_image_mirror",
            {
                "registry_url": testbed.source_registry_url,
                "images": images,
                "facts_file": str(tmp_path / f"export-{name}.fact"),
                "bundle": {"dir": str(tmp_path / "carried" / name)},
            },
            api_key=testbed.api_key,
        )
        assert export.rc == 0, export.stdout
    playbook = tmp_path / "role.yml"
    playbook.write_text(PLAYBOOK)
    far = tmp_path / "far"

    def apply(bundle: str) -> RoleRun:
        values = role_vars(
            far,
            ngc_mirror_source="bundle",
            ngc_mirror_source_dir=str(tmp_path / "carried" / bundle),
            ngc_mirror_prune=True,
            ngc_mirror_archive={"dir": str(far / "archives")},
            ngc_mirror_api_key="",
        )
        return RoleRun(ansible.playbook(playbook, values))

    first = apply("2026-01")
    assert first.rc == 0, first.output[-6000:]
    size = archive(far, OLD).stat().st_size
    second = apply("2026-02")
    assert second.rc == 0, second.output[-6000:]
    assert not archive(far, OLD).exists() and archive(far, NEW).is_file() and archive(far, OTHER).is_file()
    (removal,) = second.pruned(OLD)
    assert (removal["action"], removal["bytes"]) == ("removed", size) and second.summary["bytes_freed"] == size
    (source,) = second.summary["sources"]
    assert [r["target"] for r in source["pruned"]] == [str(archive(far, OLD))]
    text = "\n".join(second.lines)
    assert "prune    1 removed, 0 kept" in text and f"  pruned   archive {archive(far, OLD)}" in text, text


def test_far_side_prune_refuses_a_drop_directory_of_several_bundles(ansible: Any, tmp_path: Path) -> None:
    """Each bundle is imported by a call of its own: pruning after one would remove what the others brought."""
    drop = tmp_path / "drop"
    for name in ("2026-04-pytorch", "2026-05-cuda"):
        (drop / name).mkdir(parents=True)
        (drop / name / "index.json").write_text('{"schemaVersion": 2, "manifests": []}\n')
    playbook = tmp_path / "role.yml"
    playbook.write_text(PLAYBOOK)
    values = role_vars(
        tmp_path,
        ngc_mirror_source="bundle",
        ngc_mirror_source_dir=str(drop),
        ngc_mirror_prune=True,
        ngc_mirror_archive={"dir": str(tmp_path / "archives")},
        ngc_mirror_api_key="",
    )
    run = RoleRun(ansible.playbook(playbook, values))
    assert run.rc != 0
    message = "\n".join(str(m) for m in run.failures)
    for expected in ("ngc_mirror_prune", "2 bundles", "2026-04-pytorch", "2026-05-cuda", "Nothing was imported"):
        assert expected in message, message
    assert not (tmp_path / "archives").exists()
    assert not (tmp_path / "etc/ansible/facts.d/ngc_mirror.fact").exists()
