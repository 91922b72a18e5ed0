"""A local stand-in for the part of the Hugging Face Hub that model downloads use.

``HubMirror`` serves, on 127.0.0.1, the endpoints that huggingface_hub 1.x calls
from ``snapshot_download`` and ``hf_hub_download``:

- ``GET /api/models/{org}/{name}`` and ``.../revision/{revision}``: repo info
  (``sha``, ``siblings`` with sizes and LFS metadata). ``snapshot_download``
  calls it to turn a branch or tag into a commit; a 40-hex revision skips it.
- ``GET /api/models/{org}/{name}/tree/{revision}[/{path}]``: the file listing
  (``recursive``), which ``snapshot_download`` reads to know what to fetch.
- ``GET /api/models/{org}/{name}/refs``: branches and tags.
- ``HEAD``/``GET /{org}/{name}/resolve/{revision}/{path}``: file metadata
  (``X-Repo-Commit``, ``ETag``, ``X-Linked-Etag``, ``X-Linked-Size``) and bytes,
  with ``Range`` support (``206``/``416``), which the client uses to resume.

The mirror never sends Xet headers (``X-Xet-Hash``, ``xet-auth`` links) nor
``xetHash`` in tree listings, so the client always downloads over plain HTTP.
Errors carry the Hub's ``X-Error-Code`` (``RepoNotFound``, ``RevisionNotFound``,
``EntryNotFound``) so the client raises its own typed errors.

Model files are generated, never stored: JSON files are built in memory, weight
files are deterministic pseudo-random bytes produced block by block (a 1 MiB
SHAKE-128 block per file, rotated and stamped with a BLAKE2 digest per block),
so a multi-GiB repo costs one hashing pass and no memory. Safetensors files
carry a valid header (one ``U8`` tensor) before the generated data.

Faults are set per file at run time: ``corrupt`` (served bytes differ from the
advertised sha256), ``drop_after`` (the connection closes mid-body), and
``set_token`` (a bearer token is required). Every request is logged without its
credentials, so a test can assert what was, or was not, transferred.

Run it on its own with ``python -m localworld.hub_mirror --stand-ins`` (from
``tests/``): it prints one JSON line with its endpoint, then serves until
SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import ipaddress
import json
import os
import re
import signal
import socket
import struct
import sys
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterator, Sequence
from urllib.parse import parse_qs, unquote, urlsplit

__all__ = [
    "STAND_IN_EMBEDDING",
    "STAND_IN_LLM",
    "HubMirror",
    "MirrorFile",
    "ModelRepo",
    "RequestRecord",
    "add_stand_ins",
    "main",
    "parse_size",
]

BLOCK_SIZE = 1 << 20
# Files the Hub stores in LFS: by suffix (as in the default .gitattributes) or by size.
LFS_SUFFIXES = (".safetensors", ".bin", ".onnx", ".pt", ".pth", ".h5", ".msgpack", ".gguf", ".ckpt")
LFS_MIN_SIZE = 10 * 1024 * 1024
KINDS = ("llm", "embedding")
STAND_IN_LLM = "stand-in/tiny-llm"
STAND_IN_EMBEDDING = "stand-in/tiny-e5"

_COMMIT_RE = re.compile(r"[0-9a-f]{40}")
_REF_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]{0,99}")
_REPO_PART_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}")
_RANGE_RE = re.compile(r"bytes=(\d*)-(\d*)")
_SIZE_RE = re.compile(r"(\d+)\s*(b|kib|mib|gib|k|m|g)?", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "b": 1, "k": 1 << 10, "kib": 1 << 10, "m": 1 << 20, "mib": 1 << 20, "g": 1 << 30, "gib": 1 << 30}
_LFS_POINTER = "version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n"


def parse_size(text: str) -> int:
    """Return a byte count from ``1048576``, ``512KiB``, ``3MiB`` or ``2GiB`` (K, M, G are binary too)."""
    match = _SIZE_RE.fullmatch(str(text).strip())
    if match is None:
        raise ValueError(f"invalid size {text!r}: expected a byte count such as 1048576, 512KiB, 3MiB or 2GiB")
    return int(match.group(1)) * _SIZE_UNITS[(match.group(2) or "").lower()]


def _git_blob_sha1(chunks: Iterator[bytes], size: int) -> str:
    digest = hashlib.sha1(b"blob %d\0" % size, usedforsecurity=False)
    for chunk in chunks:
        digest.update(chunk)
    return digest.hexdigest()


def _json_bytes(data: object) -> bytes:
    return (json.dumps(data, indent=2, sort_keys=True) + "\n").encode()


class _StaticContent:
    """Bytes held in memory (configs, tokenizer files)."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.size = len(data)

    def iter_range(self, start: int, end: int) -> Iterator[bytes]:
        for pos in range(start, end, BLOCK_SIZE):
            yield self.data[pos : min(end, pos + BLOCK_SIZE)]


