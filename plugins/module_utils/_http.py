# Copyright (c) airgap.ngc contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private: one HTTP transport with TLS settings, User-Agent, retries and backoff. Not a public API.

Both the registry client and the NGC client send through ``HttpTransport.send``: 429, 502,
503, 504 and connection errors are retried with exponential backoff, and a ``Retry-After``
header (seconds or an HTTP date) is honoured. Nothing here logs a header or a body, so
credentials cannot leak through it.
"""
from __future__ import annotations

import email.utils
import time
import traceback
from typing import Any, Callable
from urllib.parse import urlsplit

from ansible_collections.airgap.ngc.plugins.module_utils._errors import RegistryError
from ansible_collections.airgap.ngc.plugins.module_utils._version import USER_AGENT

try:
    import requests
    from requests.adapters import HTTPAdapter
except ImportError:
    REQUESTS_IMPORT_ERROR: str | None = traceback.format_exc()
    HAS_REQUESTS = False
else:
    REQUESTS_IMPORT_ERROR = None
    HAS_REQUESTS = True

RETRY_STATUSES = frozenset((429, 502, 503, 504))
MAX_RETRY_AFTER = 300.0


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` value (delta seconds or HTTP date), None if absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return min(float(value), MAX_RETRY_AFTER)
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if moment is None:
        return None
    current = time.time() if now is None else now
    return min(max(moment.timestamp() - current, 0.0), MAX_RETRY_AFTER)


def host_of(url: str) -> str:
    """``https://nvcr.io:443/v2/`` -> ``nvcr.io:443``; for messages and same-origin checks."""
    return urlsplit(url).netloc


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
        self.retries = max(int(retries), 0)
        self.backoff = backoff
        self.sleep = sleep
        self.session = requests.Session()
        self.session.headers["User-Agent"] = USER_AGENT
        self.session.verify = ca_path if (validate_certs and ca_path) else bool(validate_certs)
        self.session.trust_env = True
        adapter = HTTPAdapter(pool_connections=pool_size, pool_maxsize=pool_size, max_retries=0)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        if not validate_certs:
            try:
                import urllib3  # pylint: disable=import-outside-toplevel

                urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
            except ImportError:
                pass

    def close(self) -> None:
        self.session.close()

    def delay(self, attempt: int, response: Any = None) -> float:
        """How long to wait before retry number ``attempt`` (1-based)."""
        if response is not None:
            hinted = retry_after_seconds(response.headers.get("Retry-After"))
            if hinted is not None:
                return hinted
        return min(self.backoff * (2 ** (attempt - 1)), 60.0)

    def send(self, method: str, url: str, retry: bool = True, **kwargs: Any) -> Any:
        """Send a request; retry transient failures. ``data`` must be re-sendable to be retried."""
        kwargs.setdefault("timeout", self.timeout)
        kwargs.setdefault("allow_redirects", True)
        attempts = self.retries + 1 if retry else 1
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
                self.sleep(self.delay(attempt))
                continue
            if response.status_code in RETRY_STATUSES and attempt < attempts:
                wait = self.delay(attempt, response)
                response.close()
                self.sleep(wait)
                continue
            return response
        raise AssertionError("unreachable")  # pragma: no cover
