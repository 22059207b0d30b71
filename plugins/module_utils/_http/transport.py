# Copyright (c) airgap.ngc contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private: one HTTP transport with TLS settings, User-Agent, retries and backoff. Not a public API.

The retry rules shared by the registry client, the NGC client and the token fetches
(``RetryPolicy``: 408, 429, 502, 503, 504 and connection errors are retried with exponential
backoff capped at ``MAX_BACKOFF`` seconds a wait, and a ``Retry-After`` header, seconds or an
HTTP date, is honoured up to ``MAX_RETRY_AFTER``), the defaults of every HTTP client here
(timeout, retries, backoff, pool size), the one retrying send loop (``send_with_retries``: it
also answers a 401 challenge once for a caller that gives ``Credentials``, and turns every
failure of requests, urllib3 or ssl into a one-line error naming the host), and the plain
transport the NGC client sends through. Nothing here logs a header or a body, so credentials
cannot leak through it.

Every session reads the proxy environment (``HTTP_PROXY``, ``HTTPS_PROXY``, ``ALL_PROXY``,
``NO_PROXY``) and ``REQUESTS_CA_BUNDLE``/``CURL_CA_BUNDLE`` once per scheme and host, not on every
request as a plain requests session does (``EnvironmentOnceSession``).
"""

from __future__ import annotations

import email.utils
import os
import random
import ssl
import threading
import time
import traceback
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable, Iterable, Optional, Protocol, Tuple, Union
from urllib.parse import urlsplit

from ansible_collections.airgap.ngc.plugins.module_utils._types.errors import (
    AirgapError,
    RegistryError,
    answer_reason,
    exception_reason,
    redact,
    status_message,
)
from ansible_collections.airgap.ngc.plugins.module_utils._types.version import USER_AGENT

try:
    import requests
    import urllib3
    from requests.adapters import HTTPAdapter
    from requests.sessions import merge_setting
    from requests.utils import get_environ_proxies
except ImportError:
    REQUESTS_IMPORT_ERROR: str | None = traceback.format_exc()
    HAS_REQUESTS = False
else:
    REQUESTS_IMPORT_ERROR = None
    HAS_REQUESTS = True

RETRY_STATUSES = frozenset((408, 429, 502, 503, 504))
DEFAULT_TIMEOUT = 60.0
DEFAULT_RETRIES = 5
DEFAULT_BACKOFF = 1.0
"""Seconds of the first wait before a retry when the server gave no Retry-After; doubled each time."""
MAX_BACKOFF = 4.0
"""Longest wait between two attempts when the server gave no Retry-After (a storm is ridden out in seconds, not minutes)."""
MAX_RETRY_AFTER = 300.0
"""Longest wait a server's Retry-After is followed for."""
DEFAULT_RETRY_BUDGET = 300.0
"""Seconds one request may spend waiting between attempts when no count of retries is given: a storm of
429/503 answers or a short outage is ridden out, a registry that stays down fails the request in minutes."""
DEFAULT_POOL_SIZE = 16
MAX_ERROR_BODY = 65536
"""Error answers longer than this are not read for a reason."""

