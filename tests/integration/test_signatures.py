# Copyright (c) airgap.ngc contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Signatures and attestations travel with their image: a cosign signature (``sha256-<hex>.sig``) and an OCI 1.1
artifact with a ``subject`` reach the site registry, a bundle, and out of the bundle a registry that never saw the
source, digests unchanged; a registry without the referrers API (CNCF distribution 2.8) gets the referrers tag schema.
Judged by skopeo and the registries' own HTTP API."""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import os
import subprocess
import tarfile
import time
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.integration.test_bundle import check_bundle
from tests.testbed._blobs import image_config, image_manifest
from tests.testbed._push import Pusher

REPOSITORY = "nvidia/signed-demo"
SIMPLESIGNING = "application/vnd.dev.cosign.simplesigning.v1+json"
SBOM_TYPE = "application/vnd.example.sbom"
EMPTY_TYPE = "application/vnd.oci.empty.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def push_signed_image(testbed: Any, tag: str) -> dict[str, Any]:
    """Push ``REPOSITORY:<tag>`` (one small layer), a cosign-format signature of its digest under
    ``sha256-<hex>.sig``, and an OCI 1.1 SBOM artifact whose ``subject`` is the image, pushed by digest and listed in
    the referrers tag schema's index ``sha256-<hex>`` (the source registry, distribution 2.8, has no referrers API, so
    the pushing client keeps that index, as the spec tells it to)."""
    pusher = Pusher(testbed.source_registry_url, "$oauthtoken", testbed.api_key)
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as archive:
        body = f"signed image {tag}\n".encode() * 64
        info = tarfile.TarInfo("opt/signed/README.txt")
        info.size = len(body)
        archive.addfile(info, io.BytesIO(body))
    layer = pusher.upload_bytes(REPOSITORY, gzip.compress(raw.getvalue(), mtime=0))
    config = pusher.upload_bytes(
        REPOSITORY, image_config("amd64", "2026-01-01T00:00:00Z", [digest_of(raw.getvalue())], ["readme"], {"tag": tag})
    )
    media_type, body = image_manifest(True, config, [layer])
    image = pusher.put_manifest(REPOSITORY, tag, media_type, body)
    subject = {"mediaType": media_type, "digest": image, "size": len(body)}
    hex_ = image.split(":", 1)[1]

    # cosign's layout: a simple-signing payload layer carrying the (here fake) signature in an annotation
    payload = json.dumps(
        {
            "critical": {
                "identity": {"docker-reference": f"{testbed.source_registry_host}/{REPOSITORY}"},
                "image": {"docker-manifest-digest": image},
                "type": "cosign container image signature",
            },
            "optional": None,
        }
    ).encode()
    payload_blob = pusher.upload_bytes(REPOSITORY, payload)
    sig_config_body = {
        "architecture": "",
        "os": "",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": [payload_blob.digest]},
    }
    sig_config = pusher.upload_bytes(REPOSITORY, json.dumps(sig_config_body).encode())
    signature = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "size": sig_config.size,
                "digest": sig_config.digest,
            },
            "layers": [
                {
                    "mediaType": SIMPLESIGNING,
                    "size": payload_blob.size,
                    "digest": payload_blob.digest,
                    "annotations": {"dev.cosignproject.cosign/signature": base64.b64encode(os.urandom(64)).decode()},
                }
            ],
        }
    ).encode()
    sig_digest = pusher.put_manifest(REPOSITORY, f"sha256-{hex_}.sig", OCI_MANIFEST, signature)

    # an OCI 1.1 artifact about the image, and the referrers index that lists it
    empty = pusher.upload_bytes(REPOSITORY, b"{}")
    spdx = pusher.upload_bytes(
        REPOSITORY, json.dumps({"spdxVersion": "SPDX-2.3", "name": f"{REPOSITORY}:{tag}", "packages": []}).encode()
    )
    sbom = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": SBOM_TYPE,
            "config": {"mediaType": EMPTY_TYPE, "size": empty.size, "digest": empty.digest},
            "layers": [{"mediaType": "application/spdx+json", "size": spdx.size, "digest": spdx.digest}],
            "subject": subject,
            "annotations": {"org.opencontainers.image.created": "2026-01-01T00:00:00Z"},
        }
    ).encode()
    sbom_digest = pusher.put_manifest(REPOSITORY, digest_of(sbom), OCI_MANIFEST, sbom)
    index = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [
                {
                    "mediaType": OCI_MANIFEST,
                    "digest": sbom_digest,
                    "size": len(sbom),
                    "artifactType": SBOM_TYPE,
                    "annotations": {"org.opencontainers.image.created": "2026-01-01T00:00:00Z"},
                }
            ],
        }
    ).encode()
    pusher.put_manifest(REPOSITORY, f"sha256-{hex_}", OCI_INDEX, index)
    pusher.session.close()
    return {
        "ref": f"{REPOSITORY}:{tag}",
        "tag": tag,
        "digest": image,
        "hex": hex_,
        "sig": sig_digest,
        "sbom": sbom_digest,
        "blobs": {layer.digest, config.digest, payload_blob.digest, sig_config.digest, empty.digest, spdx.digest},
    }


