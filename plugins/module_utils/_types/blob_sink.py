# Copyright (c) airgap.ngc contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private: the blob sink of the transport interface (``_transports/base.py``), with its optional abilities. Not a public API.

It lives in this I/O-free layer so that every writer can implement it: the archive and bundle writers of ``_formats``
as well as the uploads of ``_transports``. See docs/design/transports.md.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Iterator


class BlobSink(ABC):
    """Where one blob's bytes go: ``write()`` each chunk, then ``close()`` (the blob is complete), or ``abort()``.

    The optional abilities below are declared here once with their defaults (a sink that keeps nothing across runs);
    a sink that has one says so by overriding it. The copier and the fan-out never probe for them.
    """

    resume_from: int = 0
    """Bytes of the blob a run that was cut off left here: the read may start there (``restart`` cuts them back)."""
    written: int = 0
    """Bytes of the blob this sink holds now."""
    verifies_digest: bool = False
    """It checks the whole blob's digest itself (a registry at the upload's final PUT): a read resumed for it alone
    needs no bytes to hash."""
    holds_bytes: bool = False
    """Its first ``resume_from`` bytes can be read back here (``held``), for the reader to hash."""

    @abstractmethod
    def write(self, data: bytes) -> None:
        """Take the next chunk."""

    @abstractmethod
    def close(self) -> None:
        """The blob's last chunk was written: complete it (or raise if it is not the blob)."""

    @abstractmethod
    def abort(self) -> None:
        """Drop what was written (what may be continued by a next run is kept)."""

    @property
    def failed(self) -> bool:
        """True once the destination it writes for has failed: no point feeding it (see ``GuardedSink``)."""
        return False

    def inner(self) -> BlobSink:
        """The sink that holds the bytes: this one, or the one a wrapper guards."""
        return self

    def held(self) -> Iterator[bytes]:
        """The blob's first ``resume_from`` bytes as held here; only for a sink that ``holds_bytes``."""
        raise NotImplementedError(f"{type(self).__name__} holds no bytes of a blob to read back")

    def restart(self, offset: int = 0) -> None:  # noqa: B027 (a default: empty on purpose)
        """Keep only the first ``offset`` bytes held. A sink that keeps nothing across runs has nothing to cut back."""

    def forget(self) -> None:
        """What was written is not the blob (a digest mismatch): keep nothing of it for a next run."""
        if self.written:
            self.restart(0)
