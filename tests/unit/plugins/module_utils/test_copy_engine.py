# Copyright (c) airgap.ngc contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The copy engine against in-memory transports: one read per blob for all destinations, a failing destination
dropped alone, a bad read failing all, check mode writing nothing, platform choices per destination."""

from __future__ import annotations

import contextlib
import hashlib
import json
import threading
import time
from typing import Any, Iterable, Iterator

import pytest

from ansible_collections.airgap.ngc.plugins.module_utils._types.errors import AirgapError, DigestMismatchError
from ansible_collections.airgap.ngc.plugins.module_utils._copy.copier import CopyEngine
from ansible_collections.airgap.ngc.plugins.module_utils._types.oci import (
    MEDIA_OCI_INDEX,
    MEDIA_OCI_MANIFEST,
    Manifest,
    blob_sizes,
    select_children,
)
from ansible_collections.airgap.ngc.plugins.module_utils._types.plan import COPY, SourceImage, requested_images
from ansible_collections.airgap.ngc.plugins.module_utils._transports.base import (
    BlobSink,
    Committed,
    Destination,
    ResolvedImage,
    ImageWrite,
    Source,
)
from ansible_collections.airgap.ngc.plugins.module_utils._state.facts import StateStore
from ansible_collections.airgap.ngc.plugins.module_utils._transports.fanout import Totals


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def manifest(raw: bytes, media_type: str) -> Manifest:
    return Manifest(raw=raw, media_type=media_type, digest=digest_of(raw), data=json.loads(raw))


class MemorySource(Source):
    """A source that implements only what the interface requires: every optional ability keeps its default."""

    kind = "memory"
    name = "memory source"

    def __init__(self) -> None:
        self.blobs: dict[str, bytes] = {}
        self.manifests: dict[str, Manifest] = {}
        self.tags: dict[str, str] = {}
        self.reads: list[str] = []
        self.corrupt: set[str] = set()
        self.resolved: list[bool] = []  # fetch, per resolve
        self.manifest_reads: list[str] = []

    def add_image(self, reference: str | None, layers: list[bytes], platform: str = "linux/amd64") -> Manifest:
        config = json.dumps({"architecture": platform.split("/")[1], "os": "linux"}).encode()
        descs = []
        for data in [config] + layers:
            self.blobs[digest_of(data)] = data
            descs.append({"mediaType": "application/octet-stream", "digest": digest_of(data), "size": len(data)})
        body = json.dumps(
            {"schemaVersion": 2, "mediaType": MEDIA_OCI_MANIFEST, "config": descs[0], "layers": descs[1:]}
        ).encode()
        found = manifest(body, MEDIA_OCI_MANIFEST)
        self.manifests[found.digest] = found
        if reference:
            self.tags[reference] = found.digest
        return found

    def add_index(self, reference: str, children: list[tuple[str, Manifest]]) -> Manifest:
        body = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": MEDIA_OCI_INDEX,
                "manifests": [
                    {
                        "mediaType": child.media_type,
                        "digest": child.digest,
                        "size": child.size,
                        "platform": {"os": platform.split("/")[0], "architecture": platform.split("/")[1]},
                    }
                    for platform, child in children
                ],
            }
        ).encode()
        index = manifest(body, MEDIA_OCI_INDEX)
        self.manifests[index.digest] = index
        self.tags[reference] = index.digest
        return index

    def images(self, items: list[Any] | None) -> list[SourceImage]:
        return requested_images(items or list(self.tags), "memory.example")

    def resolve(self, image: SourceImage, fetch: bool = False) -> ResolvedImage | None:
        digest = self.tags.get(str(image.ref))
        self.resolved.append(fetch)
        return (
            ResolvedImage(digest, self.manifests[digest].media_type, manifest=self.manifests[digest] if fetch else None)
            if digest
            else None
        )

    def manifest(self, image: SourceImage, digest: str, media_type: str | None = None) -> Manifest:
        self.manifest_reads.append(digest)
        return self.manifests[digest]

    def open_blob(
        self, image: SourceImage, digest: str, size: int, start: int = 0, held: Iterable[bytes] | None = ()
    ) -> Any:
        assert start == 0, "the memory source does not resume: it is never asked to"
        self.reads.append(digest)
        data = self.blobs[digest]

        def chunks() -> Iterator[bytes]:
            for start in range(0, len(data), 7):
                yield data[start : start + 7]
            if digest in self.corrupt:
                raise DigestMismatchError(f"blob {digest} from the memory source hashes to something else")

        return contextlib.closing(chunks())

    def missing(self, image: SourceImage) -> str:
        return f"{image.ref} is not in the memory source"

    def close(self) -> None:
        """Nothing to close."""


class MemorySink(BlobSink):
    def __init__(self, dest: MemoryDestination, digest: str) -> None:
        self.dest, self.digest, self.data = dest, digest, b""

    def write(self, data: bytes) -> None:
        if self.dest.fail_on_write:
            raise AirgapError(f"{self.dest.kind}: disk full while writing {self.digest}")
        self.data += data

    def close(self) -> None:
        if digest_of(self.data) != self.digest:
            raise DigestMismatchError(f"{self.dest.kind}: {self.digest} arrived damaged")
        self.dest.blobs[self.digest] = self.data

    def abort(self) -> None:
        self.dest.aborted.append(self.digest)


class MemoryWrite(ImageWrite):
    def __init__(self, dest: MemoryDestination, image: SourceImage, content: Any) -> None:
        self.dest, self.image, self.content = dest, image, content
        entries = select_children(content.top.data, dest.platforms) if content.top.is_index else None
        self.manifests = content.images_for(entries)
        self.blobs = {d: s for d, s in blob_sizes(m.data for m in self.manifests).items() if d not in dest.blobs}

    def sink(self, digest: str, size: int) -> BlobSink | None:
        return MemorySink(self.dest, digest) if digest in self.blobs else None

    def commit(self, image: SourceImage, step: Any, source_digest: str) -> Committed:
        self.dest.tags[str(image.ref)] = self.content.top.digest
        return Committed(self.content.top.digest, {"type": self.dest.kind, "digest": self.content.top.digest})


class MemoryDestination(Destination):
    """A destination that implements only what the interface requires: every optional ability keeps its default."""

    def __init__(self, kind: str, platforms: list[str] | None = None, fail_on_write: bool = False) -> None:
        self.kind, self.platforms, self.fail_on_write = kind, platforms, fail_on_write
        self.blobs: dict[str, bytes] = {}
        self.tags: dict[str, str] = {}
        self.aborted: list[str] = []

    def plan(self, image: SourceImage, found: ResolvedImage, ctx: Any) -> Any:
        return ctx.step(self.kind, f"{self.kind}#{image.ref}", found.digest, self.tags.get(str(image.ref)))

    def begin(self, image: SourceImage, content: Any, step: Any) -> MemoryWrite:
        return MemoryWrite(self, image, content)

    def close(self) -> None:
        """Nothing to close."""


@pytest.fixture
def source() -> MemorySource:
    memory = MemorySource()
    base = b"base layer shared by both tags" * 50
    memory.add_image("memory.example/nvidia/pytorch:24.01", [base, b"24.01 layer" * 30])
    memory.add_image("memory.example/nvidia/pytorch:24.02", [base, b"24.02 layer" * 30])
    return memory


def run(
    source: MemorySource,
    destinations: list[Any],
    tmp_path: Any,
    check_mode: bool = False,
    parallel: int = 4,
    images: int = 1,
) -> list[Any]:
    engine = CopyEngine(source, destinations, Totals(), parallel=parallel, check_mode=check_mode, plan_parallel=images)
    with StateStore(str(tmp_path / "facts.json"), read_only=check_mode) as store:
        return engine.run(source.images(None), store)


def test_each_blob_is_read_once_for_every_destination_and_a_rerun_reads_nothing(
    source: MemorySource, tmp_path: Any
) -> None:
    first, second = MemoryDestination("first"), MemoryDestination("second")
    plans = run(source, [first, second], tmp_path)
    assert [p.error for p in plans] == [None, None]
    assert sorted(source.reads) == sorted(
        set(source.reads)
    )  # no blob twice, although two destinations and two tags share one
    assert set(first.blobs) == set(second.blobs) == set(source.blobs)
    assert first.tags == second.tags == source.tags
    source.reads.clear()
    again = run(source, [first, second], tmp_path)
    assert source.reads == [] and all(step.action != COPY for p in again for step in p.steps)


def test_an_image_with_no_record_is_resolved_with_its_manifest_and_a_recorded_one_by_its_digest(
    source: MemorySource, tmp_path: Any
) -> None:
    destination = MemoryDestination("only")
    run(source, [destination], tmp_path)
    assert source.resolved == [True, True]
    assert not set(source.manifest_reads) & set(source.tags.values())  # the manifests came with the resolve
    source.resolved.clear()
    run(source, [destination], tmp_path)
    assert source.resolved == [False, False]  # recorded: the digest alone says whether anything is to be done


def test_a_failing_destination_is_dropped_and_the_others_complete(source: MemorySource, tmp_path: Any) -> None:
    good, full = MemoryDestination("good"), MemoryDestination("full", fail_on_write=True)
    plans = run(source, [good, full], tmp_path)
    assert all("full: disk full" in (p.error or "") for p in plans)
    assert good.tags == source.tags and full.tags == {}
    for plan in plans:
        after = {step.kind: step.after for step in plan.steps}
        assert after == {"good": source.tags[plan.source.key], "full": None}  # after is what is there
    facts = json.loads((tmp_path / "facts.json").read_text())["images"]
    assert {key for record in facts.values() for key in record["destinations"]} == {
        f"good:good#{ref}" for ref in source.tags
    }


def test_a_damaged_read_fails_every_destination_and_commits_nothing(source: MemorySource, tmp_path: Any) -> None:
    victim = digest_of(b"24.02 layer" * 30)
    source.corrupt.add(victim)
    first, second = MemoryDestination("first"), MemoryDestination("second")
    plans = run(source, [first, second], tmp_path, parallel=1)
    by_ref = {p.source.key: p for p in plans}
    assert by_ref["memory.example/nvidia/pytorch:24.01"].error is None
    assert victim in (by_ref["memory.example/nvidia/pytorch:24.02"].error or "")
    assert (
        "memory.example/nvidia/pytorch:24.02" not in first.tags
        and "memory.example/nvidia/pytorch:24.02" not in second.tags
    )
    assert victim not in first.blobs and victim in first.aborted and victim in second.aborted


def test_check_mode_plans_and_writes_nothing(source: MemorySource, tmp_path: Any) -> None:
    dest = MemoryDestination("dest")
    plans = run(source, [dest], tmp_path, check_mode=True)
    assert [s.action for p in plans for s in p.steps] == [COPY, COPY]
    assert [s.after for p in plans for s in p.steps] == [
        source.tags[p.source.key] for p in plans
    ]  # the plan shows what would be there
    assert source.reads == [] and dest.blobs == {} and not (tmp_path / "facts.json").exists()


def test_each_destination_gets_the_platforms_it_asks_for(tmp_path: Any) -> None:
    memory = MemorySource()
    amd = memory.add_image(None, [b"amd64 layer" * 20])
    arm = memory.add_image(None, [b"arm64 layer" * 20], "linux/arm64")
    memory.add_index("memory.example/nvidia/cuda:12", [("linux/amd64", amd), ("linux/arm64", arm)])
    everything, amd64 = MemoryDestination("all"), MemoryDestination("amd64", platforms=["linux/amd64"])
    plans = run(memory, [everything, amd64], tmp_path)
    assert [p.error for p in plans] == [None]
    assert digest_of(b"arm64 layer" * 20) in everything.blobs and digest_of(b"arm64 layer" * 20) not in amd64.blobs
    assert sorted(memory.reads) == sorted(set(memory.reads))


@pytest.mark.parametrize("multi_arch", [False, True])
def test_images_copied_at_once_never_read_a_shared_blob_twice_and_keep_their_order(
    tmp_path: Any, multi_arch: bool
) -> None:
    memory = MemorySource()
    base = b"a base layer all tags share" * 40
    for n in range(12):
        reference = f"memory.example/nvidia/pytorch:24.{n:02d}"
        if multi_arch:  # the shared blob is named only by the children of each tag's index
            memory.add_index(
                reference,
                [
                    (
                        platform,
                        memory.add_image(None, [base, f"{platform} layer of 24.{n:02d}".encode() * 20], platform),
                    )
                    for platform in ("linux/amd64", "linux/arm64")
                ],
            )
        else:
            memory.add_image(reference, [base, f"layer of 24.{n:02d}".encode() * 20])
        memory.add_image(f"memory.example/nvidia/other{n}:1", [f"a layer of its own {n}".encode() * 20])
    dest = MemoryDestination("registry")
    plans = run(memory, [dest], tmp_path, images=6)
    assert [p.error for p in plans] == [None] * 24
    assert [p.source.key for p in plans] == list(memory.tags)  # the plans in the images' order
    assert sorted(memory.reads) == sorted(set(memory.reads)) and set(memory.reads) == set(memory.blobs)
    assert dest.tags == memory.tags
    facts = json.loads((tmp_path / "facts.json").read_text())["images"]
    assert set(facts) == set(memory.tags)


class KeepingDestination(MemoryDestination):
    """A destination that keeps the blobs it holds (as a registry or a bundle), or not (as a flattened file)."""

    def __init__(self, kind: str, keeps_blobs: bool = True) -> None:
        super().__init__(kind)
        self.keeps_blobs = keeps_blobs


class CountingSource(MemorySource):
    """Counts the images whose blobs it is reading at once."""

    def __init__(self) -> None:
        super().__init__()
        self.active: dict[str, int] = {}
        self.most = 0
        self._lock = threading.Lock()

    def open_blob(
        self, image: SourceImage, digest: str, size: int, start: int = 0, held: Iterable[bytes] | None = ()
    ) -> Any:
        key = str(image.ref)
        with self._lock:
            self.active[key] = self.active.get(key, 0) + 1
            self.most = max(self.most, len(self.active))
        time.sleep(0.02)  # long enough for other images' reads to start meanwhile, if they may
        with self._lock:
            self.active[key] -= 1
            if not self.active[key]:
                del self.active[key]
        return super().open_blob(image, digest, size)


def many_sharing_a_base(count: int) -> CountingSource:
    memory = CountingSource()
    base = b"a base layer every tag shares" * 40
    for n in range(count):
        memory.add_image(f"memory.example/nvidia/wide:1.{n}", [base, f"layer of 1.{n}".encode() * 20])
    return memory


def test_once_a_shared_blob_is_in_place_the_images_sharing_it_are_copied_at_once(tmp_path: Any) -> None:
    memory = many_sharing_a_base(12)
    dest = KeepingDestination("registry")
    plans = run(memory, [dest], tmp_path, images=6)
    assert [p.error for p in plans] == [None] * 12
    assert dest.tags == memory.tags
    assert sorted(memory.reads) == sorted(set(memory.reads)) and set(memory.reads) == set(
        memory.blobs
    )  # the base read once
    assert memory.most > 1  # not one image after another


def test_images_sharing_a_blob_wait_for_each_other_at_a_destination_that_does_not_keep_blobs(tmp_path: Any) -> None:
    memory = many_sharing_a_base(6)
    dest = KeepingDestination("flattened", keeps_blobs=False)
    plans = run(memory, [dest], tmp_path, images=6)
    assert [p.error for p in plans] == [None] * 6
    assert memory.most == 1


class SharingWrite(MemoryWrite):
    def holds(self, digest: str, size: int) -> bool:
        return digest in self.dest.blobs


class SharingDestination(KeepingDestination):
    """A destination where a blob one image put serves the next ones (as a registry mounts it, a bundle holds it)."""

    shares_blobs = True

    def begin(self, image: SourceImage, content: Any, step: Any) -> MemoryWrite:
        return SharingWrite(self, image, content)


class TimedSource(MemorySource):
    """Records when each blob's read began and ended; the reads of ``slow`` blobs take a while."""

    def __init__(self, slow: set[bytes], seconds: float = 0.3) -> None:
        super().__init__()
        self.slow, self.seconds = slow, seconds
        self.times: dict[str, list[float]] = {}
        self._lock = threading.Lock()

    def open_blob(
        self, image: SourceImage, digest: str, size: int, start: int = 0, held: Iterable[bytes] | None = ()
    ) -> Any:
        with self._lock:
            self.times.setdefault(digest, []).append(time.monotonic())
        if self.blobs[digest] in self.slow:
            time.sleep(self.seconds)
        reader = super().open_blob(image, digest, size)
        with self._lock:
            self.times[digest].append(time.monotonic())
        return reader


