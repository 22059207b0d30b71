# Copyright (c) airgap.ngc contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private: registry HTTP API v2 client (auth, retries, manifests, blobs, uploads). Not a public API."""
from __future__ import annotations

import hashlib
import json
import re
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Tuple, Union
from urllib.parse import quote, urljoin, urlsplit

from ansible_collections.airgap.ngc.plugins.module_utils._auth import (
    Token,
    TokenCache,
    TokenKey,
    basic_auth_header,
    fetch_token,
    parse_challenges,
    select_challenge,
    token_key,
)
from ansible_collections.airgap.ngc.plugins.module_utils._errors import (
    AirgapError,
    AuthError,
    DigestMismatchError,
    NotFoundError,
    RegistryError,
    exception_reason,
    redact,
)
from ansible_collections.airgap.ngc.plugins.module_utils._reference import (
    is_digest,
    registry_url,
    validate_digest,
    validate_repository,
    validate_tag,
)
from ansible_collections.airgap.ngc.plugins.module_utils._http import (
    MAX_RETRY_AFTER,
    RETRY_STATUSES,
    RetryPolicy,
    ca_file_problem,
    new_session,
    send_with_retries,
    tls_error_message,
)
from ansible_collections.airgap.ngc.plugins.module_utils._version import USER_AGENT

try:
    import requests
    import requests.exceptions
except ImportError:
    HAS_REQUESTS = False
    REQUESTS_IMPORT_ERROR: Optional[str] = traceback.format_exc()
else:
    HAS_REQUESTS = True
    REQUESTS_IMPORT_ERROR = None

MEDIA_TYPE_OCI_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_TYPE_OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_TYPE_DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MEDIA_TYPE_DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
MANIFEST_MEDIA_TYPES = (MEDIA_TYPE_OCI_INDEX, MEDIA_TYPE_DOCKER_MANIFEST_LIST, MEDIA_TYPE_OCI_MANIFEST, MEDIA_TYPE_DOCKER_MANIFEST)
INDEX_MEDIA_TYPES = frozenset((MEDIA_TYPE_OCI_INDEX, MEDIA_TYPE_DOCKER_MANIFEST_LIST))
MANIFEST_ACCEPT = ", ".join(MANIFEST_MEDIA_TYPES)

DEFAULT_TIMEOUT = 60.0
DEFAULT_RETRIES = 5
DEFAULT_BACKOFF = 1.0
DEFAULT_POOL_SIZE = 16
DEFAULT_CHUNK_SIZE = 1024 * 1024
MAX_REDIRECTS = 10
MAX_PAGES = 100000
MAX_MANIFEST_SIZE = 16 * 1024 * 1024
REDIRECT_STATUSES = frozenset((301, 302, 303, 307, 308))

ChunkSource = Union[Iterable[bytes], Callable[[], Iterable[bytes]]]

_HASH_ALGORITHMS = ("sha256", "sha512")


def compute_digest(data: bytes, algorithm: str = "sha256") -> str:
    """The content digest (algorithm:hex) of data."""
    return f"{algorithm}:{hashlib.new(algorithm, data).hexdigest()}"


def _new_hasher(digest: str) -> Any:
    algorithm = digest.split(":", 1)[0]
    if algorithm not in _HASH_ALGORITHMS:
        raise RegistryError(f"unsupported digest algorithm in {digest!r}")
    return hashlib.new(algorithm)


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


def _strip_query(url: str) -> str:
    return url.split("?", 1)[0].split("#", 1)[0]


def _clean(exc: BaseException) -> str:
    """A one-line reason for a transport exception, without urllib3's wrapping or query strings (signed URLs, upload states)."""
    return exception_reason(exc)


def _no_netrc(request: Any) -> Any:
    """A requests auth hook that changes nothing: it stops requests from adding ~/.netrc credentials over ours."""
    return request


def _add_query(url: str, name: str, value: str) -> str:
    """Append name=value to url, keeping whatever query string (an upload state) it already has."""
    base, _sep, fragment = url.partition("#")
    joiner = "&" if "?" in base else "?"
    if base.endswith(("?", "&")):
        joiner = ""
    return f"{base}{joiner}{name}={quote(value, safe='')}" + (f"#{fragment}" if fragment else "")


