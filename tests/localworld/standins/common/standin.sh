#!/bin/sh
# Shared by the stand-in images' entrypoints (sourced, not run): argument
# checks and the listener. STANDIN_NAME must be set before sourcing.

die() {
    echo "STAND-IN $STANDIN_NAME: error: $*" >&2
    exit 2
}

# need_value FLAG REMAINING_ARGC: a flag that takes a value got one.
need_value() {
    [ "$2" -ge 2 ] || die "$1 needs a value"
}

# Set delay to the start-up delay in seconds (STANDIN_STARTUP_DELAY,
# default 2): a non-negative number such as 2 or 0.5.
read_startup_delay() {
    delay=${STANDIN_STARTUP_DELAY:-2}
    case $delay in
        '' | *[!0-9.]* | .* | *. | *.*.*)
            die "STANDIN_STARTUP_DELAY must be a number of seconds (such as 2 or 0.5), got '$delay'" ;;
    esac
}

check_port() {
    case $1 in
        '' | *[!0-9]*) die "port must be a number, got '$1'" ;;
    esac
    if [ "$1" -lt 1 ] || [ "$1" -gt 65535 ]; then
        die "port must be between 1 and 65535, got '$1'"
    fi
}

# A stand-in only ever listens on loopback: any other address asked for
# (0.0.0.0 included) becomes 127.0.0.1, and the start line says so.
listen_host() {
    case $1 in
        127.* | localhost | ::1) echo "$1" ;;
        *) echo 127.0.0.1 ;;
    esac
}

# check_model_dir FLAG PATH: the model is a directory inside the container
# that holds config.json, as the real servers need when run without a hub.
check_model_dir() {
    [ -n "$2" ] || die "$1 is required: the stand-in serves a local model directory"
    case $2 in
        /* | ./* | ../*) ;;
        *) die "$1 '$2' is not a path: the stand-in has no hub access and serves only a local model directory" ;;
    esac
    case $2 in
        *[\"\\]*) die "$1 '$2' contains a quote or a backslash" ;;
    esac
    [ -d "$2" ] || die "model directory '$2' does not exist in the container (is the model volume mounted?)"
    [ -f "$2/config.json" ] || die "model directory '$2' has no config.json"
}

# A served name goes into JSON as it is: allow the characters model ids use.
check_name() {
    case $1 in
        '' | *[!A-Za-z0-9._/:@+-]*) die "served model name '$1' must be made of letters, digits and ._/:@+-" ;;
    esac
}

# listen HOST PORT HANDLER: serve HANDLER on HOST:PORT until TERM or INT.
# busybox nc: two or more -l keep serving, one handler process per
# connection; the number of -l is also the listen backlog.
listen() {
    nc -llllllllllllllll -p "$2" "$1" -e "$3" &
    child=$!
    wait "$child"
}

# Stop the current child (sleep or nc) on TERM and INT: the entrypoint is
# PID 1, which ignores signals it has no handler for.
child=
trap '[ -n "$child" ] && kill "$child" 2>/dev/null; exit 143' TERM INT
