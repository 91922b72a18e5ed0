"""Burst healthcheck aggregator: one answer for "can this instance serve?".

Reads its backends from a JSON file (default /etc/burst/healthcheck.json)::

    {
      "listen_host": "0.0.0.0", "listen_port": 8080,
      "interval_s": 1.0, "timeout_s": 1.0,
      "backends": [
        {"name": "vllm", "kind": "vllm", "url": "http://127.0.0.1:8000",
         "model": "Qwen/Qwen2.5-14B-Instruct-AWQ", "required": true},
        {"name": "embeddings", "kind": "tei", "url": "http://127.0.0.1:8001"}
      ]
    }

A ``vllm`` backend is ready when ``GET /health`` answers 200 and
``GET /v1/models`` lists ``model``; a ``tei`` backend when ``GET /health``
answers 200.

Endpoints:

- ``GET /health``, ``/ready`` and ``/``: 200 when every required backend is
  ready, 503 otherwise; a JSON body with each backend's ok, status,
  latency_ms, last_check and error, and ``boot_to_ready_s``: the first
  moment every required backend was ready, in seconds since the machine
  booted (also logged once).
- ``GET /live``: 200 while the process runs.

The answer also carries the seed format's fields at the top level: for each
backend, ``{"ok": ..., "status": ...}`` under its name (``vllm.ok``,
``embeddings.status``), and ``timestamp`` (seconds since the epoch), so a
client written for the original ``healthcheck.py`` keeps working.

Abuse limits (each a key of the configuration file, defaults in brackets):

- ``max_connections`` [4096]: open client connections. At the cap, a new
  connection closes the connection that has been idle longest (no request
  under way), or failing that the oldest one, so that a new ``/health``
  client always gets in. The process needs that many file descriptors plus
  ``FD_RESERVE`` (the systemd unit's ``LimitNOFILE``); with fewer, the cap
  is lowered to fit and the log says so.
- ``max_pipeline`` [32]: requests answered per connection in one go; the
  rest of a pipelined flood waits, unread, until that answer is sent.
- ``max_unsent_bytes`` [65536]: answer bytes a connection may leave unsent
  before reading from it stops, until the client reads.
- ``header_timeout_s`` [10]: seconds a request head may take to arrive,
  counted from its first byte (from the connection for the first request).
- ``idle_timeout_s`` [60]: seconds a keep-alive connection may stay silent.
- ``send_timeout_s`` [10]: seconds an answer may stay unsent; a client that
  does not read is then aborted (its unsent answer dropped).

Probes run in a background thread, concurrently, one loop per backend, every
``interval_s`` with a hard deadline of ``timeout_s`` per probe. Requests are
answered from a response snapshot that the probes rebuild; no request ever
waits on a backend, so a backend that hangs cannot slow anyone down.

Spot interruptions, with an ``interruption`` object in the configuration
(without one, nothing is watched)::

    "interruption": {"enabled": true, "imds_url": "http://169.254.169.254",
                     "poll_interval_s": 5, "state_file": "/run/burst/interruption.json",
                     "hooks_dir": "/etc/burst/interruption.d", "hook_timeout_s": 90}

Every ``poll_interval_s``, in the probes' thread, the watcher asks the
instance metadata service (IMDSv2: a token from ``PUT /latest/api/token``,
then each ``GET`` with it) for ``/latest/meta-data/spot/instance-action``
and ``/latest/meta-data/events/recommendations/rebalance`` (404: none).

- A spot interruption notice (``{"action": "terminate", "time": ...}``)
  drains the instance, for good: ``/health`` answers 503 with ``ready``
  false and ``draining``: ``{"reason": "spot-interruption", "action",
  "deadline"`` (the notice's time), ``"noticed_at", "seconds_left"}``, the
  other fields as before. The state file gets ``{"reason", "action",
  "deadline", "noticed_at"}`` (written whole, then renamed), and every
  executable of ``hooks_dir`` runs once, in name order, one after the
  other, with ``BURST_INTERRUPTION_REASON``, ``BURST_INTERRUPTION_ACTION``
  and ``BURST_INTERRUPTION_DEADLINE`` in its environment, each for at most
  ``hook_timeout_s`` and never past 10 s before the deadline (then its
  process group is killed); each exit status is logged. Hooks run in a
  thread of their own: requests and probes never wait on them.
- A rebalance recommendation (``{"noticeTime": ...}``) is advice, not a
  notice: the instance may run for hours yet, or stay. ``/health`` keeps
  its answer and adds ``rebalance_recommended_at``; the state file gets the
  reason ``rebalance-recommendation``; hooks do not run (they prepare for
  the end, which a recommendation does not announce).
- When the metadata service does not answer, the watcher logs it once,
  keeps serving, and tries again less and less often (up to a minute
  apart). With the link-local ``imds_url`` (the default), it first reads
  the machine's firmware data (DMI, under /sys) and, on a machine that is
  not an EC2 instance, logs that once and sends nothing at all.

Python 3.9+ standard library only: it runs on the image's own python3.
"""

from __future__ import annotations

import argparse
import asyncio
import calendar
import collections
import json
import os
import re
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
from urllib.parse import urlsplit

DEFAULT_CONFIG = "/etc/burst/healthcheck.json"
KINDS = ("vllm", "tei")
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
# Largest probe answer read (a /v1/models list is a few hundred bytes).
MAX_PROBE_BODY = 1 << 20
# Largest request head accepted from a client.
MAX_REQUEST_HEAD = 8192
# Bytes read from a client at a time (one buffer shared by every connection).
READ_SIZE = 16384
# Connections the idle/deadline sweep looks at per turn of the event loop.
SWEEP_SLICE = 256
# Connections the kernel queues for accept(); one accept pass may take in as
# many sockets before the cap can close any.
LISTEN_BACKLOG = 512
# File descriptors needed beyond max_connections: one accept pass, the
# listening socket, probes, standard streams and the interpreter's own files.
FD_RESERVE = LISTEN_BACKLOG + 64

# Abuse limits: key -> (type, default, lowest, highest).
LIMITS = {
    "max_connections": (int, 4096, 1, 1_000_000),
    "max_pipeline": (int, 32, 1, 1024),
    "max_unsent_bytes": (int, 65536, 1024, 64 << 20),
    "header_timeout_s": (float, 10.0, 0.01, 3600),
    "idle_timeout_s": (float, 60.0, 0.01, 86400),
    "send_timeout_s": (float, 10.0, 0.01, 3600),
}

