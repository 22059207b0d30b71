#!/usr/bin/env bash
# The demo: start a local stand-in for NGC (an NGC catalog API and an nvcr.io-like registry
# with token auth, seeded with small NGC-like images) and a site registry, then:
#   1. list the stand-in's catalog through playbooks/catalog.yml;
#   2. apply the ngc_mirror role (playbooks/mirror.yml) with the key from Ansible Vault:
#      catalog per selection, mirror into the site registry and into archives, facts file,
#      systemd timer rendered (under build/demo/root, not the real /etc);
#   3. run the rendered wrapper once more, as the timer would: nothing left to copy;
#   4. the connected side of the air gap: export a selection into a bundle (playbooks/export.yml); then NGC
#      publishes a new PyTorch tag that shares its base layers, and a delta bundle carries only its new blobs;
#   5. "carry" both (copy the directories), stop the NGC stand-in's registry, and on the far side import them
#      into a second registry that never saw the source, and have a GPU node's Docker engine pull from there
#      (playbooks/import.yml); digests are compared with the source's;
#   6. on a Slurm login node of the far side, write the bundle's images as enroot .sqsh files and Apptainer SIF
#      files (playbooks/hpc_cache.yml), with neither tool installed; siftool shows what a SIF holds;
#   7. on a Kubernetes GPU node of the far side, point a containerd at the site registry (playbooks/node_mirror.yml)
#      and pull nvcr.io/nvidia/... names through it, with the source's digests.
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
python -m tests.testbed up --dir "$dir" --scale small >"$dir/up.json"
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
printf '%s' "$NGC_API_KEY" | ansible-vault encrypt_string --vault-password-file "$vault_pw" \
  --stdin-name ngc_mirror_api_key >"$dir/vault-api-key.yml" 2>/dev/null  # the playbooks' variable for the key
chmod 600 "$dir/vault-key.yml" "$dir/vault-api-key.yml"
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

echo
echo "demo: 4. connected side: export a selection into a bundle (playbooks/export.yml)"
python - "$dir" >"$dir/export-vars.json" <<'PY'
import json
import sys

d = sys.argv[1]
tb = json.load(open(f"{d}/testbed.json"))
print(json.dumps({
    "export_api_url": tb["ngc_api_url"], "export_registry_url": tb["source_registry_url"],
    "export_selections": [{"images": ["pytorch"], "strict_name_match": True, "py_version": "py3", "latest": 2},
                          {"images": ["cuda"], "strict_name_match": True, "latest": 1}],
    "export_bundle_dir": f"{d}/ngc-2026-11", "export_facts_file": f"{d}/root/etc/ansible/facts.d/export.fact",
}))
PY
ansible-playbook playbooks/export.yml -e @"$dir/export-vars.json" -e @"$dir/vault-api-key.yml" --vault-password-file "$vault_pw"
echo "  bundle: $(du -sb "$dir/ngc-2026-11" | cut -f1) bytes in $(find "$dir/ngc-2026-11/blobs" -type f | wc -l) blobs, each once"
echo
echo "demo: 4b. NGC publishes nvidia/pytorch:24.03-py3 (the base layers of 24.02 and one new layer); a delta bundle"
python - "$dir" <<'PY'
import gzip
import hashlib
import io
import json
import sys
import tarfile

from tests.testbed._blobs import BlobInfo, image_config, image_manifest
from tests.testbed._push import Pusher

