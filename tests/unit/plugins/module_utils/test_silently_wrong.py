# Copyright (c) airgap.ngc contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Options that used to do something wrong without a word: an inventory_file that is another file, parallel_images out
of bounds, an images dict whose name is not a string, teams that hold nothing."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from ansible_collections.airgap.ngc.plugins.module_utils._transports.bundle import INVENTORY_KIND
from ansible_collections.airgap.ngc.plugins.module_utils._catalog.catalog import Catalog, CatalogQuery, inspect_catalog
from ansible_collections.airgap.ngc.plugins.module_utils._types.errors import AirgapError, ConfigError
from ansible_collections.airgap.ngc.plugins.module_utils._types.filters import ImageFilter
from ansible_collections.airgap.ngc.plugins.module_utils._copy.copier import write_inventory
from ansible_collections.airgap.ngc.plugins.module_utils._clients.ngc import NgcRepository
from ansible_collections.airgap.ngc.plugins.module_utils._copy.validate import MAX_PARALLEL, validate_mirror
from ansible_collections.airgap.ngc.tests.unit.plugins.module_utils.test_options import MIRROR, params_for

# The role's checks of its variables (validate.yml runs them in one task): the bounds of each count are listed there.
ROLE_CHECKS = Path(__file__).resolve().parents[4] / "roles" / "ngc_mirror" / "vars" / "main.yml"


