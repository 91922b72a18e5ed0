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

``--abuse`` measures the aggregator under abuse instead (``abuse.py``: 1,000
slowloris connections, 60 pipelining clients that never read, 2,000 idle
keep-alive connections, each kept at its count): for each aggregator,
``wrk`` before the abuse, during it (with the aggregator's resident memory
and open descriptors sampled), and after it stops, once its descriptors are
back to their count before the abuse. ``--before FILE`` adds an earlier
healthcheck.py (run with the same backends, without the abuse limits in its
configuration) in alternating rounds; ``--rounds N`` (default 3) and the
median of each figure over the rounds:

    git show 4bcd539:roles/burst_services/files/healthcheck.py > /tmp/healthcheck_before.py
    sudo python3 benchmarks/healthcheck/bench.py --abuse --before /tmp/healthcheck_before.py --rounds 3 --duration 15
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
OURS = REPO / "roles" / "burst_services" / "files" / "healthcheck.py"
STUB = HERE / "stub_backend.py"
ABUSE = HERE / "abuse.py"
ABUSE_COUNTS = {"slowloris": 1000, "pipeliners": 60, "idle": 2000}
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


def proc_status(pid: int) -> dict:
    """Resident memory (KiB, now and peak) and open descriptors of a process."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _separator, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0])
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu_s = (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    return {"rss_kib": fields["VmRSS"], "hwm_kib": fields["VmHWM"], "fds": fds, "cpu_s": cpu_s}


class Sampler(threading.Thread):
    """Samples a process's resident memory and descriptors every 0.2 s; keeps the highest."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.pid = pid
        self.stopped = threading.Event()
        self.rss_peak_kib = 0
        self.fds_peak = 0

    def run(self) -> None:
        while not self.stopped.wait(0.2):
            try:
                status = proc_status(self.pid)
            except (OSError, KeyError):
                return
            self.rss_peak_kib = max(self.rss_peak_kib, status["rss_kib"])
            self.fds_peak = max(self.fds_peak, status["fds"])

    def stop(self) -> None:
        self.stopped.set()
        self.join()


def wait_file(path: Path, timeout: float, proc: subprocess.Popen) -> str:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            raise SystemExit(f"bench: the abuse clients exited with status {proc.returncode}")
        if time.monotonic() > deadline:
            raise SystemExit(f"bench: {path.name} not written within {timeout} s")
        time.sleep(0.1)
    time.sleep(0.05)
    return path.read_text()


def abuse_one(name: str, argv: list[str], procs: Processes, duration: int, work: Path, tag: str) -> dict:
    """wrk before, during and after the abuse mix, for one aggregator."""
    proc = procs.start(name, argv, cwd=work)
    wait_port(HEALTH_PORT)
    wait_status(200, 30)
    for _warm in range(100):
        get_health()
    idle = proc_status(proc.pid)
    result = {"load_before": os.getloadavg()[0], "rss_idle_kib": idle["rss_kib"], "fds_idle": idle["fds"]}
    result["before"] = run_wrk(duration)
    ready, status = work / f"abuse-ready-{tag}", work / f"abuse-status-{tag}"
    counts = [f"--{kind}={count}" for kind, count in ABUSE_COUNTS.items()]
    abuser = procs.start(
        "abuse",
        [
            sys.executable,
            str(ABUSE),
            f"--port={HEALTH_PORT}",
            *counts,
            f"--ready-file={ready}",
            f"--status-file={status}",
        ],
    )
    result["abuse_opened"] = json.loads(wait_file(ready, 180, abuser))
    sampler = Sampler(proc.pid)
    sampler.start()
    result["load_during"] = os.getloadavg()[0]
    cpu = proc_status(proc.pid)["cpu_s"], proc_status(abuser.pid)["cpu_s"]
    started = time.monotonic()
    result["abuse"] = run_wrk(duration)
    elapsed = time.monotonic() - started
    result["cpu_share_aggregator"] = (proc_status(proc.pid)["cpu_s"] - cpu[0]) / elapsed
    result["cpu_share_abuse_clients"] = (proc_status(abuser.pid)["cpu_s"] - cpu[1]) / elapsed
    sampler.stop()
    result["rss_peak_kib"], result["fds_peak"] = sampler.rss_peak_kib, sampler.fds_peak
    procs.stop("abuse", timeout=30)
    stopped = time.monotonic()
    result["abuse_status"] = json.loads(status.read_text()) if status.exists() else None
    # Back to normal: the descriptors the abuse held are released.
    result["recovery_s"] = None
    while time.monotonic() - stopped < 120:
        if proc_status(proc.pid)["fds"] <= idle["fds"] + 4:
            result["recovery_s"] = time.monotonic() - stopped
            break
        time.sleep(0.05)
    result["after"] = run_wrk(duration)
    after = proc_status(proc.pid)
    result["rss_after_kib"], result["hwm_kib"], result["fds_after"] = after["rss_kib"], after["hwm_kib"], after["fds"]
    result["exit_status"] = procs.stop(name)
    return result


