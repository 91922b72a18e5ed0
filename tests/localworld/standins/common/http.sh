#!/bin/sh
# busybox's sh (ash) has read -t, which POSIX sh lacks.
# shellcheck disable=SC3045
# Shared by the stand-in images' request handlers (sourced, not run).
#
# busybox nc runs one handler per connection with the socket on stdin and
# stdout: the handler reads one request, writes one complete HTTP/1.1
# response (status line, Content-Type, Content-Length) and exits, which
# closes the connection.

# shellcheck disable=SC2034  # REQUEST_* are for the handler that sources this
CR=$(printf '\r')

# Read the request line and drain the headers. Sets REQUEST_METHOD and
# REQUEST_PATH (without the query string). A client that sends nothing for
# ten seconds gets no answer.
http_read_request() {
    IFS=' ' read -r -t 10 REQUEST_METHOD REQUEST_TARGET REQUEST_PROTOCOL || exit 0
    REQUEST_PATH=${REQUEST_TARGET%%\?*}
    REQUEST_PROTOCOL=${REQUEST_PROTOCOL%"$CR"}
    while IFS= read -r -t 10 header; do
        header=${header%"$CR"}
        [ -z "$header" ] && break
    done
}

# http_respond STATUS REASON CONTENT_TYPE BODY
# An empty CONTENT_TYPE sends no Content-Type header (as FastAPI does for
# an empty Response).
http_respond() {
    printf 'HTTP/1.1 %s %s\r\n' "$1" "$2"
    [ -n "$3" ] && printf 'Content-Type: %s\r\n' "$3"
    printf 'Content-Length: %s\r\nConnection: close\r\nServer: standin/%s\r\n\r\n%s' \
        "${#4}" "${STANDIN_VERSION:-0}" "$4"
}
