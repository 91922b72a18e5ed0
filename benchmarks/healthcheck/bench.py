"""Benchmark the burst healthcheck aggregator against the seed's healthcheck.py.

Both run in the same invocation, one after the other, against the same
loopback stand-in backends (a vLLM-like one on 127.0.0.1:8000, a TEI-like
one on 127.0.0.1:8001) and on port 8080, the ports the seed hardcodes:

1. both backends healthy: ``wrk -t2 -c32 -d<duration> --latency``;
2. the TEI-like backend turned (SIGUSR1, same listening socket) into one
   that accepts connections and never answers: the time until /health
   answers 503, then the same wrk run.

The seed's code is extracted at run time from the seed document given with
``--seed`` (the ``python`` block that starts with ``# /opt/burst/healthcheck.py``)
and run as printed. Everything runs in a private network namespace
(``unshare --net``, root): the fixed ports collide with nothing, and the
seed's listen address ('' = every interface) covers only that namespace's
loopback. Every process started is stopped at the end.

    sudo python3 benchmarks/healthcheck/bench.py --seed ../shared/seeds/000_a3d034add86f5ab1.txt

prints a markdown table.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
OURS = REPO / "roles" / "burst_services" / "files" / "healthcheck.py"
STUB = HERE / "stub_backend.py"
MODEL = "Qwen/Qwen2.5-14B-Instruct-AWQ"
VLLM_PORT, TEI_PORT, HEALTH_PORT = 8000, 8001, 8080
NETNS_MARK = "BURST_BENCH_IN_NETNS"
SEED_MARKER = "# /opt/burst/healthcheck.py"


def extract_seed(document: Path) -> str:
    """The seed's healthcheck.py, exactly as the document prints it."""
    text = document.read_text(encoding="utf-8")
    for block in re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL):
        if block.startswith(SEED_MARKER):
            return block
    raise SystemExit(f"bench: {document}: no ```python block starting with {SEED_MARKER!r}")


class Processes:
    """Every process the benchmark starts, each in its own process group, stopped on exit."""

    def __init__(self, logdir: Path):
        self.logdir = logdir
        self.running: dict[str, subprocess.Popen] = {}

    def start(self, name: str, argv: list[str], cwd: Path | None = None) -> subprocess.Popen:
        log = open(self.logdir / f"{name}.log", "ab")
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=cwd, start_new_session=True)
        log.close()
        self.running[name] = proc
        return proc

    def stop(self, name: str, timeout: float = 5) -> int | None:
        proc = self.running.pop(name, None)
        if proc is None:
            return None
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                return proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        return proc.wait()

    def stop_all(self) -> None:
        for name in list(self.running):
            self.stop(name)


def wait_port(port: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise SystemExit(f"bench: nothing listens on 127.0.0.1:{port} after {timeout} s") from None
            time.sleep(0.05)


def get_health(timeout: float = 30) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", HEALTH_PORT, timeout=timeout)
    try:
        conn.request("GET", "/health")
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def wait_status(code: int, timeout: float) -> float:
    """Seconds until GET /health answers ``code`` (each request may itself take up to ``timeout``)."""
    started = time.monotonic()
    while True:
        try:
            if get_health(timeout) == code:
                return time.monotonic() - started
        except OSError:
            pass
        if time.monotonic() - started > timeout:
            raise SystemExit(f"bench: /health did not answer {code} within {timeout} s")
        time.sleep(0.01)


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def _ms(value: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", value).groups()
    return float(number) * _UNITS[unit]


def run_wrk(duration: int) -> dict:
    argv = [
        "wrk",
        "-t2",
        "-c32",
        f"-d{duration}s",
        "--timeout",
        "30s",
        "--latency",
        f"http://127.0.0.1:{HEALTH_PORT}/health",
    ]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 60, check=True).stdout
    result = {"requests_per_s": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))}
    result["requests"] = int(re.search(r"(\d+) requests in", out).group(1))
    for pct in ("50", "99"):
        match = re.search(rf"^\s+{pct}%\s+(\S+)", out, flags=re.MULTILINE)
        result[f"p{pct}_ms"] = _ms(match.group(1)) if match else None
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    result["socket_errors"] = sum(int(n) for n in errors.groups()) if errors else 0
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    result["non_2xx"] = int(non2xx.group(1)) if non2xx else 0
    result["raw"] = out
    return result


