"""Unit tests of S3 objects fetched in ranges by several threads, against moto's S3 on loopback."""

from __future__ import annotations

import hashlib
import json
import os
import threading

import boto3
import pytest
from botocore.exceptions import ClientError, ReadTimeoutError

from ansible_collections.burst.golden_ami.plugins.module_utils import _model_cache as mc
from ansible_collections.burst.golden_ami.plugins.module_utils import _model_record as model_record
from ansible_collections.burst.golden_ami.plugins.module_utils import _model_sources as model_sources

MiB = 1 << 20
KiB = 1 << 10
PART = 512 * KiB
WEIGHTS = "model.safetensors"
KEY = "big/" + WEIGHTS


class RecordingClient:
    """An S3 client that records every GetObject and may act before (or instead of) one."""

    def __init__(self, client, before=None):
        self._client = client
        self._before = before
        self._lock = threading.Lock()
        self.gets = []

    def get_object(self, **kwargs):
        with self._lock:
            self.gets.append(dict(kwargs))
        if self._before is not None:
            replaced = self._before(self._client, kwargs)
            if replaced is not None:
                return replaced
        return self._client.get_object(**kwargs)

    def ranges(self, key=KEY):
        return sorted(g.get("Range") for g in self.gets if g["Key"] == key)

    def __getattr__(self, name):
        return getattr(self._client, name)


@pytest.fixture
def s3(aws_env):
    client = boto3.client("s3")
    client.create_bucket(Bucket="models", CreateBucketConfiguration={"LocationConstraint": "eu-central-1"})
    return client


def _put(client, key, body, checksum=True):
    kwargs = {"Bucket": "models", "Key": key, "Body": body}
    if checksum:
        kwargs["ChecksumAlgorithm"] = "SHA256"
    client.put_object(**kwargs)


def _source(client, **kwargs):
    kwargs.setdefault("ranged_threshold", MiB)
    kwargs.setdefault("part_size", PART)
    kwargs.setdefault("part_workers", 4)
    return model_sources.S3Source("models", "big", region="eu-central-1", client=client, **kwargs)


def _partials(root):
    partial = os.path.join(str(root), model_record.STAGING_DIR, "big", model_record.PARTIAL_DIR)
    return sorted(os.listdir(partial)) if os.path.isdir(partial) else []


def _part_path(root, remote):
    return mc._part_path(os.path.join(str(root), model_record.STAGING_DIR, "big"), remote)


def _expected_ranges(start, size, part=PART):
    return sorted("bytes=%d-%d" % (o, min(o + part, size) - 1) for o in range(start, size, part))


def test_large_object_is_fetched_in_ranges_and_verified_whole(s3, tmp_path):
    weights = os.urandom(5 * MiB + 123)
    shard = os.urandom(3 * MiB + 7)
    config = b'{"model_type": "x"}\n'
    _put(s3, KEY, weights)
    _put(s3, "big/extra.safetensors", shard, checksum=False)  # no checksum: computed while fetched
    _put(s3, "big/config.json", config)
    client = RecordingClient(s3)
    result = mc.ensure_model(_source(client), str(tmp_path))

    assert (tmp_path / "big" / WEIGHTS).read_bytes() == weights
    assert (tmp_path / "big" / "extra.safetensors").read_bytes() == shard
    verified = {f["path"]: (f["verified_with"], f["sha256"]) for f in result["files"]}
    assert verified[WEIGHTS] == (model_sources.VERIFY_S3, hashlib.sha256(weights).hexdigest())
    assert verified["extra.safetensors"] == (model_sources.VERIFY_NONE, hashlib.sha256(shard).hexdigest())
    assert result["downloaded_bytes"] == len(weights) + len(shard) + len(config)
    # Every range of the large objects, once each, each bound to the planned ETag.
    assert client.ranges() == _expected_ranges(0, len(weights))
    assert client.ranges("big/extra.safetensors") == _expected_ranges(0, len(shard))
    etag = s3.head_object(Bucket="models", Key=KEY)["ETag"]
    assert {g["IfMatch"] for g in client.gets if g["Key"] == KEY} == {etag}
    # The small object: one GET, no range.
    assert [g.get("Range") for g in client.gets if g["Key"] == "big/config.json"] == [None]
    assert not (tmp_path / model_record.STAGING_DIR).exists()

    # The digest is that of the whole file: a wrong expected sha256 is caught and nothing is installed.
    bad = _source(RecordingClient(s3))
    bad.sha256 = {"extra.safetensors": "0" * 64}
    with pytest.raises(model_record.ModelCacheError, match=r"checksum mismatch for extra\.safetensors"):
        mc.ensure_model(bad, str(tmp_path), name="bad")
    assert not (tmp_path / "bad").exists()


