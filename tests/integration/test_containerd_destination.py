# Copyright (c) airgap.ngc contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""ngc_image_mirror's containerd destination into a real containerd of the test's own, judged by ``ctr``: the images are
listed at the source's digests (an OCI index and a Docker manifest list kept whole, every platform's content present),
the node's platform is unpacked, check mode imports nothing and its diff shows each name's digest before and after, and
a second run imports nothing. Read from the site registry, or from a bundle or archives exported there and carried to a
node that reaches no registry at all (the registry they came from is stopped), the images get the names their pods use,
``nvcr.io/nvidia/...``, at the source's digests."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.testbed.containerd import Containerd
from tests.testbed.registry import start_registry

IMAGES = ["nvidia/cuda:12.2.0-base-ubuntu22.04", "nvidia/cuda:12.10.0-base-ubuntu22.04", "nvidia/pytorch:24.01-py3"]

pytestmark = pytest.mark.skipif(
    shutil.which("containerd") is None or os.geteuid() != 0,
    reason="needs root and Debian's containerd (scripts/bootstrap.sh installs it)",
)


def seeded(testbed: Any) -> dict[str, str]:
    return {
        f"{repo['repository']}:{tag['tag']}": tag["digest"]
        for repo in testbed.seed_document()["repositories"]
        for tag in repo.get("tags") or []
    }


def check(node: Containerd, namespace: str) -> dict[str, tuple[str, str]]:
    """``ctr images check``: name -> (status, unpacked), e.g. ('complete (2/2)', 'true')."""
    found = {}
    for line in node.ctr("images", "check", namespace=namespace).splitlines()[1:]:
        parts = line.split()
        if len(parts) >= 6:
            found[parts[0]] = (" ".join(parts[3:5]), parts[-1])
    return found


def before_after(run: Any) -> dict[str, tuple[str | None, str | None]]:
    """Each containerd step's target and its digest before and after (what --diff shows)."""
    return {
        step["target"]: (step["before"], step["after"])
        for image in run.result["images"]
        for step in image["destinations"]
        if step["kind"] == "containerd"
    }


def assert_imported(node: Containerd, namespace: str, names: dict[str, str]) -> None:
    """containerd lists every name at its digest, holds every platform's content and has the node's platform unpacked."""
    listed = node.images(namespace)
    assert {name: listed.get(name) for name in names} == names
    checked = check(node, namespace)
    for name in names:
        status, unpacked = checked[name]
        assert status.startswith("complete") and unpacked == "true", (name, checked[name])


def test_import_from_the_registry_keeps_every_digest_and_is_idempotent(
    ansible: Any, testbed: Any, containerd_node: Containerd, tmp_path: Path
) -> None:
    host = testbed.source_registry_url.split("://", 1)[1]
    names = {f"{host}/{ref}": seeded(testbed)[ref] for ref in IMAGES}
    args = {
        "registry_url": testbed.source_registry_url,
        "images": IMAGES,
        "facts_file": str(tmp_path / "node.fact"),
        "containerd": {"address": containerd_node.address},
    }
    planned = ansible.module("ngc_image_mirror", args, check=True, diff=True, api_key=testbed.api_key)
    assert planned.rc == 0 and planned.result["changed"] is True, planned.stdout
    assert not set(names) & set(containerd_node.images())  # check mode imports nothing
    targets = {f"{containerd_node.address}#k8s.io/{name}": digest for name, digest in names.items()}
    assert before_after(planned) == {target: (None, digest) for target, digest in targets.items()}
    for target, digest in targets.items():
        assert (
            f'-    "containerd:{target}": null' in planned.stdout
            and f'+    "containerd:{target}": "{digest}"' in planned.stdout
        )

    first = ansible.module("ngc_image_mirror", args, api_key=testbed.api_key)
    assert first.rc == 0 and first.result["changed"] is True, first.stdout
    assert_imported(containerd_node, "k8s.io", names)  # the registry's digests, indexes included; unpacked

    again = ansible.module("ngc_image_mirror", args, check=True, diff=True, api_key=testbed.api_key)
    assert again.rc == 0 and again.result["changed"] is False, again.stdout
    assert before_after(again) == {target: (digest, digest) for target, digest in targets.items()}
    again = ansible.module("ngc_image_mirror", args, api_key=testbed.api_key)
    assert again.rc == 0 and again.result["changed"] is False, again.stdout


