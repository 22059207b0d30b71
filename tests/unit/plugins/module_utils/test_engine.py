# Copyright (c) airgap.ngc contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Unit tests for _engine: the status decision, host resolution, error wording. No Docker engine needed."""

from __future__ import annotations

import pytest

from ansible_collections.airgap.ngc.plugins.module_utils._clients import docker_engine as _engine
from ansible_collections.airgap.ngc.plugins.module_utils._clients.docker_engine import (
    DEFAULT_HOST,
    ArchiveMissingError,
    DockerEngine,
    DockerSdkMissingError,
    EngineAuthError,
    EngineError,
    EngineImage,
    EngineNotFoundError,
    EngineUnreachableError,
    classify_error,
    decide_status,
    digest_from_status,
    drain,
    engine_key,
    familiar_name,
    loaded_from_status,
    pull_error,
    resolve_host,
    scrub,
    tag_targets,
)
from ansible_collections.airgap.ngc.plugins.module_utils._types.errors import (
    AirgapError,
    AuthError,
    ConfigError,
    NotFoundError,
)
from ansible_collections.airgap.ngc.plugins.module_utils._types.reference import ImageReference

DIGEST = "sha256:" + "a" * 64
OTHER_DIGEST = "sha256:" + "b" * 64
CONFIG = "sha256:" + "c" * 64
OTHER_CONFIG = "sha256:" + "d" * 64
REF = ImageReference.parse("registry.site.example/nvidia/pytorch:24.01-py3")
NAME = "registry.site.example/nvidia/pytorch"
PASSWORD = "n0t-a-real-key-9f8e7d"


def pulled(image_id: str = CONFIG, digest: str = DIGEST, name: str = NAME) -> EngineImage:
    """What the engine shows after a pull: RepoDigests set."""
    return EngineImage(id=image_id, repo_tags=(f"{name}:24.01-py3",), repo_digests=(f"{name}@{digest}",))


def loaded(image_id: str = CONFIG) -> EngineImage:
    """What the engine shows after a load: RepoDigests empty, Id the config digest."""
    return EngineImage(id=image_id, repo_tags=(f"{NAME}:24.01-py3",), repo_digests=())


# -- the status decision -------------------------------------------------------------------------------------------
def test_missing_image_is_not_present_and_every_tag_is_missing():
    status = decide_status(REF, DIGEST, CONFIG, None, {}, ("nvcr.io/nvidia/pytorch:24.01-py3",))
    assert not status.present
    assert status.needs_image
    assert not status.up_to_date
    assert status.reason == "not in the engine"
    assert status.image_id is None
    assert status.missing_tags == ("nvcr.io/nvidia/pytorch:24.01-py3",)


def test_pulled_image_is_present_by_repo_digest():
    status = decide_status(REF, DIGEST, None, pulled())
    assert status.present and status.up_to_date
    assert status.matched_by == "repo_digest"
    assert status.image_id == CONFIG
    assert status.reference == f"{NAME}:24.01-py3"


def test_pulled_under_another_name_counts_because_digests_are_content_addresses():
    image = EngineImage(id=CONFIG, repo_tags=(f"{NAME}:24.01-py3",), repo_digests=(f"nvcr.io/nvidia/pytorch@{DIGEST}",))
    status = decide_status(REF, DIGEST, None, image)
    assert status.present
    assert "another name" in status.reason


def test_loaded_image_is_present_by_config_digest():
    status = decide_status(REF, DIGEST, CONFIG, loaded())
    assert status.present
    assert status.matched_by == "config_digest"


def test_loaded_image_without_config_digest_cannot_be_proven():
    status = decide_status(REF, DIGEST, None, loaded())
    assert not status.present
    assert status.image_id == CONFIG
    assert "no registry digest" in status.reason


