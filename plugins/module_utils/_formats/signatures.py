# Copyright (c) airgap.ngc contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private: the signatures and attestations that travel with an image: cosign's tags and OCI 1.1 referrers. Not a public API.

cosign keeps the signature, attestation or SBOM of a manifest under a tag of the same repository named from the
manifest's digest (``sha256-<hex>.sig``, ``.att``, ``.sbom``). An OCI 1.1 artifact names the manifest it is about in
its ``subject``; a registry lists such artifacts at ``/v2/<name>/referrers/<digest>``, or, when it lacks that API,
the client that pushes an artifact keeps an index of them under the tag ``sha256-<hex>`` (the referrers tag schema of
the OCI distribution spec 1.1). The rules are pure; ``update_referrers_tag`` is the one write, through a registry client.
"""

from __future__ import annotations

import json
from typing import Any, Callable, Iterable

from ansible_collections.airgap.ngc.plugins.module_utils._types.errors import AirgapError, NotFoundError
from ansible_collections.airgap.ngc.plugins.module_utils._types.oci import MEDIA_OCI_INDEX, Manifest
from ansible_collections.airgap.ngc.plugins.module_utils._types.reference import is_digest

COSIGN_SUFFIXES = (".sig", ".att", ".sbom")
"""cosign's tags of a digest: signature, attestation, SBOM."""
MAX_DEPTH = 3  # companions of companions (the signature of an SBOM) are followed this deep
MAX_ALGORITHM_CHARS = 32  # the referrers tag schema: <alg>-<ref>, the algorithm at most 32 characters...
MAX_ENCODED_CHARS = 64  # ...and the encoded digest at most 64


def digest_tag(digest: str) -> str:
    """The tag named after a digest, ``sha256-<hex>``: the referrers tag schema's tag and the stem of cosign's tags."""
    if not is_digest(digest):
        raise AirgapError(f"invalid digest {digest!r}: expected sha256: followed by 64 lower-case hex digits")
    algorithm, encoded = digest.split(":", 1)
    return f"{algorithm[:MAX_ALGORITHM_CHARS]}-{encoded[:MAX_ENCODED_CHARS]}"


def cosign_tags(digest: str) -> list[str]:
    """cosign's tags for a digest: ``sha256-<hex>.sig``, ``.att`` and ``.sbom``."""
    stem = digest_tag(digest)
    return [stem + suffix for suffix in COSIGN_SUFFIXES]


def companion_tags(digest: str, tags: Iterable[str]) -> list[str]:
    """The cosign tags of ``digest`` among a repository's ``tags``, in the order signature, attestation, SBOM."""
    held = set(tags)
    return [tag for tag in cosign_tags(digest) if tag in held]


def cosign_subject(tag: str | None) -> str | None:
    """The digest a cosign tag is about (``sha256-<hex>.sig`` -> ``sha256:<hex>``), or None for any other tag."""
    for suffix in COSIGN_SUFFIXES:
        if tag and tag.endswith(suffix):
            stem = tag[: -len(suffix)]
            algorithm, _sep, encoded = stem.partition("-")
            candidate = f"{algorithm}:{encoded}"
            return candidate if is_digest(candidate) and digest_tag(candidate) == stem else None
    return None


def is_companion_tag(tag: str) -> bool:
    """A tag that names a digest rather than an image: cosign's ``sha256-<hex>.sig``/``.att``/``.sbom``, or the referrers
    tag schema's ``sha256-<hex>``."""
    if cosign_subject(tag) is not None:
        return True
    algorithm, _sep, encoded = tag.partition("-")
    return is_digest(f"{algorithm}:{encoded}") and digest_tag(f"{algorithm}:{encoded}") == tag


def companion_kind(tag: str | None, artifact_type: str | None = None) -> str:
    """What a companion is, for the result: cosign's signature, attestation or SBOM (by its tag), or a referrer."""
    names = {".sig": "its cosign signature", ".att": "its cosign attestation", ".sbom": "its cosign SBOM"}
    for suffix, name in names.items():
        if tag and tag.endswith(suffix) and cosign_subject(tag):
            return name
    return f"an OCI 1.1 referrer ({artifact_type})" if artifact_type else "an OCI 1.1 referrer"


def subject_of(data: dict[str, Any]) -> str | None:
    """The digest a manifest's ``subject`` names, or None."""
    subject = data.get("subject")
    digest = subject.get("digest") if isinstance(subject, dict) else None
    return digest if is_digest(digest) else None


