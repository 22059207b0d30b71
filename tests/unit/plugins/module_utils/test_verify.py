# Copyright (c) airgap.ngc contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A carried bundle checked against its contents record: missing, extra, corrupt and wrong-size files by path, the images
each one breaks, a fast sizes-only mode, a broken record, and delta bundles. Bundles are built here by hand, from the OCI
image-layout spec, not with the collection's writer."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from ansible.module_utils.testing import patch_module_args

from ansible_collections.airgap.ngc.plugins.module_utils._catalog.catalog import inspect_catalog, list_catalog
from ansible_collections.airgap.ngc.plugins.module_utils._types.errors import ConfigError
from ansible_collections.airgap.ngc.plugins.module_utils._copy.validate import validate_catalog
from ansible_collections.airgap.ngc.plugins.module_utils._formats.bundle_check import affected_images, verify_bundle
from ansible_collections.airgap.ngc.plugins.module_utils._types.oci import CHUNK_SIZE
from ansible_collections.airgap.ngc.plugins.modules import ngc_catalog_info

PYTORCH = "nvcr.io/nvidia/pytorch:24.01-py3"
CUDA = "nvcr.io/nvidia/cuda:12.2.0-base-ubuntu22.04"
MANIFEST = "application/vnd.oci.image.manifest.v1+json"
INDEX = "application/vnd.oci.image.index.v1+json"
SHARED = b"shared base layer " * 100


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Bundle:
    """A bundle on disk: two images sharing a base layer, each with a layer of its own; CUDA is multi-platform."""

    def __init__(self, root: Path, own_size: int = 3000) -> None:
        self.dir = root
        self.files: dict[str, bytes] = {}
        self.users: dict[str, set[str]] = {}
        self.images: dict[str, dict[str, Any]] = {}
        (root / "blobs" / "sha256").mkdir(parents=True)
        self.own: dict[str, str] = {}
        self.config: dict[str, str] = {}
        self.manifest: dict[str, str] = {}
        entries = []
        for ref, arches in ((PYTORCH, ["amd64"]), (CUDA, ["amd64", "arm64"])):
            blobs: list[str] = []
            children = []
            for arch in arches:
                own = (f"{ref} {arch} own layer ".encode() * own_size)[:own_size]
                config = json.dumps({"architecture": arch, "os": "linux", "config": {"Labels": {"ref": ref}}}).encode()
                layers = [self.blob(SHARED, ref, blobs), self.blob(own, ref, blobs)]
                manifest = json.dumps(
                    {
                        "schemaVersion": 2,
                        "mediaType": MANIFEST,
                        "config": self.blob(config, ref, blobs, "config"),
                        "layers": layers,
                    }
                ).encode()
                children.append(
                    dict(self.blob(manifest, ref, blobs, MANIFEST), platform={"os": "linux", "architecture": arch})
                )
                self.own.setdefault(ref, layers[1]["digest"])
                self.config.setdefault(ref, f"sha256:{sha(config)}")
            if len(children) == 1:
                top = children[0]
                top.pop("platform")
            else:
                index = json.dumps({"schemaVersion": 2, "mediaType": INDEX, "manifests": children}).encode()
                top = self.blob(index, ref, blobs, INDEX)
            self.manifest[ref] = top["digest"]
            entries.append(dict(top, annotations={"org.opencontainers.image.ref.name": ref}))
            self.images[ref] = {
                "digest": top["digest"],
                "source_digest": top["digest"],
                "media_type": top["mediaType"],
                "blobs": sorted(set(blobs)),
                "written": "2024-02-01T00:00:00Z",
            }
        self.put("oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
        self.put(
            "index.json", json.dumps({"schemaVersion": 2, "mediaType": INDEX, "manifests": entries}, indent=2).encode()
        )
        self.write_record()

    def blob(
        self, data: bytes, ref: str, blobs: list[str], media_type: str = "application/vnd.oci.image.layer.v1.tar+gzip"
    ) -> dict[str, Any]:
        digest = f"sha256:{sha(data)}"
        self.put(f"blobs/sha256/{sha(data)}", data)
        self.users.setdefault(f"blobs/sha256/{sha(data)}", set()).add(ref)
        blobs.append(digest)
        return {"mediaType": media_type, "digest": digest, "size": len(data)}

    def put(self, path: str, data: bytes) -> None:
        self.files[path] = data
        (self.dir / path).write_bytes(data)

    def write_record(self, **extra: Any) -> None:
        record = {
            "schema": 1,
            "source": "nvcr.io",
            "updated": "2024-02-01T00:00:00Z",
            "images": self.images,
            "files": {path: {"size": len(data), "sha256": sha(data)} for path, data in self.files.items()},
        }
        record.update(extra)
        (self.dir / "contents.json").write_text(json.dumps(record, indent=2, sort_keys=True))

    def path(self, digest: str) -> Path:
        return self.dir / "blobs" / "sha256" / digest.split(":")[1]


def flip(path: Path, position: int | None = None) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2 if position is None else position] ^= 0x01
    path.write_bytes(bytes(data))


