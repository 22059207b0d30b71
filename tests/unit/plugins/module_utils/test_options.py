# Copyright (c) airgap.ngc contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Every option checked at the door: validate_source, validate_mirror and validate_catalog, and the reference messages."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from ansible_collections.airgap.ngc.plugins.module_utils._types.errors import ConfigError
from ansible_collections.airgap.ngc.plugins.module_utils._state.progress import ProgressReporter
from ansible_collections.airgap.ngc.plugins.module_utils._types.reference import (
    ImageReference,
    registry_host,
    validate_namespace,
)
from ansible_collections.airgap.ngc.plugins.module_utils._copy.validate import (
    validate_catalog,
    validate_mirror,
    validate_source,
)

DIGEST = "sha256:" + "0123456789abcdef" * 4
PEM = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
SECRETS = ("key-SECRET-1", "pw-SECRET-2", "hunter2")
DROP = object()

SOURCE = {
    "api_key": SECRETS[0],
    "username": "$oauthtoken",
    "registry_url": "https://nvcr.io",
    "validate_certs": True,
    "ca_path": None,
    "timeout": 60.0,
    "retries": 5,
}
REGISTRY = {
    "url": "https://registry.example.com",
    "username": None,
    "password": None,
    "validate_certs": True,
    "ca_path": None,
    "prefix": None,
}
ARCHIVE = {"dir": "{tmp}/archives", "format": "docker", "platform": "linux/amd64"}
DOCKER = {"host": None, "source": "registry", "tag_as": None}
MIRROR = dict(
    SOURCE,
    images=["nvidia/pytorch:24.01-py3"],
    registry=None,
    archive=None,
    docker=None,
    offline=False,
    platforms=None,
    save_readme=False,
    facts_file="{tmp}/facts/ngc_mirror.fact",
    progress_file=None,
    parallel=4,
    force=False,
    fail_on_error=True,
)
CATALOG = dict(
    SOURCE,
    source="ngc",
    org="nvidia",
    teams=None,
    api_url="https://api.ngc.nvidia.com",
    images=None,
    strict_name_match=False,
    image_regex=None,
    min_version=None,
    py_version=None,
    tag_regex=None,
    tag_exclude_regex=None,
    latest=None,
    include_digests=True,
    include_descriptions=False,
    parallel=4,
)
DEFAULTS = {"registry": REGISTRY, "archive": ARCHIVE, "docker": DOCKER}


@pytest.fixture
def files(tmp_path: Path) -> Path:
    """A CA file, a file that is not one, a progress file of an earlier run, an empty file, a facts file."""
    (tmp_path / "ca.pem").write_text(PEM)
    (tmp_path / "not-a-ca.pem").write_text("hello\n")
    (tmp_path / "other.txt").write_text("precious notes\n")
    (tmp_path / "empty").write_text("")
    reporter = ProgressReporter(str(tmp_path / "progress.json"))
    reporter.start(10, 1)
    reporter.finish("done")
    (tmp_path / "facts").mkdir()
    (tmp_path / "facts" / "ngc_mirror.fact").write_text(json.dumps({"schema": 1, "updated": None, "images": {}}))
    (tmp_path / "a-file").write_text("x")
    return tmp_path


def _fill(value: Any, tmp: Path) -> Any:
    if isinstance(value, str):
        return value.replace("{tmp}", str(tmp))
    if isinstance(value, list):
        return [_fill(item, tmp) for item in value]
    if isinstance(value, dict):
        return {key: _fill(item, tmp) for key, item in value.items()}
    return value


def params_for(base: dict[str, Any], overrides: dict[str, Any], tmp: Path) -> dict[str, Any]:
    """base with overrides; a dict option given as a dict is filled up with its suboptions' defaults, DROP removes a key."""
    params = copy.deepcopy(base)
    for key, value in overrides.items():
        if value is DROP:
            params.pop(key, None)
        elif isinstance(value, dict) and key in DEFAULTS:
            params[key] = dict(DEFAULTS[key], **value)
        else:
            params[key] = value
    return _fill(params, tmp)