def referrer_descriptor(manifest: Manifest) -> dict[str, Any]:
    """The entry of an artifact in a referrers list: its descriptor, its ``artifactType`` (that of the manifest, else
    its config's media type) and its annotations, as the OCI distribution spec 1.1 says."""
    entry: dict[str, Any] = {"mediaType": manifest.media_type, "digest": manifest.digest, "size": manifest.size}
    config = manifest.data.get("config")
    artifact_type = manifest.data.get("artifactType") or (config.get("mediaType") if isinstance(config, dict) else None)
    if artifact_type:
        entry["artifactType"] = artifact_type
    annotations = manifest.data.get("annotations")
    if isinstance(annotations, dict) and annotations:
        entry["annotations"] = dict(annotations)
    return entry


def listed_referrers(index: dict[str, Any]) -> list[dict[str, Any]]:
    """The descriptors a referrers list (the API's answer or the tag schema's index) holds, each once."""
    found: list[dict[str, Any]] = []
    seen: set[str] = set()
    for entry in index.get("manifests") or []:
        if isinstance(entry, dict) and is_digest(entry.get("digest")) and entry["digest"] not in seen:
            seen.add(entry["digest"])
            found.append(entry)
    return found


def with_referrer(index: dict[str, Any] | None, entry: dict[str, Any]) -> dict[str, Any] | None:
    """The referrers index with ``entry`` added (a new index if there was none), or None if it lists that digest already.

    What else the index holds is kept as it is, in its order.
    """
    current = dict(index) if index else {"schemaVersion": 2, "mediaType": MEDIA_OCI_INDEX, "manifests": []}
    manifests = [m for m in current.get("manifests") or [] if isinstance(m, dict)]
    if any(m.get("digest") == entry["digest"] for m in manifests):
        return None
    current["manifests"] = manifests + [entry]
    return current


def index_bytes(index: dict[str, Any]) -> bytes:
    return json.dumps(index, separators=(",", ":")).encode("utf-8")


def update_referrers_tag(
    client: Any, repository: str, manifest: Manifest, source_index: Callable[[str], Manifest | None] | None = None
) -> bool:
    """After pushing ``manifest`` to ``repository``: if it has a ``subject`` and the registry has no referrers API,
    list it in the referrers index tagged ``sha256-<subject hex>`` there. True if the index was written.

    The index is the source's own, byte for byte (``source_index(subject)``: the referrers tag index where the image
    came from, or None), once every manifest it lists is here and the destination's lists nothing else, so that its
    digest is the source's. Until then, or with no such source index, or where the destination's index lists other
    referrers too, the manifest is added to the destination's index (created if missing), which is kept as it is.
    A registry with the API keeps its referrers itself. A tag of that name holding something other than an OCI index
    is not replaced: that is an error naming it.
    """
    subject = subject_of(manifest.data)
    if subject is None or client.referrers(repository, subject) is not None:
        return False
    tag = digest_tag(subject)
    try:
        current: Manifest | None = client.get_manifest(repository, tag)
    except NotFoundError:
        current = None
    if current is not None and current.media_type != MEDIA_OCI_INDEX:
        raise AirgapError(
            f"{client.host}/{repository}:{tag} is a {current.media_type or 'manifest of unknown type'}, not the OCI index "
            f"that lists the referrers of {subject} on a registry without the referrers API: remove that tag, "
            "or set signatures: false"
        )
    theirs = source_index(subject) if source_index is not None else None
    if theirs is not None and _copyable(client, repository, theirs, current, manifest.digest):
        if current is not None and current.digest == theirs.digest:
            return False
        client.put_manifest(repository, tag, theirs.raw, MEDIA_OCI_INDEX)
        return True
    index = with_referrer(current.data if current is not None else None, referrer_descriptor(manifest))
    if index is None:
        return False
    client.put_manifest(repository, tag, index_bytes(index), MEDIA_OCI_INDEX)
    return True


def _copyable(client: Any, repository: str, theirs: Manifest, current: Manifest | None, pushed: str) -> bool:
    """The source's referrers index can stand as the destination's: it is an OCI index listing the manifest just
    pushed, the destination's index (if any) lists nothing it does not, and every manifest it lists is there (a
    registry refuses an index naming a manifest it lacks)."""
    if theirs.media_type != MEDIA_OCI_INDEX or not theirs.is_index:
        return False
    listed = {entry["digest"] for entry in listed_referrers(theirs.data)}
    held = {entry["digest"] for entry in listed_referrers(current.data)} if current is not None else set()
    if pushed not in listed or not held <= listed:
        return False
    return all(client.head_manifest(repository, digest) is not None for digest in sorted(listed - held - {pushed}))
