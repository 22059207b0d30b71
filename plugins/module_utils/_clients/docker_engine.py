# Copyright (c) airgap.ngc contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private: the Docker engine destination (inspect, status, pull, load, tag through the docker SDK). Not a public API.

The copy engine plans with ``DockerEngine.status`` (does the engine already hold the image the
source digest names, and which ``tag_as`` names are missing) and acts with ``pull`` or ``load``
and then ``tag``. ``decide_status`` is the decision itself, pure and testable without an engine.

Credentials go to the engine only in the SDK's auth config (the ``X-Registry-Auth`` header of
one API request): never on a command line, never in a message. Progress the engine streams
back is read and discarded, because a module prints nothing but its JSON result.
"""

from __future__ import annotations

import os
import re
import traceback
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Union

from ansible_collections.airgap.ngc.plugins.module_utils._types.errors import (
    AirgapError,
    AuthError,
    ConfigError,
    NotFoundError,
    redact,
    shorten,
)
from ansible_collections.airgap.ngc.plugins.module_utils._types.oci import CHUNK_SIZE
from ansible_collections.airgap.ngc.plugins.module_utils._types.reference import ImageReference

try:
    import docker
    from docker import errors as docker_errors
    from docker.utils import kwargs_from_env
    from requests import exceptions as requests_errors
except ImportError:
    DOCKER_IMPORT_ERROR: str | None = traceback.format_exc()
    HAS_DOCKER = False
else:
    DOCKER_IMPORT_ERROR = None
    HAS_DOCKER = True

DEFAULT_HOST = "unix:///var/run/docker.sock"
# Seconds the engine may stay silent (connecting, or between two progress messages) before we give up.
DEFAULT_TIMEOUT = 300.0
DOCKER_HUB_HOSTS = frozenset(("docker.io", "index.docker.io", "registry-1.docker.io"))
HOST_SCHEMES = ("unix://", "tcp://", "http://", "https://", "ssh://", "npipe://")
MASK = "********"
MAX_DETAIL_CHARS = 500

_DIGEST_IN_STATUS_RE = re.compile(r"Digest: ((?:sha256|sha512):[0-9a-f]+)")
_LOADED_RE = re.compile(r"^Loaded image(?: ID)?: (.+?)\s*$")
_AUTH_WORDS_RE = re.compile(
    r"unauthorized|authentication required|no basic auth credentials|incorrect username or password|"
    r"access to the resource is denied|access denied|forbidden|\b401\b|\b403\b",
    re.IGNORECASE,
)
_NOT_FOUND_WORDS_RE = re.compile(
    r"manifest unknown|not found|name unknown|does not exist|no such image|\b404\b", re.IGNORECASE
)

Reference = Union[str, ImageReference]


class EngineError(AirgapError):
    """The Docker engine refused or failed an operation."""


class EngineUnreachableError(EngineError):
    """Nothing answers at the engine's address, or it stopped answering."""

    def __init__(self, message: str, host: str) -> None:
        super().__init__(message)
        self.host = host


class DockerSdkMissingError(AirgapError):
    """The docker Python SDK is not installed; a module reports it with missing_required_lib(error.library)."""

    library = "docker"

    def __init__(self, message: str, import_error: str | None = None) -> None:
        super().__init__(message)
        self.import_error = import_error


class ArchiveMissingError(ConfigError):
    """source: archive names a docker archive that does not exist."""

    def __init__(self, message: str, path: str) -> None:
        super().__init__(message)
        self.path = path


class EngineAuthError(AuthError, EngineError):
    """The registry refused the engine's credentials (401/403) during a pull."""


class EngineNotFoundError(NotFoundError, EngineError):
    """The registry has no such repository, tag or digest, or the engine no such image."""


@dataclass(frozen=True)
class EngineImage:
    """An image as the engine holds it (``docker image inspect``)."""

    id: str
    repo_tags: tuple[str, ...] = ()
    repo_digests: tuple[str, ...] = ()
    architecture: str | None = None
    os: str | None = None

    @classmethod
    def from_inspect(cls, data: Mapping[str, Any]) -> EngineImage:
        """From the engine's answer to GET /images/{name}/json."""
        return cls(
            id=str(data.get("Id") or ""),
            repo_tags=tuple(data.get("RepoTags") or ()),
            repo_digests=tuple(data.get("RepoDigests") or ()),
            architecture=data.get("Architecture") or None,
            os=data.get("Os") or None,
        )

    @property
    def digests(self) -> frozenset[str]:
        """The manifest digests of RepoDigests (``repo@sha256:...``), whatever the repository."""
        return frozenset(entry.rpartition("@")[2] for entry in self.repo_digests if "@" in entry)

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "repo_tags": list(self.repo_tags),
            "repo_digests": list(self.repo_digests),
            "architecture": self.architecture,
            "os": self.os,
        }


