# Copyright (c) airgap.ngc contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Unit tests for the facts file / state store."""

from __future__ import annotations

import json
import os
import random
import signal
import stat
import subprocess
import sys
import threading
import time

import pytest

from ansible_collections.airgap.ngc.plugins.module_utils._types.errors import AirgapError
from ansible_collections.airgap.ngc.plugins.module_utils._formats.files import cleanup_stale_partials
from ansible_collections.airgap.ngc.plugins.module_utils._state.facts import (
    DEFAULT_FACTS_PATH,
    StateStore,
    seconds_since,
    utc_now,
)

KEY = "nvcr.io/nvidia/pytorch:24.01-py3"
DIGEST = "sha256:" + "a" * 64
NEW_DIGEST = "sha256:" + "b" * 64
REGISTRY = {"type": "registry", "reference": "registry.site:5000/nvidia/pytorch:24.01-py3", "digest": DIGEST}


def clock():
    return "2026-11-22T13:10:00Z"


def test_default_path_is_the_facts_file():
    assert DEFAULT_FACTS_PATH == "/etc/ansible/facts.d/ngc_mirror.fact"


def on_disk(path):
    """What the next run (or check mode) finds: the facts file with its journal replayed."""
    with StateStore(str(path), read_only=True) as reader:
        return reader.data


def test_record_is_on_disk_at_once_and_the_facts_file_is_plain_json(tmp_path):
    path = tmp_path / "facts.d" / "ngc_mirror.fact"
    journal = tmp_path / "facts.d" / ".ngc_mirror.fact.journal"
    expected = {
        "schema": 1,
        "updated": clock(),
        "images": {
            KEY: {
                "source_digest": DIGEST,
                "destinations": {"registry:site": dict(REGISTRY, source_digest=DIGEST, written=clock())},
            }
        },
    }
    with StateStore(str(path), now=clock) as store:
        assert store.image(KEY) is None
        stored = store.record_destination(KEY, DIGEST, "registry:site", dict(REGISTRY))
        assert stored["source_digest"] == DIGEST and stored["written"] == clock()
        assert on_disk(path) == expected  # before close: nothing is lost by a crash from here on
        assert not path.exists(), "the facts file is only ever replaced whole, at compaction"
        assert stat.S_IMODE(os.stat(journal).st_mode) == 0o644
    assert json.loads(path.read_text()) == expected
    mode = stat.S_IMODE(os.stat(path).st_mode)
    assert mode == 0o644, "facts.d files that are executable get run by setup"
    assert sorted(os.listdir(path.parent)) == ["ngc_mirror.fact", "ngc_mirror.fact.lock"], (
        "the journal is gone once compacted"
    )
    with StateStore(str(path), read_only=True) as store:
        assert store.destination(KEY, "registry:site")["reference"] == REGISTRY["reference"]
        assert store.destination(KEY, "archive:x") is None
        assert store.is_current(KEY, "registry:site", DIGEST)
        assert not store.is_current(KEY, "registry:site", NEW_DIGEST)


def test_new_source_digest_keeps_other_destinations_marked_stale(tmp_path):
    path = tmp_path / "s.fact"
    with StateStore(str(path)) as store:
        store.record_destination(KEY, DIGEST, "registry:site", dict(REGISTRY))
        store.record_destination(
            KEY, NEW_DIGEST, "archive:/srv/a.tar", {"type": "archive", "path": "/srv/a.tar", "size": 10}
        )
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
        assert str(caught.value).startswith(
            f"another ngc_image_mirror run holds the lock on {path}.lock (pid {os.getpid()})"
        )
        with StateStore(str(path), read_only=True) as reader:  # check mode reads while a run holds the lock
            assert reader.images() == {}
    with StateStore(str(path)) as store:  # released on exit
        store.record_failure(KEY, "x")


def test_lock_held_by_another_process(tmp_path):
    path = tmp_path / "s.fact"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, os, sys; fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT); fcntl.flock(fd, fcntl.LOCK_EX);"
            " os.write(fd, str(os.getpid()).encode()); print('locked', flush=True); sys.stdin.read()",
            f"{path}.lock",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(AirgapError, match=f"holds the lock on {path}.lock \\(pid {holder.pid}\\)"):
            StateStore(str(path)).open()
    finally:
        holder.stdin.close()
        holder.wait(timeout=10)
    with StateStore(str(path)) as store:
        assert store.images() == {}


