# Copyright (c) airgap.ngc contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private: client for a classic Helm chart repository such as NGC's (``https://helm.ngc.nvidia.com/<org>[/<team>]``).
Not a public API.

The repository is ``index.yaml`` (Helm's repository index: ``entries: {name: [{name, version, appVersion, digest,
urls, ...}]}``) and the chart archives it names (``urls``, relative to the repository or absolute). NGC wants HTTP
Basic ``$oauthtoken:<API key>`` for a private org; the key is sent to the repository's own scheme and host only,
never along a redirect to another host (the redirects are followed here, one by one, to make sure of it), and never
appears in a message. The index is read up to ``MAX_INDEX_BYTES`` and checked field by field; a chart archive is
streamed to a temporary file that is renamed into place only once its sha256 is the index's ``digest``.
"""

from __future__ import annotations

import errno
import hashlib
import os
import tempfile
import traceback
from typing import Any
from urllib.parse import quote, urljoin, urlsplit

from ansible_collections.airgap.ngc.plugins.module_utils._types.charts import MAX_CHART_BYTES, ChartRef, version_problem
from ansible_collections.airgap.ngc.plugins.module_utils._types.errors import (
    AirgapError,
    AuthError,
    DigestMismatchError,
    NgcError,
    NotFoundError,
    exception_reason,
    status_message,
)
from ansible_collections.airgap.ngc.plugins.module_utils._types.reference import path_component_problem
from ansible_collections.airgap.ngc.plugins.module_utils._http.transport import (
    TRANSIENT_EXCEPTIONS,
    HttpTransport,
    host_of,
    reason_of,
    strip_query,
)

try:
    import yaml
except ImportError:
    YAML_IMPORT_ERROR: str | None = traceback.format_exc()
    HAS_YAML = False
else:
    YAML_IMPORT_ERROR = None
    HAS_YAML = True

HELM_USERNAME = "$oauthtoken"
DEFAULT_HELM_URL = "https://helm.ngc.nvidia.com"
MAX_INDEX_BYTES = 64 * 1024 * 1024
"""The largest index.yaml read (NGC's biggest org index is a few MiB)."""
MAX_REDIRECTS = 5
CHUNK_SIZE = 1024 * 1024
_REDIRECTS = frozenset((301, 302, 303, 307, 308))


def load_yaml(data: bytes | str, what: str) -> Any:
    """YAML from untrusted bytes with the safe loader (no Python objects); AirgapError naming ``what`` if it is not YAML."""
    if not HAS_YAML:
        raise AirgapError(f"reading {what} needs the PyYAML library")
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        return yaml.load(data, Loader=loader)  # nosec B506 - a safe loader
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise AirgapError(f"{what} is not valid YAML{where}: {problem}") from None
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise AirgapError(f"{what} is not valid YAML: {type(exc).__name__}") from None


def sha256_of_index(value: Any) -> str | None:
    """The index's ``digest`` of a chart as ``sha256:<hex>`` (Helm writes the bare hex), or None if it gives none."""
    if value is None or value == "":
        return None
    text = str(value).strip().lower()
    hexpart = text[7:] if text.startswith("sha256:") else text
    if len(hexpart) != 64 or any(char not in "0123456789abcdef" for char in hexpart):
        raise ValueError(f"digest {str(value)[:80]!r} is not a sha256")
    return f"sha256:{hexpart}"


def _schema_problem(index: Any) -> str | None:
    """Why an index.yaml is not a Helm repository index, naming the first bad field, or None."""
    if not isinstance(index, dict):
        return "it is not a mapping"
    entries = index.get("entries")
    if entries is None:
        return None
    if not isinstance(entries, dict):
        return "entries is not a mapping"
    for name, versions in entries.items():
        if not isinstance(name, str) or path_component_problem(name):
            return f"entries holds the chart name {str(name)[:80]!r}, not a valid chart name"
        if not isinstance(versions, list):
            return f"entries.{name} is not a list"
        for position, entry in enumerate(versions):
            where = f"entries.{name}[{position}]"
            if not isinstance(entry, dict):
                return f"{where} is not a mapping"
            problem = version_problem(entry.get("version"))
            if problem:
                return f"{where}: {problem}"
            urls = entry.get("urls")
            if not isinstance(urls, list) or not urls or not all(isinstance(url, str) and url for url in urls):
                return f"{where}.urls is not a list of URLs"
            if entry.get("name", name) != name:
                return f"{where}.name is {str(entry.get('name'))[:80]!r}, not {name!r}"
            try:
                sha256_of_index(entry.get("digest"))
            except ValueError as exc:
                return f"{where}: {exc}"
            for key in ("appVersion", "description", "created"):
                if entry.get(key) is not None and isinstance(entry[key], (dict, list)):
                    return f"{where}.{key} is not a scalar"
    return None


class HelmRepository:
    """One org's (or team's) Helm repository: its index, and its chart archives fetched to files checked by digest."""

    def __init__(
        self, transport: HttpTransport, url: str, org: str, team: str | None = None, api_key: str | None = None
    ) -> None:
        for what, part in (("org", org), ("team", team)):
            if part is not None and path_component_problem(part):
                raise AirgapError(f"invalid {what} {part!r} for the Helm repository: {path_component_problem(part)}")
        self.url = f"{url.rstrip('/')}/{quote(org, safe='')}" + (f"/{quote(team, safe='')}" if team else "")
        self.org = org
        self.team = team
        self.host = host_of(url)
        self._origin = _origin(url)
        self._api_key = api_key or None
        self._http = transport
        self._index: dict[str, Any] | None = None

    @property
    def namespace(self) -> str:
        return f"{self.org}/{self.team}" if self.team else self.org

    # Requests ----------------------------------------------------------------------------------

    def _get(self, url: str, what: str) -> Any:
        """The streamed answer to a GET of url, redirects followed here with the key sent to the repository's host only."""
        secrets = (self._api_key,)
        for _hop in range(MAX_REDIRECTS + 1):
            own = _origin(url) == self._origin
            auth = (HELM_USERNAME, self._api_key) if self._api_key and own else None
            response, attempts = self._http.send(
                "GET", url, what=what, error=NgcError, secrets=secrets, auth=auth, allow_redirects=False, stream=True
            )
            if response.status_code in _REDIRECTS and response.headers.get("Location"):
                location = urljoin(url, response.headers["Location"])
                response.close()
                if urlsplit(location).scheme not in ("http", "https"):
                    raise NgcError(
                        f"{self.host} redirected {what} to a URL that is not http or https", url=strip_query(url)
                    )
                url = location
                continue
            if response.status_code >= 400:
                raise self._error(response, attempts, what, url)
            return response
        raise NgcError(f"{self.host} redirected {what} more than {MAX_REDIRECTS} times", url=strip_query(url))

    def _error(self, response: Any, attempts: int, what: str, url: str) -> AirgapError:
        status = response.status_code
        host = host_of(url)
        reason = reason_of(response, (self._api_key,))
        response.close()
        because = f" ({reason})" if reason else ""
        plain = strip_query(url)
        if status in (401, 403):
            if self._api_key is None:
                hint = f"the Helm repository of {self.namespace} is not public: set api_key (or NGC_API_KEY)"
            else:
                hint = f"check that the NGC API key may read the charts of {self.namespace}"
            return AuthError(f"{status} from {host} for {what}: {hint}{because}", status=status, url=plain)
        if status == 404:
            return NotFoundError(f"404 from {host}: {what} not found{because}", status=404, url=plain)
        return NgcError(status_message(status, host, what, attempts, reason), status=status, url=plain)

    # Index -----------------------------------------------------------------------------------

    def index(self) -> dict[str, Any]:
        """The repository's index.yaml, read once (at most MAX_INDEX_BYTES) and checked field by field."""
        if self._index is not None:
            return self._index
        what = f"the Helm repository index of {self.namespace}"
        url = f"{self.url}/index.yaml"
        try:
            response = self._get(url, what)
        except NotFoundError:
            raise NotFoundError(
                f"{self.host} has no Helm repository for {self.namespace} ({strip_query(url)} not found)",
                status=404,
                url=strip_query(url),
            ) from None
        with response:
            data = _read_bounded(response, MAX_INDEX_BYTES, f"{what} ({strip_query(url)})")
        index = load_yaml(data, f"{what} ({strip_query(url)})")
        problem = _schema_problem(index)
        if problem:
            raise NgcError(
                f"{what} ({strip_query(url)}) is not a Helm repository index: {problem}", url=strip_query(url)
            )
        self._index = index
        return index

    def versions(self, name: str) -> list[dict[str, Any]]:
        """The index entries of one chart (every version), as the index lists them; [] for a chart it does not have."""
        entries = self.index().get("entries") or {}
        return list(entries.get(name) or [])

    def entry(self, ref: ChartRef) -> dict[str, Any]:
        """The index entry of ``ref`` at its version; NotFoundError naming the chart (and the versions there are)."""
        versions = self.versions(ref.name)
        if not versions:
            raise NotFoundError(
                f"chart {ref.path} not found: the Helm repository {self.url} has no chart {ref.name!r}", status=404
            )
        if ref.version is None:
            raise AirgapError(f"chart {ref.path}: give a version")
        for entry in versions:
            if entry.get("version") == ref.version:
                return entry
        known = ", ".join(str(entry.get("version")) for entry in versions[:10])
        raise NotFoundError(
            f"chart {ref.path} has no version {ref.version!r} in {self.url} (it has {known})", status=404
        )

    def chart_url(self, entry: dict[str, Any]) -> str:
        """The absolute URL of an entry's archive (its first ``urls`` item, relative to the repository)."""
        return urljoin(f"{self.url}/", str(entry["urls"][0]))

    # Archives --------------------------------------------------------------------------------

    def fetch(self, entry: dict[str, Any], dest_dir: str) -> str:
        """The path of ``<dest_dir>/<name>-<version>.tgz``, streamed from the repository; the file appears only whole and
        with the index's sha256 (DigestMismatchError otherwise). At most MAX_CHART_BYTES are read."""
        name, version = str(entry.get("name")), str(entry.get("version"))
        filename = f"{name}-{version}.tgz"
        if path_component_problem(name) or version_problem(version) or "/" in filename:
            raise AirgapError(
                f"the Helm repository {self.url} lists a chart {name!r} version {version!r} that cannot be a file name"
            )
        url = self.chart_url(entry)
        what = f"chart {self.namespace}/{name} {version}"
        expected = sha256_of_index(entry.get("digest"))
        path = os.path.join(dest_dir, filename)
        response = self._get(url, what)
        source = host_of(response.url or url)  # where a redirect led
        temp = None
        try:
            hasher = hashlib.sha256()
            total = 0
            with response:
                fd, temp = tempfile.mkstemp(prefix=f".{filename}.partial-{os.getpid()}.", dir=dest_dir)
                with os.fdopen(fd, "wb") as handle:
                    for chunk in _chunks(response, what):
                        total += len(chunk)
                        if total > MAX_CHART_BYTES:
                            raise AirgapError(f"{what} from {source} has more than {MAX_CHART_BYTES} bytes: refused")
                        hasher.update(chunk)
                        handle.write(chunk)
                    handle.flush()
                    os.fsync(handle.fileno())
            actual = f"sha256:{hasher.hexdigest()}"
            if expected is not None and actual != expected:
                raise DigestMismatchError(f"{what} from {source} hashes to {actual}, not the {expected} of the index")
            os.chmod(temp, 0o644)
            os.replace(temp, path)
            temp = None
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                raise AirgapError(f"disk full: cannot write {what} to {dest_dir}") from None
            raise AirgapError(f"cannot write {what} to {dest_dir}: {exc.strerror or exc}") from None
        finally:
            if temp is not None:
                try:
                    os.unlink(temp)
                except OSError:
                    pass
        return path


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme.lower(), parts.netloc.rpartition("@")[2].lower()


def _chunks(response: Any, what: str) -> Any:
    """The body of a streamed answer, chunk by chunk; a connection that breaks is an NgcError naming ``what``."""
    try:
        yield from response.iter_content(CHUNK_SIZE)
    except TRANSIENT_EXCEPTIONS as exc:
        raise NgcError(
            f"the answer from {host_of(response.url)} for {what} broke off: {exception_reason(exc)}"
        ) from None


def _read_bounded(response: Any, limit: int, what: str) -> bytes:
    parts, total = [], 0
    for chunk in _chunks(response, what):
        total += len(chunk)
        if total > limit:
            raise AirgapError(f"{what} has more than {limit} bytes: refused")
        parts.append(chunk)
    return b"".join(parts)