_NOT_HTTPS_MARKERS = (
    "wrong version number",
    "record layer failure",
    "http request",
    "packet length too long",
    "unknown protocol",
)
TRANSIENT_EXCEPTIONS: Tuple[type[BaseException], ...] = (
    (requests.exceptions.ConnectionError, requests.exceptions.Timeout, requests.exceptions.ChunkedEncodingError)
    if HAS_REQUESTS
    else ()
)
"""A connection that broke, timed out or ended mid-answer: worth another attempt."""


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta seconds or an HTTP date), or None if absent or unreadable."""
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    if text.isdigit():
        return float(int(text))
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    current = now or datetime.now(timezone.utc)
    return max(0.0, (when - current).total_seconds())


@dataclass
class RetryPolicy:
    """How often and how long to wait: exponential backoff with jitter (capped), or what Retry-After asks (capped).

    With a count of ``retries`` a request is tried that many times again; with ``retries=None`` it is
    tried again for as long as its waits add up to at most ``budget`` seconds (a time budget, not a count).
    """

    retries: Optional[int] = DEFAULT_RETRIES
    backoff: float = DEFAULT_BACKOFF
    max_retry_after: float = MAX_RETRY_AFTER
    max_backoff: float = MAX_BACKOFF
    budget: float = DEFAULT_RETRY_BUDGET

    def allows(self, failures: int, waited: float, delay: float) -> bool:
        """Whether another attempt may follow ``failures`` failed ones, having waited ``waited`` s and now waiting ``delay`` s."""
        if self.retries is not None:
            return failures <= self.retries
        return waited + budgeted(delay) <= self.budget

    def backoff_delay(self, attempt: int) -> float:
        """Seconds before retry ``attempt`` (0-based) when the server gave no hint."""
        delay = min(self.backoff * (2 ** min(attempt, 32)), self.max_backoff)
        return delay * (0.5 + random.random() / 2)  # nosec B311 - jitter, not cryptography

    def retry_delay(self, response: Any, attempt: int) -> float:
        """Seconds before retrying after ``response`` (429/5xx): its Retry-After, else the backoff."""
        delay = parse_retry_after(response.headers.get("Retry-After"))
        if delay is None:
            return self.backoff_delay(attempt)
        return min(delay, self.max_retry_after)


MIN_BUDGETED_WAIT = 0.1
"""What a wait shorter than this (a ``Retry-After: 0``) counts against a retry budget, so that the budget ends."""


def budgeted(delay: float) -> float:
    """The seconds a wait of ``delay`` counts against a ``RetryPolicy.budget``."""
    return max(delay, MIN_BUDGETED_WAIT)


def host_of(url: str) -> str:
    """``https://user@nvcr.io:443/v2/`` -> ``nvcr.io:443`` (no user info); for messages and origin checks."""
    try:
        return urlsplit(url).netloc.rpartition("@")[2] or url
    except ValueError:
        return url


def strip_query(url: str) -> str:
    """url without its query string and fragment (signed URLs and upload states stay out of messages)."""
    return url.split("?", 1)[0].split("#", 1)[0]


def content_length(response: Any) -> int | None:
    """The Content-Length of a response as a number, or None if it has none (or not a number)."""
    value = response.headers.get("Content-Length")
    if value is None or not value.strip().isdigit():
        return None
    return int(value)


def no_netrc(request: Any) -> Any:
    """A requests auth hook that changes nothing: it stops requests from adding ~/.netrc credentials over ours."""
    return request


def verify_setting(validate_certs: bool, ca_path: str | None) -> Union[bool, str]:
    """The ``verify`` of a requests call: the CA file or directory if given and validating, else the flag."""
    return (ca_path or True) if validate_certs else False


class EnvironmentOnceSession(requests.Session if HAS_REQUESTS else object):  # type: ignore[misc]
    """A requests session that reads the environment's proxy and CA settings once per scheme and host.

    A plain session scans the whole environment on every request (``merge_environment_settings``:
    ``get_environ_proxies`` and the CA bundle variables: 0.1 ms of CPU with 40 variables, 0.4 ms with 190).
    Here the answer is kept per (scheme, host[:port]), which is what ``NO_PROXY`` is matched on, so a
    host that ``NO_PROXY`` names still goes direct while the others go through the proxy. Proxies given
    to a request, or set on the session, still win over the environment. Thread-safe.
    """

    def __init__(self) -> None:
        super().__init__()
        self._environment: dict[tuple[str, str], tuple[dict[str, str], Optional[str]]] = {}
        self._environment_lock = threading.Lock()

    def _environment_of(self, url: str) -> tuple[dict[str, str], Optional[str]]:
        """(the environment's proxies for url's scheme and host, the CA bundle it names), read once per host."""
        parts = urlsplit(url)
        key = (parts.scheme.lower(), parts.netloc.rpartition("@")[2].lower())
        with self._environment_lock:
            known = self._environment.get(key)
        if known is None:
            bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or None
            known = (dict(get_environ_proxies(url)), bundle)
            with self._environment_lock:
                self._environment[key] = known
        return known

    def merge_environment_settings(self, url: Any, proxies: Any, stream: Any, verify: Any, cert: Any) -> dict[str, Any]:
        if not self.trust_env or (proxies and "no_proxy" in proxies):
            return super().merge_environment_settings(url, proxies, stream, verify, cert)
        env_proxies, bundle = self._environment_of(url.decode("utf-8") if isinstance(url, bytes) else str(url))
        merged = dict(proxies or {})
        for scheme, proxy in env_proxies.items():
            merged.setdefault(scheme, proxy)
        if verify is True or verify is None:
            verify = bundle or verify
        return {
            "proxies": merge_setting(merged, self.proxies),
            "stream": merge_setting(stream, self.stream),
            "verify": merge_setting(verify, self.verify),
            "cert": merge_setting(cert, self.cert),
        }


