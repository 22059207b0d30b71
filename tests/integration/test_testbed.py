# Copyright (c) airgap.ngc contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The test bed is real: judged by skopeo, the Docker engine and plain HTTP.

Run: ``python3 -m pytest -p tests.testbed.pytest_plugin tests/integration/test_testbed.py``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.testbed import FaultSwitch, TestbedInfo, write_authfile
from tests.testbed.charts import ChartOracle, gpu_operator_chart
from tests.testbed.seed import find_tag

NGC_USER = "$oauthtoken"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"


# Helpers -----------------------------------------------------------------------------------
def skopeo(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["skopeo", *args], capture_output=True, check=False, timeout=300)


def skopeo_inspect(authfile: Path, reference: str, raw: bool = False) -> subprocess.CompletedProcess:
    extra = ["--raw"] if raw else []
    return skopeo("inspect", "--tls-verify=false", "--authfile", str(authfile), *extra, f"docker://{reference}")


def docker(info: TestbedInfo, config_dir: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "DOCKER_HOST": info.docker_host, "DOCKER_CONFIG": str(config_dir)}
    return subprocess.run(
        ["docker", *args], input=stdin, capture_output=True, text=True, check=False, env=env, timeout=600
    )


def ngc_token(info: TestbedInfo) -> str:
    response = requests.get(
        f"{info.ngc_api_url}/token",
        params={"service": "ngc", "scope": "group/ngc"},
        auth=(NGC_USER, info.api_key),
        timeout=10,
    )
    assert response.status_code == 200, response.text
    return response.json()["token"]


def ngc_get(info: TestbedInfo, path: str, **params: Any) -> requests.Response:
    headers = {"Authorization": f"Bearer {ngc_token(info)}"}
    return requests.get(f"{info.ngc_api_url}{path}", params=params, headers=headers, timeout=10)


def registry_token(info: TestbedInfo, repository: str) -> str:
    response = requests.get(
        info.token_realm,
        params={"service": info.registry_service, "scope": f"repository:{repository}:pull"},
        auth=(NGC_USER, info.api_key),
        timeout=10,
    )
    assert response.status_code == 200, response.text
    return response.json()["token"]


@pytest.fixture(name="docker_config")
def docker_config_fixture(testbed: TestbedInfo, tmp_path: Path) -> Path:
    if not testbed.docker_host:
        pytest.skip("test bed started without a Docker engine")
    return tmp_path / "docker-config"


# Registry, judged by skopeo ------------------------------------------------------------------
def test_skopeo_sees_seeded_digest(testbed: TestbedInfo, testbed_authfile: Path) -> None:
    expected = find_tag(testbed.seed_document(), "nvidia/pytorch:24.01-py3")
    result = skopeo_inspect(testbed_authfile, f"{testbed.source_registry_host}/nvidia/pytorch:24.01-py3")
    assert result.returncode == 0, result.stderr
    inspected = json.loads(result.stdout)
    assert inspected["Digest"] == expected["digest"]
    assert inspected["Layers"] == expected["layer_digests"]
    assert {"23.10-py3", "23.12-py3", "24.01-py3", "24.02-py3", "24.02-py3-igpu", "19.09-py2"} <= set(
        inspected["RepoTags"]
    )


def test_skopeo_wrong_key_is_refused(testbed: TestbedInfo, tmp_path: Path) -> None:
    authfile = write_authfile(tmp_path / "auth.json", testbed, api_key="not-the-key")
    result = skopeo_inspect(authfile, f"{testbed.source_registry_host}/nvidia/pytorch:24.01-py3")
    assert result.returncode != 0
    assert b"401" in result.stderr or b"unauthorized" in result.stderr.lower()


def test_skopeo_without_credentials_is_refused(testbed: TestbedInfo) -> None:
    result = skopeo(
        "inspect",
        "--tls-verify=false",
        "--no-creds",
        f"docker://{testbed.source_registry_host}/nvidia/cuda:11.8.0-runtime-ubuntu20.04",
    )
    assert result.returncode != 0


