# Copyright (c) airgap.ngc contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The ngc_mirror role writes units and cron jobs that work from good input, and a second run changes nothing.

As in test_role_inputs (whose helpers this uses; a file of its own so that a parallel run gives the two long set-ups
to two workers): every host of the inventory is a name for this machine, with the paths the role writes redirected
into a directory of its own. systemd-analyze and sh judge the files written.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.test_role_inputs import FAKE_KEY, HostRun, RolePlay, base_vars


@pytest.fixture(scope="module")
def play(ansible: Any, tmp_path_factory: pytest.TempPathFactory) -> RolePlay:
    return RolePlay(ansible.env, tmp_path_factory.mktemp("role-schedule"))


@dataclass
class GoodRuns:
    hosts: dict[str, dict[str, Any]]
    first: dict[str, HostRun]
    second: dict[str, HostRun]


@pytest.fixture(scope="module")
def good_runs(play: RolePlay) -> GoodRuns:
    """Good input applied twice, under paths with a space and a '%' (a systemd specifier, a newline to
    cron): a timer, and a cron job whose config_dir is its state_dir."""
    base = play.work / "roots-good"
    cron_root = base / "good_cron" / "with space %n"
    same = f"{cron_root}/etc/ngc-mirror"
    hosts = {
        "good_systemd": base_vars(
            base / "good_systemd" / "with space %n",
            ngc_mirror_on_calendar=["Mon..Fri *-*-* 02:00:00", "weekly"],
            ngc_mirror_randomized_delay_sec="1h 30min",
        ),
        "good_cron": base_vars(
            cron_root,
            ngc_mirror_schedule="cron",
            ngc_mirror_cron_minute="15",
            ngc_mirror_cron_hour="3",
            ngc_mirror_cron_weekday="mon-fri",
            ngc_mirror_config_dir=same,
            ngc_mirror_state_dir=same,
        ),
        # The far side of the air gap: a timer that imports the bundles dropped in a directory, with no
        # selections; the key is set (as a controller's NGC_API_KEY would set it) but must not be written.
        "good_far": base_vars(
            base / "good_far",
            ngc_mirror_source="bundle",
            ngc_mirror_selections=[],
            ngc_mirror_source_dir=str(base / "good_far" / "media" / "drop"),
        ),
        # Retention and the HPC caches as the only destinations, with values as a survey or an inventory gives
        # them (a number as a string, a yes/no word): the scheduled run must get them as the module takes them.
        "good_retention": base_vars(
            base / "good_retention",
            ngc_mirror_archive={},
            ngc_mirror_enroot={
                "dir": str(base / "good_retention" / "shared" / "enroot"),
                "squash_options": "-comp xz",
                "platform": "linux/arm64",
            },
            ngc_mirror_apptainer={"dir": str(base / "good_retention" / "shared" / "sif"), "layout": "flat"},
            ngc_mirror_prune="yes",
            ngc_mirror_keep="2",
            ngc_mirror_parallel_images="16",
            ngc_mirror_signatures="no",
            ngc_mirror_signatures_relist_after="0",
        ),
    }
    first = play.run("good-1", hosts)
    for name, run in first.items():
        assert run.statuses and not run.failed and run.changed > 0, f"{name}:\n{run.output[-4000:]}"
    second = play.run("good-2", hosts)
    return GoodRuns(hosts, first, second)


