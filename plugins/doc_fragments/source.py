# Copyright (c) airgap.ngc contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Options shared by the modules that read from NGC and its registry."""

from __future__ import annotations


class ModuleDocFragment:
    """Documentation of the source options (NGC key, registry URL, TLS, retries)."""

    DOCUMENTATION = r"""
options:
  api_key:
    description:
      - The NGC API key. It is sent to the registry as the password of O(username), and
        exchanged for a token by the NGC catalog API.
      - If not set, the value of the E(NGC_API_KEY) environment variable is used. Without
        a key only anonymous access is possible.
      - The key never appears in results, files or process arguments.
    type: str
  username:
    description:
      - The user name for the source registry. NGC expects the literal string V($oauthtoken)
        with the API key as the password.
    type: str
    default: $oauthtoken
  registry_url:
    description:
      - The source registry. V(https://nvcr.io) for NGC; any registry speaking the OCI
        distribution API works.
    type: str
    default: https://nvcr.io
  validate_certs:
    description:
      - Whether to verify TLS certificates of the NGC API and the registries.
    type: bool
    default: true
  ca_path:
    description:
      - A PEM file of certificate authorities to trust instead of the system's, for a site
        registry signed by an internal CA.
    type: path
  timeout:
    description:
      - Seconds to wait for a connection or for data on one before giving up.
    type: float
    default: 60
  retries:
    description:
      - How many times a request that failed with 429, 502, 503, 504 or a connection error
        is tried again, with exponential backoff (jittered, at most 4 seconds a wait) that honours
        C(Retry-After).
      - When not set, such a request is tried again for as long as its waits add up to at most
        O(retry_budget) seconds, so that a storm of throttled answers or a short outage of a registry
        costs no image. Set a count to fail fast instead.
    type: int
  retry_budget:
    description:
      - Seconds one failing request may spend waiting between its attempts when O(retries) is not set.
      - V(0) tries each request once.
    type: float
    default: 300
"""
