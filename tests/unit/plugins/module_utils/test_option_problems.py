# Copyright (c) airgap.ngc contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The role's dict variables are checked option by option, every problem named at once, a secret never shown."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from ansible_collections.airgap.ngc.plugins.filter.option_problems import FilterModule, option_problems

ROLE_VARS = yaml.safe_load(
    (Path(__file__).resolve().parents[4] / "roles" / "ngc_mirror" / "vars" / "main.yml").read_text()
)
SPECS, PATTERNS, WHAT = (
    ROLE_VARS["_ngc_mirror_option_specs"],
    ROLE_VARS["_ngc_mirror_patterns"],
    ROLE_VARS["_ngc_mirror_pattern_what"],
)
WORDS = ROLE_VARS["_ngc_mirror_bool_words"]


def problems(name: str, options: Any) -> list[str]:
    return option_problems(options, name, SPECS[name], PATTERNS, WHAT, WORDS)


def test_good_options_and_an_empty_dict_have_no_problem() -> None:
    assert (
        problems(
            "ngc_mirror_registry",
            {
                "url": "https://registry.site.example",
                "username": "mirror",
                "password": "x",
                "validate_certs": "yes",
                "prefix": "ngc",
            },
        )
        == []
    )
    assert problems("ngc_mirror_registry", {}) == []
    assert problems("ngc_mirror_bundle", {"dir": "/media/usb/ngc-2027-01", "since": "last"}) == []
    assert problems("ngc_mirror_selections", {"images": ["pytorch"], "latest": "2", "strict_name_match": True}) == []


def test_every_problem_of_a_dict_is_named_with_its_value() -> None:
    found = problems("ngc_mirror_registry", {"url": "registry.site.example", "usr": "x", "validate_certs": "maybe"})
    assert found == [
        "ngc_mirror_registry has unknown option(s) usr (the options are url, username, password, validate_certs, ca_path, prefix)",
        f'ngc_mirror_registry.url must be {WHAT["url"]}, not "registry.site.example"',
        'ngc_mirror_registry.validate_certs must be true or false, not "maybe"',
    ]


@pytest.mark.parametrize(
    "name, options, expected",
    [
        (
            "ngc_mirror_archive",
            {"format": "zip"},
            ["ngc_mirror_archive.dir must be set (", 'ngc_mirror_archive.format must be docker or oci, not "zip"'],
        ),
        (
            "ngc_mirror_selections",
            {"latest": 0},
            ["ngc_mirror_selections.latest must be a whole number of at least 1 (leave it out for no limit), not 0"],
        ),
        (
            "ngc_mirror_selections",
            {"latest": True},
            ["ngc_mirror_selections.latest must be a whole number of at least 1 (leave it out for no limit), not true"],
        ),
        (
            "ngc_mirror_selections",
            {"images": "pytorch"},
            ['ngc_mirror_selections.images must be a list, each item a string of one line, not "pytorch"'],
        ),
        (
            "ngc_mirror_bundle",
            {"dir": "/b", "since": "first"},
            ['ngc_mirror_bundle.since must be last or a list of earlier bundles (absolute paths), not "first"'],
        ),
        (
            "ngc_mirror_enroot",
            {"dir": "/e", "squash_options": "-p 'x'"},
            ["ngc_mirror_enroot.squash_options \"-p 'x'\" is refused: "],
        ),
    ],
)
def test_each_kind_of_rule(name: str, options: dict[str, Any], expected: list[str]) -> None:
    found = problems(name, options)
    assert len(found) == len(expected) and all(f.startswith(e) for f, e in zip(found, expected)), found


def test_a_secret_is_never_shown() -> None:
    assert problems("ngc_mirror_registry", {"url": "https://r.example", "password": "one\ntwo-secret"}) == [
        "ngc_mirror_registry.password must be a string of one line (the value is not shown)"
    ]
    (message,) = problems("ngc_mirror_registry", "https://r.example?password=p4ss-secret")
    assert "p4ss-secret" not in message and "may hold a password" in message


def test_not_a_dict_is_named_with_its_value() -> None:
    assert problems("ngc_mirror_archive", ["/srv"]) == [
        'ngc_mirror_archive must be a dict of dir, format, platform, not ["/srv"]'
    ]
    assert FilterModule().filters()["option_problems"] is option_problems
