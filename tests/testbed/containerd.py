# Copyright (c) airgap.ngc contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A private containerd (Debian's containerd 1.6, which docker.io brings), as a Kubernetes node runs it.

Its own directory D (short: unix socket paths are limited to 108 bytes) holds ``config.toml``
(``version = 2``, ``root = "D/root"``, ``state = "D/state"``, ``[grpc] address = "D/c.sock"``, the CRI
plugin's registry ``config_path = "D/certs.d"``), the log and the socket. Clients use
``ctr --address D/c.sock -n k8s.io ...``. ``stop()`` ends it by its pid, unmounts everything under
D (``umount -R``) and removes D. Must run as root.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ._common import Daemon, ProcessRecord, TestbedError, start_daemon

CONTAINERD = "containerd"
CTR = "ctr"

CONFIG = """\
version = 2
root = "{d}/root"
state = "{d}/state"

[grpc]
  address = "{d}/c.sock"

[ttrpc]
  address = "{d}/c.sock.ttrpc"

[plugins."io.containerd.internal.v1.opt"]
  path = "{d}/opt"

[plugins."io.containerd.grpc.v1.cri"]
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"

[plugins."io.containerd.grpc.v1.cri".registry]
  config_path = "{d}/certs.d"
"""


@dataclass
class Containerd(Daemon):
    """A running containerd of the test bed's own."""

    LOG = "containerd.log"

    @property
    def address(self) -> str:
        return str(self.directory / "c.sock")

    @property
    def config_path(self) -> Path:
        """The CRI plugin's registry ``config_path`` (``certs.d``): where hosts.toml drop-ins go."""
        return self.directory / "certs.d"

    def ctr(self, *args: str, namespace: str = "k8s.io", check: bool = True, timeout: float = 300) -> str:
        """Run ``ctr --address SOCKET -n NAMESPACE ARGS``; its stdout (raises with stderr if check and it fails)."""
        proc = subprocess.run(
            [CTR, "--address", self.address, "-n", namespace, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and proc.returncode != 0:
            raise TestbedError(f"ctr {' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()}")
        return proc.stdout

    def images(self, namespace: str = "k8s.io") -> dict[str, str]:
        """``ctr images ls``: image name -> target digest."""
        found = {}
        for line in self.ctr("images", "ls", namespace=namespace).splitlines()[1:]:
            parts = line.split()
            if len(parts) >= 3:
                found[parts[0]] = parts[2]
        return found

    def record(self) -> ProcessRecord:
        return ProcessRecord(name="containerd", pid=self.pid, marker=str(self.directory / "config.toml"))

    def stop(self) -> None:
        """Stop containerd by its pid, unmount what it left mounted under its directory, remove the directory."""
        self.record().stop()
        if self.proc is not None:
            self.proc.poll()
        unmount_below(self.directory)
        shutil.rmtree(self.directory, ignore_errors=True)


def mounts_below(directory: Path) -> list[str]:
    """Mount points at or below directory (from /proc/self/mounts)."""
    prefix = str(directory.resolve())
    found = []
    with open("/proc/self/mounts", encoding="utf-8") as handle:
        for line in handle:
            point = line.split()[1].replace("\\040", " ")
            if point == prefix or point.startswith(prefix + "/"):
                found.append(point)
    return found


def unmount_below(directory: Path) -> None:
    """``umount -R`` every mount under directory, deepest first; raises if any is left."""
    for point in sorted(mounts_below(directory), key=len, reverse=True):
        subprocess.run(["umount", "-R", point], capture_output=True, check=False)
    left = mounts_below(directory)
    if left:
        raise TestbedError(f"mounts left under {directory}: {left}")


def start_containerd(timeout: float = 60) -> Containerd:
    """Start a containerd in a new short directory under /tmp and wait until ``ctr version`` answers."""
    if shutil.which(CONTAINERD) is None or shutil.which(CTR) is None:
        raise TestbedError("containerd or ctr not found: install Debian's containerd")
    directory = Path(tempfile.mkdtemp(prefix="tb-ctd-", dir="/tmp"))
    (directory / "certs.d").mkdir()
    config = directory / "config.toml"
    config.write_text(CONFIG.format(d=directory), encoding="utf-8")
    node = start_daemon(Containerd, [CONTAINERD, "--config", str(config)], directory)

    def answers() -> bool:
        return (
            subprocess.run(
                [CTR, "--address", node.address, "version"], capture_output=True, check=False, timeout=10
            ).returncode
            == 0
        )

    try:
        node.wait_until(answers, timeout, "containerd")
    except BaseException:
        node.stop()
        raise
    return node