# The interruption watcher's settings: key -> (type, default).
INTERRUPTION_SETTINGS = {
    "enabled": (bool, True),
    "imds_url": (str, "http://169.254.169.254"),
    "poll_interval_s": (float, 5.0),
    "state_file": (str, "/run/burst/interruption.json"),
    "hooks_dir": (str, "/etc/burst/interruption.d"),
    "hook_timeout_s": (float, 90.0),
}
# The instance metadata service's link-local addresses (IPv4, IPv6): only an EC2 instance has them.
IMDS_LINK_LOCAL = frozenset(("169.254.169.254", "fd00:ec2::254"))
IMDS_TOKEN_PATH = "/latest/api/token"  # noqa: S105 - a URL path, not a secret
IMDS_SPOT_ACTION_PATH = "/latest/meta-data/spot/instance-action"
IMDS_REBALANCE_PATH = "/latest/meta-data/events/recommendations/rebalance"
# Lifetime asked for an IMDSv2 token, and the margin before its end at which a new one is fetched.
IMDS_TOKEN_TTL_S = 21600
IMDS_TOKEN_MARGIN_S = 60
# Seconds one metadata request may take.
IMDS_TIMEOUT_S = 2.0
# Longest wait between two tries while the metadata service does not answer.
IMDS_BACKOFF_MAX_S = 60.0
# Seconds before the interruption deadline by which every hook has been stopped.
HOOK_DEADLINE_MARGIN_S = 10.0
# Root of the kernel's sysfs, where the machine's DMI data is read.
SYSFS = "/sys"

_TOP_KEYS = {
    "listen_host": str,
    "listen_port": int,
    "interval_s": float,
    "timeout_s": float,
    "backends": list,
    "interruption": dict,
    **{key: spec[0] for key, spec in LIMITS.items()},
}
# Top-level keys of the answer: a backend's name must not shadow one.
RESERVED_NAMES = frozenset(
    (
        "ready",
        "backends",
        "boot_to_ready_s",
        "start_to_ready_s",
        "ready_at",
        "generated_at",
        "timestamp",
        "draining",
        "rebalance_recommended_at",
    )
)
_BACKEND_KEYS = {"name": str, "kind": str, "url": str, "model": str, "required": bool}


class ConfigError(Exception):
    """The configuration file is unusable; the message names the file and the key."""


class Backend:
    """One service behind the aggregator."""

    __slots__ = ("host", "kind", "model", "name", "port", "required", "url")

    def __init__(self, name, kind, url, host, port, model=None, required=True):
        self.name = name
        self.kind = kind
        self.url = url
        self.host = host
        self.port = port
        self.model = model
        self.required = required


class Interruption:
    """The interruption watcher's settings (INTERRUPTION_SETTINGS), with the metadata service's address."""

    __slots__ = (*INTERRUPTION_SETTINGS, "imds_host", "imds_port")

    def __init__(self, **settings):
        unknown = set(settings) - set(INTERRUPTION_SETTINGS)
        if unknown:
            raise TypeError(f"unknown interruption setting(s): {', '.join(sorted(unknown))}")
        for key, (kind, default) in INTERRUPTION_SETTINGS.items():
            setattr(self, key, kind(settings.get(key, default)))
        self.imds_url = self.imds_url.rstrip("/")
        parts = urlsplit(self.imds_url)
        self.imds_host = parts.hostname
        self.imds_port = parts.port or 80


class Config:
    """A validated configuration."""

    def __init__(
        self,
        backends,
        listen_host="0.0.0.0",  # noqa: S104
        listen_port=8080,
        interval_s=1.0,
        timeout_s=1.0,
        interruption=None,
        **limits,
    ):
        self.backends = backends
        self.listen_host = listen_host
        self.listen_port = listen_port
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        # None: no interruption section, nothing watched.
        self.interruption = interruption
        unknown = set(limits) - set(LIMITS)
        if unknown:
            raise TypeError(f"unknown limit(s): {', '.join(sorted(unknown))}")
        for key, spec in LIMITS.items():
            setattr(self, key, spec[0](limits.get(key, spec[1])))


def _type_name(expected):
    return {
        str: "a string",
        int: "an integer",
        float: "a number",
        list: "a list",
        dict: "an object",
        bool: "true or false",
    }[expected]


def _check_type(value, expected, where):
    if expected is float:
        good = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif expected is int:
        good = isinstance(value, int) and not isinstance(value, bool)
    else:
        good = isinstance(value, expected)
    if not good:
        raise ConfigError(f"{where}: must be {_type_name(expected)}, got {json.dumps(value)}")


def _check_http_url(url, where):
    """``(host, port)`` of ``url``, which must be http://HOST[:PORT] and nothing more."""
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise ConfigError(f"{where}: {url!r} must be http://HOST:PORT")
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
        raise ConfigError(f"{where}: {url!r} must be http://HOST:PORT, without path, query or credentials")
    try:
        return parts.hostname, parts.port or 80
    except ValueError as exc:
        raise ConfigError(f"{where}: {url!r}: {exc}") from None


def _parse_interruption(raw, where):
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: must be an object, got {json.dumps(raw)}")
    for key in raw:
        if key not in INTERRUPTION_SETTINGS:
            raise ConfigError(f"{where}.{key}: unknown key (known: {', '.join(sorted(INTERRUPTION_SETTINGS))})")
    for key, (expected, _default) in INTERRUPTION_SETTINGS.items():
        if key in raw:
            _check_type(raw[key], expected, f"{where}.{key}")
    if "imds_url" in raw:
        _check_http_url(raw["imds_url"], f"{where}.imds_url")
    for key in ("poll_interval_s", "hook_timeout_s"):
        if key in raw and not 0 < raw[key] <= 3600:
            raise ConfigError(f"{where}.{key}: must be more than 0 and at most 3600 seconds, got {raw[key]}")
    for key in ("state_file", "hooks_dir"):
        if key in raw and (not os.path.isabs(raw[key]) or raw[key].endswith("/") or "\0" in raw[key]):
            raise ConfigError(f"{where}.{key}: {raw[key]!r} must be an absolute path")
    return Interruption(**raw)


def _parse_backend(raw, where):
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: must be an object, got {json.dumps(raw)}")
    for key in raw:
        if key not in _BACKEND_KEYS:
            raise ConfigError(f"{where}.{key}: unknown key (known: {', '.join(sorted(_BACKEND_KEYS))})")
    for key in ("name", "kind", "url"):
        if key not in raw:
            raise ConfigError(f"{where}.{key}: required")
    for key, expected in _BACKEND_KEYS.items():
        if key in raw:
            _check_type(raw[key], expected, f"{where}.{key}")
    name = raw["name"]
    if not NAME_PATTERN.match(name):
        raise ConfigError(f"{where}.name: {name!r} must match {NAME_PATTERN.pattern}")
    if name in RESERVED_NAMES:
        raise ConfigError(
            f"{where}.name: {name!r} is a top-level key of the answer; reserved: {', '.join(sorted(RESERVED_NAMES))}"
        )
    kind = raw["kind"]
    if kind not in KINDS:
        raise ConfigError(f"{where}.kind: {kind!r} is not one of {', '.join(KINDS)}")
    url = raw["url"]
    host, port = _check_http_url(url, f"{where}.url")
    model = raw.get("model")
    if kind == "vllm" and not model:
        raise ConfigError(f"{where}.model: required for kind 'vllm' (the served model id that /v1/models lists)")
    if kind != "vllm" and model is not None:
        raise ConfigError(f"{where}.model: only kind 'vllm' checks a model id")
    return Backend(name, kind, url.rstrip("/"), host, port, model, raw.get("required", True))


