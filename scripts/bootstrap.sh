#!/usr/bin/env bash
# Install what the demo, the tests and the benchmark need: Debian packages when missing,
# and the pinned Python packages into .venv/ and, for the oldest ansible-core claimed, .venv-oldest/ (re-installed
# when requirements change).
set -euo pipefail
cd "$(dirname "$0")/.."

debs=(docker.io containerd docker-registry skopeo squashfs-tools squashfs-tools-ng umoci siftool podman systemd git make shellcheck)
missing=()
for pkg in "${debs[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "bootstrap: installing Debian packages: ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

stamp=.venv/.requirements.sha256
want=$(cat requirements.txt requirements-dev.txt | sha256sum | cut -d' ' -f1)
if [ ! -x .venv/bin/python ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "bootstrap: installing Python packages into .venv/"
  python3 -m venv .venv
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -r requirements-dev.txt
  echo "$want" > "$stamp"
fi

# The oldest ansible-core meta/runtime.yml claims, in a venv of its own: the integration tests run the role and the
# playbooks with its ansible-playbook too.
stamp=.venv-oldest/.requirements.sha256
want=$(cat requirements.txt requirements-oldest.txt | sha256sum | cut -d' ' -f1)
if [ ! -x .venv-oldest/bin/ansible-playbook ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "bootstrap: installing the oldest supported ansible-core into .venv-oldest/"
  python3 -m venv .venv-oldest
  .venv-oldest/bin/pip install -q --upgrade pip
  .venv-oldest/bin/pip install -q -r requirements-oldest.txt
  echo "$want" > "$stamp"
fi

# ansible-test sanity fetches a get-pip script from the internet; seed its cache with an offline one.
pip_version=$(.venv/bin/python - <<'PY'
from ansible_test._internal.python_requirements import get_venv_packages
from types import SimpleNamespace
print(get_venv_packages(SimpleNamespace(version="3.11"))["pip"])
PY
) || pip_version=""
if [ -n "$pip_version" ]; then
  cache=~/.ansible/test/cache/get_pip_${pip_version//./_}.py
  mkdir -p "$(dirname "$cache")"
  cmp -s scripts/get_pip_offline.py "$cache" || cp scripts/get_pip_offline.py "$cache"
fi
