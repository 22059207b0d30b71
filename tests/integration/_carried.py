# Copyright (c) airgap.ngc contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private: carried media for the far-side tests: a bundle exported from the test bed's source registry, and where in
it a layer of one image alone is (to damage one image and no other)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.integration.test_image_mirror import seeded


def export_bundle(ansible: Any, testbed: Any, images: list[str], base: Path) -> Path:
    """``base/bundle``: ngc_image_mirror's bundle of ``images`` from the source registry (its facts file beside it)."""
    bundle = base / "bundle"
    run = ansible.module(
        "ngc_image_mirror",
        {
            "registry_url": testbed.source_registry_url,
            "images": images,
            "bundle": {"dir": str(bundle)},
            "facts_file": str(base / "mirror.fact"),
        },
        api_key=testbed.api_key,
    )
    assert run.rc == 0, run.stdout
    return bundle


def full(testbed: Any, ref: str) -> str:
    """The source reference a bundle names ``ref`` by (the source registry's host in front)."""
    return f"{testbed.source_registry_host}/{ref}"


def own_layer(testbed: Any, images: list[str], ref: str) -> str:
    """The bundle path (``blobs/sha256/...``) of a layer of ``ref`` that no other of ``images`` has."""
    source = seeded(testbed)
    others = {
        d for other in images if other != ref for d in source[other]["layer_digests"] + source[other]["config_digests"]
    }
    own = [d for d in source[ref]["layer_digests"] if d not in others]
    assert own, f"{ref} shares every layer: the test needs one of its own"
    return "blobs/sha256/" + own[-1].split(":", 1)[1]
