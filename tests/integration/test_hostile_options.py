# Copyright (c) airgap.ngc contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Hostile options and carried media meet a refusal, not a write, a removal or a read outside what the operator named:
prune and the archive writer never follow a symbolic link out of their directory; manifests and configs over 4 MiB are
refused from a registry and from a bundle before they are read whole; an inventory_file that is another file is left
alone; parallel_images is bounded by the module; a team that holds nothing is named."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.testbed._push import Pusher

IMAGE = "nvidia/cuda:12.2.0-base-ubuntu22.04"
MIB = 1024 * 1024
MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
INDEX_TYPES = ("application/vnd.oci.image.index.v1+json", "application/vnd.docker.distribution.manifest.list.v2+json")
REF_NAME = "org.opencontainers.image.ref.name"
# Runs the command in its arguments and reports the largest resident size of its process tree on stderr.
PEAK_RSS = (
    "import resource, subprocess, sys\nrc = subprocess.run(sys.argv[1:], check=False).returncode\n"
    "print(f'PEAK_RSS_KB={resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}', file=sys.stderr)\nsys.exit(rc)\n"
)


def facts_of(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("hostile")


@pytest.fixture(scope="module")
def pruned(ansible: Any, testbed: Any, base: Path) -> dict[str, Any]:
    """A run writes IMAGE to archive.dir and enroot.dir; then the facts file gains a record of an image the next run does
    not want, whose files lie below a link in each directory that points outside; the next run prunes."""
    where = base / "prune"
    outside = where / "outside"
    outside.mkdir(parents=True)
    args = {
        "registry_url": testbed.source_registry_url,
        "facts_file": str(where / "mirror.fact"),
        "images": [IMAGE],
        "archive": {"dir": str(where / "archives")},
        "enroot": {"dir": str(where / "sqsh")},
    }
    first = ansible.module("ngc_image_mirror", args, api_key=testbed.api_key)
    assert first.rc == 0, first.stdout
    facts = facts_of(where / "mirror.fact")
    record: dict[str, Any] = {"source_digest": "sha256:" + "1" * 64, "destinations": {}}
    for kind, top in (("archive", where / "archives" / "nvidia"), ("enroot", where / "sqsh")):
        victim = outside / f"{kind}-victim"
        victim.write_bytes(b"precious " + kind.encode())
        (top / "link").symlink_to(outside)
        path = str(top / "link" / victim.name)
        record["destinations"][f"{kind}:{path}"] = {
            "type": kind,
            "path": path,
            "size": victim.stat().st_size,
            "format": "docker",
            "digest": "sha256:" + "1" * 64,
            "written": "2026-01-01T00:00:00Z",
        }
    facts["images"][f"{testbed.source_registry_host}/nvidia/gone:1"] = record
    (where / "mirror.fact").write_text(json.dumps(facts))
    check = ansible.module("ngc_image_mirror", dict(args, prune=True), check=True, api_key=testbed.api_key)
    second = ansible.module("ngc_image_mirror", dict(args, prune=True), api_key=testbed.api_key)
    return {"outside": outside, "check": check, "second": second, "where": where}


def test_prune_removes_nothing_a_link_in_its_directory_leads_out_to(pruned: dict[str, Any]) -> None:
    outside = pruned["outside"]
    for run in (pruned["check"], pruned["second"]):
        assert run.rc == 0, run.stdout
        gone = [r for r in run.result["pruned"] if r["image"].endswith("/nvidia/gone:1")]
        assert sorted(r["kind"] for r in gone) == ["archive", "enroot"]
        for removal in gone:
            assert removal["action"] == "kept" and removal["bytes"] == 0
            assert f"{removal['target']}: it is not inside" in removal["reason"]
            assert f"(it resolves to {outside}/" in removal["reason"]
    assert (outside / "archive-victim").read_bytes() == b"precious archive"
    assert (outside / "enroot-victim").read_bytes() == b"precious enroot"
    assert pruned["second"].result["bytes_freed"] == 0


def test_the_archive_writer_writes_nothing_through_a_link_out_of_archive_dir(
    ansible: Any, testbed: Any, base: Path
) -> None:
    where = base / "write"
    outside, archives = where / "outside", where / "archives"
    outside.mkdir(parents=True)
    archives.mkdir()
    (archives / "nvidia").symlink_to(outside)  # <archive.dir>/nvidia/cuda/<tag>.tar would land in outside/
    run = ansible.module(
        "ngc_image_mirror",
        {
            "registry_url": testbed.source_registry_url,
            "facts_file": str(where / "mirror.fact"),
            "images": [IMAGE],
            "archive": {"dir": str(archives)},
            "save_readme": True,
        },
        api_key=testbed.api_key,
    )
    assert run.rc != 0, run.stdout
    assert run.result["failed_images"] == [f"{testbed.source_registry_host}/{IMAGE}"]
    message = run.result["msg"]
    assert (
        "refused to touch the" in message
        and str(archives / "nvidia" / "cuda") in message
        and "it is not inside" in message
    )
    assert list(outside.iterdir()) == []


def test_a_config_over_4_mib_in_the_source_registry_is_refused_naming_it(
    ansible: Any, testbed: Any, base: Path
) -> None:
    pusher = Pusher(testbed.source_registry_url, "$oauthtoken", testbed.api_key)
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": []},
            "config": {"Labels": {"pad": "x" * (5 * MIB)}},
        }
    ).encode()
    blob = pusher.upload_bytes("nvidia/bigconfig", config)
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": MEDIA_MANIFEST,
            "layers": [],
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": blob.digest,
                "size": len(config),
            },
        }
    ).encode()
    pusher.put_manifest("nvidia/bigconfig", "1", MEDIA_MANIFEST, manifest)
    where = base / "bigconfig"
    run = ansible.module(
        "ngc_image_mirror",
        {
            "registry_url": testbed.source_registry_url,
            "facts_file": str(where / "mirror.fact"),
            "images": ["nvidia/bigconfig:1"],
            "archive": {"dir": str(where / "archives")},
        },
        api_key=testbed.api_key,
    )
    assert run.rc != 0, run.stdout
    assert f"its config {blob.digest} has {len(config)} bytes, more than the 4194304 (4 MiB)" in run.stdout
    assert not list((where / "archives").rglob("*.tar"))