class _GeneratedContent:
    """Deterministic pseudo-random bytes after an optional fixed header, produced block by block."""

    def __init__(self, seed: bytes, size: int, header: bytes = b"") -> None:
        if size < len(header):
            raise ValueError(f"generated file of {size} bytes cannot hold its {len(header)}-byte header")
        self.size = size
        self._seed = seed
        self._header = header
        self._base = hashlib.shake_128(b"hub-mirror base\0" + seed).digest(BLOCK_SIZE)

    def _block(self, index: int) -> bytes:
        stamp = hashlib.blake2b(self._seed + index.to_bytes(8, "little"), digest_size=32).digest()
        shift = int.from_bytes(stamp[:4], "little") % BLOCK_SIZE
        rotated = self._base[shift:] + self._base[:shift]
        return stamp + rotated[len(stamp) :]

    def iter_range(self, start: int, end: int) -> Iterator[bytes]:
        header_len = len(self._header)
        if start < header_len:
            yield self._header[start : min(end, header_len)]
            start = header_len
        pos = start - header_len
        stop = end - header_len
        while pos < stop:
            index, offset = divmod(pos, BLOCK_SIZE)
            piece = self._block(index)[offset : offset + (stop - pos)]
            yield piece
            pos += len(piece)


class MirrorFile:
    """One file of a repo: its size, digests and bytes (``iter_range``)."""

    def __init__(self, path: str, content: _StaticContent | _GeneratedContent, lfs: bool | None = None) -> None:
        self.path = path
        self.size = content.size
        self._content = content
        self.lfs = lfs if lfs is not None else (path.endswith(LFS_SUFFIXES) or self.size >= LFS_MIN_SIZE)
        digest = hashlib.sha256()
        for chunk in content.iter_range(0, self.size):
            digest.update(chunk)
        #: sha256 of the content: the ETag of an LFS file, and what ``lfs.sha256`` advertises.
        self.sha256 = digest.hexdigest()
        if self.lfs:
            pointer = _LFS_POINTER.format(sha256=self.sha256, size=self.size).encode()
            self.pointer_size: int | None = len(pointer)
            #: git blob id: of the LFS pointer for LFS files, of the content otherwise (as on the Hub).
            self.git_oid = _git_blob_sha1(iter([pointer]), len(pointer))
        else:
            self.pointer_size = None
            self.git_oid = _git_blob_sha1(content.iter_range(0, self.size), self.size)

    @property
    def etag(self) -> str:
        """The ETag the Hub gives this file: sha256 for LFS files, the git blob id otherwise."""
        return self.sha256 if self.lfs else self.git_oid

    def iter_range(self, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        """Yield the bytes in ``[start, end)`` in chunks of at most 1 MiB."""
        return self._content.iter_range(start, self.size if end is None else end)

    def read(self) -> bytes:
        """The whole content (use on small files)."""
        return b"".join(self.iter_range())

    def __repr__(self) -> str:
        return f"MirrorFile({self.path!r}, size={self.size}, lfs={self.lfs})"


@dataclass(frozen=True)
class Commit:
    """One commit of a repo, with the ref it was created for."""

    sha: str
    index: int
    ref: str
    date: str
    files: dict[str, MirrorFile]


class ModelRepo:
    """A generated model repo: its commits (oldest first) and refs."""

    def __init__(self, repo_id: str, kind: str, commits: list[Commit]) -> None:
        self.repo_id = repo_id
        self.kind = kind
        self.commits = commits
        self.refs = {commit.ref: commit for commit in commits}
        self._by_sha = {commit.sha: commit for commit in commits}

    def resolve(self, revision: str) -> Commit | None:
        """The commit a ref name or a full commit sha points to, or None."""
        return self.refs.get(revision) or self._by_sha.get(revision)

    def commit(self, revision: str = "main") -> Commit:
        """Like ``resolve``, but raise KeyError naming the unknown revision."""
        commit = self.resolve(revision)
        if commit is None:
            raise KeyError(f"{self.repo_id} has no revision {revision!r} (refs: {', '.join(self.refs)})")
        return commit

    def files(self, revision: str = "main") -> dict[str, MirrorFile]:
        """Path to file, at a revision."""
        return self.commit(revision).files

    def __repr__(self) -> str:
        return f"ModelRepo({self.repo_id!r}, kind={self.kind!r}, refs={list(self.refs)})"


@dataclass
class RequestRecord:
    """One request the mirror answered. Credentials are never recorded, only whether some were sent."""

    method: str
    path: str
    query: str
    endpoint: str = "unknown"  # model_info, tree, refs, resolve, unknown
    repo_id: str | None = None
    revision: str | None = None
    filename: str | None = None
    range: str | None = None
    auth_header: bool = False
    status: int = 0
    bytes_sent: int = 0
    dropped: bool = False
    aborted: bool = False


def _validate_repo_id(repo_id: str) -> tuple[str, str]:
    parts = repo_id.split("/") if isinstance(repo_id, str) else []
    if len(parts) != 2 or not all(_REPO_PART_RE.fullmatch(part) for part in parts):
        raise ValueError(f"invalid repo_id {repo_id!r}: expected 'org/name' (letters, digits, '.', '_', '-')")
    return parts[0], parts[1]


def _ref_names(revisions: int | Sequence[str]) -> list[str]:
    if isinstance(revisions, int) and not isinstance(revisions, bool):
        if revisions < 1:
            raise ValueError(f"revisions must be at least 1, got {revisions}")
        return [f"v{index}" for index in range(1, revisions)] + ["main"]
    if isinstance(revisions, str) or not isinstance(revisions, Sequence):
        raise ValueError(f"revisions must be a count or a list of ref names, got {revisions!r}")
    names = list(revisions)
    for name in names:
        if not isinstance(name, str) or not _REF_RE.fullmatch(name) or _COMMIT_RE.fullmatch(name):
            raise ValueError(f"invalid ref name {name!r} in revisions")
    if len(set(names)) != len(names):
        raise ValueError(f"revisions has duplicate ref names: {names}")
    if "main" not in names:
        raise ValueError(f"revisions must include 'main' (the client's default revision), got {names}")
    return names


def _safetensors_content(seed: bytes, size: int, tensor: str) -> tuple[_GeneratedContent, int]:
    """A safetensors file of exactly ``size`` bytes holding one U8 tensor; returns it and the tensor's byte count."""

    def header_json(data_len: int) -> bytes:
        header = {
            "__metadata__": {"format": "pt", "generator": "hub_mirror"},
            tensor: {"dtype": "U8", "shape": [data_len], "data_offsets": [0, data_len]},
        }
        return json.dumps(header, separators=(",", ":"), sort_keys=True).encode()

    # Reserve room for the longest header (data_len < size has no more digits than size), padded to 8 bytes.
    reserved = len(header_json(size))
    reserved += -reserved % 8
    data_len = size - 8 - reserved
    if data_len < 1:
        raise ValueError(f"a safetensors file needs more than {8 + reserved} bytes, got size {size}")
    raw = header_json(data_len).ljust(reserved, b" ")
    return _GeneratedContent(seed, size, struct.pack("<Q", reserved) + raw), data_len


def _seed(repo_id: str, path: str, size: int, seed: int) -> bytes:
    return hashlib.sha256(f"{repo_id}\0{path}\0{size}\0{seed}".encode()).digest()


def _weight_files(
    repo_id: str, shards: int, shard_size: int, kind: str, seed: int, pytorch_bin: bool, onnx: bool
) -> dict[str, MirrorFile]:
    files: dict[str, MirrorFile] = {}
    prefix = "model" if kind == "llm" else "encoder"
    weight_map: dict[str, str] = {}
    total = 0
    for index in range(1, shards + 1):
        name = "model.safetensors" if shards == 1 else f"model-{index:05d}-of-{shards:05d}.safetensors"
        tensor = f"{prefix}.layers.{index - 1}.weight"
        content, data_len = _safetensors_content(_seed(repo_id, name, shard_size, seed), shard_size, tensor)
        files[name] = MirrorFile(name, content)
        weight_map[tensor] = name
        total += data_len
    if shards > 1:
        index_doc = {"metadata": {"total_size": total}, "weight_map": weight_map}
        files["model.safetensors.index.json"] = MirrorFile(
            "model.safetensors.index.json", _StaticContent(_json_bytes(index_doc))
        )
    # Other formats real repos carry next to safetensors; random bytes, here to exercise file filters.
    aux_size = max(1024, min(shard_size, BLOCK_SIZE))
    if pytorch_bin:
        files["pytorch_model.bin"] = MirrorFile(
            "pytorch_model.bin", _GeneratedContent(_seed(repo_id, "pytorch_model.bin", aux_size, seed), aux_size)
        )
    if onnx:
        files["onnx/model.onnx"] = MirrorFile(
            "onnx/model.onnx", _GeneratedContent(_seed(repo_id, "onnx/model.onnx", aux_size, seed), aux_size)
        )
    return files


def _static_files(repo_id: str, kind: str) -> dict[str, MirrorFile]:
    """Files that do not change between commits."""
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, "<pad>": 3, "stand": 4, "in": 5, "model": 6, "query": 7, "passage": 8}
    tokenizer = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [
            {
                "id": token_id,
                "content": token,
                "single_word": False,
                "lstrip": False,
                "rstrip": False,
                "normalized": False,
                "special": True,
            }
            for token, token_id in list(vocab.items())[:4]
        ],
        "normalizer": None,
        "pre_tokenizer": {"type": "Whitespace"},
        "post_processor": None,
        "decoder": None,
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "<unk>"},
    }
    special = {"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>"}
    tokenizer_config = {
        **special,
        "model_max_length": 512 if kind == "embedding" else 4096,
        "tokenizer_class": "PreTrainedTokenizerFast",
        "clean_up_tokenization_spaces": False,
    }
    gitattributes = (
        "".join(f"*{suffix} filter=lfs diff=lfs merge=lfs -text\n" for suffix in LFS_SUFFIXES)
        + "tokenizer.json filter=lfs diff=lfs merge=lfs -text\n"
    )
    readme = (
        "---\nlicense: apache-2.0\ntags:\n- stand-in\n---\n\n"
        f"# {repo_id}\n\nA generated stand-in {kind} repository served by the local Hub mirror. "
        "Its weights are pseudo-random bytes: it exists to test downloads, not inference.\n"
    )
    docs: dict[str, bytes] = {
        ".gitattributes": gitattributes.encode(),
        "README.md": readme.encode(),
        "tokenizer.json": _json_bytes(tokenizer),
        "tokenizer_config.json": _json_bytes(tokenizer_config),
        "special_tokens_map.json": _json_bytes(special),
    }
    if kind == "embedding":
        docs["modules.json"] = _json_bytes(
            [
                {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
                {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
                {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
            ]
        )
        docs["1_Pooling/config.json"] = _json_bytes(
            {
                "word_embedding_dimension": 64,
                "pooling_mode_cls_token": False,
                "pooling_mode_mean_tokens": True,
                "pooling_mode_max_tokens": False,
                "pooling_mode_mean_sqrt_len_tokens": False,
                "pooling_mode_weightedmean_tokens": False,
                "pooling_mode_lasttoken": False,
                "include_prompt": True,
            }
        )
        docs["sentence_bert_config.json"] = _json_bytes({"max_seq_length": 512, "do_lower_case": False})
        docs["config_sentence_transformers.json"] = _json_bytes(
            {
                "__version__": {"sentence_transformers": "3.0.0", "transformers": "4.41.0", "pytorch": "2.3.0"},
                "prompts": {"query": "query: ", "passage": "passage: "},
                "default_prompt_name": None,
                "similarity_fn_name": "cosine",
            }
        )
    # tokenizer.json is LFS on many real repos (large vocabularies); keep that shape.
    return {
        path: MirrorFile(path, _StaticContent(data), lfs=True if path == "tokenizer.json" else None)
        for path, data in docs.items()
    }


def _commit_files(repo_id: str, kind: str, index: int, ref: str) -> dict[str, MirrorFile]:
    """Files that differ between commits: config.json, and generation_config.json for an LLM."""
    stamp = {"commit_index": index, "ref": ref}
    docs: dict[str, bytes] = {}
    if kind == "llm":
        docs["config.json"] = _json_bytes(
            {
                "_name_or_path": repo_id,
                "architectures": ["StandInForCausalLM"],
                "model_type": "stand-in",
                "torch_dtype": "uint8",
                "vocab_size": 9,
                "hidden_size": 64,
                "num_hidden_layers": 2,
                "max_position_embeddings": 2048 * (index + 1),
                "stand_in": stamp,
            }
        )
        docs["generation_config.json"] = _json_bytes(
            {"bos_token_id": 1, "eos_token_id": 2, "max_new_tokens": 256 * (index + 1), "stand_in": stamp}
        )
    else:
        docs["config.json"] = _json_bytes(
            {
                "_name_or_path": repo_id,
                "architectures": ["StandInModel"],
                "model_type": "stand-in",
                "torch_dtype": "uint8",
                "vocab_size": 9,
                "hidden_size": 64,
                "max_position_embeddings": 512 * (index + 1),
                "stand_in": stamp,
            }
        )
    return {path: MirrorFile(path, _StaticContent(data)) for path, data in docs.items()}


def build_repo(
    repo_id: str,
    *,
    shards: int = 1,
    shard_size: int | str = 4 << 20,
    kind: str = "llm",
    revisions: int | Sequence[str] = 1,
    pytorch_bin: bool = False,
    onnx: bool = False,
    seed: int = 0,
) -> ModelRepo:
    """Generate a repo (see ``HubMirror.add_model``). Hashes every file once, so a large repo takes a moment."""
    _validate_repo_id(repo_id)
    if kind not in KINDS:
        raise ValueError(f"invalid kind {kind!r}: expected one of {', '.join(KINDS)}")
    if isinstance(shards, bool) or not isinstance(shards, int) or not 1 <= shards <= 99999:
        raise ValueError(f"shards must be an integer from 1 to 99999, got {shards!r}")
    size = parse_size(shard_size) if isinstance(shard_size, str) else shard_size
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"shard_size must be a positive byte count, got {shard_size!r}")
    refs = _ref_names(revisions)
    shared = _static_files(repo_id, kind)
    shared.update(_weight_files(repo_id, shards, size, kind, seed, pytorch_bin, onnx))
    commits = []
    for index, ref in enumerate(refs):
        sha = hashlib.sha1(f"hub_mirror commit\0{repo_id}\0{index}\0{ref}\0{seed}".encode(), usedforsecurity=False)
        files = dict(shared)
        files.update(_commit_files(repo_id, kind, index, ref))
        date = f"2024-01-{index % 28 + 1:02d}T12:00:00.000Z"
        commits.append(Commit(sha.hexdigest(), index, ref, date, dict(sorted(files.items()))))
    return ModelRepo(repo_id, kind, commits)


class _Dropped(Exception):
    """The mirror closed the connection on purpose (``drop_after``)."""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "hub-mirror"
    sys_version = ""
    # Idle keep-alive connections are closed after this many seconds.
    timeout = 60
    server: _Server

    def do_GET(self) -> None:
        self._handle(head=False)

    def do_HEAD(self) -> None:
        self._handle(head=True)

    def _method_not_allowed(self) -> None:
        self._handle(head=False, allowed=False)

    do_POST = do_PUT = do_DELETE = do_PATCH = _method_not_allowed

    def version_string(self) -> str:
        return self.server_version

    def log_message(self, format: str, *args: object) -> None:
        """Requests are kept in ``HubMirror.requests()`` instead of stderr."""

    def _handle(self, *, head: bool, allowed: bool = True) -> None:
        split = urlsplit(self.path)
        record = RequestRecord(
            method=self.command,
            path=split.path,
            query=split.query,
            range=self.headers.get("Range"),
            auth_header=self.headers.get("Authorization") is not None,
        )
        mirror = self.server.mirror
        mirror._begin()
        try:
            if not allowed:
                self.close_connection = True  # its body, if any, is left unread
                self._send_json(record, 405, {"error": f"{self.command} is not served by this mirror"}, head=False)
            else:
                self._route(record, split.path, parse_qs(split.query), head)
        except _Dropped:
            record.dropped = True
            self.close_connection = True
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            record.aborted = True
            self.close_connection = True
        finally:
            mirror._finish(record)

    # Routing

    def _route(self, record: RequestRecord, path: str, query: dict[str, list[str]], head: bool) -> None:
        parts = path.split("/")[1:]
        if len(parts) >= 4 and parts[0] == "api" and parts[1] == "models":
            record.repo_id = f"{unquote(parts[2])}/{unquote(parts[3])}"
            rest = parts[4:]
            if not rest:
                record.endpoint = "model_info"
                record.revision = "main"
            elif rest[0] == "revision" and len(rest) == 2:
                record.endpoint = "model_info"
                record.revision = unquote(rest[1])
            elif rest[0] == "tree" and len(rest) >= 2:
                record.endpoint = "tree"
                record.revision = unquote(rest[1])
                record.filename = unquote("/".join(rest[2:])).strip("/")
            elif rest == ["refs"]:
                record.endpoint = "refs"
            else:
                self._send_error(record, 404, None, "Not Found", head=head)
                return
        elif len(parts) >= 2 and parts[0] == "api" and parts[1] in ("datasets", "spaces", "kernels"):
            self._send_error(record, 404, "RepoNotFound", "Repository not found (this mirror holds models)", head)
            return
        elif len(parts) >= 5 and parts[2] == "resolve" and parts[0] not in ("api", "datasets", "spaces"):
            record.endpoint = "resolve"
            record.repo_id = f"{unquote(parts[0])}/{unquote(parts[1])}"
            record.revision = unquote(parts[3])
            record.filename = unquote("/".join(parts[4:]))
        elif parts and parts[0] in ("datasets", "spaces"):
            self._send_error(record, 404, "RepoNotFound", "Repository not found (this mirror holds models)", head)
            return
        else:
            self._send_error(record, 404, None, "Not Found", head=head)
            return

        mirror = self.server.mirror
        repo = mirror._repo(record.repo_id)
        if repo is None:
            self._send_error(record, 404, "RepoNotFound", "Repository not found", head)
            return
        if not self._authorized(record, repo.repo_id):
            return
        if record.endpoint == "refs":
            self._send_json(record, 200, _refs_doc(repo), head)
            return
        commit = repo.resolve(record.revision or "")
        if commit is None:
            self._send_error(record, 404, "RevisionNotFound", f"Invalid rev id: {record.revision}", head)
            return
        if record.endpoint == "model_info":
            private = mirror._token_for(repo.repo_id) is not None
            self._send_json(record, 200, _model_info_doc(repo, commit, private, query.get("expand")), head)
        elif record.endpoint == "tree":
            recursive = query.get("recursive", ["false"])[-1].lower() in ("1", "true")
            entries = _tree_doc(commit, record.filename or "", recursive)
            if entries is None:
                self._send_error(record, 404, "EntryNotFound", f"{record.filename} does not exist", head, commit)
            else:
                self._send_json(record, 200, entries, head)
        else:
            mirror_file = commit.files.get(record.filename or "")
            if mirror_file is None:
                self._send_error(record, 404, "EntryNotFound", "Entry not found", head, commit)
            else:
                self._send_file(record, repo, commit, mirror_file, head)

    def _authorized(self, record: RequestRecord, repo_id: str) -> bool:
        expected = self.server.mirror._token_for(repo_id)
        if expected is None:
            return True
        header = self.headers.get("Authorization")
        if header is None:
            # What the Hub answers an anonymous request for a private repo.
            self._send_error(record, 401, "RepoNotFound", "Invalid username or password.", head=self.command == "HEAD")
            return False
        scheme, _sep, token = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), expected.encode()):
            self._send_error(
                record, 401, None, "Invalid credentials in Authorization header", head=self.command == "HEAD"
            )
            return False
        return True

    # Responses

    def _send_json(self, record: RequestRecord, status: int, doc: object, head: bool, headers: dict | None = None):
        body = json.dumps(doc).encode()
        record.status = status
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if not head:
            self.wfile.write(body)
            record.bytes_sent = len(body)

    def _send_error(
        self,
        record: RequestRecord,
        status: int,
        code: str | None,
        message: str,
        head: bool,
        commit: Commit | None = None,
    ) -> None:
        headers = {"X-Error-Message": message}
        if code is not None:
            headers["X-Error-Code"] = code
        if commit is not None:
            headers["X-Repo-Commit"] = commit.sha
        self._send_json(record, status, {"error": message}, head, headers)

    def _send_file(self, record: RequestRecord, repo: ModelRepo, commit: Commit, item: MirrorFile, head: bool) -> None:
        start, end, status = 0, item.size, 200
        if record.range is not None:
            parsed = _parse_range(record.range, item.size)
            if parsed == "unsatisfiable":
                message = f"Range {record.range} not satisfiable"
                headers = {"X-Error-Message": message, "X-Repo-Commit": commit.sha}
                headers["Content-Range"] = f"bytes */{item.size}"
                self._send_json(record, 416, {"error": message}, head, headers)
                return
            if parsed is not None:
                start, end = parsed
                status = 206
        record.status = status
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(end - start))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("ETag", f'"{item.etag}"')
        self.send_header("X-Repo-Commit", commit.sha)
        if item.lfs:
            self.send_header("X-Linked-Etag", f'"{item.sha256}"')
            self.send_header("X-Linked-Size", str(item.size))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end - 1}/{item.size}")
        self.end_headers()
        if head:
            return
        mirror = self.server.mirror
        drop_at, corrupt = mirror._take_faults(repo.repo_id, item.path)
        flip = item.size // 2 if corrupt else -1
        pos = start
        for chunk in item.iter_range(start, end):
            if pos <= flip < pos + len(chunk):
                chunk = bytearray(chunk)
                chunk[flip - pos] ^= 0xFF
            if drop_at is not None and record.bytes_sent + len(chunk) >= drop_at:
                self.wfile.write(chunk[: drop_at - record.bytes_sent])
                record.bytes_sent = drop_at
                self.wfile.flush()
                self.connection.shutdown(socket.SHUT_RDWR)
                raise _Dropped
            self.wfile.write(chunk)
            record.bytes_sent += len(chunk)
            pos += len(chunk)


