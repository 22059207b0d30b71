# Copyright (c) airgap.ngc contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Delta bundles: a monthly refresh carries only the blobs the far side lacks, and its import says which bundle to
import first when the far side lacks one. A new tag sharing base layers is published on the stand-in."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
import time
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_bundle import check_bundle
from tests.integration.test_image_mirror import raw_digest, seeded
from tests.testbed._blobs import BlobInfo, image_config, image_manifest
from tests.testbed._push import Pusher

OLD = ["nvidia/pytorch:24.01-py3", "nvidia/pytorch:24.02-py3"]


def release_layer(tag: str) -> bytes:
    """The uncompressed tar of a release's new layer: ``opt/pytorch/<tag>.txt``."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as archive:
        body = f"release {tag} {time.time()}\n".encode() * 200
        info = tarfile.TarInfo(f"opt/pytorch/{tag}.txt")
        info.size = len(body)
        archive.addfile(info, io.BytesIO(body))
    return raw.getvalue()


def publish_new_tag(testbed: Any, authfile: Path, base: str, tag: str) -> dict[str, Any]:
    """Push ``nvidia/pytorch:<tag>``: the base image's layers plus one new layer and a new config, as NGC's next release."""
    pusher = Pusher(testbed.source_registry_url, "$oauthtoken", testbed.api_key)
    old = seeded(testbed)[base]["manifests"][0]
    plain = release_layer(tag)
    packed = gzip.compress(plain, mtime=0)
    layer = pusher.upload_bytes("nvidia/pytorch", packed)
    layers = [BlobInfo(d, s) for d, s in zip(old["layer_digests"], _sizes(testbed, authfile, base))] + [layer]
    config = pusher.upload_bytes(
        "nvidia/pytorch",
        image_config(
            "amd64",
            "2024-03-20T00:00:00Z",
            ["sha256:" + hashlib.sha256(plain).hexdigest()] * len(layers),
            [str(n) for n in range(len(layers))],
            {},
        ),
    )
    media_type, manifest = image_manifest(False, config, layers)
    digest = pusher.put_manifest("nvidia/pytorch", tag, media_type, manifest)
    return {
        "digest": digest,
        "new_blobs": {layer.digest, config.digest},
        "manifest": "sha256:" + hashlib.sha256(manifest).hexdigest(),
    }


def _sizes(testbed: Any, authfile: Path, ref: str) -> list[int]:
    raw = subprocess.run(
        [
            "skopeo",
            "inspect",
            "--raw",
            "--tls-verify=false",
            "--authfile",
            str(authfile),
            f"docker://{testbed.source_registry_host}/{ref}",
        ],
        capture_output=True,
        check=True,
    ).stdout
    return [layer["size"] for layer in json.loads(raw)["layers"]]


@pytest.fixture
def ns(request: pytest.FixtureRequest) -> str:
    return f"delta{os.getpid()}-{request.node.name[5:20].replace('_', '-')}-{int(time.time() * 1000) % 100000}"


def test_a_delta_bundle_carries_only_the_new_blobs_and_imports(
    ansible: Any, testbed: Any, testbed_authfile: Path, tmp_path: Path, ns: str
) -> None:
    facts = str(tmp_path / "connected.fact")
    first_dir, second_dir = tmp_path / "ngc-2026-11", tmp_path / "ngc-2026-12"
    first = ansible.module(
        "ngc_image_mirror",
        {
            "registry_url": testbed.source_registry_url,
            "images": OLD,
            "bundle": {"dir": str(first_dir)},
            "facts_file": facts,
        },
        api_key=testbed.api_key,
    )
    assert first.rc == 0, first.stdout
    far = {
        "source": "bundle",
        "source_dir": str(first_dir),
        "registry": {"url": testbed.open_registry_url, "prefix": ns},
        "facts_file": str(tmp_path / "far.fact"),
    }
    assert ansible.module("ngc_image_mirror", far).rc == 0

    tag = f"24.03-py3-{ns[-5:]}"
    new = publish_new_tag(testbed, testbed_authfile, OLD[1], tag)
    refs = OLD + [f"nvidia/pytorch:{tag}"]
    delta = ansible.module(
        "ngc_image_mirror",
        {
            "registry_url": testbed.source_registry_url,
            "images": refs,
            "facts_file": facts,
            "bundle": {"dir": str(second_dir), "since": "last"},
        },
        api_key=testbed.api_key,
    )
    assert delta.rc == 0, delta.stdout
    names = check_bundle_listing(second_dir)
    assert names == {f"{testbed.source_registry_host}/{r}" for r in refs}  # the index names every image
    contents = json.loads((second_dir / "contents.json").read_text())
    assert contents["delta"] is True and contents["bundle"] == "ngc-2026-12"
    carried = {f"sha256:{p.name}" for p in (second_dir / "blobs" / "sha256").iterdir()}
    manifests = {seeded(testbed)[r]["digest"] for r in OLD} | {new["digest"]}
    assert carried - manifests == new["new_blobs"]  # exactly the new layer and config, besides the manifests
    assert {info["bundle"] for info in contents["expected"].values()} == {"ngc-2026-11"}
    assert "not complete on its own" in delta.result["images"][2]["message"]

    # The same delta from the earlier bundle's directory instead of the facts file.
    by_path = ansible.module(
        "ngc_image_mirror",
        {
            "registry_url": testbed.source_registry_url,
            "images": refs,
            "facts_file": str(tmp_path / "other.fact"),
            "bundle": {"dir": str(tmp_path / "by-path"), "since": [str(first_dir)]},
        },
        api_key=testbed.api_key,
    )
    assert by_path.rc == 0, by_path.stdout
    assert {p.name for p in (tmp_path / "by-path" / "blobs" / "sha256").iterdir()} == {
        p.name for p in (second_dir / "blobs" / "sha256").iterdir()
    }

    carried_copy = tmp_path / "usb" / "ngc-2026-12"
    shutil.copytree(second_dir, carried_copy)
    imported = ansible.module("ngc_image_mirror", dict(far, source_dir=str(carried_copy)))
    assert imported.rc == 0, imported.stdout
    assert raw_digest(testbed.open_registry_host, f"{ns}/nvidia/pytorch:{tag}") == new["digest"]
    for ref in OLD:
        assert raw_digest(testbed.open_registry_host, f"{ns}/{ref}") == seeded(testbed)[ref]["digest"]

    # A far side that never imported the first bundle: each image fails, naming a digest and the bundle to import first.
    fresh = ansible.module(
        "ngc_image_mirror",
        dict(
            far,
            source_dir=str(carried_copy),
            facts_file=str(tmp_path / "fresh.fact"),
            registry={"url": testbed.open_registry_url, "prefix": f"{ns}-fresh"},
        ),
    )
    assert fresh.rc != 0
    for image in fresh.result["images"]:
        assert image["status"] == "failed"
        assert "import bundle ngc-2026-11 first" in image["message"] and "sha256:" in image["message"], image["message"]
    with pytest.raises(subprocess.CalledProcessError):
        raw_digest(testbed.open_registry_host, f"{ns}-fresh/nvidia/pytorch:{tag}")


def check_bundle_listing(directory: Path) -> set[str]:
    """The references a (delta) bundle's index names; every manifest it names is there and hashes to its digest."""
    index = json.loads((directory / "index.json").read_text())
    names = set()
    for entry in index["manifests"]:
        data = (directory / "blobs" / "sha256" / entry["digest"].split(":")[1]).read_bytes()
        assert "sha256:" + hashlib.sha256(data).hexdigest() == entry["digest"]
        names.add(entry["annotations"]["org.opencontainers.image.ref.name"])
    return names


