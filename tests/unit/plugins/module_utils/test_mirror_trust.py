# Copyright (c) airgap.ngc contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Where credentials go, which references are sources, and the task's failure message (no network)."""

from __future__ import annotations

from typing import Any

import pytest

from ansible_collections.airgap.ngc.plugins.module_utils._types.errors import ConfigError
from ansible_collections.airgap.ngc.plugins.module_utils._transports.destinations import spool_budget
from ansible_collections.airgap.ngc.plugins.module_utils._copy.copier import Mirror
from ansible_collections.airgap.ngc.plugins.module_utils._types.plan import failure_summary, source_images


def params(**extra: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "images": ["nvidia/pytorch:24.01-py3"],
        "registry_url": "https://nvcr.io",
        "username": "$oauthtoken",
        "api_key": "ngc-key",
        "validate_certs": True,
        "ca_path": None,
        "timeout": 5.0,
        "retries": 0,
        "facts_file": "/nonexistent/f.fact",
        "registry": None,
        "archive": None,
        "docker": None,
        "offline": False,
        "platforms": None,
        "parallel": 1,
        "force": False,
    }
    base.update(extra)
    return base


def test_credentials_go_only_to_the_host_they_were_given_for() -> None:
    mirror = Mirror(
        params(
            registry={"url": "https://registry.site.example:5000", "username": "mirror", "password": "pw"},
            docker={"host": "unix:///nonexistent.sock"},
        )
    )
    credentials_for = mirror.destinations[-1].credentials_for
    assert credentials_for("nvcr.io") == ("$oauthtoken", "ngc-key")
    assert credentials_for("registry.site.example:5000") == ("mirror", "pw")
    for other in ("somehost:5000", "docker.io", "registry.site.example", None):
        assert credentials_for(other) == (None, None), other


def test_a_registry_without_a_password_gets_no_credentials() -> None:
    mirror = Mirror(
        params(
            api_key=None,
            registry={"url": "http://127.0.0.1:5000", "username": "mirror", "password": None},
            docker={"host": "unix:///nonexistent.sock"},
        )
    )
    credentials_for = mirror.destinations[-1].credentials_for
    assert credentials_for("127.0.0.1:5000") == (None, None)
    assert credentials_for("nvcr.io") == (None, None)


@pytest.mark.parametrize(
    "reference", ["somehost:5000/nvidia/pytorch:24.03-py3", "docker.io/library/ubuntu:22.04", "localhost/x:1"]
)
def test_a_reference_on_another_registry_is_refused_naming_both(reference: str) -> None:
    with pytest.raises(ConfigError) as caught:
        source_images(["nvidia/cuda:12.2.0", reference], "https://nvcr.io")
    message = str(caught.value)
    assert message.startswith(f"images item 2 ({reference}) names the registry {reference.split('/', 1)[0]}")
    assert "registry_url https://nvcr.io (nvcr.io)" in message


def test_the_source_host_may_be_named_and_offline_names_are_kept() -> None:
    (image,) = source_images(["nvcr.io/nvidia/pytorch:24.01-py3", "nvidia/pytorch:24.01-py3"], "https://nvcr.io")
    assert image.key == "nvcr.io/nvidia/pytorch:24.01-py3"
    (offline,) = source_images(["127.0.0.1:5000/nvidia/pytorch:24.01-py3"], "https://nvcr.io", check_host=False)
    assert offline.key == "127.0.0.1:5000/nvidia/pytorch:24.01-py3"


def test_failure_summary_counts_and_shortens() -> None:
    messages = [f"img{n}: " + "x" * (50 if n else 1000) for n in range(7)]
    summary = failure_summary({"images": [{}] * 9, "failure_messages": messages})
    assert summary.startswith("7 of 9 image(s) could not be copied: img0: xxx")
    assert "img2" in summary and "img3" not in summary and "(and 4 more)" in summary
    assert len(summary) < 600


def test_spool_budget_is_half_of_what_the_archive_leaves(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    class Stat:
        f_bavail, f_frsize = 1000, 1024

    monkeypatch.setattr("os.statvfs", lambda path: Stat())
    assert spool_budget(str(tmp_path), 24 * 1024) == 488 * 1024
    assert spool_budget(str(tmp_path), 2000 * 1024) == 0
