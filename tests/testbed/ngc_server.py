# Copyright (c) airgap.ngc contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Stand-in for the NGC catalog API (api.ngc.nvidia.com) and for nvcr.io's token realm.

Run: ``python -m tests.testbed.ngc_server --config FILE``. FILE is JSON:
``api_key``, ``seed_file`` (the seeder's output; re-read whenever it changes),
``signing_key`` (PEM; its certificate is the registry's rootcertbundle), ``issuer``,
``service``, ``ngc_token_lifetime`` / ``registry_token_lifetime`` (seconds, default 300),
``page_size`` (default page size of repository listings, default 5), ``ready_file``,
optional ``host``/``port`` (default 127.0.0.1 and a free port).

Choices where NGC's behaviour is not pinned down: an unknown org, team or repository is
404 with ``requestStatus.statusCode`` ``NOT_FOUND``; page numbers start at 0; a repository
without images answers ``/images`` without the ``images`` key and its detail has ``tags: []``
and no ``latestTag``. Registry tokens are granted for every action asked for (pull, push,
delete, catalog) to the valid key, so the seeder can push through the same realm.

The Helm repository (``<url>/helm/<org>[/<team>]/index.yaml`` and ``.../charts/<file>.tgz``) is served from
``helm_dir`` (what ``charts.seed_charts`` wrote) to HTTP Basic ``$oauthtoken:<key>`` only: without it, or with
another key, 401 with a Basic challenge (a private org). A chart archive is answered with a redirect to another host
name of this server (``localhost`` for ``127.0.0.1``, as NGC sends its downloads elsewhere), which serves it without
credentials and refuses a request that carries an ``Authorization`` header with 400, as a presigned CDN URL does.

Fault settings besides ``token_lifetime`` and ``anonymous_pull``: ``revoke_ngc_tokens`` (the
catalog API refuses every bearer token with 401 "token revoked", while ``/token`` still issues
them) and ``deny_catalog`` (registry tokens never grant ``registry:catalog:*``, so the registry
answers ``/v2/_catalog`` with 401 ``insufficient_scope`` to a valid key). The setting
``extra_repositories`` (a list of repository records in the seed file's schema, for example what
``seed.seed_unresolved`` returns) adds repositories to the catalog until the faults are reset:
the catalog then lists tags the registry may not hold, as NGC sometimes does.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import json
import math
import os
import re
import secrets
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable
from urllib.parse import SplitResult, parse_qs

from ._httpd import TestbedHandler, run_server
from ._jwt import TokenSigner

NGC_USERNAME = "$oauthtoken"
DISTRIBUTION_LEEWAY = 60  # distribution 2.8 accepts a JWT until exp + 60 s; exp is set back by this much
DEFAULT_LIFETIME = 300
SETTINGS = {
    "token_lifetime": None,
    "anonymous_pull": False,
    "revoke_ngc_tokens": False,
    "deny_catalog": False,
    "extra_repositories": None,
}

_TEAM = r"(?:/team/(?P<team>[^/]+))?"
ROUTES: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"^/token$"), "token"),
    (re.compile(r"^/proxy_auth$"), "proxy_auth"),
    (re.compile(r"^/v2/orgs$"), "orgs"),
    (re.compile(r"^/v2/org/(?P<org>[^/]+)/teams$"), "teams"),
    (re.compile(rf"^/v2/org/(?P<org>[^/]+){_TEAM}/repos$"), "repos"),
    (re.compile(rf"^/v2/org/(?P<org>[^/]+){_TEAM}/repos/(?P<name>[^/]+)/images$"), "images"),
    (re.compile(rf"^/v2/org/(?P<org>[^/]+){_TEAM}/repos/(?P<name>[^/]+)$"), "detail"),
    (re.compile(r"^/v2/search/catalog/resources/CONTAINER$"), "search"),
]


HELM_RE = re.compile(
    r"^/helm/(?P<namespace>[a-z0-9][a-z0-9._-]*(?:/[a-z0-9][a-z0-9._-]*)?)/"
    r"(?:(?P<index>index\.yaml)|charts/(?P<file>[A-Za-z0-9][A-Za-z0-9._+-]*\.tgz))$"
)
HELM_CDN_RE = re.compile(
    r"^/helm-cdn/(?P<namespace>[a-z0-9][a-z0-9._-]*(?:/[a-z0-9][a-z0-9._-]*)?)/"
    r"charts/(?P<file>[A-Za-z0-9][A-Za-z0-9._+-]*\.tgz)$"
)
CDN_HOST = "localhost"


