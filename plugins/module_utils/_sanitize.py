# Copyright: burst.golden_ami contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Checks that a machine is fit to be captured as an image.

Plain functions, callable without Ansible: the ``image_sanitize_check``
module wraps them. Nothing here ever returns or prints a secret's value: a
finding names the file, the kind of secret and the byte offset only.
"""

from __future__ import annotations

import fnmatch
import glob
import os
import re
import shutil
import stat

# Each pattern matches a credential's value closely enough that a match in
# a file is worth failing a bake for. Names are what findings report.
SECRET_PATTERNS = {
    "huggingface_token": rb"\bhf_[A-Za-z0-9]{30,}\b",
    "aws_access_key_id": rb"\b(?:AKIA|ASIA)[A-Z0-9]{16}\b",
    "aws_secret_access_key": (rb"(?i)aws_?secret_?access_?key[\"']?\s*[:=]\s*[\"']?[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+])"),
    "registry_auth": rb"\"auth\"\s*:\s*\"[A-Za-z0-9+/]{8,}={0,2}\"",
    "private_key": rb"-----BEGIN (?:RSA |EC |DSA |OPENSSH |ENCRYPTED )?PRIVATE KEY-----",
}

DEFAULT_PATTERNS = ["huggingface_token", "aws_access_key_id", "aws_secret_access_key", "registry_auth"]

# Values that documentation and SDKs ship as examples; never real credentials.
EXAMPLE_MARKERS = (b"EXAMPLE",)

# Where a build writes: configuration, home directories, applications,
# models, state. The distribution's own files under /usr are not scanned.
DEFAULT_SCAN_ROOTS = ["/etc", "/root", "/home", "/opt", "/srv", "/var", "/models", "/usr/local"]

# Pseudo and volatile filesystems, and container image layers (the images'
# contents come from their registries, not from this build).
DEFAULT_SCAN_EXCLUDES = [
    "/proc",
    "/sys",
    "/dev",
    "/run",
    "/tmp",  # noqa: S108 - excluded from the scan, never written
    "/var/tmp",  # noqa: S108 - likewise
    "/var/lib/docker",
    "/var/lib/containerd",
]

_CHUNK = 1024 * 1024
_OVERLAP = 512


def compile_patterns(names):
    """Return ``{name: compiled regex}`` for the given pattern names."""
    unknown = sorted(set(names) - set(SECRET_PATTERNS))
    if unknown:
        raise ValueError(
            "unknown secret pattern(s) %s; known: %s" % (", ".join(unknown), ", ".join(sorted(SECRET_PATTERNS)))
        )
    return {name: re.compile(SECRET_PATTERNS[name]) for name in names}


def _glob(pattern):
    """Like glob.glob, but ``*`` also matches names that start with a dot
    (``/tmp/*`` must find ``/tmp/.hidden``), on every Python 3."""
    parts = pattern.strip("/").split("/")
    paths = ["/"] if pattern.startswith("/") else ["."]
    for part in parts:
        following = []
        for base in paths:
            if not glob.has_magic(part):
                candidate = os.path.join(base, part)
                if os.path.lexists(candidate):
                    following.append(candidate)
                continue
            if not os.path.isdir(base) or os.path.islink(base):
                continue
            try:
                names = sorted(os.listdir(base))
            except OSError:
                continue
            following.extend(os.path.join(base, n) for n in names if fnmatch.fnmatchcase(n, part))
        paths = following
    return paths


def expand(patterns):
    """Expand shell globs (hidden names included); a pattern that matches
    nothing expands to nothing."""
    paths = []
    for pattern in patterns:
        for path in _glob(pattern) if glob.has_magic(pattern) else [pattern]:
            if os.path.lexists(path) and path not in paths:
                paths.append(path)
    return paths


def _kept(path, keep):
    return any(fnmatch.fnmatchcase(path, pattern) for pattern in keep)


def remaining_paths(absent, keep=()):
    """Paths (globs allowed) that should be gone but exist, less those kept."""
    return [path for path in expand(absent) if not _kept(path, keep)]


def non_empty_files(empty):
    """Files that should exist empty (or not at all) but hold bytes."""
    found = []
    for path in expand(empty):
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            continue
        if stat.S_ISREG(st.st_mode) and st.st_size > 0:
            found.append(path)
        elif stat.S_ISDIR(st.st_mode) and os.listdir(path):
            found.append(path)
    return found


def _is_excluded(path, excludes):
    for prefix in excludes:
        if path == prefix or path.startswith(prefix.rstrip("/") + "/"):
            return True
    return False


def scan_file(path, patterns, max_size):
    """Findings in one regular file: ``[{path, kind, offset}]``, at most one per kind."""
    try:
        st = os.lstat(path)
    except OSError:
        return []
    if not stat.S_ISREG(st.st_mode) or st.st_size == 0 or st.st_size > max_size:
        return []
    findings = {}
    try:
        with open(path, "rb") as handle:
            offset = 0
            tail = b""
            while len(findings) < len(patterns):
                chunk = handle.read(_CHUNK)
                if not chunk:
                    break
                data = tail + chunk
                base = offset - len(tail)
                for name, regex in patterns.items():
                    if name in findings:
                        continue
                    for match in regex.finditer(data):
                        if not any(marker in match.group(0) for marker in EXAMPLE_MARKERS):
                            findings[name] = base + match.start()
                            break
                tail = data[-_OVERLAP:]
                offset += len(chunk)
    except OSError:
        return []
    return [{"path": path, "kind": kind, "offset": off} for kind, off in sorted(findings.items())]


def scan_tree(roots, patterns, excludes=None, max_size=16 * 1024 * 1024):
    """Walk ``roots`` (not following symlinks) and return every finding and
    the number of files read. Excluded prefixes are pruned, never entered."""
    excludes = [os.path.normpath(e) for e in (excludes if excludes is not None else DEFAULT_SCAN_EXCLUDES)]
    findings = []
    scanned = 0
    for root in roots:
        root = os.path.normpath(root)
        if _is_excluded(root, excludes) or not os.path.exists(root):
            continue
        if os.path.isfile(root):
            findings.extend(scan_file(root, patterns, max_size))
            scanned += 1
            continue
        for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
            dirnames[:] = sorted(d for d in dirnames if not _is_excluded(os.path.join(dirpath, d), excludes))
            for name in sorted(filenames):
                path = os.path.join(dirpath, name)
                result = scan_file(path, patterns, max_size)
                scanned += 1
                findings.extend(result)
    return findings, scanned


def free_bytes(path):
    """Free bytes for unprivileged users on the filesystem holding ``path``."""
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def check(absent, empty, scan_roots, scan_excludes, patterns, max_size, min_free, keep=()):
    """Run every check. Returns a result dict; ``problems`` lists one line per
    finding, naming files and kinds of secret, never a secret's value."""
    compiled = compile_patterns(patterns)
    remaining = remaining_paths(absent, keep)
    not_empty = non_empty_files(empty)
    secrets, scanned = scan_tree(scan_roots, compiled, scan_excludes, max_size) if scan_roots else ([], 0)
    low_space = []
    for path, minimum in sorted(min_free.items()):
        free = free_bytes(path)
        if free < minimum:
            low_space.append({"path": path, "free_bytes": free, "min_free_bytes": minimum})
    problems = ["still present: %s" % p for p in remaining]
    problems += ["not empty: %s" % p for p in not_empty]
    problems += ["%s found in %s (byte %d)" % (f["kind"], f["path"], f["offset"]) for f in secrets]
    problems += [
        "only %d bytes free on the filesystem of %s (at least %d wanted)"
        % (s["free_bytes"], s["path"], s["min_free_bytes"])
        for s in low_space
    ]
    return {
        "remaining": remaining,
        "not_empty": not_empty,
        "secrets": secrets,
        "low_space": low_space,
        "files_scanned": scanned,
        "problems": problems,
    }


def remove(patterns, keep=(), dry_run=False):
    """Remove every path the globs match (directories recursively, symlinks
    as links), except those matching a ``keep`` glob. Returns the removed
    paths; with ``dry_run`` only lists them."""
    removed = []
    for path in expand(patterns):
        if _kept(path, keep):
            continue
        removed.append(path)
        if dry_run:
            continue
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        else:
            os.unlink(path)
    return removed


def truncate(patterns, dry_run=False):
    """Empty every regular file the globs match that holds bytes; returns them."""
    emptied = []
    for path in expand(patterns):
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            continue
        if stat.S_ISREG(st.st_mode) and st.st_size > 0:
            emptied.append(path)
            if not dry_run:
                with open(path, "r+b") as handle:
                    handle.truncate(0)
    return emptied
