# Copyright (c) airgap.ngc contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private: the collection's version, used in the User-Agent. Not a public API."""

from __future__ import annotations

COLLECTION_VERSION = "0.1.0"
USER_AGENT = f"airgap.ngc/{COLLECTION_VERSION}"
