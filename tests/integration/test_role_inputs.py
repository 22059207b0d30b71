# Copyright (c) airgap.ngc contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The ngc_mirror role refuses bad input before it writes anything (good input: test_role_schedule).

Every case is one host of an inventory, a name for this machine (connection ``local``), with the
paths the role writes (/etc/ngc-mirror, /etc/systemd/system, /etc/cron.d, ...) redirected into a
directory of its own. One ansible-playbook run applies the role to all the bad cases at once,
with ``ngc_mirror_run: false`` so no registry is needed; each case is then judged alone: the play
failed for that host, the message names the variable (and the value, unless it is a secret), and
the host's directory holds nothing it did not hold before.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
ROOT = "@ROOT@"  # replaced by the case's own directory
FAKE_KEY = "role-inputs-not-a-real-key-5d21e0"
SECRET = "role-inputs-secret-9b7f3c"


def role_paths(root: Path | str) -> dict[str, str]:
    """Every path the role writes or removes, under root."""
    return {
        "ngc_mirror_facts_file": f"{root}/etc/ansible/facts.d/ngc_mirror.fact",
        "ngc_mirror_config_dir": f"{root}/etc/ngc-mirror",
        "ngc_mirror_state_dir": f"{root}/var/lib/ngc-mirror",
        "ngc_mirror_wrapper_path": f"{root}/usr/local/sbin/ngc-mirror",
        "ngc_mirror_systemd_dir": f"{root}/etc/systemd/system",
        "ngc_mirror_cron_dir": f"{root}/etc/cron.d",
        "ngc_mirror_cron_log": f"{root}/var/log/ngc-mirror.log",
    }


def base_vars(root: Path, **extra: Any) -> dict[str, Any]:
    """A valid schedule-only configuration whose every path is under root."""
    values: dict[str, Any] = {
        "ngc_mirror_run": False,
        "ngc_mirror_install_requirements": False,
        "ngc_mirror_api_key": FAKE_KEY,
        "ngc_mirror_schedule": "systemd",
        "ngc_mirror_selections": [{"images": ["pytorch"], "strict_name_match": True, "latest": 1}],
        "ngc_mirror_archive": {"dir": f"{root}/srv/ngc-archives"},
        **role_paths(root),
        "ngc_mirror_ansible_playbook": str(Path(sys.executable).parent / "ansible-playbook"),
    }
    values.update(extra)
    return values


@dataclass
class Case:
    """Bad input: ``var`` set to ``value`` (on top of base_vars and ``extra``) must fail the play.

    The message must contain ``var`` and the value as the role shows it (JSON), or ``expect`` if
    given (with ROOT replaced, like the values); a ``secret`` must appear nowhere in the output. ``keep`` files exist in the case's
    directory before the run and must be all it holds after.
    """

    id: str
    var: str
    value: Any
    extra: dict[str, Any] = field(default_factory=dict)
    expect: list[str] | None = None
    secret: str | None = None
    keep: list[str] = field(default_factory=list)
    no_systemd_analyze: bool = False


SELECTION = {"images": ["pytorch"], "strict_name_match": True}
CRON = {"ngc_mirror_schedule": "cron"}
# The far side: import the bundles dropped in ROOT/drop (which need not exist: ngc_mirror_run is false).
BUNDLE_SOURCE = {"ngc_mirror_source": "bundle"}
FAR = dict(BUNDLE_SOURCE, ngc_mirror_source_dir=f"{ROOT}/drop")

