# Copyright (c) airgap.ngc contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private: exception types shared by the module_utils, and the helpers that make their messages. Not a public API.

Every message is one line that names the host, and never holds a secret: ``redact`` blanks
the API key, passwords and tokens out of anything a server or a library said, ``shorten``
makes it one short line, ``exception_reason`` boils a requests/urllib3/ssl exception down to
its cause and ``answer_reason`` finds the reason in a server's JSON error answer.
"""

from __future__ import annotations

import errno
import re
from typing import Any, Iterable, Optional

REASON_LIMIT = 200
"""Characters of a server's or a library's reason kept in a message."""

REDACTED = "***"

_CREDENTIAL_RE = re.compile(r"\b(Bearer|Basic|ApiKey)\s+[A-Za-z0-9._~+/=-]+", re.IGNORECASE)
_QUERY_RE = re.compile(r"\?[^\s'\")]*")
_EXCEPTION_REASON_RES = (
    re.compile(r"\[(?:SSL|X509|PEM)[^\]]*\][^'\")(]*"),
    re.compile(r"\[Errno -?\d+\][^'\")]*"),
    re.compile(r"certificate verify failed[^'\")]*"),
    re.compile(r"IncompleteRead\([^)]*\)"),
    re.compile(r"Connection aborted[^'\")]*"),
)
_TIMEOUT_RE = re.compile(
    r"(Read|Connect|Connection to [^\s']+) timed out\.?(?:\s*\((?:read|connect) timeout=([0-9.]+))?"
)
_SSL_FILE_RE = re.compile(r"\s*\(_ssl\.c:\d+\)")


class AirgapError(Exception):
    """An error a person can act on; str(error) is the one-line message for fail_json."""

    echo = False
    """It only echoes another failure (a writer closed by another thread's error): that one is the one to report."""


def no_room(exc: OSError, target: str, directory: str) -> AirgapError | None:
    """The one message of a write that found no room for ``target`` in ``directory`` (its filesystem is full, or a quota
    is used up); None for another error."""
    advice = "free space there and run again (what was already mirrored is kept)"
    if exc.errno == errno.ENOSPC:
        return AirgapError(
            f"disk full: cannot write {target}: no space left on the filesystem of {directory}; {advice}"
        )
    if exc.errno == getattr(errno, "EDQUOT", -1):
        return AirgapError(f"disk quota exceeded: cannot write {target} in {directory}; {advice}")
    return None


def is_echo(exc: BaseException) -> bool:
    """True for an error that only echoes another failure (``AirgapError.echo``)."""
    return isinstance(exc, AirgapError) and exc.echo


class ConfigError(AirgapError):
    """Bad input: an option value, a reference, a regex, a path."""


class RegistryError(AirgapError):
    """A registry answered with an error or could not be reached."""

    def __init__(self, message: str, status: int | None = None, url: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.url = url


class AuthError(RegistryError):
    """Credentials were refused (401/403) or a token could not be obtained."""


class NotFoundError(RegistryError):
    """A repository, tag, manifest or blob does not exist (404)."""


class DigestMismatchError(RegistryError):
    """Content did not hash to the digest it was fetched by."""


class NgcError(AirgapError):
    """The NGC catalog API answered with an error or could not be reached."""

    def __init__(self, message: str, status: int | None = None, url: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.url = url


def redact(text: str, secrets: Iterable[Optional[str]] = (), mask: str = REDACTED) -> str:
    """text with every secret (and any ``Bearer``/``Basic``/``ApiKey`` credential) replaced by ``mask``."""
    for secret in sorted((s for s in secrets if s), key=len, reverse=True):
        text = text.replace(secret, mask)
    return _CREDENTIAL_RE.sub(lambda match: f"{match.group(1)} {mask}", text)


def shorten(text: str, limit: int = REASON_LIMIT) -> str:
    """text on one line (whitespace runs become one space), at most limit characters."""
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 3].rstrip() + "..."


def exception_reason(exc: BaseException) -> str:
    """A one-line reason for a transport exception, without urllib3's ``HTTPSConnectionPool(...)`` wrapping
    or query strings (signed URLs, upload states): ``[SSL: WRONG_VERSION_NUMBER] wrong version number``."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    timed_out = _TIMEOUT_RE.search(text)
    if timed_out:
        kind = "read" if timed_out.group(1) == "Read" else "connect"
        return f"{kind} timed out" + (f" after {timed_out.group(2)} s" if timed_out.group(2) else "")
    for pattern in _EXCEPTION_REASON_RES:
        match = pattern.search(text)
        if match:
            return shorten(_SSL_FILE_RE.sub("", match.group(0)).strip(" .,:"))
    return shorten(_QUERY_RE.sub("", text))


def status_message(status: int, host: str, what: str = "", attempts: int = 1, reason: str = "") -> str:
    """``503 from <host> for <what> after 6 attempts: <reason>``, the shape of every failed answer's message."""
    target = f" for {what}" if what else ""
    tried = f" after {attempts} attempts" if attempts > 1 else ""
    return f"{status} from {host}{target}{tried}" + (f": {reason}" if reason else "")


def answer_reason(data: Any, text: str = "") -> str:
    """The reason a server gave in an error answer: NGC's ``requestStatus.statusDescription``, a registry's
    ``errors[].code: message``, a token service's ``details``/``error_description``..., else text. Not redacted."""
    if isinstance(data, dict):
        status = data.get("requestStatus")
        if isinstance(status, dict):
            for key in ("statusDescription", "statusCode"):
                if isinstance(status.get(key), str) and status[key]:
                    return shorten(status[key])
        errors = data.get("errors")
        if isinstance(errors, list) and errors:
            parts = []
            for error in errors[:3]:
                if isinstance(error, dict):
                    parts.append(": ".join(str(x) for x in (error.get("code"), error.get("message")) if x))
                elif isinstance(error, str):
                    parts.append(error)
            if any(parts):
                return shorten("; ".join(p for p in parts if p))
        for key in ("details", "detail", "error_description", "message", "error"):
            value = data.get(key)
            if isinstance(value, str) and value:
                return shorten(value)
    return shorten(text)
