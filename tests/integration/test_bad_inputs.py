# Copyright (c) airgap.ngc contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Bad input to either module fails at the door, seen from Ansible against the test bed: a one-line message naming
the option and the value, no secret in the output, no request sent, and nothing an earlier run mirrored changed.

One good run first mirrors two images into a registry, an archive directory and a facts file. Then one playbook runs
a batch of rows of the bad-input table (tests/unit/plugins/modules/bad_input_cases.py; the unit test runs every row
through the module) as tasks that may fail, and the request counters, the files and the registry are compared with
what they were before.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import time
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from tests.unit.plugins.modules.bad_input_cases import (
    CASES,
    IMAGES,
    M,
    PASSWORD,
    URL_PASSWORD,
    Case,
    call_args,
    fill,
    good_calls,
)

# Rows run end to end (it holds the test bed alone: its request counters must stay at zero), a few that between them
# hold a password, a password in a URL and the key, read the files an earlier run wrote, run in check mode, break a rule
# of the argument spec, and call both modules; the unit test runs every row of the table through the module.
BATCH = [
    "registry.url userinfo",
    "registry.password trailing newline",
    "archive.dir is a file",
    "progress_file is a device",
    "no destination",
    "catalog api_key trailing newline",
]


def skopeo_digest(host: str, reference: str) -> str:
    raw = subprocess.run(
        ["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{host}/{reference}"],
        capture_output=True,
        check=True,
    ).stdout
    return "sha256:" + hashlib.sha256(raw).hexdigest()


class Mirrored(NamedTuple):
    """What the good run wrote, and the placeholders of the table."""

    places: dict[str, str]
    archive: Path
    facts: Path
    progress: Path


@pytest.fixture(scope="module")
def mirrored(ansible: Any, testbed: Any, tmp_path_factory: pytest.TempPathFactory) -> Mirrored:
    """One good run into the open registry (under a namespace of its own), an archive directory and a facts file."""
    root = tmp_path_factory.mktemp("bad-inputs")
    archive, facts, progress = root / "archives", root / "facts" / "ngc_mirror.fact", root / "progress.json"
    (root / "notes.txt").write_text("notes that are not a certificate, nor a progress file\n")
    ns = f"bad-inputs-{os.getpid()}-{int(time.time() * 1000) % 100000}"
    places = {
        "proxy": testbed.source_proxy_url,
        "open": testbed.open_registry_url,
        "ngc": testbed.ngc_api_url,
        "ns": ns,
        "archive": str(archive),
        "facts": str(facts),
        "progress": str(progress),
        "tmp": str(root),
        "key": testbed.api_key,
    }
    good = dict(good_calls(places)[M], registry_url=testbed.source_registry_url)
    run = ansible.module(M, good, api_key=testbed.api_key)
    assert run.rc == 0, run.stdout + run.stderr
    assert [image["status"] for image in run.result["images"]] == ["copied"] * len(IMAGES)
    return Mirrored(places, archive, facts, progress)


def snapshot(testbed: Any, mirrored: Mirrored) -> dict[str, Any]:
    """The facts and progress files' bytes, every name under the archive directory with its size and mtime, and the
    registry's digest of each mirrored image (read by skopeo)."""
    listing = sorted(
        (
            str(path.relative_to(mirrored.archive)),
            path.stat().st_size if path.is_file() else None,
            path.stat().st_mtime_ns,
        )
        for path in mirrored.archive.rglob("*")
    )
    ns = mirrored.places["ns"]
    return {
        "facts": mirrored.facts.read_bytes(),
        "progress": mirrored.progress.read_bytes(),
        "archive": listing,
        "registry": {ref: skopeo_digest(testbed.open_registry_host, f"{ns}/{ref}") for ref in IMAGES},
    }


def task(case: Case, mirrored: Mirrored) -> dict[str, Any]:
    """The row as a task that may fail; the key reaches the module through NGC_API_KEY, from the 0600 vars file."""
    key = "good_key" if case.api_key == "{key}" else case.id.replace(" ", "_").replace(",", "")
    return {
        "name": case.id,
        f"airgap.ngc.{case.module}": call_args(case, good_calls(mirrored.places), mirrored.places),
        "check_mode": case.check,
        "ignore_errors": True,
        "environment": {"NGC_API_KEY": "{{ %s }}" % key},
    }


def test_a_batch_of_bad_inputs_fails_at_the_door(
    ansible: Any, testbed: Any, faults: Any, mirrored: Mirrored, tmp_path: Path
) -> None:
    by_id = {case.id: case for case in CASES}
    batch = [by_id[name] for name in BATCH]
    assert {case.module for case in batch} == {case.module for case in CASES}
    before = snapshot(testbed, mirrored)
    keys = {"good_key": testbed.api_key}
    keys.update(
        {
            case.id.replace(" ", "_").replace(",", ""): fill(case.api_key, mirrored.places)
            for case in batch
            if case.api_key != "{key}"
        }
    )
    playbook = tmp_path / "bad-inputs.yml"
    playbook.write_text(
        json.dumps([{"hosts": "localhost", "gather_facts": False, "tasks": [task(case, mirrored) for case in batch]}])
    )
    playbook.chmod(0o600)
    faults.reset()  # count from here: the good run and the snapshot are not the batch's requests
    run = ansible.playbook(playbook, extra_vars=keys)
    output = run.stdout + run.stderr
    # The minimal callback prints `localhost | STATUS => {result}` for each task, in order.
    assert re.findall(r"^localhost \| ([A-Z]+)!? =>", run.stdout, re.MULTILINE) == ["FAILED"] * len(batch), output
    assert len(run.results) == len(batch), output
    for case, result in zip(batch, run.results):
        msg = result["msg"]
        for expected in case.expect:
            assert fill(expected, mirrored.places) in msg, (case.id, msg)
        assert "\n" not in msg.strip(), (case.id, msg)
        for word in ("Traceback", "Module failed", "MODULE FAILURE"):
            assert word not in msg, (case.id, msg)
    for secret in (testbed.api_key, PASSWORD, testbed.basic_password, URL_PASSWORD):
        assert secret not in output
    # Nothing was asked of the source registry or the NGC API, and nothing mirrored earlier changed.
    assert faults.stats("registry")["total"] == 0
    assert faults.stats("ngc")["total"] == 0
    assert snapshot(testbed, mirrored) == before