def test_a_full_bundle_stays_complete(ansible: Any, testbed: Any, tmp_path: Path) -> None:
    run = ansible.module(
        "ngc_image_mirror",
        {
            "registry_url": testbed.source_registry_url,
            "images": OLD[:1],
            "bundle": {"dir": str(tmp_path / "b")},
            "facts_file": str(tmp_path / "f.fact"),
        },
        api_key=testbed.api_key,
    )
    assert run.rc == 0, run.stdout
    contents = json.loads((tmp_path / "b" / "contents.json").read_text())
    assert contents["delta"] is False and contents["expected"] == {}
    assert len(check_bundle(tmp_path / "b")) == 1


def test_a_far_side_inventory_tells_a_delta_what_is_there(ansible: Any, testbed: Any, tmp_path: Path, ns: str) -> None:
    first_dir = tmp_path / "ngc-2026-10"
    assert (
        ansible.module(
            "ngc_image_mirror",
            {
                "registry_url": testbed.source_registry_url,
                "images": OLD[:1],
                "bundle": {"dir": str(first_dir)},
                "facts_file": str(tmp_path / "a.fact"),
            },
            api_key=testbed.api_key,
        ).rc
        == 0
    )
    inventory = tmp_path / "far" / "inventory.json"
    inventory.parent.mkdir()
    imported = ansible.module(
        "ngc_image_mirror",
        {
            "source": "bundle",
            "source_dir": str(first_dir),
            "inventory_file": str(inventory),
            "registry": {"url": testbed.open_registry_url, "prefix": ns},
            "facts_file": str(tmp_path / "far.fact"),
        },
    )
    assert imported.rc == 0, imported.stdout
    recorded = json.loads(inventory.read_text())
    assert set(recorded["blobs"]) >= set(seeded(testbed)[OLD[0]]["layer_digests"])
    # Carried back: a delta for another connected-side host that has no record of the first export.
    delta_dir = tmp_path / "ngc-2026-11"
    delta = ansible.module(
        "ngc_image_mirror",
        {
            "registry_url": testbed.source_registry_url,
            "images": OLD,
            "facts_file": str(tmp_path / "b.fact"),
            "bundle": {"dir": str(delta_dir), "since": [str(inventory)]},
        },
        api_key=testbed.api_key,
    )
    assert delta.rc == 0, delta.stdout
    carried = {f"sha256:{p.name}" for p in (delta_dir / "blobs" / "sha256").iterdir()}
    assert not carried & set(seeded(testbed)[OLD[0]]["layer_digests"])  # nothing the far side already has
    assert set(seeded(testbed)[OLD[1]]["layer_digests"]) - set(seeded(testbed)[OLD[0]]["layer_digests"]) <= carried
