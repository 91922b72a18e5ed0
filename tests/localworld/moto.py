"""moto in server mode on loopback: the AWS APIs (EC2, SSM, S3, IAM, STS) of the local world.

``MotoServer`` starts ``moto_server`` from this virtualenv on 127.0.0.1 and a
free port, waits until it answers, and hands out the environment that points
boto3, the AWS CLI and amazon.aws modules at it with fake credentials, so
that nothing can reach a real AWS account.

``python -m localworld.moto [--region REGION]`` serves until SIGTERM or
SIGINT and prints one JSON line: ``{"endpoint_url": ..., "env": {...}}``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

__all__ = ["DEFAULT_REGION", "MotoServer", "free_port", "stop_process"]

DEFAULT_REGION = "eu-central-1"
HOST = "127.0.0.1"


def free_port(host: str = HOST) -> int:
    """Return a TCP port that was free on ``host`` a moment ago (bind to port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def stop_process(process: subprocess.Popen | None, timeout: float = 10) -> None:
    """Stop a server process: SIGTERM, then SIGKILL after ``timeout`` seconds; wait for it in both cases."""
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=timeout)


def _moto_server_command() -> list[str]:
    """moto's server with the local world's extensions (``moto_extensions.py``: image deprecation)."""
    # -P: the script's directory holds this module, named moto too; it must not shadow the package.
    return [sys.executable, "-P", str(Path(__file__).resolve().with_name("moto_extensions.py"))]


class MotoServer:
    """One moto server process bound to 127.0.0.1."""

    def __init__(self, region: str = DEFAULT_REGION, port: int | None = None, start_timeout: float = 30.0):
        self.region = region
        self.port = port
        self.start_timeout = start_timeout
        self._process: subprocess.Popen | None = None
        self._log = b""

    @property
    def endpoint_url(self) -> str:
        if self.port is None:
            raise RuntimeError("moto server is not started")
        return f"http://{HOST}:{self.port}"

    def env(self) -> dict[str, str]:
        """Environment variables that point AWS clients at this server, with fake credentials."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint_url,
            # amazon.aws modules read endpoint_url from AWS_URL; boto3 reads AWS_ENDPOINT_URL.
            "AWS_URL": self.endpoint_url,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_SESSION_TOKEN": "testing",
            "AWS_DEFAULT_REGION": self.region,
            "AWS_REGION": self.region,
            "AWS_EC2_METADATA_DISABLED": "true",
            # No shared config or credentials file of the user may leak in.
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        }

    def start(self) -> MotoServer:
        if self._process is not None:
            return self
        for _attempt in range(3):
            port = self.port or free_port()
            process = subprocess.Popen(
                [*_moto_server_command(), "-H", HOST, "-p", str(port)],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
            self._process = process
            self.port = port
            drain = threading.Thread(target=self._drain, args=(process,), daemon=True)
            drain.start()
            if self._wait_ready(process):
                return self
            self.stop()
            if self.port == port and _attempt < 2:
                self.port = None  # the port was taken between probe and bind: pick another
        raise RuntimeError(f"moto_server did not answer on {HOST}: {self._log[-2000:].decode(errors='replace')}")

    def _drain(self, process: subprocess.Popen) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            self._log = (self._log + line)[-20000:]

    def _wait_ready(self, process: subprocess.Popen) -> bool:
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                return False
            try:
                with urllib.request.urlopen(f"{self.endpoint_url}/moto-api/data.json", timeout=2) as response:  # noqa: S310
                    if response.status == 200:
                        return True
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.1)
        return False

    def reset(self) -> None:
        """Forget every resource (POST /moto-api/reset)."""
        request = urllib.request.Request(f"{self.endpoint_url}/moto-api/reset", method="POST", data=b"")  # noqa: S310
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            if response.status != 200:
                raise RuntimeError(f"moto reset answered HTTP {response.status}")

    def stop(self) -> None:
        process, self._process = self._process, None
        stop_process(process)

    def __enter__(self) -> MotoServer:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m localworld.moto", description=__doc__.splitlines()[0])
    parser.add_argument("--region", default=DEFAULT_REGION, help="region the printed environment names")
    parser.add_argument("--port", type=int, default=None, help="port on 127.0.0.1 (default: a free one)")
    args = parser.parse_args(argv)

    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    with MotoServer(region=args.region, port=args.port) as server:
        print(json.dumps({"endpoint_url": server.endpoint_url, "env": server.env()}), flush=True)
        while not stop.wait(1.0):
            if server._process is None or server._process.poll() is not None:
                print("moto_server exited", file=sys.stderr)
                return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
