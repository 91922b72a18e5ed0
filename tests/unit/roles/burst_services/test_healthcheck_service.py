"""The healthcheck aggregator against loopback stand-in backends that misbehave."""

from __future__ import annotations

import http.client
import http.server
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from localworld.localplay import load_role_file

SCRIPT = Path(__file__).resolve().parents[4] / "roles" / "burst_services" / "files" / "healthcheck.py"
MODEL = "Qwen/Qwen2.5-14B-Instruct-AWQ"
INTERVAL = 0.1
TIMEOUT = 0.3


hc = load_role_file("burst_services", "healthcheck.py", "burst_healthcheck_service_under_test")


class Backend:
    """A vLLM- or TEI-like server on 127.0.0.1 whose behaviour a test switches at will.

    Modes: ``ready``, ``hang`` (accepts, never answers), ``slow`` (answers after
    ``delay``), ``unhealthy`` (/health 503), ``flap`` (/health alternates 200 and
    503), ``chunked`` (ready, /v1/models sent chunked).
    """

    def __init__(self, models=(MODEL,)):
        self.mode = "ready"
        self.delay = 0.0
        self.models = list(models)
        self.health_requests = 0
        self.released = threading.Event()
        backend = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):
                backend.answer(self)

            def log_message(self, *_args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    @property
    def url(self):
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def answer(self, handler):
        mode = self.mode
        if mode == "hang":
            self.released.wait()
            return
        if mode == "slow":
            time.sleep(self.delay)
        code, body = 404, b"{}"
        if handler.path == "/health":
            self.health_requests += 1
            code, body = 200, b""
            if mode == "unhealthy" or (mode == "flap" and self.health_requests % 2 == 0):
                code = 503
        elif handler.path == "/v1/models":
            code = 200
            body = json.dumps({"object": "list", "data": [{"id": m, "object": "model"} for m in self.models]}).encode()
        handler.send_response(code)
        handler.send_header("Content-Type", "application/json")
        if mode == "chunked":
            handler.send_header("Transfer-Encoding", "chunked")
            handler.end_headers()
            for start in range(0, len(body), 7):
                piece = body[start : start + 7]
                handler.wfile.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
            handler.wfile.write(b"0\r\n\r\n")
            return
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    def close(self):
        self.released.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def backends():
    made = []

    def make(models=(MODEL,)):
        made.append(Backend(models))
        return made[-1]

    yield make
    for backend in made:
        backend.close()


def _refusing_url():
    """A loopback port with nothing listening: connections are refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


class Service:
    """The aggregator served from a background thread, with its log lines kept."""

    def __init__(self, entries, interval=INTERVAL, timeout=TIMEOUT):
        raw = {"listen_host": "127.0.0.1", "listen_port": 0, "interval_s": interval, "timeout_s": timeout}
        raw["backends"] = entries
        self.lines = []
        self.aggregator = hc.Aggregator(hc.parse_config(raw), log=self.lines.append)
        self.aggregator.start()
        self.port = self.aggregator.port

    def request(self, path="/health", method="GET", timeout=2.0):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request(method, path)
            response = conn.getresponse()
            body = response.read()
            return response.status, (json.loads(body) if body else None), response
        finally:
            conn.close()

    def wait_status(self, code, within=5.0):
        deadline = time.monotonic() + within
        while True:
            status, body = self.request()[:2]
            if status == code:
                return body
            if time.monotonic() > deadline:
                raise AssertionError(f"/health stayed {status} for {within} s: {body}")
            time.sleep(0.02)

    def stop(self):
        self.aggregator.stop()


@pytest.fixture
def service():
    started = []

    def make(*entries, **options):
        started.append(Service(list(entries), **options))
        return started[-1]

    yield make
    for item in started:
        item.stop()


def _vllm(backend, **extra):
    return {
        "name": "vllm",
        "kind": "vllm",
        "url": backend.url if hasattr(backend, "url") else backend,
        "model": MODEL,
        **extra,
    }


def _tei(backend, **extra):
    return {"name": "embeddings", "kind": "tei", "url": backend.url if hasattr(backend, "url") else backend, **extra}


def test_ready_when_every_backend_is_ready(backends, service):
    svc = service(_vllm(backends()), _tei(backends()))
    body = svc.wait_status(200)
    assert body["ready"] is True
    for name in ("vllm", "embeddings"):
        entry = body["backends"][name]
        assert (entry["ok"], entry["status"], entry["error"]) == (True, "ready", None)
        assert 0 <= entry["latency_ms"] < TIMEOUT * 1000
        assert entry["last_check"].endswith("Z")
    assert body["backends"]["vllm"]["model"] == MODEL
    for path in ("/ready", "/", "/health?verbose=1"):
        status, same = svc.request(path)[:2]
        assert status == 200
        assert same["ready"] is True


def seed_client(body):
    """What a client of the seed's healthcheck.py reads, as that script answers:
    ``{"ready": bool, "vllm": {"ok": bool, "status": str}, "embeddings": {...}, "timestamp": float}``.
    """
    data = json.loads(body)
    verdict = {"ready": data["ready"], "timestamp": data["timestamp"]}
    for name in ("vllm", "embeddings"):
        verdict[name] = (data[name]["ok"], data[name]["status"])
    assert isinstance(verdict["ready"], bool)
    assert isinstance(verdict["timestamp"], float)
    for name in ("vllm", "embeddings"):
        assert isinstance(verdict[name][0], bool)
        assert isinstance(verdict[name][1], str)
    return verdict


def test_answer_keeps_the_seed_format_for_old_clients(backends, service):
    tei = backends()
    svc = service(_vllm(backends()), _tei(tei))
    svc.wait_status(200)
    conn = http.client.HTTPConnection("127.0.0.1", svc.port, timeout=2)
    conn.request("GET", "/health")
    response = conn.getresponse()
    before = time.time()
    ready = seed_client(response.read())
    conn.close()
    assert ready["ready"] is True
    assert ready["vllm"] == (True, "ready")
    assert ready["embeddings"] == (True, "ready")
    assert before - 5 < ready["timestamp"] <= before + 1
    tei.mode = "unhealthy"
    svc.wait_status(503)
    conn = http.client.HTTPConnection("127.0.0.1", svc.port, timeout=2)
    conn.request("GET", "/health")
    response = conn.getresponse()
    assert response.status == 503
    body = response.read()
    conn.close()
    not_ready = seed_client(body)
    assert not_ready["ready"] is False
    assert not_ready["vllm"] == (True, "ready")
    assert not_ready["embeddings"] == (False, "unhealthy")
    # The richer answer is still there, and agrees.
    rich = json.loads(body)
    assert rich["backends"]["embeddings"]["status"] == "unhealthy"
    assert rich["backends"]["embeddings"]["error"] == "GET /health: HTTP 503"


def test_answers_before_the_first_probe_ends(backends, service):
    hung = backends()
    hung.mode = "hang"
    svc = service(_vllm(hung), _tei(hung), interval=30, timeout=5)
    status, body = svc.request()[:2]
    assert status == 503
    assert body["ready"] is False
    assert body["boot_to_ready_s"] is None
    entry = body["backends"]["vllm"]
    assert (entry["ok"], entry["status"], entry["error"], entry["last_check"]) == (
        False,
        "unknown",
        "not probed yet",
        None,
    )
    assert svc.request("/live")[:2] == (200, {"live": True})


def test_hung_backend_times_out_and_never_slows_requests(backends, service):
    hung = backends()
    hung.mode = "hang"
    svc = service(_vllm(backends()), _tei(hung))
    time.sleep(TIMEOUT + INTERVAL)
    slowest = 0.0
    for _attempt in range(50):
        started = time.monotonic()
        status, body = svc.request()[:2]
        slowest = max(slowest, time.monotonic() - started)
        assert status == 503
    assert slowest < 0.1, f"a request took {slowest:.3f} s while a backend hangs"
    entry = body["backends"]["embeddings"]
    assert (entry["ok"], entry["status"]) == (False, "timeout")
    assert entry["error"] == f"no answer within {TIMEOUT:g} s"
    assert entry["latency_ms"] >= TIMEOUT * 1000 * 0.9
    assert body["backends"]["vllm"]["ok"] is True
    assert svc.request("/live")[0] == 200


def test_flips_to_503_within_timeout_plus_interval_after_a_hang(backends, service):
    tei = backends()
    svc = service(_vllm(backends()), _tei(tei))
    svc.wait_status(200)
    tei.mode = "hang"
    hung_at = time.monotonic()
    svc.wait_status(503, within=TIMEOUT + INTERVAL + 1)
    elapsed = time.monotonic() - hung_at
    assert elapsed <= TIMEOUT + INTERVAL + 0.15, f"took {elapsed:.3f} s to notice the hang"


def test_slow_backend_within_timeout_is_ready_beyond_it_times_out(backends, service):
    slow = backends()
    slow.mode, slow.delay = "slow", 0.1
    svc = service(_vllm(backends()), _tei(slow))
    body = svc.wait_status(200)
    assert body["backends"]["embeddings"]["latency_ms"] >= 100
    slow.delay = TIMEOUT + 0.2
    body = svc.wait_status(503, within=2)
    assert body["backends"]["embeddings"]["status"] == "timeout"


def test_refused_backend_is_down(backends, service):
    svc = service(_vllm(backends()), _tei(_refusing_url()))
    time.sleep(INTERVAL * 2)
    status, body = svc.request()[:2]
    assert status == 503
    entry = body["backends"]["embeddings"]
    assert (entry["ok"], entry["status"], entry["error"]) == (False, "down", "connection refused")


def test_unhealthy_backend_reports_the_http_status(backends, service):
    loading = backends()
    loading.mode = "unhealthy"
    svc = service(_vllm(backends()), _tei(loading))
    time.sleep(INTERVAL * 2)
    status, body = svc.request()[:2]
    assert status == 503
    assert body["backends"]["embeddings"]["status"] == "unhealthy"
    assert body["backends"]["embeddings"]["error"] == "GET /health: HTTP 503"
    loading.mode = "ready"
    svc.wait_status(200)


def test_wrong_model_id_is_not_ready(backends, service):
    svc = service(_vllm(backends(models=("Qwen/Qwen2.5-7B-Instruct-AWQ",))), _tei(backends()))
    time.sleep(INTERVAL * 2)
    status, body = svc.request()[:2]
    assert status == 503
    entry = body["backends"]["vllm"]
    assert entry["status"] == "model_missing"
    assert entry["error"] == f"GET /v1/models lists Qwen/Qwen2.5-7B-Instruct-AWQ, not {MODEL}"


def test_model_list_sent_chunked_is_read(backends, service):
    chunked = backends(models=("other/model", MODEL))
    chunked.mode = "chunked"
    svc = service(_vllm(chunked), _tei(backends()))
    assert svc.wait_status(200)["backends"]["vllm"]["status"] == "ready"


def test_optional_backend_does_not_block_readiness(backends, service):
    svc = service(_vllm(backends()), _tei(_refusing_url(), required=False))
    body = svc.wait_status(200)
    assert body["backends"]["embeddings"]["required"] is False
    assert body["backends"]["embeddings"]["ok"] is False


def test_flapping_backend_is_followed_and_boot_to_ready_is_recorded_once(backends, service):
    flapping = backends()
    svc = service(_vllm(backends()), _tei(flapping))
    first = svc.wait_status(200)
    boot_now = hc.seconds_since_boot()
    assert first["boot_to_ready_s"] is not None
    assert 0 < first["boot_to_ready_s"] <= boot_now
    assert boot_now - first["boot_to_ready_s"] < 5
    assert 0 <= first["start_to_ready_s"] < 5
    flapping.mode = "flap"
    svc.wait_status(503)
    svc.wait_status(200)
    svc.wait_status(503)
    last = svc.wait_status(200)
    assert (last["boot_to_ready_s"], last["ready_at"]) == (first["boot_to_ready_s"], first["ready_at"])
    boot_lines = [line for line in svc.lines if line.startswith("boot-to-ready:")]
    assert boot_lines == [
        f"boot-to-ready: {first['boot_to_ready_s']:.3f} s after boot "
        f"({first['start_to_ready_s']:.3f} s after healthcheck start)"
    ]
    assert svc.lines.count("not ready") >= 2


def test_http_keep_alive_pipelining_and_errors(backends, service):
    svc = service(_vllm(backends()), _tei(backends()))
    svc.wait_status(200)
    conn = http.client.HTTPConnection("127.0.0.1", svc.port, timeout=2)
    for path in ("/health", "/live", "/ready"):
        conn.request("GET", path)
        response = conn.getresponse()
        assert response.status == 200
        assert response.getheader("Connection") == "keep-alive"
        response.read()
    conn.request("HEAD", "/health")
    response = conn.getresponse()
    assert response.status == 200
    assert int(response.getheader("Content-Length")) > 0
    assert response.read() == b""
    conn.close()
    assert svc.request("/metrics")[0] == 404
    answer = svc.request("/health", method="POST")
    status, response = answer[0], answer[2]
    assert (status, response.getheader("Allow")) == (405, "GET, HEAD")
    with socket.create_connection(("127.0.0.1", svc.port), timeout=2) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nContent-Length: 4\r\n\r\nGET ")
        answer = sock.recv(65536)
        assert answer.startswith(b"HTTP/1.1 400 ")
        assert sock.recv(65536) == b""
    with socket.create_connection(("127.0.0.1", svc.port), timeout=2) as sock:
        sock.sendall(b"GET /live HTTP/1.1\r\nHost: x\r\n\r\nGET /live HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    assert received.count(b"HTTP/1.1 200 OK") == 2
    assert received.endswith(b'{"live":true}\n')
    with socket.create_connection(("127.0.0.1", svc.port), timeout=2) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nX-Filler: " + b"a" * 9000)
        assert sock.recv(65536).startswith(b"HTTP/1.1 431 ")
    with socket.create_connection(("127.0.0.1", svc.port), timeout=2) as sock:
        sock.sendall(b"NONSENSE\r\n\r\n")
        assert sock.recv(65536).startswith(b"HTTP/1.1 400 ")


def test_serves_in_its_own_process_and_stops_on_sigterm(backends, tmp_path):
    config = tmp_path / "healthcheck.json"
    config.write_text(
        json.dumps({"interval_s": INTERVAL, "timeout_s": TIMEOUT, "backends": [_vllm(backends()), _tei(backends())]})
    )
    port_file = tmp_path / "port"
    notify = tmp_path / "notify"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(str(notify))
    listener.settimeout(10)
    env = dict(os.environ, NOTIFY_SOCKET=str(notify), PYTHONUNBUFFERED="1")
    cmd = [sys.executable, str(SCRIPT), "--config", str(config), "--host", "127.0.0.1", "--port", "0"]
    proc = subprocess.Popen(
        [*cmd, "--port-file", str(port_file)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    try:
        assert listener.recv(64) == b"READY=1"
        port = int(port_file.read_text())
        deadline = time.monotonic() + 5
        while True:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/health")
            if conn.getresponse().status == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=5)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        listener.close()
    assert proc.returncode == 0, err
    lines = out.splitlines()
    assert lines[0].startswith(f"healthcheck: listening on 127.0.0.1:{port}; backends: vllm (vllm, ")
    assert sum(line.startswith("healthcheck: boot-to-ready: ") for line in lines) == 1
    assert lines[-2:] == ["healthcheck: SIGTERM received, stopping", "healthcheck: stopped"]
    assert err == ""


def test_port_in_use_is_a_clear_error(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = tmp_path / "healthcheck.json"
        config.write_text(json.dumps({"backends": [_tei(_refusing_url())]}))
        result = subprocess.run(
            [sys.executable, str(SCRIPT), "--config", str(config), "--host", "127.0.0.1", "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    assert result.returncode == 1
    assert f"healthcheck: error: cannot listen on 127.0.0.1:{port}: " in result.stderr
