# Copyright (c) airgap.ngc contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Signatures and attestations: cosign's tag names, the referrers tag schema's index, and which images a registry or
a bundle says travel with an image."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import pytest

from ansible_collections.airgap.ngc.plugins.module_utils._types.errors import AirgapError, NotFoundError
from ansible_collections.airgap.ngc.plugins.module_utils._types.oci import (
    ANNOTATION_REF_NAME,
    MEDIA_OCI_INDEX,
    MEDIA_OCI_MANIFEST,
    OCI_LAYOUT,
    Manifest,
    ManifestDescriptor,
)
from ansible_collections.airgap.ngc.plugins.module_utils._types.plan import SourceImage
from ansible_collections.airgap.ngc.plugins.module_utils._types.reference import ImageReference
from ansible_collections.airgap.ngc.plugins.module_utils._formats.signatures import (
    companion_kind,
    companion_tags,
    cosign_subject,
    cosign_tags,
    digest_tag,
    is_companion_tag,
    referrer_descriptor,
    update_referrers_tag,
    with_referrer,
)
from ansible_collections.airgap.ngc.plugins.module_utils._transports.sources import BundleSource, RegistrySource

HEX = "ab" * 32
DIGEST = f"sha256:{HEX}"
EMPTY = {
    "mediaType": "application/vnd.oci.empty.v1+json",
    "digest": "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a",
    "size": 2,
}


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def manifest(data: dict[str, Any]) -> Manifest:
    raw = json.dumps(data).encode()
    return Manifest(raw=raw, media_type=data.get("mediaType") or MEDIA_OCI_MANIFEST, digest=digest_of(raw), data=data)


def artifact(subject: str, artifact_type: str | None = "application/vnd.example.sbom", **extra: Any) -> Manifest:
    data: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": MEDIA_OCI_MANIFEST,
        "config": EMPTY,
        "layers": [],
        "subject": {"mediaType": MEDIA_OCI_MANIFEST, "digest": subject, "size": 100},
        **extra,
    }
    if artifact_type:
        data["artifactType"] = artifact_type
    return manifest(data)


# Tag names -------------------------------------------------------------------------------------------------------


def test_cosign_tags_are_named_after_the_digest() -> None:
    assert digest_tag(DIGEST) == f"sha256-{HEX}"
    assert cosign_tags(DIGEST) == [f"sha256-{HEX}.sig", f"sha256-{HEX}.att", f"sha256-{HEX}.sbom"]


def test_a_sha512_digest_tag_is_truncated_to_fit_a_tag() -> None:
    tag = digest_tag("sha512:" + "c" * 128)
    assert tag == "sha512-" + "c" * 64 and len(tag) <= 128


def test_what_a_companion_is_said_to_be() -> None:
    assert companion_kind(f"sha256-{HEX}.sig") == "its cosign signature"
    assert companion_kind(f"sha256-{HEX}.att") == "its cosign attestation"
    assert companion_kind(f"sha256-{HEX}.sbom") == "its cosign SBOM"
    assert companion_kind(None, "application/spdx+json") == "an OCI 1.1 referrer (application/spdx+json)"
    assert companion_kind("release.sig") == "an OCI 1.1 referrer"


def test_companion_tags_are_those_of_this_digest_only() -> None:
    other = "cd" * 32
    tags = [
        "24.01-py3",
        f"sha256-{HEX}.sbom",
        f"sha256-{HEX}.sig",
        f"sha256-{other}.sig",
        f"sha256-{HEX}",
        f"sha256-{HEX}.sig.bak",
    ]
    assert companion_tags(DIGEST, tags) == [f"sha256-{HEX}.sig", f"sha256-{HEX}.sbom"]


@pytest.mark.parametrize(
    "tag, subject",
    [
        (f"sha256-{HEX}.sig", DIGEST),
        (f"sha256-{HEX}.att", DIGEST),
        (f"sha256-{HEX}.sbom", DIGEST),
        (f"sha256-{HEX}", None),
        ("24.01-py3", None),
        ("sha256-abc.sig", None),
        (f"sha256-{HEX.upper()}.sig", None),
        (None, None),
    ],
)
def test_the_subject_of_a_cosign_tag(tag: str | None, subject: str | None) -> None:
    assert cosign_subject(tag) == subject


