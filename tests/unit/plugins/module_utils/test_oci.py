"""_oci: tar headers, references, and the registry client's authentication and retries against a loopback server."""

from __future__ import annotations

import base64
import hashlib
import http.server
import io
import json
import tarfile
import threading
from typing import ClassVar

import pytest

from ansible_collections.burst.golden_ami.plugins.module_utils import _oci
from ansible_collections.burst.golden_ami.plugins.module_utils._oci import (
    OciError,
    Registry,
    model_layers,
    split_reference,
)


def test_split_reference():
    digest = "sha256:" + "a" * 64
    assert split_reference("127.0.0.1:5000/kserve-models/qwen") == ("127.0.0.1:5000", "kserve-models/qwen", None, None)
    assert split_reference(f"r.example/base/busybox:1.36@{digest}") == ("r.example", "base/busybox", "1.36", digest)
    with pytest.raises(OciError, match="is not a registry/repository"):
        split_reference("busybox:latest")  # no registry host
    with pytest.raises(OciError, match="is not a registry/repository"):
        split_reference("r.example/Upper/Case")


def test_long_names_and_nested_directories_round_trip(tmp_path):
    long_dir = "d" * 120
    path = f"{long_dir}/{'f' * 150}.safetensors"
    (tmp_path / long_dir).mkdir()
    (tmp_path / path).write_bytes(b"weights")
    record = {"files": [{"path": path, "size": 7, "sha256": hashlib.sha256(b"weights").hexdigest()}]}
    [layer] = model_layers(str(tmp_path), record, model_path="/models")
    with tarfile.open(fileobj=io.BytesIO(b"".join(layer.chunks()))) as archive:
        names = archive.getnames()
        assert names == ["models", f"models/{long_dir}", f"models/{path}"]
        assert archive.extractfile(f"models/{path}").read() == b"weights"


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"path": "../escape", "size": 1, "sha256": "0" * 64}, "unusable entry"),
        ({"path": "/abs", "size": 1, "sha256": "0" * 64}, "unusable entry"),
        ({"path": "ok", "size": 1}, "unusable entry"),
    ],
)
def test_records_that_point_outside_the_model_are_refused(tmp_path, entry, message):
    with pytest.raises(OciError, match=message):
        model_layers(str(tmp_path), {"files": [entry]})


def test_a_file_shorter_than_its_record_fails(tmp_path):
    (tmp_path / "w").write_bytes(b"abc")
    [layer] = model_layers(str(tmp_path), {"files": [{"path": "w", "size": 4, "sha256": "0" * 64}]})
    with pytest.raises(OciError, match="has 3 bytes, its record says 4"):
        layer.measure()


class _Handler(http.server.BaseHTTPRequestHandler):
    """A registry that wants a Bearer token from its own /token realm, after one 503."""

    token = "t0ken"  # noqa: S105 (a test value)
    seen: ClassVar[list] = []

    def log_message(self, format, *args):
        pass

    def _json(self, status, document, headers=None):
        body = json.dumps(document).encode()
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        self.seen.append((self.path, self.headers.get("Authorization")))
        if self.path.startswith("/token"):
            expected = "Basic " + base64.b64encode(b"user:secret").decode()
            if self.headers.get("Authorization") != expected:
                self._json(401, {})
                return
            self._json(200, {"token": self.token})
            return
        if len([p for p, _a in self.seen if p == self.path]) == 1:
            self._json(503, {"errors": [{"code": "UNAVAILABLE"}]})
            return
        if self.headers.get("Authorization") != f"Bearer {self.token}":
            realm = f"http://127.0.0.1:{self.server.server_port}/token"
            challenge = f'Bearer realm="{realm}",service="test",scope="repository:m/x:pull"'
            self._json(401, {}, {"WWW-Authenticate": challenge})
            return
        self._json(200, {"schemaVersion": 2}, {"Content-Type": _oci.OCI_MANIFEST})


@pytest.fixture
def bearer_registry(monkeypatch):
    monkeypatch.setattr(_oci.time, "sleep", lambda _seconds: None)
    _Handler.seen = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def test_bearer_token_flow_after_a_retried_503(bearer_registry):
    host = f"127.0.0.1:{bearer_registry.server_port}"
    registry = Registry(host, "user", "secret")
    digest, media_type, data = registry.manifest("m/x", "v1")
    assert media_type == _oci.OCI_MANIFEST
    assert digest == "sha256:" + hashlib.sha256(data).hexdigest()
    paths = [(path.split("?")[0], auth.split()[0] if auth else None) for path, auth in _Handler.seen]
    assert paths == [
        ("/v2/m/x/manifests/v1", None),  # 503: retried
        ("/v2/m/x/manifests/v1", None),  # 401 with the Bearer challenge
        ("/token", "Basic"),  # the token service, with the credentials
        ("/v2/m/x/manifests/v1", "Bearer"),
    ]
    assert "scope=repository%3Am%2Fx%3Apull" in _Handler.seen[2][0]


def test_refused_credentials_name_the_registry(bearer_registry):
    host = f"127.0.0.1:{bearer_registry.server_port}"
    with pytest.raises(OciError, match=f"{host}: the token service refused the credentials"):
        Registry(host, "user", "wrong").manifest("m/x", "v1")
