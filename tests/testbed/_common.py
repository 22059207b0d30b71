# Copyright (c) airgap.ngc contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private: process, port and file helpers shared by the test bed components."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, TypeVar

import requests

REPO_ROOT = Path(__file__).resolve().parents[2]
LOOPBACK = "127.0.0.1"


class TestbedError(RuntimeError):
    """A test bed component could not be started, reached or stopped."""

    __test__ = False  # not a pytest test class


def free_port() -> int:
    """Ask the kernel for a free loopback port (bind port 0, read it, release it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def write_json(path: Path, data: Any, mode: int = 0o600) -> None:
    """Write JSON atomically (temp file + rename) with the given permissions."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=2, sort_keys=True)
        handle.write("\n")
    os.replace(tmp, path)


def read_json(path: Path) -> Any:
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def python_env() -> dict[str, str]:
    """Environment for child Python processes: the repository root importable as `tests.testbed`."""
    env = dict(os.environ)
    paths = [str(REPO_ROOT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def python_module_argv(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


def spawn(argv: list[str], log_path: Path, cwd: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    """Start a background process in its own session; stdout and stderr go to log_path."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        return subprocess.Popen(  # pylint: disable=consider-using-with
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=str(cwd),
            env=env,
            start_new_session=True,
            close_fds=True,
        )


@dataclass
class Daemon:
    """A daemon the test bed started in a directory of its own (dockerd, containerd): its pid, its process (None when
    known only from a record) and its log, ``directory / LOG``."""

    LOG: ClassVar[str] = "daemon.log"
    directory: Path
    pid: int
    proc: subprocess.Popen | None = field(default=None, repr=False, compare=False)

    @property
    def log_path(self) -> Path:
        return self.directory / self.LOG

    def wait_until(self, check: Callable[[], bool], timeout: float, what: str) -> None:
        """Poll check() until it is true; fail at once, with the log's tail, if the daemon exits meanwhile."""
        proc = self.proc
        alive = (lambda: proc.poll() is None) if proc is not None else None
        wait_until(check, timeout, what, alive=alive, log_path=self.log_path)


DaemonT = TypeVar("DaemonT", bound=Daemon)


def start_daemon(kind: type[DaemonT], argv: list[str], directory: Path) -> DaemonT:
    """Start argv in directory, its output to ``directory / kind.LOG``, without waiting for it (see Daemon.wait_until)."""
    proc = spawn(argv, directory / kind.LOG, cwd=directory)
    return kind(directory=directory, pid=proc.pid, proc=proc)


def log_tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


def wait_until(
    check: Callable[[], bool],
    timeout: float,
    what: str,
    alive: Callable[[], bool] | None = None,
    log_path: Path | None = None,
) -> None:
    """Poll check() until it is true; fail early if alive() turns false."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        if alive is not None and not alive():
            raise TestbedError(f"{what} exited during start-up; log:\n{log_tail(log_path) if log_path else ''}")
        time.sleep(0.05)
    raise TestbedError(
        f"timed out after {timeout:.0f}s waiting for {what}; log:\n{log_tail(log_path) if log_path else ''}"
    )


def http_answers(url: str) -> bool:
    """True if something answers HTTP at url (any status code)."""
    try:
        requests.get(url, timeout=2)
    except requests.RequestException:
        return False
    return True


def wait_ready_file(
    path: Path, proc: subprocess.Popen, what: str, log_path: Path, timeout: float = 30
) -> dict[str, Any]:
    """Wait for a component to write its ready file ({"port": ..., "pid": ...}) and return it."""
    wait_until(path.exists, timeout, what, alive=lambda: proc.poll() is None, log_path=log_path)
    return read_json(path)


def _proc_state(pid: int) -> str | None:
    """The one-letter state from /proc/<pid>/stat, or None if there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8")
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[0]


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace")
    except OSError:
        return ""


def pid_alive(pid: int) -> bool:
    state = _proc_state(pid)
    return state is not None and state not in ("Z", "X")


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


@dataclass
class ProcessRecord:
    """A background process the test bed started: its pid and a string its command line contains."""

    name: str
    pid: int
    marker: str

    def matches(self) -> bool:
        """Guard against pid reuse: only a live process whose command line still carries the marker is ours."""
        return pid_alive(self.pid) and self.marker in _cmdline(self.pid)

    def stop(self, timeout: float = 30) -> None:
        """SIGTERM, wait, then SIGKILL."""
        if not self.matches():
            _reap(self.pid)
            return
        os.kill(self.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            _reap(self.pid)
            if not pid_alive(self.pid):
                return
            time.sleep(0.05)
        os.kill(self.pid, signal.SIGKILL)
        while pid_alive(self.pid):
            _reap(self.pid)
            time.sleep(0.05)