def _media_type_of(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def _content_length(response: Any) -> int | None:
    value = response.headers.get("Content-Length")
    if value is None or not value.strip().isdigit():
        return None
    return int(value)


@dataclass(frozen=True)
class ManifestDescriptor:
    """What HEAD tells about a manifest."""

    digest: str
    media_type: str
    size: int


@dataclass(frozen=True)
class Manifest:
    """A manifest as the registry sent it: the exact bytes (hash these, never a re-serialisation), and their JSON."""

    raw: bytes = field(repr=False)
    media_type: str
    digest: str
    data: Dict[str, Any] = field(repr=False, compare=False, hash=False)

    @property
    def size(self) -> int:
        return len(self.raw)

    @property
    def is_index(self) -> bool:
        """True for an OCI index or Docker manifest list (a multi-architecture image)."""
        return self.media_type in INDEX_MEDIA_TYPES

    @property
    def descriptor(self) -> ManifestDescriptor:
        return ManifestDescriptor(digest=self.digest, media_type=self.media_type, size=self.size)


@dataclass
class _SentAuth:
    header: str
    key: Optional[TokenKey] = None
    token: Optional[str] = field(default=None, repr=False)


def _guess_media_type(data: Dict[str, Any]) -> str:
    media_type = data.get("mediaType")
    if isinstance(media_type, str) and media_type:
        return media_type
    if "manifests" in data:
        return MEDIA_TYPE_OCI_INDEX
    if "layers" in data or "config" in data:
        return MEDIA_TYPE_OCI_MANIFEST
    return ""


class BlobReader:
    """A blob being downloaded: iterate over it for chunks, or read(n) like a file; use it as a context manager.

    The sha256 and the size are checked on the way; when the last byte has been read a mismatch
    raises DigestMismatchError. A connection that breaks mid-way is resumed with a Range request
    (a server that ignores Range is read again from the start, skipping what was already read).
    A reader closed before its end checks nothing.
    """

    def __init__(self, client: RegistryClient, name: str, digest: str, expected_size: int | None, chunk_size: int) -> None:
        self.name = name
        self.digest = digest
        self.size: Optional[int] = expected_size
        self.bytes_read = 0
        self._client = client
        self._chunk_size = chunk_size
        self._hasher = _new_hasher(digest)
        self._response: Any = None
        self._chunks: Optional[Iterator[bytes]] = None
        self._pending = b""
        self._current = b""
        self._position = 0
        self._done = False
        self._verified = False
        self._closed = False
        self._resumes = 0
        self._open(0)

    # -- transport ---------------------------------------------------------------------------

    def _open(self, offset: int) -> None:
        response = self._client._blob_response(self.name, self.digest, offset)
        total = None
        skip = offset
        if response.status_code == 206:
            match = re.match(r"\s*bytes\s+(\d+)-(\d+)/(\d+|\*)", response.headers.get("Content-Range", ""))
            if not match or int(match.group(1)) != offset:
                response.close()
                raise RegistryError(
                    f"blob {self.digest} in {self.name} on {self._client.host}: the registry answered a resume at byte {offset} with another range",
                    status=206,
                )
            total = int(match.group(3)) if match.group(3) != "*" else None
            skip = 0
        else:
            total = _content_length(response)
        if total is not None:
            if self.size is None:
                self.size = total
            elif total != self.size:
                response.close()
                raise DigestMismatchError(
                    f"blob {self.digest} in {self.name} on {self._client.host} is {total} bytes, expected {self.size}",
                    url=_strip_query(response.url),
                )
        self._response = response
        self._chunks = response.iter_content(chunk_size=self._chunk_size)
        while skip > 0:
            chunk = next(self._chunks, b"")
            if not chunk:
                break
            if len(chunk) <= skip:
                skip -= len(chunk)
            else:
                self._pending = chunk[skip:]
                skip = 0

    def _resume(self, reason: str) -> None:
        if self._resumes >= self._client.retries:
            self._close_response()
            raise RegistryError(
                f"download of blob {self.digest} from {self._client.host} for {self.name} broke off at byte "
                f"{self.bytes_read} of {self.size if self.size is not None else '?'} {self._resumes + 1} times: {reason}"
            )
        self._close_response()
        self._client._sleep(self._client._backoff_delay(self._resumes))
        self._resumes += 1
        self._open(self.bytes_read)

    def _account(self, chunk: bytes) -> bytes:
        self.bytes_read += len(chunk)
        if self.size is not None and self.bytes_read > self.size:
            self.close()
            raise DigestMismatchError(
                f"blob {self.digest} from {self._client.host} for {self.name} is longer than its {self.size} bytes",
            )
        self._hasher.update(chunk)
        return chunk

    def _finish(self) -> None:
        self._close_response()
        self._done = True
        if self.size is not None and self.bytes_read != self.size:
            raise DigestMismatchError(
                f"blob {self.digest} from {self._client.host} for {self.name}: got {self.bytes_read} bytes, expected {self.size}"
            )
        actual = f"{self.digest.split(':', 1)[0]}:{self._hasher.hexdigest()}"
        if actual != self.digest:
            raise DigestMismatchError(
                f"blob {self.digest} from {self._client.host} for {self.name} hashed to {actual}: "
                "the download was corrupted or the registry served other content"
            )
        self._verified = True

    def _next_chunk(self) -> bytes:
        if self._done or self._closed:
            return b""
        if self._pending:
            chunk, self._pending = self._pending, b""
            return self._account(chunk)
        while True:
            try:
                chunk = next(self._chunks) if self._chunks is not None else b""
            except StopIteration:
                if self.size is not None and self.bytes_read < self.size:
                    self._resume(f"the connection closed after {self.bytes_read} bytes")
                    if self._pending:
                        chunk, self._pending = self._pending, b""
                        return self._account(chunk)
                    continue
                self._finish()
                return b""
            except (requests.exceptions.ChunkedEncodingError, requests.exceptions.ConnectionError, requests.exceptions.Timeout) as exc:
                self._resume(_clean(exc))
                if self._pending:
                    chunk, self._pending = self._pending, b""
                    return self._account(chunk)
                continue
            if chunk:
                return self._account(chunk)

    # -- public ------------------------------------------------------------------------------

    def __iter__(self) -> Iterator[bytes]:
        while True:
            if self._position < len(self._current):
                chunk = self._current[self._position:]
                self._current, self._position = b"", 0
                yield chunk
                continue
            chunk = self._next_chunk()
            if not chunk:
                return
            yield chunk

    def read(self, size: int = -1) -> bytes:
        """Up to size bytes (all the rest if size < 0); b"" at the end."""
        if size is None or size < 0:
            parts = [self._current[self._position:]]
            self._current, self._position = b"", 0
            parts.extend(iter(self._next_chunk, b""))
            return b"".join(parts)
        parts = []
        wanted = size
        while wanted > 0:
            if self._position >= len(self._current):
                self._current, self._position = self._next_chunk(), 0
                if not self._current:
                    break
            piece = self._current[self._position:self._position + wanted]
            self._position += len(piece)
            wanted -= len(piece)
            parts.append(piece)
        return b"".join(parts)

    def readable(self) -> bool:
        return True

    @property
    def verified(self) -> bool:
        """True once the whole blob was read and matched its digest and size."""
        return self._verified

    def _close_response(self) -> None:
        if self._response is not None:
            self._response.close()
            self._response = None
            self._chunks = None

    def close(self) -> None:
        self._closed = True
        self._close_response()

    def __enter__(self) -> BlobReader:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()


class _UploadBody:
    """A streaming request body of a known size: requests sends Content-Length and iterates without buffering.

    It checks the size and the digest of what it sends, and raises (aborting the request) on a mismatch.
    """

    def __init__(self, chunks: Iterable[bytes], size: int, digest: str, what: str, verify: bool = True) -> None:
        self._chunks = chunks
        self._size = size
        self._digest = digest
        self._what = what
        self._verify = verify
        self.sent = 0

    def __len__(self) -> int:
        return self._size

    def __iter__(self) -> Iterator[bytes]:
        # One chunk is held back until the next one arrives, and the last until the data is verified,
        # so a registry never receives a complete body with the wrong content.
        hasher = _new_hasher(self._digest) if self._verify else None
        held: Optional[bytes] = None
        for chunk in self._chunks:
            if not chunk:
                continue
            chunk = bytes(chunk)
            self.sent += len(chunk)
            if self.sent > self._size:
                raise DigestMismatchError(f"{self._what}: the data is longer than the declared {self._size} bytes")
            if hasher is not None:
                hasher.update(chunk)
            if held is not None:
                yield held
            held = chunk
        if self.sent != self._size:
            raise DigestMismatchError(f"{self._what}: the data has {self.sent} bytes, {self._size} were declared")
        actual = f"{self._digest.split(':', 1)[0]}:{hasher.hexdigest()}" if hasher is not None else self._digest
        if actual != self._digest:
            raise DigestMismatchError(f"{self._what}: the data hashes to {actual}")
        if held is not None:
            yield held


class RegistryClient:
    """A client of one registry's HTTP API v2 (OCI distribution), safe to share between threads.

    Authentication follows the registry's challenges: Bearer tokens per repository scope from the
    realm it names (cached until shortly before they expire, renewed on a 401 with invalid_token),
    or HTTP Basic. Credentials are only ever sent to the registry's own scheme, host and port and to
    the token realm. 429/502/503/504 answers and broken connections are retried with exponential
    backoff, honouring Retry-After. sleep is for tests.
    """

    def __init__(
        self,
        base_url: str,
        username: str | None = None,
        password: str | None = None,
        validate_certs: bool = True,
        ca_path: str | None = None,
        timeout: float | Tuple[float, float] = DEFAULT_TIMEOUT,
        retries: int = DEFAULT_RETRIES,
        backoff: float = DEFAULT_BACKOFF,
        pool_size: int = DEFAULT_POOL_SIZE,
        max_retry_after: float = MAX_RETRY_AFTER,
        sleep: Callable[[float], None] | None = None,
    ) -> None:
        if not HAS_REQUESTS:
            raise AirgapError("the Python library requests is required to talk to a registry")
        self.base_url = registry_url(base_url)
        self.host = urlsplit(self.base_url).netloc
        self.username = username
        self._password = password
        self.timeout = timeout
        self.retries = max(0, int(retries))
        self.backoff = max(0.0, float(backoff))
        self.max_retry_after = max_retry_after
        self._policy = RetryPolicy(self.retries, self.backoff, max_retry_after)
        self._sleep = sleep or time.sleep
        self._origin = _origin(self.base_url)
        self._verify: Union[bool, str] = (ca_path or True) if validate_certs else False
        self._tokens = TokenCache()
        self._auth_lock = threading.Lock()
        self._bearer: Optional[Tuple[str, str]] = None  # (realm, service) of the last Bearer challenge
        self._basic = False
        self._session = new_session(validate_certs, pool_size)

    # -- lifecycle ---------------------------------------------------------------------------

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"RegistryClient({self.base_url!r}, username={self.username!r})"

    # -- helpers -----------------------------------------------------------------------------

    def _url(self, path: str) -> str:
        return self.base_url + path

    def _backoff_delay(self, attempt: int) -> float:
        return self._policy.backoff_delay(attempt)

    def _retry_delay(self, response: Any, attempt: int) -> float:
        return self._policy.retry_delay(response, attempt)

    @staticmethod
    def _pull_scope(name: str) -> str:
        return f"repository:{name}:pull"

    @staticmethod
    def _push_scope(name: str) -> str:
        return f"repository:{name}:pull,push"

    def _error_detail(self, response: Any) -> str:
        if response.request is not None and response.request.method == "HEAD":
            return ""
        length = _content_length(response)
        if length is not None and length > 65536:
            return ""
        try:
            body = response.content
        except Exception:  # pylint: disable=broad-except
            return ""
        if not body:
            return ""
        try:
            data = json.loads(body)
        except ValueError:
            data = None
        if isinstance(data, dict) and isinstance(data.get("errors"), list):
            parts = []
            for error in data["errors"][:3]:
                if isinstance(error, dict):
                    code, message = error.get("code"), error.get("message")
                    parts.append(": ".join(str(x) for x in (code, message) if x))
            detail = "; ".join(p for p in parts if p)
        else:
            detail = body[:300].decode("utf-8", "replace")
        return redact(" ".join(detail.split())[:300], (self._password,))

    def _auth_hint(self, status: int, scope: str | None, challenge_error: str | None = None) -> str:
        nvcr = self.host.lower().endswith("nvcr.io")
        first_scope = (scope or "").split(" ", 1)[0]
        if first_scope.startswith("registry:catalog:") and (status == 403 or challenge_error == "insufficient_scope"):
            return ("the credentials were accepted, but this account may not list the registry's catalog (scope registry:catalog:*); "
                    "list the images from the NGC API (source=ngc) or use an account that may read the catalog")
        if status == 401 and challenge_error == "insufficient_scope":
            action = "push to" if "push" in first_scope.rpartition(":")[2] else "pull from"
            return f"the credentials were accepted, but the token grants no access for {first_scope}; check that the account may {action} this repository"
        if status == 403:
            action = "push to" if scope and "push" in scope.split(" ", 1)[0] else "pull from"
            return f"access denied; check that the account may {action} this repository"
        if self.username is None:
            extra = " (for nvcr.io: user name $oauthtoken, password an NGC API key)" if nvcr else ""
            return f"the registry requires credentials and none were given{extra}"
        if nvcr or self.username == "$oauthtoken":
            return "check the NGC API key (user name $oauthtoken, password the API key)"
        return "check the user name and password"

    def _auth_error(self, status: int, repository: str | None, scope: str | None, detail: str, url: str,
                    challenge_error: str | None = None) -> AuthError:
        target = f" for {repository}" if repository else (" for the catalog" if (scope or "").startswith("registry:catalog:") else "")
        hint = self._auth_hint(status, scope, challenge_error)
        if target == " for the catalog" and "catalog" not in hint:
            hint += "; if they are right, this account may not list the catalog: list the images from the NGC API (source=ngc)"
        message = f"{status} from {self.host}{target}: {hint}"
        if detail:
            message += f" ({detail})"
        return AuthError(message, status=status, url=_strip_query(url))

    # -- authentication ----------------------------------------------------------------------

    def _token_get(self, url: str, params: Any = None, auth: Any = None) -> Any:
        """GET from a token service through the shared retry loop (Retry-After honoured; a 429/5xx that outlasts the
        retries is raised naming the status and the attempts); requests drops Basic credentials on a cross-host redirect."""
        response, _attempts = send_with_retries(
            self._session, "GET", url, policy=self._policy, sleep=self._sleep, what="a registry token", error=RegistryError,
            secrets=(self._password,), params=params, auth=auth or _no_netrc, headers={"User-Agent": USER_AGENT},
            timeout=self.timeout, verify=self._verify,
        )
        return response

    def _fetch_token(self, realm: str, service: str, scope: str) -> Token:
        return fetch_token(self._token_get, realm, service, scope, self.username, self._password, clock=self._tokens.clock)

    def _current_auth(self, scope: str | None, repository: str | None, url: str) -> Optional[_SentAuth]:
        """The Authorization to send before being challenged, from what earlier challenges taught."""
        with self._auth_lock:
            bearer, basic = self._bearer, self._basic
        if bearer is not None and scope is not None:
            realm, service = bearer
            key = token_key(realm, service, scope)
            try:
                token = self._tokens.get_or_fetch(key, lambda: self._fetch_token(realm, service, scope))
            except AuthError as exc:
                raise self._auth_error(exc.status or 401, repository, scope, str(exc), url) from exc
            return _SentAuth(header=f"Bearer {token.value}", key=key, token=token.value)
        if basic and self.username is not None:
            return _SentAuth(header=basic_auth_header(self.username, self._password or ""))
        return None

    def _answer_challenge(self, response: Any, scope: str | None, sent: Optional[_SentAuth], repository: str | None) -> _SentAuth:
        """Authorization for a retry after a 401, or AuthError if there is nothing better to send."""
        url = response.url
        challenge = select_challenge(parse_challenges(response.headers.get("WWW-Authenticate")))
        if challenge is None:
            raise self._auth_error(401, repository, scope, "no usable WWW-Authenticate challenge", url)
        if challenge.scheme == "basic":
            if self.username is None or (sent is not None and sent.key is None):
                raise self._auth_error(401, repository, scope, self._error_detail(response), url)
            with self._auth_lock:
                self._basic = True
            return _SentAuth(header=basic_auth_header(self.username, self._password or ""))
        realm = challenge.realm
        if not realm:
            raise self._auth_error(401, repository, scope, "the Bearer challenge names no realm", url)
        service = challenge.service or ""
        with self._auth_lock:
            self._bearer = (realm, service)
            self._basic = False
        effective_scope = scope if scope is not None else (challenge.scope or "")
        key = token_key(realm, service, effective_scope)
        if sent is not None and sent.key is not None:
            self._tokens.invalidate(sent.key, sent.token)  # expired or revoked (invalid_token), or too narrow
        try:
            token = self._tokens.get_or_fetch(key, lambda: self._fetch_token(realm, service, effective_scope))
        except AuthError as exc:
            raise self._auth_error(exc.status or 401, repository, scope, str(exc), url) from exc
        return _SentAuth(header=f"Bearer {token.value}", key=key, token=token.value)

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
        """Send one request with authentication and retries; return (response, attempts). No status checks."""
        same_origin = _origin(url) == self._origin
        host = urlsplit(url).netloc
        attempt = 0
        override: Optional[_SentAuth] = None
        reauthenticated = False
        while True:
            request_headers = {"User-Agent": USER_AGENT}
            request_headers.update(headers or {})
            sent = None
            if same_origin:
                sent = override or self._current_auth(scope, repository, url)
                if sent is not None:
                    request_headers["Authorization"] = sent.header
            override = None
            try:
                response = self._session.request(
                    method,
                    url,
                    headers=request_headers,
                    params=params,
                    data=data,
                    stream=stream,
                    timeout=self.timeout,
                    verify=self._verify,
                    allow_redirects=False,
                    auth=_no_netrc,
                )
            except requests.exceptions.SSLError as exc:
                raise RegistryError(tls_error_message(exc, host, self._verify, what), url=_strip_query(url)) from None
            except (requests.exceptions.ConnectionError, requests.exceptions.Timeout, requests.exceptions.ChunkedEncodingError) as exc:
                if replayable and attempt < self.retries:
                    self._sleep(self._backoff_delay(attempt))
                    attempt += 1
                    continue
                tried = f" after {attempt + 1} attempts" if attempt else ""
                raise RegistryError(f"cannot reach {host} for {what}{tried}: {_clean(exc)}", url=_strip_query(url)) from exc
            except requests.exceptions.RequestException as exc:
                raise RegistryError(f"request to {host} for {what} failed: {_clean(exc)}", url=_strip_query(url)) from exc
            except OSError as exc:  # requests checks that a CA path exists before it connects
                if isinstance(self._verify, str) and ca_file_problem(self._verify):
                    raise RegistryError(tls_error_message(exc, host, self._verify, what), url=_strip_query(url)) from None
                raise
            if response.status_code == 401 and same_origin and not reauthenticated and replayable:
                override = self._answer_challenge(response, scope, sent, repository)
                response.close()
                reauthenticated = True
                continue
            if response.status_code in RETRY_STATUSES and replayable and attempt < self.retries:
                delay = self._retry_delay(response, attempt)
                response.close()
                self._sleep(delay)
                attempt += 1
                continue
            return response, attempt + 1

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
                method, url, what=what, scope=scope, repository=repository, headers=headers, params=params, data=data, stream=stream, replayable=replayable
            )
            status = response.status_code
            if follow and status in REDIRECT_STATUSES and response.headers.get("Location"):
                response.close()
                hops += 1
                if hops > MAX_REDIRECTS:
                    raise RegistryError(f"too many redirects (more than {MAX_REDIRECTS}) from {self.host} for {what}", status=status, url=_strip_query(url))
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
                    f"{status} from {host}, where {self.host} redirected the {what}" + (f": {detail}" if detail else ""),
                    status=status,
                    url=_strip_query(response.url),
                )
            if status in (401, 403):
                challenge = select_challenge(parse_challenges(response.headers.get("WWW-Authenticate")))
                raise self._auth_error(status, repository, scope, detail, response.url, challenge.error if challenge else None)
            if status == 404:
                raise NotFoundError(f"404 from {host}: {what} not found" + (f" ({detail})" if detail else ""), status=404, url=_strip_query(response.url))
            tried = f" after {attempts} attempts" if attempts > 1 else ""
            raise RegistryError(f"{status} from {host} for {what}{tried}" + (f": {detail}" if detail else ""), status=status, url=_strip_query(response.url))

    def _json(self, response: Any, what: str) -> Dict[str, Any]:
        try:
            data = response.json()
        except ValueError:
            data = None
        if not isinstance(data, dict):
            raise RegistryError(
                f"{self.host} answered {what} with something that is not a JSON object", status=response.status_code, url=_strip_query(response.url)
            )
        return data

    def _paginate(self, url: str, params: Any, key: str, what: str, scope: str | None, repository: str | None) -> List[str]:
        items: List[str] = []
        seen = set()
        for _page in range(MAX_PAGES):
            response = self._request("GET", url, what=what, scope=scope, repository=repository, params=params)
            data = self._json(response, what)
            values = data.get(key) or []
            if not isinstance(values, list):
                raise RegistryError(f"{self.host} answered {what} with a {key!r} that is not a list", url=_strip_query(response.url))
            items.extend(str(value) for value in values)
            following = parse_link_header(response.headers.get("Link")).get("next")
            if not following:
                return items
            url = urljoin(response.url, following)
            params = None
            if url in seen:
                raise RegistryError(f"{self.host} sent a pagination loop for {what}", url=_strip_query(url))
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
        return self._paginate(self._url("/v2/_catalog"), params, "repositories", "the catalog", "registry:catalog:*", None)

    def list_tags(self, name: str, page_size: int | None = None) -> List[str]:
        """All tags of repository name (GET /v2/<name>/tags/list with n/last and Link pagination)."""
        validate_repository(name)
        params = {"n": str(page_size)} if page_size else None
        return self._paginate(self._url(f"/v2/{name}/tags/list"), params, "tags", f"the tags of {name}", self._pull_scope(name), name)

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
            "HEAD", url, what=what, scope=self._pull_scope(name), repository=name, headers={"Accept": MANIFEST_ACCEPT}, allow_404=True
        )
        response.close()
        if response.status_code == 404:
            return None
        digest = response.headers.get("Docker-Content-Digest") or (reference if is_digest(reference) else None)
        media_type = _media_type_of(response.headers.get("Content-Type"))
        size = _content_length(response)
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
        response = self._request("GET", url, what=what, scope=self._pull_scope(name), repository=name, headers={"Accept": MANIFEST_ACCEPT}, stream=True)
        try:
            length = _content_length(response)
            if length is not None and length > MAX_MANIFEST_SIZE:
                raise RegistryError(f"{what} on {self.host} is {length} bytes, more than the {MAX_MANIFEST_SIZE} a manifest may have")
            raw = response.content
            final_url = response.url
            announced = response.headers.get("Docker-Content-Digest")
            content_type = _media_type_of(response.headers.get("Content-Type"))
        except requests.exceptions.RequestException as exc:
            raise RegistryError(f"reading {what} from {self.host} failed: {_clean(exc)}", url=_strip_query(url)) from exc
        finally:
            response.close()
        for source, expected in (("the digest asked for", reference if is_digest(reference) else None), ("the registry's Docker-Content-Digest", announced)):
            if not expected:
                continue
            algorithm = expected.split(":", 1)[0]
            if algorithm not in _HASH_ALGORITHMS or not is_digest(expected):
                continue
            actual = compute_digest(raw, algorithm)
            if actual != expected:
                raise DigestMismatchError(
                    f"{what} from {self.host}: its bytes hash to {actual}, but {source} is {expected}; "
                    "the registry or a proxy changed the manifest",
                    url=_strip_query(final_url),
                )
        try:
            data = json.loads(raw)
        except ValueError as exc:
            raise RegistryError(f"{what} from {self.host} is not JSON: {exc}", url=_strip_query(final_url)) from exc
        if not isinstance(data, dict):
            raise RegistryError(f"{what} from {self.host} is not a JSON object", url=_strip_query(final_url))
        media_type = content_type if content_type in MANIFEST_MEDIA_TYPES else (_guess_media_type(data) or content_type)
        digest = reference if is_digest(reference) else (announced if announced and is_digest(announced) else compute_digest(raw))
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
            raise DigestMismatchError(f"{what} to {self.host}: the registry stored it as {reported}, but its bytes hash to {digest}", url=_strip_query(url))
        return digest

    def _blob_url(self, name: str, digest: str) -> str:
        validate_repository(name)
        validate_digest(digest)
        return self._url(f"/v2/{name}/blobs/{digest}")

    def head_blob(self, name: str, digest: str) -> Optional[int]:
        """The size of a blob in repository name, or None if it is not there."""
        url = self._blob_url(name, digest)
        response = self._request("HEAD", url, what=f"blob {digest} in {name}", scope=self._pull_scope(name), repository=name, allow_404=True)
        response.close()
        if response.status_code == 404:
            return None
        size = _content_length(response)
        return size if size is not None else 0

    def _blob_response(self, name: str, digest: str, offset: int = 0) -> Any:
        headers = {"Accept-Encoding": "identity"}
        if offset:
            headers["Range"] = f"bytes={offset}-"
        return self._request(
            "GET",
            self._blob_url(name, digest),
            what=f"blob {digest} in {name}",
            scope=self._pull_scope(name),
            repository=name,
            expected=(200, 206) if offset else (200,),
            headers=headers,
            stream=True,
        )

    def open_blob(self, name: str, digest: str, chunk_size: int = DEFAULT_CHUNK_SIZE, expected_size: int | None = None) -> BlobReader:
        """Start downloading a blob; the reader streams it in chunks and verifies its digest (and size) at the end."""
        return BlobReader(self, name, digest, expected_size, chunk_size)

    def _start_upload(self, name: str, mount: str | None = None, from_repo: str | None = None) -> Tuple[int, Optional[str]]:
        params = None
        scope = self._push_scope(name)
        what = f"start of a blob upload to {name}"
        if mount is not None and from_repo is not None:
            params = {"mount": mount, "from": from_repo}
            scope = f"{scope} {self._pull_scope(from_repo)}"
            what = f"mount of blob {mount} from {from_repo} into {name}"
        response = self._request(
            "POST", self._url(f"/v2/{name}/blobs/uploads/"), what=what, scope=scope, repository=name, expected=(201, 202), params=params, data=b""
        )
        response.close()
        location = response.headers.get("Location")
        if response.status_code == 202 and not location:
            raise RegistryError(f"{self.host} answered the {what} without a Location for the upload", status=202, url=_strip_query(response.url))
        return response.status_code, (urljoin(response.url, location) if location else None)

    def _cancel_upload(self, name: str, location: str) -> None:
        """Best effort: DELETE an upload session so the registry can free it."""
        try:
            response = self._request(
                "DELETE",
                location,
                what=f"cancel of a blob upload to {name}",
                scope=self._push_scope(name),
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
        while True:
            source: Any = factory() if factory is not None else chunks
            _status, location = self._start_upload(name)
            if location is None:
                raise RegistryError(f"{self.host} answered the start of the {what} without a Location", url=self._url(f"/v2/{name}/blobs/uploads/"))
            body = _UploadBody(source, size, digest, what, verify=verify)
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
            except DigestMismatchError:
                self._cancel_upload(name, location)
                raise
            except (AuthError, NotFoundError):
                self._cancel_upload(name, location)
                raise
            except RegistryError as exc:
                self._cancel_upload(name, location)
                retryable = exc.status is None or exc.status in RETRY_STATUSES
                if factory is None or not retryable or attempt >= self.retries:
                    raise
                self._sleep(self._backoff_delay(attempt))
                attempt += 1
                continue
            except BaseException:
                # Abandoned (the reader failed, another destination's error, an interrupt): free the session.
                self._cancel_upload(name, location)
                raise
            reported = response.headers.get("Docker-Content-Digest")
            response.close()
            if reported and reported != digest:
                raise DigestMismatchError(f"{what}: the registry stored it as {reported}", url=_strip_query(response.url))
            return digest
