# Copyright (c) airgap.ngc contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A private Docker engine (Debian's dockerd 20.10), started the way this machine allows.

``dockerd --data-root D/root --exec-root D/exec --pidfile D/docker.pid -H unix://D/docker.sock
--storage-driver vfs --iptables=false --ip6tables=false --bridge=none`` plus
``--config-file D/daemon.json`` (an empty one, so no system-wide daemon.json leaks in).
Clients use ``DOCKER_HOST=unix://D/docker.sock``. The engine treats registries on
127.0.0.0/8 as insecure (plain HTTP) without configuration. Must run as root.
"""

from __future__ import annotations

import shutil
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ._common import Daemon, ProcessRecord, TestbedError, start_daemon

DOCKERD = "dockerd"
MAX_DIR_LENGTH = 60  # unix socket paths (containerd's under exec/) must stay below 108 bytes


@dataclass
class Engine(Daemon):
    """A running dockerd."""

    LOG = "dockerd.log"

    @property
    def socket_path(self) -> Path:
        return self.directory / "docker.sock"

    @property
    def docker_host(self) -> str:
        return f"unix://{self.socket_path}"

    def records(self) -> list[ProcessRecord]:
        """dockerd, then the containerd it manages (stopped with it; listed in case dockerd dies hard)."""
        records = [ProcessRecord(name="dockerd", pid=self.pid, marker=str(self.socket_path))]
        containerd_pid = self.directory / "exec" / "containerd" / "containerd.pid"
        if containerd_pid.exists():
            pid = int(containerd_pid.read_text(encoding="utf-8").strip() or 0)
            if pid:
                records.append(ProcessRecord(name="containerd", pid=pid, marker=str(self.directory / "exec")))
        return records


def engine_directory(preferred: Path) -> Path:
    """`preferred` if its paths are short enough for unix sockets, else a new directory under /tmp."""
    if len(str(preferred.resolve())) <= MAX_DIR_LENGTH:
        preferred.mkdir(parents=True, exist_ok=True)
        return preferred.resolve()
    return Path(tempfile.mkdtemp(prefix="tb-engine-", dir="/tmp"))


def ping(socket_path: Path) -> bool:
    """True if the engine answers GET /_ping with 200 on its socket."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(2)
            sock.connect(str(socket_path))
            sock.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            answer = sock.recv(4096)
    except OSError:
        return False
    return answer.startswith(b"HTTP/1.") and b" 200 " in answer.split(b"\r\n", 1)[0]


def dockerd_argv(directory: Path) -> list[str]:
    return [
        DOCKERD,
        "--config-file",
        str(directory / "daemon.json"),
        "--data-root",
        str(directory / "root"),
        "--exec-root",
        str(directory / "exec"),
        "--pidfile",
        str(directory / "docker.pid"),
        "-H",
        f"unix://{directory / 'docker.sock'}",
        "--storage-driver",
        "vfs",
        "--iptables=false",
        "--ip6tables=false",
        "--bridge=none",
    ]


def launch_engine(preferred_dir: Path) -> Engine:
    """Start dockerd without waiting for it (see wait_engine)."""
    if shutil.which(DOCKERD) is None:
        raise TestbedError("dockerd not found: install Debian's docker.io")
    directory = engine_directory(preferred_dir)
    (directory / "daemon.json").write_text("{}\n", encoding="utf-8")
    return start_daemon(Engine, dockerd_argv(directory), directory)


def wait_engine(engine: Engine, timeout: float = 60) -> Engine:
    engine.wait_until(lambda: ping(engine.socket_path), timeout, "dockerd")
    return engine


def start_engine(preferred_dir: Path, timeout: float = 60) -> Engine:
    """Start dockerd and wait until its socket answers."""
    return wait_engine(launch_engine(preferred_dir), timeout)
