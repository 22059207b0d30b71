# Copyright (c) airgap.ngc contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Unit tests for the progress file."""

from __future__ import annotations

import json
import os
import threading

import pytest

from ansible_collections.airgap.ngc.plugins.module_utils._types.errors import ConfigError
from ansible_collections.airgap.ngc.plugins.module_utils._state.progress import ProgressReporter


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def read(path) -> dict:
    return json.loads(path.read_text())


def test_no_path_is_a_no_op(tmp_path):
    reporter = ProgressReporter(None)
    reporter.start(10, 1)
    reporter.image("a")
    reporter.advance(5)
    reporter.finish("done")
    assert reporter.writes == 0 and os.listdir(tmp_path) == []


def test_writes_are_throttled(tmp_path):
    clock = FakeClock()
    path = tmp_path / "progress.json"
    reporter = ProgressReporter(str(path), min_interval=1.0, clock=clock, wall=lambda: 0.0)
    reporter.start(1000, 2)
    assert reporter.writes == 1
    assert read(path) == {
        "state": "running",
        "image": None,
        "images_done": 0,
        "images_total": 2,
        "bytes_done": 0,
        "bytes_total": 1000,
        "rate_bytes_per_s": 0,
        "eta_seconds": None,
        "updated": "1970-01-01T00:00:00Z",
    }
    reporter.image("nvcr.io/nvidia/pytorch:24.01-py3")
    clock.now += 0.5
    reporter.advance(100)
    assert reporter.writes == 1 and read(path)["bytes_done"] == 0
    clock.now += 0.5
    reporter.advance(100)
    assert reporter.writes == 2
    body = read(path)
    assert body["bytes_done"] == 200 and body["image"] == "nvcr.io/nvidia/pytorch:24.01-py3"
    assert body["rate_bytes_per_s"] == 200 and body["eta_seconds"] == 4
    for _round in range(50):
        reporter.advance(1)
    assert reporter.writes == 2
    reporter.image_done()
    reporter.finish("done")
    assert reporter.writes == 3
    body = read(path)
    assert (
        body["state"] == "done" and body["bytes_done"] == 250 and body["images_done"] == 1 and body["eta_seconds"] == 0
    )
    assert os.listdir(tmp_path) == ["progress.json"]


def test_rate_uses_recent_window(tmp_path):
    clock = FakeClock()
    path = tmp_path / "p.json"
    reporter = ProgressReporter(str(path), min_interval=1.0, clock=clock, window=10.0)
    reporter.start(10_000, 1)
    for _round in range(20):  # 100 B/s for 20 s
        clock.now += 1
        reporter.advance(100)
    for _round in range(20):  # then 10 B/s
        clock.now += 1
        reporter.advance(10)
    body = read(path)
    assert body["rate_bytes_per_s"] == 10
    assert body["eta_seconds"] == (10_000 - 2200) // 10


def test_failed_state_and_bad_status(tmp_path):
    path = tmp_path / "p.json"
    reporter = ProgressReporter(str(path), clock=FakeClock())
    reporter.start(10, 1)
    with pytest.raises(ConfigError, match="'done' or 'failed'"):
        reporter.finish("exploded")
    reporter.finish("failed")
    body = read(path)
    assert body["state"] == "failed" and body["eta_seconds"] is None


def test_advance_from_many_threads(tmp_path):
    path = tmp_path / "p.json"
    reporter = ProgressReporter(str(path), min_interval=0.0)
    reporter.start(8 * 500 * 3, 1)

    def work():
        for _round in range(500):
            reporter.advance(3)

    threads = [threading.Thread(target=work) for _round in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    reporter.finish("done")
    assert read(path)["bytes_done"] == 8 * 500 * 3
    assert reporter.error is None
    assert os.listdir(tmp_path) == ["p.json"]


def test_unwritable_path(tmp_path):
    with pytest.raises(ConfigError, match="cannot write the progress file"):
        ProgressReporter(str(tmp_path / "missing" / "p.json")).start(1, 1)


def test_later_write_failure_never_fails_the_run(tmp_path):
    clock = FakeClock()
    directory = tmp_path / "d"
    directory.mkdir()
    reporter = ProgressReporter(str(directory / "p.json"), clock=clock)
    reporter.start(100, 1)
    (directory / "p.json").unlink()
    directory.rmdir()
    clock.now += 5
    reporter.advance(10)
    reporter.finish("done")
    assert reporter.error and "cannot write the progress file" in reporter.error
    assert reporter.snapshot()["bytes_done"] == 10
