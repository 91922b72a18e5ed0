# Copyright: burst.golden_ami contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Where a model comes from: the Hugging Face Hub, an S3 prefix or one URL, and which of its files are wanted.

Private to this collection; part of the ``model_download`` module (see
``_model_cache``). A source lists its files at a pinned version (a ``Plan``
of ``RemoteFile``), each with the digest to check it against, and streams
one file into a writer. ``huggingface_hub`` and ``boto3`` are imported only
when a source needs them.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import fnmatch
import hashlib
import json
import os
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

from ansible_collections.burst.golden_ami.plugins.module_utils._files import CHUNK, read_json, write_json_atomic
from ansible_collections.burst.golden_ami.plugins.module_utils._model_record import (
    PARTIAL_DIR,
    RECORD_NAME,
    STAGING_STATE,
    ModelCacheError,
    model_dir_name,
    redact_url,
)
from ansible_collections.burst.golden_ami.plugins.module_utils._model_transfer import (
    FETCH_RETRIES,
    READ_SIZE,
    USER_AGENT,
    stream_http,
)

HEX40 = re.compile(r"^[0-9a-f]{40}$")
HEX64 = re.compile(r"^[0-9a-f]{64}$")

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

# S3 objects of at least this many bytes are fetched as ranged GETs by several threads, each range
# written at its offset in the partial file (as boto3's transfer manager does); smaller ones in one GET.
S3_RANGED_THRESHOLD = 64 * 1024 * 1024
# The size of one range, and how many ranges of one object are fetched at a time.
S3_PART_SIZE = 16 * 1024 * 1024
S3_PART_WORKERS = 8
# Next to a partial file written out of order: which ranges are complete. A partial file with this
# journal is never resumed from its size, only from the ranges it lists.
RANGES_SUFFIX = ".ranges"
# Seconds between two saves of the journal while ranges complete (each after an fdatasync of the data).
RANGES_SAVE_INTERVAL = 1.0


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
        model_dir_name({"repo_id": repo_id})  # validates
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
        return model_dir_name({"repo_id": self.repo_id})

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

    An object of ``ranged_threshold`` bytes or more is fetched in ranges of
    ``part_size`` bytes by ``part_workers`` threads (``Range`` and ``If-Match``
    its ETag on every GET), each range written at its offset in the partial
    file; the ranges are hashed in order as they complete, so the digest still
    covers the whole file. A journal next to the partial file lists the ranges
    complete; a partial file left by a one-GET download is resumed as the
    prefix it is.
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
        ranged_threshold=S3_RANGED_THRESHOLD,
        part_size=S3_PART_SIZE,
        part_workers=S3_PART_WORKERS,
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
        if part_size < 1 or part_workers < 1:
            raise ModelCacheError("part_size and part_workers of an s3 source must be positive")
        self.ranged_threshold = ranged_threshold
        self.part_size = part_size
        self.part_workers = part_workers

    @property
    def default_name(self):
        return model_dir_name({"source": self.kind, "prefix": self.prefix})

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
                from botocore.config import Config

                self._client = boto3.session.Session().client(
                    "s3",
                    # Several files at a time, each in up to part_workers ranges: keep their connections.
                    config=Config(max_pool_connections=max(10, 4 * self.part_workers)),
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

    def _label(self, remote):
        return "s3://%s/%s" % (self.bucket, remote.locator)

    def fetch(self, remote, writer, resume_from, version):
        from botocore.exceptions import BotoCoreError, ClientError

        part_path = getattr(writer, "path", None)
        journal = part_path + RANGES_SUFFIX if part_path else None
        ranged = (remote.size is not None and remote.etag and remote.size >= max(self.ranged_threshold, 1)) or bool(
            journal and os.path.exists(journal)
        )
        if ranged and journal:
            _RangedDownload(self, remote, writer, resume_from, journal).run()
            return
        if remote.size is not None and resume_from and resume_from >= remote.size:
            return  # every byte is there already (stopped before its check): the caller verifies them
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
            raise ModelCacheError("downloading %s failed: %s" % (self._label(remote), exc)) from exc
        except BotoCoreError as exc:
            raise ModelCacheError("downloading %s failed: %s" % (self._label(remote), exc)) from exc


class _ObjectChanged(Exception):
    """The object is no longer the one planned (another ETag, another size)."""


def _split(start, end, part_size):
    return [(offset, min(offset + part_size, end)) for offset in range(start, end, part_size)]


class _RangedDownload:
    """One S3 object fetched in ranges by several threads into its partial file, hashed in order.

    Invariants: the journal (``<part>.ranges``) is on the disk before any byte is written past the
    file's contiguous prefix, and lists only ranges whose bytes were written and flushed
    (``fdatasync``) before it was saved; it is deleted only once the file holds every byte. The
    writer's digests are fed from the file itself, range after range from the first byte, so what the
    caller checks is the whole file. A changed object (HTTP 412 on ``If-Match``, another ETag or
    length) deletes the partial file and its journal; any other failure keeps both for the next run.
    """

    def __init__(self, source, remote, writer, resume_from, journal):
        self.source = source
        self.remote = remote
        self.writer = writer
        self.resume_from = resume_from
        self.journal = journal
        self.path = writer.path
        self.size = remote.size
        self.label = source._label(remote)
        self._lock = threading.Condition()
        self._finished = set()
        self._errors = []
        self._abort = threading.Event()
        self._buffer = None

    # -- the journal

    def _layout(self):
        return {"etag": self.remote.etag, "size": self.size, "part_size": self.source.part_size}

    def _load(self, on_disk):
        """``(base, done)`` from a journal that fits this object and the file on disk, else None."""
        state = read_json(self.journal)
        if not isinstance(state, dict) or any(state.get(k) != v for k, v in self._layout().items()):
            return None
        base, done = state.get("base"), state.get("done")
        if not isinstance(base, int) or not isinstance(done, list) or not 0 <= base <= min(self.size, on_disk):
            return None
        ranges = _split(base, self.size, self.source.part_size)
        if not all(isinstance(i, int) and 0 <= i < len(ranges) and ranges[i][1] <= on_disk for i in done):
            return None
        return base, set(done)

    def _save(self, fd, base, done):
        os.fdatasync(fd)  # the bytes of every range listed reach the disk before the list does
        state = dict(self._layout(), base=base, done=sorted(done))
        write_json_atomic(self.journal, state, mode=0o600, sync=False)

    # -- the ranges

    def _get(self, index, start, end, fd):
        """Fetch bytes ``start`` to ``end`` (exclusive) into the file; retries a cut from the last byte."""
        from botocore.exceptions import BotoCoreError, ClientError

        offset = start
        failures = 0
        while offset < end:
            if self._abort.is_set():
                return False
            try:
                response = self.source.client().get_object(
                    Bucket=self.source.bucket,
                    Key=self.remote.locator,
                    IfMatch='"%s"' % self.remote.etag,
                    Range="bytes=%d-%d" % (offset, end - 1),
                )
                body = response["Body"]
                expected = "bytes %d-%d/%d" % (offset, end - 1, self.size)
                etag = (response.get("ETag") or "").strip('"')
                if response.get("ContentRange") != expected or (etag and etag != self.remote.etag):
                    body.close()
                    raise _ObjectChanged(
                        "S3 answered %s (ETag %s) for bytes=%d-%d, planned ETag %s and %d bytes"
                        % (
                            response.get("ContentRange") or "the whole object",
                            etag,
                            offset,
                            end - 1,
                            self.remote.etag,
                            self.size,
                        )
                    )
                with contextlib.closing(body):
                    while offset < end:
                        if self._abort.is_set():
                            return False
                        block = body.read(min(READ_SIZE, end - offset))
                        if not block:
                            break
                        view = memoryview(block)
                        while len(view):
                            count = os.pwrite(fd, view, offset)
                            offset += count
                            view = view[count:]
                        with self._lock:
                            self.writer.written += len(block)
                        failures = 0
                if offset < end:
                    raise OSError("the body ended %d bytes short" % (end - offset))
            except ClientError as exc:
                error = exc.response.get("Error", {})
                status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
                if status == 412 or error.get("Code") in ("PreconditionFailed", "412"):
                    raise _ObjectChanged(
                        "S3 refused bytes=%d-%d: its ETag is no longer %s (HTTP 412)"
                        % (offset, end - 1, self.remote.etag)
                    ) from exc
                raise ModelCacheError(
                    "downloading %s failed at bytes=%d-%d: %s" % (self.label, offset, end - 1, exc)
                ) from exc
            except (BotoCoreError, OSError) as exc:
                if failures >= FETCH_RETRIES:
                    raise ModelCacheError(
                        "downloading %s failed at bytes=%d-%d after %d tries: %s: %s"
                        % (self.label, offset, end - 1, failures + 1, type(exc).__name__, exc)
                    ) from exc
                failures += 1
                time.sleep(min(0.5 * failures, 5))
        return True

    def _work(self, index, start, end, fd):
        try:
            complete = self._get(index, start, end, fd)
        except BaseException as exc:  # noqa: BLE001 - handed to the thread that raises it, with its range
            with self._lock:
                self._errors.append((start, end, exc))
                self._abort.set()
                self._lock.notify_all()
            return
        if complete:
            with self._lock:
                self._finished.add(index)
                self._lock.notify_all()

    def _hash(self, fd, start, end):
        """Feed bytes ``start`` to ``end`` of the file to the writer's digests, through one reused buffer."""
        writer = self.writer
        if self._buffer is None:
            self._buffer = memoryview(bytearray(READ_SIZE))
        offset = start
        while offset < end:
            view = self._buffer[: min(READ_SIZE, end - offset)]
            count = os.preadv(fd, [view], offset)
            if not count:
                raise ModelCacheError("the partial file of %s ends at byte %d, before %d" % (self.label, offset, end))
            writer.sha256.update(view[:count])
            if writer.sha1 is not None:
                writer.sha1.update(view[:count])
            offset += count

    def run(self):
        on_disk = os.path.getsize(self.path)
        loaded = self._load(on_disk) if os.path.exists(self.journal) else None
        if loaded is not None:
            # Ranges written out of order: hash the file again from its first byte.
            base, done = loaded
            ranges = _split(base, self.size, self.source.part_size)
            self.writer.restart(base + sum(ranges[i][1] - ranges[i][0] for i in done))
            hashed = 0
        else:
            if os.path.exists(self.journal) or self.resume_from > self.size:
                # A journal for another layout, or a damaged one: the file's content is unknown.
                self.writer.restart(0)
                self.writer.truncate(0)
                base = 0
            else:
                base = self.resume_from  # a one-GET download's prefix, hashed by the writer already
            done = set()
            ranges = _split(base, self.size, self.source.part_size)
            write_json_atomic(self.journal, dict(self._layout(), base=base, done=[]), mode=0o600)
            hashed = base
        self._finished = set(done)
        write_fd = os.open(self.path, os.O_WRONLY | getattr(os, "O_CLOEXEC", 0))
        read_fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        todo = [i for i in range(len(ranges)) if i not in done]
        pool = ThreadPoolExecutor(max_workers=max(1, min(self.source.part_workers, len(todo) or 1)))
        try:
            for index in todo:
                pool.submit(self._work, index, ranges[index][0], ranges[index][1], write_fd)
            self._hash(read_fd, hashed, base)
            saved = set(done)
            last_save = time.monotonic()
            for index, (start, end) in enumerate(ranges):
                with self._lock:
                    while index not in self._finished and not self._errors:
                        self._lock.wait(1.0)
                    if self._errors:
                        break
                self._hash(read_fd, start, end)
                if time.monotonic() - last_save >= RANGES_SAVE_INTERVAL:
                    with self._lock:
                        finished = set(self._finished)
                    if finished != saved:
                        self._save(write_fd, base, finished)
                        saved = finished
                    last_save = time.monotonic()
        except BaseException:
            self._abort.set()
            raise
        finally:
            if self._errors:
                self._abort.set()
            pool.shutdown(wait=True)
            try:
                self._finish(write_fd, base, ranges)
            finally:
                os.close(read_fd)
                os.close(write_fd)

    def _finish(self, write_fd, base, ranges):
        """Raise the first failure, keeping or deleting the partial file; on success drop the journal."""
        if self._errors:
            changed = [e for e in self._errors if isinstance(e[2], _ObjectChanged)]
            if changed:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.path)  # first the file, then the journal that describes it
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.journal)
                start, end, exc = changed[0]
                raise ModelCacheError(
                    "%s changed while downloading: %s; the partial file was deleted" % (self.label, exc)
                ) from exc
            self._save(write_fd, base, self._finished)
            start, end, exc = self._errors[0]
            if isinstance(exc, ModelCacheError):
                raise exc
            raise ModelCacheError(
                "downloading %s failed at bytes=%d-%d: %s: %s" % (self.label, start, end - 1, type(exc).__name__, exc)
            ) from exc
        if len(self._finished) < len(ranges):
            # Interrupted (the caller's exception propagates): keep what is complete for the next run.
            self._save(write_fd, base, self._finished)
            return
        if os.fstat(write_fd).st_size != self.size:
            raise ModelCacheError(
                "the partial file of %s holds %d bytes after every range, not %d"
                % (self.label, os.fstat(write_fd).st_size, self.size)
            )
        os.unlink(self.journal)


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
        return model_dir_name({"source": self.kind})

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
