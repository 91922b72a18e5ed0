#!/bin/sh
# STANDIN_NAME is read by the sourced common/standin.sh.
# shellcheck disable=SC2034
# STAND-IN for moby/buildkit's buildkitd: takes its command line, checks the
# --config file (it must exist and be readable, as buildkitd fails at start
# otherwise), prints what it read, and runs until stopped. It builds nothing
# and listens on nothing.
#
# --config PATH, --debug, --root PATH and --allow-insecure-entitlement X are
# read; every other flag is accepted and ignored. The line it prints names
# the config, the state directory, the [worker.oci] settings it found
# (max-parallelism, gc, gckeepstorage) and the entitlements allowed.
STANDIN_NAME=buildkit
# shellcheck source=../common/standin.sh
. /standin/standin.sh

config=/etc/buildkit/buildkitd.toml
config_given=
root=/var/lib/buildkit
entitlements=
while [ $# -gt 0 ]; do
    case $1 in
        --config) need_value "$1" $#; config=$2; config_given=1; shift 2 ;;
        --config=*) config=${1#*=}; config_given=1; shift ;;
        --root) need_value "$1" $#; root=$2; shift 2 ;;
        --root=*) root=${1#*=}; shift ;;
        --allow-insecure-entitlement)
            need_value "$1" $#; entitlements="${entitlements:+$entitlements,}$2"; shift 2 ;;
        --allow-insecure-entitlement=*) entitlements="${entitlements:+$entitlements,}${1#*=}"; shift ;;
        --debug) shift ;;
        --*=*) shift ;;
        --*)
            shift
            if [ $# -gt 0 ]; then
                case $1 in -*) ;; *) shift ;; esac
            fi
            ;;
        *) die "unexpected argument '$1'" ;;
    esac
done

if [ -n "$config_given" ] || [ -e "$config" ]; then
    [ -f "$config" ] || die "config file '$config' does not exist in the container (is it mounted?)"
    [ -r "$config" ] || die "config file '$config' is not readable"
fi
mkdir -p "$root" || die "cannot create the state directory '$root'"
settings=$(grep -E '^[[:space:]]*(max-parallelism|gc|gckeepstorage)[[:space:]]*=' "$config" 2>/dev/null | tr -d ' ' | tr '\n' ' ')
echo "STAND-IN buildkit $STANDIN_VERSION: config=$config root=$root ${settings:+settings: $settings}${entitlements:+entitlements: $entitlements}"
date +%s >"$root/standin-started"

trap 'echo "STAND-IN buildkit: stopping"; exit 0' TERM INT
while :; do
    sleep 1 &
    wait $!
done
