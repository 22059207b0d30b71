# Copyright (c) airgap.ngc contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Bad input to either module fails at the door: a one-line message naming the option and the value, no secret,
no request sent, and nothing an earlier run mirrored changed.

One good run first mirrors two images into a registry, an archive directory and a facts file. Then each row of
CASES runs the module with one thing wrong. The next bad input someone finds is one line added to CASES.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any, NamedTuple

import pytest

IMAGES = ["nvidia/pytorch:24.01-py3", "nvidia/cuda:12.2.0-base-ubuntu22.04"]
DIGEST = "sha256:" + "0123456789abcdef" * 4
PASSWORD = "pw-SECRET-0451"  # given where a password goes; it must never be shown
URL_PASSWORD = "hunter2-SECRET-0452"  # given where no password belongs (in a URL); it must never be shown either
DROP = object()  # as an override value: leave the option out


class Case(NamedTuple):
    """One bad input: the module, the options that differ from a good call, what the message must hold.

    ``check`` runs it in check mode: for inputs that would do harm outside the test bed if they were ever accepted.
    ``api_key`` is what NGC_API_KEY holds (the key reaches the module through the environment, never through -a).
    Strings may hold {proxy} (the source registry, through the request-counting proxy), {open} (the destination
    registry), {ns} (the good run's namespace there), {archive}, {facts}, {progress} (the good run's files), {tmp}.
    """

    id: str
    module: str
    args: dict[str, Any]
    expect: list[str]
    check: bool = False
    api_key: str = "{key}"


