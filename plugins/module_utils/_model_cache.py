# Copyright: burst.golden_ami contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Pinned, verified model weights under a models root (``/models``).

The core of the ``model_download`` module, in plain functions and classes
that unit tests call directly. Runs on the builder (Python 3.9+), in the
tools virtualenv that holds ``huggingface_hub`` and ``boto3``; both are
imported only when a source needs them.

Layout under the root::

    <root>/<name>/                   the model, read-only (0444 files, 0555 dirs)
    <root>/<name>/.burst-model.json  its record: source, commit, every file
    <root>/manifest.json             every model's record, keyed by name
    <root>/.staging/<name>/          a download in progress (resumable)

A model directory appears (by rename) only once every file is verified.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import errno
import fnmatch
import hashlib
import json
import mmap
import os
import re
import shutil
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import parse_qsl, urlsplit, urlunsplit

RECORD_NAME = ".burst-model.json"
MANIFEST_NAME = "manifest.json"
STAGING_DIR = ".staging"
STAGING_STATE = ".burst-staging.json"
PARTIAL_DIR = ".burst-partial"
RECORD_FORMAT = 1

FILE_MODE = 0o444
DIR_MODE = 0o555

HEX40 = re.compile(r"^[0-9a-f]{40}$")
HEX64 = re.compile(r"^[0-9a-f]{64}$")
REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")

# What a served model needs: weights as safetensors, configs, tokenizer files
# and the sentence-transformers modules (TEI silently falls back to CLS
# pooling without 1_Pooling/config.json).
DEFAULT_ALLOW_PATTERNS = [
    "*.safetensors",
    "*.json",
    "tokenizer*",
    "*.model",
    "*.tiktoken",
    "vocab.*",
    "merges.txt",
    "1_Pooling/*",
    "2_Normalize/*",
    "2_Dense/*",
]
# Weights in other formats that are only wanted when no safetensors exist.
FALLBACK_WEIGHT_PATTERNS = ["*.bin"]
DEFAULT_IGNORE_PATTERNS = [
    "onnx/*",
    "openvino/*",
    "*.onnx",
    "*.onnx_data",
    "*.h5",
    "*.msgpack",
    "*.ot",
    "*.gguf",
]

# How each file's content was checked against its source.
VERIFY_LFS = "lfs-sha256"
VERIFY_GIT_BLOB = "git-blob-sha1"
VERIFY_S3 = "s3-checksum-sha256"
VERIFY_GIVEN = "given-sha256"
VERIFY_NONE = "computed"

CHUNK = 8 * 1024 * 1024
# Consecutive cuts, without a byte received in between, before a file's download gives up.
FETCH_RETRIES = 5
RETRY_STATUS = (429, 500, 502, 503, 504)
# Bytes read from the network at a time, into one buffer per download.
READ_SIZE = 1024 * 1024
# What O_DIRECT asks of a write's memory address, file offset and length (the largest logical block
# size in common use; page-aligned buffers and multiples of it satisfy 512-byte devices as well).
DIRECT_ALIGN = 4096
USER_AGENT = "burst.golden_ami"


class ModelCacheError(Exception):
    """An error the module reports as is: it names the model and the problem."""


# ---------------------------------------------------------------------------
# Small helpers


def human_bytes(value):
    """Format a byte count for people (binary units)."""
    value = float(value)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return "%.0f %s" % (value, unit) if unit == "B" else "%.2f %s" % (value, unit)
        value /= 1024
    return "%.2f TiB" % value  # pragma: no cover


def model_dir_name(repo_id):
    """The seed's directory name for a Hub repository: ``org/name`` -> ``org--name``."""
    if not REPO_ID.match(repo_id or ""):
        raise ModelCacheError("repo_id %r is not of the form 'org/name'" % (repo_id,))
    return repo_id.replace("/", "--")


def redact_url(url):
    """``url`` as it may be recorded or shown: no user, password, query string or fragment.

    Signed URLs (S3 presigned, Azure SAS, CDN tokens) carry their credential in the query string.
    """
    if not url:
        return url
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = "[%s]" % host
    try:
        port = parts.port
    except ValueError:
        port = None
    netloc = host + (":%d" % port if port is not None else "")
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def url_secrets(url):
    """The parts of ``url`` that ``redact_url`` drops and that must never be shown (for ``no_log_values``)."""
    if not url:
        return []
    parts = urlsplit(url)
    found = [parts.query, parts.fragment, parts.password or "", parts.username or ""]
    found += [value for _name, value in parse_qsl(parts.query, keep_blank_values=True)]
    return sorted({value for value in found if len(value) >= 4})


