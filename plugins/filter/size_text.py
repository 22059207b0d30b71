# Copyright (c) airgap.ngc contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The size_text filter: a number of bytes as the collection prints sizes everywhere (1.5 GiB, 300 MiB, 0 B)."""

from __future__ import annotations

DOCUMENTATION = r"""
name: size_text
short_description: A number of bytes as people read it (1.5 GiB, 300 MiB, 0 B)
version_added: 0.1.0
description:
  - "Formats a number of bytes in powers of 1024 with at most three significant figures: C(80 B), C(12 KiB),
    C(1.5 GiB). Zero is C(0 B). A value that is not a number gives C(unknown size)."
  - The modules' messages, the ngc_mirror role's summary and the collection's playbooks print sizes with it, so a
    size reads the same everywhere.
options:
  _input:
    description: The number of bytes.
    type: raw
    required: true
"""

EXAMPLES = r"""
- name: Show how much was read
  ansible.builtin.debug:
    msg: "read {{ result.bytes_transferred | airgap.ngc.size_text }}"
"""

RETURN = r"""
_value:
  description: The size with its unit.
  type: str
  sample: 1.5 GiB
"""

from typing import Any, Callable

from ansible_collections.airgap.ngc.plugins.module_utils._types.sizes import size_text


class FilterModule:
    """The size_text filter."""

    def filters(self) -> dict[str, Callable[[Any], str]]:
        return {"size_text": size_text}