CASES = [
    # cron fields: each is written into a root cron job
    Case("cron_minute_newline", "ngc_mirror_cron_minute", "0\n* * * * * root /bin/sh -c id", CRON),
    Case("cron_hour_space", "ngc_mirror_cron_hour", "2 3", CRON),
    Case("cron_minute_99", "ngc_mirror_cron_minute", "99", CRON),
    Case("cron_minute_99_integer", "ngc_mirror_cron_minute", 99, CRON),
    Case("cron_weekday_8", "ngc_mirror_cron_weekday", "8", CRON),
    Case("cron_minute_step_0", "ngc_mirror_cron_minute", "*/0", CRON),
    Case("cron_day_dict", "ngc_mirror_cron_day", {"day": 1}, CRON),
    Case("cron_month_empty", "ngc_mirror_cron_month", "", CRON),
    # the timer
    Case("calendar_words", "ngc_mirror_on_calendar", "every tuesday"),
    Case("calendar_words_without_systemd_analyze", "ngc_mirror_on_calendar", "every tuesday", no_systemd_analyze=True),
    Case("calendar_empty", "ngc_mirror_on_calendar", ""),
    Case("calendar_dict", "ngc_mirror_on_calendar", {"daily": True}),
    Case("calendar_newline", "ngc_mirror_on_calendar", "*-*-* 02:00:00\nOnCalendar=minutely"),
    Case("calendar_empty_list", "ngc_mirror_on_calendar", []),
    Case("calendar_list_with_number", "ngc_mirror_on_calendar", ["daily", 5]),
    Case("calendar_option", "ngc_mirror_on_calendar", "--help"),
    Case("delay_abc", "ngc_mirror_randomized_delay_sec", "abc"),
    Case("delay_newline", "ngc_mirror_randomized_delay_sec", "15min\nExecStartPre=/bin/true"),
    # names and paths of the files written
    Case("unit_name_dotdot", "ngc_mirror_unit_name", "../../x"),
    Case(
        "unit_name_dotdot_schedule_none",
        "ngc_mirror_unit_name",
        "../../x",
        {"ngc_mirror_schedule": "none"},
        keep=["etc/x.timer", "etc/x.service"],
    ),
    Case("unit_name_slash", "ngc_mirror_unit_name", "a/b"),
    Case("unit_name_dict", "ngc_mirror_unit_name", {"name": "x"}),
    Case("wrapper_relative", "ngc_mirror_wrapper_path", "usr/local/sbin/ngc-mirror"),
    Case("wrapper_newline", "ngc_mirror_wrapper_path", f"{ROOT}/usr/local/sbin/ngc-mirror\nExecStartPre=/bin/sh -c id"),
    Case("wrapper_quote", "ngc_mirror_wrapper_path", f'{ROOT}/usr/local/sbin/ngc" "mirror'),
    Case("config_dir_dict", "ngc_mirror_config_dir", {"path": "/etc/ngc-mirror"}),
    Case("systemd_dir_relative", "ngc_mirror_systemd_dir", "etc/systemd/system"),
    Case("cron_dir_dotdot", "ngc_mirror_cron_dir", f"{ROOT}/etc/x/../cron.d", CRON),
    Case("cron_log_relative", "ngc_mirror_cron_log", "ngc-mirror.log", CRON),
    Case("config_dir_is_cron_dir", "ngc_mirror_config_dir", f"{ROOT}/etc/cron.d", CRON),
    Case("ansible_playbook_newline", "ngc_mirror_ansible_playbook", "ansible-playbook\nid"),
    Case("org_newline", "ngc_mirror_org", "nvidia\nx"),
    Case("platform_with_space", "ngc_mirror_platforms", ["linux amd64"]),
    Case("parallel_zero", "ngc_mirror_parallel", 0),
    # a schedule that could never succeed
    Case("no_selections_with_schedule", "ngc_mirror_selections", [], expect=["Nothing to do", "ngc_mirror_selections"]),
    Case("no_destination_with_cron", "ngc_mirror_archive", {}, CRON, expect=["Nothing to do", "ngc_mirror_archive"]),
    # selections, checked against ngc_catalog_info's options
    Case(
        "selection_latest_zero",
        "ngc_mirror_selections",
        [dict(SELECTION, latest=0)],
        expect=["ngc_mirror_selections[0].latest", "not 0"],
    ),
    Case(
        "selection_latest_word",
        "ngc_mirror_selections",
        [dict(SELECTION, latest="two")],
        expect=["ngc_mirror_selections", "latest", "two"],
    ),
    Case(
        "selection_images_string",
        "ngc_mirror_selections",
        [{"images": "pytorch"}],
        expect=["ngc_mirror_selections[0].images", '"pytorch"'],
    ),
    Case(
        "selection_regex_dict",
        "ngc_mirror_selections",
        [dict(SELECTION, tag_regex={"re": "x"})],
        expect=["ngc_mirror_selections[0].tag_regex", '{"re": "x"}'],
    ),
    Case(
        "selection_unknown_option",
        "ngc_mirror_selections",
        [{"image": "pytorch"}],
        expect=["ngc_mirror_selections", "image"],
    ),
    Case("selection_not_a_dict", "ngc_mirror_selections", ["pytorch"], expect=["ngc_mirror_selections", "dict"]),
    # destinations
    Case(
        "archive_dir_relative",
        "ngc_mirror_archive",
        {"dir": "srv/ngc-archives"},
        expect=["ngc_mirror_archive.dir", '"srv/ngc-archives"'],
    ),
    # where the images come from: the far side of the air gap
    Case("source_unknown", "ngc_mirror_source", "bundel", expect=["ngc_mirror_source", "bundel"]),
    Case("source_list", "ngc_mirror_source", ["bundle"], expect=["ngc_mirror_source", "bundle"]),
    Case("source_dir_relative", "ngc_mirror_source_dir", "media/drop", BUNDLE_SOURCE),
    Case("source_dir_newline", "ngc_mirror_source_dir", f"{ROOT}/drop\nExecStartPre=/bin/sh -c id", BUNDLE_SOURCE),
    Case("source_dir_dotdot", "ngc_mirror_source_dir", f"{ROOT}/drop/../../etc", BUNDLE_SOURCE),
    Case("source_dir_empty_with_bundle_source", "ngc_mirror_source_dir", "", BUNDLE_SOURCE),
    Case(
        "source_dir_with_registry_source",
        "ngc_mirror_source_dir",
        f"{ROOT}/drop",
        expect=["ngc_mirror_source_dir", "ngc_mirror_source bundle or archive", f'"{ROOT}/drop"'],
    ),
    Case(
        "bundle_source_without_destination",
        "ngc_mirror_archive",
        {},
        FAR,
        expect=["Nothing to do", "ngc_mirror_registry", "ngc_mirror_bundle"],
    ),
    Case(
        "archive_source_with_selections",
        "ngc_mirror_selections",
        [SELECTION],
        dict(FAR, ngc_mirror_source="archive"),
        expect=["ngc_mirror_selections", "archive"],
    ),
    Case(
        "bundle_source_with_readme",
        "ngc_mirror_save_readme",
        True,
        FAR,
        expect=["ngc_mirror_save_readme", "ngc_mirror_source bundle"],
    ),
    Case(
        "bundle_dir_relative",
        "ngc_mirror_bundle",
        {"dir": "media/transfer/ngc"},
        expect=["ngc_mirror_bundle.dir", '"media/transfer/ngc"'],
    ),
    Case(
        "bundle_dir_newline",
        "ngc_mirror_bundle",
        {"dir": f"{ROOT}/transfer\nngc"},
        expect=["ngc_mirror_bundle.dir", json.dumps(f"{ROOT}/transfer\nngc")],
    ),
    Case("bundle_not_a_dict", "ngc_mirror_bundle", "/media/transfer/ngc", expect=["ngc_mirror_bundle"]),
    Case(
        "bundle_since_not_last_or_paths",
        "ngc_mirror_bundle",
        {"dir": "/media/transfer/ngc", "since": "yesterday"},
        expect=["ngc_mirror_bundle.since", '"yesterday"'],
    ),
    Case(
        "bundle_since_relative_path",
        "ngc_mirror_bundle",
        {"dir": "/media/transfer/ngc", "since": ["ngc-2026-11"]},
        expect=["ngc_mirror_bundle.since", "ngc-2026-11"],
    ),
    Case(
        "bundle_volume_size_multiline",
        "ngc_mirror_bundle",
        {"dir": "/media/transfer/ngc", "volume_size": "4GiB\nx"},
        expect=["ngc_mirror_bundle.volume_size"],
    ),
    Case(
        "bundle_unknown_option",
        "ngc_mirror_bundle",
        {"path": "/media/transfer/ngc"},
        expect=["ngc_mirror_bundle", "path"],
    ),
    Case(
        "bundle_dir_is_archive_dir",
        "ngc_mirror_bundle",
        {"dir": f"{ROOT}/srv/ngc-archives/"},
        expect=["ngc_mirror_bundle.dir", "ngc_mirror_archive.dir", f'"{ROOT}/srv/ngc-archives/"'],
    ),
    Case(
        "bundle_dir_in_source_dir",
        "ngc_mirror_bundle",
        {"dir": f"{ROOT}/drop//out"},
        FAR,
        expect=["ngc_mirror_bundle.dir", "ngc_mirror_source_dir", f'"{ROOT}/drop//out"'],
    ),
    Case(
        "archive_dir_is_source_dir",
        "ngc_mirror_archive",
        {"dir": f"{ROOT}/drop"},
        dict(FAR, ngc_mirror_source="archive", ngc_mirror_selections=[]),
        expect=["ngc_mirror_archive.dir", "ngc_mirror_source_dir", f'"{ROOT}/drop"'],
    ),
    # retention: prune and keep (a value Ansible cannot convert is refused by the argument spec, naming it)
    Case("prune_word", "ngc_mirror_prune", "sometimes", expect=["ngc_mirror_prune", "sometimes"]),
    Case("keep_zero", "ngc_mirror_keep", 0, expect=["ngc_mirror_keep", "at least 1", "not 0."]),
    Case("keep_negative", "ngc_mirror_keep", -2, expect=["ngc_mirror_keep", "not -2."]),
    Case("keep_boolean", "ngc_mirror_keep", True, expect=["ngc_mirror_keep", "not true."]),
    Case("keep_word", "ngc_mirror_keep", "two", expect=["ngc_mirror_keep", "two"]),
    # how the module works
    Case(
        "parallel_images_zero",
        "ngc_mirror_parallel_images",
        0,
        expect=["ngc_mirror_parallel_images", "from 1 to 64", "not 0."],
    ),
    Case("parallel_images_65", "ngc_mirror_parallel_images", 65, expect=["ngc_mirror_parallel_images", "not 65."]),
    Case(
        "parallel_images_string_65",
        "ngc_mirror_parallel_images",
        "65",
        expect=["ngc_mirror_parallel_images", 'not "65".'],
    ),
    Case(
        "relist_after_negative",
        "ngc_mirror_signatures_relist_after",
        -1,
        expect=["ngc_mirror_signatures_relist_after", "from 0 to 31622400", "not -1."],
    ),
    Case(
        "relist_after_words",
        "ngc_mirror_signatures_relist_after",
        "an hour",
        expect=["ngc_mirror_signatures_relist_after", "an hour"],
    ),
    Case("signatures_word", "ngc_mirror_signatures", "maybe", expect=["ngc_mirror_signatures", "maybe"]),
    # the HPC caches
    Case(
        "enroot_dir_relative",
        "ngc_mirror_enroot",
        {"dir": "shared/enroot"},
        expect=["ngc_mirror_enroot.dir", '"shared/enroot"'],
    ),
    Case(
        "enroot_without_dir",
        "ngc_mirror_enroot",
        {"platform": "linux/arm64"},
        expect=["ngc_mirror_enroot.dir must be set"],
    ),
    Case(
        "enroot_squash_options_newline",
        "ngc_mirror_enroot",
        {"dir": f"{ROOT}/sqsh", "squash_options": "-comp lzo\n-noD"},
        expect=["ngc_mirror_enroot.squash_options", json.dumps("-comp lzo\n-noD")],
    ),
    Case(
        "enroot_platform_word",
        "ngc_mirror_enroot",
        {"dir": f"{ROOT}/sqsh", "platform": "arm64"},
        expect=["ngc_mirror_enroot.platform", "linux/amd64", '"arm64"'],
    ),
    Case("enroot_not_a_dict", "ngc_mirror_enroot", "/shared/enroot", expect=["ngc_mirror_enroot"]),
    Case(
        "enroot_dir_is_archive_dir",
        "ngc_mirror_enroot",
        {"dir": f"{ROOT}/srv//ngc-archives"},
        expect=["ngc_mirror_archive.dir", "ngc_mirror_enroot.dir", f'"{ROOT}/srv//ngc-archives"', "one directory"],
    ),
    Case(
        "apptainer_layout_unknown",
        "ngc_mirror_apptainer",
        {"dir": f"{ROOT}/sif", "layout": "nested"},
        expect=["ngc_mirror_apptainer", "layout", "nested"],
    ),
    Case(
        "apptainer_unknown_option",
        "ngc_mirror_apptainer",
        {"dir": f"{ROOT}/sif", "format": "sif"},
        expect=["ngc_mirror_apptainer", "format"],
    ),
    Case(
        "apptainer_dir_is_enroot_dir",
        "ngc_mirror_apptainer",
        {"dir": f"{ROOT}/hpc/"},
        {"ngc_mirror_enroot": {"dir": f"{ROOT}/hpc"}},
        expect=["ngc_mirror_enroot.dir", "ngc_mirror_apptainer.dir", f'"{ROOT}/hpc/"', "one directory"],
    ),
    Case(
        "apptainer_dir_in_source_dir",
        "ngc_mirror_apptainer",
        {"dir": f"{ROOT}/drop/sif"},
        FAR,
        expect=["ngc_mirror_apptainer.dir", "ngc_mirror_source_dir", f'"{ROOT}/drop/sif"'],
    ),
    Case(
        "no_destination_names_the_hpc_caches",
        "ngc_mirror_archive",
        {},
        expect=["Nothing to do", "ngc_mirror_enroot", "ngc_mirror_apptainer"],
    ),
    # secrets: named, never shown
    Case("api_key_dict", "ngc_mirror_api_key", {"token": SECRET}, expect=["ngc_mirror_api_key"], secret=SECRET),
    Case(
        "registry_url_without_scheme",
        "ngc_mirror_registry",
        {"url": "registry.site.example:5000"},
        expect=["ngc_mirror_registry.url", "a URL with its scheme", "http://host:5000"],
    ),
    Case(
        "registry_password_newline",
        "ngc_mirror_registry",
        {"url": "https://registry.site.example", "password": f"{SECRET}\nsecond line"},
        expect=["ngc_mirror_registry.password"],
        secret=SECRET,
    ),
]


