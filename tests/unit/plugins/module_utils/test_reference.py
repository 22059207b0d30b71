# Copyright (c) airgap.ngc contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Unit tests for _reference: image reference parsing and printing."""

from __future__ import annotations

import pytest

from ansible_collections.airgap.ngc.plugins.module_utils._types.errors import ConfigError
from ansible_collections.airgap.ngc.plugins.module_utils._types.reference import (
    ImageReference,
    is_digest,
    parse_reference,
    registry_host,
    registry_url,
    validate_digest,
)

DIGEST = "sha256:" + "0123456789abcdef" * 4


@pytest.mark.parametrize(
    "text, registry, repository, tag, digest",
    [
        ("nvidia/pytorch:24.01-py3", None, "nvidia/pytorch", "24.01-py3", None),
        ("nvcr.io/nvidia/pytorch:24.01-py3", "nvcr.io", "nvidia/pytorch", "24.01-py3", None),
        ("nvidia/clara/clara-parabricks:4.2.0-1", None, "nvidia/clara/clara-parabricks", "4.2.0-1", None),
        ("nvcr.io/nvidia/clara/clara-parabricks", "nvcr.io", "nvidia/clara/clara-parabricks", None, None),
        ("127.0.0.1:5000/nvidia/x:tag", "127.0.0.1:5000", "nvidia/x", "tag", None),
        ("localhost/nvidia/x", "localhost", "nvidia/x", None, None),
        ("localhost:5000/x", "localhost:5000", "x", None, None),
        ("registry.example.com:443/a/b/c/d:v1", "registry.example.com:443", "a/b/c/d", "v1", None),
        (f"nvidia/pytorch@{DIGEST}", None, "nvidia/pytorch", None, DIGEST),
        (f"nvidia/pytorch:24.01-py3@{DIGEST}", None, "nvidia/pytorch", "24.01-py3", DIGEST),
        (
            f"nvcr.io/nvidia/clara/clara-parabricks:4.2@{DIGEST}",
            "nvcr.io",
            "nvidia/clara/clara-parabricks",
            "4.2",
            DIGEST,
        ),
        ("pytorch", None, "pytorch", None, None),
        ("nvidia/l4t-tensorflow:r35.3.1-tf2.11-py3", None, "nvidia/l4t-tensorflow", "r35.3.1-tf2.11-py3", None),
        ("nvidia/a__b.c-d---e:_T", None, "nvidia/a__b.c-d---e", "_T", None),
        ("[::1]:5000/nvidia/x:1", "[::1]:5000", "nvidia/x", "1", None),
        ("  nvidia/pytorch:1  ", None, "nvidia/pytorch", "1", None),
    ],
)
def test_parse(text, registry, repository, tag, digest):
    ref = ImageReference.parse(text)
    assert (ref.registry, ref.repository, ref.tag, ref.digest) == (registry, repository, tag, digest)
    assert str(ref) == text.strip()
    assert ImageReference.parse(str(ref)) == ref


def test_team_image_parts():
    ref = ImageReference.parse("nvcr.io/nvidia/clara/clara-parabricks:4.2.0-1")
    assert (ref.org, ref.team, ref.image) == ("nvidia", "clara", "clara-parabricks")
    plain = ImageReference.parse("nvidia/pytorch:24.01-py3")
    assert (plain.org, plain.team, plain.image) == ("nvidia", None, "pytorch")
    assert ImageReference.parse("busybox").org is None


def test_default_registry_applies_only_without_host():
    assert ImageReference.parse("nvidia/pytorch:1", default_registry="https://nvcr.io/").registry == "nvcr.io"
    assert ImageReference.parse("nvidia/pytorch:1", default_registry="nvcr.io").registry == "nvcr.io"
    assert (
        ImageReference.parse("mirror.local:5000/nvidia/pytorch:1", default_registry="nvcr.io").registry
        == "mirror.local:5000"
    )
    assert str(parse_reference("nvidia/pytorch:1", "nvcr.io")) == "nvcr.io/nvidia/pytorch:1"