@pytest.fixture(scope="module")
def signed(testbed: Any) -> dict[str, Any]:
    return push_signed_image(testbed, f"1.0-{os.getpid()}-{int(time.time() * 1000) % 100000}")


@pytest.fixture
def ns(request: pytest.FixtureRequest) -> str:
    return f"sig{os.getpid()}-{request.node.name[5:22].replace('_', '-')}-{int(time.time() * 1000) % 100000}"


def raw(reference: str, authfile: Path | None = None) -> bytes:
    extra = ["--authfile", str(authfile)] if authfile else []
    return subprocess.run(
        ["skopeo", "inspect", "--raw", "--tls-verify=false", *extra, f"docker://{reference}"],
        capture_output=True,
        check=True,
    ).stdout


def present(reference: str, authfile: Path | None = None) -> bool:
    try:
        raw(reference, authfile)
    except subprocess.CalledProcessError:
        return False
    return True


def expected_refs(testbed: Any, signed: dict[str, Any]) -> list[str]:
    base = f"{testbed.source_registry_host}/{REPOSITORY}"
    return [f"{base}:{signed['tag']}", f"{base}:sha256-{signed['hex']}.sig", f"{base}@{signed['sbom']}"]


def check_far_side(
    host: str,
    repository: str,
    signed: dict[str, Any],
    authfile: Path | None = None,
    auth: tuple[str, str] | None = None,
) -> None:
    """The image, its signature and its artifact are on ``host`` with the source's digests (skopeo), the registry has no
    referrers API (so the tag schema is needed), and the referrers index tag lists the artifact."""
    where = f"{host}/{repository}"
    assert digest_of(raw(f"{where}:{signed['tag']}", authfile)) == signed["digest"]
    assert digest_of(raw(f"{where}:sha256-{signed['hex']}.sig", authfile)) == signed["sig"]
    assert digest_of(raw(f"{where}@{signed['sbom']}", authfile)) == signed["sbom"]
    sbom = json.loads(raw(f"{where}@{signed['sbom']}", authfile))
    assert sbom["subject"]["digest"] == signed["digest"] and sbom["artifactType"] == SBOM_TYPE
    answer = requests.get(f"http://{host}/v2/{repository}/referrers/{signed['digest']}", auth=auth, timeout=30)
    assert answer.status_code == 404  # distribution 2.8: no referrers API, hence the tag schema below
    index = json.loads(raw(f"{where}:sha256-{signed['hex']}", authfile))
    assert index["mediaType"] == OCI_INDEX
    assert [(e["digest"], e.get("artifactType")) for e in index["manifests"]] == [(signed["sbom"], SBOM_TYPE)]