def _parse_range(header: str, size: int) -> tuple[int, int] | str | None:
    """``(start, end)`` (end exclusive), ``"unsatisfiable"``, or None to ignore the header (several ranges)."""
    match = _RANGE_RE.fullmatch(header.strip())
    if match is None:
        return None
    first, last = match.groups()
    if not first and not last:
        return None
    if not first:
        suffix = int(last)
        if suffix == 0:
            return "unsatisfiable"
        return max(0, size - suffix), size
    start = int(first)
    end = size if not last else min(size, int(last) + 1)
    if start >= size or end <= start:
        return "unsatisfiable"
    return start, end


def _model_info_doc(repo: ModelRepo, commit: Commit, private: bool, expand: list[str] | None) -> dict:
    siblings = []
    used = 0
    parameters = 0
    for item in commit.files.values():
        sibling: dict = {"rfilename": item.path, "size": item.size, "blobId": item.git_oid}
        if item.lfs:
            sibling["lfs"] = {"sha256": item.sha256, "size": item.size, "pointerSize": item.pointer_size}
        siblings.append(sibling)
        used += item.size
        if item.path.endswith(".safetensors"):
            parameters += item.size
    org = repo.repo_id.split("/")[0]
    config = json.loads(commit.files["config.json"].read())
    doc = {
        "_id": hashlib.sha256(repo.repo_id.encode()).hexdigest()[:24],
        "id": repo.repo_id,
        "modelId": repo.repo_id,
        "author": org,
        "sha": commit.sha,
        "lastModified": commit.date,
        "createdAt": repo.commits[0].date,
        "private": private,
        "gated": False,
        "disabled": False,
        "downloads": 0,
        "likes": 0,
        "library_name": "transformers" if repo.kind == "llm" else "sentence-transformers",
        "pipeline_tag": "text-generation" if repo.kind == "llm" else "feature-extraction",
        "tags": ["stand-in", "safetensors", repo.kind],
        "config": {"architectures": config["architectures"], "model_type": config["model_type"]},
        "safetensors": {"parameters": {"U8": parameters}, "total": parameters},
        "usedStorage": used,
        "siblings": siblings,
    }
    if expand:
        keep = {"_id", "id", *expand}
        doc = {key: value for key, value in doc.items() if key in keep}
    return doc


