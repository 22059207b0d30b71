# Copyright (c) airgap.ngc contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private: the argument spec of the source options and the clients built from them. Not a public API."""
from __future__ import annotations

from typing import Any

from ansible.module_utils.basic import env_fallback

from ansible_collections.airgap.ngc.plugins.module_utils._http.transport import DEFAULT_RETRY_BUDGET, HttpTransport
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


def transport_from(params: dict[str, Any], validate_certs: bool | None = None, ca_path: str | None = None) -> HttpTransport:
    """An HTTP transport with the TLS and retry settings of ``params`` (optionally overridden)."""
    return HttpTransport(
        validate_certs=params["validate_certs"] if validate_certs is None else validate_certs,
        ca_path=params.get("ca_path") if ca_path is None else ca_path,
        timeout=params["timeout"],
        retries=params["retries"],
        retry_budget=params.get("retry_budget", DEFAULT_RETRY_BUDGET),
    )


def registry_from(params: dict[str, Any], url: str, username: str | None, password: str | None,
                  validate_certs: bool | None = None, ca_path: str | None = None) -> RegistryClient:
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