d = sys.argv[1]
tb = json.load(open(f"{d}/testbed.json"))
pusher = Pusher(tb["source_registry_url"], "$oauthtoken", tb["api_key"])
base = json.loads(pusher._request("GET", "/v2/nvidia/pytorch/manifests/24.02-py3", "nvidia/pytorch",  # pylint: disable=protected-access
                                  headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"}).content)
raw = io.BytesIO()
with tarfile.open(fileobj=raw, mode="w") as archive:
    body = b"what is new in 24.03\n" * 1000
    info = tarfile.TarInfo("opt/pytorch/RELEASE-24.03.txt")
    info.size = len(body)
    archive.addfile(info, io.BytesIO(body))
layer = pusher.upload_bytes("nvidia/pytorch", gzip.compress(raw.getvalue(), mtime=0))
layers = [BlobInfo(l["digest"], l["size"]) for l in base["layers"]] + [layer]
base_config = json.loads(pusher._request("GET", f"/v2/nvidia/pytorch/blobs/{base['config']['digest']}",  # pylint: disable=protected-access
                                         "nvidia/pytorch").content)
diff_ids = base_config["rootfs"]["diff_ids"] + ["sha256:" + hashlib.sha256(raw.getvalue()).hexdigest()]
config = pusher.upload_bytes("nvidia/pytorch", image_config("amd64", "2024-03-20T00:00:00Z", diff_ids,
                                                            [str(n) for n in range(len(layers))], {}))
media_type, manifest = image_manifest(False, config, layers)
pushed = pusher.put_manifest("nvidia/pytorch", "24.03-py3", media_type, manifest)
json.dump({"nvidia/pytorch:24.03-py3": pushed}, open(f"{d}/published.json", "w"))
print("  pushed nvidia/pytorch:24.03-py3", pushed)
PY
python - "$dir" >"$dir/delta-vars.json" <<'PY'
import json
import sys

d = sys.argv[1]
v = json.load(open(f"{d}/export-vars.json"))
v.update(export_bundle_dir=f"{d}/ngc-2026-12", export_since="last", export_selections=[],
         export_images=["nvidia/pytorch:24.02-py3", "nvidia/pytorch:24.03-py3"])
print(json.dumps(v))
PY
ansible-playbook playbooks/export.yml -e @"$dir/delta-vars.json" -e @"$dir/vault-api-key.yml" --vault-password-file "$vault_pw" | sed -n '/Show what the bundle holds/,/PLAY RECAP/p'
echo "  delta bundle: $(du -sb "$dir/ngc-2026-12" | cut -f1) bytes; it carries $(python -c "import json,sys; c=json.load(open(sys.argv[1])); print(len([f for f in c['files'] if f.startswith('blobs/')]), 'blob files and expects', len(c['expected']), 'from bundle', ', '.join(sorted({e['bundle'] for e in c['expected'].values()})))" "$dir/ngc-2026-12/contents.json")"

echo
echo "demo: 4c. connected side, a Kubernetes GPU site: the GPU Operator chart and every image it deploys on two node OSes"
echo "  (driver tags with -ubuntu22.04 and -rhel9.6, NFD from registry.k8s.io) into a bundle (playbooks/k8s_gpu_stack.yml)"
python - "$dir" >"$dir/gpu-export-vars.json" <<'PY'
import json
import sys

d = sys.argv[1]
tb = json.load(open(f"{d}/testbed.json"))
charts = json.load(open(tb["chart_file"]))
print(json.dumps({
    "k8s_gpu_side": "export", "k8s_gpu_bundle_dir": f"{d}/gpu-stack", "k8s_gpu_driver_os": ["ubuntu22.04", "rhel9.6"],
    "k8s_gpu_charts": [f"{charts['name']}:{charts['versions'][-1]}"], "k8s_gpu_registry_url": tb["source_registry_url"],
    "k8s_gpu_helm_url": charts["helm_url"], "k8s_gpu_upstream_registries": {"registry.k8s.io": {"url": tb["k8s_registry_url"]}},
    "k8s_gpu_facts_file": f"{d}/root/etc/ansible/facts.d/gpu-export.fact",
}))
PY
ansible-playbook playbooks/k8s_gpu_stack.yml -e @"$dir/gpu-export-vars.json" -e @"$dir/vault-api-key.yml" --vault-password-file "$vault_pw" \
  | sed -n '/TASK \[Show/,/PLAY RECAP/p' | grep -v '^$' | head -30
echo "  bundle: $(du -sb "$dir/gpu-stack" | cut -f1) bytes, $(python -c "import json,sys; print(len(json.load(open(sys.argv[1]))['images']))" "$dir/gpu-stack/contents.json") artifacts (the chart and its images)"
echo
echo "demo: 5. carry both bundles across; stop the stand-in's registry; import on the far side (playbooks/import.yml)"
mkdir -p "$dir/usb"
cp -a "$dir/ngc-2026-11" "$dir/ngc-2026-12" "$dir/gpu-stack" "$dir/usb/"
python - "$dir" <<'PY'
import json
import os
import signal
import sys

tb = json.load(open(f"{sys.argv[1]}/testbed.json"))
for name in ("proxy", "registry-token"):
    os.kill(tb["pids"][name], signal.SIGTERM)
print("  the source registry is stopped: nothing below can reach it")
PY
python - "$dir" >"$dir/import-vars.json" <<'PY'
import json
import sys

d = sys.argv[1]
tb = json.load(open(f"{d}/testbed.json"))
print(json.dumps({
    "import_bundle_dir": f"{d}/usb/ngc-2026-11",
    "import_registry": {"url": tb["basic_registry_url"], "username": tb["basic_username"], "prefix": "site"},
    "import_registry_password": tb["basic_password"],
    "import_docker": {"host": tb["docker_host"], "source": "registry"},
    "import_facts_file": f"{d}/root/etc/ansible/facts.d/import.fact",
}))
PY
chmod 600 "$dir/import-vars.json"
ansible-playbook playbooks/import.yml -e @"$dir/import-vars.json"
echo "  then the delta bundle:"
python - "$dir" >"$dir/import-delta-vars.json" <<'PY'
import json
import sys

d = sys.argv[1]
v = json.load(open(f"{d}/import-vars.json"))
v["import_bundle_dir"] = f"{d}/usb/ngc-2026-12"
print(json.dumps(v))
PY
chmod 600 "$dir/import-delta-vars.json"
ansible-playbook playbooks/import.yml -e @"$dir/import-delta-vars.json"
echo "  digests on the far side against the source's (skopeo):"
python - "$dir" <<'PY'
import base64
import hashlib
import json
import subprocess
import sys

d = sys.argv[1]
tb = json.load(open(f"{d}/testbed.json"))
seed = {f"{r['repository']}:{t['tag']}": t["digest"] for r in json.load(open(tb["seed_file"]))["repositories"] for t in r.get("tags") or []}
entries = json.load(open(f"{d}/usb/ngc-2026-11/index.json"))["manifests"] + json.load(open(f"{d}/usb/ngc-2026-12/index.json"))["manifests"]
auth = base64.b64encode(f"{tb['basic_username']}:{tb['basic_password']}".encode()).decode()
with open(f"{d}/far-auth.json", "w") as handle:
    json.dump({"auths": {tb["basic_registry_host"]: {"auth": auth}}}, handle)
seed.update(json.load(open(f"{d}/published.json")))  # the tag published during the demo
for ref in sorted({e["annotations"]["org.opencontainers.image.ref.name"].split("/", 1)[1] for e in entries}):
    raw = subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false", "--authfile", f"{d}/far-auth.json",
                          f"docker://{tb['basic_registry_host']}/site/{ref}"], capture_output=True, check=True).stdout
    far = "sha256:" + hashlib.sha256(raw).hexdigest()
    print(f"    {ref}: {'same digest' if far == seed[ref] else 'DIFFERENT'} ({far[:19]}...)")
