# Copyright (c) airgap.ngc contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Integration test bed for airgap.ngc: NGC stand-in, registries, fault proxy, Docker engine, seeder.

Independent of the collection's own code (it is the judge): uses requests, cryptography and the
standard library only. See README.md.
"""

from __future__ import annotations

from ._common import TestbedError
from .testbed import FaultSwitch, Testbed, TestbedInfo, running_testbed, write_authfile

__all__ = ["FaultSwitch", "Testbed", "TestbedError", "TestbedInfo", "running_testbed", "write_authfile"]
