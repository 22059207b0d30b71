# Copyright (c) airgap.ngc contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The registry destination begun for several images at once: one blob is looked at and mounted into one repository
by one image at a time (distribution answers a HEAD that reads a link being written with a 500)."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ansible_collections.airgap.ngc.plugins.module_utils._transports.destinations import LOOK_MIN, RegistryDestination
from ansible_collections.airgap.ngc.plugins.module_utils._types.oci import MEDIA_OCI_MANIFEST, ImageContent, Manifest
from ansible_collections.airgap.ngc.plugins.module_utils._types.plan import requested_images
from ansible_collections.airgap.ngc.plugins.module_utils._transports.fanout import Totals


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class SlowRegistry:
    """A registry client whose mounts take a while; it fails a HEAD or a mount of a blob in a repository while another
    one of the same is under way, as distribution can."""

    def __init__(self, held: dict[str, set[str]]) -> None:
        self.held = held  # repository -> digests
        self.busy: set[tuple[str, str]] = set()
        self.overlaps = self.mounts = self.heads = 0
        self._lock = threading.Lock()

    def _enter(self, key: tuple[str, str]) -> None:
        with self._lock:
            if key in self.busy:
                self.overlaps += 1
            self.busy.add(key)

    def _leave(self, key: tuple[str, str]) -> None:
        with self._lock:
            self.busy.discard(key)

    def head_blob(self, repository: str, digest: str) -> Any:
        self._enter((repository, digest))
        with self._lock:
            self.heads += 1
        try:
            time.sleep(0.005)
            return {"digest": digest} if digest in self.held.get(repository, set()) else None
        finally:
            self._leave((repository, digest))

    def mount_blob(self, repository: str, digest: str, origin: str) -> bool:
        self._enter((repository, digest))
        try:
            time.sleep(0.02)
            with self._lock:
                self.mounts += 1
                self.held.setdefault(repository, set()).add(digest)
            return True
        finally:
            self._leave((repository, digest))


def test_images_begun_at_once_mount_a_shared_blob_once_and_never_look_at_it_meanwhile() -> None:
    base = b"a base layer every tag shares"
    client = SlowRegistry({"mirror/nvidia/elsewhere": {digest_of(base)}})
    images = requested_images([f"src.example/nvidia/wide:1.{n}" for n in range(8)], "src.example")
    origins = {digest_of(base): requested_images(["src.example/nvidia/elsewhere:1"], "src.example")[0]}
    dest = RegistryDestination({"url": "http://dest.example", "prefix": "mirror"}, client, None, Totals(), origins)

    def begin(n: int) -> dict[str, int]:
        own = f"layer of 1.{n}".encode()
        config = json.dumps({"n": n}).encode()
        raw = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": MEDIA_OCI_MANIFEST,
                "config": {"mediaType": "application/octet-stream", "digest": digest_of(config), "size": len(config)},
                "layers": [
                    {"mediaType": "application/octet-stream", "digest": d, "size": s}
                    for d, s in ((digest_of(base), len(base)), (digest_of(own), len(own)))
                ],
            }
        ).encode()
        top = Manifest(raw=raw, media_type=MEDIA_OCI_MANIFEST, digest=digest_of(raw), data=json.loads(raw))
        return dest.begin(images[n], ImageContent(top=top), None).blobs

    with ThreadPoolExecutor(max_workers=8) as pool:
        missing = list(pool.map(begin, range(8)))
    assert client.overlaps == 0
    assert client.mounts == 1  # the others found it there
    assert all(
        digest_of(base) not in blobs and len(blobs) == 2 for blobs in missing
    )  # only the config and the own layer
    assert (
        client.heads == 0
    )  # the base was mounted from where it was known, then known here; small new blobs are sent unasked


def image_of(layers: list[bytes]) -> ImageContent:
    config = b"{}"
    raw = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": MEDIA_OCI_MANIFEST,
            "config": {"mediaType": "application/octet-stream", "digest": digest_of(config), "size": len(config)},
            "layers": [
                {"mediaType": "application/octet-stream", "digest": digest_of(d), "size": len(d)} for d in layers
            ],
        }
    ).encode()
    return ImageContent(
        top=Manifest(raw=raw, media_type=MEDIA_OCI_MANIFEST, digest=digest_of(raw), data=json.loads(raw))
    )


def test_a_big_blob_is_asked_about_once_a_run_per_repository() -> None:
    big, other = b"b" * LOOK_MIN, b"o" * LOOK_MIN
    client = SlowRegistry({"mirror/nvidia/wide": {digest_of(big)}})
    images = requested_images(["src.example/nvidia/wide:1", "src.example/nvidia/wide:2"], "src.example")
    dest = RegistryDestination({"url": "http://dest.example", "prefix": "mirror"}, client, None, Totals(), {})
    assert set(dest.begin(images[0], image_of([big, other]), None).blobs) == {digest_of(b"{}"), digest_of(other)}
    assert client.heads == 2  # the config is small and new: sent without asking
    assert set(dest.begin(images[1], image_of([big]), None).blobs) == {digest_of(b"{}")}
    assert client.heads == 2  # the big blob was seen there already


class ReadableRegistry(SlowRegistry):
    """One that also gives blobs back, as a registry client's verified reader does."""

    def __init__(self, held: dict[str, set[str]]) -> None:
        super().__init__(held)
        self.opened: list[tuple[str, str, int | None]] = []

    def open_blob(self, repository: str, digest: str, expected_size: int | None = None) -> Any:
        self.opened.append((repository, digest, expected_size))
        return f"reader of {digest} in {repository}"


def test_a_blob_an_earlier_import_put_here_is_read_back_from_where_it_is() -> None:
    base, lost = digest_of(b"a base layer an earlier bundle carried"), digest_of(b"a layer nobody imported")
    client = ReadableRegistry({"mirror/nvidia/pytorch": {base}})
    image = requested_images(["src.example/nvidia/pytorch:26.12"], "src.example")[0]
    origins = {base: requested_images(["src.example/nvidia/pytorch:24.02"], "src.example")[0]}
    dest = RegistryDestination({"url": "http://dest.example", "prefix": "mirror"}, client, None, Totals(), origins)
    assert dest.open_held_blob(image, base, 40) == f"reader of {base} in mirror/nvidia/pytorch"
    assert client.opened == [("mirror/nvidia/pytorch", base, 40)]
    assert dest.open_held_blob(image, lost, 20) is None and len(client.opened) == 1


def test_a_write_holds_a_blob_another_image_put_in_another_repository_once_it_is_mounted() -> None:
    layer = b"l" * LOOK_MIN
    client = SlowRegistry({})
    one, two = requested_images(["src.example/nvidia/one:1", "src.example/nvidia/two:1"], "src.example")
    totals = Totals()
    dest = RegistryDestination({"url": "http://dest.example", "prefix": "mirror"}, client, None, totals, {})
    first, second = dest.begin(one, image_of([layer]), None), dest.begin(two, image_of([layer]), None)
    assert digest_of(layer) in first.blobs and digest_of(layer) in second.blobs  # begun together: neither has it
    assert not second.holds(digest_of(layer), len(layer)) and totals.reused == 0
    client.held["mirror/nvidia/one"] = {digest_of(layer)}
    dest._placed("mirror/nvidia/one", digest_of(layer))  # pylint: disable=protected-access  # the first image's upload put it there meanwhile
    assert second.holds(digest_of(layer), len(layer))
    assert client.mounts == 1 and client.held["mirror/nvidia/two"] == {digest_of(layer)}  # mounted, not sent again
    assert totals.reused == len(layer)