def test_manifest_reference_and_name():
    assert ImageReference.parse("nvidia/pytorch").manifest_reference == "latest"
    assert ImageReference.parse("nvidia/pytorch:1").manifest_reference == "1"
    assert ImageReference.parse(f"nvidia/pytorch:1@{DIGEST}").manifest_reference == DIGEST
    assert ImageReference.parse("nvcr.io/nvidia/pytorch:1").name == "nvcr.io/nvidia/pytorch"


def test_with_helpers():
    ref = ImageReference.parse("nvcr.io/nvidia/pytorch:1")
    assert str(ref.with_registry("http://127.0.0.1:5000")) == "127.0.0.1:5000/nvidia/pytorch:1"
    assert str(ref.with_registry(None)) == "nvidia/pytorch:1"
    assert str(ref.with_tag("2").with_digest(DIGEST)) == f"nvcr.io/nvidia/pytorch:2@{DIGEST}"
    with pytest.raises(ConfigError):
        ref.with_tag("-bad")
    with pytest.raises(ConfigError):
        ref.with_digest("sha256:abc")


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("", "empty"),
        ("   ", "empty"),
        ("nvidia/PyTorch:1", "PyTorch"),
        ("nvidia//pytorch", "empty path component"),
        ("/nvidia/pytorch", "empty path component"),
        ("nvidia/pytorch/", "empty path component"),
        ("nvidia/pytorch:", "tag ''"),
        ("nvidia/pytorch:-1", "tag '-1'"),
        ("nvidia/pytorch:" + "a" * 129, "tag"),
        ("nvidia/pytorch@sha256:abc", "digest"),
        ("nvidia/pytorch@md5:" + "0" * 32, "digest"),
        ("nvidia/pytorch@sha256:" + "A" * 64, "digest"),
        ("nvidia/py torch", "white space"),
        ("nvcr.io:bad/nvidia/x", "registry host"),
        ("nvidia/-pytorch", "-pytorch"),
        ("nvidia/pytorch_", "pytorch_"),
        ("nvcr.io/", "empty"),
        ("a/" * 130 + "b", "longer than"),
    ],
)
def test_parse_rejects(text, fragment):
    with pytest.raises(ConfigError) as excinfo:
        ImageReference.parse(text)
    message = str(excinfo.value)
    assert fragment in message
    assert repr(text) in message


def test_parse_rejects_non_string():
    with pytest.raises(ConfigError):
        ImageReference.parse(None)  # type: ignore[arg-type]


def test_digest_helpers():
    assert is_digest(DIGEST)
    assert is_digest("sha512:" + "ab" * 64)
    assert not is_digest("sha256:" + "0" * 63)
    assert not is_digest("sha512:" + "0" * 64)
    assert not is_digest(None)
    assert (
        not is_digest(12) and not is_digest({"digest": DIGEST}) and not is_digest(DIGEST.upper())
    )  # a record's value of any type
    assert validate_digest(DIGEST) == DIGEST
    with pytest.raises(ConfigError, match="sha256:zz"):
        validate_digest("sha256:zz")


@pytest.mark.parametrize(
    "value, host, url",
    [
        ("https://nvcr.io", "nvcr.io", "https://nvcr.io"),
        ("https://nvcr.io/", "nvcr.io", "https://nvcr.io"),
        ("nvcr.io", "nvcr.io", "https://nvcr.io"),
        ("http://127.0.0.1:5000/v2/", "127.0.0.1:5000", "http://127.0.0.1:5000"),
        ("127.0.0.1:5000", "127.0.0.1:5000", "https://127.0.0.1:5000"),
        ("https://user@mirror.local:8443", "mirror.local:8443", "https://mirror.local:8443"),
    ],
)
def test_registry_host_and_url(value, host, url):
    assert registry_host(value) == host
    assert registry_url(value) == url


@pytest.mark.parametrize("value", ["", "ftp://nvcr.io", "https://", "bad host", "-x.io"])
def test_registry_host_rejects(value):
    with pytest.raises(ConfigError):
        registry_host(value)
