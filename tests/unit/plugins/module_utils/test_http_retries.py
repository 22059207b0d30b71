# Copyright (c) airgap.ngc contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Unit tests for the one retrying send loop in _http, its messages, and the registry's token fetch and auth hints
that go through it; against in-process HTTP servers on 127.0.0.1 (no other network)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Dict, List, Tuple

import pytest

from ansible_collections.airgap.ngc.plugins.module_utils._types.errors import (
    AuthError,
    NgcError,
    RegistryError,
    exception_reason,
    redact,
    shorten,
)
from ansible_collections.airgap.ngc.plugins.module_utils._http.transport import (
    MAX_BACKOFF,
    HttpTransport,
    RetryPolicy,
)
from ansible_collections.airgap.ngc.plugins.module_utils._clients.ngc import NgcClient
from ansible_collections.airgap.ngc.plugins.module_utils._clients.registry import RegistryClient

SECRET = "nvapi-http-secret-0123"
Answer = Tuple[int, Dict[str, str], bytes]


def json_answer(status: int, data: Any, headers: Dict[str, str] | None = None) -> Answer:
    return status, {"Content-Type": "application/json", **(headers or {})}, json.dumps(data).encode()


def ngc_status(status: int, description: str, headers: Dict[str, str] | None = None) -> Answer:
    return json_answer(status, {"requestStatus": {"statusCode": "ERROR", "statusDescription": description}}, headers)


class Server:
    """A threaded HTTP server on 127.0.0.1 answering with app(method, path, headers) -> (status, headers, body)."""

    def __init__(self, app: Callable[[str, str, Any], Answer]) -> None:
        self.app = app
        self.requests: List[Tuple[str, str, Any]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                outer.requests.append((self.command, self.path, self.headers))
                status, headers, body = outer.app(self.command, self.path, self.headers)
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            do_GET = do_HEAD = do_POST = do_PUT = _answer

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.httpd.server_address[1]}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def paths(self) -> List[str]:
        return [path.split("?", 1)[0] for _method, path, _headers in self.requests]

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def serve():
    servers: List[Server] = []

    def start(app: Callable[[str, str, Any], Answer]) -> Server:
        server = Server(app)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def sleeps():
    return []


def sequence(*answers: Answer) -> Callable[[str, str, Any], Answer]:
    """Answers in turn, the last one forever."""
    items = list(answers)
    return lambda method, path, headers: items.pop(0) if len(items) > 1 else items[0]


def transport(sleeps: list, **kwargs: Any) -> HttpTransport:
    kwargs.setdefault("retries", 5)
    kwargs.setdefault("timeout", 10)
    return HttpTransport(sleep=sleeps.append, **kwargs)


def one_line(message: str) -> str:
    assert "\n" not in message
    assert "Pool(" not in message and "Max retries exceeded" not in message and "Traceback" not in message
    return message


# -- backoff and Retry-After ------------------------------------------------------------------------


def test_backoff_without_retry_after_is_capped_per_wait():
    policy = RetryPolicy(retries=8, backoff=1.0)
    waits = [policy.backoff_delay(attempt) for attempt in range(8)]
    assert all(wait <= MAX_BACKOFF for wait in waits)
    assert MAX_BACKOFF <= 5.0
    assert sum(waits) <= 8 * MAX_BACKOFF  # eight failures ridden out in well under a minute


def test_a_storm_without_retry_after_waits_a_few_seconds_at_most(serve, sleeps):
    server = serve(lambda method, path, headers: ngc_status(503, "maintenance"))
    with pytest.raises(NgcError) as excinfo:
        transport(sleeps, retries=8).send(
            "GET", f"{server.url}/v2/orgs", what="the list of organisations", error=NgcError
        )
    assert len(sleeps) == 8 and max(sleeps) <= MAX_BACKOFF
    assert str(excinfo.value) == f"503 from {server.host} for the list of organisations after 9 attempts: maintenance"
    assert excinfo.value.status == 503


def test_without_a_count_a_storm_of_thirty_429_is_ridden_out_within_the_budget(serve, sleeps):
    answers = [ngc_status(429, "slow down", {"Retry-After": "1"})] * 30 + [json_answer(200, {})]
    server = serve(sequence(*answers))
    response, attempts = transport(sleeps, retries=None).send("GET", f"{server.url}/v2/orgs", error=NgcError)
    assert response.status_code == 200
    assert attempts == 31 and sleeps == [1.0] * 30


