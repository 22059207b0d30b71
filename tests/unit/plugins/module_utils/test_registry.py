# Copyright (c) airgap.ngc contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Unit tests for _registry against in-process HTTP servers on 127.0.0.1 (no other network)."""

from __future__ import annotations

import base64
import email.utils
import hashlib
import io
import json
import socketserver
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Dict, List, Optional
from urllib.parse import parse_qs, urlsplit

import pytest

from ansible_collections.airgap.ngc.plugins.module_utils._types.errors import (
    AuthError,
    DigestMismatchError,
    NotFoundError,
    RegistryError,
)
from ansible_collections.airgap.ngc.plugins.module_utils._http.transport import parse_retry_after
from ansible_collections.airgap.ngc.plugins.module_utils._types.oci import (
    MANIFEST_MEDIA_TYPES,
    MEDIA_DOCKER_LIST as MEDIA_TYPE_DOCKER_MANIFEST_LIST,
    MEDIA_OCI_INDEX as MEDIA_TYPE_OCI_INDEX,
    MEDIA_OCI_MANIFEST as MEDIA_TYPE_OCI_MANIFEST,
)
from ansible_collections.airgap.ngc.plugins.module_utils._clients.registry import RegistryClient, parse_link_header
from ansible_collections.airgap.ngc.plugins.module_utils._types.version import USER_AGENT

PASSWORD = "nvapi-secret-key-123"


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


# -- an in-process HTTP server ---------------------------------------------------------------


@dataclass
class Req:
    method: str
    target: str
    headers: Any
    body: bytes
    complete: bool
    server: str

    @property
    def path(self) -> str:
        return urlsplit(self.target).path

    @property
    def query(self) -> Dict[str, List[str]]:
        return parse_qs(urlsplit(self.target).query, keep_blank_values=True)


@dataclass
class Resp:
    status: int = 200
    headers: Dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    send_only: Optional[int] = None  # send only this many body bytes, then close (a broken transfer)