@dataclass(frozen=True)
class EngineStatus:
    """Whether the engine holds an image, decided before anything is pulled, loaded or tagged.

    ``present``: the engine's ``name:tag`` (or ``name@digest``) is the source image, shown by
    RepoDigests holding the source digest (after a pull) or by the image ID being the config
    digest (after a load, which leaves RepoDigests empty). ``missing_tags``: the ``tag_as``
    names that do not point at that image yet (all of them when the image is not present).
    """

    reference: str
    present: bool
    reason: str
    image_id: str | None = None
    matched_by: str | None = None
    tag_targets: tuple[str, ...] = ()
    missing_tags: tuple[str, ...] = ()

    @property
    def needs_image(self) -> bool:
        """True if the image must be pulled or loaded."""
        return not self.present

    @property
    def up_to_date(self) -> bool:
        """True if nothing must be pulled, loaded or tagged."""
        return self.present and not self.missing_tags

    def as_dict(self) -> dict[str, Any]:
        return {
            "reference": self.reference,
            "present": self.present,
            "reason": self.reason,
            "image_id": self.image_id,
            "matched_by": self.matched_by,
            "tag_targets": list(self.tag_targets),
            "missing_tags": list(self.missing_tags),
        }


# -- pure helpers ----------------------------------------------------------------------------------------------------
def resolve_host(host: str | None = None, environ: Mapping[str, str] | None = None) -> str:
    """The engine address: ``host`` if given, else E(DOCKER_HOST), else the local socket. A bare path is a unix socket."""
    env = os.environ if environ is None else environ
    for candidate in (host, env.get("DOCKER_HOST")):
        text = (candidate or "").strip()
        if not text:
            continue
        if text.startswith("/"):
            return "unix://" + text
        if not text.startswith(HOST_SCHEMES):
            raise ConfigError(
                f"invalid Docker engine address {text!r}: expected unix:///path/to/docker.sock, tcp://host:port or ssh://user@host"
            )
        return text
    return DEFAULT_HOST


def as_reference(value: Reference) -> ImageReference:
    """An ImageReference from a string or an ImageReference."""
    if isinstance(value, ImageReference):
        return value
    return ImageReference.parse(value)


def familiar_name(reference: ImageReference) -> str:
    """The repository name as the engine shows it: without ``docker.io/`` and ``library/``, otherwise with the host."""
    if reference.registry is None or reference.registry in DOCKER_HUB_HOSTS:
        repository = reference.repository
        if repository.startswith("library/") and repository.count("/") == 1:
            repository = repository[len("library/") :]
        return repository
    return f"{reference.registry}/{reference.repository}"


def engine_key(reference: ImageReference) -> str:
    """What to look the image up by in the engine: ``name:tag``, else ``name@digest``, else ``name:latest``."""
    name = familiar_name(reference)
    if reference.tag:
        return f"{name}:{reference.tag}"
    if reference.digest:
        return f"{name}@{reference.digest}"
    return f"{name}:latest"


def _is_host(text: str) -> bool:
    return "." in text or ":" in text or text == "localhost"


def tag_targets(reference: ImageReference, tag_as: Iterable[str] | None) -> tuple[str, ...]:
    """The ``name:tag`` names that ``tag_as`` asks for, in order, without duplicates or the image's own name.

    Each item is one of:
    - a registry host (``nvcr.io``, ``registry.site.example:5000``): the image's repository and tag under that host;
    - a prefix ending in ``/`` (``registry.site.example/ngc/``): the image's repository and tag under it;
    - a repository (``registry.site.example/nvidia/pytorch``), optionally with its own tag; without one the image's tag is kept.
    """
    targets: list[str] = []
    own = engine_key(reference)
    for item in tag_as or ():
        text = str(item).strip()
        if text and "/" not in text and _is_host(text):
            text = f"{text}/{reference.repository}"
        elif text.endswith("/"):
            text = f"{text}{reference.repository}"
        target = ImageReference.parse(text)
        if target.digest:
            raise ConfigError(
                f"docker.tag_as {item!r}: give a registry host, a prefix ending in / or a repository, not a digest"
            )
        tag = target.tag or reference.tag
        if not tag:
            raise ConfigError(
                f"docker.tag_as {item!r}: {reference} has no tag to keep, so give one ({target.name}:TAG)"
            )
        name = f"{familiar_name(target)}:{tag}"
        if name != own and name not in targets:
            targets.append(name)
    return tuple(targets)


