#!/usr/bin/env bash
# The demo: start the local stand-in for NGC (an NGC catalog API and an nvcr.io-like
# registry with token auth, seeded with small NGC-like images), then list its catalog
# through the collection's own playbook. Everything is stopped at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
export PATH="$root/.venv/bin:$PATH"
bash scripts/collection-tree.sh >/dev/null
export ANSIBLE_COLLECTIONS_PATH="$root/build" ANSIBLE_LOCAL_TEMP="$root/build/tmp/ansible-local"
export ANSIBLE_STDOUT_CALLBACK=ansible.builtin.default ANSIBLE_CALLBACK_RESULT_FORMAT=yaml

dir=$root/build/demo
rm -rf "$dir"
mkdir -p "$dir"
trap 'python -m tests.testbed down --dir "$dir" >/dev/null 2>&1 || true' EXIT
echo "demo: starting the NGC stand-in and an nvcr.io-like registry (seeding small images)..."
python -m tests.testbed up --dir "$dir" --scale small --no-engine >"$dir/up.json"
read_info() { python -c "import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])" "$dir/testbed.json" "$1"; }
NGC_API_KEY=$(read_info api_key)
export NGC_API_KEY  # the modules read the key from the environment: never on a command line
echo "demo: NGC API at $(read_info ngc_api_url), registry at $(read_info source_registry_url)"

ansible-playbook playbooks/catalog.yml \
  -e "catalog_api_url=$(read_info ngc_api_url)" \
  -e "catalog_registry_url=$(read_info source_registry_url)"
