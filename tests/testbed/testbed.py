# Copyright (c) airgap.ngc contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The whole test bed: NGC stand-in (its Helm repository too), four registries, fault proxy, Docker engine, seeded images
and charts.

``Testbed().up(workdir, scale)`` starts everything as background processes, seeds the token
registry and writes ``<workdir>/testbed.json`` (a ``TestbedInfo``); ``down()`` stops them by pid.
``Testbed.stop(workdir)`` stops a test bed another process started.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import shutil
import subprocess
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import requests

from .charts import HELM_PATH, seed_charts
from ._common import (
    ProcessRecord,
    TestbedError,
    python_env,
    python_module_argv,
    read_json,
    spawn,
    wait_ready_file,
    write_json,
)
from ._jwt import create_signing_identity
from .cdn import start_cdn
from .engine import Engine, launch_engine, wait_engine
from .registry import BasicAuth, Registry, TokenAuth, start_registry
from .seed import ORG, SCALES, seed_registry

INFO_FILE = "testbed.json"
SERVICE = "testbed-registry"
ISSUER = "airgap.ngc-testbed-token-issuer"
NGC_USERNAME = "$oauthtoken"
BASIC_USERNAME = "testbed"
ENV_CDN = "AIRGAP_TESTBED_CDN"
"""Set (to anything but empty or 0) to make up() start the CDN stand-in too (tests/testbed/cdn.py)."""
STOP_ORDER = (
    "cdn",
    "proxy",
    "registry-basic",
    "registry-open",
    "registry-k8s",
    "registry-token",
    "ngc",
    "dockerd",
    "containerd",
)


def _stop_all(records: list[ProcessRecord]) -> None:
    """Stop in dependency order: clients of a component before it, dockerd before its containerd."""
    rank = {name: index for index, name in enumerate(STOP_ORDER)}
    for record in sorted(records, key=lambda r: rank.get(r.name, -1)):
        record.stop()


@dataclass
class TestbedInfo:
    """Everything a test needs to reach the test bed; saved as <workdir>/testbed.json."""

    __test__ = False

    ngc_api_url: str
    source_registry_url: str
    source_proxy_url: str
    source_registry_host: str
    source_proxy_host: str
    open_registry_url: str
    open_registry_host: str
    basic_registry_url: str
    basic_registry_host: str
    basic_username: str
    basic_password: str
    api_key: str
    docker_host: str
    seed_file: str
    workdir: str
    scale: str
    seed: int
    ngc_org: str
    registry_service: str
    registry_issuer: str
    token_realm: str
    pids: dict[str, int] = field(default_factory=dict)
    process_markers: dict[str, str] = field(default_factory=dict)
    engine_dir: str = ""
    timings: dict[str, float] = field(default_factory=dict)  # seconds spent in each phase of up()
    cdn_proxy_url: str = ""  # the CDN stand-in's registry front (only with up(cdn=True)), e.g. http://127.0.0.1:P
    cdn_proxy_host: str = ""
    cdn_url: str = ""  # its presigned-URL port
    helm_url: str = ""  # NGC's Helm repository stand-in: <helm_url>/nvidia/index.yaml (Basic $oauthtoken:<api_key>)
    k8s_registry_url: str = ""  # the anonymous registry standing for registry.k8s.io (charts name it)
    k8s_registry_host: str = ""
    chart_file: str = ""  # the chart seeder's oracle (tests/testbed/charts.py)

    def chart_document(self) -> dict[str, Any]:
        """The chart seeder's description of the Helm repository and every image its charts name, with digests."""
        return read_json(Path(self.chart_file))

    def seed_document(self) -> dict[str, Any]:
        """The seeder's description of the images (see README.md for the schema)."""
        return read_json(Path(self.seed_file))

    def save(self) -> None:
        write_json(Path(self.workdir) / INFO_FILE, asdict(self))

    @classmethod
    def load(cls, workdir: Path) -> TestbedInfo:
        data = read_json(workdir / INFO_FILE)
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def records(self) -> list[ProcessRecord]:
        return [ProcessRecord(name, pid, self.process_markers.get(name, "")) for name, pid in self.pids.items()]

    def is_running(self) -> bool:
        return bool(self.pids) and all(r.matches() for r in self.records())