PY
echo "  the GPU node's engine holds:"
DOCKER_HOST=$(read_info docker_host) docker images --digests --format '{{.Repository}}:{{.Tag}} {{.Digest}}' | grep '/site/' | sort | sed 's/^/    /'

echo
echo "demo: 6. far side, Slurm login node: enroot and Apptainer caches from the carried bundle (playbooks/hpc_cache.yml)"
python - "$dir" >"$dir/hpc-vars.json" <<'PY'
import json
import sys

d = sys.argv[1]
# The x86 cluster's images: the bundle's arm64-only pytorch:24.02-py3-igpu (Jetson) would fail enroot.platform linux/amd64.
print(json.dumps({"hpc_source": "bundle", "hpc_source_dir": f"{d}/usb/ngc-2026-11",
                  "hpc_images": ["nvidia/pytorch:24.02-py3", "nvidia/cuda:12.10.0-base-ubuntu22.04"],
                  "hpc_enroot_dir": f"{d}/shared/enroot", "hpc_sif_dir": f"{d}/shared/sif",
                  "hpc_facts_file": f"{d}/root/etc/ansible/facts.d/hpc.fact"}))
PY
ansible-playbook playbooks/hpc_cache.yml -e @"$dir/hpc-vars.json" | sed -n '/TASK \[Show where/,/PLAY RECAP/p' | grep -v '^$' | head -40
echo "  written (neither enroot nor apptainer is installed here):"
find "$dir/shared" -type f -printf '    %P (%s bytes)\n' | sort
sif=$(find "$dir/shared/sif" -type f | sort | head -1)
echo "  siftool list ${sif#"$dir/"}:"
siftool list "$sif" | sed 's/^/    /'

