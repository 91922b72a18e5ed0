# Copyright: burst.golden_ami contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Moving a model's bytes: HTTP streams that resume, partial files, hashing while writing, progress.

Private to this collection; part of the ``model_download`` module (see
``_model_cache``). Standard library and Ansible's URL helpers only.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import mmap
import os
import threading
import time

from ansible_collections.burst.golden_ami.plugins.module_utils._files import CHUNK, write_json_atomic
from ansible_collections.burst.golden_ami.plugins.module_utils._model_record import ModelCacheError
from ansible_collections.burst.golden_ami.plugins.module_utils._progress import human

# Consecutive cuts, without a byte received in between, before a file's download gives up.
FETCH_RETRIES = 5
RETRY_STATUS = (429, 500, 502, 503, 504)
# Bytes read from the network at a time, into one buffer per download.
READ_SIZE = 1024 * 1024
# What O_DIRECT asks of a write's memory address, file offset and length (the largest logical block
# size in common use; page-aligned buffers and multiples of it satisfy 512-byte devices as well).
DIRECT_ALIGN = 4096
USER_AGENT = "burst.golden_ami"


def git_blob_sha1(data_or_path, size=None):
    """The git blob id of a file (``sha1("blob <size>\\0" + content)``)."""
    if isinstance(data_or_path, bytes):
        data = data_or_path
        digest = hashlib.sha1(b"blob %d\0" % len(data))  # noqa: S324 - git's object id, not a security hash
        digest.update(data)
        return digest.hexdigest()
    if size is None:
        size = os.path.getsize(data_or_path)
    digest = hashlib.sha1(b"blob %d\0" % size)  # noqa: S324 - git's object id, not a security hash
    with open(data_or_path, "rb") as handle:
        for block in iter(lambda: handle.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


# ---------------------------------------------------------------------------
# Progress


class Progress:
    """Byte counts shared by the download threads, written to a JSON file each second.

    The file is what the role's follow-up task reads while the download runs
    asynchronously: ``state``, ``bytes_done`` of ``bytes_total``,
    ``files_done`` of ``files_total``, ``rate_bytes_per_s`` and a ``line``
    for people.
    """

    def __init__(self, name, path=None, interval=1.0, clock=time.monotonic):
        self.name = name
        self.path = path
        self.interval = interval
        self._clock = clock
        self._lock = threading.Lock()
        self.bytes_total = 0
        self.bytes_done = 0
        self.bytes_transferred = 0
        self.files_total = 0
        self.files_done = 0
        self.state = "planning"
        self.message = ""
        self._writers = set()
        self._started = clock()
        self._stop = threading.Event()
        self._thread = None

    def plan(self, files_total, bytes_total, bytes_done=0, files_done=0):
        with self._lock:
            self.files_total = files_total
            self.bytes_total = bytes_total
            self.bytes_done = bytes_done
            self.files_done = files_done
            self.state = "downloading"
            self._started = self._clock()
            self.bytes_transferred = 0

    def add(self, count, transferred=True):
        with self._lock:
            self.bytes_done += count
            if transferred:
                self.bytes_transferred += count

    def track(self, writer):
        """Count ``writer.written`` as it grows (read at each snapshot: no lock per chunk)."""
        with self._lock:
            self._writers.add(writer)

    def retire(self, writer):
        with self._lock:
            if writer in self._writers:
                self._writers.discard(writer)
                self.bytes_done += writer.written
                self.bytes_transferred += writer.written

    def file_done(self):
        with self._lock:
            self.files_done += 1

    def snapshot(self):
        with self._lock:
            elapsed = max(self._clock() - self._started, 1e-6)
            in_flight = sum(writer.written for writer in self._writers)
            rate = (self.bytes_transferred + in_flight) / elapsed
            data = {
                "name": self.name,
                "state": self.state,
                "bytes_total": self.bytes_total,
                "bytes_done": self.bytes_done + in_flight,
                "bytes_transferred": self.bytes_transferred + in_flight,
                "files_total": self.files_total,
                "files_done": self.files_done,
                "elapsed_s": round(elapsed, 3),
                "rate_bytes_per_s": int(rate),
                "message": self.message,
            }
        data["line"] = self.line(data)
        return data

    @staticmethod
    def line(data):
        """One line for people: ``name: 1.20 GiB of 8.00 GiB (15%), 3/12 files, 480.00 MiB/s, 14 s left``."""
        if data["state"] in ("done", "failed", "unchanged") and data.get("message"):
            return "%s: %s" % (data["name"], data["message"])
        total = data["bytes_total"]
        done = data["bytes_done"]
        percent = 100.0 * done / total if total else 100.0
        rate = data["rate_bytes_per_s"]
        text = "%s: %s of %s (%.0f%%), %d/%d files, %s/s" % (
            data["name"],
            human(done, 2),
            human(total, 2),
            percent,
            data["files_done"],
            data["files_total"],
            human(rate, 2),
        )
        if rate > 0 and total > done:
            text += ", about %d s left" % ((total - done) / rate)
        return text

    def write(self):
        if not self.path:
            return
        with contextlib.suppress(OSError):
            write_json_atomic(self.path, self.snapshot())

    def finish(self, state, message=""):
        with self._lock:
            self.state = state
            self.message = message
        self.stop()
        self.write()

    def start(self):
        if not self.path:
            return
        self.write()

        def loop():
            while not self._stop.wait(self.interval):
                self.write()

        self._thread = threading.Thread(target=loop, name="model-cache-progress", daemon=True)
        self._thread.start()

    def stop(self):
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None


class PartFile:
    """The partial file of a download: appends at a tracked offset, bypassing the page cache when it can.

    Blocks that fill the file's own read buffer (``read_buffer``, page-aligned) are written with
    ``O_DIRECT`` from that buffer to the disk: no copy into the page cache, and no page cache to
    allocate, which was most of the kernel time of a download (measured: a buffered 1 GiB costs
    0.2 to 2 CPU-seconds in the kernel depending on how much fresh memory the page cache needs,
    ``O_DIRECT`` 0.1). Everything else (the tail of a file, a block after a cut at an odd byte,
    bytes from another buffer) is written the ordinary way. A filesystem that refuses ``O_DIRECT``
    (at open or at the first write) gets ordinary writes only; the content is the same either way.
    """

    def __init__(self, path, buffer_size=READ_SIZE):
        # An anonymous mapping is page-aligned, as O_DIRECT needs; a bytearray is not.
        self._buffer = mmap.mmap(-1, buffer_size)
        self._view = memoryview(self._buffer)
        self.direct_bytes = 0
        self.path = path
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o666)
        self._pos = os.fstat(self._fd).st_size
        self._direct_fd = None
        if hasattr(os, "O_DIRECT"):
            try:
                self._direct_fd = os.open(path, os.O_WRONLY | os.O_DIRECT | getattr(os, "O_CLOEXEC", 0))
            except OSError:
                self._direct_fd = None

    def read_buffer(self):
        """The buffer to read the next block into; a block written from its start may skip the page cache."""
        return self._view

    def _direct_ok(self, data):
        # A view of the own buffer taken from its start (as ``stream_http`` does): page-aligned. Were it
        # not, the kernel would refuse the write (EINVAL) and the bytes would go the ordinary way.
        return (
            self._direct_fd is not None
            and isinstance(data, memoryview)
            and data.obj is self._buffer
            and len(data) % DIRECT_ALIGN == 0
            and self._pos % DIRECT_ALIGN == 0
        )

    def write(self, data):
        if not isinstance(data, memoryview):
            data = memoryview(data)
        total = len(data)
        if self._direct_ok(data):
            try:
                done = os.pwrite(self._direct_fd, data, self._pos)
            except OSError as exc:
                if exc.errno != errno.EINVAL:
                    raise
                # This filesystem or device wants another alignment: ordinary writes from now on.
                self._close_direct()
                done = 0
            self._pos += done
            self.direct_bytes += done
            data = data[done:]
        while len(data):
            done = os.pwrite(self._fd, data, self._pos)
            self._pos += done
            data = data[done:]
        return total

    def tell(self):
        return self._pos

    def seek(self, offset, whence=0):
        if whence != 0:
            raise OSError("a partial file may only seek to an absolute offset")
        self._pos = offset
        return offset

    def truncate(self, size=None):
        size = self._pos if size is None else size
        os.ftruncate(self._fd, size)
        return size

    def flush(self):
        """Nothing is buffered in Python: every write went to the kernel."""

    def _close_direct(self):
        if self._direct_fd is not None:
            os.close(self._direct_fd)
            self._direct_fd = None

    def close(self):
        self._close_direct()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        # A view of the buffer still held (by a traceback, say) keeps it open; it is freed with that view.
        with contextlib.suppress(BufferError):
            self._view.release()
            self._buffer.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()


