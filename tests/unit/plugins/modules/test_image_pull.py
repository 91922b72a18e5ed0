"""image_pull's logic against the host's Docker engine and the local registries."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import re
import sys

import boto3
import pytest
from ansible.module_utils import basic
from moto import mock_aws

from ansible_collections.burst.golden_ami.plugins.module_utils._docker_engine import (
    Engine,
    EngineError,
    PullProgress,
    encode_auth,
    parse_reference,
    registry_host,
    with_retries,
)
from ansible_collections.burst.golden_ami.plugins.module_utils._progress import ProgressFile
from ansible_collections.burst.golden_ami.plugins.module_utils._registry_auth import ecr_credentials
from ansible_collections.burst.golden_ami.plugins.modules import image_pull
from ansible_collections.burst.golden_ami.plugins.modules.image_pull import ImageCache, disk_preflight


def test_parse_reference_splits_host_port_tag_and_digest():
    digest = "sha256:" + "a" * 64
    assert parse_reference("127.0.0.1:5000/standin/vllm:v0.1") == ("127.0.0.1:5000/standin/vllm", "v0.1", None)
    assert parse_reference(f"127.0.0.1:5000/standin/vllm@{digest}") == ("127.0.0.1:5000/standin/vllm", None, digest)
    assert parse_reference("vllm/vllm-openai") == ("vllm/vllm-openai", "latest", None)
    with pytest.raises(ValueError, match="invalid digest"):
        parse_reference("repo@sha256:short")
    with pytest.raises(ValueError, match="invalid image reference"):
        parse_reference("repo:bad tag")


def test_registry_host_defaults_to_docker_hub():
    assert registry_host("vllm/vllm-openai") == "docker.io"
    assert registry_host("ghcr.io/huggingface/tei") == "ghcr.io"
    assert registry_host("127.0.0.1:5000/standin/vllm") == "127.0.0.1:5000"


def test_encode_auth_round_trips():
    decoded = json.loads(base64.urlsafe_b64decode(encode_auth("u", "p", "r:1")))
    assert decoded == {"username": "u", "password": "p", "serveraddress": "r:1"}


def test_retries_back_off_and_stop_on_permanent_errors():
    sleeps, calls = [], []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise EngineError("received unexpected HTTP status: 503")
        return "ok"

    assert with_retries(flaky, retries=4, delay=1.0, sleep=sleeps.append) == "ok"
    assert sleeps == [1.0, 2.0]

    def unknown():
        raise EngineError("manifest unknown", 404, permanent=True)

    with pytest.raises(EngineError):
        with_retries(unknown, retries=4, delay=1.0, sleep=sleeps.append)
    assert sleeps == [1.0, 2.0]


def test_ecr_credentials_decode_the_token():
    with mock_aws():
        client = boto3.client("ecr", region_name="eu-central-1")
        user, password = ecr_credentials("123456789012.dkr.ecr.eu-central-1.amazonaws.com", client=client)
    assert user == "AWS"
    assert password == "123456789012-auth-token"  # noqa: S105 (moto's fixed token)


def _remove(engine: Engine, repository: str) -> None:
    """Drop this registry's names for the images (untag only: the stand-ins' own tags stay)."""
    filters = json.dumps({"reference": [repository]})
    for image in json.loads(engine.request("GET", "/images/json", {"filters": filters, "digests": "1"})[1]):
        for name in [*(image.get("RepoTags") or []), *(image.get("RepoDigests") or [])]:
            if name.startswith(repository + ":") or name.startswith(repository + "@"):
                engine.request("DELETE", f"/images/{name}", {"noprune": "0"})


@pytest.mark.docker
def test_pull_by_tag_then_nothing_to_pull(auth_registry):
    engine = Engine()
    image = auth_registry.standins["vllm-openai:v0.1"]
    repository = image["repository"]
    _remove(engine, repository)
    auths = {auth_registry.host: encode_auth(auth_registry.username, auth_registry.password, auth_registry.host)}
    try:
        cache = ImageCache(engine, auths, retry_delay=0.1)
        entry, changed = cache.ensure("vllm", image["reference"])
        assert changed and entry["pulled"]
        assert entry["digest"] == image["digest"]
        assert entry["pinned"] == image["pinned"]
        assert entry["size"] > 0
        entry, changed = cache.ensure("vllm", image["reference"])
        assert not changed and not entry["pulled"]
    finally:
        _remove(engine, repository)


@pytest.mark.docker
def test_bad_input_fails_naming_the_image(auth_registry):
    engine = Engine()
    good = {auth_registry.host: encode_auth(auth_registry.username, auth_registry.password, auth_registry.host)}
    bad = {auth_registry.host: encode_auth(auth_registry.username, "wrong-password", auth_registry.host)}
    image = auth_registry.standins["vllm-openai:v0.1"]
    cache = ImageCache(engine, good, retry_delay=0.1)
    with pytest.raises(ValueError, match=r"image ghost \(.*standin/ghost:v9\)"):
        cache.ensure("ghost", f"{auth_registry.host}/standin/ghost:v9")
    with pytest.raises(ValueError, match=r"image vllm .*digest mismatch"):
        cache.ensure("vllm", image["reference"], "sha256:" + "0" * 64)
    with pytest.raises(ValueError, match=r"image vllm .*could not resolve"):
        ImageCache(engine, bad, retry_delay=0.1).ensure("vllm", image["reference"])


@pytest.mark.docker
def test_check_mode_reports_a_pull_without_pulling(registry):
    engine = Engine()
    image = registry.standins["text-embeddings-inference:v0.1"]
    _remove(engine, image["repository"])
    entry, changed = ImageCache(engine, {}, check_mode=True).ensure("tei", image["reference"])
    assert changed and entry["pulled"]
    assert entry["digest"] == image["digest"]
    assert engine.inspect_image(image["pinned"]) is None


@pytest.mark.docker
def test_known_digest_present_asks_no_registry(registry):
    engine = Engine()
    image = registry.standins["vllm-openai:v0.2"]
    _remove(engine, image["repository"])
    try:
        ImageCache(engine, {}).ensure("next", image["pinned"])

        class NoRegistry(Engine):
            def resolve(self, reference, auth=None):
                raise AssertionError(f"asked the registry for {reference}")

        entry, changed = ImageCache(NoRegistry(), {}).ensure("next", image["pinned"])
        assert not changed and entry["digest"] == image["digest"]
    finally:
        _remove(engine, image["repository"])


class _Stats:
    """What os.statvfs returns, with a chosen free space."""

    def __init__(self, free_bytes: int) -> None:
        self.f_frsize = 4096
        self.f_bavail = free_bytes // 4096


def test_disk_preflight_passes_and_reports_the_numbers():
    disk = disk_preflight([("vllm", 17 * 1024)], 1024, "/var/lib/docker", statvfs=lambda _path: _Stats(40 << 30))
    assert disk == {
        "path": "/var/lib/docker",
        "free_bytes": 40 << 30,
        "needed_bytes": 18 << 30,
        "pending": ["vllm"],
    }


def test_disk_preflight_fails_naming_the_space_and_the_images():
    with pytest.raises(ValueError) as failure:
        disk_preflight(
            [("vllm", 17 * 1024), ("tei", 0)], 1024, "/var/lib/docker", statvfs=lambda _path: _Stats(10 << 30)
        )
    assert str(failure.value) == (
        "Not enough disk space for the images to pull: /var/lib/docker has 10.0 GiB free; vllm (17.0 GiB), "
        "tei (size not given) plus the 1.0 GiB margin need 18.0 GiB. Grow the root volume (bake_root_volume.size) "
        "or free space there. Nothing was pulled."
    )


def test_disk_preflight_needs_nothing_when_nothing_is_to_be_pulled():
    def no_disk(path):
        raise AssertionError(f"measured {path}")

    assert disk_preflight([], 1024, "", statvfs=no_disk)["needed_bytes"] == 0
    assert disk_preflight([("tei", 0)], 0, "/var/lib/docker", statvfs=no_disk)["needed_bytes"] == 0


def _run_module(monkeypatch, args: dict) -> dict:
    """Run image_pull's main as Ansible would; return its JSON result."""
    monkeypatch.setattr(basic, "_ANSIBLE_ARGS", json.dumps({"ANSIBLE_MODULE_ARGS": args}).encode())
    monkeypatch.setattr(basic, "_ANSIBLE_PROFILE", "legacy")
    monkeypatch.setattr(sys, "stdout", io.StringIO())
    with pytest.raises(SystemExit):
        image_pull.main()
    return json.loads(sys.stdout.getvalue())