# (id, overrides, fragments of the message)
MIRROR_BAD = [
    ("images empty", {"images": []}, ["invalid images []", "at least one"]),
    ("images item int", {"images": [7]}, ["images item 1 is a int (7)"]),
    ("images item null", {"images": ["nvidia/x:1", None]}, ["images item 2 is a null"]),
    ("images item list", {"images": [["nvidia/x:1"]]}, ["images item 1 is a list"]),
    ("images dict without name", {"images": [{"tag": "1"}]}, ["images item 1", "a dict needs a name"]),
    (
        "images dict bad digest",
        {"images": [{"name": "nvidia/x", "digest": "sha256:abc"}]},
        ["invalid digest 'sha256:abc' in images item 1"],
    ),
    ("images dict bad tag", {"images": [{"name": "nvidia/x", "tag": "-1"}]}, ["in images item 1", "tag '-1'"]),
    (
        "images white space",
        {"images": ["nvidia/py torch:1"]},
        ["invalid image reference 'nvidia/py torch:1' in images item 1", "white space"],
    ),
    ("images two tags", {"images": ["nvidia/pytorch:24.01:py3"]}, ["more than one ':'", "'pytorch:24.01:py3'"]),
    ("images upper case", {"images": ["nvidia/PyTorch:1"]}, ["path component 'PyTorch' must be lower case"]),
    ("images empty tag", {"images": ["nvidia/pytorch:"]}, ["tag '' is empty"]),
    ("images empty digest", {"images": ["nvidia/pytorch@"]}, ["nothing follows the '@'"]),
    (
        "registry url path",
        {"registry": {"url": "https://registry.example.com/ngc"}},
        ["invalid registry.url", "a path is not supported"],
    ),
    (
        "registry url ftp",
        {"registry": {"url": "ftp://registry.example.com"}},
        ["invalid registry.url", "http or https, not 'ftp'"],
    ),
    (
        "registry url port",
        {"registry": {"url": "https://registry.example.com:70000"}},
        ["registry.url", "port 70000 is out of range"],
    ),
    ("registry url port zero", {"registry": {"url": "http://127.0.0.1:0"}}, ["registry.url", "port 0 is out of range"]),
    ("registry url port text", {"registry": {"url": "http://127.0.0.1:five"}}, ["registry.url", "port 'five'"]),
    (
        "registry url userinfo",
        {"registry": {"url": "https://mirror:hunter2@registry.example.com"}},
        ["invalid registry.url 'https://***@registry.example.com'", "registry.username and registry.password"],
    ),
    ("registry url empty", {"registry": {"url": ""}}, ["invalid registry.url ''"]),
    ("registry url space", {"registry": {"url": "https://registry.example.com "}}, ["registry.url", "white space"]),
    ("registry url query", {"registry": {"url": "https://registry.example.com/?x=1"}}, ["registry.url", "query"]),
    ("registry url bad host", {"registry": {"url": "https://bad_host"}}, ["registry.url", "'bad_host' is not a host"]),
    (
        "registry is the source",
        {"registry": {"url": "https://nvcr.io"}},
        ["invalid registry.url 'https://nvcr.io'", "source registry"],
    ),
    (
        "registry url without its scheme",
        {"registry": {"url": "registry.site:5000"}},
        [
            "invalid registry.url 'registry.site:5000'",
            "the scheme is missing",
            "http://host:5000 for a plain-HTTP registry",
        ],
    ),
    (
        "registry password without user",
        {"registry": {"password": SECRETS[1]}},
        ["registry.password", "without registry.username"],
    ),
    (
        "registry user without password",
        {"registry": {"username": "mirror"}},
        ["invalid registry.username 'mirror'", "without registry.password"],
    ),
    (
        "registry user colon",
        {"registry": {"username": "a:b", "password": SECRETS[1]}},
        ["invalid registry.username 'a:b'"],
    ),
    (
        "registry password newline",
        {"registry": {"username": "mirror", "password": SECRETS[1] + "\n"}},
        ["registry.password", "control character"],
    ),
    ("registry ca missing", {"registry": {"ca_path": "{tmp}/nope.pem"}}, ["invalid registry.ca_path", "no such file"]),
    (
        "registry ca not pem",
        {"registry": {"ca_path": "{tmp}/not-a-ca.pem"}},
        ["registry.ca_path", "no PEM certificate"],
    ),
    ("registry ca relative", {"registry": {"ca_path": "ca.pem"}}, ["invalid registry.ca_path 'ca.pem'", "relative"]),
    ("registry ca directory", {"registry": {"ca_path": "{tmp}"}}, ["registry.ca_path", "directory"]),
    (
        "prefix upper case",
        {"registry": {"prefix": "Mirror"}},
        ["invalid namespace 'Mirror' in registry.prefix", "lower case"],
    ),
    ("prefix empty component", {"registry": {"prefix": "site//ngc"}}, ["registry.prefix", "empty path component"]),
    ("prefix blank", {"registry": {"prefix": "   "}}, ["registry.prefix", "white space"]),
    ("prefix too long", {"registry": {"prefix": "a" * 250}}, ["registry.prefix", "longer than 255"]),
    ("archive dir empty", {"archive": {"dir": ""}}, ["invalid archive.dir ''", "empty path"]),
    ("archive dir null", {"archive": {"dir": None}}, ["invalid archive.dir null"]),
    ("archive dir relative", {"archive": {"dir": "archives"}}, ["invalid archive.dir 'archives'", "relative"]),
    ("archive dir root", {"archive": {"dir": "/"}}, ["invalid archive.dir '/'", "filesystem root"]),
    ("archive dir is a file", {"archive": {"dir": "{tmp}/a-file"}}, ["archive.dir", "not a directory"]),
    ("archive dir newline", {"archive": {"dir": "{tmp}/arch\nives"}}, ["archive.dir", "control character"]),
    ("archive platform", {"archive": {"platform": "amd64"}}, ["invalid archive.platform 'amd64'", "os/architecture"]),
    ("archive platform case", {"archive": {"platform": "Linux/AMD64"}}, ["invalid archive.platform 'Linux/AMD64'"]),
    ("platforms item", {"registry": {}, "platforms": ["linux/amd64", "arm64"]}, ["invalid platforms item 2 'arm64'"]),
    ("platforms too deep", {"registry": {}, "platforms": ["linux/arm/v7/x"]}, ["invalid platforms item 1"]),
    (
        "platforms without registry",
        {"archive": {}, "platforms": ["linux/amd64"]},
        ["invalid platforms", "registry is not set"],
    ),
    ("docker host scheme", {"docker": {"host": "docker.example.com:2375"}}, ["invalid docker.host", "tcp://host:port"]),
    ("docker host port", {"docker": {"host": "tcp://127.0.0.1:99999"}}, ["docker.host", "65535"]),
    (
        "docker host ssh password",
        {"docker": {"host": "ssh://root:hunter2@node1"}},
        ["docker.host 'ssh://***@node1'", "SSH key"],
    ),
    ("docker host relative socket", {"docker": {"host": "unix://docker.sock"}}, ["docker.host", "absolute path"]),
    (
        "tag_as bad tag",
        {"docker": {"tag_as": ["registry.site.example/pytorch:24.01:py3"]}},
        ["in docker.tag_as item 1", "more than one ':'"],
    ),
    (
        "tag_as digest",
        {"docker": {"tag_as": [f"registry.site.example/pytorch@{DIGEST}"]}},
        ["docker.tag_as item 1", "not a digest"],
    ),
    (
        "tag_as upper case",
        {"docker": {"tag_as": ["registry.site.example/PyTorch"]}},
        ["docker.tag_as item 1", "'PyTorch' must be lower case"],
    ),
    ("tag_as bad host", {"docker": {"tag_as": ["nvcr.io:99999"]}}, ["invalid docker.tag_as item 1 'nvcr.io:99999'"]),
    ("tag_as empty", {"docker": {"tag_as": [""]}}, ["invalid docker.tag_as item 1 ''"]),
    (
        "tag_as prefix with tag",
        {"docker": {"tag_as": ["registry.site.example/ngc:1/"]}},
        ["docker.tag_as item 1", "takes no tag"],
    ),
    (
        "tag_as digest-only image",
        {"images": [f"nvidia/pytorch@{DIGEST}"], "docker": {"tag_as": ["nvcr.io"]}},
        ["docker.tag_as item 1", "no tag to keep"],
    ),
    ("docker source archive without archive", {"docker": {"source": "archive"}}, ["docker.source", "set archive"]),
    (
        "offline with registry",
        {"offline": True, "registry": {}, "archive": {}, "docker": {"source": "archive"}},
        ["offline", "remove registry"],
    ),
    ("offline without docker", {"offline": True, "archive": {}}, ["offline", "docker.source=archive"]),
    ("save_readme without archive", {"save_readme": True, "registry": {}}, ["save_readme", "set archive"]),
    ("facts_file empty", {"registry": {}, "facts_file": ""}, ["invalid facts_file ''"]),
    ("facts_file relative", {"registry": {}, "facts_file": "ngc.fact"}, ["invalid facts_file 'ngc.fact'", "relative"]),
    ("facts_file a directory", {"registry": {}, "facts_file": "{tmp}/facts"}, ["facts_file", "is a directory"]),
    ("facts_file trailing slash", {"registry": {}, "facts_file": "{tmp}/new/"}, ["facts_file", "ends in '/'"]),
    (
        "facts_file is archive.dir",
        {"archive": {"dir": "{tmp}/x"}, "facts_file": "{tmp}/x"},
        ["facts_file", "archive.dir"],
    ),
    (
        "progress is the facts file",
        {"registry": {}, "progress_file": "{tmp}/facts/ngc_mirror.fact"},
        ["invalid progress_file", "facts_file"],
    ),
    (
        "progress is the facts lock",
        {"registry": {}, "progress_file": "{tmp}/facts/ngc_mirror.fact.lock"},
        ["progress_file", "facts_file"],
    ),
    (
        "progress another file",
        {"registry": {}, "progress_file": "{tmp}/other.txt"},
        ["progress_file", "not a progress file"],
    ),
    (
        "progress the ca file",
        {"registry": {}, "progress_file": "{tmp}/ca.pem"},
        ["progress_file", "not a progress file"],
    ),
    (
        "progress device",
        {"registry": {}, "progress_file": "/dev/null"},
        ["progress_file '/dev/null'", "not a regular file"],
    ),
    (
        "progress no directory",
        {"registry": {}, "progress_file": "{tmp}/nope/p.json"},
        ["progress_file", "does not exist"],
    ),
    ("progress relative", {"registry": {}, "progress_file": "p.json"}, ["invalid progress_file 'p.json'", "relative"]),
    ("parallel zero", {"registry": {}, "parallel": 0}, ["invalid parallel 0", "from 1 to 64"]),
    ("parallel huge", {"registry": {}, "parallel": 100000}, ["invalid parallel 100000"]),
    ("source timeout zero", {"registry": {}, "timeout": 0.0}, ["invalid timeout 0.0", "more than 0"]),
    ("source timeout negative", {"registry": {}, "timeout": -1.0}, ["invalid timeout -1.0"]),
    ("source timeout nan", {"registry": {}, "timeout": float("nan")}, ["invalid timeout nan"]),
    ("source retries negative", {"registry": {}, "retries": -1}, ["invalid retries -1", "from 0 to 100"]),
    (
        "source registry_url path",
        {"registry": {}, "registry_url": "https://nvcr.io/nvidia"},
        ["invalid registry_url", "path"],
    ),
    (
        "source registry_url bare path",
        {"registry": {}, "registry_url": "nvcr.io/nvidia"},
        ["invalid registry_url 'nvcr.io/nvidia'", "path"],
    ),
    (
        "source registry_url userinfo",
        {"registry": {}, "registry_url": "https://u:hunter2@nvcr.io"},
        ["registry_url 'https://***@nvcr.io'"],
    ),
    ("source registry_url ftp", {"registry": {}, "registry_url": "ftp://nvcr.io"}, ["registry_url", "not 'ftp'"]),
    ("source username empty", {"registry": {}, "username": ""}, ["invalid username ''"]),
    (
        "source api_key newline",
        {"registry": {}, "api_key": SECRETS[0] + "\n"},
        ["invalid api_key", "control character"],
    ),
    ("source ca_path missing", {"registry": {}, "ca_path": "{tmp}/nope.pem"}, ["invalid ca_path", "no such file"]),
    ("source ca_path empty", {"registry": {}, "ca_path": ""}, ["invalid ca_path ''"]),
]