def clean_record(record):
    """A model record (or manifest entry) with its URLs redacted; the record itself when there is nothing to redact."""
    if not isinstance(record, dict):
        return record
    cleaned = dict(record)
    if isinstance(cleaned.get("url"), str):
        cleaned["url"] = redact_url(cleaned["url"])
    identity = cleaned.get("identity")
    if isinstance(identity, dict) and isinstance(identity.get("url"), str):
        cleaned["identity"] = dict(identity, url=redact_url(identity["url"]))
    return cleaned if cleaned != record else record


def _normalise_patterns(patterns):
    if patterns is None:
        return None
    if isinstance(patterns, str):
        patterns = [patterns]
    # A pattern naming a folder selects everything under it.
    return [p + "*" if p.endswith("/") else p for p in patterns]


def _matches(path, patterns):
    return any(fnmatch.fnmatch(path, pattern) for pattern in patterns)


def select_files(paths, allow_patterns=None, ignore_patterns=None):
    """Return the paths to download, in the order given.

    With no ``allow_patterns`` the defaults apply: safetensors weights,
    configs, tokenizer and sentence-transformers files, and ``*.bin``
    weights only when the repository has no safetensors. With no
    ``ignore_patterns`` the default ignores drop ONNX, OpenVINO, TF, Flax
    and GGUF exports. ``fnmatch`` rules, as in huggingface_hub: ``*``
    crosses ``/``, and a pattern ending in ``/`` names a folder.
    """
    paths = list(paths)
    allow = _normalise_patterns(allow_patterns)
    ignore = _normalise_patterns(ignore_patterns)
    if ignore is None:
        ignore = list(DEFAULT_IGNORE_PATTERNS)
    if allow is None:
        allow = list(DEFAULT_ALLOW_PATTERNS)
        has_safetensors = any(fnmatch.fnmatch(p, "*.safetensors") for p in paths if not _matches(p, ignore))
        if not has_safetensors:
            allow += FALLBACK_WEIGHT_PATTERNS
    return [p for p in paths if _matches(p, allow) and not _matches(p, ignore)]


def free_bytes(path):
    """Free bytes for an unprivileged writer on the filesystem holding ``path``."""
    probe = path
    while not os.path.exists(probe):
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    st = os.statvfs(probe)
    return st.f_bavail * st.f_frsize


def preflight_disk(root, needed, margin, label, free=None):
    """Fail before any download when ``needed`` + ``margin`` bytes do not fit under ``root``."""
    available = free_bytes(root) if free is None else free
    if needed + margin > available:
        raise ModelCacheError(
            "Not enough disk space for %s under %s: %s to download plus a margin of %s, but only %s free"
            % (label, root, human_bytes(needed), human_bytes(margin), human_bytes(available))
        )
    return available


def sha256_file(path, chunk=CHUNK):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


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


def write_json_atomic(path, data, mode=0o644, sync=True):
    """Write JSON next to ``path`` then rename it in place (readers never see half a file).

    ``sync`` flushes the data to the disk before the rename (records and the manifest); the staging
    state, a cache of what was already verified, skips it.
    """
    directory = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=directory)
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(data, handle, indent=2, sort_keys=True)
            handle.write("\n")
            handle.flush()
            if sync:
                os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def read_json(path):
    try:
        with open(path) as handle:
            return json.load(handle)
    except FileNotFoundError:
        return None
    except ValueError:
        # A damaged record is treated as no record: the model is fetched again.
        return None


def _make_writable(path):
    """Give the owner write access back on a read-only tree (so it can be renamed or removed)."""
    for dirpath, dirnames, _filenames in os.walk(path):
        os.chmod(dirpath, 0o700)
        for dirname in dirnames:
            full = os.path.join(dirpath, dirname)
            if not os.path.islink(full):
                os.chmod(full, 0o700)


def remove_tree(path):
    if os.path.lexists(path):
        if os.path.isdir(path) and not os.path.islink(path):
            _make_writable(path)
            shutil.rmtree(path)
        else:
            os.unlink(path)


def make_read_only(path):
    """0444 files, 0555 directories, deepest first."""
    for dirpath, _dirnames, filenames in os.walk(path, topdown=False):
        for filename in filenames:
            os.chmod(os.path.join(dirpath, filename), FILE_MODE)
        os.chmod(dirpath, DIR_MODE)


def _safe_relpath(path):
    """Refuse paths that would escape the model directory."""
    norm = os.path.normpath(path)
    if not path or os.path.isabs(path) or norm.startswith("..") or norm in (".", "") or "\\" in path:
        raise ModelCacheError("refusing file path %r from the source: it escapes the model directory" % (path,))
    parts = norm.split(os.sep)
    if parts[0] in (RECORD_NAME, PARTIAL_DIR, STAGING_STATE):
        raise ModelCacheError("refusing file path %r from the source: the name is reserved" % (path,))
    return norm


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
            human_bytes(done),
            human_bytes(total),
            percent,
            data["files_done"],
            data["files_total"],
            human_bytes(rate),
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


