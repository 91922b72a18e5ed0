"""Unit tests of the model_download module: its interface, and a run against the local Hub mirror."""

from __future__ import annotations

import importlib.util
import json
import os
import tempfile
import time

import pytest
import yaml
from ansible.module_utils.testing import patch_module_args

from ansible_collections.burst.golden_ami.plugins.module_utils import _model_record as model_record
from ansible_collections.burst.golden_ami.plugins.modules import model_download

REPO = "stand-in/md-llm"
MiB = 1 << 20


@pytest.fixture(scope="module")
def hub(hub_mirror):
    hub_mirror.add_model(REPO, shards=2, shard_size=MiB, revisions=2)
    return hub_mirror


def run_module(args, capsys, check_mode=False):
    if check_mode:
        args = dict(args, _ansible_check_mode=True)
    with patch_module_args(args), pytest.raises(SystemExit) as exit_info:
        model_download.main()
    result = json.loads(capsys.readouterr().out)
    result["rc"] = exit_info.value.code
    return result


def test_argument_spec_mirrors_the_documentation():
    options = yaml.safe_load(model_download.DOCUMENTATION)["options"]
    spec = model_download.argument_spec()
    assert set(options) == set(spec)
    for name, doc in options.items():
        arg = spec[name]
        assert doc["type"] == arg["type"], name
        assert doc.get("default") == arg.get("default"), name
        assert doc.get("choices") == arg.get("choices"), name
        assert doc.get("elements") == arg.get("elements"), name
    secret = {name for name, arg in spec.items() if arg.get("no_log")}
    assert secret == {"hub_token", "aws_access_key_id", "aws_secret_access_key", "aws_session_token"}
    yaml.safe_load(model_download.EXAMPLES)
    yaml.safe_load(model_download.RETURN)


def test_download_then_no_change_then_check_mode(hub, tmp_path, capsys):
    args = {"repo_id": REPO, "revision": "v1", "hub_endpoint": hub.endpoint, "root": str(tmp_path)}
    first = run_module(args, capsys)
    assert first["rc"] == 0, first
    assert first["changed"] is True
    sha = hub.repo(REPO).commit("v1").sha
    assert first["version"] == sha
    assert first["path"] == str(tmp_path / "stand-in--md-llm")

    mark = hub.mark()
    again = run_module(dict(args, revision=sha), capsys)
    assert again["changed"] is False
    assert hub.requests(since=mark) == []

    check = run_module(dict(args, revision="main"), capsys, check_mode=True)
    assert check["changed"] is True
    assert check["would_download"] == ["config.json", "generation_config.json"]
    assert model_record.load_record(str(tmp_path / "stand-in--md-llm"))["version"] == sha


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            {"source": "url", "url": "http://127.0.0.1:1/x", "name": "x"},
            "following are missing: sha256",
        ),
        ({"source": "url", "url": "http://127.0.0.1:1/x", "name": "x", "sha256": "12"}, "64 hex digits"),
        ({"source": "s3"}, "following are missing: bucket"),
        ({"source": "s3", "bucket": "b", "prefix": "m/", "sha256": "0" * 64}, "sha256 must be a map"),
        ({"repo_id": "not-a-repo"}, "repo_id 'not-a-repo' is not of the form 'org/name'"),
        ({"repo_id": "a/b", "name": "../etc"}, "is not a plain directory name"),
        ({"repo_id": "a/b", "disk_margin_mb": -1}, "disk_margin_mb must not be negative"),
    ],
)
def test_bad_parameters_fail_with_a_clear_message(args, message, tmp_path, capsys):
    result = run_module(dict(args, root=str(tmp_path)), capsys)
    assert result["rc"] == 1
    assert result["failed"] is True
    assert message in result["msg"]


@pytest.mark.parametrize("via", ["argument", "environment"])
def test_token_stays_in_the_process(hub, tmp_path, capsys, monkeypatch, via):
    token = "hf_" + "T0ken" * 7
    hub.set_token(token, REPO)
    home = tmp_path / "home"
    home.mkdir()
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    # A builder whose environment says offline must still download; its own HF_HOME is not touched.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(home / "hf"))
    root = tmp_path / "models"
    args = {"repo_id": REPO, "hub_endpoint": hub.endpoint, "root": str(root)}
    if via == "argument":
        args["hub_token"] = token
        monkeypatch.delenv("HF_TOKEN", raising=False)
    else:
        monkeypatch.setenv("HF_TOKEN", token)
    try:
        mark = hub.mark()
        result = run_module(args, capsys)
        assert all(r.auth_header for r in hub.requests(since=mark))
    finally:
        hub.set_token(None, REPO)
    assert result["rc"] == 0, result
    assert result["changed"] is True
    assert token not in json.dumps(result)
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    assert os.environ["HF_HOME"] == str(home / "hf")
    assert os.environ.get("HF_TOKEN") == (token if via == "environment" else None)
    # The private HF_HOME is gone, nothing was written under HOME, no staging is left, and no file holds the token.
    assert list(scratch.iterdir()) == []
    assert list(home.iterdir()) == []
    assert sorted(os.listdir(root)) == ["manifest.json", "stand-in--md-llm"]
    for dirpath, _dirs, files in os.walk(tmp_path):
        for name in files:
            with open(os.path.join(dirpath, name), "rb") as handle:
                assert token.encode() not in handle.read(), os.path.join(dirpath, name)