echo
echo "demo: 7. far side, a Kubernetes GPU node: its containerd pulls nvcr.io/nvidia/... through the site registry"
echo "  (playbooks/node_mirror.yml writes certs.d/nvcr.io/hosts.toml; the nodes' registry takes no credentials)"
python - "$dir" >"$dir/import-open-vars.json" <<'PY'
import json
import sys

d = sys.argv[1]
tb = json.load(open(f"{d}/testbed.json"))
print(json.dumps({"import_bundle_dir": f"{d}/usb/ngc-2026-11", "import_registry": {"url": tb["open_registry_url"], "prefix": "site"},
                  "import_facts_file": f"{d}/root/etc/ansible/facts.d/import-nodes.fact"}))
PY
ansible-playbook playbooks/import.yml -e @"$dir/import-open-vars.json" | sed -n '/pull them as/p'
python - "$dir" <<'PY'
import json
import subprocess
import sys
from pathlib import Path

from tests.testbed.containerd import start_containerd

d = Path(sys.argv[1])
tb = json.load(open(d / "testbed.json"))
seed = {f"{r['repository']}:{t['tag']}": t["digest"] for r in json.load(open(tb["seed_file"]))["repositories"] for t in r.get("tags") or []}
refs = sorted({e["annotations"]["org.opencontainers.image.ref.name"].split("/", 1)[1]
               for e in json.load(open(d / "usb" / "ngc-2026-11" / "index.json"))["manifests"]})
node = start_containerd()
try:
    (d / "node").mkdir(exist_ok=True)
    (d / "node" / "hosts.yml").write_text(f"k8s_nodes:\n  hosts:\n    gpu-node-1:\n      ansible_connection: local\n"
                                          f"      ansible_python_interpreter: {sys.executable}\n")
    (d / "node" / "vars.json").write_text(json.dumps({
        "node_mirror_registry_url": tb["open_registry_url"], "node_mirror_prefix": "site", "node_mirror_become": False,
        "node_mirror_containerd_certs_dir": str(node.config_path), "node_mirror_containerd_config": str(node.directory / "config.toml"),
        "node_mirror_registries_conf_dir": str(d / "node" / "registries.conf.d"), "node_mirror_rancher_dir": str(d / "node" / "rancher")}))
    run = subprocess.run(["ansible-playbook", "-i", str(d / "node" / "hosts.yml"), "playbooks/node_mirror.yml", "-e", f"@{d / 'node' / 'vars.json'}"],
                         capture_output=True, text=True, check=False)
    print("\n".join("    " + line for line in run.stdout.splitlines() if "gpu-node-1" in line and ":" in line and "ok=" in line))
    if run.returncode != 0:
        raise SystemExit(run.stdout + run.stderr)
    print("    " + (node.config_path / "nvcr.io" / "hosts.toml").read_text().replace("\n", "\n    ").rstrip())
    for ref in refs:
        node.ctr("images", "pull", "--hosts-dir", str(node.config_path), f"nvcr.io/{ref}")
    held = node.images()
    for ref in refs:
        digest = held.get(f"nvcr.io/{ref}")
        print(f"    ctr -n k8s.io: nvcr.io/{ref}: {'same digest' if digest == seed[ref] else 'DIFFERENT'} ({(digest or '?')[:19]}...)")