# ---------------------------------------------------------------------------
# Files and plans


class RemoteFile:
    """A file of a model as its source describes it."""

    def __init__(self, path, size, sha256=None, git_oid=None, verify=VERIFY_NONE, locator=None, etag=None):
        self.path = _safe_relpath(path)
        self.size = size
        self.sha256 = sha256.lower() if sha256 else None
        self.git_oid = git_oid
        self.verify = verify
        self.locator = locator if locator is not None else path
        self.etag = etag

    @property
    def identity(self):
        """What a staged copy must match to be reused: the expected digest, else the ETag."""
        return self.sha256 or self.git_oid or self.etag or ""

    def __repr__(self):  # pragma: no cover - debugging aid
        return "RemoteFile(%r, %r)" % (self.path, self.size)


class Plan:
    """What a source holds at a pinned version, after pattern filtering."""

    def __init__(self, source, version, files):
        self.source = source
        self.version = version
        self.files = files

    @property
    def total_bytes(self):
        return sum(f.size or 0 for f in self.files)


# ---------------------------------------------------------------------------
# Sources


class HubSource:
    """A Hugging Face Hub model repository at a revision, through huggingface_hub."""

    kind = "hub"

    def __init__(self, repo_id, revision="main", endpoint=None, token=None, allow_patterns=None, ignore_patterns=None):
        model_dir_name(repo_id)  # validates
        if not revision:
            raise ModelCacheError("revision must not be empty for %s" % repo_id)
        self.repo_id = repo_id
        self.revision = revision
        self.endpoint = endpoint
        self._token = token
        self.allow_patterns = allow_patterns
        self.ignore_patterns = ignore_patterns

    @property
    def default_name(self):
        return model_dir_name(self.repo_id)

    def identity(self):
        return {
            "source": self.kind,
            "repo_id": self.repo_id,
            "allow_patterns": self.allow_patterns,
            "ignore_patterns": self.ignore_patterns,
        }

    def pinned_version(self):
        """The commit to trust without asking the Hub, when the revision is a full sha."""
        revision = self.revision.lower()
        return revision if HEX40.match(revision) else None

    def _api(self):
        from huggingface_hub import HfApi

        return HfApi(endpoint=self.endpoint, token=self._token or False, library_name="burst.golden_ami")

    def plan(self):
        from huggingface_hub.errors import (
            GatedRepoError,
            HfHubHTTPError,
            RepositoryNotFoundError,
            RevisionNotFoundError,
        )
        from huggingface_hub.hf_api import RepoFile

        api = self._api()
        try:
            info = api.repo_info(self.repo_id, revision=self.revision, repo_type="model")
            commit = info.sha
            if not commit or not HEX40.match(commit):
                raise ModelCacheError(
                    "the Hub answered no commit sha for %s at revision %s" % (self.repo_id, self.revision)
                )
            entries = [
                e
                for e in api.list_repo_tree(self.repo_id, revision=commit, recursive=True, repo_type="model")
                if isinstance(e, RepoFile)
            ]
        except RevisionNotFoundError as exc:
            raise ModelCacheError("revision %r not found in Hub repository %s" % (self.revision, self.repo_id)) from exc
        except GatedRepoError as exc:
            raise ModelCacheError(
                "Hub repository %s is gated: the token given has no access to it" % self.repo_id
            ) from exc
        except RepositoryNotFoundError as exc:
            raise ModelCacheError(
                "Hub repository %s not found (or private and no valid token was given)" % self.repo_id
            ) from exc
        except HfHubHTTPError as exc:
            raise ModelCacheError("the Hub refused %s at %s: %s" % (self.repo_id, self.revision, exc)) from exc
        except OSError as exc:
            raise ModelCacheError("cannot reach the Hub for %s: %s" % (self.repo_id, exc)) from exc
        by_path = {e.path: e for e in entries}
        files = []
        for path in select_files(sorted(by_path), self.allow_patterns, self.ignore_patterns):
            entry = by_path[path]
            if entry.lfs is not None:
                files.append(RemoteFile(path, entry.lfs.size, sha256=entry.lfs.sha256, verify=VERIFY_LFS))
            else:
                files.append(RemoteFile(path, entry.size, git_oid=entry.blob_id, verify=VERIFY_GIT_BLOB))
        if not files:
            raise ModelCacheError(
                "no file of %s at %s matches the allow/ignore patterns (repository has: %s)"
                % (self.repo_id, commit, ", ".join(sorted(by_path)[:20]) or "nothing")
            )
        return Plan(self, commit, files)

    def fetch(self, remote, writer, resume_from, version):
        """Stream one file into ``writer``, from byte ``resume_from``.

        huggingface_hub resolves the file at the commit (its URL, redirects, auth headers, the Hub's
        errors); the bytes of the resolved location are then read by ``stream_http`` straight into a
        reused buffer, which costs about a third less CPU per byte than huggingface_hub's own
        ``http_get`` (httpx, re-chunked in 10 MiB pieces) and resumes a cut at the exact byte.
        """
        from huggingface_hub import constants, get_hf_file_metadata, hf_hub_url
        from huggingface_hub.errors import HfHubHTTPError
        from huggingface_hub.utils import build_hf_headers

        token = self._token or False
        url = hf_hub_url(self.repo_id, remote.locator, revision=version, endpoint=self.endpoint)
        location = url
        if remote.verify == VERIFY_LFS:
            # Large files may live elsewhere (a CDN): ask the Hub where, without following blindly.
            try:
                location = get_hf_file_metadata(url, token=token, endpoint=self.endpoint, retry_on_errors=True).location
            except HfHubHTTPError as exc:
                raise ModelCacheError("downloading %s from %s failed: %s" % (remote.path, self.repo_id, exc)) from exc
            except OSError as exc:
                raise ModelCacheError(
                    "cannot reach the Hub for %s of %s: %s" % (remote.path, self.repo_id, exc)
                ) from exc
        headers = build_hf_headers(token=token, library_name="burst.golden_ami")
        if urlsplit(location).netloc != urlsplit(url).netloc:
            # A redirect to a CDN: its signed URL needs no credential, so none is sent there.
            headers = {k: v for k, v in headers.items() if k.lower() != "authorization"}
        stream_http(
            location,
            writer,
            resume_from,
            remote.size,
            headers=headers,
            timeout=constants.HF_HUB_DOWNLOAD_TIMEOUT,
            label="%s from %s" % (remote.path, self.repo_id),
        )


