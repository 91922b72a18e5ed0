# -*- coding: utf-8 -*-

# Copyright: Contributors to the burst.golden_ami collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
name: step_timer
type: aggregate
short_description: Print how long each step of a playbook took
version_added: 0.1.0
description:
  - Adds up the time of the tasks of each step, a step being the role a task belongs to or, for tasks outside
    roles, the play. Steps are listed in the order they started.
  - At the end of the run, prints a table of the steps with their durations and the total, and optionally
    writes the same as JSON.
  - Enable it with C(callbacks_enabled = burst.golden_ami.step_timer) in C(ansible.cfg), or with the
    E(ANSIBLE_CALLBACKS_ENABLED) environment variable.
author:
  - burst.golden_ami maintainers (@burst)
requirements:
  - enable in configuration
options:
  output_path:
    description:
      - File to write the steps and their durations to, as JSON; nothing is written when not set.
    type: path
    env:
      - name: BURST_STEP_TIMER_OUTPUT
    ini:
      - section: callback_step_timer
        key: output_path
"""

import json  # noqa: E402
import time  # noqa: E402

from ansible.plugins.callback import CallbackBase  # noqa: E402


def step_of(task, play_name):
    """The step a task belongs to: its role's short name, or the play's name."""
    role = getattr(task, "_role", None)
    if role is not None:
        return role.get_name(include_role_fqcn=False)
    return play_name or "(unnamed play)"


def format_table(steps, total):
    """The table of ``steps`` (a list of (name, seconds)) and the total, as text."""
    width = max([len("Step"), len("Total"), *(len(step[0]) for step in steps)])
    lines = [f"{'Step':<{width}}  {'Seconds':>9}", f"{'-' * width}  {'-' * 9}"]
    lines.extend(f"{name:<{width}}  {seconds:>9.1f}" for name, seconds in steps)
    lines.append(f"{'-' * width}  {'-' * 9}")
    lines.append(f"{'Total':<{width}}  {total:>9.1f}")
    return "\n".join(lines)


class StepTimer:
    """Time accounting, with no Ansible in it: ``start(step)`` closes the running step and opens ``step``."""

    def __init__(self, clock=time.monotonic):
        self.clock = clock
        self.begun = clock()
        self.durations = {}
        self.current = None
        self.since = None

    def start(self, step):
        now = self.clock()
        self.stop(now)
        self.current = step
        self.since = now
        self.durations.setdefault(step, 0.0)

    def stop(self, now=None):
        now = self.clock() if now is None else now
        if self.current is not None:
            self.durations[self.current] += now - self.since
        self.current = None
        self.since = None

    def steps(self):
        return list(self.durations.items())

    def total(self):
        return self.clock() - self.begun


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "burst.golden_ami.step_timer"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.timer = StepTimer()
        self.play_name = None

    def v2_playbook_on_play_start(self, play):
        self.play_name = play.get_name().strip()

    def v2_playbook_on_task_start(self, task, is_conditional):
        self.timer.start(step_of(task, self.play_name))

    def v2_playbook_on_handler_task_start(self, task):
        self.timer.start(step_of(task, self.play_name))

    def v2_playbook_on_stats(self, stats):
        self.timer.stop()
        steps = self.timer.steps()
        total = self.timer.total()
        self._display.banner("STEP DURATIONS")
        self._display.display(format_table(steps, total))
        path = self.get_option("output_path")
        if path:
            document = {"steps": [{"step": name, "seconds": round(seconds, 3)} for name, seconds in steps]}
            document["total_seconds"] = round(total, 3)
            with open(path, "w") as handle:
                json.dump(document, handle, indent=2)
                handle.write("\n")
