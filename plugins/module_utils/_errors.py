# Copyright (c) airgap.ngc contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private: exception types shared by the module_utils. Not a public API."""
from __future__ import annotations


class AirgapError(Exception):
    """An error a person can act on; str(error) is the one-line message for fail_json."""


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

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status
