# Copyright (c) airgap.ngc contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What the operator reads: the role's and the playbooks' output, with Ansible's default callback.

- The role run with ``--diff`` (and ``-v``) shows each destination's digest before and after, and neither the NGC
  API key nor the registry password; a second run, with nothing to copy, prints sizes people read (``0 B``, never
  ``0.00 Bytes``) and a line per image.
- export.yml prints a line per image; a delta bundle whose image brings nothing new says so ("named only") and names
  the earlier bundle it relies on. Importing that delta where the earlier bundle is missing fails before anything of
  the image is pushed, naming the missing bundle.
- catalog.yml honours its team and tag filters and prints a table whose sizes have units.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.integration.test_operator_paths import ROLE_PLAYBOOK
from tests.integration.test_role_inputs import role_paths

CUDA = "nvidia/cuda:12.2.0-base-ubuntu22.04"
TENSORFLOW = "nvidia/tensorflow:23.12-tf2-py3"
SELECTION = {"name": "CUDA 12.2 base", "images": ["cuda"], "strict_name_match": True, "tag_regex": r"^12\.2\.0-base-"}
DEFAULT_CALLBACK = {"ANSIBLE_STDOUT_CALLBACK": "ansible.builtin.default", "ANSIBLE_CALLBACK_RESULT_FORMAT": "json"}


def run_role(ansible: Any, work: Path, host_vars: dict[str, Any], *flags: str) -> subprocess.CompletedProcess[str]:
    """``ansible-playbook -i INVENTORY role.yml FLAGS`` with the default callback, as an operator runs the role."""
    inventory = work / "inventory.json"
    inventory.write_text(
        json.dumps(
            {
                "all": {
                    "hosts": {
                        "mirror": dict(host_vars, ansible_connection="local", ansible_python_interpreter=sys.executable)
                    }
                }
            }
        )
    )
    inventory.chmod(0o600)
    playbook = work / "role.yml"
    playbook.write_text(ROLE_PLAYBOOK)
    env = dict(ansible.env, **DEFAULT_CALLBACK)
    return subprocess.run(
        [str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(inventory), str(playbook), *flags],
        env=env,
        cwd=work,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )


