#!/usr/bin/env bash
# The demo: start a local stand-in for NGC (an NGC catalog API and an nvcr.io-like registry
# with token auth, seeded with small NGC-like images) and a site registry, then:
#   1. list the stand-in's catalog through playbooks/catalog.yml;
#   2. apply the ngc_mirror role (playbooks/mirror.yml) with the key from Ansible Vault:
#      catalog per selection, mirror into the site registry and into archives, facts file,
#      systemd timer rendered (under build/demo/root, not the real /etc);
#   3. run the rendered wrapper once more, as the timer would: nothing left to copy.
# Everything the demo starts is stopped at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
export PATH="$root/.venv/bin:$PATH"
bash scripts/collection-tree.sh >/dev/null
export ANSIBLE_COLLECTIONS_PATH="$root/build" ANSIBLE_LOCAL_TEMP="$root/build/tmp/ansible-local"
export ANSIBLE_STDOUT_CALLBACK=ansible.builtin.default ANSIBLE_CALLBACK_RESULT_FORMAT=yaml ANSIBLE_LOCALHOST_WARNING=0

dir=$root/build/demo
python -m tests.testbed down --dir "$dir" >/dev/null 2>&1 || true
rm -rf "$dir"
mkdir -p "$dir"
trap 'python -m tests.testbed down --dir "$dir" >/dev/null 2>&1 || true' EXIT
echo "demo: starting the NGC stand-in, an nvcr.io-like registry and a site registry (seeding small images)..."
python -m tests.testbed up --dir "$dir" --scale small --no-engine >"$dir/up.json"
read_info() { python -c "import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])" "$dir/testbed.json" "$1"; }
NGC_API_KEY=$(read_info api_key)
export NGC_API_KEY  # the modules read the key from the environment: never on a command line
echo "demo: NGC API at $(read_info ngc_api_url), source registry at $(read_info source_registry_url), site registry at $(read_info open_registry_url)"

echo
echo "demo: 1. what the stand-in's catalog holds (playbooks/catalog.yml)"
ansible-playbook playbooks/catalog.yml \
  -e "catalog_api_url=$(read_info ngc_api_url)" \
  -e "catalog_registry_url=$(read_info source_registry_url)"

echo
echo "demo: 2. the ngc_mirror role (playbooks/mirror.yml), key from Ansible Vault"
# The stand-in's key is new for each run, so encrypt it now with the example vault password.
vault_pw=playbooks/inventory/example-vault-password.txt
printf '%s' "$NGC_API_KEY" | ansible-vault encrypt_string --vault-password-file "$vault_pw" \
  --stdin-name vault_ngc_api_key >"$dir/vault-key.yml" 2>/dev/null
chmod 600 "$dir/vault-key.yml"
unset NGC_API_KEY
python - "$dir" >"$dir/demo-vars.json" <<'PY'
import json
import sys

d = sys.argv[1]
tb = json.load(open(f"{d}/testbed.json"))
r = f"{d}/root"
print(json.dumps({
    "ngc_mirror_api_url": tb["ngc_api_url"],
    "ngc_mirror_source_registry_url": tb["source_registry_url"],
    "ngc_mirror_registry": {"url": tb["open_registry_url"]},
    "ngc_mirror_archive": {"dir": f"{d}/archives"},
    "ngc_mirror_facts_file": f"{r}/etc/ansible/facts.d/ngc_mirror.fact",
    "ngc_mirror_config_dir": f"{r}/etc/ngc-mirror",
    "ngc_mirror_state_dir": f"{r}/var/lib/ngc-mirror",
    "ngc_mirror_wrapper_path": f"{r}/usr/local/sbin/ngc-mirror",
    "ngc_mirror_systemd_dir": f"{r}/etc/systemd/system",
    "ngc_mirror_cron_dir": f"{r}/etc/cron.d",
    "ngc_mirror_ansible_playbook": f"{sys.prefix}/bin/ansible-playbook",
}))
PY
ansible-playbook -i playbooks/inventory/hosts.yml playbooks/mirror.yml \
  --vault-password-file "$vault_pw" -e @"$dir/vault-key.yml" -e @"$dir/demo-vars.json"

echo
echo "demo: what was written"
echo "  site registry: $(read_info open_registry_url)/v2/_catalog -> $(python -c "import json,sys,urllib.request; print(', '.join(json.load(urllib.request.urlopen(sys.argv[1] + '/v2/_catalog'))['repositories']))" "$(read_info open_registry_url)")"
echo "  archives:"
find "$dir/archives" -type f -printf '    %P (%s bytes)\n' | sort
echo "  facts file ($dir/root/etc/ansible/facts.d/ngc_mirror.fact): $(python -c "import json,sys; print(len(json.load(open(sys.argv[1]))['images']))" "$dir/root/etc/ansible/facts.d/ngc_mirror.fact") images recorded"
timer=$dir/root/etc/systemd/system/ngc-mirror.timer
service=$dir/root/etc/systemd/system/ngc-mirror.service
if systemd-analyze verify "$timer" "$service" >/dev/null 2>&1; then verdict="systemd-analyze verify: ok"; else verdict="systemd-analyze verify: FAILED"; fi
echo "  timer: $(grep -E '^OnCalendar=' "$timer") ($verdict)"

echo
echo "demo: 3. the nightly run, as the timer starts it (nothing new: nothing copied)"
"$dir/root/usr/local/sbin/ngc-mirror" | sed -n '/Show what was copied/,/^$/p'