def new_session(validate_certs: bool = True, pool_size: int = DEFAULT_POOL_SIZE) -> Any:
    """A requests session with a connection pool sized for parallel transfers, no retries of its own
    (the callers' RetryPolicy decides), no insecure-request warnings when verification is off, and the
    proxy environment read once per host (``EnvironmentOnceSession``)."""
    session = EnvironmentOnceSession()
    adapter = HTTPAdapter(pool_connections=4, pool_maxsize=max(1, pool_size), max_retries=0)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    if not validate_certs:
        urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
    return session


def ca_file_problem(ca_path: str) -> str | None:
    """Why ca_path cannot serve as the CA bundle (it does not exist, is not PEM certificates...), or None if it can."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        if os.path.isdir(ca_path):
            context.load_verify_locations(capath=ca_path)
            return None
        if not os.path.exists(ca_path):
            return "no such file"
        context.load_verify_locations(cafile=ca_path)
    except ssl.SSLError as exc:
        return f"not a file of PEM CA certificates ({exception_reason(exc)})"
    except (OSError, ValueError) as exc:
        return f"cannot be read ({exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__})"
    return None


def _for(what: str) -> str:
    return f" for {what}" if what else ""


def tls_error_message(exc: BaseException, host: str, verify: Union[bool, str], what: str = "") -> str:
    """One line for a failed TLS handshake with host: a bad CA file, a certificate nobody vouches for, or no HTTPS at all."""
    if isinstance(verify, str):
        problem = ca_file_problem(verify)
        if problem:
            return f"cannot check the certificate of {host}{_for(what)} against the CA file {verify} given as ca_path: {problem}"
    reason = exception_reason(exc)
    lowered = reason.lower()
    if any(marker in lowered for marker in _NOT_HTTPS_MARKERS):
        hint = "the server does not speak HTTPS; use an http:// URL if it is a plain-HTTP server"
    elif "certificate" in lowered or "certificate" in str(exc).lower():
        if isinstance(verify, str):
            hint = f"the CA file {verify} given as ca_path did not sign its certificate; give the CA bundle that did"
        else:
            hint = "set ca_path to the CA bundle that signed its certificate, or validate_certs=false for a test server"
    else:
        hint = "check that the server speaks HTTPS at this address"
    return f"TLS error talking to {host}{_for(what)}: {reason}; {hint}"


def reason_of(response: Any, secrets: Iterable[Optional[str]] = ()) -> str:
    """The server's reason for an error answer (its JSON error, else its text, else the HTTP reason), redacted, one short line."""
    data: Any = None
    text = ""
    method = getattr(getattr(response, "request", None), "method", None)
    length = (getattr(response, "headers", None) or {}).get("Content-Length")
    if method != "HEAD" and not (length and length.strip().isdigit() and int(length) > MAX_ERROR_BODY):
        try:
            body = response.content or b""
        except Exception:  # pylint: disable=broad-except
            # A broken error answer has no reason to give.
            body = b""
        text = body[:MAX_ERROR_BODY].decode("utf-8", "replace")
        try:
            data = response.json() if body else None
        except ValueError:
            data = None
    reason = answer_reason(data, text) or str(getattr(response, "reason", "") or "")
    return redact(reason, secrets)


class Credentials(Protocol):
    """The credentials of one request, for ``send_with_retries``: what to send, and how to answer a 401 challenge."""

    def authorization(self) -> str | None:
        """The Authorization header for the next attempt, or None to send none."""

    def answer(self, response: Any) -> None:
        """Learn from a 401 answer (its WWW-Authenticate) what to send next; raise if nothing better can be sent."""