class S3Source:
    """Objects under an S3 prefix, through boto3.

    Each object is checked against S3's full-object ``ChecksumSHA256`` when
    the bucket stored one, else against the ``sha256`` map given, else its
    sha256 is only computed and recorded (``verify: computed``).
    """

    kind = "s3"

    def __init__(
        self,
        bucket,
        prefix="",
        sha256=None,
        region=None,
        endpoint_url=None,
        access_key=None,
        secret_key=None,
        session_token=None,
        allow_patterns=None,
        ignore_patterns=None,
        client=None,
    ):
        if not bucket:
            raise ModelCacheError("an s3 source needs a bucket")
        self.bucket = bucket
        self.prefix = (prefix or "").lstrip("/")
        if self.prefix and not self.prefix.endswith("/"):
            self.prefix += "/"
        self.sha256 = {k: v.lower() for k, v in (sha256 or {}).items()}
        self.region = region
        self.endpoint_url = endpoint_url
        self._credentials = (access_key, secret_key, session_token)
        self.allow_patterns = allow_patterns
        self.ignore_patterns = ignore_patterns
        self._client = client
        self._client_lock = threading.Lock()

    @property
    def default_name(self):
        base = self.prefix.rstrip("/").rsplit("/", 1)[-1]
        if not base:
            raise ModelCacheError("an s3 source with an empty prefix needs a name")
        return base

    def identity(self):
        return {
            "source": self.kind,
            "bucket": self.bucket,
            "prefix": self.prefix,
            "allow_patterns": self.allow_patterns,
            "ignore_patterns": self.ignore_patterns,
        }

    def pinned_version(self):
        return None

    def client(self):
        with self._client_lock:
            if self._client is None:
                import boto3

                access_key, secret_key, session_token = self._credentials
                self._client = boto3.session.Session().client(
                    "s3",
                    region_name=self.region,
                    endpoint_url=self.endpoint_url,
                    aws_access_key_id=access_key,
                    aws_secret_access_key=secret_key,
                    aws_session_token=session_token,
                )
            return self._client

    def plan(self):
        from botocore.exceptions import BotoCoreError, ClientError

        client = self.client()
        objects = {}
        try:
            for page in client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self.prefix):
                for obj in page.get("Contents", []):
                    rel = obj["Key"][len(self.prefix) :]
                    if rel and not rel.endswith("/"):
                        objects[rel] = obj
            files = []
            for path in select_files(sorted(objects), self.allow_patterns, self.ignore_patterns):
                obj = objects[path]
                head = client.head_object(Bucket=self.bucket, Key=obj["Key"], ChecksumMode="ENABLED")
                etag = (head.get("ETag") or obj.get("ETag") or "").strip('"')
                sha = None
                verify = VERIFY_NONE
                checksum = head.get("ChecksumSHA256")
                # A multipart upload's composite checksum ("...-N") is not a digest of the whole file.
                if checksum and "-" not in checksum and head.get("ChecksumType", "FULL_OBJECT") == "FULL_OBJECT":
                    try:
                        sha = binascii.hexlify(base64.b64decode(checksum)).decode()
                        verify = VERIFY_S3
                    except (binascii.Error, ValueError):
                        sha = None
                if sha is None and path in self.sha256:
                    sha = self.sha256[path]
                    verify = VERIFY_GIVEN
                files.append(
                    RemoteFile(path, head["ContentLength"], sha256=sha, verify=verify, locator=obj["Key"], etag=etag)
                )
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in ("NoSuchBucket", "404"):
                raise ModelCacheError("S3 bucket %s not found" % self.bucket) from exc
            raise ModelCacheError("S3 refused s3://%s/%s: %s" % (self.bucket, self.prefix, exc)) from exc
        except BotoCoreError as exc:
            raise ModelCacheError("cannot reach S3 for s3://%s/%s: %s" % (self.bucket, self.prefix, exc)) from exc
        unknown = sorted(set(self.sha256) - {f.path for f in files})
        if unknown:
            raise ModelCacheError(
                "sha256 given for files not found under s3://%s/%s: %s" % (self.bucket, self.prefix, ", ".join(unknown))
            )
        if not files:
            raise ModelCacheError("no object under s3://%s/%s matches the patterns" % (self.bucket, self.prefix))
        # The version of an S3 prefix: a digest of every selected key, size and ETag.
        listing = json.dumps([[f.locator, f.size, f.etag] for f in files]).encode()
        return Plan(self, hashlib.sha256(listing).hexdigest(), files)

    def fetch(self, remote, writer, resume_from, version):
        from botocore.exceptions import BotoCoreError, ClientError

        kwargs = {"Bucket": self.bucket, "Key": remote.locator}
        if remote.etag:
            kwargs["IfMatch"] = '"%s"' % remote.etag
        if resume_from:
            kwargs["Range"] = "bytes=%d-" % resume_from
        try:
            body = self.client().get_object(**kwargs)["Body"]
            for block in iter(lambda: body.read(CHUNK), b""):
                writer.write(block)
        except ClientError as exc:
            raise ModelCacheError("downloading s3://%s/%s failed: %s" % (self.bucket, remote.locator, exc)) from exc
        except BotoCoreError as exc:
            raise ModelCacheError("downloading s3://%s/%s failed: %s" % (self.bucket, remote.locator, exc)) from exc


