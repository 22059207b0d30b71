# Copyright (c) airgap.ngc contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""upstream_registries: which registry, with which credentials, the images a chart names on a host come from."""

from __future__ import annotations

from typing import Any

import pytest

from ansible_collections.airgap.ngc.plugins.module_utils._clients.options import (
    UpstreamRegistry,
    parse_upstream_registries,
    upstream_registry_from,
    upstream_secrets,
)
from ansible_collections.airgap.ngc.plugins.module_utils._types.errors import ConfigError

PASSWORD = "k8s-mirror-SECRET-77"
PARAMS = {
    "registry_url": "https://nvcr.example:8443",
    "username": "$oauthtoken",
    "api_key": "nvapi-KEY-5",
    "validate_certs": True,
    "ca_path": None,
    "timeout": 5.0,
    "retries": 0,
    "retry_budget": 0.0,
}


def test_entries_with_defaults() -> None:
    found = parse_upstream_registries(
        {
            "registry.k8s.io": {
                "url": "https://k8s-mirror.site:5000",
                "username": "puller",
                "password": PASSWORD,
                "validate_certs": False,
            },
            "quay.io": None,
            "ghcr.io": {},
        }
    )
    assert found["registry.k8s.io"] == UpstreamRegistry(
        "registry.k8s.io", "https://k8s-mirror.site:5000", "puller", PASSWORD, False, None
    )
    assert found["quay.io"] == UpstreamRegistry("quay.io", "https://quay.io")
    assert PASSWORD not in repr(found)
    assert parse_upstream_registries(None) == {}


@pytest.mark.parametrize(
    "value,fragment",
    [
        (["registry.k8s.io"], "expected a mapping of registry hosts"),
        ({"https://registry.k8s.io": {}}, "the key 'https://registry.k8s.io' is not a registry host"),
        ({"nvcr.io": {"url": "https://mirror"}}, "images of nvcr.io come from registry_url"),
        ({"registry.k8s.io": "https://mirror"}, "invalid upstream_registries['registry.k8s.io']: expected a mapping"),
        ({"registry.k8s.io": {"uri": "https://mirror"}}, "unknown key 'uri'"),
        ({"registry.k8s.io": {"url": "mirror.site"}}, "give the scheme, such as https://mirror.site"),
        ({"registry.k8s.io": {"url": "ftp://mirror.site"}}, "upstream_registries['registry.k8s.io'].url"),
        ({"registry.k8s.io": {"password": PASSWORD}}, "give username with password"),
        ({"registry.k8s.io": {"username": "puller"}}, "give password with username"),
        ({"registry.k8s.io": {"validate_certs": "no"}}, "validate_certs: expected true or false"),
        (
            {"registry.k8s.io": {"url": f"https://puller:{PASSWORD}@mirror.site"}},
            "upstream_registries['registry.k8s.io'].url",
        ),
    ],
)
def test_bad_entries_name_the_host_and_key_never_a_password(value: Any, fragment: str) -> None:
    with pytest.raises(ConfigError) as error:
        parse_upstream_registries(value)
    assert fragment in str(error.value) and PASSWORD not in str(error.value), str(error.value)


def test_the_registry_for_each_host() -> None:
    params = dict(
        PARAMS,
        upstream_registries={
            "registry.k8s.io": {"url": "http://127.0.0.1:5001", "username": "puller", "password": PASSWORD}
        },
    )
    ngc = upstream_registry_from(params, "nvcr.io")
    assert ngc.base_url == "https://nvcr.example:8443" and ngc.username == "$oauthtoken"
    assert upstream_registry_from(params, "nvcr.example:8443").base_url == "https://nvcr.example:8443"
    k8s = upstream_registry_from(params, "registry.k8s.io")
    assert k8s.base_url == "http://127.0.0.1:5001" and k8s.username == "puller"
    other = upstream_registry_from(params, "quay.io")
    assert other.base_url == "https://quay.io" and other.username is None  # the NGC key never goes there
    assert upstream_secrets(params) == [PASSWORD]
