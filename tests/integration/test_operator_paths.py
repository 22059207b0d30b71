# Copyright (c) airgap.ngc contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The operator's paths, on the oldest ansible-core the collection claims and on the pinned one.

Every test runs twice: with the ansible-playbook of the pinned venv, and with that of ``.venv-oldest`` (the oldest
ansible-core ``meta/runtime.yml`` claims, built by scripts/bootstrap.sh from requirements-oldest.txt), its Python
running the modules too.

- The playbooks run through ansible-runner, as AWX runs a job: the NGC API key and the site registry's password
  reach them only as the extra variables ``ngc_mirror_api_key`` and ``ngc_mirror_registry_password``, as the
  credential type of docs/awx.md injects them, and are nowhere in the runner's ``artifacts/`` (events, stdout,
  the command and its environment). Each run does real work that needs the secret (the NGC stand-in and the
  basic-auth registry refuse anonymous requests), judged by skopeo and unsquashfs.
- The role is applied from a venv whose ``bin/`` is not on PATH: the scheduled run's wrapper starts that venv's
  ansible-playbook, and running the wrapper once (as the timer would, with its own PATH) mirrors for real; an
  ansible-playbook that is not there fails the role, not the night.
- A selection that picks nothing fails the role (from NGC and from a carried bundle), catalog.yml and export.yml,
  naming the selection and its filters, before anything is written.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_role_inputs import parse, role_paths

REPO = Path(__file__).resolve().parents[2]
BUILD = Path(os.environ.get("AIRGAP_BUILD_DIR", str(REPO / "build")))
PLAYBOOKS = BUILD / "ansible_collections" / "airgap" / "ngc" / "playbooks"
VENVS = {"pinned": Path(sys.executable).parent, "oldest": REPO / ".venv-oldest" / "bin"}
OLDEST = "2.17."  # meta/runtime.yml: requires_ansible >=2.17.0
# The PATH cron and the wrapper give a run; no ansible-playbook is there on these machines.
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
IMAGE = "nvidia/cuda:12.2.0-base-ubuntu22.04"
SELECTION = {"name": "CUDA 12.2 base", "images": ["cuda"], "strict_name_match": True, "tag_regex": r"^12\.2\.0-base-"}
MISSPELT = {"name": "PyTorch nightly", "images": ["pytorchh"], "strict_name_match": True, "latest": 2}
ROLE_PLAYBOOK = """\
- name: Apply airgap.ngc.ngc_mirror
  hosts: all
  gather_facts: false
  roles:
    - role: airgap.ngc.ngc_mirror
"""


@dataclass
class Job:
    """One ansible-runner job: its status, rc, stdout, and every file of its artifacts directory."""

    status: str
    rc: int
    stdout: str
    artifacts: dict[str, bytes] = field(default_factory=dict)


class Runner:
    """Runs the collection's playbooks with ansible-runner, as AWX does, with one venv's ansible-playbook."""

    def __init__(self, bin_dir: Path, work: Path, testbed: Any) -> None:
        self.bin_dir = bin_dir
        self.work = work
        self.secrets = {"ngc_mirror_api_key": testbed.api_key, "ngc_mirror_registry_password": testbed.basic_password}

    def run(self, name: str, playbook: str, extravars: dict[str, Any], group_vars: dict[str, Any] | None = None) -> Job:
        import ansible_runner  # pylint: disable=import-outside-toplevel

        private = self.work / name
        (private / "inventory").mkdir(parents=True)
        # What AWX writes: the inventory, and the job's extra variables with the credential's injected into them.
        (private / "inventory" / "hosts.json").write_text(
            json.dumps(
                {
                    "ngc_mirror": {
                        "hosts": {
                            "localhost": dict(
                                group_vars or {},
                                ansible_connection="local",
                                ansible_python_interpreter=str(self.bin_dir / "python"),
                            )
                        }
                    }
                }
            )
        )
        env = {
            "ANSIBLE_COLLECTIONS_PATH": str(BUILD),
            "ANSIBLE_LOCAL_TEMP": str(private / "tmp"),
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_DEPRECATION_WARNINGS": "0",
            "ANSIBLE_LOCALHOST_WARNING": "0",
            "PATH": f"{self.bin_dir}:{SYSTEM_PATH}",  # as in an execution environment: its ansible-playbook first
        }
        saved = {k: os.environ.pop(k) for k in list(os.environ) if k.startswith(("NGC_", "ANSIBLE_"))}
        try:
            result = ansible_runner.run(
                private_data_dir=str(private),
                playbook=str(PLAYBOOKS / playbook),
                inventory=str(private / "inventory"),
                extravars=dict(extravars, **self.secrets),
                envvars=env,
                quiet=True,
                ident="job",
            )
        finally:
            os.environ.update(saved)
        artifacts = {
            str(p.relative_to(private)): p.read_bytes() for p in (private / "artifacts").rglob("*") if p.is_file()
        }
        return Job(result.status, result.rc, result.stdout.read(), artifacts)


