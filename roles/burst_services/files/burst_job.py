"""Run a burst job so that its log and its exit status outlive the instance.

    burst_job.py [--job-id ID] [--log-to DEST] [--time-limit MINUTES] [--grace-seconds 30]
                 [--status-dir /var/lib/burst/jobs] [--flush-seconds 5]
                 [--interruption-file /run/burst/interruption.json] -- COMMAND [ARG...]

Runs COMMAND in its own process group. Its standard output and error,
merged, go to this program's standard output as they come, and to DEST
while it runs, at least every --flush-seconds:

- ``/abs/path`` or ``file:/abs/path``: appended, fsync'ed at each flush;
  missing parent directories are created;
- ``s3://bucket/key``: the whole log so far, uploaded again (PutObject) at
  each flush and at the end (an S3 object cannot be appended to); a large
  log waits one second per 4 MiB between two uploads (40 MiB: 10 s);
- ``cloudwatch:GROUP`` or ``cloudwatch:GROUP:STREAM``: one event per line
  (PutLogEvents). The group must exist; the stream (default
  ``{job_id}/{instance_id}``) is created.

``{job_id}`` and ``{instance_id}`` in DEST are replaced. A DEST that cannot
be parsed ends the program with status 2 before COMMAND runs (and is recorded
as a failed job). A DEST that refuses writes does not stop the job: the error
is recorded (``BurstJobLogError``) and the log still goes to standard output.

The status is recorded as tags on this instance (EC2 CreateTags with the
instance role's keys) and in ``STATUS_DIR/JOB_ID.json`` (JOB_ID: --job-id,
by default the instance's id), at the start and at the end:
``BurstJobStatus`` (running, succeeded, failed, timed_out),
``BurstJobExitCode``, ``BurstJobStartedAt``, ``BurstJobEndedAt`` (ISO 8601,
UTC), ``BurstJobLog`` (DEST, resolved), ``BurstJobLogError`` (only when
writing the log failed) and ``BurstDraining`` (the deadline of a spot
interruption notice). Tagging errors are printed, never fatal.

After --time-limit minutes (fractions allowed: ``0.5`` is 30 seconds) the
process group gets SIGTERM, and SIGKILL after --grace-seconds (at once when
COMMAND itself has exited); the job is then ``timed_out`` with exit code 124.
When --interruption-file appears with ``"reason": "spot-interruption"`` (the
healthcheck writes it on a spot interruption notice), the log is flushed at
once and ``BurstDraining`` is set to the notice's deadline; the job is not
stopped. SIGTERM or SIGINT to this program is passed on to the process group.

The exit status is COMMAND's (128 + N when killed by signal N), 124 when it
ran out of time, 126 or 127 when it could not be started, 2 for bad options.

Python 3.9+ standard library only, with ``burst_aws.py`` beside it.
"""

from __future__ import annotations

import argparse
import datetime
import errno
import json
import math
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import burst_aws

EXIT_USAGE = 2
EXIT_TIMED_OUT = 124
TAG_VALUE_MAX = 256
# A line longer than this is cut into pieces (CloudWatch takes 256 KiB per event, 26 bytes of it overhead).
MAX_LINE_BYTES = 256 * 1024 - 26
# PutLogEvents limits: events and bytes per batch (26 bytes of overhead per event), time span of a batch.
CW_BATCH_EVENTS = 10000
CW_BATCH_BYTES = 1024 * 1024
CW_EVENT_OVERHEAD = 26
CW_BATCH_SPAN_MS = 24 * 3600 * 1000 - 1000
# Events kept for CloudWatch while it does not answer; the oldest are dropped beyond this.
CW_QUEUE_MAX_BYTES = 64 * 1024 * 1024
# S3: one second between two uploads for each S3_BYTES_PER_SECOND of log (a large log is not sent every 5 s).
S3_BYTES_PER_SECOND = 4 * 1024 * 1024
# Seconds the output of processes that COMMAND left behind is still read after COMMAND exited.
DRAIN_AFTER_EXIT_S = 5.0
# Seconds between two looks at the interruption file and the time limit.
POLL_S = 0.25
ERROR_MAX = 1024

_JOB_ID_BAD = re.compile(r"[/\x00-\x1f\x7f]")
_S3_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_CW_GROUP = re.compile(r"^[.\-_/#A-Za-z0-9]{1,512}$")
_CW_STREAM = re.compile(r"^[^:*]{1,512}$")
DEST_FORMS = "/abs/path, file:/abs/path, s3://bucket/key, cloudwatch:GROUP or cloudwatch:GROUP:STREAM"

