"""A loopback stand-in for burst instances' healthchecks.

Burst instances in moto have addresses nothing listens on, and tests must
never connect to them; health probes are pointed here instead (through the
inventory's ``compose`` or the module's URL template). Paths:

- ``/ready...``: HTTP 200 ``{"ready": true}``
- ``/loading...``: HTTP 503 ``{"ready": false}`` (models still loading)
- ``/hang...``: accepts and never answers (until the server stops)

Anything after the first path segment (``/ready/i-0abc``, ``?host=...``) is
ignored, so that each host can have its own URL.

``python -m localworld.health_stub --port-file PATH [--lifetime SECONDS]``
binds 127.0.0.1 on a free port, writes the port to PATH, and serves until
SIGTERM or the end of its lifetime.
"""

from __future__ import annotations

import argparse
import http.server
import json
import os
import signal
import sys
import threading

__all__ = ["HealthStub"]


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        route = self.path.split("?")[0].strip("/").split("/")[0]
        if route == "hang":
            self.server.stopping.wait()
            return
        if route in ("ready", "loading"):
            ready = route == "ready"
            body = json.dumps({"ready": ready}).encode()
            self.send_response(200 if ready else 503)
        else:
            body = b"{}"
            self.send_response(404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args):
        pass


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 512


class HealthStub:
    """The stand-in in a background thread: ``with HealthStub() as stub: stub.url("ready")``."""

    def __init__(self):
        self._server = None
        self._thread = None

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    def url(self, route: str, suffix: str = "") -> str:
        return f"http://127.0.0.1:{self.port}/{route}{suffix}"

    def start(self) -> HealthStub:
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.stopping = threading.Event()
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stopping.set()
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> HealthStub:
        return self.start()

    def __exit__(self, *_exc) -> None:
        self.stop()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m localworld.health_stub", description=__doc__.splitlines()[0])
    parser.add_argument("--port-file", required=True, help="file that receives the port")
    parser.add_argument("--lifetime", type=float, default=600, help="seconds to serve at most")
    args = parser.parse_args(argv)
    done = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: done.set())
    with HealthStub() as stub:
        tmp = f"{args.port_file}.tmp"
        with open(tmp, "w") as handle:
            handle.write(f"{stub.port}\n")
        os.replace(tmp, args.port_file)
        done.wait(args.lifetime)
    return 0


if __name__ == "__main__":
    sys.exit(main())
