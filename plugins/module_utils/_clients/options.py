# Copyright (c) airgap.ngc contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private: the argument spec of the source options and the clients built from them. Not a public API."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ansible.module_utils.basic import env_fallback

from ansible_collections.airgap.ngc.plugins.module_utils._types.errors import ConfigError
from ansible_collections.airgap.ngc.plugins.module_utils._types.reference import (
    redact_url,
    registry_host,
    registry_url,
    valid_host,
)

from ansible_collections.airgap.ngc.plugins.module_utils._http.transport import DEFAULT_RETRY_BUDGET, HttpTransport
from ansible_collections.airgap.ngc.plugins.module_utils._clients.helm_repo import DEFAULT_HELM_URL, HelmRepository
from ansible_collections.airgap.ngc.plugins.module_utils._clients.ngc import NGC_USERNAME
from ansible_collections.airgap.ngc.plugins.module_utils._clients.registry import RegistryClient


def source_argument_spec() -> dict[str, Any]:
    """The options of the ``airgap.ngc.source`` doc fragment."""
    return dict(
        api_key=dict(type="str", no_log=True, fallback=(env_fallback, ["NGC_API_KEY"])),
        username=dict(type="str", default=NGC_USERNAME),
        registry_url=dict(type="str", default="https://nvcr.io"),
        validate_certs=dict(type="bool", default=True),
        ca_path=dict(type="path"),
        timeout=dict(type="float", default=60.0),
        retries=dict(type="int"),
        retry_budget=dict(type="float", default=DEFAULT_RETRY_BUDGET),
    )


def chart_source_argument_spec() -> dict[str, Any]:
    """The options of the ``airgap.ngc.charts`` doc fragment: where charts and the images they name come from."""
    return dict(
        helm_url=dict(type="str", default=DEFAULT_HELM_URL),
        upstream_registries=dict(type="dict"),
    )


def transport_from(
    params: dict[str, Any], validate_certs: bool | None = None, ca_path: str | None = None
) -> HttpTransport:
    """An HTTP transport with the TLS and retry settings of ``params`` (optionally overridden)."""
    return HttpTransport(
        validate_certs=params["validate_certs"] if validate_certs is None else validate_certs,
        ca_path=params.get("ca_path") if ca_path is None else ca_path,
        timeout=params["timeout"],
        retries=params["retries"],
        retry_budget=params.get("retry_budget", DEFAULT_RETRY_BUDGET),
    )


def registry_from(
    params: dict[str, Any],
    url: str,
    username: str | None,
    password: str | None,
    validate_certs: bool | None = None,
    ca_path: str | None = None,
) -> RegistryClient:
    """A registry client with the timeout and retry settings of ``params``."""
    return RegistryClient(
        url,
        username=username if password else None,
        password=password or None,
        validate_certs=params["validate_certs"] if validate_certs is None else validate_certs,
        ca_path=params.get("ca_path") if ca_path is None else ca_path,
        timeout=params["timeout"],
        retries=params["retries"],
        retry_budget=params.get("retry_budget", DEFAULT_RETRY_BUDGET),
    )


def source_registry_from(params: dict[str, Any]) -> RegistryClient:
    """The source registry client; the API key is the password of ``username``."""
    return registry_from(params, params["registry_url"], params["username"], params.get("api_key"))


# Registries other than the source that charts name (registry.k8s.io for the NFD subchart) ---------------------------

NGC_REGISTRY_HOST = "nvcr.io"
"""The host charts name NGC's registry by; its images come from ``registry_url`` (with the NGC key)."""
_UPSTREAM_KEYS = ("url", "username", "password", "validate_certs", "ca_path")


@dataclass(frozen=True)
class UpstreamRegistry:
    """How to reach one registry a chart or a reference names: ``upstream_registries[<host>]``, or its defaults."""

    host: str
    url: str
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    validate_certs: bool | None = None  # None: the module's validate_certs
    ca_path: str | None = None  # None: the module's ca_path


