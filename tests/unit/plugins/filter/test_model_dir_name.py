"""The model_dir_name filter: the directory rule of model_download, for the roles."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from ansible_collections.burst.golden_ami.plugins.filter.model_dir_name import FilterModule
from ansible_collections.burst.golden_ami.plugins.module_utils._model_sources import HubSource, S3Source, UrlSource
from localworld.localplay import REPO, run_local_play

model_dir_name = FilterModule().filters()["model_dir_name"]


@pytest.mark.parametrize(
    ("model", "name"),
    [
        ({"repo_id": "Qwen/Qwen2.5-7B-Instruct"}, "Qwen--Qwen2.5-7B-Instruct"),
        ({"source": "hub", "repo_id": "org/m", "name": "mine"}, "mine"),
        ({"source": "s3", "bucket": "b", "prefix": "models/e5-small/"}, "e5-small"),
        ({"source": "s3", "bucket": "b", "prefix": "/e5"}, "e5"),
        ({"source": "s3", "bucket": "b", "prefix": "a//b//"}, "b"),
        ({"source": "s3", "bucket": "b", "prefix": "x/", "name": "named"}, "named"),
        ({"source": "url", "url": "https://h/f.gguf", "sha256": "0" * 64, "name": "tiny"}, "tiny"),
        # No name by the rule: an empty string, for the roles' assertions.
        ({"source": "url", "url": "https://h/f.gguf", "sha256": "0" * 64}, ""),
        ({"source": "s3", "bucket": "b", "prefix": ""}, ""),
        ({"source": "s3", "bucket": "b"}, ""),
        ({"repo_id": "not-a-repo"}, ""),
        ({"repo_id": "org/na me"}, ""),
        ({"repo_id": 5}, ""),
        ({"name": "", "repo_id": "org/m"}, "org--m"),
        ({}, ""),
        ("org/m", ""),
        (None, ""),
    ],
)
def test_the_rule(model, name):
    assert model_dir_name(model) == name


def test_the_filter_names_what_the_module_installs():
    assert model_dir_name({"repo_id": "org/m"}) == HubSource("org/m").default_name
    assert model_dir_name({"source": "s3", "bucket": "b", "prefix": "p/q"}) == S3Source("b", "p/q").default_name
    with pytest.raises(Exception, match="a url source needs a name"):
        assert not UrlSource("https://h/f", "0" * 64).default_name
    assert model_dir_name({"source": "url", "url": "https://h/f", "sha256": "0" * 64}) == ""


def test_a_play_finds_the_filter_by_its_fqcn(tmp_path):
    models = [{"repo_id": "org/m"}, {"source": "s3", "bucket": "b", "prefix": "m/e5/"}, {"source": "url"}]
    play = {
        "vars": {"models": models},
        "tasks": [
            {
                "ansible.builtin.debug": {
                    "msg": "names={{ models | map('burst.golden_ami.model_dir_name') | join(',') }}"
                }
            }
        ],
    }
    result, recap = run_local_play(tmp_path, play)
    assert recap["failed"] == 0, result.stdout + result.stderr
    assert "names=org--m,e5," in result.stdout


def test_the_filter_is_documented():
    env = {
        **os.environ,
        "ANSIBLE_COLLECTIONS_PATH": str(REPO / ".venv" / "collections"),
        "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
    }
    result = subprocess.run(
        [
            os.path.join(os.path.dirname(sys.executable), "ansible-doc"),
            "-t",
            "filter",
            "--json",
            "burst.golden_ami.model_dir_name",
        ],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    entry = json.loads(result.stdout)["burst.golden_ami.model_dir_name"]
    assert entry["doc"]["short_description"]
    assert entry["doc"]["options"]["_input"]["description"]
    assert "burst.golden_ami.model_dir_name" in entry["examples"]
    assert entry["return"]["_value"]["type"] == "str"
