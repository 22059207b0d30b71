# Copyright (c) airgap.ngc contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The proxy environment (HTTP_PROXY, HTTPS_PROXY, NO_PROXY) is honoured, host by host, and read once per host
rather than on every request; against an in-process forward proxy and origin server on the loopback (no other
network)."""

from __future__ import annotations

import http.client
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Iterator, List
from urllib.parse import urlsplit

import pytest

from ansible_collections.airgap.ngc.plugins.module_utils._http import transport as _http
from ansible_collections.airgap.ngc.plugins.module_utils._types.errors import NgcError
from ansible_collections.airgap.ngc.plugins.module_utils._http.transport import HttpTransport
from ansible_collections.airgap.ngc.plugins.module_utils._clients.registry import RegistryClient


class Origin(BaseHTTPRequestHandler):
    """Answers every GET with 200 and ``{}``, saying who asked (a request line in origin form, not through a proxy)."""

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self.server.seen.append(self.path)  # type: ignore[attr-defined]
        body = b"{}"
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        """Quiet."""


class ForwardProxy(BaseHTTPRequestHandler):
    """A forward proxy: GET with an absolute URL is fetched from the origin and answered with ``Via``; a CONNECT is
    recorded and refused (an HTTPS_PROXY was used, which is what the test wants to know)."""

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self.server.seen.append(f"GET {self.path}")  # type: ignore[attr-defined]
        target = urlsplit(self.path)
        upstream = http.client.HTTPConnection(target.hostname or "", target.port or 80, timeout=10)
        try:
            upstream.request("GET", target.path or "/", headers={"Host": target.netloc})
            answer = upstream.getresponse()
            body = answer.read()
            status = answer.status
        finally:
            upstream.close()
        self.send_response(status)
        self.send_header("Via", "1.1 test-proxy")
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_CONNECT(self) -> None:
        self.server.seen.append(f"CONNECT {self.path}")  # type: ignore[attr-defined]
        self.send_response(403)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        """Quiet."""


def serve(handler: type) -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.seen = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture
def origin() -> Iterator[ThreadingHTTPServer]:
    yield from serve(Origin)


@pytest.fixture
def proxy() -> Iterator[ThreadingHTTPServer]:
    yield from serve(ForwardProxy)


@pytest.fixture
def proxy_env(monkeypatch: pytest.MonkeyPatch, proxy: ThreadingHTTPServer) -> str:
    """Only our proxy settings in the environment (whatever the machine running the tests has set)."""
    for name in list(os.environ):
        if name.lower().endswith("_proxy"):
            monkeypatch.delenv(name)
    url = f"http://127.0.0.1:{proxy.server_port}"
    monkeypatch.setenv("HTTP_PROXY", url)
    monkeypatch.setenv("HTTPS_PROXY", url)
    monkeypatch.setenv("NO_PROXY", "localhost")
    return url


@pytest.fixture
def environment_reads(monkeypatch: pytest.MonkeyPatch) -> List[str]:
    """The URLs the proxy environment was read for."""
    reads: List[str] = []
    real = _http.get_environ_proxies

    def counting(url: str, no_proxy: Any = None) -> Any:
        reads.append(url)
        return real(url, no_proxy=no_proxy)

    monkeypatch.setattr(_http, "get_environ_proxies", counting)
    return reads


def test_http_proxy_is_used_and_no_proxy_hosts_go_direct(
    proxy_env: str, proxy: ThreadingHTTPServer, origin: ThreadingHTTPServer, environment_reads: List[str]
) -> None:
    transport = HttpTransport(retries=0)
    try:
        for _round in range(3):
            response, _attempts = transport.send("GET", f"http://127.0.0.1:{origin.server_port}/through")
            assert response.status_code == 200 and response.headers.get("Via") == "1.1 test-proxy"
            response.close()
            response, _attempts = transport.send("GET", f"http://localhost:{origin.server_port}/direct")
            assert response.status_code == 200 and "Via" not in response.headers  # NO_PROXY=localhost
            response.close()
    finally:
        transport.close()
    assert proxy.seen == [f"GET http://127.0.0.1:{origin.server_port}/through"] * 3  # type: ignore[attr-defined]
    assert origin.seen.count("/through") == 3 and origin.seen.count("/direct") == 3  # type: ignore[attr-defined]
    # Six requests to two hosts: the environment was read once for each host, not once a request.
    assert sorted(urlsplit(url).netloc for url in environment_reads) == sorted(
        [f"127.0.0.1:{origin.server_port}", f"localhost:{origin.server_port}"]
    )


def test_https_proxy_is_used_for_https_urls(proxy_env: str, proxy: ThreadingHTTPServer) -> None:
    transport = HttpTransport(retries=0)
    try:
        with pytest.raises(NgcError) as excinfo:
            transport.send(
                "GET", "https://127.0.0.1:9/v2/", error=NgcError
            )  # nothing listens there: only the proxy is asked
    finally:
        transport.close()
    assert proxy.seen == ["CONNECT 127.0.0.1:9"]  # type: ignore[attr-defined]
    message = str(excinfo.value)
    assert "\n" not in message and "127.0.0.1:9" in message


def test_the_registry_client_goes_through_the_proxy_too(
    proxy_env: str, proxy: ThreadingHTTPServer, origin: ThreadingHTTPServer, environment_reads: List[str]
) -> None:
    client = RegistryClient(f"http://127.0.0.1:{origin.server_port}", retries=0)
    try:
        client.ping()
        client.ping()
    finally:
        client.close()
    assert proxy.seen == [f"GET http://127.0.0.1:{origin.server_port}/v2/"] * 2  # type: ignore[attr-defined]
    assert len(environment_reads) == 1


def test_a_proxy_given_to_a_request_wins_over_the_environment(
    proxy_env: str, proxy: ThreadingHTTPServer, origin: ThreadingHTTPServer
) -> None:
    transport = HttpTransport(retries=0)
    try:
        response, _attempts = transport.send(
            "GET",
            f"http://localhost:{origin.server_port}/asked",
            proxies={"http": f"http://127.0.0.1:{proxy.server_port}"},
        )
        response.close()
    finally:
        transport.close()
    assert proxy.seen == [f"GET http://localhost:{origin.server_port}/asked"]  # type: ignore[attr-defined]


def test_without_proxy_settings_everything_goes_direct(
    monkeypatch: pytest.MonkeyPatch, origin: ThreadingHTTPServer, proxy: ThreadingHTTPServer
) -> None:
    for name in list(os.environ):
        if name.lower().endswith("_proxy"):
            monkeypatch.delenv(name)
    transport = HttpTransport(retries=0)
    try:
        response, _attempts = transport.send("GET", f"http://127.0.0.1:{origin.server_port}/plain")
        assert response.status_code == 200 and "Via" not in response.headers
        response.close()
    finally:
        transport.close()
    assert proxy.seen == [] and origin.seen == ["/plain"]  # type: ignore[attr-defined]
