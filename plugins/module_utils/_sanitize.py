# Copyright: burst.golden_ami contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Checks that a machine is fit to be captured as an image.

Plain functions, callable without Ansible: the ``image_sanitize_check``
module wraps them. Nothing here ever returns or prints a secret's value: a
finding names the file, the kind of secret and the byte offset only.
"""

from __future__ import annotations

import base64
import binascii
import fnmatch
import glob
import math
import os
import re
import shutil
import stat


# Each rule matches a credential's value closely enough that a match in a
# file is worth failing a bake for. A rule runs its regular expression only
# around the places where one of its keywords occurs (found by a plain
# substring search, much faster than an expression on binary data such as
# image layers and model weights). Names are what findings report.
class Rule:
    """One kind of secret: a compiled expression, the keywords that must be present, an optional check."""

    def __init__(self, kind, pattern, keywords, validate=None):
        self.kind = kind
        self.regex = re.compile(pattern)
        self.keywords = tuple(keywords)
        self.validate = validate

    def search(self, data, end):
        """Offset of the first acceptable match in ``data[:end]``, or None.

        The expression runs only in a window around each keyword found (a match starts at most
        ``_BEFORE`` bytes before its keyword and is shorter than ``_AFTER``), never over the whole block.
        """
        hits = []
        for keyword in self.keywords:
            index = data.find(keyword, 0, end)
            while index != -1:
                hits.append(index)
                index = data.find(keyword, index + 1, end)
        searched = -1
        for index in sorted(hits):
            start = max(0, index - _BEFORE, searched)
            stop = min(end, index + _AFTER)
            for match in self.regex.finditer(data, start, stop):
                value = match.group(0)
                if any(marker in value for marker in EXAMPLE_MARKERS):
                    continue
                if self.validate is None or self.validate(match):
                    return match.start()
            searched = max(searched, index + 1)
        return None


def _docker_auth(match):
    """A Docker config ``auth`` is base64 of ``user:password``; the token fields need only be non-empty."""
    if match.group(1) != b"auth":
        return True
    try:
        return b":" in base64.b64decode(match.group(2), validate=True)
    except (binascii.Error, ValueError):
        return False


_B64 = rb"[A-Za-z0-9+/]"
SECRET_PATTERNS = {
    # PEM (PKCS#1, PKCS#8, SEC1, encrypted), OpenSSH and PGP private keys, and PuTTY key files. The
    # header alone is not enough (libraries carry it as a constant): a line of key material must follow.
    "private_key": (
        rb"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----[ \t]*\r?\n"
        rb"(?:[A-Za-z][A-Za-z0-9-]*:[^\r\n]{0,200}\r?\n){0,8}(?:[ \t]*\r?\n)?" + _B64 + rb"{40}"
        rb"|PuTTY-User-Key-File-[0-9]+: [^\r\n]{1,64}\r?\nEncryption: ",
        (b"PRIVATE KEY", b"PuTTY-User-Key-File-"),
        None,
    ),
    "aws_access_key_id": (rb"(?<![A-Z0-9])(?:AKIA|ASIA)[A-Z0-9]{16}(?![A-Z0-9])", (b"AKIA", b"ASIA"), None),
    # The secret key has no prefix: it is found next to its name, in INI, shell, YAML or JSON form.
    "aws_secret_access_key": (
        rb"(?i)(?:aws_?)?secret_?access_?key[\"']?\s*[:=]\s*[\"']?[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+])",
        (b"ecret", b"ECRET"),
        None,
    ),
    "huggingface_token": (rb"(?<![A-Za-z0-9_])(?:hf_|api_org_)[A-Za-z0-9]{30,}", (b"hf_", b"api_org_"), None),
    # Classic tokens (personal, OAuth, user-to-server, server-to-server, refresh) and fine-grained ones.
    "github_token": (
        rb"(?<![A-Za-z0-9_])(?:gh[pousr]_[A-Za-z0-9]{36}|github_pat_[A-Za-z0-9]{22}_[A-Za-z0-9]{59})",
        (b"ghp_", b"gho_", b"ghu_", b"ghs_", b"ghr_", b"github_pat_"),
        None,
    ),
    "ngc_api_key": (rb"(?<![A-Za-z0-9_-])nvapi-[A-Za-z0-9_-]{60,}", (b"nvapi-",), None),
    # Project, service-account and admin keys, and the legacy keys (which embed T3BlbkFJ, "OpenAI" in base64).
    "openai_api_key": (
        rb"(?<![A-Za-z0-9_-])sk-(?:(?:proj|svcacct|admin)-[A-Za-z0-9_-]{40,}"
        rb"|[A-Za-z0-9_-]{16,}T3BlbkFJ[A-Za-z0-9_-]{16,}|[A-Za-z0-9]{48}(?![A-Za-z0-9_-]))",
        (b"sk-",),
        None,
    ),
    "slack_token": (
        rb"(?<![A-Za-z0-9])(?:xox[abposr]-[0-9]{6,}-[A-Za-z0-9-]{8,}|xapp-[0-9]-[A-Z0-9]{6,}-[0-9]{6,}-[a-z0-9]{16,})",
        (b"xox", b"xapp-"),
        None,
    ),
    # Docker's config.json: "auth" (base64 of user:password), "identitytoken", "registrytoken".
    "registry_auth": (
        rb"\"(auth|identitytoken|registrytoken)\"\s*:\s*\"([A-Za-z0-9+/=._-]{8,})\"",
        (b'"auth"', b'"identitytoken"', b'"registrytoken"'),
        _docker_auth,
    ),
}

# Not an expression: a value with a credential's name (password, secret, token, ...) and a random
# look (Shannon entropy), in one of the files where credentials are kept (CREDENTIAL_FILES).
HIGH_ENTROPY = "high_entropy_secret"
# What a finding of a string given to the scan (``literals``) is called.
GIVEN_SECRET = "given_secret"  # noqa: S105 - a kind of finding, not a password

DEFAULT_PATTERNS = [*sorted(SECRET_PATTERNS), HIGH_ENTROPY]

# Values that documentation and SDKs ship as examples; never real credentials.
EXAMPLE_MARKERS = (b"EXAMPLE",)

# Files that hold credentials by convention (fnmatch on the full path, ``*`` crosses ``/``): clients'
# credential stores, environment files, shell histories. Under Docker's data directory too, where
# they sit inside image layers.
CREDENTIAL_FILES = [
    "*/.aws/credentials",
    "*/.aws/config",
    "*/.netrc",
    "*/_netrc",
    "*/.git-credentials",
    "*/.pypirc",
    "*/.npmrc",
    "*/.yarnrc",
    "*/.yarnrc.yml",
    "*/.s3cfg",
    "*/.boto",
    "*/.pgpass",
    "*/.my.cnf",
    "*/.docker/config.json",
    "*/.config/gh/hosts.yml",
    "*/.kube/config",
    "*/huggingface/token",
    "*/.huggingface/token",
    "*/.env",
    "*/.env.*",
    "*.env",
    "*/environment",
    "*/etc/default/*",
    "*_history",
    "*/.history",
]

# name = value, name: value, name value (netrc), "name": "value"; the name holds a credential's word.
_CREDENTIAL_ASSIGNMENT = re.compile(
    rb"(?i)([A-Za-z0-9_.-]*(?:pass(?:word|wd)?|secret|token|api[_-]?key|apikey|access[_-]?key|auth"
    rb"|credential|private[_-]?key|session[_-]?key)[A-Za-z0-9_.-]*)[\"']?[ \t]*(?:[:=]|[ \t])[ \t]*[\"']?"
    rb"([^\s\"',;]{16,})"
)
_HEX = re.compile(rb"^[0-9a-fA-F]+$")
_PATH = re.compile(rb"^\.{0,2}/[A-Za-z0-9._-]+/[A-Za-z0-9._/-]*$")
_LINE_MAX = 64 * 1024

# Where a build writes: configuration, home directories, applications,
# models, state (Docker's and containerd's data, with their image layers,
# included). The distribution's own files under /usr are not scanned.
DEFAULT_SCAN_ROOTS = ["/etc", "/root", "/home", "/opt", "/srv", "/var", "/models", "/usr/local"]

# Pseudo and volatile filesystems.
DEFAULT_SCAN_EXCLUDES = [
    "/proc",
    "/sys",
    "/dev",
    "/run",
    "/tmp",  # noqa: S108 - excluded from the scan, never written
    "/var/tmp",  # noqa: S108 - likewise
]

# Files are read in blocks of _CHUNK bytes; the last _OVERLAP bytes of a
# block are searched again with the next one, so that a secret across a
# block boundary is found (every rule matches less than _OVERLAP bytes).
_CHUNK = 4 * 1024 * 1024
_OVERLAP = 4096
# How far before its keyword a match may start, and how long it may be.
_BEFORE = 64
_AFTER = 2048


def shannon_entropy(value):
    """Bits of Shannon entropy per byte of ``value``."""
    if not value:
        return 0.0
    counts = {}
    for byte in value:
        counts[byte] = counts.get(byte, 0) + 1
    size = len(value)
    return -sum(count / size * math.log2(count / size) for count in counts.values())


def looks_random(value):
    """True for a value with the entropy of a generated credential (hex or base64-like)."""
    if len(value) < 16 or value[:1] in (b"$", b"<", b"%", b"{", b"~") or b"://" in value:
        return False  # short, a reference to something else, or a URL
    if _PATH.match(value):
        return False  # a file name, such as a secret's path

    if _HEX.match(value):
        return len(value) >= 32 and shannon_entropy(value) >= 3.0
    return shannon_entropy(value) >= 3.5


def is_credential_file(path, globs=None):
    return any(fnmatch.fnmatchcase(path, pattern) for pattern in (CREDENTIAL_FILES if globs is None else globs))


def compile_patterns(names, literals=()):
    """Return ``{key: Rule}`` for the given kinds, plus one rule per literal string (kind ``given_secret``).

    ``high_entropy_secret`` is no expression; ``scan_file`` takes it from ``names`` itself.
    """
    known = set(SECRET_PATTERNS) | {HIGH_ENTROPY}
    unknown = sorted(set(names) - known)
    if unknown:
        raise ValueError("unknown secret pattern(s) %s; known: %s" % (", ".join(unknown), ", ".join(sorted(known))))
    rules = {}
    for name in names:
        if name in SECRET_PATTERNS:
            pattern, keywords, validate = SECRET_PATTERNS[name]
            rules[name] = Rule(name, pattern, keywords, validate)
    for index, literal in enumerate(literals):
        if isinstance(literal, str):
            literal = literal.encode("utf-8")
        if len(literal) < 8:
            raise ValueError("literal %d is shorter than 8 bytes: too short to look for" % (index + 1))
        rules["%s#%d" % (GIVEN_SECRET, index)] = Rule(GIVEN_SECRET, re.escape(literal), (literal,))
    return rules


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


def _existing(patterns):
    """Each path the globs match that exists, with its ``lstat`` (a link is not followed)."""
    for path in expand(patterns):
        try:
            yield path, os.lstat(path)
        except FileNotFoundError:
            continue


def _holds_bytes(st):
    return stat.S_ISREG(st.st_mode) and st.st_size > 0


def non_empty_files(empty):
    """Files that should exist empty (or not at all) but hold bytes."""
    return [
        path for path, st in _existing(empty) if _holds_bytes(st) or (stat.S_ISDIR(st.st_mode) and os.listdir(path))
    ]


def _is_excluded(path, excludes):
    for prefix in excludes:
        if path == prefix or path.startswith(prefix.rstrip("/") + "/"):
            return True
    return False


def _open_regular(path):
    """A binary file object for ``path`` when it is a regular file (never a FIFO, device or link), else None."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except OSError:
        return None, None
    try:
        st = os.fstat(fd)
    except OSError:
        os.close(fd)
        return None, None
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        return None, None
    return os.fdopen(fd, "rb"), st