@dataclass
class _Clock:
    laps: dict[str, float] = field(default_factory=dict)
    _last: float = field(default_factory=time.monotonic)

    def lap(self, name: str) -> None:
        now = time.monotonic()
        self.laps[name] = round(now - self._last, 2)
        self._last = now


@dataclass
class _Secrets:
    api_key: str
    basic_password: str


@dataclass
class _Services:
    ngc_url: str
    realm: str
    token: Registry
    proxy_url: str
    open: Registry
    basic: Registry
    k8s: Registry


def running_testbed(workdir: Path) -> TestbedInfo | None:
    """The TestbedInfo of a test bed running in workdir, or None."""
    if not (workdir / INFO_FILE).exists():
        return None
    info = TestbedInfo.load(workdir)
    return info if info.is_running() else None


class Testbed:
    """Starts and stops the test bed components of one working directory."""

    __test__ = False

    def __init__(self) -> None:
        self.info: TestbedInfo | None = None
        self._records: list[ProcessRecord] = []
        self._procs: dict[int, subprocess.Popen] = {}
        self._engine: Engine | None = None
        self._workdir: Path | None = None

    # Start-up ---------------------------------------------------------------------------
    def up(
        self, workdir: Path, scale: str = "small", engine: bool = True, seed: int = 1, cdn: bool | None = None
    ) -> TestbedInfo:
        """Start everything; with cdn (default: $AIRGAP_TESTBED_CDN set) also the CDN stand-in in front of the token registry."""
        if cdn is None:
            cdn = os.environ.get(ENV_CDN, "") not in ("", "0")
        if scale not in SCALES:
            raise TestbedError(f"unknown scale {scale!r}; use one of {', '.join(SCALES)}")
        workdir = Path(workdir).resolve()
        if running_testbed(workdir) is not None:
            raise TestbedError(f"a test bed is already running in {workdir}; stop it first")
        workdir.mkdir(parents=True, exist_ok=True)
        self._workdir = workdir
        try:
            self.info = self._start(workdir, scale, engine, seed, cdn)
        except BaseException:
            self.down()
            raise
        return self.info

    def _start(self, workdir: Path, scale: str, engine: bool, seed: int, cdn: bool = False) -> TestbedInfo:
        secrets_ = _Secrets(api_key=secrets.token_urlsafe(32), basic_password=secrets.token_urlsafe(18))
        auth_dir = workdir / "auth"
        auth_dir.mkdir(mode=0o700, exist_ok=True)
        create_signing_identity(auth_dir / "token.key", auth_dir / "token.crt")
        if engine:  # dockerd starts in the background while the rest comes up
            self._engine = launch_engine(workdir / "engine")
            self._track(self._engine.records()[0], self._engine.proc)
        clock = _Clock()
        services = self._start_services(workdir, auth_dir, secrets_)
        clock.lap("services")
        seed_registry(
            services.token.url,
            workdir / "seed.json",
            scale,
            seed,
            NGC_USERNAME,
            secrets_.api_key,
            workdir / "seed-cache.json",
        )
        clock.lap("seed")
        seed_charts(
            workdir / "helm",
            f"{services.ngc_url}{HELM_PATH}",
            services.token.url,
            services.k8s.url,
            secrets_.api_key,
            workdir / "charts.json",
            seed,
        )
        clock.lap("charts")
        if self._engine is not None:
            wait_engine(self._engine)
            for record in self._engine.records()[1:]:
                self._track(record, None)
            clock.lap("engine_wait")
        info = self._describe(workdir, scale, seed, services, secrets_)
        if cdn:
            stand_in = start_cdn(
                workdir / "cdn", services.token.url, services.token.directory / "data", f"{services.ngc_url}/token"
            )
            self._track(stand_in.record, None)
            info.pids, info.process_markers = (
                {r.name: r.pid for r in self._records},
                {r.name: r.marker for r in self._records},
            )
            info.cdn_proxy_url, info.cdn_proxy_host, info.cdn_url = stand_in.url, stand_in.host, stand_in.cdn_url
        info.timings = clock.laps
        info.save()
        return info

    def _start_services(self, workdir: Path, auth_dir: Path, secrets_: _Secrets) -> _Services:
        ngc_url = self._start_python(
            "ngc",
            "tests.testbed.ngc_server",
            workdir,
            {
                "api_key": secrets_.api_key,
                "seed_file": str(workdir / "seed.json"),
                "signing_key": str(auth_dir / "token.key"),
                "issuer": ISSUER,
                "service": SERVICE,
                "helm_dir": str(workdir / "helm"),
            },
        )
        token_auth = TokenAuth(f"{ngc_url}/proxy_auth", SERVICE, ISSUER, auth_dir / "token.crt")
        token = self._start_registry("token", workdir, token=token_auth)
        proxy_url = self._start_python(
            "proxy",
            "tests.testbed.proxy",
            workdir,
            {
                "upstream": token.url,
                "expired_realm": f"{ngc_url}/token",
            },
        )
        return _Services(
            ngc_url=ngc_url,
            realm=token_auth.realm,
            token=token,
            proxy_url=proxy_url,
            open=self._start_registry("open", workdir),
            basic=self._start_registry("basic", workdir, basic=BasicAuth(BASIC_USERNAME, secrets_.basic_password)),
            k8s=self._start_registry("k8s", workdir),
        )

    def _describe(self, workdir: Path, scale: str, seed: int, services: _Services, secrets_: _Secrets) -> TestbedInfo:
        return TestbedInfo(
            ngc_api_url=services.ngc_url,
            source_registry_url=services.token.url,
            source_proxy_url=services.proxy_url,
            source_registry_host=services.token.host,
            source_proxy_host=services.proxy_url.split("://", 1)[1],
            open_registry_url=services.open.url,
            open_registry_host=services.open.host,
            basic_registry_url=services.basic.url,
            basic_registry_host=services.basic.host,
            basic_username=BASIC_USERNAME,
            basic_password=secrets_.basic_password,
            api_key=secrets_.api_key,
            docker_host=self._engine.docker_host if self._engine else "",
            seed_file=str(workdir / "seed.json"),
            workdir=str(workdir),
            scale=scale,
            seed=seed,
            ngc_org=ORG,
            registry_service=SERVICE,
            registry_issuer=ISSUER,
            token_realm=services.realm,
            pids={r.name: r.pid for r in self._records},
            process_markers={r.name: r.marker for r in self._records},
            engine_dir=str(self._engine.directory) if self._engine else "",
            helm_url=f"{services.ngc_url}{HELM_PATH}",
            k8s_registry_url=services.k8s.url,
            k8s_registry_host=services.k8s.host,
            chart_file=str(workdir / "charts.json"),
        )

    def _track(self, record: ProcessRecord, proc: subprocess.Popen | None) -> None:
        self._records.append(record)
        if proc is not None:
            self._procs[record.pid] = proc

    def _start_registry(self, flavour: str, workdir: Path, **auth: Any) -> Registry:
        registry = start_registry(flavour, workdir / f"registry-{flavour}", **auth)
        self._track(registry.record(), registry.proc)
        return registry

    def _start_python(self, name: str, module: str, workdir: Path, config: dict[str, Any]) -> str:
        """Start one of our HTTP components; returns its URL once it listens."""
        directory = workdir / name
        directory.mkdir(exist_ok=True)
        ready, config_path, log_path = directory / "ready.json", directory / "config.json", directory / f"{name}.log"
        ready.unlink(missing_ok=True)
        write_json(config_path, {**config, "ready_file": str(ready)})
        proc = spawn(
            python_module_argv(module, "--config", str(config_path)), log_path, cwd=directory, env=python_env()
        )
        self._track(ProcessRecord(name, proc.pid, str(config_path)), proc)
        return wait_ready_file(ready, proc, name, log_path)["url"]

    # Shut-down --------------------------------------------------------------------------
    def down(self) -> None:
        """Stop every process this object started and forget the test bed."""
        _stop_all(self._records)
        for proc in self._procs.values():
            proc.wait()
        self._procs.clear()
        self._records.clear()
        _finish_down(self._workdir, self._engine.directory if self._engine else None)
        self.info = None

    @staticmethod
    def stop(workdir: Path) -> bool:
        """Stop the test bed recorded in workdir/testbed.json; False if there was none."""
        workdir = Path(workdir).resolve()
        if not (workdir / INFO_FILE).exists():
            return False
        info = TestbedInfo.load(workdir)
        _stop_all(info.records())
        _finish_down(workdir, Path(info.engine_dir) if info.engine_dir else None)
        return True


