# Copyright (c) airgap.ngc contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private: ``ngc_image_mirror``'s copier: plan each image on every destination, copy, record. Not a public API.

It is written against the transport interface (``_transports/base.py``) and knows no kind by name; it is the only
writer of the facts file. See docs/design/transports.md.
"""

from __future__ import annotations

import json
import os
import threading
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any, Iterable, Iterator

from ansible_collections.airgap.ngc.plugins.module_utils._transports.bundle import INVENTORY_KIND, BundleDestination
from ansible_collections.airgap.ngc.plugins.module_utils._transports.chart_repo import ChartRepoDestination
from ansible_collections.airgap.ngc.plugins.module_utils._copy.charts import charts_result, charts_source, write_values
from ansible_collections.airgap.ngc.plugins.module_utils._transports.containerd import ContainerdDestination
from ansible_collections.airgap.ngc.plugins.module_utils._transports.base import (
    Destination,
    FailedWrite,
    ImageWrite,
    PlanContext,
    Source,
)
from ansible_collections.airgap.ngc.plugins.module_utils._transports.destinations import (
    ArchiveDestination,
    EngineDestination,
    ReadmeDestination,
    RegistryDestination,
    credentials_matcher,
)
from ansible_collections.airgap.ngc.plugins.module_utils._transports.apptainer import ApptainerDestination
from ansible_collections.airgap.ngc.plugins.module_utils._transports.enroot import EnrootDestination
from ansible_collections.airgap.ngc.plugins.module_utils._types.errors import AirgapError, ConfigError, no_room
from ansible_collections.airgap.ngc.plugins.module_utils._formats.files import (
    atomic_write,
    cleanup_stale_partials,
    cleanup_tree,
)
from ansible_collections.airgap.ngc.plugins.module_utils._types.oci import (
    ImageContent,
    Manifest,
    blob_sizes,
    select_children,
)
from ansible_collections.airgap.ngc.plugins.module_utils._clients.options import registry_from, source_registry_from
from ansible_collections.airgap.ngc.plugins.module_utils._types.plan import (
    COPY,
    ImagePlan,
    SourceImage,
    Step,
    plan_result,
)
from ansible_collections.airgap.ngc.plugins.module_utils._state.progress import ProgressReporter
from ansible_collections.airgap.ngc.plugins.module_utils._copy.prune import (
    REMOVED,
    WOULD_REMOVE,
    Removal,
    keep_newest,
    prune,
    prune_result,
)
from ansible_collections.airgap.ngc.plugins.module_utils._types.reference import registry_host
from ansible_collections.airgap.ngc.plugins.module_utils._transports.sources import (
    ArchiveSource,
    BundleSource,
    RegistrySource,
)
from ansible_collections.airgap.ngc.plugins.module_utils._copy.read_slots import (
    BlobClaims,
    ReadSlots,
    share_malloc_arenas,
)
from ansible_collections.airgap.ngc.plugins.module_utils._copy.space import SpaceNeed, space_report, space_shortfalls
from ansible_collections.airgap.ngc.plugins.module_utils._state.facts import RunLock, StateStore, seconds_since, utc_now
from ansible_collections.airgap.ngc.plugins.module_utils._transports.fanout import LocalBlob, Totals, sinks_of, transfer
from ansible_collections.airgap.ngc.plugins.module_utils._transports.upload_sessions import (
    UploadSessions,
    sessions_path,
)
from ansible_collections.airgap.ngc.plugins.module_utils._copy.validate import inventory_problem


def source_from(params: dict[str, Any]) -> Source:
    """The source the options name: ``registry_url``, a bundle, or per-tag archives (``offline`` reads archive.dir)."""
    kind = "archive" if params.get("offline") else params.get("source") or "registry"
    if kind == "bundle":
        return BundleSource(params["source_dir"])
    if kind == "archive":
        directory = params.get("source_dir") or (params.get("archive") or {}).get("dir")
        if not directory:
            raise ConfigError("the archive source needs source_dir (the directory of the per-tag archives)")
        return ArchiveSource(directory)
    return RegistrySource(source_registry_from(params), params["registry_url"])


def destinations_from(
    params: dict[str, Any], source: Source, registry_client: Any, totals: Totals
) -> list[Destination]:
    """The destinations the options ask for, in the order their writes commit (an engine last: it may pull or load
    what the others wrote). ``registry_client`` is the client for ``registry.url``."""
    platforms = params.get("platforms") or None
    offline = bool(params.get("offline"))
    origins = source.origins()
    sessions = UploadSessions(params["facts_file"]) if params.get("facts_file") else None
    registry = (
        RegistryDestination(params["registry"], registry_client, platforms, totals, origins, sessions)
        if params.get("registry")
        else None
    )
    if registry is not None:
        registry.referrers_from = source.referrers_index  # its referrers tag indexes, copied as is
        source.read_also_from(registry)  # what a delta bundle left out, where an earlier import put it
    archive = ArchiveDestination(params["archive"]) if params.get("archive") and not offline else None
    found: list[Destination] = [d for d in (registry, archive) if d is not None]
    if params.get("bundle"):
        found.append(BundleDestination(params["bundle"], platforms, source.name))
    if params.get("chart_repo"):
        found.append(ChartRepoDestination(params["chart_repo"]))
    if archive is not None and params.get("save_readme"):
        found.append(ReadmeDestination(archive.dir))
    if params.get("enroot"):
        found.append(EnrootDestination(params["enroot"]))
    if params.get("apptainer"):
        found.append(ApptainerDestination(params["apptainer"]))
    if params.get("containerd"):
        found.append(ContainerdDestination(params["containerd"]))
    if params.get("docker"):
        spec = params["docker"]  # its rules across options are validate_mirror's
        archive_of = archive.target if archive is not None else source.path_of if source.carries_archives else None
        source_host = registry_host(params["registry_url"]) if source.kind == "registry" else None
        found.append(
            EngineDestination(
                spec,
                registry,
                archive_of,
                credentials_matcher(registry, source_host, (params.get("username"), params.get("api_key"))),
            )
        )
    return found


def write_inventory(path: str, source: Source, done: list[ImagePlan]) -> None:
    """Add to the far side's inventory what the imported images brought: their digests and every blob they need.

    The file can be carried back to the connected side as ``bundle.since``, when earlier bundles were lost.
    """
    inventory: dict[str, Any] = {"schema": 1, "kind": INVENTORY_KIND, "images": {}, "blobs": {}}
    problem = inventory_problem(path)
    if problem:  # another file took its place since the options were checked: never overwrite it
        raise AirgapError(f"inventory_file {path} is not an inventory this collection wrote ({problem}): move it away")
    try:
        with open(path, "rb") as handle:
            data = handle.read()
        old = json.loads(data.decode("utf-8")) if data.strip() else {}
        if not isinstance(old, dict):
            raise ValueError("not a JSON object")
        inventory.update(old)
    except FileNotFoundError:
        pass
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise AirgapError(
            f"inventory_file {path} is not an inventory this collection wrote ({exc}): move it away"
        ) from None
    for plan in done:
        inventory["images"][plan.source.key] = plan.digest
        for digest in source.image_blobs(plan.source):
            inventory["blobs"][digest] = plan.source.key
    inventory["written"] = utc_now()
    atomic_write(path, (json.dumps(inventory, indent=1, sort_keys=True) + "\n").encode("utf-8"), what="inventory file")


class Mirror:
    """Runs ``ngc_image_mirror``: ``Mirror(params, check_mode, diff_mode).run()`` returns the module result.

    It turns the options into a source and destinations, holds the facts file and the directory locks for the run,
    and hands the images to a CopyEngine.
    """

    def __init__(self, params: dict[str, Any], check_mode: bool = False, diff_mode: bool = False) -> None:
        self.params, self.check_mode, self.diff_mode = params, check_mode, diff_mode
        self._created: list[str] = []  # destination directories this run made (removed again if left empty)
        self.totals = Totals()
        self.source = charts_source(params, source_from(params))
        try:
            self.images = self.source.images(params.get("images"))
        except BaseException:
            self.source.close()
            raise
        spec = params.get("registry")
        client = (
            registry_from(
                params,
                spec["url"],
                spec.get("username"),
                spec.get("password"),
                validate_certs=spec.get("validate_certs", True),
                ca_path=spec.get("ca_path"),
            )
            if spec
            else None
        )
        self.destinations = destinations_from(params, self.source, client, self.totals)
        self.engine = CopyEngine(
            self.source,
            self.destinations,
            self.totals,
            force=bool(params.get("force")),
            parallel=max(int(params.get("parallel") or 1), 1),
            check_mode=check_mode,
            progress=ProgressReporter(None if check_mode else params.get("progress_file")),
            companions=bool(params.get("signatures", True)),
            relist_after=int(params.get("signatures_relist_after") or 0),
            plan_parallel=int(params.get("parallel_images") or 8),
        )

    def run(self) -> dict[str, Any]:
        locks: list[RunLock] = []
        plans: list[ImagePlan] = []
        removals: list[Removal] = []
        values: dict[str, tuple[str, bool]] = {}
        try:
            for dest in self.destinations:
                dest.ping()
            with StateStore(self.params["facts_file"], read_only=self.check_mode) as store:
                if not self.check_mode:
                    locks = self._take_directories()
                images, wanted = keep_newest(self.images, store.images(), self.params.get("keep"))
                plans = self.engine.run(images, store)
                values = write_values(self.params, self.source, plans, self.check_mode)
                wanted |= {plan.source.key for plan in plans}  # with the companions that travel with them
                if self.params.get("prune"):
                    removals = prune(self.destinations, store, wanted, plans, self.check_mode)
                if self.params.get("inventory_file") and not self.check_mode:
                    write_inventory(self.params["inventory_file"], self.source, [p for p in plans if not p.error])
        finally:
            for lock in locks:
                lock.release()
            for directory in self._created:
                try:
                    os.rmdir(directory)  # made by this run and left empty (every image failed): not left behind
                except OSError:
                    pass
            self.source.close()
            for dest in self.destinations:
                dest.close()
        result = plan_result(plans, self.check_mode, self.diff_mode, self.totals.transferred, self.totals.reused)
        result["space"] = self.engine.space
        result["charts"] = charts_result(self.source, plans, values, self.check_mode)
        result["changed"] = result["changed"] or any(changed for _path, changed in values.values())
        if self.params.get("prune"):
            result.update(prune_result(removals, self.diff_mode))
            if "prune_diff" in result:  # shown by --diff beside the copies' before and after
                result["diff"] = [result["diff"], result["prune_diff"]] if "diff" in result else [result["prune_diff"]]
            result["changed"] = result["changed"] or any(r.action in (REMOVED, WOULD_REMOVE) for r in removals)
        return result

    def _take_directories(self) -> list[RunLock]:
        """Lock each directory a destination writes (archive.dir, bundle.dir) against other runs, and remove what
        killed runs left there and beside the facts and progress files.

        Two runs with different facts files must not write one directory: one could replace a file the other is
        copying blobs from. The locks (flock on the directories, nothing written) are held until the end of the run.
        """
        facts = self.params["facts_file"]
        for name in (facts, sessions_path(facts) if facts else None, self.params.get("progress_file")):
            if name:
                cleanup_stale_partials(os.path.dirname(os.path.abspath(name)), os.path.basename(name))
        locks: list[RunLock] = []
        try:
            for directory in sorted({d.dir for d in self.destinations if d.dir}):
                if not os.path.isdir(directory):
                    self._created.append(directory)
                try:
                    os.makedirs(directory, exist_ok=True)
                except OSError as exc:
                    raise ConfigError(f"cannot create archive directory {directory}: {exc.strerror or exc}") from None
                option = next(f"{d.kind}.dir" for d in self.destinations if d.dir == directory)
                lock = RunLock(directory, f"{option} {directory}")
                lock.acquire()
                locks.append(lock)
                cleanup_tree(directory)
        except BaseException:
            for lock in locks:
                lock.release()
            raise
        return locks


class CopyEngine:
    """Copies images from one source to many destinations through the transport interface; knows no kind by name.

    ``run(images, store)`` plans every image first (each destination observes and decides), then, unless in check
    mode, executes the plans (``plan_parallel`` images at once) and records each in ``store`` as it finishes.
    """

    def __init__(
        self,
        source: Source,
        destinations: list[Destination],
        totals: Totals,
        force: bool = False,
        parallel: int = 4,
        check_mode: bool = False,
        progress: ProgressReporter | None = None,
        companions: bool = False,
        plan_parallel: int = 1,
        relist_after: int = 0,
    ) -> None:
        self.source, self.destinations, self.totals = source, destinations, totals
        self.companions = companions
        self.relist_after = relist_after  # seconds an earlier run's listing of an image's companions is trusted
        self.plan_parallel = max(plan_parallel, 1)
        self._reads = ReadSlots(parallel)
        self._claims = BlobClaims()
        # Every destination that takes blobs shares them: images sharing a blob are copied at once (``_execute_all``).
        self._shared = all(dest.shares_blobs for dest in destinations if dest.needs_content)
        self._dest_locks: dict[int, threading.Lock] = {}
        self._locks_lock = threading.Lock()
        self.force, self.parallel, self.check_mode = force, parallel, check_mode
        self.progress = progress or ProgressReporter(None)
        self.local_blobs: dict[str, LocalBlob] = {}
        self._placed: set[str] = (
            set()
        )  # blobs an image copied this run put at every destination: no copy reads them again
        self._manifests: dict[str, Manifest] = {}  # by digest: content-addressed, so safe to keep for the run
        self._media_types: dict[str, str | None] = {}
        self.space: list[dict[str, Any]] = []
        self._short: dict[str, str] = {}  # destination kind -> why its filesystem cannot take this run's writes

    def run(self, images: list[SourceImage], store: StateStore) -> list[ImagePlan]:
        share_malloc_arenas()  # before the planning threads allocate
        if not self.check_mode:
            self.progress.start(0, len(images), state="planning")  # from the first second, not the last run's state
        ctx = PlanContext(store, self.force, self.check_mode, self._top)
        plans = self._plan_all(images, ctx)
        tops = list(plans)
        plans += [
            plan
            for plan in self._plan_all(self._companions(plans, store), ctx, companion=True)
            if plan.steps or plan.error
        ]
        self._prefetch_all(plans)
        self.space = self._space(plans)
        self._short = {option[: -len(".dir")]: message for option, message in space_shortfalls(self.space).items()}
        if self.check_mode:
            for plan in plans:
                short = [
                    self._short[step.kind] for step in plan.steps if step.action == COPY and step.kind in self._short
                ]
                plan.error = plan.error or (short[0] if short else None)
        else:
            self.progress.start(0, len(plans))
            self._execute_all(plans, store)
            self.progress.finish("failed" if any(p.error for p in plans) else "done")
            self._remember_listings(tops, store)
        return plans

    def _execute_all(self, plans: list[ImagePlan], store: StateStore) -> None:
        """Execute the plans, ``plan_parallel`` images at once. An image that shares a blob with one being copied
        waits for it (the blob is then in place and not read twice); once an image has put a blob at every
        destination, the images that share it no longer wait. ``parallel`` bounds the blob reads of all of them
        together; each destination begins and commits one image at a time, unless it is ``concurrent``.

        When every destination that takes blobs ``shares_blobs`` (a blob one image put there serves the next ones
        without its bytes: a registry mounts it, a bundle holds it once), images sharing a blob are copied at once and
        only the blob's read is waited for (``_claim``). The images with the largest blobs begin first."""
        if self.plan_parallel <= 1 or len(plans) <= 1:
            for plan in plans:
                self._execute(plan, store)
            return
        queue = sorted(plans, key=lambda plan: -max(self._sizes_of(plan).values(), default=0))
        running: dict[Future[None], tuple[ImagePlan, set[str]]] = {}
        claimed: set[str] = set()
        with ThreadPoolExecutor(max_workers=self.plan_parallel, thread_name_prefix="copy") as pool:
            while queue or running:
                for plan in list(queue):
                    if len(running) >= self.plan_parallel:
                        break
                    blobs = self._blobs_of(plan) - self._placed
                    if blobs & claimed and not self._shared:
                        continue
                    queue.remove(plan)
                    claimed |= blobs
                    running[pool.submit(self._execute, plan, store)] = (plan, blobs)
                done, _waiting = wait(list(running), return_when=FIRST_COMPLETED)
                for future in done:
                    plan, blobs = running.pop(future)
                    claimed -= blobs
                    future.result()
                    if self._everywhere(plan):
                        self._placed |= self._blobs_of(plan)

    def _everywhere(self, plan: ImagePlan) -> bool:
        """True if the image was copied, without error, to every destination that takes blobs, and each of them keeps
        the blobs it holds (``keeps_blobs``: a later image finds them there and reads none of them again)."""
        copied = {step.kind for step in plan.steps if step.action == COPY}
        return (
            plan.error is None
            and plan.written
            and all(dest.kind in copied and dest.keeps_blobs for dest in self.destinations if dest.needs_content)
        )

    def _prefetch_all(self, plans: list[ImagePlan]) -> None:
        """The manifests of every image to copy, ``plan_parallel`` at once, before the space check and the copies use them.
        An index the plan fetched still needs its children (they name its blobs)."""

        def fetched(plan: ImagePlan) -> bool:
            top = self._manifests.get(plan.digest or "")
            return top is not None and not top.is_index

        wanted = [plan for plan in plans if plan.needs_copy and not fetched(plan)]
        if self.plan_parallel <= 1 or len(wanted) <= 1:
            return  # fetched when needed, one after another
        with ThreadPoolExecutor(
            max_workers=min(self.plan_parallel, len(wanted)), thread_name_prefix="manifests"
        ) as pool:
            list(pool.map(self._prefetch, wanted))

    def _prefetch(self, plan: ImagePlan) -> None:
        """Fetch an image's manifests ahead (kept for its copy), so that the blobs images share are known."""
        by_kind = {dest.kind: dest for dest in self.destinations}
        dests = [by_kind[step.kind] for step in plan.steps if step.action == COPY and by_kind[step.kind].needs_content]
        try:
            if dests:
                self._fetch(plan.source, plan.digest or "", dests)
        except (AirgapError, OSError):
            pass  # the copy fetches again and reports it

    def _blobs_of(self, plan: ImagePlan) -> set[str]:
        """The blobs an image's copy may write (of every platform its manifests name), from the manifests fetched."""
        return set(self._sizes_of(plan))

    def _sizes_of(self, plan: ImagePlan) -> dict[str, int]:
        """The sizes of the blobs an image's copy may write, by digest (see ``_blobs_of``)."""
        if plan.error or not plan.needs_copy:
            return {}
        top = self._manifests.get(plan.digest or "")
        if top is None:
            return {}  # nothing to fetch (an engine), or the fetch failed: the copy reports it
        manifests = [
            self._manifests[e["digest"]] for e in top.data.get("manifests") or [] if e.get("digest") in self._manifests
        ]
        return blob_sizes(m.data for m in ([top] if not top.is_index else manifests))

    # Plan --------------------------------------------------------------------------------------

    def _plan_all(self, images: list[SourceImage], ctx: PlanContext, companion: bool = False) -> list[ImagePlan]:
        """Plan the images, ``plan_parallel`` at once (requests and tokens overlap); the plans in the images' order."""
        workers = min(self.plan_parallel, len(images) - 1)
        if workers <= 1:
            return [self._plan(image, ctx, companion) for image in images]
        first = self._plan(
            images[0], ctx, companion
        )  # alone: it learns each registry's auth challenge once for all the others
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="plan") as pool:
            return [first] + list(pool.map(lambda image: self._plan(image, ctx, companion), images[1:]))

    def _plan(self, image: SourceImage, ctx: PlanContext, companion: bool = False) -> ImagePlan:
        """The plan of one image; a companion (a signature, an attestation) only for destinations that carry them."""
        plan = ImagePlan(source=image)
        try:
            # An image with no record is most likely copied: its manifest is fetched with its digest.
            found = self.source.resolve(image, fetch=ctx.store.image(image.key) is None)
            if found is None:
                raise AirgapError(self.source.missing(image))
            if found.manifest is not None:
                self._manifests.setdefault(found.digest, found.manifest)
            plan.digest, plan.media_type, plan.note = found.digest, found.media_type, found.note
            self._media_types[found.digest] = found.media_type
            chart = self.source.is_chart(image)
            for dest in self.destinations:
                if companion and not dest.carries_companions:
                    continue
                if dest.carries_charts != chart and (chart or dest.charts_only):
                    continue  # a chart goes only where charts are kept, an image never into a chart repository
                step = dest.plan(image, found, ctx)
                if step is None:
                    continue
                plan.steps.append(step)
                if (
                    step.record is not None and not self.check_mode
                ):  # it holds the image already, the facts did not say so
                    ctx.store.record_destination(image.key, found.digest, step.dest_key, step.record)
        except (AirgapError, OSError) as exc:
            plan.error = _message(exc)
        return plan

    def _companions(self, plans: list[ImagePlan], store: StateStore) -> list[SourceImage]:
        """Images that travel with the planned ones (signatures, attestations): what the source's ``companions``
        finds for each resolved image, each once, planned and copied like the images themselves. The source is
        handed what it listed for the image in an earlier run, while that is younger than ``relist_after``."""
        if not self.companions:
            return []
        seen = {plan.source.key for plan in plans}
        found: list[SourceImage] = []
        for plan in plans:
            if plan.error or not plan.digest:
                continue
            for image in self.source.companions(plan.source, plan.digest, self._known_listing(plan, store)):
                if image.key not in seen:
                    seen.add(image.key)
                    found.append(image)
        return found

    def _known_listing(self, plan: ImagePlan, store: StateStore) -> dict[str, Any] | None:
        """What an earlier run listed as travelling with the image, if it is still to be trusted (see ``relist_after``)."""
        if self.force or self.relist_after <= 0:
            return None
        listing = (store.image(plan.source.key) or {}).get("companions")
        if not isinstance(listing, dict):
            return None
        age = seconds_since(listing.get("listed"))
        return listing if age is not None and 0 <= age < self.relist_after else None

    def _remember_listings(self, plans: list[ImagePlan], store: StateStore) -> None:
        """Keep in the facts file what the source listed afresh for the images that were mirrored, in one write.

        A listing only saves requests: should the write fail, the next run lists again and nothing else is lost.
        """
        listed = self.source.listings
        keep = {
            plan.source.key: listed[plan.source.key] for plan in plans if not plan.error and plan.source.key in listed
        }
        if keep:
            try:
                store.record_companions(keep)
            except AirgapError:
                pass

    def _space(self, plans: list[ImagePlan]) -> list[dict[str, Any]]:
        """What the copies will write on each filesystem, from the manifests' sizes (fetched now, kept for the copy)."""
        users = {dest.kind: dest for dest in self.destinations if dest.measures_space}
        needs = {kind: SpaceNeed(f"{kind}.dir", dest.dir or "") for kind, dest in users.items()}
        for plan in plans:
            copies = [(users[step.kind], step) for step in plan.steps if step.action == COPY and step.kind in users]
            if plan.error or not copies:
                continue
            try:
                content = self._fetch(plan.source, plan.digest or "", [dest for dest, _step in copies])
                for dest, step in copies:
                    needs[dest.kind].add(*dest.space_needed(plan.source, content, step))
            except (AirgapError, OSError) as exc:
                plan.error = _message(exc)
        return space_report(list(needs.values()))

    def _top(self, image: SourceImage, digest: str) -> Manifest:
        """The image's manifest or index by digest, fetched once a run (planning with platforms needs it too)."""
        if digest not in self._manifests:
            self._manifests[digest] = self.source.manifest(image, digest, self._media_types.get(digest))
        return self._manifests[digest]

    # Act ---------------------------------------------------------------------------------------

    def _execute(self, plan: ImagePlan, store: StateStore) -> None:
        """Copy one image to every destination whose step is a copy, in one pass over its blobs, and record it.

        A destination that fails (it cannot begin, a full archive disk, a refused upload) is dropped from the pass and
        reported; the others are completed and recorded. A blob that cannot be read fails the destinations that needed
        it, not those that hold it already (a registry that mounts what a delta bundle left out).
        """
        if plan.error:
            store.record_failure(plan.source.key, plan.error)
            return
        image = plan.source
        by_kind = {dest.kind: dest for dest in self.destinations}
        copies = [
            (by_kind[step.kind], step) for step in plan.steps if step.action == COPY and step.kind not in self._short
        ]
        blocked = [self._short[step.kind] for step in plan.steps if step.action == COPY and step.kind in self._short]
        self.progress.image(str(image.ref))
        writes: list[tuple[Step, ImageWrite]] = []
        try:
            if not copies and blocked:
                raise AirgapError(blocked[0])
            needy = [d for d, _step in copies if d.needs_content]
            content = self._fetch(image, plan.digest or "", needy) if needy else None
            for dest, step in copies:
                with self._lock_of(dest):
                    writes.append((step, self._begin(dest, image, content, step)))
            needed: dict[str, int] = {}
            for _step, write in writes:
                needed.update(write.blobs)
            self.source.check_left_out(image, needed)  # a delta whose earlier bundles are missing: nothing is pushed
            self.progress.add_total(sum(needed.values()))
            owners = [write for _step, write in writes]
            transfer(
                needed,
                lambda digest, size: sinks_of(owners, digest, size),
                lambda digest, size, start=0, held=(): self._read(image, digest, size, start, held),
                self.local_blobs,
                self.parallel,
                self.totals,
                self.progress.advance,
                resumes=self.source.resumes,
                claim=lambda digest, size: self._claim(owners, digest, size),
            )
            for step, write in writes:
                if write.error is None:
                    try:
                        with self._lock_of(by_kind[step.kind]):
                            committed = write.commit(image, step, plan.digest or "")
                            if committed.record is not None:
                                store.record_destination(image.key, plan.digest or "", step.dest_key, committed.record)
                        step.after = committed.digest
                        plan.written = True
                        if write.note:
                            plan.note = "; ".join(filter(None, (plan.note, f"{step.kind}: {write.note}")))
                        self.local_blobs.update(write.local_blobs())
                    except (AirgapError, OSError) as exc:
                        write.error = exc
            errors = [write.error for _step, write in writes if write.error is not None]
            if errors:
                raise errors[0]
            if blocked:
                raise AirgapError(blocked[0])
            store.clear_failure(image.key)
        except (AirgapError, OSError) as exc:
            plan.error = _message(exc)
            store.record_failure(image.key, plan.error)
        finally:
            for _step, write in writes:
                write.abort()
            self.progress.image_done()

    @staticmethod
    def _begin(dest: Destination, image: SourceImage, content: ImageContent | None, step: Step) -> ImageWrite:
        """The destination's write of the image, or one that failed (nothing to stream, nothing to commit)."""
        try:
            return dest.begin(image, content, step)
        except (AirgapError, OSError) as exc:
            return FailedWrite(exc)

    def _lock_of(self, dest: Destination) -> AbstractContextManager[Any]:
        """What a destination's begin and commit run under: its lock (one image at a time), or nothing for a
        destination that takes several images at once (``concurrent``)."""
        if dest.concurrent:
            return nullcontext()
        with self._locks_lock:
            return self._dest_locks.setdefault(id(dest), threading.Lock())

    @contextmanager
    def _claim(self, owners: list[ImageWrite], digest: str, size: int) -> Iterator[None]:
        """The blob is read by one image at a time: if another image read it (or was reading it) in this run, the writes
        that hold it now (where that read put it: ``holds``) no longer need it, and the others read it themselves (that
        read failed, or their destination needs its own copy)."""
        with self._claims.claim(digest) as before:
            if before and self._shared:
                for owner in owners:
                    if owner.error is None and digest in owner.blobs and self._holds(owner, digest, size):
                        owner.blobs = {held: size for held, size in owner.blobs.items() if held != digest}
            yield

    @staticmethod
    def _holds(owner: ImageWrite, digest: str, size: int) -> bool:
        """Whether a write's destination holds the blob now; False if it cannot tell (it is then sent again)."""
        try:
            return bool(owner.holds(digest, size))
        except (AirgapError, OSError):
            return False

    @contextmanager
    def _read(
        self, image: SourceImage, digest: str, size: int, start: int = 0, held: Iterable[bytes] | None = ()
    ) -> Iterator[Iterable[bytes]]:
        """A blob from the source (from byte ``start`` on, ``held`` giving the bytes before), holding one of the
        ``parallel`` read slots shared by the images copied at once (the largest blob waiting takes the next)."""
        with self._reads.held(size - start):
            with self.source.open_blob(image, digest, size, start, held) as reader:
                yield reader

    def _fetch(self, image: SourceImage, digest: str, dests: list[Destination]) -> ImageContent:
        """The top manifest and the children the destinations need (each destination's platform choice)."""
        content = ImageContent(top=self._top(image, digest))
        if content.top.is_index:
            wanted: dict[str, dict[str, Any]] = {}
            for dest in dests:
                wanted.update((e["digest"], e) for e in select_children(content.top.data, dest.platforms))
            for child, entry in wanted.items():
                if child not in self._manifests:
                    self._manifests[child] = self.source.manifest(image, child, entry.get("mediaType"))
                content.children[child] = self._manifests[child]
        return content


def _message(exc: BaseException) -> str:
    if isinstance(exc, AirgapError):
        return str(exc)
    if isinstance(exc, OSError):
        where = f" ({exc.filename})" if exc.filename else ""
        full = no_room(
            exc, str(exc.filename or "a file"), os.path.dirname(str(exc.filename or "")) or "the destination"
        )
        return str(full) if full is not None else f"{exc.strerror or exc}{where}"
    return str(exc)
