"""_oci's registry protocol against loopback servers: redirects, where credentials go, token refresh, proxies, CAs.

A small registry (``_FakeRegistry``) answers the API v2 calls modelcar_image makes; blob GETs are redirected to
a second server (``storage``) that records the headers it receives, as ECR redirects to S3. Its token service
can live on the registry's host or on another one (``localhost`` against ``127.0.0.1``), and its tokens can be
made to expire after a number of requests, as a token expires in the middle of a long push.
"""

from __future__ import annotations

import base64
import hashlib
import http.server
import json
import ssl
import subprocess
import threading
import urllib.parse

import pytest

from ansible_collections.burst.golden_ami.plugins.module_utils import _oci
from ansible_collections.burst.golden_ami.plugins.module_utils._oci import OciError, Registry

USER, PASSWORD = "burst", "s3cret-password"  # test values
BASIC = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()


class _Server:
    """A ThreadingHTTPServer on 127.0.0.1 whose handler calls ``handle(request)``; every request is logged."""

    def __init__(self, handle, context=None):
        self.log = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format, *args):
                pass

            def _any(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                outer.log.append({"method": self.command, "path": self.path, "headers": dict(self.headers)})
                status, headers, data = handle(self.command, self.path, self.headers, body)
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = _any

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        if context is not None:
            self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_port
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


class _FakeRegistry:
    """The API v2 calls of modelcar_image, with ``auth`` None, "basic" or "bearer"."""

    def __init__(self, auth="bearer", realm_host="127.0.0.1", token_uses=None, redirect=True, context=None):
        self.auth = auth
        self.realm_host = realm_host
        self.token_uses = token_uses  # requests a token is good for (None: no limit)
        self.redirect = redirect
        self.blobs = {}
        self.manifests = {}
        self.tokens = {}  # token -> [actions, uses left]
        self.token_requests = []  # the Authorization header of each token request (None when anonymous)
        self.storage = _Server(self._storage)
        self.server = _Server(self._handle, context)
        self.host = f"127.0.0.1:{self.server.port}"

    def close(self):
        self.server.close()
        self.storage.close()

    def _storage(self, method, path, headers, body):
        digest = urllib.parse.parse_qs(urllib.parse.urlsplit(path).query)["digest"][0]
        return 200, {"Content-Type": "application/octet-stream"}, self.blobs[digest]

    def _challenge(self, actions):
        scheme = "https" if isinstance(self.server.server.socket, ssl.SSLSocket) else "http"
        realm = f"{scheme}://{self.realm_host}:{self.server.port}/token"
        return {"WWW-Authenticate": f'Bearer realm="{realm}",service="fake",scope="repository:m/x:{actions}"'}

    def _authorized(self, headers, actions):
        given = headers.get("Authorization")
        if self.auth is None:
            return True
        if self.auth == "basic":
            return given == BASIC
        if not given or not given.startswith("Bearer "):
            return False
        entry = self.tokens.get(given[len("Bearer ") :])
        if entry is None or entry[1] == 0 or not set(actions.split(",")) <= entry[0]:
            return False
        if entry[1] is not None:
            entry[1] -= 1
        return True

    def _token(self, headers, path):
        given = headers.get("Authorization")
        self.token_requests.append(given)
        if given is not None and given != BASIC:
            return 401, {}, b"{}"
        actions = {"pull", "push"} if given == BASIC else {"pull"}
        token = f"token-{len(self.token_requests)}"
        self.tokens[token] = [actions, self.token_uses]
        return 200, {"Content-Type": "application/json"}, json.dumps({"token": token}).encode()

    def _handle(self, method, path, headers, body):
        split = urllib.parse.urlsplit(path)
        if split.path == "/token":
            return self._token(headers, path)
        actions = "pull" if method in ("GET", "HEAD") else "pull,push"
        if not self._authorized(headers, actions):
            challenge = self._challenge(actions) if self.auth == "bearer" else {"WWW-Authenticate": 'Basic realm="r"'}
            return 401, challenge, b'{"errors":[{"code":"UNAUTHORIZED"}]}'
        parts = split.path.split("/")
        if "/blobs/uploads/" in split.path and method == "POST":
            return 202, {"Location": "/v2/m/x/blobs/uploads/u1?_state=abc"}, b""
        if "/blobs/uploads/" in split.path and method == "PUT":
            digest = urllib.parse.parse_qs(split.query)["digest"][0]
            if "sha256:" + hashlib.sha256(body).hexdigest() != digest:
                return 400, {}, b'{"errors":[{"code":"DIGEST_INVALID"}]}'
            self.blobs[digest] = body
            return 201, {"Location": f"/v2/m/x/blobs/{digest}"}, b""
        if parts[-2] == "blobs":
            digest = parts[-1]
            if digest not in self.blobs:
                return 404, {}, b""
            if method == "GET" and self.redirect:
                storage = f"http://127.0.0.1:{self.storage.port}/data?{urllib.parse.urlencode({'digest': digest})}"
                return 307, {"Location": storage}, b""
            return 200, {}, self.blobs[digest] if method == "GET" else b""
        if parts[-2] == "manifests":
            if method == "PUT":
                self.manifests[parts[-1]] = (headers.get("Content-Type"), body)
                return 201, {}, b""
            if parts[-1] not in self.manifests:
                return 404, {}, b""
            media_type, data = self.manifests[parts[-1]]
            return 200, {"Content-Type": media_type}, data
        return 404, {}, b""


@pytest.fixture
def fake(monkeypatch):
    monkeypatch.setattr(_oci.time, "sleep", lambda _seconds: None)
    for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "no_proxy", "NO_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    made = []

    def make(**kwargs):
        made.append(_FakeRegistry(**kwargs))
        return made[-1]

    yield make
    for registry in made:
        registry.close()


def _blob(registry, data=b"layer bytes " * 100):
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    registry.blobs[digest] = data
    return digest, data


@pytest.mark.parametrize("auth", ["bearer", "basic"])
def test_blob_get_follows_the_redirect_and_no_credentials_reach_storage(fake, auth):
    registry = fake(auth=auth)
    digest, data = _blob(registry)
    client = Registry(registry.host, USER, PASSWORD)
    assert client.blob("m/x", digest) == data
    [fetched] = registry.storage.log
    assert fetched["path"].startswith("/data?digest=")
    assert not {key.lower() for key in fetched["headers"]} & {"authorization", "cookie"}
    # The registry itself got the credentials: the redirect was answered to an authenticated request.
    answered = [entry for entry in registry.server.log if entry["path"].endswith(digest)]
    assert answered[-1]["headers"].get("Authorization", "").startswith("Bearer " if auth == "bearer" else "Basic ")


def test_a_redirect_to_another_scheme_is_refused(fake):
    registry = fake(auth=None, redirect=False)
    digest, _data = _blob(registry)
    original = registry.server
    handle = registry._handle

    def to_file(method, path, headers, body):
        if "/blobs/" in path and method == "GET":
            return 307, {"Location": "file:///etc/passwd"}, b""
        return handle(method, path, headers, body)

    original.close()
    registry.server = _Server(to_file)
    client = Registry(f"127.0.0.1:{registry.server.port}")
    with pytest.raises(OciError, match="which is not HTTP"):
        client.blob("m/x", digest)


def test_basic_credentials_go_to_a_token_service_on_the_registry_host(fake):
    registry = fake(auth="bearer", realm_host="127.0.0.1")
    digest, size, data = _upload_args(b"pushed")
    Registry(registry.host, USER, PASSWORD).upload("m/x", digest, size, data)
    assert registry.token_requests == [BASIC]
    assert registry.blobs[digest] == data


def _upload_args(data):
    return "sha256:" + hashlib.sha256(data).hexdigest(), len(data), data


def test_basic_credentials_never_go_to_a_token_service_on_another_host(fake):
    registry = fake(auth="bearer", realm_host="localhost")
    digest, data = _blob(registry)
    client = Registry(registry.host, USER, PASSWORD)
    # A pull works with the anonymous token that service gives.
    assert client.blob("m/x", digest) == data
    assert registry.token_requests == [None]
    # A push needs the credentials: refused, and the error says they were withheld, and from whom.
    with pytest.raises(OciError, match=r"refused POST .*not sent to the token service at localhost:\d+"):
        client.upload("m/x", *_upload_args(b"pushed"))
    assert registry.token_requests == [None, None, None]
    every_request = registry.server.log + registry.storage.log
    assert all(PASSWORD not in json.dumps(entry) and BASIC not in json.dumps(entry) for entry in every_request)


def test_basic_credentials_go_only_to_the_registry_origin(fake):
    registry = fake(auth="basic")
    registry_data = b"pushed across"
    client = Registry(registry.host, USER, PASSWORD)
    # An upload location on another origin (a CDN, another port) gets no Authorization header.
    outside = _Server(lambda method, path, headers, body: (201, {}, b""))
    try:
        client.request(
            "PUT", "", "repository:m/x:pull,push", url=f"http://localhost:{outside.port}/upload?digest=x",
            headers={"Content-Length": str(len(registry_data))}, body=registry_data, ok=(201,),
        )  # fmt: skip
        assert [entry["headers"].get("Authorization") for entry in outside.log] == [None]
    finally:
        outside.close()


def test_an_expired_token_is_refreshed_once_in_the_middle_of_a_push(fake):
    registry = fake(auth="bearer", token_uses=2)
    client = Registry(registry.host, USER, PASSWORD)
    pushed = [_upload_args(f"layer {index}".encode() * 1000) for index in range(3)]
    for digest, size, data in pushed:
        assert not client.has_blob("m/x", digest)
        client.upload("m/x", digest, size, lambda data=data: iter([data[:100], data[100:]]))
    client.put_manifest("m/x", "v1", _oci.OCI_MANIFEST, b'{"schemaVersion":2}')
    assert {digest for digest, _size, _data in pushed} <= set(registry.blobs)
    assert registry.manifests["v1"][1] == b'{"schemaVersion":2}'
    # Tokens ran out several times; each time one new token, with the credentials, and the request went on.
    assert len(registry.token_requests) > 3 and set(registry.token_requests) == {BASIC}
    statuses = [entry["headers"].get("Authorization") for entry in registry.server.log if entry["path"] != "/token"]
    assert statuses.count(None) == 2, "only the first request of each scope went without a token"


def test_a_token_refused_again_after_its_refresh_fails_naming_the_registry(fake):
    registry = fake(auth="bearer", token_uses=0)  # every token is already expired
    client = Registry(registry.host, USER, PASSWORD)
    with pytest.raises(OciError, match=rf"{registry.host} refused HEAD /v2/m/x/blobs/sha256:0+ \(HTTP 401\)"):
        client.has_blob("m/x", "sha256:" + "0" * 64)
    assert registry.token_requests == [BASIC, BASIC], "one token, then one refresh, then the error"


class _CountingProxy:
    """A forward HTTP proxy on loopback that counts what it forwards."""

    def __init__(self):
        self.seen = []

        def forward(method, path, headers, body):
            self.seen.append((method, path))
            target = urllib.parse.urlsplit(path)
            import http.client

            connection = http.client.HTTPConnection(target.netloc, timeout=10)
            try:
                sent = {k: v for k, v in headers.items() if k.lower() not in ("proxy-connection", "connection")}
                connection.request(method, target.path + (f"?{target.query}" if target.query else ""), body, sent)
                answer = connection.getresponse()
                data = answer.read()
                kept = {k: v for k, v in answer.getheaders() if k.lower() not in ("content-length", "connection")}
                return answer.status, kept, data
            finally:
                connection.close()

        self.server = _Server(forward)
        self.url = f"http://127.0.0.1:{self.server.port}"


def test_requests_go_through_the_proxy_unless_no_proxy_names_the_host(fake, monkeypatch):
    registry = fake(auth="bearer")
    digest, data = _blob(registry)
    proxy = _CountingProxy()
    try:
        monkeypatch.setenv("http_proxy", proxy.url)
        assert Registry(registry.host, USER, PASSWORD).blob("m/x", digest) == data
        paths = [urllib.parse.urlsplit(path) for _method, path in proxy.seen]
        assert {(p.hostname, p.path.split("/")[1]) for p in paths} >= {("127.0.0.1", "v2"), ("127.0.0.1", "token")}
        assert any(p.port == registry.storage.port for p in paths), "the redirect to storage went through it too"
        before = len(proxy.seen)
        monkeypatch.setenv("no_proxy", "127.0.0.1")
        assert Registry(registry.host, USER, PASSWORD).blob("m/x", digest) == data
        assert len(proxy.seen) == before
    finally:
        proxy.server.close()


@pytest.fixture(scope="module")
def private_ca(tmp_path_factory):
    """A CA and a certificate for 127.0.0.1 it signed (openssl)."""
    directory = tmp_path_factory.mktemp("ca")

    def openssl(*args):
        subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True, timeout=60)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
            "-subj", "/CN=burst test CA")  # fmt: skip
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
            "-subj", "/CN=127.0.0.1")  # fmt: skip
    (directory / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", "server.pem", "-days", "2", "-extfile", "ext.cnf")  # fmt: skip
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(directory / "server.pem", directory / "server.key")
    return directory / "ca.pem", context


def test_a_registry_behind_a_private_ca_needs_ca_path(fake, private_ca):
    ca_file, context = private_ca
    registry = fake(auth="bearer", redirect=False, context=context)
    digest, data = _blob(registry)
    assert Registry(registry.host, USER, PASSWORD, plain_http=False, ca_path=str(ca_file)).blob("m/x", digest) == data
    assert registry.token_requests == [BASIC]
    with pytest.raises(OciError, match=rf"TLS with {registry.host} failed: .*give ca_path"):
        Registry(registry.host, USER, PASSWORD, plain_http=False).blob("m/x", digest)


def test_an_https_registry_never_sends_credentials_to_a_plain_http_token_service(fake, private_ca):
    ca_file, context = private_ca
    registry = fake(auth="bearer", context=context)
    registry._challenge = lambda actions: {
        "WWW-Authenticate": f'Bearer realm="http://127.0.0.1:{registry.storage.port}/token",service="fake"'
    }
    client = Registry(registry.host, USER, PASSWORD, plain_http=False, ca_path=str(ca_file))
    with pytest.raises(OciError, match="refusing the plain-HTTP token service"):
        client.has_blob("m/x", "sha256:" + "0" * 64)
    assert registry.storage.log == []


def test_docker_hub_is_reached_at_its_api_host_and_its_token_service_is_trusted():
    client = Registry("docker.io", USER, PASSWORD)
    assert client.base_url == "https://registry-1.docker.io"
    assert client._credentials_for("https://auth.docker.io/token")
    assert not client._credentials_for("https://auth.docker.io.evil.example/token")
    assert not Registry("registry.example", USER, PASSWORD)._credentials_for("https://auth.docker.io/token")
