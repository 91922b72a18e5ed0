"""Unit tests of the model cache core, against the local Hub mirror, moto's S3 and a local URL."""

from __future__ import annotations

import hashlib
import json
import os
import stat

import boto3
import pytest

from ansible_collections.burst.golden_ami.plugins.module_utils import _files as json_files
from ansible_collections.burst.golden_ami.plugins.module_utils import _model_cache as mc
from ansible_collections.burst.golden_ami.plugins.module_utils import _model_record as model_record
from ansible_collections.burst.golden_ami.plugins.module_utils import _model_sources as model_sources
from ansible_collections.burst.golden_ami.plugins.module_utils import _model_transfer as model_transfer
from localworld.hub_mirror import STAND_IN_EMBEDDING

LLM_SHARD = "model-00001-of-00002.safetensors"
MiB = 1 << 20
LLM = "stand-in/mc-llm"
PRIVATE = "stand-in/mc-private"
BIG = "stand-in/big-llm"
BIG_SHARD = "model.safetensors"


@pytest.fixture(scope="module")
def hub(hub_mirror):
    """The session's Hub mirror, with this module's own repos (faults are set on those only)."""
    hub_mirror.add_model(LLM, shards=2, shard_size=3 * MiB, kind="llm", revisions=2)
    hub_mirror.add_model(PRIVATE, shard_size=MiB, kind="embedding")
    hub_mirror.add_model("stand-in/bin-only", shard_size=MiB, pytorch_bin=True)
    # One shard larger than the others, for cuts in the middle of a file.
    hub_mirror.add_model(BIG, shard_size=12 * MiB)
    return hub_mirror


@pytest.fixture(autouse=True)
def _lift_faults(hub):
    yield
    hub.corrupt(LLM, LLM_SHARD, enabled=False)
    hub.set_token(None, PRIVATE)


def hub_source(hub, repo_id=LLM, revision="main", **kwargs):
    return model_sources.HubSource(repo_id, revision=revision, endpoint=hub.endpoint, **kwargs)


def file_gets(records):
    return [r for r in records if r.endpoint == "resolve" and r.method == "GET"]


def tree_files(path):
    found = {}
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            full = os.path.join(dirpath, name)
            found[os.path.relpath(full, path)] = full
    return found


# ---------------------------------------------------------------------------
# Pure functions


def test_select_files_defaults_keep_safetensors_configs_tokenizer_and_pooling():
    paths = [
        ".gitattributes",
        "README.md",
        "1_Pooling/config.json",
        "config.json",
        "model.safetensors",
        "modules.json",
        "onnx/model.onnx",
        "onnx/config.json",
        "pytorch_model.bin",
        "sentence_bert_config.json",
        "sentencepiece.bpe.model",
        "tokenizer.json",
        "tokenizer_config.json",
        "tf_model.h5",
    ]
    assert model_sources.select_files(paths) == [
        "1_Pooling/config.json",
        "config.json",
        "model.safetensors",
        "modules.json",
        "sentence_bert_config.json",
        "sentencepiece.bpe.model",
        "tokenizer.json",
        "tokenizer_config.json",
    ]


def test_select_files_falls_back_to_bin_without_safetensors():
    assert model_sources.select_files(["config.json", "pytorch_model.bin", "onnx/model.onnx"]) == [
        "config.json",
        "pytorch_model.bin",
    ]


def test_select_files_honours_given_patterns_and_folders():
    paths = ["a/x.json", "a/y.bin", "b/z.json", "model.safetensors"]
    assert model_sources.select_files(paths, allow_patterns=["a/"]) == ["a/x.json", "a/y.bin"]
    assert model_sources.select_files(paths, allow_patterns=["*.json"], ignore_patterns=["b/"]) == ["a/x.json"]


def test_preflight_names_the_sizes_and_the_root(tmp_path):
    with pytest.raises(
        model_record.ModelCacheError, match=r"Not enough disk space for m under .*: 2\.00 GiB to download"
    ):
        mc.preflight_disk(str(tmp_path), 2 << 30, 1 << 30, "m", free=2 << 30)
    assert mc.preflight_disk(str(tmp_path), 1 << 30, 1 << 30, "m", free=2 << 30) == 2 << 30


def test_git_blob_sha1_matches_git():
    # `printf 'hello\n' | git hash-object --stdin`
    assert model_transfer.git_blob_sha1(b"hello\n") == "ce013625030ba8dba906f756967f9e9ca394464a"


