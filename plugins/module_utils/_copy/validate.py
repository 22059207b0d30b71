# Copyright (c) airgap.ngc contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private: every option of both modules checked at the door, before any request or write. Not a public API.

``validate_mirror(params)`` and ``validate_catalog(params)`` (both run ``validate_source`` for the
shared options) take the parameters as AnsibleModule converted them and raise ConfigError with one
line that names the option and the bad value, never a secret (``api_key``, ``registry.password``, the
user info of a URL). They look at the file system (does a path exist, what an existing progress file
holds) but write nothing and open no connection, so a module calls one right after AnsibleModule().
"""

from __future__ import annotations

import json
import math
import os
import re
from typing import Any
from urllib.parse import urlsplit

from ansible_collections.airgap.ngc.plugins.module_utils._clients.options import parse_upstream_registries
from ansible_collections.airgap.ngc.plugins.module_utils._copy.charts import chart_selections
from ansible_collections.airgap.ngc.plugins.module_utils._formats.bundle import find_volumes, parse_size
from ansible_collections.airgap.ngc.plugins.module_utils._transports.bundle import INVENTORY_KIND
from ansible_collections.airgap.ngc.plugins.module_utils._types.errors import ConfigError
from ansible_collections.airgap.ngc.plugins.module_utils._types.filters import ImageFilter
from ansible_collections.airgap.ngc.plugins.module_utils._formats.sif import ARCH_CODES
from ansible_collections.airgap.ngc.plugins.module_utils._types.squash_options import squash_options_problem
from ansible_collections.airgap.ngc.plugins.module_utils._state.facts import journal_path
from ansible_collections.airgap.ngc.plugins.module_utils._state.progress import STATES
from ansible_collections.airgap.ngc.plugins.module_utils._types.reference import (
    MAX_PORT,
    ImageReference,
    path_component_problem,
    redact_url,
    registry_host,
    valid_host,
    validate_digest,
    validate_namespace,
)

MAX_TIMEOUT = 86400.0
MAX_RETRIES = 100
MAX_RETRY_BUDGET = 86400
MAX_PARALLEL = 64
MAX_RELIST_AFTER = 366 * 86400  # a year: a listing older than that is not worth keeping
NAME_MAX_LENGTH = 255
# The registry API is always at /v2/ of a host: these paths of a registry URL say nothing more.
_REGISTRY_ROOT_PATHS = ("", "/", "/v2", "/v2/")
# What ProgressReporter writes (see _progress.py); an existing file without them is not a progress file.
_PROGRESS_KEYS = frozenset(("state", "images_done", "images_total", "bytes_done", "bytes_total"))
_PROGRESS_READ_LIMIT = 1024 * 1024
# An inventory names every blob the far side has: a few MiB for thousands of images.
_INVENTORY_READ_LIMIT = 256 * 1024 * 1024
_CA_READ_LIMIT = 16 * 1024 * 1024
_PEM_CERTIFICATE = b"-----BEGIN CERTIFICATE-----"
_PLATFORM_RE = re.compile(r"^[a-z0-9][a-z0-9._-]*(?:/[a-z0-9][a-z0-9._-]*){1,2}$")
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789._-/")
_SHOWN_MAX = 200


# -- messages ------------------------------------------------------------------------------------------------------
def _show(value: Any) -> str:
    """A value as a message shows it: repr (control characters escaped, so one line), shortened, null for None."""
    if value is None:
        return "null"
    text = repr(value)
    return text if len(text) <= _SHOWN_MAX else text[:_SHOWN_MAX] + "..."


def _bad(option: str, value: Any, why: str) -> ConfigError:
    """``invalid <option> <value>: <why>``, the shape of every message here."""
    return ConfigError(f"invalid {option} {_show(value)}: {why}")


def _kind(value: Any) -> str:
    """The type of a value as a message names it: null, list, dict, int..."""
    return "null" if value is None else type(value).__name__


def _has_control(text: str) -> bool:
    return any(not char.isprintable() for char in text)


def _has_space_or_control(text: str) -> bool:
    return any(char.isspace() or not char.isprintable() for char in text)


# -- scalars -------------------------------------------------------------------------------------------------------
def check_number(
    option: str, value: Any, low: float, high: float, what: str, low_inclusive: bool = True, integer: bool = False
) -> None:
    """value is a number in [low, high] (or (low, high] with low_inclusive=False), finite, and whole if integer."""
    bounds = f"{'from' if low_inclusive else 'more than'} {low:g} {'to' if low_inclusive else 'and at most'} {high:g}"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _bad(option, value, f"expected {what}, {bounds}")
    if not math.isfinite(value) or (integer and value != int(value)):
        raise _bad(option, value, f"expected {what}, {bounds}")
    if value < low or (value == low and not low_inclusive) or value > high:
        raise _bad(option, value, f"expected {what}, {bounds}")


def check_secret(option: str, value: Any) -> None:
    """A key or password, which is never shown: only control characters (a line break from a file) are refused."""
    if value is None:
        return
    if not isinstance(value, str):
        raise ConfigError(f"invalid {option}: expected a string (the value is not shown)")
    if _has_control(value):
        raise ConfigError(
            f"invalid {option}: it holds a control character, such as the line break a file or lookup "
            "leaves at the end; give the secret alone (the value is not shown)"
        )


def check_username(option: str, value: Any) -> None:
    """A user name for HTTP Basic authentication: not empty, no ':' (Basic cannot carry it), no control character."""
    if not isinstance(value, str) or not value.strip():
        raise _bad(option, value, "give the user name, or leave the option out")
    if _has_space_or_control(value) or ":" in value:
        raise _bad(option, value, "a user name holds no white space, control character or ':'")


def check_platform(option: str, value: Any) -> None:
    """``os/architecture[/variant]`` as image indexes spell them: linux/amd64, linux/arm64/v8."""
    if not isinstance(value, str) or not _PLATFORM_RE.match(value):
        raise _bad(
            option, value, "expected os/architecture[/variant] in lower case, such as linux/amd64 or linux/arm64/v8"
        )


# -- URLs ----------------------------------------------------------------------------------------------------------
def check_url(
    option: str, value: Any, *, example: str, bare_host: bool = False, path: bool = False, credentials: str = ""
) -> None:
    """Raise ConfigError unless value is an http(s) URL ``scheme://host[:port][/path]``.

    ``bare_host`` accepts a host without a scheme (https is assumed); ``path`` accepts a path (the
    registry API has none of its own: /, /v2 and /v2/ are always accepted). User info is refused
    and never shown; ``credentials`` says where user name and password go instead.
    """
    if not isinstance(value, str) or not value.strip():
        raise _bad(option, value, f"give a URL such as {example}")
    shown = redact_url(value)
    if _has_space_or_control(value):
        raise _bad(option, shown, "it contains white space or a control character")
    text = value
    if "://" not in text:
        if not bare_host:
            raise _bad(option, value, f"the scheme is missing: give a URL such as {example}")
        text = "https://" + text
    if "@" in text:
        where = f": {credentials}" if credentials else ""
        raise _bad(option, shown, f"a user name or password in the URL would be shown in logs and is not used{where}")
    try:
        parts = urlsplit(text)
    except ValueError as exc:
        raise _bad(option, value, f"it is not a URL ({exc})") from None
    if parts.scheme.lower() not in ("http", "https"):
        raise _bad(option, value, f"the scheme must be http or https, not {parts.scheme!r}")
    if not parts.netloc:
        raise _bad(option, value, f"there is no host: give a URL such as {example}")
    if not valid_host(parts.netloc):
        port = parts.netloc.rpartition(":")[2] if ":" in parts.netloc.rpartition("]")[2] else ""
        if port and port.isdigit():
            raise _bad(option, value, f"the port {port} is out of range: give a number from 1 to {MAX_PORT}")
        if port or parts.netloc.endswith(":"):
            raise _bad(option, value, f"the port {port!r} must be a number from 1 to {MAX_PORT}")
        raise _bad(option, value, f"{parts.netloc!r} is not a host name or address")
    if parts.query or parts.fragment or "?" in text or "#" in text:
        raise _bad(option, value, "a query or fragment ('?', '#') is not allowed")
    if not path and parts.path not in _REGISTRY_ROOT_PATHS:
        raise _bad(
            option,
            value,
            "a path is not supported, the registry API is always at /v2/ of the host: give scheme://host[:port] only",
        )


def check_docker_host(option: str, value: Any) -> None:
    """The Docker engine address: unix:///path, tcp://host:port, ssh://user@host, http(s)://, npipe://, or a socket path."""
    if value is None or value == "":
        return  # DOCKER_HOST, else the local socket
    expected = "expected unix:///path/to/docker.sock, tcp://host:port or ssh://user@host"
    if not isinstance(value, str) or not value.strip():
        raise _bad(option, value, expected)
    shown = redact_url(value)
    if _has_space_or_control(value):
        raise _bad(option, shown, "it contains white space or a control character")
    if value.startswith("/"):
        return
    # Imported here: the docker SDK that _engine loads is only needed by ngc_image_mirror's docker destination.
    # pylint: disable-next=import-outside-toplevel
    from ansible_collections.airgap.ngc.plugins.module_utils._clients.docker_engine import HOST_SCHEMES

    scheme, sep, rest = value.partition("://")
    if not sep or f"{scheme}://" not in HOST_SCHEMES:
        raise _bad(option, shown, expected)
    if scheme in ("unix", "npipe"):
        if not rest or (scheme == "unix" and not rest.startswith("/")):
            raise _bad(option, value, "give the socket's absolute path, as in unix:///var/run/docker.sock")
        return
    netloc = rest.split("/", 1)[0]
    user, at, host = netloc.rpartition("@")
    if at and (scheme != "ssh" or ":" in user or not user):
        raise _bad(
            option,
            shown,
            "a password in the address would be shown in logs and is not used: for ssh:// give "
            "user@host and use an SSH key; tcp:// takes no user",
        )
    if not valid_host(host):
        raise _bad(option, shown, f"{host!r} is not a host[:port] (the port from 1 to {MAX_PORT})")
    if rest[len(netloc) :] not in ("", "/"):
        raise _bad(option, shown, "a path is not supported: give scheme://host[:port]")