def _finish_down(workdir: Path | None, engine_dir: Path | None) -> None:
    """Forget the running test bed; remove an engine directory made outside the workdir."""
    if workdir is None:
        return
    (workdir / INFO_FILE).unlink(missing_ok=True)
    if engine_dir is not None and workdir not in engine_dir.parents:
        shutil.rmtree(engine_dir, ignore_errors=True)


# Helpers for tests ------------------------------------------------------------------------
@dataclass
class FaultSwitch:
    """Drive the fault switches of the NGC stand-in ("ngc") and the registry proxy ("registry")."""

    info: TestbedInfo

    def url(self, target: str) -> str:
        bases = {"ngc": self.info.ngc_api_url, "registry": self.info.source_proxy_url}
        if target not in bases:
            raise ValueError(f"unknown fault target {target!r}; use ngc or registry")
        return bases[target]

    def set(self, target: str, fault: dict[str, Any] | list[dict[str, Any]]) -> dict[str, Any]:
        response = requests.post(f"{self.url(target)}/_testbed/faults", json=fault, timeout=10)
        if response.status_code != 200:
            raise TestbedError(f"fault switch refused {fault}: {response.text}")
        return response.json()

    def ngc(self, **fault: Any) -> dict[str, Any]:
        return self.set("ngc", fault)

    def registry(self, **fault: Any) -> dict[str, Any]:
        return self.set("registry", fault)

    def stats(self, target: str) -> dict[str, Any]:
        return requests.get(f"{self.url(target)}/_testbed/stats", timeout=10).json()

    def reset(self) -> None:
        """Clear faults and counters on both servers."""
        for target in ("ngc", "registry"):
            requests.delete(f"{self.url(target)}/_testbed/faults", timeout=10).raise_for_status()
            requests.delete(f"{self.url(target)}/_testbed/stats", timeout=10).raise_for_status()


def write_authfile(path: Path, info: TestbedInfo, api_key: str | None = None) -> Path:
    """A containers-auth.json (skopeo --authfile, also docker's config.json) for the source registry,
    the proxy and the basic registry. `api_key` overrides the valid key (to test a wrong one)."""
    key = info.api_key if api_key is None else api_key

    def entry(user: str, password: str) -> dict[str, str]:
        return {"auth": base64.b64encode(f"{user}:{password}".encode("utf-8")).decode("ascii")}

    auths = {
        info.source_registry_host: entry(NGC_USERNAME, key),
        info.source_proxy_host: entry(NGC_USERNAME, key),
        info.basic_registry_host: entry(info.basic_username, info.basic_password),
    }
    if info.cdn_proxy_host:
        auths[info.cdn_proxy_host] = entry(NGC_USERNAME, key)
    write_json(path, {"auths": auths})
    return path


def info_json(info: TestbedInfo) -> str:
    return json.dumps(asdict(info), indent=2, sort_keys=True)