def test_without_a_count_a_registry_that_stays_down_fails_when_the_waits_exceed_the_budget(serve, sleeps):
    server = serve(lambda method, path, headers: ngc_status(503, "down", {"Retry-After": "10"}))
    with pytest.raises(NgcError) as excinfo:
        transport(sleeps, retries=None, retry_budget=35.0).send(
            "GET", f"{server.url}/v2/orgs", what="the orgs", error=NgcError
        )
    assert sleeps == [10.0, 10.0, 10.0]  # a fourth wait would pass 35 s
    assert str(excinfo.value) == f"503 from {server.host} for the orgs after 4 attempts: down"


def test_a_budget_of_zero_tries_once(serve, sleeps):
    server = serve(lambda method, path, headers: ngc_status(503, "down"))
    with pytest.raises(NgcError):
        transport(sleeps, retries=None, retry_budget=0.0).send("GET", f"{server.url}/v2/orgs", error=NgcError)
    assert sleeps == [] and len(server.requests) == 1


def test_policy_allows_by_count_when_given_else_by_budget():
    assert RetryPolicy(retries=2).allows(2, 1e9, 1e9) and not RetryPolicy(retries=2).allows(3, 0.0, 0.0)
    by_time = RetryPolicy(retries=None, budget=10.0)
    assert by_time.allows(1000, 6.0, 4.0) and not by_time.allows(1, 6.5, 4.0)


def test_retry_after_is_honoured_by_the_transport(serve, sleeps):
    server = serve(
        sequence(
            ngc_status(429, "slow down", {"Retry-After": "7"}),
            ngc_status(503, "busy", {"Retry-After": "2"}),
            json_answer(200, {}),
        )
    )
    response, attempts = transport(sleeps, backoff=100.0).send("GET", f"{server.url}/v2/orgs", error=NgcError)
    assert response.status_code == 200
    assert attempts == 3
    assert sleeps == [7.0, 2.0]


def test_final_message_names_status_host_attempts_and_reason_without_secrets(serve, sleeps):
    server = serve(
        lambda method, path, headers: json_answer(
            429, {"errors": [{"code": "TOOMANYREQUESTS", "message": f"key {SECRET} over quota"}]}
        )
    )
    with pytest.raises(NgcError) as excinfo:
        transport(sleeps, retries=2).send(
            "GET", f"{server.url}/x", what="org 'nvidia'", error=NgcError, secrets=(SECRET,)
        )
    message = one_line(str(excinfo.value))
    assert message == f"429 from {server.host} for org 'nvidia' after 3 attempts: TOOMANYREQUESTS: key *** over quota"


def test_unreachable_host_is_one_line_after_the_attempts(serve, sleeps):
    server = serve(lambda method, path, headers: json_answer(200, {}))
    url, host = server.url, server.host
    server.stop()
    with pytest.raises(NgcError) as excinfo:
        transport(sleeps, retries=2).send("GET", f"{url}/v2/orgs", what="the list of organisations", error=NgcError)
    message = one_line(str(excinfo.value))
    assert message.startswith(f"cannot reach {host} for the list of organisations after 3 attempts: [Errno")
    assert len(sleeps) == 2


@pytest.mark.parametrize("url", ["htp://x/", "http://", "http://exa mple.com/"])
def test_unusable_url_is_an_error_of_ours_not_of_requests(url, sleeps):
    with pytest.raises(NgcError) as excinfo:
        transport(sleeps).send("GET", url, error=NgcError)
    one_line(str(excinfo.value))


# -- TLS ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("validate_certs", [True, False])
def test_https_to_a_plain_http_server_says_it_does_not_speak_https(serve, sleeps, validate_certs):
    server = serve(lambda method, path, headers: json_answer(200, {}))
    with pytest.raises(NgcError) as excinfo:
        transport(sleeps, validate_certs=validate_certs).send(
            "GET", f"https://{server.host}/token", what="a token (/token)", error=NgcError
        )
    message = one_line(str(excinfo.value))
    assert message.startswith(f"TLS error talking to {server.host} for a token (/token): [SSL")
    assert "does not speak HTTPS" in message and "http://" in message
    assert "validate_certs" not in message and "ca_path" not in message
    assert sleeps == []


