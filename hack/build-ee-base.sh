#!/usr/bin/env bash
# Build the execution environment's base image: Debian 12 (debootstrap
# minbase) with python3, pip and venv, ca-certificates, and a dnf-like
# front end to apt for ansible-builder's scripts. Imported with
# `docker import`, so no registry is involved. Rebuilt only when this
# recipe changes (or with FORCE=1). hack/build-ee.sh calls it.
#
# The certificate authorities this machine adds to Debian's
# (/usr/local/share/ca-certificates, as behind a TLS-inspecting proxy) are
# added to the image too, or pip could not reach PyPI during the build;
# BURST_EE_CA_DIR= (empty) leaves them out.
set -euo pipefail

IMAGE="${BURST_EE_BASE_IMAGE:-burst-golden-ami/debian12-ee-base:latest}"
SUITE="${BURST_BASE_SUITE:-bookworm}"
MIRROR="${BURST_BASE_MIRROR:-http://deb.debian.org/debian}"
PACKAGES="python3,python3-pip,python3-venv,ca-certificates"
# ansible-builder's scripts call "$PKGMGR install -y PACKAGE..." and "$PKGMGR clean all", as with dnf.
PKGMGR=/usr/local/sbin/ee-pkgmgr
CA_DIR="${BURST_EE_CA_DIR-/usr/local/share/ca-certificates}"

log() { printf '[build-ee-base] %s\n' "$*" >&2; }

# The image is labelled with the digest of this script and those certificates: a changed recipe rebuilds it.
local_cas() {
  if [ -n "$CA_DIR" ] && [ -d "$CA_DIR" ]; then
    find "$CA_DIR" -type f -name '*.crt' | sort
  fi
}
# shellcheck source=hack/image-recipe.sh
. "$(dirname "$0")/image-recipe.sh"
recipe=$({ cat "$0" "$(dirname "$0")/image-recipe.sh"; local_cas | xargs -r cat; } | sha256sum | cut -c1-16)
if image_is_current "$IMAGE" org.burst.ee-base-recipe "$recipe"; then
  log "$IMAGE already present (recipe $recipe)"
  exit 0
fi
ensure_debootstrap

root=$(mktemp -d /var/tmp/burst-ee-rootfs.XXXXXX)
trap 'rm -rf "$root"' EXIT
log "debootstrap $SUITE into $root"
debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$root" "$MIRROR" >/dev/null

rm -f "$root"/etc/machine-id "$root"/var/lib/dbus/machine-id
# A container has no init system: packages start no service when installed.
printf '#!/bin/sh\nexit 101\n' > "$root"/usr/sbin/policy-rc.d
chmod 0755 "$root"/usr/sbin/policy-rc.d
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* "$root"/var/log/*.log
printf 'deb %s %s main\ndeb %s %s-updates main\n' "$MIRROR" "$SUITE" "$MIRROR" "$SUITE" \
  > "$root"/etc/apt/sources.list
# ansible-builder installs Ansible and the collections' Python libraries with the system's pip (PEP 668 would
# refuse it): the image is a single-purpose container, not a shared system.
rm -f "$root"/usr/lib/python3*/EXTERNALLY-MANAGED
if [ -n "$(local_cas)" ]; then
  log "adding this machine's certificate authorities from $CA_DIR"
  local_cas | while read -r cert; do cp "$cert" "$root/usr/local/share/ca-certificates/"; done
  chroot "$root" update-ca-certificates >/dev/null 2>&1 || { log "update-ca-certificates failed"; exit 1; }
fi
cat > "$root$PKGMGR" <<'EOF'
#!/bin/sh
# dnf's command line, as ansible-builder's scripts use it (install -y PACKAGE..., clean all), on apt.
set -eu
command=${1:-}
[ $# -gt 0 ] && shift
case "$command" in
  install)
    packages=""
    for argument in "$@"; do
      case "$argument" in -*) ;; *) packages="$packages $argument" ;; esac
    done
    [ -n "$packages" ] || exit 0
    apt-get update -qq
    # shellcheck disable=SC2086
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $packages
    ;;
  clean)
    apt-get clean
    rm -rf /var/lib/apt/lists/*
    ;;
  *)
    echo "ee-pkgmgr: unsupported command '$command' (install, clean)" >&2
    exit 2
    ;;
esac
EOF
chmod 0755 "$root$PKGMGR"

log "importing as $IMAGE"
tar -C "$root" -c . | docker import \
  --change 'ENV LANG=C.UTF-8' \
  --change 'CMD ["/bin/bash"]' \
  --change "LABEL org.burst.ee-base-recipe=$recipe" \
  - "$IMAGE" >/dev/null
log "built $IMAGE"
