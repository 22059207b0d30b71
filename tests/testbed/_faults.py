# Copyright (c) airgap.ngc contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private: the runtime fault switch and request counters shared by the NGC stand-in and the proxy.

Control API (same on both servers, never faulted or counted itself):

- ``POST /_testbed/faults`` with a JSON object (or a list of them). Rule keys queue a fault rule:
  ``status`` (HTTP status to answer instead of the real one, e.g. 429 or 503; omit for a
  pass-through rule that only delays or aborts), ``count`` (how many matching requests it
  hits, default 1, ``null`` for unlimited), ``retry_after`` (seconds, sent as ``Retry-After``),
  ``path_prefix`` (default ``/``), ``path_contains``, ``method`` (default any), ``delay``
  (seconds to sleep before answering), ``abort_after_bytes`` (proxy only: forward that many
  body bytes, then drop the connection), ``after`` (the first that many matching requests pass untouched). Setting keys change behaviour until reset:
  ``token_lifetime`` (seconds; NGC and registry tokens), ``anonymous_pull`` (NGC stand-in:
  registry tokens without credentials), ``revoke_ngc_tokens`` (NGC stand-in: the catalog API
  refuses every bearer token), ``deny_catalog`` (NGC stand-in: registry tokens never grant
  ``registry:catalog:*``), ``rewrite_expired_realm`` (proxy), ``extra_repositories`` (NGC stand-in: repository
  records added to the catalog, for one test). Unknown keys: 400.
- ``GET /_testbed/faults``: the queued rules and settings. ``DELETE /_testbed/faults``: reset them.
- ``GET /_testbed/stats``: ``{"total", "paths": {path: n}, "statuses": {code: n}, "faults_served",
  "requests": [{"method", "path", "status", "fault"}]}`` (path without query string; the last
  2000 requests). ``DELETE /_testbed/stats``: zero them.
"""

from __future__ import annotations

import threading
from collections import Counter, deque
from dataclasses import asdict, dataclass, fields
from typing import Any


@dataclass
class FaultRule:
    status: int | None = None
    count: int | None = 1
    retry_after: float | None = None
    path_prefix: str = "/"
    path_contains: str = ""
    method: str = ""
    delay: float = 0.0
    abort_after_bytes: int | None = None
    after: int = 0

    def matches(self, method: str, path: str) -> bool:
        if self.count is not None and self.count <= 0:
            return False
        if self.method and self.method.upper() != method.upper():
            return False
        return path.startswith(self.path_prefix) and self.path_contains in path

    def retry_after_header(self) -> str | None:
        if self.retry_after is None:
            return None
        value = float(self.retry_after)
        return str(int(value)) if value.is_integer() else f"{value:g}"


RULE_KEYS = frozenset(f.name for f in fields(FaultRule))


def _check_rule(rule: FaultRule) -> None:
    if rule.status is not None and not 100 <= int(rule.status) <= 599:
        raise ValueError(f"status {rule.status} is not an HTTP status code")
    if rule.status is None and not rule.delay and rule.abort_after_bytes is None:
        raise ValueError("a rule needs status, delay or abort_after_bytes")


class FaultBook:
    """Queued fault rules plus settings; thread-safe."""

    def __init__(self, setting_defaults: dict[str, Any]) -> None:
        self._lock = threading.Lock()
        self._defaults = dict(setting_defaults)
        self._settings = dict(setting_defaults)
        self._rules: list[FaultRule] = []

    def configure(self, payload: Any) -> None:
        items = payload if isinstance(payload, list) else [payload]
        for item in items:
            self._configure_one(item)

    def _configure_one(self, item: Any) -> None:
        if not isinstance(item, dict):
            raise ValueError("each fault must be a JSON object")
        unknown = set(item) - RULE_KEYS - set(self._defaults)
        if unknown:
            raise ValueError(f"unknown fault keys: {', '.join(sorted(unknown))}")
        rule_args = {k: v for k, v in item.items() if k in RULE_KEYS}
        with self._lock:
            for key in set(item) & set(self._defaults):
                self._settings[key] = item[key]
            if rule_args:
                rule = FaultRule(**rule_args)
                _check_rule(rule)
                self._rules.append(rule)

    def reset(self) -> None:
        with self._lock:
            self._rules.clear()
            self._settings = dict(self._defaults)

    def setting(self, key: str) -> Any:
        with self._lock:
            return self._settings[key]

    def take(self, method: str, path: str) -> FaultRule | None:
        """The first rule matching this request, with its count used up by one."""
        with self._lock:
            for rule in self._rules:
                if rule.matches(method, path):
                    if rule.after > 0:
                        rule.after -= 1
                        continue
                    if rule.count is not None:
                        rule.count -= 1
                    return FaultRule(**asdict(rule))
        return None

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            active = [asdict(r) for r in self._rules if r.count is None or r.count > 0]
            return {"rules": active, "settings": dict(self._settings)}


class RequestStats:
    """Counts requests per path and status; keeps the most recent ones."""

    def __init__(self, keep: int = 2000) -> None:
        self._lock = threading.Lock()
        self._keep = keep
        self._reset_locked()

    def _reset_locked(self) -> None:
        self._paths: Counter[str] = Counter()
        self._statuses: Counter[str] = Counter()
        self._faults = 0
        self._recent: deque[dict[str, Any]] = deque(maxlen=self._keep)

    def reset(self) -> None:
        with self._lock:
            self._reset_locked()

    def record(self, method: str, path: str, status: int, fault: bool, received: int = 0) -> None:
        with self._lock:
            self._paths[path] += 1
            self._statuses[str(status)] += 1
            self._faults += int(fault)
            self._recent.append({"method": method, "path": path, "status": status, "fault": fault, "bytes": received})

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "total": sum(self._paths.values()),
                "paths": dict(self._paths),
                "statuses": dict(self._statuses),
                "faults_served": self._faults,
                "requests": list(self._recent),
            }