# -- paths ---------------------------------------------------------------------------------------------------------
def check_path(option: str, value: Any, kind: str, required: bool = True) -> str | None:
    """value is an absolute path for a file or directory (``kind`` "file" or "dir"); returns it normalised (None if unset)."""
    if value is None and not required:
        return None
    noun = "directory" if kind == "dir" else "file"
    if not isinstance(value, str) or not value.strip():
        raise _bad(option, value, f"an empty path: give the absolute path of a {noun}")
    if _has_control(value):
        raise _bad(option, value, "the path holds a control character")
    if not os.path.isabs(value):
        raise _bad(
            option,
            value,
            f"a relative path depends on the directory the module runs in: give the absolute path of a {noun}",
        )
    normal = os.path.normpath(value)
    if kind == "dir":
        if normal == "/":
            raise _bad(
                option, value, "that is the filesystem root: give a directory of its own, such as /srv/ngc-archives"
            )
        if os.path.exists(value) and not os.path.isdir(value):
            raise _bad(option, value, "it exists and is not a directory")
    else:
        if value.endswith("/") or normal == "/":
            raise _bad(option, value, "it ends in '/': give a file name")
        if os.path.isdir(value):
            raise _bad(option, value, "it is a directory: give the path of a file")
    return normal


def check_ca_path(option: str, value: Any) -> None:
    """An existing, readable PEM file of certificate authorities."""
    path = check_path(option, value, "file", required=False)
    if path is None:
        return
    if not os.path.exists(path):
        raise _bad(option, value, "no such file: give the PEM file of the certificate authorities to trust")
    if not os.path.isfile(path):
        raise _bad(option, value, "it is not a regular file: give a PEM file")
    try:
        with open(path, "rb") as handle:
            data = handle.read(_CA_READ_LIMIT)
    except OSError as exc:
        raise _bad(option, value, f"it cannot be read ({exc.strerror or exc})") from None
    if _PEM_CERTIFICATE not in data:
        raise _bad(option, value, "it holds no PEM certificate (a '-----BEGIN CERTIFICATE-----' block)")


