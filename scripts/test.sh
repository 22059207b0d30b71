#!/usr/bin/env bash
# Run the project's checks: `scripts/test.sh all` or one of sanity, units, lint, integration,
# molecule, docs. Each stage logs to build/logs/<stage>.log; a summary with counts ends the run.
# The quick stages (sanity, units, lint, docs) and molecule run in the background beside integration,
# each in a collection tree of its own (build/stages/<stage>); integration runs on 2 workers
# (pytest-xdist) against one test bed, molecule against a test bed of its own beside it (without a
# Docker engine; named to the scenarios by AIRGAP_TESTBED_DIR). Each stage's wall time is printed
# with its counts.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
root=$PWD
export PATH="$root/.venv/bin:$PATH"
export ANSIBLE_COLLECTIONS_PATH="$root/build"
export ANSIBLE_NOCOLOR=1 PY_COLORS=0 ANSIBLE_FORCE_COLOR=0
export ANSIBLE_LOCAL_TEMP="$root/build/tmp/ansible-local" ANSIBLE_REMOTE_TEMP="$root/build/tmp/ansible-remote"
logs=$root/build/logs
stages_dir=build/stages  # relative: the trees' paths are printed and used relative to the checkout
workers=${AIRGAP_TEST_WORKERS:-2}

declare -A result count seconds
total_passed=0
total_failed=0

record() {  # stage status passed failed: kept in build/logs/<stage>.status (a stage may run in the background)
  echo "$2 $3 $4" >"$logs/$1.status"
}

collect() {  # stage: read what the stage recorded
  local status=1 p=0 f=1
  [ -f "$logs/$1.status" ] && read -r status p f <"$logs/$1.status"
  result[$1]=$status
  count[$1]="$p passed, $f failed"
  total_passed=$((total_passed + p))
  total_failed=$((total_failed + f))
}

pytest_counts() {  # log -> "passed failed", summed over the pytest sessions in it (ansible-test units runs two)
  local lines p f e
  lines=$(grep -E '^=+ .*(passed|failed|error|no tests ran).* in [0-9.]+s' "$1")
  sum() { grep -oE "[0-9]+ $1" <<<"$lines" | awk '{ n += $1 } END { print n + 0 }'; }
  p=$(sum passed)
  f=$(sum failed)
  e=$(sum 'errors?')
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
  # One test bed for all workers (started by main); faults, counters and the engine are taken in turns
  # (tests/testbed/pytest_plugin.py). AIRGAP_TEST_WORKERS=0 runs the tests one after another.
  local parallel=()
  [ "$workers" -gt 0 ] && parallel=(-n "$workers" --dist loadfile --no-loadscope-reorder)
  AIRGAP_BUILD_DIR="$root/$base" python -m pytest -p tests.testbed.pytest_plugin tests/integration -v -p no:cacheprovider \
    --color=no --durations=30 "${parallel[@]}" >"$logs/integration.log" 2>&1
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
    # A scratch directory of this checkout's own (molecule's default is one per machine).
    rm -rf "$root/build/tmp/molecule/$scenario"
    (cd "$tree/extensions" && MOLECULE_EPHEMERAL_DIRECTORY="$root/build/tmp/molecule/$scenario" molecule test -s "$scenario") \
      >>"$logs/molecule.log" 2>&1 || rc=$((rc + 1))
  done
  record molecule "$rc" "$((n - rc))" "$rc"
}

run_stage() {  # stage: in a collection tree of its own, timed; the result goes to build/logs/<stage>.status
  local started=$SECONDS
  base=$stages_dir/$1
  rm -f "$logs/$1.status"
  tree=$(bash scripts/collection-tree.sh "$base") || { echo "cannot build the collection tree" >"$logs/$1.log"; record "$1" 1 0 1; return; }
  export ANSIBLE_COLLECTIONS_PATH="$root/$base"
  case "$1" in
    sanity) run_sanity ;;
    units) run_units ;;
    lint) run_lint ;;
    docs) run_docs ;;
    integration) run_integration ;;
    molecule) run_molecule ;;
  esac
  echo "$((SECONDS - started))" >"$logs/$1.seconds"
}

testbeds=()  # the test beds this run started, stopped at the end

