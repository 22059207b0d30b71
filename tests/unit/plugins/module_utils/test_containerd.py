# Copyright (c) airgap.ngc contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Unit tests for _containerd: option checks and defaults. No containerd needed (the integration tests use a real one)."""

from __future__ import annotations

import pytest

from ansible_collections.airgap.ngc.plugins.module_utils._transports.containerd import (
    DEFAULT_ADDRESS,
    DEFAULT_NAMESPACE,
    ContainerdDestination,
)
from ansible_collections.airgap.ngc.plugins.module_utils._types.errors import ConfigError
from ansible_collections.airgap.ngc.plugins.module_utils._types.plan import SourceImage
from ansible_collections.airgap.ngc.plugins.module_utils._types.reference import ImageReference


def test_defaults_are_the_nodes_socket_and_the_kubelets_namespace() -> None:
    dest = ContainerdDestination({})
    assert (
        (dest.address, dest.namespace)
        == (DEFAULT_ADDRESS, DEFAULT_NAMESPACE)
        == ("/run/containerd/containerd.sock", "k8s.io")
    )
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


def image(text: str) -> SourceImage:
    return SourceImage(ImageReference.parse(text))


@pytest.mark.parametrize(
    ("spec", "source", "name"),
    [
        ({}, "registry.site:5000/ngc/nvidia/pytorch:24.01-py3", "registry.site:5000/ngc/nvidia/pytorch:24.01-py3"),
        ({"name_as": "nvcr.io"}, "registry.site:5000/nvidia/pytorch:24.01-py3", "nvcr.io/nvidia/pytorch:24.01-py3"),
        (
            {"name_as": "nvcr.io", "strip_prefix": "site/ngc"},
            "registry.site:5000/site/ngc/nvidia/cuda:12.2.0",
            "nvcr.io/nvidia/cuda:12.2.0",
        ),
        (
            {"name_as": "registry.k8s.io", "strip_prefix": "ngc/"},
            "127.0.0.1:5000/ngc/pause:3.10",
            "registry.k8s.io/pause:3.10",
        ),
        (
            {"name_as": "nvcr.io", "strip_prefix": "ngc"},
            "registry.site/ngc/nvidia/pytorch@sha256:" + "a" * 64,
            "nvcr.io/nvidia/pytorch@sha256:" + "a" * 64,
        ),
    ],
)
def test_images_are_named_as_their_pods_name_them(spec: dict[str, str], source: str, name: str) -> None:
    dest = ContainerdDestination(spec)
    assert dest.name(image(source)) == name
    assert dest.target(image(source)).endswith(f"#k8s.io/{name}")


def test_an_image_outside_strip_prefix_is_named_in_the_error() -> None:
    dest = ContainerdDestination({"name_as": "nvcr.io", "strip_prefix": "ngc"})
    with pytest.raises(
        ConfigError, match=r"registry.site/ngcx/nvidia/pytorch:1 is not under containerd.strip_prefix 'ngc'"
    ):
        dest.name(image("registry.site/ngcx/nvidia/pytorch:1"))


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"name_as": 'nvcr.io"\n[x]'}, "invalid containerd.name_as"),
        ({"name_as": "nvcr.io/nvidia"}, "invalid containerd.name_as"),
        ({"name_as": "nvcr.io", "strip_prefix": "NGC/../x"}, "containerd.strip_prefix"),
        ({"strip_prefix": "ngc"}, "containerd.strip_prefix 'ngc' needs containerd.name_as"),
    ],
)
def test_naming_options_are_checked(spec: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        ContainerdDestination(spec)
