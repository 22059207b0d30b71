# Copyright (c) airgap.ngc contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Both sides of the air gap: export to a bundle, carry it, import it into a registry that never saw the source,
an engine pulls from there and builds on it. Judged by a structural check written apart from the writer, skopeo
and the Docker engine."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_image_mirror import REPO, kill_run, raw_digest, seeded, skopeo

EXPORT = [
    "nvidia/pytorch:24.01-py3",
    "nvidia/pytorch:24.02-py3",
    "nvidia/cuda:12.2.0-base-ubuntu22.04",
    "nvidia/cuda:12.10.0-base-ubuntu22.04",
    "nvidia/tensorflow:24.01-tf2-py3",
    "nvidia/clara/clara-parabricks:4.2.0-1",
]
OCI_TYPED = [
    "nvidia/cuda:12.2.0-base-ubuntu22.04",
    "nvidia/tensorflow:24.01-tf2-py3",
]  # skopeo's oci: finds only these by name
INDEX_TYPES = ("application/vnd.oci.image.index.v1+json", "application/vnd.docker.distribution.manifest.list.v2+json")


def check_bundle(directory: Path) -> dict[str, str]:
    """The structural judge: every index entry and everything it references is present and hashes to its digest.

    Returns {ref.name: digest}. Written from the OCI image-layout spec, not from the writer's code.
    """
    assert json.loads((directory / "oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}
    index = json.loads((directory / "index.json").read_text())

    def blob(digest: str, size: int | None = None) -> bytes:
        algorithm, encoded = digest.split(":")
        data = (directory / "blobs" / algorithm / encoded).read_bytes()
        assert hashlib.new(algorithm, data).hexdigest() == encoded, digest
        assert size is None or len(data) == size, digest
        return data

    def walk(desc: dict[str, Any]) -> None:
        body = json.loads(blob(desc["digest"], desc["size"]))
        if desc["mediaType"] in INDEX_TYPES:
            for child in body["manifests"]:
                walk(child)
            return
        blob(body["config"]["digest"], body["config"]["size"])
        for layer in body["layers"]:
            blob(layer["digest"], layer["size"])

    names = {}
    for entry in index["manifests"]:
        walk(entry)
        names[entry["annotations"]["org.opencontainers.image.ref.name"]] = entry["digest"]
    return names


def args_for(testbed: Any, tmp_path: Path, **extra: Any) -> dict[str, Any]:
    args: dict[str, Any] = {
        "registry_url": testbed.source_registry_url,
        "facts_file": str(tmp_path / "facts" / "mirror.fact"),
    }
    args.update(extra)
    return args


@pytest.fixture
def ns(request: pytest.FixtureRequest) -> str:
    return f"far{os.getpid()}-{request.node.name[5:20].replace('_', '-')}-{int(time.time() * 1000) % 100000}"


@pytest.fixture(scope="module")
def exported(ansible: Any, testbed: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One export of EXPORT to a bundle on the connected side (its result and second run are checked below)."""
    base = tmp_path_factory.mktemp("export")
    bundle = base / "bundle"
    args = args_for(testbed, base, images=EXPORT, bundle={"dir": str(bundle)})
    first = ansible.module("ngc_image_mirror", args, api_key=testbed.api_key)
    second = ansible.module("ngc_image_mirror", args, api_key=testbed.api_key)
    return {"dir": bundle, "first": first, "second": second, "base": base}


def test_export_writes_a_bundle_with_every_digest_kept(exported: dict[str, Any], testbed: Any) -> None:
    first = exported["first"]
    assert first.rc == 0, first.stdout
    assert first.result["changed"] is True
    source = seeded(testbed)
    names = check_bundle(exported["dir"])
    assert names == {f"{testbed.source_registry_host}/{ref}": source[ref]["digest"] for ref in EXPORT}
    for ref in OCI_TYPED:  # skopeo reads the OCI-typed images by name and gets the source's bytes
        raw = skopeo("inspect", "--raw", f"oci:{exported['dir']}:{testbed.source_registry_host}/{ref}")
        assert "sha256:" + hashlib.sha256(raw).hexdigest() == source[ref]["digest"]
    second = exported["second"]
    assert second.rc == 0 and second.result["changed"] is False


def test_a_bundle_holds_each_blob_once_and_a_contents_record(exported: dict[str, Any], testbed: Any) -> None:
    directory = exported["dir"]
    source = seeded(testbed)
    unique = {}
    for ref in EXPORT:
        for manifest in source[ref]["manifests"]:
            unique[manifest["digest"]] = manifest["manifest_size"]
        unique[source[ref]["digest"]] = None
    blob_files = {f"sha256:{p.name}": p.stat().st_size for p in (directory / "blobs" / "sha256").iterdir()}
    assert not [p for p in directory.rglob("*") if ".partial-" in p.name]
    layers = {d for ref in EXPORT for d in source[ref]["layer_digests"]} | {
        d for ref in EXPORT for d in source[ref]["config_digests"]
    }
    assert layers | set(unique) == set(blob_files)  # every blob once, nothing else
    contents = json.loads((directory / "contents.json").read_text())
    for name, entry in contents["files"].items():
        data = (directory / name).read_bytes()
        assert len(data) == entry["size"] and hashlib.sha256(data).hexdigest() == entry["sha256"], name
    assert set(contents["files"]) == {"index.json", "oci-layout"} | {
        f"blobs/sha256/{d.split(':')[1]}" for d in blob_files
    }
    assert {r: i["source_digest"] for r, i in contents["images"].items()} == {
        f"{testbed.source_registry_host}/{ref}": source[ref]["digest"] for ref in EXPORT
    }


def test_import_into_a_far_registry_keeps_every_digest(
    ansible: Any, testbed: Any, exported: dict[str, Any], tmp_path: Path, ns: str, faults: Any
) -> None:
    carried = tmp_path / "usb" / "bundle"
    shutil.copytree(exported["dir"], carried)  # the carry across the gap
    args = {
        "source": "bundle",
        "source_dir": str(carried),
        "registry_url": "http://127.0.0.1:9",  # no source registry behind the gap
        "registry": {"url": testbed.open_registry_url, "prefix": ns},
        "facts_file": str(tmp_path / "far.fact"),
    }
    run = ansible.module("ngc_image_mirror", args)
    assert run.rc == 0, run.stdout
    assert [i["status"] for i in run.result["images"]] == ["copied"] * len(EXPORT)
    assert faults.stats("registry")["total"] == 0  # the source was never asked
    source = seeded(testbed)
    for ref in EXPORT:
        assert raw_digest(testbed.open_registry_host, f"{ns}/{ref}") == source[ref]["digest"], ref
    again = ansible.module("ngc_image_mirror", args)
    assert again.rc == 0 and again.result["changed"] is False
    # Only some images, named without the host, as an operator would.
    some = ansible.module(
        "ngc_image_mirror",
        dict(
            args,
            images=["nvidia/cuda:12.10.0-base-ubuntu22.04"],
            registry={"url": testbed.open_registry_url, "prefix": f"{ns}-some"},
        ),
    )
    assert some.rc == 0, some.stdout
    assert [i["reference"] for i in some.result["images"]] == [
        f"{testbed.source_registry_host}/nvidia/cuda:12.10.0-base-ubuntu22.04"
    ]


def test_a_tampered_blob_fails_its_image_only(
    ansible: Any, testbed: Any, exported: dict[str, Any], tmp_path: Path, ns: str
) -> None:
    carried = tmp_path / "bundle"
    shutil.copytree(exported["dir"], carried)
    source = seeded(testbed)
    victim = source["nvidia/clara/clara-parabricks:4.2.0-1"]["layer_digests"][
        -1
    ]  # its own layer, shared with no other image
    path = carried / "blobs" / "sha256" / victim.split(":")[1]
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    args = {
        "source": "bundle",
        "source_dir": str(carried),
        "registry": {"url": testbed.open_registry_url, "prefix": ns},
        "facts_file": str(tmp_path / "far.fact"),
    }
    run = ansible.module("ngc_image_mirror", args)
    assert run.rc != 0
    status = {i["reference"].split("/", 1)[1]: i for i in run.result["images"]}
    bad = status.pop("nvidia/clara/clara-parabricks:4.2.0-1")
    assert bad["status"] == "failed" and victim in bad["message"] and str(path) in bad["message"], bad["message"]
    assert {i["status"] for i in status.values()} == {"copied"}
    with pytest.raises(subprocess.CalledProcessError):  # nothing was tagged for it
        raw_digest(testbed.open_registry_host, f"{ns}/nvidia/clara/clara-parabricks:4.2.0-1")


@pytest.mark.engine
def test_far_side_engine_pulls_from_the_site_registry_and_builds_on_it(
    ansible: Any, testbed: Any, exported: dict[str, Any], tmp_path: Path, ns: str
) -> None:
    if not testbed.docker_host:
        pytest.skip("this test bed was started without a Docker engine")
    ref = "nvidia/pytorch:24.01-py3"
    args = {
        "source": "bundle",
        "source_dir": str(exported["dir"]),
        "images": [ref],
        "registry": {"url": testbed.open_registry_url, "prefix": ns},
        "docker": {"host": testbed.docker_host, "source": "registry"},
        "facts_file": str(tmp_path / "node.fact"),
    }
    run = ansible.module("ngc_image_mirror", args)
    assert run.rc == 0, run.stdout
    env = dict(os.environ, DOCKER_HOST=testbed.docker_host)
    site = f"{testbed.open_registry_host}/{ns}/{ref}"
    digests = subprocess.run(
        ["docker", "image", "inspect", "-f", "{{json .RepoDigests}}", site],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert seeded(testbed)[ref]["digest"] in digests
    context = tmp_path / "build"
    context.mkdir()
    (context / "train.py").write_text("print('hello from the far side')\n")
    (context / "Dockerfile").write_text(f"FROM {site}\nCOPY train.py /workspace/train.py\n")
    subprocess.run(
        ["docker", "rmi", "-f", site], env=env, capture_output=True, check=False
    )  # the build pulls its base itself
    built = subprocess.run(
        ["docker", "build", "-t", f"site/{ns}/train:1", str(context)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    layers = subprocess.run(
        ["docker", "image", "inspect", "-f", "{{len .RootFS.Layers}}", f"site/{ns}/train:1"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert int(layers) == len(seeded(testbed)[ref]["layer_digests"]) + 1
    subprocess.run(["docker", "rmi", "-f", f"site/{ns}/train:1", site], env=env, capture_output=True, check=False)


def test_catalog_info_lists_a_bundle_with_the_same_filters(
    ansible: Any, exported: dict[str, Any], testbed: Any
) -> None:
    run = ansible.module(
        "ngc_catalog_info",
        {
            "source": "bundle",
            "source_dir": str(exported["dir"]),
            "images": ["pytorch"],
            "strict_name_match": True,
            "latest": 1,
        },
    )
    assert run.rc == 0, run.stdout
    images = run.result["images"]
    assert [i["reference"] for i in images] == [f"{testbed.source_registry_host}/nvidia/pytorch:24.02-py3"]
    assert images[0]["digest"] == seeded(testbed)["nvidia/pytorch:24.02-py3"]["digest"]
    everything = ansible.module("ngc_catalog_info", {"source": "bundle", "source_dir": str(exported["dir"])})
    assert everything.rc == 0 and len(everything.result["images"]) == len(EXPORT)


def _run_and_kill(ansible: Any, args: dict[str, Any], progress: Path, api_key: str | None, watch: Path) -> None:
    argv = [
        str(Path(sys.executable).parent / "ansible"),
        "localhost",
        "-m",
        "airgap.ngc.ngc_image_mirror",
        "-a",
        json.dumps(args),
    ]
    env = dict(ansible.env, **({"NGC_API_KEY": api_key} if api_key else {}))
    proc = subprocess.Popen(
        argv, env=env, cwd=str(REPO), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if (
            progress.exists()
            and json.loads(progress.read_text() or "{}").get("images_done", 0) >= 1
            and list(watch.rglob("*"))
        ):
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be interrupted"
    kill_run(proc, Path(args["facts_file"] + ".lock"))


def test_killed_export_and_import_converge(ansible: Any, testbed: Any, tmp_path: Path, ns: str, faults: Any) -> None:
    bundle = tmp_path / "bundle"
    progress = tmp_path / "progress.json"
    faults.registry(delay=1, count=None, path_contains="/blobs/sha256:")
    export = args_for(
        testbed,
        tmp_path,
        registry_url=testbed.source_proxy_url,
        images=EXPORT,
        bundle={"dir": str(bundle)},
        progress_file=str(progress),
        parallel=1,
    )
    _run_and_kill(ansible, export, progress, testbed.api_key, bundle)
    listed = check_bundle(bundle)  # killed mid-way: still a valid layout of what it lists
    assert len(listed) < len(EXPORT)
    faults.reset()
    resumed = ansible.module("ngc_image_mirror", export, api_key=testbed.api_key)
    assert resumed.rc == 0, resumed.stdout
    assert len(check_bundle(bundle)) == len(EXPORT)
    assert not [p for p in bundle.rglob("*") if ".partial-" in p.name]

    far = {
        "source": "bundle",
        "source_dir": str(bundle),
        "registry": {"url": testbed.open_registry_url, "prefix": ns},
        "parallel": 1,
        "facts_file": str(tmp_path / "far.fact"),
        "progress_file": str(tmp_path / "far-progress.json"),
    }
    registry_dir = Path(testbed.workdir) / "registry-open" / "data" / "docker" / "registry" / "v2" / "repositories" / ns
    _run_and_kill(ansible, far, tmp_path / "far-progress.json", None, registry_dir)
    imported = ansible.module("ngc_image_mirror", far)
    assert imported.rc == 0, imported.stdout
    source = seeded(testbed)
    for ref in EXPORT:
        assert raw_digest(testbed.open_registry_host, f"{ns}/{ref}") == source[ref]["digest"], ref


def test_per_tag_archives_are_imported_too(ansible: Any, testbed: Any, tmp_path: Path, ns: str) -> None:
    archives = tmp_path / "archives"
    refs = ["nvidia/cuda:12.10.0-base-ubuntu22.04", "nvidia/pytorch:24.01-py3"]
    written = ansible.module(
        "ngc_image_mirror",
        args_for(testbed, tmp_path, images=refs, archive={"dir": str(archives)}),
        api_key=testbed.api_key,
    )
    assert written.rc == 0, written.stdout
    args = {
        "source": "archive",
        "source_dir": str(archives),
        "registry": {"url": testbed.open_registry_url, "prefix": ns},
        "facts_file": str(tmp_path / "far.fact"),
    }
    run = ansible.module("ngc_image_mirror", args)
    assert run.rc == 0, run.stdout
    source = seeded(testbed)
    by_ref = {i["reference"].split("/", 1)[1]: i for i in run.result["images"]}
    # A single-platform image keeps its digest; a docker archive of a multi-platform one holds one platform, and says so.
    assert (
        raw_digest(testbed.open_registry_host, f"{ns}/nvidia/pytorch:24.01-py3")
        == source["nvidia/pytorch:24.01-py3"]["digest"]
    )
    amd64 = next(m for m in source[refs[0]]["manifests"] if m["platform"] == "linux/amd64")["digest"]
    assert raw_digest(testbed.open_registry_host, f"{ns}/{refs[0]}") == amd64
    assert "holds one platform of " + source[refs[0]]["digest"] in by_ref[refs[0]]["note"]
