"""The daemon.json merge: what it keeps, what it replaces, what it refuses."""

from __future__ import annotations

import json

import pytest

from ansible_collections.burst.golden_ami.plugins.module_utils._docker_daemon_json import (
    DaemonJsonError,
    deep_merge,
    merge_daemon_json,
    parse_daemon_json,
    render_daemon_json,
)


def test_merge_keeps_unmanaged_keys_and_merges_nested_objects():
    existing = json.dumps(
        {"log-driver": "json-file", "log-opts": {"max-size": "10m"}, "runtimes": {"crun": {"path": "crun"}}}
    )
    before, after = merge_daemon_json(
        existing, {"log-opts": {"max-file": "3"}, "runtimes": {"nvidia": {"path": "nvidia-container-runtime"}}}
    )
    assert before["log-opts"] == {"max-size": "10m"}
    assert after == {
        "log-driver": "json-file",
        "log-opts": {"max-size": "10m", "max-file": "3"},
        "runtimes": {"crun": {"path": "crun"}, "nvidia": {"path": "nvidia-container-runtime"}},
    }


def test_lists_and_scalars_are_replaced_not_appended():
    merged = deep_merge({"dns": ["1.1.1.1"], "bridge": "docker0"}, {"dns": ["9.9.9.9"], "bridge": "none"})
    assert merged == {"dns": ["9.9.9.9"], "bridge": "none"}


def test_merge_does_not_modify_its_arguments():
    current, options = {"a": {"b": 1}}, {"a": {"c": 2}}
    deep_merge(current, options)
    assert current == {"a": {"b": 1}} and options == {"a": {"c": 2}}


def test_remove_drops_only_the_named_top_level_keys():
    _before, after = merge_daemon_json('{"a": 1, "b": 2}', {"c": 3}, remove=["a", "missing"])
    assert after == {"b": 2, "c": 3}


@pytest.mark.parametrize("text", [None, "", "  \n"])
def test_missing_or_empty_file_is_an_empty_object(text):
    assert parse_daemon_json(text) == {}


def test_invalid_json_is_refused_naming_the_file():
    with pytest.raises(DaemonJsonError, match=r"/etc/docker/daemon.json is not valid JSON"):
        parse_daemon_json('{"bridge": ', "/etc/docker/daemon.json")


def test_non_object_is_refused():
    with pytest.raises(DaemonJsonError, match="must hold a JSON object, found list"):
        parse_daemon_json("[1, 2]")


def test_rendering_is_stable():
    text = render_daemon_json({"b": 1, "a": {"d": 2, "c": 3}})
    assert text == render_daemon_json(json.loads(text))
    assert text.endswith("\n") and text.index('"a"') < text.index('"b"')
