# Copyright (c) airgap.ngc contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Unit tests for the facts file / state store."""
from __future__ import annotations

import json
import os
import stat
import subprocess
import sys

import pytest

from ansible_collections.airgap.ngc.plugins.module_utils._errors import AirgapError
from ansible_collections.airgap.ngc.plugins.module_utils._state import DEFAULT_FACTS_PATH, StateStore

KEY = "nvcr.io/nvidia/pytorch:24.01-py3"
DIGEST = "sha256:" + "a" * 64
NEW_DIGEST = "sha256:" + "b" * 64
REGISTRY = {"type": "registry", "reference": "registry.site:5000/nvidia/pytorch:24.01-py3", "digest": DIGEST}


def clock():
    return "2026-11-22T13:10:00Z"


def test_default_path_is_the_facts_file():
    assert DEFAULT_FACTS_PATH == "/etc/ansible/facts.d/ngc_mirror.fact"


def test_record_is_written_immediately_as_plain_json(tmp_path):
    path = tmp_path / "facts.d" / "ngc_mirror.fact"
    with StateStore(str(path), now=clock) as store:
        assert store.image(KEY) is None
        stored = store.record_destination(KEY, DIGEST, "registry:site", dict(REGISTRY))
        assert stored["source_digest"] == DIGEST and stored["written"] == clock()
        on_disk = json.loads(path.read_text())  # before close: nothing is lost by a crash from here on
        assert on_disk == {
            "schema": 1,
            "updated": clock(),
            "images": {KEY: {"source_digest": DIGEST, "destinations": {"registry:site": dict(REGISTRY, source_digest=DIGEST, written=clock())}}},
        }
        mode = stat.S_IMODE(os.stat(path).st_mode)
        assert mode == 0o644, "facts.d files that are executable get run by setup"
        assert sorted(os.listdir(path.parent)) == ["ngc_mirror.fact", "ngc_mirror.fact.lock"]
    with StateStore(str(path), read_only=True) as store:
        assert store.destination(KEY, "registry:site")["reference"] == REGISTRY["reference"]
        assert store.destination(KEY, "archive:x") is None
        assert store.is_current(KEY, "registry:site", DIGEST)
        assert not store.is_current(KEY, "registry:site", NEW_DIGEST)


def test_new_source_digest_keeps_other_destinations_marked_stale(tmp_path):
    path = tmp_path / "s.fact"
    with StateStore(str(path)) as store:
        store.record_destination(KEY, DIGEST, "registry:site", dict(REGISTRY))
        store.record_destination(KEY, NEW_DIGEST, "archive:/srv/a.tar", {"type": "archive", "path": "/srv/a.tar", "size": 10})
        assert store.image(KEY)["source_digest"] == NEW_DIGEST
        assert store.is_current(KEY, "archive:/srv/a.tar", NEW_DIGEST)
        assert not store.is_current(KEY, "registry:site", NEW_DIGEST)


def test_returned_records_are_copies(tmp_path):
    with StateStore(str(tmp_path / "s.fact")) as store:
        store.record_destination(KEY, DIGEST, "d", dict(REGISTRY))
        store.image(KEY)["destinations"].clear()
        store.destination(KEY, "d")["digest"] = "changed"
        assert store.destination(KEY, "d")["digest"] == DIGEST


def test_second_store_on_same_path_is_refused(tmp_path):
    path = tmp_path / "s.fact"
    with StateStore(str(path)):
        with pytest.raises(AirgapError) as caught:
            StateStore(str(path)).open()
        assert str(caught.value).startswith(f"another ngc_image_mirror run holds the lock on {path}.lock (pid {os.getpid()})")
        with StateStore(str(path), read_only=True) as reader:  # check mode reads while a run holds the lock
            assert reader.images() == {}
    with StateStore(str(path)) as store:  # released on exit
        store.record_failure(KEY, "x")


def test_lock_held_by_another_process(tmp_path):
    path = tmp_path / "s.fact"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, os, sys; fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT); fcntl.flock(fd, fcntl.LOCK_EX);"
         " os.write(fd, str(os.getpid()).encode()); print('locked', flush=True); sys.stdin.read()", f"{path}.lock"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(AirgapError, match=f"holds the lock on {path}.lock \\(pid {holder.pid}\\)"):
            StateStore(str(path)).open()
    finally:
        holder.stdin.close()
        holder.wait(timeout=10)
    with StateStore(str(path)) as store:
        assert store.images() == {}


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", '{"schema": 1, "images": []}', '{"images": {}}', "\xff\xfe", '{"schema": 1, "images": {"k": 3}}'])
def test_corrupt_file_is_an_error_and_left_alone(tmp_path, content):
    path = tmp_path / "s.fact"
    path.write_bytes(content.encode("latin-1"))
    for read_only in (False, True):
        with pytest.raises(AirgapError, match=f"state file {path}.*fix it or remove it"):
            StateStore(str(path), read_only=read_only).open()
    assert path.read_bytes() == content.encode("latin-1")
    with StateStore(str(path.parent / "other.fact")):
        pass  # the failed open released its lock: another store in the directory works