@pytest.mark.parametrize("overrides, fragments", [pytest.param(o, f, id=i) for i, o, f in MIRROR_BAD])
def test_mirror_refuses(files: Path, overrides: dict[str, Any], fragments: list[str]) -> None:
    if not any(key in overrides for key in ("registry", "archive", "docker")):
        overrides = dict(overrides, registry={})
    params = params_for(MIRROR, overrides, files)
    with pytest.raises(ConfigError) as excinfo:
        validate_mirror(params)
    message = str(excinfo.value)
    for fragment in fragments:
        assert _fill(fragment, files) in message
    assert "\n" not in message
    assert not any(secret in message for secret in SECRETS)


CATALOG_BAD = [
    (
        "api_url without scheme",
        {"api_url": "api.ngc.nvidia.com"},
        ["invalid api_url 'api.ngc.nvidia.com'", "scheme is missing"],
    ),
    ("api_url ftp", {"api_url": "ftp://api.ngc.nvidia.com"}, ["invalid api_url", "not 'ftp'"]),
    ("api_url port", {"api_url": "https://api.ngc.nvidia.com:65536"}, ["api_url", "out of range"]),
    (
        "api_url userinfo",
        {"api_url": "https://k:hunter2@api.ngc.nvidia.com"},
        ["api_url 'https://***@api.ngc.nvidia.com'", "api_key"],
    ),
    ("api_url fragment", {"api_url": "https://api.ngc.nvidia.com/#x"}, ["api_url", "fragment"]),
    ("api_url null", {"api_url": None}, ["invalid api_url null"]),
    ("org upper case", {"org": "NVIDIA"}, ["invalid org 'NVIDIA'", "lower case"]),
    ("org with team", {"org": "nvidia/clara"}, ["invalid org 'nvidia/clara'"]),
    ("org empty", {"org": ""}, ["invalid org ''"]),
    ("teams item", {"teams": ["clara", "Bad Team"]}, ["invalid teams item 2 'Bad Team'"]),
    ("images item empty", {"images": ["pytorch", " "]}, ["invalid images item 2 ' '", "every image"]),
    ("images item with tag", {"images": ["nvidia/pytorch:24.01"]}, ["images item 1", "not by tag"]),
    ("images item upper case", {"images": ["PyTorch"]}, ["invalid images item 1 'PyTorch'", "lower case"]),
    ("images item odd character", {"images": ["py*"]}, ["images item 1", "'*'"]),
    ("latest zero", {"latest": 0}, ["invalid latest 0"]),
    ("latest negative", {"latest": -3}, ["invalid latest -3"]),
    ("tag_regex", {"tag_regex": "py3("}, ["invalid tag_regex 'py3('"]),
    ("image_regex", {"image_regex": "[a-"}, ["invalid image_regex '[a-'"]),
    ("min_version", {"min_version": "newest"}, ["invalid min_version 'newest'"]),
    ("py_version", {"py_version": "python3"}, ["invalid py_version 'python3'"]),
    ("parallel", {"parallel": 0}, ["invalid parallel 0"]),
    (
        "ca_path missing",
        {"source": "registry", "ca_path": "/nonexistent/ca.pem"},
        ["invalid ca_path '/nonexistent/ca.pem'", "no such file"],
    ),
    ("timeout", {"timeout": 0.0}, ["invalid timeout 0.0"]),
    ("retries", {"retries": 1000}, ["invalid retries 1000"]),
    ("registry_url port", {"registry_url": "https://nvcr.io:123456"}, ["invalid registry_url", "out of range"]),
]