def test_progress_line_and_file(tmp_path):
    now = [100.0]
    progress = model_transfer.Progress("org--m", str(tmp_path / "p.json"), clock=lambda: now[0])
    progress.plan(files_total=4, bytes_total=4 * MiB, bytes_done=MiB)

    class Writer:
        written = MiB

    writer = Writer()
    progress.track(writer)
    progress.file_done()
    now[0] += 2.0
    snap = progress.snapshot()
    assert snap["bytes_done"] == 2 * MiB
    assert snap["rate_bytes_per_s"] == MiB // 2
    assert snap["line"] == "org--m: 2.00 MiB of 4.00 MiB (50%), 1/4 files, 512.00 KiB/s, about 4 s left"
    progress.write()
    assert json.loads((tmp_path / "p.json").read_text())["bytes_done"] == 2 * MiB
    progress.retire(writer)
    assert progress.snapshot()["bytes_transferred"] == MiB
    progress.finish("done", "downloaded")
    assert json.loads((tmp_path / "p.json").read_text())["line"] == "org--m: downloaded"


@pytest.mark.parametrize("bad", ["../x", "/etc/passwd", ".burst-model.json", "a/../../b"])
def test_remote_paths_cannot_escape_the_model(bad):
    with pytest.raises(model_record.ModelCacheError, match="refusing file path"):
        model_sources.RemoteFile(bad, 1)


# ---------------------------------------------------------------------------
# Hub


def test_hub_revision_is_pinned_recorded_and_read_only(hub, tmp_path):
    repo = hub.repo(LLM)
    v1 = repo.commit("v1")
    result = mc.ensure_model(hub_source(hub, revision="v1"), str(tmp_path))

    target = tmp_path / "stand-in--mc-llm"
    assert result["changed"] is True
    assert result["version"] == v1.sha
    assert result["path"] == str(target)
    files = tree_files(target)
    expected = {"config.json", "generation_config.json", "model.safetensors.index.json", "special_tokens_map.json"}
    expected |= {"tokenizer.json", "tokenizer_config.json", LLM_SHARD, "model-00002-of-00002.safetensors"}
    assert set(files) == expected | {model_record.RECORD_NAME}
    for path in expected:
        with open(files[path], "rb") as handle:
            assert hashlib.sha256(handle.read()).hexdigest() == v1.files[path].sha256, path
        assert stat.S_IMODE(os.stat(files[path]).st_mode) == 0o444
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o555
    # The v1 config, not main's.
    assert json.loads((target / "config.json").read_text())["stand_in"]["ref"] == "v1"

    record = json.loads((target / model_record.RECORD_NAME).read_text())
    assert record["source"] == "hub"
    assert record["repo_id"] == LLM
    assert record["revision"] == "v1"
    assert record["commit_sha"] == v1.sha
    by_path = {f["path"]: f for f in record["files"]}
    assert by_path[LLM_SHARD]["verified_with"] == model_sources.VERIFY_LFS
    assert by_path["config.json"]["verified_with"] == model_sources.VERIFY_GIT_BLOB
    assert by_path[LLM_SHARD]["size"] == 3 * MiB
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["models"]["stand-in--mc-llm"] == record
    assert not (tmp_path / ".staging" / "stand-in--mc-llm").exists()


def test_hub_default_patterns_on_an_embedding_repo(hub, tmp_path):
    mc.ensure_model(hub_source(hub, STAND_IN_EMBEDDING), str(tmp_path))
    files = set(tree_files(tmp_path / "stand-in--tiny-e5"))
    assert "1_Pooling/config.json" in files
    assert {"modules.json", "sentence_bert_config.json", "config_sentence_transformers.json"} <= files
    assert "model.safetensors" in files
    assert not {"pytorch_model.bin", "onnx/model.onnx", "README.md", ".gitattributes"} & files


def test_hub_bin_weights_when_no_safetensors(hub, tmp_path):
    # bin-only has model.safetensors too (the mirror always writes shards): ask for bins explicitly.
    result = mc.ensure_model(
        hub_source(hub, "stand-in/bin-only", allow_patterns=["*.bin", "config.json"]), str(tmp_path)
    )
    assert sorted(f["path"] for f in result["files"]) == ["config.json", "pytorch_model.bin"]


