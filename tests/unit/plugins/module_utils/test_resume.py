# Copyright (c) airgap.ngc contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A big bundle blob cut off keeps its bytes for the next run; a read is started where every sink can go on."""

from __future__ import annotations

import hashlib
from pathlib import Path

from ansible_collections.airgap.ngc.plugins.module_utils._formats.bundle import BundleWriter
from ansible_collections.airgap.ngc.plugins.module_utils._formats.files import RESUME_MIN
from ansible_collections.airgap.ngc.plugins.module_utils._transports.fanout import resume_point
from ansible_collections.airgap.ngc.plugins.module_utils._types.blob_sink import BlobSink

DATA = bytes(range(256)) * (RESUME_MIN // 256 + 1000)
DIGEST = "sha256:" + hashlib.sha256(DATA).hexdigest()


def test_a_cut_off_blob_is_kept_and_continued(tmp_path: Path) -> None:
    writer = BundleWriter(str(tmp_path / "bundle"), "test")
    sink = writer.blob_sink(DIGEST, len(DATA))
    sink.write(DATA[:1000000])
    sink.abort()  # the run was cut off: the bytes stay (a kill leaves them just the same)
    again = BundleWriter(str(tmp_path / "bundle"), "test").blob_sink(DIGEST, len(DATA))
    assert again.resume_from == 1000000 and b"".join(again.held()) == DATA[:1000000]
    again.write(DATA[1000000:])
    again.close()
    blob = tmp_path / "bundle" / "blobs" / "sha256" / DIGEST.split(":")[1]
    assert blob.read_bytes() == DATA
    assert [p.name for p in blob.parent.iterdir()] == [blob.name]


def test_a_whole_blob_that_is_aborted_is_not_kept(tmp_path: Path) -> None:
    writer = BundleWriter(str(tmp_path / "bundle"), "test")
    sink = writer.blob_sink(DIGEST, len(DATA))
    sink.write(DATA)
    sink.abort()  # e.g. its digest did not match: start again next time
    assert list((tmp_path / "bundle" / "blobs" / "sha256").iterdir()) == []


class Plain(BlobSink):
    """A sink that holds nothing from an earlier run."""

    def write(self, data: bytes) -> None:
        """Not fed here: only where a read may start is asked."""

    def close(self) -> None:
        """Nothing to complete."""

    def abort(self) -> None:
        """Nothing to drop."""


def test_the_read_starts_where_every_sink_can_go_on(tmp_path: Path) -> None:
    writer = BundleWriter(str(tmp_path / "bundle"), "test")
    first = writer.blob_sink(DIGEST, len(DATA))
    first.write(DATA[:500000])
    first.abort()
    held = writer.blob_sink(DIGEST, len(DATA))
    start, chunks = resume_point([held], True)
    assert start == 500000 and b"".join(chunks) == DATA[:500000]
    start, chunks = resume_point([held, Plain()], True)  # another destination needs the whole blob: start over
    assert start == 0 and held.resume_from == 0 and held.written == 0
    held.abort()
    again = writer.blob_sink(DIGEST, len(DATA))
    assert again.resume_from == 0  # cut back to nothing above, so nothing was kept
    again.write(DATA[:300000])
    again.abort()
    source_cannot = writer.blob_sink(DIGEST, len(DATA))
    assert resume_point([source_cannot], False)[0] == 0 and source_cannot.written == 0