@pytest.mark.parametrize("overrides, fragments", [pytest.param(o, f, id=i) for i, o, f in CATALOG_BAD])
def test_catalog_refuses(files: Path, overrides: dict[str, Any], fragments: list[str]) -> None:
    with pytest.raises(ConfigError) as excinfo:
        validate_catalog(params_for(CATALOG, overrides, files))
    message = str(excinfo.value)
    for fragment in fragments:
        assert fragment in message
    assert "\n" not in message
    assert not any(secret in message for secret in SECRETS)


MIRROR_GOOD = [
    ("registry", {"registry": {}}),
    ("registry v2 path", {"registry": {"url": "https://registry.example.com:5000/v2/"}}),
    (
        "registry ipv6 with auth and prefix",
        {"registry": {"url": "http://[::1]:5000", "username": "m", "password": SECRETS[1], "prefix": "/site/ngc/"}},
    ),
    ("registry is the source under a prefix", {"registry": {"url": "https://nvcr.io", "prefix": "mirror"}}),
    ("registry ca file", {"registry": {"ca_path": "{tmp}/ca.pem"}, "ca_path": "{tmp}/ca.pem"}),
    ("archive", {"archive": {"platform": "linux/arm64/v8"}}),
    ("archive, oci, no platform", {"archive": {"format": "oci", "platform": None}}),
    (
        "catalog dicts",
        {
            "archive": {},
            "save_readme": True,
            "images": [
                {"name": "nvidia/pytorch", "tag": "24.01-py3", "digest": DIGEST, "description": "# PyTorch"},
                {"reference": "nvcr.io/nvidia/cuda:12.2.0-base-ubuntu22.04"},
                {"name": "nvidia/x", "tag": 2401},
            ],
        },
    ),
    (
        "digest only",
        {"registry": {}, "images": [f"nvidia/pytorch@{DIGEST}"], "platforms": ["linux/amd64", "linux/arm64/v8"]},
    ),
    (
        "docker tag_as forms",
        {
            "docker": {
                "host": "tcp://127.0.0.1:2375",
                "tag_as": [
                    "nvcr.io",
                    "localhost",
                    "registry.site.example/ngc/",
                    "mirror/",
                    "pytorch",
                    "registry.site.example/pytorch:custom",
                ],
            }
        },
    ),
    (
        "docker tag_as with a tag for a digest-only image",
        {
            "images": [f"nvidia/pytorch@{DIGEST}"],
            "docker": {"host": "ssh://deploy@node1:22", "tag_as": ["site/pytorch:pinned"]},
        },
    ),
    ("docker socket path", {"docker": {"host": "/run/docker.sock"}}),
    ("docker host empty", {"docker": {"host": ""}}),
    (
        "offline",
        {"offline": True, "archive": {}, "docker": {"source": "archive", "host": "unix:///var/run/docker.sock"}},
    ),
    ("progress file of an earlier run", {"registry": {}, "progress_file": "{tmp}/progress.json"}),
    ("empty progress file", {"registry": {}, "progress_file": "{tmp}/empty"}),
    ("new progress file", {"registry": {}, "progress_file": "{tmp}/new-progress.json"}),
    ("no api key", {"registry": {}, "api_key": None}),
    ("limits", {"registry": {}, "timeout": 86400.0, "retries": 0, "parallel": 64}),
]