def by_path(problems: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {p["path"]: p for p in problems}


@pytest.fixture
def bundle(tmp_path: Path) -> Bundle:
    return Bundle(tmp_path / "bundle")


def test_a_sound_bundle_has_no_problem_in_either_mode(bundle: Bundle) -> None:
    assert verify_bundle(str(bundle.dir)) == []
    assert verify_bundle(str(bundle.dir), sizes_only=True) == []


def test_a_missing_blob_is_named_with_the_one_image_that_needs_it(bundle: Bundle) -> None:
    victim = bundle.path(bundle.own[PYTORCH])
    victim.unlink()
    problems = verify_bundle(str(bundle.dir))
    assert problems == [
        {
            "path": f"blobs/sha256/{victim.name}",
            "problem": "missing",
            "detail": problems[0]["detail"],
            "images": [PYTORCH],
        }
    ]
    assert "contents record lists it" in problems[0]["detail"] and "\n" not in problems[0]["detail"]
    assert verify_bundle(str(bundle.dir), sizes_only=True) == problems


def test_a_shared_blob_names_every_image(bundle: Bundle) -> None:
    (bundle.dir / "blobs" / "sha256" / sha(SHARED)).unlink()
    (problem,) = verify_bundle(str(bundle.dir))
    assert problem["problem"] == "missing" and sorted(problem["images"]) == sorted([PYTORCH, CUDA])


def test_an_extra_file_is_reported_but_a_writers_partial_file_is_not(bundle: Bundle) -> None:
    (bundle.dir / "blobs" / "sha256" / ("ab" * 32)).write_bytes(b"smuggled")
    (bundle.dir / "blobs" / "sha256" / f".{'cd' * 32}.partial-4242").write_bytes(b"half a blob")
    (bundle.dir / "blobs" / "notes.txt").write_text("hello")
    problems = by_path(verify_bundle(str(bundle.dir)))
    assert set(problems) == {f"blobs/sha256/{'ab' * 32}", "blobs/notes.txt"}
    assert {p["problem"] for p in problems.values()} == {"extra"}
    assert all(p["images"] == [] for p in problems.values())


def test_a_changed_byte_is_corrupt_and_only_the_full_mode_sees_it(bundle: Bundle) -> None:
    victim = bundle.path(bundle.own[CUDA])
    flip(victim)
    (problem,) = verify_bundle(str(bundle.dir))
    assert problem["path"] == f"blobs/sha256/{victim.name}" and problem["problem"] == "corrupt"
    assert problem["images"] == [CUDA]
    assert "hashes to sha256:" in problem["detail"] and victim.name in problem["detail"]
    assert verify_bundle(str(bundle.dir), sizes_only=True) == []  # a layer's bytes are not read in the fast mode


def test_a_wrong_size_is_caught_in_both_modes(bundle: Bundle) -> None:
    victim = bundle.path(bundle.own[PYTORCH])
    victim.write_bytes(victim.read_bytes()[:-10])
    for sizes_only in (False, True):
        (problem,) = verify_bundle(str(bundle.dir), sizes_only=sizes_only)
        assert problem["problem"] == "size" and problem["images"] == [PYTORCH]
        assert problem["detail"].startswith(f"{len(bundle.files['blobs/sha256/' + victim.name]) - 10} bytes")


def test_the_fast_mode_still_hashes_manifests_and_configs(bundle: Bundle) -> None:
    flip(bundle.path(bundle.config[PYTORCH]))
    flip(bundle.path(bundle.manifest[CUDA]), 5)
    problems = by_path(verify_bundle(str(bundle.dir), sizes_only=True))
    assert {p["problem"] for p in problems.values()} == {"corrupt"}
    assert problems[f"blobs/sha256/{bundle.config[PYTORCH].split(':')[1]}"]["images"] == [PYTORCH]
    assert problems[f"blobs/sha256/{bundle.manifest[CUDA].split(':')[1]}"]["images"] == [CUDA]


def test_a_change_past_the_first_chunk_is_found(tmp_path: Path) -> None:
    big = Bundle(tmp_path / "big", own_size=2 * CHUNK_SIZE + 100)
    victim = big.path(big.own[PYTORCH])
    flip(victim, victim.stat().st_size - 1)
    (problem,) = verify_bundle(str(big.dir))
    assert problem["problem"] == "corrupt" and problem["images"] == [PYTORCH]


def test_a_changed_index_names_the_images_whose_entries_differ_from_the_record(bundle: Bundle) -> None:
    """The import checks each name against the contents record: verify names the same images (one verdict)."""
    index = bundle.dir / "index.json"
    index.write_text(index.read_text().replace('"schemaVersion": 2', '"schemaVersion":  2'))
    (problem,) = verify_bundle(str(bundle.dir))
    assert problem["path"] == "index.json" and problem["problem"] == "size" and problem["images"] == []
    document = json.loads(index.read_text())
    document["manifests"][0] = dict(
        document["manifests"][1], annotations=document["manifests"][0]["annotations"]
    )  # CUDA's, named PYTORCH
    index.write_text(json.dumps(document))
    problems = verify_bundle(str(bundle.dir))
    assert {p["path"] for p in problems} == {"index.json"}, problems
    assert affected_images(problems) == {PYTORCH}
    assert any("the index was changed" in p["detail"] and p["images"] == [PYTORCH] for p in problems)


@pytest.mark.parametrize(
    "record",
    [
        b"{not json",
        b"[]",
        json.dumps({"schema": 7, "files": {}}).encode(),
        json.dumps({"schema": 1, "files": {"../../etc/passwd": {"size": 1, "sha256": "0" * 64}}}).encode(),
    ],
)
def test_a_broken_record_is_a_problem_and_blobs_are_checked_by_name(bundle: Bundle, record: bytes) -> None:
    (bundle.dir / "contents.json").write_bytes(record)
    flip(bundle.path(bundle.own[CUDA]))
    bundle.path(bundle.own[PYTORCH]).unlink()
    (bundle.dir / "blobs" / "sha256" / ("ef" * 32)).write_bytes(b"nobody needs me")
    problems = verify_bundle(str(bundle.dir))
    # no image is imported from a bundle whose record is unusable: verify fails them all, as the import does
    assert (
        problems[0]["path"] == "contents.json"
        and problems[0]["problem"] == "corrupt"
        and problems[0]["images"] == [PYTORCH, CUDA]
    )
    found = {p["path"]: (p["problem"], p["images"]) for p in problems[1:]}
    assert found == {
        f"blobs/sha256/{bundle.own[CUDA].split(':')[1]}": ("corrupt", [CUDA]),
        f"blobs/sha256/{bundle.own[PYTORCH].split(':')[1]}": ("missing", [PYTORCH]),
        f"blobs/sha256/{'ef' * 32}": ("extra", []),
    }


def test_a_missing_record_is_a_problem_and_nothing_else_is(bundle: Bundle) -> None:
    (bundle.dir / "contents.json").unlink()
    assert [(p["path"], p["problem"]) for p in verify_bundle(str(bundle.dir))] == [("contents.json", "missing")]
    assert [(p["path"], p["problem"]) for p in verify_bundle(str(bundle.dir), sizes_only=True)] == [
        ("contents.json", "missing")
    ]


def test_a_blob_the_record_forgot_is_still_found_missing(bundle: Bundle) -> None:
    victim = f"blobs/sha256/{bundle.own[CUDA].split(':')[1]}"
    del bundle.files[victim]
    bundle.write_record()
    (bundle.dir / victim).unlink()
    (problem,) = verify_bundle(str(bundle.dir))
    assert problem["path"] == victim and problem["problem"] == "missing" and problem["images"] == [CUDA]


def test_blobs_a_delta_bundle_expects_from_an_earlier_one_are_no_problem(bundle: Bundle) -> None:
    shared = f"sha256:{sha(SHARED)}"
    del bundle.files[f"blobs/sha256/{sha(SHARED)}"]
    for image in bundle.images.values():
        image["expected"] = {shared: "monthly-2024-01"}
    bundle.write_record(
        delta=True, bundle="monthly-2024-02", expected={shared: {"size": len(SHARED), "bundle": "monthly-2024-01"}}
    )
    bundle.path(shared).unlink()
    assert verify_bundle(str(bundle.dir)) == []
    assert verify_bundle(str(bundle.dir), sizes_only=True) == []
    bundle.path(bundle.own[PYTORCH]).unlink()  # a blob it does carry is still missed
    assert [(p["path"], p["problem"]) for p in verify_bundle(str(bundle.dir))] == [
        (f"blobs/sha256/{bundle.own[PYTORCH].split(':')[1]}", "missing")
    ]


def test_a_directory_that_is_not_there_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        verify_bundle(str(tmp_path / "nowhere"))


# -- through ngc_catalog_info ----------------------------------------------------------------------------------------------
CATALOG = {
    "api_key": None,
    "username": "$oauthtoken",
    "registry_url": "https://nvcr.io",
    "validate_certs": True,
    "ca_path": None,
    "timeout": 60.0,
    "retries": 5,
    "source": "bundle",
    "org": "nvidia",
    "teams": None,
    "api_url": "https://api.ngc.nvidia.com",
    "images": None,
    "strict_name_match": False,
    "image_regex": None,
    "min_version": None,
    "py_version": None,
    "tag_regex": None,
    "tag_exclude_regex": None,
    "latest": None,
    "include_digests": True,
    "include_descriptions": False,
    "parallel": 2,
    "verify": True,
    "verify_mode": "full",
    "fail_on_problems": False,
}


def test_the_catalog_marks_damaged_images_and_still_lists_an_unreadable_one(bundle: Bundle) -> None:
    flip(bundle.path(bundle.manifest[CUDA]))  # its index cannot be read: listed without details
    result = inspect_catalog(dict(CATALOG, source_dir=str(bundle.dir)))
    verified = {i["reference"]: i["verified"] for i in result["images"]}
    assert verified == {PYTORCH: True, CUDA: False}
    assert [p["path"] for p in result["problems"]] == [f"blobs/sha256/{bundle.manifest[CUDA].split(':')[1]}"]
    cuda = next(i for i in result["images"] if i["reference"] == CUDA)
    assert cuda["digest"] is None
    plain = list_catalog(dict(CATALOG, source_dir=str(bundle.dir), verify=False, include_digests=False))
    assert len(plain) == 2 and all("verified" not in i for i in plain)


def test_a_sound_bundle_lists_every_image_verified(bundle: Bundle) -> None:
    result = inspect_catalog(dict(CATALOG, source_dir=str(bundle.dir), verify_mode="sizes"))
    assert result["problems"] == [] and [i["verified"] for i in result["images"]] == [True, True]


def run_module(args: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    with patch_module_args(args):
        with pytest.raises(SystemExit):
            ngc_catalog_info.main()
    return json.loads(capsys.readouterr().out)


def test_the_module_fails_on_problems_only_when_asked(bundle: Bundle, capsys: pytest.CaptureFixture[str]) -> None:
    for digest in (bundle.own[PYTORCH], bundle.own[CUDA]):
        flip(bundle.path(digest))
    (bundle.dir / "blobs" / "sha256" / ("ab" * 32)).write_bytes(b"x")
    (bundle.dir / "blobs" / "sha256" / ("ac" * 32)).write_bytes(b"y")
    args = {"source": "bundle", "source_dir": str(bundle.dir), "verify": True}
    passed = run_module(args, capsys)
    assert not passed.get("failed") and len(passed["problems"]) == 4
    assert {i["verified"] for i in passed["images"]} == {False}
    failed = run_module(dict(args, fail_on_problems=True), capsys)
    assert failed["failed"] is True and failed["problems"] == passed["problems"] and len(failed["images"]) == 2
    assert failed["msg"].startswith(f"bundle {bundle.dir} has 4 problems: blobs/sha256/") and failed["msg"].endswith(
        "and 1 more"
    )
    assert "\n" not in failed["msg"]


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"source": "ngc", "verify": True}, "invalid verify True: it checks a bundle"),
        ({"source": "registry", "verify": True}, "needs source=bundle (source is registry)"),
        ({"verify": False, "verify_mode": "sizes"}, "invalid verify_mode 'sizes'"),
        ({"verify": False, "fail_on_problems": True}, "invalid fail_on_problems True"),
        ({"verify_mode": "quick"}, "invalid verify_mode 'quick'"),
    ],
)
def test_the_verify_options_are_checked_at_the_door(bundle: Bundle, overrides: dict[str, Any], message: str) -> None:
    params = dict(CATALOG, source_dir=str(bundle.dir), **overrides)
    if params["source"] != "bundle":
        params["source_dir"] = None
    with pytest.raises(ConfigError) as caught:
        validate_catalog(params)
    assert message in str(caught.value)


def test_the_verify_options_with_defaults_are_fine_for_every_source(bundle: Bundle) -> None:
    validate_catalog(dict(CATALOG, source="ngc", source_dir=None, verify=False, fail_on_problems=False))
    validate_catalog(dict(CATALOG, source_dir=str(bundle.dir), verify_mode="sizes", fail_on_problems=True))
