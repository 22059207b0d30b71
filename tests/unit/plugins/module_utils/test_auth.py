# Copyright (c) airgap.ngc contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Unit tests for _auth: WWW-Authenticate parsing, the token cache and token fetching (no network)."""

from __future__ import annotations

import base64
import threading
import time

import pytest

from ansible_collections.airgap.ngc.plugins.module_utils._http.auth import (
    Challenge,
    Token,
    TokenCache,
    basic_auth_header,
    fetch_token,
    parse_challenges,
    select_challenge,
    token_key,
)
from ansible_collections.airgap.ngc.plugins.module_utils._types.errors import AuthError, RegistryError

SECRET = "nvapi-very-secret-key"


@pytest.mark.parametrize(
    "header, expected",
    [
        (
            'Bearer realm="https://nvcr.io/proxy_auth",service="ngc",scope="repository:nvidia/pytorch:pull"',
            [
                (
                    "bearer",
                    {
                        "realm": "https://nvcr.io/proxy_auth",
                        "service": "ngc",
                        "scope": "repository:nvidia/pytorch:pull",
                    },
                )
            ],
        ),
        (
            'Bearer realm="https://auth.example/token", service="registry", scope="repository:a:pull,push"',
            [
                (
                    "bearer",
                    {"realm": "https://auth.example/token", "service": "registry", "scope": "repository:a:pull,push"},
                )
            ],
        ),
        (
            'Bearer realm="https://authn.nvidia.com/token",service="registry",error="invalid_token"',
            [("bearer", {"realm": "https://authn.nvidia.com/token", "service": "registry", "error": "invalid_token"})],
        ),
        ('Basic realm="Registry Realm"', [("basic", {"realm": "Registry Realm"})]),
        ('BASIC Realm="x"', [("basic", {"realm": "x"})]),
        (
            'Basic realm="r1", Bearer realm="https://t/token",scope="repository:a/b/c:pull,push"',
            [
                ("basic", {"realm": "r1"}),
                ("bearer", {"realm": "https://t/token", "scope": "repository:a/b/c:pull,push"}),
            ],
        ),
        ("Bearer realm=https://t/token,service=reg", [("bearer", {"realm": "https://t/token", "service": "reg"})]),
        ('Bearer realm="a\\"b,c"', [("bearer", {"realm": 'a"b,c'})]),
        ('Bearer realm="unterminated', [("bearer", {"realm": "unterminated"})]),
        ("Basic", [("basic", {})]),
        ("", []),
        (None, []),
    ],
)
def test_parse_challenges(header, expected):
    got = [(c.scheme, c.params) for c in parse_challenges(header)]
    assert got == expected


def test_challenge_properties_and_token68():
    [negotiate, bearer] = parse_challenges(
        'Negotiate YWJj==, Bearer realm="r",service="s",scope="x",error="invalid_token"'
    )
    assert negotiate.scheme == "negotiate" and negotiate.token68 == "YWJj=="
    assert (bearer.realm, bearer.service, bearer.scope, bearer.error) == ("r", "s", "x", "invalid_token")


def test_select_challenge_prefers_bearer():
    challenges = parse_challenges('Basic realm="b", Bearer realm="t"')
    assert select_challenge(challenges).scheme == "bearer"
    assert select_challenge(parse_challenges('Basic realm="b"')).scheme == "basic"
    assert select_challenge([Challenge("negotiate")]) is None
    assert select_challenge([]) is None


def test_basic_auth_header():
    header = basic_auth_header("$oauthtoken", "key:with:colons")
    assert header.startswith("Basic ")
    assert base64.b64decode(header[6:]).decode() == "$oauthtoken:key:with:colons"


def test_token_repr_hides_value():
    token = Token.issue("tok-value", 60, 0.0)
    assert "tok-value" not in repr(token)
    assert token.expires_at == 60.0
    assert token.refresh_at == 50.0  # 10 s early
    assert Token.issue("t", 4, 0.0).refresh_at == 3.0  # a quarter early for short lives


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_cache_expiry_and_refresh_margin():
    clock = Clock()
    cache = TokenCache(clock=clock)
    key = token_key("https://t/token", "svc", "repository:a:pull")
    cache.put(key, Token.issue("one", 60, clock.now))
    assert cache.get(key).value == "one"
    assert cache.get(token_key("https://t/token", "svc", "repository:b:pull")) is None
    clock.now += 49
    assert cache.get(key).value == "one"
    clock.now += 2  # within 10 s of expiry: due for renewal
    assert cache.get(key) is None


def test_get_or_fetch_fetches_only_when_needed():
    clock = Clock()
    cache = TokenCache(clock=clock)
    key = token_key("r", None, "s")
    fetched = []

    def fetch():
        fetched.append(1)
        return Token.issue(f"t{len(fetched)}", 60, clock.now)

    assert cache.get_or_fetch(key, fetch).value == "t1"
    assert cache.get_or_fetch(key, fetch).value == "t1"
    clock.now += 55
    assert cache.get_or_fetch(key, fetch).value == "t2"
    assert len(fetched) == 2


