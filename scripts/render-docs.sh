#!/usr/bin/env bash
# Render the module and role documentation into docs/rendered (reStructuredText, antsibull-docs).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH" ANSIBLE_COLLECTIONS_PATH="$PWD/build"
bash scripts/collection-tree.sh >/dev/null
rm -rf docs/rendered
mkdir -p docs/rendered
antsibull-docs collection --use-current --dest-dir docs/rendered --output-format simplified-rst --squash-hierarchy airgap.ngc