def _scan_blocks(handle, rules):
    """``{rule key: offset}`` of each rule's first match, reading ``handle`` in overlapping blocks."""
    found = {}
    pending = dict(rules)
    buffer = bytearray(_OVERLAP + _CHUNK)
    view = memoryview(buffer)
    kept = 0  # bytes at the front of the buffer carried over from the previous block
    base = 0  # file offset of buffer[0]
    try:
        while pending:
            count = handle.readinto(view[kept : kept + _CHUNK])
            if not count:
                break
            end = kept + count
            for key, rule in list(pending.items()):
                offset = rule.search(buffer, end)
                if offset is not None:
                    found[key] = base + offset
                    del pending[key]
            keep = min(_OVERLAP, end)
            buffer[:keep] = buffer[end - keep : end]
            base += end - keep
            kept = keep
    finally:
        view.release()
    return found


def _scan_assignments(handle):
    """Offset of the first credential-named value that looks random, reading line by line; or None."""
    handle.seek(0)
    offset = 0
    while True:
        line = handle.readline(_LINE_MAX)
        if not line:
            return None
        for match in _CREDENTIAL_ASSIGNMENT.finditer(line):
            if looks_random(match.group(2)):
                return offset + match.start(2)
        offset += len(line)


def scan_file(path, patterns, max_size=0, high_entropy=None, credential_files=None):
    """Findings in one regular file: ``[{path, kind, offset}]``, at most one per kind.

    ``patterns`` comes from ``compile_patterns``. Files of any size are read as a stream (``max_size``
    above 0 skips larger files). ``high_entropy`` (default: when ``patterns`` came with it, i.e. always
    unless False) adds the entropy check in credential files.
    """
    handle, st = _open_regular(path)
    if handle is None:
        return []
    findings = {}
    with handle:
        if st.st_size == 0 or (max_size and st.st_size > max_size):
            return []
        try:
            for key, offset in _scan_blocks(handle, patterns).items():
                kind = patterns[key].kind
                findings[kind] = min(offset, findings.get(kind, offset))
            if high_entropy and is_credential_file(path, credential_files):
                offset = _scan_assignments(handle)
                if offset is not None:
                    findings[HIGH_ENTROPY] = offset
        except OSError:
            return [{"path": path, "kind": kind, "offset": off} for kind, off in sorted(findings.items())]
        if hasattr(os, "posix_fadvise") and st.st_size > _CHUNK:
            # A scan of image layers and weights should not push the page cache out.
            try:
                os.posix_fadvise(handle.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
            except OSError:
                pass
    return [{"path": path, "kind": kind, "offset": off} for kind, off in sorted(findings.items())]


def scan_tree(roots, patterns, excludes=None, max_size=0, high_entropy=True, skip=(), credential_files=None):
    """Walk ``roots`` (not following symlinks) and return every finding and
    the number of files read. Excluded prefixes are pruned, never entered;
    files matching a ``skip`` glob are not read."""
    excludes = [os.path.normpath(e) for e in (excludes if excludes is not None else DEFAULT_SCAN_EXCLUDES)]
    findings = []
    scanned = 0

    def one(path):
        if skip and any(fnmatch.fnmatchcase(path, pattern) for pattern in skip):
            return 0
        findings.extend(scan_file(path, patterns, max_size, high_entropy, credential_files))
        return 1

    for root in roots:
        root = os.path.normpath(root)
        if _is_excluded(root, excludes) or not os.path.exists(root):
            continue
        if os.path.isfile(root):
            scanned += one(root)
            continue
        for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
            dirnames[:] = sorted(d for d in dirnames if not _is_excluded(os.path.join(dirpath, d), excludes))
            for name in sorted(filenames):
                scanned += one(os.path.join(dirpath, name))
    return findings, scanned


def free_bytes(path):
    """Free bytes for unprivileged users on the filesystem holding ``path``."""
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def check(
    absent,
    empty,
    scan_roots,
    scan_excludes,
    patterns,
    max_size,
    min_free,
    keep=(),
    literals=(),
    skip=(),
    credential_files=None,
):
    """Run every check. Returns a result dict; ``problems`` lists one line per
    finding, naming files and kinds of secret, never a secret's value."""
    compiled = compile_patterns(patterns, literals)
    remaining = remaining_paths(absent, keep)
    not_empty = non_empty_files(empty)
    secrets, scanned = ([], 0)
    if scan_roots:
        secrets, scanned = scan_tree(
            scan_roots,
            compiled,
            scan_excludes,
            max_size,
            high_entropy=HIGH_ENTROPY in patterns,
            skip=skip,
            credential_files=credential_files,
        )
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
    emptied = [path for path, st in _existing(patterns) if _holds_bytes(st)]
    if not dry_run:
        for path in emptied:
            with open(path, "r+b") as handle:
                handle.truncate(0)
    return emptied


def path_list_options(*names):
    """The argument specs of options that are lists of paths, empty by default (the sanitize modules' globs)."""
    return {name: dict(type="list", elements="path", default=[]) for name in names}