@pytest.fixture(scope="module")
def role_runs(ansible: Any, testbed: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The role mirrors one image from NGC into the basic-auth registry (its password set), with --diff and -v; then
    again, nothing to copy."""
    work = tmp_path_factory.mktemp("operator-output")
    prefix = f"output-{work.name[-8:]}".lower().replace("_", "-")
    host_vars = dict(
        role_paths(work / "host"),
        ngc_mirror_install_requirements=False,
        ngc_mirror_schedule="none",
        ngc_mirror_api_url=testbed.ngc_api_url,
        ngc_mirror_source_registry_url=testbed.source_registry_url,
        ngc_mirror_api_key=testbed.api_key,
        ngc_mirror_registry_password=testbed.basic_password,
        ngc_mirror_selections=[SELECTION],
        ngc_mirror_registry={"url": testbed.basic_registry_url, "username": testbed.basic_username, "prefix": prefix},
    )
    first = run_role(ansible, work, host_vars, "--diff", "-v")
    again = run_role(ansible, work, host_vars)
    return {"first": first, "again": again, "prefix": prefix, "secrets": (testbed.api_key, testbed.basic_password)}


def test_the_roles_diff_shows_the_digests_written_and_no_secret(
    role_runs: dict[str, Any], testbed: Any, testbed_authfile: Path
) -> None:
    first = role_runs["first"]
    output = first.stdout + first.stderr
    assert first.returncode == 0, output[-6000:]
    copy = output.split(
        "TASK [airgap.ngc.ngc_mirror : Copy the images (and the charts with the images they deploy) to the destinations]"
    )[1].split("TASK [")[0]
    assert "censored" not in copy, copy  # the copy task's result is shown, not hidden by no_log
    target = f"{testbed.basic_registry_host}/{role_runs['prefix']}/{CUDA}"
    # The judge: skopeo reads the digest the registry now serves for the image; the diff shows it as added.
    raw = subprocess.run(
        ["skopeo", "inspect", "--raw", "--tls-verify=false", "--authfile", str(testbed_authfile), f"docker://{target}"],
        capture_output=True,
        check=True,
    ).stdout
    digest = "sha256:" + hashlib.sha256(raw).hexdigest()
    added = [line for line in output.splitlines() if line.startswith("+") and digest in line]
    assert added, output[-6000:]
    assert any(line.startswith("-") and "null" in line and target in line for line in output.splitlines()), output[
        -6000:
    ]
    for run in (first, role_runs["again"]):
        for secret in role_runs["secrets"]:
            assert secret not in run.stdout + run.stderr


def test_a_role_run_with_nothing_to_copy_prints_sizes_people_read_and_each_image(role_runs: dict[str, Any]) -> None:
    again = role_runs["again"]
    assert again.returncode == 0, (again.stdout + again.stderr)[-6000:]
    assert "0.00 Bytes" not in again.stdout and "Bytes" not in again.stdout, again.stdout[-4000:]
    assert "0 B transferred" in again.stdout, again.stdout[-4000:]
    # It prints what it does, not how it checks: one line for each part it skips, one per check, not one per variable.
    print(f"a role run with nothing to copy printed {len(again.stdout.splitlines())} lines")
    assert len(again.stdout.splitlines()) < 150, again.stdout
    assert any(line.split()[0] == "skipped" and line.endswith(CUDA) for line in lines_of(again.stdout)), again.stdout[
        -4000:
    ]


@pytest.fixture(scope="module")
def bundles(ansible: Any, testbed: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """export.yml writes a full bundle (CUDA), then a delta since it (CUDA again and TensorFlow, whose base layers
    are CUDA's): the delta carries TensorFlow's own blobs only."""
    work = tmp_path_factory.mktemp("operator-bundles")
    common = {
        "export_api_url": testbed.ngc_api_url,
        "export_registry_url": testbed.source_registry_url,
        "export_facts_file": str(work / "export.fact"),
        "ngc_mirror_api_key": testbed.api_key,
    }
    full = ansible.playbook(
        "playbooks/export.yml",
        dict(common, export_bundle_dir=str(work / "drop" / "ngc-full"), export_images=[CUDA]),
        env=DEFAULT_CALLBACK,
    )
    delta = ansible.playbook(
        "playbooks/export.yml",
        dict(
            common,
            export_bundle_dir=str(work / "drop" / "ngc-delta"),
            export_images=[CUDA, TENSORFLOW],
            export_since="last",
        ),
        env=DEFAULT_CALLBACK,
    )
    return {"work": work, "full": full, "delta": delta}


def lines_of(stdout: str) -> list[str]:
    """The debug task's message lines, as the default callback prints a list: each a quoted JSON string."""
    found = []
    for line in stdout.splitlines():
        text = line.strip().rstrip(",")
        if text.startswith('"') and text.endswith('"'):
            try:
                found.append(json.loads(text))
            except ValueError:
                continue
    return found


def test_export_prints_a_line_per_image_and_sizes_with_units(bundles: dict[str, Any]) -> None:
    full = bundles["full"]
    assert full.rc == 0, full.stdout[-4000:]
    lines = lines_of(full.stdout)
    assert any(line.split()[0] == "written" and line.endswith(CUDA) for line in lines), lines
    assert "a full bundle" in lines, lines
    (sizes,) = [line for line in lines if line.startswith("bytes read from the registry: ")]
    assert sizes.split(": ")[1].split()[1].rstrip(",") in ("B", "KiB", "MiB", "GiB"), sizes
    # The playbook keeps a progress file beside its facts file: the finished run's counts.
    progress = json.loads((bundles["work"] / "ngc_mirror.export.progress.json").read_text())
    assert progress["state"] == "done" and progress["images_done"] == progress["images_total"] > 0, progress


def test_a_delta_names_the_bundle_it_relies_on_and_what_brings_nothing_new(bundles: dict[str, Any]) -> None:
    delta = bundles["delta"]
    assert delta.rc == 0, delta.stdout[-4000:]
    lines = lines_of(delta.stdout)
    assert any(line.startswith("a delta bundle: it relies on bundle(s) ngc-full;") for line in lines), lines
    (cuda,) = [line for line in lines if f"{CUDA}:" in line or line.endswith(CUDA)]
    assert cuda.split()[:2] == ["named", "only"] and "every blob is in bundle ngc-full" in cuda, lines
    (tensorflow,) = [line for line in lines if line.endswith(TENSORFLOW)]
    assert tensorflow.split()[0] == "written", lines
    assert any(line.startswith("written: 2 image(s) (1 named only)") for line in lines), lines


def test_importing_a_delta_whose_base_is_missing_fails_naming_it_before_pushing(
    ansible: Any, testbed: Any, bundles: dict[str, Any]
) -> None:
    work = bundles["work"]
    alone = work / "alone"
    alone.mkdir()
    shutil.copytree(work / "drop" / "ngc-delta", alone / "ngc-delta", symlinks=True)
    prefix = f"nobase-{work.name[-8:]}".lower().replace("_", "-")
    run = ansible.playbook(
        "playbooks/import.yml",
        {
            "import_bundle_dir": str(alone / "ngc-delta"),
            "import_facts_file": str(work / "import.fact"),
            "import_registry": {"url": testbed.open_registry_url, "prefix": prefix},
        },
    )
    messages = [str(r.get("msg", "")) for r in run.results] + [
        m for r in run.results for m in r.get("failure_messages", [])
    ]
    text = "\n".join(messages)
    assert f"{TENSORFLOW} is in the delta bundle {alone / 'ngc-delta'}, which relies on bundle ngc-full" in text, text
    assert "import bundle ngc-full first" in text, text
    # Nothing of the image reached the registry: not its manifest, not the blobs the delta carries.
    contents = json.loads((alone / "ngc-delta" / "contents.json").read_text())
    (record,) = [image for ref, image in contents["images"].items() if ref.endswith(TENSORFLOW)]
    carried = set(record["blobs"]) - set(contents["expected"])
    assert carried, contents
    for digest in sorted(carried):
        head = requests.head(
            f"{testbed.open_registry_url}/v2/{prefix}/{TENSORFLOW.split(':', maxsplit=1)[0]}/blobs/{digest}", timeout=30
        )
        assert head.status_code == 404, f"{digest} was pushed before the import failed"


def test_catalog_honours_its_team_and_tag_filters_and_prints_sizes_with_units(ansible: Any, testbed: Any) -> None:
    run = ansible.playbook(
        "playbooks/catalog.yml",
        {
            "ngc_mirror_api_key": testbed.api_key,
            "catalog_api_url": testbed.ngc_api_url,
            "catalog_registry_url": testbed.source_registry_url,
            "catalog_teams": ["clara"],
            "catalog_tag_regex": r"^4\.2\.",
        },
        env=DEFAULT_CALLBACK,
    )
    assert run.rc == 0, run.stdout[-4000:]
    lines = lines_of(run.stdout)
    header = next(line for line in lines if line.startswith("IMAGE"))
    rows = [line for line in lines if line.startswith("nvidia/")]
    assert rows and all("clara-parabricks" in row for row in rows), lines
    assert [row.split()[1] for row in rows] == ["4.2.0-1"], lines
    for row in rows:  # the columns line up with the header, the size has its unit
        assert row[header.index("TAG") :].startswith("4.2.0-1"), (header, row)
        assert row.split()[3] in ("B", "KiB", "MiB", "GiB"), row
    assert lines[-1].startswith("1 tag(s) of 1 image(s), "), lines


def test_the_collection_built_and_installed_from_its_tarball_runs_a_documented_playbook(
    ansible: Any, testbed: Any, collection_tree: Path, tmp_path: Path
) -> None:
    """As a new user has it: ``ansible-galaxy collection build`` and ``install``, then a playbook by its FQCN with
    nothing of the checkout on the collections path (the templates, filters and role must all be in the tarball)."""
    galaxy = str(Path(sys.executable).parent / "ansible-galaxy")
    subprocess.run(
        [galaxy, "collection", "build", str(collection_tree), "--output-path", str(tmp_path)],
        env=ansible.env,
        capture_output=True,
        text=True,
        check=True,
    )
    (tarball,) = tmp_path.glob("airgap-ngc-*.tar.gz")
    installed = tmp_path / "collections"
    fresh = dict(ansible.env, ANSIBLE_COLLECTIONS_PATH=str(installed))  # nothing of the checkout's tree on the path
    subprocess.run(
        [galaxy, "collection", "install", str(tarball), "-p", str(installed)],
        env=fresh,
        capture_output=True,
        text=True,
        check=True,
    )
    assert (
        installed / "ansible_collections" / "airgap" / "ngc" / "playbooks" / "templates" / "catalog_table.j2"
    ).is_file()
    run = ansible.playbook(
        "airgap.ngc.catalog",
        {
            "ngc_mirror_api_key": testbed.api_key,
            "catalog_api_url": testbed.ngc_api_url,
            "catalog_registry_url": testbed.source_registry_url,
            "catalog_images": ["cuda"],
            "catalog_strict_name_match": True,
        },
        env=dict(DEFAULT_CALLBACK, ANSIBLE_COLLECTIONS_PATH=str(installed)),
    )
    assert run.rc == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert any(
        line.startswith("nvidia/cuda ") and "12.2.0-base-ubuntu22.04" in line for line in lines_of(run.stdout)
    ), run.stdout
