#!/usr/bin/env bash
# Install the Debian packages the local test world runs on, when missing:
# docker-registry (local registry), skopeo (image inspection and copies),
# busybox-static (the stand-in images' httpd), debootstrap (base image),
# wrk (benchmarks), shellcheck (ansible-test sanity), rsync, gpg (the
# stand-in apt repository's signing key).
set -euo pipefail
want=(docker-registry skopeo busybox-static debootstrap wrk shellcheck rsync gpg)
missing=()
for pkg in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
echo "[world-deps] installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# Debian's package starts a registry on :5000 for every address; the local
# world runs its own on loopback, on a port of its choosing.
if command -v systemctl >/dev/null 2>&1 && systemctl is-system-running >/dev/null 2>&1; then
  systemctl disable --now docker-registry >/dev/null 2>&1 || true
fi
pkill -f '^/usr/bin/docker-registry serve /etc/docker/registry/config.yml' 2>/dev/null || true