M, C = "ngc_image_mirror", "ngc_catalog_info"
CASES = [
    # ngc_image_mirror: images
    Case("images empty", M, {"images": []}, ["invalid images []"]),
    Case("images item not a string", M, {"images": [IMAGES[0], 7]}, ["images item 2 is a int (7)"]),
    Case("images item dict without name", M, {"images": [{"tag": "24.01-py3"}]}, ["images item 1", "a dict needs a name"]),
    Case("images item dict bad digest", M, {"images": [{"name": "nvidia/pytorch", "digest": "sha256:abc"}]},
         ["invalid digest 'sha256:abc' in images item 1"]),
    Case("images white space", M, {"images": ["nvidia/py torch:1"]}, ["invalid image reference 'nvidia/py torch:1' in images item 1"]),
    Case("images two tags", M, {"images": ["nvidia/pytorch:24.01:py3"]}, ["images item 1", "more than one ':'"]),
    Case("images upper case", M, {"images": ["nvidia/PyTorch:24.01-py3"]}, ["images item 1", "'PyTorch' must be lower case"]),
    # registry
    Case("registry.url path", M, {"registry": {"url": "{open}/ngc"}}, ["invalid registry.url '{open}/ngc'", "a path is not supported"]),
    Case("registry.url ftp", M, {"registry": {"url": "ftp://127.0.0.1:5000"}}, ["invalid registry.url", "not 'ftp'"]),
    Case("registry.url port too big", M, {"registry": {"url": "http://127.0.0.1:70000"}}, ["registry.url", "port 70000 is out of range"]),
    Case("registry.url userinfo", M, {"registry": {"url": f"http://mirror:{URL_PASSWORD}@127.0.0.1:5000"}},
         ["invalid registry.url 'http://***@127.0.0.1:5000'", "registry.username and registry.password"]),
    Case("registry.url trailing newline", M, {"registry": {"url": "{open}\n"}}, ["registry.url", "white space or a control character"]),
    Case("registry.url is the source", M, {"registry": {"url": "{proxy}", "prefix": DROP}}, ["registry.url", "source registry"]),
    Case("registry.password without username", M, {"registry": {"password": PASSWORD}}, ["registry.password", "without registry.username"]),
    Case("registry.username without password", M, {"registry": {"username": "mirror"}}, ["invalid registry.username 'mirror'"]),
    Case("registry.password trailing newline", M, {"registry": {"username": "mirror", "password": PASSWORD + "\n"}},
         ["registry.password", "control character"]),
    Case("registry.ca_path missing", M, {"registry": {"ca_path": "{tmp}/missing-ca.pem"}}, ["invalid registry.ca_path", "no such file"]),
    Case("registry.ca_path not PEM", M, {"registry": {"ca_path": "{tmp}/notes.txt"}}, ["registry.ca_path", "no PEM certificate"]),
    Case("registry.prefix upper case", M, {"registry": {"prefix": "Mirror"}}, ["registry.prefix", "'Mirror' must be lower case"]),
    # archive
    Case("archive.dir empty", M, {"archive": {"dir": ""}}, ["invalid archive.dir ''"], check=True),
    Case("archive.dir filesystem root", M, {"archive": {"dir": "/"}}, ["invalid archive.dir '/'", "filesystem root"], check=True),
    Case("archive.dir relative", M, {"archive": {"dir": "archives"}}, ["invalid archive.dir 'archives'", "relative"], check=True),
    Case("archive.dir is a file", M, {"archive": {"dir": "{facts}"}}, ["archive.dir", "not a directory"]),
    Case("archive.platform", M, {"archive": {"platform": "amd64"}}, ["invalid archive.platform 'amd64'", "os/architecture"]),
    # platforms, docker, combinations
    Case("platforms item", M, {"platforms": ["linux/amd64", "arm64"]}, ["invalid platforms item 2 'arm64'"]),
    Case("platforms without registry", M, {"registry": DROP, "platforms": ["linux/amd64"]}, ["platforms", "registry is not set"]),
    Case("docker.host without scheme", M, {"docker": {"host": "127.0.0.1:2375"}}, ["invalid docker.host '127.0.0.1:2375'"]),
    Case("docker.host password", M, {"docker": {"host": f"ssh://root:{URL_PASSWORD}@node1"}}, ["docker.host 'ssh://***@node1'"]),
    Case("docker.tag_as two tags", M, {"docker": {"tag_as": ["registry.site.example/pytorch:24.01:py3"]}},
         ["in docker.tag_as item 1", "more than one ':'"]),
    Case("docker.tag_as digest", M, {"docker": {"tag_as": [f"registry.site.example/pytorch@{DIGEST}"]}}, ["docker.tag_as item 1", "not a digest"]),
    Case("docker.tag_as for a digest-only image", M, {"images": [f"nvidia/pytorch@{DIGEST}"], "docker": {"tag_as": ["nvcr.io"]}},
         ["docker.tag_as item 1", "no tag to keep"]),
    Case("docker.source archive without archive", M, {"archive": DROP, "docker": {"source": "archive"}}, ["docker.source", "set archive"]),
    Case("offline with registry", M, {"offline": True, "docker": {"source": "archive"}}, ["offline", "remove registry"]),
    Case("offline without docker", M, {"offline": True, "registry": DROP}, ["offline", "docker.source=archive"]),
    Case("save_readme without archive", M, {"save_readme": True, "archive": DROP}, ["save_readme", "set archive"]),
    Case("no destination", M, {"registry": DROP, "archive": DROP}, ["one of the following is required: registry, archive, docker"]),
    # files
    Case("facts_file relative", M, {"facts_file": "ngc_mirror.fact"}, ["invalid facts_file 'ngc_mirror.fact'", "relative"], check=True),
    Case("facts_file a directory", M, {"facts_file": "{archive}"}, ["facts_file", "is a directory"]),
    Case("progress_file is the facts file", M, {"progress_file": "{facts}"}, ["invalid progress_file '{facts}'", "facts_file"]),
    Case("progress_file is an archive", M, {"progress_file": "{archive}/nvidia/pytorch/24.01-py3.tar"},
         ["progress_file", "not a progress file"]),
    Case("progress_file is a device", M, {"progress_file": "/dev/null"}, ["progress_file '/dev/null'", "not a regular file"], check=True),
    Case("progress_file directory missing", M, {"progress_file": "{tmp}/missing/progress.json"}, ["progress_file", "does not exist"]),
    # numbers
    Case("parallel zero", M, {"parallel": 0}, ["invalid parallel 0", "from 1 to 64"]),
    Case("timeout zero", M, {"timeout": 0}, ["invalid timeout 0.0", "more than 0"]),
    Case("retries negative", M, {"retries": -1}, ["invalid retries -1", "from 0 to 100"]),
    # the source options
    Case("registry_url without scheme, with a path", M, {"registry_url": "127.0.0.1:5000/nvidia"}, ["invalid registry_url", "path"]),
    Case("registry_url ftp", M, {"registry_url": "ftp://127.0.0.1:5000"}, ["invalid registry_url", "not 'ftp'"]),
    Case("registry_url port", M, {"registry_url": "https://nvcr.io:65536"}, ["registry_url", "out of range"]),
    Case("registry_url userinfo", M, {"registry_url": f"https://k:{URL_PASSWORD}@nvcr.io"}, ["registry_url 'https://***@nvcr.io'"]),
    Case("username empty", M, {"username": ""}, ["invalid username ''"]),
    Case("ca_path missing", M, {"ca_path": "{tmp}/missing-ca.pem"}, ["invalid ca_path", "no such file"]),
    # ngc_catalog_info
    Case("catalog api_url without scheme", C, {"api_url": "api.ngc.nvidia.com"}, ["invalid api_url 'api.ngc.nvidia.com'", "scheme is missing"]),
    Case("catalog api_url ftp", C, {"api_url": "ftp://api.ngc.nvidia.com"}, ["invalid api_url", "not 'ftp'"]),
    Case("catalog api_url userinfo", C, {"api_url": f"https://key:{URL_PASSWORD}@api.ngc.nvidia.com"}, ["api_url 'https://***@api.ngc.nvidia.com'"]),
    Case("catalog org upper case", C, {"org": "NVIDIA"}, ["invalid org 'NVIDIA'", "lower case"]),
    Case("catalog org with a team", C, {"org": "nvidia/clara"}, ["invalid org 'nvidia/clara'"]),
    Case("catalog teams item", C, {"teams": ["clara", "Bad Team"]}, ["invalid teams item 2 'Bad Team'"]),
    Case("catalog images item empty", C, {"images": [""]}, ["invalid images item 1 ''", "every image"]),
    Case("catalog images item with a tag", C, {"images": ["nvidia/pytorch:24.01-py3"]}, ["images item 1", "not by tag"]),
    Case("catalog images item upper case", C, {"images": ["PyTorch"]}, ["invalid images item 1 'PyTorch'"]),
    Case("catalog latest zero", C, {"latest": 0}, ["invalid latest 0"]),
    Case("catalog tag_regex", C, {"tag_regex": "py3("}, ["invalid tag_regex 'py3('"]),
    Case("catalog min_version", C, {"min_version": "newest"}, ["invalid min_version 'newest'"]),
    Case("catalog parallel zero", C, {"parallel": 0}, ["invalid parallel 0"]),
    Case("catalog timeout zero", C, {"timeout": 0}, ["invalid timeout 0.0"]),
    Case("catalog retries negative", C, {"retries": -3}, ["invalid retries -3"]),
    Case("catalog registry source, ca_path missing", C, {"source": "registry", "ca_path": "/nonexistent/ca.pem"},
         ["invalid ca_path '/nonexistent/ca.pem'", "no such file"]),
    Case("catalog registry_url path", C, {"source": "registry", "registry_url": "{open}/v3"}, ["invalid registry_url", "path"]),
    Case("catalog api_key trailing newline", C, {}, ["invalid api_key", "control character"], api_key="{key}\n"),
]