def parse_config(raw, source="config"):
    """Validate a decoded configuration; raise ConfigError naming ``source`` and the key."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: the top level must be a JSON object")
    for key in raw:
        if key not in _TOP_KEYS:
            raise ConfigError(f"{source}: {key}: unknown key (known: {', '.join(sorted(_TOP_KEYS))})")
    for key, expected in _TOP_KEYS.items():
        if key in raw:
            _check_type(raw[key], expected, f"{source}: {key}")
    if "backends" not in raw:
        raise ConfigError(f"{source}: backends: required")
    options = {key: raw[key] for key in ("listen_host", "listen_port", "interval_s", "timeout_s") if key in raw}
    if "interruption" in raw:
        options["interruption"] = _parse_interruption(raw["interruption"], f"{source}: interruption")
    port = options.get("listen_port", 8080)
    if not 0 <= port <= 65535:
        raise ConfigError(f"{source}: listen_port: {port} is not a TCP port (0-65535)")
    for key in ("interval_s", "timeout_s"):
        if key in options and not 0 < options[key] <= 3600:
            raise ConfigError(f"{source}: {key}: must be more than 0 and at most 3600 seconds, got {options[key]}")
    for key, (_kind, _default, lowest, highest) in LIMITS.items():
        if key in raw:
            if not lowest <= raw[key] <= highest:
                raise ConfigError(f"{source}: {key}: must be between {lowest} and {highest}, got {raw[key]}")
            options[key] = raw[key]
    backends = [_parse_backend(item, f"{source}: backends[{index}]") for index, item in enumerate(raw["backends"])]
    if not backends:
        raise ConfigError(f"{source}: backends: must list at least one backend")
    seen = set()
    for index, backend in enumerate(backends):
        if backend.name in seen:
            raise ConfigError(f"{source}: backends[{index}].name: {backend.name!r} is used twice")
        seen.add(backend.name)
    if not any(backend.required for backend in backends):
        raise ConfigError(f"{source}: backends: at least one backend must be required")
    return Config(backends, **options)


def load_config(path):
    """Read and validate the JSON configuration file at ``path``."""
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        raw = json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"{path}: not valid JSON: {exc}") from None
    return parse_config(raw, path)


def seconds_since_boot():
    """Seconds since the machine booted (suspend included), or None where unknown."""
    clock = getattr(time, "CLOCK_BOOTTIME", None)
    if clock is not None:
        try:
            return time.clock_gettime(clock)
        except OSError:
            pass
    try:
        with open("/proc/uptime", encoding="ascii") as handle:
            return float(handle.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _utc(epoch):
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(epoch)) + f".{int(epoch % 1 * 1000):03d}Z"


class ProbeFailure(Exception):
    """A probe's verdict other than ready: ``status`` says which."""

    def __init__(self, status, error):
        super().__init__(error)
        self.status = status
        self.error = error


async def http_get(host, port, path, read_body=True):
    """GET ``path`` with HTTP/1.1 and Connection: close; return (status code, body bytes)."""
    return await http_request(host, port, "GET", path, read_body=read_body)


async def http_request(host, port, method, path, headers=(), read_body=True):
    """One HTTP/1.1 request without a body, ``headers`` as (name, value) pairs; return (status code, body bytes)."""
    reader, writer = await asyncio.open_connection(host, port, limit=MAX_REQUEST_HEAD * 8)
    try:
        hostport = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        extra = "".join(f"{name}: {value}\r\n" for name, value in headers)
        if method not in ("GET", "HEAD"):
            extra += "Content-Length: 0\r\n"
        writer.write(
            f"{method} {path} HTTP/1.1\r\nHost: {hostport}\r\nUser-Agent: burst-healthcheck\r\n"
            f"Accept: application/json\r\n{extra}Connection: close\r\n\r\n".encode("ascii")
        )
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as exc:
            raise ProbeFailure("error", f"{method} {path}: connection closed before a full answer") from exc
        except asyncio.LimitOverrunError as exc:
            raise ProbeFailure("error", f"{method} {path}: answer headers too large") from exc
        lines = head.decode("latin-1").split("\r\n")
        status_line = lines[0].split(" ", 2)
        if len(status_line) < 2 or not status_line[0].startswith("HTTP/1.") or not status_line[1].isdigit():
            raise ProbeFailure("error", f"{method} {path}: not an HTTP answer: {lines[0][:80]!r}")
        code = int(status_line[1])
        if not read_body:
            return code, b""
        answer_headers = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if sep:
                answer_headers[name.strip().lower()] = value.strip()
        return code, await _read_body(reader, answer_headers, f"{method} {path}")
    finally:
        writer.close()


async def _read_body(reader, headers, request):
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body = bytearray()
        while True:
            size_line = await reader.readuntil(b"\r\n")
            size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                return bytes(body)
            if len(body) + size > MAX_PROBE_BODY:
                raise ProbeFailure("error", f"{request}: answer larger than {MAX_PROBE_BODY} bytes")
            body += await reader.readexactly(size)
            await reader.readexactly(2)
    if "content-length" in headers:
        length = int(headers["content-length"])
        if length > MAX_PROBE_BODY:
            raise ProbeFailure("error", f"{request}: answer larger than {MAX_PROBE_BODY} bytes")
        return await reader.readexactly(length)
    body = await reader.read(MAX_PROBE_BODY + 1)
    if len(body) > MAX_PROBE_BODY:
        raise ProbeFailure("error", f"{request}: answer larger than {MAX_PROBE_BODY} bytes")
    return body


def _served_models(body):
    try:
        data = json.loads(body)["data"]
        return [str(item["id"]) for item in data]
    except (ValueError, KeyError, TypeError) as exc:
        raise ProbeFailure("error", f"GET /v1/models: not a model list: {exc}") from None


async def _check_health(backend):
    code = (await http_get(backend.host, backend.port, "/health", read_body=False))[0]
    if code != 200:
        raise ProbeFailure("unhealthy", f"GET /health: HTTP {code}")


async def _check_models(backend):
    code, body = await http_get(backend.host, backend.port, "/v1/models")
    if code != 200:
        raise ProbeFailure("unhealthy", f"GET /v1/models: HTTP {code}")
    served = _served_models(body)
    if backend.model not in served:
        listed = ", ".join(served) or "nothing"
        raise ProbeFailure("model_missing", f"GET /v1/models lists {listed}, not {backend.model}")


