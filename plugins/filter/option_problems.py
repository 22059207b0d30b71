# Copyright (c) airgap.ngc contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The option_problems filter: what is wrong with a dict of options against a spec, for the ngc_mirror role."""

from __future__ import annotations

DOCUMENTATION = r"""
name: option_problems
short_description: What is wrong with a dict of options, each problem naming the option and its value
version_added: 0.1.0
description:
  - "Checks a dict (a destination of the ngc_mirror role, such as C(ngc_mirror_registry), or one of its selections)
    against a spec of its options and returns one message per problem: unknown options, a required option not set,
    a value of the wrong type or shape. A secret's value is never shown."
  - "A spec maps each option to a rule: C(type) is V(str) (a string matching the pattern named by C(pattern)),
    V(list) (of such strings), V(bool), V(count) (a whole number of at least 1), V(choice) (one of C(choices)),
    V(secret) (a string of one line) or V(since) (V(last) or a list of paths); C(required) makes it required when
    the dict is not empty; C(check=squash_options) also applies the rules of
    O(airgap.ngc.ngc_image_mirror#module:enroot.squash_options)."
  - The ngc_mirror role checks its variables with it, all of them in one task, before it writes anything.
options:
  _input:
    description: The dict of options (anything else is a problem too).
    type: raw
    required: true
  name:
    description: What the dict is called in the messages (C(ngc_mirror_registry), C(ngc_mirror_selections[0])).
    type: str
    required: true
  spec:
    description: The rules, by option name.
    type: dict
    required: true
  patterns:
    description: The regular expressions the rules' C(pattern) names (C(line) when a rule names none).
    type: dict
    required: true
  pattern_what:
    description: What a string matching each pattern is, for the messages.
    type: dict
    required: true
  bool_words:
    description: The strings taken as a boolean besides V(true) and V(false) themselves.
    type: list
    elements: str
    required: true
"""

EXAMPLES = r"""
- name: Check the registry's options
  ansible.builtin.assert:
    that: _problems | length == 0
    fail_msg: "{{ _problems | join('; ') }}"
  vars:
    _problems: >-
      {{ ngc_mirror_registry | airgap.ngc.option_problems('ngc_mirror_registry', {'url': {'type': 'str', 'pattern': 'url',
         'required': true}}, {'url': '^https?://', 'line': '^[^\\n]*$'}, {'url': 'a URL', 'line': 'one line'}, ['yes', 'no']) }}
"""

RETURN = r"""
_value:
  description: One message per problem, in the spec's order after any unknown options; empty when the dict is good.
  type: list
  elements: str
  sample: ["ngc_mirror_registry.url must be set (a URL with its scheme)"]
"""

import json
import re
from collections.abc import Mapping
from typing import Any, Callable

from ansible_collections.airgap.ngc.plugins.module_utils._types.squash_options import squash_options_problem


def _json(value: Any) -> str:
    return json.dumps(value, default=str)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_list(value: Any) -> bool:
    return isinstance(value, (list, tuple))


def _matches(value: Any, pattern: str) -> bool:
    return isinstance(value, str) and re.match(pattern, value) is not None


def _count(value: Any) -> bool:
    """A whole number of at least 1, as a number or its digits."""
    if _is_int(value):
        return value >= 1
    return isinstance(value, str) and re.match(r"^[0-9]+\Z", value) is not None and int(value) >= 1


def option_problems(
    options: Any,
    name: str,
    spec: Mapping[str, Any],
    patterns: Mapping[str, str],
    pattern_what: Mapping[str, str],
    bool_words: list[str],
) -> list[str]:
    """The problems of ``options`` (called ``name``) against ``spec``; a null option counts as not set."""
    if not isinstance(options, Mapping):
        secret = any(rule.get("type") == "secret" for rule in spec.values())
        shown = " (the value is not shown: it may hold a password)" if secret else f", not {_json(options)}"
        return [f"{name} must be a dict of {', '.join(spec)}{shown}"]
    problems = []
    unknown = sorted(set(options) - set(spec))
    if unknown:
        problems.append(f"{name} has unknown option(s) {', '.join(unknown)} (the options are {', '.join(spec)})")
    for key, rule in spec.items():
        value = options.get(key)
        pattern = patterns[rule.get("pattern") or "line"]
        what = pattern_what.get(rule.get("pattern") or "line", "")
        kind = rule.get("type")
        problem = ""
        if value is None:
            if rule.get("required") and len(options) > 0:
                problem = f"must be set ({what})"
        elif kind == "secret":
            if not _matches(value, pattern):
                problem = "must be a string of one line (the value is not shown)"
        elif kind == "str":
            if not _matches(value, pattern):
                problem = f"must be {what}, not {_json(value)}"
            elif rule.get("check") == "squash_options" and squash_options_problem(value):
                problem = f"{_json(value)} is refused: {squash_options_problem(value)}"
        elif kind == "list":
            if not (_is_list(value) and all(_matches(item, pattern) for item in value)):
                problem = f"must be a list, each item {what}, not {_json(value)}"
        elif kind == "bool":
            if not (isinstance(value, bool) or value in bool_words):
                problem = f"must be true or false, not {_json(value)}"
        elif kind == "count":
            if not _count(value):
                problem = f"must be a whole number of at least 1 (leave it out for no limit), not {_json(value)}"
        elif kind == "since":
            if not (value == "last" or (_is_list(value) and all(_matches(item, pattern) for item in value))):
                problem = f"must be last or a list of earlier bundles (absolute paths), not {_json(value)}"
        elif kind == "choice":
            if value not in rule.get("choices", []):
                problem = f"must be {' or '.join(rule.get('choices', []))}, not {_json(value)}"
        if problem:
            problems.append(f"{name}.{key} {problem}")
    return problems


class FilterModule:
    """The option_problems filter."""

    def filters(self) -> dict[str, Callable[..., list[str]]]:
        return {"option_problems": option_problems}
