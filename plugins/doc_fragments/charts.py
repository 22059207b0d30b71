# Copyright (c) airgap.ngc contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Options shared by the modules that read Helm charts and the images they deploy."""

from __future__ import annotations


class ModuleDocFragment:
    """Documentation of the chart source options (NGC's Helm repository, the registries charts name besides nvcr.io)."""

    DOCUMENTATION = r"""
options:
  helm_url:
    description:
      - NGC's Helm repository, an http or https URL; the charts of an org are under C(<helm_url>/<org>), a team's under
        C(<helm_url>/<org>/<team>), each with its C(index.yaml).
      - The NGC API key is sent as HTTP Basic (user C($oauthtoken)) to this URL's host only, never along a redirect to
        another host. Public orgs answer without a key.
    type: str
    default: https://helm.ngc.nvidia.com
  upstream_registries:
    description:
      - How to reach the registries, other than NGC's, that charts name images on (the GPU Operator's
        node-feature-discovery subchart names C(registry.k8s.io)), as a mapping of registry host to a mapping with
        C(url) (default C(https://<host>)), C(username) and C(password) (default anonymous), C(validate_certs) and
        C(ca_path) (default O(validate_certs) and O(ca_path)).
      - A host not named here is reached at C(https://<host>) anonymously. The NGC API key is never sent to it.
      - Images on C(nvcr.io) always come from O(registry_url), with the NGC API key; C(nvcr.io) cannot be named here.
    type: dict
"""
