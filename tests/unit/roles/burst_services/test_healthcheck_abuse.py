"""The healthcheck aggregator under abuse, with real sockets on 127.0.0.1.

Pipelining floods, clients that never read, slowloris heads and connection
floods: each limit is driven past its bound and the test checks what the
server holds and that ``/health`` still answers. Bounds are functional
(bytes held, connections closed, answers counted), never speeds.
"""

from __future__ import annotations

import json
import resource
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from localworld.localplay import load_role_file

SCRIPT = Path(__file__).resolve().parents[4] / "roles" / "burst_services" / "files" / "healthcheck.py"
REQUEST = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"


hc = load_role_file("burst_services", "healthcheck.py", "burst_healthcheck_abuse_under_test")


def _refusing_url():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


def _config(**limits):
    raw = {"listen_host": "127.0.0.1", "listen_port": 0, "interval_s": 5, "timeout_s": 1}
    raw["backends"] = [{"name": "embeddings", "kind": "tei", "url": _refusing_url()}]
    raw.update(limits)
    return raw


@pytest.fixture
def aggregator():
    started = []

    def make(**limits):
        lines = []
        agg = hc.Aggregator(hc.parse_config(_config(**limits)), log=lines.append)
        agg.lines = lines
        agg.start()
        started.append(agg)
        return agg

    yield make
    for agg in started:
        agg.stop()


def _connect(port, rcvbuf=None):
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(5)
    sock.connect(("127.0.0.1", port))
    return sock


def _read_answer(sock):
    """Read one answer to GET /health (the aggregator always sends Content-Length)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed after {data!r}")
        data += chunk
    head, _separator, body = data.partition(b"\r\n\r\n")
    length = int(next(line for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:"))[15:])
    while len(body) < length:
        body += sock.recv(65536)
    return head, body


def _read_buffered_answer(stream):
    """Read one answer from a buffered stream, leaving the next pipelined one in place."""
    head = []
    while (line := stream.readline()) not in (b"\r\n", b""):
        head.append(line)
    length = int(next(line for line in head if line.lower().startswith(b"content-length:"))[15:])
    return b"".join(head), stream.read(length)


def _health(port):
    with _connect(port) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        head, body = _read_answer(sock)
    return int(head.split(b" ", 2)[1]), json.loads(body)


def _closed_by_peer(sock, within):
    """True once the peer has closed or reset ``sock`` (what was sent before is read and dropped)."""
    sock.settimeout(within)
    try:
        while sock.recv(65536):
            pass
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False
    return True


def _until(predicate, within, step=0.02):
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(step)
    return True


def _held(agg):
    """Per connection: (unsent answer bytes, unprocessed request bytes), read from the server's own objects."""
    return [
        (proto.transport.get_write_buffer_size(), len(proto._pending))  # what the server holds
        for proto in list(agg.server_state.connections)
    ]


def test_pipelined_requests_are_all_answered_in_order(aggregator):
    agg = aggregator(max_pipeline=4)
    paths = [f"/live?n={n}" if n % 2 else "/health" for n in range(1000)]
    with _connect(agg.port) as sock:
        sock.sendall(b"".join(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode() for path in paths))
        stream = sock.makefile("rb")
        answers = [_read_buffered_answer(stream) for _path in paths]
    live = [body for (_head, body) in answers[1::2]]
    health = [json.loads(body) for (_head, body) in answers[0::2]]
    assert live == [b'{"live":true}\n'] * 500
    assert all(entry["ready"] is False and "embeddings" in entry for entry in health)


def _send_some(sock, stream, sent):
    """Send the next part of the endless ``stream`` (a repeated request); return the bytes sent."""
    start = sent % len(stream)
    return sock.send(stream[start : start + 65536])


def test_pipelining_flood_from_a_client_that_never_reads_is_bounded(aggregator):
    limits = {"max_pipeline": 8, "max_unsent_bytes": 4096, "send_timeout_s": 1.0}
    agg = aggregator(**limits)
    answer_size = len(agg.state.responses[b"/health"][0])
    # Tiny pipelined requests, sent without end: one 256 KiB read of them
    # would be 8,000 answers (6 MB) if the server answered a whole read.
    stream = REQUEST * 4096
    sock = _connect(agg.port, rcvbuf=4096)
    assert _until(lambda: len(agg.server_state.connections) == 1, within=5)
    sock.setblocking(False)
    sent = 0
    peaks = [0, 0]
    aborted = False
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            sent += _send_some(sock, stream, sent)
        except BlockingIOError:
            pass
        except (ConnectionResetError, BrokenPipeError):
            aborted = True
            break
        held = _held(agg)
        if not held:
            aborted = True  # the server dropped the connection
            break
        peaks = [max(peaks[0], held[0][0]), max(peaks[1], held[0][1])]
        time.sleep(0.001)
    sock.close()
    assert aborted, "a client that never reads was not dropped"
    # Unsent answers: at most the high-water mark plus one batch.
    assert 0 < peaks[0] <= limits["max_unsent_bytes"] + limits["max_pipeline"] * answer_size
    # Unanswered requests: at most one read plus a partial head.
    assert peaks[1] <= hc.READ_SIZE + hc.MAX_REQUEST_HEAD
    assert agg.server_state.stats["send_timeout"] == 1
    assert _health(agg.port)[0] == 503