def test_images_sharing_a_blob_at_a_destination_that_shares_blobs_wait_only_for_that_blob(tmp_path: Any) -> None:
    base = b"a big base layer every tag shares" * 400
    memory = TimedSource(slow={base})
    for n in range(6):
        memory.add_image(f"memory.example/nvidia/wide:1.{n}", [base, f"layer of 1.{n}".encode() * 20])
    dest = SharingDestination("registry")
    engine = CopyEngine(memory, [dest], Totals(), parallel=4, plan_parallel=6)
    with StateStore(str(tmp_path / "facts.json")) as store:
        plans = engine.run(memory.images(None), store)
    assert [p.error for p in plans] == [None] * 6
    assert dest.tags == memory.tags
    assert sorted(memory.reads) == sorted(set(memory.reads)) and set(memory.reads) == set(
        memory.blobs
    )  # the base read once
    base_began, base_ended = memory.times[digest_of(base)]
    others = [times[0] for digest, times in memory.times.items() if digest != digest_of(base)]
    # The other images' own blobs were read while the base was: they did not wait for the image reading it.
    assert sum(began < base_ended for began in others) >= 6
    assert len(dest.blobs) == len(memory.blobs)


def test_the_largest_blob_is_read_first_whichever_image_needs_it(tmp_path: Any) -> None:
    smalls = [f"a small layer {n}".encode() * 10 for n in range(4)]
    memory = TimedSource(slow=set(smalls), seconds=0.1)  # the big blob's image asks for the read slot while one is read
    for n, small in enumerate(smalls):
        memory.add_image(f"memory.example/nvidia/small{n}:1", [small])
    big = b"the one big layer" * 1000
    memory.add_image("memory.example/nvidia/big:1", [big])  # named last
    engine = CopyEngine(memory, [SharingDestination("registry")], Totals(), parallel=1, plan_parallel=5)
    with StateStore(str(tmp_path / "facts.json")) as store:
        plans = engine.run(memory.images(None), store)
    assert [p.error for p in plans] == [None] * 5
    assert [p.source.key for p in plans] == [str(i.key) for i in memory.images(None)]  # the plans in the images' order
    assert digest_of(big) in memory.reads[:2]  # the first read, or the first after one that had begun


