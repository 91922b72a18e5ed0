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
from urllib.parse import urlsplit

from ansible_collections.burst.golden_ami.plugins.module_utils._files import CHUNK
from ansible_collections.burst.golden_ami.plugins.module_utils._model_record import (
    PARTIAL_DIR,
    RECORD_NAME,
    STAGING_STATE,
    ModelCacheError,
    model_dir_name,
    redact_url,
)
from ansible_collections.burst.golden_ami.plugins.module_utils._model_transfer import USER_AGENT, stream_http

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