def _same_path(left: str | None, right: str | None) -> bool:
    if not left or not right:
        return False
    return os.path.realpath(left) == os.path.realpath(right)


def check_progress_file(option: str, value: Any, facts_file: str | None) -> None:
    """Not the facts file (or its lock), in an existing directory, and if it exists an earlier progress file (or empty)."""
    path = check_path(option, value, "file", required=False)
    if path is None:
        return
    if facts_file and any(_same_path(path, f) for f in (facts_file, facts_file + ".lock", journal_path(facts_file))):
        raise _bad(
            option,
            value,
            "it is the facts_file (or its lock or journal): the progress would overwrite the records; "
            "give a file of its own",
        )
    directory = os.path.dirname(path)
    if not os.path.isdir(directory):
        raise _bad(option, value, f"the directory {directory} does not exist: create it first")
    if not os.path.lexists(path):
        return
    if not os.path.isfile(path):
        raise _bad(option, value, "it exists and is not a regular file: give a file of its own")
    try:
        with open(path, "rb") as handle:
            data = handle.read(_PROGRESS_READ_LIMIT + 1)
    except OSError as exc:
        raise _bad(option, value, f"it cannot be read ({exc.strerror or exc})") from None
    if not data.strip():
        return
    try:
        document = json.loads(data.decode("utf-8")) if len(data) <= _PROGRESS_READ_LIMIT else None
    except ValueError:
        document = None
    if not isinstance(document, dict) or not _PROGRESS_KEYS <= set(document) or document.get("state") not in STATES:
        raise _bad(
            option,
            value,
            "it exists and is not a progress file of ngc_image_mirror, so it would be overwritten: "
            "give another path, or remove the file",
        )


