#!/usr/bin/env bash
# The fast loop (`make check`, and the pre-commit hook): ruff format and lint, mypy on module_utils, the unit tests.
# Well under a minute on a quiet 2-core machine; `make test` runs everything else.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
export PATH="$PWD/.venv/bin:$PATH"
status=0
step() {  # name, command...
  local name=$1 start=$SECONDS
  shift
  if "$@"; then echo "check: $name ok ($((SECONDS - start)) s)"; else echo "check: $name FAILED"; status=1; fi
}
tree=$(bash scripts/collection-tree.sh) || { echo "cannot build the collection tree"; exit 1; }
tree=$(cd "$tree" && pwd)
step "ruff format" ruff format --check --quiet plugins tests scripts
step "ruff" ruff check --quiet plugins tests scripts
step "mypy" bash -c "cd '$tree/../../..' && mypy --config-file '$tree/pyproject.toml' -p ansible_collections.airgap.ngc.plugins.module_utils"
step "unit tests" bash -c "cd '$tree' && ansible-test units --python 3.11 --color no >'$PWD/build/check-units.log' 2>&1 || { tail -n 30 '$PWD/build/check-units.log'; exit 1; }"
exit $status