class BeginCounter(KeepingDestination):
    """Counts the images it begins at once; ``concurrent`` as a registry destination says it."""

    def __init__(self, kind: str, concurrent: bool) -> None:
        super().__init__(kind)
        self.concurrent = concurrent
        self.active = self.most = 0
        self._lock = threading.Lock()

    def begin(self, image: SourceImage, content: Any, step: Any) -> MemoryWrite:
        with self._lock:
            self.active += 1
            self.most = max(self.most, self.active)
        time.sleep(0.02)
        with self._lock:
            self.active -= 1
        return super().begin(image, content, step)


@pytest.mark.parametrize("concurrent", [True, False])
def test_a_concurrent_destination_begins_several_images_at_once_another_one_at_a_time(
    tmp_path: Any, concurrent: bool
) -> None:
    memory = MemorySource()
    for n in range(8):
        memory.add_image(f"memory.example/nvidia/other{n}:1", [f"a layer of its own {n}".encode() * 20])
    dest = BeginCounter("registry", concurrent)
    plans = run(memory, [dest], tmp_path, images=4)
    assert [p.error for p in plans] == [None] * 8
    assert dest.tags == memory.tags
    assert (dest.most > 1) is concurrent


class ListingSource(MemorySource):
    """Lists no companions, but says what it was handed as an earlier run's listing and lists afresh otherwise."""

    def __init__(self) -> None:
        super().__init__()
        self.known: dict[str, Any] = {}
        self.listings: dict[str, dict[str, Any]] = {}

    def companions(self, image: SourceImage, digest: str, known: dict[str, Any] | None = None) -> list[SourceImage]:
        self.known[image.key] = known
        if known is None:
            self.listings[image.key] = {"digest": digest, "found": []}
        return []


