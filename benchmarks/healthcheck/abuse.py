"""Abusive clients for the healthcheck benchmark, on 127.0.0.1 only.

Three kinds, each kept at its count (a connection the server closes is
opened again):

- slowloris: sends a request head one byte per ``--trickle-s`` seconds and
  never finishes it;
- pipeliners: with a 4 KiB receive buffer, send pipelined ``GET /health``
  without end and never read an answer;
- idle: send one ``GET /health``, read the answer, then stay silent on the
  keep-alive connection.

``python3 abuse.py --port 8080 --slowloris 1000 --pipeliners 60 --idle 2000
--ready-file R --status-file S`` opens every connection, writes ``R`` once
they are all open, and abuses until SIGTERM; it then writes counts to ``S``
(JSON) and exits, the kernel closing every socket.
"""

from __future__ import annotations

import argparse
import collections
import heapq
import json
import resource
import selectors
import signal
import socket
import sys
import time
from pathlib import Path

REQUEST = b"GET /health HTTP/1.1\r\nHost: bench\r\n\r\n"
SLOW_HEAD = b"GET /health HTTP/1.1\r\nHost: bench\r\nX-Slowloris: "
PIPELINE_CHUNK = REQUEST * 1024
RECONNECTS_PER_TURN = 200


class Abuse:
    def __init__(self, port: int, counts: dict[str, int], trickle_s: float):
        self.port = port
        self.counts = counts
        self.trickle_s = trickle_s
        self.selector = selectors.DefaultSelector()
        self.open: dict[str, set[socket.socket]] = {kind: set() for kind in counts}
        self.trickle: list[tuple[float, int, socket.socket]] = []
        self.trickle_seq = 0
        self.sent: dict[socket.socket, int] = {}
        self.stats: collections.Counter = collections.Counter()
        self.samples: dict[str, list[int]] = {kind: [] for kind in counts}
        self.stopping = False

    def _connect(self, kind: str) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if kind == "pipeliners":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.settimeout(2)
        try:
            sock.connect(("127.0.0.1", self.port))
            if kind == "slowloris":
                sock.sendall(SLOW_HEAD)
            elif kind == "idle":
                sock.sendall(REQUEST)
        except OSError:
            self.stats[f"{kind}_connect_failed"] += 1
            sock.close()
            return
        sock.setblocking(False)
        self.open[kind].add(sock)
        self.stats[f"{kind}_opened"] += 1
        if kind == "slowloris":
            self._due(sock, time.monotonic() + self.trickle_s)
        if kind == "pipeliners":
            self.sent[sock] = 0
        if kind != "pipeliners":
            self.selector.register(sock, selectors.EVENT_READ, kind)

    def _due(self, sock: socket.socket, when: float) -> None:
        self.trickle_seq += 1
        heapq.heappush(self.trickle, (when, self.trickle_seq, sock))

    def _closed(self, kind: str, sock: socket.socket) -> None:
        self.open[kind].discard(sock)
        self.sent.pop(sock, None)
        if kind != "pipeliners":
            self.selector.unregister(sock)
        sock.close()
        self.stats[f"{kind}_closed_by_server"] += 1

    def _read(self, kind: str, sock: socket.socket) -> None:
        try:
            data = sock.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._closed(kind, sock)
        elif kind == "idle":
            self.stats["idle_answers"] += 1
        else:
            self.stats[f"{kind}_bytes_answered"] += len(data)

    def _fill(self, budget: int) -> int:
        for kind, wanted in self.counts.items():
            while budget and len(self.open[kind]) < wanted:
                self._connect(kind)
                budget -= 1
        return budget

    def turn(self) -> None:
        for key, _mask in self.selector.select(timeout=0.02):
            self._read(key.data, key.fileobj)
        now = time.monotonic()
        while self.trickle and self.trickle[0][0] <= now:
            _due, _seq, sock = heapq.heappop(self.trickle)
            if sock not in self.open["slowloris"]:
                continue
            try:
                sock.send(b"a")
            except BlockingIOError:
                pass
            except OSError:
                self._closed("slowloris", sock)
                continue
            self._due(sock, now + self.trickle_s)
        for sock in list(self.open["pipeliners"]):
            # An endless stream of whole requests: go on where the last send stopped.
            start = self.sent[sock] % len(REQUEST)
            try:
                sent = sock.send(PIPELINE_CHUNK[start:])
                self.sent[sock] += sent
                self.stats["pipeliners_bytes_sent"] += sent
            except BlockingIOError:
                pass
            except OSError:
                self._closed("pipeliners", sock)
        self._fill(RECONNECTS_PER_TURN)

    def run(self, ready_file: Path, status_file: Path) -> None:
        while self._fill(RECONNECTS_PER_TURN * 10) == 0:
            self.turn()
        ready_file.write_text(json.dumps({kind: len(socks) for kind, socks in self.open.items()}) + "\n")
        self.stats.clear()
        last_sample = 0.0
        while not self.stopping:
            self.turn()
            now = time.monotonic()
            if now - last_sample >= 0.5:
                last_sample = now
                for kind, socks in self.open.items():
                    self.samples[kind].append(len(socks))
        result = {"stats": dict(self.stats)}
        for kind, values in self.samples.items():
            result[f"{kind}_open_min"] = min(values) if values else 0
            result[f"{kind}_open_mean"] = round(sum(values) / len(values), 1) if values else 0
        status_file.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--slowloris", type=int, default=1000)
    parser.add_argument("--pipeliners", type=int, default=60)
    parser.add_argument("--idle", type=int, default=2000)
    parser.add_argument("--trickle-s", type=float, default=1.0, help="seconds between two bytes of a slow head")
    parser.add_argument("--ready-file", type=Path, required=True)
    parser.add_argument("--status-file", type=Path, required=True)
    args = parser.parse_args(argv)
    counts = {"slowloris": args.slowloris, "pipeliners": args.pipeliners, "idle": args.idle}
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = sum(counts.values()) + 256
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, hard), hard))
    abuse = Abuse(args.port, counts, args.trickle_s)

    def stop(_signum, _frame):
        abuse.stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    abuse.run(args.ready_file, args.status_file)
    return 0


if __name__ == "__main__":
    sys.exit(main())