def decide_status(
    reference: ImageReference,
    source_digest: str | None,
    config_digest: str | None,
    image: EngineImage | None,
    tagged: Mapping[str, EngineImage | None] | None = None,
    targets: Iterable[str] = (),
) -> EngineStatus:
    """Whether ``image`` (what the engine's ``reference`` resolves to, or None) is the source image, and which targets lack it.

    The source image is recognised by RepoDigests holding ``source_digest`` (manifest digests are
    content addresses, so any repository's entry counts) or by the image ID equalling
    ``config_digest``. With neither digest known, an existing image counts as present.
    """
    key = engine_key(reference)
    wanted = tuple(targets)
    tagged = tagged or {}
    if image is None:
        return EngineStatus(
            reference=key, present=False, reason="not in the engine", tag_targets=wanted, missing_tags=wanted
        )
    matched_by = None
    if source_digest and f"{familiar_name(reference)}@{source_digest}" in image.repo_digests:
        matched_by, reason = "repo_digest", f"pulled as {source_digest}"
    elif source_digest and source_digest in image.digests:
        matched_by, reason = "repo_digest", f"holds {source_digest} (pulled under another name)"
    elif config_digest and image.id == config_digest:
        matched_by, reason = "config_digest", f"image ID is the config digest {config_digest}"
    elif not source_digest and not config_digest:
        matched_by, reason = "tag", "present (no digest to compare)"
    else:
        expected = source_digest or config_digest
        held = ", ".join(sorted(image.digests)) or "no registry digest"
        reason = f"holds image {image.id} ({held}), source is {expected}"
        return EngineStatus(
            reference=key, present=False, reason=reason, image_id=image.id, tag_targets=wanted, missing_tags=wanted
        )
    missing = tuple(target for target in wanted if getattr(tagged.get(target), "id", None) != image.id)
    if missing:
        reason += f"; not yet tagged as {', '.join(missing)}"
    return EngineStatus(
        reference=key,
        present=True,
        reason=reason,
        image_id=image.id,
        matched_by=matched_by,
        tag_targets=wanted,
        missing_tags=missing,
    )


def scrub(text: str, secrets: Iterable[str | None] = ()) -> str:
    """``text`` with every non-empty secret replaced by the engine messages' mask (the one redaction helper)."""
    return redact(text, secrets, MASK)


def classify_error(status: int | None, detail: str) -> str:
    """``auth``, ``not_found`` or ``other`` for an engine error (HTTP status, message)."""
    if status in (401, 403):
        return "auth"
    if status == 404 and not _AUTH_WORDS_RE.search(detail):
        return "not_found"
    if _AUTH_WORDS_RE.search(detail):
        return "auth"
    if status == 404 or _NOT_FOUND_WORDS_RE.search(detail):
        return "not_found"
    return "other"


def _short(text: str) -> str:
    return shorten(text, MAX_DETAIL_CHARS + 3)


def unreachable_message(host: str, detail: str | None = None) -> str:
    """The message for an engine that does not answer."""
    why = f" ({_short(detail)})" if detail else ""
    return f"cannot reach the Docker engine at {host}{why}: is dockerd running? Set docker.host (or DOCKER_HOST) to its address"


def pull_error(
    host: str, reference: ImageReference, status: int | None, detail: str, secrets: Iterable[str | None] = ()
) -> AirgapError:
    """The error for a refused or failed pull, with credentials masked out of the engine's message."""
    detail = _short(scrub(detail, secrets))
    registry = reference.registry or "docker.io"
    kind = classify_error(status, detail)
    if kind == "auth":
        code = status if status in (401, 403) else 401
        return EngineAuthError(
            f"{code} from {registry} for {reference.repository} when the Docker engine at {host} pulled it: "
            f"check the registry credentials ({detail})",
            status=code,
            url=registry,
        )
    if kind == "not_found":
        return EngineNotFoundError(
            f"the Docker engine at {host} could not pull {reference}: {registry} has no such image; check the name, tag and digest ({detail})",
            status=404,
            url=registry,
        )
    return EngineError(f"the Docker engine at {host} could not pull {reference}: {detail}")