def parse_upstream_registries(value: Any, option: str = "upstream_registries") -> dict[str, UpstreamRegistry]:
    """``upstream_registries`` (registry host -> ``{url, username, password, validate_certs, ca_path}``, each
    optional) checked: ConfigError naming the option, the host and the key, never a password."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(
            f"invalid {option}: expected a mapping of registry hosts (such as registry.k8s.io) to "
            "{url, username, password, validate_certs, ca_path}"
        )
    found: dict[str, UpstreamRegistry] = {}
    for host, spec in value.items():
        where = f"{option}[{host!r}]"
        if not isinstance(host, str) or not valid_host(host):
            raise ConfigError(
                f"invalid {option}: the key {redact_url(str(host))!r} is not a registry host[:port] such as "
                "registry.k8s.io"
            )
        if host == NGC_REGISTRY_HOST:
            raise ConfigError(
                f"invalid {where}: images of {NGC_REGISTRY_HOST} come from registry_url (with api_key); "
                "set registry_url instead"
            )
        spec = {} if spec is None else spec
        if not isinstance(spec, dict):
            raise ConfigError(
                f"invalid {where}: expected a mapping with url, username, password, validate_certs, ca_path"
            )
        unknown = [key for key in spec if key not in _UPSTREAM_KEYS]
        if unknown:
            raise ConfigError(f"invalid {where}: unknown key {str(unknown[0])!r}; use {', '.join(_UPSTREAM_KEYS)}")
        url = spec.get("url") or f"https://{host}"
        if not isinstance(url, str):
            raise ConfigError(f"invalid {where}.url: expected an http or https URL such as https://{host}")
        if "://" not in url:
            raise ConfigError(f"invalid {where}.url {redact_url(url)!r}: give the scheme, such as https://{url}")
        if "@" in url.split("://", 1)[1].split("/", 1)[0]:
            raise ConfigError(
                f"invalid {where}.url {redact_url(url)!r}: no user name or password in it; give username and password"
            )
        url = registry_url(url, option=f"{where}.url")
        username, password = spec.get("username"), spec.get("password")
        for key, item in (("username", username), ("password", password)):
            if item is not None and not isinstance(item, str):
                raise ConfigError(f"invalid {where}.{key}: expected a string")
        if bool(username) != bool(password):
            missing = "password" if username else "username"
            raise ConfigError(
                f"invalid {where}: give {missing} with {'username' if username else 'password'}, or neither "
                "for anonymous pulls"
            )
        validate = spec.get("validate_certs")
        if validate is not None and not isinstance(validate, bool):
            raise ConfigError(f"invalid {where}.validate_certs: expected true or false")
        ca_path = spec.get("ca_path")
        if ca_path is not None and (not isinstance(ca_path, str) or not ca_path):
            raise ConfigError(f"invalid {where}.ca_path: expected the path of a PEM file of CA certificates")
        found[host] = UpstreamRegistry(host, url, username or None, password or None, validate, ca_path)
    return found


def upstream_registry_from(
    params: dict[str, Any], host: str, upstream: dict[str, UpstreamRegistry] | None = None
) -> RegistryClient:
    """The registry client for images a chart or a reference names on ``host``: ``nvcr.io`` (or the host of
    ``registry_url``) is the source registry with the NGC key; another host is its ``upstream_registries`` entry, by
    default ``https://<host>`` without credentials (the NGC key is never sent there)."""
    known = upstream if upstream is not None else parse_upstream_registries(params.get("upstream_registries"))
    if host in (NGC_REGISTRY_HOST, registry_host(params["registry_url"])) and host not in known:
        return source_registry_from(params)
    entry = known.get(host) or UpstreamRegistry(host, f"https://{host}")
    return registry_from(params, entry.url, entry.username, entry.password, entry.validate_certs, entry.ca_path)


def upstream_secrets(params: dict[str, Any]) -> list[str]:
    """The passwords of ``upstream_registries``: for the module's no_log values and for redaction."""
    value = params.get("upstream_registries")
    if not isinstance(value, dict):
        return []
    return [
        spec["password"]
        for spec in value.values()
        if isinstance(spec, dict) and isinstance(spec.get("password"), str) and spec["password"]
    ]


def helm_repository_from(
    params: dict[str, Any], transport: HttpTransport, org: str, team: str | None = None
) -> HelmRepository:
    """NGC's Helm repository of ``org`` (and ``team``) at ``helm_url``, with the NGC key."""
    return HelmRepository(transport, params.get("helm_url") or DEFAULT_HELM_URL, org, team, params.get("api_key"))
