#!/usr/bin/env bash
# Run the project's checks: `scripts/test.sh all` or one of sanity, units, lint, integration,
# molecule, docs. Each stage logs to build/logs/<stage>.log; a summary with counts ends the run.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
root=$PWD
export PATH="$root/.venv/bin:$PATH"
export ANSIBLE_COLLECTIONS_PATH="$root/build"
export ANSIBLE_NOCOLOR=1 PY_COLORS=0 ANSIBLE_FORCE_COLOR=0
export ANSIBLE_LOCAL_TEMP="$root/build/tmp/ansible-local" ANSIBLE_REMOTE_TEMP="$root/build/tmp/ansible-remote"
logs=$root/build/logs

stages=("$@")
[ "${stages[0]:-all}" = all ] && stages=(sanity units lint docs integration molecule)

tree=$(bash scripts/collection-tree.sh) || { echo "cannot build the collection tree"; exit 1; }
mkdir -p "$logs" "$ANSIBLE_LOCAL_TEMP"

declare -A result count
total_passed=0
total_failed=0

record() {  # stage status passed failed
  result[$1]=$2
  count[$1]="$3 passed, $4 failed"
  total_passed=$((total_passed + $3))
  total_failed=$((total_failed + $4))
}

pytest_counts() {  # log -> "passed failed"
  local line p f e
  line=$(grep -E '^=+ .*(passed|failed|error|no tests ran).* in [0-9.]+s' "$1" | tail -n 1)
  p=$(grep -oE '[0-9]+ passed' <<<"$line" | grep -oE '[0-9]+' || true)
  f=$(grep -oE '[0-9]+ failed' <<<"$line" | grep -oE '[0-9]+' || true)
  e=$(grep -oE '[0-9]+ errors?' <<<"$line" | grep -oE '[0-9]+' || true)
  echo "${p:-0} $(( ${f:-0} + ${e:-0} ))"
}

run_sanity() {
  (cd "$tree" && ansible-test sanity --python 3.11 --color no) >"$logs/sanity.log" 2>&1
  local rc=$? ran failed
  ran=$(grep -c '^Running sanity test "' "$logs/sanity.log")
  failed=$(grep -oE 'The [0-9]+ sanity test\(s\) listed below' "$logs/sanity.log" | grep -oE '[0-9]+' || echo 0)
  [ "$rc" -ne 0 ] && [ "$failed" = 0 ] && failed=1
  record sanity "$rc" "$((ran - failed))" "$failed"
}

run_units() {
  (cd "$tree" && ansible-test units --python 3.11 --color no) >"$logs/units.log" 2>&1
  local rc=$?
  read -r p f < <(pytest_counts "$logs/units.log")
  [ "$rc" -ne 0 ] && [ "$f" = 0 ] && f=1
  record units "$rc" "$p" "$f"
}

run_lint() {
  (cd "$tree" && ansible-lint --profile production --offline -q) >"$logs/lint.log" 2>&1
  local rc=$? files
  files=$(git ls-files -co --exclude-standard | grep -cE '\.ya?ml$')
  if [ "$rc" -eq 0 ]; then record lint 0 "$files" 0; else record lint "$rc" 0 "$(grep -cE '^[^ ].*:[0-9]+' "$logs/lint.log" || echo 1)"; fi
}

run_docs() {
  {
    ansible-doc airgap.ngc.ngc_catalog_info >/dev/null &&
    (cd "$tree" && antsibull-docs lint-collection-docs --plugin-docs . ) &&
    (cd "$tree" && antsibull-changelog lint)
  } >"$logs/docs.log" 2>&1
  local rc=$?
  if [ "$rc" -eq 0 ]; then record docs 0 3 0; else record docs "$rc" 0 1; fi
}

run_integration() {
  python -m pytest -p tests.testbed.pytest_plugin tests/integration -v -p no:cacheprovider --color=no >"$logs/integration.log" 2>&1
  local rc=$?
  read -r p f < <(pytest_counts "$logs/integration.log")
  [ "$rc" -ne 0 ] && [ "$f" = 0 ] && f=1
  record integration "$rc" "$p" "$f"
}

run_molecule() {
  local rc=0 n=0 scenario
  : >"$logs/molecule.log"
  for scenario in "$tree"/extensions/molecule/*/; do
    [ -f "$scenario/molecule.yml" ] || continue
    scenario=$(basename "$scenario")
    n=$((n + 1))
    echo "== molecule test -s $scenario" >>"$logs/molecule.log"
    (cd "$tree/extensions" && molecule test -s "$scenario") >>"$logs/molecule.log" 2>&1 || rc=$((rc + 1))
  done
  record molecule "$rc" "$((n - rc))" "$rc"
}

run_stage() {
  case "$1" in
    sanity) run_sanity ;;
    units) run_units ;;
    lint) run_lint ;;
    docs) run_docs ;;
    integration) run_integration ;;
    molecule) run_molecule ;;
    *) echo "unknown stage $1: use sanity, units, lint, docs, integration, molecule or all"; exit 2 ;;
  esac
}

for stage in "${stages[@]}"; do
  echo "== $stage (log: build/logs/$stage.log)"
  run_stage "$stage"
  echo "   ${count[$stage]}"
  if [ "${result[$stage]}" != 0 ]; then
    echo "   FAILED; last lines of the log:"
    tail -n 30 "$logs/$stage.log" | sed 's/^/   | /'
  fi
done

echo
echo "summary:"
status=0
for stage in "${stages[@]}"; do
  printf '  %-12s %s\n' "$stage" "${count[$stage]}"
  [ "${result[$stage]}" = 0 ] || status=1
done
echo "$total_passed passed, $total_failed failed"
exit $status
