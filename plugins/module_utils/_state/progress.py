# Copyright (c) airgap.ngc contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private: a small JSON progress file for long mirror runs (modules cannot print progress). Not a public API."""

from __future__ import annotations

import json
import os
import threading
import time
from collections import deque
from datetime import datetime, timezone
from typing import Any, Callable

from ansible_collections.airgap.ngc.plugins.module_utils._types.errors import AirgapError, ConfigError
from ansible_collections.airgap.ngc.plugins.module_utils._formats.files import atomic_write

STATES = ("running", "done", "failed", "planning")


class ProgressReporter:
    """Writes {"state", "image", "images_done", "images_total", "bytes_done", "bytes_total", "rate_bytes_per_s",
    "eta_seconds", "updated"} to path, atomically, at most once per min_interval seconds (always on start and finish).

    advance() is thread-safe. The rate is measured over the last `window` seconds. path None makes every call a no-op.
    A write that fails after start() is remembered in .error and further writes stop: progress never fails a run.
    """

    def __init__(
        self,
        path: str | None,
        min_interval: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        window: float = 30.0,
    ) -> None:
        self.path = os.path.abspath(path) if path else None
        self.min_interval = float(min_interval)
        self.window = float(window)
        self._clock = clock
        self._wall = wall
        self._lock = threading.Lock()
        self._state = "running"
        self._image: str | None = None
        self._images_done = 0
        self._images_total = 0
        self._bytes_done = 0
        self._bytes_total = 0
        self._started: float | None = None
        self._last_write: float | None = None
        self._samples: deque[tuple[float, int]] = deque()
        self.writes = 0
        self.error: str | None = None

    def start(self, total_bytes: int, images_total: int, state: str = "running") -> None:
        """Begin a run (``state`` "planning" while the images are resolved and checked, then "running"); raises
        ConfigError if the progress file cannot be written at all."""
        if self.path is None:
            return
        with self._lock:
            now = self._clock()
            self._state = state
            self._bytes_total = max(0, int(total_bytes))
            self._images_total = max(0, int(images_total))
            self._bytes_done = 0
            self._images_done = 0
            self._image = None
            self._started = now
            self._samples.clear()
            self.error = None
            try:
                self._write(now)
            except AirgapError as exc:
                raise ConfigError(str(exc)) from None

    def image(self, name: str) -> None:
        """The image now being copied."""
        if self.path is None:
            return
        with self._lock:
            self._image = name
            self._maybe_write()

    def image_done(self, count: int = 1) -> None:
        """One more image finished (copied, or found already up to date)."""
        if self.path is None:
            return
        with self._lock:
            self._images_done += count
            self._maybe_write()

    def add_total(self, nbytes: int) -> None:
        """Grow the byte total (when sizes become known during the run)."""
        if self.path is None:
            return
        with self._lock:
            self._bytes_total = max(0, self._bytes_total + int(nbytes))

    def advance(self, nbytes: int) -> None:
        """nbytes more were transferred (negative to take back bytes of a retried blob). Safe from any thread."""
        if self.path is None:
            return
        with self._lock:
            self._bytes_done = max(0, self._bytes_done + int(nbytes))
            self._maybe_write()

    def finish(self, status: str = "done") -> None:
        """End the run with state "done" or "failed"; always written."""
        if status not in ("done", "failed"):
            raise ConfigError(f"progress status must be 'done' or 'failed', got {status!r}")
        if self.path is None:
            return
        with self._lock:
            self._state = status
            self._try_write(self._clock())

    def snapshot(self) -> dict[str, Any]:
        """What would be written now."""
        with self._lock:
            return self._body(self._clock(), record=False)

    # -- internals (called with the lock held) ---------------------------------------------------------------------
    def _maybe_write(self) -> None:
        if self._started is None:
            return
        now = self._clock()
        if self._last_write is None or now - self._last_write >= self.min_interval:
            self._try_write(now)

    def _try_write(self, now: float) -> None:
        if self.error is not None:
            return
        try:
            self._write(now)
        except AirgapError as exc:
            self.error = str(exc)

    def _rate(self, now: float, record: bool) -> float:
        samples = self._samples if record else deque(self._samples)
        samples.append((now, self._bytes_done))
        while len(samples) > 2 and now - samples[1][0] >= self.window:
            samples.popleft()
        first_time, first_bytes = samples[0]
        if now - first_time <= 0:
            return 0.0
        return max(0.0, (self._bytes_done - first_bytes) / (now - first_time))

    def _body(self, now: float, record: bool) -> dict[str, Any]:
        rate = self._rate(now, record)
        left = max(0, self._bytes_total - self._bytes_done)
        if self._state == "done":
            eta: int | None = 0
        elif self._state == "running" and rate > 0:
            eta = int(round(left / rate))
        else:
            eta = None
        return {
            "state": self._state,
            "image": self._image,
            "images_done": self._images_done,
            "images_total": self._images_total,
            "bytes_done": self._bytes_done,
            "bytes_total": self._bytes_total,
            "rate_bytes_per_s": int(round(rate)),
            "eta_seconds": eta,
            "updated": datetime.fromtimestamp(self._wall(), timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }

    def _write(self, now: float) -> None:
        if self.path is None:
            return
        # No fsync: the progress file is rewritten every second and only ever a hint.
        atomic_write(
            self.path,
            (json.dumps(self._body(now, record=True), sort_keys=True) + "\n").encode("utf-8"),
            0o644,
            "progress file",
            sync=False,
        )
        self._last_write = now
        self.writes += 1
