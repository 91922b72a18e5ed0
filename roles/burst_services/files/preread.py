"""Read model files once, early at boot, in parallel with large blocks.

An EBS volume restored from a snapshot fetches each block from S3 the first
time it is read, a few MB/s when read the way a model server does. Reading
every file ahead, many ranges at once, pulls the blocks in at the volume's
full rate (and leaves them in the page cache), so the servers that start
next find their weights local.

    preread.py [--threads 16] [--block-mib 4] [--chunk-mib 64] PATH...

PATH is a file or a directory (walked, symlinks not followed). Logs the
bytes read, the duration and the rate; exits 1 when a path is missing or a
file cannot be read (after reading everything else).

Python 3.9+ standard library only.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

MIB = 1 << 20


def _log(message):
    print(f"preread: {message}", flush=True)


def collect(paths):
    """(files as (path, size), problems) under ``paths``, largest first."""
    files, problems = [], []
    for root in paths:
        if os.path.isfile(root):
            files.append((root, os.path.getsize(root)))
            continue
        if not os.path.isdir(root):
            problems.append(f"{root}: no such file or directory")
            continue
        for directory, _dirs, names in os.walk(root, onerror=lambda exc: problems.append(str(exc))):
            for name in names:
                path = os.path.join(directory, name)
                if os.path.islink(path) or not os.path.isfile(path):
                    continue
                files.append((path, os.path.getsize(path)))
    files.sort(key=lambda item: item[1], reverse=True)
    return files, problems


def ranges(files, chunk):
    """Split files into (path, offset, length) ranges of at most ``chunk`` bytes."""
    for path, size in files:
        for offset in range(0, max(size, 1), chunk):
            yield path, offset, min(chunk, size - offset)


class Reader:
    """Reads ranges with pread into one buffer per thread; counts bytes and failures."""

    def __init__(self, block):
        self.block = block
        self.total = 0
        self.failures = []
        self._lock = threading.Lock()
        self._local = threading.local()

    def read(self, path, offset, length):
        buffer = getattr(self._local, "buffer", None)
        if buffer is None:
            buffer = self._local.buffer = bytearray(self.block)
        done = 0
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError as exc:
            with self._lock:
                self.failures.append(f"{path}: {exc.strerror or exc}")
            return
        try:
            if hasattr(os, "posix_fadvise"):
                os.posix_fadvise(fd, offset, length, os.POSIX_FADV_SEQUENTIAL)
            view = memoryview(buffer)
            while done < length:
                want = min(self.block, length - done)
                got = os.preadv(fd, [view[:want]], offset + done)
                if got == 0:
                    break
                done += got
        except OSError as exc:
            with self._lock:
                self.failures.append(f"{path} at {offset + done}: {exc.strerror or exc}")
        finally:
            os.close(fd)
            with self._lock:
                self.total += done


def preread(paths, threads=16, block_mib=4, chunk_mib=64):
    """Read everything under ``paths``; return (bytes read, seconds, files, problems)."""
    files, problems = collect(paths)
    reader = Reader(block_mib * MIB)
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="preread") as pool:
        for item in ranges(files, chunk_mib * MIB):
            pool.submit(reader.read, *item)
    elapsed = time.monotonic() - started
    return reader.total, elapsed, len(files), problems + reader.failures


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+", metavar="PATH", help="file or directory to read")
    parser.add_argument("--threads", type=int, default=16, help="ranges read at once (default 16)")
    parser.add_argument("--block-mib", type=int, default=4, help="size of one read, MiB (default 4)")
    parser.add_argument("--chunk-mib", type=int, default=64, help="size of one range, MiB (default 64)")
    args = parser.parse_args(argv)
    for name in ("threads", "block_mib", "chunk_mib"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    _log(f"reading {', '.join(args.paths)} with {args.threads} threads, {args.block_mib} MiB blocks")
    total, elapsed, count, problems = preread(args.paths, args.threads, args.block_mib, args.chunk_mib)
    rate = total / MIB / elapsed if elapsed > 0 else 0.0
    for problem in problems:
        _log(f"error: {problem}")
    _log(f"read {total / MIB:.1f} MiB in {count} files in {elapsed:.2f} s ({rate:.1f} MiB/s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