@pytest.mark.parametrize("overrides", [pytest.param(o, id=i) for i, o in MIRROR_GOOD])
def test_mirror_accepts(files: Path, overrides: dict[str, Any]) -> None:
    validate_mirror(params_for(MIRROR, overrides, files))


@pytest.mark.parametrize(
    "overrides",
    [
        pytest.param({}, id="defaults"),
        pytest.param(
            {"source": "registry", "registry_url": "http://127.0.0.1:5000", "ca_path": "{tmp}/ca.pem"},
            id="registry source",
        ),
        pytest.param(
            {
                "api_url": "http://127.0.0.1:8080/ngc-api/",
                "teams": ["", "clara"],
                "images": ["nvidia/", "pytorch"],
                "latest": 1,
                "tag_regex": "py3$",
                "min_version": "23.10",
                "py_version": "3",
                "parallel": 1,
            },
            id="every filter",
        ),
        pytest.param({"images": []}, id="no names"),
    ],
)
def test_catalog_accepts(files: Path, overrides: dict[str, Any]) -> None:
    validate_catalog(params_for(CATALOG, overrides, files))


def test_source_alone_names_no_module_option() -> None:
    validate_source(dict(SOURCE))
    with pytest.raises(ConfigError, match=r"^invalid timeout 0\.0"):
        validate_source(dict(SOURCE, timeout=0.0))