def test_good_units_are_valid_and_quote_the_wrapper(good_runs: GoodRuns) -> None:
    values = good_runs.hosts["good_systemd"]
    units = Path(values["ngc_mirror_systemd_dir"])
    service = (units / "ngc-mirror.service").read_text()
    (exec_start,) = [line for line in service.splitlines() if line.startswith("ExecStart=")]
    assert exec_start == 'ExecStart="' + values["ngc_mirror_wrapper_path"].replace("%", "%%") + '"'
    timer = (units / "ngc-mirror.timer").read_text()
    assert "OnCalendar=Mon..Fri *-*-* 02:00:00\nOnCalendar=weekly\n" in timer
    assert "RandomizedDelaySec=1h 30min\n" in timer
    # The judge: systemd-analyze finds both units valid and the quoted wrapper executable.
    if shutil.which("systemd-analyze") is None:
        pytest.skip("no systemd-analyze to verify the units")
    verify = subprocess.run(
        ["systemd-analyze", "verify", str(units / "ngc-mirror.timer"), str(units / "ngc-mirror.service")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert verify.returncode == 0, verify.stderr


def test_far_side_schedule_imports_from_the_drop_directory_without_the_key(good_runs: GoodRuns) -> None:
    values = good_runs.hosts["good_far"]
    config = Path(values["ngc_mirror_config_dir"])
    scheduled = yaml.safe_load((config / "mirror-vars.yml").read_text())
    assert scheduled["ngc_mirror_source"] == "bundle"
    assert scheduled["ngc_mirror_source_dir"] == values["ngc_mirror_source_dir"]
    assert scheduled["ngc_mirror_selections"] == []
    assert not (config / "ngc-api-key").exists()
    root = config.parents[1]  # the host's directory: config_dir is <root>/etc/ngc-mirror
    written = [p for p in root.rglob("*") if p.is_file() and FAKE_KEY in p.read_text(errors="replace")]
    assert written == [], f"the NGC key went to the far side: {written}"
    units = Path(values["ngc_mirror_systemd_dir"])
    assert "carried across the air gap" in (units / "ngc-mirror.service").read_text()
    if shutil.which("systemd-analyze") is None:
        pytest.skip("no systemd-analyze to verify the units")
    verify = subprocess.run(
        ["systemd-analyze", "verify", str(units / "ngc-mirror.timer"), str(units / "ngc-mirror.service")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert verify.returncode == 0, verify.stderr


def test_scheduled_run_gets_retention_and_the_hpc_caches(good_runs: GoodRuns) -> None:
    values = good_runs.hosts["good_retention"]
    scheduled = yaml.safe_load((Path(values["ngc_mirror_config_dir"]) / "mirror-vars.yml").read_text())
    assert scheduled["ngc_mirror_enroot"] == values["ngc_mirror_enroot"]
    assert scheduled["ngc_mirror_apptainer"] == values["ngc_mirror_apptainer"]
    assert scheduled["ngc_mirror_prune"] is True and scheduled["ngc_mirror_signatures"] is False
    assert scheduled["ngc_mirror_keep"] == 2 and scheduled["ngc_mirror_parallel_images"] == 16
    assert scheduled["ngc_mirror_signatures_relist_after"] == 0
    # The defaults reach it as such: keep null (no limit), prune off, signatures on.
    defaults = yaml.safe_load(
        (Path(good_runs.hosts["good_systemd"]["ngc_mirror_config_dir"]) / "mirror-vars.yml").read_text()
    )
    assert defaults["ngc_mirror_keep"] is None and defaults["ngc_mirror_prune"] is False
    assert defaults["ngc_mirror_signatures"] is True and defaults["ngc_mirror_parallel_images"] == 8
    assert defaults["ngc_mirror_signatures_relist_after"] == 3600
    assert defaults["ngc_mirror_enroot"] == {} and defaults["ngc_mirror_apptainer"] == {}


def test_good_cron_job_runs_the_wrapper_as_written(good_runs: GoodRuns, play: RolePlay) -> None:
    values = good_runs.hosts["good_cron"]
    lines = [
        line
        for line in (Path(values["ngc_mirror_cron_dir"]) / "ngc-mirror").read_text().splitlines()
        if line and not line.startswith("#") and "=" not in line.split()[0]
    ]
    assert len(lines) == 1, lines
    fields = lines[0].split(None, 6)
    assert fields[:6] == ["15", "3", "*", "*", "mon-fri", "root"]
    # cron turns a bare '%' into a newline and '\%' into '%'; then sh runs the command.
    assert "%" not in fields[6].replace("\\%", "")
    command = fields[6].replace("\\%", "%")
    assert shlex.split(command) == [values["ngc_mirror_wrapper_path"], ">>" + values["ngc_mirror_cron_log"], "2>&1"]
    log = Path(values["ngc_mirror_cron_log"])
    log.parent.mkdir(parents=True, exist_ok=True)
    ran = subprocess.run(
        ["sh", "-c", command + " --syntax-check"],
        env=play.env,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert ran.returncode == 0, log.read_text()
    assert "playbook: " in log.read_text()


def test_good_input_is_stable_and_config_dir_may_be_state_dir(good_runs: GoodRuns) -> None:
    for name, run in good_runs.second.items():
        assert run.statuses and not run.failed, f"{name}:\n{run.output[-4000:]}"
        assert run.changed == 0, (name, [r for s, r in zip(run.statuses, run.results) if s == "CHANGED"])
    same = Path(good_runs.hosts["good_cron"]["ngc_mirror_config_dir"])
    assert same == Path(good_runs.hosts["good_cron"]["ngc_mirror_state_dir"])
    assert (same.stat().st_mode & 0o777) == 0o700
