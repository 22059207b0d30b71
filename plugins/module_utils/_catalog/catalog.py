# Copyright (c) airgap.ngc contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private: what ``ngc_catalog_info`` lists: catalog, then filters, then registry digests. Not a public API."""

from __future__ import annotations

import contextlib
import json
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable, Iterable, Sequence

from ansible_collections.airgap.ngc.plugins.module_utils._formats.bundle import BundleReader
from ansible_collections.airgap.ngc.plugins.module_utils._types.errors import (
    AirgapError,
    AuthError,
    NotFoundError,
    redact,
    shorten,
)
from ansible_collections.airgap.ngc.plugins.module_utils._types.filters import ImageFilter, TagCandidate, tag_sort_key
from ansible_collections.airgap.ngc.plugins.module_utils._clients.ngc import NgcClient, NgcRepository, path_segment
from ansible_collections.airgap.ngc.plugins.module_utils._types.oci import (
    INDEX_MEDIA_TYPES,
    blob_path,
    blob_sizes,
    platform_string,
    read_small,
)
from ansible_collections.airgap.ngc.plugins.module_utils._types.reference import ImageReference, is_digest
from ansible_collections.airgap.ngc.plugins.module_utils._clients.registry import RegistryClient
from ansible_collections.airgap.ngc.plugins.module_utils._formats.signatures import digest_tag, is_companion_tag
from ansible_collections.airgap.ngc.plugins.module_utils._formats.bundle_check import affected_images, verify_bundle


@dataclass
class CatalogEntry:
    """One selected tag, as ``ngc_catalog_info`` returns it."""

    name: str
    tag: str
    reference: str
    updated: str = ""
    size: int | None = None
    description: str | None = None
    digest: str | None = None
    media_type: str | None = None
    platforms: list[str] = field(default_factory=list)
    verified: bool | None = None  # set only when a bundle was verified
    signed: bool | None = None  # with digests: a cosign signature (sha256-<hex>.sig) of its digest is in its repository
    unreadable: str | None = None  # why its details could not be read (only with CatalogQuery.keep_unreadable)
    unresolved: str | None = (
        None  # why the registry could not resolve it (without keep_unreadable): not listed, reported
    )
    variants: dict[str, str] = field(
        default_factory=dict, compare=False
    )  # platform by manifest digest, as the catalog says

    def as_dict(self) -> dict[str, Any]:
        result = {
            "name": self.name,
            "tag": self.tag,
            "reference": self.reference,
            "digest": self.digest,
            "media_type": self.media_type,
            "platforms": self.platforms,
            "size": self.size,
            "updated": self.updated,
            "description": self.description,
        }
        if self.verified is not None:
            result["verified"] = self.verified
        if self.signed is not None:
            result["signed"] = self.signed
        return result

    def unresolved_dict(self, secrets: Iterable[str | None] = ()) -> dict[str, Any]:
        """The tag as ``unresolved`` lists it: image, tag, reference and a short reason without a secret."""
        return {
            "image": self.name,
            "tag": self.tag,
            "reference": self.reference,
            "reason": shorten(redact(self.unresolved or "", secrets)),
        }


