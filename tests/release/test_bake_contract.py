"""The bake's contract with its configure roles, read from the files (nothing runs).

- ``playbooks/bake.yml`` runs the roles of ``bake_configure_roles`` in one loop
  (``tasks/configure_role.yml``), in the order of ``__bake_configure_order``.
- Each of those roles reports what it put on the builder as one fact,
  ``<role>_manifest``, set in its tasks and documented in its README; the
  bake collects them under ``roles_manifest``.
- The docker builder connection lives in ``playbooks/tasks/builder_container.yml``,
  included only for that connection.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
PLAYBOOKS = REPO / "playbooks"
DEFAULTS = yaml.safe_load((PLAYBOOKS / "vars" / "bake_defaults.yml").read_text())
ORDER = DEFAULTS["__bake_configure_order"]


def _tasks(node):
    """Every task of a task list, blocks, rescues and always included."""
    for task in node or []:
        yield task
        for section in ("block", "rescue", "always"):
            yield from _tasks(task.get(section))


def _play_tasks(playbook: Path):
    for play in yaml.safe_load(playbook.read_text()):
        for section in ("pre_tasks", "tasks", "post_tasks", "handlers"):
            yield from _tasks(play.get(section))


def _facts_set(role: str) -> set[str]:
    facts = set()
    for path in (REPO / "roles" / role / "tasks").glob("*.yml"):
        for task in _tasks(yaml.safe_load(path.read_text())):
            facts.update(task.get("ansible.builtin.set_fact") or {})
    return facts


def test_the_configure_order_is_the_documented_one() -> None:
    assert ORDER == [
        "os_updates",
        "container_runtime",
        "nvidia_container",
        "image_cache",
        "model_cache",
        "burst_services",
        "ecs_agent",
        "buildkit",
        "modelcar",
    ]
    assert set(DEFAULTS["bake_configure_roles"]) <= set(ORDER)


@pytest.mark.parametrize("role", ORDER)
def test_each_configure_role_reports_its_manifest(role: str) -> None:
    assert f"{role}_manifest" in _facts_set(role), f"no task of roles/{role} sets {role}_manifest"
    readme = (REPO / "roles" / role / "README.md").read_text()
    assert f"`{role}_manifest`" in readme, f"roles/{role}/README.md does not document {role}_manifest"


def test_the_roles_run_in_one_loop_and_their_manifests_are_collected() -> None:
    tasks = list(_play_tasks(PLAYBOOKS / "bake.yml"))
    includes = [t for t in tasks if t.get("ansible.builtin.include_tasks") == "tasks/configure_role.yml"]
    assert len(includes) == 1
    assert includes[0]["loop"] == "{{ __bake_roles }}"
    roles = [t["ansible.builtin.include_role"]["name"] for t in tasks if "ansible.builtin.include_role" in t]
    assert roles == ["burst.golden_ami.image_sanitize"], "configure roles are included only by configure_role.yml"
    step = yaml.safe_load((PLAYBOOKS / "tasks" / "configure_role.yml").read_text())
    assert step[0]["ansible.builtin.set_fact"] == {"__bake_step": "{{ __bake_role }}"}
    assert step[1]["ansible.builtin.include_role"] == {"name": "burst.golden_ami.{{ __bake_role }}"}
    collect = [t for t in tasks if "__bake_roles_manifest" in (t.get("ansible.builtin.set_fact") or {})]
    assert len(collect) == 1 and collect[0]["loop"] == "{{ __bake_roles }}"
    assert "_manifest'" in collect[0]["ansible.builtin.set_fact"]["__bake_roles_manifest"]


def test_the_docker_connection_is_only_in_its_own_tasks_file() -> None:
    tasks = list(_play_tasks(PLAYBOOKS / "bake.yml"))
    for task in tasks:
        modules = [key for key in task if key.startswith("community.docker.")]
        assert not modules, f"{task.get('name')}: the docker connection's steps belong in tasks/builder_container.yml"
        add_host = task.get("ansible.builtin.add_host") or {}
        assert add_host.get("ansible_connection") != "community.docker.docker", task.get("name")
    [include] = [t for t in tasks if t.get("ansible.builtin.include_tasks") == "tasks/builder_container.yml"]
    assert include["when"] == "bake_builder_connection == 'docker'"
