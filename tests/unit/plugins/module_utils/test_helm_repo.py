# Copyright (c) airgap.ngc contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The Helm repository client: the key goes to the repository's host only (never along a redirect elsewhere, never
into a message), the index is bounded and checked field by field, an archive appears only whole and with the index's
sha256. The server is a requests adapter in the test (no network)."""

from __future__ import annotations

import base64
import hashlib
import os
from typing import Any, Dict, List
from urllib.parse import urlsplit

import pytest
import requests
import yaml

from ansible_collections.airgap.ngc.plugins.module_utils._clients import helm_repo
from ansible_collections.airgap.ngc.plugins.module_utils._clients.helm_repo import HelmRepository
from ansible_collections.airgap.ngc.plugins.module_utils._http.transport import HttpTransport
from ansible_collections.airgap.ngc.plugins.module_utils._types.charts import ChartRef
from ansible_collections.airgap.ngc.plugins.module_utils._types.errors import (
    AirgapError,
    AuthError,
    DigestMismatchError,
    NgcError,
    NotFoundError,
)
from ansible_collections.airgap.ngc.tests.unit.plugins.module_utils.test_ngc_errors import Answer, FakeApi

HELM = "https://helm.test"
CDN = "https://cdn.test"
KEY = "nvapi-helm-secret-8910"
ARCHIVE = b"\x1f\x8b pretend this is a chart archive" * 100
BASIC = "Basic " + base64.b64encode(f"$oauthtoken:{KEY}".encode()).decode()


def index(**entry: Any) -> Dict[str, Any]:
    base = {
        "name": "gpu-operator",
        "version": "v26.7.0",
        "appVersion": "v26.7.0",
        "created": "2026-07-21T12:00:00Z",
        "digest": hashlib.sha256(ARCHIVE).hexdigest(),
        "urls": ["charts/gpu-operator-v26.7.0.tgz"],
    }
    older = dict(base, version="v26.3.0", urls=[f"{HELM}/nvidia/charts/gpu-operator-v26.3.0.tgz"])
    return {"apiVersion": "v1", "entries": {"gpu-operator": [{**base, **entry}, older]}}


class HelmApp:
    """NGC's Helm repository for nvidia: Basic $oauthtoken only; archives redirected to another host (a CDN)."""

    def __init__(self, document: Any = None, archive: bytes = ARCHIVE) -> None:
        self.document = index() if document is None else document
        self.archive = archive

    def __call__(self, request: requests.PreparedRequest) -> Answer:
        url = urlsplit(request.url)
        auth = request.headers.get("Authorization")
        if url.netloc == "cdn.test":
            if auth:
                return 400, {}, b"Only one auth mechanism allowed"
            return 200, {"Content-Type": "application/gzip"}, self.archive
        if auth != BASIC:
            return 401, {"WWW-Authenticate": 'Basic realm="helm"'}, b"unauthorized"
        if url.path == "/nvidia/index.yaml":
            body = self.document if isinstance(self.document, bytes) else yaml.safe_dump(self.document).encode()
            return 200, {"Content-Type": "application/x-yaml"}, body
        if url.path.startswith("/nvidia/charts/"):
            return 302, {"Location": f"{CDN}/signed/{url.path.rsplit('/', 1)[1]}?sig=abc"}, b""
        return 404, {}, b"not found"


def repository(app: Any, key: str | None = KEY, team: str | None = None) -> tuple[HelmRepository, FakeApi]:
    transport = HttpTransport(retries=0)
    adapter = FakeApi(app)
    transport.session.mount(HELM, adapter)
    transport.session.mount(CDN, adapter)
    return HelmRepository(transport, HELM, "nvidia", team, key), adapter


def no_key(message: str) -> str:
    assert KEY not in message and base64.b64encode(f"$oauthtoken:{KEY}".encode()).decode() not in message
    assert "\n" not in message
    return message


