#!/usr/bin/env bash
# Ensure a Docker engine answers on this machine, without creating any
# network bridge: no docker0, no iptables rules, containers use the host's
# network namespace (loopback services stay reachable from inside).
set -euo pipefail

log() { printf '[ensure-docker] %s\n' "$*" >&2; }

if docker info >/dev/null 2>&1; then
  log "a Docker engine already answers"
  exit 0
fi

if ! command -v dockerd >/dev/null 2>&1; then
  log "installing Debian's docker.io"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq docker.io >/dev/null
fi

log "starting dockerd with --bridge=none"
mkdir -p /var/log
# setsid: the daemon outlives the shell that started it.
setsid dockerd \
  --bridge=none --iptables=false --ip6tables=false --ip-forward=false \
  --ip-masq=false --userland-proxy=false \
  >/var/log/burst-dockerd.log 2>&1 < /dev/null &

for _ in $(seq 1 60); do
  if docker info >/dev/null 2>&1; then
    log "dockerd is up"
    exit 0
  fi
  sleep 1
done
log "dockerd did not answer within 60 s; see /var/log/burst-dockerd.log"
tail -n 20 /var/log/burst-dockerd.log >&2 || true
exit 1