class Drop:
    """Close the connection without answering."""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 20

    def log_message(self, format, *args):  # pylint: disable=redefined-builtin
        pass

    def _read_body(self):
        length = self.headers.get("Content-Length")
        if length is not None:
            wanted = int(length)
            body = self.rfile.read(wanted)
            return body, len(body) == wanted
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            parts = []
            while True:
                line = self.rfile.readline()
                if not line:
                    return b"".join(parts), False
                size = int(line.split(b";")[0].strip(), 16)
                if size == 0:
                    self.rfile.readline()
                    return b"".join(parts), True
                parts.append(self.rfile.read(size))
                self.rfile.readline()
        return b"", True

    def _handle(self):
        body, complete = self._read_body()
        req = Req(self.command, self.path, self.headers, body, complete, self.server.name)
        self.server.requests.append(req)
        if not complete:
            self.close_connection = True
            return
        result = self.server.app(req)
        if isinstance(result, Drop):
            self.close_connection = True
            return
        if isinstance(result, tuple):
            result = Resp(*result)
        self.send_response(result.status)
        headers = dict(result.headers)
        headers.setdefault("Content-Length", str(len(result.body)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            if result.send_only is not None:
                self.wfile.write(result.body[: result.send_only])
                self.wfile.flush()
                self.close_connection = True
            else:
                self.wfile.write(result.body)

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _handle


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def server_bind(self):
        # HTTPServer.server_bind looks up the host name, which can be slow without DNS.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]


class Server:
    def __init__(self, app: Callable[[Req], Any], name: str = "registry") -> None:
        self.httpd = _HTTPServer(("127.0.0.1", 0), _Handler)
        self.httpd.app = app
        self.httpd.requests = []
        self.httpd.name = name
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.httpd.server_address[1]}"

    @property
    def requests(self) -> List[Req]:
        return self.httpd.requests

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def serve():
    servers = []

    def start(app, name="registry"):
        server = Server(app, name)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def sleeps():
    return []


@pytest.fixture
def make_client(sleeps):
    clients = []

    def make(url, **kwargs):
        kwargs.setdefault("retries", 3)
        kwargs.setdefault("backoff", 0.0)
        kwargs.setdefault("sleep", sleeps.append)
        kwargs.setdefault("timeout", 10)
        client = RegistryClient(url, **kwargs)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


def json_resp(data, status=200, headers=None):
    out = {"Content-Type": "application/json"}
    out.update(headers or {})
    return Resp(status, out, json.dumps(data).encode())


def error_resp(status, code, message, headers=None):
    return json_resp({"errors": [{"code": code, "message": message}]}, status, headers)


class TokenRegistry:
    """A registry that wants Bearer tokens from its own /token realm (like nvcr.io), scoped per repository."""

    def __init__(
        self,
        routes: Callable[[Req], Any],
        username: Optional[str] = "$oauthtoken",
        password: Optional[str] = PASSWORD,
        expires_in=300,
    ):
        self.routes = routes
        self.username = username
        self.password = password
        self.expires_in = expires_in
        self.tokens: Dict[str, str] = {}  # token -> scope string it grants
        self.token_requests: List[Req] = []
        self.url = ""
        self.realm_path = "/token"
        self.lock = threading.Lock()

    def challenge(self, scope=None, error=None):
        value = f'Bearer realm="{self.url}{self.realm_path}",service="test-registry"'
        if scope:
            value += f',scope="{scope}"'
        if error:
            value += f',error="{error}"'
        return value

    @staticmethod
    def needed_scope(req: Req) -> Optional[str]:
        path = req.path
        for marker in ("/tags/list", "/manifests/", "/blobs/"):
            if marker in path:
                name = path[len("/v2/") : path.index(marker)]
                action = {"GET": "pull", "HEAD": "pull", "DELETE": "delete"}.get(
                    req.method, "pull,push"
                )  # as distribution asks
                return f"repository:{name}:{action}"
        if path == "/v2/_catalog":
            return "registry:catalog:*"
        return None

    def __call__(self, req: Req):
        if req.path in ("/token", "/token2"):
            with self.lock:
                self.token_requests.append(req)
                if self.password is not None:
                    wanted = "Basic " + base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
                    if req.headers.get("Authorization") != wanted:
                        return json_resp({"details": "incorrect username or password"}, 401)
                token = f"tok{len(self.token_requests)}"
                self.tokens[token] = " ".join(req.query.get("scope", []))
            return json_resp({"token": token, "expires_in": self.expires_in})
        needed = self.needed_scope(req)
        auth = req.headers.get("Authorization") or ""
        token = auth[len("Bearer ") :] if auth.startswith("Bearer ") else None
        with self.lock:
            granted = self.tokens.get(token) if token else None
        if granted is None:
            return error_resp(
                401,
                "UNAUTHORIZED",
                "authentication required",
                {"WWW-Authenticate": self.challenge(needed, "invalid_token" if token else None)},
            )
        if needed and needed not in granted.split() and not any(g.startswith(needed + ",") for g in granted.split()):
            return error_resp(
                401,
                "UNAUTHORIZED",
                "insufficient scope",
                {"WWW-Authenticate": self.challenge(needed, "insufficient_scope")},
            )
        return self.routes(req)


def start_token_registry(serve, routes, **kwargs):
    app = TokenRegistry(routes, **kwargs)
    server = serve(app)
    app.url = server.url
    return server, app


def ok_routes(req):
    if req.path == "/v2/":
        return json_resp({})
    if req.path.endswith("/tags/list"):
        return json_resp({"name": req.path.split("/")[2], "tags": ["1"]})
    return error_resp(404, "NAME_UNKNOWN", "repository name not known to registry")


# -- plain requests, User-Agent, helpers -----------------------------------------------------


def test_ping_sends_user_agent_and_no_authorization(serve, make_client):
    server = serve(lambda req: json_resp({}))
    make_client(server.url, username="u", password=PASSWORD).ping()
    [req] = server.requests
    assert req.path == "/v2/"
    assert req.headers["User-Agent"] == USER_AGENT
    assert req.headers.get("Authorization") is None  # never offered before a challenge


def test_tls_settings():
    assert RegistryClient("https://nvcr.io")._verify is True
    assert RegistryClient("https://nvcr.io", ca_path="/etc/ca.pem")._verify == "/etc/ca.pem"
    assert RegistryClient("https://nvcr.io", validate_certs=False, ca_path="/etc/ca.pem")._verify is False
    assert RegistryClient("nvcr.io").base_url == "https://nvcr.io"


def test_parse_retry_after():
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    now = time.time()
    future = email.utils.formatdate(now + 30, usegmt=True)
    assert 25 <= parse_retry_after(future) <= 31
    assert parse_retry_after(email.utils.formatdate(now - 30, usegmt=True)) == 0.0


def test_parse_link_header():
    links = parse_link_header('</v2/a/tags/list?n=2&last=b>; rel="next", <https://x/v2/a/tags/list>; rel=prev')
    assert links == {"next": "/v2/a/tags/list?n=2&last=b", "prev": "https://x/v2/a/tags/list"}
    assert parse_link_header(None) == {}


# -- authentication ----------------------------------------------------------------------------


def test_bearer_challenge_fetches_scoped_token_with_basic_credentials(serve, make_client):
    server, app = start_token_registry(serve, ok_routes)
    client = make_client(server.url, username="$oauthtoken", password=PASSWORD)
    assert client.list_tags("nvidia/pytorch") == ["1"]
    [token_req] = app.token_requests
    assert token_req.query["service"] == ["test-registry"]
    assert token_req.query["scope"] == ["repository:nvidia/pytorch:pull"]
    assert (
        token_req.headers["Authorization"] == "Basic " + base64.b64encode(f"$oauthtoken:{PASSWORD}".encode()).decode()
    )
    tag_requests = [r for r in server.requests if r.path.endswith("/tags/list")]
    assert [r.headers.get("Authorization") for r in tag_requests] == [None, "Bearer tok1"]


def test_token_cached_per_scope_and_sent_before_a_challenge(serve, make_client):
    server, app = start_token_registry(serve, ok_routes)
    client = make_client(server.url, username="$oauthtoken", password=PASSWORD)
    client.list_tags("nvidia/pytorch")
    client.list_tags("nvidia/pytorch")
    assert len(app.token_requests) == 1
    client.list_tags("nvidia/clara/clara-parabricks")  # another scope: another token, fetched up front
    assert [r.query["scope"] for r in app.token_requests] == [
        ["repository:nvidia/pytorch:pull"],
        ["repository:nvidia/clara/clara-parabricks:pull"],
    ]
    statuses = [r.headers.get("Authorization") for r in server.requests if r.path.endswith("/tags/list")]
    assert statuses == [None, "Bearer tok1", "Bearer tok1", "Bearer tok2"]


def test_anonymous_token_without_credentials(serve, make_client):
    server, app = start_token_registry(serve, ok_routes, password=None)
    client = make_client(server.url)
    assert client.list_tags("nvidia/pytorch") == ["1"]
    [token_req] = app.token_requests
    assert token_req.headers.get("Authorization") is None
    assert "account" not in token_req.query


@pytest.mark.parametrize("new_realm", ["/token", "/token2"], ids=["same-realm", "new-realm"])
def test_reauthenticates_on_invalid_token(serve, make_client, new_realm):
    server, app = start_token_registry(serve, ok_routes)
    client = make_client(server.url, username="$oauthtoken", password=PASSWORD)
    client.list_tags("nvidia/pytorch")
    # The token is revoked before it expires; nvcr.io then also points at another realm.
    app.tokens.clear()
    app.realm_path = new_realm
    assert client.list_tags("nvidia/pytorch") == ["1"]
    assert [r.path for r in app.token_requests] == ["/token", new_realm]
    last_two = [r for r in server.requests if r.path.endswith("/tags/list")][-2:]
    assert [r.headers.get("Authorization") for r in last_two] == ["Bearer tok1", "Bearer tok2"]


def test_expired_token_renewed_before_use(serve, make_client):
    server, app = start_token_registry(serve, ok_routes, expires_in=60)
    client = make_client(server.url, username="$oauthtoken", password=PASSWORD)
    clock = [5000.0]
    client._tokens.clock = lambda: clock[0]
    client.list_tags("nvidia/pytorch")
    clock[0] += 30
    client.list_tags("nvidia/pytorch")
    assert len(app.token_requests) == 1
    clock[0] += 25  # 55 s after issue: inside the renewal margin
    client.list_tags("nvidia/pytorch")
    assert len(app.token_requests) == 2
    unauthorised = [
        r for r in server.requests if r.path.endswith("/tags/list") and r.headers.get("Authorization") is None
    ]
    assert len(unauthorised) == 1  # only the very first request was challenged


def test_token_refused_is_auth_error_naming_host_and_repository(serve, make_client):
    server, _app = start_token_registry(serve, ok_routes)
    client = make_client(server.url, username="$oauthtoken", password="wrong-" + PASSWORD)
    with pytest.raises(AuthError) as excinfo:
        client.list_tags("nvidia/pytorch")
    message = str(excinfo.value)
    assert message.startswith(f"401 from {server.host} for nvidia/pytorch: check the NGC API key")
    assert "incorrect username or password" in message
    assert PASSWORD not in message
    assert excinfo.value.status == 401


def test_refused_password_of_another_user_asks_for_user_and_password(serve, make_client):
    server, _app = start_token_registry(serve, ok_routes)
    client = make_client(server.url, username="mirror", password="wrong-" + PASSWORD)
    with pytest.raises(AuthError) as excinfo:
        client.list_tags("nvidia/pytorch")
    assert str(excinfo.value).startswith(f"401 from {server.host} for nvidia/pytorch: check the user name and password")


def test_registry_refusing_fresh_token_is_auth_error(serve, make_client):
    def app(req):
        if req.path == "/token":
            return json_resp({"token": "never-good"})
        return error_resp(
            401, "UNAUTHORIZED", "nope", {"WWW-Authenticate": f'Bearer realm="{server.url}/token",service="s"'}
        )

    server = serve(app)
    client = make_client(server.url, username="$oauthtoken", password=PASSWORD)
    with pytest.raises(AuthError, match=f"^401 from {server.host} for nvidia/pytorch"):
        client.get_manifest("nvidia/pytorch", "1")
    assert len([r for r in server.requests if r.path == "/token"]) == 1
    assert len([r for r in server.requests if r.path != "/token"]) == 2  # tried once more with the token, then gave up


def test_nvcr_hint_names_the_api_key():
    client = RegistryClient("https://nvcr.io", username="$oauthtoken", password=PASSWORD)
    error = client._auth_error(401, "nvidia/pytorch", "repository:nvidia/pytorch:pull", "", "https://nvcr.io/v2/")
    assert str(error).startswith("401 from nvcr.io for nvidia/pytorch: check the NGC API key")
    anonymous = RegistryClient("https://nvcr.io")
    assert "none were given" in str(anonymous._auth_error(401, "nvidia/pytorch", None, "", "https://nvcr.io/v2/"))
    denied = client._auth_error(403, "nvidia/pytorch", "repository:nvidia/pytorch:pull,push", "", "https://nvcr.io/v2/")
    assert "may push to" in str(denied)


def test_basic_challenge_uses_credentials(serve, make_client):
    wanted = "Basic " + base64.b64encode(f"admin:{PASSWORD}".encode()).decode()

    def app(req):
        if req.headers.get("Authorization") != wanted:
            return error_resp(
                401, "UNAUTHORIZED", "authentication required", {"WWW-Authenticate": 'Basic realm="Registry Realm"'}
            )
        return ok_routes(req)

    server = serve(app)
    client = make_client(server.url, username="admin", password=PASSWORD)
    client.ping()
    assert client.list_tags("nvidia/pytorch") == ["1"]
    assert [r.headers.get("Authorization") for r in server.requests] == [None, wanted, wanted]


def test_basic_challenge_without_credentials_is_auth_error(serve, make_client):
    server = serve(
        lambda req: error_resp(401, "UNAUTHORIZED", "authentication required", {"WWW-Authenticate": 'Basic realm="r"'})
    )
    with pytest.raises(AuthError, match="requires credentials and none were given"):
        make_client(server.url).list_tags("nvidia/pytorch")
    assert len(server.requests) == 1


def test_wrong_basic_credentials_is_auth_error_without_password(serve, make_client):
    server = serve(
        lambda req: error_resp(401, "UNAUTHORIZED", "authentication required", {"WWW-Authenticate": 'Basic realm="r"'})
    )
    with pytest.raises(AuthError) as excinfo:
        make_client(server.url, username="admin", password=PASSWORD).head_manifest("nvidia/pytorch", "1")
    assert str(excinfo.value).startswith(f"401 from {server.host} for nvidia/pytorch")
    assert PASSWORD not in str(excinfo.value)
    assert len(server.requests) == 2


def test_403_is_auth_error(serve, make_client):
    server = serve(lambda req: error_resp(403, "DENIED", "requested access to the resource is denied"))
    with pytest.raises(AuthError) as excinfo:
        make_client(server.url).get_manifest("nvidia/pytorch", "1")
    assert excinfo.value.status == 403
    assert "DENIED: requested access to the resource is denied" in str(excinfo.value)
    assert "may pull from" in str(excinfo.value)


def test_concurrent_blob_reads_share_one_token(serve, make_client):
    blob = b"x" * 5000

    def routes(req):
        return Resp(200, {"Content-Type": "application/octet-stream"}, blob)

    server, app = start_token_registry(serve, routes)
    client = make_client(server.url, username="$oauthtoken", password=PASSWORD)
    results, errors = [], []

    def work():
        try:
            with client.open_blob("nvidia/pytorch", sha256(blob)) as reader:
                results.append(b"".join(reader))
        except Exception as exc:  # pylint: disable=broad-except
            errors.append(exc)

    threads = [threading.Thread(target=work) for _index in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert results == [blob] * 6
    assert len(app.token_requests) == 1


# -- retries -------------------------------------------------------------------------------------


def sequence(*responses):
    """An app answering with the given responses in turn (the last one forever)."""
    items = list(responses)

    def app(req):
        return items.pop(0) if len(items) > 1 else items[0]

    return app


def test_retry_after_seconds_honoured(serve, make_client, sleeps):
    server = serve(sequence(error_resp(429, "TOOMANYREQUESTS", "slow down", {"Retry-After": "3"}), json_resp({})))
    make_client(server.url, backoff=100.0).ping()
    assert sleeps == [3.0]
    assert len(server.requests) == 2


def test_retry_after_http_date_honoured(serve, make_client, sleeps):
    when = email.utils.formatdate(time.time() + 20, usegmt=True)
    server = serve(sequence(Resp(503, {"Retry-After": when}), json_resp({})))
    make_client(server.url, backoff=1000.0).ping()
    assert len(sleeps) == 1 and 10 <= sleeps[0] <= 21


def test_retry_after_capped(serve, make_client, sleeps):
    server = serve(sequence(Resp(503, {"Retry-After": "86400"}), json_resp({})))
    make_client(server.url, max_retry_after=7.0).ping()
    assert sleeps == [7.0]


def test_5xx_retried_with_exponential_backoff_then_success(serve, make_client, sleeps):
    server = serve(sequence(Resp(503), Resp(502), Resp(504), json_resp({"name": "a", "tags": ["x"]})))
    assert make_client(server.url, backoff=2.0).list_tags("a") == ["x"]
    assert len(server.requests) == 4
    assert len(sleeps) == 3
    assert (
        1.0 <= sleeps[0] <= 2.0 and 2.0 <= sleeps[1] <= 4.0 and 2.0 <= sleeps[2] <= 4.0
    )  # 8 s capped at MAX_BACKOFF (4 s)


def test_retries_exhausted_is_registry_error(serve, make_client, sleeps):
    server = serve(lambda req: error_resp(503, "UNAVAILABLE", "maintenance"))
    with pytest.raises(RegistryError) as excinfo:
        make_client(server.url, retries=2).get_manifest("nvidia/pytorch", "1")
    assert excinfo.value.status == 503
    assert (
        str(excinfo.value)
        == f"503 from {server.host} for manifest nvidia/pytorch:1 after 3 attempts: UNAVAILABLE: maintenance"
    )
    assert len(server.requests) == 3
    assert len(sleeps) == 2


def test_500_is_not_retried(serve, make_client, sleeps):
    server = serve(lambda req: error_resp(500, "UNKNOWN", "boom"))
    with pytest.raises(RegistryError, match="^500 from"):
        make_client(server.url).ping()
    assert len(server.requests) == 1
    assert sleeps == []


def test_dropped_connection_retried(serve, make_client, sleeps):
    server = serve(sequence(Drop(), json_resp({})))
    make_client(server.url).ping()
    assert len(server.requests) == 2
    assert len(sleeps) == 1


def test_unreachable_registry_is_registry_error(serve, make_client, sleeps):
    server = serve(lambda req: json_resp({}))
    url = server.url
    server.stop()
    with pytest.raises(RegistryError) as excinfo:
        make_client(url, retries=2).ping()
    assert str(excinfo.value).startswith(f"cannot reach {server.host} for the API version check /v2/ after 3 attempts")
    assert excinfo.value.status is None
    assert len(sleeps) == 2


def test_https_to_a_plain_http_server_is_a_tls_error(serve, make_client, sleeps):
    server = serve(lambda req: json_resp({}))
    with pytest.raises(RegistryError) as excinfo:
        make_client(server.url.replace("http://", "https://")).ping()
    assert str(excinfo.value).startswith(f"TLS error talking to {server.host} for the API version check /v2/: [SSL")
    assert "does not speak HTTPS" in str(excinfo.value)
    assert sleeps == []  # not retried


# -- pagination ---------------------------------------------------------------------------------


def paged_tags(all_tags, absolute_base=None):
    def app(req):
        n = int(req.query.get("n", ["2"])[0])
        last = req.query.get("last", [None])[0]
        start = all_tags.index(last) + 1 if last else 0
        page = all_tags[start : start + n]
        headers = {}
        if start + n < len(all_tags):
            link = f"{req.path}?n={n}&last={page[-1]}"
            headers["Link"] = f'<{absolute_base() + link if absolute_base else link}>; rel="next"'
        return json_resp({"name": "x", "tags": page}, headers=headers)

    return app


def test_list_tags_follows_relative_link(serve, make_client):
    tags = ["1", "2", "3", "4", "5"]
    server = serve(paged_tags(tags))
    assert make_client(server.url).list_tags("nvidia/clara/clara-parabricks", page_size=2) == tags
    assert [r.target for r in server.requests] == [
        "/v2/nvidia/clara/clara-parabricks/tags/list?n=2",
        "/v2/nvidia/clara/clara-parabricks/tags/list?n=2&last=2",
        "/v2/nvidia/clara/clara-parabricks/tags/list?n=2&last=4",
    ]


def test_list_tags_follows_absolute_link(serve, make_client):
    tags = ["a", "b", "c"]
    holder = {}
    server = serve(paged_tags(tags, absolute_base=lambda: holder["url"]))
    holder["url"] = server.url
    assert make_client(server.url).list_tags("nvidia/pytorch", page_size=1) == tags
    assert len(server.requests) == 3


def test_list_tags_null_is_empty(serve, make_client):
    server = serve(lambda req: json_resp({"name": "x", "tags": None}))
    assert make_client(server.url).list_tags("x") == []


def test_pagination_loop_detected(serve, make_client):
    server = serve(lambda req: json_resp({"tags": ["a"]}, headers={"Link": '</v2/x/tags/list?last=a>; rel="next"'}))
    with pytest.raises(RegistryError, match="pagination loop"):
        make_client(server.url).list_tags("x")


def test_catalog_paginates(serve, make_client):
    repos = ["nvidia/a", "nvidia/b", "nvidia/team/c"]

    def app(req):
        last = req.query.get("last", [None])[0]
        start = repos.index(last) + 1 if last else 0
        page = repos[start : start + 2]
        headers = {"Link": f'</v2/_catalog?last={page[-1]}&n=2>; rel="next"'} if start + 2 < len(repos) else {}
        return json_resp({"repositories": page}, headers=headers)

    server = serve(app)
    assert make_client(server.url).catalog(page_size=2) == repos
    assert len(server.requests) == 2


def test_unknown_repository_is_not_found(serve, make_client):
    server = serve(lambda req: error_resp(404, "NAME_UNKNOWN", "repository name not known to registry"))
    with pytest.raises(NotFoundError, match="NAME_UNKNOWN"):
        make_client(server.url).list_tags("nvidia/nothing")


# -- manifests --------------------------------------------------------------------------------

MANIFEST = {
    "schemaVersion": 2,
    "mediaType": MEDIA_TYPE_OCI_MANIFEST,
    "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": "sha256:" + "1" * 64, "size": 10},
    "layers": [],
}
# Odd spacing and key order on purpose: only these exact bytes have this digest.
RAW = b'{\n   "schemaVersion": 2,  "mediaType": "application/vnd.oci.image.manifest.v1+json",\n' + json.dumps(MANIFEST)[
    1:
].encode().replace(b'"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json", ', b"")
RESERIALISED = json.dumps(json.loads(RAW), separators=(",", ":"), sort_keys=True).encode()


def manifest_app(raw=RAW, announce=None, content_type=MEDIA_TYPE_OCI_MANIFEST):
    def app(req):
        if "/manifests/" not in req.path:
            return error_resp(404, "NAME_UNKNOWN", "x")
        headers = {"Content-Type": content_type}
        if announce:
            headers["Docker-Content-Digest"] = announce
        return Resp(200, headers, raw)

    return app


def test_get_manifest_keeps_exact_bytes_and_sends_all_media_types(serve, make_client):
    assert json.loads(RAW) == MANIFEST and RAW != RESERIALISED
    server = serve(manifest_app(announce=sha256(RAW)))
    client = make_client(server.url)
    manifest = client.get_manifest("nvidia/clara/clara-parabricks", "4.2")
    assert manifest.raw == RAW
    assert manifest.digest == sha256(RAW)
    assert manifest.media_type == MEDIA_TYPE_OCI_MANIFEST
    assert manifest.data == MANIFEST
    assert not manifest.is_index
    descriptor = client.head_manifest("nvidia/clara/clara-parabricks", "4.2")
    assert (descriptor.digest, descriptor.media_type, descriptor.size) == (
        sha256(RAW),
        MEDIA_TYPE_OCI_MANIFEST,
        len(RAW),
    )
    for req in server.requests:
        accepted = [part.strip() for part in req.headers["Accept"].split(",")]
        assert sorted(accepted) == sorted(MANIFEST_MEDIA_TYPES)
    assert [r.method for r in server.requests] == ["GET", "HEAD"]


def test_get_manifest_by_digest(serve, make_client):
    server = serve(manifest_app())
    manifest = make_client(server.url).get_manifest("nvidia/pytorch", sha256(RAW))
    assert manifest.digest == sha256(RAW)
    assert server.requests[0].path == f"/v2/nvidia/pytorch/manifests/{sha256(RAW)}"


def test_reserialised_manifest_detected_against_announced_digest(serve, make_client):
    server = serve(manifest_app(raw=RESERIALISED, announce=sha256(RAW)))
    with pytest.raises(DigestMismatchError) as excinfo:
        make_client(server.url).get_manifest("nvidia/pytorch", "1")
    assert sha256(RESERIALISED) in str(excinfo.value) and sha256(RAW) in str(excinfo.value)


def test_reserialised_manifest_detected_against_requested_digest(serve, make_client):
    server = serve(manifest_app(raw=RESERIALISED))
    with pytest.raises(DigestMismatchError, match="the digest asked for"):
        make_client(server.url).get_manifest("nvidia/pytorch", sha256(RAW))


def test_manifest_media_type_from_body_when_content_type_is_generic(serve, make_client):
    index = json.dumps({"schemaVersion": 2, "mediaType": MEDIA_TYPE_DOCKER_MANIFEST_LIST, "manifests": []}).encode()
    server = serve(manifest_app(raw=index, content_type="application/json"))
    manifest = make_client(server.url).get_manifest("nvidia/pytorch", "1")
    assert manifest.media_type == MEDIA_TYPE_DOCKER_MANIFEST_LIST
    assert manifest.is_index


def test_head_manifest_without_digest_header_falls_back_to_get(serve, make_client):
    server = serve(manifest_app())
    descriptor = make_client(server.url).head_manifest("nvidia/pytorch", "1")
    assert descriptor.digest == sha256(RAW)
    assert [r.method for r in server.requests] == ["HEAD", "GET"]


def test_missing_manifest(serve, make_client):
    server = serve(lambda req: error_resp(404, "MANIFEST_UNKNOWN", "manifest unknown"))
    client = make_client(server.url)
    assert client.head_manifest("nvidia/pytorch", "nope") is None
    with pytest.raises(NotFoundError) as excinfo:
        client.get_manifest("nvidia/pytorch", "nope")
    assert (
        str(excinfo.value)
        == f"404 from {server.host}: manifest nvidia/pytorch:nope not found (MANIFEST_UNKNOWN: manifest unknown)"
    )


def test_put_manifest(serve, make_client):
    def app(req):
        return Resp(201, {"Docker-Content-Digest": sha256(req.body), "Location": f"/v2/x/manifests/{sha256(req.body)}"})

    server = serve(app)
    digest = make_client(server.url).put_manifest("nvidia/pytorch", "24.01-py3", RAW, MEDIA_TYPE_OCI_MANIFEST)
    assert digest == sha256(RAW)
    [req] = server.requests
    assert (req.method, req.path, req.body) == ("PUT", "/v2/nvidia/pytorch/manifests/24.01-py3", RAW)
    assert req.headers["Content-Type"] == MEDIA_TYPE_OCI_MANIFEST


def test_put_manifest_registry_storing_other_bytes_detected(serve, make_client):
    server = serve(lambda req: Resp(201, {"Docker-Content-Digest": sha256(RESERIALISED)}))
    with pytest.raises(DigestMismatchError, match="stored it as"):
        make_client(server.url).put_manifest("nvidia/pytorch", "1", RAW, MEDIA_TYPE_OCI_INDEX)


def test_put_manifest_by_wrong_digest_refused_before_sending(serve, make_client):
    server = serve(lambda req: Resp(201))
    with pytest.raises(DigestMismatchError):
        make_client(server.url).put_manifest("nvidia/pytorch", sha256(b"other"), RAW, MEDIA_TYPE_OCI_MANIFEST)
    assert server.requests == []


# -- blobs --------------------------------------------------------------------------------------

BLOB = bytes(range(256)) * 4096  # 1 MiB


def blob_app(content=BLOB, **resp_kwargs):
    def app(req):
        if "/blobs/" not in req.path:
            return error_resp(404, "BLOB_UNKNOWN", "blob unknown")
        return Resp(200, {"Content-Type": "application/octet-stream"}, content, **resp_kwargs)

    return app


def test_open_blob_streams_and_verifies(serve, make_client):
    server = serve(blob_app())
    client = make_client(server.url)
    with client.open_blob("nvidia/pytorch", sha256(BLOB), chunk_size=65536) as reader:
        chunks = list(reader)
        assert reader.verified
        assert reader.size == len(BLOB)
    assert b"".join(chunks) == BLOB
    assert len(chunks) > 1 and max(len(c) for c in chunks) <= 65536
    assert server.requests[0].headers["Accept-Encoding"] == "identity"
    assert client.head_blob("nvidia/pytorch", sha256(BLOB)) == len(BLOB)


def test_blob_read_like_a_file(serve, make_client):
    server = serve(blob_app())
    with make_client(server.url).open_blob("nvidia/pytorch", sha256(BLOB), chunk_size=1000) as reader:
        first = reader.read(10)
        middle = reader.read(2500)
        rest = reader.read()
        assert reader.read(5) == b""
        assert reader.verified
    assert first + middle + rest == BLOB
    assert len(first) == 10 and len(middle) == 2500


def test_blob_digest_mismatch_raised_at_the_end(serve, make_client):
    corrupted = BLOB[:-1] + b"\x00"
    server = serve(blob_app(corrupted))
    reader = make_client(server.url).open_blob("nvidia/pytorch", sha256(BLOB), chunk_size=65536)
    received = []
    with pytest.raises(DigestMismatchError) as excinfo:
        for chunk in reader:
            received.append(chunk)
    assert sum(len(c) for c in received) == len(BLOB)  # everything was streamed before the verdict
    assert sha256(corrupted) in str(excinfo.value)
    assert not reader.verified


def test_blob_size_mismatch_detected(serve, make_client):
    server = serve(blob_app())
    with pytest.raises(DigestMismatchError, match="expected 100"):
        make_client(server.url).open_blob("nvidia/pytorch", sha256(BLOB), expected_size=100)


def test_missing_blob(serve, make_client):
    server = serve(blob_app())
    client = make_client(server.url)
    server.httpd.app = lambda req: error_resp(404, "BLOB_UNKNOWN", "blob unknown to registry")
    assert client.head_blob("nvidia/pytorch", sha256(b"none")) is None
    with pytest.raises(NotFoundError, match="BLOB_UNKNOWN"):
        client.open_blob("nvidia/pytorch", sha256(b"none"))


@pytest.mark.parametrize("honours_range", [True, False])
def test_broken_blob_download_resumes(serve, make_client, honours_range):
    half = len(BLOB) // 2 + 7

    def app(req):
        requests_so_far = len(server.requests)
        if requests_so_far == 1:
            return Resp(200, {}, BLOB, send_only=half)
        range_header = req.headers.get("Range")
        if honours_range and range_header:
            start = int(range_header.split("=")[1].rstrip("-"))
            return Resp(206, {"Content-Range": f"bytes {start}-{len(BLOB) - 1}/{len(BLOB)}"}, BLOB[start:])
        return Resp(200, {}, BLOB)

    server = serve(app)
    with make_client(server.url).open_blob("nvidia/pytorch", sha256(BLOB), chunk_size=4096) as reader:
        data = b"".join(reader)
        assert reader.verified
    assert data == BLOB
    assert len(server.requests) == 2
    assert server.requests[0].headers.get("Range") is None
    # Resumed after what had arrived intact (urllib3 may drop a partial last read).
    resumed_at = int(server.requests[1].headers["Range"][len("bytes=") : -1])
    assert 0 < resumed_at <= half


def test_blob_redirect_to_other_host_does_not_carry_authorization(serve, make_client):
    storage = serve(lambda req: Resp(200, {"Content-Type": "application/octet-stream"}, BLOB), name="storage")

    def routes(req):
        return Resp(307, {"Location": f"{storage.url}/bucket/data?X-Signature=abc"})

    server, _app = start_token_registry(serve, routes)
    client = make_client(server.url, username="$oauthtoken", password=PASSWORD)
    with client.open_blob("nvidia/pytorch", sha256(BLOB)) as reader:
        assert b"".join(reader) == BLOB
    blob_requests = [r for r in server.requests if "/blobs/" in r.path]
    assert blob_requests[-1].headers["Authorization"] == "Bearer tok1"  # the registry got the token...
    [fetched] = storage.requests
    assert fetched.target == "/bucket/data?X-Signature=abc"
    assert fetched.headers.get("Authorization") is None  # ...the other host did not
    assert fetched.headers["User-Agent"] == USER_AGENT


def test_refusal_by_the_redirect_target_names_that_host(serve, make_client):
    storage = serve(
        lambda req: Resp(403, {}, b"<Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>"),
        name="storage",
    )
    server = serve(lambda req: Resp(307, {"Location": f"{storage.url}/bucket/data?X-Signature=abc"}))
    with pytest.raises(AuthError) as excinfo:
        make_client(server.url).open_blob("nvidia/pytorch", sha256(BLOB))
    message = str(excinfo.value)
    assert message.startswith(
        f"403 from {storage.host}, where {server.host} redirected the blob {sha256(BLOB)} in nvidia/pytorch"
    )
    assert "Request has expired" in message
    assert "X-Signature" not in message


def test_relative_redirect_on_same_origin_keeps_authorization(serve, make_client):
    def routes(req):
        if req.path.startswith("/v2/nvidia/pytorch/blobs/"):
            return Resp(302, {"Location": "/storage/blob"})
        return Resp(200, {}, BLOB)

    def app(req):
        if req.path == "/storage/blob":
            return (
                Resp(200, {}, BLOB)
                if req.headers.get("Authorization") == "Basic " + base64.b64encode(b"u:p").decode()
                else Resp(401)
            )
        return inner(req)

    def inner(req):
        if req.headers.get("Authorization") is None:
            return Resp(401, {"WWW-Authenticate": 'Basic realm="r"'})
        return routes(req)

    server = serve(app)
    with make_client(server.url, username="u", password="p").open_blob("nvidia/pytorch", sha256(BLOB)) as reader:
        assert b"".join(reader) == BLOB
    [storage_request] = [r for r in server.requests if r.path == "/storage/blob"]
    assert storage_request.headers["Authorization"] == "Basic " + base64.b64encode(b"u:p").decode()


def test_redirect_loop_is_bounded(serve, make_client):
    server = serve(lambda req: Resp(302, {"Location": req.path}))
    with pytest.raises(RegistryError, match="too many redirects"):
        make_client(server.url).open_blob("nvidia/pytorch", sha256(BLOB))
    assert len(server.requests) == 11


# -- uploads -----------------------------------------------------------------------------------


class UploadRegistry:
    """Blob uploads: POST -> 202 + relative Location with a query string, PUT ?..&digest= -> 201."""

    def __init__(self, fail_puts=0, mount_ok=False):
        self.fail_puts = fail_puts
        self.mount_ok = mount_ok
        self.stored: Dict[str, bytes] = {}
        self.sessions = 0

    def __call__(self, req):
        if req.method == "POST" and req.path.endswith("/blobs/uploads/"):
            if "mount" in req.query and self.mount_ok:
                return Resp(
                    201,
                    {
                        "Location": f"/v2/x/blobs/{req.query['mount'][0]}",
                        "Docker-Content-Digest": req.query["mount"][0],
                    },
                )
            self.sessions += 1
            return Resp(202, {"Location": f"{req.path}uuid-{self.sessions}?_state=s%3D{self.sessions}", "Range": "0-0"})
        if req.method == "PUT" and "/blobs/uploads/uuid-" in req.path:
            if self.fail_puts:
                self.fail_puts -= 1
                return error_resp(503, "UNAVAILABLE", "try later")
            digest = req.query["digest"][0]
            if sha256(req.body) != digest:
                return error_resp(400, "DIGEST_INVALID", "provided digest did not match uploaded content")
            self.stored[digest] = req.body
            return Resp(201, {"Docker-Content-Digest": digest, "Location": f"/v2/x/blobs/{digest}"})
        if req.method == "DELETE":
            return Resp(204)
        return error_resp(404, "BLOB_UNKNOWN", "x")


def chunked(data, size=100000):
    for start in range(0, len(data), size):
        yield data[start : start + size]


def test_upload_blob_streams_with_content_length(serve, make_client):
    registry = UploadRegistry()
    server = serve(registry)
    digest = sha256(BLOB)
    assert make_client(server.url).upload_blob("nvidia/team/image", digest, len(BLOB), chunked(BLOB)) == digest
    post, put = server.requests
    assert (post.method, post.path) == ("POST", "/v2/nvidia/team/image/blobs/uploads/")
    assert put.method == "PUT"
    assert put.path == "/v2/nvidia/team/image/blobs/uploads/uuid-1"
    assert put.query == {"_state": ["s=1"], "digest": [digest]}
    assert put.headers["Content-Length"] == str(len(BLOB))
    assert put.headers.get("Transfer-Encoding") is None
    assert put.headers["Content-Type"] == "application/octet-stream"
    assert registry.stored[digest] == BLOB


def test_upload_empty_blob(serve, make_client):
    registry = UploadRegistry()
    server = serve(registry)
    digest = sha256(b"")
    make_client(server.url).upload_blob("x", digest, 0, iter([]))
    assert registry.stored == {digest: b""}
    assert server.requests[-1].headers["Content-Length"] == "0"


@pytest.mark.parametrize(
    "data, size, match",
    [
        (BLOB[:-1] + b"!", len(BLOB), "hashes to"),
        (BLOB, len(BLOB) + 5, "were declared"),
        (BLOB + b"more", len(BLOB), "longer than"),
    ],
    ids=["wrong-content", "too-short", "too-long"],
)
def test_upload_with_wrong_data_is_aborted(serve, make_client, data, size, match):
    registry = UploadRegistry()
    server = serve(registry)
    with pytest.raises(DigestMismatchError, match=match):
        make_client(server.url).upload_blob("x", sha256(BLOB), size, chunked(data))
    assert registry.stored == {}
    puts = [r for r in server.requests if r.method == "PUT"]
    assert all(not r.complete for r in puts)  # the request was cut off, never completed
    assert "DELETE" in [r.method for r in server.requests]  # the upload session was cancelled


def test_upload_retried_as_a_whole_with_a_chunk_factory(serve, make_client, sleeps):
    registry = UploadRegistry(fail_puts=1)
    server = serve(registry)
    digest = sha256(BLOB)
    make_client(server.url).upload_blob("x", digest, len(BLOB), lambda: chunked(BLOB))
    assert registry.stored[digest] == BLOB
    assert [r.method for r in server.requests] == ["POST", "PUT", "DELETE", "POST", "PUT"]
    assert len(sleeps) == 1


def test_upload_with_one_shot_iterable_is_not_retried(serve, make_client):
    registry = UploadRegistry(fail_puts=1)
    server = serve(registry)
    with pytest.raises(RegistryError) as excinfo:
        make_client(server.url).upload_blob("x", sha256(BLOB), len(BLOB), chunked(BLOB))
    assert excinfo.value.status == 503
    assert [r.method for r in server.requests] == ["POST", "PUT", "DELETE"]


def test_upload_with_token_auth_asks_for_push_scope(serve, make_client):
    registry = UploadRegistry()
    server, app = start_token_registry(serve, registry)
    make_client(server.url, username="$oauthtoken", password=PASSWORD).upload_blob(
        "nvidia/x", sha256(BLOB), len(BLOB), chunked(BLOB)
    )
    assert app.token_requests[0].query["scope"] == ["repository:nvidia/x:pull,push"]
    assert sha256(BLOB) in registry.stored


def test_a_cancelled_upload_session_asks_for_the_delete_scope(serve, make_client):
    """distribution wants the delete action for a DELETE of an upload session (pull,push is refused: the session
    stays until the registry's purge)."""
    server, app = start_token_registry(serve, UploadRegistry())
    client = make_client(server.url, username="$oauthtoken", password=PASSWORD)
    location = client.start_upload("nvidia/x")
    client.cancel_upload("nvidia/x", location)
    assert [r.query["scope"] for r in app.token_requests] == [
        ["repository:nvidia/x:pull,push"],
        ["repository:nvidia/x:delete"],
    ]
    last = server.requests[-1]  # the DELETE, with the token that grants delete (the registry took it)
    assert (last.method, last.headers.get("Authorization"), app.tokens["tok2"]) == (
        "DELETE",
        "Bearer tok2",
        "repository:nvidia/x:delete",
    )


def test_mount_blob(serve, make_client):
    registry = UploadRegistry(mount_ok=True)
    server = serve(registry)
    client = make_client(server.url)
    digest = sha256(BLOB)
    assert client.mount_blob("nvidia/dst", digest, "nvidia/src") is True
    [post] = server.requests
    assert post.query == {"mount": [digest], "from": ["nvidia/src"]}
    registry.mount_ok = False
    assert client.mount_blob("nvidia/dst", digest, "nvidia/src") is False
    assert [r.method for r in server.requests[1:]] == ["POST", "DELETE"]
    assert server.requests[-1].target == "/v2/nvidia/dst/blobs/uploads/uuid-1?_state=s%3D1"


def test_mount_with_token_auth_asks_for_both_scopes(serve, make_client):
    server, app = start_token_registry(serve, UploadRegistry(mount_ok=True))
    client = make_client(server.url, username="$oauthtoken", password=PASSWORD)
    assert client.mount_blob("nvidia/dst", sha256(BLOB), "nvidia/src")
    assert app.token_requests[0].query["scope"] == ["repository:nvidia/dst:pull,push", "repository:nvidia/src:pull"]


def test_bad_names_rejected_before_any_request(serve, make_client):
    server = serve(lambda req: Resp(200))
    client = make_client(server.url)
    with pytest.raises(Exception, match="invalid"):
        client.list_tags("../etc")
    with pytest.raises(Exception, match="invalid"):
        client.open_blob("x", "sha256:short")
    with pytest.raises(Exception, match="invalid"):
        client.get_manifest("x", "bad tag")
    assert server.requests == []


class SessionRegistry:
    """Upload sessions as distribution 2.8 keeps them: the offset in the upload URL's _state, only the latest URL valid."""

    def __init__(self, ranges: bool = True) -> None:
        self.ranges = ranges
        self.data = bytearray()

    def __call__(self, req):
        location = f"/v2/x/blobs/uploads/uuid-1?_state={len(self.data)}"
        if req.method == "POST":
            return Resp(202, {"Location": location, "Range": "0-0"})
        if req.query.get("_state") != [str(len(self.data))]:
            return error_resp(404, "BLOB_UPLOAD_INVALID", "blob upload invalid")
        if req.method == "GET":
            return Resp(204, {"Location": location, "Range": f"0-{max(len(self.data) - 1, 0)}"} if self.ranges else {})
        if req.method == "PATCH":
            self.data += req.body
            return Resp(
                202,
                {"Location": f"/v2/x/blobs/uploads/uuid-1?_state={len(self.data)}", "Range": f"0-{len(self.data) - 1}"},
            )
        if req.method == "PUT":
            if sha256(bytes(self.data)) != req.query["digest"][0]:
                return error_resp(400, "DIGEST_INVALID", "provided digest did not match uploaded content")
            return Resp(201, {"Docker-Content-Digest": req.query["digest"][0]})
        return Resp(204)


def test_an_upload_session_is_asked_where_it_stands_and_continued(serve, make_client):
    registry = SessionRegistry()
    server = serve(registry)
    client = make_client(server.url)
    location = client.start_upload("x")
    assert client.upload_offset("x", location) == 0  # distribution's "0-0" for an empty session
    following = client.patch_upload("x", location, 0, io.BytesIO(BLOB[:1000]), 1000)
    patch = server.requests[-1]
    assert (patch.headers["Content-Range"], patch.headers["Content-Length"]) == ("0-999", "1000")
    assert client.upload_offset("x", following) == 1000
    assert client.upload_offset("x", location) is None  # an older URL: the registry no longer knows it
    with pytest.raises(DigestMismatchError, match="does not hash"):
        client.finish_upload("x", following, sha256(BLOB))
    following = client.patch_upload("x", following, 1000, io.BytesIO(BLOB[1000:]), len(BLOB) - 1000)
    client.finish_upload("x", following, sha256(BLOB))
    assert server.requests[-1].method == "PUT" and server.requests[-1].body == b""


def test_a_registry_without_sessions_gives_no_offset(serve, make_client):
    server = serve(SessionRegistry(ranges=False))
    client = make_client(server.url)
    assert client.upload_offset("x", client.start_upload("x")) is None
    server = serve(
        lambda req: (
            error_resp(405, "UNSUPPORTED", "no")
            if req.method == "GET"
            else Resp(202, {"Location": "/v2/x/blobs/uploads/u"})
        )
    )
    client = make_client(server.url)
    assert client.upload_offset("x", client.start_upload("x")) is None
    server = serve(
        lambda req: Resp(202, {}) if req.method == "PATCH" else Resp(202, {"Location": "/v2/x/blobs/uploads/u"})
    )
    client = make_client(server.url)
    with pytest.raises(RegistryError, match="does not keep upload sessions"):
        client.patch_upload("x", client.start_upload("x"), 0, io.BytesIO(b"abc"), 3)
