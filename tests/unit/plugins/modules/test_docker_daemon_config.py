"""docker_daemon_config run as Ansible runs it: changed, idempotent, check mode, bad files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

MODULE = "ansible_collections.burst.golden_ami.plugins.modules.docker_daemon_config"


def run_module(args: dict, check_mode: bool = False) -> dict:
    payload = {"ANSIBLE_MODULE_ARGS": {**args, "_ansible_check_mode": check_mode, "_ansible_diff": True}}
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.run(
        [sys.executable, "-m", MODULE], input=json.dumps(payload), capture_output=True, text=True, env=env, check=False
    )
    return json.loads(proc.stdout)


@pytest.fixture
def daemon_json(tmp_path: Path) -> Path:
    path = tmp_path / "docker" / "daemon.json"
    path.parent.mkdir()
    path.write_text('{"labels": ["owner=base"], "log-opts": {"max-size": "10m"}}')
    return path


def test_merge_changes_once_then_nothing(daemon_json: Path):
    args = {"path": str(daemon_json), "options": {"bridge": "none", "log-opts": {"max-file": "3"}}}
    first = run_module(args)
    assert first["changed"] is True
    content = json.loads(daemon_json.read_text())
    assert content == {"labels": ["owner=base"], "bridge": "none", "log-opts": {"max-size": "10m", "max-file": "3"}}
    assert oct(daemon_json.stat().st_mode & 0o777) == "0o644"
    second = run_module(args)
    assert second["changed"] is False


def test_check_mode_reports_without_writing(daemon_json: Path):
    before = daemon_json.read_text()
    result = run_module({"path": str(daemon_json), "options": {"storage-driver": "vfs"}}, check_mode=True)
    assert result["changed"] is True
    assert result["config"]["storage-driver"] == "vfs"
    assert '"storage-driver": "vfs"' in result["diff"]["after"]
    assert daemon_json.read_text() == before


def test_creates_the_file_and_directory(tmp_path: Path):
    path = tmp_path / "etc" / "docker" / "daemon.json"
    result = run_module({"path": str(path), "options": {"iptables": False}})
    assert result["changed"] is True
    assert json.loads(path.read_text()) == {"iptables": False}


def test_same_content_in_other_formatting_is_not_rewritten(daemon_json: Path):
    daemon_json.write_text('{"log-opts":{"max-size":"10m"},"labels":["owner=base"]}')
    result = run_module({"path": str(daemon_json), "options": {"labels": ["owner=base"]}})
    assert result["changed"] is False


def test_invalid_file_fails_and_is_left_alone(daemon_json: Path):
    daemon_json.write_text("{not json")
    result = run_module({"path": str(daemon_json), "options": {"bridge": "none"}})
    assert result["failed"] is True
    assert "is not valid JSON" in result["msg"] and str(daemon_json) in result["msg"]
    assert daemon_json.read_text() == "{not json"