@pytest.mark.parametrize(
    "tag, media_type",
    [
        ("12.2.0-base-ubuntu22.04", OCI_INDEX),
        ("12.10.0-base-ubuntu22.04", DOCKER_LIST),
    ],
)
def test_multi_arch_raw_manifest_is_an_index(
    testbed: TestbedInfo, testbed_authfile: Path, tag: str, media_type: str
) -> None:
    expected = find_tag(testbed.seed_document(), f"nvidia/cuda:{tag}")
    result = skopeo_inspect(testbed_authfile, f"{testbed.source_proxy_host}/nvidia/cuda:{tag}", raw=True)
    assert result.returncode == 0, result.stderr
    index = json.loads(result.stdout)
    assert index["mediaType"] == media_type == expected["media_type"]
    platforms = sorted(f"{m['platform']['os']}/{m['platform']['architecture']}" for m in index["manifests"])
    assert platforms == ["linux/amd64", "linux/arm64"]
    assert f"sha256:{hashlib.sha256(result.stdout).hexdigest()}" == expected["digest"]


@pytest.mark.parametrize(
    "reference, media_type",
    [
        ("nvidia/tensorflow:24.01-tf2-py3", OCI_MANIFEST),
        ("nvidia/tensorflow:23.12-tf2-py3", DOCKER_MANIFEST),
        ("nvidia/clara/clara-parabricks:4.2.0-1", DOCKER_MANIFEST),
    ],
)
def test_single_arch_manifest_types(
    testbed: TestbedInfo, testbed_authfile: Path, reference: str, media_type: str
) -> None:
    expected = find_tag(testbed.seed_document(), reference)
    result = skopeo_inspect(testbed_authfile, f"{testbed.source_registry_host}/{reference}", raw=True)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["mediaType"] == media_type == expected["media_type"]
    assert f"sha256:{hashlib.sha256(result.stdout).hexdigest()}" == expected["digest"]


def test_pytorch_tags_share_a_base_layer(testbed: TestbedInfo) -> None:
    document = testbed.seed_document()
    layer_sets = [
        set(find_tag(document, f"nvidia/pytorch:{t}")["layer_digests"])
        for t in ("23.10-py3", "23.12-py3", "24.01-py3", "24.02-py3")
    ]
    shared = set.intersection(*layer_sets)
    assert len(shared) == 2  # the OS layer and the big pytorch base
    assert all(len(s - shared) == 1 for s in layer_sets)


def test_registry_flavours(testbed: TestbedInfo) -> None:
    assert requests.get(f"{testbed.open_registry_url}/v2/", timeout=10).status_code == 200
    assert requests.get(f"{testbed.basic_registry_url}/v2/", timeout=10).status_code == 401
    ok = requests.get(
        f"{testbed.basic_registry_url}/v2/", auth=(testbed.basic_username, testbed.basic_password), timeout=10
    )
    assert ok.status_code == 200
    challenge = requests.get(f"{testbed.source_registry_url}/v2/", timeout=10).headers["WWW-Authenticate"]
    assert challenge.startswith(f'Bearer realm="{testbed.token_realm}"')


def test_skopeo_copies_between_registries(testbed: TestbedInfo, testbed_authfile: Path) -> None:
    expected = find_tag(testbed.seed_document(), "nvidia/cuda:11.8.0-runtime-ubuntu20.04")
    destination = f"{testbed.basic_registry_host}/mirror/cuda:11.8.0-runtime-ubuntu20.04"
    result = skopeo(
        "copy",
        "--src-tls-verify=false",
        "--dest-tls-verify=false",
        "--authfile",
        str(testbed_authfile),
        f"docker://{testbed.source_proxy_host}/nvidia/cuda:11.8.0-runtime-ubuntu20.04",
        f"docker://{destination}",
    )
    assert result.returncode == 0, result.stderr
    inspected = skopeo_inspect(testbed_authfile, destination)
    assert json.loads(inspected.stdout)["Digest"] == expected["digest"]


# Docker engine ---------------------------------------------------------------------------------
@pytest.mark.engine
def test_docker_pull_from_token_registry(testbed: TestbedInfo, docker_config: Path) -> None:
    expected = find_tag(testbed.seed_document(), "nvidia/pytorch:24.01-py3")
    host = testbed.source_registry_host
    login = docker(testbed, docker_config, "login", "-u", NGC_USER, "--password-stdin", host, stdin=testbed.api_key)
    assert login.returncode == 0, login.stderr
    pull = docker(testbed, docker_config, "pull", f"{host}/nvidia/pytorch:24.01-py3")
    assert pull.returncode == 0, pull.stderr
    inspect = docker(testbed, docker_config, "image", "inspect", f"{host}/nvidia/pytorch:24.01-py3")
    image = json.loads(inspect.stdout)[0]
    assert f"{host}/nvidia/pytorch@{expected['digest']}" in image["RepoDigests"]
    assert image["Id"] == expected["config_digests"][0]