class UrlSource:
    """One file over HTTP(S), with the sha256 it must have."""

    kind = "url"

    def __init__(self, url, sha256, filename=None, headers=None, timeout=60):
        if not url or not re.match(r"^https?://", url):
            raise ModelCacheError("url %r is not an http(s) URL" % (redact_url(url),))
        if not sha256 or not HEX64.match(sha256.lower()):
            raise ModelCacheError("a url source needs sha256 as 64 hex digits, got %r" % (sha256,))
        self.url = url
        # What is recorded and shown: the URL without its query string (a signature, a SAS token).
        self.label = redact_url(url)
        self.sha256 = sha256.lower()
        self.filename = filename or url.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]
        if not self.filename:
            raise ModelCacheError("cannot name the file of %s: give a filename" % redact_url(url))
        self._headers = dict(headers or {})
        self.timeout = timeout

    @property
    def default_name(self):
        raise ModelCacheError("a url source needs a name")

    def identity(self):
        return {"source": self.kind, "url": self.label, "filename": self.filename, "sha256": self.sha256}

    def pinned_version(self):
        return self.sha256

    def plan(self):
        import urllib.error

        from ansible.module_utils.urls import open_url

        headers = dict(self._headers, **{"Accept-Encoding": "identity"})
        try:
            with contextlib.closing(
                open_url(self.url, method="HEAD", headers=headers, timeout=self.timeout, http_agent=USER_AGENT)
            ) as response:
                length = response.headers.get("Content-Length")
        except urllib.error.HTTPError as exc:
            if exc.code not in (403, 405, 501):
                raise ModelCacheError("%s answered HTTP %s" % (self.label, exc.code)) from exc
            length = None  # no HEAD here (a signed URL, for one): the size is learnt while downloading
        except OSError as exc:
            raise ModelCacheError("cannot reach %s: %s" % (self.label, exc)) from exc
        size = int(length) if length and length.isdigit() else None
        return Plan(self, self.sha256, [RemoteFile(self.filename, size, sha256=self.sha256, verify=VERIFY_GIVEN)])

    def fetch(self, remote, writer, resume_from, version):
        stream_http(
            self.url, writer, resume_from, remote.size, headers=self._headers, timeout=self.timeout, label=self.label
        )