def test_invalidate_only_the_token_that_failed():
    cache = TokenCache(clock=Clock())
    key = token_key("r", "s", "x")
    cache.put(key, Token.issue("new", 60, 1000.0))
    cache.invalidate(key, "old")  # another thread already renewed it
    assert cache.get(key).value == "new"
    cache.invalidate(key, "new")
    assert cache.get(key) is None
    cache.put(key, Token.issue("again", 60, 1000.0))
    cache.invalidate(key)
    assert cache.get(key) is None


def test_get_or_fetch_concurrent_callers_fetch_once():
    cache = TokenCache()
    key = token_key("r", "s", "x")
    calls = []
    lock = threading.Lock()

    def fetch():
        with lock:
            calls.append(1)
        time.sleep(0.05)
        return Token.issue("shared", 60, time.monotonic())

    results = []
    threads = [
        threading.Thread(target=lambda: results.append(cache.get_or_fetch(key, fetch).value)) for _index in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == ["shared"] * 8
    assert len(calls) == 1


class FakeResponse:
    def __init__(self, status, data=None, text=None):
        self.status_code = status
        self._data = data
        self._text = text

    def json(self):
        if self._data is None:
            raise ValueError("not JSON")
        return self._data


class FakeGet:
    def __init__(self, response):
        self.response = response
        self.calls = []

    def __call__(self, url, params=None, auth=None):
        self.calls.append((url, list(params or []), auth))
        return self.response


def test_fetch_token_sends_service_scopes_and_basic_credentials():
    get = FakeGet(FakeResponse(200, {"token": "abc", "expires_in": 300}))
    token = fetch_token(
        get,
        "https://nvcr.io/proxy_auth",
        "ngc",
        "repository:a:pull,push repository:b:pull",
        "$oauthtoken",
        SECRET,
        clock=lambda: 0.0,
    )
    assert token.value == "abc"
    assert token.expires_at == 300.0
    [(url, params, auth)] = get.calls
    assert url == "https://nvcr.io/proxy_auth"
    assert ("service", "ngc") in params
    assert [v for k, v in params if k == "scope"] == ["repository:a:pull,push", "repository:b:pull"]
    assert ("account", "$oauthtoken") in params
    assert auth == ("$oauthtoken", SECRET)


def test_fetch_token_anonymous_and_access_token_and_default_lifetime():
    get = FakeGet(FakeResponse(200, {"access_token": "xyz"}))
    token = fetch_token(get, "https://auth/token", None, None, clock=lambda: 10.0)
    assert token.value == "xyz"
    assert token.expires_at == 70.0  # 60 s default
    [(_url, params, auth)] = get.calls
    assert params == []
    assert auth is None


@pytest.mark.parametrize("expires_in", [0, -5, "60", True, None])
def test_fetch_token_ignores_unusable_expires_in(expires_in):
    get = FakeGet(FakeResponse(200, {"token": "t", "expires_in": expires_in}))
    assert fetch_token(get, "https://auth/token", "s", "x", clock=lambda: 0.0).expires_at == 60.0


def test_fetch_token_refused_is_auth_error_without_secret():
    get = FakeGet(FakeResponse(401, {"details": f"incorrect username or password {SECRET}"}))
    with pytest.raises(AuthError) as excinfo:
        fetch_token(
            get,
            "https://authn.nvidia.com/token?x=1",
            "registry",
            "repository:nvidia/pytorch:pull",
            "$oauthtoken",
            SECRET,
        )
    message = str(excinfo.value)
    assert excinfo.value.status == 401
    assert "authn.nvidia.com" in message
    assert "repository:nvidia/pytorch:pull" in message
    assert "incorrect username or password" in message
    assert SECRET not in message


def test_fetch_token_anonymous_refused_says_no_credentials():
    get = FakeGet(FakeResponse(403, None))
    with pytest.raises(AuthError, match="refused anonymous access"):
        fetch_token(get, "https://auth/token", "s", "x")


def test_fetch_token_server_error_is_registry_error_not_auth_error():
    get = FakeGet(FakeResponse(500, None))
    with pytest.raises(RegistryError) as excinfo:
        fetch_token(get, "https://auth/token", "s", "x")
    assert not isinstance(excinfo.value, AuthError)
    assert excinfo.value.status == 500


@pytest.mark.parametrize("data", [None, {"nothing": 1}, {"token": ""}, ["token"]])
def test_fetch_token_without_token_is_auth_error(data):
    with pytest.raises(AuthError, match="without"):
        fetch_token(FakeGet(FakeResponse(200, data)), "https://auth/token", "s", "x")


@pytest.mark.parametrize("realm", ["", "ftp://x/token", "/token"])
def test_fetch_token_rejects_unusable_realm(realm):
    get = FakeGet(FakeResponse(200, {"token": "t"}))
    with pytest.raises(AuthError, match="realm"):
        fetch_token(get, realm, "s", "x")
    assert get.calls == []