@pytest.mark.parametrize("image", [pulled(digest=OTHER_DIGEST, image_id=OTHER_CONFIG), loaded(OTHER_CONFIG)])
def test_stale_tag_is_not_present(image):
    status = decide_status(REF, DIGEST, CONFIG, image, {}, ("x/y:1",))
    assert not status.present
    assert status.image_id == OTHER_CONFIG
    assert f"source is {DIGEST}" in status.reason
    assert status.missing_tags == ("x/y:1",)


def test_tag_as_missing_and_pointing_elsewhere_and_done():
    targets = ("nvcr.io/nvidia/pytorch:24.01-py3", "ngc/pytorch:24.01-py3", "site/pytorch:24.01-py3")
    tagged = {
        "nvcr.io/nvidia/pytorch:24.01-py3": pulled(),
        "ngc/pytorch:24.01-py3": EngineImage(id=OTHER_CONFIG),
        "site/pytorch:24.01-py3": None,
    }
    status = decide_status(REF, DIGEST, None, pulled(), tagged, targets)
    assert status.present
    assert not status.up_to_date
    assert status.missing_tags == ("ngc/pytorch:24.01-py3", "site/pytorch:24.01-py3")
    assert "not yet tagged as ngc/pytorch:24.01-py3, site/pytorch:24.01-py3" in status.reason


def test_all_tags_in_place_is_up_to_date():
    targets = ("nvcr.io/nvidia/pytorch:24.01-py3",)
    status = decide_status(REF, DIGEST, CONFIG, loaded(), {targets[0]: loaded()}, targets)
    assert status.up_to_date
    assert status.as_dict()["missing_tags"] == []


def test_no_digest_to_compare_trusts_the_tag():
    status = decide_status(REF, None, None, loaded())
    assert status.present and status.matched_by == "tag"


def test_engine_image_from_inspect():
    image = EngineImage.from_inspect(
        {
            "Id": CONFIG,
            "RepoTags": None,
            "RepoDigests": [f"{NAME}@{DIGEST}", f"a/b@{OTHER_DIGEST}"],
            "Architecture": "amd64",
            "Os": "linux",
        }
    )
    assert image.repo_tags == ()
    assert image.digests == frozenset((DIGEST, OTHER_DIGEST))
    assert image.as_dict()["architecture"] == "amd64"


# -- names ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "text, name",
    [
        ("nvcr.io/nvidia/pytorch:1", "nvcr.io/nvidia/pytorch"),
        ("127.0.0.1:5000/nvidia/x:1", "127.0.0.1:5000/nvidia/x"),
        ("docker.io/library/busybox:1", "busybox"),
        ("docker.io/nvidia/cuda:12", "nvidia/cuda"),
        ("library/busybox", "busybox"),
        ("nvidia/cuda", "nvidia/cuda"),
        ("localhost/a/b", "localhost/a/b"),
    ],
)
def test_familiar_name(text, name):
    assert familiar_name(ImageReference.parse(text)) == name


def test_engine_key():
    assert engine_key(REF) == f"{NAME}:24.01-py3"
    assert engine_key(ImageReference.parse(f"nvcr.io/nvidia/x@{DIGEST}")) == f"nvcr.io/nvidia/x@{DIGEST}"
    assert engine_key(ImageReference.parse(f"nvcr.io/nvidia/x:1@{DIGEST}")) == "nvcr.io/nvidia/x:1"
    assert engine_key(ImageReference.parse("nvcr.io/nvidia/x")) == "nvcr.io/nvidia/x:latest"


def test_tag_targets_keep_the_tag_unless_given_and_drop_duplicates():
    targets = tag_targets(
        REF, ["nvcr.io/nvidia/pytorch", "127.0.0.1:5000/site/pytorch:stable", "nvcr.io/nvidia/pytorch", NAME]
    )
    assert targets == ("nvcr.io/nvidia/pytorch:24.01-py3", "127.0.0.1:5000/site/pytorch:stable")
    assert tag_targets(REF, None) == ()


