#!/bin/sh
# STANDIN_NAME is read, and delay set, by the sourced common/standin.sh.
# shellcheck disable=SC2034,SC2154
# STAND-IN for ghcr.io/huggingface/text-embeddings-inference: takes TEI's
# command line and answers GET /health and GET /info the way TEI does. It
# computes no embeddings.
#
# --model-id PATH (or MODEL_ID), --port N (or PORT; 80 as TEI),
# --hostname H (loopback only) and --pooling P are read; every other flag
# is accepted and ignored. /health answers 503 until STANDIN_STARTUP_DELAY
# seconds have passed, then 200. Without --pooling, the pooling comes from
# the model's 1_Pooling/config.json, else TEI's fallback: cls.
STANDIN_NAME=text-embeddings-inference
# shellcheck source=../common/standin.sh
. /standin/standin.sh

model=${MODEL_ID:-}
port=${PORT:-80}
host=
pooling=
while [ $# -gt 0 ]; do
    case $1 in
        --model-id) need_value "$1" $#; model=$2; shift 2 ;;
        --model-id=*) model=${1#*=}; shift ;;
        --port) need_value "$1" $#; port=$2; shift 2 ;;
        --port=*) port=${1#*=}; shift ;;
        --hostname) need_value "$1" $#; host=$2; shift 2 ;;
        --hostname=*) host=${1#*=}; shift ;;
        --pooling) need_value "$1" $#; pooling=$2; shift 2 ;;
        --pooling=*) pooling=${1#*=}; shift ;;
        --*=*) shift ;;
        --*)
            # An ignored flag, with its value when one follows.
            shift
            if [ $# -gt 0 ]; then
                case $1 in -*) ;; *) shift ;; esac
            fi
            ;;
        *) die "unexpected argument '$1'" ;;
    esac
done

check_model_dir --model-id "$model"
check_port "$port"
read_startup_delay
if [ -z "$pooling" ]; then
    pooling=cls
    pooling_config=$model/1_Pooling/config.json
    if [ -f "$pooling_config" ]; then
        if grep -q '"pooling_mode_mean_tokens": *true' "$pooling_config"; then
            pooling=mean
        elif grep -q '"pooling_mode_lasttoken": *true' "$pooling_config"; then
            pooling=last_token
        fi
    fi
fi
case $pooling in
    cls | mean | splade | last_token) ;;
    *) die "--pooling must be one of cls, mean, splade, last_token; got '$pooling'" ;;
esac
listen_on=$(listen_host "${host:-127.0.0.1}")

export STANDIN_INFO_JSON="{\"model_id\":\"$model\",\"model_sha\":null,\"model_dtype\":\"float16\",\"model_type\":{\"embedding\":{\"pooling\":\"$pooling\"}},\"max_concurrent_requests\":512,\"max_input_length\":512,\"max_batch_tokens\":16384,\"max_client_batch_size\":32,\"tokenization_workers\":1,\"version\":\"$STANDIN_VERSION+standin\"}"
export STANDIN_READY_FILE=/run/standin/ready
mkdir -p /run/standin || die "cannot create /run/standin (mount a tmpfs there for a read-only root)"
rm -f "$STANDIN_READY_FILE"

note=
[ -n "$host" ] && [ "$host" != "$listen_on" ] && note=" (asked for $host; stand-ins listen on loopback only)"
echo "STAND-IN text-embeddings-inference $STANDIN_VERSION: model_id=$model pooling=$pooling" \
    "listen=$listen_on:$port$note startup_delay=${delay}s"

# Listen at once, answer 503 on /health until the delay has passed.
(sleep "$delay" && touch "$STANDIN_READY_FILE") &
listen "$listen_on" "$port" /standin/handler.sh
exit $?