class HashingWriter:
    """A file object for downloaders: writes, hashes and counts in one pass.

    ``stream_http`` rewinds its file when a server ignores a Range request;
    seeking back to the start resets the digests so that the whole file is
    hashed again from its first byte. ``written`` counts the bytes of this
    transfer, which ``Progress`` reads while the download runs.
    """

    def __init__(self, handle, start, progress, sha1_prefix=None):
        self._handle = handle
        self._start_offset = start
        self._progress = progress
        self._sha1_prefix = sha1_prefix
        self.sha256 = hashlib.sha256()
        self.sha1 = None
        self.written = 0

    def prime(self, path, length):
        """Hash the first ``length`` bytes already on disk (a resumed file)."""
        if self._sha1_prefix is not None:
            self.sha1 = hashlib.sha1(self._sha1_prefix)  # noqa: S324 - git's object id
        remaining = length
        with open(path, "rb") as handle:
            while remaining > 0:
                block = handle.read(min(CHUNK, remaining))
                if not block:
                    break
                self.sha256.update(block)
                if self.sha1 is not None:
                    self.sha1.update(block)
                remaining -= len(block)

    def write(self, data):
        self._handle.write(data)
        self.sha256.update(data)
        if self.sha1 is not None:
            self.sha1.update(data)
        self.written += len(data)
        return len(data)

    @property
    def path(self):
        """The path of the partial file written, when the handle is a ``PartFile``; else None."""
        return getattr(self._handle, "path", None)

    def restart(self, present=0):
        """Forget what was hashed: the caller hashes the file again from its first byte.

        For a download that wrote parts out of order: ``present`` bytes already on the disk count as
        done but not transferred, in place of the prefix this writer was started with.
        """
        self._progress.add(present - self._start_offset, transferred=False)
        self._start_offset = present
        self.written = 0
        self.sha256 = hashlib.sha256()
        self.sha1 = None
        if self._sha1_prefix is not None:
            self.sha1 = hashlib.sha1(self._sha1_prefix)  # noqa: S324 - git's object id

    def read_buffer(self):
        """The file's own read buffer (see ``PartFile``), or None: ``stream_http`` then uses one of its own."""
        own = getattr(self._handle, "read_buffer", None)
        return own() if own is not None else None

    def tell(self):
        return self._handle.tell()

    def seek(self, offset, whence=0):
        if whence != 0 or offset != 0:
            raise OSError("a download may only rewind to the start of the file")
        # The server sent the whole file instead of the missing range.
        self._progress.add(-self._start_offset, transferred=False)
        self._start_offset = 0
        self.written = 0
        self.sha256 = hashlib.sha256()
        if self._sha1_prefix is not None:
            self.sha1 = hashlib.sha1(self._sha1_prefix)  # noqa: S324 - git's object id
        return self._handle.seek(0)

    def truncate(self, size=None):
        return self._handle.truncate(size)

    def flush(self):
        return self._handle.flush()