def _tree_doc(commit: Commit, path: str, recursive: bool) -> list[dict] | None:
    """The /tree listing under ``path``, or None when ``path`` is not a folder of the commit."""
    folders = sorted(
        {
            "/".join(parts[:depth])
            for parts in (item.path.split("/") for item in commit.files.values())
            for depth in range(1, len(parts))
        }
    )
    if path and path not in folders:
        return None
    prefix = f"{path}/" if path else ""
    entries: list[dict] = []
    for folder in folders:
        rel = folder[len(prefix) :] if folder.startswith(prefix) else None
        if rel and (recursive or "/" not in rel):
            oid = hashlib.sha1(f"tree\0{commit.sha}\0{folder}".encode(), usedforsecurity=False).hexdigest()
            entries.append({"type": "directory", "oid": oid, "size": 0, "path": folder})
    for item in commit.files.values():
        rel = item.path[len(prefix) :] if item.path.startswith(prefix) else None
        if rel and (recursive or "/" not in rel):
            entry: dict = {"type": "file", "oid": item.git_oid, "size": item.size, "path": item.path}
            if item.lfs:
                entry["lfs"] = {"oid": item.sha256, "size": item.size, "pointerSize": item.pointer_size}
            entries.append(entry)
    return entries


def _refs_doc(repo: ModelRepo) -> dict:
    def ref(commit: Commit, kind: str) -> dict:
        return {"name": commit.ref, "ref": f"refs/{kind}/{commit.ref}", "targetCommit": commit.sha}

    # "main" is the branch; the other refs name older commits, as release tags do.
    return {
        "branches": [ref(commit, "heads") for commit in repo.commits if commit.ref == "main"],
        "converts": [],
        "tags": [ref(commit, "tags") for commit in repo.commits if commit.ref != "main"],
    }


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    mirror: HubMirror


