"""ecs_agent's ecs.config handling, run for real with ansible-playbook against files in a temporary directory.

The unit name is one that does not exist and every path lies under tmp_path, so the role touches nothing else;
the systemd part (stop, enable) is covered by the molecule scenario.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from localworld.localplay import run_local_play

BASE = "ECS_LOGLEVEL=debug\nECS_CLUSTER=builder\nECS_RESERVED_MEMORY=256\nECS_IMAGE_PULL_BEHAVIOR=default\n"
DEFAULT_LINES = [
    "ECS_IMAGE_PULL_BEHAVIOR=prefer-cached",
    "ECS_ENABLE_GPU_SUPPORT=true",
    "ECS_ENABLE_UNTRACKED_IMAGE_CLEANUP=false",
]


def _play(tmp_path: Path, role_vars: dict, *options: str) -> tuple[subprocess.CompletedProcess, dict]:
    """Run the role once on localhost; return the process and the recap counts."""
    role = {
        "role": "burst.golden_ami.ecs_agent",
        "ecs_agent_config_path": str(tmp_path / "etc" / "ecs.config"),
        "ecs_agent_state_dir": str(tmp_path / "data"),
        "ecs_agent_service": "burst-test-no-such-agent.service",
        **role_vars,
    }
    return run_local_play(tmp_path, {"roles": [role]}, *options)


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "etc" / "ecs.config"
    path.parent.mkdir()
    path.write_text(BASE)
    path.chmod(0o600)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "agent.db").write_text("builder's registration")
    (tmp_path / "data" / ".hidden").write_text("state")
    return path


def test_check_mode_shows_the_change_and_changes_nothing(tmp_path, config):
    result, recap = _play(tmp_path, {}, "--check", "--diff")
    assert recap["failed"] == 0 and recap["changed"] >= 2, result.stdout
    assert "+ECS_IMAGE_PULL_BEHAVIOR=prefer-cached" in result.stdout
    assert "-ECS_CLUSTER=builder" in result.stdout
    assert config.read_text() == BASE
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == [".hidden", "agent.db"]


def test_defaults_merge_keep_foreign_lines_and_run_once(tmp_path, config):
    settings = {
        "ecs_agent_config": {
            "ECS_ENGINE_TASK_CLEANUP_WAIT_DURATION": "10m",
            "ECS_ENABLE_CONTAINER_METADATA": True,
            "ECS_RESERVED_MEMORY": None,
        }
    }
    result, recap = _play(tmp_path, settings)
    assert recap["failed"] == 0 and recap["changed"] > 0, result.stdout
    assert config.read_text().splitlines() == [
        "ECS_LOGLEVEL=debug",
        *DEFAULT_LINES,
        "ECS_ENGINE_TASK_CLEANUP_WAIT_DURATION=10m",
        "ECS_ENABLE_CONTAINER_METADATA=true",
    ]
    assert config.stat().st_mode & 0o7777 == 0o644
    assert list((tmp_path / "data").iterdir()) == []

    result, recap = _play(tmp_path, settings)
    assert recap == {"ok": recap["ok"], "changed": 0, "failed": 0}, result.stdout


def test_a_key_set_explicitly_wins_over_the_remove_list(tmp_path, config):
    result, recap = _play(tmp_path, {"ecs_agent_config": {"ECS_CLUSTER": "batch-gpu"}, "ecs_agent_clear_state": False})
    assert recap["failed"] == 0, result.stdout
    lines = config.read_text().splitlines()
    assert "ECS_CLUSTER=batch-gpu" in lines and "ECS_CLUSTER=builder" not in lines
    assert "ECS_RESERVED_MEMORY=256" in lines
    assert (tmp_path / "data" / "agent.db").exists()


def test_removing_a_default_with_null_and_the_remove_list(tmp_path, config):
    role_vars = {"ecs_agent_config": {"ECS_ENABLE_GPU_SUPPORT": None}, "ecs_agent_config_remove": ["ECS_LOGLEVEL"]}
    result, recap = _play(tmp_path, role_vars)
    assert recap["failed"] == 0, result.stdout
    assert config.read_text().splitlines() == [
        "ECS_CLUSTER=builder",
        "ECS_RESERVED_MEMORY=256",
        "ECS_IMAGE_PULL_BEHAVIOR=prefer-cached",
        "ECS_ENABLE_UNTRACKED_IMAGE_CLEANUP=false",
    ]


@pytest.mark.parametrize(
    ("role_vars", "named"),
    [
        ({"ecs_agent_config": {"ECS_IMAGE_PULL_BEHAVIOR": "cached"}}, "ECS_IMAGE_PULL_BEHAVIOR=cached"),
        ({"ecs_agent_config": {"ECS_ENABLE_GPU_SUPPORT": "yes"}}, "ECS_ENABLE_GPU_SUPPORT=yes"),
        ({"ecs_agent_config": {"ecs_cluster": "x"}}, "ecs_cluster=x"),
        ({"ecs_agent_config": {"ECS_LOGLEVEL": "info\nECS_CLUSTER=other"}}, "ECS_LOGLEVEL="),
        ({"ecs_agent_config_remove": ["ecs-cluster"]}, "ecs_agent_config_remove: ecs-cluster"),
    ],
    ids=["pull-behaviour", "boolean", "lower-case-key", "two-lines", "bad-remove-key"],
)
def test_settings_the_agent_cannot_read_fail_naming_the_key(tmp_path, config, role_vars, named):
    result, recap = _play(tmp_path, role_vars)
    assert recap["failed"] == 1, result.stdout
    assert named in result.stdout
    assert config.read_text() == BASE
