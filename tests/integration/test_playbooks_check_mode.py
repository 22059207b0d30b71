# Copyright (c) airgap.ngc contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Check mode of the playbooks shows what would be written (not an empty plan) and writes nothing."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

IMAGE = "nvidia/cuda:12.2.0-base-ubuntu22.04"
SELECTION = {"images": ["cuda"], "strict_name_match": True, "tag_regex": r"^12\.2\.0-base-"}


def test_check_mode_of_export_import_and_hpc_cache_lists_what_would_be_written(
    ansible: Any, testbed: Any, tmp_path: Path
) -> None:
    export = {
        "export_api_url": testbed.ngc_api_url,
        "export_registry_url": testbed.source_registry_url,
        "export_selections": [SELECTION],
        "export_facts_file": str(tmp_path / "export.fact"),
        "ngc_mirror_api_key": testbed.api_key,
    }
    planned = ansible.playbook(
        "playbooks/export.yml", dict(export, export_bundle_dir=str(tmp_path / "planned")), check=True
    )
    assert planned.rc == 0, planned.stdout + planned.stderr
    assert "would write (check mode, nothing written)" in planned.stdout and IMAGE in planned.stdout, planned.stdout
    assert not (tmp_path / "planned").exists()
    written = ansible.playbook("playbooks/export.yml", dict(export, export_bundle_dir=str(tmp_path / "bundle")))
    assert written.rc == 0, written.stdout + written.stderr

    ns = f"check-{tmp_path.name[-10:]}".lower().replace("_", "-")
    imported = ansible.playbook(
        "playbooks/import.yml",
        {
            "import_bundle_dir": str(tmp_path / "bundle"),
            "import_facts_file": str(tmp_path / "import.fact"),
            "import_registry": {"url": testbed.open_registry_url, "prefix": ns},
        },
        check=True,
    )
    assert imported.rc == 0, imported.stdout + imported.stderr
    assert (
        "would import (check mode, nothing written)" in imported.stdout
        and IMAGE in imported.stdout.split("would import")[1]
    )
    assert (
        f"pull them as: ['{testbed.open_registry_host}/{ns}/{IMAGE}']" in imported.stdout
    )  # the far-side name, not nvcr.io's
    inspect = subprocess.run(
        ["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{testbed.open_registry_host}/{ns}/{IMAGE}"],
        capture_output=True,
        check=False,
    )
    assert inspect.returncode != 0  # nothing was pushed

    cached = ansible.playbook(
        "playbooks/hpc_cache.yml",
        {
            "hpc_source_dir": str(tmp_path / "bundle"),
            "hpc_enroot_dir": str(tmp_path / "enroot"),
            "hpc_facts_file": str(tmp_path / "hpc.fact"),
        },
        check=True,
    )
    assert cached.rc == 0, cached.stdout + cached.stderr
    assert "would write (check mode, nothing written)" in cached.stdout and "cuda" in cached.stdout
    assert "srun --container-image" not in cached.stdout  # no line for a file that does not exist
    assert not (tmp_path / "enroot").exists()
