# Copyright (c) airgap.ngc contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private: registry HTTP API v2 client: ping, catalog, tags, manifests, blobs, uploads, mounts. Not a public API.

Authentication (challenges, tokens per scope) is ``_auth.RegistryAuth``, the blob streams are in
``_blobs``, the retries are ``_http.send_with_retries``; the OCI vocabulary is ``_oci``.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple, Union
from urllib.parse import quote, urljoin, urlsplit

from ansible_collections.airgap.ngc.plugins.module_utils._http.auth import (
    RegistryAuth,
    parse_challenges,
    select_challenge,
)
from ansible_collections.airgap.ngc.plugins.module_utils._http.blob_reads import (
    DEFAULT_CHUNK_SIZE,
    UploadBody,
    open_reader,
)
from ansible_collections.airgap.ngc.plugins.module_utils._types.errors import (
    AirgapError,
    AuthError,
    DigestMismatchError,
    NotFoundError,
    RegistryError,
    exception_reason,
)
from ansible_collections.airgap.ngc.plugins.module_utils._http.transport import (
    DEFAULT_BACKOFF,
    DEFAULT_POOL_SIZE,
    DEFAULT_RETRIES,
    DEFAULT_RETRY_BUDGET,
    DEFAULT_TIMEOUT,
    HAS_REQUESTS,
    MAX_RETRY_AFTER,
    RETRY_STATUSES,
    RetryPolicy,
    budgeted,
    content_length,
    new_session,
    no_netrc,
    send_with_retries,
    strip_query,
    verify_setting,
)
from ansible_collections.airgap.ngc.plugins.module_utils._types.oci import (
    MANIFEST_ACCEPT,
    MANIFEST_MEDIA_TYPES,
    MEDIA_OCI_INDEX,
    Manifest,
    ManifestDescriptor,
    check_named_sizes,
    check_small,
    compute_digest,
    guess_media_type,
    read_small,
)
from ansible_collections.airgap.ngc.plugins.module_utils._types.reference import (
    is_digest,
    registry_url,
    validate_digest,
    validate_repository,
    validate_tag,
)
from ansible_collections.airgap.ngc.plugins.module_utils._types.version import USER_AGENT

try:
    import requests.exceptions
except ImportError:
    pass  # RegistryClient() refuses to start without requests (HAS_REQUESTS)

MAX_REDIRECTS = 10
MAX_PAGES = 100000
MANIFEST_CHUNK = 64 * 1024
REDIRECT_STATUSES = frozenset((301, 302, 303, 307, 308))

ChunkSource = Union[Iterable[bytes], Callable[[], Iterable[bytes]]]


def parse_link_header(value: str | None) -> Dict[str, str]:
    """Map rel -> URL from a Link header such as '</v2/x/tags/list?last=b&n=1>; rel="next"'."""
    links: Dict[str, str] = {}
    if not value:
        return links
    for match in re.finditer(r"<([^>]*)>([^<]*)", value):
        url, params = match.group(1).strip(), match.group(2)
        rel = re.search(r";\s*rel\s*=\s*(?:\"([^\"]*)\"|([^;,\s]+))", params, re.IGNORECASE)
        if rel:
            for name in (rel.group(1) or rel.group(2) or "").split():
                links.setdefault(name.lower(), url)
    return links


def _origin(url: str) -> Tuple[str, str, int]:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    port = parts.port or (443 if scheme == "https" else 80)
    return scheme, (parts.hostname or "").lower(), port


def _add_query(url: str, name: str, value: str) -> str:
    """Append name=value to url, keeping whatever query string (an upload state) it already has."""
    base, _sep, fragment = url.partition("#")
    joiner = "&" if "?" in base else "?"
    if base.endswith(("?", "&")):
        joiner = ""
    return f"{base}{joiner}{name}={quote(value, safe='')}" + (f"#{fragment}" if fragment else "")