def test_a_mirror_carries_the_signature_and_the_referrer(
    ansible: Any, testbed: Any, signed: dict[str, Any], tmp_path: Path, ns: str
) -> None:
    args = {
        "registry_url": testbed.source_registry_url,
        "images": [signed["ref"]],
        "facts_file": str(tmp_path / "mirror.fact"),
        "registry": {"url": testbed.open_registry_url, "prefix": ns},
    }
    planned = ansible.module("ngc_image_mirror", args, api_key=testbed.api_key, check=True)
    assert planned.rc == 0, planned.stdout
    assert [(i["reference"], i["status"]) for i in planned.result["images"]] == [
        (r, "would copy") for r in expected_refs(testbed, signed)
    ]
    assert not present(
        f"{testbed.open_registry_host}/{ns}/{REPOSITORY}:sha256-{signed['hex']}.sig"
    )  # check mode wrote nothing

    run = ansible.module("ngc_image_mirror", args, api_key=testbed.api_key)
    assert run.rc == 0, run.stdout
    assert [(i["reference"], i["status"]) for i in run.result["images"]] == [
        (r, "copied") for r in expected_refs(testbed, signed)
    ]
    assert [i["digest"] for i in run.result["images"]] == [signed["digest"], signed["sig"], signed["sbom"]]
    image_ref = expected_refs(testbed, signed)[0]
    assert [i.get("note") for i in run.result["images"]] == [
        None,
        f"travels with {image_ref} as its cosign signature",
        f"travels with {image_ref} as an OCI 1.1 referrer ({SBOM_TYPE})",
    ]
    check_far_side(testbed.open_registry_host, f"{ns}/{REPOSITORY}", signed)
    again = ansible.module("ngc_image_mirror", args, api_key=testbed.api_key)
    assert again.rc == 0 and again.result["changed"] is False, again.stdout
    index = json.loads(raw(f"{testbed.open_registry_host}/{ns}/{REPOSITORY}:sha256-{signed['hex']}"))
    assert len(index["manifests"]) == 1  # not listed twice


def test_the_referrers_index_is_the_sources_byte_for_byte(
    ansible: Any, testbed: Any, testbed_authfile: Path, signed: dict[str, Any], tmp_path: Path, ns: str
) -> None:
    """A digest audit of the mirror finds the referrers tag index the source holds, not one encoded again."""
    args = {
        "registry_url": testbed.source_registry_url,
        "images": [signed["ref"]],
        "facts_file": str(tmp_path / "mirror.fact"),
        "registry": {"url": testbed.open_registry_url, "prefix": ns},
    }
    run = ansible.module("ngc_image_mirror", args, api_key=testbed.api_key)
    assert run.rc == 0, run.stdout
    tag = f"{REPOSITORY}:sha256-{signed['hex']}"
    theirs = raw(f"{testbed.source_registry_host}/{tag}", testbed_authfile)
    assert digest_of(raw(f"{testbed.open_registry_host}/{ns}/{tag}")) == digest_of(theirs)
    answer = requests.head(
        f"http://{testbed.open_registry_host}/v2/{ns}/{REPOSITORY}/manifests/sha256-{signed['hex']}",
        headers={"Accept": OCI_INDEX},
        timeout=30,
    )
    assert answer.headers["Docker-Content-Digest"] == digest_of(theirs)


def test_signatures_false_copies_neither(
    ansible: Any, testbed: Any, signed: dict[str, Any], tmp_path: Path, ns: str
) -> None:
    args = {
        "registry_url": testbed.source_registry_url,
        "images": [signed["ref"]],
        "facts_file": str(tmp_path / "mirror.fact"),
        "registry": {"url": testbed.open_registry_url, "prefix": ns},
        "signatures": False,
    }
    run = ansible.module("ngc_image_mirror", args, api_key=testbed.api_key)
    assert run.rc == 0, run.stdout
    assert [i["reference"] for i in run.result["images"]] == expected_refs(testbed, signed)[:1]
    where = f"{testbed.open_registry_host}/{ns}/{REPOSITORY}"
    assert digest_of(raw(f"{where}:{signed['tag']}")) == signed["digest"]
    for absent in (f":sha256-{signed['hex']}.sig", f"@{signed['sbom']}", f":sha256-{signed['hex']}"):
        assert not present(where + absent), absent


