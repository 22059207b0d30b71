# Copyright (c) airgap.ngc contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Integration fixtures: run the collection through ``ansible`` and ``ansible-playbook`` against the test bed.

The collection is used as installed by ``scripts/collection-tree.sh`` (``build/ansible_collections``).
Secrets reach the modules through the environment (``NGC_API_KEY``) or a vars file, never
through a command line, exactly as the README tells operators to do.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
# Where the collection tree is built; another directory lets a developer test while `make test` runs.
BUILD = Path(os.environ.get("AIRGAP_BUILD_DIR", str(REPO / "build")))
# The tree this run built, for its workers (a parallel run builds it once, before they start, and they only read it).
ENV_TREE = "AIRGAP_COLLECTION_TREE"


def _build_tree() -> Path:
    out = subprocess.run(["bash", str(REPO / "scripts" / "collection-tree.sh"), str(BUILD)], capture_output=True, text=True, check=True)
    return REPO / out.stdout.strip().splitlines()[-1]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "engine: needs the test bed's Docker engine")
    if not hasattr(config, "workerinput") and getattr(config.option, "numprocesses", None):
        os.environ[ENV_TREE] = str(_build_tree())


@dataclass
class Run:
    """One ansible or ansible-playbook run: exit code, output, and the task results."""

    rc: int
    stdout: str
    stderr: str
    results: list[dict[str, Any]]

    @property
    def result(self) -> dict[str, Any]:
        assert self.results, f"no task result in the output:\n{self.stdout}\n{self.stderr}"
        return self.results[-1]


class Ansible:
    """Runs modules and playbooks of the built collection; results are read from the minimal callback."""

    def __init__(self, env: dict[str, str], workdir: Path) -> None:
        self.env = env
        self.workdir = workdir

    def _run(self, argv: list[str], env: dict[str, str] | None = None, timeout: int = 900) -> Run:
        full_env = dict(self.env)
        full_env.update(env or {})
        proc = subprocess.run(argv, env=full_env, cwd=str(REPO), capture_output=True, text=True, timeout=timeout, check=False)
        return Run(proc.returncode, proc.stdout, proc.stderr, _task_results(proc.stdout))

    def module(self, name: str, args: dict[str, Any], check: bool = False, diff: bool = False, api_key: str | None = None,
               verbosity: int = 0, env: dict[str, str] | None = None) -> Run:
        """``ansible localhost -m airgap.ngc.<name> -a <json>``; the key goes through NGC_API_KEY."""
        argv = [str(Path(sys.executable).parent / "ansible"), "localhost", "-m", f"airgap.ngc.{name}", "-a", json.dumps(args)]
        if check:
            argv.append("--check")
        if diff:
            argv.append("--diff")
        if verbosity:
            argv.append("-" + "v" * verbosity)
        extra = dict(env or {})
        if api_key is not None:
            extra["NGC_API_KEY"] = api_key
        return self._run(argv, extra)

    def playbook(self, playbook: Path | str, extra_vars: dict[str, Any] | None = None, check: bool = False,
                 env: dict[str, str] | None = None, verbosity: int = 0) -> Run:
        """``ansible-playbook``, extra vars from a mode-0600 file (they may hold passwords)."""
        argv = [str(Path(sys.executable).parent / "ansible-playbook"), str(playbook)]
        if extra_vars:
            vars_file = self.workdir / f"vars-{os.getpid()}-{len(list(self.workdir.iterdir()))}.json"
            vars_file.write_text(json.dumps(extra_vars))
            vars_file.chmod(0o600)
            argv += ["-e", f"@{vars_file}"]
        if check:
            argv.append("--check")
        if verbosity:
            argv.append("-" + "v" * verbosity)
        return self._run(argv, env)


def _task_results(stdout: str) -> list[dict[str, Any]]:
    """The results the minimal callback prints: ``host | STATUS => {json}``, one per task."""
    results = []
    decoder = json.JSONDecoder()
    position = 0
    while True:
        marker = stdout.find(" => {", position)
        if marker < 0:
            return results
        try:
            document, end = decoder.raw_decode(stdout, marker + 4)
        except ValueError:
            position = marker + 4
            continue
        results.append(document)
        position = end


@pytest.fixture(scope="session")
def collection_tree() -> Path:
    """The collection copied into build/ansible_collections/airgap/ngc, as ansible finds it."""
    built = os.environ.get(ENV_TREE)
    return Path(built) if built else _build_tree()


@pytest.fixture(scope="session")
def ansible(collection_tree: Path, tmp_path_factory: pytest.TempPathFactory) -> Ansible:
    workdir = tmp_path_factory.mktemp("ansible")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANSIBLE_", "NGC_"))}
    env.update(
        ANSIBLE_COLLECTIONS_PATH=str(BUILD),
        ANSIBLE_STDOUT_CALLBACK="ansible.builtin.minimal",
        ANSIBLE_LOAD_CALLBACK_PLUGINS="1",
        ANSIBLE_CALLBACK_RESULT_FORMAT="json",
        ANSIBLE_LOCAL_TEMP=str(workdir / "tmp"),
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_DEPRECATION_WARNINGS="0",
        ANSIBLE_LOCALHOST_WARNING="0",
        ANSIBLE_INVENTORY_UNPARSED_WARNING="0",
        ANSIBLE_PYTHON_INTERPRETER=sys.executable,
        PATH=f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
    )
    return Ansible(env, workdir)
