"""The step_timer callback: time accounting, the table, and the callback's hooks."""

from __future__ import annotations

import json
from types import SimpleNamespace

from ansible_collections.burst.golden_ami.plugins.callback import step_timer


class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


class FakeRole:
    def __init__(self, name):
        self.name = name

    def get_name(self, include_role_fqcn=True):
        return f"burst.golden_ami.{self.name}" if include_role_fqcn else self.name


def test_timer_adds_up_each_step_in_the_order_they_started():
    clock = FakeClock()
    timer = step_timer.StepTimer(clock=clock)
    timer.start("Launch the builder")
    clock.now += 10
    timer.start("model_cache")
    clock.now += 5
    timer.start("Launch the builder")  # a step seen again adds to its first total
    clock.now += 2
    timer.stop()
    clock.now += 1  # time after the last task counts in the total only
    assert timer.steps() == [("Launch the builder", 12.0), ("model_cache", 5.0)]
    assert timer.total() == 18.0


def test_a_task_belongs_to_its_role_or_else_to_its_play():
    assert step_timer.step_of(SimpleNamespace(_role=FakeRole("image_sanitize")), "Configure") == "image_sanitize"
    assert step_timer.step_of(SimpleNamespace(_role=None), "Capture the image") == "Capture the image"
    assert step_timer.step_of(SimpleNamespace(), "") == "(unnamed play)"


def test_table_lists_steps_and_total_aligned():
    table = step_timer.format_table([("Launch the builder", 19.26), ("image_sanitize", 8.1)], 27.4)
    lines = table.splitlines()
    assert lines[0].split() == ["Step", "Seconds"]
    assert lines[2].split()[-1] == "19.3"
    assert lines[3].split() == ["image_sanitize", "8.1"]
    assert lines[-1].split() == ["Total", "27.4"]
    assert len({len(line) for line in lines}) == 1


def test_callback_prints_the_table_and_writes_json(tmp_path):
    clock = FakeClock()
    callback = step_timer.CallbackModule()
    callback.timer = step_timer.StepTimer(clock=clock)
    shown = []
    callback._display = SimpleNamespace(banner=shown.append, display=shown.append)
    output = tmp_path / "steps.json"
    # Options come from the plugin's DOCUMENTATION once Ansible's loader has loaded it; here, directly.
    callback.get_option = {"output_path": str(output)}.get

    callback.v2_playbook_on_play_start(SimpleNamespace(get_name=lambda: "Launch the builder "))
    callback.v2_playbook_on_task_start(SimpleNamespace(_role=None), False)
    clock.now += 3
    callback.v2_playbook_on_task_start(SimpleNamespace(_role=FakeRole("model_cache")), False)
    clock.now += 4
    callback.v2_playbook_on_stats(None)

    assert shown[0] == "STEP DURATIONS"
    assert "model_cache" in shown[1]
    document = json.loads(output.read_text())
    assert document["steps"] == [
        {"step": "Launch the builder", "seconds": 3.0},
        {"step": "model_cache", "seconds": 4.0},
    ]
    assert document["total_seconds"] == 7.0