async def probe(backend, timeout):
    """Probe one backend within ``timeout`` seconds; return (ok, status, error)."""
    checks = [asyncio.ensure_future(_check_health(backend))]
    if backend.kind == "vllm":
        checks.append(asyncio.ensure_future(_check_models(backend)))
    try:
        pending = (await asyncio.wait(checks, timeout=timeout, return_when=asyncio.FIRST_EXCEPTION))[1]
    finally:
        for check in checks:
            check.cancel()
        await asyncio.gather(*checks, return_exceptions=True)
    for check in checks:  # /health first: its verdict explains the others
        if check in pending:
            break
        error = check.exception()
        if isinstance(error, ProbeFailure):
            return False, error.status, error.error
        if isinstance(error, ConnectionRefusedError):
            return False, "down", "connection refused"
        if isinstance(error, OSError):
            return False, "down", f"{type(error).__name__}: {error}"
        if error is not None:
            return False, "error", f"{type(error).__name__}: {error}"
    if pending:
        return False, "timeout", f"no answer within {timeout:g} s"
    return True, "ready", None


class State:
    """Backend verdicts and the pre-serialized answers built from them.

    The prober thread calls :meth:`update`; the server reads ``responses``,
    a dict swapped whole, so a reader never sees half an update.
    """

    def __init__(self, config, log):
        self._lock = threading.Lock()
        self._log = log
        self.log = log
        self._backends = config.backends
        self._results = {
            backend.name: {
                "ok": False,
                "required": backend.required,
                "kind": backend.kind,
                "url": backend.url,
                "status": "unknown",
                "latency_ms": None,
                "last_check": None,
                "error": "not probed yet",
            }
            for backend in config.backends
        }
        for backend in config.backends:
            if backend.kind == "vllm":
                self._results[backend.name]["model"] = backend.model
        self.started_boot_s = seconds_since_boot()
        self.started_monotonic = time.monotonic()
        self.ready = False
        self.boot_to_ready_s = None
        self.start_to_ready_s = None
        self.ready_at = None
        # The spot interruption notice, once one came (for good); its deadline in seconds since the epoch.
        self.draining = None
        self._deadline_epoch = None
        # The rebalance recommendation's time, once one came.
        self.rebalance_recommended_at = None
        self.responses = {}
        self._render()

    def update(self, name, ok, status, error, latency_ms, epoch):
        with self._lock:
            result = self._results[name]
            if result["status"] != status:
                detail = f": {error}" if error else ""
                self._log(f"backend {name}: {result['status']} -> {status}{detail}")
            result.update(ok=ok, status=status, error=error, latency_ms=round(latency_ms, 2), last_check=_utc(epoch))
            ready = all(r["ok"] for r in self._results.values() if r["required"])
            if ready != self.ready:
                self.ready = ready
                if ready and self.boot_to_ready_s is None and self.ready_at is None:
                    self._first_ready(epoch)
                self._log("ready" if ready else "not ready")
            self._render()

    def drain(self, record, deadline_epoch):
        """Answer as draining from now on: ``record`` is the notice (reason, action, deadline, noticed_at)."""
        with self._lock:
            self.draining = dict(record)
            self._deadline_epoch = deadline_epoch
            self._render()

    def recommend_rebalance(self, recommended_at):
        """Add the time of a rebalance recommendation to the answers."""
        with self._lock:
            self.rebalance_recommended_at = recommended_at
            self._render()

    def refresh(self):
        """Render the answers again (``seconds_left`` moves on)."""
        with self._lock:
            self._render()

    def _first_ready(self, epoch):
        now_boot = seconds_since_boot()
        self.ready_at = _utc(epoch)
        self.start_to_ready_s = round(time.monotonic() - self.started_monotonic, 3)
        if now_boot is None:
            self._log(f"boot-to-ready: unknown (no boot clock); {self.start_to_ready_s:.3f} s after healthcheck start")
            return
        self.boot_to_ready_s = round(now_boot, 3)
        self._log(
            f"boot-to-ready: {self.boot_to_ready_s:.3f} s after boot "
            f"({self.start_to_ready_s:.3f} s after healthcheck start)"
        )

    def _render(self):
        now = time.time()
        draining = None
        if self.draining is not None:
            left = self._deadline_epoch
            draining = dict(self.draining, seconds_left=None if left is None else round(max(0.0, left - now), 1))
        # A draining instance is not ready, whatever its backends say: it is going away.
        ready = self.ready and draining is None
        health = {
            "ready": ready,
            "backends": self._results,
            "boot_to_ready_s": self.boot_to_ready_s,
            "start_to_ready_s": self.start_to_ready_s,
            "ready_at": self.ready_at,
            "draining": draining,
            "rebalance_recommended_at": self.rebalance_recommended_at,
            "generated_at": _utc(now),
            # The seed's format: {"ready", "<name>": {"ok", "status"}, "timestamp"}.
            "timestamp": round(now, 3),
        }
        for name, result in self._results.items():
            health[name] = {"ok": result["ok"], "status": result["status"]}
        body = json.dumps(health, separators=(",", ":"), sort_keys=False).encode() + b"\n"
        health_answers = _answers(200 if ready else 503, body)
        live_answers = _answers(200, b'{"live":true}\n')
        self.responses = {
            b"/health": health_answers,
            b"/ready": health_answers,
            b"/": health_answers,
            b"/live": live_answers,
        }


_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    431: "Request Header Fields Too Large",
    503: "Service Unavailable",
}


def _answers(code, body, extra=b""):
    """The four pre-serialized answers: (GET keep-alive, GET close, HEAD keep-alive, HEAD close)."""
    head = (
        f"HTTP/1.1 {code} {_REASONS[code]}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nCache-Control: no-store\r\n"
    ).encode("ascii") + extra
    keep = head + b"Connection: keep-alive\r\n\r\n"
    close = head + b"Connection: close\r\n\r\n"
    return (keep + body, close + body, keep, close)


_NOT_FOUND = _answers(404, b'{"error":"not found","paths":["/health","/ready","/live"]}\n')
_NOT_ALLOWED = _answers(405, b'{"error":"method not allowed"}\n', b"Allow: GET, HEAD\r\n")
_BAD_REQUEST = _answers(400, b'{"error":"bad request"}\n')[1]
_TOO_LARGE = _answers(431, b'{"error":"request head too large"}\n')[1]


def _content_length(lowered_headers):
    """The Content-Length value of lower-cased header lines, b"0" when absent."""
    start = lowered_headers.find(b"\r\ncontent-length:")
    if start < 0:
        return b"0"
    end = lowered_headers.find(b"\r\n", start + 2)
    return lowered_headers[start + 17 : end if end >= 0 else None].strip()