def test_a_failed_range_fails_cleanly_and_the_next_run_resumes_from_the_journal(s3, tmp_path):
    weights = os.urandom(4 * MiB)
    _put(s3, KEY, weights)
    broken = "bytes=%d-%d" % (2 * PART, 3 * PART - 1)

    def refuse(_client, kwargs):
        if kwargs.get("Range") == broken:
            raise ClientError({"Error": {"Code": "AccessDenied", "Message": "no"}}, "GetObject")
        return None

    failing = RecordingClient(s3, before=refuse)
    with pytest.raises(model_record.ModelCacheError) as info:
        mc.ensure_model(_source(failing, part_workers=2), str(tmp_path))
    message = str(info.value)
    assert "s3://models/%s" % KEY in message
    assert broken in message
    assert "AccessDenied" in message
    assert not (tmp_path / "big").exists()

    remote = _source(s3).plan().files[0]
    part = _part_path(tmp_path, remote)
    journal = json.loads(open(part + model_sources.RANGES_SUFFIX, encoding="utf-8").read())
    assert journal["size"] == len(weights) and journal["base"] == 0
    assert 2 not in journal["done"]
    for index in journal["done"]:
        assert open(part, "rb").read()[index * PART : (index + 1) * PART] == weights[index * PART : (index + 1) * PART]

    client = RecordingClient(s3)
    result = mc.ensure_model(_source(client, part_workers=2), str(tmp_path))
    assert (tmp_path / "big" / WEIGHTS).read_bytes() == weights
    assert result["files"][0]["verified_with"] == model_sources.VERIFY_S3
    # Only the ranges the journal did not list were fetched again.
    missing = [i for i in range(len(weights) // PART) if i not in journal["done"]]
    assert client.ranges() == sorted("bytes=%d-%d" % (i * PART, (i + 1) * PART - 1) for i in missing)
    assert broken in client.ranges()


def test_a_cut_range_is_retried_from_its_last_byte(s3, tmp_path):
    weights = os.urandom(2 * MiB)
    _put(s3, KEY, weights, checksum=False)
    cut = {"done": False}

    class CutBody:
        def __init__(self, body):
            self._body = body
            self._sent = 0

        def read(self, amount):
            if self._sent >= 1000:
                raise ReadTimeoutError(endpoint_url="http://127.0.0.1")
            block = self._body.read(min(amount, 1000 - self._sent))
            self._sent += len(block)
            return block

        def close(self):
            self._body.close()

    def cut_once(client, kwargs):
        if kwargs.get("Range") == "bytes=%d-%d" % (PART, 2 * PART - 1) and not cut["done"]:
            cut["done"] = True
            response = client.get_object(**kwargs)
            response["Body"] = CutBody(response["Body"])
            return response
        return None

    client = RecordingClient(s3, before=cut_once)
    result = mc.ensure_model(_source(client), str(tmp_path))
    assert (tmp_path / "big" / WEIGHTS).read_bytes() == weights
    assert result["files"][0]["sha256"] == hashlib.sha256(weights).hexdigest()
    assert "bytes=%d-%d" % (PART + 1000, 2 * PART - 1) in client.ranges()


def test_an_object_replaced_after_the_plan_is_refused_and_its_partial_file_deleted(s3, tmp_path):
    _put(s3, KEY, os.urandom(3 * MiB))
    replaced = os.urandom(3 * MiB)

    def replace_first(client, kwargs):
        if not getattr(replace_first, "done", False):
            replace_first.done = True
            _put(client, KEY, replaced)
        return None

    with pytest.raises(model_record.ModelCacheError) as info:
        mc.ensure_model(_source(RecordingClient(s3, before=replace_first)), str(tmp_path))
    message = str(info.value)
    assert "s3://models/%s changed while downloading" % KEY in message
    assert "412" in message
    assert "the partial file was deleted" in message
    assert _partials(tmp_path) == []
    assert not (tmp_path / "big").exists()

    # The next run plans the new object and gets it.
    mc.ensure_model(_source(RecordingClient(s3)), str(tmp_path))
    assert (tmp_path / "big" / WEIGHTS).read_bytes() == replaced


def test_a_partial_file_of_one_get_resumes_as_a_prefix(s3, tmp_path):
    weights = os.urandom(3 * MiB + 5)
    _put(s3, KEY, weights, checksum=False)
    remote = _source(s3).plan().files[0]
    part = _part_path(tmp_path, remote)
    os.makedirs(os.path.dirname(part))
    prefix = PART + 4321  # not on a range boundary
    with open(part, "wb") as handle:
        handle.write(weights[:prefix])

    client = RecordingClient(s3)
    result = mc.ensure_model(_source(client), str(tmp_path))
    assert (tmp_path / "big" / WEIGHTS).read_bytes() == weights
    assert result["files"][0]["sha256"] == hashlib.sha256(weights).hexdigest()
    assert result["downloaded_bytes"] == len(weights) - prefix
    assert client.ranges() == _expected_ranges(prefix, len(weights))


def test_a_partial_file_with_a_damaged_journal_is_fetched_again_from_its_first_byte(s3, tmp_path):
    weights = os.urandom(2 * MiB)
    _put(s3, KEY, weights, checksum=False)
    remote = _source(s3).plan().files[0]
    part = _part_path(tmp_path, remote)
    os.makedirs(os.path.dirname(part))
    with open(part, "wb") as handle:
        handle.write(b"\0" * len(weights))  # full size, but nothing in it is known to be right
    with open(part + model_sources.RANGES_SUFFIX, "w", encoding="utf-8") as handle:
        handle.write("{")

    client = RecordingClient(s3)
    result = mc.ensure_model(_source(client), str(tmp_path))
    assert (tmp_path / "big" / WEIGHTS).read_bytes() == weights
    assert result["files"][0]["sha256"] == hashlib.sha256(weights).hexdigest()
    assert client.ranges() == _expected_ranges(0, len(weights))


def test_a_complete_partial_file_of_one_get_is_checked_without_a_request(s3, tmp_path):
    config = b'{"model_type": "x"}\n' * 10
    _put(s3, "big/config.json", config)
    source = _source(s3)
    remote = source.plan().files[0]
    part = _part_path(tmp_path, remote)
    os.makedirs(os.path.dirname(part))
    with open(part, "wb") as handle:
        handle.write(config)
    client = RecordingClient(s3)
    result = mc.ensure_model(_source(client), str(tmp_path))
    assert client.gets == []
    assert result["files"][0]["verified_with"] == model_sources.VERIFY_S3
    assert (tmp_path / "big" / "config.json").read_bytes() == config


def test_invalid_part_settings_are_refused():
    with pytest.raises(model_record.ModelCacheError, match="must be positive"):
        model_sources.S3Source("models", part_size=0)