def bench_one(name: str, argv: list[str], procs: Processes, duration: int, flip_timeout: float, cwd: Path) -> dict:
    procs.start("vllm", [sys.executable, str(STUB), "--mode", "vllm", "--port", str(VLLM_PORT), "--model", MODEL])
    procs.start("tei", [sys.executable, str(STUB), "--mode", "tei", "--port", str(TEI_PORT)])
    wait_port(VLLM_PORT)
    wait_port(TEI_PORT)
    procs.start(name, argv, cwd=cwd)
    wait_port(HEALTH_PORT)
    wait_status(200, 30)
    results = {"load_before": os.getloadavg()[0], "healthy": run_wrk(duration)}
    # Let a serial server answer what wrk left queued while the backend is
    # still healthy, so that the flip time measures the hang alone.
    time.sleep(1)
    wait_status(200, 30)
    # Same socket, no restart: connections are never refused in between.
    os.kill(procs.running["tei"].pid, signal.SIGUSR1)
    hung_at = time.monotonic()
    wait_status(503, flip_timeout)
    results["flip_s"] = time.monotonic() - hung_at
    results["hung"] = run_wrk(duration)
    results["exit_status"] = procs.stop(name)
    procs.stop_all()
    return results


def _fmt_ms(value: float | None) -> str:
    if not value:
        return "n/a"
    return f"{value / 1000:.2f} s" if value >= 1000 else f"{value:.2f} ms"


def table(results: dict[str, dict]) -> str:
    rows = [
        "| Aggregator | Backends | Requests/s | p50 | p99 | Answers (of which non-2xx) | Socket errors |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for name, result in results.items():
        for case, label in (("healthy", "both healthy"), ("hung", "TEI hung")):
            r = result[case]
            rows.append(
                f"| {name} | {label} | {r['requests_per_s']:,.1f} | {_fmt_ms(r['p50_ms'])} | {_fmt_ms(r['p99_ms'])} "
                f"| {r['requests']:,} ({r['non_2xx']:,}) | {r['socket_errors']:,} |"
            )
    rows.append("")
    rows.append("| Aggregator | Time from the hang to the first 503 |")
    rows.append("|---|---:|")
    for name, result in results.items():
        rows.append(f"| {name} | {result['flip_s']:.2f} s |")
    return "\n".join(rows)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--seed",
        type=Path,
        default=os.environ.get("BURST_SEED_DOCUMENT"),
        help="the seed document holding the original healthcheck.py (or $BURST_SEED_DOCUMENT)",
    )
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run (default 10)")
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    parser.add_argument("--raw", action="store_true", help="also print wrk's own output")
    args = parser.parse_args(argv)
    if args.seed is None:
        parser.error("--seed (or $BURST_SEED_DOCUMENT) is required")
    seed_code = extract_seed(args.seed)
    for tool in ("wrk", "unshare", "ip"):
        if shutil.which(tool) is None:
            raise SystemExit(f"bench: {tool} is required (Debian packages wrk, util-linux, iproute2)")
    if os.environ.get(NETNS_MARK) != "1":
        env = dict(os.environ, **{NETNS_MARK: "1"})
        argv = ["unshare", "--net", "--", sys.executable, str(Path(__file__).resolve()), *(argv or sys.argv[1:])]
        return subprocess.run(argv, env=env, check=False).returncode
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)

    with tempfile.TemporaryDirectory(prefix="burst-healthcheck-bench-") as tmp:
        work = Path(tmp)
        seed_file = work / "seed_healthcheck.py"
        seed_file.write_text(seed_code, encoding="utf-8")
        config = work / "healthcheck.json"
        config.write_text(
            json.dumps(
                {
                    "listen_host": "127.0.0.1",
                    "listen_port": HEALTH_PORT,
                    "backends": [
                        {"name": "vllm", "kind": "vllm", "url": f"http://127.0.0.1:{VLLM_PORT}", "model": MODEL},
                        {"name": "embeddings", "kind": "tei", "url": f"http://127.0.0.1:{TEI_PORT}"},
                    ],
                }
            )
        )
        procs = Processes(work)
        results = {}
        try:
            results["seed (000)"] = bench_one(
                "seed", [sys.executable, str(seed_file)], procs, args.duration, flip_timeout=60, cwd=work
            )
            results["burst_services"] = bench_one(
                "ours",
                [sys.executable, str(OURS), "--config", str(config)],
                procs,
                args.duration,
                flip_timeout=10,
                cwd=work,
            )
        finally:
            procs.stop_all()
        ours = results["burst_services"]
        python = sys.version.split()[0]
        print(f"wrk -t2 -c32 -d{args.duration}s --timeout 30s --latency, Python {python}, {os.cpu_count()} CPUs")
        loads = ", ".join(f"{name} {result['load_before']:.1f}" for name, result in results.items())
        print(f"1-minute load average before each aggregator's runs: {loads}")
        print(f"burst_services exit status after SIGTERM: {ours['exit_status']}")
        print()
        print(table(results))
        if args.raw:
            for name, result in results.items():
                for case in ("healthy", "hung"):
                    print(f"\n## {name}, {case}\n\n{result[case]['raw']}")
        if args.json:
            for result in results.values():
                for case in ("healthy", "hung"):
                    result[case].pop("raw")
            args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