def inventory_problem(path: str) -> str | None:
    """Why the file at ``path`` is not a far-side inventory this collection wrote (which it may add to), or None:
    there is no file yet, it is empty, or it is one."""
    if not os.path.lexists(path):
        return None
    if not os.path.isfile(path) or os.path.islink(path):
        return "it exists and is not a regular file"
    try:
        with open(path, "rb") as handle:
            data = handle.read(_INVENTORY_READ_LIMIT + 1)
    except OSError as exc:
        return f"it cannot be read ({exc.strerror or exc})"
    if not data.strip():
        return None
    try:
        document = json.loads(data.decode("utf-8")) if len(data) <= _INVENTORY_READ_LIMIT else None
    except ValueError:
        document = None
    if not isinstance(document, dict) or document.get("kind") != INVENTORY_KIND:
        return "it exists and is not an inventory of ngc_image_mirror, so it would be overwritten"
    return None


def _check_inventory_file(params: dict[str, Any]) -> None:
    """``inventory_file``: none of the run's own files, and if it exists an earlier inventory (or empty)."""
    value = params["inventory_file"]
    facts_file = params.get("facts_file")
    if facts_file and any(_same_path(value, f) for f in (facts_file, facts_file + ".lock", journal_path(facts_file))):
        raise _bad(
            "inventory_file",
            value,
            "it is the facts_file (or its lock or journal): the inventory would overwrite "
            "the records; give a file of its own",
        )
    if _same_path(value, params.get("progress_file")):
        raise _bad(
            "inventory_file", value, "it is the progress_file: each would overwrite the other; give a file of its own"
        )
    problem = inventory_problem(value)
    if problem:
        raise _bad("inventory_file", value, f"{problem}: give another path, or remove the file")


# -- the shared source options -------------------------------------------------------------------------------------
def validate_source(params: dict[str, Any]) -> None:
    """The ``airgap.ngc.source`` options: api_key, username, registry_url, ca_path, timeout, retries, retry_budget."""
    check_secret("api_key", params.get("api_key"))
    check_username("username", params.get("username"))
    check_url(
        "registry_url",
        params.get("registry_url"),
        example="https://nvcr.io",
        bare_host=True,
        credentials="give them in username and api_key",
    )
    check_ca_path("ca_path", params.get("ca_path"))
    check_number("timeout", params.get("timeout"), 0, MAX_TIMEOUT, "the seconds to wait", low_inclusive=False)
    if params.get("retries") is not None:
        check_number("retries", params.get("retries"), 0, MAX_RETRIES, "how many times to try again", integer=True)
    if params.get("retry_budget") is not None:
        check_number(
            "retry_budget",
            params.get("retry_budget"),
            0,
            MAX_RETRY_BUDGET,
            "the seconds a failing request may wait between attempts",
        )


def _check_parallel(params: dict[str, Any]) -> None:
    check_number(
        "parallel", params.get("parallel"), 1, MAX_PARALLEL, "how many requests or transfers run at once", integer=True
    )


# -- ngc_image_mirror ----------------------------------------------------------------------------------------------
def _image_text(item: Any, option: str) -> str:
    """The reference an images item names: a string, or a dict as ngc_catalog_info returns it."""
    if isinstance(item, str):
        return item
    if not isinstance(item, dict):
        raise ConfigError(
            f"{option} is a {_kind(item)} ({_show(item)}): give a reference such as nvidia/pytorch:24.01-py3 "
            "or a dict with name and tag"
        )
    if item.get("reference") not in (None, ""):
        if not isinstance(item["reference"], str):
            raise _bad(f"{option} reference", item["reference"], f"expected a string, not a {_kind(item['reference'])}")
        return item["reference"]
    name = item.get("name")
    if name is not None and not isinstance(name, str):
        raise _bad(
            f"{option} name", name, f"expected a string (a repository such as nvidia/pytorch), not a {_kind(name)}"
        )
    if not isinstance(name, str) or not name.strip():
        raise _bad(option, item, "a dict needs a name (or a reference), as ngc_catalog_info returns them")
    tag, digest = item.get("tag"), item.get("digest")
    if tag not in (None, "") and (isinstance(tag, bool) or not isinstance(tag, (str, int))):
        raise _bad(f"{option} tag", tag, f"expected a string, not a {_kind(tag)}")
    if digest not in (None, ""):
        validate_digest(digest, option=option)
    if tag not in (None, ""):
        return f"{name}:{tag}"
    return f"{name}@{digest}" if digest not in (None, "") else name