def test_tag_targets_host_and_prefix_forms_keep_repository_and_tag():
    targets = tag_targets(
        REF, ["nvcr.io", "127.0.0.1:5000", "registry.site.example/ngc/", "localhost", "registry.site.example"]
    )
    assert targets == (
        "nvcr.io/nvidia/pytorch:24.01-py3",
        "127.0.0.1:5000/nvidia/pytorch:24.01-py3",
        "registry.site.example/ngc/nvidia/pytorch:24.01-py3",
        "localhost/nvidia/pytorch:24.01-py3",
    )


def test_tag_targets_plain_word_is_a_repository():
    assert tag_targets(REF, ["pytorch"]) == ("pytorch:24.01-py3",)


def test_tag_targets_refuse_digests_and_missing_tags():
    with pytest.raises(ConfigError, match="not a digest"):
        tag_targets(REF, [f"x/y@{DIGEST}"])
    with pytest.raises(ConfigError, match="invalid image reference"):
        tag_targets(REF, ["Bad Name/x"])
    with pytest.raises(ConfigError, match="not a digest"):
        tag_targets(REF, [f"x/y@{DIGEST}"])
    with pytest.raises(ConfigError, match="has no tag to keep"):
        tag_targets(ImageReference.parse(f"nvcr.io/nvidia/x@{DIGEST}"), ["site/x"])
    assert tag_targets(ImageReference.parse(f"nvcr.io/nvidia/x@{DIGEST}"), ["site/x:v1"]) == ("site/x:v1",)


# -- host ----------------------------------------------------------------------------------------------------------
def test_host_default_is_the_local_socket():
    assert resolve_host(None, {}) == DEFAULT_HOST == "unix:///var/run/docker.sock"
    assert resolve_host("", {"DOCKER_HOST": "  "}) == DEFAULT_HOST


def test_host_from_docker_host_env():
    assert resolve_host(None, {"DOCKER_HOST": "unix:///tmp/d/docker.sock"}) == "unix:///tmp/d/docker.sock"
    assert resolve_host(None, {"DOCKER_HOST": "tcp://10.0.0.5:2376"}) == "tcp://10.0.0.5:2376"


def test_explicit_host_wins_and_a_path_is_a_socket():
    assert resolve_host("tcp://gpu01:2375", {"DOCKER_HOST": "unix:///x.sock"}) == "tcp://gpu01:2375"
    assert resolve_host("/run/user/1000/docker.sock", {}) == "unix:///run/user/1000/docker.sock"


def test_bad_host_is_a_config_error():
    with pytest.raises(ConfigError, match="invalid Docker engine address 'gpu01:2375'"):
        resolve_host("gpu01:2375", {})


def test_engine_uses_the_environment_given():
    assert DockerEngine(environ={"DOCKER_HOST": "unix:///srv/d.sock"}, client=object()).host == "unix:///srv/d.sock"
    assert (
        DockerEngine("ssh://admin@gpu01", environ={"DOCKER_HOST": "unix:///srv/d.sock"}, client=object()).host
        == "ssh://admin@gpu01"
    )


# -- errors --------------------------------------------------------------------------------------------------------
def test_error_types_fit_the_shared_hierarchy():
    assert issubclass(EngineAuthError, AuthError) and issubclass(EngineAuthError, EngineError)
    assert issubclass(EngineNotFoundError, NotFoundError) and issubclass(EngineNotFoundError, EngineError)
    assert issubclass(ArchiveMissingError, ConfigError)
    assert issubclass(EngineUnreachableError, AirgapError)
    assert issubclass(DockerSdkMissingError, AirgapError) and DockerSdkMissingError.library == "docker"


