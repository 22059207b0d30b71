# Copyright (c) airgap.ngc contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private: client for the NGC catalog API (api.ngc.nvidia.com). Not a public API.

The key is exchanged for a short-lived Bearer token (``/token?service=ngc&scope=group/ngc``
with Basic ``$oauthtoken:<key>``), renewed when it expires or is refused. Every answer is
parsed defensively: NGC omits keys (``images`` for an empty repository) rather than
sending empty lists. Every path segment built from input (org, team, repository name) is
percent-encoded and must be one segment: ``..`` or a ``/`` never reaches another API path
with the bearer token.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Iterator, Optional, Type
from urllib.parse import quote

from ansible_collections.airgap.ngc.plugins.module_utils._types.errors import (
    AirgapError,
    AuthError,
    ConfigError,
    NgcError,
    NotFoundError,
    status_message,
)
from ansible_collections.airgap.ngc.plugins.module_utils._http.transport import HttpTransport, host_of, reason_of

NGC_USERNAME = "$oauthtoken"
DEFAULT_PAGE_SIZE = 100
DEFAULT_TOKEN_LIFETIME = 60.0
MAX_PAGES = 10000


def path_segment(value: Any, what: str, error: Type[AirgapError] = ConfigError) -> str:
    """value percent-encoded as one URL path segment; error if it is empty, ``.``, ``..`` or holds a ``/``."""
    text = str(value)
    if text in ("", ".", "..") or "/" in text:
        raise error(f"{what} {text!r} is not a single name: it may not be empty, '.' or '..', or contain '/'")
    return quote(text, safe="")


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

    def platforms_by_digest(self) -> dict[str, str]:
        """``os/architecture[/variant]`` by manifest digest, from the catalog's ``architectureVariants``.

        Only entries that name a digest, an os and an architecture count: the catalog's word is taken for the
        platform of a manifest only when the registry serves that very digest, and nothing is guessed.
        """
        found: dict[str, str] = {}
        variants = self.extra.get("architectureVariants")
        for item in variants if isinstance(variants, list) else []:
            if not isinstance(item, dict):
                continue
            digest, system, arch, variant = (item.get(key) for key in ("digest", "os", "architecture", "variant"))
            if not all(isinstance(value, str) and value for value in (digest, system, arch)):
                continue
            found[str(digest)] = (
                f"{system}/{arch}/{variant}" if isinstance(variant, str) and variant else f"{system}/{arch}"
            )
        return found


