# Copyright (c) airgap.ngc contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""nvcr.io's CDN, stood in: a registry front that redirects blob downloads to presigned URLs on a "CDN" port.

One process, two ports. Run: ``python -m tests.testbed.cdn --config FILE``; FILE is JSON with
``upstream`` (the token registry, ``http://127.0.0.1:PORT``), ``storage_root`` (that registry's
``storage.filesystem.rootdirectory``: the CDN serves blobs from it, as S3 serves a registry's storage),
``ready_file``, optional ``expired_realm``, ``host``, ``port``, ``cdn_port`` and the defaults of the
settings below. The ready file holds ``url`` (the front) and ``cdn_url``.

The front (``url``) is the fault proxy (``proxy.py``) plus what nvcr.io does:

- its Bearer challenges carry no ``service`` parameter;
- a blob GET the registry would answer with 200 is answered with a 307 to a presigned CDN URL
  (``/cdn/blobs/<digest>?expires=<unix time>&signature=<HMAC-SHA256>``); the registry checks the
  token (a HEAD with the client's headers), the CDN only the signature;
- with the setting ``token_lifetime`` (seconds), a Bearer token issued longer ago than that is
  refused with 401 ``error="invalid_token"`` (naming ``expired_realm`` as the realm, as nvcr.io does),
  whatever its own ``exp`` says: a long download outlives its token.

The CDN (``cdn_url``) behaves like S3 with a presigned URL: a request carrying an ``Authorization``
header is refused with 400, a bad signature or an expired URL with 403; ``Range`` (one range:
``bytes=a-b``, ``bytes=a-``, ``bytes=-n``) is answered with 206 and ``Content-Range``, an unsatisfiable
one with 416. Each connection's body is paced at ``bandwidth`` bytes per second, and every request on
both ports waits ``latency`` seconds before it is answered.

Settings (``POST /_testbed/faults`` on the front; reset by ``DELETE``): ``bandwidth`` (bytes/s per
connection, 0 = unlimited), ``latency`` (seconds per request, both ports), ``token_lifetime`` (seconds or
null), ``url_lifetime`` (seconds a presigned URL is valid, checked when a request starts, like S3),
``redirect_blobs`` (false: the front relays blobs itself), ``ignore_range`` (the CDN answers 200 with the
whole blob), and the proxy's ``rewrite_expired_realm``. Fault rules go to the port they are for: on the CDN,
``{"abort_after_bytes": N, "count": 1}`` sends N body bytes of the next download and drops the connection.

``GET /_testbed/stats`` on the CDN adds ``bytes_served``, ``authorization_refused`` and ``downloads``: one
entry per blob request with ``digest``, ``range`` (the header, or null), ``status``, ``bytes`` (sent) and
``authorization`` (whether the request carried one).
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import http.client
import math
import os
import re
import secrets
import signal
import sys
import tarfile
import threading
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import SplitResult, parse_qs, urlsplit

import requests

from ._blobs import OCI_CONFIG, OCI_LAYER, OCI_MANIFEST, _keystream, dump_manifest
from ._common import (
    LOOPBACK,
    ProcessRecord,
    python_env,
    python_module_argv,
    read_json,
    spawn,
    wait_ready_file,
    write_json,
)
from ._faults import FaultRule
from ._httpd import TestbedHandler, TestbedServer
from ._jwt import decode_claims
from ._push import Pusher
from .proxy import SETTINGS as PROXY_SETTINGS
from .proxy import ProxyHandler

SETTINGS: dict[str, Any] = {
    **PROXY_SETTINGS,
    "bandwidth": 0,
    "latency": 0.0,
    "token_lifetime": None,
    "url_lifetime": 300,
    "redirect_blobs": True,
    "ignore_range": False,
}
BLOB_PATH_RE = re.compile(r"^/v2/(?P<name>.+)/blobs/(?P<digest>sha256:[0-9a-f]{64})$")
CDN_PATH_RE = re.compile(r"^/cdn/blobs/(?P<digest>sha256:[0-9a-f]{64})$")
RANGE_RE = re.compile(r"^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$")
SERVICE_RE = re.compile(r',?\s*service="[^"]*"')
PACE_PIECE = 64 * 1024


def sign(secret: bytes, path: str, expires: int) -> str:
    return hmac.new(secret, f"{path}\n{expires}".encode("utf-8"), hashlib.sha256).hexdigest()


def _setting(server: TestbedServer, key: str) -> Any:
    """Settings live on the front's fault book (the CDN server reaches it through ``front``)."""
    front = getattr(server, "front", server)
    return front.faults.setting(key)


def _wait_latency(server: TestbedServer) -> None:
    latency = float(_setting(server, "latency") or 0)
    if latency > 0:
        time.sleep(latency)


class FrontHandler(ProxyHandler):
    """The registry as nvcr.io presents it: no service in challenges, blobs redirected to the CDN, short-lived tokens."""

    def handle_request(self, url: SplitResult, rule: FaultRule | None) -> None:
        _wait_latency(self.server)
        if self._token_expired():
            self.drain_body()
            self._refuse_expired(url.path)
            return
        match = BLOB_PATH_RE.match(url.path)
        if (
            match
            and self.command == "GET"
            and _setting(self.server, "redirect_blobs")
            and self._upstream_has_blob(url.path)
        ):
            self._redirect(match.group("digest"))
            return
        super().handle_request(url, rule)

    def _token_expired(self) -> bool:
        lifetime = _setting(self.server, "token_lifetime")
        header = self.headers.get("Authorization", "")
        if lifetime is None or not header.lower().startswith("bearer "):
            return False
        try:
            issued = float(decode_claims(header.split(" ", 1)[1].strip()).get("iat", 0))
        except (ValueError, IndexError, TypeError):
            return False
        return time.time() - issued > float(lifetime)

    def _refuse_expired(self, path: str) -> None:
        realm = self.server.config.get("expired_realm") or ""
        match = re.match(r"^/v2/(.+)/(?:blobs|manifests|tags)/", path)
        scope = f',scope="repository:{match.group(1)}:pull"' if match else ""
        challenge = f'Bearer realm="{realm}"{scope},error="invalid_token"'
        body = {
            "errors": [{"code": "UNAUTHORIZED", "message": "authentication required: token expired", "detail": None}]
        }
        self.send_json(401, body, {"WWW-Authenticate": challenge})

    def _upstream_has_blob(self, path: str) -> bool:
        """Ask the registry (a HEAD with the client's own headers) whether this GET would succeed."""
        upstream = urlsplit(self.server.config["upstream"])
        conn = http.client.HTTPConnection(upstream.hostname or LOOPBACK, upstream.port or 80, timeout=60)
        try:
            headers = {k: v for k, v in self.headers.items() if k.lower() in ("authorization", "user-agent", "accept")}
            conn.request("HEAD", path, headers=headers)
            response = conn.getresponse()
            response.read()
            return response.status == 200
        except (OSError, http.client.HTTPException):
            return False
        finally:
            conn.close()

    def _redirect(self, digest: str) -> None:
        path = f"/cdn/blobs/{digest}"
        expires = math.ceil(time.time() + float(_setting(self.server, "url_lifetime")))  # valid at least that long
        location = f"{self.server.config['cdn_url']}{path}?expires={expires}&signature={sign(self.server.secret, path, expires)}"
        self.send_response(307)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _rewrite(self, key: str, value: str, netloc: str) -> str:
        value = super()._rewrite(key, value, netloc)
        if key.lower() == "www-authenticate":
            value = SERVICE_RE.sub("", value)
        return value


class CdnHandler(TestbedHandler):
    """Presigned-URL blob storage: no Authorization allowed, signature and expiry checked, Range served, paced."""

    def fault_body(self, status: int) -> dict[str, Any]:
        return {
            "Error": {
                "Code": "ServiceUnavailable" if status >= 500 else "SlowDown",
                "Message": f"testbed fault {status}",
            }
        }

    def handle_request(self, url: SplitResult, rule: FaultRule | None) -> None:
        _wait_latency(self.server)
        self.drain_body()
        match = CDN_PATH_RE.match(url.path)
        if self.command not in ("GET", "HEAD") or not match:
            self._error(
                404 if match is None else 405, "NoSuchKey" if match is None else "MethodNotAllowed", "no such object"
            )
            return
        digest = match.group("digest")
        entry: dict[str, Any] = {
            "digest": digest,
            "range": self.headers.get("Range"),
            "status": 0,
            "bytes": 0,
            "authorization": "Authorization" in self.headers,
        }
        try:
            self._serve(url, digest, rule, entry)
        finally:
            entry["status"] = self._status
            self.server.record_download(entry)

    def _serve(self, url: SplitResult, digest: str, rule: FaultRule | None, entry: dict[str, Any]) -> None:
        if entry["authorization"]:
            self._error(
                400,
                "InvalidArgument",
                "Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter, "
                "Signature query string parameter or the Authorization header should be specified",
            )
            return
        query = parse_qs(url.query)
        expires, signature = (query.get("expires") or [""])[0], (query.get("signature") or [""])[0]
        if not expires.isdigit() or not hmac.compare_digest(
            signature, sign(self.server.secret, url.path, int(expires))
        ):
            self._error(
                403,
                "SignatureDoesNotMatch",
                "The request signature we calculated does not match the signature you provided",
            )
            return
        if time.time() > int(expires):
            self._error(403, "AccessDenied", "Request has expired")
            return
        path = self.server.blob_file(digest)
        try:
            size = path.stat().st_size
        except OSError:
            self._error(404, "NoSuchKey", "The specified key does not exist.")
            return
        start, end = 0, size - 1
        ranged = entry["range"] is not None and not _setting(self.server, "ignore_range")
        if ranged:
            found = _parse_range(entry["range"], size)
            if found is None:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            start, end = found
        self.send_response(206 if ranged else 200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(end - start + 1))
        if ranged:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.end_headers()
        if self.command == "GET":
            self._send_file(path, start, end - start + 1, rule.abort_after_bytes if rule else None, entry)

    def _send_file(self, path: Path, start: int, length: int, abort_after: int | None, entry: dict[str, Any]) -> None:
        bandwidth = float(_setting(self.server, "bandwidth") or 0)
        began = time.monotonic()
        sent = 0
        with open(path, "rb") as handle:
            handle.seek(start)
            while sent < length:
                piece = handle.read(min(PACE_PIECE, length - sent))
                if not piece:
                    break
                if abort_after is not None and sent + len(piece) >= abort_after:
                    piece = piece[: max(0, abort_after - sent)]
                    self._write_counted(piece, entry)
                    self._drop_connection()
                    return
                if not self._write_counted(piece, entry):
                    return
                sent += len(piece)
                if bandwidth > 0:
                    ahead = began + sent / bandwidth - time.monotonic()
                    if ahead > 0:
                        time.sleep(ahead)

    def _write_counted(self, piece: bytes, entry: dict[str, Any]) -> bool:
        try:
            self.wfile.write(piece)
        except OSError:  # the client went away (a reader that was closed)
            self.close_connection = True
            return False
        entry["bytes"] += len(piece)
        return True

    def _drop_connection(self) -> None:
        self.close_connection = True
        try:
            self.wfile.flush()
            self.connection.shutdown(2)
        except OSError:
            pass

    def _error(self, status: int, code: str, message: str) -> None:
        data = (
            f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>{message}</Message>'
            f"<RequestId>{secrets.token_hex(8)}</RequestId></Error>"
        ).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _control_stats(self, body: bytes) -> None:
        if self.command == "DELETE":
            self.server.stats.reset()
            self.server.reset_downloads()
        self.send_json(200, {**self.server.stats.snapshot(), **self.server.downloads_snapshot()})


def _parse_range(header: str, size: int) -> tuple[int, int] | None:
    """(first, last) byte of a single-range header within size, or None if unsatisfiable or not understood."""
    match = RANGE_RE.match(header)
    if not match or (not match.group(1) and not match.group(2)):
        return None
    first, last = match.group(1), match.group(2)
    if not first:
        count = int(last)
        return (max(0, size - count), size - 1) if count > 0 and size > 0 else None
    start = int(first)
    end = min(int(last), size - 1) if last else size - 1
    if start >= size or end < start:
        return None
    return start, end


class CdnServer(TestbedServer):
    """The CDN port: knows the registry's storage, shares the front's signing secret, counts what it served."""

    def __init__(self, config: dict[str, Any], front: TestbedServer) -> None:
        super().__init__(CdnHandler, {**config, "port": int(config.get("cdn_port", 0))}, {})
        self.front = front
        self.secret: bytes = front.secret  # type: ignore[attr-defined]
        self._root = Path(config["storage_root"])
        self._lock = threading.Lock()
        self.reset_downloads()

    def blob_file(self, digest: str) -> Path:
        algorithm, hexdigest = digest.split(":", 1)
        return self._root / "docker" / "registry" / "v2" / "blobs" / algorithm / hexdigest[:2] / hexdigest / "data"

    def record_download(self, entry: dict[str, Any]) -> None:
        with self._lock:
            self._downloads.append(dict(entry))
            self._bytes += entry["bytes"]
            self._refused += int(entry["status"] == 400 and entry["authorization"])

    def reset_downloads(self) -> None:
        with self._lock:
            self._downloads: list[dict[str, Any]] = []
            self._bytes = 0
            self._refused = 0

    def downloads_snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "bytes_served": self._bytes,
                "authorization_refused": self._refused,
                "downloads": list(self._downloads[-2000:]),
            }


def serve(config: dict[str, Any]) -> None:
    defaults = dict(SETTINGS)
    defaults.update({k: config[k] for k in SETTINGS if k in config})
    front = TestbedServer(FrontHandler, config, defaults)
    front.secret = secrets.token_bytes(32)  # type: ignore[attr-defined]
    cdn = CdnServer(config, front)
    front.config["cdn_url"] = f"http://{LOOPBACK}:{cdn.port}"
    signal.signal(signal.SIGTERM, _exit_on_signal)
    thread = threading.Thread(target=cdn.serve_forever, kwargs={"poll_interval": 0.2}, name="cdn", daemon=True)
    thread.start()
    if config.get("ready_file"):
        write_json(
            Path(config["ready_file"]),
            {
                "port": front.port,
                "cdn_port": cdn.port,
                "pid": os.getpid(),
                "url": f"http://{LOOPBACK}:{front.port}",
                "cdn_url": f"http://{LOOPBACK}:{cdn.port}",
            },
        )
    try:
        front.serve_forever(poll_interval=0.2)
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        cdn.shutdown()
        cdn.server_close()
        front.server_close()


def _exit_on_signal(signum: int, frame: Any) -> None:
    raise SystemExit(0)


@dataclass
class Cdn:
    """A running CDN stand-in (front ``url``, CDN ``cdn_url``) and its control API."""

    url: str
    cdn_url: str
    record: ProcessRecord

    @property
    def host(self) -> str:
        return self.url.split("://", 1)[1]

    def settings(self, **values: Any) -> dict[str, Any]:
        """Change settings (bandwidth, latency, token_lifetime, url_lifetime, redirect_blobs, ignore_range)."""
        return self._post(self.url, values)

    def cdn_fault(self, **rule: Any) -> dict[str, Any]:
        """Queue a fault rule on the CDN port, e.g. ``abort_after_bytes=N``."""
        return self._post(self.cdn_url, rule)

    def stats(self, cdn: bool = True) -> dict[str, Any]:
        return requests.get(f"{self.cdn_url if cdn else self.url}/_testbed/stats", timeout=10).json()

    def reset(self) -> None:
        """Settings back to their start-up values, fault rules and counters cleared, on both ports."""
        for base in (self.url, self.cdn_url):
            requests.delete(f"{base}/_testbed/faults", timeout=10).raise_for_status()
            requests.delete(f"{base}/_testbed/stats", timeout=10).raise_for_status()

    def stop(self) -> None:
        self.record.stop()

    @staticmethod
    def _post(base: str, payload: dict[str, Any]) -> dict[str, Any]:
        response = requests.post(f"{base}/_testbed/faults", json=payload, timeout=10)
        if response.status_code != 200:
            raise RuntimeError(f"the CDN stand-in refused {payload}: {response.text}")
        return response.json()


def start_cdn(directory: Path, upstream: str, storage_root: Path, expired_realm: str = "", **settings: Any) -> Cdn:
    """Start the stand-in as a background process (config, ready file and log in directory); stop it with ``stop()``."""
    directory.mkdir(parents=True, exist_ok=True)
    ready, config_path, log_path = directory / "ready.json", directory / "config.json", directory / "cdn.log"
    ready.unlink(missing_ok=True)
    unknown = set(settings) - set(SETTINGS)
    if unknown:
        raise ValueError(f"unknown CDN settings: {', '.join(sorted(unknown))}")
    write_json(
        config_path,
        {
            "upstream": upstream,
            "storage_root": str(storage_root),
            "expired_realm": expired_realm,
            "ready_file": str(ready),
            **settings,
        },
    )
    proc = spawn(
        python_module_argv("tests.testbed.cdn", "--config", str(config_path)), log_path, cwd=directory, env=python_env()
    )
    found = wait_ready_file(ready, proc, "cdn", log_path)
    return Cdn(url=found["url"], cdn_url=found["cdn_url"], record=ProcessRecord("cdn", proc.pid, str(config_path)))


BIG_REFERENCE = "nvidia/big-test:1"
BIG_SIZE = 96 * 1024 * 1024


@dataclass(frozen=True)
class BigImage:
    """An image of one big layer of pseudo-random bytes (OCI manifest), seeded for CDN tests and benchmarks."""

    repository: str
    tag: str
    digest: str  # the manifest's
    layer_digest: str
    layer_size: int
    content_sha256: str = ""  # of /big.bin, in an image seeded as_tar
    diff_id: str = ""  # the layer's uncompressed digest, as its config lists it


def _gzip_stored(pieces: Any) -> Any:
    """The pieces as a gzip stream at level 0 (stored: about the same size, and every client sees a gzip'd layer)."""
    compressor = zlib.compressobj(0, zlib.DEFLATED, 31)
    for piece in pieces:
        out = compressor.compress(piece)
        if out:
            yield out
    yield compressor.flush()


def _as_tar(name: str, size: int, pieces: Any) -> Any:
    """The pieces (``size`` bytes in all) as the one file ``name`` of a tar stream."""
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = size, 0o644, 1704067200
    yield info.tobuf(tarfile.GNU_FORMAT)
    yield from pieces
    yield b"\0" * ((-size) % 512 + 1024)


def _hashed(pieces: Any, hasher: Any) -> Any:
    for piece in pieces:
        hasher.update(piece)
        yield piece


def _push_big_layer(pusher: Pusher, repository: str, seed: int, size: int, as_tar: bool) -> dict[str, Any]:
    """The big layer (generated once to hash it), pushed unless the registry holds it: its digest and size, what it
    unpacks to (diff_id) and, as a tar, the sha256 of its one file."""

    def uncompressed(content: Any = None, diff: Any = None) -> Any:
        pieces = _keystream(seed, f"big:{size}", size)
        if content is not None:
            pieces = _hashed(pieces, content)
        if as_tar:
            pieces = _as_tar("big.bin", size, pieces)
        return _hashed(pieces, diff) if diff is not None else pieces

    content, diff, hasher, length = hashlib.sha256(), hashlib.sha256(), hashlib.sha256(), 0
    for piece in _gzip_stored(uncompressed(content, diff)):
        hasher.update(piece)
        length += len(piece)
    digest = f"sha256:{hasher.hexdigest()}"
    if not pusher.blob_exists(repository, digest):
        pusher.upload_stream(repository, _gzip_stored(uncompressed()), lambda: digest)
    return {
        "digest": digest,
        "size": length,
        "diff_id": f"sha256:{diff.hexdigest() if as_tar else hashlib.sha256(b'').hexdigest()}",
        "content": content.hexdigest() if as_tar else "",
    }


def seed_big_image(
    registry_url: str,
    username: str,
    password: str,
    reference: str = BIG_REFERENCE,
    size: int = BIG_SIZE,
    seed: int = 1,
    as_tar: bool = False,
    cache_file: Path | None = None,
) -> BigImage:
    """Push (once: an existing layer is not sent again) an image whose one layer is `size` deterministic random bytes, gzip'd
    at level 0 (so that skopeo, which compresses layers it finds uncompressed, copies it unchanged). ``as_tar``: the
    bytes are the file ``/big.bin`` of a real layer tar (for destinations that unpack layers: enroot, Apptainer).
    ``cache_file`` (JSON, layer key -> what _push_big_layer returns) spares regenerating a layer the registry already
    holds just to learn its digest."""
    repository, tag = reference.rsplit(":", 1)
    key = f"big:{seed}:{size}" + (":tar" if as_tar else "")
    cache = read_json(cache_file) if cache_file is not None and cache_file.exists() else {}
    pusher = Pusher(registry_url, username, password)
    layer = cache.get(key)
    if not (
        isinstance(layer, dict)
        and {"digest", "size", "diff_id", "content"} <= set(layer)
        and pusher.blob_exists(repository, layer["digest"])
    ):
        layer = _push_big_layer(pusher, repository, seed, size, as_tar)
        if cache_file is not None:
            write_json(cache_file, {**cache, key: layer}, mode=0o644)
    config = dump_manifest(
        {
            "architecture": "amd64",
            "os": "linux",
            "created": "2024-01-01T00:00:00Z",
            "rootfs": {"type": "layers", "diff_ids": [layer["diff_id"]]},
            "config": {},
        }
    )
    config_info = pusher.upload_bytes(repository, config)
    manifest = dump_manifest(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "size": config_info.size, "digest": config_info.digest},
            "layers": [{"mediaType": OCI_LAYER, "size": layer["size"], "digest": layer["digest"]}],
        }
    )
    return BigImage(
        repository,
        tag,
        pusher.put_manifest(repository, tag, OCI_MANIFEST, manifest),
        layer["digest"],
        layer["size"],
        layer["content"],
        layer["diff_id"],
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description="nvcr.io-like registry front with a presigned-URL CDN, for the test bed"
    )
    parser.add_argument("--config", required=True, type=Path, help="JSON configuration file")
    serve(read_json(parser.parse_args().config))
    sys.exit(0)


if __name__ == "__main__":
    main()
