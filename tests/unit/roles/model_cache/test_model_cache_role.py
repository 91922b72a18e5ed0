"""The model_cache role, run for real with ansible-playbook -vvv on localhost.

A private Hub repository (the local Hub mirror, with a token) and a signed URL (a local server that
answers only with the right signature, and slowly, so that the download lasts several progress
intervals). The play's whole output, at -vvv, must hold neither the token nor the signature; the
records and the manifest keep the URL without its query string; progress comes once per interval.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml
from ansible.parsing.dataloader import DataLoader
from ansible.template import Templar, trust_as_template

from localworld.localplay import REPO, run_local_play

ROLE = REPO / "roles" / "model_cache"
PIECE = 64 * 1024
PIECES = 16
PAUSE = 0.5  # seconds between two pieces: the file takes about 8 s


class SlowSignedServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, signature, payload):
        super().__init__(("127.0.0.1", 0), SlowSignedHandler)
        self.signature = signature
        self.payload = payload
        self.requests = []


class SlowSignedHandler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def _check(self):
        query = parse_qs(urlsplit(self.path).query)
        self.server.requests.append(self.command)
        if query.get("sig") != [self.server.signature]:
            self.send_error(403)
            return False
        return True

    def do_HEAD(self):
        if self._check():
            self.send_response(200)
            self.send_header("Content-Length", str(len(self.server.payload)))
            self.end_headers()

    def do_GET(self):
        if not self._check():
            return
        start = 0
        ranged = re.match(r"bytes=(\d+)-", self.headers.get("Range", ""))
        if ranged:
            start = int(ranged.group(1))
            self.send_response(206)
            self.send_header(
                "Content-Range", "bytes %d-%d/%d" % (start, len(self.server.payload) - 1, len(self.server.payload))
            )
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(self.server.payload) - start))
        self.end_headers()
        for offset in range(start, len(self.server.payload), PIECE):
            self.wfile.write(self.server.payload[offset : offset + PIECE])
            self.wfile.flush()
            time.sleep(PAUSE)


@pytest.fixture
def signed_url():
    payload = secrets.token_bytes(PIECE * PIECES)
    signature = "sv2026" + secrets.token_urlsafe(24)
    server = SlowSignedServer(signature, payload)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = "http://127.0.0.1:%d/files/tiny.gguf" % server.server_port
    yield url, signature, hashlib.sha256(payload).hexdigest(), server
    server.shutdown()
    server.server_close()


@pytest.fixture
def private_repo(hub_mirror):
    repo_id = "stand-in/role-private"
    token = "hf_" + secrets.token_hex(17)
    hub_mirror.add_model(repo_id, shards=1, shard_size=256 * 1024)
    hub_mirror.set_token(token, repo_id)
    yield hub_mirror, repo_id, token
    hub_mirror.set_token(None, repo_id)


def _play(tmp_path, endpoint, models, token, interval):
    internals = {
        # Everything the role writes stays under tmp_path; the repository's virtualenv runs the downloads.
        "__model_cache_follower": str(tmp_path / "follower.py"),
        "__model_cache_progress_dir": str(tmp_path / "progress"),
        "__model_cache_secret_paths": [str(tmp_path / "models" / "token")],
        "__model_cache_secret_scan_roots": [str(tmp_path / "models"), str(tmp_path / "progress")],
    }
    play = {
        "roles": [
            {
                "role": "burst.golden_ami.model_cache",
                "vars": {
                    "model_cache_root": str(tmp_path / "models"),
                    "model_cache_tools_install": False,
                    "model_cache_tools_venv": str(Path(sys.executable).parent.parent),
                    "model_cache_runtime_env_file": str(tmp_path / "etc" / "models.env"),
                    "model_cache_hub_endpoint": endpoint,
                    "model_cache_hf_token": token,
                    "model_cache_progress_interval": interval,
                    "model_cache_disk_margin_mb": 1,
                    "model_cache_models": models,
                },
            }
        ]
    }
    extra = tmp_path / "internals.json"
    extra.write_text(json.dumps(internals))
    return play, "-e@%s" % extra


def test_secrets_never_show_urls_are_recorded_bare_and_progress_comes_per_interval(tmp_path, signed_url, private_repo):
    url, signature, sha256, server = signed_url
    mirror, repo_id, token = private_repo
    models = [
        {"repo_id": repo_id, "revision": "main"},
        {"source": "url", "url": url + "?sig=" + signature + "&expires=1", "sha256": sha256, "name": "tiny-gguf"},
    ]
    interval = 2
    play, extra = _play(tmp_path, mirror.endpoint, models, token, interval)
    started = time.monotonic()
    result, recap = run_local_play(tmp_path, play, extra, "-vvv", env={"ANSIBLE_CALLBACK_RESULT_FORMAT": "json"})
    elapsed = time.monotonic() - started
    output = result.stdout + result.stderr
    assert recap["failed"] == 0, output[-4000:]

    # Neither secret anywhere in the -vvv output (EXEC lines, module arguments, results).
    assert token not in output
    assert signature not in output
    assert "GET" in server.requests  # the download used the signed URL

    # Records and manifest: the URL without its query string, and both models in place.
    models_dir = tmp_path / "models"
    record = json.loads((models_dir / "tiny-gguf" / ".burst-model.json").read_text())
    assert record["url"] == url
    assert record["identity"]["url"] == url
    manifest_text = (models_dir / "manifest.json").read_text()
    assert signature not in manifest_text
    assert set(json.loads(manifest_text)["models"]) == {"tiny-gguf", "stand-in--role-private"}
    for path in models_dir.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert signature.encode() not in data, path
            assert token.encode() not in data, path

    # One progress line per interval: every poll of the slow download but the last waited a whole interval.
    follow = [line for line in result.stdout.splitlines() if "tiny-gguf:" in line and "(item=" in line]
    assert any("of 1.00 MiB" in line for line in follow), result.stdout[-4000:]
    polls = [json.loads(line) for line in re.findall(r'"stdout": "(\{.*?\})"', result.stdout.replace('\\"', '"'))]
    running = [poll for poll in polls if not poll["finished"] and poll["line"].startswith("tiny-gguf:")]
    assert running, polls
    assert all(poll["waited_s"] >= interval for poll in running), running
    assert len(follow) <= elapsed / interval + 1


def test_a_model_entry_with_a_signed_url_fails_validation_without_showing_it(tmp_path):
    signature = "sv2026" + secrets.token_urlsafe(24)
    models = [{"source": "url", "url": "http://127.0.0.1:9/x.gguf?sig=" + signature, "name": "x", "sha256": "nope"}]
    play, extra = _play(tmp_path, "", models, "", 1)
    result, recap = run_local_play(tmp_path, play, extra, "-vvv")
    assert recap["failed"] == 1
    assert "model_cache_models[0] is invalid" in result.stdout
    assert "http://127.0.0.1:9/x.gguf" in result.stdout
    assert signature not in result.stdout + result.stderr


def _role_vars():
    return yaml.safe_load((ROLE / "vars" / "main.yml").read_text())


def _follow_task():
    tasks = yaml.safe_load((ROLE / "tasks" / "download.yml").read_text())
    return next(t for t in tasks if t["name"].startswith("Follow the download"))


@pytest.mark.parametrize(("timeout", "interval"), [(14400, 5), (86400, 30), (600, 1), (30, 0), (7, 60)])
def test_the_follow_loop_outlasts_the_download_timeout(timeout, interval):
    # Each poll lasts a whole interval unless the job ended (the follower's tests): polls x interval is the
    # time the loop can follow, which must cover the job's own limit (async_wrapper stops it then).
    variables = {
        "model_cache_download_timeout": timeout,
        "model_cache_progress_interval": interval,
        "__model_cache_interval": trust_as_template(_role_vars()["__model_cache_interval"]),
    }
    templar = Templar(loader=DataLoader(), variables=variables)
    polls = templar.template(trust_as_template(_follow_task()["loop"]))
    wait = int(templar.template(trust_as_template("{{ __model_cache_interval }}")))
    assert wait == max(interval, 1)
    assert len(polls) * wait >= timeout + 60
    assert "{{ __model_cache_interval }}" in _follow_task()["ansible.builtin.command"]["argv"]
