# Copyright (c) airgap.ngc contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""pytest fixtures for the test bed. Load with ``-p tests.testbed.pytest_plugin`` or
``pytest_plugins = ["tests.testbed.pytest_plugin"]`` in a conftest.

- ``testbed`` (session): a running test bed's ``TestbedInfo``. Reuses the one in
  ``$AIRGAP_TESTBED_DIR`` if it is running there (and leaves it running); otherwise starts one
  in a temporary directory (scale ``$AIRGAP_TESTBED_SCALE``, default small; no Docker engine if
  ``$AIRGAP_TESTBED_NO_ENGINE`` is set) and stops it at the end of the session.
- ``faults`` (function): a ``FaultSwitch``; faults and request counters are reset before and
  after each test.
- ``helm_charts`` (session): a ``ChartOracle``: the bed's Helm repository URL, the GPU-Operator-shaped chart's name
  and versions, and every image each version names with the digest the bed pushed (the seeder's record).
- ``testbed_authfile`` (session): a containers auth.json with the valid credentials for the
  source registry, its proxy and the basic registry (for ``skopeo --authfile``).
- ``containerd_node`` (module): a private containerd, a Kubernetes node's runtime (``containerd.Containerd``), started
  for the test file and stopped after it (needs root and Debian's containerd).

In parallel (``pytest -n 2 --dist loadfile``, pytest-xdist) every worker uses ONE test bed: the
controller starts it before the workers (unless ``$AIRGAP_TESTBED_DIR`` names a running one) and
stops it at the end. The faults and request counters are global to the test bed, so a test whose
fixtures include ``faults`` runs alone: it holds the test bed's lock exclusively while every other
test that uses the test bed holds it shared; a test marked ``engine`` holds the engine's lock (the
Docker engine's image names are global too). Each file runs on one worker, so a module-scoped
fixture runs once. (``--dist loadgroup`` does not group with pytest 9: xdist 3.8 renames
``item._nodeid``, which pytest 9 no longer reads.) A new test file needs nothing of this: it is
safe in parallel if its names (registry namespaces, engine tags) are its own, e.g. hold
``os.getpid()``, and its paths are under ``tmp_path``.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import tempfile
import warnings
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Iterator

import pytest

from .containerd import Containerd, start_containerd
from .charts import ChartOracle
from .testbed import FaultSwitch, Testbed, TestbedInfo, running_testbed, write_authfile

ENV_DIR = "AIRGAP_TESTBED_DIR"
ENV_SCALE = "AIRGAP_TESTBED_SCALE"
ENV_NO_ENGINE = "AIRGAP_TESTBED_NO_ENGINE"
LOCK_DIR = "locks"  # under the test bed's workdir: bed.lock (faults, counters), engine.lock, turnstile.lock
_SHARED_SCOPES = ("module", "class", "package")
_SHARED_BED = pytest.StashKey[tuple[Testbed, Path]]()


def _start(workdir: Path) -> Testbed:
    bed = Testbed()
    bed.up(workdir, scale=os.environ.get(ENV_SCALE, "small"), engine=not os.environ.get(ENV_NO_ENGINE))
    return bed


# Parallel runs: one test bed for all workers ----------------------------------------------
def _distributing(config: pytest.Config) -> bool:
    """This process is the controller of an xdist run with workers."""
    return not hasattr(config, "workerinput") and bool(getattr(config.option, "numprocesses", None))


def pytest_configure(config: pytest.Config) -> None:
    """The controller of a parallel run starts the test bed the workers share (they inherit $AIRGAP_TESTBED_DIR)."""
    if not _distributing(config):
        return
    reuse = os.environ.get(ENV_DIR)
    if reuse and running_testbed(Path(reuse)) is not None:
        return
    workdir = Path(tempfile.mkdtemp(prefix="airgap-testbed-"))
    config.stash[_SHARED_BED] = (_start(workdir), workdir)
    os.environ[ENV_DIR] = str(workdir)


def pytest_unconfigure(config: pytest.Config) -> None:
    started = config.stash.get(_SHARED_BED, None)
    if started is not None:
        bed, workdir = started
        bed.down()
        shutil.rmtree(workdir, ignore_errors=True)


def _shares_a_fixture(item: pytest.Item) -> bool:
    info = getattr(item, "_fixtureinfo", None)
    defs = info.name2fixturedefs.values() if info is not None else []
    return any(d.scope in _SHARED_SCOPES for chain in defs for d in chain)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """In a worker of a parallel run: the files whose tests share a module-scoped fixture (the long set-ups) first, so
    that the other worker has the rest to do meanwhile (with --no-loadscope-reorder, xdist keeps this order)."""
    if not hasattr(config, "workerinput"):
        return
    heavy = {item.nodeid.split("::", 1)[0] for item in items if _shares_a_fixture(item)}
    items.sort(key=lambda item: item.nodeid.split("::", 1)[0] not in heavy)  # stable: each file's order kept


# Taking turns on what the tests share ------------------------------------------------------
@contextmanager
def _flock(path: Path, exclusive: bool) -> Iterator[None]:
    with open(path, "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextmanager
def _turn(locks: Path, name: str, exclusive: bool) -> Iterator[None]:
    """A readers-writer lock. Both take it through a turnstile, so a writer waiting there lets no new reader in and
    cannot starve while the other worker runs reader after reader."""
    with open(locks / name, "a+b") as handle:
        with _flock(locks / "turnstile.lock", True):
            fcntl.flock(handle, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    """Around a test's setup, call and teardown (its module fixtures included): the test bed's lock, exclusive for a
    test with faults; the engine's lock for a test marked engine."""
    workdir = os.environ.get(ENV_DIR)
    if "testbed" not in item.fixturenames or not workdir:
        yield
        return
    locks = Path(workdir) / LOCK_DIR
    locks.mkdir(exist_ok=True)
    with ExitStack() as stack:
        stack.enter_context(_turn(locks, "bed.lock", "faults" in item.fixturenames))
        if item.get_closest_marker("engine") is not None:
            stack.enter_context(_flock(locks / "engine.lock", True))
        yield


@pytest.fixture(scope="session")
def testbed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestbedInfo]:
    reuse = os.environ.get(ENV_DIR)
    if reuse:
        info = running_testbed(Path(reuse))
        if info is not None:
            yield info
            return
        warnings.warn(f"{ENV_DIR}={reuse} holds no running test bed; starting a new one", stacklevel=2)
    bed = _start(tmp_path_factory.mktemp("testbed"))
    assert bed.info is not None
    try:
        yield bed.info
    finally:
        bed.down()


@pytest.fixture
def faults(testbed: TestbedInfo) -> Iterator[FaultSwitch]:
    switch = FaultSwitch(testbed)
    switch.reset()
    try:
        yield switch
    finally:
        switch.reset()


@pytest.fixture(scope="session")
def testbed_authfile(testbed: TestbedInfo, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_authfile(tmp_path_factory.mktemp("testbed-auth") / "auth.json", testbed)


@pytest.fixture(scope="module")
def containerd_node() -> Iterator[Containerd]:
    started = start_containerd()
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture(scope="session")
def helm_charts(testbed: TestbedInfo) -> ChartOracle:
    return ChartOracle(testbed.chart_document())