def _media_type_of(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


class RegistryClient(RegistryAuth):
    """A client of one registry's HTTP API v2 (OCI distribution), safe to share between threads.

    Authentication follows the registry's challenges (``RegistryAuth``: Bearer tokens per repository
    scope, or HTTP Basic). Credentials are only ever sent to the registry's own scheme, host and port
    and to the token realm: GET and HEAD redirects are followed here, without them. 408/429/502/503/504
    answers and broken connections are retried with exponential backoff, honouring Retry-After
    (``send_with_retries``). sleep is for tests.
    """

    def __init__(
        self,
        base_url: str,
        username: str | None = None,
        password: str | None = None,
        validate_certs: bool = True,
        ca_path: str | None = None,
        timeout: float | Tuple[float, float] = DEFAULT_TIMEOUT,
        retries: Optional[int] = DEFAULT_RETRIES,
        backoff: float = DEFAULT_BACKOFF,
        pool_size: int = DEFAULT_POOL_SIZE,
        max_retry_after: float = MAX_RETRY_AFTER,
        sleep: Callable[[float], None] | None = None,
        retry_budget: float = DEFAULT_RETRY_BUDGET,
    ) -> None:
        if not HAS_REQUESTS:
            raise AirgapError("the Python library requests is required to talk to a registry")
        self.base_url = registry_url(base_url)
        self.retries = None if retries is None else max(0, int(retries))
        self.backoff = max(0.0, float(backoff))
        self.max_retry_after = max_retry_after
        self._origin = _origin(self.base_url)
        super().__init__(
            host=urlsplit(self.base_url).netloc,
            username=username,
            password=password,
            session=new_session(validate_certs, pool_size),
            verify=verify_setting(validate_certs, ca_path),
            timeout=timeout,
            policy=RetryPolicy(self.retries, self.backoff, max_retry_after, budget=max(0.0, float(retry_budget))),
            sleep=sleep or time.sleep,
        )

    # -- lifecycle ---------------------------------------------------------------------------

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"RegistryClient({self.base_url!r}, username={self.username!r})"

    @property
    def retry_policy(self) -> RetryPolicy:
        """The retry rules of every request of this client (for a caller that repeats a request itself)."""
        return self._policy

    def sleep(self, seconds: float) -> None:
        """Wait as this client waits between attempts."""
        self._sleep(seconds)

    # -- helpers -----------------------------------------------------------------------------

    def _url(self, path: str) -> str:
        return self.base_url + path

    @staticmethod
    def _pull_scope(name: str) -> str:
        return f"repository:{name}:pull"

    @staticmethod
    def _push_scope(name: str) -> str:
        return f"repository:{name}:pull,push"

    # -- the one request path ----------------------------------------------------------------

    def _send(
        self,
        method: str,
        url: str,
        *,
        what: str,
        scope: str | None,
        repository: str | None,
        headers: Optional[Dict[str, str]],
        params: Any,
        data: Any,
        stream: bool,
        replayable: bool,
    ) -> Tuple[Any, int]:
        """Send one request through the shared retry loop; return (response, attempts). No redirects followed.

        To the registry's own origin it carries the credentials earlier challenges taught, and a 401 is
        answered once; elsewhere it carries none. A 429/5xx that outlasts the retries is raised.
        """
        credentials = self._credentials(scope, repository, url) if _origin(url) == self._origin else None
        return send_with_retries(
            self._session,
            method,
            url,
            policy=self._policy,
            sleep=self._sleep,
            what=what,
            error=RegistryError,
            replayable=replayable,
            secrets=(self._password,),
            credentials=credentials,
            reason=self._error_detail,
            headers={"User-Agent": USER_AGENT, **(headers or {})},
            params=params,
            data=data,
            stream=stream,
            timeout=self.timeout,
            verify=self._verify,
            allow_redirects=False,
            auth=no_netrc,
        )

    def _request(
        self,
        method: str,
        url: str,
        *,
        what: str,
        scope: str | None = None,
        repository: str | None = None,
        expected: Tuple[int, ...] = (200,),
        allow_404: bool = False,
        headers: Optional[Dict[str, str]] = None,
        params: Any = None,
        data: Any = None,
        stream: bool = False,
        replayable: bool = True,
    ) -> Any:
        """Send a request (following GET/HEAD redirects by hand) and map failures to AirgapError subclasses.

        Returns the response if its status is expected (or 404 with allow_404). Authorization is
        only sent to the registry's own origin, so a redirect to storage elsewhere never carries it.
        """
        follow = method in ("GET", "HEAD")
        hops = 0
        while True:
            response, attempts = self._send(
                method,
                url,
                what=what,
                scope=scope,
                repository=repository,
                headers=headers,
                params=params,
                data=data,
                stream=stream,
                replayable=replayable,
            )
            status = response.status_code
            if follow and status in REDIRECT_STATUSES and response.headers.get("Location"):
                response.close()
                hops += 1
                if hops > MAX_REDIRECTS:
                    raise RegistryError(
                        f"too many redirects (more than {MAX_REDIRECTS}) from {self.host} for {what}",
                        status=status,
                        url=strip_query(url),
                    )
                url = urljoin(response.url, response.headers["Location"])
                params = None
                continue
            if status in expected or (allow_404 and status == 404):
                return response
            try:
                detail = self._error_detail(response)
            finally:
                response.close()
            host = urlsplit(response.url).netloc
            if status in (401, 403) and _origin(response.url) != self._origin:
                raise AuthError(
                    f"{status} from {host}, where {self.host} redirected the {what}"
                    + (f": {detail}" if detail else ""),
                    status=status,
                    url=strip_query(response.url),
                )
            if status in (401, 403):
                challenge = select_challenge(parse_challenges(response.headers.get("WWW-Authenticate")))
                raise self._auth_error(
                    status, repository, scope, detail, response.url, challenge.error if challenge else None
                )
            if status == 404:
                raise NotFoundError(
                    f"404 from {host}: {what} not found" + (f" ({detail})" if detail else ""),
                    status=404,
                    url=strip_query(response.url),
                )
            tried = f" after {attempts} attempts" if attempts > 1 else ""
            raise RegistryError(
                f"{status} from {host} for {what}{tried}" + (f": {detail}" if detail else ""),
                status=status,
                url=strip_query(response.url),
            )

    def _json(self, response: Any, what: str, small: bool = False) -> Dict[str, Any]:
        """The JSON object of an answer; ``small``: an index, read in chunks and refused past MAX_MANIFEST_BYTES."""
        try:
            if small:
                data = json.loads(read_small(response.iter_content(MANIFEST_CHUNK), f"{what} on {self.host}"))
            else:
                data = response.json()
        except requests.exceptions.RequestException as exc:
            raise RegistryError(
                f"reading {what} from {self.host} failed: {exception_reason(exc)}", url=strip_query(response.url)
            ) from exc
        except ValueError:
            data = None
        if not isinstance(data, dict):
            raise RegistryError(
                f"{self.host} answered {what} with something that is not a JSON object",
                status=response.status_code,
                url=strip_query(response.url),
            )
        return data

    def _paginate(
        self, url: str, params: Any, key: str, what: str, scope: str | None, repository: str | None
    ) -> List[str]:
        items: List[str] = []
        seen: set[str] = set()
        for _page in range(MAX_PAGES):
            response = self._request("GET", url, what=what, scope=scope, repository=repository, params=params)
            data = self._json(response, what)
            values = data.get(key) or []
            if not isinstance(values, list):
                raise RegistryError(
                    f"{self.host} answered {what} with a {key!r} that is not a list", url=strip_query(response.url)
                )
            items.extend(str(value) for value in values)
            following = parse_link_header(response.headers.get("Link")).get("next")
            if not following:
                return items
            url = urljoin(response.url, following)
            params = None
            if url in seen:
                raise RegistryError(f"{self.host} sent a pagination loop for {what}", url=strip_query(url))
            seen.add(url)
        raise RegistryError(f"{self.host} sent more than {MAX_PAGES} pages for {what}")

    # -- API ---------------------------------------------------------------------------------

    def ping(self) -> None:
        """GET /v2/: check that the registry answers and accepts our credentials (raises otherwise)."""
        response = self._request("GET", self._url("/v2/"), what="the API version check /v2/")
        response.close()

    def catalog(self, page_size: int | None = None) -> List[str]:
        """All repository names (GET /v2/_catalog, following pagination)."""
        params = {"n": str(page_size)} if page_size else None
        return self._paginate(
            self._url("/v2/_catalog"), params, "repositories", "the catalog", "registry:catalog:*", None
        )

    def list_tags(self, name: str, page_size: int | None = None) -> List[str]:
        """All tags of repository name (GET /v2/<name>/tags/list with n/last and Link pagination)."""
        validate_repository(name)
        params = {"n": str(page_size)} if page_size else None
        return self._paginate(
            self._url(f"/v2/{name}/tags/list"), params, "tags", f"the tags of {name}", self._pull_scope(name), name
        )

    def _manifest_url(self, name: str, reference: str) -> str:
        validate_repository(name)
        if not is_digest(reference):
            validate_tag(reference, f"{name}:{reference}")
        return self._url(f"/v2/{name}/manifests/{reference}")

    @staticmethod
    def _show(name: str, reference: str) -> str:
        return f"{name}@{reference}" if is_digest(reference) else f"{name}:{reference}"

    def head_manifest(self, name: str, reference: str) -> Optional[ManifestDescriptor]:
        """HEAD a manifest (by tag or digest): its descriptor, or None if it does not exist."""
        url = self._manifest_url(name, reference)
        what = f"manifest {self._show(name, reference)}"
        response = self._request(
            "HEAD",
            url,
            what=what,
            scope=self._pull_scope(name),
            repository=name,
            headers={"Accept": MANIFEST_ACCEPT},
            allow_404=True,
        )
        response.close()
        if response.status_code == 404:
            return None
        digest = response.headers.get("Docker-Content-Digest") or (reference if is_digest(reference) else None)
        media_type = _media_type_of(response.headers.get("Content-Type"))
        size = content_length(response)
        if not digest or not is_digest(digest) or media_type not in MANIFEST_MEDIA_TYPES or size is None:
            try:
                return self.get_manifest(name, reference).descriptor
            except NotFoundError:
                return None
        return ManifestDescriptor(digest=digest, media_type=media_type, size=size)

    def get_manifest(self, name: str, reference: str) -> Manifest:
        """GET a manifest (by tag or digest) with its exact bytes, verified against the digest asked for or announced."""
        url = self._manifest_url(name, reference)
        what = f"manifest {self._show(name, reference)}"
        response = self._request(
            "GET",
            url,
            what=what,
            scope=self._pull_scope(name),
            repository=name,
            headers={"Accept": MANIFEST_ACCEPT},
            stream=True,
        )
        try:
            check_small(content_length(response), f"{what} on {self.host}")
            raw = read_small(response.iter_content(MANIFEST_CHUNK), f"{what} on {self.host}")
            final_url = response.url
            announced = response.headers.get("Docker-Content-Digest")
            content_type = _media_type_of(response.headers.get("Content-Type"))
        except requests.exceptions.RequestException as exc:
            raise RegistryError(
                f"reading {what} from {self.host} failed: {exception_reason(exc)}", url=strip_query(url)
            ) from exc
        finally:
            response.close()
        for source, expected in (
            ("the digest asked for", reference),
            ("the registry's Docker-Content-Digest", announced),
        ):
            if not is_digest(expected):
                continue
            actual = compute_digest(raw, expected.split(":", 1)[0])
            if actual != expected:
                raise DigestMismatchError(
                    f"{what} from {self.host}: its bytes hash to {actual}, but {source} is {expected}; "
                    "the registry or a proxy changed the manifest",
                    url=strip_query(final_url),
                )
        try:
            data = json.loads(raw)
        except ValueError as exc:
            raise RegistryError(f"{what} from {self.host} is not JSON: {exc}", url=strip_query(final_url)) from exc
        if not isinstance(data, dict):
            raise RegistryError(f"{what} from {self.host} is not a JSON object", url=strip_query(final_url))
        check_named_sizes(data, f"{what} on {self.host}")
        media_type = content_type if content_type in MANIFEST_MEDIA_TYPES else (guess_media_type(data) or content_type)
        digest = (
            reference
            if is_digest(reference)
            else (announced if announced and is_digest(announced) else compute_digest(raw))
        )
        return Manifest(raw=raw, media_type=media_type, digest=digest, data=data)

    def put_manifest(self, name: str, reference: str, raw: bytes, media_type: str) -> str:
        """PUT a manifest's exact bytes under a tag or digest; return its digest (checked against what the registry reports)."""
        url = self._manifest_url(name, reference)
        what = f"upload of manifest {self._show(name, reference)}"
        digest = compute_digest(raw)
        if is_digest(reference) and compute_digest(raw, reference.split(":", 1)[0]) != reference:
            raise DigestMismatchError(f"{what}: the manifest bytes hash to {digest}, not {reference}")
        response = self._request(
            "PUT",
            url,
            what=what,
            scope=self._push_scope(name),
            repository=name,
            expected=(200, 201, 202),
            headers={"Content-Type": media_type},
            data=bytes(raw),
        )
        reported = response.headers.get("Docker-Content-Digest")
        response.close()
        if reported and is_digest(reported) and reported.split(":", 1)[0] == "sha256" and reported != digest:
            raise DigestMismatchError(
                f"{what} to {self.host}: the registry stored it as {reported}, but its bytes hash to {digest}",
                url=strip_query(url),
            )
        return digest

    def delete_manifest(self, name: str, digest: str) -> bool:
        """DELETE a manifest by digest (every tag on it goes with it); False if it was not there. A registry that
        refuses deletes (405, distribution's storage.delete.enabled) raises RegistryError saying so."""
        validate_repository(name)
        validate_digest(digest)
        what = f"delete of manifest {self._show(name, digest)}"
        try:
            response = self._request(
                "DELETE",
                self._manifest_url(name, digest),
                what=what,
                scope=f"repository:{name}:delete",
                repository=name,
                expected=(200, 202, 204),
                allow_404=True,
                replayable=True,
            )
        except RegistryError as exc:
            if getattr(exc, "status", None) in (405, 400):
                raise RegistryError(
                    f"{self.host} does not allow deletes ({what}): enable them (for distribution, "
                    "storage.delete.enabled) or prune without this registry",
                    status=exc.status,
                ) from None
            raise
        response.close()
        return response.status_code != 404

    def referrers(self, name: str, digest: str) -> Optional[List[Dict[str, Any]]]:
        """The OCI 1.1 referrers of a manifest (GET /v2/<name>/referrers/<digest>, following pagination): the descriptors
        the registry lists, or None if it has no referrers API (it answers 404, which the spec forbids a registry with
        the API to do for a valid digest, or 400, 405 or 501)."""
        validate_repository(name)
        validate_digest(digest)
        url, what = self._url(f"/v2/{name}/referrers/{digest}"), f"the referrers of {name}@{digest}"
        found: List[Dict[str, Any]] = []
        seen: set[str] = set()
        for _page in range(MAX_PAGES):
            response = self._request(
                "GET",
                url,
                what=what,
                scope=self._pull_scope(name),
                repository=name,
                expected=(200, 400, 405, 501),
                allow_404=True,
                headers={"Accept": MEDIA_OCI_INDEX},
                stream=True,
            )
            if response.status_code != 200:
                response.close()
                if seen:  # a later page
                    raise RegistryError(
                        f"{response.status_code} from {self.host} for a later page of {what}",
                        status=response.status_code,
                        url=strip_query(response.url),
                    )
                return None
            data = self._json(response, what, small=True)
            response.close()
            manifests = data.get("manifests") or []
            if not isinstance(manifests, list):
                raise RegistryError(
                    f"{self.host} answered {what} with a 'manifests' that is not a list", url=strip_query(response.url)
                )
            found.extend(entry for entry in manifests if isinstance(entry, dict))
            following = parse_link_header(response.headers.get("Link")).get("next")
            if not following:
                return found
            url = urljoin(response.url, following)
            if url in seen:
                raise RegistryError(f"{self.host} sent a pagination loop for {what}", url=strip_query(url))
            seen.add(url)
        raise RegistryError(f"{self.host} sent more than {MAX_PAGES} pages for {what}")

    def _blob_url(self, name: str, digest: str) -> str:
        validate_repository(name)
        validate_digest(digest)
        return self._url(f"/v2/{name}/blobs/{digest}")

    def head_blob(self, name: str, digest: str) -> Optional[int]:
        """The size of a blob in repository name, or None if it is not there."""
        url = self._blob_url(name, digest)
        response = self._request(
            "HEAD", url, what=f"blob {digest} in {name}", scope=self._pull_scope(name), repository=name, allow_404=True
        )
        response.close()
        if response.status_code == 404:
            return None
        size = content_length(response)
        return size if size is not None else 0

    def _blob_response(
        self, name: str, digest: str, offset: int = 0, end: int | None = None, location: str | None = None
    ) -> Any:
        """The streamed GET of a blob from byte offset to byte end (inclusive; None: to its end), from the registry or from
        location (where it redirected an earlier GET: no credentials go there unless it is the registry itself)."""
        headers = {"Accept-Encoding": "identity"}
        if offset or end is not None:
            headers["Range"] = f"bytes={offset}-{'' if end is None else end}"
        return self._request(
            "GET",
            location or self._blob_url(name, digest),
            what=f"blob {digest} in {name}",
            scope=self._pull_scope(name),
            repository=name,
            expected=(200, 206) if "Range" in headers else (200,),
            headers=headers,
            stream=True,
        )

    def open_blob(
        self,
        name: str,
        digest: str,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        expected_size: int | None = None,
        start: int = 0,
        held: Any = (),
    ) -> Any:
        """Start downloading a blob; the reader streams it in chunks and verifies its digest (and size) at the end.

        A big blob of known size is fetched as several Range requests at once (``_blobs.open_reader``). With
        ``start``, from that byte on: ``held`` gives the bytes before it, for the digest (None: the digest is not checked
        here, only the size; the caller's destinations check it)."""
        return open_reader(
            lambda offset, end=None, location=None: self._blob_response(name, digest, offset, end, location),
            self.host,
            name,
            digest,
            expected_size,
            chunk_size,
            self._policy,
            self._sleep,
            start=start,
            held=held,
        )

    def _start_upload(
        self, name: str, mount: str | None = None, from_repo: str | None = None
    ) -> Tuple[int, Optional[str]]:
        params = None
        scope = self._push_scope(name)
        what = f"start of a blob upload to {name}"
        if mount is not None and from_repo is not None:
            params = {"mount": mount, "from": from_repo}
            scope = f"{scope} {self._pull_scope(from_repo)}"
            what = f"mount of blob {mount} from {from_repo} into {name}"
        response = self._request(
            "POST",
            self._url(f"/v2/{name}/blobs/uploads/"),
            what=what,
            scope=scope,
            repository=name,
            expected=(201, 202),
            params=params,
            data=b"",
        )
        response.close()
        location = response.headers.get("Location")
        if response.status_code == 202 and not location:
            raise RegistryError(
                f"{self.host} answered the {what} without a Location for the upload",
                status=202,
                url=strip_query(response.url),
            )
        return response.status_code, (urljoin(response.url, location) if location else None)

    def _cancel_upload(self, name: str, location: str) -> None:
        """Best effort: DELETE an upload session so the registry can free it (distribution wants the delete action for
        it: a token for pull,push is refused, and the session would stay until the registry's purge)."""
        try:
            response = self._request(
                "DELETE",
                location,
                what=f"cancel of a blob upload to {name}",
                scope=f"repository:{name}:delete",
                repository=name,
                expected=(200, 202, 204),
                allow_404=True,
            )
            response.close()
        except AirgapError:
            pass

    def mount_blob(self, name: str, digest: str, from_repo: str) -> bool:
        """Cross-repository mount of a blob already in from_repo on this registry; True if mounted (201).

        On 202 (the registry would not or could not mount) the upload session it opened is cancelled
        and False returned: upload the blob instead.
        """
        validate_repository(name)
        validate_repository(from_repo)
        validate_digest(digest)
        status, location = self._start_upload(name, mount=digest, from_repo=from_repo)
        if status == 201:
            return True
        if location:
            self._cancel_upload(name, location)
        return False

    # -- upload sessions continued across runs (chunked upload: POST, PATCH pieces, PUT ?digest=) -----------------

    def start_upload(self, name: str) -> str:
        """POST a new upload session to repository name; its absolute Location (the registry's upload URL)."""
        validate_repository(name)
        _status, location = self._start_upload(name)
        if location is None:
            raise RegistryError(f"{self.host} answered the start of a blob upload to {name} without a Location")
        return location

    def upload_offset(self, name: str, location: str) -> Optional[int]:
        """How many bytes an upload session holds: the end of the Range a GET of its URL answers (204), plus one.

        None when the registry does not know the session (404: gone, expired, or, for distribution, left with a request
        cut off mid-body), answers anything else, or sends no readable Range: any doubt means the session is not used.
        """
        what = f"status of a blob upload to {name}"
        try:
            response = self._request(
                "GET",
                location,
                what=what,
                scope=self._push_scope(name),
                repository=name,
                expected=(204,),
                allow_404=True,
            )
        except (NotFoundError, AuthError):
            return None
        except RegistryError as exc:
            if exc.status is not None and 400 <= exc.status < 500:
                return None  # a registry that keeps no sessions answers 400 or 405
            raise
        response.close()
        if response.status_code != 204:
            return None
        match = re.fullmatch(r"\s*(?:bytes[= ])?0-(\d+)\s*", response.headers.get("Range") or "")
        if match is None:
            return None
        end = int(match.group(1))
        return end + 1 if end > 0 else 0  # "0-0" is an empty session for distribution

    def patch_upload(self, name: str, location: str, offset: int, body: Any, length: int) -> str:
        """PATCH ``length`` bytes (``body``: a file positioned at them, streamed) into a session at ``offset``.

        Returns the session's new Location: distribution's upload URL carries the offset, and only the latest one
        is accepted. A PATCH is never retried here (a body cut off mid-way leaves the registry with part of it);
        a registry that answers without a Location or with another Range raises RegistryError.
        """
        what = f"upload of bytes {offset}-{offset + length - 1} to {name}"
        headers = {
            "Content-Type": "application/octet-stream",
            "Content-Length": str(length),
            "Content-Range": f"{offset}-{offset + length - 1}",
        }
        # Sent in chunks of DEFAULT_CHUNK_SIZE: a file body would go 16 KiB at a time.
        data = UploadBody(iter(lambda: body.read(DEFAULT_CHUNK_SIZE), b""), length, "", what, verify=False)
        response = self._request(
            "PATCH",
            location,
            what=what,
            scope=self._push_scope(name),
            repository=name,
            expected=(202, 204),
            headers=headers,
            data=data,
            replayable=False,
        )
        response.close()
        following = response.headers.get("Location")
        received = response.headers.get("Range")
        if not following or (received and received.strip() != f"0-{offset + length - 1}"):
            raise RegistryError(
                f"{self.host} answered the {what} with {'Range ' + received if received else 'no Location'}: "
                "it does not keep upload sessions as the distribution spec says",
                status=response.status_code,
                url=strip_query(response.url),
            )
        return urljoin(response.url, following)

    def finish_upload(self, name: str, location: str, digest: str) -> None:
        """PUT ``location&digest=`` (no body): the registry checks what the session holds against the digest and
        commits the blob. DigestMismatchError if it refuses the digest (400 DIGEST_INVALID) or reports another one."""
        what = f"upload of blob {digest} to {name}"
        try:
            response = self._request(
                "PUT",
                _add_query(location, "digest", digest),
                what=what,
                scope=self._push_scope(name),
                repository=name,
                expected=(201, 204),
                headers={"Content-Type": "application/octet-stream"},
                data=b"",
                replayable=False,
            )
        except RegistryError as exc:
            if exc.status == 400 and "DIGEST_INVALID" in str(exc).upper().replace(" ", "_"):
                raise DigestMismatchError(
                    f"{self.host} refused the {what}: what it received does not hash to the digest",
                    status=400,
                    url=exc.url,
                ) from None
            raise
        reported = response.headers.get("Docker-Content-Digest")
        response.close()
        if reported and reported != digest:
            raise DigestMismatchError(f"{what}: the registry stored it as {reported}", url=strip_query(response.url))

    def cancel_upload(self, name: str, location: str) -> None:
        """Best effort: DELETE an upload session so the registry can free what it holds."""
        self._cancel_upload(name, location)

    def upload_blob(self, name: str, digest: str, size: int, chunks: ChunkSource, verify: bool = True) -> str:
        """Upload a blob as one streamed PUT (POST for a session, then PUT Location&digest=... with Content-Length).

        chunks is an iterable of bytes, consumed once and never held in memory as a whole; or a
        callable returning a fresh iterable each time, which makes the upload retryable as a whole
        after a broken connection or a 5xx. The data is checked against size and digest as it is
        sent: a mismatch aborts the request with DigestMismatchError. verify=False skips the digest
        (not the size) check, for a caller that ends the chunks only once it has checked them
        itself: the last chunk is still held back until the chunks end, and the registry checks
        the PUT's digest either way. Returns the digest.
        """
        validate_repository(name)
        validate_digest(digest)
        if size < 0:
            raise RegistryError(f"upload of blob {digest} to {name}: negative size {size}")
        what = f"upload of blob {digest} to {name}"
        factory = chunks if callable(chunks) else None
        attempt = 0
        waited = 0.0
        while True:
            source: Any = factory() if factory is not None else chunks
            _status, location = self._start_upload(name)
            if location is None:
                raise RegistryError(
                    f"{self.host} answered the start of the {what} without a Location",
                    url=self._url(f"/v2/{name}/blobs/uploads/"),
                )
            body = UploadBody(source, size, digest, what, verify=verify)
            try:
                # An empty blob is checked here and sent as b"" (requests would send a zero-length iterable chunked).
                data: Any = b"".join(body) if size == 0 else body
                response = self._request(
                    "PUT",
                    _add_query(location, "digest", digest),
                    what=what,
                    scope=self._push_scope(name),
                    repository=name,
                    expected=(201, 204),
                    headers={"Content-Type": "application/octet-stream"},
                    data=data,
                    replayable=False,
                )
            except (DigestMismatchError, AuthError, NotFoundError):
                self._cancel_upload(name, location)
                raise
            except RegistryError as exc:
                self._cancel_upload(name, location)
                retryable = exc.status is None or exc.status in RETRY_STATUSES
                delay = self._policy.backoff_delay(attempt)
                if factory is None or not retryable or not self._policy.allows(attempt + 1, waited, delay):
                    raise
                self._sleep(delay)
                waited += budgeted(delay)
                attempt += 1
                continue
            except BaseException:
                # Abandoned (the reader failed, another destination's error, an interrupt): free the session.
                self._cancel_upload(name, location)
                raise
            reported = response.headers.get("Docker-Content-Digest")
            response.close()
            if reported and reported != digest:
                raise DigestMismatchError(
                    f"{what}: the registry stored it as {reported}", url=strip_query(response.url)
                )
            return digest