def test_the_index_with_the_key() -> None:
    repo, adapter = repository(HelmApp())
    assert [entry["version"] for entry in repo.versions("gpu-operator")] == ["v26.7.0", "v26.3.0"]
    assert repo.entry(ChartRef.parse("nvidia/gpu-operator:v26.3.0"))["urls"] == [
        f"{HELM}/nvidia/charts/gpu-operator-v26.3.0.tgz"
    ]
    assert repo.versions("nim") == []
    repo.index()  # read once
    assert [r.url for r in adapter.requests] == [f"{HELM}/nvidia/index.yaml"]
    assert adapter.requests[0].headers["Authorization"] == BASIC


def test_the_archive_follows_a_redirect_to_another_host_without_the_key(tmp_path: Any) -> None:
    repo, adapter = repository(HelmApp())
    path = repo.fetch(repo.entry(ChartRef.parse("gpu-operator:v26.7.0")), str(tmp_path))
    assert path == os.path.join(str(tmp_path), "gpu-operator-v26.7.0.tgz")
    with open(path, "rb") as handle:
        assert handle.read() == ARCHIVE
    sent = {urlsplit(r.url).netloc: r.headers.get("Authorization") for r in adapter.requests}
    assert sent == {"helm.test": BASIC, "cdn.test": None}
    assert os.listdir(tmp_path) == ["gpu-operator-v26.7.0.tgz"]


def test_relative_and_absolute_urls() -> None:
    repo, _adapter = repository(HelmApp())
    assert (
        repo.chart_url(repo.entry(ChartRef.parse("gpu-operator:v26.7.0")))
        == f"{HELM}/nvidia/charts/gpu-operator-v26.7.0.tgz"
    )
    team, _adapter = repository(HelmApp(), team="clara")
    assert team.url == f"{HELM}/nvidia/clara"


def test_an_archive_that_does_not_hash_to_the_index_digest_leaves_no_file(tmp_path: Any) -> None:
    repo, _adapter = repository(HelmApp(archive=ARCHIVE + b"tampered"))
    with pytest.raises(DigestMismatchError) as error:
        repo.fetch(repo.entry(ChartRef.parse("gpu-operator:v26.7.0")), str(tmp_path))
    assert "chart nvidia/gpu-operator v26.7.0 from cdn.test hashes to sha256:" in str(error.value)
    assert os.listdir(tmp_path) == []


