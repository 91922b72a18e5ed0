"""A loopback stand-in for one inference backend, for the healthcheck benchmark.

Modes:

- ``vllm``: ``GET /health`` 200, ``GET /v1/models`` lists ``--model``;
- ``tei``: ``GET /health`` 200.

SIGUSR1 turns it into a hung backend on the same listening socket: from
then on it accepts connections and never answers them (with no moment in
between where connections are refused).

``python3 stub_backend.py --mode vllm --port 8000 --model Qwen/Qwen2.5-14B-Instruct-AWQ``
serves on 127.0.0.1 until SIGTERM.
"""

from __future__ import annotations

import argparse
import http.server
import json
import signal
import sys
import threading


def _handler(mode: str, model: str, hung: threading.Event, stop: threading.Event):
    models = json.dumps({"object": "list", "data": [{"id": model, "object": "model"}]}).encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self):
            if hung.is_set():
                stop.wait()  # never answers; the connection stays open until exit
                return
            if self.path == "/health":
                code, body = 200, b""
            elif self.path == "/v1/models" and mode == "vllm":
                code, body = 200, models
            else:
                code, body = 404, b"{}"
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_args):
            pass

    return Handler


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=("vllm", "tei"), required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--model", default="Qwen/Qwen2.5-14B-Instruct-AWQ")
    args = parser.parse_args(argv)
    stop = threading.Event()
    hung = threading.Event()
    server = http.server.ThreadingHTTPServer((args.host, args.port), _handler(args.mode, args.model, hung, stop))
    server.daemon_threads = True
    signal.signal(signal.SIGUSR1, lambda *_: hung.set())

    def _terminate(*_args):
        stop.set()
        threading.Thread(target=server.shutdown).start()

    signal.signal(signal.SIGTERM, _terminate)
    server.serve_forever()
    server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
