#!/bin/sh
# STAND-IN for text-embeddings-inference: answers one request (run by
# busybox nc per connection). The entrypoint exports STANDIN_INFO_JSON and
# STANDIN_READY_FILE.
# shellcheck source=../common/http.sh
. /standin/http.sh
http_read_request
case "$REQUEST_METHOD $REQUEST_PATH" in
    "GET /health")
        if [ -e "$STANDIN_READY_FILE" ]; then
            http_respond 200 OK "" ""
        else
            http_respond 503 "Service Unavailable" application/json '{"error":"Model is loading","error_type":"unhealthy"}'
        fi
        ;;
    "GET /info") http_respond 200 OK application/json "$STANDIN_INFO_JSON" ;;
    "GET "*) http_respond 404 "Not Found" "" "" ;;
    *) http_respond 405 "Method Not Allowed" "" "" ;;
esac