def check_mirror_images(value: Any, default_registry: str) -> list[ImageReference]:
    """The ``images`` option: a non-empty list of references or dicts; returns each one's parsed reference.

    None (the option left out, where the argument spec allows it) is no image.
    """
    if value is None:
        return []
    if not isinstance(value, list) or not value:
        raise _bad("images", value, "give at least one image, such as nvidia/pytorch:24.01-py3")
    refs = []
    for position, item in enumerate(value, start=1):
        option = f"images item {position}"
        description = item.get("description") if isinstance(item, dict) else None
        if description is not None and not isinstance(description, str):
            raise _bad(f"{option} description", description, "expected a string (the image's README)")
        refs.append(ImageReference.parse(_image_text(item, option), default_registry, option=option))
    return refs


def _check_registry(spec: dict[str, Any], params: dict[str, Any], images: list[ImageReference]) -> None:
    check_url(
        "registry.url",
        spec.get("url"),
        example="https://registry.example.com, or http://host:5000 for a plain-HTTP registry",
        credentials="give them in registry.username and registry.password",
    )
    username, password = spec.get("username"), spec.get("password")
    check_secret("registry.password", password)
    if username is not None:
        check_username("registry.username", username)
        if not password:
            raise _bad("registry.username", username, "it is given without registry.password: give both, or neither")
    elif password:
        raise ConfigError(
            "invalid registry.password: it is given without registry.username; give both, or neither "
            "(the value is not shown)"
        )
    check_ca_path("registry.ca_path", spec.get("ca_path"))
    prefix = spec.get("prefix")
    namespace = ""
    if prefix is not None and prefix != "":
        namespace = validate_namespace(prefix, option="registry.prefix")
        for position, ref in enumerate(images, start=1):
            if len(f"{namespace}/{ref.repository}") > NAME_MAX_LENGTH:
                raise _bad(
                    "registry.prefix",
                    prefix,
                    f"with it the name of images item {position} ({ref.repository}) "
                    f"is longer than {NAME_MAX_LENGTH} characters",
                )
    source, destination = registry_host(params["registry_url"]), registry_host(spec["url"])
    if source == destination and not namespace:
        raise _bad(
            "registry.url",
            spec["url"],
            "it is the source registry (registry_url) and registry.prefix is not "
            "set: the images would be written over themselves",
        )


def _check_archive(spec: dict[str, Any]) -> None:
    check_path("archive.dir", spec.get("dir"), "dir")
    if spec.get("platform") is not None:
        check_platform("archive.platform", spec["platform"])


def _check_tag_as(value: Any, images: list[ImageReference]) -> None:
    """The forms of docker.tag_as, as tag_targets reads them: a registry host, a prefix ending in '/', a repository[:tag]."""
    for position, item in enumerate(value or [], start=1):
        option = f"docker.tag_as item {position}"
        if not isinstance(item, str) or not item.strip():
            raise _bad(option, item, "give a registry host (nvcr.io), a prefix ending in / or a repository")
        text = item.strip()
        prefix = text.endswith("/")
        stem = text[:-1] if prefix else text
        tag = None
        if "/" not in stem and ("." in stem or ":" in stem or stem == "localhost" or (prefix and stem.lower() != stem)):
            if not valid_host(stem):
                raise _bad(option, item, f"{stem!r} is not a registry host[:port] (the port from 1 to {MAX_PORT})")
        elif prefix and "/" not in stem:
            validate_namespace(stem, option=option)
        else:
            target = ImageReference.parse(stem, option=option)
            if target.digest:
                raise _bad(option, item, "give a registry host, a prefix ending in / or a repository, not a digest")
            if prefix and target.tag:
                raise _bad(option, item, "a prefix ending in / takes no tag")
            tag = target.tag
        if tag is None:
            for number, ref in enumerate(images, start=1):
                if not ref.tag and ref.digest:
                    raise _bad(
                        option,
                        item,
                        f"images item {number} ({ref}) has no tag to keep: give a repository with "
                        "a tag (registry.example.com/name:TAG), or name the image by tag",
                    )


def _check_docker(spec: dict[str, Any], images: list[ImageReference]) -> None:
    check_docker_host("docker.host", spec.get("host"))
    _check_tag_as(spec.get("tag_as"), images)


def _check_since(since: Any, directory: str) -> None:
    """bundle.since: empty (a full bundle), ``last``, or a list of earlier bundle directories / contents.json files."""
    if since in (None, "", []) or since == "last":
        return
    if not isinstance(since, list):
        raise _bad("bundle.since", since, "give last, or a list of earlier bundles' directories or contents.json files")
    for position, path in enumerate(since, start=1):
        option = f"bundle.since item {position}"
        normal = (
            check_path(option, path, "file")
            if isinstance(path, str) and not os.path.isdir(path)
            else check_path(option, path, "dir")
        )
        if normal and not os.path.exists(normal):
            raise _bad(option, path, "there is no such bundle directory or contents.json")
        if normal and _same_path(normal, directory):
            raise _bad(option, path, "it is bundle.dir itself: give the earlier bundles")


