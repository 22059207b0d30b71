# Copyright (c) airgap.ngc contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private: the bundle destination, full or delta: what the far side already has is not carried again. Not a public API.

A delta bundle (``bundle.since``) still names every selected image and every blob its images need in ``index.json``
and ``contents.json``, but holds only the blobs the far side lacks; the others are listed under ``expected`` with the
earlier bundle that carried them. What the far side has comes from the facts file's record of earlier exports
(``since: last``) or from earlier bundles' contents records given by path.
"""

from __future__ import annotations

import json
import os
from typing import Any

from ansible_collections.airgap.ngc.plugins.module_utils._formats.bundle import (
    CONTENTS_FILE,
    DIGEST,
    BundleWriter,
    blob_file,
    bundle_entry,
    contents_from,
    find_volumes,
    metadata_dir,
    parse_size,
    removable_blobs,
)
from ansible_collections.airgap.ngc.plugins.module_utils._formats.carried import (
    RECORD_LIMIT,
    CarriedError,
    MapOf,
    Required,
    read_inside,
    schema_problem,
)
from ansible_collections.airgap.ngc.plugins.module_utils._transports.base import (
    BlobSink,
    Committed,
    ImageWrite,
    PlanContext,
    ResolvedImage,
    fetched,
)
from ansible_collections.airgap.ngc.plugins.module_utils._transports.destinations import Selection
from ansible_collections.airgap.ngc.plugins.module_utils._types.errors import ConfigError
from ansible_collections.airgap.ngc.plugins.module_utils._types.oci import (
    ANNOTATION_REF_NAME,
    SOURCE_DIGEST_ANNOTATION,
    ImageContent,
    Manifest,
    blob_sizes,
    compute_digest,
    descriptor,
)
from ansible_collections.airgap.ngc.plugins.module_utils._types.plan import SourceImage, Step
from ansible_collections.airgap.ngc.plugins.module_utils._state.facts import StateStore, utc_now


INVENTORY_KIND = "airgap.ngc far-side inventory"
INVENTORY_RECORD = {
    "kind": Required(str),
    "schema": int,
    "images": Required(MapOf(DIGEST)),
    "blobs": Required(MapOf(str, key=DIGEST)),
    "written": str,
}


def bundle_name(directory: str) -> str:
    """How a bundle is named in messages and records: its directory's name (``ngc-2026-11``)."""
    return os.path.basename(os.path.normpath(directory))


def known_from_facts(store: StateStore, directory: str) -> dict[str, dict[str, str]]:
    """Blobs the far side has from earlier exports recorded in the facts file (any bundle but ``directory``).

    Returns {digest: {"bundle": the bundle that carried it, "image": an image that uses it}}.
    """
    known: dict[str, dict[str, str]] = {}
    here = os.path.abspath(directory)
    records = sorted(
        (
            (entry.get("written") or "", key, entry)
            for key, record in store.images().items()
            for entry in (record.get("destinations") or {}).values()
            if isinstance(entry, dict) and entry.get("type") == "bundle" and entry.get("dir") != here
        ),
        key=lambda r: r[0],
    )
    for _when, key, entry in records:  # oldest first: a blob is credited to the bundle that first carried it
        expected = entry.get("expected") or {}
        for digest in entry.get("blobs") or []:
            known.setdefault(
                digest,
                {"bundle": expected.get(digest) or entry.get("bundle") or bundle_name(entry["dir"]), "image": key},
            )
    return known


