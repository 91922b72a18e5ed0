#!/bin/sh
# STAND-IN for vllm/vllm-openai: answers one request (run by busybox nc per
# connection). The entrypoint exports STANDIN_MODELS_JSON.
# shellcheck source=../common/http.sh
. /standin/http.sh
http_read_request
case "$REQUEST_METHOD $REQUEST_PATH" in
    "GET /health") http_respond 200 OK "" "" ;;
    "GET /v1/models") http_respond 200 OK application/json "$STANDIN_MODELS_JSON" ;;
    "GET /version") http_respond 200 OK application/json "{\"version\":\"$STANDIN_VERSION+standin\"}" ;;
    "GET "*) http_respond 404 "Not Found" application/json '{"detail":"Not Found"}' ;;
    *) http_respond 405 "Method Not Allowed" application/json '{"detail":"Method Not Allowed"}' ;;
esac
