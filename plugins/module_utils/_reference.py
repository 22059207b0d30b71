# Copyright (c) airgap.ngc contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private: parse and print image references (host/name:tag@digest). Not a public API."""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from ansible_collections.airgap.ngc.plugins.module_utils._errors import ConfigError

# The grammar of github.com/distribution/reference, restricted to what registries accept.
_PATH_COMPONENT = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*"
_PATH_COMPONENT_RE = re.compile(rf"^{_PATH_COMPONENT}$")
_TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_DIGEST_HEX_LENGTHS = {"sha256": 64, "sha512": 128}
_DIGEST_RE = re.compile(r"^(sha256|sha512):([0-9a-f]+)$")
_DOMAIN_COMPONENT = r"(?:[A-Za-z0-9]|[A-Za-z0-9][A-Za-z0-9-]*[A-Za-z0-9])"
_HOST_RE = re.compile(rf"^(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[0-9A-Fa-f:.]+\])(?::[0-9]{{1,5}})?$")
_NAME_MAX_LENGTH = 255

DEFAULT_TAG = "latest"


def is_digest(value: str | None) -> bool:
    """True if value is a well-formed content digest such as sha256:<64 hex digits>."""
    if not value:
        return False
    match = _DIGEST_RE.match(value)
    return bool(match) and len(match.group(2)) == _DIGEST_HEX_LENGTHS[match.group(1)]


def validate_digest(value: str, context: str | None = None) -> str:
    """Return value if it is a well-formed digest, else raise ConfigError."""
    if not isinstance(value, str) or not is_digest(value):
        where = f" in {context!r}" if context else ""
        raise ConfigError(f"invalid digest {value!r}{where}: expected sha256: followed by 64 lower-case hex digits")
    return value


def validate_repository(name: str, context: str | None = None) -> str:
    """Return name if it is a valid repository path (org/name or org/team/name), else raise ConfigError."""
    shown = context if context is not None else name
    if not isinstance(name, str) or not name:
        raise ConfigError(f"invalid image reference {shown!r}: the repository name is empty")
    if len(name) > _NAME_MAX_LENGTH:
        raise ConfigError(f"invalid image reference {shown!r}: the repository name is longer than {_NAME_MAX_LENGTH} characters")
    for component in name.split("/"):
        if not component:
            raise ConfigError(f"invalid image reference {shown!r}: empty path component in {name!r}")
        if not _PATH_COMPONENT_RE.match(component):
            raise ConfigError(
                f"invalid image reference {shown!r}: path component {component!r} must be lower-case letters and digits, "
                "optionally separated by '.', '_', '__' or '-'"
            )
    return name


def validate_tag(tag: str, context: str | None = None) -> str:
    """Return tag if it is a valid tag, else raise ConfigError."""
    shown = context if context is not None else tag
    if not isinstance(tag, str) or not _TAG_RE.match(tag):
        raise ConfigError(
            f"invalid image reference {shown!r}: tag {tag!r} must be 1-128 letters, digits, '_', '.' or '-', not starting with '.' or '-'"
        )
    return tag


def _looks_like_registry(component: str) -> bool:
    """Docker's rule: the first path component is a registry host if it has '.', ':', upper case, or is localhost."""
    return "." in component or ":" in component or component == "localhost" or component.lower() != component


def registry_host(value: str) -> str:
    """Return the host[:port] of a registry given as a URL (https://nvcr.io/), a host (nvcr.io) or host:port."""
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"invalid registry {value!r}: expected a host such as nvcr.io or a URL such as https://nvcr.io")
    text = value.strip()
    if "://" in text:
        parts = urlsplit(text)
        host = parts.netloc.rpartition("@")[2]
        if parts.scheme not in ("http", "https"):
            raise ConfigError(f"invalid registry {value!r}: the URL scheme must be http or https")
    else:
        host = text.split("/", 1)[0]
    if not host or not _HOST_RE.match(host):
        raise ConfigError(f"invalid registry {value!r}: expected a host such as nvcr.io or a URL such as https://nvcr.io")
    return host


