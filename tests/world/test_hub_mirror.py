"""The local Hub mirror, driven by the real huggingface_hub client.

Each client call runs in a fresh Python process with the environment a user would set
(``HF_ENDPOINT`` and friends from ``HubMirror.env()``, an empty ``HF_HOME``), because
huggingface_hub reads ``HF_ENDPOINT`` once, at import time.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from huggingface_hub import constants as hf_constants

from localworld.hub_mirror import STAND_IN_EMBEDDING, STAND_IN_LLM, HubMirror, RequestRecord, parse_size

TESTS_DIR = Path(__file__).resolve().parents[1]
# huggingface_hub hands bytes to its file in chunks of this size: a dropped connection
# can only resume past what reached the file.
CHUNK = hf_constants.DOWNLOAD_CHUNK_SIZE

_DRIVER = r"""
import json, sys
import huggingface_hub
from huggingface_hub import HfApi, constants, hf_hub_download, snapshot_download

def run(call, kwargs):
    if call == "snapshot_download":
        return snapshot_download(**kwargs)
    if call == "hf_hub_download":
        return hf_hub_download(**kwargs)
    if call == "verify_repo_checksums":
        result = HfApi().verify_repo_checksums(**kwargs)
        return {"checked": result.checked_count, "mismatches": [dict(m) for m in result.mismatches],
                "missing": result.missing_paths}
    if call == "model_info":
        info = HfApi().model_info(**kwargs)
        return {"sha": info.sha, "files": sorted(sibling.rfilename for sibling in info.siblings)}
    raise ValueError(call)

results = []
for call, kwargs in json.loads(sys.argv[1]):
    try:
        results.append({"ok": True, "value": run(call, kwargs)})
    except Exception as error:
        response = getattr(error, "response", None)
        results.append({"ok": False, "error": type(error).__name__, "message": str(error),
                        "status": getattr(response, "status_code", None)})
