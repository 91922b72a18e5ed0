# Copyright: burst.golden_ami contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Pinned, verified model weights under a models root (``/models``): ``ensure_model``.

The core of the ``model_download`` module, in plain functions and classes
that unit tests call directly. Runs on the builder (Python 3.9+), in the
tools virtualenv that holds ``huggingface_hub`` and ``boto3``; both are
imported only when a source needs them. This file stages, downloads,
verifies and installs; the other parts are:

- ``_model_record``: the layout under the root, the directory rule, records
  and the manifest;
- ``_model_sources``: the Hub, S3 and URL sources and the file patterns;
- ``_model_transfer``: resumable HTTP streams, partial files, hashing and
  progress.

A model directory appears (by rename) only once every file is verified.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import threading
from concurrent.futures import ThreadPoolExecutor

from ansible_collections.burst.golden_ami.plugins.module_utils._files import read_json, write_json_atomic
from ansible_collections.burst.golden_ami.plugins.module_utils._model_record import (
    DIR_MODE,
    FILE_MODE,
    MODEL_NAME,
    PARTIAL_DIR,
    RECORD_FORMAT,
    RECORD_NAME,
    STAGING_DIR,
    STAGING_STATE,
    ModelCacheError,
    clean_record,
    intact_files,
    load_record,
    rewrite_record,
    update_manifest,
)
from ansible_collections.burst.golden_ami.plugins.module_utils._model_sources import VERIFY_GIT_BLOB
from ansible_collections.burst.golden_ami.plugins.module_utils._model_transfer import HashingWriter, PartFile, Progress
from ansible_collections.burst.golden_ami.plugins.module_utils._progress import human

# ---------------------------------------------------------------------------
# The disk


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
            % (label, root, human(needed, 2), human(margin, 2), human(available, 2))
        )
    return available


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


def _ensure(source, root, name, target, check_mode, verify_checksums, disk_margin, workers, progress, free, result):
    record = load_record(target)
    cleaned = clean_record(record)
    redacted = cleaned is not record
    if redacted:
        # A record written with a URL's query string (a signature): rewritten without it.
        if not check_mode:
            rewrite_record(target, cleaned)
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
        progress.finish("done", "would download %d files (%s)" % (len(to_fetch), human(max(needed, 0), 2)))
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
        % (human(transferred, 2), len(result["downloaded_files"]), plan.version[:12]),
    )
    return result