def test_a_bundle_carries_them_to_a_registry_that_never_saw_the_source(
    ansible: Any, testbed: Any, testbed_authfile: Path, signed: dict[str, Any], tmp_path: Path, ns: str
) -> None:
    bundle = tmp_path / "bundle"
    export = ansible.module(
        "ngc_image_mirror",
        {
            "registry_url": testbed.source_registry_url,
            "images": [signed["ref"]],
            "facts_file": str(tmp_path / "export.fact"),
            "bundle": {"dir": str(bundle)},
        },
        api_key=testbed.api_key,
    )
    assert export.rc == 0, export.stdout
    names = check_bundle(bundle)  # a valid layout: every entry and what it references hashes to its digest
    assert names == dict(zip(expected_refs(testbed, signed), (signed["digest"], signed["sig"], signed["sbom"])))
    assert signed["blobs"] <= {f"sha256:{p.name}" for p in (bundle / "blobs" / "sha256").iterdir()}

    far = {
        "source": "bundle",
        "source_dir": str(bundle),
        "facts_file": str(tmp_path / "far.fact"),
        "registry": {
            "url": testbed.basic_registry_url,
            "username": testbed.basic_username,
            "password": testbed.basic_password,
            "prefix": ns,
        },
    }
    imported = ansible.module("ngc_image_mirror", far)
    assert imported.rc == 0, imported.stdout
    assert [i["reference"] for i in imported.result["images"]] == expected_refs(testbed, signed)
    check_far_side(
        testbed.basic_registry_host,
        f"{ns}/{REPOSITORY}",
        signed,
        testbed_authfile,
        (testbed.basic_username, testbed.basic_password),
    )
    without = ansible.module(
        "ngc_image_mirror",
        dict(
            far,
            signatures=False,
            facts_file=str(tmp_path / "far2.fact"),
            registry=dict(far["registry"], prefix=f"{ns}-bare"),
        ),
    )
    assert without.rc == 0, without.stdout
    assert [i["reference"] for i in without.result["images"]] == expected_refs(testbed, signed)[:1]
    assert not present(
        f"{testbed.basic_registry_host}/{ns}-bare/{REPOSITORY}:sha256-{signed['hex']}.sig", testbed_authfile
    )


def push_cosign_tag(testbed: Any, signed: dict[str, Any], suffix: str, text: str) -> str:
    """Push a small manifest under cosign's ``sha256-<hex>.<suffix>`` for the signed image (a new attestation, or the
    signature tag again as cosign rewrites it when it adds a signature); returns its digest."""
    pusher = Pusher(testbed.source_registry_url, "$oauthtoken", testbed.api_key)
    empty = pusher.upload_bytes(REPOSITORY, b"{}")
    statement = pusher.upload_bytes(
        REPOSITORY, json.dumps({"_type": "https://in-toto.io/Statement/v1", "note": text}).encode()
    )
    body = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "size": empty.size,
                "digest": empty.digest,
            },
            "layers": [
                {
                    "mediaType": "application/vnd.dsse.envelope.v1+json",
                    "size": statement.size,
                    "digest": statement.digest,
                }
            ],
        }
    ).encode()
    digest = pusher.put_manifest(REPOSITORY, f"sha256-{signed['hex']}.{suffix}", OCI_MANIFEST, body)
    pusher.session.close()
    return digest


