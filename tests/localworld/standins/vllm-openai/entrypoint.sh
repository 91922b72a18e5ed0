#!/bin/sh
# STANDIN_NAME is read, and delay set, by the sourced common/standin.sh.
# shellcheck disable=SC2034,SC2154
# STAND-IN for vllm/vllm-openai: takes vLLM's OpenAI server command line and
# answers GET /health and GET /v1/models the way vLLM does. It runs no model.
#
# --model PATH (or a leading positional PATH, as `vllm serve PATH`),
# --served-model-name NAME..., --port N (8000), --host H (loopback only) and
# --max-model-len N are read; every other flag is accepted and ignored.
# Until STANDIN_STARTUP_DELAY seconds have passed nothing listens
# (connection refused), as while vLLM loads weights and captures graphs.
STANDIN_NAME=vllm-openai
# shellcheck source=../common/standin.sh
. /standin/standin.sh

model=
names=
port=8000
host=
max_model_len=2048
[ "${1:-}" = serve ] && shift
while [ $# -gt 0 ]; do
    case $1 in
        --model) need_value "$1" $#; model=$2; shift 2 ;;
        --model=*) model=${1#*=}; shift ;;
        --served-model-name)
            need_value "$1" $#
            shift
            while [ $# -gt 0 ]; do
                case $1 in -*) break ;; esac
                check_name "$1"
                names="${names:+$names }$1"
                shift
            done
            ;;
        --served-model-name=*) check_name "${1#*=}"; names="${names:+$names }${1#*=}"; shift ;;
        --port) need_value "$1" $#; port=$2; shift 2 ;;
        --port=*) port=${1#*=}; shift ;;
        --host) need_value "$1" $#; host=$2; shift 2 ;;
        --host=*) host=${1#*=}; shift ;;
        --max-model-len) need_value "$1" $#; max_model_len=$2; shift 2 ;;
        --max-model-len=*) max_model_len=${1#*=}; shift ;;
        --*=*) shift ;;
        --*)
            # An ignored flag, with its value when one follows.
            shift
            if [ $# -gt 0 ]; then
                case $1 in -*) ;; *) shift ;; esac
            fi
            ;;
        *)
            [ -z "$model" ] || die "unexpected argument '$1'"
            model=$1
            shift
            ;;
    esac
done

check_model_dir --model "$model"
check_port "$port"
case $max_model_len in '' | *[!0-9]*) die "--max-model-len must be a number, got '$max_model_len'" ;; esac
read_startup_delay
if [ -z "$names" ]; then
    check_name "$model"
    names=$model
fi
listen_on=$(listen_host "${host:-127.0.0.1}")

created=$(date +%s)
data=
for name in $names; do
    entry="{\"id\":\"$name\",\"object\":\"model\",\"created\":$created,\"owned_by\":\"vllm\",\"root\":\"$model\",\"parent\":null,\"max_model_len\":$max_model_len,\"permission\":[]}"
    data="${data:+$data,}$entry"
done
export STANDIN_MODELS_JSON="{\"object\":\"list\",\"data\":[$data]}"

note=
[ -n "$host" ] && [ "$host" != "$listen_on" ] && note=" (asked for $host; stand-ins listen on loopback only)"
echo "STAND-IN vllm-openai $STANDIN_VERSION: model=$model served=$(echo "$names" | tr ' ' ,)" \
    "listen=$listen_on:$port$note startup_delay=${delay}s"

sleep "$delay" &
child=$!
wait "$child"
listen "$listen_on" "$port" /standin/handler.sh
exit $?