@pytest.mark.parametrize(
    "status, detail, kind",
    [
        (401, "whatever", "auth"),
        (403, "", "auth"),
        (500, 'Head "http://r/v2/x/manifests/1": no basic auth credentials', "auth"),
        (None, "unauthorized: authentication required", "auth"),
        (404, "manifest for r/x:nope not found: manifest unknown: manifest unknown", "not_found"),
        (None, "manifest unknown", "not_found"),
        (
            500,
            "pull access denied for x, repository does not exist or may require 'docker login': denied: requested access to the resource is denied",
            "auth",
        ),
        (500, "no space left on device", "other"),
    ],
)
def test_classify_error(status, detail, kind):
    assert classify_error(status, detail) == kind


def test_pull_refused_says_check_the_credentials_and_hides_the_password():
    error = pull_error(
        "unix:///var/run/docker.sock", REF, 500, f"Get https://x/token?password={PASSWORD}: unauthorized", [PASSWORD]
    )
    assert isinstance(error, EngineAuthError)
    assert error.status == 401
    assert str(error).startswith(
        "401 from registry.site.example for nvidia/pytorch when the Docker engine at unix:///var/run/docker.sock pulled it"
    )
    assert "check the registry credentials" in str(error)
    assert PASSWORD not in str(error)
    assert "********" in str(error)


def test_pull_not_found_and_other_wording():
    missing = pull_error("unix:///s", REF, 404, "manifest unknown")
    assert isinstance(missing, EngineNotFoundError) and missing.status == 404
    assert "registry.site.example has no such image; check the name, tag and digest" in str(missing)
    other = pull_error("unix:///s", REF, 500, "no space left on device")
    assert isinstance(other, EngineError) and not isinstance(other, (EngineAuthError, EngineNotFoundError))
    assert str(other) == f"the Docker engine at unix:///s could not pull {REF}: no space left on device"


def test_scrub_masks_every_secret_and_ignores_empty_ones():
    assert scrub(f"a {PASSWORD} b {PASSWORD}", [None, "", PASSWORD]) == "a ******** b ********"
    assert scrub("nothing here", [None]) == "nothing here"


def test_unreachable_message_names_the_host_and_what_to_do():
    message = _engine.unreachable_message("unix:///var/run/docker.sock", "No such file or directory")
    assert message == (
        "cannot reach the Docker engine at unix:///var/run/docker.sock (No such file or directory): "
        "is dockerd running? Set docker.host (or DOCKER_HOST) to its address"
    )


def test_sdk_missing_raises_an_error_the_module_turns_into_missing_required_lib(monkeypatch):
    monkeypatch.setattr(_engine, "HAS_DOCKER", False)
    monkeypatch.setattr(_engine, "DOCKER_IMPORT_ERROR", "Traceback ... ModuleNotFoundError: No module named 'docker'")
    engine = DockerEngine("unix:///nowhere.sock", environ={})
    with pytest.raises(DockerSdkMissingError, match="docker Python SDK is required") as caught:
        engine.inspect("nvcr.io/nvidia/x:1")
    assert caught.value.library == "docker"
    assert "No module named 'docker'" in caught.value.import_error


def test_archive_missing_is_reported_before_the_engine_is_contacted(tmp_path):
    engine = DockerEngine("unix:///nowhere.sock", client=FakeClient(FakeApi()), environ={})
    path = str(tmp_path / "nvidia" / "pytorch" / "24.01-py3.tar")
    with pytest.raises(ArchiveMissingError, match="does not exist") as caught:
        engine.load(path)
    assert caught.value.path == path
    assert path in str(caught.value)
    assert engine.api.calls == []


