"""_progress: the progress file long module runs rewrite for the role that follows them."""

from __future__ import annotations

import json

import pytest

from ansible_collections.burst.golden_ami.plugins.module_utils._progress import ProgressFile, human, write_json


class _Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


@pytest.mark.parametrize(
    ("count", "text"),
    [(0, "0 B"), (1023, "1023 B"), (1024, "1.0 KiB"), (1536 * 1024, "1.5 MiB"), (5 * 1024**4, "5.0 TiB")],
)
def test_human_sizes(count, text):
    assert human(count) == text


def test_the_file_is_rewritten_at_most_once_per_interval_unless_forced(tmp_path):
    clock = _Clock()
    path = tmp_path / "run" / "progress.json"
    progress = ProgressFile(str(path), "qwen:abc", every=1.0, clock=clock)
    progress.phase("uploading", 4 * 1024**3)
    first = json.loads(path.read_text())
    assert first["state"] == "uploading" and first["bytes_done"] == 0 and first["bytes_total"] == 4 * 1024**3
    clock.now += 0.5
    progress.add(1024**3)
    assert json.loads(path.read_text()) == first, "half a second later: not rewritten"
    clock.now += 0.5
    progress.add(1024**3)
    second = json.loads(path.read_text())
    assert second["bytes_done"] == 2 * 1024**3
    assert second["line"] == "qwen:abc: uploading 2.0 GiB of 4.0 GiB (50%), 2.0 GiB/s"
    progress.phase("done", line="qwen:abc: pushed")
    assert json.loads(path.read_text())["line"] == "qwen:abc: pushed", "a new phase is written at once"
    assert sorted(p.name for p in path.parent.iterdir()) == ["progress.json"], "no temporary file left"


def test_set_takes_absolute_figures_and_a_restart_does_not_inflate_the_rate():
    clock = _Clock()
    progress = ProgressFile(None, "vllm", every=0, clock=clock)
    progress.phase("pulling")
    assert progress.line() == "vllm: pulling"
    clock.now += 2
    progress.set(600, 1000)
    progress.set(0)  # a retried upload starts again
    progress.set(400)
    assert progress.snapshot["bytes_done"] == 400 and progress.snapshot["bytes_total"] == 1000
    assert progress.rate() == 500, "600 then 400 more bytes in 2 seconds"


def test_write_json_replaces_the_file_whole(tmp_path):
    path = tmp_path / "p.json"
    write_json(str(path), {"line": "a"})
    write_json(str(path), {"line": "b"})
    assert json.loads(path.read_text()) == {"line": "b"}
    with pytest.raises(TypeError):
        write_json(str(path), {"line": object()})
    assert json.loads(path.read_text()) == {"line": "b"}, "a failed write leaves the last good file"
    assert [p.name for p in tmp_path.iterdir()] == ["p.json"]


def test_a_directory_removed_after_the_first_write_is_not_made_again(tmp_path):
    """A bake's sweep removes the progress directory of an interrupted run; the run, still going, leaves it gone."""
    clock = _Clock()
    directory = tmp_path / "burst-bake.b-1.progress"
    progress = ProgressFile(str(directory / "verify.json"), "verify", every=1.0, clock=clock)
    progress.phase("health")
    assert (directory / "verify.json").is_file()
    (directory / "verify.json").unlink()
    directory.rmdir()
    clock.now += 5
    progress.update(line="still waiting", force=True)
    assert not directory.exists()
    assert progress.snapshot["line"] == "still waiting"