@pytest.mark.engine
def test_docker_pull_multi_arch_through_proxy(testbed: TestbedInfo, docker_config: Path) -> None:
    expected = find_tag(testbed.seed_document(), "nvidia/cuda:12.2.0-base-ubuntu22.04")
    host = testbed.source_proxy_host
    assert (
        docker(
            testbed, docker_config, "login", "-u", NGC_USER, "--password-stdin", host, stdin=testbed.api_key
        ).returncode
        == 0
    )
    pull = docker(testbed, docker_config, "pull", f"{host}/nvidia/cuda:12.2.0-base-ubuntu22.04")
    assert pull.returncode == 0, pull.stderr
    assert expected["digest"] in pull.stdout
    image = json.loads(
        docker(testbed, docker_config, "image", "inspect", f"{host}/nvidia/cuda:12.2.0-base-ubuntu22.04").stdout
    )[0]
    assert image["Architecture"] == "amd64"


@pytest.mark.engine
def test_docker_loads_a_skopeo_archive(
    testbed: TestbedInfo, testbed_authfile: Path, docker_config: Path, tmp_path: Path
) -> None:
    expected = find_tag(testbed.seed_document(), "nvidia/clara/clara-parabricks:4.2.0-1")
    archive = tmp_path / "parabricks.tar"
    copy = skopeo(
        "copy",
        "--src-tls-verify=false",
        "--authfile",
        str(testbed_authfile),
        f"docker://{testbed.source_registry_host}/nvidia/clara/clara-parabricks:4.2.0-1",
        f"docker-archive:{archive}:testbed/parabricks:4.2.0-1",
    )
    assert copy.returncode == 0, copy.stderr
    load = docker(testbed, docker_config, "load", "-i", str(archive))
    assert load.returncode == 0, load.stderr
    image = json.loads(docker(testbed, docker_config, "image", "inspect", "testbed/parabricks:4.2.0-1").stdout)[0]
    assert image["Id"] == expected["config_digests"][0]


# NGC catalog stand-in -----------------------------------------------------------------------
def test_ngc_token_accepts_basic_and_apikey(testbed: TestbedInfo) -> None:
    url = f"{testbed.ngc_api_url}/token"
    params = {"service": "ngc", "scope": "group/ngc"}
    basic = requests.get(url, params=params, auth=(NGC_USER, testbed.api_key), timeout=10)
    assert basic.status_code == 200 and basic.json()["expires_in"] > 0
    apikey = base64.b64encode(f"{NGC_USER}:{testbed.api_key}".encode()).decode()
    assert (
        requests.get(url, params=params, headers={"Authorization": f"ApiKey {apikey}"}, timeout=10).status_code == 200
    )
    assert requests.get(url, params=params, auth=(NGC_USER, "wrong"), timeout=10).status_code == 401


def test_ngc_catalog_needs_bearer_token(testbed: TestbedInfo) -> None:
    for headers in ({}, {"Authorization": "Bearer nonsense"}):
        response = requests.get(f"{testbed.ngc_api_url}/v2/orgs", headers=headers, timeout=10)
        assert response.status_code == 401
        assert response.json()["requestStatus"]["statusCode"] == "UNAUTHORIZED"
    orgs = ngc_get(testbed, "/v2/orgs").json()
    assert [o["name"] for o in orgs["organizations"]] == ["nvidia"]


