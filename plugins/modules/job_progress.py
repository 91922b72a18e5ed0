#!/usr/bin/python
# Copyright: burst.golden_ami contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: job_progress
short_description: Wait one interval for an asynchronous job and report its progress line
version_added: 0.2.0
description:
  - Follows a module started with C(async) and C(poll) 0 that writes a progress file (O(progress_file)), as
    M(burst.golden_ami.image_pull) and M(burst.golden_ami.modelcar_image) do. Each run waits until the job
    finishes or O(interval) seconds pass, whichever comes first, then returns the file's line.
  - Run it in a loop with C(break_when) on RV(finished) and the line as the loop label, so one line is printed
    per interval, as C(docker pull) and Packer do. Give the loop more iterations than the job's C(async) timeout
    has intervals; the job then ends (done, failed or timed out) before the loop runs out, and a long job never
    fails for being long, only by its own timeout.
  - Changes nothing.
author:
  - burst.golden_ami maintainers (@burst)
options:
  progress_file:
    description: The progress file the job writes (JSON with a C(line)).
    type: path
    required: true
  results_file:
    description: The job's results file, the C(results_file) that the task which started it registered.
    type: path
    required: true
  interval:
    description: Seconds to wait at most, unless the job finishes first.
    type: float
    default: 10
  name:
    description: What the job does, for the line printed before its first progress.
    type: str
    default: job
attributes:
  check_mode:
    support: full
    description: Reads and waits as in a real run; it changes nothing either way.
  diff_mode:
    support: none
    description: Nothing to show.
  idempotent:
    support: full
    description: Never changes anything.
"""

EXAMPLES = r"""
- name: Start the pulls
  burst.golden_ami.image_pull:
    images: "{{ images }}"
    progress_file: /run/burst-image-pull.json
  async: 3600
  poll: 0
  register: job

- name: Follow the pulls
  burst.golden_ami.job_progress:
    progress_file: /run/burst-image-pull.json
    results_file: "{{ job.results_file }}"
    interval: 10
  register: follow
  loop: "{{ range(3600 // 10 + 2) | list }}"
  loop_control:
    label: "{{ follow.line | default('starting') }}"
    break_when:
      - follow.finished | default(false)
"""

RETURN = r"""
finished:
  description: Whether the job has finished (done, failed or timed out).
  returned: always
  type: bool
failed_job:
  description: Whether the job finished with a failure (its message is in RV(line); async_status gives the result).
  returned: always
  type: bool
line:
  description: The progress line; once the job is done, its last line (or that it is done); or the job's failure.
  returned: always
  type: str
  sample: "vllm: pulling 1.2 GiB of 4.0 GiB (30%), 45.0 MiB/s"
state:
  description: The job's state as its progress file says (C(starting) before the file exists).
  returned: always
  type: str
bytes_done:
  description: Bytes done in the current state.
  returned: always
  type: int
bytes_total:
  description: Bytes in the current state, 0 when unknown.
  returned: always
  type: int
waited_s:
  description: Seconds this run waited.
  returned: always
  type: float
"""

import json  # noqa: E402
import time  # noqa: E402

from ansible.module_utils.basic import AnsibleModule  # noqa: E402


def read_json(path):
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return None


def job_finished(job):
    """async_wrapper writes {"started": 1, "finished": 0} first, then the module's result (or a timeout)."""
    return isinstance(job, dict) and ("started" not in job or bool(job.get("finished")))


def follow(progress_path, results_path, interval, name="job", step=0.2, clock=time.monotonic, sleep=time.sleep):
    """Wait until the job finishes or ``interval`` seconds pass; return the report."""
    started = clock()
    deadline = started + max(interval, 0)
    while True:
        job = read_json(results_path)
        finished = job_finished(job)
        if finished or clock() >= deadline:
            break
        sleep(min(step, max(deadline - clock(), 0)))
    progress = read_json(progress_path) or {}
    report = {
        "finished": finished,
        "failed_job": bool(finished and job.get("failed")),
        "line": progress.get("line") or f"{name}: starting",
        "state": progress.get("state", "starting"),
        "bytes_done": int(progress.get("bytes_done") or 0),
        "bytes_total": int(progress.get("bytes_total") or 0),
        "waited_s": round(clock() - started, 3),
    }
    if report["failed_job"]:
        report["line"] = f"{progress.get('name', name)}: failed: {job.get('msg', 'see the next task')}"
    elif finished and progress.get("state") != "done":
        report["line"] = f"{progress.get('name', name)}: done"
    return report


def main():
    module = AnsibleModule(
        argument_spec={
            "progress_file": {"type": "path", "required": True},
            "results_file": {"type": "path", "required": True},
            "interval": {"type": "float", "default": 10},
            "name": {"type": "str", "default": "job"},
        },
        supports_check_mode=True,
    )
    if module.params["interval"] < 0:
        module.fail_json(msg=f"interval must be 0 or more, not {module.params['interval']}")
    report = follow(
        module.params["progress_file"], module.params["results_file"], module.params["interval"], module.params["name"]
    )
    module.exit_json(changed=False, **report)


if __name__ == "__main__":
    main()