class HubMirror:
    """The local Hub mirror: generated model repos over HTTP on 127.0.0.1, with fault injection and a request log.

    Usage::

        with HubMirror() as hub:
            hub.add_model("stand-in/tiny-llm", shards=2, shard_size="3MiB", revisions=2)
            env = {**os.environ, **hub.env()}   # then run the real client with it
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        if host != "localhost":
            try:
                loopback = ipaddress.ip_address(host).is_loopback
            except ValueError:
                loopback = False
            if not loopback:
                raise ValueError(f"host {host!r} is not a loopback address: the mirror serves on loopback only")
        if not isinstance(port, int) or not 0 <= port <= 65535:
            raise ValueError(f"invalid port {port!r}")
        self._address = (host, port)
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._inflight = 0
        self._repos: dict[str, ModelRepo] = {}
        self._tokens: dict[str | None, str] = {}
        self._corrupt: set[tuple[str, str]] = set()
        self._drops: dict[tuple[str, str], list[int]] = {}
        self._log: list[RequestRecord] = []
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # Lifecycle

    def start(self) -> HubMirror:
        """Bind and serve in a background thread. Returns self."""
        if self._server is not None:
            raise RuntimeError("the mirror is already started")
        server = _Server(self._address, _Handler)
        server.mirror = self
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
        self._thread.name = f"hub-mirror-{server.server_address[1]}"
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and release the port. Safe to call twice."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def __enter__(self) -> HubMirror:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def endpoint(self) -> str:
        """``http://127.0.0.1:PORT``, the value for ``HF_ENDPOINT``."""
        if self._server is None:
            raise RuntimeError("the mirror is not started: call start() first")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def env(self) -> dict[str, str]:
        """Environment variables that point huggingface_hub at the mirror, over plain HTTP, without telemetry."""
        no_proxy = ",".join(
            part for part in (os.environ.get("NO_PROXY") or os.environ.get("no_proxy"), "127.0.0.1,localhost") if part
        )
        return {
            "HF_ENDPOINT": self.endpoint,
            "HF_HUB_DISABLE_TELEMETRY": "1",
            "HF_HUB_DISABLE_XET": "1",
            "NO_PROXY": no_proxy,
            "no_proxy": no_proxy,
        }

    # Content

    def add_model(
        self,
        repo_id: str,
        *,
        shards: int = 1,
        shard_size: int | str = 4 << 20,
        kind: str = "llm",
        revisions: int | Sequence[str] = 1,
        pytorch_bin: bool = False,
        onnx: bool = False,
        seed: int = 0,
    ) -> ModelRepo:
        """Generate and serve a model repo; replaces any repo of that id.

        ``shards`` safetensors files of ``shard_size`` bytes each (``model.safetensors`` when 1, else
        ``model-0000i-of-0000N.safetensors`` plus ``model.safetensors.index.json``), config and tokenizer
        files, and for ``kind="embedding"`` the sentence-transformers files (``modules.json``,
        ``1_Pooling/config.json``...). ``revisions``: a count N (refs ``v1``..``v{N-1}`` then ``main``, oldest
        first) or a list of ref names that includes ``main``; each ref gets its own commit, and commits differ
        in ``config.json`` (and ``generation_config.json``) while weights stay the same. ``pytorch_bin`` and
        ``onnx`` add ``pytorch_model.bin`` and ``onnx/model.onnx``.
        """
        repo = build_repo(
            repo_id,
            shards=shards,
            shard_size=shard_size,
            kind=kind,
            revisions=revisions,
            pytorch_bin=pytorch_bin,
            onnx=onnx,
            seed=seed,
        )
        with self._lock:
            self._repos[repo_id] = repo
        return repo

    def repo(self, repo_id: str) -> ModelRepo:
        """The repo served under ``repo_id``."""
        repo = self._repo(repo_id)
        if repo is None:
            raise KeyError(f"the mirror serves no repo {repo_id!r}")
        return repo

    def _repo(self, repo_id: str | None) -> ModelRepo | None:
        with self._lock:
            return self._repos.get(repo_id or "")

    # Faults

    def _file_key(self, repo_id: str, path: str) -> tuple[str, str]:
        repo = self.repo(repo_id)
        if not any(path in commit.files for commit in repo.commits):
            raise KeyError(f"{repo_id} has no file {path!r}")
        return repo_id, path

    def corrupt(self, repo_id: str, path: str, enabled: bool = True) -> None:
        """Serve ``path`` with one byte flipped (same size, same advertised sha256) until disabled."""
        key = self._file_key(repo_id, path)
        with self._lock:
            if enabled:
                self._corrupt.add(key)
            else:
                self._corrupt.discard(key)

    def drop_after(self, repo_id: str, path: str, nbytes: int, times: int = 1) -> None:
        """Close the connection after ``nbytes`` bytes of the response body, for the next ``times`` GETs."""
        key = self._file_key(repo_id, path)
        if isinstance(nbytes, bool) or not isinstance(nbytes, int) or nbytes < 0:
            raise ValueError(f"nbytes must be a byte count >= 0, got {nbytes!r}")
        if isinstance(times, bool) or not isinstance(times, int) or times < 1:
            raise ValueError(f"times must be >= 1, got {times!r}")
        with self._lock:
            self._drops[key] = [nbytes, times]

    def set_token(self, token: str | None, repo_id: str | None = None) -> None:
        """Require ``Authorization: Bearer <token>`` for ``repo_id`` (every repo when None); None lifts it."""
        if repo_id is not None:
            self.repo(repo_id)
        if token is not None and (not isinstance(token, str) or not token or any(c.isspace() for c in token)):
            raise ValueError("token must be a non-empty string without whitespace")
        with self._lock:
            if token is None:
                self._tokens.pop(repo_id, None)
            else:
                self._tokens[repo_id] = token

    def reset_faults(self) -> None:
        """Lift every corruption, pending drop and token requirement."""
        with self._lock:
            self._corrupt.clear()
            self._drops.clear()
            self._tokens.clear()

    def _token_for(self, repo_id: str) -> str | None:
        with self._lock:
            return self._tokens.get(repo_id, self._tokens.get(None))

    def _take_faults(self, repo_id: str, path: str) -> tuple[int | None, bool]:
        key = (repo_id, path)
        with self._lock:
            drop = self._drops.get(key)
            drop_at = None
            if drop is not None:
                drop_at = drop[0]
                drop[1] -= 1
                if drop[1] == 0:
                    del self._drops[key]
            return drop_at, key in self._corrupt

    # Request log

    def _begin(self) -> None:
        with self._lock:
            self._inflight += 1

    def _finish(self, record: RequestRecord) -> None:
        with self._lock:
            self._log.append(record)
            self._inflight -= 1
            self._idle.notify_all()

    def _settle(self, timeout: float) -> None:
        with self._idle:
            self._idle.wait_for(lambda: self._inflight == 0, timeout=timeout)

    def requests(self, since: int = 0, timeout: float = 5.0) -> list[RequestRecord]:
        """Finished requests, oldest first, from position ``since`` (see ``mark``); waits for in-flight ones."""
        self._settle(timeout)
        with self._lock:
            return list(self._log[since:])

    def mark(self, timeout: float = 5.0) -> int:
        """The current length of the request log, to pass as ``requests(since=...)`` later."""
        self._settle(timeout)
        with self._lock:
            return len(self._log)

    def __repr__(self) -> str:
        state = self.endpoint if self._server is not None else "stopped"
        return f"HubMirror({state}, repos={sorted(self._repos)})"


