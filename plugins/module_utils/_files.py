# Copyright: burst.golden_ami contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""JSON files that readers may open at any moment, and file digests.

Private to this collection. Standard library only (Python 3.9+): the module
utilities that run on the builder's tools virtualenv import it too.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile

CHUNK = 8 * 1024 * 1024


def write_json_atomic(path, data, mode=0o644, sync=True):
    """Write ``data`` as JSON next to ``path``, then rename it in place: a reader sees the old file or the new one.

    The text is indented, with sorted keys and a final newline, so that the same data gives the same bytes.
    ``sync`` flushes the data to the disk before the rename (records, manifests); a file that is only a
    cache or a progress report skips it. ``mode`` is the new file's mode. On any failure the file at
    ``path`` is left as it was and no temporary file remains.
    """
    directory = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
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


def read_json(path, strict=False):
    """The JSON document at ``path``.

    None when there is no file or it is not JSON (a damaged file counts as none); with ``strict``,
    those raise ``FileNotFoundError`` and ``ValueError`` instead.
    """
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except (FileNotFoundError, ValueError):
        if strict:
            raise
        return None


def sha256_file(path, chunk=CHUNK):
    """The sha256 of the file at ``path``, as hex digits."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()
