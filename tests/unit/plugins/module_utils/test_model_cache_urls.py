"""URLs are recorded and shown without their query string, user or fragment (signed URLs keep a credential there)."""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest
from ansible.module_utils.testing import patch_module_args

from ansible_collections.burst.golden_ami.plugins.module_utils import _model_cache as mc
from ansible_collections.burst.golden_ami.plugins.module_utils import _model_record as model_record
from ansible_collections.burst.golden_ami.plugins.module_utils import _model_sources as model_sources
from ansible_collections.burst.golden_ami.plugins.modules import model_download


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://cdn.example/m/a.gguf?X-Amz-Signature=abc&X-Amz-Credential=k", "https://cdn.example/m/a.gguf"),
        ("https://user:pa55word@store.example:8443/a.bin#frag", "https://store.example:8443/a.bin"),
        ("http://[::1]:9000/a.bin?sv=2024&sig=xyz", "http://[::1]:9000/a.bin"),
        ("https://plain.example/a.bin", "https://plain.example/a.bin"),
        ("", ""),
    ],
)
def test_redact_url(url, shown):
    assert model_record.redact_url(url) == shown


def test_url_secrets_are_every_part_redact_url_drops():
    url = "https://robot:pa55word@host.example/a.bin?sig=S1gnatur3&se=2026-01-01#tokenfrag"
    found = model_record.url_secrets(url)
    assert {"sig=S1gnatur3&se=2026-01-01", "S1gnatur3", "2026-01-01", "tokenfrag", "pa55word", "robot"} <= set(found)
    assert model_record.url_secrets("https://host.example/a.bin") == []


def test_clean_record_returns_the_same_record_when_clean():
    record = {"url": "https://h/a", "identity": {"url": "https://h/a"}}
    assert model_record.clean_record(record) is record
    dirty = {"url": "https://h/a?sig=s", "identity": {"source": "url", "url": "https://h/a?sig=s"}}
    assert model_record.clean_record(dirty) == {
        "url": "https://h/a",
        "identity": {"source": "url", "url": "https://h/a"},
    }


class _Signed(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def _serve(self, body):
        self.server.hits.append(self.command)
        if parse_qs(urlsplit(self.path).query).get("sig") != [self.server.signature]:
            self.send_error(403)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.server.payload)))
        self.end_headers()
        if body:
            self.wfile.write(self.server.payload)

    def do_HEAD(self):
        self._serve(False)

    def do_GET(self):
        self._serve(True)


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Signed)
    httpd.daemon_threads = True
    httpd.signature = "S1g" + secrets.token_hex(12)
    httpd.payload = os.urandom(4096)
    httpd.hits = []
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    httpd.base = "http://127.0.0.1:%d/m/tiny.gguf" % httpd.server_port
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def _no_signature_in_tree(root, signature):
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            with open(os.path.join(dirpath, name), "rb") as handle:
                assert signature.encode() not in handle.read(), name


def test_a_signed_url_downloads_and_is_recorded_bare(server, tmp_path):
    sha = hashlib.sha256(server.payload).hexdigest()
    signed = server.base + "?sig=" + server.signature
    result = mc.ensure_model(
        model_sources.UrlSource(signed, sha), str(tmp_path), name="tiny", progress_path=str(tmp_path / "p")
    )
    assert result["changed"] is True
    assert result["record"]["url"] == server.base
    assert result["record"]["identity"]["url"] == server.base
    assert server.signature not in json.dumps(result)
    _no_signature_in_tree(tmp_path, server.signature)
    # A new signature for the same file is the same source: nothing to do.
    again = mc.ensure_model(model_sources.UrlSource(server.base + "?sig=other", sha), str(tmp_path), name="tiny")
    assert again["changed"] is False


def test_a_record_written_with_the_query_string_is_rewritten_without_a_download(server, tmp_path):
    sha = hashlib.sha256(server.payload).hexdigest()
    signed = server.base + "?sig=" + server.signature
    mc.ensure_model(model_sources.UrlSource(signed, sha), str(tmp_path), name="tiny")
    # What an earlier version wrote: the signed URL in the record and in the manifest.
    record_path = tmp_path / "tiny" / model_record.RECORD_NAME
    old = json.loads(record_path.read_text())
    old["url"] = signed
    old["identity"]["url"] = signed
    os.chmod(tmp_path / "tiny", 0o700)
    os.chmod(record_path, 0o644)
    record_path.write_text(json.dumps(old))
    os.chmod(tmp_path / "tiny", model_record.DIR_MODE)
    manifest = json.loads((tmp_path / model_record.MANIFEST_NAME).read_text())
    manifest["models"]["tiny"] = old
    manifest["models"]["other"] = dict(old, name="other")
    os.chmod(tmp_path / model_record.MANIFEST_NAME, 0o644)
    (tmp_path / model_record.MANIFEST_NAME).write_text(json.dumps(manifest))
    hits = len(server.hits)

    check = mc.ensure_model(model_sources.UrlSource(signed, sha), str(tmp_path), name="tiny", check_mode=True)
    assert check["changed"] is True
    assert server.signature in record_path.read_text()  # check mode changed nothing

    result = mc.ensure_model(model_sources.UrlSource(signed, sha), str(tmp_path), name="tiny")
    assert result["changed"] is True
    assert result["downloaded_bytes"] == 0
    assert len(server.hits) == hits  # no network call: the url's sha256 pins it
    _no_signature_in_tree(tmp_path, server.signature)
    assert oct(os.stat(tmp_path / "tiny").st_mode & 0o777) == "0o555"
    assert mc.ensure_model(model_sources.UrlSource(signed, sha), str(tmp_path), name="tiny")["changed"] is False


def test_the_module_masks_the_query_string_in_its_result(server, tmp_path, capsys):
    signed = server.base.replace("tiny.gguf", "missing.gguf") + "?sig=wrong" + server.signature
    args = {"source": "url", "url": signed, "sha256": "a" * 64, "name": "m", "root": str(tmp_path)}
    with patch_module_args(args), pytest.raises(SystemExit):
        model_download.main()
    output = capsys.readouterr().out
    result = json.loads(output)
    assert result["failed"] is True
    bare = server.base.replace("tiny.gguf", "missing.gguf")
    assert result["msg"] == "downloading %s failed: HTTP 403 Forbidden" % bare
    assert result["invocation"]["module_args"]["url"] == bare + "?********"
    assert server.signature not in output
    assert "wrong" not in output