class _Memo:
    """Values by key, each computed once per run even when threads ask for it at the same time.

    A failure is not kept: the next caller computes again (and fails on its own, for its own tag).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: dict[Hashable, Any] = {}
        self._pending: dict[Hashable, threading.Event] = {}

    def get(self, key: Hashable, compute: Callable[[], Any]) -> Any:
        while True:
            with self._lock:
                if key in self._values:
                    return self._values[key]
                waiting = self._pending.get(key)
                if waiting is None:
                    event = self._pending[key] = threading.Event()
            if waiting is not None:
                waiting.wait()
                continue
            try:
                value = compute()
            except BaseException:
                with self._lock:
                    del self._pending[key]
                event.set()
                raise
            with self._lock:
                self._values[key] = value
                del self._pending[key]
            event.set()
            return value


@dataclass
class CatalogQuery:
    """Where to look and what to select."""

    image_filter: ImageFilter
    source: str = "ngc"
    org: str = "nvidia"
    teams: Sequence[str] | None = None
    source_name: str = "NGC"  # where the listing comes from, as a warning names it
    include_digests: bool = True
    include_descriptions: bool = False
    parallel: int = 4
    keep_unreadable: bool = False  # a tag whose manifests cannot be read is listed without details, not an error


class Catalog:
    """Lists the images a query selects, sorted by name then version.

    A tag the registry cannot resolve (no such tag, a child manifest of its index missing, an answer that
    stays an error after the retries) is not listed but kept in ``unresolved``; refused credentials are
    an error of the whole listing, and so is a registry that does not answer at all. Within one listing
    each manifest is fetched once by digest, and each image config at most once, only when neither an
    index nor the catalog names the platform.
    """

    def __init__(self, query: CatalogQuery, registry: RegistryClient, ngc: NgcClient | None = None) -> None:
        self.query = query
        self.registry = registry
        self.ngc = ngc
        self.registry_host = registry.host
        self.unresolved: list[CatalogEntry] = []
        self.warnings: list[str] = []
        self._manifests = _Memo()
        self._platforms = _Memo()
        self._tags = _Memo()  # by repository: its tags, for the signatures among them

    def list(self) -> list[CatalogEntry]:
        if self.query.source == "registry":
            entries = self._from_registry()
        else:
            entries = self._from_ngc()
        if self.query.include_digests:
            self._add_digests(entries)
        unresolved = [entry for entry in entries if entry.unresolved is not None]
        if unresolved and len(unresolved) == len(entries):
            self._check_registry()  # nothing resolved: a registry that is down or refuses us fails the listing
        self.unresolved = sorted(unresolved, key=_listing_order)
        entries = [entry for entry in entries if entry.unresolved is None]
        entries.sort(key=_listing_order)
        return entries

    def _check_registry(self) -> None:
        """Raise the registry's own error (unreachable, refusing the credentials, failing) if it has one."""
        ping = getattr(self.registry, "ping", None)
        if callable(ping):
            ping()

    # Sources -------------------------------------------------------------------------------

    def _from_ngc(self) -> list[CatalogEntry]:
        if self.ngc is None:
            raise AirgapError("source=ngc needs the NGC API (api_url)")
        org = self.query.org
        teams = [
            team for team in dict.fromkeys(self.query.teams or ()) if team != ""
        ]  # "" stands for the org's own images
        for team in teams:
            path_segment(team, "team")  # refused before any request, like the org in repositories()
        repositories = list(self.ngc.repositories(org))
        listed = {repo.team for repo in repositories if repo.team}
        for team in teams:
            if team not in listed:
                self.ngc.require_team(
                    org, team
                )  # an unknown team is an error, like an unknown org; a known one may be empty
        self._warn_empty_teams({repo.team or "" for repo in repositories})
        selected = [
            repo for repo in repositories if self._team_selected(repo) and self.query.image_filter.match_name(repo.path)
        ]
        entries: list[CatalogEntry] = []
        for repo, images in zip(selected, self._map(self.ngc.images, selected)):
            by_tag = {image.tag: image for image in images}
            candidates = [TagCandidate(image.tag, image.updated) for image in images]
            for chosen in self.query.image_filter.select_tags(candidates):
                image = by_tag[chosen.tag]
                entry = self._entry(
                    repo.path, image.tag, image.updated, image.size, repo.description or repo.short_description
                )
                entry.variants = image.platforms_by_digest()
                entries.append(entry)
        return entries

    def _from_registry(self) -> list[CatalogEntry]:
        names = self.registry.catalog()
        if self.query.teams is not None:  # a repository org/team/name is in that team, org/name in none ('')
            self._warn_empty_teams({self._team_of_path(name) for name in names})
            names = [name for name in names if self._team_of_path(name) in self.query.teams]
        names = [name for name in names if self.query.image_filter.match_name(name)]
        entries = []
        for name, tags in zip(names, self._map(self.registry.list_tags, names)):
            self._tags.get(name, lambda tags=tags: set(tags))
            images = (
                TagCandidate(tag) for tag in tags if not is_companion_tag(tag)
            )  # signatures travel with their image
            for chosen in self.query.image_filter.select_tags(images):
                entries.append(self._entry(name, chosen.tag, "", None, None))
        return entries

    def _team_of_path(self, name: str) -> str | None:
        """The team of ``query.org`` a repository path is in ('' for the org's own), None for a path outside the org."""
        parts = name.split("/")
        if parts[0] != self.query.org:
            return None
        return parts[1] if len(parts) > 2 else ""

    def _warn_empty_teams(self, held: set[str | None]) -> None:
        """A warning for each team asked for that holds no repository at all: nothing can be listed for it."""
        for position, team in enumerate(self.query.teams or (), start=1):
            if team not in held:
                whose = "its own images (team '')" if team == "" else f"team {team!r}"
                self.warnings.append(
                    f"teams item {position}: org {self.query.org!r} has no repository in {whose} at "
                    f"{self.query.source_name}, so nothing is listed for it; check the name"
                )

    def _team_selected(self, repo: NgcRepository) -> bool:
        if self.query.teams is None:
            return True
        return (repo.team or "") in self.query.teams

    def _entry(self, name: str, tag: str, updated: str, size: int | None, description: str | None) -> CatalogEntry:
        return CatalogEntry(
            name=name,
            tag=tag,
            reference=f"{self.registry_host}/{name}:{tag}",
            updated=updated,
            size=size,
            description=description if self.query.include_descriptions else None,
        )

    # Registry details ----------------------------------------------------------------------

    def _add_digests(self, entries: list[CatalogEntry]) -> None:
        for entry, details in zip(entries, self._map(self._details_of, entries)):
            if details is None:
                continue
            entry.digest, entry.media_type, entry.platforms, size = details
            if size is not None:
                entry.size = size
        for entry, signed in zip(entries, self._map(self._signed, entries)):
            entry.signed = signed

    def _signed(self, entry: CatalogEntry) -> bool | None:
        """Whether the tag's digest has a cosign signature in its repository (None if that could not be read)."""
        if not entry.digest:
            return None
        try:
            tags = self._tags.get(entry.name, lambda: set(self.registry.list_tags(entry.name)))
        except AuthError:
            raise
        except AirgapError:
            return None
        return f"{digest_tag(entry.digest)}.sig" in tags

    def _details_of(self, entry: CatalogEntry) -> tuple[str, str, list[str], int | None] | None:
        try:
            return self._details(entry)
        except AuthError:
            raise  # refused credentials are not one tag's problem
        except AirgapError as exc:
            if self.query.keep_unreadable:
                entry.unreadable = str(exc)
            else:
                entry.unresolved = str(exc)
            return None

    def _details(self, entry: CatalogEntry) -> tuple[str, str, list[str], int | None]:
        try:
            manifest = self.registry.get_manifest(entry.name, entry.tag)
        except NotFoundError:
            raise AirgapError(f"{entry.reference} is listed in the catalog but the registry has no such tag") from None
        if manifest.media_type in INDEX_MEDIA_TYPES:
            platforms, size = self._index_details(entry.name, manifest.data)
        else:
            platform = entry.variants.get(manifest.digest) or self._platform_of(entry.name, manifest.data)
            platforms = [platform]
            size = sum(blob_sizes([manifest.data]).values())
        return manifest.digest, manifest.media_type, [p for p in platforms if p], size

    def _index_details(self, name: str, index: dict[str, Any]) -> tuple[list[str], int]:
        platforms: list[str] = []
        manifests: list[dict[str, Any]] = []
        children = index.get("manifests") or []
        for child in children if isinstance(children, list) else []:
            if not isinstance(child, dict):
                continue
            platform = platform_string(child.get("platform") if isinstance(child.get("platform"), dict) else {})
            if platform == "unknown/unknown":  # attestation manifests, not an image
                continue
            digest = child.get("digest")
            if not isinstance(digest, str):
                raise AirgapError(
                    f"{self.registry_host}/{name}: an index lists a manifest for {platform} without a digest"
                )
            platforms.append(platform)
            try:
                manifests.append(self._manifest_data(name, digest))
            except NotFoundError:
                raise AirgapError(
                    f"{self.registry_host}/{name}: its index lists a manifest for {platform} ({digest}) "
                    "that the registry does not have"
                ) from None
        return platforms, sum(blob_sizes(manifests).values())

    def _manifest_data(self, name: str, digest: str) -> dict[str, Any]:
        """A manifest's content by digest, fetched once per listing (tags and indexes share them)."""
        return self._manifests.get((name, digest), lambda: self.registry.get_manifest(name, digest).data)

    def _platform_of(self, name: str, manifest: dict[str, Any]) -> str:
        """The platform an image config names, each config read once per listing (its digest names its content)."""
        config = manifest.get("config")
        if not isinstance(config, dict) or not isinstance(config.get("digest"), str):
            return ""
        return self._platforms.get(config["digest"], lambda: self._read_platform(name, config["digest"]))

    def _read_platform(self, name: str, digest: str) -> str:
        with self.registry.open_blob(name, digest) as stream:
            data = read_small(stream, f"the config {digest} of {self.registry_host}/{name}")
        try:
            config_data = json.loads(data.decode("utf-8"))
        except (ValueError, UnicodeDecodeError):
            return ""
        return platform_string(config_data) if isinstance(config_data, dict) else ""

    def _map(self, function: Any, items: Iterable[Any]) -> list[Any]:
        items = list(items)
        if len(items) <= 1 or self.query.parallel <= 1:
            return [function(item) for item in items]
        with ThreadPoolExecutor(max_workers=self.query.parallel) as pool:
            return list(pool.map(function, items))