def send_with_retries(
    session: Any,
    method: str,
    url: str,
    *,
    policy: RetryPolicy,
    sleep: Callable[[float], None] = time.sleep,
    what: str = "",
    error: Callable[..., AirgapError] = RegistryError,
    replayable: bool = True,
    secrets: Tuple[Optional[str], ...] = (),
    credentials: Credentials | None = None,
    reason: Callable[[Any], str] | None = None,
    **kwargs: Any,
) -> Tuple[Any, int]:
    """Send a request with session; retry transient failures; return (response, attempts).

    Connection failures and 408/429/502/503/504 answers are tried again (if replayable: ``data`` must
    be re-sendable) after ``policy``'s wait, honouring Retry-After. The answer returned never has one of
    those statuses: when the attempts run out, ``error`` is raised as ``"503 from <host> for <what> after
    6 attempts: <the server's reason>"`` (the reason read by ``reason``, else by ``reason_of``). Every
    exception of requests, urllib3 or ssl becomes ``error`` (one line naming the host, the secrets
    redacted); other statuses are the caller's to judge.

    With ``credentials``, each attempt sends the Authorization it gives, and the first 401 of a
    replayable request is answered once (``credentials.answer``) and sent again without counting as an
    attempt; a second 401 is returned. Without, the request goes as ``kwargs`` say.
    """
    host = host_of(url)
    plain_url = strip_query(url)
    verify = kwargs.get("verify", getattr(session, "verify", True))
    headers = kwargs.get("headers") or {}
    challenged = False
    attempt = 0
    waited = 0.0
    while True:
        attempt += 1
        tried = f" after {attempt} attempts" if attempt > 1 else ""
        if credentials is not None:
            value = credentials.authorization()
            kwargs["headers"] = {**headers, "Authorization": value} if value else dict(headers)
        try:
            response = session.request(method, url, **kwargs)
        except requests.exceptions.SSLError as exc:
            raise error(redact(tls_error_message(exc, host, verify, what), secrets), url=plain_url) from None
        except TRANSIENT_EXCEPTIONS as exc:
            delay = policy.backoff_delay(attempt - 1)
            if replayable and policy.allows(attempt, waited, delay):
                sleep(delay)
                waited += budgeted(delay)
                continue
            message = f"cannot reach {host}{_for(what)}{tried}: {exception_reason(exc)}; check the URL and the network"
            raise error(redact(message, secrets), url=plain_url) from None
        except requests.exceptions.RequestException as exc:
            message = f"request to {host}{_for(what)} failed: {exception_reason(exc)}"
            raise error(redact(message, secrets), url=plain_url) from None
        except OSError as exc:  # requests checks that a CA path exists before it connects
            if isinstance(verify, str) and ca_file_problem(verify):
                message = tls_error_message(exc, host, verify, what)
            else:
                message = f"request to {host}{_for(what)} failed: {exception_reason(exc)}"
            raise error(redact(message, secrets), url=plain_url) from None
        if response.status_code == 401 and credentials is not None and replayable and not challenged:
            challenged = True
            attempt -= 1  # answering a challenge is not a retry
            try:
                credentials.answer(response)
            finally:
                response.close()
            continue
        if response.status_code not in RETRY_STATUSES:
            return response, attempt
        delay = policy.retry_delay(response, attempt - 1)
        if replayable and policy.allows(attempt, waited, delay):
            response.close()
            sleep(delay)
            waited += budgeted(delay)
            continue
        why = redact(reason(response), secrets) if reason is not None else reason_of(response, secrets)
        response.close()
        raise error(
            status_message(response.status_code, host, what, attempt, why), status=response.status_code, url=plain_url
        )


class HttpTransport:
    """A requests session with this collection's TLS, retry and identity settings."""

    def __init__(
        self,
        validate_certs: bool = True,
        ca_path: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        retries: Optional[int] = DEFAULT_RETRIES,
        backoff: float = DEFAULT_BACKOFF,
        pool_size: int = DEFAULT_POOL_SIZE,
        sleep: Callable[[float], None] = time.sleep,
        retry_budget: float = DEFAULT_RETRY_BUDGET,
    ) -> None:
        if not HAS_REQUESTS:
            raise RuntimeError("the requests library is required")
        self.timeout = timeout
        self.policy = RetryPolicy(
            retries=None if retries is None else max(int(retries), 0),
            backoff=backoff,
            budget=max(0.0, float(retry_budget)),
        )
        self.sleep = sleep
        self.session = new_session(validate_certs, pool_size)
        self.session.headers["User-Agent"] = USER_AGENT
        self.session.verify = verify_setting(validate_certs, ca_path)

    def close(self) -> None:
        self.session.close()

    def send(
        self,
        method: str,
        url: str,
        retry: bool = True,
        what: str = "",
        error: Callable[..., AirgapError] = RegistryError,
        secrets: Tuple[Optional[str], ...] = (),
        **kwargs: Any,
    ) -> Tuple[Any, int]:
        """Send a request through ``send_with_retries``; (response, attempts). ``data`` must be re-sendable to be retried.

        Without ``auth`` no ``~/.netrc`` credentials are added (they would replace a Bearer header given here)."""
        kwargs.setdefault("timeout", self.timeout)
        kwargs.setdefault("allow_redirects", True)
        if kwargs.get("auth") is None:
            kwargs["auth"] = no_netrc
        return send_with_retries(
            self.session,
            method,
            url,
            policy=self.policy,
            sleep=self.sleep,
            what=what,
            error=error,
            replayable=retry,
            secrets=secrets,
            **kwargs,
        )
