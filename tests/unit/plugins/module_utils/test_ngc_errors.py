# Copyright (c) airgap.ngc contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Unit tests for the NGC catalog client's and the catalog's errors: token endpoint failures, revoked tokens,
unknown teams, path segments from input. The API is a requests adapter in the test (no network)."""

from __future__ import annotations

import json
from typing import Any, Callable, Dict, List, Tuple
from urllib.parse import unquote, urlsplit

import pytest
import requests
from requests.adapters import BaseAdapter
from requests.structures import CaseInsensitiveDict

from ansible_collections.airgap.ngc.plugins.module_utils._catalog.catalog import Catalog, CatalogQuery
from ansible_collections.airgap.ngc.plugins.module_utils._types.errors import (
    AirgapError,
    AuthError,
    ConfigError,
    NgcError,
    NotFoundError,
)
from ansible_collections.airgap.ngc.plugins.module_utils._types.filters import ImageFilter
from ansible_collections.airgap.ngc.plugins.module_utils._http.transport import HttpTransport
from ansible_collections.airgap.ngc.plugins.module_utils._clients.ngc import NgcClient, NgcRepository, path_segment

API = "https://ngc.test"
HOST = "ngc.test"
KEY = "nvapi-ngc-secret-4567"
Answer = Tuple[int, Dict[str, str], bytes]


def answer(status: int, data: Any, headers: Dict[str, str] | None = None) -> Answer:
    return status, {"Content-Type": "application/json", **(headers or {})}, json.dumps(data).encode()


def status_answer(status: int, description: str, headers: Dict[str, str] | None = None) -> Answer:
    return answer(status, {"requestStatus": {"statusCode": "ERROR", "statusDescription": description}}, headers)


class FakeApi(BaseAdapter):
    """A requests adapter answering with app(request) -> (status, headers, body); records every request."""

    def __init__(self, app: Callable[[requests.PreparedRequest], Answer]) -> None:
        super().__init__()
        self.app = app
        self.requests: List[requests.PreparedRequest] = []

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:  # pylint: disable=arguments-differ
        self.requests.append(request)
        status, headers, body = self.app(request)
        response = requests.Response()
        response.status_code = status
        response.headers = CaseInsensitiveDict(headers)
        response._content = body  # pylint: disable=protected-access
        response._content_consumed = True  # pylint: disable=protected-access
        response.url = request.url
        response.request = request
        response.reason = "Reason"
        return response

    def close(self) -> None:
        pass

    def paths(self) -> List[str]:
        return [urlsplit(r.url).path for r in self.requests]


class NgcApp:
    """The parts of the NGC API the tests need: /token, org and team listings; faults per path."""

    def __init__(self, teams: Tuple[str, ...] = ("clara",)) -> None:
        self.teams = teams
        self.token_answers: List[Answer] = []
        self.revoked = False
        self.issued = 0

    def __call__(self, request: requests.PreparedRequest) -> Answer:
        path = urlsplit(request.url).path
        if path == "/token":
            if self.token_answers:
                return self.token_answers.pop(0) if len(self.token_answers) > 1 else self.token_answers[0]
            self.issued += 1
            return answer(200, {"token": f"ngc-token-{self.issued}", "expires_in": 300})
        if not (request.headers.get("Authorization") or "").startswith("Bearer ngc-token-"):
            return status_answer(401, "missing or invalid bearer token")
        if self.revoked:
            return status_answer(401, "token revoked")
        if path == "/v2/org/nvidia/repos":
            repos = [
                {"namespace": "nvidia", "name": "pytorch"},
                {"namespace": "nvidia/clara", "name": "clara-parabricks"},
            ]
            return answer(200, {"repositories": repos, "paginationInfo": {"totalPages": 1}})
        if path.startswith("/v2/org/") and path.endswith("/images"):
            return answer(200, {})
        for team in self.teams:
            if path == f"/v2/org/nvidia/team/{team}/repos":
                return answer(200, {"repositories": []})
        if path.startswith("/v2/org/nvidia/team/"):
            return status_answer(404, f"team '{unquote(path.split('/')[5])}' not found in organization 'nvidia'")
        return status_answer(404, f"no such endpoint {path}")


@pytest.fixture
def sleeps():
    return []


def client_for(
    app: Callable[[requests.PreparedRequest], Answer], sleeps: list, key: str | None = KEY, retries: int = 2
):
    transport = HttpTransport(retries=retries, sleep=sleeps.append)
    adapter = FakeApi(app)
    transport.session.mount(API, adapter)
    return NgcClient(API, key, transport), adapter


def one_line(message: str) -> str:
    assert "\n" not in message and "Traceback" not in message
    assert KEY not in message and "ngc-token-" not in message
    return message


# -- the token endpoint ------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [429, 503])
def test_token_endpoint_storm_names_status_and_attempts_not_a_missing_token(sleeps, status):
    app = NgcApp()
    app.token_answers = [status_answer(status, "testbed fault", {"Retry-After": "1"})]
    client, _api = client_for(app, sleeps, retries=5)
    with pytest.raises(NgcError) as excinfo:
        client.orgs()
    message = one_line(str(excinfo.value))
    assert message == f"{status} from {HOST} for a token (/token) after 6 attempts: testbed fault"
    assert "no token" not in message
    assert excinfo.value.status == status
    assert sleeps == [1.0] * 5


def test_token_endpoint_retry_after_is_honoured_then_it_works(sleeps):
    app = NgcApp()
    app.token_answers = [status_answer(429, "slow down", {"Retry-After": "9"}), answer(200, {"token": "ngc-token-x"})]
    client, api = client_for(app, sleeps)
    assert list(client.repositories("nvidia"))
    assert sleeps == [9.0]
    assert api.paths()[:2] == ["/token", "/token"]


def test_refused_key_keeps_the_servers_reason_and_never_the_key(sleeps):
    app = NgcApp()
    app.token_answers = [status_answer(401, f"invalid NGC API key {KEY}")]
    client, _api = client_for(app, sleeps)
    with pytest.raises(AuthError) as excinfo:
        client.orgs()
    message = one_line(str(excinfo.value))
    assert (
        message
        == f"401 from {HOST} when exchanging the NGC API key for a token: check the NGC API key (invalid NGC API key ***)"
    )


def test_a_token_answer_without_a_token_says_so(sleeps):
    app = NgcApp()
    app.token_answers = [answer(200, {"expires_in": 60})]
    client, _api = client_for(app, sleeps)
    with pytest.raises(NgcError, match=f"^{HOST} answered a token .* without a token$"):
        client.orgs()


def test_revoked_token_is_renewed_once_then_reported_with_the_servers_reason(sleeps):
    app = NgcApp()
    app.revoked = True
    client, api = client_for(app, sleeps)
    with pytest.raises(AuthError) as excinfo:
        list(client.repositories("nvidia"))
    message = one_line(str(excinfo.value))
    assert message.startswith(f"401 from {HOST} for org 'nvidia': ")
    assert "token revoked" in message
    assert "check the NGC API key" not in message
    assert api.paths() == ["/token", "/v2/org/nvidia/repos", "/token", "/v2/org/nvidia/repos"]


def test_without_a_key_a_401_asks_for_one(sleeps):
    client, _api = client_for(NgcApp(), sleeps, key=None)
    with pytest.raises(AuthError, match="set api_key"):
        client.orgs()


# -- other answers -----------------------------------------------------------------------------------


def test_server_error_is_one_line_with_the_reason(sleeps):
    app = NgcApp()
    client, _api = client_for(
        lambda r: app(r) if urlsplit(r.url).path == "/token" else status_answer(500, "database on fire"), sleeps
    )
    with pytest.raises(NgcError) as excinfo:
        list(client.repositories("nvidia"))
    assert one_line(str(excinfo.value)) == f"500 from {HOST} for org 'nvidia': database on fire"
    assert sleeps == []  # 500 is not retried


@pytest.mark.parametrize("body", [b"<html>gateway</html>", b"[1, 2]"])
def test_an_answer_that_is_not_a_json_object_is_an_ngc_error(sleeps, body):
    app = NgcApp()
    client, _api = client_for(lambda r: app(r) if urlsplit(r.url).path == "/token" else (200, {}, body), sleeps)
    with pytest.raises(NgcError, match=f"^{HOST} answered org 'nvidia' with something that is not a JSON object"):
        list(client.repositories("nvidia"))


def test_unexpected_shapes_are_ngc_errors_not_type_errors(sleeps):
    app = NgcApp()

    def api(request):
        if urlsplit(request.url).path == "/token":
            return app(request)
        return answer(200, {"repositories": {"not": "a list"}, "paginationInfo": {"totalPages": "many"}})

    client, _api = client_for(api, sleeps)
    with pytest.raises(NgcError, match="not a list"):
        list(client.repositories("nvidia"))


# -- path segments from input ------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["", ".", "..", "../../etc", "nvidia/clara"])
def test_path_segment_refuses_anything_but_one_segment(value):
    with pytest.raises(ConfigError, match="is not a single name"):
        path_segment(value, "org")


def test_path_segment_encodes():
    assert path_segment("a b%?#", "org") == "a%20b%25%3F%23"


@pytest.mark.parametrize("org", ["../../etc", "..", "a/b"])
def test_org_that_is_not_one_segment_is_refused_before_any_request(sleeps, org):
    client, api = client_for(NgcApp(), sleeps)
    with pytest.raises(ConfigError, match=r"^org .* is not a single name"):
        list(client.repositories(org))
    assert api.requests == []


def test_org_is_path_encoded(sleeps):
    client, api = client_for(NgcApp(), sleeps)
    with pytest.raises(NotFoundError):
        list(client.repositories("my org?x=1"))
    assert urlsplit(api.requests[-1].url).path == "/v2/org/my%20org%3Fx%3D1/repos"


def test_repository_names_from_the_api_are_checked_too(sleeps):
    client, api = client_for(NgcApp(), sleeps)
    with pytest.raises(NgcError, match="is not a single name"):
        client.images(NgcRepository(org="nvidia", team=None, name=".."))
    assert "/v2/org/nvidia/repos/../images" not in api.paths()


# -- teams in the catalog -------------------------------------------------------------------------


class NoRegistry:
    host = "nvcr.test"


def catalog(client: NgcClient, teams: Any) -> Catalog:
    query = CatalogQuery(
        image_filter=ImageFilter.create(), org="nvidia", teams=teams, include_digests=False, parallel=1
    )
    return Catalog(query, NoRegistry(), client)  # type: ignore[arg-type]


def test_unknown_team_is_an_error_naming_team_and_org(sleeps):
    client, _api = client_for(NgcApp(), sleeps)
    with pytest.raises(NotFoundError) as excinfo:
        catalog(client, ["clara", "no-such-team"]).list()
    message = one_line(str(excinfo.value))
    assert message.startswith(f"404 from {HOST}: team 'no-such-team' of org 'nvidia' not found")


def test_known_team_without_repositories_is_empty_not_an_error(sleeps):
    client, api = client_for(NgcApp(teams=("clara", "empty")), sleeps)
    assert catalog(client, ["empty"]).list() == []
    assert "/v2/org/nvidia/team/empty/repos" in api.paths()


def test_listed_team_needs_no_extra_request(sleeps):
    client, api = client_for(NgcApp(), sleeps)
    assert catalog(client, ["clara"]).list() == []  # no tags in this stand-in
    assert "/v2/org/nvidia/team/clara/repos" not in api.paths()
    assert "/v2/org/nvidia/team/clara/repos/clara-parabricks/images" in api.paths()


@pytest.mark.parametrize("team", ["../..", "..", "clara/x"])
def test_team_that_is_not_one_segment_is_refused_before_any_request(sleeps, team):
    client, api = client_for(NgcApp(), sleeps)
    with pytest.raises(ConfigError, match=r"^team .* is not a single name"):
        catalog(client, [team]).list()
    assert api.requests == []


def test_empty_team_stands_for_the_orgs_own_images(sleeps):
    client, api = client_for(NgcApp(), sleeps)
    catalog(client, [""]).list()
    assert not any("/team/" in path for path in api.paths())


def test_every_error_is_an_airgap_error(sleeps):
    client, _api = client_for(lambda r: (200, {}, b"{"), sleeps)
    with pytest.raises(AirgapError):
        client.orgs()
