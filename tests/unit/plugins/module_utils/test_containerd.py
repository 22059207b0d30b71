# Copyright (c) airgap.ngc contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Unit tests for _containerd: option checks and defaults. No containerd needed (the integration tests use a real one)."""
from __future__ import annotations

import pytest

from ansible_collections.airgap.ngc.plugins.module_utils._transports.containerd import DEFAULT_ADDRESS, DEFAULT_NAMESPACE, ContainerdDestination
from ansible_collections.airgap.ngc.plugins.module_utils._types.errors import ConfigError


def test_defaults_are_the_nodes_socket_and_the_kubelets_namespace() -> None:
    dest = ContainerdDestination({})
    assert (dest.address, dest.namespace) == (DEFAULT_ADDRESS, DEFAULT_NAMESPACE) == ("/run/containerd/containerd.sock", "k8s.io")
    assert dest.platforms is None and dest.needs_content  # every platform: the index keeps its digest


@pytest.mark.parametrize("namespace", ["k8s.io\n[x]", "-k8s", "a b", 'ns"', "x" * 77, ""])
def test_a_namespace_containerd_would_refuse_is_named(namespace: str) -> None:
    if not namespace:
        assert ContainerdDestination({"namespace": namespace}).namespace == DEFAULT_NAMESPACE
        return
    with pytest.raises(ConfigError, match="containerd.namespace"):
        ContainerdDestination({"namespace": namespace})


def test_a_relative_socket_is_refused() -> None:
    with pytest.raises(ConfigError, match="containerd.address 'run/containerd.sock'"):
        ContainerdDestination({"address": "run/containerd.sock"})