class NgcClient:
    """The NGC catalog API: orgs, repositories (with teams and paging), images, search.

    Errors are one line naming the API's host, with the server's reason and never the key or a token.
    """

    def __init__(self, api_url: str, api_key: str | None, transport: HttpTransport) -> None:
        self.api_url = api_url.rstrip("/")
        self.host = host_of(self.api_url)
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
                self._token = None
                token, lifetime = self._fetch_token()
                self._token = token
                self._token_expiry = time.monotonic() + max(lifetime - 5, 1)
            return self._token

    def _fetch_token(self) -> tuple[str, float]:
        url = f"{self.api_url}/token"
        what = "a token (/token)"
        secrets = (self._api_key,)
        response, attempts = self._http.send(
            "GET",
            url,
            what=what,
            error=NgcError,
            secrets=secrets,
            params={"service": "ngc", "scope": "group/ngc"},
            auth=(NGC_USERNAME, self._api_key or ""),
        )
        status = response.status_code
        if status >= 400:
            reason = reason_of(response, secrets)
            response.close()
            because = f" ({reason})" if reason else ""
            if status in (401, 403):
                message = f"{status} from {self.host} when exchanging the NGC API key for a token: check the NGC API key{because}"
                raise AuthError(message, status=status, url=url)
            raise NgcError(status_message(status, self.host, what, attempts, reason), status=status, url=url)
        body = self._json(response, what)
        token = body.get("token") or body.get("access_token")
        if not isinstance(token, str) or not token:
            raise NgcError(
                f"{self.host} answered {what} with HTTP {status} but without a token", status=status, url=url
            )
        lifetime = body.get("expires_in")
        if isinstance(lifetime, bool) or not isinstance(lifetime, (int, float)) or lifetime <= 0:
            lifetime = DEFAULT_TOKEN_LIFETIME
        return token, float(lifetime)

    # Requests --------------------------------------------------------------------------------

    def _get(self, path: str, params: dict[str, Any] | None = None, what: str = "") -> dict[str, Any]:
        url = f"{self.api_url}{path}"
        what = what or path
        bearer = _Bearer(self) if self._api_key is not None else None
        token = self._bearer()
        response, attempts = self._http.send(
            "GET",
            url,
            what=what,
            error=NgcError,
            secrets=(self._api_key, token),
            params=params,
            credentials=bearer,
        )
        if response.status_code >= 400:
            raise self._error(response, attempts, what, url, bearer.token if bearer else None)
        return self._json(response, what)

    def _error(self, response: Any, attempts: int, what: str, url: str, token: Optional[str]) -> AirgapError:
        status = response.status_code
        reason = reason_of(response, (self._api_key, token))
        response.close()
        because = f" ({reason})" if reason else ""
        if status in (401, 403):
            if self._api_key is None:
                hint = "the NGC API wants a key: set api_key (or NGC_API_KEY)"
            elif status == 401:
                hint = "the API refused a token it had just issued for the key; check that the NGC API key may read it"
            else:
                hint = "access denied; check that the NGC API key may read it"
            return AuthError(f"{status} from {self.host} for {what}: {hint}{because}", status=status, url=url)
        if status == 404:
            return NotFoundError(f"404 from {self.host}: {what} not found{because}", status=404, url=url)
        return NgcError(status_message(status, self.host, what, attempts, reason), status=status, url=url)

    def _json(self, response: Any, what: str) -> dict[str, Any]:
        try:
            body = response.json()
        except ValueError:
            body = None
        finally:
            response.close()
        if not isinstance(body, dict):
            raise NgcError(
                f"{self.host} answered {what} with something that is not a JSON object (HTTP {response.status_code})",
                status=response.status_code,
            )
        return body

    # Catalog ---------------------------------------------------------------------------------

    def orgs(self) -> list[str]:
        body = self._get("/v2/orgs", what="the list of organisations")
        return [
            str(org["name"])
            for org in _list(body, "organizations", self.host)
            if isinstance(org, dict) and org.get("name")
        ]

    def repositories(self, org: str, page_size: int = DEFAULT_PAGE_SIZE) -> Iterator[NgcRepository]:
        """Every repository of ``org``, its teams' included, across all pages."""
        path = f"/v2/org/{path_segment(org, 'org')}/repos"
        page = 0
        while True:
            params = {"include-teams": "true", "include-public": "true", "page-size": page_size, "page-number": page}
            body = self._get(path, params=params, what=f"org {org!r}")
            for item in _list(body, "repositories", self.host):
                repo = _repository(org, item)
                if repo is not None:
                    yield repo
            paging = body.get("paginationInfo")
            total_pages = _int((paging if isinstance(paging, dict) else {}).get("totalPages"), 1)
            page += 1
            if page >= min(total_pages, MAX_PAGES):
                return

    def require_team(self, org: str, team: str) -> None:
        """Nothing if ``org`` has ``team``; else NotFoundError (404) naming both, like an unknown org."""
        path = f"/v2/org/{path_segment(org, 'org')}/team/{path_segment(team, 'team')}/repos"
        self._get(path, params={"page-size": 1, "page-number": 0}, what=f"team {team!r} of org {org!r}")

    def images(self, repo: NgcRepository) -> list[NgcImage]:
        """The tags of one repository; an empty repository (no ``images`` key) gives []."""
        body = self._get(f"{_repo_path(repo)}/images", what=f"repository {repo.path}")
        images = []
        for item in _list(body, "images", self.host):
            tag = item.get("tag") if isinstance(item, dict) else None
            if not isinstance(tag, (str, int)) or isinstance(tag, bool) or not str(tag):
                continue
            size = item.get("size")
            images.append(
                NgcImage(
                    tag=str(tag),
                    updated=str(item.get("updatedDate") or ""),
                    size=int(size) if isinstance(size, (int, float)) and not isinstance(size, bool) else None,
                    extra={k: v for k, v in item.items() if k not in ("tag", "updatedDate", "size")},
                )
            )
        return images

    def repository(self, repo: NgcRepository) -> dict[str, Any]:
        """The repository detail: ``tags``, ``latestTag``, ``isMultiArchitecture``..."""
        return self._get(_repo_path(repo), what=f"repository {repo.path}")

    def search(self, query: str, page: int = 0, page_size: int = DEFAULT_PAGE_SIZE) -> dict[str, Any]:
        """The public catalog search (no key needed)."""
        q = json.dumps({"query": query, "page": page, "pageSize": page_size})
        return self._get("/v2/search/catalog/resources/CONTAINER", params={"q": q}, what=f"search {query!r}")


def _repo_path(repo: NgcRepository) -> str:
    """The API path of a repository; its parts come from the API's answers, so they are checked as well."""
    what = f"the NGC API listed repository {repo.path!r}, whose"
    org = path_segment(repo.org, f"{what} org", NgcError)
    team = f"/team/{path_segment(repo.team, f'{what} team', NgcError)}" if repo.team else ""
    return f"/v2/org/{org}{team}/repos/{path_segment(repo.name, f'{what} name', NgcError)}"


def _list(body: dict[str, Any], key: str, host: str) -> list[Any]:
    """body[key] as a list: [] when NGC left the key out, NgcError when it is something else."""
    value = body.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise NgcError(f"{host} answered with a {key!r} that is not a list")
    return value


def _int(value: Any, default: int) -> int:
    try:
        return int(value) if value is not None and not isinstance(value, bool) else default
    except (TypeError, ValueError):
        return default


def _repository(org: str, item: Any) -> NgcRepository | None:
    if not isinstance(item, dict):
        return None
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


class _Bearer:
    """The NGC API's credentials for the transport's one retry loop (``send_with_retries``): the key's token, renewed
    once when a request is refused with 401 (it expired or was revoked); a second 401 is the caller's to judge."""

    def __init__(self, client: NgcClient) -> None:
        self.client = client
        self.token: str | None = None

    def authorization(self) -> str | None:
        self.token = self.client._bearer()  # pylint: disable=protected-access
        return f"Bearer {self.token}" if self.token else None

    def answer(self, response: Any) -> None:
        self.client._bearer(renew=True)  # pylint: disable=protected-access