def test_a_progress_file_of_an_earlier_run_is_recognised_after_a_failed_run(tmp_path: Path) -> None:
    path = tmp_path / "progress.json"
    reporter = ProgressReporter(str(path))
    reporter.start(0, 3)
    reporter.image("nvcr.io/nvidia/pytorch:1")
    reporter.finish("failed")
    validate_mirror(params_for(MIRROR, {"registry": {}, "progress_file": str(path)}, tmp_path))
    path.write_text(
        json.dumps({"state": "paused", "bytes_done": 0, "bytes_total": 0, "images_done": 0, "images_total": 0})
    )
    with pytest.raises(ConfigError, match="not a progress file"):
        validate_mirror(params_for(MIRROR, {"registry": {}, "progress_file": str(path)}, tmp_path))


def test_a_symlink_to_the_facts_file_is_the_facts_file(tmp_path: Path) -> None:
    (tmp_path / "facts").mkdir()
    (tmp_path / "facts" / "f.fact").write_text("{}")
    (tmp_path / "link.json").symlink_to(tmp_path / "facts" / "f.fact")
    with pytest.raises(ConfigError, match="it is the facts_file"):
        validate_mirror(
            params_for(
                MIRROR,
                {"registry": {}, "facts_file": "{tmp}/facts/f.fact", "progress_file": "{tmp}/link.json"},
                tmp_path,
            )
        )