def _check_source(params: dict[str, Any], source: str) -> None:
    """``source`` and ``source_dir``: carried media need their directory; a registry source needs images."""
    if source == "registry":
        if params.get("source_dir") is not None:
            raise _bad("source_dir", params["source_dir"], "it is read only with source=bundle or source=archive")
        if not params.get("images") and not params.get("offline") and not params.get("charts"):
            raise ConfigError(
                "invalid images: it is required with source=registry (unless charts names charts); name the images to copy, "
                "such as nvidia/pytorch:24.01-py3"
            )
        return
    if params.get("offline"):
        raise _bad(
            "source",
            source,
            "offline reads the archives of archive.dir itself: leave source out, or use "
            "source=archive with source_dir and no offline",
        )
    check_carried_dir(params, source)


def check_carried_dir(params: dict[str, Any], source: str) -> None:
    """``source_dir`` of carried media: an existing directory, and for a bundle one that holds index.json."""
    directory = check_path("source_dir", params.get("source_dir"), "dir")
    if directory and not os.path.isdir(directory):
        raise _bad("source_dir", params["source_dir"], f"there is no such directory: give the {source} carried across")
    if (
        source == "bundle"
        and directory
        and not os.path.isfile(os.path.join(directory, "index.json"))
        and not find_volumes(directory, None)
    ):
        raise _bad(
            "source_dir",
            params["source_dir"],
            "it holds no index.json nor bundle volumes, so it is not a bundle (an OCI image layout)",
        )


def _check_signatures(params: dict[str, Any]) -> None:
    """``signatures``: true or false (the role and other callers may hand over what Ansible did not convert)."""
    value = params.get("signatures", True)
    if not isinstance(value, bool):
        raise _bad("signatures", value, "give true (copy each image's signatures and attestations with it) or false")
    if params.get("signatures_relist_after") is not None:
        check_number(
            "signatures_relist_after",
            params["signatures_relist_after"],
            0,
            MAX_RELIST_AFTER,
            "the seconds an earlier run's listing of an unchanged image's signatures is trusted (0: list every run)",
            integer=True,
        )


def _check_charts(params: dict[str, Any]) -> None:
    """``charts``, ``helm_url``, ``upstream_registries``, ``values_dir`` and ``chart_repo``."""
    selections = chart_selections(params)
    source = params.get("source") or "registry"
    if selections and (source == "archive" or params.get("offline")):
        raise _bad(
            "charts",
            params.get("charts"),
            "charts are read from NGC's Helm repository or a bundle, not from per-tag archives",
        )
    if params.get("helm_url") is not None:
        check_url("helm_url", params["helm_url"], example="https://helm.ngc.nvidia.com", path=True)
    parse_upstream_registries(params.get("upstream_registries"))
    if params.get("values_dir") is not None:
        check_path("values_dir", params["values_dir"], "dir")
        if params.get("registry") is None:
            raise _bad(
                "values_dir",
                params["values_dir"],
                "its values files point the charts' images at the registry destination: set registry",
            )
    if params.get("chart_repo") is not None:
        directory = check_path("chart_repo.dir", params["chart_repo"].get("dir"), "dir")
        for option, other in (
            ("source_dir", params.get("source_dir")),
            ("bundle.dir", (params.get("bundle") or {}).get("dir")),
            ("archive.dir", (params.get("archive") or {}).get("dir")),
        ):
            if other and _same_path(other, directory):
                raise _bad(
                    "chart_repo.dir",
                    directory,
                    f"it is also {option}: give the chart repository a directory of its own",
                )