class NotFound(Exception):
    """Answered as 404 NOT_FOUND."""


# Catalog data ------------------------------------------------------------------------
@dataclass
class SeedCatalog:
    """The seeder's output file, re-read when its modification time changes, and the ``extras`` repositories."""

    path: Path
    extras: Callable[[], Any] = lambda: None
    _mtime: float = -1.0
    _data: dict[str, Any] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def repositories(self) -> list[dict[str, Any]]:
        with self._lock:
            try:
                mtime = self.path.stat().st_mtime
            except OSError:
                return []
            if mtime != self._mtime:
                with open(self.path, encoding="utf-8") as handle:
                    self._data = json.load(handle)
                self._mtime = mtime
            repositories = list(self._data.get("repositories", []))
        extras = self.extras()
        return repositories + [r for r in extras if isinstance(r, dict)] if isinstance(extras, list) else repositories

    def orgs(self) -> list[str]:
        return sorted({r["org"] for r in self.repositories()})

    def teams(self, org: str) -> list[str]:
        self.require_org(org)
        return sorted({r["team"] for r in self.repositories() if r["org"] == org and r.get("team")})

    def require_org(self, org: str) -> None:
        if org not in self.orgs():
            raise NotFound(f"organization '{org}' not found")

    def in_scope(self, org: str, team: str | None, include_teams: bool) -> list[dict[str, Any]]:
        self.require_org(org)
        repos = [r for r in self.repositories() if r["org"] == org]
        if team is not None:
            if team not in self.teams(org):
                raise NotFound(f"team '{team}' not found in organization '{org}'")
            return [r for r in repos if r.get("team") == team]
        return [r for r in repos if include_teams or not r.get("team")]

    def find(self, org: str, team: str | None, name: str) -> dict[str, Any]:
        for repo in self.in_scope(org, team, include_teams=team is not None):
            if repo["name"] == name and repo.get("team") == team:
                return repo
        where = f"{org}/{team}" if team else org
        raise NotFound(f"repository '{name}' not found in '{where}'")


def _variants(tag: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {
            "os": m["platform"].split("/")[0],
            "architecture": m["platform"].split("/")[1],
            "digest": m["digest"],
            "compressedSize": m["size"],
        }
        for m in tag["manifests"]
    ]


def _latest(repo: dict[str, Any]) -> dict[str, Any] | None:
    for tag in repo["tags"]:
        if tag["tag"] == repo.get("latest_tag"):
            return tag
    return None


def repo_summary(repo: dict[str, Any]) -> dict[str, Any]:
    """A repository as the org listing shows it."""
    summary: dict[str, Any] = {
        "namespace": repo["namespace"],
        "name": repo["name"],
        "orgName": repo["org"],
        "displayName": repo["display_name"],
        "shortDescription": repo["short_description"],
        "description": repo["description"],
        "isPublic": True,
        "isReadOnly": True,
        "canGuestDownload": True,
        "updatedDate": repo["updated_date"],
        "labels": repo["labels"],
        "publisher": "NVIDIA",
        "builtBy": "NVIDIA",
        "sharedWithOrgs": [],
        "sharedWithTeams": [],
    }
    if repo.get("team"):
        summary["teamName"] = repo["team"]
    latest = _latest(repo)
    if latest is not None:
        summary["latestTag"] = latest["tag"]
        summary["latestImageSize"] = latest["size"]
    return summary


def repo_detail(repo: dict[str, Any]) -> dict[str, Any]:
    detail = repo_summary(repo)
    latest = _latest(repo)
    detail["tags"] = [t["tag"] for t in repo["tags"]]
    detail["isMultiArchitecture"] = bool(latest and len(latest["platforms"]) > 1)
    if latest is not None:
        detail["latestArchitectureVariants"] = _variants(latest)
    return detail


def image_entries(repo: dict[str, Any]) -> list[dict[str, Any]]:
    """Tags newest first, the way NGC lists them."""
    tags = sorted(repo["tags"], key=lambda t: t["updated_date"], reverse=True)
    return [
        {
            "id": t["digest"],
            "tag": t["tag"],
            "updatedDate": t["updated_date"],
            "size": t["size"],
            "architectureVariants": _variants(t),
        }
        for t in tags
    ]