def test_ngc_repos_paging_and_teams(testbed: TestbedInfo) -> None:
    seeded = {r["repository"] for r in testbed.seed_document()["repositories"]}
    found: list[str] = []
    page, total_pages = 0, 1
    while page < total_pages:
        body = ngc_get(
            testbed,
            "/v2/org/nvidia/repos",
            **{"include-teams": "true", "include-public": "true", "page-size": 2, "page-number": page},
        ).json()
        assert body["requestStatus"]["statusCode"] == "SUCCESS"
        assert len(body["repositories"]) <= 2
        total_pages = body["paginationInfo"]["totalPages"]
        assert body["paginationInfo"]["totalResults"] == len(seeded)
        found += [f"{r['namespace']}/{r['name']}" for r in body["repositories"]]
        page += 1
    assert sorted(found) == sorted(seeded)
    assert "nvidia/clara/clara-parabricks" in found
    without_teams = ngc_get(testbed, "/v2/org/nvidia/repos", **{"page-size": 100}).json()["repositories"]
    assert all("teamName" not in r for r in without_teams) and len(without_teams) == len(seeded) - 1
    team = ngc_get(testbed, "/v2/org/nvidia/team/clara/repos").json()["repositories"]
    assert [r["name"] for r in team] == ["clara-parabricks"]


def test_ngc_images_and_the_missing_images_quirk(testbed: TestbedInfo) -> None:
    document = testbed.seed_document()
    pytorch = ngc_get(testbed, "/v2/org/nvidia/repos/pytorch/images").json()
    seeded = {t["tag"]: t for r in document["repositories"] if r["repository"] == "nvidia/pytorch" for t in r["tags"]}
    assert {i["tag"]: i["size"] for i in pytorch["images"]} == {t: s["size"] for t, s in seeded.items()}
    empty = ngc_get(testbed, "/v2/org/nvidia/repos/empty-repo/images")
    assert empty.status_code == 200 and "images" not in empty.json()
    team = ngc_get(testbed, "/v2/org/nvidia/team/clara/repos/clara-parabricks/images").json()
    assert {i["tag"] for i in team["images"]} == {"4.1.1-1", "4.2.0-1"}


def test_ngc_repository_detail(testbed: TestbedInfo) -> None:
    cuda = ngc_get(testbed, "/v2/org/nvidia/repos/cuda").json()
    assert cuda["latestTag"] == "12.10.0-base-ubuntu22.04"
    assert cuda["isMultiArchitecture"] is True
    assert sorted(v["architecture"] for v in cuda["latestArchitectureVariants"]) == ["amd64", "arm64"]
    assert set(cuda["tags"]) == {"11.8.0-runtime-ubuntu20.04", "12.2.0-base-ubuntu22.04", "12.10.0-base-ubuntu22.04"}
    assert cuda["description"].startswith("# CUDA")
    pytorch = ngc_get(testbed, "/v2/org/nvidia/repos/pytorch").json()
    assert pytorch["latestTag"] == "24.02-py3" and pytorch["isMultiArchitecture"] is False
    empty = ngc_get(testbed, "/v2/org/nvidia/repos/empty-repo").json()
    assert empty["tags"] == [] and "latestTag" not in empty


def test_ngc_not_found(testbed: TestbedInfo) -> None:
    for path in (
        "/v2/org/nosuchorg/repos",
        "/v2/org/nvidia/repos/nosuchrepo/images",
        "/v2/org/nvidia/team/nosuchteam/repos",
    ):
        response = ngc_get(testbed, path)
        assert response.status_code == 404, path
        assert response.json()["requestStatus"]["statusCode"] == "NOT_FOUND"


def test_ngc_search(testbed: TestbedInfo) -> None:
    url = f"{testbed.ngc_api_url}/v2/search/catalog/resources/CONTAINER"
    assert requests.get(url, params={"q": "{not json"}, timeout=10).status_code == 400
    body = requests.get(
        url, params={"q": json.dumps({"query": "tensorflow", "page": 0, "pageSize": 25})}, timeout=10
    ).json()
    ids = {r["resourceId"] for r in body["results"][0]["resources"]}
    assert ids == {"nvidia/tensorflow", "nvidia/l4t-tensorflow"}
    assert body["resultTotal"] == 2
    team = requests.get(url, params={"q": json.dumps({"query": "parabricks"})}, timeout=10).json()["results"][0][
        "resources"
    ][0]
    assert team["resourceId"] == "nvidia/clara/clara-parabricks" and team["teamName"] == "clara"
    assert {"key": "latestTag", "value": "4.2.0-1"} in team["attributes"]