def _listing_order(entry: CatalogEntry) -> tuple[Any, ...]:
    return (entry.name, tag_sort_key(entry.tag, entry.updated))


class BundleView:
    """A bundle seen through the registry calls the catalog makes (catalog, tags, manifests, blobs), nothing written."""

    def __init__(self, directory: str) -> None:
        self.reader = BundleReader(directory)
        refs = [ImageReference.parse(name) for name in self.reader.references()]
        hosts = [ref.registry for ref in refs if ref.registry]
        self.host = max(set(hosts), key=hosts.count) if hosts else "bundle"
        self._tags: dict[str, list[str]] = {}
        for ref in refs:
            if ref.tag:
                self._tags.setdefault(ref.repository, []).append(ref.tag)

    def catalog(self) -> list[str]:
        return sorted(self._tags)

    def list_tags(self, name: str) -> list[str]:
        return list(self._tags.get(name, []))

    def get_manifest(self, name: str, reference: str) -> Any:
        if is_digest(reference):
            return self.reader.manifest(reference)
        entry = self.reader.find(f"{name}:{reference}")
        if entry is None:
            raise NotFoundError(f"{name}:{reference} is not in the bundle {self.reader.dir}", status=404)
        return self.reader.manifest(entry["digest"], entry.get("mediaType"))

    def open_blob(self, name: str, digest: str) -> Any:
        if digest in (self.reader.contents.get("expected") or {}):
            # A delta bundle left this blob (an image config) to an earlier bundle: its platform stays unknown here.
            return contextlib.closing(chunk for chunk in ())
        return contextlib.closing(self.reader.open_blob(digest))

    def close(self) -> None:
        """Nothing is held open."""