def test_tags_that_name_a_digest_are_not_images() -> None:
    assert (
        is_companion_tag(f"sha256-{HEX}.sig")
        and is_companion_tag(f"sha256-{HEX}")
        and is_companion_tag(f"sha256-{HEX}.sbom")
    )
    assert (
        not is_companion_tag("24.01-py3")
        and not is_companion_tag("sha256-abc")
        and not is_companion_tag(f"sha256-{HEX}.tar")
    )


def test_a_bad_digest_is_refused_with_its_value() -> None:
    with pytest.raises(AirgapError, match="'sha256:xyz'"):
        digest_tag("sha256:xyz")


# The referrers index ---------------------------------------------------------------------------------------------


def test_a_referrer_entry_has_the_artifact_type_and_annotations() -> None:
    sbom = artifact(DIGEST, annotations={"org.opencontainers.image.created": "2026-01-01T00:00:00Z"})
    assert referrer_descriptor(sbom) == {
        "mediaType": MEDIA_OCI_MANIFEST,
        "digest": sbom.digest,
        "size": sbom.size,
        "artifactType": "application/vnd.example.sbom",
        "annotations": {"org.opencontainers.image.created": "2026-01-01T00:00:00Z"},
    }


def test_without_an_artifact_type_the_config_media_type_stands_for_it() -> None:
    entry = referrer_descriptor(artifact(DIGEST, artifact_type=None))
    assert entry["artifactType"] == EMPTY["mediaType"] and "annotations" not in entry


def test_the_index_is_created_extended_and_never_lists_a_digest_twice() -> None:
    first, second = (
        referrer_descriptor(artifact(DIGEST)),
        referrer_descriptor(artifact(DIGEST, "application/spdx+json")),
    )
    index = with_referrer(None, first)
    assert index == {"schemaVersion": 2, "mediaType": MEDIA_OCI_INDEX, "manifests": [first]}
    grown = with_referrer(index, second)
    assert grown is not None and grown["manifests"] == [first, second]
    assert with_referrer(grown, dict(first)) is None
    assert index["manifests"] == [first]  # the index given is not changed


def test_what_else_the_index_holds_is_kept() -> None:
    index = {
        "schemaVersion": 2,
        "mediaType": MEDIA_OCI_INDEX,
        "annotations": {"a": "b"},
        "manifests": [{"digest": "sha256:" + "1" * 64}],
    }
    grown = with_referrer(index, referrer_descriptor(artifact(DIGEST)))
    assert (
        grown is not None
        and grown["annotations"] == {"a": "b"}
        and grown["manifests"][0] == {"digest": "sha256:" + "1" * 64}
    )


class FakeRegistry:
    """Manifests by repository and reference, as a registry without (or with) the referrers API holds them."""

    host = "registry.test"

    def __init__(self, api: bool = False) -> None:
        self.api = api
        self.manifests: dict[tuple[str, str], Manifest] = {}
        self.puts: list[tuple[str, str]] = []
        self.referrer_calls = 0
        self.tag_lists = 0

    def put(self, repository: str, reference: str, item: Manifest) -> None:
        self.manifests[(repository, reference)] = item
        self.manifests[(repository, item.digest)] = item

    # the RegistryClient methods used
    def referrers(self, repository: str, digest: str) -> list[dict[str, Any]] | None:
        self.referrer_calls += 1
        if not self.api:
            return None
        return [
            referrer_descriptor(m)
            for (repo, ref), m in self.manifests.items()
            if repo == repository and ref == m.digest and (m.data.get("subject") or {}).get("digest") == digest
        ]

    def get_manifest(self, repository: str, reference: str) -> Manifest:
        if (repository, reference) not in self.manifests:
            raise NotFoundError(f"404: {repository}:{reference}")
        return self.manifests[(repository, reference)]

    def head_manifest(self, repository: str, reference: str) -> ManifestDescriptor | None:
        found = self.manifests.get((repository, reference))
        return found.descriptor if found else None

    def put_manifest(self, repository: str, reference: str, raw: bytes, media_type: str) -> str:
        self.puts.append((repository, reference))
        self.put(
            repository, reference, Manifest(raw=raw, media_type=media_type, digest=digest_of(raw), data=json.loads(raw))
        )
        return digest_of(raw)

    def list_tags(self, repository: str) -> list[str]:
        self.tag_lists += 1
        return [ref for (repo, ref) in self.manifests if repo == repository and not ref.startswith("sha256:")]


