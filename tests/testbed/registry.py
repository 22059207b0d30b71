# Copyright (c) airgap.ngc contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Real CNCF distribution 2.8 registries (``/usr/bin/docker-registry serve CONFIG``).

Three flavours, each with its own directory holding ``config.yml``, ``data/`` and ``registry.log``:

- ``token``: behaves like nvcr.io. ``auth: token`` with the NGC stand-in's ``/proxy_auth`` as realm;
  JWTs are checked against the stand-in's self-signed signing certificate (``rootcertbundle``).
- ``open``: no authentication (an air-gapped site's plain registry).
- ``basic``: ``auth: htpasswd`` with a bcrypt hash (distribution accepts only bcrypt).
- ``k8s``: no authentication, standing for ``registry.k8s.io`` (the images charts name outside nvcr.io).

All listen on 127.0.0.1, log at ``warn`` and have ``storage.delete.enabled: true``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import secrets
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._common import LOOPBACK, ProcessRecord, TestbedError, free_port, http_answers, spawn, wait_until

REGISTRY_BINARY = "/usr/bin/docker-registry"
FLAVOURS = ("token", "open", "basic", "k8s")
BCRYPT_COST = 5  # distribution checks the hash on every request: keep it cheap


@dataclass
class TokenAuth:
    """How the token flavour trusts the NGC stand-in."""

    realm: str
    service: str
    issuer: str
    rootcertbundle: Path


@dataclass
class BasicAuth:
    username: str
    password: str


@dataclass
class Registry:
    """A running registry."""

    flavour: str
    port: int
    directory: Path
    pid: int
    proc: subprocess.Popen | None = field(default=None, repr=False, compare=False)

    @property
    def host(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    @property
    def log_path(self) -> Path:
        return self.directory / "registry.log"

    def record(self) -> ProcessRecord:
        return ProcessRecord(name=f"registry-{self.flavour}", pid=self.pid, marker=str(self.directory / "config.yml"))


def bcrypt_hash(password: str) -> str:
    """A bcrypt ($2b$) hash: libcrypt (libxcrypt, always on Debian), else the bcrypt module, else htpasswd."""
    libname = ctypes.util.find_library("crypt")
    if libname:
        lib = ctypes.CDLL(libname)
        lib.crypt_gensalt.restype = ctypes.c_char_p
        lib.crypt_gensalt.argtypes = [ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p, ctypes.c_int]
        lib.crypt.restype = ctypes.c_char_p
        lib.crypt.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
        salt = lib.crypt_gensalt(b"$2b$", BCRYPT_COST, None, 0)
        hashed = lib.crypt(password.encode("utf-8"), salt) if salt else None
        if hashed and hashed.startswith(b"$2"):
            return hashed.decode("ascii")
    try:
        import bcrypt  # pylint: disable=import-outside-toplevel

        return bcrypt.hashpw(password.encode("utf-8"), bcrypt.gensalt(BCRYPT_COST)).decode("ascii")
    except ImportError:
        pass
    if shutil.which("htpasswd"):
        out = subprocess.run(
            ["htpasswd", "-nbBC", str(BCRYPT_COST), "x", password], check=True, capture_output=True, text=True
        )
        return out.stdout.strip().split(":", 1)[1]
    raise TestbedError(
        "no bcrypt implementation: need libcrypt with bcrypt, the Python bcrypt package or apache2-utils"
    )


def _http_secret(directory: Path) -> str:
    """The registry's ``http.secret`` (it signs upload session states), kept in its directory: a restarted registry
    accepts the sessions it started before, as a production one configured with a fixed secret does."""
    path = directory / "http-secret"
    if not path.exists():
        path.write_text(secrets.token_hex(16), encoding="utf-8")
        path.chmod(0o600)
    return path.read_text(encoding="utf-8").strip()


def registry_config(directory: Path, port: int, auth: dict[str, Any] | None) -> dict[str, Any]:
    """The registry configuration (written as JSON, which is YAML too)."""
    config: dict[str, Any] = {
        "version": "0.1",
        "log": {"level": "warn", "formatter": "text", "accesslog": {"disabled": True}},
        "storage": {
            "filesystem": {"rootdirectory": str(directory / "data")},
            "delete": {"enabled": True},
            "maintenance": {"uploadpurging": {"enabled": False}},
        },
        "http": {
            "addr": f"{LOOPBACK}:{port}",
            "secret": _http_secret(directory),
            "headers": {"X-Content-Type-Options": ["nosniff"]},
        },
    }
    if auth:
        config["auth"] = auth
    return config


def _auth_section(
    flavour: str, directory: Path, token: TokenAuth | None, basic: BasicAuth | None
) -> dict[str, Any] | None:
    if flavour == "token":
        if token is None:
            raise TestbedError("the token registry needs TokenAuth")
        return {
            "token": {
                "realm": token.realm,
                "service": token.service,
                "issuer": token.issuer,
                "rootcertbundle": str(token.rootcertbundle),
            }
        }
    if flavour == "basic":
        if basic is None:
            raise TestbedError("the basic registry needs BasicAuth")
        htpasswd = directory / "htpasswd"
        htpasswd.write_text(f"{basic.username}:{bcrypt_hash(basic.password)}\n", encoding="utf-8")
        return {"htpasswd": {"realm": "airgap.ngc testbed", "path": str(htpasswd)}}
    return None


def start_registry(
    flavour: str, directory: Path, token: TokenAuth | None = None, basic: BasicAuth | None = None, timeout: float = 30
) -> Registry:
    """Start one registry in `directory` (kept across restarts: its data survives) and wait until it answers."""
    if flavour not in FLAVOURS:
        raise TestbedError(f"unknown registry flavour {flavour!r}; use one of {FLAVOURS}")
    directory.mkdir(parents=True, exist_ok=True)
    auth = _auth_section(flavour, directory, token, basic)
    last_error: Exception | None = None
    for _attempt in range(3):  # the port found free may be taken before the registry binds it
        try:
            return _launch(flavour, directory, auth, free_port(), timeout)
        except TestbedError as exc:
            last_error = exc
    raise TestbedError(f"could not start the {flavour} registry: {last_error}")


def _launch(flavour: str, directory: Path, auth: dict[str, Any] | None, port: int, timeout: float) -> Registry:
    config_path = directory / "config.yml"
    config_path.write_text(json.dumps(registry_config(directory, port, auth), indent=2) + "\n", encoding="utf-8")
    config_path.chmod(0o600)
    log_path = directory / "registry.log"
    proc = spawn([REGISTRY_BINARY, "serve", str(config_path)], log_path, cwd=directory)
    try:
        wait_until(
            lambda: http_answers(f"http://{LOOPBACK}:{port}/v2/"),
            timeout,
            f"{flavour} registry",
            alive=lambda: proc.poll() is None,
            log_path=log_path,
        )
    except TestbedError:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        raise
    return Registry(flavour=flavour, port=port, directory=directory, pid=proc.pid, proc=proc)
