# Copyright (c) airgap.ngc contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A streaming, fault-injecting reverse proxy in front of the token registry.

Run: ``python -m tests.testbed.proxy --config FILE``; FILE is JSON with ``upstream``
(``http://127.0.0.1:PORT``), ``ready_file``, optional ``expired_realm``, ``host``, ``port``.

Request and response bodies are streamed in both directions (Content-Length or chunked);
headers pass unchanged except hop-by-hop ones, ``Host`` (set to the upstream) and absolute
``Location`` URLs pointing at the upstream (rewritten to the proxy). Like nvcr.io, a challenge
for an expired token (``error="invalid_token"``) names another realm when ``expired_realm``
is configured (the NGC stand-in's ``/token``); switch that off with the fault setting
``{"rewrite_expired_realm": false}``. Faults and stats: see ``_faults``; a rule with
``abort_after_bytes`` forwards that many response-body bytes and then drops the connection.
"""

from __future__ import annotations

import http.client
import re
import socket
from typing import Any
from urllib.parse import SplitResult, urlsplit

from ._faults import FaultRule
from ._httpd import COPY_CHUNK, TestbedHandler, run_server

HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "trailers",
    "transfer-encoding",
    "upgrade",
    "expect",
    "host",
    "date",
    "server",
    "content-length",
}
SETTINGS = {"rewrite_expired_realm": True}
REALM_RE = re.compile(r'realm="[^"]*"')


class ProxyHandler(TestbedHandler):
    """Forwards every request to the upstream registry."""

    def fault_body(self, status: int) -> dict[str, Any]:
        code = "TOOMANYREQUESTS" if status == 429 else "UNAVAILABLE"
        return {"errors": [{"code": code, "message": f"testbed fault {status}", "detail": None}]}

    def handle_request(self, url: SplitResult, rule: FaultRule | None) -> None:
        upstream = urlsplit(self.server.config["upstream"])
        conn = http.client.HTTPConnection(upstream.hostname or "127.0.0.1", upstream.port or 80, timeout=600)
        try:
            self._send_upstream(conn, upstream.netloc)
        except OSError:
            # The upstream answered before reading the whole body (say, a 401 on a PATCH):
            # relay that answer, and drop the client connection, whose body was not read to the end.
            self.close_connection = True
        try:
            response = conn.getresponse()
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            self.send_json(
                502, {"errors": [{"code": "UNAVAILABLE", "message": f"testbed proxy: upstream failed: {exc}"}]}
            )
            return
        try:
            self._relay_response(response, upstream.netloc, rule)
        finally:
            conn.close()

    def _send_upstream(self, conn: http.client.HTTPConnection, netloc: str) -> None:
        chunked = "chunked" in self.headers.get("Transfer-Encoding", "").lower()
        length = self.headers.get("Content-Length")
        conn.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
        conn.putheader("Host", netloc)
        for key, value in self.headers.items():
            if key.lower() not in HOP_BY_HOP:
                conn.putheader(key, value)
        if chunked:
            conn.putheader("Transfer-Encoding", "chunked")
        elif length is not None:
            conn.putheader("Content-Length", length)
        conn.endheaders()
        for piece in self.iter_body():
            conn.send(b"%x\r\n%b\r\n" % (len(piece), piece) if chunked else piece)
        if chunked:
            conn.send(b"0\r\n\r\n")

    def _relay_response(self, response: http.client.HTTPResponse, netloc: str, rule: FaultRule | None) -> None:
        has_body = self.command != "HEAD" and response.status >= 200 and response.status not in (204, 304)
        length = response.getheader("Content-Length")
        self.send_response(response.status, response.reason)
        for key, value in response.getheaders():
            if key.lower() not in HOP_BY_HOP:
                self.send_header(key, self._rewrite(key, value, netloc))
        if length is not None:
            self.send_header("Content-Length", length)
        elif has_body:
            self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        if has_body:
            self._relay_body(response, chunked=length is None, limit=rule.abort_after_bytes if rule else None)

    def _rewrite(self, key: str, value: str, netloc: str) -> str:
        lower = key.lower()
        if lower == "location":
            for scheme in ("http://", "https://"):
                if value.startswith(f"{scheme}{netloc}"):
                    return f"http://{self.headers.get('Host', '')}{value[len(scheme) + len(netloc) :]}"
        expired_realm = self.server.config.get("expired_realm")
        if (
            lower == "www-authenticate"
            and expired_realm
            and 'error="invalid_token"' in value
            and self.server.faults.setting("rewrite_expired_realm")
        ):
            return REALM_RE.sub(f'realm="{expired_realm}"', value, count=1)
        return value

    def _relay_body(self, response: http.client.HTTPResponse, chunked: bool, limit: int | None) -> None:
        sent = 0
        while True:
            piece = response.read1(COPY_CHUNK)
            if not piece:
                break
            if limit is not None and sent + len(piece) >= limit:
                self._write(piece[: max(0, limit - sent)], chunked)
                self._drop_connection()
                return
            self._write(piece, chunked)
            sent += len(piece)
        if chunked:
            self.wfile.write(b"0\r\n\r\n")

    def _write(self, piece: bytes, chunked: bool) -> None:
        if not piece:
            return
        self.wfile.write(b"%x\r\n%b\r\n" % (len(piece), piece) if chunked else piece)

    def _drop_connection(self) -> None:
        self.close_connection = True
        try:
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def main() -> None:
    run_server(ProxyHandler, SETTINGS, "Streaming fault-injecting reverse proxy for the test bed registry")


if __name__ == "__main__":
    main()
