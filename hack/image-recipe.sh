# shellcheck shell=bash
# Sourced by the scripts that build a local image from debootstrap
# (build-base-image.sh, build-ee-base.sh): skip a build whose recipe the
# image already carries, and have debootstrap at hand.

# image_is_current IMAGE LABEL RECIPE: true when IMAGE is labelled LABEL=RECIPE and FORCE is not 1.
image_is_current() {
  local current
  current=$(docker image inspect -f "{{ index .Config.Labels \"$2\" }}" "$1" 2>/dev/null || true)
  [ "${FORCE:-0}" != 1 ] && [ "$current" = "$3" ]
}

ensure_debootstrap() {
  if ! command -v debootstrap >/dev/null 2>&1; then
    log "installing debootstrap"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
  fi
}