@pytest.mark.docker
def test_module_pulls_nothing_when_the_images_do_not_fit(registry, monkeypatch):
    engine = Engine()
    image = registry.standins["text-embeddings-inference:v0.1"]
    _remove(engine, image["repository"])
    try:
        huge = 1024 * 1024 * 1024  # 1 PiB in MiB: more than any disk here
        args = {"images": [{"name": "tei", "reference": image["reference"], "size_mb": huge}], "retry_delay": 0.1}
        result = _run_module(monkeypatch, {**args, "_ansible_check_mode": True})
        assert result["failed"] and "Not enough disk space" in result["msg"], "check mode gives the verdict"
        result = _run_module(monkeypatch, args)
        assert result["failed"]
        assert result["msg"].startswith("Not enough disk space for the images to pull: ")
        assert "tei (1048576.0 GiB)" in result["msg"]
        assert engine.inspect_image(image["pinned"]) is None, "nothing was pulled"

        result = _run_module(monkeypatch, {**args, "images": [{**args["images"][0], "size_mb": 1}]})
        assert result["changed"] and result["pulled"] == 1
        root = engine.info()["DockerRootDir"]
        assert result["disk"]["path"] == root and result["disk"]["pending"] == ["tei"]
        assert result["disk"]["needed_bytes"] == (1 + 1024) * 1024 * 1024
        assert result["disk"]["free_bytes"] > result["disk"]["needed_bytes"]

        result = _run_module(monkeypatch, args)  # present now: needs no space, even at 1 PiB
        assert not result["changed"] and not result.get("failed")
        assert result["disk"] == {"path": "", "free_bytes": 0, "needed_bytes": 0, "pending": []}
    finally:
        _remove(engine, image["repository"])


