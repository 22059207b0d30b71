# Copyright (c) airgap.ngc contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""ngc_image_mirror's containerd destination into a real containerd of the test's own, judged by ``ctr``: the images are
listed under their source names at the source's digests (an OCI index and a Docker manifest list kept whole, every
platform's content present), the node's platform is unpacked, a second run imports nothing, and a bundle carried across
the gap gives the same digests in a namespace that did not exist."""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.testbed.containerd import Containerd, start_containerd

IMAGES = ["nvidia/cuda:12.2.0-base-ubuntu22.04", "nvidia/cuda:12.10.0-base-ubuntu22.04", "nvidia/pytorch:24.01-py3"]

pytestmark = pytest.mark.skipif(shutil.which("containerd") is None or os.geteuid() != 0,
                                reason="needs root and Debian's containerd (scripts/bootstrap.sh installs it)")


def seeded(testbed: Any) -> dict[str, str]:
    return {f"{repo['repository']}:{tag['tag']}": tag["digest"] for repo in testbed.seed_document()["repositories"]
            for tag in repo.get("tags") or []}


def check(node: Containerd, namespace: str) -> dict[str, tuple[str, str]]:
    """``ctr images check``: name -> (status, unpacked), e.g. ('complete (2/2)', 'true')."""
    found = {}
    for line in node.ctr("images", "check", namespace=namespace).splitlines()[1:]:
        parts = line.split()
        if len(parts) >= 6:
            found[parts[0]] = (" ".join(parts[3:5]), parts[-1])
    return found


@pytest.fixture(scope="module")
def node() -> Iterator[Containerd]:
    started = start_containerd()
    try:
        yield started
    finally:
        started.stop()


def test_import_from_the_registry_keeps_every_digest_and_is_idempotent(ansible: Any, testbed: Any, node: Containerd, tmp_path: Path) -> None:
    host = testbed.source_registry_url.split("://", 1)[1]
    names = {f"{host}/{ref}": seeded(testbed)[ref] for ref in IMAGES}
    args = {"registry_url": testbed.source_registry_url, "images": IMAGES, "facts_file": str(tmp_path / "node.fact"),
            "containerd": {"address": node.address}}
    planned = ansible.module("ngc_image_mirror", args, check=True, diff=True, api_key=testbed.api_key)
    assert planned.rc == 0 and planned.result["changed"] is True, planned.stdout
    assert not set(names) & set(node.images())  # check mode imports nothing

    first = ansible.module("ngc_image_mirror", args, api_key=testbed.api_key)
    assert first.rc == 0 and first.result["changed"] is True, first.stdout
    listed = node.images()
    assert {name: listed.get(name) for name in names} == names  # the registry's digests, indexes included
    checked = check(node, "k8s.io")
    for name in names:
        status, unpacked = checked[name]
        assert status.startswith("complete") and unpacked == "true", (name, checked[name])  # every platform's content; unpacked

    again = ansible.module("ngc_image_mirror", args, api_key=testbed.api_key)
    assert again.rc == 0 and again.result["changed"] is False, again.stdout


def test_import_from_a_bundle_into_a_new_namespace(ansible: Any, testbed: Any, node: Containerd, tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    export = ansible.module("ngc_image_mirror", {"registry_url": testbed.source_registry_url, "images": IMAGES[:2],
                                                 "facts_file": str(tmp_path / "export.fact"), "bundle": {"dir": str(bundle)}},
                            api_key=testbed.api_key)
    assert export.rc == 0, export.stdout
    namespace = f"far{os.getpid()}"
    assert namespace not in node.ctr("namespaces", "ls")
    args = {"source": "bundle", "source_dir": str(bundle), "registry_url": "http://127.0.0.1:9",  # no registry behind the gap
            "facts_file": str(tmp_path / "far.fact"), "containerd": {"address": node.address, "namespace": namespace}}
    run = ansible.module("ngc_image_mirror", args)
    assert run.rc == 0 and run.result["changed"] is True, run.stdout
    host = testbed.source_registry_url.split("://", 1)[1]
    listed = node.images(namespace)
    assert {ref: listed.get(f"{host}/{ref}") for ref in IMAGES[:2]} == {ref: seeded(testbed)[ref] for ref in IMAGES[:2]}
    again = ansible.module("ngc_image_mirror", args)
    assert again.rc == 0 and again.result["changed"] is False, again.stdout


def test_a_socket_that_is_not_containerd_and_a_bad_namespace_are_clear_errors(ansible: Any, testbed: Any, tmp_path: Path) -> None:
    base = {"registry_url": testbed.source_registry_url, "images": IMAGES[2:], "facts_file": str(tmp_path / "x.fact")}
    engine_socket = testbed.docker_host.replace("unix://", "") if testbed.docker_host else "/dev/null"
    wrong = ansible.module("ngc_image_mirror", dict(base, containerd={"address": engine_socket}), api_key=testbed.api_key)
    assert wrong.rc != 0 and "containerd" in wrong.result["msg"] and engine_socket in wrong.result["msg"], wrong.stdout
    missing = ansible.module("ngc_image_mirror", dict(base, containerd={"address": str(tmp_path / "none.sock")}), api_key=testbed.api_key)
    assert missing.rc != 0 and "does not exist" in missing.result["msg"], missing.stdout
    bad = ansible.module("ngc_image_mirror", dict(base, containerd={"address": "/run/c.sock", "namespace": "k8s.io\n[x]"}),
                         api_key=testbed.api_key)
    assert bad.rc != 0 and "containerd.namespace" in bad.result["msg"], bad.stdout
