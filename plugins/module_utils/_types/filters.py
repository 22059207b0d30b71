# Copyright (c) airgap.ngc contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private: image name and tag selection, and version ordering. Not a public API.

Everything here is a pure function of its inputs, so that the rules the old NGC replicator
got wrong stay pinned down by unit tests:

* versions are integer tuples within one scheme, never floats (``18.1`` < ``18.10``);
* a calendar tag (``24.01-py3``) and a dotted tag (``12.10.0-base-ubuntu22.04``) are
  different schemes: ``min_version`` only admits tags of its own scheme;
* ``py_version`` works on its own, without another filter;
* a name substring is a substring, and ``strict_name_match`` asks for the exact name.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable, Sequence

from ansible_collections.airgap.ngc.plugins.module_utils._types.errors import ConfigError

CALENDAR = "calendar"
DOTTED = "dotted"
NONE = "none"

# YY.MM exactly (two two-digit parts), then the end of the tag or a separator other than a dot.
_CALENDAR_RE = re.compile(r"^(\d{2})\.(\d{2})(?=$|[-_+])")
_DOTTED_RE = re.compile(r"^v?(\d+(?:\.\d+)*)(?=$|[-_+.a-zA-Z])")
_TOKEN_SPLIT_RE = re.compile(r"[-_+.]")


@dataclass(frozen=True)
class Version:
    """The leading version of a tag: its scheme and its numbers."""

    scheme: str
    parts: tuple[int, ...] = ()

    def padded(self, length: int) -> tuple[int, ...]:
        return self.parts + (0,) * (length - len(self.parts))

    def __str__(self) -> str:
        if self.scheme == CALENDAR:
            return ".".join(f"{part:02d}" for part in self.parts)
        return ".".join(str(part) for part in self.parts)


def parse_version(tag: str) -> Version:
    """Read the leading version of a tag (``24.01-py3`` -> calendar (24, 1))."""
    match = _CALENDAR_RE.match(tag)
    if match:
        return Version(CALENDAR, (int(match.group(1)), int(match.group(2))))
    match = _DOTTED_RE.match(tag)
    if match:
        return Version(DOTTED, tuple(int(part) for part in match.group(1).split(".")))
    return Version(NONE)


def compare_versions(left: Version, right: Version) -> int:
    """-1, 0 or 1 for two versions of the same scheme; ValueError across schemes."""
    if left.scheme != right.scheme or left.scheme == NONE:
        raise ValueError(f"cannot compare a {left.scheme} version with a {right.scheme} version")
    length = max(len(left.parts), len(right.parts))
    a, b = left.padded(length), right.padded(length)
    return (a > b) - (a < b)


_SCHEME_RANK = {NONE: 0, DOTTED: 1, CALENDAR: 2}


def tag_sort_key(tag: str, updated: str = "") -> tuple:
    """Total order of tags, oldest first: by scheme, then version, then update time, then name."""
    version = parse_version(tag)
    return (_SCHEME_RANK[version.scheme], version.padded(4), updated or "", tag)


@dataclass(frozen=True)
class TagCandidate:
    """A tag of one image, as the catalog reports it."""

    tag: str
    updated: str = ""


def _compile(option: str, pattern: str | None) -> re.Pattern[str] | None:
    if pattern is None or pattern == "":
        return None
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise ConfigError(f"invalid {option} {pattern!r}: {exc}") from None


def _normalise_py_version(value: str | None) -> str | None:
    if value is None or str(value).strip() == "":
        return None
    text = str(value).strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        text = "py" + text.replace(".", "")
    if not re.fullmatch(r"py\d+", text):
        raise ConfigError(f"invalid py_version {value!r}: expected a value such as 'py3' or '3'")
    return text


@dataclass
class ImageFilter:
    """The selection an operator asks for; ``ImageFilter.create`` validates every option."""

    images: Sequence[str] = ()
    strict_name_match: bool = False
    image_regex: re.Pattern[str] | None = None
    min_version: Version | None = None
    py_version: str | None = None
    tag_regex: re.Pattern[str] | None = None
    tag_exclude_regex: re.Pattern[str] | None = None
    latest: int | None = None

    @classmethod
    def create(
        cls,
        images: Iterable[str] | None = None,
        strict_name_match: bool = False,
        image_regex: str | None = None,
        min_version: str | None = None,
        py_version: str | None = None,
        tag_regex: str | None = None,
        tag_exclude_regex: str | None = None,
        latest: int | None = None,
    ) -> ImageFilter:
        names = tuple(str(item).strip().strip("/") for item in (images or ()) if str(item).strip())
        version = None
        if min_version not in (None, ""):
            version = parse_version(str(min_version))
            if version.scheme == NONE:
                raise ConfigError(
                    f"invalid min_version {min_version!r}: expected a calendar version such as '23.10' or a dotted one such as '12.2.0'"
                )
        if latest is not None and int(latest) < 1:
            raise ConfigError(f"invalid latest {latest!r}: expected a whole number of at least 1")
        return cls(
            images=names,
            strict_name_match=bool(strict_name_match),
            image_regex=_compile("image_regex", image_regex),
            min_version=version,
            py_version=_normalise_py_version(py_version),
            tag_regex=_compile("tag_regex", tag_regex),
            tag_exclude_regex=_compile("tag_exclude_regex", tag_exclude_regex),
            latest=int(latest) if latest is not None else None,
        )

    # Names -----------------------------------------------------------------------------

    def match_name(self, name: str) -> bool:
        """Whether an image path (``nvidia/clara/clara-parabricks``) is selected."""
        if self.image_regex is not None and not self.image_regex.search(name):
            return False
        if not self.images:
            return True
        if self.strict_name_match:
            forms = _name_forms(name)
            return any(item in forms for item in self.images)
        return any(item in name for item in self.images)

    # Tags ------------------------------------------------------------------------------

    def match_tag(self, tag: str) -> bool:
        """Whether one tag passes every per-tag filter (all but ``latest``)."""
        if self.tag_regex is not None and not self.tag_regex.search(tag):
            return False
        if self.tag_exclude_regex is not None and self.tag_exclude_regex.search(tag):
            return False
        if self.py_version is not None and self.py_version not in _TOKEN_SPLIT_RE.split(tag.lower()):
            return False
        if self.min_version is not None:
            version = parse_version(tag)
            if version.scheme != self.min_version.scheme:
                return False
            if compare_versions(version, self.min_version) < 0:
                return False
        return True

    def select_tags(self, candidates: Iterable[TagCandidate]) -> list[TagCandidate]:
        """The tags of one image that pass, oldest first, newest ``latest`` only if set."""
        chosen = sorted((c for c in candidates if self.match_tag(c.tag)), key=lambda c: tag_sort_key(c.tag, c.updated))
        if self.latest is not None:
            chosen = chosen[-self.latest :]
        return chosen


def _name_forms(name: str) -> set[str]:
    """The ways an operator may spell an image's exact name: with org, without, base name."""
    parts = name.split("/")
    return {name, "/".join(parts[1:]) if len(parts) > 1 else name, parts[-1]}