class _HttpProtocol(asyncio.BufferedProtocol):
    """HTTP/1.1 with keep-alive and bounded pipelining; every answer is a prepared bytes object.

    Reads go to the server's one shared buffer; only what is left over (a
    partial request head, or pipelined requests waiting their turn) is kept
    per connection. Reading pauses while answers are unsent above
    ``max_unsent_bytes`` or pipelined requests wait.
    """

    __slots__ = (
        "_backlog",
        "_pending",
        "_reading",
        "_scheduled",
        "_server",
        "_write_paused",
        "last_active",
        "request_started",
        "stalled_since",
        "transport",
    )

    def __init__(self, server):
        self._server = server
        self._pending = b""
        self._backlog = False
        self._reading = True
        self._scheduled = False
        self._write_paused = False
        self.transport = None
        # Loop time of the last answer (or of the connection): the idle clock.
        self.last_active = 0.0
        # Loop time the request under way began, None between requests: the header clock.
        self.request_started = None
        # Loop time answers were first seen unsent, None while all are sent: the send clock.
        self.stalled_since = None

    def connection_made(self, transport):
        server = self._server
        self.transport = transport
        now = server.clock()
        self.last_active = now
        # The first request's head is due header_timeout_s after the connection.
        self.request_started = now
        transport.set_write_buffer_limits(high=server.max_unsent_bytes, low=server.max_unsent_bytes // 4)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            # Bound what the kernel holds for a client too: answers a client
            # does not read, and requests it floods, stop there, not megabytes later.
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, server.max_unsent_bytes)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, READ_SIZE * 4)
            except OSError:
                pass
        server.admit(self)

    def connection_lost(self, exc):
        self._server.connections.pop(self, None)
        self._pending = b""

    def pause_writing(self):
        self._write_paused = True
        self._update_reading()

    def resume_writing(self):
        self._write_paused = False
        if self._backlog:
            self._schedule()
        self._update_reading()

    def get_buffer(self, sizehint):
        return self._server.read_buffer

    def buffer_updated(self, nbytes):
        data = self._server.read_buffer[:nbytes].tobytes()
        if self._pending:
            data = self._pending + data
        elif self.request_started is None:
            self.request_started = self._server.clock()
        self._pending = data
        self._process()

    def eof_received(self):
        return False  # close: a half-closed client gets no more answers

    def _update_reading(self):
        want = not (self._write_paused or self._backlog)
        if want != self._reading and not self.transport.is_closing():
            self._reading = want
            if want:
                self.transport.resume_reading()
            else:
                self.transport.pause_reading()

    def _schedule(self):
        if not self._scheduled:
            self._scheduled = True
            self._server.loop.call_soon(self._resume_backlog)

    def _resume_backlog(self):
        self._scheduled = False
        if not self.transport.is_closing() and not self._write_paused:
            self._process()

    def _process(self):
        """Answer up to max_pipeline requests from the pending input."""
        transport = self.transport
        buffer = self._pending
        limit = self._server.max_pipeline
        out = []
        pos = 0
        end = buffer.find(b"\r\n\r\n")
        while end >= 0:
            answer, close = self._answer(buffer[pos:end])
            out.append(answer)
            pos = end + 4
            if close:
                self._pending = b""
                self._backlog = False
                transport.write(b"".join(out))
                transport.close()
                return
            if len(out) >= limit:
                break
            end = buffer.find(b"\r\n\r\n", pos)
        rest = buffer[pos:] if pos else buffer
        self._pending = rest
        if out:
            server = self._server
            now = server.clock()
            self.last_active = now
            self.request_started = now if rest else None
            server.connections.move_to_end(self)
            # A full batch means more requests may be waiting: answer them in a
            # later turn of the loop, once this answer is on its way.
            self._backlog = len(out) >= limit and bool(rest)
            transport.write(out[0] if len(out) == 1 else b"".join(out))
            if self._backlog and not self._write_paused:
                self._schedule()
        else:
            self._backlog = False
        if not self._backlog and len(rest) > MAX_REQUEST_HEAD:
            self._pending = b""
            transport.write(_TOO_LARGE)
            transport.close()
            return
        self._update_reading()

    def _answer(self, head):
        line_end = head.find(b"\r\n")
        request_line = head if line_end < 0 else head[:line_end]
        parts = request_line.split(b" ")
        if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
            return _BAD_REQUEST, True
        method, target, version = parts
        close = version == b"HTTP/1.0"
        if line_end >= 0:
            lowered = head[line_end:].lower()
            if b"\r\nconnection:" in lowered:
                if b"close" in lowered:
                    close = True
                elif b"keep-alive" in lowered:
                    close = False
            if b"\r\ntransfer-encoding:" in lowered or _content_length(lowered) != b"0":
                # Health checks carry no body: answer, then close, so that a body
                # is never read as the next request.
                if method in (b"GET", b"HEAD"):
                    return _BAD_REQUEST, True
                return _NOT_ALLOWED[1], True
        if method == b"GET":
            index = 1 if close else 0
        elif method == b"HEAD":
            index = 3 if close else 2
        else:
            return _NOT_ALLOWED[1 if close else 0], close
        question = target.find(b"?")
        path = target if question < 0 else target[:question]
        answers = self._server.state.responses.get(path, _NOT_FOUND)
        return answers[index], close


def _nofile_limit():
    """The soft RLIMIT_NOFILE, None when unlimited."""
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return None if soft == resource.RLIM_INFINITY else soft


