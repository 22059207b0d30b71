#!/usr/bin/env bash
# Copy the checkout into BASE/ansible_collections/airgap/ngc (the shape ansible-test needs;
# BASE is build/ unless given) and make it a git repository so ansible-test only looks at
# the project's own files. Prints the tree's path.
set -euo pipefail
cd "$(dirname "$0")/.."
base=${1:-build}
dest=$base/ansible_collections/airgap/ngc
mkdir -p "$base"
exec 9>"$base/.collection-tree.lock"
flock 9
rm -rf "$dest"
mkdir -p "$dest"
git ls-files -z --cached --others --exclude-standard | while IFS= read -r -d '' f; do
  [ -e "$f" ] && printf '%s\0' "$f"
done | xargs -0 cp --parents -t "$dest"
(
  cd "$dest"
  git init -q
  git add -A
  git -c user.name=ci -c user.email=ci@localhost commit -q -m tree
)
echo "$dest"