def substitute(value: Any, root: Path) -> Any:
    if isinstance(value, str):
        return value.replace(ROOT, str(root))
    if isinstance(value, list):
        return [substitute(v, root) for v in value]
    if isinstance(value, dict):
        return {k: substitute(v, root) for k, v in value.items()}
    return value


@dataclass
class HostRun:
    """What one ansible-playbook run printed for one host."""

    statuses: list[str]
    results: list[dict[str, Any]]
    output: str

    @property
    def failed(self) -> bool:
        return "FAILED!" in self.statuses or "UNREACHABLE!" in self.statuses

    @property
    def changed(self) -> int:
        return self.statuses.count("CHANGED")

    @property
    def messages(self) -> list[str]:
        """The ``msg`` of each failed result, and of each failed loop item in it."""
        found: list[str] = []
        for status, result in zip(self.statuses, self.results):
            if status == "FAILED!":
                found += [
                    item["msg"]
                    for item in [result, *result.get("results", [])]
                    if (item is result or item.get("failed")) and isinstance(item.get("msg"), str)
                ]
        return found


RESULT = re.compile(r"^(\S+) \| (SUCCESS|CHANGED|FAILED!|UNREACHABLE!|SKIPPED)(?: => )?", re.MULTILINE)


def parse(stdout: str) -> dict[str, HostRun]:
    """The minimal callback's ``host | STATUS => {json}`` lines, per host."""
    runs: dict[str, HostRun] = {}
    decoder = json.JSONDecoder()
    for match in RESULT.finditer(stdout):
        host, status = match.group(1), match.group(2)
        run = runs.setdefault(host, HostRun([], [], stdout))
        try:
            result = decoder.raw_decode(stdout, match.end())[0]
        except ValueError:
            result = {}
        run.statuses.append(status)
        run.results.append(result)
    return runs


