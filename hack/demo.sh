#!/usr/bin/env bash
# make demo: a whole bake (playbooks/bake.yml with playbooks/vars/demo.yml)
# against the local world: moto as EC2 and SSM, the local registry, the local
# Hub mirror, and a local systemd container standing in for the builder.
#
# The local world keeps running after the demo (state and logs in .world/),
# so that a second `make demo` finds the image it baked and does nothing
# else; stop it with: .venv/bin/python -m localworld down --state .world
# (run from tests/, or with PYTHONPATH=tests) and kill "$(cat .world/aptrepo.pid)".
#
# Prints the image id, the SSM parameter's value, the manifest's path and
# the duration of each step. Everything it talks to is on 127.0.0.1.
# Arguments are passed on to ansible-playbook (-e ..., -v).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STATE="$(realpath -m "${DEMO_STATE:-$REPO/.world}")"
OUT="$STATE/demo"
PYTHON="$REPO/.venv/bin/python"

export PATH="$REPO/.venv/bin:$PATH"
export ANSIBLE_COLLECTIONS_PATH="$REPO/.venv/collections"
export ANSIBLE_CONFIG="$REPO/ansible.cfg"
export PYTHONPATH="$REPO/tests${PYTHONPATH:+:$PYTHONPATH}"

mkdir -p "$OUT"

world_answers() {
    [[ -f "$STATE/state.json" ]] || return 1
    "$PYTHON" - "$STATE/state.json" <<'EOF'
import json, os, sys, urllib.request
state = json.load(open(sys.argv[1]))
for info in state.values():
    os.kill(info["pid"], 0)
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
opener.open(state["moto"]["endpoint_url"] + "/moto-api/", timeout=5).close()
EOF
}

if world_answers 2>/dev/null; then
    echo "Using the local world already running (state in $STATE)"
else
    echo "Starting the local world (state and logs in $STATE)"
    "$PYTHON" -m localworld up --state "$STATE" >/dev/null
fi
eval "$("$PYTHON" -m localworld env --state "$STATE")"

# The stand-in NVIDIA toolkit repository (not part of `localworld up`).
if ! { [[ -s "$STATE/aptrepo.json" ]] && kill -0 "$(cat "$STATE/aptrepo.pid" 2>/dev/null)" 2>/dev/null; }; then
    setsid "$PYTHON" -m localworld.aptrepo >"$STATE/aptrepo.json" 2>"$STATE/aptrepo.log" </dev/null &
    echo $! >"$STATE/aptrepo.pid"
    for _ in $(seq 120); do
        [[ -s "$STATE/aptrepo.json" ]] && break
        kill -0 "$(cat "$STATE/aptrepo.pid")" || { cat "$STATE/aptrepo.log" >&2; exit 1; }
        sleep 0.5
    done
fi
read -r DEMO_APT_BASE_URL DEMO_APT_KEY_URL DEMO_TOOLKIT_VERSION < <("$PYTHON" -c '
import json, sys
info = json.loads(open(sys.argv[1]).readline())
print(info["deb_base_url"], info["key_url"], info["versions"][-1])' "$STATE/aptrepo.json")
export DEMO_APT_BASE_URL DEMO_APT_KEY_URL DEMO_TOOLKIT_VERSION

# Loopback ports for the stand-in services, free right now.
read -r DEMO_VLLM_PORT DEMO_EMBEDDINGS_PORT DEMO_HEALTH_PORT < <("$PYTHON" - <<'EOF'
import socket
socks = [socket.socket() for _ in range(3)]
for sock in socks:
    sock.bind(("127.0.0.1", 0))
print(*(sock.getsockname()[1] for sock in socks))
EOF
)
export DEMO_VLLM_PORT DEMO_EMBEDDINGS_PORT DEMO_HEALTH_PORT

RUN="$(date -u +%Y%m%dT%H%M%SZ)"
export ANSIBLE_CALLBACKS_ENABLED=burst.golden_ami.step_timer
export BURST_STEP_TIMER_OUTPUT="$OUT/steps-$RUN.json"
export ANSIBLE_NOCOLOR=1
MANIFEST="$OUT/manifest.json"

echo "Baking; the log goes to $OUT/bake-$RUN.log"
started=$(date +%s)
status=0
ansible-playbook -i localhost, "$REPO/playbooks/bake.yml" \
    -e @"$REPO/playbooks/vars/demo.yml" -e bake_manifest_path="$MANIFEST" "$@" \
    >"$OUT/bake-$RUN.log" 2>&1 || status=$?
elapsed=$(($(date +%s) - started))

if [[ $status -ne 0 ]]; then
    grep -E '^(fatal|failed|\[ERROR\])|failed at step' "$OUT/bake-$RUN.log" | tail -n 20 >&2 || true
    echo "The bake failed (exit $status) after ${elapsed}s; the whole log is $OUT/bake-$RUN.log" >&2
    exit "$status"
fi

"$PYTHON" - "$MANIFEST" "$BURST_STEP_TIMER_OUTPUT" "$elapsed" <<'EOF'
import json, sys
import boto3

manifest_path, steps_path, elapsed = sys.argv[1], sys.argv[2], int(sys.argv[3])
manifest = json.load(open(manifest_path))
steps = json.load(open(steps_path))
ssm = boto3.client("ssm")
parameter = "/burst/golden-ami/demo"
value = ssm.get_parameter(Name=parameter)["Parameter"]["Value"]
print()
print(f"Image id       {manifest['image_id']} ({manifest['name']}, bake {manifest.get('build_id')})")
print(f"SSM parameter  {parameter} = {value}")
print(f"Manifest       {manifest_path}")
print()
width = max(len(s["step"]) for s in steps["steps"] + [{"step": "Total"}])
print(f"{'Step':<{width}}  {'Seconds':>8}")
for step in steps["steps"]:
    print(f"{step['step']:<{width}}  {step['seconds']:>8.1f}")
print(f"{'Total':<{width}}  {steps['total_seconds']:>8.1f}   (wall clock {elapsed} s)")
EOF