def test_second_run_with_a_sha_makes_no_request(hub, tmp_path):
    first = mc.ensure_model(hub_source(hub), str(tmp_path))
    mark = hub.mark()
    again = mc.ensure_model(hub_source(hub, revision=first["version"]), str(tmp_path))
    assert again["changed"] is False
    assert again["downloaded_bytes"] == 0
    assert hub.requests(since=mark) == []
    # With a branch: one revision lookup, no file transferred.
    mark = hub.mark()
    assert mc.ensure_model(hub_source(hub, revision="main"), str(tmp_path))["changed"] is False
    assert [r.endpoint for r in hub.requests(since=mark)] == ["model_info", "tree"]


def test_moving_to_another_revision_downloads_only_what_changed(hub, tmp_path):
    mc.ensure_model(hub_source(hub, revision="v1"), str(tmp_path))
    mark = hub.mark()
    result = mc.ensure_model(hub_source(hub, revision="main"), str(tmp_path))
    assert result["changed"] is True
    assert result["version"] == hub.repo(LLM).commit("main").sha
    assert sorted(r.filename for r in file_gets(hub.requests(since=mark))) == ["config.json", "generation_config.json"]
    target = tmp_path / "stand-in--mc-llm"
    assert json.loads((target / "config.json").read_text())["stand_in"]["ref"] == "main"
    assert model_record.record_matches_local(str(target), model_record.load_record(str(target)), verify_checksums=True)


def test_corrupted_file_is_detected_deleted_and_named(hub, tmp_path):
    hub.corrupt(LLM, LLM_SHARD)
    with pytest.raises(
        model_record.ModelCacheError, match="checksum mismatch for %s: sha256 .*the file was deleted" % LLM_SHARD
    ):
        mc.ensure_model(hub_source(hub), str(tmp_path))
    assert not (tmp_path / "stand-in--mc-llm").exists()
    staging = tmp_path / ".staging" / "stand-in--mc-llm"
    assert not (staging / LLM_SHARD).exists()
    assert os.listdir(staging / model_record.PARTIAL_DIR) == []
    # Repaired source: the next run fetches only the file that failed.
    hub.corrupt(LLM, LLM_SHARD, enabled=False)
    mark = hub.mark()
    result = mc.ensure_model(hub_source(hub), str(tmp_path))
    assert [r.filename for r in file_gets(hub.requests(since=mark))] == [LLM_SHARD]
    assert result["downloaded_files"] == [LLM_SHARD]
    assert (tmp_path / "stand-in--mc-llm" / LLM_SHARD).stat().st_size == 3 * MiB


def test_connection_dropped_mid_file_resumes_with_range(hub, tmp_path):
    hub.drop_after(BIG, BIG_SHARD, 11 * MiB)
    mark = hub.mark()
    result = mc.ensure_model(hub_source(hub, BIG), str(tmp_path))
    gets = [r for r in file_gets(hub.requests(since=mark)) if r.filename == BIG_SHARD]
    assert len(gets) == 2
    assert gets[0].dropped
    # Resumed from the exact byte where the connection was cut.
    assert gets[1].range == "bytes=%d-" % (11 * MiB)
    assert gets[1].status == 206
    assert result["changed"] is True
    assert model_record.record_matches_local(
        str(tmp_path / "stand-in--big-llm"), result["record"], verify_checksums=True
    )


class _Crash(BaseException):
    """Stands for the process being killed in the middle of a file."""


class _CrashingHubSource(model_sources.HubSource):
    def fetch(self, remote, writer, resume_from, version):
        if remote.path != BIG_SHARD:
            return super().fetch(remote, writer, resume_from, version)

        class Stop:
            def __init__(self, inner):
                self.inner = inner

            def write(self, data):
                self.inner.write(data)
                if self.inner.written >= MiB:
                    raise _Crash

            def __getattr__(self, name):
                return getattr(self.inner, name)

        return super().fetch(remote, Stop(writer), resume_from, version)