# Fault switch ---------------------------------------------------------------------------------
def test_ngc_fault_429_then_recovers(testbed: TestbedInfo, faults: FaultSwitch) -> None:
    token = ngc_token(testbed)
    faults.ngc(status=429, count=2, retry_after=1, path_prefix="/v2/")
    url, headers = f"{testbed.ngc_api_url}/v2/orgs", {"Authorization": f"Bearer {token}"}
    statuses = [requests.get(url, headers=headers, timeout=10) for _attempt in range(3)]
    assert [r.status_code for r in statuses] == [429, 429, 200]
    assert statuses[0].headers["Retry-After"] == "1"
    stats = faults.stats("ngc")
    assert stats["paths"]["/v2/orgs"] == 3 and stats["faults_served"] == 2


def test_registry_fault_seen_by_skopeo_which_retries(
    testbed: TestbedInfo, testbed_authfile: Path, faults: FaultSwitch
) -> None:
    expected = find_tag(testbed.seed_document(), "nvidia/pytorch:23.12-py3")
    faults.registry(status=429, count=1, retry_after=1, path_contains="/manifests/")
    result = skopeo_inspect(testbed_authfile, f"{testbed.source_proxy_host}/nvidia/pytorch:23.12-py3")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["Digest"] == expected["digest"]
    stats = faults.stats("registry")
    assert stats["statuses"].get("429") == 1
    assert stats["paths"]["/v2/nvidia/pytorch/manifests/23.12-py3"] >= 2


def test_registry_fault_503_with_retry_after(testbed: TestbedInfo, faults: FaultSwitch) -> None:
    faults.registry(status=503, count=2, retry_after=2)
    url = f"{testbed.source_proxy_url}/v2/"
    answers = [requests.get(url, timeout=10) for _attempt in range(3)]
    assert [a.status_code for a in answers] == [503, 503, 401]
    assert answers[0].headers["Retry-After"] == "2"
    assert answers[0].json()["errors"][0]["code"] == "UNAVAILABLE"
    assert "WWW-Authenticate" in answers[2].headers


