# Copyright (c) airgap.ngc contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Offline stand-in for ansible-test's get-pip bootstrap script.

ansible-test downloads get-pip.py from the internet to seed the virtual environments it
builds for sanity tests. This script does the same job without that download: it installs
pip from the interpreter's bundled ``ensurepip`` wheel, then lets that pip install the
requested versions from the configured package index.
"""

from __future__ import annotations

import os
import subprocess
import sys

DROPPED_OPTIONS = {"--no-setuptools", "--no-wheel"}


def main() -> int:
    saved_env = dict(os.environ)
    subprocess.run(
        [sys.executable, "-m", "ensurepip", "--upgrade", "--default-pip"], check=True, stdout=subprocess.DEVNULL
    )
    args = [arg for arg in sys.argv[1:] if arg not in DROPPED_OPTIONS]
    # ensurepip sets PIP_CONFIG_FILE=/dev/null; pip must see this machine's index settings.
    return subprocess.run(
        [sys.executable, "-m", "pip", "install", "--upgrade", *args], env=saved_env, check=False
    ).returncode


if __name__ == "__main__":
    sys.exit(main())