def test_without_the_api_each_pushed_artifact_is_added_to_the_referrers_tag() -> None:
    registry = FakeRegistry()
    sbom, sig = artifact(DIGEST), artifact(DIGEST, "application/vnd.example.signature")
    assert update_referrers_tag(registry, "nvidia/x", sbom) is True
    assert update_referrers_tag(registry, "nvidia/x", sig) is True
    assert update_referrers_tag(registry, "nvidia/x", sbom) is False  # listed already: not written again
    index = registry.get_manifest("nvidia/x", f"sha256-{HEX}")
    assert index.media_type == MEDIA_OCI_INDEX
    assert [e["digest"] for e in index.data["manifests"]] == [sbom.digest, sig.digest]
    assert registry.puts == [("nvidia/x", f"sha256-{HEX}")] * 2


def test_a_registry_with_the_api_or_a_manifest_without_subject_gets_no_tag() -> None:
    registry = FakeRegistry(api=True)
    assert update_referrers_tag(registry, "nvidia/x", artifact(DIGEST)) is False
    plain = FakeRegistry()
    assert (
        update_referrers_tag(plain, "nvidia/x", manifest({"schemaVersion": 2, "config": EMPTY, "layers": []})) is False
    )
    assert registry.puts == plain.puts == [] and plain.referrer_calls == 0


def test_a_tag_of_that_name_holding_an_image_is_not_replaced() -> None:
    registry = FakeRegistry()
    registry.put(
        "nvidia/x",
        f"sha256-{HEX}",
        manifest({"schemaVersion": 2, "mediaType": MEDIA_OCI_MANIFEST, "config": EMPTY, "layers": []}),
    )
    with pytest.raises(
        AirgapError,
        match=re.escape(f"registry.test/nvidia/x:sha256-{HEX} is a {MEDIA_OCI_MANIFEST}, not the OCI index"),
    ):
        update_referrers_tag(registry, "nvidia/x", artifact(DIGEST))
    assert registry.puts == []


def source_index(*referrers: Manifest, spaced: bool = True) -> Manifest:
    """The source's referrers tag index, encoded as the client that pushed it wrote it (with spaces: not ours)."""
    data = {"schemaVersion": 2, "mediaType": MEDIA_OCI_INDEX, "manifests": [referrer_descriptor(m) for m in referrers]}
    raw = json.dumps(data, indent=3 if spaced else None).encode()
    return Manifest(raw=raw, media_type=MEDIA_OCI_INDEX, digest=digest_of(raw), data=data)


def test_the_source_referrers_index_is_copied_byte_for_byte_once_all_it_lists_is_there() -> None:
    registry = FakeRegistry()
    sbom, sig = artifact(DIGEST), artifact(DIGEST, "application/vnd.example.signature")
    theirs = source_index(sbom, sig)
    asked: list[str] = []

    def lookup(subject: str) -> Manifest:
        asked.append(subject)
        return theirs

    registry.put("nvidia/x", sbom.digest, sbom)
    assert (
        update_referrers_tag(registry, "nvidia/x", sbom, lookup) is True
    )  # sig not there yet: an index of ours meanwhile
    assert registry.get_manifest("nvidia/x", f"sha256-{HEX}").digest != theirs.digest
    registry.put("nvidia/x", sig.digest, sig)
    assert update_referrers_tag(registry, "nvidia/x", sig, lookup) is True
    assert (
        registry.get_manifest("nvidia/x", f"sha256-{HEX}").raw == theirs.raw
    )  # the source's bytes: the source's digest
    assert update_referrers_tag(registry, "nvidia/x", sig, lookup) is False  # already the source's: not written again
    assert asked == [DIGEST] * 3


def test_a_destination_index_listing_other_referrers_gets_this_one_merged_in() -> None:
    registry = FakeRegistry()
    local, sbom = artifact(DIGEST, "application/vnd.site.scan"), artifact(DIGEST)
    registry.put("nvidia/x", local.digest, local)
    assert update_referrers_tag(registry, "nvidia/x", local) is True  # the site's own referrer, listed first
    registry.put("nvidia/x", sbom.digest, sbom)
    assert update_referrers_tag(registry, "nvidia/x", sbom, lambda subject: source_index(sbom)) is True
    index = registry.get_manifest("nvidia/x", f"sha256-{HEX}")
    assert [e["digest"] for e in index.data["manifests"]] == [local.digest, sbom.digest]


