# Copyright (c) airgap.ngc contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The progress file shows the new run from its first second: "planning" while the images are resolved (slow here:
every manifest answer of the source is delayed), then "done"; never the previous run's "failed" meanwhile."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

TAGS = ["nvidia/pytorch:24.01-py3", "nvidia/cuda:12.2.0-base-ubuntu22.04"]


def test_the_progress_file_says_planning_from_the_first_second(
    ansible: Any, testbed: Any, faults: Any, tmp_path: Path
) -> None:
    progress = tmp_path / "progress.json"
    progress.write_text(
        json.dumps(
            {
                "state": "failed",
                "image": None,
                "images_done": 3,
                "images_total": 4,
                "bytes_done": 1,
                "bytes_total": 2,
                "rate_bytes_per_s": 0,
                "eta_seconds": None,
                "updated": "2026-12-06T02:00:00Z",
            }
        )
    )
    faults.registry(delay=2, count=None, path_contains="/manifests/")
    args = {
        "registry_url": testbed.source_proxy_url,
        "images": TAGS,
        "signatures": False,
        "facts_file": str(tmp_path / "mirror.fact"),
        "progress_file": str(progress),
        "archive": {"dir": str(tmp_path / "archives")},
    }
    argv = [
        str(Path(sys.executable).parent / "ansible"),
        "localhost",
        "-m",
        "airgap.ngc.ngc_image_mirror",
        "-a",
        json.dumps(args),
    ]
    proc = subprocess.Popen(
        argv,
        env=dict(ansible.env, NGC_API_KEY=testbed.api_key),
        cwd=str(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    states = []
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            state = json.loads(progress.read_text())["state"]
        except (OSError, ValueError, KeyError):
            state = None
        if state and (not states or states[-1] != state):
            states.append(state)
        time.sleep(0.05)
    out = proc.communicate(timeout=60)[0]
    assert proc.returncode == 0, out
    assert states[0] == "failed" and "planning" in states, (
        states
    )  # the last run's state, then this one's from its start
    assert states.index("planning") < len(states) - 1 and states[-1] == "done", states
    document = json.loads(progress.read_text())
    assert document["images_done"] == len(TAGS) and document["bytes_done"] > 0
    assert os.stat(progress).st_mode & 0o777 == 0o644
