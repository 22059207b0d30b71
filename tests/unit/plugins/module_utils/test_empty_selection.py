# Copyright (c) airgap.ngc contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A selection that picks nothing fails ngc_catalog_info by default, naming itself, where it looked and its filters."""

from __future__ import annotations

from typing import Any

from ansible_collections.airgap.ngc.plugins.module_utils._catalog.catalog import empty_selection

NGC = {
    "source": "ngc",
    "api_url": "https://api.ngc.example",
    "org": "nvidia",
    "registry_url": "https://nvcr.io",
    "images": ["pytorchh"],
    "strict_name_match": True,
    "latest": 2,
    "teams": None,
    "tag_regex": None,
    "allow_empty": False,
    "label": "PyTorch",
}
NOTHING: dict[str, Any] = {"images": [], "unresolved": []}


def test_nothing_picked_names_the_selection_where_and_every_filter_set() -> None:
    message = empty_selection(NGC, NOTHING)
    assert message is not None
    assert message.startswith(
        'Selection "PyTorch" picked no image from the NGC catalog at https://api.ngc.example (org nvidia)'
    )
    assert 'images ["pytorchh"], strict_name_match true, latest 2:' in message
    assert "tag_regex" not in message and "teams" not in message
    assert "allow_empty" in message and "ngc_mirror_allow_empty_selection" in message


def test_without_a_label_or_filters_the_message_still_says_where() -> None:
    bundle = {"source": "bundle", "source_dir": "/media/usb/ngc-2026-12", "allow_empty": False}
    message = empty_selection(bundle, NOTHING)
    assert message is not None
    assert message.startswith("The selection picked no image from the bundle /media/usb/ngc-2026-12 with no filters:")
    # teams select repository paths of a bundle or a registry too: a team that holds nothing is named
    assert 'with teams ["clara"]:' in (empty_selection(dict(bundle, teams=["clara"]), NOTHING) or "")
    registry = {"source": "registry", "registry_url": "https://registry.site.example", "image_regex": "^nvidia/x$"}
    assert 'the registry https://registry.site.example with image_regex "^nvidia/x$"' in (
        empty_selection(registry, NOTHING) or ""
    )


def test_something_picked_allowed_unresolved_or_damaged_is_not_an_empty_selection() -> None:
    assert (
        empty_selection(NGC, {"images": [{"reference": "nvcr.io/nvidia/pytorch:24.01-py3"}], "unresolved": []}) is None
    )
    assert empty_selection(dict(NGC, allow_empty=True), NOTHING) is None
    assert (
        empty_selection(NGC, {"images": [], "unresolved": [{"reference": "nvcr.io/nvidia/pytorch:24.02-py3"}]}) is None
    )
    assert empty_selection(NGC, {"images": [], "unresolved": [], "problems": [{"path": "index.json"}]}) is None
