"""job_progress: one poll of an asynchronous job, one progress line per interval."""

from __future__ import annotations

import io
import json
import sys

import pytest
from ansible.module_utils import basic

from ansible_collections.burst.golden_ami.plugins.modules import job_progress
from ansible_collections.burst.golden_ami.plugins.modules.job_progress import follow


class _Time:
    """A clock that sleep advances; ``during_sleep`` runs at each sleep (the job writing its files)."""

    def __init__(self, during_sleep=None):
        self.now = 0.0
        self.during_sleep = during_sleep

    def clock(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds
        if self.during_sleep:
            self.during_sleep(self.now)


def _write(path, document):
    path.write_text(json.dumps(document))


def test_waits_the_whole_interval_while_the_job_runs_even_when_the_progress_changes(tmp_path):
    progress, results = tmp_path / "progress.json", tmp_path / "job"
    _write(results, {"started": 1, "finished": 0})

    def job_writes(now):
        _write(progress, {"name": "vllm", "state": "pulling", "line": f"vllm: at {now:.1f}", "bytes_done": int(now)})

    fake = _Time(job_writes)
    report = follow(str(progress), str(results), 30, "image_pull", clock=fake.clock, sleep=fake.sleep)
    assert fake.now == pytest.approx(30), "one line per interval, not one per change of the file"
    assert not report["finished"] and not report["failed_job"]
    assert report["line"] == "vllm: at 30.0" and report["state"] == "pulling" and report["bytes_done"] == 30


def test_returns_as_soon_as_the_job_finishes(tmp_path):
    progress, results = tmp_path / "progress.json", tmp_path / "job"
    _write(results, {"started": 1, "finished": 0})
    _write(progress, {"name": "qwen", "state": "uploading", "line": "qwen: uploading"})

    def finish(now):
        if now >= 3:
            _write(results, {"changed": True, "digest": "sha256:0"})

    fake = _Time(finish)
    report = follow(str(progress), str(results), 600, clock=fake.clock, sleep=fake.sleep)
    assert report["finished"] and not report["failed_job"] and report["line"] == "qwen: done"
    assert fake.now < 4
    _write(progress, {"name": "qwen", "state": "done", "line": "registry/qwen:a09a35458c70: pushed"})
    assert follow(str(progress), str(results), 600)["line"] == "registry/qwen:a09a35458c70: pushed"


def test_a_failed_or_timed_out_job_is_reported_with_its_message(tmp_path):
    progress, results = tmp_path / "progress.json", tmp_path / "job"
    _write(progress, {"name": "qwen", "state": "uploading", "line": "qwen: uploading"})
    _write(results, {"failed": 1, "finished": 1, "msg": "Job reached maximum time limit of 60 seconds."})
    report = follow(str(progress), str(results), 10)
    assert report["finished"] and report["failed_job"]
    assert report["line"] == "qwen: failed: Job reached maximum time limit of 60 seconds."


def test_before_the_job_wrote_anything_the_line_says_it_starts(tmp_path):
    fake = _Time()
    report = follow(str(tmp_path / "none.json"), str(tmp_path / "none"), 2, "modelcar", clock=fake.clock,
                    sleep=fake.sleep)  # fmt: skip
    assert report == {
        "finished": False, "failed_job": False, "line": "modelcar: starting", "state": "starting",
        "bytes_done": 0, "bytes_total": 0, "waited_s": 2.0,
    }  # fmt: skip


def _run_module(monkeypatch, args):
    monkeypatch.setattr(basic, "_ANSIBLE_ARGS", json.dumps({"ANSIBLE_MODULE_ARGS": args}).encode())
    monkeypatch.setattr(basic, "_ANSIBLE_PROFILE", "legacy")
    monkeypatch.setattr(sys, "stdout", io.StringIO())
    with pytest.raises(SystemExit):
        job_progress.main()
    return json.loads(sys.stdout.getvalue())


def test_module_changes_nothing_and_refuses_a_negative_interval(tmp_path, monkeypatch):
    results = tmp_path / "job"
    _write(results, {"changed": True})
    args = {"progress_file": str(tmp_path / "p.json"), "results_file": str(results), "interval": 5}
    result = _run_module(monkeypatch, args)
    assert result["finished"] and not result["changed"] and result["line"] == "job: done"
    result = _run_module(monkeypatch, {**args, "interval": -1})
    assert result["failed"] and result["msg"] == "interval must be 0 or more, not -1.0"