def test_slowloris_head_is_closed_after_the_header_deadline(aggregator):
    agg = aggregator(header_timeout_s=0.5, idle_timeout_s=60)
    started = time.monotonic()
    trickle = _connect(agg.port)
    silent = _connect(agg.port)
    trickle.sendall(b"GET /health HTTP/1.1\r\nX-Slow: ")
    closed = False
    received = b""
    trickle.settimeout(0.1)
    while time.monotonic() - started < 10:
        try:
            trickle.sendall(b"a")
            chunk = trickle.recv(65536)
        except TimeoutError:
            continue
        except (ConnectionResetError, BrokenPipeError):
            closed = True
            break
        if not chunk:
            closed = True
            break
        received += chunk
    elapsed = time.monotonic() - started
    assert closed, "a head sent a byte at a time was never closed"
    assert received == b""
    assert elapsed >= 0.5 * 0.9, f"closed after {elapsed:.2f} s, before the 0.5 s deadline"
    # A connection that sends nothing at all falls under the same deadline.
    assert _closed_by_peer(silent, within=10)
    trickle.close()
    silent.close()
    assert agg.server_state.stats["header_timeout"] == 2
    assert _health(agg.port)[0] == 503


def test_keep_alive_between_requests_is_not_a_slow_head(aggregator):
    agg = aggregator(header_timeout_s=0.3, idle_timeout_s=30)
    with _connect(agg.port) as sock:
        for _round in range(3):
            sock.sendall(REQUEST)
            _read_answer(sock)
            time.sleep(0.5)  # past the header deadline, within the idle one
        sock.sendall(REQUEST)
        assert _read_answer(sock)[0].startswith(b"HTTP/1.1 503 ")
    assert agg.server_state.stats["header_timeout"] == 0


def test_idle_keep_alive_is_closed_after_the_idle_timeout(aggregator):
    agg = aggregator(idle_timeout_s=0.3)
    with _connect(agg.port) as sock:
        sock.sendall(REQUEST)
        _read_answer(sock)
        assert _closed_by_peer(sock, within=10)
    assert agg.server_state.stats["idle_timeout"] == 1