# -- the engine with a stand-in SDK client ---------------------------------------------------------------------------
class FakeApi:
    """Records calls; answers like the SDK's APIClient."""

    def __init__(self, pull_stream=None, load_stream=None, images=None, raise_on_pull=None):
        self.calls = []
        self.pull_stream = pull_stream or []
        self.load_stream = load_stream or []
        self.images = images or {}
        self.raise_on_pull = raise_on_pull
        self.body = b""

    def pull(self, repository, tag=None, stream=False, decode=False, auth_config=None, platform=None):
        self.calls.append(("pull", repository, tag, auth_config, platform))
        if self.raise_on_pull:
            raise self.raise_on_pull
        return iter(self.pull_stream)

    def load_image(self, data, quiet=None):
        chunks = []
        while True:
            block = data.read(16384)
            if not block:
                break
            chunks.append(block)
        self.body = b"".join(chunks)
        self.calls.append(("load", len(chunks), quiet))
        return iter(self.load_stream)

    def tag(self, image, repository, tag=None):
        self.calls.append(("tag", image, repository, tag))
        return True

    def inspect_image(self, key):
        self.calls.append(("inspect", key))
        if key in self.images:
            return self.images[key]
        docker_errors = pytest.importorskip("docker.errors")
        raise docker_errors.ImageNotFound(
            "404 Client Error", response=NotFoundResponse(), explanation=f"No such image: {key}"
        )


class NotFoundResponse:
    status_code = 404
    reason = "Not Found"
    url = "http+docker://localhost/v1.41/images/x/json"


class FakeClient:
    def __init__(self, api):
        self.api = api

    def close(self):
        pass


def engine_with(api: FakeApi) -> DockerEngine:
    return DockerEngine("unix:///tmp/test.sock", client=FakeClient(api), environ={})


def test_pull_passes_credentials_only_as_auth_config_and_returns_the_digest():
    api = FakeApi(
        pull_stream=[
            {"status": "Pulling from nvidia/pytorch"},
            {"status": "Downloading", "progressDetail": {"current": 1}},
            {"status": f"Digest: {DIGEST}"},
            {"status": f"Status: Downloaded newer image for {REF}"},
        ]
    )
    assert engine_with(api).pull(REF, username="mirror", password=PASSWORD, platform="linux/amd64") == DIGEST
    assert api.calls == [("pull", NAME, "24.01-py3", {"username": "mirror", "password": PASSWORD}, "linux/amd64")]


def test_pull_without_credentials_sends_no_auth_config():
    api = FakeApi(pull_stream=[{"status": f"Digest: {DIGEST}"}])
    engine_with(api).pull("nvcr.io/nvidia/x:1")
    assert api.calls[0][3] is None


def test_pull_by_digest_then_tag():
    api = FakeApi(pull_stream=[{"status": f"Digest: {DIGEST}"}])
    assert engine_with(api).pull(f"nvcr.io/nvidia/x:1@{DIGEST}") == DIGEST
    assert api.calls == [
        ("pull", "nvcr.io/nvidia/x", DIGEST, None, None),
        ("tag", f"nvcr.io/nvidia/x@{DIGEST}", "nvcr.io/nvidia/x", "1"),
    ]


def test_pull_error_in_the_stream_is_classified_and_scrubbed():
    api = FakeApi(
        pull_stream=[
            {"status": "Pulling"},
            {"errorDetail": {"message": f"unauthorized: bad {PASSWORD}"}, "error": "unauthorized"},
        ]
    )
    with pytest.raises(EngineAuthError) as caught:
        engine_with(api).pull(REF, username="mirror", password=PASSWORD)
    assert "check the registry credentials" in str(caught.value)
    assert PASSWORD not in str(caught.value)


def test_pull_api_error_is_classified_and_scrubbed():
    docker_errors = pytest.importorskip("docker.errors")

    class Response:
        status_code = 404
        reason = "Not Found"
        url = f"http+docker://localhost/v1.41/images/create?password={PASSWORD}"

    error = docker_errors.APIError("404 Client Error", response=Response(), explanation="manifest unknown")
    api = FakeApi(raise_on_pull=error)
    with pytest.raises(EngineNotFoundError) as caught:
        engine_with(api).pull(REF, username="mirror", password=PASSWORD)
    assert "has no such image" in str(caught.value)
    assert PASSWORD not in str(caught.value)


