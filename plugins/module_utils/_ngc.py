# Copyright (c) airgap.ngc contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private: client for the NGC catalog API (api.ngc.nvidia.com). Not a public API.

The key is exchanged for a short-lived Bearer token (``/token?service=ngc&scope=group/ngc``
with Basic ``$oauthtoken:<key>``), renewed when it expires or is refused. Every answer is
parsed defensively: NGC omits keys (``images`` for an empty repository) rather than
sending empty lists.
"""
from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Iterator
from urllib.parse import quote

from ansible_collections.airgap.ngc.plugins.module_utils._errors import AuthError, NgcError, NotFoundError
from ansible_collections.airgap.ngc.plugins.module_utils._http import HttpTransport

NGC_USERNAME = "$oauthtoken"
DEFAULT_PAGE_SIZE = 100


@dataclass(frozen=True)
class NgcRepository:
    """One repository of the catalog: ``nvidia/pytorch`` or ``nvidia/clara/clara-parabricks``."""

    org: str
    team: str | None
    name: str
    description: str = ""
    short_description: str = ""
    updated: str = ""
    latest_tag: str = ""
    is_public: bool = False

    @property
    def path(self) -> str:
        return "/".join(part for part in (self.org, self.team, self.name) if part)


@dataclass(frozen=True)
class NgcImage:
    """One tag of a repository as the catalog lists it."""

    tag: str
    updated: str = ""
    size: int | None = None
    extra: dict[str, Any] = field(default_factory=dict, compare=False)


class NgcClient:
    """The NGC catalog API: orgs, repositories (with teams and paging), images, search."""

    def __init__(self, api_url: str, api_key: str | None, transport: HttpTransport) -> None:
        self.api_url = api_url.rstrip("/")
        self._api_key = api_key or None
        self._http = transport
        self._token: str | None = None
        self._token_expiry = 0.0
        self._lock = threading.Lock()

    # Authentication -----------------------------------------------------------------------

    def _bearer(self, renew: bool = False) -> str | None:
        if self._api_key is None:
            return None
        with self._lock:
            if renew or self._token is None or time.monotonic() >= self._token_expiry:
                self._token, lifetime = self._fetch_token()
                self._token_expiry = time.monotonic() + max(lifetime - 5, 1)
            return self._token

    def _fetch_token(self) -> tuple[str, float]:
        url = f"{self.api_url}/token"
        response = self._http.send(
            "GET", url, params={"service": "ngc", "scope": "group/ngc"}, auth=(NGC_USERNAME, self._api_key or ""),
        )
        if response.status_code in (401, 403):
            raise AuthError(f"{response.status_code} from the NGC API at {self.api_url} when exchanging the API key: check the NGC API key",
                            status=response.status_code, url=url)
        body = self._json(response, url)
        token = body.get("token") or body.get("access_token")
        if not token:
            raise NgcError(f"the NGC API at {self.api_url} sent no token in its answer to /token", status=response.status_code)
        return str(token), float(body.get("expires_in") or 60)

    # Requests --------------------------------------------------------------------------------

    def _get(self, path: str, params: dict[str, Any] | None = None, what: str = "") -> dict[str, Any]:
        url = f"{self.api_url}{path}"
        token = self._bearer()
        for attempt in (1, 2):
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            response = self._http.send("GET", url, params=params, headers=headers)
            if response.status_code == 401 and token and attempt == 1:
                token = self._bearer(renew=True)
                continue
            break
        if response.status_code in (401, 403):
            hint = "check the NGC API key and that it may read this org" if self._api_key else "set api_key (or NGC_API_KEY)"
            raise AuthError(f"{response.status_code} from the NGC API for {what or path}: {hint}", status=response.status_code, url=url)
        if response.status_code == 404:
            raise NotFoundError(f"the NGC API does not know {what or path} (404)", status=404, url=url)
        if response.status_code >= 400:
            raise NgcError(f"the NGC API answered {response.status_code} for {what or path}: {_status_message(response)}", status=response.status_code)
        return self._json(response, url)

    @staticmethod
    def _json(response: Any, url: str) -> dict[str, Any]:
        try:
            body = response.json()
        except ValueError:
            raise NgcError(f"the NGC API sent an answer that is not JSON for {url} (HTTP {response.status_code})") from None
        if not isinstance(body, dict):
            raise NgcError(f"the NGC API sent an unexpected answer for {url}: expected a JSON object")
        return body

    # Catalog ---------------------------------------------------------------------------------

    def orgs(self) -> list[str]:
        body = self._get("/v2/orgs", what="the list of organisations")
        return [str(org.get("name")) for org in body.get("organizations") or [] if org.get("name")]

    def repositories(self, org: str, page_size: int = DEFAULT_PAGE_SIZE) -> Iterator[NgcRepository]:
        """Every repository of ``org``, its teams' included, across all pages."""
        page = 0
        while True:
            body = self._get(
                f"/v2/org/{quote(org)}/repos",
                params={"include-teams": "true", "include-public": "true", "page-size": page_size, "page-number": page},
                what=f"org {org!r}",
            )
            for item in body.get("repositories") or []:
                repo = _repository(org, item)
                if repo is not None:
                    yield repo
            paging = body.get("paginationInfo") or {}
            total_pages = int(paging.get("totalPages") or 1)
            page += 1
            if page >= total_pages:
                return

    def images(self, repo: NgcRepository) -> list[NgcImage]:
        """The tags of one repository; an empty repository (no ``images`` key) gives []."""
        body = self._get(f"{_repo_path(repo)}/images", what=f"repository {repo.path}")
        images = []
        for item in body.get("images") or []:
            tag = item.get("tag")
            if not tag:
                continue
            size = item.get("size")
            images.append(NgcImage(tag=str(tag), updated=str(item.get("updatedDate") or ""), size=int(size) if isinstance(size, (int, float)) else None,
                                   extra={k: v for k, v in item.items() if k not in ("tag", "updatedDate", "size")}))
        return images

    def repository(self, repo: NgcRepository) -> dict[str, Any]:
        """The repository detail: ``tags``, ``latestTag``, ``isMultiArchitecture``..."""
        return self._get(_repo_path(repo), what=f"repository {repo.path}")

    def search(self, query: str, page: int = 0, page_size: int = DEFAULT_PAGE_SIZE) -> dict[str, Any]:
        """The public catalog search (no key needed)."""
        q = json.dumps({"query": query, "page": page, "pageSize": page_size})
        return self._get("/v2/search/catalog/resources/CONTAINER", params={"q": q}, what=f"search {query!r}")


def _repo_path(repo: NgcRepository) -> str:
    team = f"/team/{quote(repo.team)}" if repo.team else ""
    return f"/v2/org/{quote(repo.org)}{team}/repos/{quote(repo.name)}"


def _repository(org: str, item: dict[str, Any]) -> NgcRepository | None:
    name = item.get("name")
    if not name:
        return None
    namespace = str(item.get("namespace") or org).strip("/")
    parts = namespace.split("/")
    team = parts[1] if len(parts) > 1 else None
    return NgcRepository(
        org=parts[0] or org,
        team=team,
        name=str(name),
        description=str(item.get("description") or ""),
        short_description=str(item.get("shortDescription") or ""),
        updated=str(item.get("updatedDate") or ""),
        latest_tag=str(item.get("latestTag") or ""),
        is_public=bool(item.get("isPublic")),
    )


def _status_message(response: Any) -> str:
    try:
        body = response.json()
    except ValueError:
        return (response.text or "").strip()[:200] or response.reason or ""
    status = body.get("requestStatus") if isinstance(body, dict) else None
    if isinstance(status, dict):
        return str(status.get("statusDescription") or status.get("statusCode") or "")
    return str(body)[:200]