def bundle(directory: Path, refs: list[str]) -> Path:
    """A bundle's index naming ``refs`` (enough to be listed and chosen as a source; no image is read)."""
    directory.mkdir(parents=True)
    (directory / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    (directory / "index.json").write_text(
        json.dumps(
            {
                "schemaVersion": 2,
                "manifests": [
                    {
                        "mediaType": "application/vnd.oci.image.manifest.v1+json",
                        "digest": "sha256:" + f"{n:x}" * 64,
                        "size": 100,
                        "annotations": {"org.opencontainers.image.ref.name": ref},
                    }
                    for n, ref in enumerate(refs, start=1)
                ],
            }
        )
    )
    return directory


@pytest.fixture
def far(tmp_path: Path) -> dict[str, Any]:
    """The options of an import from a bundle into an archive directory, with an inventory file."""
    bundle(tmp_path / "bundle", ["nvcr.io/nvidia/pytorch:24.01-py3"])
    (tmp_path / "facts").mkdir()
    return params_for(
        MIRROR,
        {
            "source": "bundle",
            "source_dir": "{tmp}/bundle",
            "archive": {},
            "images": None,
            "inventory_file": "{tmp}/inventory.json",
            "progress_file": "{tmp}/progress.json",
        },
        tmp_path,
    )


def refused(params: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as excinfo:
        validate_mirror(params)
    return str(excinfo.value)


def test_an_inventory_file_that_is_another_json_file_is_refused_and_kept(far: dict[str, Any], tmp_path: Path) -> None:
    other = tmp_path / "inventory.json"
    other.write_text('{"site": "precious settings"}')
    message = refused(far)
    assert message.startswith(
        f"invalid inventory_file '{other}': it exists and is not an inventory of ngc_image_mirror"
    )
    with pytest.raises(AirgapError, match="is not an inventory this collection wrote"):
        write_inventory(str(other), object(), [])  # the writer refuses it too, should it appear after the check
    assert other.read_text() == '{"site": "precious settings"}'
    other.write_text("[1, 2]")
    assert "is not an inventory" in refused(far)


def test_an_inventory_file_of_an_earlier_import_or_an_empty_one_is_taken(far: dict[str, Any], tmp_path: Path) -> None:
    validate_mirror(far)  # not there yet
    (tmp_path / "inventory.json").write_text("")
    validate_mirror(far)
    write_inventory(far["inventory_file"], object(), [])
    assert json.loads((tmp_path / "inventory.json").read_text())["kind"] == INVENTORY_KIND
    validate_mirror(far)


@pytest.mark.parametrize("same_as", ["facts_file", "facts_file lock", "progress_file"])
def test_an_inventory_file_that_is_a_file_of_the_run_is_refused(far: dict[str, Any], same_as: str) -> None:
    path = far["facts_file"] + ".lock" if same_as == "facts_file lock" else far[same_as.split()[0]]
    message = refused(dict(far, inventory_file=path))
    assert message.startswith(f"invalid inventory_file '{path}': it is the {same_as.split()[0]}")


@pytest.mark.parametrize("value", [0, -3, 10000])
def test_parallel_images_out_of_bounds_is_refused_by_the_module(far: dict[str, Any], value: int) -> None:
    message = refused(dict(far, parallel_images=value))
    assert message.startswith(
        f"invalid parallel_images {value}: expected how many images are planned at once, from 1 to 64"
    )


def test_the_role_checks_parallel_images_with_the_module_s_bounds(far: dict[str, Any]) -> None:
    for good in (1, MAX_PARALLEL):
        validate_mirror(dict(far, parallel_images=good))
    text = ROLE_CHECKS.read_text()
    assert re.search(
        rf"\('ngc_mirror_parallel_images', 1, {MAX_PARALLEL}, 'a whole number from 1 to {MAX_PARALLEL}'\)", text
    )


@pytest.mark.parametrize(
    "item, expected",
    [
        (
            {"name": ["a"], "tag": 5},
            "invalid images item 1 name ['a']: expected a string (a repository such as nvidia/pytorch), not a list",
        ),
        ({"name": {"x": 1}}, "invalid images item 1 name {'x': 1}: expected a string"),
        ({"name": "nvidia/x", "tag": [5]}, "invalid images item 1 tag [5]: expected a string, not a list"),
        ({"reference": 7}, "invalid images item 1 reference 7: expected a string, not a int"),
    ],
)
def test_an_images_dict_with_a_key_of_the_wrong_type_is_told_which(
    far: dict[str, Any], item: dict[str, Any], expected: str
) -> None:
    message = refused(dict(far, source="registry", source_dir=None, inventory_file=None, images=[item]))
    assert message.startswith(expected)


# -- teams -----------------------------------------------------------------------------------------------------------
CATALOG = {"source": "bundle", "org": "nvidia", "teams": None, "images": None, "include_digests": False, "parallel": 1}


def test_teams_select_repository_paths_of_a_bundle_and_one_holding_nothing_is_named(tmp_path: Path) -> None:
    source = bundle(
        tmp_path / "b", ["nvcr.io/nvidia/pytorch:24.01-py3", "nvcr.io/nvidia/clara/clara-parabricks:4.2.0-1"]
    )
    everything = inspect_catalog(dict(CATALOG, source_dir=str(source)))
    assert {i["name"] for i in everything["images"]} == {"nvidia/pytorch", "nvidia/clara/clara-parabricks"}
    assert everything["warnings"] == []
    clara = inspect_catalog(dict(CATALOG, source_dir=str(source), teams=["clara"]))
    assert [i["name"] for i in clara["images"]] == ["nvidia/clara/clara-parabricks"] and clara["warnings"] == []
    own = inspect_catalog(dict(CATALOG, source_dir=str(source), teams=[""]))
    assert [i["name"] for i in own["images"]] == ["nvidia/pytorch"]
    nothing = inspect_catalog(dict(CATALOG, source_dir=str(source), teams=["clara", "nosuchteam"]))
    assert [i["name"] for i in nothing["images"]] == ["nvidia/clara/clara-parabricks"]
    assert nothing["warnings"] == [
        f"teams item 2: org 'nvidia' has no repository in team 'nosuchteam' at the bundle {source}, "
        "so nothing is listed for it; check the name"
    ]


class _Ngc:
    """An NGC catalog whose org has a team ``clara`` and knows a team ``empty`` that holds nothing."""

    def repositories(self, org: str) -> list[NgcRepository]:
        return [NgcRepository(org, None, "pytorch"), NgcRepository(org, "clara", "clara-parabricks")]

    def require_team(self, org: str, team: str) -> None:
        if team != "empty":
            raise AirgapError(f"404: team {team!r} of org {org!r} not found")

    def images(self, repo: NgcRepository) -> list[Any]:
        return []


class _Registry:
    host = "nvcr.io"


def test_a_team_ngc_knows_but_that_holds_nothing_is_named_in_a_warning() -> None:
    catalog = Catalog(
        CatalogQuery(ImageFilter.create(), teams=["clara", "empty"], include_digests=False), _Registry(), _Ngc()
    )
    assert catalog.list() == []
    assert catalog.warnings == [
        "teams item 2: org 'nvidia' has no repository in team 'empty' at NGC, so nothing is listed for it; "
        "check the name"
    ]
    with pytest.raises(AirgapError, match="team 'nosuch' of org 'nvidia' not found"):
        Catalog(CatalogQuery(ImageFilter.create(), teams=["nosuch"], include_digests=False), _Registry(), _Ngc()).list()
