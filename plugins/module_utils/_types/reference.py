# Copyright (c) airgap.ngc contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private: parse and print image references (host/name:tag@digest). Not a public API."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from ansible_collections.airgap.ngc.plugins.module_utils._types.errors import ConfigError

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
MAX_PORT = 65535


def _invalid(what: str, value: object, detail: str, option: str | None = None) -> ConfigError:
    """``invalid <what> <value> [in <option>]: <detail>``, the one shape of every message here."""
    where = f" in {option}" if option else ""
    return ConfigError(f"invalid {what} {value!r}{where}: {detail}")


def redact_url(value: str) -> str:
    """value with whatever precedes the last '@' of a URL or host (user:password@) replaced by ``***``."""
    if not isinstance(value, str) or "@" not in value:
        return value
    scheme, sep = value.partition("://")[:2]
    host = value.rpartition("@")[2]
    return f"{scheme}://***@{host}" if sep else f"***@{host}"


def valid_host(text: str) -> bool:
    """True if text is a registry host[:port] (a DNS name, an IPv4 address or a bracketed IPv6 one; port 1-65535)."""
    if not isinstance(text, str) or not _HOST_RE.match(text):
        return False
    port = text.rpartition(":")[2] if not text.endswith("]") and ":" in text else ""
    return not port or 1 <= int(port) <= MAX_PORT


def is_digest(value: object) -> bool:
    """True if value is a well-formed content digest such as sha256:<64 hex digits>."""
    if not isinstance(value, str) or not value:
        return False
    match = _DIGEST_RE.match(value)
    return match is not None and len(match.group(2)) == _DIGEST_HEX_LENGTHS[match.group(1)]


def _digest_problem(value: str) -> str:
    """Why what follows the '@' of a reference is not a digest."""
    if value == "":
        return "nothing follows the '@': give sha256: followed by 64 lower-case hex digits, or leave the '@' out"
    return f"digest {value!r} must be sha256: followed by 64 lower-case hex digits"


def validate_digest(value: str, context: str | None = None, *, option: str | None = None) -> str:
    """Return value if it is a well-formed digest, else raise ConfigError (naming ``option`` if given)."""
    if not isinstance(value, str) or not is_digest(value):
        where = f" in {option}" if option else f" in {context!r}" if context else ""
        raise ConfigError(f"invalid digest {value!r}{where}: expected sha256: followed by 64 lower-case hex digits")
    return value


def _component_problem(component: str, name: str) -> str | None:
    """Why one path component of a repository name is wrong, or None."""
    if not component:
        return f"empty path component in {name!r}"
    if _PATH_COMPONENT_RE.match(component):
        return None
    if any(char.isspace() or not char.isprintable() for char in component):
        return f"path component {component!r} holds white space or a control character"
    if ":" in component:
        return (
            f"path component {component!r} holds a ':': a tag goes at the end (name:tag), "
            "and a port only right after the registry host"
        )
    if _PATH_COMPONENT_RE.match(component.lower()):
        return f"path component {component!r} must be lower case"
    return (
        f"path component {component!r} must be lower-case letters and digits, "
        "optionally separated by '.', '_', '__' or '-'"
    )


def path_component_problem(component: str) -> str | None:
    """Why text is not one path component of a repository name (such as an NGC org or team), or None."""
    return _component_problem(component, component)


def _repository_problem(name: object) -> str | None:
    """Why a repository path is wrong, or None."""
    if not isinstance(name, str) or not name:
        return "the repository name is empty"
    if len(name) > _NAME_MAX_LENGTH:
        return f"the repository name is longer than {_NAME_MAX_LENGTH} characters"
    for component in name.split("/"):
        problem = _component_problem(component, name)
        if problem:
            return problem
    return None


def validate_repository(name: str, context: str | None = None, *, option: str | None = None) -> str:
    """Return name if it is a valid repository path (org/name or org/team/name), else raise ConfigError."""
    problem = _repository_problem(name)
    if problem:
        raise _invalid("image reference", context if context is not None else name, problem, option)
    return name


def validate_namespace(value: str, option: str | None = None) -> str:
    """value without surrounding '/' if it is a valid namespace (one or more path components), else raise ConfigError."""
    if not isinstance(value, str) or not value.strip("/"):
        raise _invalid("namespace", value, "it is empty: give path components such as mirror or site/ngc", option)
    name = value.strip("/")
    problem = _repository_problem(name)
    if problem:
        raise _invalid("namespace", value, problem, option)
    return name