def test_a_listing_is_remembered_and_handed_back_while_it_is_younger_than_relist_after(tmp_path: Any) -> None:
    memory = ListingSource()
    memory.add_image("memory.example/nvidia/pytorch:24.01", [b"one" * 30])
    memory.add_image("memory.example/nvidia/pytorch:24.02", [b"two" * 30])
    key, other = "memory.example/nvidia/pytorch:24.01", "memory.example/nvidia/pytorch:24.02"
    facts = tmp_path / "facts.json"

    def mirror(relist_after: int = 3600, force: bool = False, check_mode: bool = False) -> dict[str, Any]:
        memory.known.clear()
        memory.listings.clear()
        engine = CopyEngine(
            memory,
            [MemoryDestination("dest")],
            Totals(),
            force=force,
            check_mode=check_mode,
            companions=True,
            relist_after=relist_after,
        )
        with StateStore(str(facts), read_only=check_mode) as store:
            engine.run(memory.images(None), store)
        return memory.known

    assert mirror(check_mode=True) == {key: None, other: None} and not facts.exists()
    assert mirror() == {key: None, other: None}
    recorded = json.loads(facts.read_text())["images"]
    assert recorded[key]["companions"]["digest"] == memory.tags[key] and recorded[key]["companions"]["found"] == []
    assert mirror() == {key: recorded[key]["companions"], other: recorded[other]["companions"]}
    assert mirror(relist_after=0) == mirror(force=True) == {key: None, other: None}
    doc = json.loads(facts.read_text())
    doc["images"][key]["companions"]["listed"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 3601))
    doc["images"][other]["companions"]["listed"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 600))
    facts.write_text(json.dumps(doc))
    assert mirror() == {key: None, other: None}  # aged, and ahead of the clock: listed afresh, and stamped again
    assert None not in mirror().values()


