"""A small HTTP server on 127.0.0.1 for the local world's stand-ins (metadata service, healthchecks, backends).

``LoopbackServer(get=..., put=...)`` binds a free port on 127.0.0.1 and serves
from a background thread. Each handler is called with ``(path, headers)`` and
returns ``(status, body)`` or ``(status, body, content type)``: a body that is
a dict or a list is sent as JSON, a str as UTF-8. A handler that returns None
closes the connection without an answer (an outage). A method without a
handler answers 405. ``url`` is the base URL, ``close()`` stops it.
"""

from __future__ import annotations

import http.server
import json
import threading

__all__ = ["LoopbackServer"]


def _encode(body):
    if isinstance(body, (dict, list)):
        return json.dumps(body).encode(), "application/json"
    if isinstance(body, str):
        return body.encode(), "text/plain"
    return bytes(body or b""), "application/octet-stream"


class LoopbackServer:
    def __init__(self, get=None, put=None):
        handlers = {"GET": get, "PUT": put}

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _dispatch(self):
                handler = handlers.get(self.command)
                answer = handler(self.path, self.headers) if handler else (405, b"")
                if answer is None:
                    self.close_connection = True
                    return
                status, body, *kind = answer
                data, default_kind = _encode(body)
                self.send_response(status)
                self.send_header("Content-Type", kind[0] if kind else default_kind)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_PUT = _dispatch

            def log_message(self, *_args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    @property
    def url(self):
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self):
        self.server.shutdown()
        self.server.server_close()