def skopeo_digest(host: str, reference: str) -> str:
    raw = subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{host}/{reference}"],
                         capture_output=True, check=True).stdout
    return "sha256:" + hashlib.sha256(raw).hexdigest()


class Mirrored(NamedTuple):
    """What the good run wrote, and the placeholders of CASES."""

    base: dict[str, dict[str, Any]]  # module -> a good call
    places: dict[str, str]
    archive: Path
    facts: Path
    progress: Path


@pytest.fixture(scope="module")
def mirrored(ansible: Any, testbed: Any, tmp_path_factory: pytest.TempPathFactory) -> Mirrored:
    """One good run into the open registry (under a namespace of its own), an archive directory and a facts file."""
    root = tmp_path_factory.mktemp("bad-inputs")
    archive, facts, progress = root / "archives", root / "facts" / "ngc_mirror.fact", root / "progress.json"
    (root / "notes.txt").write_text("notes that are not a certificate, nor a progress file\n")
    ns = f"bad-inputs-{os.getpid()}-{int(time.time() * 1000) % 100000}"
    good = {"registry_url": testbed.source_registry_url, "images": IMAGES, "registry": {"url": testbed.open_registry_url, "prefix": ns},
            "archive": {"dir": str(archive)}, "facts_file": str(facts), "progress_file": str(progress)}
    run = ansible.module(M, good, api_key=testbed.api_key)
    assert run.rc == 0, run.stdout + run.stderr
    assert [image["status"] for image in run.result["images"]] == ["copied"] * len(IMAGES)
    places = {"proxy": testbed.source_proxy_url, "open": testbed.open_registry_url, "ns": ns, "archive": str(archive),
              "facts": str(facts), "progress": str(progress), "tmp": str(root), "key": testbed.api_key}
    base = {M: dict(good, registry_url=testbed.source_proxy_url),
            C: {"api_url": testbed.ngc_api_url, "registry_url": testbed.source_proxy_url}}
    return Mirrored(base, places, archive, facts, progress)