class RolePlay:
    """Applies the role to many hosts (each a name for this machine) in one ansible-playbook run."""

    def __init__(self, env: dict[str, str], work: Path) -> None:
        self.env = env
        self.work = work
        self.playbook = work / "role.yml"
        self.playbook.write_text(
            "- name: Apply airgap.ngc.ngc_mirror\n"
            "  hosts: all\n"
            "  gather_facts: false\n"
            "  roles:\n"
            "    - role: airgap.ngc.ngc_mirror\n"
        )

    def run(self, name: str, hosts: dict[str, dict[str, Any]], env: dict[str, str] | None = None) -> dict[str, HostRun]:
        """Run the play with these host variables; the cwd is an empty directory (relative paths land there)."""
        inventory = self.work / f"{name}.inventory.json"
        inventory.write_text(
            json.dumps(
                {
                    "all": {
                        "hosts": {
                            host: dict(values, ansible_connection="local", ansible_python_interpreter=sys.executable)
                            for host, values in hosts.items()
                        }
                    }
                }
            )
        )
        inventory.chmod(0o600)
        cwd = self.work / f"{name}.cwd"
        cwd.mkdir()
        full_env = dict(self.env, ANSIBLE_FORKS="64", **(env or {}))
        argv = [str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(inventory), str(self.playbook)]
        proc = subprocess.run(argv, env=full_env, cwd=cwd, capture_output=True, text=True, timeout=600, check=False)
        output = proc.stdout + proc.stderr
        runs = parse(proc.stdout)
        for run in runs.values():
            run.output = output
        assert not any(cwd.iterdir()), f"the role wrote into the current directory: {sorted(cwd.iterdir())}"
        for host in hosts:
            runs.setdefault(host, HostRun([], [], output))
        return runs