# ---------------------------------------------------------------------------
# Records and the manifest


def load_record(model_dir):
    record = read_json(os.path.join(model_dir, RECORD_NAME))
    if not isinstance(record, dict) or record.get("format") != RECORD_FORMAT:
        return None
    return record


def intact_files(model_dir, record, verify_checksums=False):
    """Paths of the recorded files that are in place with their size (and sha256 when asked)."""
    intact = set()
    for entry in record.get("files", []):
        path = os.path.join(model_dir, entry["path"])
        try:
            if os.path.getsize(path) != entry["size"]:
                continue
        except OSError:
            continue
        if verify_checksums and sha256_file(path) != entry["sha256"]:
            continue
        intact.add(entry["path"])
    return intact


def record_matches_local(model_dir, record, verify_checksums=False):
    """True when every recorded file is in place with its size (and sha256 when asked)."""
    return len(intact_files(model_dir, record, verify_checksums)) == len(record.get("files", []))


@contextlib.contextmanager
def _locked(directory):
    """An exclusive lock held on a directory (no lock file left behind)."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        try:
            import fcntl

            fcntl.flock(fd, fcntl.LOCK_EX)
        except ImportError:  # pragma: no cover - not POSIX
            pass
        yield
    finally:
        os.close(fd)


def update_manifest(root, name, record, check_mode=False):
    """Set (or with ``record=None`` drop) one model's entry in ``<root>/manifest.json``; True if it changed.

    In check mode, only tells whether it would change.
    """
    path = os.path.join(root, MANIFEST_NAME)
    if check_mode:
        manifest = read_json(path)
        models = manifest.get("models") if isinstance(manifest, dict) else None
        return (
            not isinstance(models, dict)
            or models.get(name) != record
            or any(clean_record(entry) is not entry for entry in models.values())
        )
    with _locked(root):
        manifest = read_json(path)
        if not isinstance(manifest, dict) or not isinstance(manifest.get("models"), dict):
            manifest = {"format": RECORD_FORMAT, "models": {}}
        before = json.dumps(manifest, sort_keys=True)
        if record is None:
            manifest["models"].pop(name, None)
        else:
            manifest["models"][name] = record
        # Entries written before URLs were recorded without their query string lose it now.
        manifest["models"] = {key: clean_record(entry) for key, entry in manifest["models"].items()}
        if json.dumps(manifest, sort_keys=True) == before and os.path.exists(path):
            return False
        write_json_atomic(path, manifest, mode=FILE_MODE)
        return True


# ---------------------------------------------------------------------------
# The download itself


def _staged_ok(staging, state, remote):
    entry = state.get(remote.path)
    if not entry or entry.get("identity") != remote.identity or not remote.identity:
        return None
    try:
        if os.path.getsize(os.path.join(staging, remote.path)) != entry["size"]:
            return None
    except OSError:
        return None
    return entry


def _part_path(staging, remote):
    key = hashlib.sha256((remote.path + "\0" + remote.identity).encode()).hexdigest()[:32]
    return os.path.join(staging, PARTIAL_DIR, key + ".part")


def _download_one(source, plan, staging, remote, progress, state, state_lock):
    """Fetch one file into staging, resuming a partial copy, and verify it. Returns its record entry."""
    entry = _staged_ok(staging, state, remote)
    if entry is not None:
        progress.add(entry["size"], transferred=False)
        progress.file_done()
        return entry, 0

    part = _part_path(staging, remote)
    final = os.path.join(staging, remote.path)
    resume_from = os.path.getsize(part) if os.path.exists(part) else 0
    if remote.size is not None and resume_from > remote.size:
        os.unlink(part)
        resume_from = 0
    sha1_prefix = b"blob %d\0" % remote.size if remote.verify == VERIFY_GIT_BLOB else None
    with PartFile(part) as handle:
        writer = HashingWriter(handle, resume_from, progress, sha1_prefix=sha1_prefix)
        if resume_from:
            writer.prime(part, resume_from)
            progress.add(resume_from, transferred=False)
        elif sha1_prefix is not None:
            writer.sha1 = hashlib.sha1(sha1_prefix)  # noqa: S324 - git's object id
        progress.track(writer)
        try:
            source.fetch(remote, writer, resume_from, plan.version)
        finally:
            progress.retire(writer)
    size = os.path.getsize(part)
    sha256 = writer.sha256.hexdigest()
    problem = None
    if remote.size is not None and size != remote.size:
        problem = "size %d, expected %d" % (size, remote.size)
    elif remote.verify == VERIFY_GIT_BLOB and writer.sha1.hexdigest() != remote.git_oid:
        problem = "git blob sha1 %s, expected %s" % (writer.sha1.hexdigest(), remote.git_oid)
    elif remote.sha256 and sha256 != remote.sha256:
        problem = "sha256 %s, expected %s (%s)" % (sha256, remote.sha256, remote.verify)
    if problem:
        os.unlink(part)
        raise ModelCacheError("checksum mismatch for %s: %s; the file was deleted" % (remote.path, problem))
    os.makedirs(os.path.dirname(final), exist_ok=True)
    os.chmod(part, FILE_MODE)
    os.replace(part, final)
    entry = {
        "path": remote.path,
        "size": size,
        "sha256": sha256,
        "verified_with": remote.verify,
        "identity": remote.identity,
    }
    if remote.git_oid:
        entry["git_oid"] = remote.git_oid
    with state_lock:
        state[remote.path] = entry
        write_json_atomic(
            os.path.join(staging, STAGING_STATE), {"version": plan.version, "files": state}, mode=0o600, sync=False
        )
    progress.file_done()
    return entry, size - resume_from


def _prune(staging, keep):
    """Delete what an earlier, different plan left in staging, so that the model holds its files only."""
    for dirpath, _dirnames, filenames in os.walk(staging, topdown=False):
        for filename in filenames:
            path = os.path.join(dirpath, filename)
            if os.path.relpath(path, staging) not in keep:
                os.unlink(path)
        if dirpath != staging and not os.listdir(dirpath):
            os.rmdir(dirpath)


def _install(staging, target, root):
    """Put the verified staging tree in place of ``target`` (renames on one filesystem)."""
    make_read_only(staging)
    if os.path.lexists(target):
        old = os.path.join(root, STAGING_DIR, ".old-%s-%d" % (os.path.basename(target), os.getpid()))
        remove_tree(old)
        if os.path.isdir(target):
            os.chmod(target, 0o700)
        os.rename(target, old)
        os.rename(staging, target)
        remove_tree(old)
    else:
        os.rename(staging, target)
    with contextlib.suppress(OSError):
        fd = os.open(root, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class Result(dict):
    """What ``ensure_model`` did, in the shape the module returns."""


def ensure_model(
    source,
    root,
    name=None,
    check_mode=False,
    verify_checksums=False,
    disk_margin=0,
    max_workers=8,
    progress_path=None,
    free_space=None,
):
    """Make ``<root>/<name>`` hold the source's files, verified; return a ``Result``.

    ``free_space`` overrides the free bytes measured on the filesystem
    (tests). Raises ``ModelCacheError`` with a message naming the problem.
    """
    name = name or source.default_name
    if not MODEL_NAME.match(name):
        raise ModelCacheError("model name %r is not a plain directory name" % (name,))
    root = os.path.abspath(root)
    target = os.path.join(root, name)
    progress = Progress(name, progress_path)
    result = Result(changed=False, name=name, path=target, downloaded_bytes=0, downloaded_files=[])
    try:
        _ensure(
            source,
            root,
            name,
            target,
            check_mode,
            verify_checksums,
            disk_margin,
            max_workers,
            progress,
            free_space,
            result,
        )
    except ModelCacheError as exc:
        progress.finish("failed", str(exc))
        raise
    except BaseException:
        progress.finish("failed", "interrupted")
        raise
    return result


def _unchanged(result, record, progress, message):
    result.update(
        version=record["version"],
        record=record,
        files=record["files"],
        total_bytes=sum(f["size"] for f in record["files"]),
    )
    progress.finish("unchanged", message)
    return result


def _rewrite_record(target, record):
    """Replace the record of an installed (read-only) model directory."""
    os.chmod(target, 0o700)
    try:
        write_json_atomic(os.path.join(target, RECORD_NAME), record, mode=FILE_MODE)
    finally:
        os.chmod(target, DIR_MODE)


def _ensure(source, root, name, target, check_mode, verify_checksums, disk_margin, workers, progress, free, result):
    record = load_record(target)
    cleaned = clean_record(record)
    redacted = cleaned is not record
    if redacted:
        # A record written with a URL's query string (a signature): rewritten without it.
        if not check_mode:
            _rewrite_record(target, cleaned)
        record = cleaned
    identity = source.identity()
    same_source = record is not None and record.get("identity") == identity
    intact = intact_files(target, record, verify_checksums) if same_source else set()
    local_ok = same_source and len(intact) == len(record.get("files", []))

    pinned = source.pinned_version()
    if local_ok and pinned is not None and record["version"] == pinned:
        # A full sha (or a url's sha256): trust the local record, ask nobody.
        result["changed"] = update_manifest(root, name, record, check_mode) or redacted
        return _unchanged(result, record, progress, "already present at %s (no network call)" % pinned[:12])

    plan = source.plan()
    result.update(version=plan.version, total_bytes=plan.total_bytes)
    if local_ok and record["version"] == plan.version:
        result["changed"] = update_manifest(root, name, record, check_mode) or redacted
        return _unchanged(result, record, progress, "already present at %s" % plan.version[:12])

    # Reuse files of the current copy whose content the new plan expects.
    current = {f["path"]: f for f in record["files"] if f["path"] in intact} if same_source else {}

    staging = os.path.join(root, STAGING_DIR, name)
    state_doc = read_json(os.path.join(staging, STAGING_STATE)) or {}
    state = state_doc.get("files") if isinstance(state_doc.get("files"), dict) else {}

    to_fetch = []
    reused = []
    partial = 0
    for remote in plan.files:
        entry = _staged_ok(staging, state, remote) if os.path.isdir(staging) else None
        if entry is not None:
            continue
        cur = current.get(remote.path)
        if cur is not None and cur.get("identity") == remote.identity and remote.identity:
            reused.append(remote)
            continue
        part = _part_path(staging, remote)
        if os.path.exists(part):
            partial += os.path.getsize(part)
        to_fetch.append(remote)

    needed = sum(f.size or 0 for f in to_fetch) - partial
    result["would_download"] = [f.path for f in to_fetch]
    result["would_download_bytes"] = max(needed, 0)
    result["changed"] = True
    if check_mode:
        progress.finish("done", "would download %d files (%s)" % (len(to_fetch), human_bytes(max(needed, 0))))
        result["files"] = [{"path": f.path, "size": f.size} for f in plan.files]
        return result

    os.makedirs(root, exist_ok=True)
    preflight_disk(root, max(needed, 0), disk_margin, "%s (%d files)" % (name, len(to_fetch)), free=free)

    os.makedirs(os.path.join(staging, PARTIAL_DIR), mode=0o700, exist_ok=True)
    os.chmod(os.path.join(root, STAGING_DIR), 0o700)
    for remote in reused:
        dst = os.path.join(staging, remote.path)
        if not os.path.exists(dst):
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            try:
                os.link(os.path.join(target, remote.path), dst)
            except OSError:
                shutil.copy2(os.path.join(target, remote.path), dst)
        cur = dict(current[remote.path])
        state[remote.path] = cur

    progress.plan(len(plan.files), plan.total_bytes)
    progress.start()
    entries = {}
    transferred = 0
    state_lock = threading.Lock()
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        futures = {
            pool.submit(_download_one, source, plan, staging, remote, progress, state, state_lock): remote
            for remote in plan.files
        }
        errors = []
        for future, remote in futures.items():
            try:
                entry, count = future.result()
            except ModelCacheError as exc:
                errors.append(str(exc))
                continue
            except Exception as exc:  # noqa: BLE001 - every file's failure is reported, by name
                errors.append("downloading %s failed: %s: %s" % (remote.path, type(exc).__name__, exc))
                continue
            entries[remote.path] = entry
            transferred += count
            if count:
                result["downloaded_files"].append(remote.path)
        if errors:
            raise ModelCacheError("; ".join(errors))

    files = [
        {
            k: entries[f.path][k]
            for k in ("path", "size", "sha256", "verified_with", "identity", "git_oid")
            if k in entries[f.path]
        }
        for f in plan.files
    ]
    new_record = {
        "format": RECORD_FORMAT,
        "name": name,
        "identity": identity,
        "source": source.kind,
        "version": plan.version,
        "files": files,
    }
    if source.kind == "hub":
        new_record.update(repo_id=source.repo_id, revision=source.revision, commit_sha=plan.version)
    elif source.kind == "s3":
        new_record.update(bucket=source.bucket, prefix=source.prefix)
    else:
        new_record.update(url=source.label)
    remove_tree(os.path.join(staging, PARTIAL_DIR))
    with contextlib.suppress(FileNotFoundError):
        os.unlink(os.path.join(staging, STAGING_STATE))
    _prune(staging, {f.path for f in plan.files})
    write_json_atomic(os.path.join(staging, RECORD_NAME), new_record, mode=FILE_MODE)
    _install(staging, target, root)
    update_manifest(root, name, new_record)
    with contextlib.suppress(OSError):
        os.rmdir(os.path.join(root, STAGING_DIR))  # only when no other download is staged

    result.update(
        record=new_record,
        files=files,
        downloaded_bytes=transferred,
        would_download=[],
        would_download_bytes=0,
    )
    progress.finish(
        "done",
        "downloaded %s in %d files at %s, verified"
        % (human_bytes(transferred), len(result["downloaded_files"]), plan.version[:12]),
    )
    return result
