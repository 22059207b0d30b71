# Copyright (c) airgap.ngc contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The squash_options_problem filter: the module's rules for mksquashfs options, for the ngc_mirror role."""

from __future__ import annotations

DOCUMENTATION = r"""
name: squash_options_problem
short_description: Why a value is not a squash_options value the enroot and apptainer destinations accept
version_added: 0.1.0
description:
  - "Checks a C(squash_options) value as M(airgap.ngc.ngc_image_mirror) checks
    O(airgap.ngc.ngc_image_mirror#module:enroot.squash_options) and
    O(airgap.ngc.ngc_image_mirror#module:apptainer.squash_options): only C(mksquashfs) options that shape compression
    and layout, each with an argument of its shape. An option that reads a file, runs a command or changes what the
    image holds (C(-p), C(-pf), C(-sort), C(-ef), C(-tar), ...) is refused."
  - The ngc_mirror role checks its C(ngc_mirror_enroot) and C(ngc_mirror_apptainer) with it before it writes anything.
options:
  _input:
    description: The C(squash_options) value.
    type: raw
    required: true
"""

EXAMPLES = r"""
- name: Refuse options that would run a command
  ansible.builtin.assert:
    that: squash_options | airgap.ngc.squash_options_problem == ''
    fail_msg: "squash_options: {{ squash_options | airgap.ngc.squash_options_problem }}"
"""

RETURN = r"""
_value:
  description: What is wrong with the value, naming the option; empty when it is accepted.
  type: str
  sample: "-p is refused: it adds pseudo files, which run commands and make devices; ..."
"""

from typing import Any, Callable

from ansible_collections.airgap.ngc.plugins.module_utils._types.squash_options import squash_options_problem as _problem


def squash_options_problem(value: Any) -> str:
    """The reason the value is refused, or an empty string."""
    return _problem(value) or ""


class FilterModule:
    """The collection's filters."""

    def filters(self) -> dict[str, Callable[[Any], str]]:
        return {"squash_options_problem": squash_options_problem}