def test_failure_reports_the_problem_and_leaves_no_model(hub, tmp_path, capsys):
    result = run_module(
        {"repo_id": REPO, "revision": "nope", "hub_endpoint": hub.endpoint, "root": str(tmp_path)}, capsys
    )
    assert result["rc"] == 1
    assert result["msg"] == "revision 'nope' not found in Hub repository %s" % REPO
    assert not (tmp_path / "stand-in--md-llm").exists()


# ---------------------------------------------------------------------------
# The role's progress follower (roles/model_cache/files/model_cache_progress.py)


@pytest.fixture(scope="module")
def follower():
    path = os.path.join(os.path.dirname(__file__), "..", "..", "..", "..", "roles", "model_cache", "files")
    spec = importlib.util.spec_from_file_location("model_cache_progress", os.path.join(path, "model_cache_progress.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _write(path, data):
    path.write_text(json.dumps(data))


def test_follower_reports_a_finished_job_at_once(follower, tmp_path):
    _write(tmp_path / "job", {"changed": True, "version": "abc"})
    _write(
        tmp_path / "progress", {"state": "done", "line": "m: downloaded 1.00 GiB", "bytes_done": 5, "bytes_total": 5}
    )
    start = time.monotonic()
    report = follower.follow(str(tmp_path / "progress"), str(tmp_path / "job"), wait=5)
    assert time.monotonic() - start < 1
    assert report.pop("waited_s") < 1
    assert report == {
        "finished": True,
        "line": "m: downloaded 1.00 GiB",
        "state": "done",
        "bytes_done": 5,
        "bytes_total": 5,
    }


def test_follower_waits_a_whole_interval_while_the_progress_file_changes(follower, tmp_path):
    # The download rewrites its progress file every second; the follower reports once per interval.
    _write(tmp_path / "job", {"started": True, "finished": False})
    progress = tmp_path / "progress"
    now = [0.0]
    lines = iter("m: %d of 40" % i for i in range(1, 1000))

    def sleep(seconds):
        assert seconds > 0
        now[0] += seconds
        _write(progress, {"state": "downloading", "line": next(lines)})

    _write(progress, {"state": "downloading", "line": "m: 0 of 40"})
    report = follower.follow(str(progress), str(tmp_path / "job"), wait=5, clock=lambda: now[0], sleep=sleep)
    assert report["finished"] is False
    assert now[0] == pytest.approx(5)
    assert report["waited_s"] == pytest.approx(5)
    assert report["line"] == "m: 20 of 40"  # the latest state, after 20 rewrites at 0.25 s


def test_follower_returns_early_only_when_the_job_finishes(follower, tmp_path):
    job = tmp_path / "job"
    _write(job, {"started": True, "finished": False})
    now = [0.0]

    def sleep(seconds):
        now[0] += seconds
        if now[0] >= 2:
            _write(job, {"changed": True})

    report = follower.follow(str(tmp_path / "progress"), str(job), wait=30, clock=lambda: now[0], sleep=sleep)
    assert report["finished"] is True
    assert 2 <= now[0] < 2.5


def test_follower_refuses_a_wait_that_is_not_positive(follower, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        follower.main(["--progress", str(tmp_path / "p"), "--job", str(tmp_path / "j"), "--wait", "0"])
    assert exit_info.value.code == 2
    assert "--wait must be a positive number of seconds, got 0.0" in capsys.readouterr().err


def test_follower_gives_up_waiting_after_the_wait(follower, tmp_path):
    _write(tmp_path / "job", {"started": True, "finished": False})
    now = [0.0]

    def sleep(seconds):
        now[0] += seconds

    report = follower.follow(
        str(tmp_path / "missing"), str(tmp_path / "job"), wait=2, clock=lambda: now[0], sleep=sleep
    )
    assert report == {
        "finished": False,
        "line": "waiting for the download to start",
        "state": "starting",
        "waited_s": 2,
    }
    assert now[0] == 2


def test_follower_names_a_failed_job(follower, tmp_path, capsys):
    _write(tmp_path / "job", {"failed": True, "msg": "checksum mismatch for model.safetensors"})
    _write(tmp_path / "progress", {"name": "m", "state": "failed", "line": "m: checksum mismatch"})
    assert follower.main(["--progress", str(tmp_path / "progress"), "--job", str(tmp_path / "job"), "--wait", "1"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["finished"] is True
    assert report["line"] == "m: failed: checksum mismatch for model.safetensors"