def registry_url(value: str, default_scheme: str = "https") -> str:
    """Return scheme://host[:port] for a registry given as a URL or a bare host (which gets default_scheme)."""
    host = registry_host(value)
    text = value.strip()
    scheme = urlsplit(text).scheme if "://" in text else default_scheme
    if scheme not in ("http", "https"):
        raise ConfigError(f"invalid registry {value!r}: the URL scheme must be http or https")
    return f"{scheme}://{host}"


@dataclass(frozen=True)
class ImageReference:
    """An image reference: [registry/]repository[:tag][@digest]."""

    registry: str | None
    repository: str
    tag: str | None = None
    digest: str | None = None

    @classmethod
    def parse(cls, text: str, default_registry: str | None = None) -> ImageReference:
        """Parse text such as nvcr.io/nvidia/pytorch:24.01-py3 or nvidia/clara/clara-parabricks@sha256:...

        A reference without a registry host gets default_registry (a host or URL), or None.
        """
        if not isinstance(text, str):
            raise ConfigError(f"invalid image reference {text!r}: expected a string")
        original = text
        text = text.strip()
        if not text:
            raise ConfigError(f"invalid image reference {original!r}: it is empty")
        if any(char.isspace() for char in text):
            raise ConfigError(f"invalid image reference {original!r}: it contains white space")

        digest = None
        if "@" in text:
            text, digest = text.split("@", 1)
            if not is_digest(digest):
                raise ConfigError(
                    f"invalid image reference {original!r}: digest {digest!r} must be sha256: followed by 64 lower-case hex digits"
                )

        registry = None
        first, sep, rest = text.partition("/")
        if sep and _looks_like_registry(first):
            if not _HOST_RE.match(first):
                raise ConfigError(f"invalid image reference {original!r}: {first!r} is not a valid registry host[:port]")
            registry = first
            text = rest

        tag = None
        last_slash = text.rfind("/")
        colon = text.rfind(":")
        if colon > last_slash:
            text, tag = text[:colon], text[colon + 1:]
            validate_tag(tag, original)

        validate_repository(text, original)
        if registry is None and default_registry:
            registry = registry_host(default_registry)
        return cls(registry=registry, repository=text, tag=tag, digest=digest)

    def __str__(self) -> str:
        text = f"{self.registry}/{self.repository}" if self.registry else self.repository
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text

    @property
    def name(self) -> str:
        """registry/repository without tag or digest (just the repository if there is no registry)."""
        return f"{self.registry}/{self.repository}" if self.registry else self.repository

    @property
    def manifest_reference(self) -> str:
        """What to ask the registry's manifests endpoint for: the digest if known, else the tag, else latest."""
        return self.digest or self.tag or DEFAULT_TAG

    @property
    def org(self) -> str | None:
        """The NGC org (first path component) of a two- or three-part name, else None."""
        parts = self.repository.split("/")
        return parts[0] if len(parts) >= 2 else None

    @property
    def team(self) -> str | None:
        """The NGC team of a three-part name (nvidia/<team>/<name>), else None."""
        parts = self.repository.split("/")
        return parts[1] if len(parts) == 3 else None

    @property
    def image(self) -> str:
        """The last path component: pytorch for nvidia/pytorch."""
        return self.repository.rsplit("/", 1)[-1]

    def with_registry(self, registry: str | None) -> ImageReference:
        """A copy with another registry host (given as a host or URL), or None for none."""
        return dataclasses.replace(self, registry=registry_host(registry) if registry else None)

    def with_tag(self, tag: str | None) -> ImageReference:
        """A copy with another tag (or None)."""
        if tag is not None:
            validate_tag(tag, f"{self.name}:{tag}")
        return dataclasses.replace(self, tag=tag)

    def with_digest(self, digest: str | None) -> ImageReference:
        """A copy with another digest (or None)."""
        if digest is not None:
            validate_digest(digest, f"{self.name}@{digest}")
        return dataclasses.replace(self, digest=digest)


def parse_reference(text: str, default_registry: str | None = None) -> ImageReference:
    """Shorthand for ImageReference.parse."""
    return ImageReference.parse(text, default_registry)
