# Copyright (c) airgap.ngc contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The other half of test_role_inputs' rows (the role refuses bad input before it writes anything), in a file of its
own so that a parallel run gives the two long playbook runs to two workers."""

from __future__ import annotations

from typing import Any

import pytest

from tests.integration.test_role_inputs import CASES, BadRuns, Case, RolePlay, apply_cases, judge

REST = CASES[1::2]


@pytest.fixture(scope="module")
def play(ansible: Any, tmp_path_factory: pytest.TempPathFactory) -> RolePlay:
    return RolePlay(ansible.env, tmp_path_factory.mktemp("role-inputs-rest"))


@pytest.fixture(scope="module")
def bad_runs(play: RolePlay) -> BadRuns:
    return apply_cases(play, REST, fallback=False)


@pytest.mark.parametrize("case", REST, ids=[c.id for c in REST])
def test_bad_input_fails_before_anything_is_written(case: Case, bad_runs: BadRuns) -> None:
    judge(case, bad_runs)