def raise_nofile_limit(wanted):
    """Raise the soft RLIMIT_NOFILE towards ``wanted`` (at most the hard limit); return the soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (OSError, ValueError):
            pass
    return _nofile_limit()


class _Server:
    """The connections of one listening socket, oldest activity first, and their clocks."""

    def __init__(self, state, config, loop, max_connections):
        self.state = state
        self.loop = loop
        self.clock = loop.time
        self.connections = collections.OrderedDict()
        self.max_connections = max_connections
        self.max_pipeline = config.max_pipeline
        self.max_unsent_bytes = config.max_unsent_bytes
        self.header_timeout_s = config.header_timeout_s
        self.idle_timeout_s = config.idle_timeout_s
        self.send_timeout_s = config.send_timeout_s
        self.read_buffer = memoryview(bytearray(READ_SIZE))
        self.stats = collections.Counter()

    def admit(self, protocol):
        """Take in a new connection; at the cap, first close the one idle longest."""
        connections = self.connections
        while len(connections) >= self.max_connections:
            victim = next((c for c in connections if c.request_started is None), None)
            if victim is None:
                victim = next(iter(connections))  # none idle: the oldest goes
                self.stats["evicted_busy"] += 1
            else:
                self.stats["evicted_idle"] += 1
            del connections[victim]
            _drop(victim.transport)
        connections[protocol] = None

    def sweep(self, now, protocols=None):
        """Close connections past a deadline (all, or those of ``protocols``); return how many were closed."""
        closed = 0
        header_deadline = now - self.header_timeout_s
        idle_deadline = now - self.idle_timeout_s
        for protocol in list(self.connections) if protocols is None else protocols:
            if protocol not in self.connections:
                continue
            transport = protocol.transport
            if transport.get_write_buffer_size():
                if protocol.stalled_since is None:
                    protocol.stalled_since = now
                elif now - protocol.stalled_since >= self.send_timeout_s:
                    # A client that does not read: drop its unsent answers now
                    # (close() would wait for them to drain, forever).
                    self.stats["send_timeout"] += 1
                    transport.abort()
                    closed += 1
                continue
            protocol.stalled_since = None
            if transport.is_closing():
                continue
            if protocol.request_started is not None:
                if protocol.request_started <= header_deadline:
                    self.stats["header_timeout"] += 1
                    transport.abort()
                    closed += 1
            elif protocol.last_active <= idle_deadline:
                self.stats["idle_timeout"] += 1
                transport.close()
                closed += 1
        return closed

    async def sweep_forever(self):
        step = min(1.0, max(0.01, min(self.header_timeout_s, self.idle_timeout_s, self.send_timeout_s) / 4))
        while True:
            await asyncio.sleep(step)
            # A few hundred connections per turn of the loop: thousands of
            # connections never hold the requests up for one long sweep.
            protocols = list(self.connections)
            for start in range(0, len(protocols), SWEEP_SLICE):
                if start:
                    await asyncio.sleep(0)
                self.sweep(self.clock(), protocols[start : start + SWEEP_SLICE])


def _drop(transport):
    """Close a connection now: gracefully when nothing is left to send, else abort."""
    if transport.get_write_buffer_size():
        transport.abort()
    else:
        transport.close()


def on_ec2(sysfs=None):
    """Whether the machine's DMI data (read locally, nothing sent) says it is an EC2 instance.

    Nitro instances name "Amazon EC2" as system, board and firmware vendor; Xen
    ones have a firmware version ending in ".amazon" and a hypervisor UUID that
    starts with "ec2".
    """
    root = SYSFS if sysfs is None else sysfs
    dmi = os.path.join(root, "class", "dmi", "id")
    for name in ("sys_vendor", "board_vendor", "bios_vendor", "bios_version"):
        if "amazon" in _read_text(os.path.join(dmi, name)).lower():
            return True
    for path in (os.path.join(root, "hypervisor", "uuid"), os.path.join(dmi, "product_uuid")):
        if _read_text(path).lower().startswith("ec2"):
            return True
    return False


def _read_text(path):
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return handle.read(256).strip()
    except OSError:
        return ""


def _epoch(stamp):
    """Seconds since the epoch of an IMDS time (``2026-01-02T03:04:05Z``, fractions allowed), None if unreadable."""
    if not isinstance(stamp, str):
        return None
    text = stamp.strip()
    fraction = 0.0
    if text.endswith("Z"):
        text = text[:-1]
    if "." in text:
        text, _dot, digits = text.partition(".")
        if not digits.isdigit():
            return None
        fraction = float(f"0.{digits}")
    try:
        return calendar.timegm(time.strptime(text, "%Y-%m-%dT%H:%M:%S")) + fraction
    except ValueError:
        return None


def write_state_file(path, record):
    """Write ``record`` as JSON to ``path`` whole: a reader sees the old file or the new one, never a part."""
    directory = os.path.dirname(path)
    if directory:
        os.makedirs(directory, mode=0o755, exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            os.fchmod(handle.fileno(), 0o644)
            handle.write(json.dumps(record, sort_keys=True) + "\n")
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


class ImdsError(Exception):
    """The instance metadata service did not answer as it should."""


class HookRunner:
    """Runs the interruption hooks once, in name order, each in a process group of its own, in a thread."""

    def __init__(self, settings, record, deadline_epoch, log):
        self._settings = settings
        self._record = record
        self._deadline_epoch = deadline_epoch
        self._log = log
        self._lock = threading.Lock()
        self._process = None
        self._stopped = False
        self.thread = threading.Thread(target=self._run, name="healthcheck-interruption-hooks", daemon=True)

    def start(self):
        self.thread.start()
        return self

    def stop(self):
        """Kill the hook under way, if any, and run no more."""
        with self._lock:
            self._stopped = True
            if self._process is not None:
                _kill_group(self._process)

    def _hooks(self):
        directory = self._settings.hooks_dir
        try:
            names = sorted(os.listdir(directory))
        except FileNotFoundError:
            self._log(f"interruption hooks: {directory} does not exist, none run")
            return []
        except OSError as exc:
            self._log(f"interruption hooks: cannot list {directory}: {exc.strerror or exc}")
            return []
        hooks = []
        for name in names:
            path = os.path.join(directory, name)
            if name.startswith(".") or not os.path.isfile(path):
                continue
            if not os.access(path, os.X_OK):
                self._log(f"interruption hook {name}: not executable, skipped")
                continue
            hooks.append((name, path))
        return hooks

    def _run(self):
        hooks = self._hooks()
        environment = {key: value for key, value in os.environ.items() if key != "NOTIFY_SOCKET"}
        environment.update(
            BURST_INTERRUPTION_REASON=self._record["reason"],
            BURST_INTERRUPTION_ACTION=self._record["action"] or "",
            BURST_INTERRUPTION_DEADLINE=self._record["deadline"] or "",
            BURST_INTERRUPTION_STATE_FILE=self._settings.state_file,
        )
        ran = 0
        for name, path in hooks:
            bound = self._settings.hook_timeout_s
            if self._deadline_epoch is not None:
                bound = min(bound, self._deadline_epoch - time.time() - HOOK_DEADLINE_MARGIN_S)
            if bound <= 0:
                self._log(
                    f"interruption hook {name}: skipped, less than {HOOK_DEADLINE_MARGIN_S:g} s before the deadline"
                )
                continue
            with self._lock:
                if self._stopped:
                    return
                self._log(f"interruption hook {name}: started, for at most {bound:.1f} s")
                try:
                    process = subprocess.Popen(
                        [path],
                        cwd="/",
                        env=environment,
                        stdin=subprocess.DEVNULL,
                        start_new_session=True,
                    )
                except OSError as exc:
                    self._log(f"interruption hook {name}: cannot run: {exc.strerror or exc}")
                    continue
                self._process = process
                ran += 1
            try:
                status = process.wait(timeout=bound)
            except subprocess.TimeoutExpired:
                _kill_group(process)
                process.wait()
                self._log(f"interruption hook {name}: killed after {bound:.1f} s, its bound")
                continue
            finally:
                with self._lock:
                    self._process = None
            if status < 0:
                self._log(f"interruption hook {name}: killed by signal {-status}")
            else:
                self._log(f"interruption hook {name}: exited with status {status}")
        self._log(f"interruption hooks: done, {ran} of {len(hooks)} run")


def _kill_group(process):
    """SIGKILL ``process`` and everything it started in its process group."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