def validate_mirror(params: dict[str, Any]) -> None:
    """Every option of ``ngc_image_mirror``; raises ConfigError naming the first bad one."""
    validate_source(params)
    _check_charts(params)
    images = check_mirror_images(params.get("images"), params["registry_url"])
    registry, archive, docker = params.get("registry"), params.get("archive"), params.get("docker")
    if registry is not None:
        _check_registry(registry, params, images)
    if archive is not None:
        _check_archive(archive)
    if docker is not None:
        _check_docker(docker, images)
    if params.get("offline"):
        if registry is not None:
            raise ConfigError(
                "invalid offline true: it contacts no registry, so there can be no registry destination; "
                "remove registry or set offline=false"
            )
        if archive is None or docker is None or docker.get("source") != "archive":
            raise ConfigError(
                "invalid offline true: it loads archives written earlier into the engine; set archive "
                "(where they are) and docker with docker.source=archive"
            )
    source = params.get("source") or "registry"
    _check_source(params, source)
    if params.get("inventory_file") is not None:
        check_path("inventory_file", params["inventory_file"], "file")
        if source != "bundle":
            raise _bad(
                "inventory_file",
                params["inventory_file"],
                "it records what an import from a bundle brought: use it with source=bundle",
            )
        _check_inventory_file(params)
    if params.get("bundle") is not None:
        check_path("bundle.dir", params["bundle"].get("dir"), "dir")
        _check_since(params["bundle"].get("since"), params["bundle"]["dir"])
        if params["bundle"].get("volume_size") not in (None, ""):
            size = parse_size(params["bundle"]["volume_size"])
            if size < 1024 * 1024:
                raise _bad("bundle.volume_size", params["bundle"]["volume_size"], "a volume needs at least 1MiB")
        for option in ("archive.dir", "source_dir"):
            other = (archive or {}).get("dir") if option == "archive.dir" else params.get("source_dir")
            if other and _same_path(other, params["bundle"]["dir"]):
                raise _bad(
                    "bundle.dir",
                    params["bundle"]["dir"],
                    f"it is also {option}: give the bundle a directory of its own",
                )
    for kind in ("enroot", "apptainer"):
        spec = params.get(kind)
        if spec is None:
            continue
        check_path(f"{kind}.dir", spec.get("dir"), "dir")
        if spec.get("platform") is not None:
            check_platform(f"{kind}.platform", spec["platform"])
        if kind == "apptainer" and spec.get("platform") and spec["platform"].split("/")[1] not in ARCH_CODES:
            raise _bad(
                "apptainer.platform", spec["platform"], f"SIF knows the architectures {', '.join(sorted(ARCH_CODES))}"
            )
        problem = squash_options_problem(spec.get("squash_options") or "")
        if problem:
            raise _bad(f"{kind}.squash_options", spec.get("squash_options"), problem)
        for option in ("archive.dir", "source_dir", "bundle.dir", "enroot.dir"):
            other = {
                "archive.dir": (archive or {}).get("dir"),
                "source_dir": params.get("source_dir"),
                "bundle.dir": (params.get("bundle") or {}).get("dir"),
                "enroot.dir": (params.get("enroot") or {}).get("dir"),
            }[option]
            if option != f"{kind}.dir" and other and _same_path(other, spec["dir"]):
                raise _bad(f"{kind}.dir", spec["dir"], f"it is also {option}: give it a directory of its own")
    if docker is not None and docker.get("source") == "archive" and archive is None and source != "archive":
        raise ConfigError("invalid docker.source 'archive': it loads the archives of archive.dir; set archive")
    if (
        docker is not None
        and (docker.get("source") or "registry") == "registry"
        and registry is None
        and source != "registry"
    ):
        raise ConfigError(
            f"docker.source=registry pulls from a registry, but the source is the {source} "
            f"{os.path.abspath(params['source_dir'])}: set registry (the engine then pulls from it), "
            "or archive with docker.source=archive"
        )
    for position, platform in enumerate(params.get("platforms") or [], start=1):
        check_platform(f"platforms item {position}", platform)
    if params.get("platforms") and registry is None and params.get("bundle") is None:
        raise _bad(
            "platforms",
            params["platforms"],
            "it chooses what is copied to registry and bundle; registry is not set, "
            "nor bundle (for archives use archive.platform)",
        )
    if params.get("save_readme") and archive is None:
        raise ConfigError("invalid save_readme true: it writes README.md next to the archives; set archive")
    facts_file = check_path("facts_file", params.get("facts_file"), "file")
    check_progress_file("progress_file", params.get("progress_file"), facts_file)
    if archive is not None and _same_path(facts_file, archive.get("dir")):
        raise _bad("facts_file", params.get("facts_file"), "it is archive.dir: give a file outside the archives")
    _check_parallel(params)
    if params.get("parallel_images") is not None:  # the argument spec's default (8) where a caller leaves it out
        check_number(
            "parallel_images",
            params["parallel_images"],
            1,
            MAX_PARALLEL,
            "how many images are planned at once",
            integer=True,
        )
    _check_signatures(params)
    if params.get("keep") is not None and (
        isinstance(params["keep"], bool) or not isinstance(params["keep"], int) or params["keep"] < 1
    ):
        raise _bad(
            "keep", params["keep"], "keep the newest N tags of each repository: give a whole number of at least 1"
        )
    _check_writes_outside_carried(params, "archive" if params.get("offline") else source)


