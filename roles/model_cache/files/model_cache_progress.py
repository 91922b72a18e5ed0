# Copyright: burst.golden_ami contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Wait one progress interval of an asynchronous model download, then print its state as one JSON line.

Used by the model_cache role between two polls: it returns once ``--wait``
seconds (the role's ``model_cache_progress_interval``) have passed, or as
soon as the async job finishes, and prints ``{"finished": bool, "line": str,
"waited_s": float, ...}``. The download rewrites its progress file every second; the follower
reports it once per interval, so that people reading the play get a line
per interval, and a loop of N polls lasts at least N intervals.
Standard library only; Python 3.9+.
"""

from __future__ import annotations

import argparse
import json
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


def follow(progress_path, job_path, wait, step=0.25, clock=time.monotonic, sleep=time.sleep):
    """Return the report once ``wait`` seconds passed, or at once when the job finished."""
    started = clock()
    deadline = started + wait
    while True:
        job = read_json(job_path)
        finished = job_finished(job)
        now = clock()
        if finished or now >= deadline:
            break
        sleep(min(step, deadline - now))
    progress = read_json(progress_path) or {}
    line = progress.get("line") or "waiting for the download to start"
    report = {
        "finished": finished,
        "line": line,
        "state": progress.get("state", "starting"),
        "waited_s": round(now - started, 3),
    }
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
    if not args.wait > 0:
        parser.error("--wait must be a positive number of seconds, got %s" % args.wait)
    print(json.dumps(follow(args.progress, args.job, args.wait), sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