def test_an_archive_over_the_limit_is_refused(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(helm_repo, "MAX_CHART_BYTES", 100)
    repo, _adapter = repository(HelmApp())
    with pytest.raises(AirgapError, match="has more than 100 bytes: refused"):
        repo.fetch(repo.entry(ChartRef.parse("gpu-operator:v26.7.0")), str(tmp_path))
    assert os.listdir(tmp_path) == []


def test_without_a_key_a_private_org_names_api_key() -> None:
    repo, adapter = repository(HelmApp(), key=None)
    with pytest.raises(AuthError) as error:
        repo.index()
    assert no_key(str(error.value)).startswith(
        "401 from helm.test for the Helm repository index of nvidia: the Helm repository "
        "of nvidia is not public: set api_key"
    )
    assert adapter.requests[0].headers.get("Authorization") is None


def test_a_wrong_key_is_never_shown() -> None:
    class Echo(HelmApp):
        def __call__(self, request: requests.PreparedRequest) -> Answer:
            return 401, {}, f"refused {request.headers.get('Authorization')}".encode()

    repo, _adapter = repository(Echo())
    with pytest.raises(AuthError) as error:
        repo.index()
    assert "check that the NGC API key may read the charts of nvidia" in no_key(str(error.value))


def test_a_repository_that_is_not_there() -> None:
    repo, _adapter = repository(HelmApp(), team="nosuchteam")
    with pytest.raises(NotFoundError, match="helm.test has no Helm repository for nvidia/nosuchteam"):
        repo.index()


def test_a_version_or_chart_that_is_not_there_names_what_there_is() -> None:
    repo, _adapter = repository(HelmApp())
    with pytest.raises(NotFoundError) as error:
        repo.entry(ChartRef.parse("nvidia/gpu-operator:v9.9.9"))
    assert (
        str(error.value)
        == f"chart nvidia/gpu-operator has no version 'v9.9.9' in {HELM}/nvidia (it has v26.7.0, v26.3.0)"
    )
    with pytest.raises(
        NotFoundError, match="chart nvidia/gpu-operater not found: the Helm repository .* has no chart 'gpu-operater'"
    ):
        repo.entry(ChartRef.parse("nvidia/gpu-operater:v26.7.0"))


@pytest.mark.parametrize(
    "document,fragment",
    [
        (b"entries: [a, b\n", "is not valid YAML (line"),
        (b"- just a list\n", "is not a Helm repository index: it is not a mapping"),
        ({"entries": ["gpu-operator"]}, "entries is not a mapping"),
        ({"entries": {"../etc": []}}, "entries holds the chart name '../etc'"),
        ({"entries": {"gpu-operator": {"version": "1"}}}, "entries.gpu-operator is not a list"),
        (index(version=26.7), "entries.gpu-operator[0]: the version 26.7 must be a string"),
        (index(urls=[]), "entries.gpu-operator[0].urls is not a list of URLs"),
        (index(urls="charts/x.tgz"), "entries.gpu-operator[0].urls is not a list of URLs"),
        (index(digest="md5:abc"), "entries.gpu-operator[0]: digest 'md5:abc' is not a sha256"),
        (index(name="other"), "entries.gpu-operator[0].name is 'other', not 'gpu-operator'"),
    ],
)
def test_an_index_that_is_not_one_is_named_field_by_field(document: Any, fragment: str) -> None:
    repo, _adapter = repository(HelmApp(document))
    with pytest.raises(AirgapError) as error:
        repo.index()
    assert str(error.value).startswith(f"the Helm repository index of nvidia ({HELM}/nvidia/index.yaml)")
    assert fragment in str(error.value), str(error.value)


def test_an_index_over_the_limit_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(helm_repo, "MAX_INDEX_BYTES", 64)
    repo, _adapter = repository(HelmApp())
    with pytest.raises(AirgapError, match="index.yaml.* has more than 64 bytes: refused"):
        repo.index()


def test_redirect_loops_end() -> None:
    class Loop(HelmApp):
        def __call__(self, request: requests.PreparedRequest) -> Answer:
            return 302, {"Location": request.url}, b""

    repo, adapter = repository(Loop())
    with pytest.raises(NgcError, match="redirected the Helm repository index of nvidia more than 5 times"):
        repo.index()
    assert len(adapter.requests) == 6


def test_errors_keep_the_key_out_of_the_message_for_every_status() -> None:
    class Failing(HelmApp):
        def __call__(self, request: requests.PreparedRequest) -> Answer:
            return 500, {}, f'{{"error": "broken for {KEY}"}}'.encode()

    repo, _adapter = repository(Failing())
    with pytest.raises(NgcError) as error:
        repo.index()
    assert no_key(str(error.value)).startswith("500 from helm.test for the Helm repository index of nvidia")


def test_the_key_never_reaches_an_http_downgrade_of_the_same_host() -> None:
    class Downgrade(HelmApp):
        seen: List[Any] = []

        def __call__(self, request: requests.PreparedRequest) -> Answer:
            if request.url.startswith("http://"):
                self.seen.append(request.headers.get("Authorization"))
                return 200, {}, yaml.safe_dump(index()).encode()
            return 302, {"Location": "http://helm.test/nvidia/index.yaml"}, b""

    app = Downgrade()
    repo, _adapter = repository(app)
    repo._http.session.mount("http://helm.test", FakeApi(app))  # pylint: disable=protected-access
    repo.index()
    assert app.seen == [None]