def test_interrupted_run_leaves_no_model_and_the_next_run_resumes(hub, tmp_path):
    with pytest.raises(_Crash):
        mc.ensure_model(_CrashingHubSource(BIG, endpoint=hub.endpoint), str(tmp_path), max_workers=1)
    assert not (tmp_path / "stand-in--big-llm").exists()
    assert not (tmp_path / "manifest.json").exists()
    partial_dir = tmp_path / ".staging" / "stand-in--big-llm" / model_record.PARTIAL_DIR
    parts = os.listdir(partial_dir)
    assert len(parts) == 1
    partial = os.path.getsize(partial_dir / parts[0])
    assert MiB <= partial < 12 * MiB

    # Something an earlier, different plan left in staging must not end up in the model.
    (tmp_path / ".staging" / "stand-in--big-llm" / "stale.bin").write_bytes(b"old")

    mark = hub.mark()
    # The preflight counts only what is missing: the rest of the shard (and a few small files).
    result = mc.ensure_model(hub_source(hub, BIG), str(tmp_path), free_space=12 * MiB - partial + 64 * 1024)
    gets = [r for r in file_gets(hub.requests(since=mark)) if r.filename == BIG_SHARD]
    assert [(r.range, r.status) for r in gets] == [("bytes=%d-" % partial, 206)]
    assert not (tmp_path / "stand-in--big-llm" / "stale.bin").exists()
    assert 12 * MiB - partial <= result["downloaded_bytes"] < 12 * MiB - partial + 64 * 1024
    assert model_record.record_matches_local(
        str(tmp_path / "stand-in--big-llm"), result["record"], verify_checksums=True
    )
    assert not (tmp_path / ".staging" / "stand-in--big-llm").exists()


def test_not_enough_disk_fails_before_any_download(hub, tmp_path):
    mark = hub.mark()
    with pytest.raises(model_record.ModelCacheError, match=r"Not enough disk space for stand-in--mc-llm \(8 files\)"):
        mc.ensure_model(hub_source(hub), str(tmp_path), free_space=5 * MiB)
    assert file_gets(hub.requests(since=mark)) == []
    assert not (tmp_path / "stand-in--mc-llm").exists()
    # The margin alone, on the real filesystem, without filling it.
    with pytest.raises(model_record.ModelCacheError, match="Not enough disk space"):
        mc.ensure_model(hub_source(hub), str(tmp_path), disk_margin=mc.free_bytes(str(tmp_path)))


def test_unknown_repo_and_revision_are_named(hub, tmp_path):
    with pytest.raises(model_record.ModelCacheError, match="Hub repository stand-in/nope not found"):
        mc.ensure_model(hub_source(hub, "stand-in/nope"), str(tmp_path))
    with pytest.raises(model_record.ModelCacheError, match="revision 'v9' not found in Hub repository stand-in/mc-llm"):
        mc.ensure_model(hub_source(hub, revision="v9"), str(tmp_path))
    assert not (tmp_path / "stand-in--mc-llm").exists()


def test_private_repo_needs_the_token_which_never_reaches_the_disk(hub, tmp_path):
    token = "hf_" + "s3cr3t" * 6
    hub.set_token(token, PRIVATE)
    with pytest.raises(model_record.ModelCacheError, match="not found \\(or private and no valid token was given\\)"):
        mc.ensure_model(hub_source(hub, PRIVATE), str(tmp_path))
    mark = hub.mark()
    result = mc.ensure_model(hub_source(hub, PRIVATE, token=token), str(tmp_path))
    assert result["changed"] is True
    assert all(r.auth_header for r in hub.requests(since=mark))
    for path in tree_files(tmp_path).values():
        with open(path, "rb") as handle:
            assert token.encode() not in handle.read(), path


def test_check_mode_reports_and_writes_nothing(hub, tmp_path):
    root = tmp_path / "models"
    mark = hub.mark()
    result = mc.ensure_model(hub_source(hub), str(root), check_mode=True)
    assert result["changed"] is True
    assert LLM_SHARD in result["would_download"]
    assert result["would_download_bytes"] == result["total_bytes"] > 6 * MiB
    assert file_gets(hub.requests(since=mark)) == []
    assert not root.exists()


def test_local_damage_is_seen_with_verify_local(hub, tmp_path):
    first = mc.ensure_model(hub_source(hub), str(tmp_path))
    shard = tmp_path / "stand-in--mc-llm" / LLM_SHARD
    os.chmod(shard, 0o644)
    with open(shard, "r+b") as handle:
        handle.seek(100)
        handle.write(b"\0\0\0\0")
    sha = first["version"]
    assert mc.ensure_model(hub_source(hub, revision=sha), str(tmp_path))["changed"] is False
    repaired = mc.ensure_model(hub_source(hub, revision=sha), str(tmp_path), verify_checksums=True)
    assert repaired["changed"] is True
    assert repaired["downloaded_files"] == [LLM_SHARD]
    assert json_files.sha256_file(str(shard)) == hub.repo(LLM).commit(sha).files[LLM_SHARD].sha256