def known_from_paths(paths: list[str]) -> dict[str, dict[str, str]]:
    """Blobs the far side has from earlier bundles given by path (their directories or contents.json files), or from
    far-side inventories. Each is carried media: one that cannot be read, or does not follow its schema, fails the
    run (taking it for "the far side has nothing" would write a full bundle, or miss blobs)."""
    known: dict[str, dict[str, str]] = {}
    for path in paths:
        real = os.path.realpath(path)  # the operator named it: a link to it is followed, nothing inside it
        directory, name = (metadata_dir(real), CONTENTS_FILE) if os.path.isdir(real) else os.path.split(real)
        record_path = os.path.join(directory, name)
        hint = "give an earlier bundle's directory, its contents.json, or an inventory_file of the far side"
        try:
            record = json.loads(
                read_inside(directory, name, RECORD_LIMIT, "contents record or inventory").decode("utf-8")
            )
        except CarriedError as exc:
            raise ConfigError(f"bundle.since: cannot read {path}: {exc}; {hint}") from None
        except (UnicodeDecodeError, ValueError) as exc:
            raise ConfigError(
                f"bundle.since: {record_path} is not JSON ({str(exc).splitlines()[0]}): it is damaged or cut short; {hint}"
            ) from None
        if isinstance(record, dict) and record.get("kind") == INVENTORY_KIND:
            problem = schema_problem(record, INVENTORY_RECORD, os.path.basename(record_path))
            if problem:
                raise ConfigError(
                    f"bundle.since: {record_path} is not a usable far-side inventory: {problem}; write it again on the far side"
                )
            where = f"the far side (inventory {os.path.basename(record_path)} of {record.get('written')})"
            for digest, ref in record["blobs"].items():
                known.setdefault(digest, {"bundle": where, "image": ref})
            continue
        if not isinstance(record, dict) or "images" not in record:
            raise ConfigError(
                f"bundle.since: {record_path} is neither a bundle contents record nor a far-side inventory; {hint}"
            )
        contents = contents_from(record, record_path)
        problem = contents.problem or next(iter({**contents.bad_files, **contents.bad_images}.values()), None)
        if problem or contents.record is None:
            raise ConfigError(f"bundle.since: {record_path} cannot be used: {problem}")
        name = contents.record.get("bundle") or bundle_name(os.path.dirname(record_path))
        for ref, image in contents.record["images"].items():
            expected = image.get("expected") or {}
            for digest in image.get("blobs") or []:
                known.setdefault(digest, {"bundle": expected.get(digest) or name, "image": ref})
    return known


def held_blob(directory: str, digest: str, size: int) -> bool:
    """A blob file of that size is in the bundle directory or one of its volume directories (read only)."""
    places = (
        [directory] + [os.path.join(directory, v) for v in sorted(os.listdir(directory)) if v.startswith("vol-")]
        if os.path.isdir(directory)
        else []
    )
    for place in places:
        try:
            if os.stat(blob_file(place, digest)).st_size == size:
                return True
        except OSError:
            continue
    return False


class BundleDestination(Selection):
    """A bundle: one OCI image layout directory holding every image once and every blob once (or only new blobs)."""

    kind = "bundle"
    carries_companions = True
    measures_space = True
    dir: str
    shares_blobs = True  # one file per blob: what another image wrote is there for the next (``_BundleWrite.holds``)
    carries_charts = True  # a Helm chart is an OCI artifact here

    def __init__(self, spec: dict[str, Any], platforms: list[str] | None, source_name: str) -> None:
        self.dir = os.path.abspath(spec["dir"])
        self.name = bundle_name(self.dir)
        self.since = spec.get("since")
        self.volume_size = parse_size(spec["volume_size"]) if spec.get("volume_size") else None
        self.platforms = platforms
        self.source_name = source_name
        self._writer: BundleWriter | None = None
        # earlier records given by path are read now: one that cannot be used fails the run before anything is planned
        self._known: dict[str, dict[str, str]] | None = (
            known_from_paths(list(self.since)) if self.since and self.since != "last" else None
        )
        self._counted: set[str] = set()

    def writer(self) -> BundleWriter:
        if self._writer is None:
            self._writer = BundleWriter(self.dir, self.source_name, self.volume_size)
        return self._writer

    def known(self, store: StateStore) -> dict[str, dict[str, str]]:
        """What the far side already has (empty for a full bundle), read once a run."""
        if self._known is None:
            if not self.since:
                self._known = {}
            elif self.since == "last":
                self._known = known_from_facts(store, self.dir)
            else:
                self._known = known_from_paths(list(self.since))
        return self._known

    def target(self, image: SourceImage) -> str:
        return f"{self.dir}#{image.ref}"

    def plan(self, image: SourceImage, found: ResolvedImage, ctx: PlanContext) -> Step:
        self.known(ctx.store)
        entry = bundle_entry(self.dir, str(image.ref))
        return ctx.step(
            self.kind, self.target(image), self.want(image, found.digest, ctx), entry["digest"] if entry else None
        )

    def owns(self, dest_key: str, record: dict[str, Any]) -> bool:
        return record.get("type") == "bundle" and dest_key.startswith(f"{self.kind}:{self.dir}#")

    def remove(
        self, key: str, record: dict[str, Any], wanted: dict[str, dict[str, Any]], check_mode: bool
    ) -> tuple[str, str, int]:
        """Take the image out of the bundle's index, and the blobs no other image of the bundle needs."""
        reference = record.get("reference") or key
        entry = bundle_entry(self.dir, reference)
        if entry is None:
            return "already gone", f"{reference} is no longer in the bundle", 0
        if record.get("digest") and entry.get("digest") != record["digest"]:
            return (
                "kept",
                f"re-pushed since: the bundle's {reference} is {entry.get('digest')}, not the {record['digest']} written",
                0,
            )
        if find_volumes(self.dir, None):
            return "kept", "the bundle is written in volumes: such a bundle is not pruned, write a new one", 0
        if check_mode:
            freed = sum(removable_blobs(self.dir, reference).values())
            return "would remove", f"take {reference} out of the bundle and the blobs only it needs", freed
        freed = self.writer().remove_image(reference, utc_now())
        return "removed", f"took {reference} out of the bundle and the blobs only it needed", freed

    def space_needed(self, image: SourceImage, content: ImageContent, step: Step) -> tuple[int, int]:
        """The blobs the bundle does not hold yet, nor expects on the far side, counted once a run; and the manifests."""
        _entries, manifests, raw = content.selection(self.platforms)
        known = self._known or {}
        new = {
            d: s
            for d, s in blob_sizes(m.data for m in manifests).items()
            if d not in known and d not in self._counted and not held_blob(self.dir, d, s)
        }
        self._counted.update(new)
        return sum(new.values()) + sum(m.size for m in manifests) + len(raw), 0

    def begin(self, image: SourceImage, content: ImageContent | None, step: Step) -> _BundleWrite:
        content = fetched(content, self.kind)
        writer = self.writer()
        _entries, manifests, top_raw = content.selection(self.platforms)
        every = blob_sizes(m.data for m in manifests)
        known = self._known or {}
        expected = {d: known[d] for d in every if d in known and not writer.has_blob(d, every[d])}
        missing = {d: s for d, s in every.items() if d not in expected and not writer.has_blob(d, s)}
        return _BundleWrite(self, content, manifests, top_raw, missing, every, expected)

    def close(self) -> None:
        """Nothing is held open."""