def test_garbage_ca_file_is_one_short_line_naming_it(serve, sleeps, tmp_path):
    server = serve(lambda method, path, headers: json_answer(200, {}))
    ca = tmp_path / "ca.pem"
    ca.write_text("this is not a certificate\n")
    with pytest.raises(NgcError) as excinfo:
        transport(sleeps, ca_path=str(ca)).send("GET", f"https://{server.host}/token", error=NgcError)
    message = one_line(str(excinfo.value))
    assert f"CA file {ca} given as ca_path" in message
    assert "not a file of PEM CA certificates" in message
    assert len(message) - len(str(ca)) < 200


def test_missing_ca_file_is_one_line_naming_it(serve, sleeps, tmp_path):
    server = serve(lambda method, path, headers: json_answer(200, {}))
    ca = tmp_path / "missing.pem"
    with pytest.raises(NgcError) as excinfo:
        transport(sleeps, ca_path=str(ca)).send("GET", f"https://{server.host}/token", error=NgcError)
    assert one_line(str(excinfo.value)).endswith(f"against the CA file {ca} given as ca_path: no such file")


def test_registry_with_a_garbage_ca_file_names_it(serve, tmp_path):
    server = serve(lambda method, path, headers: json_answer(200, {}))
    ca = tmp_path / "ca.pem"
    ca.write_text("garbage")
    with RegistryClient(f"https://{server.host}", ca_path=str(ca), retries=0) as client:
        with pytest.raises(RegistryError) as excinfo:
            client.ping()
    assert f"CA file {ca} given as ca_path" in one_line(str(excinfo.value))


def test_registry_with_a_missing_ca_file_is_a_registry_error(serve, tmp_path):
    server = serve(lambda method, path, headers: json_answer(200, {}))
    with RegistryClient(f"https://{server.host}", ca_path=str(tmp_path / "nope.pem"), retries=0) as client:
        with pytest.raises(RegistryError, match="given as ca_path: no such file"):
            client.ping()


def test_ngc_client_over_https_to_plain_http_names_the_host(serve, sleeps):
    server = serve(lambda method, path, headers: json_answer(200, {"token": "t"}))
    client = NgcClient(f"https://{server.host}", SECRET, transport(sleeps, validate_certs=False))
    with pytest.raises(NgcError) as excinfo:
        client.orgs()
    message = one_line(str(excinfo.value))
    assert server.host in message and "does not speak HTTPS" in message and SECRET not in message


# -- registry token fetches through the same loop --------------------------------------------------


def token_realm_registry(token_answers: Callable[[], Answer], catalog_granted: bool = True):
    """A registry that wants tokens from its own /token realm; the realm answers with token_answers()."""
    state: Dict[str, Any] = {"url": ""}

    def app(method: str, path: str, headers: Any) -> Answer:
        if path.startswith("/token"):
            return token_answers()
        challenge = f'Bearer realm="{state["url"]}/token",service="reg"'
        auth = headers.get("Authorization") or ""
        if not auth.startswith("Bearer "):
            scope = "registry:catalog:*" if path.startswith("/v2/_catalog") else "repository:nvidia/pytorch:pull"
            return json_answer(
                401,
                {"errors": [{"code": "UNAUTHORIZED", "message": "authentication required"}]},
                {"WWW-Authenticate": f'{challenge},scope="{scope}"'},
            )
        if path.startswith("/v2/_catalog") and not catalog_granted:
            return json_answer(
                401,
                {"errors": [{"code": "UNAUTHORIZED", "message": "authentication required"}]},
                {"WWW-Authenticate": f'{challenge},scope="registry:catalog:*",error="insufficient_scope"'},
            )
        if path.startswith("/v2/_catalog"):
            return json_answer(200, {"repositories": ["nvidia/pytorch"]})
        return json_answer(200, {"name": "nvidia/pytorch", "tags": ["1"]})

    return state, app


