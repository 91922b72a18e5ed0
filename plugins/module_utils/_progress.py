# Copyright: burst.golden_ami contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A progress file that a long module run rewrites while it works, for the role that follows it.

Private to this collection. The role starts the module asynchronously and runs
``job_progress`` every interval; that module reads this file and prints its
``line``. The file is JSON: ``name``, ``state``, ``line``, ``bytes_done``,
``bytes_total``, ``rate_bytes_per_s``, ``elapsed_s``. It is replaced
atomically (written aside, then renamed), at most once per ``every`` seconds
unless a write is forced (a change of state). Standard library only.
"""

from __future__ import annotations

import os
import time

from ansible_collections.burst.golden_ami.plugins.module_utils._files import write_json_atomic

UNITS = ("B", "KiB", "MiB", "GiB", "TiB")


def human(count, decimals=1):
    """``count`` bytes for people, in binary units: ``1.5 GiB`` (``decimals`` digits after the point)."""
    value = float(count)
    for unit in UNITS:
        if abs(value) < 1024 or unit == UNITS[-1]:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.{decimals}f} {unit}"
        value /= 1024
    return f"{count} B"  # not reached


class ProgressFile:
    """Progress of one module run; ``path`` None keeps it in memory only."""

    def __init__(self, path, name, every=1.0, clock=time.monotonic):
        self.path = path
        self.name = name
        self.every = every
        self._clock = clock
        self._started = clock()
        self._written = None
        self.state = "starting"
        self.bytes_done = 0
        self.bytes_total = 0
        self._phase_started = self._started
        self._phase_bytes = 0
        self.snapshot = {}
        self._wrote_once = False

    def phase(self, state, bytes_total=0, line=None):
        """Start a phase (``hashing``, ``pulling``, ``uploading``...) of ``bytes_total`` bytes; written at once."""
        self.state = state
        self.bytes_total = bytes_total
        self.bytes_done = 0
        self._phase_started = self._clock()
        self._phase_bytes = 0
        self.update(line=line, force=True)

    def add(self, count, line=None):
        """``count`` more bytes done in this phase."""
        self.bytes_done += count
        self._phase_bytes += count
        self.update(line=line)

    def set(self, bytes_done, bytes_total=None, line=None, force=False):
        """The phase's absolute figures, as an engine reports them."""
        if bytes_total is not None:
            self.bytes_total = bytes_total
        self._phase_bytes += max(bytes_done - self.bytes_done, 0)
        self.bytes_done = bytes_done
        self.update(line=line, force=force)

    def rate(self):
        return int(self._phase_bytes / max(self._clock() - self._phase_started, 1e-6))

    def line(self):
        """The default line: ``name: state 1.2 GiB of 4.0 GiB (30%), 45.0 MiB/s``."""
        if not self.bytes_total:
            return f"{self.name}: {self.state}"
        percent = int(100 * min(self.bytes_done, self.bytes_total) / self.bytes_total)
        return (
            f"{self.name}: {self.state} {human(self.bytes_done)} of {human(self.bytes_total)} ({percent}%), "
            f"{human(self.rate())}/s"
        )

    def update(self, line=None, force=False):
        now = self._clock()
        if not force and self._written is not None and now - self._written < self.every:
            return
        self._written = now
        self.snapshot = {
            "name": self.name,
            "state": self.state,
            "line": line or self.line(),
            "bytes_done": self.bytes_done,
            "bytes_total": self.bytes_total,
            "rate_bytes_per_s": self.rate(),
            "elapsed_s": round(now - self._started, 3),
        }
        if self.path:
            # A directory removed since the first write was cleaned up by whoever started this run (a bake's
            # sweep after an interruption): a run that goes on in the background must not create it again.
            if self._wrote_once and not os.path.isdir(os.path.dirname(self.path) or "."):
                return
            write_json(self.path, self.snapshot)
            self._wrote_once = True


def write_json(path, document):
    """Replace ``path`` with ``document`` atomically, creating its directory; readable by its owner only."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    write_json_atomic(path, document, mode=0o600, sync=False)