def test_an_earlier_listing_is_trusted_for_signatures_relist_after(
    ansible: Any, testbed: Any, tmp_path: Path, ns: str
) -> None:
    """A listing younger than signatures_relist_after stands for the tag list: an attestation first pushed after the
    mirror waits for the listing to age (0 lists at once); a known signature tag pushed again is copied at once."""
    signed = push_signed_image(testbed, f"2.0-{os.getpid()}-{int(time.time() * 1000) % 100000}")
    facts = tmp_path / "mirror.fact"
    args = {
        "registry_url": testbed.source_registry_url,
        "images": [signed["ref"]],
        "facts_file": str(facts),
        "registry": {"url": testbed.open_registry_url, "prefix": ns},
    }
    where = f"{testbed.open_registry_host}/{ns}/{REPOSITORY}"
    first = ansible.module("ngc_image_mirror", args, api_key=testbed.api_key)
    assert first.rc == 0, first.stdout
    listing = json.loads(facts.read_text())["images"][expected_refs(testbed, signed)[0]]["companions"]
    assert listing["digest"] == signed["digest"] and [e["digest"] for e in listing["found"]] == [
        signed["sig"],
        signed["sbom"],
    ]

    attestation = push_cosign_tag(testbed, signed, "att", "pushed after the first mirror")
    trusted = ansible.module("ngc_image_mirror", args, api_key=testbed.api_key)
    assert trusted.rc == 0 and trusted.result["changed"] is False, trusted.stdout
    assert not present(f"{where}:sha256-{signed['hex']}.att")

    relisted = ansible.module("ngc_image_mirror", dict(args, signatures_relist_after=0), api_key=testbed.api_key)
    assert relisted.rc == 0 and relisted.result["changed"] is True, relisted.stdout
    assert [(i["reference"], i["status"]) for i in relisted.result["images"] if i["status"] == "copied"] == [
        (f"{testbed.source_registry_host}/{REPOSITORY}:sha256-{signed['hex']}.att", "copied")
    ]
    assert digest_of(raw(f"{where}:sha256-{signed['hex']}.att")) == attestation

    resigned = push_cosign_tag(testbed, signed, "sig", "a second signature")
    again = ansible.module("ngc_image_mirror", args, api_key=testbed.api_key)
    assert again.rc == 0 and again.result["changed"] is True, again.stdout
    assert digest_of(raw(f"{where}:sha256-{signed['hex']}.sig")) == resigned
    remembered = json.loads(facts.read_text())["images"][expected_refs(testbed, signed)[0]]["companions"]
    assert resigned in [e["digest"] for e in remembered["found"]] and testbed.api_key not in facts.read_text()


def test_a_bad_signatures_relist_after_is_refused_by_name(ansible: Any, testbed: Any, tmp_path: Path) -> None:
    run = ansible.module(
        "ngc_image_mirror",
        {
            "registry_url": testbed.source_registry_url,
            "images": ["nvidia/cuda:12.2.0-base-ubuntu22.04"],
            "registry": {"url": testbed.open_registry_url},
            "signatures_relist_after": -5,
            "facts_file": str(tmp_path / "f.fact"),
        },
        api_key=testbed.api_key,
    )
    assert run.rc != 0 and "signatures_relist_after" in run.result["msg"] and "-5" in run.result["msg"], run.stdout
    assert not (tmp_path / "f.fact").exists()


def test_a_non_boolean_signatures_is_refused_by_name(ansible: Any, testbed: Any, tmp_path: Path) -> None:
    run = ansible.module(
        "ngc_image_mirror",
        {
            "registry_url": testbed.source_registry_url,
            "images": ["nvidia/cuda:12.2.0-base-ubuntu22.04"],
            "registry": {"url": testbed.open_registry_url},
            "signatures": "sometimes",
            "facts_file": str(tmp_path / "f.fact"),
        },
        api_key=testbed.api_key,
    )
    assert run.rc != 0 and "signatures" in run.result["msg"], run.stdout


def test_catalog_info_says_which_tags_are_signed(ansible: Any, testbed: Any, signed: dict[str, Any]) -> None:
    run = ansible.module(
        "ngc_catalog_info",
        {"source": "registry", "registry_url": testbed.source_registry_url, "images": ["signed-demo", "cuda"]},
        api_key=testbed.api_key,
    )
    assert run.rc == 0, run.stdout
    entries = {(i["name"], i["tag"]): i for i in run.result["images"]}
    assert entries[(REPOSITORY, signed["tag"])]["signed"] is True
    assert not [
        tag for name, tag in entries if tag.startswith("sha256-")
    ]  # the signature and referrers tags are not images
    unsigned = [i for (name, _tag), i in entries.items() if name == "nvidia/cuda"]
    assert unsigned and {i["signed"] for i in unsigned} == {False}