def search_resource(repo: dict[str, Any]) -> dict[str, Any]:
    latest = _latest(repo)
    attributes = (
        [{"key": "latestTag", "value": latest["tag"]}, {"key": "size", "value": str(latest["size"])}] if latest else []
    )
    resource: dict[str, Any] = {
        "resourceId": repo["repository"],
        "resourceType": "CONTAINER",
        "name": repo["name"],
        "displayName": repo["display_name"],
        "orgName": repo["org"],
        "description": repo["short_description"],
        "labels": [{"key": "general", "values": repo["labels"]}],
        "attributes": attributes,
        "dateModified": repo["updated_date"],
    }
    if repo.get("team"):
        resource["teamName"] = repo["team"]
    return resource


def search_matches(repo: dict[str, Any], query: str) -> bool:
    query = query.strip().lower()
    if query in ("", "*"):
        return True
    haystack = " ".join([repo["repository"], repo["display_name"], repo["short_description"]]).lower()
    return query in haystack


# Credentials and tokens ----------------------------------------------------------------
def basic_credentials(header: str) -> tuple[str, str] | None:
    if not header.lower().startswith("basic "):
        return None
    try:
        user, _sep, password = base64.b64decode(header[6:].strip()).decode("utf-8").partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return user, password


def presented_api_key(header: str) -> str | None:
    """The NGC key from `Basic $oauthtoken:<key>` or the old replicator's `ApiKey <base64>`."""
    basic = basic_credentials(header)
    if basic is not None:
        return basic[1] if basic[0] == NGC_USERNAME else None
    if header.lower().startswith("apikey "):
        try:
            decoded = base64.b64decode(header[7:].strip()).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        prefix = f"{NGC_USERNAME}:"
        return decoded[len(prefix) :] if decoded.startswith(prefix) else decoded
    return None


def requested_access(scopes: list[str], allowed: set[str]) -> list[dict[str, Any]]:
    """Turn `repository:<name>:pull,push` scopes into the JWT access claim, limited to `allowed` actions."""
    access = []
    for scope in scopes:
        for item in scope.split(" "):
            kind, _sep, rest = item.partition(":")
            name, _sep, actions = rest.rpartition(":")
            if kind not in ("repository", "registry") or not name:
                continue
            granted = [a for a in actions.split(",") if a in allowed or (a == "*" and "push" in allowed)]
            access.append({"type": kind, "name": name, "actions": granted})
    return access