def _tag_problem(tag: object) -> str | None:
    """Why a tag is wrong, or None."""
    if not isinstance(tag, str):
        return f"tag {tag!r} must be a string"
    if _TAG_RE.match(tag):
        return None
    if tag == "":
        return "tag '' is empty: give one after the ':' or leave the ':' out"
    if len(tag) > 128:
        return f"tag {tag[:20] + '...'!r} is longer than 128 characters"
    if tag[0] in ".-":
        return f"tag {tag!r} must not start with '.' or '-'"
    bad = next((char for char in tag if not (char.isascii() and (char.isalnum() or char in "_.-"))), "?")
    return f"tag {tag!r} holds {bad!r}: a tag is 1-128 letters, digits, '_', '.' or '-'"


def validate_tag(tag: str, context: str | None = None, *, option: str | None = None) -> str:
    """Return tag if it is a valid tag, else raise ConfigError."""
    problem = _tag_problem(tag)
    if problem:
        raise _invalid("image reference", context if context is not None else tag, problem, option)
    return tag


def _looks_like_registry(component: str) -> bool:
    """Docker's rule: the first path component is a registry host if it has '.', ':', upper case, or is localhost."""
    return "." in component or ":" in component or component == "localhost" or component.lower() != component


_REGISTRY_EXAMPLES = "expected a host such as nvcr.io or a URL such as https://nvcr.io"


def registry_host(value: str, *, option: str | None = None) -> str:
    """Return the host[:port] of a registry given as a URL (https://nvcr.io/), a host (nvcr.io) or host:port.

    Messages name ``option`` if given, and never show what precedes an '@' (user:password).
    """
    shown = redact_url(value)
    if not isinstance(value, str) or not value.strip():
        raise _invalid("registry", shown, _REGISTRY_EXAMPLES, option)
    text = value.strip()
    if "://" in text:
        try:
            parts = urlsplit(text)
        except ValueError:
            raise _invalid("registry", shown, _REGISTRY_EXAMPLES, option) from None
        host = parts.netloc.rpartition("@")[2]
        if parts.scheme not in ("http", "https"):
            raise _invalid("registry", shown, "the URL scheme must be http or https", option)
    else:
        host = text.split("/", 1)[0]
    if host and _HOST_RE.match(host) and not valid_host(host):
        raise _invalid("registry", shown, f"the port of {host!r} must be a number from 1 to {MAX_PORT}", option)
    if not host or not valid_host(host):
        raise _invalid("registry", shown, _REGISTRY_EXAMPLES, option)
    return host


def registry_url(value: str, default_scheme: str = "https", *, option: str | None = None) -> str:
    """Return scheme://host[:port] for a registry given as a URL or a bare host (which gets default_scheme)."""
    host = registry_host(value, option=option)
    text = value.strip()
    scheme = urlsplit(text).scheme if "://" in text else default_scheme
    if scheme not in ("http", "https"):
        raise _invalid("registry", redact_url(value), "the URL scheme must be http or https", option)
    return f"{scheme}://{host}"


@dataclass(frozen=True)
class ImageReference:
    """An image reference: [registry/]repository[:tag][@digest]."""

    registry: str | None
    repository: str
    tag: str | None = None
    digest: str | None = None

    @classmethod
    def parse(cls, text: str, default_registry: str | None = None, *, option: str | None = None) -> ImageReference:
        """Parse text such as nvcr.io/nvidia/pytorch:24.01-py3 or nvidia/clara/clara-parabricks@sha256:...

        A reference without a registry host gets default_registry (a host or URL), or None.
        A ConfigError names ``option`` (the option the text came from, such as ``docker.tag_as``) if given,
        and the part of the reference that is wrong.
        """
        if not isinstance(text, str):
            raise _invalid("image reference", text, "expected a string", option)
        original = text
        text = text.strip()
        if not text:
            raise _invalid("image reference", original, "it is empty", option)
        if any(char.isspace() or not char.isprintable() for char in text):
            raise _invalid("image reference", original, "it contains white space or a control character", option)

        digest = None
        if "@" in text:
            text, digest = text.split("@", 1)
            if not is_digest(digest):
                raise _invalid("image reference", original, _digest_problem(digest), option)

        registry = None
        first, sep, rest = text.partition("/")
        if sep and _looks_like_registry(first):
            if not valid_host(first):
                raise _invalid("image reference", original, f"{first!r} is not a valid registry host[:port]", option)
            registry = first
            text = rest

        tag = None
        last_slash = text.rfind("/")
        colon = text.rfind(":")
        if colon > last_slash:
            text, tag = text[:colon], text[colon + 1 :]
            last = text[last_slash + 1 :]
            if ":" in last:
                detail = f"more than one ':' in {last + ':' + tag!r}: a reference has one tag, as name:tag"
                raise _invalid("image reference", original, detail, option)
            validate_tag(tag, original, option=option)

        validate_repository(text, original, option=option)
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


def parse_reference(text: str, default_registry: str | None = None, *, option: str | None = None) -> ImageReference:
    """Shorthand for ImageReference.parse."""
    return ImageReference.parse(text, default_registry, option=option)