def list_catalog(params: dict[str, Any]) -> list[dict[str, Any]]:
    """Run ``ngc_catalog_info`` with its module parameters; the result's ``images``."""
    return inspect_catalog(params)["images"]


def inspect_catalog(params: dict[str, Any]) -> dict[str, Any]:
    """Run ``ngc_catalog_info`` with its module parameters: ``images``, ``unresolved``, and with ``verify`` the
    bundle's ``problems``.

    ``unresolved`` holds the selected tags the registry could not resolve, each with its reason. A verified
    bundle's images each get ``verified``; one whose manifests cannot be read is listed without details (and not
    verified) rather than failing the listing, and an index that cannot be read at all lists no image.
    """
    # Imported here: _options needs ansible.module_utils, which the pure parts above do not.
    from ansible_collections.airgap.ngc.plugins.module_utils._clients.options import (  # pylint: disable=import-outside-toplevel
        source_registry_from,
        transport_from,
    )

    image_filter = ImageFilter.create(
        images=params.get("images"),
        strict_name_match=params.get("strict_name_match", False),
        image_regex=params.get("image_regex"),
        min_version=params.get("min_version"),
        py_version=params.get("py_version"),
        tag_regex=params.get("tag_regex"),
        tag_exclude_regex=params.get("tag_exclude_regex"),
        latest=params.get("latest"),
    )
    verify = bool(params.get("verify")) and params.get("source") == "bundle"
    query = CatalogQuery(
        image_filter=image_filter,
        source=params.get("source") or "ngc",
        org=params.get("org") or "nvidia",
        teams=params.get("teams"),
        include_digests=params.get("include_digests", True),
        include_descriptions=params.get("include_descriptions", False),
        parallel=max(int(params.get("parallel") or 1), 1),
        keep_unreadable=verify,
    )
    problems = verify_bundle(params["source_dir"], sizes_only=params.get("verify_mode") == "sizes") if verify else None
    if query.source == "bundle":  # a carried bundle lists like a registry of its own
        query.source, query.source_name = "registry", f"the bundle {params['source_dir']}"
        try:
            registry: Any = BundleView(params["source_dir"])
        except AirgapError:
            if not problems:
                raise
            return {"images": [], "unresolved": [], "problems": problems}  # verification has said why
    else:
        registry = source_registry_from(params)
        query.source_name = "NGC" if query.source == "ngc" else f"the registry {registry.host}"
    transport = transport_from(params) if query.source == "ngc" else None
    ngc = NgcClient(params["api_url"], params.get("api_key"), transport) if transport is not None else None
    catalog = Catalog(query, registry, ngc)
    try:
        entries = catalog.list()
    finally:
        registry.close()
        if transport is not None:
            transport.close()
    secrets = (params.get("api_key"),)
    result: dict[str, Any] = {
        "images": [entry.as_dict() for entry in entries],
        "unresolved": [entry.unresolved_dict(secrets) for entry in catalog.unresolved],
        "warnings": catalog.warnings,
    }
    if problems is None:
        return result
    _mark_verified(entries, problems, registry)
    result["images"] = [entry.as_dict() for entry in entries]
    result["problems"] = problems
    return result