def stream_http(url, writer, offset, size, headers=None, timeout=60, label=None):
    """GET ``url`` into ``writer`` from byte ``offset`` (a Range request), resuming after a cut.

    The body is read with ``readinto`` into one reused buffer, the writer's own when it offers one
    (``read_buffer``: a ``PartFile`` then writes full blocks from it straight to the disk). A cut
    connection, a timeout or an incomplete body is retried from the last byte received, up to
    ``FETCH_RETRIES`` times in a row without progress; 429 and 5xx answers are retried the same way.
    A server that ignores the Range header gets the file rewritten from its first byte.
    """
    import http.client
    import urllib.error

    from ansible.module_utils.urls import open_url

    label = label or url
    base = {k: v for k, v in (headers or {}).items() if k.lower() not in ("range", "accept-encoding", "user-agent")}
    agent = next((v for k, v in (headers or {}).items() if k.lower() == "user-agent"), USER_AGENT)
    base["Accept-Encoding"] = "identity"
    own = getattr(writer, "read_buffer", None)
    view = own() if own is not None else None
    if view is None:
        view = memoryview(bytearray(READ_SIZE))
    failures = 0
    while size is None or offset < size:
        request_headers = dict(base)
        if offset:
            request_headers["Range"] = "bytes=%d-" % offset
        try:
            response = open_url(url, headers=request_headers, timeout=timeout, http_agent=agent)
            with contextlib.closing(response):
                if offset and response.getcode() != 206:
                    writer.seek(0)  # the server sent the whole file
                    writer.truncate()
                    offset = 0
                while True:
                    count = response.readinto(view)
                    if not count:
                        break
                    writer.write(view[:count])
                    offset += count
                    failures = 0
            if size is None:
                return
            if offset < size:
                raise http.client.IncompleteRead(b"", size - offset)
        except urllib.error.HTTPError as exc:
            if exc.code not in RETRY_STATUS or failures >= FETCH_RETRIES:
                raise ModelCacheError("downloading %s failed: HTTP %s %s" % (label, exc.code, exc.reason)) from exc
            failures += 1
            time.sleep(min(0.5 * failures, 5))
        except (http.client.HTTPException, OSError) as exc:
            if failures >= FETCH_RETRIES:
                raise ModelCacheError(
                    "downloading %s failed after %d bytes: %s: %s" % (label, offset, type(exc).__name__, exc)
                ) from exc
            failures += 1
            time.sleep(min(0.5 * failures, 5))
