# Copyright (c) airgap.ngc contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private: WWW-Authenticate challenges, registry bearer tokens and their cache, a registry client's auth state. Not a public API.

The parsing, the cache and ``fetch_token`` do no I/O of their own; ``RegistryAuth``, the half of the
registry client that answers challenges, fetches its tokens through ``_http.send_with_retries``.
"""

from __future__ import annotations

import base64
import json
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

from ansible_collections.airgap.ngc.plugins.module_utils._types.errors import (
    AuthError,
    RegistryError,
    answer_reason,
    redact,
)
from ansible_collections.airgap.ngc.plugins.module_utils._http.transport import (
    RetryPolicy,
    content_length,
    host_of,
    no_netrc,
    send_with_retries,
    strip_query,
)
from ansible_collections.airgap.ngc.plugins.module_utils._types.version import USER_AGENT

DEFAULT_TOKEN_LIFETIME = 60.0
"""Seconds a token lives when the token service does not say (the token spec's default)."""

REFRESH_MARGIN = 10.0
"""A token is renewed this many seconds before it expires (at most a quarter of its lifetime)."""

TokenKey = Tuple[str, str, str]
"""(realm, service, scope); empty strings where the challenge had none."""

_TOKEN_RE = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_TOKEN68_RE = re.compile(r"([A-Za-z0-9._~+/-]+=*)[ \t]*(?:,|$)")


def _skip_space(text: str, pos: int) -> int:
    """The position of the first character at or after ``pos`` that is not a space or a tab."""
    while pos < len(text) and text[pos] in " \t":
        pos += 1
    return pos


@dataclass(frozen=True)
class Challenge:
    """One challenge of a WWW-Authenticate header: a scheme (lower case) and its parameters (keys lower case)."""

    scheme: str
    params: Dict[str, str] = field(default_factory=dict, hash=False)
    token68: Optional[str] = None

    @property
    def realm(self) -> str | None:
        return self.params.get("realm")

    @property
    def service(self) -> str | None:
        return self.params.get("service")

    @property
    def scope(self) -> str | None:
        return self.params.get("scope")

    @property
    def error(self) -> str | None:
        return self.params.get("error")


def _quoted_string(header: str, pos: int) -> Tuple[str, int]:
    """Read a quoted-string starting at header[pos] == '"'; return its unescaped value and the position after it."""
    out = []
    pos += 1
    while pos < len(header):
        char = header[pos]
        if char == "\\" and pos + 1 < len(header):
            out.append(header[pos + 1])
            pos += 2
            continue
        if char == '"':
            return "".join(out), pos + 1
        out.append(char)
        pos += 1
    return "".join(out), pos  # unterminated: take the rest


def parse_challenges(header: str | None) -> List[Challenge]:
    """Parse a WWW-Authenticate header value into challenges, in order.

    Handles several challenges in one header (Bearer realm="a",service="b", Basic realm="c"),
    quoted values with commas and escapes inside (scope="repository:a:pull,push"), unquoted
    values, and token68 credentials. Parameters of an unparsable tail are dropped, not raised.
    """
    challenges: List[Challenge] = []
    if not header:
        return challenges
    current: Optional[Challenge] = None
    pos = 0
    length = len(header)
    while pos < length:
        if header[pos] in " \t,":
            pos += 1
            continue
        match = _TOKEN_RE.match(header, pos)
        if not match:
            pos += 1  # stray character: skip it
            continue
        word = match.group(0)
        after = _skip_space(header, match.end())
        if current is not None and after < length and header[after] == "=":
            pos = _skip_space(header, after + 1)
            if pos < length and header[pos] == '"':
                value, pos = _quoted_string(header, pos)
            else:
                end = pos
                while end < length and header[end] not in ", \t":
                    end += 1
                value, pos = header[pos:end], end
            current.params[word.lower()] = value
            continue
        # A new challenge: the word is its scheme, possibly followed by a token68.
        current = Challenge(scheme=word.lower(), params={})
        challenges.append(current)
        pos = after
        token68 = _TOKEN68_RE.match(header, pos)
        if token68:
            current = Challenge(scheme=current.scheme, params={}, token68=token68.group(1))
            challenges[-1] = current
            pos = token68.end()
    return challenges


def select_challenge(challenges: List[Challenge]) -> Optional[Challenge]:
    """The challenge to answer: Bearer if offered, else Basic, else None."""
    for scheme in ("bearer", "basic"):
        for challenge in challenges:
            if challenge.scheme == scheme:
                return challenge
    return None


def basic_auth_header(username: str, password: str) -> str:
    """The value of an Authorization header for HTTP Basic."""
    raw = f"{username}:{password}".encode("utf-8")
    return "Basic " + base64.b64encode(raw).decode("ascii")


@dataclass(frozen=True)
class Token:
    """A bearer token; its value is kept out of repr() so it never lands in a log or message."""

    value: str = field(repr=False)
    expires_at: float
    refresh_at: float

    @classmethod
    def issue(cls, value: str, lifetime: float, now: float) -> Token:
        """A token received at monotonic time now that lives lifetime seconds."""
        margin = min(REFRESH_MARGIN, lifetime / 4.0)
        return cls(value=value, expires_at=now + lifetime, refresh_at=now + lifetime - margin)


class TokenCache:
    """Bearer tokens per (realm, service, scope), renewed a little before they expire. Thread-safe."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._tokens: Dict[TokenKey, Token] = {}
        self._lock = threading.Lock()
        self._fetch_locks: Dict[TokenKey, threading.Lock] = {}

    def get(self, key: TokenKey) -> Optional[Token]:
        """The cached token for key if it is not due for renewal, else None."""
        with self._lock:
            token = self._tokens.get(key)
            if token is None:
                return None
            if self.clock() >= token.refresh_at:
                del self._tokens[key]
                return None
            return token

    def put(self, key: TokenKey, token: Token) -> None:
        with self._lock:
            self._tokens[key] = token

    def invalidate(self, key: TokenKey, value: str | None = None) -> None:
        """Forget the token for key; with value, only if it is still that token (another thread may have renewed it)."""
        with self._lock:
            token = self._tokens.get(key)
            if token is not None and (value is None or token.value == value):
                del self._tokens[key]

    def clear(self) -> None:
        with self._lock:
            self._tokens.clear()

    def get_or_fetch(self, key: TokenKey, fetch: Callable[[], Token]) -> Token:
        """The cached token for key, or a new one from fetch(); concurrent callers for one key fetch once."""
        token = self.get(key)
        if token is not None:
            return token
        with self._lock:
            fetch_lock = self._fetch_locks.setdefault(key, threading.Lock())
        with fetch_lock:
            token = self.get(key)
            if token is None:
                token = fetch()
                self.put(key, token)
            return token


def token_key(realm: str, service: str | None, scope: str | None) -> TokenKey:
    return (realm, service or "", scope or "")


def _safe_detail(data: Any, secrets: Tuple[Optional[str], ...]) -> str:
    """A short reason from a token service's error answer, with any secret blanked out."""
    return redact(answer_reason(data), secrets)


def fetch_token(
    get: Callable[..., Any],
    realm: str,
    service: str | None,
    scope: str | None,
    username: str | None = None,
    password: str | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> Token:
    """Get a bearer token from a token service (the realm of a Bearer challenge).

    get(url, params=[(name, value), ...], auth=(user, password) or None) must perform an HTTP GET
    and return a requests-like response (status_code, json()). HTTP Basic credentials are sent
    if a username is given, else the request is anonymous. Several space-separated scopes are
    sent as several scope parameters. Raises AuthError if the credentials are refused or the
    answer holds no token; the password and the token never appear in a message.
    """
    if not realm or not realm.lower().startswith(("https://", "http://")):
        raise AuthError(f"the registry sent an unusable token realm {realm!r}", url=realm)
    params: List[Tuple[str, str]] = []
    if service:
        params.append(("service", service))
    for one in (scope or "").split():
        params.append(("scope", one))
    auth = None
    if username is not None:
        params.append(("account", username))
        auth = (username, password or "")
    host = host_of(realm)
    now = clock()
    response = get(realm, params=params, auth=auth)
    status = response.status_code
    try:
        data = response.json()
    except ValueError:
        data = None
    secrets = (password,)
    if status in (401, 403):
        detail = _safe_detail(data, secrets)
        who = "refused the credentials" if username is not None else "refused anonymous access"
        raise AuthError(
            f"token service {host} {who} for scope {scope or '(none)'} with {status}"
            + (f": {detail}" if detail else ""),
            status=status,
            url=realm.split("?", 1)[0],
        )
    if status != 200:
        detail = _safe_detail(data, secrets)
        raise RegistryError(
            f"{status} from token service {host} for scope {scope or '(none)'}" + (f": {detail}" if detail else ""),
            status=status,
            url=realm.split("?", 1)[0],
        )
    if not isinstance(data, dict):
        raise AuthError(
            f"token service {host} answered without a JSON object", status=status, url=realm.split("?", 1)[0]
        )
    value = data.get("token") or data.get("access_token")
    if not isinstance(value, str) or not value:
        raise AuthError(f"token service {host} answered without a token", status=status, url=realm.split("?", 1)[0])
    lifetime = DEFAULT_TOKEN_LIFETIME
    expires_in = data.get("expires_in")
    if isinstance(expires_in, (int, float)) and not isinstance(expires_in, bool) and expires_in > 0:
        lifetime = float(expires_in)
    return Token.issue(value, lifetime, now)


@dataclass
class _SentAuth:
    header: str
    key: Optional[TokenKey] = None
    token: Optional[str] = field(default=None, repr=False)


class RegistryAuth:
    """The authentication half of a registry client (``RegistryClient`` builds on it), safe to share between threads.

    It follows the registry's challenges: Bearer tokens per repository scope from the realm the
    last challenge named (cached until shortly before they expire, renewed on a 401 with
    invalid_token), or HTTP Basic; and it words a refusal as what to check. Tokens are fetched
    through the shared retry loop (Retry-After honoured). The password goes only to the token
    realm and, for Basic, to the registry itself (the client sends credentials to its own origin only).
    """

    def __init__(
        self,
        host: str,
        username: str | None,
        password: str | None,
        session: Any,
        verify: Union[bool, str],
        timeout: Any,
        policy: RetryPolicy,
        sleep: Callable[[float], None],
    ) -> None:
        self.host = host
        self.username = username
        self._password = password
        self._session = session
        self._verify = verify
        self.timeout = timeout
        self._policy = policy
        self._sleep = sleep
        self._tokens = TokenCache()
        self._auth_lock = threading.Lock()
        self._bearer: Optional[Tuple[str, str]] = None  # (realm, service) of the last Bearer challenge
        self._basic = False

    def _credentials(self, scope: str | None, repository: str | None, url: str) -> _RequestCredentials:
        """The credentials of one request to the registry's own origin, for ``send_with_retries``."""
        return _RequestCredentials(self, scope, repository, url)

    # -- messages ----------------------------------------------------------------------------

    def _error_detail(self, response: Any) -> str:
        """The registry's reason for an error answer (its errors[].code: message, else its text), redacted, short."""
        if response.request is not None and response.request.method == "HEAD":
            return ""
        length = content_length(response)
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
            return (
                "the credentials were accepted, but this account may not list the registry's catalog (scope registry:catalog:*); "
                "list the images from the NGC API (source=ngc) or use an account that may read the catalog"
            )
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

    def _auth_error(
        self,
        status: int,
        repository: str | None,
        scope: str | None,
        detail: str,
        url: str,
        challenge_error: str | None = None,
    ) -> AuthError:
        target = (
            f" for {repository}"
            if repository
            else (" for the catalog" if (scope or "").startswith("registry:catalog:") else "")
        )
        hint = self._auth_hint(status, scope, challenge_error)
        if target == " for the catalog" and "catalog" not in hint:
            hint += "; if they are right, this account may not list the catalog: list the images from the NGC API (source=ngc)"
        message = f"{status} from {self.host}{target}: {hint}"
        if detail:
            message += f" ({detail})"
        return AuthError(message, status=status, url=strip_query(url))

    # -- tokens and challenges ---------------------------------------------------------------

    def _token_get(self, url: str, params: Any = None, auth: Any = None) -> Any:
        """GET from a token service through the shared retry loop (Retry-After honoured; a 429/5xx that outlasts the
        retries is raised naming the status and the attempts); requests drops Basic credentials on a cross-host redirect."""
        response, _attempts = send_with_retries(
            self._session,
            "GET",
            url,
            policy=self._policy,
            sleep=self._sleep,
            what="a registry token",
            error=RegistryError,
            secrets=(self._password,),
            params=params,
            auth=auth or no_netrc,
            headers={"User-Agent": USER_AGENT},
            timeout=self.timeout,
            verify=self._verify,
        )
        return response

    def _fetch_token(self, realm: str, service: str, scope: str) -> Token:
        return fetch_token(
            self._token_get, realm, service, scope, self.username, self._password, clock=self._tokens.clock
        )

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

    def _answer_challenge(
        self, response: Any, scope: str | None, sent: Optional[_SentAuth], repository: str | None
    ) -> _SentAuth:
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


class _RequestCredentials:
    """The credentials of one request (``_http.Credentials``): what earlier challenges taught, renewed once on a 401."""

    def __init__(self, auth: RegistryAuth, scope: str | None, repository: str | None, url: str) -> None:
        self._auth = auth
        self._scope = scope
        self._repository = repository
        self._url = url
        self._sent: Optional[_SentAuth] = None
        self._next: Optional[_SentAuth] = None

    def authorization(self) -> str | None:
        self._sent = self._next or self._auth._current_auth(self._scope, self._repository, self._url)
        self._next = None
        return self._sent.header if self._sent is not None else None

    def answer(self, response: Any) -> None:
        self._next = self._auth._answer_challenge(response, self._scope, self._sent, self._repository)