print(json.dumps({"version": huggingface_hub.__version__, "endpoint": constants.ENDPOINT, "results": results}))
"""


def hf(mirror: HubMirror, home: Path, *calls: tuple[str, dict], env: dict | None = None, unset=()) -> list[dict]:
    """Run huggingface_hub calls in a new process pointed at the mirror; one result per call."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING_FACE"))}
    full_env = {**base, **mirror.env(), "HF_HOME": str(home), "HF_HUB_DISABLE_PROGRESS_BARS": "1", **(env or {})}
    for name in unset:
        full_env.pop(name, None)
    proc = subprocess.run(
        [sys.executable, "-c", _DRIVER, json.dumps(calls)],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["version"].startswith("1."), report["version"]
    assert report["endpoint"] == mirror.endpoint
    return report["results"]


def ok(result: dict):
    assert result["ok"], result
    return result["value"]


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def git_blob_sha1(path: Path) -> str:
    data = path.read_bytes()
    return hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()


def local_files(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() and ".cache" not in p.parts}


def transfers(records: list[RequestRecord], filename: str | None = None) -> list[RequestRecord]:
    """GETs of file bytes (``/resolve``), optionally for one file."""
    return [
        r
        for r in records
        if r.endpoint == "resolve" and r.method == "GET" and (filename is None or r.filename == filename)
    ]


def http(mirror: HubMirror, path: str, method: str = "GET", headers: dict | None = None):
    request = urllib.request.Request(mirror.endpoint + path, method=method, headers=headers or {})  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - loopback mirror
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read()


@pytest.fixture
def hub(hub_mirror: HubMirror):
    """The session's mirror, with faults and tokens lifted after the test."""
    yield hub_mirror
    hub_mirror.reset_faults()


def test_snapshot_download_matches_advertised_digests_then_stays_offline(hub, tmp_path):
    dest = tmp_path / "tiny-llm"
    main = hub.repo(STAND_IN_LLM).commit("main")
    start = hub.mark()

    assert ok(hf(hub, tmp_path / "home", ("snapshot_download", {"repo_id": STAND_IN_LLM, "local_dir": str(dest)}))[0])
    first = hub.requests(since=start)

    status, _headers, body = http(hub, f"/api/models/{STAND_IN_LLM}/tree/main?recursive=true")
    assert status == 200
    listing = {entry["path"]: entry for entry in json.loads(body) if entry["type"] == "file"}
    assert local_files(dest) == set(listing) == set(main.files)
    for path, entry in listing.items():
        local = dest / path
        if "lfs" in entry:
            assert sha256_file(local) == entry["lfs"]["oid"], path
        else:
            assert git_blob_sha1(local) == entry["oid"], path
        assert sha256_file(local) == main.files[path].sha256, path
    assert {"model-00001-of-00002.safetensors", "model.safetensors.index.json", "tokenizer.json"} <= set(listing)

    assert [(r.endpoint, r.revision) for r in first if r.endpoint != "resolve"] == [
        ("model_info", "main"),
        ("tree", main.sha),
    ]
    for path, item in main.files.items():
        (get,) = transfers(first, path)
        assert (get.status, get.range, get.bytes_sent, get.revision) == (200, None, item.size, main.sha)

    # Same branch again: one call to resolve "main", no file traffic.
    mark = hub.mark()
    assert ok(hf(hub, tmp_path / "home", ("snapshot_download", {"repo_id": STAND_IN_LLM, "local_dir": str(dest)}))[0])
    assert [(r.endpoint, r.revision) for r in hub.requests(since=mark)] == [("model_info", "main")]

    # Pinned to the commit: not a single request.
    mark = hub.mark()
    call = {"repo_id": STAND_IN_LLM, "local_dir": str(dest), "revision": main.sha}
    assert ok(hf(hub, tmp_path / "home", ("snapshot_download", call))[0])
    assert hub.requests(since=mark) == []


def test_pinning_an_older_commit_fetches_its_config(hub, tmp_path):
    repo = hub.repo(STAND_IN_LLM)
    old, new = repo.commit("v1"), repo.commit("main")
    assert old.sha != new.sha and old.files["config.json"].read() != new.files["config.json"].read()
    dest = tmp_path / "old"
    mark = hub.mark()

    call = {"repo_id": STAND_IN_LLM, "revision": old.sha, "local_dir": str(dest), "allow_patterns": ["*.json"]}
    ok(hf(hub, tmp_path / "home", ("snapshot_download", call))[0])

    assert (dest / "config.json").read_bytes() == old.files["config.json"].read()
    assert json.loads((dest / "config.json").read_text())["stand_in"] == {"commit_index": 0, "ref": "v1"}
    assert (dest / "generation_config.json").read_bytes() == old.files["generation_config.json"].read()
    records = hub.requests(since=mark)
    # A commit sha needs no resolution: no repo info call, and every request names the commit.
    assert "model_info" not in {r.endpoint for r in records}
    assert {r.revision for r in records} == {old.sha}


def test_pinning_a_branch_or_tag_resolves_it(hub, tmp_path):
    repo = hub.repo(STAND_IN_LLM)
    calls = [
        ("hf_hub_download", {"repo_id": STAND_IN_LLM, "filename": "config.json", "revision": ref, "local_dir": str(d)})
        for ref, d in (("v1", tmp_path / "v1"), ("main", tmp_path / "main"))
    ]
    v1_path, main_path = (Path(ok(result)) for result in hf(hub, tmp_path / "home", *calls))

    assert v1_path.read_bytes() == repo.commit("v1").files["config.json"].read()
    assert main_path.read_bytes() == repo.commit("main").files["config.json"].read()
    # The client records the commit each file came from (X-Repo-Commit).
    for ref, root in (("v1", tmp_path / "v1"), ("main", tmp_path / "main")):
        metadata = (root / ".cache/huggingface/download/config.json.metadata").read_text().splitlines()
        assert metadata[:2] == [repo.commit(ref).sha, repo.commit(ref).files["config.json"].git_oid]


def test_allow_and_ignore_patterns_limit_the_transfer(hub, tmp_path):
    allowed, ignored = tmp_path / "allowed", tmp_path / "ignored"
    mark = hub.mark()
    results = hf(
        hub,
        tmp_path / "home",
        (
            "snapshot_download",
            {
                "repo_id": STAND_IN_EMBEDDING,
                "local_dir": str(allowed),
                "allow_patterns": ["*.json", "*.safetensors", "1_Pooling/*"],
            },
        ),
        (
            "snapshot_download",
            {"repo_id": STAND_IN_EMBEDDING, "local_dir": str(ignored), "ignore_patterns": ["*.bin", "onnx/*"]},
        ),
    )
    for result in results:
        ok(result)

    files = set(hub.repo(STAND_IN_EMBEDDING).files())
    assert {"pytorch_model.bin", "onnx/model.onnx", "1_Pooling/config.json", "modules.json"} <= files
    assert local_files(allowed) == {p for p in files if p.endswith((".json", ".safetensors"))}
    assert "1_Pooling/config.json" in local_files(allowed)
    assert local_files(ignored) == files - {"pytorch_model.bin", "onnx/model.onnx"}
    fetched = [r.filename for r in transfers(hub.requests(since=mark))]
    assert "pytorch_model.bin" not in fetched and "onnx/model.onnx" not in fetched
    assert fetched.count("model.safetensors") == 2


def test_snapshot_into_the_hub_cache_names_blobs_by_etag(hub, tmp_path):
    repo = hub.repo(STAND_IN_EMBEDDING)
    main = repo.commit("main")
    home = tmp_path / "home"
    call = {"repo_id": STAND_IN_EMBEDDING, "allow_patterns": ["*.json", "model.safetensors"]}

    snapshot = Path(ok(hf(hub, home, ("snapshot_download", call))[0]))

    storage = home / "hub" / "models--stand-in--tiny-e5"
    assert snapshot == storage / "snapshots" / main.sha
    assert (storage / "refs" / "main").read_text() == main.sha
    weights = main.files["model.safetensors"]
    assert (snapshot / "model.safetensors").resolve() == storage / "blobs" / weights.sha256
    assert sha256_file(snapshot / "model.safetensors") == weights.sha256
    modules = main.files["modules.json"]
    assert (snapshot / "modules.json").resolve() == storage / "blobs" / modules.git_oid
    assert sha256_file(snapshot / "1_Pooling/config.json") == main.files["1_Pooling/config.json"].sha256


def test_dropped_connection_resumes_with_a_range_request(hub, tmp_path):
    repo_id = "stand-in/resume-llm"
    size, drop_at = CHUNK + (4 << 20), CHUNK + (2 << 20)
    item = hub.add_model(repo_id, shard_size=size).files()["model.safetensors"]
    hub.drop_after(repo_id, "model.safetensors", drop_at)
    mark = hub.mark()

    call = {"repo_id": repo_id, "local_dir": str(tmp_path / "m"), "allow_patterns": ["model.safetensors"]}
    ok(hf(hub, tmp_path / "home", ("snapshot_download", call))[0])

    first, second = transfers(hub.requests(since=mark), "model.safetensors")
    assert (first.range, first.dropped, first.bytes_sent) == (None, True, drop_at)
    # The client kept the whole chunks it had written and asked for the rest only.
    assert (second.range, second.status, second.bytes_sent) == (f"bytes={CHUNK}-", 206, size - CHUNK)
    assert sha256_file(tmp_path / "m" / "model.safetensors") == item.sha256


def test_interrupted_download_restarts_from_zero_in_a_new_run(hub, tmp_path):
    # huggingface_hub 1.x resumes only within one call: a failed call deletes its partial file.
    repo_id = "stand-in/restart-llm"
    item = hub.add_model(repo_id, shard_size="1MiB").files()["model.safetensors"]
    attempts = 6  # the first try and the client's 5 retries
    hub.drop_after(repo_id, "model.safetensors", 4096, times=attempts)
    dest = tmp_path / "m"
    call = {"repo_id": repo_id, "local_dir": str(dest), "allow_patterns": ["model.safetensors"]}
    mark = hub.mark()

    failed = hf(hub, tmp_path / "home", ("snapshot_download", call))[0]
    assert not failed["ok"] and failed["error"] == "RemoteProtocolError", failed
    gets = transfers(hub.requests(since=mark), "model.safetensors")
    assert [(g.range, g.dropped) for g in gets] == [(None, True)] * attempts
    assert not (dest / "model.safetensors").exists()
    assert not list(dest.rglob("*.incomplete"))

    mark = hub.mark()
    ok(hf(hub, tmp_path / "home", ("snapshot_download", call))[0])
    (get,) = transfers(hub.requests(since=mark), "model.safetensors")
    assert (get.range, get.status, get.bytes_sent) == (None, 200, item.size)
    assert sha256_file(dest / "model.safetensors") == item.sha256


def test_corrupted_file_differs_from_its_etag_and_verification_catches_it(hub, tmp_path):
    repo_id = "stand-in/corrupt-llm"
    item = hub.add_model(repo_id, shard_size="1MiB").files()["model.safetensors"]
    hub.corrupt(repo_id, "model.safetensors")

    status, headers, body = http(hub, f"/{repo_id}/resolve/main/model.safetensors")
    assert status == 200 and len(body) == int(headers["Content-Length"]) == item.size
    assert headers["ETag"].strip('"') == item.sha256
    assert hashlib.sha256(body).hexdigest() != item.sha256

    dest = tmp_path / "m"
    results = hf(
        hub,
        tmp_path / "home",
        ("snapshot_download", {"repo_id": repo_id, "local_dir": str(dest)}),
        ("verify_repo_checksums", {"repo_id": repo_id, "local_dir": str(dest)}),
    )
    # snapshot_download checks sizes, not digests: it accepts the file and records the advertised ETag...
    ok(results[0])
    metadata = (dest / ".cache/huggingface/download/model.safetensors.metadata").read_text().splitlines()
    assert metadata[1] == item.sha256
    actual = sha256_file(dest / "model.safetensors")
    assert actual != item.sha256
    # ...and the client's own verification reports exactly that file.
    verification = ok(results[1])
    assert verification["missing"] == []
    assert verification["mismatches"] == [
        {"path": "model.safetensors", "expected": item.sha256, "actual": actual, "algorithm": "sha256"}
    ]

    hub.corrupt(repo_id, "model.safetensors", enabled=False)
    _status, _headers, body = http(hub, f"/{repo_id}/resolve/main/model.safetensors")
    assert hashlib.sha256(body).hexdigest() == item.sha256


def test_unknown_repo_revision_and_file_raise_the_client_errors(hub, tmp_path):
    results = hf(
        hub,
        tmp_path / "home",
        ("snapshot_download", {"repo_id": "stand-in/no-such-model", "local_dir": str(tmp_path / "a")}),
        (
            "snapshot_download",
            {"repo_id": STAND_IN_LLM, "revision": "no-such-branch", "local_dir": str(tmp_path / "b")},
        ),
        ("snapshot_download", {"repo_id": STAND_IN_LLM, "revision": "0" * 40, "local_dir": str(tmp_path / "c")}),
        ("hf_hub_download", {"repo_id": STAND_IN_LLM, "filename": "missing.json", "local_dir": str(tmp_path / "d")}),
        ("model_info", {"repo_id": "stand-in/no-such-model"}),
    )
    assert [(r["ok"], r.get("error"), r.get("status")) for r in results] == [
        (False, "RepositoryNotFoundError", 404),
        (False, "RevisionNotFoundError", 404),
        (False, "RevisionNotFoundError", 404),
        (False, "RemoteEntryNotFoundError", 404),
        (False, "RepositoryNotFoundError", 404),
    ]


def test_token_is_required_when_set(hub, tmp_path):
    repo_id = "stand-in/private-llm"
    token = "hf_standin_" + hashlib.sha256(os.urandom(16)).hexdigest()[:20]
    hub.add_model(repo_id, shard_size="256KiB")
    hub.set_token(token, repo_id=repo_id)
    mark = hub.mark()

    refused = hf(
        hub,
        tmp_path / "home",
        ("snapshot_download", {"repo_id": repo_id, "local_dir": str(tmp_path / "anonymous")}),
        ("snapshot_download", {"repo_id": repo_id, "local_dir": str(tmp_path / "wrong"), "token": "hf_wrong"}),
        ("hf_hub_download", {"repo_id": repo_id, "filename": "config.json", "local_dir": str(tmp_path / "f")}),
    )
    assert [(r["ok"], r.get("error"), r.get("status")) for r in refused] == [
        (False, "RepositoryNotFoundError", 401),
        (False, "HfHubHTTPError", 401),
        (False, "RepositoryNotFoundError", 401),
    ]
    records = hub.requests(since=mark)
    assert records and {r.status for r in records} == {401}
    # Other repos stay public.
    ok(hf(hub, tmp_path / "home", ("model_info", {"repo_id": STAND_IN_LLM}))[0])

    mark = hub.mark()
    dest = tmp_path / "granted"
    granted = hf(
        hub,
        tmp_path / "home",
        ("snapshot_download", {"repo_id": repo_id, "local_dir": str(dest)}),
        env={"HF_TOKEN": token},
    )
    ok(granted[0])
    assert local_files(dest) == set(hub.repo(repo_id).files())
    records = hub.requests(since=mark)
    assert records and all(r.auth_header and r.status == 200 for r in records)
    assert token not in repr(records) and token not in repr(hub)


def test_downloads_use_plain_http_even_with_xet_enabled(hub, tmp_path):
    files = hub.repo(STAND_IN_LLM).files()
    status, _headers, body = http(hub, f"/api/models/{STAND_IN_LLM}/tree/main?recursive=true")
    assert status == 200 and all("xetHash" not in entry for entry in json.loads(body))
    for path in files:
        _status, headers, body = http(hub, f"/{STAND_IN_LLM}/resolve/main/{path}", method="HEAD")
        assert body == b"" and "Link" not in headers
        assert not [name for name in headers if name.lower().startswith("x-xet")]

    mark = hub.mark()
    call = {"repo_id": STAND_IN_LLM, "filename": "model-00002-of-00002.safetensors", "local_dir": str(tmp_path)}
    ok(hf(hub, tmp_path / "home", ("hf_hub_download", call), unset=("HF_HUB_DISABLE_XET",))[0])
    (get,) = transfers(hub.requests(since=mark))
    assert get.bytes_sent == files["model-00002-of-00002.safetensors"].size


def test_resolve_headers_and_ranges(hub_mirror):
    main = hub_mirror.repo(STAND_IN_LLM).commit("main")
    shard = main.files["model-00001-of-00002.safetensors"]
    config = main.files["config.json"]
    url = f"/{STAND_IN_LLM}/resolve/main/{shard.path}"
    whole = b"".join(shard.iter_range())

    status, headers, body = http(hub_mirror, url, method="HEAD")
    assert (status, body) == (200, b"")
    assert headers["X-Repo-Commit"] == main.sha
    assert headers["ETag"] == headers["X-Linked-Etag"] == f'"{shard.sha256}"'
    assert headers["X-Linked-Size"] == headers["Content-Length"] == str(shard.size)
    assert headers["Accept-Ranges"] == "bytes"

    _status, headers, _body = http(hub_mirror, f"/{STAND_IN_LLM}/resolve/{main.sha}/config.json", method="HEAD")
    assert headers["ETag"] == f'"{config.git_oid}"' and "X-Linked-Etag" not in headers

    for header, start, end in (("bytes=10-19", 10, 20), (f"bytes={shard.size - 5}-", shard.size - 5, shard.size)):
        status, headers, body = http(hub_mirror, url, headers={"Range": header})
        assert status == 206 and body == whole[start:end]
        assert headers["Content-Range"] == f"bytes {start}-{end - 1}/{shard.size}"
    status, headers, body = http(hub_mirror, url, headers={"Range": "bytes=-7"})
    assert (status, body) == (206, whole[-7:])
    status, headers, _body = http(hub_mirror, url, headers={"Range": f"bytes={shard.size}-"})
    assert status == 416 and headers["Content-Range"] == f"bytes */{shard.size}"

    # A valid safetensors header precedes the generated bytes.
    header_len = int.from_bytes(whole[:8], "little")
    header = json.loads(whole[8 : 8 + header_len])
    (tensor,) = (name for name in header if name != "__metadata__")
    assert header[tensor]["data_offsets"] == [0, shard.size - 8 - header_len]
    index = json.loads(main.files["model.safetensors.index.json"].read())
    assert index["weight_map"][tensor] == shard.path


def test_model_info_document(hub_mirror):
    repo = hub_mirror.repo(STAND_IN_EMBEDDING)
    status, headers, body = http(hub_mirror, f"/api/models/{STAND_IN_EMBEDDING}/revision/main")
    assert status == 200 and headers["Content-Type"].startswith("application/json")
    doc = json.loads(body)
    assert doc["id"] == STAND_IN_EMBEDDING and doc["sha"] == repo.commit("main").sha
    siblings = {s["rfilename"]: s for s in doc["siblings"]}
    assert set(siblings) == set(repo.files())
    assert siblings["model.safetensors"]["lfs"]["sha256"] == repo.files()["model.safetensors"].sha256
    assert "lfs" not in siblings["modules.json"]

    _status, _headers, body = http(hub_mirror, f"/api/models/{STAND_IN_EMBEDDING}?expand=sha&expand=siblings")
    assert set(json.loads(body)) == {"_id", "id", "sha", "siblings"}
    status, headers, _body = http(hub_mirror, f"/api/models/{STAND_IN_EMBEDDING}/revision/nope")
    assert (status, headers["X-Error-Code"]) == (404, "RevisionNotFound")
    status, headers, _body = http(hub_mirror, "/api/models/stand-in/absent")
    assert (status, headers["X-Error-Code"]) == (404, "RepoNotFound")
    status, _headers, body = http(hub_mirror, f"/api/models/{STAND_IN_LLM}/refs")
    refs = json.loads(body)
    assert [b["targetCommit"] for b in refs["branches"]] == [hub_mirror.repo(STAND_IN_LLM).commit("main").sha]
    assert [t["name"] for t in refs["tags"]] == ["v1"]
    status, headers, _body = http(hub_mirror, f"/api/models/{STAND_IN_LLM}", method="POST")
    assert status == 405
    status, _headers, body = http(hub_mirror, f"/api/models/{STAND_IN_EMBEDDING}/tree/main/1_Pooling")
    assert status == 200 and [e["path"] for e in json.loads(body)] == ["1_Pooling/config.json"]


def test_add_model_rejects_bad_input(hub_mirror):
    with pytest.raises(ValueError, match="org/name"):
        hub_mirror.add_model("no-slash")
    with pytest.raises(ValueError, match="'main'"):
        hub_mirror.add_model("stand-in/x", revisions=["v1", "v2"])
    with pytest.raises(ValueError, match="kind"):
        hub_mirror.add_model("stand-in/x", kind="vision")
    with pytest.raises(ValueError, match="safetensors file needs more"):
        hub_mirror.add_model("stand-in/x", shard_size=64)
    with pytest.raises(ValueError, match="invalid size"):
        parse_size("3 parsecs")
    with pytest.raises(KeyError, match="no file"):
        hub_mirror.drop_after(STAND_IN_LLM, "absent.bin", 10)
    with pytest.raises(ValueError, match="loopback"):
        HubMirror(host="0.0.0.0")  # noqa: S104 - the point is that it is refused
    assert parse_size("2GiB") == 2 << 30 and parse_size("512KiB") == 512 << 10 and parse_size("7") == 7


def test_command_line_serves_until_sigterm(tmp_path):
    command = [sys.executable, "-m", "localworld.hub_mirror", "--port", "0"]
    proc = subprocess.Popen(
        [*command, "--model", "stand-in/cli-llm:2:64KiB", "--revisions", "2"],
        cwd=TESTS_DIR,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = json.loads(proc.stdout.readline())
        mirror_endpoint = line["endpoint"]
        assert mirror_endpoint.startswith("http://127.0.0.1:") and line["env"]["HF_ENDPOINT"] == mirror_endpoint
        refs = line["repos"]["stand-in/cli-llm"]
        url = f"{mirror_endpoint}/api/models/stand-in/cli-llm/revision/v1"
        with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 - loopback mirror
            doc = json.load(response)
        assert doc["sha"] == refs["v1"] != refs["main"]
        assert "model-00002-of-00002.safetensors" in {s["rfilename"] for s in doc["siblings"]}
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    bad = subprocess.run(
        [*command, "--model", "stand-in/cli-llm:two"], cwd=TESTS_DIR, capture_output=True, text=True, check=False
    )
    assert bad.returncode == 2 and "invalid --model 'stand-in/cli-llm:two'" in bad.stderr
    bad = subprocess.run(
        [*command, "--host", "10.0.0.1", "--stand-ins"], cwd=TESTS_DIR, capture_output=True, text=True, check=False
    )
    assert bad.returncode == 2 and "not a loopback address" in bad.stderr