class HoldingDestination(MemoryDestination):
    """A destination that already holds some blobs (a registry that mounts what an earlier import put there)."""

    def __init__(self, kind: str, holds: set[bytes]) -> None:
        super().__init__(kind)
        self.blobs = {digest_of(data): data for data in holds}


def test_a_blob_that_cannot_be_read_fails_only_the_destinations_that_need_it(
    source: MemorySource, tmp_path: Any
) -> None:
    lost = b"24.02 layer" * 30
    source.corrupt.add(digest_of(lost))
    holder, needy = HoldingDestination("holder", {lost}), MemoryDestination("needy")
    plans = {p.source.key: p for p in run(source, [holder, needy], tmp_path, parallel=1)}
    assert digest_of(lost) in (plans["memory.example/nvidia/pytorch:24.02"].error or "")
    assert holder.tags == source.tags  # it needed nothing that failed: both images are there
    assert needy.tags == {"memory.example/nvidia/pytorch:24.01": source.tags["memory.example/nvidia/pytorch:24.01"]}


class UnstartableDestination(MemoryDestination):
    def begin(self, image: SourceImage, content: Any, step: Any) -> MemoryWrite:
        raise AirgapError(f"{self.kind}: cannot create the staging directory")


def test_a_destination_that_cannot_begin_leaves_the_others_their_images(source: MemorySource, tmp_path: Any) -> None:
    good, broken = MemoryDestination("good"), UnstartableDestination("broken")
    plans = run(source, [broken, good], tmp_path)
    assert all("broken: cannot create" in (p.error or "") for p in plans)
    assert good.tags == source.tags and broken.tags == {}