# Which images travel with an image ---------------------------------------------------------------------------------


def image_manifest(name: str) -> Manifest:
    return manifest(
        {"schemaVersion": 2, "mediaType": MEDIA_OCI_MANIFEST, "config": EMPTY, "layers": [], "annotations": {"n": name}}
    )


@pytest.mark.parametrize("api", [False, True])
def test_a_registry_source_finds_cosign_tags_and_referrers_and_theirs(api: bool) -> None:
    registry = FakeRegistry(api=api)
    image = image_manifest("image")
    registry.put("nvidia/x", "1.0", image)
    signature = image_manifest("signature")
    registry.put("nvidia/x", f"{digest_tag(image.digest)}.sig", signature)
    sbom = artifact(image.digest)
    registry.put("nvidia/x", sbom.digest, sbom)
    sbom_signature = artifact(sbom.digest, "application/vnd.example.signature")
    registry.put("nvidia/x", sbom_signature.digest, sbom_signature)
    if not api:  # the referrers tag schema, as the pushing client keeps it
        update_referrers_tag(registry, "nvidia/x", sbom)
        update_referrers_tag(registry, "nvidia/x", sbom_signature)
    registry.referrer_calls = 0
    source = RegistrySource(registry, "https://registry.test")
    ref = ImageReference.parse("registry.test/nvidia/x:1.0")
    found = source.companions(SourceImage(ref=ref), image.digest)
    assert [str(c.ref) for c in found] == [
        f"registry.test/nvidia/x:{digest_tag(image.digest)}.sig",
        f"registry.test/nvidia/x@{sbom.digest}",
        f"registry.test/nvidia/x@{sbom_signature.digest}",
    ]
    assert registry.tag_lists == 1  # the tag list is read once a run
    assert [source.resolve(c).note for c in found] == [  # type: ignore[union-attr]
        "travels with registry.test/nvidia/x:1.0 as its cosign signature",
        "travels with registry.test/nvidia/x:1.0 as an OCI 1.1 referrer (application/vnd.example.sbom)",
        f"travels with registry.test/nvidia/x@{sbom.digest} as an OCI 1.1 referrer (application/vnd.example.signature)",
    ]
    assert registry.referrer_calls == (4 if api else 1)  # without the API it is asked once, then the tag schema is used
    assert (
        source.companions(SourceImage(ref=ImageReference.parse("registry.test/nvidia/x:1.0")), signature.digest) == []
    )


def test_an_unsigned_image_has_no_companions() -> None:
    registry = FakeRegistry()
    image = image_manifest("image")
    registry.put("nvidia/x", "1.0", image)
    image_ref = SourceImage(ref=ImageReference.parse("registry.test/nvidia/x:1.0"))
    assert RegistrySource(registry, "https://registry.test").companions(image_ref, image.digest) == []


def test_a_failed_listing_names_the_image_and_the_way_out() -> None:
    class Refusing(FakeRegistry):
        def list_tags(self, repository: str) -> list[str]:
            raise AirgapError("401 from registry.test")

    with pytest.raises(
        AirgapError, match=r"signatures and attestations of registry.test/nvidia/x@sha256:.*401.*signatures: false"
    ):
        RegistrySource(Refusing(), "https://registry.test").companions(
            SourceImage(ref=ImageReference.parse("registry.test/nvidia/x:1.0")), DIGEST
        )


def write_layout(directory: Path, entries: list[tuple[str, Manifest]]) -> None:
    blobs = directory / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    (directory / "oci-layout").write_bytes(OCI_LAYOUT)
    index = []
    for name, item in entries:
        (blobs / item.digest.split(":")[1]).write_bytes(item.raw)
        index.append(
            {
                "mediaType": item.media_type,
                "digest": item.digest,
                "size": item.size,
                "annotations": {ANNOTATION_REF_NAME: name},
            }
        )
    (directory / "index.json").write_text(
        json.dumps({"schemaVersion": 2, "mediaType": MEDIA_OCI_INDEX, "manifests": index})
    )


