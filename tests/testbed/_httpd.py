# Copyright (c) airgap.ngc contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private: the threaded HTTP server base of the NGC stand-in and the fault proxy.

It answers the fault-switch control API (see _faults), counts requests and applies
queued faults before a subclass sees the request.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import SplitResult, urlsplit

from ._common import LOOPBACK, read_json, write_json
from ._faults import FaultBook, FaultRule, RequestStats

CONTROL_PREFIX = "/_testbed/"
COPY_CHUNK = 1 << 20


class TestbedServer(ThreadingHTTPServer):
    """A threaded HTTP server carrying its configuration, fault book and counters."""

    __test__ = False
    daemon_threads = True
    request_queue_size = 128

    def __init__(
        self, handler: type[BaseHTTPRequestHandler], config: dict[str, Any], setting_defaults: dict[str, Any]
    ) -> None:
        super().__init__((config.get("host", LOOPBACK), int(config.get("port", 0))), handler)
        self.config = config
        self.faults = FaultBook(setting_defaults)
        self.stats = RequestStats()

    @property
    def port(self) -> int:
        return int(self.server_address[1])


class TestbedHandler(BaseHTTPRequestHandler):
    """Dispatches control requests, records stats and serves faults; subclasses implement handle_request."""

    protocol_version = "HTTP/1.1"
    server: TestbedServer
    _status = 0
    _fault = False
    _received = 0  # request body bytes read

    def log_message(self, format: str, *args: Any) -> None:  # pylint: disable=redefined-builtin
        """Quiet: the stats endpoint is the request log."""

    def send_response(self, code: int, message: str | None = None) -> None:
        self._status = code
        super().send_response(code, message)

    def _dispatch(self) -> None:
        self._status = 0
        self._fault = False
        self._received = 0
        url = urlsplit(self.path)
        if url.path.startswith(CONTROL_PREFIX):
            self._control(url.path)
            return
        try:
            rule = self.server.faults.take(self.command, url.path)
            if rule is not None and rule.delay:
                time.sleep(float(rule.delay))
            if rule is not None and rule.status is not None:
                self._fault = True
                self.drain_body()
                self.answer_fault(rule)
            else:
                self.handle_request(url, rule)
        finally:
            self.server.stats.record(self.command, url.path, self._status, self._fault, self._received)

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _dispatch

    def handle_request(self, url: SplitResult, rule: FaultRule | None) -> None:
        raise NotImplementedError

    def answer_fault(self, rule: FaultRule) -> None:
        headers = {"Retry-After": rule.retry_after_header()}
        self.send_json(int(rule.status or 500), self.fault_body(int(rule.status or 500)), headers)

    def fault_body(self, status: int) -> dict[str, Any]:
        return {"error": f"testbed fault {status}"}

    # Control API ---------------------------------------------------------------------
    def _control(self, path: str) -> None:
        body = self.read_body()
        target = {"/_testbed/faults": self._control_faults, "/_testbed/stats": self._control_stats}.get(
            path.rstrip("/")
        )
        if target is None:
            self.send_json(404, {"error": f"no control endpoint {path}"})
            return
        target(body)

    def _control_faults(self, body: bytes) -> None:
        if self.command == "POST":
            try:
                self.server.faults.configure(json.loads(body or b"{}"))
            except (ValueError, TypeError) as exc:
                self.send_json(400, {"error": str(exc)})
                return
        elif self.command == "DELETE":
            self.server.faults.reset()
        elif self.command != "GET":
            self.send_json(405, {"error": "use GET, POST or DELETE"})
            return
        self.send_json(200, self.server.faults.snapshot())

    def _control_stats(self, body: bytes) -> None:
        if self.command == "DELETE":
            self.server.stats.reset()
        self.send_json(200, self.server.stats.snapshot())

    # Helpers -------------------------------------------------------------------------
    def send_json(self, status: int, body: Any, headers: dict[str, str | None] | None = None) -> None:
        data = json.dumps(body, indent=1).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            if value is not None:
                self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def iter_body(self) -> Iterator[bytes]:
        """The request body in pieces, whether sent with Content-Length or chunked."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            yield from self._iter_chunked()
            return
        remaining = int(self.headers.get("Content-Length") or 0)
        while remaining > 0:
            piece = self.rfile.read(min(COPY_CHUNK, remaining))
            if not piece:
                raise ConnectionError("client closed the connection mid-body")
            remaining -= len(piece)
            self._received += len(piece)
            yield piece

    def _iter_chunked(self) -> Iterator[bytes]:
        while True:
            size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass
                return
            remaining = size
            while remaining > 0:
                piece = self.rfile.read(min(COPY_CHUNK, remaining))
                if not piece:
                    raise ConnectionError("client closed the connection mid-chunk")
                remaining -= len(piece)
                self._received += len(piece)
                yield piece
            self.rfile.readline()

    def read_body(self) -> bytes:
        return b"".join(self.iter_body())

    def drain_body(self) -> None:
        for _piece in self.iter_body():
            pass


def run_server(handler: type[TestbedHandler], setting_defaults: dict[str, Any], description: str) -> None:
    """Entry point of a component: `--config FILE` (JSON); writes `ready_file` once listening."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--config", required=True, type=Path, help="JSON configuration file")
    args = parser.parse_args()
    config = read_json(args.config)
    server = TestbedServer(handler, config, setting_defaults)
    signal.signal(signal.SIGTERM, _exit_on_signal)
    if config.get("ready_file"):
        write_json(
            Path(config["ready_file"]),
            {"port": server.port, "pid": os.getpid(), "url": f"http://{LOOPBACK}:{server.port}"},
        )
    try:
        server.serve_forever(poll_interval=0.2)
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        server.server_close()
    sys.exit(0)


def _exit_on_signal(signum: int, frame: Any) -> None:
    raise SystemExit(0)