def test_progress_file_follows_the_download(hub, tmp_path):
    progress = tmp_path / "progress.json"
    mc.ensure_model(hub_source(hub), str(tmp_path / "m"), progress_path=str(progress))
    data = json.loads(progress.read_text())
    assert data["state"] == "done"
    assert data["bytes_done"] == data["bytes_total"] > 6 * MiB
    assert data["files_done"] == data["files_total"] == 8
    assert data["line"].startswith("stand-in--mc-llm: downloaded 6.")


# ---------------------------------------------------------------------------
# S3 (moto) and URL sources


def _put(client, key, body, checksum=False):
    kwargs = {"Bucket": "models", "Key": key, "Body": body}
    if checksum:
        # S3 computes and stores the full-object sha256 (moto 5.2 ignores a ChecksumSHA256 sent by the client).
        kwargs["ChecksumAlgorithm"] = "SHA256"
    client.put_object(**kwargs)


def test_s3_prefix_verified_by_checksum_map_or_computed(aws_env, tmp_path):
    client = boto3.client("s3")
    client.create_bucket(Bucket="models", CreateBucketConfiguration={"LocationConstraint": "eu-central-1"})
    weights = os.urandom(3 * MiB)
    config = b'{"model_type": "x"}\n'
    tokenizer = b'{"version": "1.0"}\n'
    _put(client, "e5/model.safetensors", weights, checksum=True)
    _put(client, "e5/config.json", config)
    _put(client, "e5/tokenizer.json", tokenizer)
    _put(client, "e5/onnx/model.onnx", b"onnx")
    source = model_sources.S3Source(
        "models", "e5", sha256={"config.json": hashlib.sha256(config).hexdigest()}, region="eu-central-1"
    )
    result = mc.ensure_model(source, str(tmp_path))
    assert result["name"] == "e5"
    verified = {f["path"]: f["verified_with"] for f in result["files"]}
    assert verified == {
        "config.json": model_sources.VERIFY_GIVEN,
        "model.safetensors": model_sources.VERIFY_S3,
        "tokenizer.json": model_sources.VERIFY_NONE,
    }
    assert (tmp_path / "e5" / "model.safetensors").read_bytes() == weights
    assert mc.ensure_model(source, str(tmp_path))["changed"] is False

    bad = model_sources.S3Source("models", "e5", sha256={"tokenizer.json": "0" * 64}, region="eu-central-1")
    with pytest.raises(model_record.ModelCacheError, match=r"checksum mismatch for tokenizer\.json"):
        mc.ensure_model(bad, str(tmp_path), name="e5-bad")
    assert not (tmp_path / "e5-bad").exists()
    with pytest.raises(model_record.ModelCacheError, match="S3 bucket nope not found"):
        mc.ensure_model(model_sources.S3Source("nope", "e5", region="eu-central-1"), str(tmp_path))


def test_url_source_with_sha256(hub, tmp_path):
    item = hub.repo(LLM).commit("main").files[LLM_SHARD]
    url = "%s/%s/resolve/main/%s" % (hub.endpoint, LLM, LLM_SHARD)
    result = mc.ensure_model(model_sources.UrlSource(url, item.sha256), str(tmp_path), name="shard")
    assert result["changed"] is True
    assert json_files.sha256_file(str(tmp_path / "shard" / LLM_SHARD)) == item.sha256
    mark = hub.mark()
    assert mc.ensure_model(model_sources.UrlSource(url, item.sha256), str(tmp_path), name="shard")["changed"] is False
    assert hub.requests(since=mark) == []
    with pytest.raises(model_record.ModelCacheError, match="checksum mismatch for %s" % LLM_SHARD):
        mc.ensure_model(model_sources.UrlSource(url, "f" * 64), str(tmp_path), name="shard2")
    with pytest.raises(model_record.ModelCacheError, match="needs sha256 as 64 hex digits"):
        model_sources.UrlSource(url, "abc")


# ---------------------------------------------------------------------------
# The partial file: full blocks of its own buffer skip the page cache


