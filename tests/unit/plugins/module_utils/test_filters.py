# Copyright (c) airgap.ngc contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Name and tag selection, version ordering; each replicator bug is a regression test here."""

from __future__ import annotations

import pytest

from ansible_collections.airgap.ngc.plugins.module_utils._types.errors import ConfigError
from ansible_collections.airgap.ngc.plugins.module_utils._types.filters import (
    CALENDAR,
    DOTTED,
    NONE,
    ImageFilter,
    TagCandidate,
    Version,
    compare_versions,
    parse_version,
    tag_sort_key,
)

NAMES = ["nvidia/tensorflow", "nvidia/l4t-tensorflow", "nvidia/pytorch", "nvidia/clara/clara-parabricks", "nvidia/cuda"]


@pytest.mark.parametrize(
    "tag, expected",
    [
        ("24.01-py3", Version(CALENDAR, (24, 1))),
        ("18.10-py3", Version(CALENDAR, (18, 10))),
        ("23.12-tf2-py3", Version(CALENDAR, (23, 12))),
        ("24.01", Version(CALENDAR, (24, 1))),
        ("12.10.0-base-ubuntu22.04", Version(DOTTED, (12, 10, 0))),
        ("12.2.0-base-ubuntu22.04", Version(DOTTED, (12, 2, 0))),
        ("4.2.0-1", Version(DOTTED, (4, 2, 0))),
        ("v2.3", Version(DOTTED, (2, 3))),
        ("11.8.0-runtime-ubuntu20.04", Version(DOTTED, (11, 8, 0))),
        ("latest", Version(NONE)),
        ("nightly-24.01", Version(NONE)),
    ],
)
def test_parse_version(tag: str, expected: Version) -> None:
    assert parse_version(tag) == expected


def test_versions_are_integer_tuples_not_floats() -> None:
    # The replicator compared float("18.1") with float("18.10") and found them equal.
    assert compare_versions(parse_version("18.10-py3"), parse_version("18.09-py3")) == 1
    assert compare_versions(parse_version("18.10.0"), parse_version("18.1.0")) == 1
    assert compare_versions(parse_version("12.10.0"), parse_version("12.2.0")) == 1
    assert compare_versions(parse_version("12.2"), parse_version("12.2.0")) == 0


def test_versions_of_different_schemes_do_not_compare() -> None:
    with pytest.raises(ValueError):
        compare_versions(parse_version("24.01-py3"), parse_version("12.2.0"))


def test_min_version_calendar_is_not_a_float() -> None:
    f = ImageFilter.create(min_version="18.10")
    assert f.match_tag("18.10-py3")
    assert f.match_tag("19.01-py3")
    assert not f.match_tag("18.1-py3")
    assert not f.match_tag("18.09-py3")


def test_min_version_does_not_read_dotted_tags_as_calendar() -> None:
    # The replicator read 12.10.0-base-ubuntu22.04 as 12.10 and compared it with 23.10.
    calendar = ImageFilter.create(min_version="23.10")
    assert not calendar.match_tag("12.10.0-base-ubuntu22.04")
    dotted = ImageFilter.create(min_version="12.2.0")
    assert dotted.match_tag("12.10.0-base-ubuntu22.04")
    assert dotted.match_tag("12.2.0-base-ubuntu22.04")
    assert not dotted.match_tag("11.8.0-runtime-ubuntu20.04")
    assert not dotted.match_tag("24.01-py3")


def test_min_version_drops_tags_without_a_version() -> None:
    assert not ImageFilter.create(min_version="23.10").match_tag("latest")


def test_py_version_applies_on_its_own() -> None:
    # The replicator ignored --py-version unless another filter was given.
    f = ImageFilter.create(py_version="py3")
    assert f.match_tag("24.01-py3")
    assert f.match_tag("23.12-tf2-py3")
    assert not f.match_tag("19.01-py2")
    assert not f.match_tag("24.01-py31")
    assert ImageFilter.create(py_version="3").py_version == "py3"


def test_substring_name_match_is_a_substring() -> None:
    f = ImageFilter.create(images=["tensorflow"])
    assert [n for n in NAMES if f.match_name(n)] == ["nvidia/tensorflow", "nvidia/l4t-tensorflow"]


def test_strict_name_match_is_exact() -> None:
    f = ImageFilter.create(images=["tensorflow"], strict_name_match=True)
    assert [n for n in NAMES if f.match_name(n)] == ["nvidia/tensorflow"]
    team = ImageFilter.create(images=["clara/clara-parabricks"], strict_name_match=True)
    assert [n for n in NAMES if team.match_name(n)] == ["nvidia/clara/clara-parabricks"]
    full = ImageFilter.create(images=["nvidia/pytorch"], strict_name_match=True)
    assert [n for n in NAMES if full.match_name(n)] == ["nvidia/pytorch"]


def test_image_regex() -> None:
    f = ImageFilter.create(image_regex=r"^nvidia/(py|cu)")
    assert [n for n in NAMES if f.match_name(n)] == ["nvidia/pytorch", "nvidia/cuda"]


def test_no_name_filter_selects_everything() -> None:
    assert all(ImageFilter.create().match_name(n) for n in NAMES)


def test_tag_regex_and_exclude() -> None:
    f = ImageFilter.create(tag_regex=r"-py3$", tag_exclude_regex="igpu")
    assert f.match_tag("24.01-py3")
    assert not f.match_tag("24.01-py3-igpu")
    assert not f.match_tag("24.01-py2")


@pytest.mark.parametrize("option", ["tag_regex", "tag_exclude_regex", "image_regex"])
def test_invalid_regex_names_the_option(option: str) -> None:
    with pytest.raises(ConfigError, match=f"invalid {option} 'py3\\('"):
        ImageFilter.create(**{option: "py3("})


@pytest.mark.parametrize("value", ["abc", "latest", ""])
def test_invalid_min_version(value: str) -> None:
    if value == "":
        assert ImageFilter.create(min_version=value).min_version is None
        return
    with pytest.raises(ConfigError, match="invalid min_version"):
        ImageFilter.create(min_version=value)


def test_invalid_latest_and_py_version() -> None:
    with pytest.raises(ConfigError, match="invalid latest"):
        ImageFilter.create(latest=0)
    with pytest.raises(ConfigError, match="invalid py_version"):
        ImageFilter.create(py_version="python")


def test_latest_keeps_newest_n_per_image_after_other_filters() -> None:
    tags = [TagCandidate(t) for t in ["23.10-py3", "24.02-py3-igpu", "24.01-py3", "23.12-py3", "24.02-py3", "latest"]]
    f = ImageFilter.create(latest=2, tag_exclude_regex="igpu")
    assert [c.tag for c in f.select_tags(tags)] == ["24.01-py3", "24.02-py3"]


def test_select_tags_orders_oldest_first_by_integer_version() -> None:
    tags = [TagCandidate(t) for t in ["18.10-py3", "18.09-py3", "19.01-py3", "18.1-py3"]]
    assert [c.tag for c in ImageFilter.create().select_tags(tags)][-1] == "19.01-py3"
    dotted = [TagCandidate(t) for t in ["12.10.0", "12.2.0", "12.9.1"]]
    assert [c.tag for c in ImageFilter.create().select_tags(dotted)] == ["12.2.0", "12.9.1", "12.10.0"]


def test_same_version_orders_by_update_time() -> None:
    older = tag_sort_key("24.01-py3", "2024-01-01T00:00:00Z")
    newer = tag_sort_key("24.01-py3-igpu", "2024-02-01T00:00:00Z")
    assert older < newer