_stdout_lock = threading.Lock()


def emit(data):
    """Write bytes to standard output at once; a closed standard output is ignored."""
    with _stdout_lock:
        try:
            sys.stdout.buffer.write(data)
            sys.stdout.buffer.flush()
        except (AttributeError, OSError, ValueError):
            pass


def say(message):
    emit(f"burst_job: {message}\n".encode(errors="replace"))


def iso(moment=None):
    """ISO 8601 in UTC, to the second: 2024-05-01T12:00:00Z."""
    moment = moment or datetime.datetime.now(datetime.timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def now_ms():
    return int(time.time() * 1000)


def _short(text, limit=ERROR_MAX):
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ---------------------------------------------------------------------------
# The log as it comes, in lines


class LogBuffer:
    """Lines of output, each with the time it was read, waiting for the sinks."""

    def __init__(self):
        self._lock = threading.Lock()
        self._lines = []
        self._partial = b""
        self._closed = False
        self._last_ms = 0

    def _stamp(self):
        self._last_ms = max(self._last_ms, now_ms())
        return self._last_ms

    def add(self, data):
        with self._lock:
            if self._closed:
                return
            data = self._partial + data
            stamp = self._stamp()
            start = 0
            while True:
                end = data.find(b"\n", start)
                if end < 0:
                    break
                self._append(stamp, data[start : end + 1])
                start = end + 1
            self._partial = data[start:]
            while len(self._partial) >= MAX_LINE_BYTES:
                self._lines.append((stamp, self._partial[:MAX_LINE_BYTES]))
                self._partial = self._partial[MAX_LINE_BYTES:]

    def _append(self, stamp, line):
        for offset in range(0, len(line), MAX_LINE_BYTES):
            self._lines.append((stamp, line[offset : offset + MAX_LINE_BYTES]))

    def note(self, message):
        """A line of this program's own (time limit, interruption), in the log with the job's output."""
        with self._lock:
            if not self._closed:
                self._append(self._stamp(), f"[burst_job] {iso()} {message}\n".encode(errors="replace"))

    def close(self):
        """No more output: the last partial line becomes a line; later output is ignored."""
        with self._lock:
            if self._partial:
                self._append(self._stamp(), self._partial)
                self._partial = b""
            self._closed = True

    def take(self):
        with self._lock:
            lines, self._lines = self._lines, []
            return lines


# ---------------------------------------------------------------------------
# Destinations


class DestError(ValueError):
    """The destination cannot be understood."""


class Sink:
    """A log destination. ``error`` holds the last failure; a refused destination is ``disabled``."""

    def __init__(self, resolved):
        self.resolved = resolved
        self.error = None
        self.disabled = False

    def fail(self, message, fatal):
        self.error = _short(message)
        if fatal and not self.disabled:
            self.disabled = True
            say(f"log destination {self.resolved} refused the log, which goes on to standard output only: {message}")
        elif not fatal:
            say(f"log destination {self.resolved}: {message} (tried again at the next flush)")

    def guard(self, action, *args):
        """Run one step of the sink; record instead of raising."""
        if self.disabled:
            return
        try:
            action(*args)
        except burst_aws.AwsCallError as exc:
            self.fail(str(exc), fatal=not exc.retryable)
        except OSError as exc:
            where = f" ({exc.filename})" if exc.filename and exc.filename != self.resolved else ""
            self.fail(f"cannot write {self.resolved}: {exc.strerror or exc}{where}", fatal=True)
        except Exception as exc:  # noqa: BLE001 - a broken sink must not stop the job or its status
            self.fail(f"{type(exc).__name__}: {exc}", fatal=True)

    def open(self):
        """Prepare the destination (may fail)."""

    def write(self, lines):
        """Take lines (time in ms, bytes); they may be sent later, by ``flush``."""

    def flush(self, force=False):
        """Send what was written; ``force``: now, whatever the pacing."""


class FileSink(Sink):
    def __init__(self, path):
        super().__init__(path)
        self.path = path
        self.file = None

    def open(self):
        os.makedirs(os.path.dirname(self.path) or "/", exist_ok=True)
        self.file = open(self.path, "ab")

    def write(self, lines):
        self.file.write(b"".join(line for _stamp, line in lines))

    def flush(self, force=False):
        self.file.flush()
        os.fsync(self.file.fileno())


class S3Sink(Sink):
    def __init__(self, resolved, bucket, key, client, period):
        super().__init__(resolved)
        self.bucket = bucket
        self.key = key
        self.client = client
        self.period = period
        self.spool = tempfile.TemporaryFile()
        self.size = 0
        self.dirty = True
        self.next_upload = 0.0

    def open(self):
        self._upload()

    def _upload(self):
        if self.client is None:
            raise burst_aws.AwsCallError("s3", "PutObject", 0, "NoRegion", "the region is unknown")
        self.spool.seek(0)
        body = self.spool.read()
        self.client.put_object(self.bucket, self.key, body)
        self.dirty = False
        self.next_upload = time.monotonic() + max(self.period, len(body) / S3_BYTES_PER_SECOND)

    def write(self, lines):
        data = b"".join(line for _stamp, line in lines)
        if data:
            self.spool.seek(0, os.SEEK_END)
            self.spool.write(data)
            self.size += len(data)
            self.dirty = True

    def flush(self, force=False):
        if self.dirty and (force or time.monotonic() >= self.next_upload):
            self._upload()


class CloudWatchSink(Sink):
    def __init__(self, resolved, group, stream, client):
        super().__init__(resolved)
        self.group = group
        self.stream = stream
        self.client = client
        self.ready = False
        self.queue = []
        self.queued_bytes = 0
        self.dropped = 0

    def open(self):
        if self.client is None:
            raise burst_aws.AwsCallError("logs", "CreateLogStream", 0, "NoRegion", "the region is unknown")
        try:
            self.client.create_log_stream(self.group, self.stream)
        except burst_aws.AwsCallError as exc:
            if exc.code != "ResourceNotFoundException":
                raise
            message = f"log group {self.group} does not exist (it is not created here): {exc.message}"
            raise burst_aws.AwsCallError(exc.service, exc.action, exc.status, exc.code, message) from None
        self.ready = True

    def write(self, lines):
        for stamp, line in lines:
            message = line.rstrip(b"\n").rstrip(b"\r").decode("utf-8", errors="replace") or " "
            size = len(message.encode()) + CW_EVENT_OVERHEAD
            self.queue.append((stamp, message, size))
            self.queued_bytes += size
        while self.queued_bytes > CW_QUEUE_MAX_BYTES and self.queue:
            self.queued_bytes -= self.queue.pop(0)[2]
            self.dropped += 1

    def flush(self, force=False):
        if not self.ready:
            self.open()
        if self.dropped:
            dropped, self.dropped = self.dropped, 0
            self.error = _short(f"{dropped} log events dropped while CloudWatch Logs did not take them")
        while self.queue:
            first = self.queue[0][0]
            count = size = 0
            for stamp, _message, event_size in self.queue:
                if count == CW_BATCH_EVENTS or size + event_size > CW_BATCH_BYTES or stamp - first > CW_BATCH_SPAN_MS:
                    break
                count += 1
                size += event_size
            batch = self.queue[:count]
            self.client.put_log_events(self.group, self.stream, [(stamp, message) for stamp, message, _size in batch])
            del self.queue[:count]
            self.queued_bytes -= size


def resolve_destination(text, job_id, instance_id):
    """(kind, resolved text, parts) of a --log-to value; DestError when it cannot be used."""
    dest = text.replace("{job_id}", job_id).replace("{instance_id}", instance_id)
    if "\x00" in dest or "\n" in dest:
        raise DestError(f"--log-to {text!r}: control characters are not allowed")
    if dest.startswith("s3://"):
        bucket, _sep, key = dest[len("s3://") :].partition("/")
        if not _S3_BUCKET.match(bucket) or ".." in bucket:
            raise DestError(f"--log-to {text!r}: {bucket!r} is not a valid S3 bucket name")
        if not key or len(key.encode()) > 1024:
            raise DestError(f"--log-to {text!r}: give the object's key after the bucket (s3://bucket/key)")
        return "s3", dest, (bucket, key)
    if dest.startswith("cloudwatch:"):
        group, _sep, stream = dest[len("cloudwatch:") :].partition(":")
        stream = stream or f"{job_id}/{instance_id}"
        if not _CW_GROUP.match(group):
            raise DestError(f"--log-to {text!r}: {group!r} is not a valid log group name ({_CW_GROUP.pattern})")
        if not _CW_STREAM.match(stream):
            raise DestError(f"--log-to {text!r}: {stream!r} is not a valid log stream name (no ':' or '*')")
        return "cloudwatch", f"cloudwatch:{group}:{stream}", (group, stream)
    path = dest
    if dest.startswith("file://"):
        path = dest[len("file://") :]
    elif dest.startswith("file:"):
        path = dest[len("file:") :]
    if not path.startswith("/"):
        raise DestError(f"--log-to {text!r}: give {DEST_FORMS}")
    if path.endswith("/"):
        raise DestError(f"--log-to {text!r}: {path!r} names a directory; give a file")
    path = os.path.normpath(path)
    return "file", path, (path,)


def make_sink(kind, resolved, parts, client, period):
    if kind == "s3":
        return S3Sink(resolved, parts[0], parts[1], client, period)
    if kind == "cloudwatch":
        return CloudWatchSink(resolved, parts[0], parts[1], client)
    return FileSink(parts[0])


# ---------------------------------------------------------------------------
# Threads: the output pump and the flusher


class Pump(threading.Thread):
    """Reads COMMAND's output: to standard output at once, into the log buffer."""

    def __init__(self, fd, buffer):
        super().__init__(name="burst-job-pump", daemon=True)
        self.fd = fd
        self.buffer = buffer

    def run(self):
        while True:
            try:
                data = os.read(self.fd, 65536)
            except InterruptedError:
                continue
            except OSError:
                break
            if not data:
                break
            emit(data)
            self.buffer.add(data)


class Flusher(threading.Thread):
    """Hands the buffered lines to the sink every ``period`` seconds, or at once when asked."""

    def __init__(self, buffer, sink, period):
        super().__init__(name="burst-job-flusher", daemon=True)
        self.buffer = buffer
        self.sink = sink
        self.period = period
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self.flushes = 0

    def flush_once(self, force=False):
        lines = self.buffer.take()
        if lines:
            self.sink.guard(self.sink.write, lines)
        self.sink.guard(self.sink.flush, force)
        self.flushes += 1

    def flush_now(self):
        self._wake.set()

    def run(self):
        while not self._stopping.is_set():
            forced = self._wake.wait(self.period)
            self._wake.clear()
            if self._stopping.is_set():
                break
            self.flush_once(force=forced)

    def stop(self):
        self._stopping.set()
        self._wake.set()
        self.join()


# ---------------------------------------------------------------------------
# Status


class Status:
    """The job's record: the status file and the instance's tags, both written on each change."""

    TAGS = (
        ("status", "BurstJobStatus"),
        ("exit_code", "BurstJobExitCode"),
        ("started_at", "BurstJobStartedAt"),
        ("ended_at", "BurstJobEndedAt"),
        ("log", "BurstJobLog"),
        ("log_error", "BurstJobLogError"),
        ("draining", "BurstDraining"),
    )

    def __init__(self, job_id, status_dir, instance_id, client):
        self.record = {
            "job_id": job_id,
            "instance_id": instance_id,
            "status": "running",
            "exit_code": None,
            "started_at": iso(),
            "ended_at": None,
            "log": None,
            "log_error": None,
            "draining": None,
        }
        self.path = os.path.join(status_dir, job_id + ".json")
        self.instance_id = instance_id
        self.client = client

    def tags(self):
        tags = {}
        for field, key in self.TAGS:
            value = self.record[field]
            if value is not None:
                tags[key] = str(value)[:TAG_VALUE_MAX]
        return tags

    def write_file(self):
        directory = os.path.dirname(self.path)
        try:
            os.makedirs(directory, exist_ok=True)
            fd, temporary = tempfile.mkstemp(prefix=".burst-job-", dir=directory)
            try:
                with os.fdopen(fd, "w") as handle:
                    json.dump(self.record, handle, indent=2, sort_keys=True)
                    handle.write("\n")
                    handle.flush()
                    os.fsync(handle.fileno())
                os.chmod(temporary, 0o644)
                os.replace(temporary, self.path)
            except BaseException:
                os.unlink(temporary)
                raise
            dir_fd = os.open(directory, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except OSError as exc:
            say(f"cannot write the status file {self.path}: {exc.strerror or exc}")

    def write_tags(self):
        if self.client is None or self.instance_id is None:
            return
        try:
            self.client.create_tags(self.instance_id, self.tags())
        except burst_aws.AwsError as exc:
            say(f"cannot tag {self.instance_id}: {exc}")

    def update(self, **fields):
        self.record.update(fields)
        self.write_file()
        self.write_tags()


# ---------------------------------------------------------------------------
# The job


def _minutes(text):
    value = float(text)
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError("must be more than 0 minutes")
    return value


def _seconds(minimum):
    def convert(text):
        value = float(text)
        if not math.isfinite(value) or value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum} s")
        return value

    return convert


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="burst_job.py",
        usage="%(prog)s [--job-id ID] [options] -- COMMAND [ARG...]",
        description=__doc__.split("\n\n", 1)[0],
    )
    parser.add_argument("--job-id", help="the job's id: names the status file (default: the instance's id)")
    parser.add_argument("--log-to", metavar="DEST", help=f"where the log goes while the job runs: {DEST_FORMS}")
    parser.add_argument(
        "--time-limit", metavar="MINUTES", type=_minutes, help="stop the job after this many minutes (fractions ok)"
    )
    parser.add_argument(
        "--grace-seconds", type=_seconds(0.0), default=30.0, help="SIGKILL this long after SIGTERM (default 30)"
    )
    parser.add_argument("--status-dir", default="/var/lib/burst/jobs", help="directory of JOB_ID.json")
    parser.add_argument(
        "--flush-seconds", type=_seconds(0.1), default=5.0, help="longest time between two writes of DEST (default 5)"
    )
    parser.add_argument(
        "--interruption-file",
        default="/run/burst/interruption.json",
        help="file the healthcheck writes on a spot interruption notice",
    )
    if "--" not in argv:
        parser.error("give the command after --")
    split = argv.index("--")
    options = parser.parse_args(argv[:split])
    options.command = argv[split + 1 :]
    if not options.command:
        parser.error("no command after --")
    job_id = options.job_id
    if job_id is not None and not valid_job_id(job_id):
        parser.error(f"--job-id {job_id!r}: 1 to 255 characters, no '/' and no control characters")
    return options