testbed_up() {  # name [up options...]: a test bed in build/tmp/<name>, logged to build/logs/<name>.log; prints its directory
  local dir=$root/build/tmp/$1 log=$logs/$1.log
  shift
  python -m tests.testbed down --dir "$dir" >/dev/null 2>&1
  rm -rf "$dir"
  if python -m tests.testbed up --dir "$dir" --scale small "$@" >"$log" 2>&1; then
    echo "$dir"
  else
    echo "   the test bed did not start ($log); its stage starts its own" >&2
  fi
}

testbed_down() {
  local dir
  for dir in "${testbeds[@]}"; do
    python -m tests.testbed down --dir "$dir" >>"$logs/$(basename "$dir").log" 2>&1
  done
  testbeds=()
}

report() {  # stage: print its counts and seconds (and the log's end if it failed)
  collect "$1"
  seconds[$1]=$(cat "$logs/$1.seconds" 2>/dev/null || echo "?")
  echo "== $1 (log: build/logs/$1.log)"
  echo "   ${count[$1]} in ${seconds[$1]}s"
  if [ "${result[$1]}" != 0 ]; then
    echo "   FAILED; last lines of the log:"
    tail -n 30 "$logs/$1.log" | sed 's/^/   | /'
  fi
}

main() {
  stages=("$@")
  [ "${stages[0]:-all}" = all ] && stages=(sanity units lint docs integration molecule)
  for stage in "${stages[@]}"; do
    case "$stage" in
      sanity | units | lint | docs | integration | molecule) ;;
      *) echo "unknown stage $stage: use sanity, units, lint, docs, integration, molecule or all"; exit 2 ;;
    esac
  done
  mkdir -p "$logs" "$ANSIBLE_LOCAL_TEMP"
  started=$SECONDS
  trap testbed_down EXIT

  # The quick stages, one after another, in the background; the test bed meanwhile, then integration and molecule.
  quick=() slow=()
  for stage in "${stages[@]}"; do
    case "$stage" in integration | molecule) slow+=("$stage") ;; *) quick+=("$stage") ;; esac
  done
  if [ "${#quick[@]}" -gt 0 ] && [ "${#slow[@]}" -gt 0 ]; then
    (for stage in "${quick[@]}"; do run_stage "$stage"; done) &
    quick_job=$!
  else
    for stage in "${quick[@]}"; do run_stage "$stage"; done
    quick_job=
  fi
  if [ "${#slow[@]}" -gt 0 ]; then
    # Molecule beside integration on a test bed of its own: the NGC stand-in's faults and request counters are
    # global (a test that sets faults holds the session's test bed alone), and the role's requests would be counted
    # there. Each scenario keeps a scratch directory of its own (run_molecule).
    molecule_job=
    if [ "${#slow[@]}" -eq 2 ]; then
      molecule_bed=$(testbed_up testbed-molecule --no-engine)
      [ -n "$molecule_bed" ] && testbeds+=("$molecule_bed")
      (AIRGAP_TESTBED_DIR=$molecule_bed run_stage molecule) &  # empty: each scenario starts its own
      molecule_job=$!
      slow=(integration)
    fi
    testbed_dir=$(testbed_up testbed)
    [ -n "$testbed_dir" ] && testbeds+=("$testbed_dir") && export AIRGAP_TESTBED_DIR=$testbed_dir
    for stage in "${slow[@]}"; do run_stage "$stage"; done
    [ -n "$molecule_job" ] && wait "$molecule_job"
    testbed_down
  fi
  [ -n "$quick_job" ] && wait "$quick_job"

  for stage in "${stages[@]}"; do report "$stage"; done
  echo
  echo "summary:"
  status=0
  for stage in "${stages[@]}"; do
    printf '  %-12s %s\n' "$stage" "${count[$stage]}"
    [ "${result[$stage]}" = 0 ] || status=1
  done
  echo "wall time: $((SECONDS - started))s ($(for s in "${stages[@]}"; do printf '%s %ss, ' "$s" "${seconds[$s]}"; done | sed 's/, $//'))"
  echo "$total_passed passed, $total_failed failed"
  exit $status
}

# Everything runs from main, read whole before it starts, so editing this file mid-run is harmless.
main "$@"
