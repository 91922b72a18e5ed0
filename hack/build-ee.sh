#!/usr/bin/env bash
# Build the execution environment image burst-golden-ami-ee:<galaxy.yml version>
# from execution-environment.yml, without any registry or Galaxy server:
#
# 1. the base image, local (hack/build-ee-base.sh);
# 2. the collection tarballs the definition lists, in .cache/ee/collections:
#    this collection built from the checkout, and each dependency made from
#    the copy installed in .venv (its MANIFEST.json and FILES.json, every file
#    checked against FILES.json), at exactly the version the definition names;
# 3. ansible-builder build, with the host's network (dockerd has no bridge).
#
# The image is labelled with the recipe's digest (the definition, every
# tarball's MANIFEST.json, the base image's recipe, ansible-builder's version
# and this script): the build is skipped while an image with that label
# exists, unless FORCE=1. Concurrent calls wait for each other.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO"
VENV="${VENV:-$REPO/.venv}"
export PATH="$VENV/bin:$PATH"
WORK=.cache/ee
COLLECTIONS=$WORK/collections
BASE_IMAGE="${BURST_EE_BASE_IMAGE:-burst-golden-ami/debian12-ee-base:latest}"

log() { printf '[build-ee] %s\n' "$*" >&2; }

mkdir -p "$WORK"
exec 9>"$WORK/.lock"
flock 9

started=$(date +%s)
version=$(python -c 'import yaml; print(yaml.safe_load(open("galaxy.yml"))["version"])')
IMAGE="${BURST_EE_IMAGE:-burst-golden-ami-ee:$version}"

BURST_EE_BASE_IMAGE="$BASE_IMAGE" hack/build-ee-base.sh

rm -rf "$COLLECTIONS" && mkdir -p "$COLLECTIONS"
ansible-galaxy collection build --force --output-path "$COLLECTIONS" . >/dev/null

# The dependencies' tarballs, made from the installed copies, byte for byte reproducible.
python hack/collection_artifact.py "$COLLECTIONS" --definition execution-environment.yml

# The recipe: what goes into the image, by content.
recipe=$(
  {
    cat execution-environment.yml "$REPO/hack/build-ee.sh" "$REPO/hack/collection_artifact.py"
    ansible-builder --version
    docker image inspect -f '{{ index .Config.Labels "org.burst.ee-base-recipe" }}' "$BASE_IMAGE"
    for tarball in "$COLLECTIONS"/*.tar.gz; do
      basename "$tarball"
      tar -xzOf "$tarball" MANIFEST.json
    done
  } | sha256sum | cut -c1-16
)
previous=$(docker image inspect -f '{{ .Id }} {{ index .Config.Labels "org.burst.ee-recipe" }}' "$IMAGE" 2>/dev/null || true)
if [ "${FORCE:-0}" != 1 ] && [ "${previous#* }" = "$recipe" ]; then
  log "$IMAGE already present (recipe $recipe, $(($(date +%s) - started)) s)"
  exit 0
fi

log "building $IMAGE (recipe $recipe)"
ansible-builder build \
  --file execution-environment.yml \
  --context "$WORK/context" \
  --container-runtime docker \
  --tag "$IMAGE" \
  --verbosity 2 \
  --extra-build-cli-args "--network=host --force-rm --label org.burst.ee-recipe=$recipe"

# The image this one replaces, now untagged, and the untagged images of builds on an older base image (every
# stage inherits the base's label); those of the current base stay, as the layer cache of the next build.
old_id=${previous%% *}
if [ -n "$old_id" ] && [ "$old_id" != "$(docker image inspect -f '{{ .Id }}' "$IMAGE")" ]; then
  docker image rm "$old_id" >/dev/null 2>&1 || true
fi
base_label='{{ index .Config.Labels "org.burst.ee-base-recipe" }}'
base_recipe=$(docker image inspect -f "$base_label" "$BASE_IMAGE")
docker image ls -q --no-trunc -f dangling=true -f label=org.burst.ee-base-recipe | while read -r id; do
  if [ "$(docker image inspect -f "$base_label" "$id" 2>/dev/null)" != "$base_recipe" ]; then
    docker image rm "$id" >/dev/null 2>&1 || true
  fi
done
log "built $IMAGE in $(($(date +%s) - started)) s"
