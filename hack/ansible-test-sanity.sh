#!/usr/bin/env bash
# ansible-test must run from inside ansible_collections/<ns>/<name>. Copy
# the files git knows (tracked, and untracked but not ignored) into such a
# tree under .cache (one directory per run, so that two runs never share
# one) and run the sanity tests there, locally, on the
# virtualenv's Python. ansible-test installs each test's own pinned
# requirements (pylint, voluptuous, ...) into virtualenvs it caches under
# ~/.ansible/test/venv, so a second run installs nothing.
set -euo pipefail
top=$(git rev-parse --show-toplevel)
cd "$top"
mkdir -p "$top/.cache"
root=$(mktemp -d "$top/.cache/sanity.XXXXXX")
trap 'rm -rf "$root"' EXIT
work="$root/ansible_collections/burst/golden_ami"
mkdir -p "$work"
# The collections ours depends on must sit beside it for the import and
# validate-modules tests (doc fragments, module_utils).
site=$(echo "$top"/.venv/lib/python3*/site-packages/ansible_collections)
for dep in amazon/aws community/docker; do
  mkdir -p "$root/ansible_collections/${dep%/*}"
  cp -r "$site/$dep" "$root/ansible_collections/$dep"
done
git ls-files -z --cached --others --exclude-standard \
  | rsync -a --from0 --files-from=- ./ "$work/" 2>/dev/null \
  || git ls-files -z --cached --others --exclude-standard | xargs -0 cp --parents -t "$work"
cd "$work"
# ansible-test bootstraps pip in its sanity virtualenvs with a script it
# downloads from a host this machine cannot reach; give it a local one, for
# the pip version this ansible-test pins.
pip_version=$(grep -o "pip='[0-9.]*'" "$top"/.venv/lib/python3*/site-packages/ansible_test/_internal/python_requirements.py | head -n1 | cut -d"'" -f2)
cache="$HOME/.ansible/test/cache/get_pip_${pip_version//./_}.py"
if [ ! -s "$cache" ]; then
  mkdir -p "$(dirname "$cache")"
  cp "$top/hack/get_pip_from_ensurepip.py" "$cache"
fi
# ansible-test reads git metadata for the file list; give it the same view.
git init -q . && git add -A >/dev/null
"$top/.venv/bin/ansible-test" sanity --color --python 3.11 --requirements "$@"