def add_stand_ins(mirror: HubMirror) -> dict[str, ModelRepo]:
    """Serve the stand-in repos the test world uses.

    - ``stand-in/tiny-llm``: 2 safetensors shards of 3 MiB, refs ``v1`` (older commit) and ``main``.
    - ``stand-in/tiny-e5``: an embedding repo, 1 shard of 2 MiB, plus ``pytorch_model.bin`` and
      ``onnx/model.onnx`` (to exercise allow and ignore patterns).
    """
    return {
        STAND_IN_LLM: mirror.add_model(STAND_IN_LLM, shards=2, shard_size=3 << 20, kind="llm", revisions=2),
        STAND_IN_EMBEDDING: mirror.add_model(
            STAND_IN_EMBEDDING, shards=1, shard_size=2 << 20, kind="embedding", pytorch_bin=True, onnx=True
        ),
    }


def _model_spec(text: str) -> dict:
    fields = text.split(":")
    if not 1 <= len(fields) <= 4:
        raise argparse.ArgumentTypeError(f"invalid --model {text!r}: expected ORG/NAME[:SHARDS[:SIZE[:KIND]]]")
    spec: dict = {"repo_id": fields[0]}
    try:
        _validate_repo_id(fields[0])
        if len(fields) > 1:
            spec["shards"] = int(fields[1])
        if len(fields) > 2:
            spec["shard_size"] = parse_size(fields[2])
        if len(fields) > 3:
            spec["kind"] = fields[3]
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"invalid --model {text!r}: {error}") from None
    return spec