class HeldDestination(MemoryDestination):
    """Holds every image already, with no record of it (another tool pushed it): its plan says what to record."""

    def plan(self, image: SourceImage, found: ResolvedImage, ctx: Any) -> Any:
        step = ctx.step(self.kind, f"{self.kind}#{image.ref}", found.digest, found.digest)
        step.record = {"type": self.kind, "digest": found.digest, "found": "already there"}
        return step


def test_the_copier_records_what_plans_and_commits_return_and_nothing_in_check_mode(
    source: MemorySource, tmp_path: Any
) -> None:
    copied, held = MemoryDestination("copied"), HeldDestination("held")
    run(source, [copied, held], tmp_path, check_mode=True)
    assert not (tmp_path / "facts.json").exists()
    plans = run(source, [copied, held], tmp_path)
    facts = json.loads((tmp_path / "facts.json").read_text())["images"]
    for plan in plans:
        recorded = facts[plan.source.key]["destinations"]
        assert recorded[f"copied:copied#{plan.source.ref}"]["digest"] == plan.digest  # what commit() returned
        assert recorded[f"held:held#{plan.source.ref}"] == dict(  # what plan() found, with what the store adds
            recorded[f"held:held#{plan.source.ref}"], type="held", digest=plan.digest, found="already there"
        )
        assert [s.action for s in plan.steps if s.kind == "held"] != [COPY]