def test_a_bundle_gives_back_what_travelled_with_an_image(tmp_path: Path) -> None:
    image, other = image_manifest("image"), image_manifest("other")
    signature = image_manifest("signature")
    sbom = artifact(image.digest)
    sbom_signature = artifact(sbom.digest, "application/vnd.example.signature")
    host = "nvcr.test/nvidia"
    write_layout(
        tmp_path,
        [
            (f"{host}/x:1.0", image),
            (f"{host}/x:2.0", other),
            (f"{host}/x:{digest_tag(image.digest)}.sig", signature),
            (f"{host}/x@{sbom.digest}", sbom),
            (f"{host}/x@{sbom_signature.digest}", sbom_signature),
            (f"{host}/y@{artifact(image.digest, 'application/x').digest}", artifact(image.digest, "application/x")),
        ],
    )
    source = BundleSource(str(tmp_path))
    assert [str(i.ref) for i in source.images(None)] == [
        f"{host}/x:1.0",
        f"{host}/x:2.0",
    ]  # what travels with them comes along
    one = source.images([f"{host}/x:1.0"])[0]
    assert [str(c.ref) for c in source.companions(one, image.digest)] == [
        f"{host}/x:{digest_tag(image.digest)}.sig",
        f"{host}/x@{sbom.digest}",
        f"{host}/x@{sbom_signature.digest}",
    ]
    assert source.companions(source.images([f"{host}/x:2.0"])[0], other.digest) == []
    found = source.resolve(source.companions(one, image.digest)[1])
    assert found is not None and found.digest == sbom.digest  # a digest-only name resolves
    assert found.note == f"travels with {host}/x:1.0 as an OCI 1.1 referrer (application/vnd.example.sbom)"


def signed_registry() -> tuple[FakeRegistry, Manifest, SourceImage]:
    registry = FakeRegistry()
    image = image_manifest("image")
    registry.put("nvidia/x", "1.0", image)
    registry.put("nvidia/x", f"{digest_tag(image.digest)}.sig", image_manifest("signature"))
    return registry, image, SourceImage(ref=ImageReference.parse("registry.test/nvidia/x:1.0"))


def test_a_listing_still_true_is_the_answer_without_a_tag_list() -> None:
    registry, image, one = signed_registry()
    first = RegistrySource(registry, "https://registry.test")
    found = first.companions(one, image.digest)
    listing = first.listings[one.key]
    signature = registry.manifests[("nvidia/x", f"{digest_tag(image.digest)}.sig")]
    assert listing == {
        "digest": image.digest,
        "found": [
            {
                "ref": str(found[0].ref),
                "digest": signature.digest,
                "kind": "its cosign signature",
                "about": "registry.test/nvidia/x:1.0",
            }
        ],
    }
    registry.tag_lists = registry.referrer_calls = 0
    second = RegistrySource(registry, "https://registry.test")
    again = second.companions(one, image.digest, json.loads(json.dumps(listing)))  # as the facts file gives it back
    assert again == found and registry.tag_lists == 0 and registry.referrer_calls == 0
    assert second.listings == {}  # nothing new to remember
    assert second.resolve(again[0]).note == "travels with registry.test/nvidia/x:1.0 as its cosign signature"  # type: ignore[union-attr]


def test_a_moved_signature_tag_another_digest_or_a_damaged_listing_is_listed_afresh() -> None:
    registry, image, one = signed_registry()
    first = RegistrySource(registry, "https://registry.test")
    first.companions(one, image.digest)
    listing = first.listings[one.key]
    registry.put("other/y", "1.0", image_manifest("signature"))  # the listed digest, but in another repository
    registry.put("nvidia/x", f"{digest_tag(image.digest)}.sig", image_manifest("signature, signed again"))
    sbom = artifact(image.digest)
    registry.put("nvidia/x", sbom.digest, sbom)
    update_referrers_tag(registry, "nvidia/x", sbom)
    for known, subject in [
        (listing, image.digest),
        (dict(listing, digest=DIGEST), image.digest),
        ({"digest": image.digest, "found": [{"ref": "not a reference"}]}, image.digest),
        ({"digest": image.digest, "found": [dict(listing["found"][0], ref="registry.test/other/y:1.0")]}, image.digest),
    ]:
        registry.tag_lists = 0
        source = RegistrySource(registry, "https://registry.test")
        found = source.companions(one, subject, known)
        assert registry.tag_lists == 1
        assert [str(c.ref) for c in found] == [
            f"registry.test/nvidia/x:{digest_tag(image.digest)}.sig",
            f"registry.test/nvidia/x@{sbom.digest}",
        ]
        assert (
            source.listings[one.key]["found"][0]["digest"]
            == registry.manifests[("nvidia/x", f"{digest_tag(image.digest)}.sig")].digest
        )