def test_failed_open_releases_the_lock(tmp_path):
    path = tmp_path / "s.fact"
    path.write_text("{oops")
    with pytest.raises(AirgapError):
        StateStore(str(path)).open()
    path.unlink()
    with StateStore(str(path)):
        pass


def test_newer_schema_is_refused(tmp_path):
    path = tmp_path / "s.fact"
    path.write_text('{"schema": 2, "images": {}}')
    with pytest.raises(AirgapError, match="newer airgap.ngc"):
        StateStore(str(path)).open()


def test_read_only_never_writes_or_locks(tmp_path):
    path = tmp_path / "missing" / "s.fact"
    with StateStore(str(path), read_only=True) as store:
        assert store.image(KEY) is None
        with pytest.raises(AirgapError, match="read-only"):
            store.record_destination(KEY, DIGEST, "d", dict(REGISTRY))
        with pytest.raises(AirgapError, match="read-only"):
            store.record_failure(KEY, "boom")
    assert not (tmp_path / "missing").exists()


def test_failed_write_keeps_old_file_and_memory(tmp_path, monkeypatch):
    path = tmp_path / "s.fact"
    with StateStore(str(path)) as store:
        store.record_destination(KEY, DIGEST, "d", dict(REGISTRY))
        before = path.read_bytes()

        def broken(src, dst):
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(os, "replace", broken)
        with pytest.raises(AirgapError, match=f"disk full: cannot write the state file {path}"):
            store.record_destination("other:1", DIGEST, "d", dict(REGISTRY))
        with pytest.raises(AirgapError, match="disk full"):
            store.record_destination(KEY, NEW_DIGEST, "d2", dict(REGISTRY))
        monkeypatch.undo()
        assert store.image("other:1") is None
        assert store.image(KEY)["source_digest"] == DIGEST and list(store.image(KEY)["destinations"]) == ["d"]
        assert path.read_bytes() == before
        assert sorted(os.listdir(tmp_path)) == ["s.fact", "s.fact.lock"], "the temporary file is removed"


def test_unusable_directory(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(AirgapError, match=f"cannot create the directory {blocker}/sub"):
        StateStore(str(blocker / "sub" / "s.fact")).open()


def test_secrets_are_refused(tmp_path):
    path = tmp_path / "s.fact"
    with StateStore(str(path)) as store:
        for entry in ({"type": "registry", "password": "x"}, {"auth": {"x": 1}}, {"nested": [{"api_key": "k"}]}, {"registry_token": "t"}):
            with pytest.raises(AirgapError, match="must hold no secrets"):
                store.record_destination(KEY, DIGEST, "d", entry)
        with pytest.raises(AirgapError, match="not plain JSON"):
            store.record_destination(KEY, DIGEST, "d", {"when": object()})
    assert not path.exists()


def test_failures_and_removal(tmp_path):
    path = tmp_path / "s.fact"
    with StateStore(str(path), now=clock) as store:
        store.record_failure(KEY, "401 from nvcr.io for nvidia/pytorch: check the NGC API key" + "x" * 5000)
        error = json.loads(path.read_text())["images"][KEY]["last_error"]
        assert error["time"] == clock() and error["message"].startswith("401 from nvcr.io") and len(error["message"]) == 2000
        store.record_destination(KEY, DIGEST, "d", dict(REGISTRY))
        assert "last_error" in store.image(KEY)
        assert store.clear_failure(KEY)
        assert not store.clear_failure(KEY)
        assert "last_error" not in json.loads(path.read_text())["images"][KEY]
        assert not store.remove(KEY, "nope")
        assert store.remove(KEY, "d")
        assert json.loads(path.read_text())["images"][KEY]["destinations"] == {}
        assert store.remove(KEY)
        assert json.loads(path.read_text())["images"] == {}


def test_use_without_open_is_an_error(tmp_path):
    with pytest.raises(AirgapError, match="not open"):
        StateStore(str(tmp_path / "s.fact")).image(KEY)