class _StreamError(Exception):
    """An error the engine reported inside a progress stream (after answering 200)."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


def drain(stream: Iterable[Mapping[str, Any]]) -> list[str]:
    """Read a progress stream to its end, discarding progress; the status lines kept are ``Digest:`` and ``Loaded image``.

    Raises _StreamError for an ``error`` message in the stream.
    """
    kept: list[str] = []
    for message in stream:
        if not isinstance(message, Mapping):
            continue
        if message.get("error") or message.get("errorDetail"):
            detail = message.get("errorDetail") or {}
            text = (
                (detail.get("message") if isinstance(detail, Mapping) else None)
                or message.get("error")
                or "unknown error"
            )
            code = detail.get("code") if isinstance(detail, Mapping) else None
            raise _StreamError(str(text), code if isinstance(code, int) else None)
        for key in ("status", "stream"):
            text = message.get(key)
            if isinstance(text, str) and (text.startswith("Digest: ") or text.startswith("Loaded image")):
                kept.append(text.strip())
    return kept


def digest_from_status(lines: Iterable[str]) -> str | None:
    """The manifest digest a pull reported (``Digest: sha256:...``), if any."""
    for line in lines:
        match = _DIGEST_IN_STATUS_RE.search(line)
        if match:
            return match.group(1)
    return None


def loaded_from_status(lines: Iterable[str]) -> list[str]:
    """The names (``name:tag``) or image IDs a load reported."""
    loaded: list[str] = []
    for line in lines:
        match = _LOADED_RE.match(line)
        if match and match.group(1) not in loaded:
            loaded.append(match.group(1))
    return loaded


# -- the engine ------------------------------------------------------------------------------------------------------
class DockerEngine:
    """One Docker engine, reached through the docker SDK. Connects on first use.

    ``client`` is for tests: any object with the ``api`` of a docker.DockerClient.
    """

    def __init__(
        self,
        host: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        client: Any = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self._environ = os.environ if environ is None else environ
        self.host = resolve_host(host, self._environ)
        self.timeout = timeout
        self._client = client

    # -- connection ----------------------------------------------------------------------------------------------
    @property
    def client(self) -> Any:
        """The docker.DockerClient, created (and the API version negotiated) on first use."""
        if self._client is None:
            self._client = self._connect()
        return self._client

    @property
    def api(self) -> Any:
        """The SDK's low-level APIClient."""
        return self.client.api

    def _connect(self) -> Any:
        if not HAS_DOCKER:
            raise DockerSdkMissingError(
                "the docker Python SDK is required for the docker destination: install it (pip install docker) "
                "on the host that runs the module",
                DOCKER_IMPORT_ERROR,
            )
        kwargs: dict[str, Any] = {"base_url": self.host, "timeout": self.timeout, "version": "auto"}
        if self.host.startswith(("tcp://", "https://")) and (
            self._environ.get("DOCKER_TLS_VERIFY") or self._environ.get("DOCKER_CERT_PATH")
        ):
            tls = kwargs_from_env(environment=dict(self._environ)).get("tls")
            if tls:
                kwargs["tls"] = tls
        try:
            return docker.DockerClient(**kwargs)
        except docker_errors.DockerException as exc:
            raise EngineUnreachableError(unreachable_message(self.host, _connection_detail(exc)), self.host) from None
        except (requests_errors.RequestException, OSError) as exc:
            raise EngineUnreachableError(unreachable_message(self.host, _connection_detail(exc)), self.host) from None

    def close(self) -> None:
        if self._client is not None:
            try:
                self._client.close()
            finally:
                self._client = None

    def __enter__(self) -> DockerEngine:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self.close()

    @contextmanager
    def _engine_call(self, action: str, api_errors: bool = True) -> Iterator[None]:
        """Turn transport failures into EngineUnreachableError and, unless api_errors is false, engine errors into EngineError."""
        try:
            yield
        except AirgapError:
            raise
        except Exception as exc:  # pylint: disable=broad-except
            if not HAS_DOCKER:
                raise
            if isinstance(exc, requests_errors.ReadTimeout):
                raise EngineUnreachableError(
                    f"the Docker engine at {self.host} sent nothing for {self.timeout:g} seconds during {action}",
                    self.host,
                ) from None
            if isinstance(exc, (requests_errors.ConnectionError, requests_errors.Timeout)):
                raise EngineUnreachableError(
                    unreachable_message(self.host, _connection_detail(exc)), self.host
                ) from None
            if api_errors and isinstance(exc, docker_errors.APIError):
                if exc.status_code == 404 or isinstance(exc, docker_errors.NotFound):
                    raise EngineNotFoundError(
                        f"the Docker engine at {self.host} could not {action}: {_short(_explanation(exc))}", status=404
                    ) from None
                raise EngineError(
                    f"the Docker engine at {self.host} could not {action}: {_short(_explanation(exc))}"
                ) from None
            if api_errors and isinstance(exc, docker_errors.DockerException):
                raise EngineError(f"the Docker engine at {self.host} could not {action}: {_short(str(exc))}") from None
            raise

    def ping(self) -> str:
        """The engine's version (raises EngineUnreachableError if it does not answer)."""
        api = self.api
        with self._engine_call("answer a ping"):
            api.ping()
            return str(api.version().get("Version") or "")

    # -- plan ----------------------------------------------------------------------------------------------------
    def inspect(self, reference: Reference) -> EngineImage | None:
        """The image ``reference`` resolves to in the engine (a name, ``name@digest`` or an image ID), or None."""
        key = _key(reference)
        api = self.api
        try:
            with self._engine_call(f"inspect {key}"):
                data = api.inspect_image(key)
        except EngineNotFoundError:
            return None
        return EngineImage.from_inspect(data)

    def status(
        self,
        reference: Reference,
        source_digest: str | None,
        config_digest: str | None = None,
        tag_as: Iterable[str] | None = None,
    ) -> EngineStatus:
        """Whether the engine already holds ``reference`` as the source image, and which ``tag_as`` names it lacks."""
        ref = as_reference(reference)
        targets = tag_targets(ref, tag_as)
        image = self.inspect(ref)
        if image is None and not ref.tag and config_digest:
            image = self.inspect(config_digest)
        tagged = {target: self.inspect(target) for target in targets} if image is not None else {}
        return decide_status(ref, source_digest, config_digest, image, tagged, targets)

    # -- act -----------------------------------------------------------------------------------------------------
    def pull(
        self,
        reference: Reference,
        username: str | None = None,
        password: str | None = None,
        platform: str | None = None,
    ) -> str:
        """Have the engine pull ``reference``; returns the manifest digest it pulled.

        A reference with a digest is pulled by digest (then tagged with its tag, if it has one),
        so the engine gets exactly that content. Credentials travel only in the SDK's auth config.
        """
        ref = as_reference(reference)
        name = familiar_name(ref)
        what = ref.digest or ref.tag or "latest"
        auth = {"username": username or "", "password": password or ""} if (username or password) else None
        secrets = (password, username and password and f"{username}:{password}")
        api = self.api
        try:
            with self._engine_call(f"pull {ref}", api_errors=False):
                lines = drain(api.pull(name, tag=what, stream=True, decode=True, auth_config=auth, platform=platform))
        except _StreamError as exc:
            raise pull_error(self.host, ref, exc.code, str(exc), secrets) from None
        except AirgapError:
            raise
        except Exception as exc:  # pylint: disable=broad-except
            if HAS_DOCKER and isinstance(exc, docker_errors.APIError):
                raise pull_error(self.host, ref, exc.status_code, _explanation(exc), secrets) from None
            if HAS_DOCKER and isinstance(exc, docker_errors.DockerException):
                raise EngineError(
                    f"the Docker engine at {self.host} could not pull {ref}: {_short(scrub(str(exc), secrets))}"
                ) from None
            raise
        digest = ref.digest or digest_from_status(lines)
        if ref.digest and ref.tag:
            self.tag(f"{name}@{ref.digest}", f"{name}:{ref.tag}")
        if digest is None:
            image = self.inspect(ref)
            prefix = f"{name}@"
            digest = next(
                (entry[len(prefix) :] for entry in (image.repo_digests if image else ()) if entry.startswith(prefix)),
                None,
            )
        if digest is None:
            raise EngineError(f"the Docker engine at {self.host} pulled {ref} but reports no digest for it")
        return digest

    def load(self, archive_path: str) -> list[str]:
        """Stream a docker archive (``docker save`` format) to the engine; returns the loaded names or image IDs.

        The open file is the request body, so the SDK (requests, urllib3) sends it block by block
        (1 MiB at a time) with a Content-Length: memory does not grow with the archive's size.
        """
        path = os.fspath(archive_path)
        if not os.path.isfile(path):
            raise ArchiveMissingError(
                f"the docker archive {path} does not exist: source: archive loads what an archive destination wrote, "
                "so write it first (archive.dir, format docker) or check archive.dir",
                path,
            )
        api = self.api
        try:
            with open(path, "rb") as body, self._engine_call(f"load {path}"):
                lines = drain(api.load_image(_Blocks(body), quiet=False))
        except OSError as exc:
            raise EngineError(f"cannot read the docker archive {path}: {exc.strerror or exc}") from None
        except _StreamError as exc:
            raise EngineError(
                f"the Docker engine at {self.host} could not load {path}: {_short(str(exc))}; is it a docker archive (docker save)?"
            ) from None
        loaded = loaded_from_status(lines)
        if not loaded:
            raise EngineError(
                f"the Docker engine at {self.host} loaded {path} but reports no image from it; is it a docker archive (docker save)?"
            )
        return loaded

    def tag(self, source_ref: Reference, target_ref: Reference) -> None:
        """Tag the image ``source_ref`` (a name, ``name@digest`` or image ID) as ``target_ref`` (``name[:tag]``, default latest)."""
        source = source_ref if isinstance(source_ref, str) else _key(source_ref)
        target = as_reference(target_ref)
        if target.digest:
            raise ConfigError(f"cannot tag {source} as {target}: a tag target has no digest")
        repository, tag = familiar_name(target), target.tag or "latest"
        api = self.api
        with self._engine_call(f"tag {source} as {repository}:{tag}"):
            if not api.tag(source, repository, tag):
                raise EngineError(f"the Docker engine at {self.host} did not tag {source} as {repository}:{tag}")

    # -- prune ---------------------------------------------------------------------------------------------------

    def containers_using(self, image_id: str) -> list[str]:
        """The names of the containers (running or not) made from the image."""
        api = self.api
        with self._engine_call(f"list the containers of {image_id}"):
            found = api.containers(all=True, filters={"ancestor": image_id})
        return [((c.get("Names") or [c.get("Id", "")[:12]])[0]).lstrip("/") for c in found]

    def untag(self, reference: Reference) -> None:
        """Remove one name of an image (the image goes when its last name does; nothing is forced)."""
        key = _key(reference)
        api = self.api
        with self._engine_call(f"remove {key}"):
            api.remove_image(key, force=False, noprune=False)


