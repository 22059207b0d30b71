# Copyright (c) airgap.ngc contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What ngc_catalog_info says when the NGC API, its token endpoint, the registry or the TLS settings fail:
one line naming the host, the status and the attempts, the server's reason, never a secret."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest


def base_args(testbed: Any, **extra: Any) -> dict[str, Any]:
    args = {"api_url": testbed.ngc_api_url, "registry_url": testbed.source_registry_url, "include_digests": False}
    args.update(extra)
    return args


def ngc_host(testbed: Any) -> str:
    return urlsplit(testbed.ngc_api_url).netloc


def failure(run: Any, testbed: Any) -> str:
    """The one-line message of a failed run; no traceback, no library wrapping, no secret anywhere in the output."""
    assert run.rc != 0, run.stdout
    assert "| FAILED! =>" in run.stdout, run.stdout + run.stderr
    msg = run.result["msg"]
    assert "\n" not in msg and "Traceback" not in msg
    assert "Pool(" not in msg and "Max retries exceeded" not in msg
    assert testbed.api_key not in run.stdout + run.stderr
    return msg


def test_token_endpoint_503_storm_names_status_host_and_attempts(ansible: Any, testbed: Any, faults: Any) -> None:
    faults.ngc(status=503, count=None, retry_after=0, path_prefix="/token")
    run = ansible.module("ngc_catalog_info", base_args(testbed, retries=2), api_key=testbed.api_key)
    msg = failure(run, testbed)
    assert msg == f"503 from {ngc_host(testbed)} for a token (/token) after 3 attempts: testbed fault 503"
    assert faults.stats("ngc")["paths"].get("/token") == 3


def test_token_endpoint_429_burst_is_ridden_out(ansible: Any, testbed: Any, faults: Any) -> None:
    faults.ngc(status=429, count=2, retry_after=1, path_prefix="/token")
    run = ansible.module("ngc_catalog_info", base_args(testbed, images=["pytorch"]), api_key=testbed.api_key)
    assert run.rc == 0, run.stdout
    assert run.result["images"]
    assert faults.stats("ngc")["faults_served"] == 2


def test_a_storm_without_retry_after_is_given_up_in_seconds(ansible: Any, testbed: Any, faults: Any) -> None:
    faults.ngc(status=503, count=None, path_prefix="/v2/org/")
    started = time.monotonic()
    run = ansible.module("ngc_catalog_info", base_args(testbed, retries=6), api_key=testbed.api_key)
    elapsed = time.monotonic() - started
    msg = failure(run, testbed)
    assert msg == f"503 from {ngc_host(testbed)} for org 'nvidia' after 7 attempts: testbed fault 503"
    assert elapsed < 30, f"six waits took {elapsed:.0f} s"  # uncapped doubling (1+2+...+32 s) would take 31-63 s


def test_wrong_key_keeps_the_servers_reason(ansible: Any, testbed: Any) -> None:
    run = ansible.module("ngc_catalog_info", base_args(testbed), api_key="not-the-key")
    msg = failure(run, testbed)
    assert msg.startswith(
        f"401 from {ngc_host(testbed)} when exchanging the NGC API key for a token: check the NGC API key"
    )
    assert "invalid NGC API key" in msg
    assert "not-the-key" not in run.stdout + run.stderr


def test_revoked_token_is_not_blamed_on_the_key(ansible: Any, testbed: Any, faults: Any) -> None:
    faults.ngc(revoke_ngc_tokens=True)
    run = ansible.module("ngc_catalog_info", base_args(testbed), api_key=testbed.api_key)
    msg = failure(run, testbed)
    assert msg.startswith(f"401 from {ngc_host(testbed)} for org 'nvidia': ")
    assert "token revoked" in msg
    assert "check the NGC API key" not in msg
    assert faults.stats("ngc")["paths"].get("/token") == 2  # renewed once before giving up


def test_unknown_team_is_an_error_naming_team_and_org(ansible: Any, testbed: Any) -> None:
    run = ansible.module(
        "ngc_catalog_info", base_args(testbed, teams=["clara", "no-such-team"]), api_key=testbed.api_key
    )
    msg = failure(run, testbed)
    assert "no-such-team" in msg and "'nvidia'" in msg
    assert msg.startswith(f"404 from {ngc_host(testbed)}: team 'no-such-team' of org 'nvidia' not found")


@pytest.mark.parametrize(
    "option, value, what", [("teams", ["../.."], "team"), ("org", "../../etc", "org"), ("org", "nvidia/clara", "org")]
)
def test_path_segments_from_input_are_refused(
    ansible: Any, testbed: Any, faults: Any, option: str, value: Any, what: str
) -> None:
    run = ansible.module("ngc_catalog_info", base_args(testbed, **{option: value}), api_key=testbed.api_key)
    msg = failure(run, testbed)
    shown = value[0] if isinstance(value, list) else value
    assert f"'{shown}'" in msg and what in msg  # refused by the option checks or by the NGC client, before any request
    assert not [path for path in faults.stats("ngc")["paths"] if path != "/token"]  # the bearer token went nowhere


def test_plain_http_api_over_https_says_it_does_not_speak_https(ansible: Any, testbed: Any) -> None:
    api_url = testbed.ngc_api_url.replace("http://", "https://")
    run = ansible.module(
        "ngc_catalog_info", base_args(testbed, api_url=api_url, validate_certs=False), api_key=testbed.api_key
    )
    msg = failure(run, testbed)
    assert msg.startswith(f"TLS error talking to {ngc_host(testbed)}")
    assert "does not speak HTTPS" in msg
    assert "validate_certs" not in msg


def test_garbage_ca_file_is_one_short_line_naming_it(ansible: Any, testbed: Any, tmp_path: Path) -> None:
    ca = tmp_path / "not-a-ca.pem"
    ca.write_text("-----BEGIN GARBAGE-----\nnot a certificate\n")
    api_url = testbed.ngc_api_url.replace("http://", "https://")
    run = ansible.module(
        "ngc_catalog_info", base_args(testbed, api_url=api_url, ca_path=str(ca)), api_key=testbed.api_key
    )
    msg = failure(run, testbed)
    assert str(ca) in msg and "ca_path" in msg
    assert len(msg) - len(str(ca)) < 200


def test_registry_refusing_the_catalog_scope_does_not_blame_the_key(ansible: Any, testbed: Any, faults: Any) -> None:
    faults.ngc(deny_catalog=True)
    run = ansible.module(
        "ngc_catalog_info", {"source": "registry", "registry_url": testbed.source_registry_url}, api_key=testbed.api_key
    )
    msg = failure(run, testbed)
    assert msg.startswith(f"401 from {testbed.source_registry_host} for the catalog: the credentials were accepted")
    assert "may not list" in msg and "source=ngc" in msg
    assert "check the NGC API key" not in msg