def test_registry_token_storm_names_status_attempts_and_honours_retry_after(serve, sleeps):
    state, app = token_realm_registry(
        lambda: json_answer(503, {"details": "token service overloaded"}, {"Retry-After": "2"})
    )
    server = serve(app)
    state["url"] = server.url
    with RegistryClient(server.url, username="$oauthtoken", password=SECRET, retries=2, sleep=sleeps.append) as client:
        with pytest.raises(RegistryError) as excinfo:
            client.list_tags("nvidia/pytorch")
    message = one_line(str(excinfo.value))
    assert message == f"503 from {server.host} for a registry token after 3 attempts: token service overloaded"
    assert not isinstance(excinfo.value, AuthError)
    assert sleeps == [2.0, 2.0]


def test_registry_refusing_the_catalog_scope_does_not_blame_the_key(serve, sleeps):
    state, app = token_realm_registry(lambda: json_answer(200, {"token": "granted-token-value"}), catalog_granted=False)
    server = serve(app)
    state["url"] = server.url
    with RegistryClient(server.url, username="$oauthtoken", password=SECRET, sleep=sleeps.append) as client:
        assert client.list_tags("nvidia/pytorch") == ["1"]  # the key is good
        with pytest.raises(AuthError) as excinfo:
            client.catalog()
    message = one_line(str(excinfo.value))
    assert message.startswith(
        f"401 from {server.host} for the catalog: the credentials were accepted, but this account may not list"
    )
    assert "source=ngc" in message
    assert "check the NGC API key" not in message
    assert "granted-token-value" not in message and SECRET not in message


def test_registry_insufficient_scope_for_a_repository_says_so(serve, sleeps):
    def app(method: str, path: str, headers: Any) -> Answer:
        if path.startswith("/token"):
            return json_answer(200, {"token": "t"})
        challenge = f'Bearer realm="{server.url}/token",service="reg",scope="repository:nvidia/secret:pull"'
        if headers.get("Authorization"):
            challenge += ',error="insufficient_scope"'
        return json_answer(
            401,
            {"errors": [{"code": "UNAUTHORIZED", "message": "authentication required"}]},
            {"WWW-Authenticate": challenge},
        )

    server = serve(app)
    with RegistryClient(server.url, username="$oauthtoken", password=SECRET, sleep=sleeps.append) as client:
        with pytest.raises(AuthError) as excinfo:
            client.get_manifest("nvidia/secret", "1")
    assert "the token grants no access for repository:nvidia/secret:pull" in str(excinfo.value)


# -- the message helpers -------------------------------------------------------------------------


def test_redact_blanks_secrets_and_credentials():
    text = f"key {SECRET} sent as Basic JG9hdXRodG9rZW46c2VjcmV0 and Bearer eyJhbGciOi.x-y_z"
    assert redact(text, (SECRET, None, "")) == "key *** sent as Basic *** and Bearer ***"


def test_exception_reason_drops_urllib3_wrapping():
    text = (
        "HTTPSConnectionPool(host='h', port=1): Max retries exceeded with url: /t?sig=abc (Caused by "
        "SSLError(SSLError(136, '[X509: NO_CERTIFICATE_OR_CRL_FOUND] no certificate or crl found (_ssl.c:4154)')))"
    )
    assert exception_reason(Exception(text)) == "[X509: NO_CERTIFICATE_OR_CRL_FOUND] no certificate or crl found"
    assert "sig=abc" not in exception_reason(Exception("failed for /t?sig=abc now"))


@pytest.mark.parametrize(
    "text,reason",
    [
        ("HTTPConnectionPool(host='h', port=1): Read timed out. (read timeout=1.0)", "read timed out after 1.0 s"),
        (
            "HTTPSConnectionPool(host='h', port=1): Max retries exceeded with url: /v2/ (Caused by ConnectTimeoutError("
            "<urllib3.connection.HTTPSConnection object at 0x7f>, 'Connection to h timed out. (connect timeout=2.5)'))",
            "connect timed out after 2.5 s",
        ),
        ("HTTPConnectionPool(host='h', port=1): Read timed out.", "read timed out"),
    ],
)
def test_a_timeout_reason_is_balanced_and_names_the_seconds(text, reason):
    got = exception_reason(Exception(text))
    assert got.count("(") == got.count(")"), got
    assert got == reason


def test_shorten_makes_one_short_line():
    assert shorten("a\n  b\tc") == "a b c"
    assert len(shorten("x" * 1000)) == 200
