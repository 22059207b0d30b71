# Copyright (c) airgap.ngc contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private: retention. ``keep`` (the newest N tags of each repository) and ``prune`` (remove what this collection
wrote to the run's destinations and the run does not want any more). Not a public API.

The facts file is the record of what was written: only its records are candidates, only in destinations of this run
(each destination says which records are its own, ``owns``, and removes one, ``remove``), and a destination checks
before removing that what is there is still what was written (a re-pushed tag, a replaced file is left alone). An
image the run selects, or ``keep`` keeps, is never removed. Removing is skipped when a copy of the run failed, so a
failed refresh never leaves fewer images than before. Check mode lists the same removals and removes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

from ansible_collections.airgap.ngc.plugins.module_utils._types.errors import AirgapError, ConfigError
from ansible_collections.airgap.ngc.plugins.module_utils._formats.files import (
    GONE,
    KEPT,
    REMOVED,
    WOULD_REMOVE,
)
from ansible_collections.airgap.ngc.plugins.module_utils._types.filters import tag_sort_key
from ansible_collections.airgap.ngc.plugins.module_utils._types.plan import ImagePlan, SourceImage
from ansible_collections.airgap.ngc.plugins.module_utils._types.reference import ImageReference
from ansible_collections.airgap.ngc.plugins.module_utils._state.facts import StateStore
from ansible_collections.airgap.ngc.plugins.module_utils._transports.base import Destination


@dataclass
class Removal:
    """What pruning did (or would do) with one record of one destination."""

    image: str
    kind: str
    target: str
    action: str
    reason: str
    bytes: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "image": self.image,
            "kind": self.kind,
            "target": self.target,
            "action": self.action,
            "reason": self.reason,
            "bytes": self.bytes,
        }


def _repository_key(key: str) -> tuple[str, str | None]:
    """An image key's ``host/repository`` and tag (None for a digest reference or a key that is no reference)."""
    try:
        ref = ImageReference.parse(key)
    except (ConfigError, ValueError):
        return key, None
    return f"{ref.registry or ''}/{ref.repository}", ref.tag


def keep_newest(
    images: list[SourceImage], recorded: Iterable[str], keep: int | None
) -> tuple[list[SourceImage], set[str]]:
    """The selected images ``keep`` leaves to copy, and the keys of every image it keeps (selected or recorded):
    per repository the run selects, the ``keep`` newest tags by version order. Without ``keep``: all selected."""
    if not keep:
        return images, {image.key for image in images}
    selected = {_repository_key(image.key)[0] for image in images}
    tags: dict[str, set[str]] = {}
    for key in [image.key for image in images] + list(recorded):
        repository, tag = _repository_key(key)
        if tag is not None and repository in selected:  # a repository the run does not select is not kept by keep
            tags.setdefault(repository, set()).add(tag)
    newest = {repo: set(sorted(found, key=tag_sort_key)[-keep:]) for repo, found in tags.items()}

    def kept(key: str) -> bool:
        repository, tag = _repository_key(key)
        return tag in newest.get(repository, set()) if tag is not None else key in {image.key for image in images}

    wanted = [image for image in images if kept(image.key)]
    return wanted, {image.key for image in wanted} | {key for key in recorded if kept(key)}


def prune(
    destinations: list[Destination], store: StateStore, wanted: set[str], plans: list[ImagePlan], check_mode: bool
) -> list[Removal]:
    """Remove (or in check mode list) every record of these destinations whose image is not wanted."""
    failed = [plan for plan in plans if plan.error]
    removals: list[Removal] = []
    records = store.images()
    wanted_records = {key: record for key, record in records.items() if key in wanted}
    for key in sorted(records):
        if key in wanted:
            continue
        for dest_key, record in sorted((records[key].get("destinations") or {}).items()):
            dest = next((d for d in destinations if d.owns(dest_key, record)), None)
            if dest is None:
                continue
            target = dest_key.split(":", 1)[1]
            if failed:
                removals.append(
                    Removal(
                        key, dest.kind, target, KEPT, f"not pruned: {len(failed)} image(s) of this run failed to copy"
                    )
                )
                continue
            try:
                action, reason, freed = dest.remove(key, record, wanted_records, check_mode)
            except (AirgapError, OSError) as exc:
                action, reason, freed = (
                    KEPT,
                    f"could not remove it: {(exc.strerror if isinstance(exc, OSError) else None) or exc}",
                    0,
                )
            removals.append(Removal(key, dest.kind, target, action, reason, freed))
            if action in (REMOVED, GONE) or (action == KEPT and reason.startswith("re-pushed")):
                if not check_mode:
                    store.remove(key, dest_key)
        left = None if check_mode else store.image(key)
        if left is not None and not left.get("destinations"):
            store.remove(key)
    return removals


def prune_result(removals: list[Removal], diff_mode: bool) -> dict[str, Any]:
    """The result keys of pruning: every record looked at, the bytes freed, and with --diff what goes."""
    done = [r for r in removals if r.action in (REMOVED, WOULD_REMOVE)]
    result: dict[str, Any] = {"pruned": [r.as_dict() for r in removals], "bytes_freed": sum(r.bytes for r in done)}
    if diff_mode and done:
        result["prune_diff"] = {
            "before_header": "pruned",
            "after_header": "pruned",
            "before": "".join(f"{r.kind}: {r.target}\n" for r in done),
            "after": "",
        }
    return result