class InterruptionWatcher:
    """Polls the instance metadata service for a spot interruption notice and a rebalance recommendation.

    Runs as a task of the probes' event loop: it never waits on anything but
    the metadata service (bounded by IMDS_TIMEOUT_S), and hands the hooks to a
    thread of their own.
    """

    def __init__(self, settings, state, log, sysfs=None):
        self._settings = settings
        self._state = state
        self._log = log
        self._sysfs = sysfs
        self._token = None
        self._token_expires = 0.0
        self.hooks = None

    def stop(self):
        if self.hooks is not None:
            self.hooks.stop()

    async def run(self):
        settings = self._settings
        if not settings.enabled:
            self._log("interruption watcher: off")
            return
        if settings.imds_host in IMDS_LINK_LOCAL and not on_ec2(self._sysfs):
            self._log(
                "interruption watcher: idle, this machine is not an EC2 instance (DMI data); "
                f"nothing is sent to {settings.imds_url}"
            )
            return
        self._log(
            f"interruption watcher: polling {settings.imds_url} every {settings.poll_interval_s:g} s; "
            f"state file {settings.state_file}; hooks in {settings.hooks_dir}"
        )
        loop = asyncio.get_running_loop()
        failures = 0
        while True:
            started = loop.time()
            if self._state.draining is None:
                try:
                    await asyncio.wait_for(self._poll(), IMDS_TIMEOUT_S * 4)
                except (ImdsError, asyncio.TimeoutError) as exc:
                    if not failures:
                        reason = exc if isinstance(exc, ImdsError) else f"no answer within {IMDS_TIMEOUT_S * 4:g} s"
                        self._log(
                            f"interruption watcher: the metadata service at {settings.imds_url} does not answer "
                            f"({reason}); trying again less often, logged again once it answers"
                        )
                    failures += 1
                    self._token = None
                else:
                    if failures:
                        self._log(f"interruption watcher: the metadata service answers again after {failures} tries")
                    failures = 0
            else:
                self._state.refresh()  # seconds_left counts down
            delay = settings.poll_interval_s
            if failures:
                ceiling = max(settings.poll_interval_s, min(IMDS_BACKOFF_MAX_S, settings.poll_interval_s * 16))
                delay = min(ceiling, settings.poll_interval_s * 2 ** min(failures, 16))
            await asyncio.sleep(max(0.0, started + delay - loop.time()))

    async def _request(self, method, path, headers=()):
        settings = self._settings
        try:
            return await asyncio.wait_for(
                http_request(settings.imds_host, settings.imds_port, method, path, headers), IMDS_TIMEOUT_S
            )
        except ProbeFailure as exc:
            raise ImdsError(exc.error) from None
        except asyncio.TimeoutError:
            raise ImdsError(f"{method} {path}: no answer within {IMDS_TIMEOUT_S:g} s") from None
        except ConnectionRefusedError:
            raise ImdsError(f"{method} {path}: connection refused") from None
        except (OSError, ValueError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
            raise ImdsError(f"{method} {path}: {type(exc).__name__}: {exc}") from None

    async def _get(self, path):
        """GET ``path`` with a token (a new one if the old one is refused); return (code, body)."""
        code, body = await self._request("GET", path, (("X-aws-ec2-metadata-token", await self._session_token()),))
        if code == 401:  # the token expired or was revoked: once more with a new one
            self._token = None
            code, body = await self._request("GET", path, (("X-aws-ec2-metadata-token", await self._session_token()),))
            if code == 401:
                raise ImdsError(f"GET {path}: HTTP 401 with a new token")
        return code, body

    async def _session_token(self):
        now = time.monotonic()
        if self._token is None or now >= self._token_expires:
            code, body = await self._request(
                "PUT", IMDS_TOKEN_PATH, (("X-aws-ec2-metadata-token-ttl-seconds", str(IMDS_TOKEN_TTL_S)),)
            )
            token = body.decode("ascii", "replace").strip()
            if code != 200 or not token:
                raise ImdsError(f"PUT {IMDS_TOKEN_PATH}: HTTP {code}")
            self._token = token
            self._token_expires = now + IMDS_TOKEN_TTL_S - IMDS_TOKEN_MARGIN_S
        return self._token

    async def _poll(self):
        code, body = await self._get(IMDS_SPOT_ACTION_PATH)
        if code == 200:
            self._notice(_json_or_none(body))
            return
        if code != 404:
            raise ImdsError(f"GET {IMDS_SPOT_ACTION_PATH}: HTTP {code}")
        if self._state.rebalance_recommended_at is not None:
            return
        code, body = await self._get(IMDS_REBALANCE_PATH)
        if code == 200:
            self._rebalance(_json_or_none(body))
        elif code != 404:
            raise ImdsError(f"GET {IMDS_REBALANCE_PATH}: HTTP {code}")

    # Only this task records notices: the state file is written before the answers change, so that
    # whoever sees the new answer finds the file.

    def _notice(self, notice):
        notice = notice if isinstance(notice, dict) else {}
        action = str(notice.get("action") or "unknown")
        deadline = notice.get("time") if isinstance(notice.get("time"), str) else None
        deadline_epoch = _epoch(deadline)
        now = time.time()
        record = {"reason": "spot-interruption", "action": action, "deadline": deadline, "noticed_at": _utc(now)}
        left = "unknown" if deadline_epoch is None else f"{deadline_epoch - now:.0f} s"
        self._log(
            f"interruption: spot interruption notice, {action} at {deadline or 'an unknown time'} ({left} left); "
            "draining: /health answers 503 from now on"
        )
        self._write(record)
        self._state.drain(record, deadline_epoch)
        self.hooks = HookRunner(self._settings, record, deadline_epoch, self._log).start()

    def _rebalance(self, recommendation):
        recommendation = recommendation if isinstance(recommendation, dict) else {}
        noticed = _utc(time.time())
        when = recommendation.get("noticeTime") if isinstance(recommendation.get("noticeTime"), str) else noticed
        self._log(
            f"interruption: rebalance recommended at {when}; advice only: /health keeps its answer, hooks do not run"
        )
        self._write(
            {
                "reason": "rebalance-recommendation",
                "action": None,
                "deadline": None,
                "noticed_at": noticed,
                "recommended_at": when,
            }
        )
        self._state.recommend_rebalance(when)

    def _write(self, record):
        path = self._settings.state_file
        try:
            write_state_file(path, record)
        except OSError as exc:
            self._log(f"interruption: cannot write {path}: {exc.strerror or exc}")


def _json_or_none(body):
    try:
        return json.loads(body)
    except ValueError:
        return None


class Prober:
    """A background thread with its own event loop: one probe loop per backend."""

    def __init__(self, config, state, log=None):
        self._config = config
        self._state = state
        self._watcher = None
        if config.interruption is not None:
            self._watcher = InterruptionWatcher(config.interruption, state, log or state.log)
        self._loop = None
        self._stop = None
        self._thread = threading.Thread(target=self._run, name="healthcheck-prober", daemon=True)
        self._started = threading.Event()

    def start(self):
        self._thread.start()
        self._started.wait()

    def stop(self):
        if self._loop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(timeout=self._config.timeout_s + 5)
        if self._watcher is not None:
            self._watcher.stop()

    def _run(self):
        asyncio.run(self._main())

    async def _main(self):
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        tasks = [asyncio.ensure_future(self._watch(backend)) for backend in self._config.backends]
        if self._watcher is not None:
            tasks.append(asyncio.ensure_future(self._watcher.run()))
        self._started.set()
        await self._stop.wait()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _watch(self, backend):
        loop = asyncio.get_running_loop()
        interval = self._config.interval_s
        timeout = self._config.timeout_s
        while True:
            started = loop.time()
            ok, status, error = await probe(backend, timeout)
            latency_ms = (loop.time() - started) * 1000.0
            self._state.update(backend.name, ok, status, error, latency_ms, time.time())
            await asyncio.sleep(max(0.0, started + interval - loop.time()))


def _notify_systemd(message):
    """Send ``message`` to systemd's notify socket when the unit is Type=notify."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.connect(address)
            sock.sendall(message.encode())
    except OSError as exc:
        print(f"healthcheck: cannot notify systemd: {exc}", file=sys.stderr, flush=True)


def _stdout_log(message):
    print(f"healthcheck: {message}", flush=True)


class Aggregator:
    """The whole service: prober thread, HTTP server, shutdown.

    ``run()`` serves in the calling (main) thread until SIGTERM or SIGINT;
    ``start()``/``stop()`` serve from a background thread instead.
    """

    def __init__(self, config, host=None, port=None, log=_stdout_log, on_listening=None):
        self.config = config
        self.on_listening = on_listening
        self.host = config.listen_host if host is None else host
        self.port = config.listen_port if port is None else port
        self.log = log
        self.state = State(config, log)
        self._loop = None
        self._stopping = None
        self._thread = None
        self._listening = threading.Event()
        self._error = None
        self.max_connections = config.max_connections
        self.server_state = None

    async def serve(self, install_signals=False):
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        if install_signals:
            for signum in (signal.SIGTERM, signal.SIGINT):
                self._loop.add_signal_handler(signum, self._on_signal, signum)
        max_connections = self.config.max_connections
        nofile = _nofile_limit()
        if nofile is not None and max_connections + FD_RESERVE > nofile:
            max_connections = max(1, nofile - FD_RESERVE)
        self.max_connections = max_connections
        server_state = self.server_state = _Server(self.state, self.config, self._loop, max_connections)
        try:
            server = await self._loop.create_server(
                lambda: _HttpProtocol(server_state), self.host, self.port, backlog=LISTEN_BACKLOG, reuse_address=True
            )
        except OSError as exc:
            self._error = f"cannot listen on {self.host}:{self.port}: {exc.strerror or exc}"
            self._listening.set()
            raise
        self.port = server.sockets[0].getsockname()[1]
        names = ", ".join(
            f"{b.name} ({b.kind}, {b.url}{'' if b.required else ', optional'})" for b in self.config.backends
        )
        self.log(f"listening on {self.host}:{self.port}; backends: {names}; at most {max_connections} connections")
        if max_connections < self.config.max_connections:
            self.log(
                f"max_connections lowered from {self.config.max_connections} to {max_connections}: "
                f"RLIMIT_NOFILE is {nofile}, and {FD_RESERVE} descriptors are kept for the rest "
                f"(LimitNOFILE= in the unit should be at least max_connections + {FD_RESERVE})"
            )
        if self.on_listening is not None:
            self.on_listening(self.port)
        prober = Prober(self.config, self.state, self.log)
        prober.start()
        sweeper = asyncio.ensure_future(server_state.sweep_forever())
        self._listening.set()
        _notify_systemd("READY=1")
        try:
            await self._stopping.wait()
        finally:
            _notify_systemd("STOPPING=1")
            sweeper.cancel()
            server.close()
            for protocol in list(server_state.connections):
                protocol.transport.abort()
            try:
                await asyncio.wait_for(server.wait_closed(), 2)
            except asyncio.TimeoutError:
                pass
            prober.stop()
            self.log("stopped")

    def _on_signal(self, signum):
        self.log(f"{signal.Signals(signum).name} received, stopping")
        self._stopping.set()

    def run(self):
        """Serve until SIGTERM/SIGINT; return the exit status."""
        try:
            asyncio.run(self.serve(install_signals=True))
        except OSError:
            print(f"healthcheck: error: {self._error}", file=sys.stderr, flush=True)
            return 1
        return 0

    def start(self, timeout=10):
        """Serve from a background thread; return once listening (``self.port`` is then bound)."""
        self._thread = threading.Thread(target=self._thread_main, name="healthcheck-server", daemon=True)
        self._thread.start()
        if not self._listening.wait(timeout) or self._error:
            raise RuntimeError(self._error or "the server did not start")
        return self

    def _thread_main(self):
        try:
            asyncio.run(self.serve())
        except OSError:
            pass  # reported by start()

    def stop(self):
        if self._loop is not None and self._thread is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stopping.set)
            self._thread.join(timeout=self.config.timeout_s + 10)


def _write_port_file(path, port):
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="ascii") as handle:
        handle.write(f"{port}\n")
    os.replace(tmp, path)


def main(argv=None):
    parser = argparse.ArgumentParser(description="Burst healthcheck aggregator (GET /health, /ready, /live).")
    parser.add_argument(
        "--config",
        default=os.environ.get("BURST_HEALTHCHECK_CONFIG", DEFAULT_CONFIG),
        help=f"JSON configuration file (default: $BURST_HEALTHCHECK_CONFIG or {DEFAULT_CONFIG})",
    )
    parser.add_argument("--host", help="address to bind (overrides listen_host)")
    parser.add_argument("--port", type=int, help="TCP port to bind, 0 for any free one (overrides listen_port)")
    parser.add_argument("--port-file", help="write the bound port to this file once listening")
    parser.add_argument("--check-config", action="store_true", help="validate the configuration and exit")
    parser.add_argument("config_path", nargs="?", help="configuration file to validate (with --check-config)")
    args = parser.parse_args(argv)
    path = args.config_path or args.config
    try:
        config = load_config(path)
    except ConfigError as exc:
        print(f"healthcheck: error: {exc}", file=sys.stderr, flush=True)
        return 2
    if args.check_config:
        print(f"healthcheck: {path}: valid, {len(config.backends)} backend(s)", flush=True)
        return 0
    if args.port is not None and not 0 <= args.port <= 65535:
        print(f"healthcheck: error: --port: {args.port} is not a TCP port", file=sys.stderr, flush=True)
        return 2
    raise_nofile_limit(config.max_connections + FD_RESERVE)
    aggregator = Aggregator(
        config,
        host=args.host,
        port=args.port,
        on_listening=(lambda port: _write_port_file(args.port_file, port)) if args.port_file else None,
    )
    return aggregator.run()


if __name__ == "__main__":
    sys.exit(main())