@pytest.fixture(scope="module")
def big_bundle(ansible: Any, testbed: Any, base: Path) -> dict[str, Any]:
    """A bundle of IMAGE whose index entry names a 200 MiB image manifest (its config and layers the real ones, an
    annotation fills it) with the right digest and size, recorded in contents.json as carried."""
    where = base / "bundle"
    bundle = where / "bundle"
    run = ansible.module(
        "ngc_image_mirror",
        {
            "registry_url": testbed.source_registry_url,
            "facts_file": str(where / "export.fact"),
            "images": [IMAGE],
            "bundle": {"dir": str(bundle)},
        },
        api_key=testbed.api_key,
    )
    assert run.rc == 0, run.stdout
    index = json.loads((bundle / "index.json").read_text())
    entry = next(e for e in index["manifests"] if e["annotations"][REF_NAME].endswith(IMAGE))
    data = json.loads((bundle / "blobs" / "sha256" / entry["digest"].split(":")[1]).read_bytes())
    if entry["mediaType"] in INDEX_TYPES:
        child = data["manifests"][0]["digest"]
        data = json.loads((bundle / "blobs" / "sha256" / child.split(":")[1]).read_bytes())
    data = {
        "schemaVersion": 2,
        "mediaType": MEDIA_MANIFEST,
        "config": data["config"],
        "layers": data["layers"],
        "annotations": {"pad": "x" * (200 * MIB)},
    }
    raw = json.dumps(data).encode()
    hex_digest = hashlib.sha256(raw).hexdigest()
    (bundle / "blobs" / "sha256" / hex_digest).write_bytes(raw)
    old = entry["digest"]
    entry.update(mediaType=MEDIA_MANIFEST, digest=f"sha256:{hex_digest}", size=len(raw))
    (bundle / "index.json").write_text(json.dumps(index))
    contents = json.loads((bundle / "contents.json").read_text())
    for image in (contents.get("images") or {}).values():
        if image.get("digest") == old:
            image["digest"] = f"sha256:{hex_digest}"
    files = contents.get("files") or {}
    old_file = files.get(f"blobs/sha256/{old.split(':')[1]}")
    if isinstance(old_file, dict):
        files[f"blobs/sha256/{hex_digest}"] = dict(old_file, size=len(raw), sha256=hex_digest)
    (bundle / "contents.json").write_text(json.dumps(contents))
    return {"dir": bundle, "where": where, "size": len(raw), "digest": f"sha256:{hex_digest}"}