class _BundleWrite(ImageWrite):
    def __init__(
        self,
        dest: BundleDestination,
        content: ImageContent,
        manifests: list[Manifest],
        top_raw: bytes,
        missing: dict[str, int],
        every: dict[str, int],
        expected: dict[str, dict[str, str]],
    ) -> None:
        super().__init__()
        self.dest, self.writer = dest, dest.writer()
        self.content, self.manifests, self.top_raw, self.blobs, self.every, self.expected = (
            content,
            manifests,
            top_raw,
            missing,
            every,
            expected,
        )

    def sink(self, digest: str, size: int) -> BlobSink | None:
        return self.writer.blob_sink(digest, size) if digest in self.blobs else None

    def holds(self, digest: str, size: int) -> bool:
        return self.writer.has_blob(digest, size)

    def commit(self, image: SourceImage, step: Step, source_digest: str) -> Committed:
        top = self.content.top
        digest = compute_digest(self.top_raw)
        held = dict(self.every)
        for manifest in self.manifests if top.is_index else []:  # manifests are always carried: the index names them
            self.writer.put_bytes(manifest.digest, manifest.raw)
            held[manifest.digest] = manifest.size
        self.writer.put_bytes(digest, self.top_raw)
        held[digest] = len(self.top_raw)
        when = utc_now()
        notes = {ANNOTATION_REF_NAME: str(image.ref), SOURCE_DIGEST_ANNOTATION: top.digest}
        expected: dict[str, dict[str, Any]] = {d: dict(info, size=self.every[d]) for d, info in self.expected.items()}
        self.writer.add_image(
            str(image.ref),
            descriptor(top.media_type, digest, len(self.top_raw), annotations=notes),
            {
                "digest": digest,
                "source_digest": top.digest,
                "media_type": top.media_type,
                "blobs": held,
                "expected": expected,
            },
            when,
            self.dest.name,
        )
        record = {
            "type": "bundle",
            "dir": self.writer.dir,
            "bundle": self.dest.name,
            "reference": str(image.ref),
            "digest": digest,
            "written": when,
            "blobs": sorted(held),
            "expected": {d: info["bundle"] for d, info in expected.items()},
        }
        if expected:
            step.relies_on = sorted({info["bundle"] for info in expected.values()})
            step.carries_blobs = len(expected) < len(self.every)
            step.reason = (
                f"written as a delta: {len(expected)} of its {len(self.every)} blobs are not in this bundle but expected "
                f"on the far side from bundle {', '.join(step.relies_on)}; the bundle is not complete on its own"
            )
        return Committed(digest, record)
