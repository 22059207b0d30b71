# Copyright (c) airgap.ngc contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Plan building: what the images option means, copy-or-skip decisions, platform selection, targets."""

from __future__ import annotations

import hashlib
import json

import pytest

from ansible_collections.airgap.ngc.plugins.module_utils._types.errors import ConfigError
from ansible_collections.airgap.ngc.plugins.module_utils._types.oci import (
    blob_sizes,
    filtered_index,
    platform_matches,
    platform_string,
    select_children,
)
from ansible_collections.airgap.ngc.plugins.module_utils._types.plan import (
    COPY,
    SKIP,
    ImagePlan,
    Step,
    archive_path,
    decide,
    registry_target,
    source_images,
)

DIGEST = "sha256:" + "a" * 64
INDEX = {
    "schemaVersion": 2,
    "mediaType": "application/vnd.oci.image.index.v1+json",
    "manifests": [
        {
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": "sha256:" + "1" * 64,
            "size": 10,
            "platform": {"os": "linux", "architecture": "amd64"},
        },
        {
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": "sha256:" + "2" * 64,
            "size": 10,
            "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"},
        },
    ],
}


def test_source_images_from_strings_and_catalog_dicts() -> None:
    images = source_images(
        [
            "nvidia/pytorch:24.01-py3",
            {"name": "nvidia/clara/clara-parabricks", "tag": "4.2.0-1", "description": "# Clara"},
            {"reference": "nvcr.io/nvidia/cuda:12.2.0-base-ubuntu22.04"},
            f"nvidia/tritonserver@{DIGEST}",
            "nvidia/pytorch:24.01-py3",
        ],
        "https://nvcr.io",
    )
    assert [i.key for i in images] == [
        "nvcr.io/nvidia/pytorch:24.01-py3",
        "nvcr.io/nvidia/clara/clara-parabricks:4.2.0-1",
        "nvcr.io/nvidia/cuda:12.2.0-base-ubuntu22.04",
        f"nvcr.io/nvidia/tritonserver@{DIGEST}",
    ]
    assert images[1].description == "# Clara"
    assert images[3].label == "sha256-" + "a" * 64


def test_reference_without_tag_means_latest() -> None:
    (image,) = source_images(["nvidia/pytorch"], "http://127.0.0.1:5000")
    assert image.key == "127.0.0.1:5000/nvidia/pytorch:latest"


@pytest.mark.parametrize(
    "item, message",
    [
        (42, "images item 1 is a int"),
        ({"tag": "x"}, "without 'reference' or 'name'"),
        ("nvidia/Py Torch", "invalid image reference"),
    ],
)
def test_bad_images_items_are_named(item: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        source_images([item], "https://nvcr.io")


def test_decide() -> None:
    assert decide(DIGEST, DIGEST, False) == (SKIP, "up to date")
    assert decide(DIGEST, None, False) == (COPY, "missing")
    assert decide(DIGEST, DIGEST, True) == (COPY, "forced")
    action, reason = decide(DIGEST, "sha256:" + "b" * 64, False)
    assert action == COPY and "holds sha256:bbbb" in reason


def test_plan_needs_copy_only_without_error() -> None:
    plan = ImagePlan(
        source=source_images(["a/b:c"], "https://r")[0], steps=[Step("registry", "k", "t", COPY, "missing")]
    )
    assert plan.needs_copy
    plan.error = "boom"
    assert not plan.needs_copy


def test_platform_selection() -> None:
    assert platform_matches({"os": "linux", "architecture": "arm64", "variant": "v8"}, "linux/arm64")
    assert not platform_matches({"os": "linux", "architecture": "arm64", "variant": "v8"}, "linux/arm64/v7")
    assert [c["platform"]["architecture"] for c in select_children(INDEX, ["linux/arm64"])] == ["arm64"]
    assert len(select_children(INDEX, None)) == 2
    with pytest.raises(ConfigError, match="none of the platforms linux/ppc64le is in this image"):
        select_children(INDEX, ["linux/ppc64le"])
    with pytest.raises(ConfigError, match="invalid platform"):
        select_children(INDEX, ["amd64"])


def test_filtered_index_keeps_bytes_when_complete() -> None:
    raw = json.dumps(INDEX).encode()
    assert filtered_index(raw, INDEX, select_children(INDEX, None)) is raw
    reduced = filtered_index(raw, INDEX, select_children(INDEX, ["linux/amd64"]))
    assert reduced != raw
    assert [m["platform"]["architecture"] for m in json.loads(reduced)["manifests"]] == ["amd64"]
    # Deterministic: the same subset gives the same digest on every run (idempotence).
    again = filtered_index(raw, INDEX, select_children(INDEX, ["linux/amd64"]))
    assert hashlib.sha256(again).digest() == hashlib.sha256(reduced).digest()


def test_targets() -> None:
    (image,) = source_images(["nvidia/clara/clara-parabricks:4.2.0-1"], "https://nvcr.io")
    assert (
        str(registry_target(image, "https://registry.site:5000", None))
        == "registry.site:5000/nvidia/clara/clara-parabricks:4.2.0-1"
    )
    assert (
        str(registry_target(image, "http://127.0.0.1:5000/", "/mirror/"))
        == "127.0.0.1:5000/mirror/nvidia/clara/clara-parabricks:4.2.0-1"
    )
    assert archive_path("/srv/a/", image, "docker") == "/srv/a/nvidia/clara/clara-parabricks/4.2.0-1.tar"
    assert archive_path("/srv/a", image, "oci") == "/srv/a/nvidia/clara/clara-parabricks/4.2.0-1.oci.tar"


def test_blob_sizes_and_platform_strings() -> None:
    manifest = {
        "config": {"digest": "sha256:" + "c" * 64, "size": 5},
        "layers": [{"digest": "sha256:" + "1" * 64, "size": 100}, {"digest": "sha256:" + "2" * 64, "size": 7}],
    }
    other = {
        "config": {"digest": "sha256:" + "d" * 64, "size": 6},
        "layers": [{"digest": "sha256:" + "1" * 64, "size": 100}],
    }
    sizes = blob_sizes([manifest, other])
    assert len(sizes) == 4  # the shared layer once
    assert sum(sizes.values()) == 5 + 100 + 7 + 6
    assert platform_string({"os": "linux", "architecture": "arm64", "variant": "v8"}) == "linux/arm64/v8"
    assert platform_string({}) == "unknown/unknown"