def path_without_systemd_analyze(work: Path) -> str:
    """A PATH of one directory linking every command of this PATH but systemd-analyze."""
    bin_dir = work / "bin-without-systemd-analyze"
    if not bin_dir.exists():
        bin_dir.mkdir()
        for directory in [str(Path(sys.executable).parent), *os.environ.get("PATH", "").split(os.pathsep)]:
            for command in Path(directory).glob("*") if Path(directory).is_dir() else []:
                target = bin_dir / command.name
                if command.name != "systemd-analyze" and not target.exists() and os.access(command, os.X_OK):
                    target.symlink_to(command)
    return str(bin_dir)


def files_under(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")} if root.exists() else set()


@pytest.fixture(scope="module")
def play(ansible: Any, tmp_path_factory: pytest.TempPathFactory) -> RolePlay:
    return RolePlay(ansible.env, tmp_path_factory.mktemp("role-inputs"))


# What the pattern accepts where systemd-analyze is missing; systemd-analyze (if present) agrees.
CALENDAR_SPECS = [
    "*-*-* 02:00:00",
    "Mon..Fri *-*-* 02:00:00",
    "Sat,Sun 04:30",
    "weekly",
    "2026-01-01 00:00:00 UTC",
    "*-*-01/2 03:15:00",
    "Tuesday *-*-* 01:00:00",
]
FALLBACK = "fallback_accepts"
# host -> its run, its directory, and the files it held before the run
BadRuns = dict[str, tuple[HostRun, Path, set[str]]]


def apply_cases(play: RolePlay, cases: list[Case], fallback: bool) -> BadRuns:
    """Each case applied once, with its directory and the files it held before.

    Two runs: one with systemd-analyze on PATH, one without it (for the cases that ask for that, and with
    ``fallback`` good calendar specs as host FALLBACK, which the role's pattern must accept).
    """
    roots: dict[str, Path] = {}
    before: dict[str, set[str]] = {}
    groups: dict[bool, dict[str, dict[str, Any]]] = {False: {}, True: {}}
    for case in cases:
        root = play.work / "roots" / case.id
        root.mkdir(parents=True)
        for kept in case.keep:
            (root / kept).parent.mkdir(parents=True, exist_ok=True)
            (root / kept).write_text("kept\n")
        roots[case.id] = root
        before[case.id] = files_under(root)
        values = base_vars(root, **case.extra, **{case.var: case.value})
        groups[case.no_systemd_analyze][case.id] = substitute(values, root)
    if fallback:
        roots[FALLBACK] = play.work / "roots" / FALLBACK
        before[FALLBACK] = set()
        groups[True][FALLBACK] = base_vars(roots[FALLBACK], ngc_mirror_on_calendar=CALENDAR_SPECS)
    runs = play.run("bad", groups[False]) if groups[False] else {}
    if groups[True]:
        runs.update(play.run("bad-no-analyze", groups[True], env={"PATH": path_without_systemd_analyze(play.work)}))
    return {host: (runs[host], root, before[host]) for host, root in roots.items()}


def judge(case: Case, bad_runs: BadRuns) -> None:
    """The play failed once for the case's host, the message names the variable and the value (not a secret), and the
    host's directory holds what it held before."""
    run, root, before = bad_runs[case.id]
    assert run.statuses.count("FAILED!") == 1, f"{case.id}: the play did not fail (once)\n{run.output[-4000:]}"
    message = "\n".join(run.messages)
    value = substitute(case.value, root)
    for expected in substitute(case.expect, root) if case.expect else [case.var, json.dumps(value)]:
        assert expected in message, f"{case.id}: {expected!r} not in the message:\n{message}"
    if case.secret:
        assert case.secret not in run.output
    assert FAKE_KEY not in run.output
    after = files_under(root)
    assert after == before, f"{case.id}: files were written or removed: {sorted(after ^ before)}"


# Every other row here, the rest in test_role_inputs_rest: a file of its own, so that a parallel run gives the two
# playbook runs to two workers.
HERE = CASES[::2]


@pytest.fixture(scope="module")
def bad_runs(play: RolePlay) -> BadRuns:
    return apply_cases(play, HERE, fallback=True)


@pytest.mark.parametrize("case", HERE, ids=[c.id for c in HERE])
def test_bad_input_fails_before_anything_is_written(case: Case, bad_runs: BadRuns) -> None:
    judge(case, bad_runs)


def test_calendar_pattern_accepts_real_specs_without_systemd_analyze(bad_runs: BadRuns) -> None:
    run, root = bad_runs[FALLBACK][:2]
    assert run.statuses and not run.failed, run.output[-4000:]
    timer = (root / "etc/systemd/system/ngc-mirror.timer").read_text()
    assert [line.split("=", 1)[1] for line in timer.splitlines() if line.startswith("OnCalendar=")] == CALENDAR_SPECS
    if shutil.which("systemd-analyze"):
        subprocess.run(["systemd-analyze", "calendar", *CALENDAR_SPECS], capture_output=True, check=True)