# The filters an empty selection names, in the order the module documents them.
_FILTERS = (
    "teams",
    "images",
    "strict_name_match",
    "image_regex",
    "min_version",
    "py_version",
    "tag_regex",
    "tag_exclude_regex",
    "latest",
)


def empty_selection(params: dict[str, Any], result: dict[str, Any]) -> str | None:
    """Why ``ngc_catalog_info`` fails for a selection that picked nothing, or None when it picked something.

    A selection picked nothing when its filters kept no tag at all (none listed and none unresolved: a tag the
    registry could not resolve was still picked, see ``fail_on_unresolved``), unless ``allow_empty`` is set or a
    verified bundle has problems (those say why and ``fail_on_problems`` judges them). The message names the
    selection (``label``), where it looked, and every filter set, so a typo in a name or a pattern shows.
    """
    if params.get("allow_empty") or result.get("images") or result.get("unresolved") or result.get("problems"):
        return None
    source = params.get("source") or "ngc"
    where = {
        "ngc": f"the NGC catalog at {params.get('api_url')} (org {params.get('org') or 'nvidia'})",
        "registry": f"the registry {params.get('registry_url')}",
        "bundle": f"the bundle {params.get('source_dir')}",
    }[source]
    filters = [
        f"{name} {json.dumps(params[name])}" for name in _FILTERS if params.get(name) not in (None, [], "", False)
    ]
    label = f"Selection {json.dumps(params['label'])}" if params.get("label") else "The selection"
    return (
        f"{label} picked no image from {where} with {', '.join(filters) if filters else 'no filters'}: nothing would be "
        "mirrored. Check the names and patterns, or set allow_empty (the role: ngc_mirror_allow_empty_selection) "
        "where an empty selection is expected."
    )


def _mark_verified(entries: list[CatalogEntry], problems: list[dict[str, Any]], view: BundleView) -> None:
    """``verified`` of each listed tag; a tag that could not be read though no problem names it gets a problem of its own."""
    damaged = set()
    for ref in affected_images(problems):
        with contextlib.suppress(AirgapError):
            parsed = ImageReference.parse(ref)
            damaged.add((parsed.repository, parsed.tag))
    for entry in entries:
        entry.verified = (entry.name, entry.tag) not in damaged and entry.unreadable is None
        if entry.unreadable is not None and (entry.name, entry.tag) not in damaged:
            found = view.reader.find(f"{entry.name}:{entry.tag}")
            path = blob_path(found["digest"]) if found else "index.json"
            problems.append(
                {"path": path, "problem": "corrupt", "detail": shorten(entry.unreadable), "images": [entry.reference]}
            )