def _carried_bundle(tmp_path: Path) -> Path:
    carried = tmp_path / "usb" / "bundle"
    carried.mkdir(parents=True)
    (carried / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": []}))
    return carried


@pytest.mark.parametrize("kind", ["archive", "bundle", "enroot", "apptainer"])
def test_a_destination_inside_the_carried_bundle_is_refused_at_the_door(tmp_path: Path, kind: str) -> None:
    carried = _carried_bundle(tmp_path)
    inside, beside = carried / "sub" / kind, tmp_path / "out" / kind
    base = {"source": "bundle", "source_dir": str(carried), "images": None, "registry": {}}
    validate_mirror(params_for(MIRROR, dict(base, **{kind: {"dir": str(beside)}}), tmp_path))
    with pytest.raises(ConfigError) as excinfo:
        validate_mirror(params_for(MIRROR, dict(base, **{kind: {"dir": str(inside)}}), tmp_path))
    assert str(excinfo.value) == (
        f"{kind}.dir {inside} is inside source_dir {carried}: it would write into the carried bundle; "
        f"give {kind}.dir a directory outside it"
    )


def test_an_engine_that_pulls_needs_a_registry_when_the_source_is_carried(tmp_path: Path) -> None:
    carried = _carried_bundle(tmp_path)
    base = {"source": "bundle", "source_dir": str(carried), "images": None}
    validate_mirror(params_for(MIRROR, dict(base, registry={}, docker={"source": "registry"}), tmp_path))
    with pytest.raises(ConfigError) as excinfo:
        validate_mirror(params_for(MIRROR, dict(base, docker={"source": "registry"}), tmp_path))
    assert str(excinfo.value) == (
        f"docker.source=registry pulls from a registry, but the source is the bundle {carried}: set "
        "registry (the engine then pulls from it), or archive with docker.source=archive"
    )


# -- the reference messages ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "text, option, expected",
    [
        (
            "nvidia/pytorch:24.01:py3",
            "docker.tag_as",
            "invalid image reference 'nvidia/pytorch:24.01:py3' in docker.tag_as: more than one ':'",
        ),
        ("nvidia/pytorch:/x", None, "path component 'pytorch:' holds a ':'"),
        ("nvidia/pytorch:1.0+cu12", "images item 3", "in images item 3: tag '1.0+cu12' holds '+'"),
        ("nvidia/pytorch:.x", None, "tag '.x' must not start with '.' or '-'"),
        ("nvcr.io:99999/nvidia/x", None, "'nvcr.io:99999' is not a valid registry host[:port]"),
        ("nvidia/py\ttorch", None, "white space or a control character"),
    ],
)
def test_reference_messages_name_the_option_and_the_wrong_part(text: str, option: str | None, expected: str) -> None:
    with pytest.raises(ConfigError) as excinfo:
        ImageReference.parse(text, option=option)
    assert expected in str(excinfo.value)


def test_registry_messages_never_show_user_info() -> None:
    for value in ("ftp://user:hunter2@nvcr.io", "https://user:hunter2/x@bad host", "user:hunter2@bad_host"):
        with pytest.raises(ConfigError) as excinfo:
            registry_host(value, option="registry.url")
        assert "hunter2" not in str(excinfo.value) and "in registry.url" in str(excinfo.value)
    with pytest.raises(ConfigError, match="port of 'nvcr.io:70000'"):
        registry_host("https://nvcr.io:70000")


def test_namespace() -> None:
    assert validate_namespace("/site/ngc/") == "site/ngc"
    with pytest.raises(ConfigError, match=r"invalid namespace '' in registry.prefix: it is empty"):
        validate_namespace("", option="registry.prefix")