def _check_writes_outside_carried(params: dict[str, Any], source: str) -> None:
    """A destination directory inside the carried bundle or archives being imported (``source_dir``) would write into
    the medium itself: refused, naming both."""
    carried = params.get("source_dir") if source in ("bundle", "archive") else None
    if not carried:
        return
    medium = os.path.realpath(carried)
    for kind in (("archive",) if source == "bundle" else ()) + ("bundle", "enroot", "apptainer"):
        directory = (params.get(kind) or {}).get("dir")
        if directory and os.path.commonpath([medium, os.path.realpath(directory)]) == medium:
            raise ConfigError(
                f"{kind}.dir {os.path.abspath(directory)} is inside source_dir {carried}: it would write into the "
                f"carried {source}; give {kind}.dir a directory outside it"
            )


# -- ngc_catalog_info ----------------------------------------------------------------------------------------------
def _check_catalog_name(option: str, value: Any) -> None:
    """A name substring: part of a repository path, in lower case."""
    if not isinstance(value, str) or not value.strip():
        raise _bad(option, value, "an empty name would select every image: leave images out for that")
    if ":" in value or "@" in value:
        raise _bad(
            option,
            value,
            "images selects by repository name, not by tag or digest: use tag_regex, min_version or latest for tags",
        )
    if set(value) - _NAME_CHARS:
        if set(value.lower()) - _NAME_CHARS:
            bad = sorted(set(value.lower()) - _NAME_CHARS)[0]
            raise _bad(
                option, value, f"it holds {bad!r}: image names are lower-case letters, digits, '.', '_', '-' and '/'"
            )
        raise _bad(option, value, "image names are lower case")


def _check_verify(params: dict[str, Any]) -> None:
    """``verify``, ``verify_mode`` and ``fail_on_problems``: a bundle's check, so only with source=bundle and verify."""
    verify, mode, fail = params.get("verify"), params.get("verify_mode"), params.get("fail_on_problems")
    if verify and params.get("source") != "bundle":
        raise _bad(
            "verify",
            verify,
            f"it checks a bundle against its contents record, so it needs source=bundle "
            f"(source is {params.get('source') or 'ngc'})",
        )
    if mode not in (None, "full", "sizes"):
        raise _bad("verify_mode", mode, "expected full or sizes")
    if mode == "sizes" and not verify:
        raise _bad("verify_mode", mode, "it says how verify checks the bundle: set verify=true with it")
    if fail and not verify:
        raise _bad(
            "fail_on_problems", fail, "it fails on what verify finds: set verify=true (and source=bundle) with it"
        )


def validate_catalog(params: dict[str, Any]) -> None:
    """Every option of ``ngc_catalog_info``; raises ConfigError naming the first bad one."""
    validate_source(params)
    if params.get("source") == "bundle":
        check_carried_dir(params, "bundle")
    elif params.get("source_dir") is not None:
        raise _bad("source_dir", params["source_dir"], "it is read only with source=bundle")
    _check_verify(params)
    check_url(
        "api_url",
        params.get("api_url"),
        example="https://api.ngc.nvidia.com",
        path=True,
        credentials="give the key in api_key",
    )
    org = params.get("org")
    if not isinstance(org, str) or not org or "/" in org:
        raise _bad("org", org, "give one NGC organisation, such as nvidia")
    problem = path_component_problem(org)
    if problem:
        raise _bad("org", org, problem)
    for position, team in enumerate(params.get("teams") or [], start=1):
        if team == "":
            continue  # the organisation's own images
        if not isinstance(team, str) or "/" in team:
            raise _bad(
                f"teams item {position}",
                team,
                "give a team name such as clara, or '' for the organisation's own images",
            )
        problem = path_component_problem(team)
        if problem:
            raise _bad(f"teams item {position}", team, problem)
    for position, name in enumerate(params.get("images") or [], start=1):
        _check_catalog_name(f"images item {position}", name)
    ImageFilter.create(
        images=params.get("images"),
        strict_name_match=params.get("strict_name_match", False),
        image_regex=params.get("image_regex"),
        min_version=params.get("min_version"),
        py_version=params.get("py_version"),
        tag_regex=params.get("tag_regex"),
        tag_exclude_regex=params.get("tag_exclude_regex"),
        latest=params.get("latest"),
    )
    _check_parallel(params)
    _check_fail_on_unresolved(params)


def _check_fail_on_unresolved(params: dict[str, Any]) -> None:
    """``fail_on_unresolved``: a boolean, and only with the registry lookups (include_digests) that resolve tags."""
    fail = params.get("fail_on_unresolved")
    if fail is None:
        return
    if not isinstance(fail, bool):
        raise _bad("fail_on_unresolved", fail, "expected true or false")
    if fail and params.get("include_digests") is False:
        raise _bad(
            "fail_on_unresolved",
            fail,
            "it fails on tags the registry lookups could not resolve, and "
            "include_digests=false makes none: set include_digests=true with it",
        )
