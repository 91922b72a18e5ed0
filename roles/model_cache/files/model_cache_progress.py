# Copyright: burst.golden_ami contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Wait for news of an asynchronous model download, then print it as one JSON line.

Used by the model_cache role between two polls: it returns as soon as the
download's progress file changes or its async job finishes, or after
``--wait`` seconds, and prints ``{"finished": bool, "line": str, ...}``.
Standard library only; Python 3.9+.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time


def read_json(path):
    try:
        with open(path) as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return None


def job_finished(job):
    """async_wrapper writes {"started": true, "finished": false} first, then the module's result."""
    return isinstance(job, dict) and ("started" not in job or bool(job.get("finished")))


def stamp(path):
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return None


def follow(progress_path, job_path, wait, step=0.1, clock=time.monotonic, sleep=time.sleep):
    """Return the report once something changed, the job finished, or ``wait`` seconds passed."""
    deadline = clock() + wait
    first = stamp(progress_path)
    while True:
        job = read_json(job_path)
        finished = job_finished(job)
        if finished or stamp(progress_path) != first or clock() >= deadline:
            break
        sleep(step)
    progress = read_json(progress_path) or {}
    line = progress.get("line") or "waiting for the download to start"
    report = {"finished": finished, "line": line, "state": progress.get("state", "starting")}
    for key in ("bytes_done", "bytes_total", "rate_bytes_per_s"):
        if key in progress:
            report[key] = progress[key]
    if finished and job.get("failed"):
        report["line"] = "%s: failed: %s" % (progress.get("name", "download"), job.get("msg", "see the next task"))
    return report


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--progress", required=True, help="the progress file the download writes")
    parser.add_argument("--job", required=True, help="the async job's results file")
    parser.add_argument("--wait", type=float, default=5.0, help="seconds to wait at most (default 5)")
    args = parser.parse_args(argv)
    print(json.dumps(follow(args.progress, args.job, args.wait), sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