def valid_job_id(job_id):
    return bool(job_id) and len(job_id) <= 255 and job_id not in (".", "..") and not _JOB_ID_BAD.search(job_id)


class InterruptionWatch:
    """Notices the interruption file when it appears or changes."""

    def __init__(self, path):
        self.path = path
        self.seen = None
        self.complained = None

    def poll(self):
        try:
            stat = os.stat(self.path)
        except OSError:
            return None
        signature = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
        if signature == self.seen:
            return None
        try:
            with open(self.path, encoding="utf-8") as handle:
                notice = json.load(handle)
            if not isinstance(notice, dict):
                raise ValueError("not a JSON object")
        except (OSError, ValueError) as exc:
            if self.complained != signature:
                self.complained = signature
                say(f"cannot read the interruption file {self.path}: {exc}")
            return None  # perhaps half written: read again next time
        self.seen = signature
        return notice


class Job:
    def __init__(self, options):
        self.options = options
        self.process = None
        self.signalled = None

    def _aws(self):
        """(instance id or None, client or None): without a metadata service, nothing is tagged."""
        instance_id = client = None
        try:
            instance_id = burst_aws.instance_id()
        except burst_aws.AwsError as exc:
            say(f"no instance id ({exc}): the instance is not tagged")
        try:
            client = burst_aws.Client()
        except burst_aws.AwsError as exc:
            say(f"no AWS region ({exc}): nothing is tagged or sent to AWS")
        return instance_id, client

    def _on_signal(self, signum, _frame):
        self.signalled = signum

    def run(self):
        options = self.options
        instance_id, client = self._aws()
        host = instance_id or socket.gethostname()
        if options.job_id is None:
            options.job_id = host if valid_job_id(host) else "job"
        status = Status(options.job_id, options.status_dir, instance_id, client)
        sink = None
        if options.log_to:
            try:
                kind, resolved, parts = resolve_destination(options.log_to, options.job_id, host)
            except DestError as exc:
                say(f"bad log destination: {exc}")
                status.update(
                    status="failed",
                    exit_code=EXIT_USAGE,
                    ended_at=iso(),
                    log=options.log_to,
                    log_error=_short(str(exc)),
                )
                return EXIT_USAGE
            sink = make_sink(kind, resolved, parts, client, options.flush_seconds)
            status.record["log"] = resolved
            sink.guard(sink.open)
            status.record["log_error"] = sink.error
        else:
            sink = Sink(None)  # standard output only
        say(f"job {options.job_id} starts" + (f", log to {sink.resolved}" if sink.resolved else ""))
        status.update()

        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._on_signal)
        read_fd, write_fd = os.pipe()
        try:
            self.process = subprocess.Popen(
                options.command,
                stdout=write_fd,
                stderr=write_fd,
                start_new_session=True,
                close_fds=True,
            )
        except OSError as exc:
            os.close(read_fd)
            os.close(write_fd)
            code = 127 if exc.errno in (errno.ENOENT, errno.ENOTDIR) else 126
            say(f"cannot start {options.command[0]}: {exc.strerror or exc}")
            status.update(status="failed", exit_code=code, ended_at=iso(), log_error=sink.error)
            return code
        os.close(write_fd)
        buffer = LogBuffer()
        pump = Pump(read_fd, buffer)
        pump.start()
        flusher = Flusher(buffer, sink, options.flush_seconds)
        flusher.start()

        returncode, timed_out = self._supervise(status, sink, buffer, flusher)

        pump.join(DRAIN_AFTER_EXIT_S)
        if pump.is_alive():
            say(f"processes left by the job hold its output open; it is read no more (after {DRAIN_AFTER_EXIT_S:g} s)")
        buffer.close()
        flusher.stop()
        flusher.flush_once(force=True)
        if returncode < 0:
            returncode = 128 - returncode
        exit_code = EXIT_TIMED_OUT if timed_out else returncode
        final = "timed_out" if timed_out else ("succeeded" if exit_code == 0 else "failed")
        say(f"job {options.job_id} {final} with exit code {exit_code}")
        status.update(status=final, exit_code=exit_code, ended_at=iso(), log_error=sink.error)
        return exit_code

    def _signal_group(self, signum):
        try:
            os.killpg(self.process.pid, signum)
        except (ProcessLookupError, PermissionError):
            pass

    def _supervise(self, status, sink, buffer, flusher):
        """Wait for COMMAND; enforce the time limit, watch the interruption file. (return code, timed out)."""
        options = self.options
        started = time.monotonic()
        deadline = started + options.time_limit * 60 if options.time_limit else None
        kill_at = None
        killed = False
        timed_out = False
        forwarded = None
        watch = InterruptionWatch(options.interruption_file)
        while True:
            try:
                returncode = self.process.wait(timeout=POLL_S)
            except subprocess.TimeoutExpired:
                returncode = None
            now = time.monotonic()
            if returncode is not None:
                if kill_at is not None:
                    self._signal_group(signal.SIGKILL)  # what is left of the group, at once
                return returncode, timed_out
            if deadline is not None and not timed_out and now >= deadline:
                timed_out = True
                message = f"time limit of {options.time_limit:g} min reached: SIGTERM to the job's processes"
                say(message)
                buffer.note(message)
                self._signal_group(signal.SIGTERM)
                kill_at = now + options.grace_seconds
            if self.signalled is not None and forwarded != self.signalled:
                forwarded = self.signalled
                message = f"received signal {forwarded}: SIGTERM to the job's processes"
                say(message)
                buffer.note(message)
                self._signal_group(signal.SIGTERM)
                if kill_at is None:
                    kill_at = now + options.grace_seconds
            if kill_at is not None and not killed and now >= kill_at:
                killed = True
                say(f"the job's processes are still there after {options.grace_seconds:g} s: SIGKILL")
                self._signal_group(signal.SIGKILL)
            notice = watch.poll()
            if notice is not None:
                self._on_notice(notice, status, buffer, flusher)
            if sink.error != status.record["log_error"]:
                status.update(log_error=sink.error)

    def _on_notice(self, notice, status, buffer, flusher):
        reason = notice.get("reason")
        deadline = str(notice.get("deadline") or "unknown")
        if reason == "spot-interruption":
            message = f"spot interruption notice (action {notice.get('action')}, deadline {deadline}): log flushed"
            say(message)
            buffer.note(message)
            flusher.flush_now()
            status.update(draining=deadline)
        else:
            message = f"interruption file: {reason} (deadline {deadline}); the job goes on"
            say(message)
            buffer.note(message)


def main(argv=None):
    options = parse_args(sys.argv[1:] if argv is None else argv)
    return Job(options).run()


if __name__ == "__main__":
    sys.exit(main())