def _median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def abuse_table(results: dict[str, list[dict]]) -> str:
    rows = [
        "| Aggregator | Phase | Requests/s | p50 | p99 | Non-2xx | Socket errors |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for name, rounds in results.items():
        for phase, label in (("before", "before the abuse"), ("abuse", "under abuse"), ("after", "after the abuse")):
            rows.append(
                f"| {name} | {label} | {_median([r[phase]['requests_per_s'] for r in rounds]):,.0f} "
                f"| {_fmt_ms(_median([r[phase]['p50_ms'] for r in rounds]))} "
                f"| {_fmt_ms(_median([r[phase]['p99_ms'] for r in rounds]))} "
                f"| {_median([r[phase]['non_2xx'] for r in rounds]):,.0f} "
                f"| {_median([r[phase]['socket_errors'] for r in rounds]):,.0f} |"
            )
    rows += [
        "",
        "| Aggregator | RSS idle | RSS peak under abuse | RSS after | Descriptors idle / peak / after "
        "| Back to idle descriptors |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, rounds in results.items():
        recovery = _median([r["recovery_s"] for r in rounds])
        rows.append(
            f"| {name} | {_median([r['rss_idle_kib'] for r in rounds]) / 1024:.1f} MiB "
            f"| {_median([r['rss_peak_kib'] for r in rounds]) / 1024:.1f} MiB "
            f"| {_median([r['rss_after_kib'] for r in rounds]) / 1024:.1f} MiB "
            f"| {_median([r['fds_idle'] for r in rounds]):.0f} / {_median([r['fds_peak'] for r in rounds]):.0f} "
            f"/ {_median([r['fds_after'] for r in rounds]):.0f} "
            f"| {'never' if recovery is None else f'{recovery:.2f} s'} |"
        )
    return "\n".join(rows)


def raise_nofile(wanted: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, hard), hard))


def run_abuse(args, work: Path, backends: list[dict]) -> int:
    raise_nofile(16384)
    config = work / "healthcheck.json"
    config.write_text(json.dumps({"listen_host": "127.0.0.1", "listen_port": HEALTH_PORT, "backends": backends}) + "\n")
    aggregators = {"burst_services": [sys.executable, str(OURS), "--config", str(config)]}
    if args.before:
        aggregators = {"before": [sys.executable, str(args.before.resolve()), "--config", str(config)], **aggregators}
    procs = Processes(work)
    results: dict[str, list[dict]] = {name: [] for name in aggregators}
    try:
        procs.start("vllm", [sys.executable, str(STUB), "--mode", "vllm", "--port", str(VLLM_PORT), "--model", MODEL])
        procs.start("tei", [sys.executable, str(STUB), "--mode", "tei", "--port", str(TEI_PORT)])
        wait_port(VLLM_PORT)
        wait_port(TEI_PORT)
        for round_no in range(args.rounds):
            order = list(aggregators) if round_no % 2 == 0 else list(reversed(aggregators))
            for name in order:
                print(f"round {round_no + 1}: {name}", file=sys.stderr, flush=True)
                result = abuse_one(name, aggregators[name], procs, args.duration, work, f"{name}-{round_no}")
                results[name].append(result)
    finally:
        procs.stop_all()
    python = sys.version.split()[0]
    print(f"wrk -t2 -c32 -d{args.duration}s --timeout 30s --latency, Python {python}, {os.cpu_count()} CPUs")
    print(f"abuse: {', '.join(f'{count} {kind}' for kind, count in ABUSE_COUNTS.items())}; {args.rounds} round(s)")
    for name, rounds in results.items():
        loads = ", ".join(f"{r['load_before']:.1f}/{r['load_during']:.1f}" for r in rounds)
        print(f"{name}: 1-minute load average before/under abuse, per round: {loads}")
        shares = ", ".join(f"{r['cpu_share_aggregator']:.0%}/{r['cpu_share_abuse_clients']:.0%}" for r in rounds)
        print(f"{name}: CPU used under abuse by the aggregator/the abuse clients (of one core), per round: {shares}")
    print()
    print(abuse_table(results))
    if args.json:
        for rounds in results.values():
            for result in rounds:
                for phase in ("before", "abuse", "after"):
                    result[phase].pop("raw")
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


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
    parser.add_argument("--abuse", action="store_true", help="measure under the abuse mix instead (see abuse.py)")
    parser.add_argument("--before", type=Path, help="with --abuse: an earlier healthcheck.py to compare with")
    parser.add_argument("--rounds", type=int, default=3, help="with --abuse: alternating rounds (default 3)")
    args = parser.parse_args(argv)
    if args.abuse:
        if args.before is not None and not args.before.is_file():
            parser.error(f"--before: {args.before}: no such file")
        seed_code = None
    elif args.seed is None:
        parser.error("--seed (or $BURST_SEED_DOCUMENT) is required")
    else:
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
        if args.abuse:
            backends = [
                {"name": "vllm", "kind": "vllm", "url": f"http://127.0.0.1:{VLLM_PORT}", "model": MODEL},
                {"name": "embeddings", "kind": "tei", "url": f"http://127.0.0.1:{TEI_PORT}"},
            ]
            return run_abuse(args, work, backends)
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
