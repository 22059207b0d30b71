# Copyright (c) airgap.ngc contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private: one HTTP transport with TLS settings, User-Agent, retries and backoff. Not a public API.

The retry rules shared by the registry client and the NGC client (``RetryPolicy``: 408, 429,
502, 503, 504 and connection errors are retried with exponential backoff, and a
``Retry-After`` header, seconds or an HTTP date, is honoured), and the plain transport the
NGC client sends through. Nothing here logs a header or a body, so credentials cannot leak
through it.
"""
from __future__ import annotations

import email.utils
import random
import time
import traceback
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable
from urllib.parse import urlsplit

from ansible_collections.airgap.ngc.plugins.module_utils._errors import RegistryError
from ansible_collections.airgap.ngc.plugins.module_utils._version import USER_AGENT

try:
    import requests
    import urllib3
    from requests.adapters import HTTPAdapter
except ImportError:
    REQUESTS_IMPORT_ERROR: str | None = traceback.format_exc()
    HAS_REQUESTS = False
else:
    REQUESTS_IMPORT_ERROR = None
    HAS_REQUESTS = True

RETRY_STATUSES = frozenset((408, 429, 502, 503, 504))
MAX_BACKOFF = 60.0
MAX_RETRY_AFTER = 300.0


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
    """How often and how long to wait: exponential backoff with jitter, or what Retry-After asks (capped)."""

    retries: int = 5
    backoff: float = 1.0
    max_retry_after: float = MAX_RETRY_AFTER

    def backoff_delay(self, attempt: int) -> float:
        """Seconds before retry ``attempt`` (0-based) when the server gave no hint."""
        delay = min(self.backoff * (2 ** attempt), MAX_BACKOFF)
        return delay * (0.5 + random.random() / 2)  # nosec B311 - jitter, not cryptography

    def retry_delay(self, response: Any, attempt: int) -> float:
        """Seconds before retrying after ``response`` (429/5xx): its Retry-After, else the backoff."""
        delay = parse_retry_after(response.headers.get("Retry-After"))
        if delay is None:
            return self.backoff_delay(attempt)
        return min(delay, self.max_retry_after)


def host_of(url: str) -> str:
    """``https://user@nvcr.io:443/v2/`` -> ``nvcr.io:443`` (no user info); for messages and origin checks."""
    try:
        return urlsplit(url).netloc.rpartition("@")[2] or url
    except ValueError:
        return url


def new_session(validate_certs: bool = True, pool_size: int = 16) -> Any:
    """A requests session with a connection pool sized for parallel transfers, no retries of its own
    (the callers' RetryPolicy decides), and no insecure-request warnings when verification is off."""
    session = requests.Session()
    adapter = HTTPAdapter(pool_connections=4, pool_maxsize=max(1, pool_size), max_retries=0)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    if not validate_certs:
        urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
    return session


class HttpTransport:
    """A requests session with this collection's TLS, retry and identity settings."""

    def __init__(
        self,
        validate_certs: bool = True,
        ca_path: str | None = None,
        timeout: float = 60.0,
        retries: int = 5,
        backoff: float = 1.0,
        pool_size: int = 16,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not HAS_REQUESTS:
            raise RuntimeError("the requests library is required")
        self.timeout = timeout
        self.policy = RetryPolicy(retries=max(int(retries), 0), backoff=backoff)
        self.sleep = sleep
        self.session = new_session(validate_certs, pool_size)
        self.session.headers["User-Agent"] = USER_AGENT
        self.session.verify = ca_path if (validate_certs and ca_path) else bool(validate_certs)

    def close(self) -> None:
        self.session.close()

    def send(self, method: str, url: str, retry: bool = True, **kwargs: Any) -> Any:
        """Send a request; retry transient failures. ``data`` must be re-sendable to be retried."""
        kwargs.setdefault("timeout", self.timeout)
        kwargs.setdefault("allow_redirects", True)
        attempts = self.policy.retries + 1 if retry else 1
        for attempt in range(1, attempts + 1):
            try:
                response = self.session.request(method, url, **kwargs)
            except requests.exceptions.SSLError:
                raise RegistryError(f"TLS verification failed for {host_of(url)}: set ca_path to the CA that signed its certificate, or validate_certs=false",
                                    url=url) from None
            except (requests.ConnectionError, requests.Timeout) as exc:
                if attempt >= attempts:
                    raise RegistryError(f"cannot reach {host_of(url)} ({type(exc).__name__}) after {attempt} attempt(s): check the URL and the network",
                                        url=url) from None
                self.sleep(self.policy.backoff_delay(attempt - 1))
                continue
            if response.status_code in RETRY_STATUSES and attempt < attempts:
                wait = self.policy.retry_delay(response, attempt - 1)
                response.close()
                self.sleep(wait)
                continue
            return response
        raise AssertionError("unreachable")  # pragma: no cover