def test_from_the_site_registry_the_images_get_the_names_their_pods_use(
    ansible: Any, testbed: Any, containerd_node: Containerd, tmp_path: Path
) -> None:
    prefix = f"site{os.getpid()}/ngc"
    filled = ansible.module(
        "ngc_image_mirror",
        {
            "registry_url": testbed.source_registry_url,
            "images": IMAGES,
            "registry": {"url": testbed.open_registry_url, "prefix": prefix},
            "facts_file": str(tmp_path / "site.fact"),
        },
        api_key=testbed.api_key,
    )
    assert filled.rc == 0, filled.stdout
    namespace = f"site{os.getpid()}"
    args = {
        "registry_url": testbed.open_registry_url,
        "images": [f"{prefix}/{ref}" for ref in IMAGES],
        "facts_file": str(tmp_path / "node.fact"),
        "containerd": {
            "address": containerd_node.address,
            "namespace": namespace,
            "name_as": "nvcr.io",
            "strip_prefix": prefix,
        },
    }
    names = {f"nvcr.io/{ref}": seeded(testbed)[ref] for ref in IMAGES}
    planned = ansible.module("ngc_image_mirror", args, check=True, diff=True)
    assert planned.rc == 0 and planned.result["changed"] is True, planned.stdout
    assert before_after(planned) == {
        f"{containerd_node.address}#{namespace}/{name}": (None, digest) for name, digest in names.items()
    }
    run = ansible.module("ngc_image_mirror", args)
    assert run.rc == 0 and run.result["changed"] is True, run.stdout
    assert_imported(containerd_node, namespace, names)
    assert sorted(containerd_node.images(namespace)) == sorted(names)  # under those names only, not the site's
    again = ansible.module("ngc_image_mirror", args)
    assert again.rc == 0 and again.result["changed"] is False, again.stdout

    outside = ansible.module("ngc_image_mirror", dict(args, containerd=dict(args["containerd"], strip_prefix="ngc")))
    assert outside.rc != 0 and "is not under containerd.strip_prefix 'ngc'" in outside.result["msg"], outside.stdout


def test_a_node_with_no_registry_in_reach_fills_from_a_bundle_and_from_archives(
    ansible: Any, testbed: Any, containerd_node: Containerd, tmp_path: Path
) -> None:
    """The connected side's registry (one of this test's own) fills a bundle and OCI archives, then stops: the node
    imports from the carried media alone, under the names the pods use, in namespaces that did not exist."""
    site = start_registry("open", tmp_path / "site")
    try:
        filled = ansible.module(
            "ngc_image_mirror",
            {
                "registry_url": testbed.source_registry_url,
                "images": IMAGES,
                "registry": {"url": site.url, "prefix": "ngc"},
                "facts_file": str(tmp_path / "site.fact"),
            },
            api_key=testbed.api_key,
        )
        assert filled.rc == 0, filled.stdout
        exported = ansible.module(
            "ngc_image_mirror",
            {
                "registry_url": site.url,
                "images": [f"ngc/{ref}" for ref in IMAGES],
                "bundle": {"dir": str(tmp_path / "bundle")},
                "archive": {"dir": str(tmp_path / "archives"), "format": "oci"},
                "facts_file": str(tmp_path / "export.fact"),
            },
        )
        assert exported.rc == 0, exported.stdout
    finally:
        site.record().stop()
        if site.proc is not None and site.proc.poll() is None:
            site.proc.kill()  # the record's stop found no process of its own to stop: this one goes all the same
    assert site.proc is None or site.proc.wait(timeout=30) is not None  # the registry is gone: nothing reaches it below
    names = {f"nvcr.io/{ref}": seeded(testbed)[ref] for ref in IMAGES}
    for source in ("bundle", "archive"):
        namespace = f"far{os.getpid()}-{source}"
        assert namespace not in containerd_node.ctr("namespaces", "ls")
        args = {
            "source": source,
            "source_dir": str(tmp_path / ("bundle" if source == "bundle" else "archives")),
            "registry_url": site.url,
            "facts_file": str(tmp_path / f"{source}.fact"),  # the stopped registry
            "containerd": {
                "address": containerd_node.address,
                "namespace": namespace,
                "name_as": "nvcr.io",
                "strip_prefix": "ngc",
            },
        }
        run = ansible.module("ngc_image_mirror", args)
        assert run.rc == 0 and run.result["changed"] is True, run.stdout
        assert_imported(containerd_node, namespace, names)
        again = ansible.module("ngc_image_mirror", args)
        assert again.rc == 0 and again.result["changed"] is False, again.stdout


def test_a_socket_that_is_not_containerd_and_a_bad_namespace_are_clear_errors(
    ansible: Any, testbed: Any, tmp_path: Path
) -> None:
    base = {"registry_url": testbed.source_registry_url, "images": IMAGES[2:], "facts_file": str(tmp_path / "x.fact")}
    engine_socket = testbed.docker_host.replace("unix://", "") if testbed.docker_host else "/dev/null"
    wrong = ansible.module(
        "ngc_image_mirror", dict(base, containerd={"address": engine_socket}), api_key=testbed.api_key
    )
    assert wrong.rc != 0 and "containerd" in wrong.result["msg"] and engine_socket in wrong.result["msg"], wrong.stdout
    missing = ansible.module(
        "ngc_image_mirror", dict(base, containerd={"address": str(tmp_path / "none.sock")}), api_key=testbed.api_key
    )
    assert missing.rc != 0 and "does not exist" in missing.result["msg"], missing.stdout
    bad = ansible.module(
        "ngc_image_mirror",
        dict(base, containerd={"address": "/run/c.sock", "namespace": "k8s.io\n[x]"}),
        api_key=testbed.api_key,
    )
    assert bad.rc != 0 and "containerd.namespace" in bad.result["msg"], bad.stdout
    for naming, said in [
        ({"name_as": "nvcr.io/nvidia"}, "invalid containerd.name_as 'nvcr.io/nvidia'"),
        ({"strip_prefix": "ngc"}, "containerd.strip_prefix 'ngc' needs containerd.name_as"),
    ]:
        bad = ansible.module(
            "ngc_image_mirror", dict(base, containerd={"address": "/run/c.sock", **naming}), api_key=testbed.api_key
        )
        assert bad.rc != 0 and said in bad.result["msg"] and "Traceback" not in bad.stdout, bad.stdout
