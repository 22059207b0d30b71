# Copyright (c) airgap.ngc contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private: a minimal registry push client for the seeder (requests only, independent of plugins/).

Handles no auth, Basic and Bearer token challenges; uploads blobs by streaming a chunked PATCH
and closing the session with ``PUT ?digest=``; mounts blobs across repositories.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable
from urllib.parse import urljoin

import requests

from ._blobs import BlobInfo, sha256_digest

CHALLENGE_RE = re.compile(r'(\w+)="([^"]*)"')


class PushError(RuntimeError):
    """The registry refused something the seeder sent."""


@dataclass
class Pusher:
    """Pushes blobs and manifests to one registry as one user."""

    base_url: str
    username: str = ""
    password: str = ""
    session: requests.Session = field(default_factory=requests.Session)
    _challenge: dict[str, str] | None = None
    _scheme: str = ""
    _tokens: dict[str, tuple[str, float]] = field(default_factory=dict)

    def _discover(self) -> None:
        response = self.session.get(f"{self.base_url}/v2/", timeout=30)
        header = response.headers.get("WWW-Authenticate", "")
        self._scheme = header.split(" ", 1)[0].lower() if response.status_code == 401 else "none"
        self._challenge = dict(CHALLENGE_RE.findall(header))

    def _auth(self, repo: str, extra_pull: str | None = None) -> dict[str, str]:
        if self._challenge is None:
            self._discover()
        if self._scheme != "bearer":
            return {}
        scopes = [f"repository:{repo}:pull,push"] + ([f"repository:{extra_pull}:pull"] if extra_pull else [])
        key = " ".join(scopes)
        cached = self._tokens.get(key)
        if cached is None or cached[1] < time.monotonic():
            cached = self._fetch_token(scopes)
            self._tokens[key] = cached
        return {"Authorization": f"Bearer {cached[0]}"}

    def _fetch_token(self, scopes: list[str]) -> tuple[str, float]:
        challenge = self._challenge or {}
        params = [("service", challenge.get("service", ""))] + [("scope", s) for s in scopes]
        response = self.session.get(challenge["realm"], params=params, auth=(self.username, self.password), timeout=30)
        if response.status_code != 200:
            raise PushError(f"token request to {challenge['realm']} failed: HTTP {response.status_code}")
        body = response.json()
        lifetime = int(body.get("expires_in", 60))
        return body.get("token") or body["access_token"], time.monotonic() + max(1, lifetime - 5)

    def _request(self, method: str, url: str, repo: str, extra_pull: str | None = None, **kwargs) -> requests.Response:
        headers = dict(kwargs.pop("headers", {}))
        headers.update(self._auth(repo, extra_pull))
        auth = (self.username, self.password) if self._scheme == "basic" else None
        return self.session.request(
            method, urljoin(f"{self.base_url}/", url), headers=headers, auth=auth, timeout=600, **kwargs
        )

    def blob_exists(self, repo: str, digest: str) -> bool:
        return self._request("HEAD", f"/v2/{repo}/blobs/{digest}", repo).status_code == 200

    def mount(self, repo: str, digest: str, source: str) -> str | None:
        """Mount `digest` from `source`; None when done, else the upload session's Location."""
        response = self._request(
            "POST", f"/v2/{repo}/blobs/uploads/", repo, extra_pull=source, params={"mount": digest, "from": source}
        )
        if response.status_code == 201:
            return None
        _expect(response, 202, f"mount {digest} into {repo}")
        return response.headers["Location"]

    def start_upload(self, repo: str) -> str:
        response = self._request("POST", f"/v2/{repo}/blobs/uploads/", repo)
        _expect(response, 202, f"start upload to {repo}")
        return response.headers["Location"]

    def upload_stream(
        self, repo: str, pieces: Iterable[bytes], digest_of: Callable[[], str], location: str | None = None
    ) -> None:
        """Stream `pieces` as one chunked PATCH, then close the upload with the digest `digest_of()` reports."""
        location = location or self.start_upload(repo)
        response = self._request(
            "PATCH", location, repo, data=iter(pieces), headers={"Content-Type": "application/octet-stream"}
        )
        _expect(response, 202, f"upload to {repo}")
        self._finish(repo, response.headers["Location"], digest_of(), b"")

    def upload_bytes(self, repo: str, data: bytes) -> BlobInfo:
        """Monolithic upload of a small blob (configs), skipped if present."""
        info = BlobInfo(digest=sha256_digest(data), size=len(data))
        if not self.blob_exists(repo, info.digest):
            self._finish(repo, self.start_upload(repo), info.digest, data)
        return info

    def _finish(self, repo: str, location: str, digest: str, data: bytes) -> None:
        separator = "&" if "?" in location else "?"
        response = self._request(
            "PUT",
            f"{location}{separator}digest={digest}",
            repo,
            data=data,
            headers={"Content-Type": "application/octet-stream"},
        )
        _expect(response, 201, f"finish upload of {digest} to {repo}")

    def put_manifest(self, repo: str, reference: str, media_type: str, body: bytes) -> str:
        response = self._request(
            "PUT", f"/v2/{repo}/manifests/{reference}", repo, data=body, headers={"Content-Type": media_type}
        )
        _expect(response, 201, f"push manifest {repo}:{reference}")
        digest = sha256_digest(body)
        if response.headers.get("Docker-Content-Digest", digest) != digest:
            raise PushError(
                f"{repo}:{reference}: registry computed {response.headers['Docker-Content-Digest']}, expected {digest}"
            )
        return digest


def _expect(response: requests.Response, status: int, what: str) -> None:
    if response.status_code != status:
        raise PushError(f"{what}: HTTP {response.status_code} (expected {status}): {response.text[:300]}")