def test_a_source_and_a_destination_with_no_optional_ability_copy_with_every_feature_on(
    source: MemorySource, tmp_path: Any
) -> None:
    """Companions, space checks, prune and inventories ask for abilities these kinds do not override: the defaults
    declared once in the interface answer (no companions, no space measured, owns nothing)."""
    dest = MemoryDestination("plain")
    assert (dest.keeps_blobs, dest.concurrent, dest.measures_space, dest.carries_companions, dest.dir) == (
        False,
        False,
        False,
        False,
        None,
    )
    assert (source.resumes, source.carries_archives, dict(source.listings)) == (False, False, {})
    engine = CopyEngine(source, [dest], Totals(), companions=True, relist_after=60, check_mode=False)
    with StateStore(str(tmp_path / "facts.json")) as store:
        plans = engine.run(source.images(None), store)
    assert [p.error for p in plans] == [None, None] and dest.tags == source.tags
    assert engine.space == [] and not dest.owns("plain:x", {"type": "plain"})
    with pytest.raises(NotImplementedError, match="plain destination does not measure"):
        dest.space_needed(plans[0].source, None, plans[0].steps[0])  # type: ignore[arg-type]


def test_a_kind_that_leaves_out_a_required_method_cannot_be_made() -> None:
    class NoPlan(Destination):
        kind = "broken"

        def begin(self, image: SourceImage, content: Any, step: Any) -> ImageWrite:
            raise AssertionError("never begun")

        def close(self) -> None:
            """Nothing held."""

    with pytest.raises(TypeError, match="plan"):
        NoPlan()  # type: ignore[abstract]  # pylint: disable=abstract-class-instantiated