@pytest.mark.parametrize(
    "content",
    [
        "{not json",
        "[1, 2]",
        '{"schema": 1, "images": []}',
        '{"images": {}}',
        "\xff\xfe",
        '{"schema": 1, "images": {"k": 3}}',
    ],
)
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


def test_failed_write_keeps_disk_and_memory_and_the_journal_clean(tmp_path, monkeypatch):
    path = tmp_path / "s.fact"
    real_write = os.write
    with StateStore(str(path)) as store:
        store.record_destination(KEY, DIGEST, "d", dict(REGISTRY))
        before = on_disk(path)
        journal = (tmp_path / ".s.fact.journal").read_bytes()
        calls = []

        def half_then_full(fd, data):  # the disk fills up half-way through a journal line
            calls.append(fd)
            if len(calls) == 1:
                return real_write(fd, bytes(data)[: len(data) // 2])
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(os, "write", half_then_full)
        with pytest.raises(AirgapError, match=f"disk full: cannot write the state file {path}"):
            store.record_destination("other:1", DIGEST, "d", dict(REGISTRY))
        with pytest.raises(AirgapError, match="disk full"):
            store.record_destination(KEY, NEW_DIGEST, "d2", dict(REGISTRY))
        monkeypatch.undo()
        assert len(calls) == 3
        assert store.image("other:1") is None
        assert store.image(KEY)["source_digest"] == DIGEST and list(store.image(KEY)["destinations"]) == ["d"]
        assert on_disk(path) == before
        assert (tmp_path / ".s.fact.journal").read_bytes() == journal, "the half line is cut away"
        store.record_destination("third:1", DIGEST, "d", dict(REGISTRY))  # the disk has room again
        assert sorted(on_disk(path)["images"]) == [KEY, "third:1"]
    assert sorted(json.loads(path.read_text())["images"]) == [KEY, "third:1"]


def test_failed_compaction_keeps_the_journal_and_loses_nothing(tmp_path, monkeypatch):
    path = tmp_path / "s.fact"
    with StateStore(str(path)) as store:
        store.record_destination(KEY, DIGEST, "d", dict(REGISTRY))
    before = path.read_bytes()

    def full(src, dst):
        raise OSError(28, "No space left on device")

    store = StateStore(str(path)).open()
    store.record_destination("other:1", DIGEST, "d", dict(REGISTRY))
    monkeypatch.setattr(os, "replace", full)
    with pytest.raises(AirgapError, match=f"disk full: cannot write the state file {path}"):
        store.close()  # a normal end reports it
    with pytest.raises(RuntimeError, match="the run's own error"):
        with StateStore(str(path)) as again:  # the load's compaction fails too: the journal is kept and appended to
            again.record_destination("third:1", DIGEST, "d", dict(REGISTRY))
            raise RuntimeError("the run's own error")  # is not replaced by the failed compaction on the way out
    monkeypatch.undo()
    assert path.read_bytes() == before, "the facts file is left as it was, valid JSON"
    assert sorted(on_disk(path)["images"]) == [KEY, "other:1", "third:1"]
    with StateStore(str(path)):
        pass  # the next writer compacts
    assert sorted(json.loads(path.read_text())["images"]) == [KEY, "other:1", "third:1"]
    assert sorted(os.listdir(tmp_path)) == ["s.fact", "s.fact.lock"], "no temporary file or journal is left"


def test_unusable_directory(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(AirgapError, match=f"cannot create the directory {blocker}/sub"):
        StateStore(str(blocker / "sub" / "s.fact")).open()


def test_secrets_are_refused(tmp_path):
    path = tmp_path / "s.fact"
    with StateStore(str(path)) as store:
        for entry in (
            {"type": "registry", "password": "x"},
            {"auth": {"x": 1}},
            {"nested": [{"api_key": "k"}]},
            {"registry_token": "t"},
        ):
            with pytest.raises(AirgapError, match="must hold no secrets"):
                store.record_destination(KEY, DIGEST, "d", entry)
        with pytest.raises(AirgapError, match="not plain JSON"):
            store.record_destination(KEY, DIGEST, "d", {"when": object()})
    assert not path.exists()


def test_failures_and_removal(tmp_path):
    path = tmp_path / "s.fact"
    with StateStore(str(path), now=clock) as store:
        store.record_failure(KEY, "401 from nvcr.io for nvidia/pytorch: check the NGC API key" + "x" * 5000)
        error = on_disk(path)["images"][KEY]["last_error"]
        assert (
            error["time"] == clock()
            and error["message"].startswith("401 from nvcr.io")
            and len(error["message"]) == 2000
        )
        store.record_destination(KEY, DIGEST, "d", dict(REGISTRY))
        assert "last_error" in store.image(KEY)
        assert store.clear_failure(KEY)
        assert not store.clear_failure(KEY)
        assert "last_error" not in on_disk(path)["images"][KEY]
        assert not store.remove(KEY, "nope")
        assert store.remove(KEY, "d")
        assert on_disk(path)["images"][KEY]["destinations"] == {}
        assert store.remove(KEY)
        assert on_disk(path)["images"] == {}
    assert json.loads(path.read_text())["images"] == {}


def test_use_without_open_is_an_error(tmp_path):
    with pytest.raises(AirgapError, match="not open"):
        StateStore(str(tmp_path / "s.fact")).image(KEY)


# -- the journal: what a killed run leaves, what the next one makes of it ----------------------------------------------

# A child process that records images into a store and says so on stdout after each call has returned.
RECORDER = r"""
import json, os, signal, sys
from ansible_collections.airgap.ngc.plugins.module_utils._state import facts as _state
path, first, count, finish, compact_bytes, runs_of = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], int(sys.argv[5]), int(sys.argv[6])
if compact_bytes:
    _state.JOURNAL_COMPACT_BYTES = compact_bytes  # compact within the run sooner
rewrites = []
real_atomic_write = _state.atomic_write
def counting(*args, **kwargs):
    rewrites.append(len(args[1]))
    return real_atomic_write(*args, **kwargs)
_state.atomic_write = counting
io_before = open("/proc/self/io").read() if os.path.exists("/proc/self/io") else ""
store = _state.StateStore(path).open()
for number in range(first, first + count):
    if runs_of and number > first and (number - first) % runs_of == 0:  # one run after another, each compacting twice
        store.close()
        store = _state.StateStore(path).open()
    key = f"registry.site/nvidia/img{number}:1"
    store.record_destination(key, "sha256:" + f"{number:064x}", "registry:site", {"type": "registry", "digest": "sha256:" + "c" * 64,
                             "reference": f"mirror.site/nvidia/img{number}:1", "padding": "p" * 200})
    print(key, flush=True)
if finish == "kill":
    os.kill(os.getpid(), signal.SIGKILL)
store.close()
io_after = open("/proc/self/io").read() if io_before else ""
wchar = lambda text: int(next((line.split()[1] for line in text.splitlines() if line.startswith("wchar:")), 0))
print(json.dumps({"rewrites": len(rewrites), "rewritten_bytes": sum(rewrites), "wchar": wchar(io_after) - wchar(io_before)}), flush=True)
"""


def child(path, first, count, finish="close", compact_bytes=0, runs_of=0, **popen):
    """Record ``count`` images from number ``first`` on in a process of its own; ``runs_of``: close and reopen the store every so many."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    argv = [sys.executable, "-c", RECORDER, str(path), str(first), str(count), finish, str(compact_bytes), str(runs_of)]
    return subprocess.Popen(argv, env=env, **dict({"stdout": subprocess.PIPE, "text": True}, **popen))


def recorded_by(proc):
    out = proc.communicate(timeout=120)[0]
    return [line for line in out.splitlines() if line.startswith("registry.site/")], out.splitlines()[-1] if out else ""


def killed_run(path, first=0, count=20):
    proc = child(path, first, count, "kill")
    keys = recorded_by(proc)[0]
    assert proc.returncode == -signal.SIGKILL and len(keys) == count
    return keys


def test_a_killed_run_is_replayed_by_readers_and_compacted_by_the_next_writer(tmp_path):
    path = tmp_path / "facts.d" / "ngc_mirror.fact"
    journal = path.parent / ".ngc_mirror.fact.journal"
    with StateStore(str(path)) as store:
        store.record_failure("earlier:1", "kept")
    keys = killed_run(path)
    assert json.loads(path.read_text())["images"].keys() == {"earlier:1"}, (
        "the facts file is the one of the earlier run, whole"
    )
    before = (path.read_bytes(), journal.read_bytes())
    with StateStore(str(path), read_only=True) as reader:  # check mode sees everything, and changes nothing
        assert sorted(reader.images()) == sorted(keys + ["earlier:1"])
        assert reader.destination(keys[-1], "registry:site")["reference"] == "mirror.site/nvidia/img19:1"
    assert (path.read_bytes(), journal.read_bytes()) == before
    with StateStore(str(path)) as store:  # the next run compacts on load
        assert not journal.exists()
        assert sorted(json.loads(path.read_text())["images"]) == sorted(keys + ["earlier:1"])
        assert store.image("earlier:1")["last_error"]["message"] == "kept"


def test_journal_without_a_facts_file(tmp_path):
    path = tmp_path / "s.fact"
    keys = killed_run(path, count=3)
    assert not path.exists()
    assert sorted(on_disk(path)["images"]) == sorted(keys)
    assert not path.exists(), "a reader creates nothing"


@pytest.mark.parametrize(
    "tail",
    [b'{"key":"registry.site/nvidia/img99:1","record":{"destinations":{"registry:si', b"\0" * 300, b"{", b'\n{"sch'],
)
def test_a_torn_last_line_is_ignored(tmp_path, tail):
    path = tmp_path / "s.fact"
    keys = killed_run(path, count=5)
    journal = tmp_path / ".s.fact.journal"
    with open(journal, "ab") as handle:
        handle.write(tail)  # a kill in the middle of a write (or a crash before the data reached the disk)
    assert sorted(on_disk(path)["images"]) == sorted(keys)
    with StateStore(str(path)) as store:
        assert sorted(store.images()) == sorted(keys)
        store.record_failure("after:1", "x")
    assert sorted(json.loads(path.read_text())["images"]) == sorted(keys + ["after:1"])


def test_appends_after_a_torn_line_start_a_line_of_their_own(tmp_path, monkeypatch):
    path = tmp_path / "s.fact"
    keys = killed_run(path, count=2)
    journal = tmp_path / ".s.fact.journal"
    with open(journal, "ab") as handle:
        handle.write(b'{"schema":1,"key":"torn')

    def full(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", full)  # the compaction on load fails: the journal is appended to
    with pytest.raises(AirgapError, match="disk full"):
        with StateStore(str(path)) as store:
            store.record_failure("after:1", "x")
    monkeypatch.undo()
    assert b'"torn\n{' in journal.read_bytes()
    assert sorted(on_disk(path)["images"]) == sorted(keys + ["after:1"])


def test_replaying_a_journal_over_its_compaction_changes_nothing(tmp_path):
    """A kill between the rename of the compacted file and the removal of the journal leaves both: same state."""
    path = tmp_path / "s.fact"
    journal = tmp_path / ".s.fact.journal"
    killed_run(path, count=4)
    kept = journal.read_bytes()
    with StateStore(str(path)):
        pass  # compacts on load
    compacted = json.loads(path.read_text())
    journal.write_bytes(kept)
    assert on_disk(path) == compacted
    with StateStore(str(path)) as store:
        store.remove("registry.site/nvidia/img1:1")
        store.remove("registry.site/nvidia/img0:1", "registry:site")
        store.record_failure("registry.site/nvidia/img2:1", "later")
        kept = journal.read_bytes()
    compacted = json.loads(path.read_text())
    assert (
        "registry.site/nvidia/img1:1" not in compacted["images"]
        and compacted["images"]["registry.site/nvidia/img0:1"]["destinations"] == {}
    )
    journal.write_bytes(kept)
    assert on_disk(path) == compacted


def test_a_journal_line_not_written_by_the_collection_is_an_error(tmp_path):
    path = tmp_path / "s.fact"
    killed_run(path, count=2)
    journal = tmp_path / ".s.fact.journal"
    good = journal.read_bytes()
    for bad, message in (
        (b'{"schema": 1, "key": "k", "record": 3}\n', "line 3 is not an ngc_mirror state record: fix it or remove it"),
        (b'["x"]\n', "line 3 is not an ngc_mirror state record"),
        (b'{"schema": 2, "key": "k", "record": null}\n', "line 3 has schema 2, written by a newer airgap.ngc"),
    ):
        journal.write_bytes(good + bad)
        for read_only in (True, False):
            with pytest.raises(AirgapError, match=f"journal {journal} {message}"):
                StateStore(str(path), read_only=read_only).open()
        assert journal.read_bytes() == good + bad, "left alone"


def test_the_journal_is_no_partial_file_for_the_cleanup(tmp_path):
    path = tmp_path / "ngc_mirror.fact"
    keys = killed_run(path, count=2)
    assert (
        cleanup_stale_partials(str(tmp_path), "ngc_mirror.fact") == [] and cleanup_stale_partials(str(tmp_path)) == []
    )
    assert sorted(on_disk(path)["images"]) == sorted(keys)


def test_journal_mode_is_the_facts_files_whatever_the_umask(tmp_path):
    path = tmp_path / "s.fact"
    old = os.umask(0o077)
    try:
        proc = child(path, 0, 1, "kill")
        recorded_by(proc)
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / ".s.fact.journal").st_mode) == 0o644
    with StateStore(str(path)):
        pass
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o644


def test_kill_9_at_any_moment_loses_no_finished_image(tmp_path):
    """Writers SIGKILLed at random moments (in appends, in compactions, between them); each record that returned survives."""
    seed = int(os.environ.get("STATE_KILL_SEED") or random.randrange(1 << 30))
    rng = random.Random(seed)
    seed_note = f"(rerun with STATE_KILL_SEED={seed})"
    path = tmp_path / "s.fact"
    promised: set[str] = set()
    first = 0
    for _round in range(16):
        proc = child(
            path, first, 400, "close", compact_bytes=rng.choice([0, 3000]), runs_of=rng.choice([0, 3, 7, 30]), bufsize=1
        )
        wanted = rng.randint(0, 150)
        seen = []
        while len(seen) < wanted:
            line = proc.stdout.readline()
            if not line:
                break
            seen.append(line.strip())
        time.sleep(
            rng.random() * (0.3 if wanted == 0 else 0.02)
        )  # at start-up and in the first compaction, or anywhere later
        proc.kill()
        rest = proc.communicate(timeout=60)[0]
        promised.update(seen + [line for line in rest.splitlines() if line.startswith("registry.site/")])
        first += 400
        if path.exists():
            json.loads(path.read_text())  # ansible_local reads one whole JSON document at any moment
        assert promised <= set(on_disk(path)["images"]), seed_note
    with StateStore(str(path)):
        pass
    assert promised <= set(json.loads(path.read_text())["images"]), seed_note
    assert len(promised) > 100


def test_readers_see_a_consistent_state_while_a_writer_compacts(tmp_path):
    """Check-mode readers take no lock; while runs follow each other, compacting as they open and close, no image vanishes."""
    path = tmp_path / "s.fact"
    proc = child(path, 0, 800, "close", runs_of=4, stdout=subprocess.DEVNULL)
    seen = 0
    loads = 0
    try:
        while proc.poll() is None:
            images = on_disk(path)["images"]
            loads += 1
            assert set(images) == {f"registry.site/nvidia/img{n}:1" for n in range(len(images))}
            assert len(images) >= seen, f"an image vanished: {seen} then {len(images)}"
            seen = len(images)
    finally:
        proc.wait(timeout=120)
    assert proc.returncode == 0 and loads > 10
    assert len(on_disk(path)["images"]) == 800


def test_a_reader_never_pairs_a_file_with_the_journal_of_another(tmp_path, monkeypatch):
    """The worst moment for a reader without the lock: a writer compacts between its read of the file and of the journal."""
    path = tmp_path / "s.fact"
    with StateStore(str(path)) as store:
        store.record_failure("first:1", "x")
    keys = killed_run(path, count=5)  # the file holds first:1, the journal five more
    real_read_journal = StateStore._read_journal
    interleaved = []

    def writer_runs_meanwhile(self):
        if not interleaved:
            interleaved.append(True)
            with StateStore(str(path)) as writer:  # compacts the journal into a new file and removes it
                writer.record_failure("last:1", "y")
        return real_read_journal(self)

    monkeypatch.setattr(StateStore, "_read_journal", writer_runs_meanwhile)
    with StateStore(str(path), read_only=True) as reader:
        assert interleaved and sorted(reader.images()) == sorted(keys + ["first:1", "last:1"])


def test_threads_recording_at_once_lose_nothing(tmp_path):
    path = tmp_path / "s.fact"
    with StateStore(str(path)) as store:

        def work(n):
            for i in range(50):
                store.record_destination(f"t{n}/img:{i}", DIGEST, "d", dict(REGISTRY))
                store.image(f"t{n}/img:{i}")

        threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len(on_disk(path)["images"]) == 200
        assert all(json.loads(line) for line in (tmp_path / ".s.fact.journal").read_text().splitlines())


@pytest.mark.parametrize("compact_bytes", [0, 5000])
def test_recording_costs_the_same_for_the_thousandth_image_as_for_the_first(tmp_path, compact_bytes):
    """Bytes written grow linearly with the images recorded: the facts file is not rewritten per image."""
    if not os.path.exists("/proc/self/io"):
        pytest.skip("needs /proc/self/io to count the bytes written")
    costs = {}
    for count in (100, 1000):
        proc = child(tmp_path / f"n{count}.fact", 0, count, "close", compact_bytes=compact_bytes)
        keys, summary = recorded_by(proc)
        assert proc.returncode == 0 and len(keys) == count
        costs[count] = json.loads(summary)
    small, big = costs[100], costs[1000]
    if not compact_bytes:  # one rewrite, at the end of the run
        assert small["rewrites"] == big["rewrites"] == 1, costs
    else:  # rewrites once the journal outgrows the file: a few, each paid for by the journal bytes before it
        assert big["rewrites"] <= 12 and big["rewritten_bytes"] <= 3 * big["wchar"] / 4, costs
    assert big["wchar"] < 13 * small["wchar"], f"bytes written grow faster than the images recorded: {costs}"
    assert big["wchar"] / 1000 < 4000, (
        costs
    )  # a journal line, its share of the final file and of the compactions, per image


def test_companions_are_remembered_for_recorded_images_in_one_write(tmp_path, monkeypatch):
    path = tmp_path / "s.fact"
    listing = {
        "digest": DIGEST,
        "found": [{"ref": KEY + "-sig", "digest": NEW_DIGEST, "kind": "its cosign signature", "about": KEY}],
    }
    with StateStore(str(path), now=clock) as store:
        store.record_destination(KEY, DIGEST, "d", dict(REGISTRY))
        store.record_destination("other:1", DIGEST, "d", dict(REGISTRY))
        syncs = []
        real_sync = getattr(os, "fdatasync", os.fsync)
        monkeypatch.setattr(
            os, "fdatasync" if hasattr(os, "fdatasync") else "fsync", lambda fd: (syncs.append(fd), real_sync(fd))
        )
        assert (
            store.record_companions({KEY: listing, "other:1": dict(listing, found=[]), "never:mirrored": listing}) == 2
        )
        monkeypatch.undo()
        assert len(syncs) == 1, "one journal write for all"
        assert store.image("never:mirrored") is None
        assert store.image(KEY)["companions"] == dict(listing, listed="2026-11-22T13:10:00Z")
        assert on_disk(path)["images"]["other:1"]["companions"]["found"] == []  # journaled: a reader sees it at once
        with pytest.raises(AirgapError, match="refusing to store 'password'"):
            store.record_companions({KEY: dict(listing, password="x")})
        assert "password" not in json.dumps(on_disk(path))
    assert json.loads(path.read_text())["images"][KEY]["companions"]["listed"] == "2026-11-22T13:10:00Z"


def test_seconds_since_a_stamp():
    assert abs(seconds_since(utc_now())) < 5
    assert 3590 < seconds_since(time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 3600))) < 3610
    assert seconds_since("yesterday") is None and seconds_since(None) is None