def _fill(view, seed):
    block = hashlib.sha256(seed).digest() * (len(view) // 32)
    view[: len(block)] = block
    return bytes(view)


def _direct_supported(path):
    probe = path / "probe"
    with model_transfer.PartFile(str(probe), buffer_size=model_transfer.DIRECT_ALIGN) as handle:
        _fill(handle.read_buffer(), b"probe")
        handle.write(handle.read_buffer())
        return handle.direct_bytes == model_transfer.DIRECT_ALIGN


def test_part_file_writes_full_blocks_directly_and_the_rest_through_the_page_cache(tmp_path):
    # This collection's test filesystem (ext4) takes O_DIRECT; the fallback has its own test below.
    assert _direct_supported(tmp_path)
    path = tmp_path / "shard.part"
    expected = b""
    with model_transfer.PartFile(str(path), buffer_size=64 * 1024) as handle:
        view = handle.read_buffer()
        for seed in (b"a", b"b"):
            expected += _fill(view, seed)
            assert handle.write(view) == len(view)
        assert handle.direct_bytes == 128 * 1024
        # A short block (the tail of a file) is written the ordinary way...
        expected += _fill(view, b"c")[:1000]
        handle.write(view[:1000])
        # ... and so is every block after it: the offset is no longer aligned.
        expected += _fill(view, b"d")
        handle.write(view)
        # Bytes from another buffer (an S3 body) are never written directly.
        handle.write(b"tail")
        expected += b"tail"
        assert handle.direct_bytes == 128 * 1024
        assert handle.tell() == len(expected)
    assert path.read_bytes() == expected


def test_part_file_appends_to_what_is_there_and_rewinds(tmp_path):
    path = tmp_path / "resumed.part"
    path.write_bytes(b"x" * 4096)
    with model_transfer.PartFile(str(path), buffer_size=8192) as handle:
        assert handle.tell() == 4096
        view = handle.read_buffer()
        first = _fill(view, b"1")
        handle.write(view)
        assert path.read_bytes() == b"x" * 4096 + first
        assert handle.direct_bytes == 8192
        # The server ignored the Range header: start again from the first byte.
        handle.seek(0)
        handle.truncate()
        assert path.stat().st_size == 0
        again = _fill(view, b"2")
        handle.write(view)
        with pytest.raises(OSError, match="absolute offset"):
            handle.seek(0, 2)
    assert path.read_bytes() == again


def test_part_file_falls_back_when_the_filesystem_refuses_direct_writes(tmp_path, monkeypatch):
    path = tmp_path / "fallback.part"
    real_pwrite = os.pwrite
    refused = []

    with model_transfer.PartFile(str(path), buffer_size=8192) as handle:
        direct_fd = handle._direct_fd
        assert direct_fd is not None

        def pwrite(fd, data, offset):
            if fd == direct_fd:
                refused.append(offset)
                raise OSError(22, "Invalid argument")
            return real_pwrite(fd, data, offset)

        monkeypatch.setattr(model_transfer.os, "pwrite", pwrite)
        view = handle.read_buffer()
        expected = _fill(view, b"1")
        handle.write(view)
        expected += _fill(view, b"2")
        handle.write(view)
        assert handle.direct_bytes == 0
    # Refused once, then never tried again.
    assert refused == [0]
    assert path.read_bytes() == expected


def test_part_file_passes_on_other_write_errors(tmp_path, monkeypatch):
    with model_transfer.PartFile(str(tmp_path / "full.part"), buffer_size=8192) as handle:

        def pwrite(fd, data, offset):
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(model_transfer.os, "pwrite", pwrite)
        with pytest.raises(OSError, match="No space left"):
            handle.write(handle.read_buffer())


def test_stream_http_reads_into_the_part_file_buffer(hub, tmp_path):
    item = hub.repo(BIG).commit("main").files[BIG_SHARD]
    url = "%s/%s/resolve/main/%s" % (hub.endpoint, BIG, BIG_SHARD)
    progress = model_transfer.Progress("big")
    with model_transfer.PartFile(str(tmp_path / "big.part")) as handle:
        writer = model_transfer.HashingWriter(handle, 0, progress)
        model_transfer.stream_http(url, writer, 0, item.size)
        # Every full 1 MiB block went straight to the disk; only the tail went through the page cache.
        assert handle.direct_bytes == item.size - item.size % model_transfer.READ_SIZE
    assert writer.sha256.hexdigest() == item.sha256
    assert json_files.sha256_file(str(tmp_path / "big.part")) == item.sha256