def test_clients_that_never_read_are_aborted_and_memory_stays_flat(tmp_path):
    limits = {"max_pipeline": 8, "max_unsent_bytes": 16384, "send_timeout_s": 0.5}
    config = tmp_path / "healthcheck.json"
    config.write_text(json.dumps(_config(**limits)))
    port_file = tmp_path / "port"
    proc = subprocess.Popen(
        [sys.executable, str(SCRIPT), "--config", str(config), "--port", "0", "--port-file", str(port_file)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )

    def rss_kib():
        status = Path(f"/proc/{proc.pid}/status").read_text()
        return int(next(line for line in status.splitlines() if line.startswith("VmRSS:")).split()[1])

    try:
        assert _until(port_file.exists, within=10)
        port = int(port_file.read_text())
        for _warm in range(200):
            _health(port)
        baseline = rss_kib()
        flood = REQUEST * 4096
        peak = baseline
        dropped = 0
        for _round in range(3):
            clients = [_connect(port, rcvbuf=4096) for _client in range(20)]
            for sock in clients:
                sock.setblocking(False)
            open_clients = list(clients)
            sent = dict.fromkeys(clients, 0)
            deadline = time.monotonic() + 20
            while open_clients and time.monotonic() < deadline:
                for sock in list(open_clients):
                    try:
                        sent[sock] += _send_some(sock, flood, sent[sock])
                    except BlockingIOError:
                        continue
                    except (ConnectionResetError, BrokenPipeError):
                        open_clients.remove(sock)
                        dropped += 1
                peak = max(peak, rss_kib())
                time.sleep(0.01)
            for sock in clients:
                sock.close()
            assert not open_clients, f"{len(open_clients)} client(s) that never read were still served after 20 s"
        after = rss_kib()
        assert dropped == 60
        # Without the limits, each flood would queue about 6 MB of answers (360 MB for 60).
        assert peak - baseline < 16 * 1024, f"RSS grew from {baseline} KiB to {peak} KiB"
        assert after - baseline < 16 * 1024
        assert _health(port)[0] == 503
    finally:
        proc.terminate()
        proc.wait(10)


def _idle_connection(port):
    sock = _connect(port)
    sock.sendall(REQUEST)
    _read_answer(sock)
    return sock


def test_connection_cap_closes_the_oldest_idle_first(aggregator):
    agg = aggregator(max_connections=20, header_timeout_s=60, idle_timeout_s=60)
    slow = [_connect(agg.port) for _n in range(5)]
    for sock in slow:
        sock.sendall(b"GET /health HTTP/1.1\r\n")  # heads under way, older than every idle one
    idle = [_idle_connection(agg.port) for _n in range(15)]
    assert _until(lambda: len(agg.server_state.connections) == 20, within=5)
    status, body = _health(agg.port)  # the 21st connection
    assert status == 503
    assert body["ready"] is False
    assert _closed_by_peer(idle[0], within=5), "the oldest idle connection was not closed"
    assert dict(agg.server_state.stats) == {"evicted_idle": 1}
    for sock in idle[1:]:
        sock.sendall(REQUEST)
        assert _read_answer(sock)[0].startswith(b"HTTP/1.1 503 ")
    # The heads under way, older than any idle connection, were kept.
    for sock in slow:
        sock.sendall(b"Host: x\r\n\r\n")
        assert _read_answer(sock)[0].startswith(b"HTTP/1.1 503 ")
    for sock in slow + idle:
        sock.close()


def test_connection_cap_full_of_slow_heads_still_admits_health(aggregator):
    agg = aggregator(max_connections=10, header_timeout_s=60)
    slow = [_connect(agg.port) for _n in range(10)]
    for sock in slow:
        sock.sendall(b"GET /health HTTP/1.1\r\n")
    assert _until(lambda: len(agg.server_state.connections) == 10, within=5)
    for _attempt in range(3):
        assert _health(agg.port)[0] == 503
    # The first /health made room by closing the oldest head under way.
    assert 1 <= agg.server_state.stats["evicted_busy"] <= 3
    assert agg.server_state.stats["evicted_idle"] == 0
    assert _closed_by_peer(slow[0], within=5), "the oldest connection was not closed"
    slow[5].sendall(b"Host: x\r\n\r\n")
    assert _read_answer(slow[5])[0].startswith(b"HTTP/1.1 503 ")
    for sock in slow:
        sock.close()


def test_connection_flood_never_locks_health_out(aggregator):
    agg = aggregator(max_connections=50, header_timeout_s=60, idle_timeout_s=60)
    flood = []
    try:
        for _n in range(300):
            flood.append(_connect(agg.port))
        for _attempt in range(20):
            assert _health(agg.port)[0] == 503
        assert len(agg.server_state.connections) <= 50
    finally:
        for sock in flood:
            sock.close()


def _limit_nofile(soft, hard):
    def apply():
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    return apply


@pytest.mark.parametrize(
    ("soft", "hard", "expected"),
    [
        pytest.param(1024, 8192, 4096, id="raised-to-fit"),
        pytest.param(1024, 1024, 1024 - 576, id="lowered-to-fit"),
    ],
)
def test_cap_and_file_descriptor_limit_agree(tmp_path, soft, hard, expected):
    if resource.getrlimit(resource.RLIMIT_NOFILE)[1] < hard:
        hard = soft = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        expected = min(4096, hard - hc.FD_RESERVE)
    config = tmp_path / "healthcheck.json"
    config.write_text(json.dumps(_config()))
    port_file = tmp_path / "port"
    proc = subprocess.Popen(
        [sys.executable, str(SCRIPT), "--config", str(config), "--port", "0", "--port-file", str(port_file)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_limit_nofile(soft, hard),
    )
    try:
        assert _until(port_file.exists, within=10)
        limits = Path(f"/proc/{proc.pid}/limits").read_text()
    finally:
        proc.terminate()
        out = proc.communicate(timeout=10)[0]
    assert hc.FD_RESERVE == 576
    lines = out.splitlines()
    assert lines[0].endswith(f"; at most {expected} connections")
    open_files = next(line for line in limits.splitlines() if line.startswith("Max open files")).split()
    assert int(open_files[3]) >= expected + hc.FD_RESERVE
    lowered = [line for line in lines if "max_connections lowered" in line]
    if expected < 4096:
        assert lowered == [
            f"healthcheck: max_connections lowered from 4096 to {expected}: RLIMIT_NOFILE is {soft}, and 576 "
            "descriptors are kept for the rest (LimitNOFILE= in the unit should be at least max_connections + 576)"
        ]
    else:
        assert lowered == []
