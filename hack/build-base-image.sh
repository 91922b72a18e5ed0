#!/usr/bin/env bash
# Build the molecule/builder base image: Debian 12 with systemd, python3,
# sudo and ca-certificates, from debootstrap, imported with `docker import`.
# Rebuilt only when missing (or with FORCE=1).
set -euo pipefail

IMAGE="${BURST_BASE_IMAGE:-burst-golden-ami/debian12-systemd:latest}"
SUITE="${BURST_BASE_SUITE:-bookworm}"
MIRROR="${BURST_BASE_MIRROR:-http://deb.debian.org/debian}"
PACKAGES="systemd,systemd-sysv,python3,python3-apt,sudo,ca-certificates,procps,iproute2"

log() { printf '[build-base-image] %s\n' "$*" >&2; }

# The image is labelled with this script's digest: a changed recipe rebuilds it.
# shellcheck source=hack/image-recipe.sh
. "$(dirname "$0")/image-recipe.sh"
recipe=$(cat "$0" "$(dirname "$0")/image-recipe.sh" | sha256sum | cut -c1-16)
if image_is_current "$IMAGE" org.burst.base-recipe "$recipe"; then
  log "$IMAGE already present (recipe $recipe)"
  exit 0
fi
ensure_debootstrap

root=$(mktemp -d /var/tmp/burst-rootfs.XXXXXX)
trap 'rm -rf "$root"' EXIT
log "debootstrap $SUITE into $root"
debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$root" "$MIRROR" >/dev/null

# A container image, not a machine: no getty, no udev triggers, no machine id.
rm -f "$root"/etc/machine-id "$root"/var/lib/dbus/machine-id
: > "$root"/etc/machine-id
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* "$root"/var/lib/apt/periodic/*
# An empty package index must look stale, or apt's cache_valid_time would
# trust it and find no package at all.
touch -d @0 "$root"/var/lib/apt/lists
ln -sf /dev/null "$root"/etc/systemd/system/getty@tty1.service
ln -sf /dev/null "$root"/etc/systemd/system/systemd-udevd.service
ln -sf /dev/null "$root"/etc/systemd/system/systemd-udev-trigger.service
# apt inside the container reaches the same Debian mirror the host uses.
printf 'deb %s %s main\ndeb %s %s-updates main\n' "$MIRROR" "$SUITE" "$MIRROR" "$SUITE" \
  > "$root"/etc/apt/sources.list

log "importing as $IMAGE"
tar -C "$root" -c . | docker import \
  --change 'CMD ["/lib/systemd/systemd"]' \
  --change 'ENV container=docker' \
  --change "LABEL org.burst.base-recipe=$recipe" \
  - "$IMAGE" >/dev/null
log "built $IMAGE"
