# Copyright (c) airgap.ngc contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The bad-input table of both modules: each row is a good call with one thing wrong and the fragments the failure
message must hold. The unit test (test_bad_inputs.py beside this file) runs every row through the module; the
integration test (tests/integration/test_bad_inputs.py) runs a batch of them through Ansible against the test bed.
The next bad input someone finds is one line added to CASES.

Plain data and helpers only (no collection import), so that both test suites can load it.
"""

from __future__ import annotations

import json
from typing import Any, NamedTuple

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
    registry), {ngc} (the NGC API), {ns} (the good run's namespace there), {archive}, {facts}, {progress} (the good
    run's files), {tmp} (the directory that holds them and notes.txt, a file that is neither a certificate nor a
    progress file), {key} (the valid API key).
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
    Case(
        "images item dict without name", M, {"images": [{"tag": "24.01-py3"}]}, ["images item 1", "a dict needs a name"]
    ),
    Case(
        "images item dict bad digest",
        M,
        {"images": [{"name": "nvidia/pytorch", "digest": "sha256:abc"}]},
        ["invalid digest 'sha256:abc' in images item 1"],
    ),
    Case(
        "images white space",
        M,
        {"images": ["nvidia/py torch:1"]},
        ["invalid image reference 'nvidia/py torch:1' in images item 1"],
    ),
    Case("images two tags", M, {"images": ["nvidia/pytorch:24.01:py3"]}, ["images item 1", "more than one ':'"]),
    Case(
        "images upper case",
        M,
        {"images": ["nvidia/PyTorch:24.01-py3"]},
        ["images item 1", "'PyTorch' must be lower case"],
    ),
    # registry
    Case(
        "registry.url path",
        M,
        {"registry": {"url": "{open}/ngc"}},
        ["invalid registry.url '{open}/ngc'", "a path is not supported"],
    ),
    Case("registry.url ftp", M, {"registry": {"url": "ftp://127.0.0.1:5000"}}, ["invalid registry.url", "not 'ftp'"]),
    Case(
        "registry.url port too big",
        M,
        {"registry": {"url": "http://127.0.0.1:70000"}},
        ["registry.url", "port 70000 is out of range"],
    ),
    Case(
        "registry.url userinfo",
        M,
        {"registry": {"url": f"http://mirror:{URL_PASSWORD}@127.0.0.1:5000"}},
        ["invalid registry.url 'http://***@127.0.0.1:5000'", "registry.username and registry.password"],
    ),
    Case(
        "registry.url trailing newline",
        M,
        {"registry": {"url": "{open}\n"}},
        ["registry.url", "white space or a control character"],
    ),
    Case(
        "registry.url is the source",
        M,
        {"registry": {"url": "{proxy}", "prefix": DROP}},
        ["registry.url", "source registry"],
    ),
    Case(
        "registry.password without username",
        M,
        {"registry": {"password": PASSWORD}},
        ["registry.password", "without registry.username"],
    ),
    Case(
        "registry.username without password",
        M,
        {"registry": {"username": "mirror"}},
        ["invalid registry.username 'mirror'"],
    ),
    Case(
        "registry.password trailing newline",
        M,
        {"registry": {"username": "mirror", "password": PASSWORD + "\n"}},
        ["registry.password", "control character"],
    ),
    Case(
        "registry.ca_path missing",
        M,
        {"registry": {"ca_path": "{tmp}/missing-ca.pem"}},
        ["invalid registry.ca_path", "no such file"],
    ),
    Case(
        "registry.ca_path not PEM",
        M,
        {"registry": {"ca_path": "{tmp}/notes.txt"}},
        ["registry.ca_path", "no PEM certificate"],
    ),
    Case(
        "registry.prefix upper case",
        M,
        {"registry": {"prefix": "Mirror"}},
        ["registry.prefix", "'Mirror' must be lower case"],
    ),
    # archive
    Case("archive.dir empty", M, {"archive": {"dir": ""}}, ["invalid archive.dir ''"], check=True),
    Case(
        "archive.dir filesystem root",
        M,
        {"archive": {"dir": "/"}},
        ["invalid archive.dir '/'", "filesystem root"],
        check=True,
    ),
    Case(
        "archive.dir relative",
        M,
        {"archive": {"dir": "archives"}},
        ["invalid archive.dir 'archives'", "relative"],
        check=True,
    ),
    Case("archive.dir is a file", M, {"archive": {"dir": "{facts}"}}, ["archive.dir", "not a directory"]),
    Case(
        "archive.platform",
        M,
        {"archive": {"platform": "amd64"}},
        ["invalid archive.platform 'amd64'", "os/architecture"],
    ),
    # platforms, docker, combinations
    Case("platforms item", M, {"platforms": ["linux/amd64", "arm64"]}, ["invalid platforms item 2 'arm64'"]),
    Case(
        "platforms without registry",
        M,
        {"registry": DROP, "platforms": ["linux/amd64"]},
        ["platforms", "registry is not set"],
    ),
    Case(
        "docker.host without scheme",
        M,
        {"docker": {"host": "127.0.0.1:2375"}},
        ["invalid docker.host '127.0.0.1:2375'"],
    ),
    Case(
        "docker.host password",
        M,
        {"docker": {"host": f"ssh://root:{URL_PASSWORD}@node1"}},
        ["docker.host 'ssh://***@node1'"],
    ),
    Case(
        "docker.tag_as two tags",
        M,
        {"docker": {"tag_as": ["registry.site.example/pytorch:24.01:py3"]}},
        ["in docker.tag_as item 1", "more than one ':'"],
    ),
    Case(
        "docker.tag_as digest",
        M,
        {"docker": {"tag_as": [f"registry.site.example/pytorch@{DIGEST}"]}},
        ["docker.tag_as item 1", "not a digest"],
    ),
    Case(
        "docker.tag_as for a digest-only image",
        M,
        {"images": [f"nvidia/pytorch@{DIGEST}"], "docker": {"tag_as": ["nvcr.io"]}},
        ["docker.tag_as item 1", "no tag to keep"],
    ),
    Case(
        "docker.source archive without archive",
        M,
        {"archive": DROP, "docker": {"source": "archive"}},
        ["docker.source", "set archive"],
    ),
    Case(
        "offline with registry", M, {"offline": True, "docker": {"source": "archive"}}, ["offline", "remove registry"]
    ),
    Case("offline without docker", M, {"offline": True, "registry": DROP}, ["offline", "docker.source=archive"]),
    Case("save_readme without archive", M, {"save_readme": True, "archive": DROP}, ["save_readme", "set archive"]),
    Case(
        "no destination",
        M,
        {"registry": DROP, "archive": DROP},
        ["one of the following is required: registry, archive, docker"],
    ),
    # files
    Case(
        "facts_file relative",
        M,
        {"facts_file": "ngc_mirror.fact"},
        ["invalid facts_file 'ngc_mirror.fact'", "relative"],
        check=True,
    ),
    Case("facts_file a directory", M, {"facts_file": "{archive}"}, ["facts_file", "is a directory"]),
    Case(
        "progress_file is the facts file",
        M,
        {"progress_file": "{facts}"},
        ["invalid progress_file '{facts}'", "facts_file"],
    ),
    Case(
        "progress_file is an archive",
        M,
        {"progress_file": "{archive}/nvidia/pytorch/24.01-py3.tar"},
        ["progress_file", "not a progress file"],
    ),
    Case(
        "progress_file is a device",
        M,
        {"progress_file": "/dev/null"},
        ["progress_file '/dev/null'", "not a regular file"],
        check=True,
    ),
    Case(
        "progress_file directory missing",
        M,
        {"progress_file": "{tmp}/missing/progress.json"},
        ["progress_file", "does not exist"],
    ),
    # numbers
    Case("parallel zero", M, {"parallel": 0}, ["invalid parallel 0", "from 1 to 64"]),
    Case("timeout zero", M, {"timeout": 0}, ["invalid timeout 0.0", "more than 0"]),
    Case("retries negative", M, {"retries": -1}, ["invalid retries -1", "from 0 to 100"]),
    # the source options
    Case(
        "registry_url without scheme, with a path",
        M,
        {"registry_url": "127.0.0.1:5000/nvidia"},
        ["invalid registry_url", "path"],
    ),
    Case("registry_url ftp", M, {"registry_url": "ftp://127.0.0.1:5000"}, ["invalid registry_url", "not 'ftp'"]),
    Case("registry_url port", M, {"registry_url": "https://nvcr.io:65536"}, ["registry_url", "out of range"]),
    Case(
        "registry_url userinfo",
        M,
        {"registry_url": f"https://k:{URL_PASSWORD}@nvcr.io"},
        ["registry_url 'https://***@nvcr.io'"],
    ),
    Case("username empty", M, {"username": ""}, ["invalid username ''"]),
    Case("ca_path missing", M, {"ca_path": "{tmp}/missing-ca.pem"}, ["invalid ca_path", "no such file"]),
    # ngc_catalog_info
    Case(
        "catalog api_url without scheme",
        C,
        {"api_url": "api.ngc.nvidia.com"},
        ["invalid api_url 'api.ngc.nvidia.com'", "scheme is missing"],
    ),
    Case("catalog api_url ftp", C, {"api_url": "ftp://api.ngc.nvidia.com"}, ["invalid api_url", "not 'ftp'"]),
    Case(
        "catalog api_url userinfo",
        C,
        {"api_url": f"https://key:{URL_PASSWORD}@api.ngc.nvidia.com"},
        ["api_url 'https://***@api.ngc.nvidia.com'"],
    ),
    Case("catalog org upper case", C, {"org": "NVIDIA"}, ["invalid org 'NVIDIA'", "lower case"]),
    Case("catalog org with a team", C, {"org": "nvidia/clara"}, ["invalid org 'nvidia/clara'"]),
    Case("catalog teams item", C, {"teams": ["clara", "Bad Team"]}, ["invalid teams item 2 'Bad Team'"]),
    Case("catalog images item empty", C, {"images": [""]}, ["invalid images item 1 ''", "every image"]),
    Case(
        "catalog images item with a tag", C, {"images": ["nvidia/pytorch:24.01-py3"]}, ["images item 1", "not by tag"]
    ),
    Case("catalog images item upper case", C, {"images": ["PyTorch"]}, ["invalid images item 1 'PyTorch'"]),
    Case("catalog latest zero", C, {"latest": 0}, ["invalid latest 0"]),
    Case("catalog tag_regex", C, {"tag_regex": "py3("}, ["invalid tag_regex 'py3('"]),
    Case("catalog min_version", C, {"min_version": "newest"}, ["invalid min_version 'newest'"]),
    Case("catalog parallel zero", C, {"parallel": 0}, ["invalid parallel 0"]),
    Case("catalog timeout zero", C, {"timeout": 0}, ["invalid timeout 0.0"]),
    Case("catalog retries negative", C, {"retries": -3}, ["invalid retries -3"]),
    Case(
        "catalog registry source, ca_path missing",
        C,
        {"source": "registry", "ca_path": "/nonexistent/ca.pem"},
        ["invalid ca_path '/nonexistent/ca.pem'", "no such file"],
    ),
    Case(
        "catalog registry_url path",
        C,
        {"source": "registry", "registry_url": "{open}/v3"},
        ["invalid registry_url", "path"],
    ),
    Case("catalog api_key trailing newline", C, {}, ["invalid api_key", "control character"], api_key="{key}\n"),
    # ngc_catalog_info: charts
    Case("catalog charts item empty", C, {"charts": [""]}, ["invalid charts item 1 ''"]),
    Case(
        "catalog charts version with a space",
        C,
        {"charts": ["nvidia/gpu-operator:v26 7"]},
        ["invalid chart 'nvidia/gpu-operator:v26 7' in charts item 1", "the version 'v26 7' must be"],
    ),
    Case(
        "catalog charts upper case",
        C,
        {"charts": ["nvidia/GPU-Operator"]},
        ["invalid charts item 1 'nvidia/GPU-Operator'"],
    ),
    Case(
        "catalog charts from a registry",
        C,
        {"charts": ["gpu-operator"], "source": "registry"},
        ["charts are listed from NGC's Helm repository (helm_url), not with source=registry"],
    ),
    Case(
        "catalog driver_os form",
        C,
        {"charts": ["gpu-operator"], "driver_os": ["Ubuntu 22.04"]},
        ["invalid driver_os item 1 'Ubuntu 22.04'", "such as ubuntu22.04"],
    ),
    Case(
        "catalog values without charts",
        C,
        {"values": {"driver": {"enabled": False}}},
        ["values is used only with charts"],
    ),
    Case("catalog driver_os without charts", C, {"driver_os": ["ubuntu22.04"]}, ["driver_os is used only with charts"]),
    Case(
        "catalog helm_url with a password",
        C,
        {"charts": ["gpu-operator"], "helm_url": f"https://u:{URL_PASSWORD}@helm.test"},
        ["invalid helm_url 'https://***@helm.test'", "no user name or password"],
    ),
    Case(
        "catalog helm_url not a URL",
        C,
        {"charts": ["gpu-operator"], "helm_url": "helm.ngc.nvidia.com"},
        ["invalid helm_url"],
    ),
    Case(
        "catalog upstream password without username",
        C,
        {"charts": ["gpu-operator"], "upstream_registries": {"registry.k8s.io": {"password": PASSWORD}}},
        ["invalid upstream_registries['registry.k8s.io']: give username with password"],
    ),
    Case(
        "catalog upstream nvcr.io",
        C,
        {"charts": ["gpu-operator"], "upstream_registries": {"nvcr.io": {"url": "{open}"}}},
        ["images of nvcr.io come from registry_url"],
    ),
    Case(
        "catalog upstream url without a scheme",
        C,
        {"charts": ["gpu-operator"], "upstream_registries": {"registry.k8s.io": {"url": "mirror.site:5000"}}},
        ["invalid upstream_registries['registry.k8s.io'].url 'mirror.site:5000': give the scheme"],
    ),
]


def good_calls(places: dict[str, str]) -> dict[str, dict[str, Any]]:
    """A good call of each module: the mirror into a registry namespace, an archive directory, a facts and a progress
    file (an earlier good run wrote them); the catalog of the NGC API. Both read the source through {proxy}."""
    return {
        M: {
            "registry_url": places["proxy"],
            "images": IMAGES,
            "registry": {"url": places["open"], "prefix": places["ns"]},
            "archive": {"dir": places["archive"]},
            "facts_file": places["facts"],
            "progress_file": places["progress"],
        },
        C: {"api_url": places["ngc"], "registry_url": places["proxy"]},
    }


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


def call_args(case: Case, base: dict[str, dict[str, Any]], places: dict[str, str]) -> dict[str, Any]:
    """The good call of case.module with case.args laid over it: a dict option is merged, DROP removes."""
    args = json.loads(json.dumps(base[case.module]))
    for key, value in case.args.items():
        if value is DROP:
            args.pop(key, None)
        elif isinstance(value, dict) and isinstance(args.get(key), dict):
            merged = dict(args[key], **value)
            args[key] = {k: v for k, v in merged.items() if v is not DROP}
        else:
            args[key] = value
    return fill(args, places)
