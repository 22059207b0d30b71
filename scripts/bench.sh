#!/usr/bin/env bash
# The benchmark (`make bench`): start a bench-scale test bed with its Docker engine, then time
# ngc_image_mirror side by side with skopeo, the Docker engine and a raw stream of the same
# blobs (tests/bench/bench.py; see tests/bench/README.md). Prints a table and writes it as JSON
# to build/bench/results.json. Everything started here is stopped at the end.
# Extra arguments go to bench.py, e.g. `bash scripts/bench.sh --rounds 1 --no-docker`, or
# `bash scripts/bench.sh --only update,enroot` for the monthly update and registry -> .sqsh groups alone
# (`--only charts`: the GPU Operator chart and its images into a bundle; `--only containerd`: the containerd
# destination against `ctr images pull` and `ctr images import`).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
export PATH="$root/.venv/bin:$PATH"
started=$(date +%s)

# /usr/bin/time -v measures the module's peak memory.
if [ ! -x /usr/bin/time ]; then
  echo "bench: installing Debian package: time"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends time >/dev/null
fi

out=$root/build/bench
testbed=$out/testbed
# BENCH_SCALE=medium: the same images at a quarter of the size (about 460 MB), for quick runs while iterating; its
# test bed is kept apart from the full scale's, so each keeps its seeded source.
scale=${BENCH_SCALE:-bench}
[ "$scale" = bench ] || testbed=$out/testbed-$scale
work=$out/work
collections=$out/collections
mkdir -p "$out"
exec 9>"$out/.lock"
if ! flock -n 9; then
  echo "bench: another benchmark is running (build/bench/.lock)" >&2
  exit 1
fi

# The module runs from a snapshot of the collection's files, so edits made meanwhile do not mix in.
rm -rf "$collections"
mkdir -p "$collections/ansible_collections/airgap/ngc"
git ls-files -z --cached --others --exclude-standard -- plugins meta galaxy.yml | while IFS= read -r -d '' f; do
  [ -e "$f" ] && printf '%s\0' "$f"
done | xargs -0 cp --parents -t "$collections/ansible_collections/airgap/ngc"

# The destination registries start empty every time; the seeded source registry and the
# seeder's cache are kept, so the next run starts faster.
forget_destinations() {
  rm -rf "$testbed/registry-open" "$testbed/registry-basic" "$testbed/engine" "$work"
}
stop() {
  python -m tests.testbed down --dir "$testbed" >/dev/null 2>&1 || true
  forget_destinations
}
trap stop EXIT
trap 'exit 130' INT TERM
stop  # a test bed left over by an interrupted run

echo "bench: starting a $scale-scale test bed with a Docker engine (the first time it seeds about 1.8 GB at bench scale)..."
python -m tests.testbed up --dir "$testbed" --scale "$scale" >/dev/null
status=0
python tests/bench/bench.py --testbed "$testbed" --collections "$collections" --work "$work" --out "$out/results.json" "$@" || status=$?
# A big blob through a stand-in for nvcr.io's CDN (20 MB/s per connection, 50 ms a request): ranged downloads
# (group copy), and a 1 GiB layer's bundle export killed half-way then continued by the next run (group resume).
python tests/bench/cdn_bench.py --testbed "$testbed" --collections "$collections" --work "$work/cdn" --out "$out/cdn.json" || status=$?
# A wide catalog of tiny tags (WIDE_TAGS="1000 3000" for more) in a test bed of its own, which it stops and empties.
wide_args=()
for n in ${WIDE_TAGS:-1000}; do wide_args+=(--tags "$n"); done
python tests/bench/wide_bench.py --start-testbed "$out/wide-testbed" --collections "$collections" --work "$work/wide" --out "$out/wide.json" "${wide_args[@]}" || status=$?
echo "bench: finished in $(($(date +%s) - started))s (test bed start included)"
exit "$status"
