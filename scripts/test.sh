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
  local rendered galaxy checks=0 failed=0
  rendered=$(mktemp -d)
  galaxy=$(mktemp -d)
  : >"$logs/docs.log"
  check() {  # name, command...
    local name=$1
    shift
    checks=$((checks + 1))
    echo "== $name" >>"$logs/docs.log"
    if ! "$@" >>"$logs/docs.log" 2>&1; then
      failed=$((failed + 1))
      echo "FAILED: $name" >>"$logs/docs.log"
    fi
  }
  check "ansible-doc renders both modules" ansible-doc airgap.ngc.ngc_catalog_info airgap.ngc.ngc_image_mirror
  check "antsibull-docs lint-collection-docs" bash -c "cd '$tree' && antsibull-docs lint-collection-docs --plugin-docs ."
  check "antsibull-changelog lint" bash -c "cd '$tree' && antsibull-changelog lint"
  check "rendered docs in docs/rendered are current (scripts/render-docs.sh)" bash -c \
    "antsibull-docs collection --use-current --dest-dir '$rendered' --output-format simplified-rst --squash-hierarchy airgap.ngc && diff -r '$rendered' docs/rendered"
  check "galaxy-importer: no errors, no warnings" bash -c \
    "cd '$galaxy' && ansible-galaxy collection build '$root/$tree' >/dev/null && python -m galaxy_importer.main airgap-ngc-*.tar.gz >importer.log 2>&1; rc=\$?; cat importer.log; [ \$rc -eq 0 ] && ! grep -E '(WARNING|ERROR)' importer.log"
  check "ansible-builder create renders the example execution environment" bash -c \
    "ansible-builder create -f docs/execution-environment.yml -c '$galaxy/ee-context' && test -f '$galaxy/ee-context/Dockerfile' -o -f '$galaxy/ee-context/Containerfile'"
  rm -rf "$rendered" "$galaxy"
  record docs "$failed" "$((checks - failed))" "$failed"
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

main() {
  stages=("$@")
  [ "${stages[0]:-all}" = all ] && stages=(sanity units lint docs integration molecule)

  tree=$(bash scripts/collection-tree.sh) || { echo "cannot build the collection tree"; exit 1; }
  mkdir -p "$logs" "$ANSIBLE_LOCAL_TEMP"

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

}

# Everything runs from main, read whole before it starts, so editing this file mid-run is harmless.
main "$@"