finally:
    node.stop()
PY
echo
echo "demo: 8. far side, the Kubernetes GPU site: the carried chart into the site registry and a chart repository,"
echo "  with a values file for helm install -f (playbooks/k8s_gpu_stack.yml; the source registry is still stopped)"
python - "$dir" >"$dir/gpu-import-vars.json" <<'PY'
import json
import sys

d = sys.argv[1]
v = json.load(open(f"{d}/gpu-export-vars.json"))
tb = json.load(open(f"{d}/testbed.json"))
print(json.dumps({
    "k8s_gpu_side": "import", "k8s_gpu_bundle_dir": f"{d}/usb/gpu-stack", "k8s_gpu_driver_os": v["k8s_gpu_driver_os"],
    "k8s_gpu_charts": v["k8s_gpu_charts"], "k8s_gpu_registry": {"url": tb["open_registry_url"], "prefix": "site"},
    "k8s_gpu_chart_repo_dir": f"{d}/far/charts", "k8s_gpu_values_dir": f"{d}/far/values",
    "k8s_gpu_facts_file": f"{d}/root/etc/ansible/facts.d/gpu-import.fact",
}))
PY
ANSIBLE_CALLBACK_RESULT_FORMAT=json ansible-playbook playbooks/k8s_gpu_stack.yml -e @"$dir/gpu-import-vars.json" \
  | grep -oE 'helm (install|repo add) [^"]*' | sed 's/^/  /' | head -6
echo "  chart repository: $(find "$dir/far/charts" -maxdepth 1 -type f -printf '%f ' | sort)"
echo "  every image the chart deploys on those OSes, in the site registry, against the digests the stand-in pushed:"
python - "$dir" <<'PY'
import json
import sys
import urllib.request

from tests.testbed.charts import ChartOracle

d = sys.argv[1]
tb = json.load(open(f"{d}/testbed.json"))
v = json.load(open(f"{d}/gpu-export-vars.json"))
oracle = ChartOracle(json.load(open(tb["chart_file"])))
version = v["k8s_gpu_charts"][0].rsplit(":", 1)[1]
same = 0
wanted = oracle.images(version, v["k8s_gpu_driver_os"])
for reference, digest in sorted(wanted.items()):
    path, tag = reference.split("/", 1)[1].rsplit(":", 1)
    request = urllib.request.Request(f"{tb['open_registry_url']}/v2/site/{path}/manifests/{tag}", method="HEAD", headers={"Accept": ", ".join([
        "application/vnd.oci.image.index.v1+json", "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json", "application/vnd.docker.distribution.manifest.v2+json"])})
    with urllib.request.urlopen(request) as answer:
        held = answer.headers.get("Docker-Content-Digest")
    same += held == digest
    print(f"    site/{path}:{tag}: {'same digest' if held == digest else 'DIFFERENT'} ({(held or '?')[:19]}...)")
print(f"    {same} of {len(wanted)} images with the source's digest")
if same != len(wanted):
    raise SystemExit("demo: an image of the chart is missing or different on the far side")
PY