def oldest_ready() -> Path:
    bin_dir = VENVS["oldest"]
    if not (bin_dir / "ansible-playbook").exists():
        pytest.fail(f"{bin_dir.parent} is missing: scripts/bootstrap.sh builds it (requirements-oldest.txt)")
    version = subprocess.run(
        [str(bin_dir / "python"), "-c", "import ansible.release; print(ansible.release.__version__)"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert version.startswith(OLDEST), (
        f"{bin_dir.parent} has ansible-core {version}, not the oldest claimed ({OLDEST}x)"
    )
    return bin_dir


@pytest.fixture(scope="module", params=sorted(VENVS))
def venv(request: pytest.FixtureRequest) -> tuple[str, Path]:
    return request.param, oldest_ready() if request.param == "oldest" else VENVS["pinned"]


@pytest.fixture(scope="module")
def jobs(venv: tuple[str, Path], testbed: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Each playbook through ansible-runner, the secrets injected as extra variables, in the order an operator runs
    them: catalog, export (a bundle), import (into the basic-auth registry), hpc_cache (from that registry), and
    mirror.yml (the role: NGC into that registry)."""
    name, bin_dir = venv
    work = tmp_path_factory.mktemp(f"runner-{name}")
    runner = Runner(bin_dir, work, testbed)
    site = {"url": testbed.basic_registry_url, "username": testbed.basic_username, "prefix": f"site-{name}"}
    ngc = {"export_api_url": testbed.ngc_api_url, "export_registry_url": testbed.source_registry_url}
    done: dict[str, Any] = {"work": work, "site": site}
    done["catalog"] = runner.run(
        "catalog",
        "catalog.yml",
        {
            "catalog_api_url": testbed.ngc_api_url,
            "catalog_registry_url": testbed.source_registry_url,
            "catalog_images": ["cuda"],
            "catalog_strict_name_match": True,
        },
    )
    done["export"] = runner.run(
        "export",
        "export.yml",
        dict(
            ngc,
            export_bundle_dir=str(work / "bundle"),
            export_selections=[SELECTION],
            export_facts_file=str(work / "export.fact"),
        ),
    )
    done["import"] = runner.run(
        "import",
        "import.yml",
        {
            "import_bundle_dir": str(work / "bundle"),
            "import_registry": site,
            "import_facts_file": str(work / "import.fact"),
        },
    )
    done["hpc_cache"] = runner.run(
        "hpc_cache",
        "hpc_cache.yml",
        {
            "hpc_source": "registry",
            "hpc_registry_url": testbed.basic_registry_url,
            "hpc_registry_username": testbed.basic_username,
            "hpc_images": [f"site-{name}/{IMAGE}"],
            "hpc_enroot_dir": str(work / "enroot"),
            "hpc_facts_file": str(work / "hpc.fact"),
        },
    )
    root = work / "mirror-host"
    done["mirror"] = runner.run(
        "mirror",
        "mirror.yml",
        {},
        group_vars=dict(
            role_paths(root),
            ngc_mirror_install_requirements=False,
            ngc_mirror_schedule="none",
            ngc_mirror_api_url=testbed.ngc_api_url,
            ngc_mirror_source_registry_url=testbed.source_registry_url,
            ngc_mirror_selections=[SELECTION],
            ngc_mirror_registry=dict(site, prefix=f"role-{name}"),
        ),
    )
    return done


@pytest.mark.parametrize("playbook", ["catalog", "export", "import", "hpc_cache", "mirror"])
def test_playbook_takes_the_secrets_as_extra_vars_and_keeps_them_out_of_artifacts(
    jobs: dict[str, Any], testbed: Any, playbook: str
) -> None:
    job = jobs[playbook]
    assert (job.status, job.rc) == ("successful", 0), job.stdout[-6000:]
    assert job.artifacts, "ansible-runner wrote no artifacts"
    for secret in (testbed.api_key, testbed.basic_password):
        leaked = sorted(path for path, data in job.artifacts.items() if secret.encode() in data)
        assert leaked == [], f"a secret is in the runner's artifacts: {leaked}"
    assert "NGC_API_KEY" not in job.artifacts.get("artifacts/job/command", b"").decode()


def test_the_jobs_did_the_work_the_secrets_allow(
    jobs: dict[str, Any], testbed: Any, testbed_authfile: Any, venv: tuple[str, Path]
) -> None:
    name = venv[0]
    assert "nvidia/cuda" in jobs["catalog"].stdout and "12.2.0-base-ubuntu22.04" in jobs["catalog"].stdout
    index = json.loads((jobs["work"] / "bundle" / "index.json").read_text())
    assert any(
        m.get("annotations", {}).get("org.opencontainers.image.ref.name", "").endswith(IMAGE) or IMAGE in json.dumps(m)
        for m in index["manifests"]
    ), index
    # The judge: skopeo reads what import.yml and the role pushed, with the registry's credentials.
    for repository in (f"site-{name}/{IMAGE}", f"role-{name}/{IMAGE}"):
        subprocess.run(
            [
                "skopeo",
                "inspect",
                "--raw",
                "--tls-verify=false",
                "--authfile",
                str(testbed_authfile),
                f"docker://{testbed.basic_registry_host}/{repository}",
            ],
            capture_output=True,
            check=True,
        )
    (sqsh,) = (jobs["work"] / "enroot").glob("*.sqsh")
    listing = subprocess.run(["unsquashfs", "-s", str(sqsh)], capture_output=True, text=True, check=True).stdout
    assert "Found a valid SQUASHFS" in listing, listing


@pytest.fixture(scope="module")
def role(
    venv: tuple[str, Path], jobs: dict[str, Any], testbed: Any, ansible: Any, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """The role applied by a venv's ansible-playbook whose bin/ is not on PATH, to four hosts at once.

    nightly: a cron schedule, nothing run now; missing: an ngc_mirror_ansible_playbook that is not there; empty: a
    misspelt selection, run now; far_empty: that selection on the far side, from the bundle export.yml wrote.
    """
    name, bin_dir = venv
    work = tmp_path_factory.mktemp(f"role-{name}")
    assert shutil.which("ansible-playbook", path=SYSTEM_PATH) is None, "an ansible-playbook is on the system PATH"
    common = {
        "ngc_mirror_install_requirements": False,
        "ngc_mirror_api_url": testbed.ngc_api_url,
        "ngc_mirror_source_registry_url": testbed.source_registry_url,
        "ngc_mirror_api_key": testbed.api_key,
        "ansible_connection": "local",
        "ansible_python_interpreter": str(bin_dir / "python"),
    }
    hosts = {
        "nightly": dict(ngc_mirror_run=False, ngc_mirror_schedule="cron", ngc_mirror_selections=[SELECTION]),
        "missing": dict(
            ngc_mirror_run=False,
            ngc_mirror_schedule="cron",
            ngc_mirror_selections=[SELECTION],
            ngc_mirror_ansible_playbook=str(work / "no-such-venv" / "bin" / "ansible-playbook"),
        ),
        "empty": dict(ngc_mirror_selections=[SELECTION, MISSPELT]),
        "far_empty": dict(
            ngc_mirror_source="bundle",
            ngc_mirror_source_dir=str(jobs["work"] / "bundle"),
            ngc_mirror_selections=[SELECTION, MISSPELT],
            ngc_mirror_api_key="",
        ),
    }
    hosts = {
        host: {
            **common,
            **role_paths(work / host),
            "ngc_mirror_archive": {"dir": str(work / host / "archives")},
            **values,
        }
        for host, values in hosts.items()
    }
    inventory = work / "inventory.json"
    inventory.write_text(json.dumps({"all": {"hosts": hosts}}))
    inventory.chmod(0o600)
    playbook = work / "role.yml"
    playbook.write_text(ROLE_PLAYBOOK)
    env = dict(ansible.env, PATH=SYSTEM_PATH, ANSIBLE_FORKS="4", ANSIBLE_PYTHON_INTERPRETER=str(bin_dir / "python"))
    proc = subprocess.run(
        [str(bin_dir / "ansible-playbook"), "-i", str(inventory), str(playbook)],
        env=env,
        cwd=work,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    runs = parse(proc.stdout)
    wrapper = Path(hosts["nightly"]["ngc_mirror_wrapper_path"])
    # As the cron job runs it: its own PATH, no Ansible variables, nothing of the venv.
    night = (
        subprocess.run(
            [str(wrapper)],
            env={"PATH": SYSTEM_PATH, "HOME": str(work)},
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
        if wrapper.exists()
        else None
    )
    return {
        "work": work,
        "hosts": hosts,
        "runs": runs,
        "output": proc.stdout + proc.stderr,
        "night": night,
        "bin_dir": bin_dir,
    }


def test_scheduled_run_starts_the_ansible_playbook_beside_the_python_that_ran_the_role(role: dict[str, Any]) -> None:
    nightly = role["runs"]["nightly"]
    assert nightly.statuses and not nightly.failed, role["output"][-6000:]
    wrapper = Path(role["hosts"]["nightly"]["ngc_mirror_wrapper_path"]).read_text()
    (started,) = [shlex.split(line)[1] for line in wrapper.splitlines() if line.startswith("exec ") and " -i " in line]
    assert Path(started).samefile(role["bin_dir"] / "ansible-playbook"), wrapper
    night = role["night"]
    assert night is not None and night.returncode == 0, (night.stdout + night.stderr)[-6000:] if night else "no wrapper"
    assert "failed=0" in night.stdout and "1 image(s) selected, 1 copied" in night.stdout, night.stdout[-4000:]
    (archive,) = (role["work"] / "nightly" / "archives").rglob("*.tar")
    # The judge: skopeo reads the archive the night wrote.
    subprocess.run(["skopeo", "inspect", f"docker-archive:{archive}"], capture_output=True, check=True)


def test_an_ansible_playbook_that_is_not_there_fails_the_role_not_the_night(role: dict[str, Any]) -> None:
    missing = role["runs"]["missing"]
    assert missing.failed, role["output"][-6000:]
    path = role["hosts"]["missing"]["ngc_mirror_ansible_playbook"]
    assert any(
        m.startswith(f"The scheduled run could not start on missing: {path} is not an executable file")
        for m in missing.messages
    ), missing.messages
    assert not (Path(role["hosts"]["missing"]["ngc_mirror_cron_dir"]) / "ngc-mirror").exists()


@pytest.mark.parametrize("host", ["empty", "far_empty"])
def test_a_selection_that_picks_nothing_fails_the_role_naming_it(role: dict[str, Any], host: str) -> None:
    run = role["runs"][host]
    assert run.failed, role["output"][-6000:]
    text = "\n".join(run.messages)
    assert '"PyTorch nightly" picked no image' in text, text
    assert '"pytorchh"' in text and "ngc_mirror_allow_empty_selection" in text, text
    assert "CUDA 12.2 base" not in text, text  # the selection that picks something is not blamed
    assert not (role["work"] / host / "archives").exists()  # nothing mirrored: the other selection waits too


def test_a_selection_that_picks_nothing_fails_catalog_and_export(ansible: Any, testbed: Any, tmp_path: Path) -> None:
    """With the pinned ansible-core only: the playbooks' empty-selection path is the module's."""
    secrets = {"ngc_mirror_api_key": testbed.api_key}
    catalog = ansible.playbook(
        PLAYBOOKS / "catalog.yml",
        dict(
            secrets,
            catalog_api_url=testbed.ngc_api_url,
            catalog_registry_url=testbed.source_registry_url,
            catalog_images=MISSPELT["images"],
            catalog_strict_name_match=True,
        ),
    )
    assert catalog.rc != 0, catalog.stdout[-4000:]
    assert catalog.result["msg"].startswith("The selection picked no image from the NGC catalog at "), catalog.result
    assert 'with images ["pytorchh"], strict_name_match true:' in catalog.result["msg"], catalog.result
    export = ansible.playbook(
        PLAYBOOKS / "export.yml",
        dict(
            secrets,
            export_api_url=testbed.ngc_api_url,
            export_registry_url=testbed.source_registry_url,
            export_bundle_dir=str(tmp_path / "bundle"),
            export_selections=[SELECTION, MISSPELT],
            export_facts_file=str(tmp_path / "export.fact"),
        ),
    )
    assert export.rc != 0, export.stdout[-4000:]
    messages = [str(i.get("msg", "")) for r in export.results for i in [r, *r.get("results", [])]]
    assert any(m.startswith('Selection "PyTorch nightly" picked no image from the NGC catalog') for m in messages), (
        messages
    )
    assert not any("CUDA 12.2 base" in m for m in messages), messages
    assert not (tmp_path / "bundle").exists()
