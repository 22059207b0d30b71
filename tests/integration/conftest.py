# Copyright (c) airgap.ngc contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Integration fixtures: run the collection's modules and playbooks against the test bed.

The collection is used as installed by ``scripts/collection-tree.sh`` (``build/ansible_collections``).
Secrets reach the modules through the environment (``NGC_API_KEY``) or a vars file, never
through a command line, exactly as the README tells operators to do.

``Ansible.module()`` runs a module's own code for real but without the controller (starting ``ansible`` costs about
3 CPU-seconds whatever the module does): the built module file runs with the collection on ``PYTHONPATH`` and its
arguments on stdin, as ansible-core's ``hacking/test-module.py`` does, and its result is shown the way the controller
and the minimal callback show it (see ``_as_the_controller_shows``). A call with ``diff``, a ``verbosity`` or
``controller=True`` (a test of what the operator sees: output lines, callbacks, secrets in the controller's output)
goes through the real ``ansible`` ad hoc, as does every call when ``$AIRGAP_TEST_CONTROLLER`` is set. Playbooks, the
role, ansible-runner and molecule always run the real Ansible.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from ansible.release import __version__ as ANSIBLE_VERSION

REPO = Path(__file__).resolve().parents[2]
# Where the collection tree is built; another directory lets a developer test while `make test` runs.
BUILD = Path(os.environ.get("AIRGAP_BUILD_DIR", str(REPO / "build")))
# The tree this run built, for its workers (a parallel run builds it once, before they start, and they only read it).
ENV_TREE = "AIRGAP_COLLECTION_TREE"
# Set (to anything) to send every module call through the real `ansible` ad hoc.
ENV_CONTROLLER = "AIRGAP_TEST_CONTROLLER"


def _build_tree() -> Path:
    out = subprocess.run(
        ["bash", str(REPO / "scripts" / "collection-tree.sh"), str(BUILD)], capture_output=True, text=True, check=True
    )
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

    def __init__(self, env: dict[str, str], workdir: Path, collections: Path) -> None:
        self.env = env
        self.workdir = workdir
        self.collections = collections  # the directory that holds ansible_collections/airgap/ngc

    def _run(self, argv: list[str], env: dict[str, str] | None = None, timeout: int = 900) -> Run:
        full_env = dict(self.env)
        full_env.update(env or {})
        proc = subprocess.run(
            argv, env=full_env, cwd=str(REPO), capture_output=True, text=True, timeout=timeout, check=False
        )
        return Run(proc.returncode, proc.stdout, proc.stderr, _task_results(proc.stdout))

    def module(
        self,
        name: str,
        args: dict[str, Any],
        check: bool = False,
        diff: bool = False,
        api_key: str | None = None,
        verbosity: int = 0,
        env: dict[str, str] | None = None,
        controller: bool = False,
    ) -> Run:
        """Runs the module ``airgap.ngc.<name>`` once; the key goes through NGC_API_KEY. Through ``ansible localhost -m
        airgap.ngc.<name> -a <json>`` if asked (``controller``), for a diff or a verbosity, or if $AIRGAP_TEST_CONTROLLER
        is set; otherwise the module file runs without the controller and the same ``Run`` comes back."""
        extra = dict(env or {})
        if api_key is not None:
            extra["NGC_API_KEY"] = api_key
        if not (controller or diff or verbosity or os.environ.get(ENV_CONTROLLER)):
            return self._module_alone(name, args, check, extra)
        argv = [
            str(Path(sys.executable).parent / "ansible"),
            "localhost",
            "-m",
            f"airgap.ngc.{name}",
            "-a",
            json.dumps(args),
        ]
        if check:
            argv.append("--check")
        if diff:
            argv.append("--diff")
        if verbosity:
            argv.append("-" + "v" * verbosity)
        return self._run(argv, extra)

    def _module_alone(self, name: str, args: dict[str, Any], check: bool, env: dict[str, str]) -> Run:
        """The module's file of the built collection run by Python, its arguments on stdin with the internal ones the
        controller adds (check mode, module name, temporary directory), as AnsiballZ runs it on the target."""
        internal = {
            "_ansible_check_mode": check,
            "_ansible_diff": False,
            "_ansible_verbosity": 0,
            "_ansible_no_log": False,
            "_ansible_module_name": f"airgap.ngc.{name}",
            "_ansible_version": ANSIBLE_VERSION,
            "_ansible_remote_tmp": str(self.workdir / "remote-tmp"),
            "_ansible_keep_remote_files": False,
        }
        full_env = dict(self.env, PYTHONPATH=str(self.collections))
        full_env.update(env)
        # -P: the working directory (the checkout) is not put on sys.path; the module comes from the built tree only.
        argv = [sys.executable, "-P", "-m", f"ansible_collections.airgap.ngc.plugins.modules.{name}"]
        proc = subprocess.run(
            argv,
            input=json.dumps({"ANSIBLE_MODULE_ARGS": dict(args, **internal)}),
            env=full_env,
            cwd=str(REPO),
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
        return _as_the_controller_shows(proc)

    def playbook(
        self,
        playbook: Path | str,
        extra_vars: dict[str, Any] | None = None,
        check: bool = False,
        env: dict[str, str] | None = None,
        verbosity: int = 0,
    ) -> Run:
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


def _module_result(proc: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    """The JSON object the module printed (the first line that opens one, as the controller looks for it), or the
    controller's MODULE FAILURE result when there is none (a crash, a print)."""
    start = re.search(r"^\{", proc.stdout, re.MULTILINE)
    if start is not None:
        try:
            document = json.JSONDecoder().raw_decode(proc.stdout, start.start())[0]
        except ValueError:
            document = None
        if isinstance(document, dict):
            return document
    return {
        "failed": True,
        "msg": "MODULE FAILURE: Module result deserialization failed. See stdout/stderr for the returned output.",
        "module_stdout": proc.stdout,
        "module_stderr": proc.stderr,
        "rc": proc.returncode,
    }


def _as_the_controller_shows(proc: subprocess.CompletedProcess[str]) -> Run:
    """The module's result as ``ansible localhost -m`` with the minimal callback shows it (ansible-core 2.19): ``changed``
    and ``failed`` filled in, warnings on stderr, the error and ``localhost | STATUS => {json}`` on stdout without the
    internal keys, ``failed``, ``invocation`` and ``exception``, exit code 2 when the module failed. What the module wrote
    on stderr is dropped when it printed a result, as the controller does."""
    result = _module_result(proc)
    exception = result.pop("exception", None)
    if exception and "msg" not in result:  # an exception the module did not handle (AnsiballZ's wrapper reports it so)
        event = exception.get("event", {}) if isinstance(exception, dict) else {}
        result["msg"] = f"Module failed: {event.get('msg', exception)}"
    failed = bool(result["failed"]) if "failed" in result else result.get("rc", 0) not in (0, "0")
    result.setdefault("changed", False)
    for key in ("stdout", "stderr"):
        if isinstance(result.get(key), str) and f"{key}_lines" not in result:
            result[f"{key}_lines"] = result[key].splitlines()
    stderr = ""
    for label, key in (("WARNING", "warnings"), ("DEPRECATION WARNING", "deprecations")):
        for item in result.pop(key, None) or []:
            message = (item.get("msg") or item.get("event", {}).get("msg")) if isinstance(item, dict) else item
            stderr += f"[{label}]: {message}\n"
    shown = _without_internal_keys(
        {k: v for k, v in result.items() if k not in ("failed", "skipped", "invocation", "diff")}
    )
    stdout = f"[ERROR]: Task failed: Module failed: {result.get('msg', '')}\n\n" if failed else ""
    status = "FAILED!" if failed else "CHANGED" if result["changed"] else "SUCCESS"
    stdout += f"localhost | {status} => {json.dumps(shown, indent=4, ensure_ascii=False, sort_keys=True)}\n"
    return Run(2 if failed else 0, stdout, stderr, [shown])


def _without_internal_keys(value: Any) -> Any:
    """The result without the ``_ansible_*`` keys, at any depth (ansible's ``strip_internal_keys``)."""
    if isinstance(value, dict):
        return {
            k: _without_internal_keys(v)
            for k, v in value.items()
            if not (isinstance(k, str) and k.startswith("_ansible_"))
        }
    if isinstance(value, list):
        return [_without_internal_keys(v) for v in value]
    return value


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
    return Ansible(env, workdir, collection_tree.parents[2])