def test_a_bundle_manifest_over_4_mib_is_refused_before_it_is_read_whole(
    ansible: Any, big_bundle: dict[str, Any]
) -> None:
    where = big_bundle["where"]
    args = {
        "source": "bundle",
        "source_dir": str(big_bundle["dir"]),
        "facts_file": str(where / "import.fact"),
        "archive": {"dir": str(where / "archives")},
    }
    argv = [
        sys.executable,
        "-c",
        PEAK_RSS,
        str(Path(sys.executable).parent / "ansible"),
        "localhost",
        "-m",
        "airgap.ngc.ngc_image_mirror",
        "-a",
        json.dumps(args),
    ]
    run = ansible._run(argv)  # pylint: disable=protected-access
    assert run.rc != 0, run.stdout
    assert (
        f"manifest {big_bundle['digest']} in the bundle" in run.stdout and "more than the 4194304 (4 MiB)" in run.stdout
    )
    assert not list((where / "archives").rglob("*.tar"))
    peak = int(run.stderr.rsplit("PEAK_RSS_KB=", 1)[1].split()[0]) * 1024
    assert peak < 160 * MIB, f"{peak / MIB:.0f} MiB resident for a {big_bundle['size'] / MIB:.0f} MiB manifest"


def test_an_inventory_file_that_is_another_json_file_is_refused_and_left_alone(
    ansible: Any, big_bundle: dict[str, Any]
) -> None:
    where = big_bundle["where"]
    other = where / "settings.json"
    other.write_text('{"site": "precious settings"}')
    args = {
        "source": "bundle",
        "source_dir": str(big_bundle["dir"]),
        "facts_file": str(where / "inventory.fact"),
        "archive": {"dir": str(where / "inv-archives")},
        "inventory_file": str(other),
    }
    run = ansible.module("ngc_image_mirror", args)
    assert run.rc != 0
    assert run.result["msg"].startswith(
        f"invalid inventory_file '{other}': it exists and is not an inventory of ngc_image_mirror"
    )
    for same in (where / "inventory.fact", None):
        clash = dict(
            args,
            inventory_file=str(same) if same else str(where / "progress.json"),
            progress_file=str(where / "progress.json"),
        )
        refused = ansible.module("ngc_image_mirror", clash)
        assert refused.rc != 0 and "invalid inventory_file" in refused.result["msg"]
        assert ("it is the facts_file" if same else "it is the progress_file") in refused.result["msg"]
    assert other.read_text() == '{"site": "precious settings"}'
    assert not (where / "inv-archives").exists()


@pytest.mark.parametrize("value", [0, -3, 10000])
def test_parallel_images_out_of_bounds_is_refused_by_the_module(
    ansible: Any, testbed: Any, base: Path, value: int
) -> None:
    run = ansible.module(
        "ngc_image_mirror",
        {
            "registry_url": testbed.source_registry_url,
            "facts_file": str(base / "p.fact"),
            "images": [IMAGE],
            "archive": {"dir": str(base / "p")},
            "parallel_images": value,
        },
        api_key=testbed.api_key,
    )
    assert run.rc != 0
    assert (
        run.result["msg"]
        == f"invalid parallel_images {value}: expected how many images are planned at once, from 1 to 64"
    )


def test_a_team_that_holds_nothing_is_named_in_a_warning(ansible: Any, big_bundle: dict[str, Any]) -> None:
    args = {"source": "bundle", "source_dir": str(big_bundle["dir"]), "teams": ["nosuchteam"], "include_digests": False}
    run = ansible.module("ngc_catalog_info", dict(args, allow_empty=True))
    assert run.rc == 0, run.stdout
    assert run.result["images"] == []
    assert "teams item 1: org 'nvidia' has no repository in team 'nosuchteam'" in run.stdout + run.stderr
    refused = ansible.module("ngc_catalog_info", args)  # an empty selection fails by default, naming the team
    assert refused.rc != 0 and 'teams ["nosuchteam"]' in refused.result["msg"], refused.stdout