def test_connection_refused_midway_is_reported_as_unreachable():
    requests_errors = pytest.importorskip("requests.exceptions")
    api = FakeApi(raise_on_pull=requests_errors.ConnectionError(ConnectionRefusedError(111, "Connection refused")))
    with pytest.raises(
        EngineUnreachableError, match=r"cannot reach the Docker engine at unix:///tmp/test.sock \(Connection refused\)"
    ):
        engine_with(api).pull(REF)


def test_load_streams_the_file_in_blocks_and_returns_what_was_loaded(tmp_path):
    archive = tmp_path / "x.tar"
    archive.write_bytes(b"x" * (3 * 1024 * 1024 + 5))
    api = FakeApi(load_stream=[{"stream": "Loading layer"}, {"stream": f"Loaded image: {NAME}:24.01-py3\n"}])
    assert engine_with(api).load(str(archive)) == [f"{NAME}:24.01-py3"]
    assert api.body == archive.read_bytes()
    assert api.calls == [("load", 4, False)]


def test_load_error_in_the_stream(tmp_path):
    archive = tmp_path / "x.tar"
    archive.write_bytes(b"junk")
    api = FakeApi(load_stream=[{"errorDetail": {"message": "archive/tar: invalid tar header"}, "error": "x"}])
    with pytest.raises(
        EngineError, match="could not load .*x.tar: archive/tar: invalid tar header; is it a docker archive"
    ):
        engine_with(api).load(str(archive))


def test_status_asks_for_the_tag_then_each_tag_as_name():
    pytest.importorskip("docker.errors")
    api = FakeApi(images={f"{NAME}:24.01-py3": {"Id": CONFIG, "RepoTags": [f"{NAME}:24.01-py3"], "RepoDigests": []}})
    status = engine_with(api).status(REF, DIGEST, CONFIG, tag_as=["nvcr.io/nvidia/pytorch"])
    assert status.present and status.matched_by == "config_digest"
    assert status.missing_tags == ("nvcr.io/nvidia/pytorch:24.01-py3",)
    assert api.calls == [("inspect", f"{NAME}:24.01-py3"), ("inspect", "nvcr.io/nvidia/pytorch:24.01-py3")]


def test_status_of_a_digest_reference_falls_back_to_the_image_id():
    pytest.importorskip("docker.errors")
    api = FakeApi(images={CONFIG: {"Id": CONFIG, "RepoTags": [], "RepoDigests": []}})
    status = engine_with(api).status(f"nvcr.io/nvidia/x@{DIGEST}", DIGEST, CONFIG)
    assert status.present
    assert api.calls == [("inspect", f"nvcr.io/nvidia/x@{DIGEST}"), ("inspect", CONFIG)]


def test_stream_helpers():
    assert digest_from_status(["Status: x", f"Digest: {DIGEST}"]) == DIGEST
    assert digest_from_status([]) is None
    assert loaded_from_status([f"Loaded image ID: {CONFIG}", "Loaded image: a/b:1", "Loaded image: a/b:1"]) == [
        CONFIG,
        "a/b:1",
    ]
    assert drain([{"status": "Downloading"}, {"status": f"Digest: {DIGEST}"}, "not a dict"]) == [f"Digest: {DIGEST}"]


def test_unreachable_socket_gives_the_clear_message(tmp_path):
    pytest.importorskip("docker")
    engine = DockerEngine(f"unix://{tmp_path}/docker.sock", timeout=5, environ={})
    with pytest.raises(EngineUnreachableError) as caught:
        engine.ping()
    assert str(caught.value) == (
        f"cannot reach the Docker engine at unix://{tmp_path}/docker.sock (No such file or directory): "
        "is dockerd running? Set docker.host (or DOCKER_HOST) to its address"
    )
    assert caught.value.host == f"unix://{tmp_path}/docker.sock"