def _now_iso() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class NgcHandler(TestbedHandler):
    """The NGC catalog API, its token endpoint and the registry token realm."""

    _catalog: SeedCatalog | None = None
    _signer: TokenSigner | None = None
    _ngc_tokens: dict[str, float] = {}
    _tokens_lock = threading.Lock()

    @property
    def catalog(self) -> SeedCatalog:
        if NgcHandler._catalog is None:
            faults = self.server.faults
            NgcHandler._catalog = SeedCatalog(
                Path(self.server.config["seed_file"]), lambda: faults.setting("extra_repositories")
            )
        return NgcHandler._catalog

    @property
    def signer(self) -> TokenSigner:
        if NgcHandler._signer is None:
            NgcHandler._signer = TokenSigner.load(Path(self.server.config["signing_key"]))
        return NgcHandler._signer

    def fault_body(self, status: int) -> dict[str, Any]:
        return _status_body("TOO_MANY_REQUESTS" if status == 429 else "INTERNAL_ERROR", f"testbed fault {status}")

    def handle_request(self, url: SplitResult, rule: Any) -> None:
        self.drain_body()
        if self.command not in ("GET", "HEAD"):
            self.send_json(405, _status_body("METHOD_NOT_ALLOWED", f"{self.command} is not supported"))
            return
        if url.path.startswith(("/helm/", "/helm-cdn/")):
            self._helm(url.path)
            return
        for pattern, name in ROUTES:
            match = pattern.match(url.path)
            if match:
                query = parse_qs(url.query, keep_blank_values=True)
                try:
                    self._route(name, match.groupdict(), query)
                except NotFound as exc:
                    self.send_json(404, _status_body("NOT_FOUND", str(exc)))
                return
        self.send_json(404, _status_body("NOT_FOUND", f"no such endpoint {url.path}"))

    def _route(self, name: str, params: dict[str, Any], query: dict[str, list[str]]) -> None:
        if name in ("token", "proxy_auth"):
            self._token(name, query)
            return
        if name != "search" and not self._bearer_ok():
            return
        handlers: dict[str, Callable[[dict[str, Any], dict[str, list[str]]], None]] = {
            "orgs": self._orgs,
            "teams": self._teams,
            "repos": self._repos,
            "images": self._images,
            "detail": self._detail,
            "search": self._search,
        }
        handlers[name](params, query)

    # Helm repository ----------------------------------------------------------------------
    def _helm(self, path: str) -> None:
        helm_dir = Path(self.server.config.get("helm_dir") or "/nonexistent")
        cdn = HELM_CDN_RE.match(path)
        if cdn is not None:
            if self.headers.get("Authorization"):
                self.send_json(400, {"error": "Only one auth mechanism allowed; the URL is signed"})
                return
            self._send_file(helm_dir / cdn.group("namespace") / "charts" / cdn.group("file"), "application/gzip")
            return
        match = HELM_RE.match(path)
        if match is None:
            self.send_json(404, {"error": f"no such path {path}"})
            return
        key = presented_api_key(self.headers.get("Authorization", ""))
        if key is None or not secrets.compare_digest(key, self.server.config["api_key"]):
            self.send_json(401, {"error": "unauthorized"}, {"WWW-Authenticate": 'Basic realm="helm.ngc.nvidia.com"'})
            return
        namespace = match.group("namespace")
        if match.group("index"):
            self._send_file(helm_dir / namespace / "index.yaml", "application/x-yaml")
            return
        if not (helm_dir / namespace / "charts" / match.group("file")).is_file():
            self.send_json(404, {"error": f"no chart {match.group('file')}"})
            return
        port = self.server.server_address[1]
        self.send_response(302)
        self.send_header(
            "Location",
            f"http://{CDN_HOST}:{port}/helm-cdn/{namespace}/charts/{match.group('file')}?sig={uuid.uuid4().hex}",
        )
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _send_file(self, path: Path, content_type: str) -> None:
        try:
            data = path.read_bytes()
        except OSError:
            self.send_json(404, {"error": f"not found: {path.name}"})
            return
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    # Tokens -----------------------------------------------------------------------------
    def _lifetime(self, key: str) -> int:
        override = self.server.faults.setting("token_lifetime")
        return int(override if override is not None else self.server.config.get(key, DEFAULT_LIFETIME))

    def _token(self, endpoint: str, query: dict[str, list[str]]) -> None:
        scopes = query.get("scope", [])
        registry = (
            endpoint == "proxy_auth"
            or query.get("service", [""])[0] == self.server.config["service"]
            or any(s.startswith(("repository:", "registry:")) for s in scopes)
        )
        key = presented_api_key(self.headers.get("Authorization", ""))
        valid = key is not None and secrets.compare_digest(key, self.server.config["api_key"])
        if (
            registry
            and not valid
            and not self.headers.get("Authorization")
            and self.server.faults.setting("anonymous_pull")
        ):
            self._registry_token(query, {"pull"}, "anonymous")
            return
        if not valid:
            body = (
                {"errors": [{"code": "UNAUTHORIZED", "message": "invalid NGC API key"}]}
                if registry
                else _status_body("UNAUTHORIZED", "invalid NGC API key")
            )
            self.send_json(401, body, {"WWW-Authenticate": 'Basic realm="testbed NGC"'})
            return
        if registry:
            self._registry_token(query, {"pull", "push", "delete", "*"}, NGC_USERNAME)
        else:
            self._ngc_token()

    def _ngc_token(self) -> None:
        lifetime = self._lifetime("ngc_token_lifetime")
        token = secrets.token_urlsafe(32)
        with self._tokens_lock:
            now = time.time()
            for stale in [t for t, exp in self._ngc_tokens.items() if exp < now]:
                del self._ngc_tokens[stale]
            self._ngc_tokens[token] = now + lifetime
        self.send_json(200, {"token": token, "expires_in": lifetime})

    def _registry_token(self, query: dict[str, list[str]], allowed: set[str], subject: str) -> None:
        config = self.server.config
        lifetime = self._lifetime("registry_token_lifetime")
        now = time.time()
        access = requested_access(query.get("scope", []), allowed)
        if self.server.faults.setting("deny_catalog"):
            access = [item for item in access if item["type"] != "registry"]
        claims = {  # exp rounds up: a token may live up to a second longer than expires_in, never shorter
            "iss": config["issuer"],
            "sub": subject,
            "aud": (query.get("service") or [config["service"]])[0],
            "iat": int(now),
            "nbf": int(now) - 1,
            "exp": math.ceil(now) + lifetime - DISTRIBUTION_LEEWAY,
            "jti": uuid.uuid4().hex,
            "access": access,
        }
        token = self.signer.sign(claims)
        self.send_json(200, {"token": token, "access_token": token, "expires_in": lifetime, "issued_at": _now_iso()})

    def _bearer_ok(self) -> bool:
        header = self.headers.get("Authorization", "")
        token = header[7:].strip() if header.lower().startswith("bearer ") else ""
        with self._tokens_lock:
            expiry = self._ngc_tokens.get(token)
        revoked = expiry is not None and self.server.faults.setting("revoke_ngc_tokens")
        if expiry is not None and expiry >= time.time() and not revoked:
            return True
        reason = (
            "token revoked" if revoked else "token expired" if expiry is not None else "missing or invalid bearer token"
        )
        self.send_json(401, _status_body("UNAUTHORIZED", reason), {"WWW-Authenticate": 'Bearer realm="/token"'})
        return False

    # Catalog ------------------------------------------------------------------------------
    def _orgs(self, params: dict[str, Any], query: dict[str, list[str]]) -> None:
        orgs = [{"name": o, "displayName": o.upper(), "type": "ENTERPRISE"} for o in self.catalog.orgs()]
        self._ok({"organizations": orgs})

    def _teams(self, params: dict[str, Any], query: dict[str, list[str]]) -> None:
        self._ok({"teams": [{"name": t} for t in self.catalog.teams(params["org"])]})

    def _repos(self, params: dict[str, Any], query: dict[str, list[str]]) -> None:
        include_teams = _flag(query, "include-teams")
        repos = self.catalog.in_scope(params["org"], params.get("team"), include_teams)
        repos = sorted(repos, key=lambda r: r["repository"])
        size = max(1, _int_param(query, "page-size", int(self.server.config.get("page_size", 5))))
        number = _int_param(query, "page-number", 0)
        page = repos[number * size : (number + 1) * size]
        pagination = {
            "index": number,
            "size": size,
            "totalPages": math.ceil(len(repos) / size),
            "totalResults": len(repos),
        }
        self._ok({"repositories": [repo_summary(r) for r in page], "paginationInfo": pagination})

    def _images(self, params: dict[str, Any], query: dict[str, list[str]]) -> None:
        repo = self.catalog.find(params["org"], params.get("team"), params["name"])
        entries = image_entries(repo)
        self._ok({"images": entries} if entries else {})

    def _detail(self, params: dict[str, Any], query: dict[str, list[str]]) -> None:
        self._ok(repo_detail(self.catalog.find(params["org"], params.get("team"), params["name"])))

    def _search(self, params: dict[str, Any], query: dict[str, list[str]]) -> None:
        try:
            search = json.loads((query.get("q") or ["{}"])[0])
            if not isinstance(search, dict):
                raise ValueError("q must be a JSON object")
            page, page_size = int(search.get("page", 0)), max(1, int(search.get("pageSize", 25)))
        except (ValueError, TypeError) as exc:
            self.send_json(400, _status_body("INVALID_REQUEST", f"bad q parameter: {exc}"))
            return
        found = [
            r
            for r in sorted(self.catalog.repositories(), key=lambda r: r["repository"])
            if search_matches(r, str(search.get("query", "")))
        ]
        chunk = found[page * page_size : (page + 1) * page_size]
        self.send_json(
            200,
            {
                "resultTotal": len(found),
                "resultPageTotal": math.ceil(len(found) / page_size),
                "params": search,
                "results": [
                    {
                        "groupValue": "CONTAINER",
                        "totalCount": len(found),
                        "resources": [search_resource(r) for r in chunk],
                    }
                ],
            },
        )

    def _ok(self, body: dict[str, Any]) -> None:
        self.send_json(200, {"requestStatus": {"statusCode": "SUCCESS", "requestId": uuid.uuid4().hex}, **body})


def _status_body(code: str, description: str) -> dict[str, Any]:
    return {"requestStatus": {"statusCode": code, "statusDescription": description, "requestId": uuid.uuid4().hex}}


def _flag(query: dict[str, list[str]], name: str) -> bool:
    return (query.get(name) or ["false"])[0].lower() in ("true", "1", "yes")


def _int_param(query: dict[str, list[str]], name: str, default: int) -> int:
    try:
        return max(0, int((query.get(name) or [default])[0]))
    except ValueError:
        return default


def main() -> None:
    run_server(NgcHandler, SETTINGS, "Stand-in for the NGC catalog API and nvcr.io token realm")


if __name__ == "__main__":
    os.umask(0o077)
    main()