def main(argv: Sequence[str] | None = None) -> int:
    """Serve generated repos until SIGTERM or SIGINT; print ``{"endpoint": ...}`` as one JSON line first."""
    parser = argparse.ArgumentParser(prog="python -m localworld.hub_mirror", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1", help="loopback address to bind (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port to bind; 0 picks a free one (default)")
    parser.add_argument(
        "--model",
        action="append",
        default=[],
        type=_model_spec,
        metavar="ORG/NAME[:SHARDS[:SIZE[:KIND]]]",
        help="serve a generated repo, e.g. stand-in/big-llm:4:512MiB or stand-in/e5:1:2MiB:embedding",
    )
    parser.add_argument("--revisions", type=int, default=1, help="commits per --model repo (refs v1.. then main)")
    parser.add_argument("--stand-ins", action="store_true", help=f"serve {STAND_IN_LLM} and {STAND_IN_EMBEDDING}")
    parser.add_argument(
        "--token-env",
        metavar="VAR",
        help="require the bearer token held in environment variable VAR (never passed on the command line)",
    )
    args = parser.parse_args(argv)
    token = None
    if args.token_env:
        token = os.environ.get(args.token_env)
        if not token:
            parser.error(f"--token-env {args.token_env}: that environment variable is empty or unset")
    try:
        mirror = HubMirror(args.host, args.port)
        repos = add_stand_ins(mirror) if args.stand_ins else {}
        for spec in args.model:
            repos[spec["repo_id"]] = mirror.add_model(revisions=args.revisions, **spec)
    except ValueError as error:
        parser.error(str(error))
    if not repos:
        parser.error("nothing to serve: pass --model and/or --stand-ins")
    if token is not None:
        mirror.set_token(token)

    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    with mirror:
        line = {
            "endpoint": mirror.endpoint,
            "pid": os.getpid(),
            "env": mirror.env(),
            "repos": {repo_id: {commit.ref: commit.sha for commit in repo.commits} for repo_id, repo in repos.items()},
        }
        print(json.dumps(line), flush=True)
        while not stop.wait(0.5):
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