def snapshot(testbed: Any, mirrored: Mirrored) -> dict[str, Any]:
    """The facts and progress files' bytes, every name under the archive directory with its size and mtime, and the
    registry's digest of each mirrored image (read by skopeo)."""
    listing = sorted((str(path.relative_to(mirrored.archive)), path.stat().st_size if path.is_file() else None, path.stat().st_mtime_ns)
                     for path in mirrored.archive.rglob("*"))
    ns = mirrored.places["ns"]
    return {
        "facts": mirrored.facts.read_bytes(),
        "progress": mirrored.progress.read_bytes(),
        "archive": listing,
        "registry": {ref: skopeo_digest(testbed.open_registry_host, f"{ns}/{ref}") for ref in IMAGES},
    }


@pytest.fixture(scope="module")
def before(testbed: Any, mirrored: Mirrored) -> dict[str, Any]:
    return snapshot(testbed, mirrored)


def fill(value: Any, places: dict[str, str]) -> Any:
    if isinstance(value, str):
        for name, text in places.items():
            value = value.replace("{" + name + "}", text)
        return value
    if isinstance(value, list):
        return [fill(item, places) for item in value]
    if isinstance(value, dict):
        return {key: fill(item, places) for key, item in value.items()}
    return value


def call_args(case: Case, mirrored: Mirrored) -> dict[str, Any]:
    """The good call of case.module with case.args laid over it: a dict option is merged, DROP removes."""
    args = json.loads(json.dumps(mirrored.base[case.module]))
    for key, value in case.args.items():
        if value is DROP:
            args.pop(key, None)
        elif isinstance(value, dict) and isinstance(args.get(key), dict):
            merged = dict(args[key], **value)
            args[key] = {k: v for k, v in merged.items() if v is not DROP}
        else:
            args[key] = value
    return fill(args, mirrored.places)


def test_the_table_covers_both_modules() -> None:
    assert len(CASES) >= 60
    assert len({case.id for case in CASES}) == len(CASES)
    assert {case.module for case in CASES} == {M, C}


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input_fails_at_the_door(ansible: Any, testbed: Any, faults: Any, mirrored: Mirrored, before: dict[str, Any],
                                     case: Case) -> None:
    run = ansible.module(case.module, call_args(case, mirrored), api_key=fill(case.api_key, mirrored.places), check=case.check)
    output = run.stdout + run.stderr
    assert run.rc != 0 and "| FAILED! =>" in run.stdout, output
    result = run.result
    msg = result["msg"]
    for expected in case.expect:
        assert fill(expected, mirrored.places) in msg, msg
    assert "\n" not in msg.strip(), msg
    for word in ("Traceback", "Module failed", "MODULE FAILURE"):
        assert word not in msg, msg
    for secret in (testbed.api_key, PASSWORD, testbed.basic_password):
        assert secret not in output
    # ansible itself echoes the first option of a failed ad-hoc task in its error, as typed after -a: a password
    # put in a URL is the operator's own text there, but the module's result must not repeat it.
    assert URL_PASSWORD not in json.dumps(result)
    # Nothing was asked of the source registry or the NGC API, and nothing mirrored earlier changed.
    assert faults.stats("registry")["total"] == 0
    assert faults.stats("ngc")["total"] == 0
    assert snapshot(testbed, mirrored) == before
