# Copyright (c) airgap.ngc contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The facts file under kill -9: Ansible's setup still reads one JSON document, and the next run skips every image
the killed one finished (its record was journaled), judged by the archives on disk and by setup's ansible_local."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.integration.test_image_mirror import REPO, TAGS, kill_run, mirror_args, skopeo


def local_facts(ansible: Any, facts_dir: Path) -> dict[str, Any]:
    """ansible_local as Ansible's setup module reads it from the directory (each *.fact file one JSON document)."""
    argv = [
        str(Path(sys.executable).parent / "ansible"),
        "localhost",
        "-m",
        "ansible.builtin.setup",
        "-a",
        json.dumps({"fact_path": str(facts_dir), "filter": "ansible_local"}),
    ]
    proc = subprocess.run(
        argv, env=ansible.env, cwd=str(REPO), capture_output=True, text=True, timeout=300, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    found = json.loads(proc.stdout[proc.stdout.index("{") :])
    return found["ansible_facts"]["ansible_local"]


def archives(archive_dir: Path) -> tuple[set[str], set[str]]:
    """(images whose archive is in place, images whose archive is being written), as name:tag."""
    done, partial = set(), set()
    for path in archive_dir.rglob("*"):
        if not path.is_file():
            continue
        name = str(path.parent.relative_to(archive_dir))
        whole = re.fullmatch(r"(?P<tag>[^.].*)\.tar", path.name)
        cut = re.fullmatch(r"\.(?P<tag>.+)\.tar\.(?:partial-\d+.*|resume)", path.name)
        if whole:
            done.add(f"{name}:{whole.group('tag')}")
        elif cut:
            partial.add(f"{name}:{cut.group('tag')}")
    return done, partial - done


def test_killed_mirror_keeps_one_json_document_and_the_rerun_skips_what_it_finished(
    ansible: Any, testbed: Any, tmp_path: Path, faults: Any
) -> None:
    facts_dir = tmp_path / "facts"
    facts_file = facts_dir / "ngc_mirror.fact"
    archive_dir = tmp_path / "archives"
    # Through the proxy from the start: the facts are keyed by the source reference, host included.
    args = mirror_args(
        testbed,
        tmp_path,
        TAGS[:1],
        registry_url=testbed.source_proxy_url,
        archive={"dir": str(archive_dir)},
        parallel=1,
        parallel_images=1,
    )
    first = ansible.module("ngc_image_mirror", args, api_key=testbed.api_key)
    assert first.rc == 0 and first.result["changed"] is True, first.stdout
    before = local_facts(ansible, facts_dir)["ngc_mirror"]
    assert len(before["images"]) == 1

    # The same run over every tag, each blob download slowed down, killed once it has finished at least one more image
    # and is in the middle of another. Images are copied one after another: one being written means the ones whose
    # archive is in place were recorded (the record follows the archive's rename, before the next image starts).
    faults.registry(delay=1, count=None, path_contains="/blobs/sha256:")
    args = dict(args, images=TAGS)
    argv = [
        str(Path(sys.executable).parent / "ansible"),
        "localhost",
        "-m",
        "airgap.ngc.ngc_image_mirror",
        "-a",
        json.dumps(args),
    ]
    proc = subprocess.Popen(
        argv,
        env=dict(ansible.env, NGC_API_KEY=testbed.api_key),
        cwd=str(REPO),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and proc.poll() is None:
        done, partial = archives(archive_dir)
        if len(done) >= 2 and partial:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be interrupted"
    kill_run(proc, Path(str(facts_file) + ".lock"))
    faults.reset()
    finished, cut = archives(archive_dir)
    assert cut and len(finished) < len(TAGS), (finished, cut)

    # What Ansible's setup reads is still one whole JSON document: the file of the last completed compaction.
    json.loads(facts_file.read_text())
    assert local_facts(ansible, facts_dir)["ngc_mirror"] == before

    rerun = ansible.module("ngc_image_mirror", args, api_key=testbed.api_key)
    assert rerun.rc == 0, rerun.stdout
    status = {entry["reference"].split("/", 1)[1]: entry["status"] for entry in rerun.result["images"]}
    assert {ref for ref, state in status.items() if state == "skipped"} == finished, status
    assert {ref for ref, state in status.items() if state == "copied"} == set(TAGS) - finished, status
    after = local_facts(ansible, facts_dir)["ngc_mirror"]
    assert len(after["images"]) == len(TAGS)
    for key, record in after["images"].items():
        (entry,) = record["destinations"].values()
        archive = Path(entry["path"])
        assert archive.stat().st_size == entry["size"], key
        assert json.loads(skopeo("inspect", f"docker-archive:{archive}"))["Digest"]
    assert not [p for p in facts_dir.iterdir() if p.name not in ("ngc_mirror.fact", "ngc_mirror.fact.lock")], (
        "the journal is compacted"
    )

    again = ansible.module("ngc_image_mirror", args, api_key=testbed.api_key)
    assert again.rc == 0 and again.result["changed"] is False, again.stdout
