# Copyright (c) airgap.ngc contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The sub-packages of module_utils are layers and import one way only (docs/design/layers.md)."""

from __future__ import annotations

import ast
import os

import pytest

PREFIX = "ansible_collections.airgap.ngc.plugins.module_utils."
# Lower rank first; a package may import its own package and any package of a lower rank.
# _copy and _catalog sit side by side at the top: neither imports the other.
RANKS = {
    "_types": 0,
    "_http": 1,
    "_clients": 2,
    "_formats": 3,
    "_state": 4,
    "_transports": 5,
    "_copy": 6,
    "_catalog": 6,
}
ROOT = os.path.join(os.path.dirname(__file__), "..", "..", "..", "..", "plugins")
MODULE_UTILS = os.path.join(ROOT, "module_utils")


def imported_packages(path: str) -> list[tuple[int, str]]:
    """(line, sub-package) of every import of this collection's module_utils in the file at ``path``."""
    with open(path, encoding="utf-8") as handle:
        tree = ast.parse(handle.read(), path)
    found = []
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module:
            names = (
                [node.module]
                if node.module.startswith(PREFIX)
                else [f"{node.module}.{alias.name}" for alias in node.names]
            )
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        for name in names:
            if name.startswith(PREFIX):
                found.append((node.lineno, name[len(PREFIX) :].split(".")[0]))
    return found


def layer_files() -> list[tuple[str, str]]:
    files = []
    for package in sorted(os.listdir(MODULE_UTILS)):
        directory = os.path.join(MODULE_UTILS, package)
        if os.path.isdir(directory) and not package.startswith("__"):
            files += [
                (package, os.path.join(directory, name))
                for name in sorted(os.listdir(directory))
                if name.endswith(".py")
            ]
    return files


def test_every_sub_package_has_a_rank() -> None:
    packages = {package for package, _path in layer_files()}
    assert packages == set(RANKS)
    assert not [name for name in os.listdir(MODULE_UTILS) if name.endswith(".py") and name != "__init__.py"], (
        "module_utils keeps its files in the layers"
    )


@pytest.mark.parametrize("package,path", layer_files(), ids=lambda value: os.path.basename(str(value)))
def test_imports_run_one_way(package: str, path: str) -> None:
    wrong = [
        f"line {line} imports {target}"
        for line, target in imported_packages(path)
        if target not in RANKS
        or RANKS[target] > RANKS[package]
        or (RANKS[target] == RANKS[package] and target != package)
    ]
    assert not wrong, f"{package}/{os.path.basename(path)} imports upwards or sideways: {wrong}"


def test_modules_and_filters_import_the_top_layers_only_through_module_utils() -> None:
    for kind in ("modules", "filter"):
        directory = os.path.join(ROOT, kind)
        for name in sorted(os.listdir(directory)):
            if name.endswith(".py"):
                targets = {target for _line, target in imported_packages(os.path.join(directory, name))}
                assert targets <= set(RANKS), f"{kind}/{name} imports {targets - set(RANKS)}"


def test_a_wrong_way_import_is_found(tmp_path) -> None:
    wrong = tmp_path / "bad.py"
    wrong.write_text(f"from {PREFIX}_copy.copier import Mirror\n")
    assert imported_packages(str(wrong)) == [(1, "_copy")]