def test_proxy_rewrites_upload_location(testbed: TestbedInfo) -> None:
    token = requests.get(
        testbed.token_realm,
        params={"service": testbed.registry_service, "scope": "repository:scratch/upload:pull,push,delete"},
        auth=(NGC_USER, testbed.api_key),
        timeout=10,
    ).json()["token"]
    response = requests.post(
        f"{testbed.source_proxy_url}/v2/scratch/upload/blobs/uploads/",
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert response.status_code == 202
    assert response.headers["Location"].startswith(f"{testbed.source_proxy_url}/v2/scratch/upload/blobs/uploads/")
    assert (
        requests.delete(
            response.headers["Location"], headers={"Authorization": f"Bearer {token}"}, timeout=10
        ).status_code
        == 204
    )


def test_proxy_aborts_a_blob_mid_body(testbed: TestbedInfo, faults: FaultSwitch) -> None:
    layer = find_tag(testbed.seed_document(), "nvidia/pytorch:24.01-py3")["layer_digests"][1]
    url = f"{testbed.source_proxy_url}/v2/nvidia/pytorch/blobs/{layer}"
    headers = {"Authorization": f"Bearer {registry_token(testbed, 'nvidia/pytorch')}"}
    faults.registry(abort_after_bytes=1000, path_contains="/blobs/")
    with pytest.raises(requests.exceptions.RequestException):
        requests.get(url, headers=headers, timeout=10).raise_for_status()
    whole = requests.get(url, headers=headers, timeout=10)
    assert f"sha256:{hashlib.sha256(whole.content).hexdigest()}" == layer


def test_anonymous_pull_setting(testbed: TestbedInfo, faults: FaultSwitch) -> None:
    params = {"service": testbed.registry_service, "scope": "repository:nvidia/cuda:pull,push"}
    assert requests.get(testbed.token_realm, params=params, timeout=10).status_code == 401
    faults.ngc(anonymous_pull=True)
    answer = requests.get(testbed.token_realm, params=params, timeout=10)
    assert answer.status_code == 200
    claims = json.loads(base64.urlsafe_b64decode(answer.json()["token"].split(".")[1] + "=="))
    assert claims["access"] == [{"type": "repository", "name": "nvidia/cuda", "actions": ["pull"]}]
    assert claims["aud"] == testbed.registry_service and claims["iss"] == testbed.registry_issuer


def test_short_token_lifetime_expires_at_the_registry(testbed: TestbedInfo, faults: FaultSwitch) -> None:
    faults.ngc(token_lifetime=1)
    catalog_headers = {"Authorization": f"Bearer {ngc_token(testbed)}"}
    answer = requests.get(
        testbed.token_realm,
        params={"service": testbed.registry_service, "scope": "repository:nvidia/cuda:pull"},
        auth=(NGC_USER, testbed.api_key),
        timeout=10,
    ).json()
    assert answer["expires_in"] == 1
    headers = {"Authorization": f"Bearer {answer['token']}"}
    assert (
        requests.get(f"{testbed.source_proxy_url}/v2/nvidia/cuda/tags/list", headers=headers, timeout=10).status_code
        == 200
    )
    time.sleep(2.5)  # expires_in 1 s; the registry may honour it up to 1 s longer
    expired = requests.get(f"{testbed.source_proxy_url}/v2/nvidia/cuda/tags/list", headers=headers, timeout=10)
    assert expired.status_code == 401
    challenge = expired.headers["WWW-Authenticate"]
    assert 'error="invalid_token"' in challenge and f'realm="{testbed.ngc_api_url}/token"' in challenge
    direct = requests.get(f"{testbed.source_registry_url}/v2/nvidia/cuda/tags/list", headers=headers, timeout=10)
    assert direct.status_code == 401 and f'realm="{testbed.token_realm}"' in direct.headers["WWW-Authenticate"]
    stale = requests.get(f"{testbed.ngc_api_url}/v2/orgs", headers=catalog_headers, timeout=10)
    assert stale.status_code == 401 and stale.json()["requestStatus"]["statusDescription"] == "token expired"


def test_helm_repository_wants_the_key_and_sends_archives_elsewhere(
    testbed: TestbedInfo, helm_charts: ChartOracle
) -> None:
    index = f"{testbed.helm_url}/nvidia/index.yaml"
    refused = requests.get(index, timeout=10)
    assert refused.status_code == 401 and refused.headers["WWW-Authenticate"].startswith("Basic ")
    assert requests.get(index, auth=(NGC_USER, "not-the-key"), timeout=10).status_code == 401
    assert "gpu-operator:" in requests.get(index, auth=(NGC_USER, testbed.api_key), timeout=10).text
    archive = helm_charts.archive(helm_charts.versions[0])
    moved = requests.get(archive["url"], auth=(NGC_USER, testbed.api_key), timeout=10, allow_redirects=False)
    assert moved.status_code == 302 and moved.headers["Location"].startswith("http://localhost:")
    assert requests.get(moved.headers["Location"], auth=(NGC_USER, testbed.api_key), timeout=10).status_code == 400
    data = requests.get(moved.headers["Location"], timeout=10).content
    assert "sha256:" + hashlib.sha256(data).hexdigest() == archive["digest"]
    assert gpu_operator_chart(helm_charts.versions[0]) == data  # the same bytes on every run


def test_chart_images_are_in_their_registries(
    testbed: TestbedInfo, helm_charts: ChartOracle, testbed_authfile: Path
) -> None:
    assert (
        requests.get(f"{testbed.k8s_registry_url}/v2/", timeout=10).status_code == 200
    )  # anonymous, like registry.k8s.io
    for version in helm_charts.versions:
        for record in helm_charts.records(version):
            host, _sep, path = record["reference"].partition("/")
            where = {"nvcr.io": testbed.source_registry_host, "registry.k8s.io": testbed.k8s_registry_host}[host]
            raw = skopeo_inspect(testbed_authfile, f"{where}/{path}", raw=True)
            assert raw.returncode == 0, raw.stderr
            assert "sha256:" + hashlib.sha256(raw.stdout).hexdigest() == record["digest"]
    driver = [r for r in helm_charts.records(helm_charts.versions[-1]) if r["from"] == "driver"]
    assert (
        sorted(r["os"] for r in driver) == sorted(helm_charts.driver_os)
        and helm_charts.missing_os not in helm_charts.driver_os
    )


def test_cli_reports_the_running_testbed(testbed: TestbedInfo) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "tests.testbed", "info", "--dir", testbed.workdir],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["source_registry_url"] == testbed.source_registry_url