def test_pull_progress_follows_the_engine_events():
    state = PullProgress()
    events = [
        {"status": "Pulling from standin/vllm-openai", "id": "sha256:abc"},
        {"status": "Pulling fs layer", "id": "aaa"},
        {"status": "Pulling fs layer", "id": "bbb"},
        {"status": "Already exists", "id": "ccc"},
        {"status": "Downloading", "id": "aaa", "progressDetail": {"current": 300, "total": 1000}},
        {"status": "Downloading", "id": "bbb", "progressDetail": {"current": 50, "total": 200}},
    ]
    for event in events:
        state.event(event)
    assert (state.downloaded, state.size, state.counts()) == (350, 1200, (1, 0, 3))
    for event in [
        {"status": "Download complete", "id": "aaa"},
        {"status": "Extracting", "id": "aaa", "progressDetail": {"current": 500, "total": 1000}},
    ]:
        state.event(event)
    assert (state.downloaded, state.counts()) == (1050, (1, 1, 3))
    for event in [{"status": "Pull complete", "id": "aaa"}, {"status": "Pull complete", "id": "bbb"}]:
        state.event(event)
    state.event({"status": "Digest: sha256:" + "0" * 64})
    state.event({"status": "Status: Downloaded newer image for x"})
    assert (state.downloaded, state.size, state.counts()) == (1200, 1200, (3, 0, 3))


class _Recorded(ProgressFile):
    """A progress file that keeps every line it would write."""

    def __init__(self):
        super().__init__(None, "image_pull", every=0)
        self.lines = []

    def update(self, line=None, force=False):
        super().update(line, force)
        self.lines.append(self.snapshot["line"])


def _fresh_image(registry, tmp_path):
    """An image whose layers no engine holds: random files packed by modelcar_image, pushed into ``registry``."""
    from ansible_collections.burst.golden_ami.plugins.module_utils._model_record import RECORD_NAME
    from ansible_collections.burst.golden_ami.plugins.module_utils._oci import Registry
    from ansible_collections.burst.golden_ami.plugins.modules.modelcar_image import build_and_push

    files = {f"shard-{index}.bin": os.urandom(2 * 1024 * 1024 + index) for index in range(3)}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    record = {
        "name": "fresh", "version": "f" * 40,
        "files": [{"path": n, "size": len(d), "sha256": hashlib.sha256(d).hexdigest()} for n, d in files.items()],
    }  # fmt: skip
    (tmp_path / RECORD_NAME).write_text(json.dumps(record))
    params = {
        "model_dir": str(tmp_path), "repository": f"{registry.host}/fresh/pull-progress", "tag": None,
        "base_image": registry.standins["busybox:v0.1"]["pinned"], "platform": "linux/amd64",
        "model_path": "/models", "split_mb": 1, "labels": {}, "force": True, "plain_http": None,
    }  # fmt: skip
    return build_and_push(params, Registry)["reference"]


@pytest.mark.docker
def test_a_pull_reports_its_layers_and_bytes(registry, tmp_path):
    engine = Engine()
    pinned = _fresh_image(registry, tmp_path)
    repository = pinned.split("@", maxsplit=1)[0]
    progress = _Recorded()
    try:
        cache = ImageCache(engine, {}, retry_delay=0.1, progress=progress)
        plan = cache.plan("fresh", pinned)
        plan["position"] = "image 1 of 1"
        entry, changed = cache.apply(plan)
        assert changed and entry["pulled"]
    finally:
        _remove(engine, repository)
    assert progress.lines[0] == f"fresh (image 1 of 1): pulling {pinned}"
    counted = [line for line in progress.lines[1:] if " layers pulled" in line]
    assert counted, progress.lines
    pattern = r"fresh \(image 1 of 1\): (\d+) of (\d+) layers pulled(, \d+ extracting)?(, .* of .* downloaded, .*/s)?"
    assert all(re.fullmatch(pattern, line) for line in counted), counted
    done, known = re.fullmatch(pattern, counted[-1]).groups()[:2]
    assert done == known and int(known) >= 3, "the 3 model layers at least, all pulled in the end"
    assert any("downloaded" in line for line in counted), "bytes were reported while downloading"


@pytest.mark.docker
def test_module_writes_its_progress_file_but_not_in_check_mode(registry, monkeypatch, tmp_path):
    engine = Engine()
    image = registry.standins["busybox:v0.1"]
    _remove(engine, image["repository"])
    path = tmp_path / "progress" / "pull.json"
    args = {"images": [{"name": "busybox", "reference": image["reference"]}], "progress_file": str(path)}
    try:
        result = _run_module(monkeypatch, {**args, "_ansible_check_mode": True})
        assert result["pulled"] == 1 and not path.exists()
        result = _run_module(monkeypatch, args)
        assert result["pulled"] == 1
        assert json.loads(path.read_text())["line"] == "image_pull: 1 images pulled"
        assert json.loads(path.read_text())["state"] == "done"
    finally:
        _remove(engine, image["repository"])
