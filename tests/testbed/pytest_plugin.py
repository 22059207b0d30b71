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
- ``testbed_authfile`` (session): a containers auth.json with the valid credentials for the
  source registry, its proxy and the basic registry (for ``skopeo --authfile``).
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Iterator

import pytest

from .testbed import FaultSwitch, Testbed, TestbedInfo, running_testbed, write_authfile

ENV_DIR = "AIRGAP_TESTBED_DIR"
ENV_SCALE = "AIRGAP_TESTBED_SCALE"
ENV_NO_ENGINE = "AIRGAP_TESTBED_NO_ENGINE"


@pytest.fixture(scope="session")
def testbed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestbedInfo]:
    reuse = os.environ.get(ENV_DIR)
    if reuse:
        info = running_testbed(Path(reuse))
        if info is not None:
            yield info
            return
        warnings.warn(f"{ENV_DIR}={reuse} holds no running test bed; starting a new one", stacklevel=2)
    bed = Testbed()
    info = bed.up(tmp_path_factory.mktemp("testbed"), scale=os.environ.get(ENV_SCALE, "small"),
                  engine=not os.environ.get(ENV_NO_ENGINE))
    try:
        yield info
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