class _Blocks:
    """A file whose read() returns CHUNK_SIZE bytes whatever it is asked for (urllib3 asks for 16 KiB, which is slower).

    requests sees a stream with a length (fileno, tell) and sends it as the body, block by block.
    """

    def __init__(self, raw: Any) -> None:
        self._raw = raw

    def read(self, size: int = -1) -> bytes:  # pylint: disable=unused-argument
        return self._raw.read(CHUNK_SIZE)

    def fileno(self) -> int:
        return self._raw.fileno()

    def tell(self) -> int:
        return self._raw.tell()

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._raw.seek(offset, whence)

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.read, b"")


def _key(reference: Reference) -> str:
    return (
        reference
        if isinstance(reference, str) and reference.startswith("sha256:")
        else engine_key(as_reference(reference))
    )


def _explanation(exc: Any) -> str:
    """The engine's own words from a docker.errors.APIError, without the request URL the SDK adds."""
    explanation = getattr(exc, "explanation", None)
    if isinstance(explanation, bytes):
        explanation = explanation.decode("utf-8", "replace")
    return str(explanation or getattr(exc, "args", [""])[0] or type(exc).__name__)


def _connection_detail(exc: BaseException) -> str:
    """A short reason for a failed connection: the innermost OS error if there is one."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.strerror:
            return current.strerror
        for arg in getattr(current, "args", ()):
            if isinstance(arg, BaseException):
                inner = _connection_detail(arg)
                if inner:
                    return inner
        current = current.__cause__ or current.__context__
    text = str(exc)
    match = re.search(r"(\w+Error)\((\d+), '([^']+)'\)", text)
    if match:
        return match.group(3)
    return _short(text)
