"""Debian's docker-registry on loopback, and the stand-in images pushed into it.

``Registry`` runs ``/usr/bin/docker-registry`` (distribution 2.8) on
127.0.0.1 and a free port, with its storage in a temporary directory and,
when asked, htpasswd authentication. ``build_and_push_standins`` builds the
stand-in images of ``standins/`` (busybox and shell scripts, ``FROM
scratch``) with the host's Docker engine and pushes them into a registry.

The stand-ins are named as such everywhere: repositories ``standin/...``,
the ``org.opencontainers.image.description`` label starts with
``STAND-IN``. They answer on the host network like the real servers:

- ``standin/vllm-openai``: vLLM's OpenAI server (``/health``, ``/v1/models``).
- ``standin/text-embeddings-inference``: TEI (``/health``, ``/info``).
- ``standin/buildkit``: moby/buildkit's buildkitd (checks its config, builds nothing).
- ``standin/busybox``: a minimal base (the host's static busybox as ``/bin/sh``).

``RegistryFront`` stands in front of a ``Registry`` on its own loopback port
and plays the parts of hosted registries the plain docker-registry does not:
blob GETs answered with a 307 to a second loopback server, ``storage``, as
ECR (to S3), Docker Hub and GHCR do, and Bearer authentication with a token
service whose tokens expire after a few requests (a token that runs out in
the middle of a push). Both servers record the headers they receive.

``python -m localworld.registry [--auth USER[:PASSWORD]] [--no-standins]``
serves until SIGTERM or SIGINT and prints one JSON line with the host and
the stand-ins' references and digests. With ``--auth USER`` alone the
password comes from ``$LOCALWORLD_REGISTRY_PASSWORD``; it is never printed.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import ctypes
import ctypes.util
import hashlib
import http.client
import http.server
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import docker
import docker.errors

from localworld.moto import free_port, stop_process

__all__ = [
    "REGISTRY_BINARY",
    "STANDINS",
    "STANDIN_VARIANT_TAG",
    "Registry",
    "RegistryError",
    "RegistryFront",
    "bcrypt_hash",
    "build_and_push_standins",
]

HOST = "127.0.0.1"
REGISTRY_BINARY = Path("/usr/bin/docker-registry")
BUSYBOX_BINARY = Path("/bin/busybox")
STANDINS_DIR = Path(__file__).resolve().with_name("standins")
# Stand-in name -> repository in the registry.
STANDINS = {
    "vllm-openai": "standin/vllm-openai",
    "text-embeddings-inference": "standin/text-embeddings-inference",
    "buildkit": "standin/buildkit",
    "busybox": "standin/busybox",
}
STANDIN_VERSION = "0.1"
# A second tag of standin/vllm-openai with other content (another version
# label), for tests where a tag and a pinned digest disagree.
STANDIN_VARIANT = "vllm-openai"
STANDIN_VARIANT_TAG = "v0.2"
STANDIN_VARIANT_VERSION = "0.2"
# Test-world passwords only: a low bcrypt cost keeps every authenticated
# registry request fast (the registry checks the hash on each one).
BCRYPT_COST = 5
MANIFEST_MEDIA_TYPES = (
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.index.v1+json",
)
PASSWORD_ENV = "LOCALWORLD_REGISTRY_PASSWORD"  # noqa: S105 (a variable name, not a password)


class RegistryError(RuntimeError):
    """The registry or a stand-in image could not be started, built or pushed."""


def bcrypt_hash(password: str, *, cost: int = BCRYPT_COST) -> str:
    """Hash ``password`` with bcrypt (``$2b$``) through the system's libcrypt (libxcrypt).

    The registry's htpasswd authentication accepts only bcrypt entries.
    """
    name = ctypes.util.find_library("crypt") or "libcrypt.so.1"
    try:
        libcrypt = ctypes.CDLL(name, use_errno=True)
    except OSError as exc:
        raise RegistryError(f"cannot load libcrypt ({name}) for bcrypt: {exc}") from exc
    libcrypt.crypt_gensalt.restype = ctypes.c_char_p
    libcrypt.crypt_gensalt.argtypes = [ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p, ctypes.c_int]
    libcrypt.crypt.restype = ctypes.c_char_p
    libcrypt.crypt.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
    random_bytes = os.urandom(16)
    setting = libcrypt.crypt_gensalt(b"$2b$", cost, random_bytes, len(random_bytes))
    if not setting:
        raise RegistryError("libcrypt cannot make a bcrypt salt (crypt_gensalt failed)")
    hashed = libcrypt.crypt(password.encode(), setting)
    if not hashed or not hashed.startswith(b"$2b$"):
        raise RegistryError("libcrypt does not support bcrypt ($2b$)")
    return hashed.decode()


def _check_credentials(auth: object) -> tuple[str, str] | None:
    if auth is None:
        return None
    if not isinstance(auth, (tuple, list)) or len(auth) != 2:
        raise ValueError("auth must be None or a (user, password) pair")
    user, password = auth
    if not isinstance(user, str) or not isinstance(password, str):
        raise ValueError("auth user and password must be strings")
    if not user or ":" in user or any(c.isspace() for c in user):
        raise ValueError("auth user must be non-empty, without ':' or whitespace")
    if not password or "\n" in password or "\r" in password:
        raise ValueError("auth password must be non-empty and on one line")
    return user, password


class Registry:
    """One docker-registry process on 127.0.0.1 with its storage in a temporary directory.

    ``auth=(user, password)`` turns on htpasswd authentication (Basic auth;
    Docker and skopeo send it to a plain-HTTP registry on loopback).
    """

    def __init__(
        self,
        auth: tuple[str, str] | None = None,
        *,
        binary: Path | str = REGISTRY_BINARY,
        start_timeout: float = 30.0,
    ):
        self.auth = _check_credentials(auth)
        self.binary = Path(binary)
        self.start_timeout = start_timeout
        self.port: int | None = None
        self.workdir: Path | None = None
        self.standins: dict[str, dict] = {}
        self._process: subprocess.Popen | None = None

    def __repr__(self) -> str:
        user = self.auth[0] if self.auth else None
        return f"Registry(host={self.port and self.host!r}, user={user!r})"

    @property
    def username(self) -> str | None:
        return self.auth[0] if self.auth else None

    @property
    def password(self) -> str | None:
        return self.auth[1] if self.auth else None

    @property
    def host(self) -> str:
        """``127.0.0.1:PORT``, the registry part of image references."""
        if self.port is None:
            raise RegistryError("the registry is not started")
        return f"{HOST}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    @property
    def storage(self) -> Path:
        if self.workdir is None:
            raise RegistryError("the registry is not started")
        return self.workdir / "storage"

    @property
    def pid(self) -> int | None:
        """The registry process's id while it runs."""
        return self._process.pid if self._process is not None else None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> Registry:
        if self._process is not None:
            raise RegistryError("the registry is already started")
        if not os.access(self.binary, os.X_OK):
            raise RegistryError(
                f"{self.binary} not found: install Debian's docker-registry package (hack/ensure-world-deps.sh)"
            )
        self.workdir = Path(tempfile.mkdtemp(prefix="localworld-registry-"))
        try:
            self._write_htpasswd()
            for _attempt in range(3):
                self.port = free_port(HOST)
                self._spawn()
                if self._wait_until_up():
                    return self
                if "address already in use" not in self.log():
                    break
            raise RegistryError(f"docker-registry did not answer on {self.host}/v2/: {self.log()[-2000:]}")
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop the process and remove the storage, the config and the htpasswd file."""
        process, self._process = self._process, None
        stop_process(process)
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None
        self.port = None
        self.standins = {}

    def __enter__(self) -> Registry:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def log(self) -> str:
        """What the registry process wrote so far (warnings and errors)."""
        if self.workdir is None or not (self.workdir / "registry.log").exists():
            return ""
        return (self.workdir / "registry.log").read_text(errors="replace")

    def _write_htpasswd(self) -> None:
        if not self.auth:
            return
        user, password = self.auth
        path = self.workdir / "htpasswd"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(f"{user}:{bcrypt_hash(password)}\n")

    def _config(self) -> dict:
        config = {
            "version": 0.1,
            "log": {"level": "warn", "accesslog": {"disabled": True}},
            "storage": {
                "filesystem": {"rootdirectory": str(self.storage)},
                "delete": {"enabled": True},
            },
            "http": {"addr": self.host, "secret": secrets.token_hex(16)},
        }
        if self.auth:
            config["auth"] = {"htpasswd": {"realm": "localworld", "path": str(self.workdir / "htpasswd")}}
        return config

    def _spawn(self) -> None:
        # JSON is YAML: the registry reads this file as its YAML config.
        config_path = self.workdir / "config.yml"
        config_path.write_text(json.dumps(self._config(), indent=2) + "\n")
        config_path.chmod(0o600)
        with (self.workdir / "registry.log").open("wb") as log:
            self._process = subprocess.Popen(
                [str(self.binary), "serve", str(config_path)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def _wait_until_up(self) -> bool:
        """True once /v2/ answers 200, or 401 with auth on; False if the process died."""
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                self._process = None
                return False
            try:
                with urllib.request.urlopen(f"{self.url}/v2/", timeout=2) as response:  # noqa: S310 (loopback)
                    if response.status == 200:
                        return True
            except urllib.error.HTTPError as exc:
                if exc.code == 401 and self.auth:
                    return True
            except OSError:
                pass
            time.sleep(0.1)
        return False

    def request(self, method: str, path: str, *, headers: dict | None = None, auth: bool = True):
        """One HTTP request to the registry API (``path`` starts with /v2/); returns (status, headers, body)."""
        all_headers = dict(headers or {})
        if auth and self.auth:
            token = base64.b64encode(f"{self.auth[0]}:{self.auth[1]}".encode()).decode()
            all_headers["Authorization"] = f"Basic {token}"
        req = urllib.request.Request(f"{self.url}{path}", method=method, headers=all_headers)  # noqa: S310
        try:
            with urllib.request.urlopen(req, timeout=10) as response:  # noqa: S310 (loopback)
                return response.status, response.headers, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.headers, exc.read()

    def manifest(self, repository: str, reference: str) -> tuple[str, dict, int]:
        """The manifest of ``repository:reference`` as the registry serves it.

        Returns (digest, manifest, manifest size). The digest is the sha256
        of the bytes served, the one ``docker pull repo@digest`` accepts; it
        is checked against the registry's Docker-Content-Digest header.
        """
        status, headers, body = self.request(
            "GET",
            f"/v2/{repository}/manifests/{reference}",
            headers={"Accept": ", ".join(MANIFEST_MEDIA_TYPES)},
        )
        if status != 200:
            raise RegistryError(f"GET manifest {repository}:{reference} answered {status}: {body[:300]!r}")
        digest = "sha256:" + hashlib.sha256(body).hexdigest()
        served = headers.get("Docker-Content-Digest")
        if served != digest:
            raise RegistryError(f"{repository}:{reference}: Docker-Content-Digest {served} differs from {digest}")
        return digest, json.loads(body), len(body)


class _RecordingServer:
    """A threaded HTTP/1.1 server on 127.0.0.1; ``handle(method, path, headers, body)`` answers each request.

    Every request is recorded in ``log`` as {method, path, headers}; bodies are read in full before the answer,
    so a client gets the answer (a 401 too) whatever it was sending.
    """

    def __init__(self, handle):
        self.log: list[dict] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def _any(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                # Repeated headers (skopeo sends one Accept per media type) become one, comma-separated.
                # Names in their canonical case (Authorization, Content-Length), whatever the client sent.
                headers = {}
                for key in dict.fromkeys(name.lower() for name in self.headers.keys()):
                    canonical = "-".join(part.capitalize() for part in key.split("-"))
                    headers[canonical] = ", ".join(self.headers.get_all(key))
                outer.log.append({"method": self.command, "path": self.path, "headers": headers})
                status, headers, data = handle(self.command, self.path, headers, body)
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _any

        self.server = http.server.ThreadingHTTPServer((HOST, 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_port
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class RegistryFront:
    """A hosted registry's behaviour in front of ``backend`` (a started ``Registry``), on its own port.

    - ``redirect_blobs``: a blob GET is answered with a 307 to ``storage`` (another loopback port, so another
      origin), with a signed-looking query as S3 presigned URLs have; ``storage.log`` holds the headers it got.
    - ``token_auth=(user, password)``: Bearer authentication. The token service (``/token`` on this port,
      named in the challenge as ``http://{realm_host}:{port}/token``; ``realm_host="localhost"`` makes it
      another host than the registry's ``127.0.0.1``) gives a pull and push token for those credentials, a
      pull-only token anonymously, and refuses anything else. Each token is good for ``token_uses``
      requests (None: no limit), a deterministic stand-in for a short lifetime; an expired token gets a 401
      with a new challenge, as distribution answers.
    - Without ``token_auth`` the backend's own authentication (if any) applies: requests pass through.

    ``host`` is ``127.0.0.1:PORT``; ``token_requests`` lists the Authorization header of each token request
    (None when anonymous); ``expired`` counts the requests refused for an expired token.
    """

    def __init__(
        self,
        backend: Registry,
        *,
        redirect_blobs: bool = True,
        token_auth: tuple[str, str] | None = None,
        realm_host: str = HOST,
        token_uses: int | None = None,
    ):
        self.backend = backend
        self.redirect_blobs = redirect_blobs
        self.token_auth = _check_credentials(token_auth)
        self.realm_host = realm_host
        self.token_uses = token_uses
        self.token_requests: list[str | None] = []
        self.expired = 0
        self._tokens: dict[str, list] = {}  # token -> [actions, uses left]
        self._lock = threading.Lock()
        self._signing = secrets.token_hex(8)
        self.storage = _RecordingServer(self._storage)
        self.front = _RecordingServer(self._handle)
        self.host = f"{HOST}:{self.front.port}"

    def close(self) -> None:
        self.front.close()
        self.storage.close()

    def __enter__(self) -> RegistryFront:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _backend(self, method: str, path: str, headers: dict, body: bytes) -> tuple[int, dict, bytes]:
        sent = {k: v for k, v in headers.items() if k.lower() not in ("authorization", "connection", "host")}
        sent["Host"] = self.host  # the backend builds upload locations from it
        if self.backend.auth:
            token = base64.b64encode(f"{self.backend.auth[0]}:{self.backend.auth[1]}".encode()).decode()
            sent["Authorization"] = f"Basic {token}"
        connection = http.client.HTTPConnection(HOST, self.backend.port, timeout=60)
        try:
            connection.request(method, path, body=body if body or method in ("PUT", "POST", "PATCH") else None,
                               headers=sent)  # fmt: skip
            answer = connection.getresponse()
            data = answer.read()
        finally:
            connection.close()
        kept = {}
        for key, value in answer.getheaders():
            if key.lower() in ("content-length", "connection", "transfer-encoding", "www-authenticate"):
                continue
            kept[key] = value.replace(self.backend.url, f"http://{self.host}")
        return answer.status, kept, data

    def _storage(self, method: str, path: str, headers: dict, body: bytes) -> tuple[int, dict, bytes]:
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(path).query)
        repository, digest = query.get("repository", [""])[0], query.get("digest", [""])[0]
        if query.get("signature", [""])[0] != self._sign(repository, digest) or method not in ("GET", "HEAD"):
            return 403, {"Content-Type": "application/xml"}, b"<Error><Code>SignatureDoesNotMatch</Code></Error>"
        if headers.get("Authorization"):
            # S3 refuses a presigned URL that also carries an Authorization header.
            return 400, {"Content-Type": "application/xml"}, b"<Error><Code>InvalidArgument</Code></Error>"
        status, kept, data = self._backend(method, f"/v2/{repository}/blobs/{digest}", {}, b"")
        return status, {"Content-Type": kept.get("Content-Type", "application/octet-stream")}, data

    def _sign(self, repository: str, digest: str) -> str:
        return hashlib.sha256(f"{self._signing}:{repository}:{digest}".encode()).hexdigest()

    def _token(self, headers: dict, path: str) -> tuple[int, dict, bytes]:
        given = headers.get("Authorization")
        expected = "Basic " + base64.b64encode(":".join(self.token_auth).encode()).decode()
        with self._lock:
            self.token_requests.append(given)
            if given is not None and given != expected:
                return 401, {"Content-Type": "application/json"}, b'{"details":"incorrect username or password"}'
            token = secrets.token_urlsafe(16)
            actions = {"pull", "push"} if given == expected else {"pull"}
            self._tokens[token] = [actions, self.token_uses]
        body = {"token": token, "access_token": token, "expires_in": 60}
        return 200, {"Content-Type": "application/json"}, json.dumps(body).encode()

    def _allowed(self, headers: dict, actions: set[str]) -> str | None:
        """None when the request may go on, else the error code to answer with."""
        given = headers.get("Authorization") or ""
        if not given.startswith("Bearer "):
            return "UNAUTHORIZED"
        with self._lock:
            entry = self._tokens.get(given[len("Bearer ") :])
            if entry is None:
                return "UNAUTHORIZED"
            if entry[1] is not None and entry[1] <= 0:
                self.expired += 1
                return "UNAUTHORIZED"
            if not actions <= entry[0]:
                return "DENIED"
            if entry[1] is not None:
                entry[1] -= 1
        return None

    def _handle(self, method: str, path: str, headers: dict, body: bytes) -> tuple[int, dict, bytes]:
        split = urllib.parse.urlsplit(path)
        if self.token_auth and split.path == "/token":
            return self._token(headers, path)
        parts = split.path.split("/")
        repository = "/".join(parts[2:-2]) if len(parts) > 4 else ""
        if self.token_auth:
            base = split.path.rstrip("/") == "/v2"  # the version check: any token will do
            actions = set() if base else {"pull"} if method in ("GET", "HEAD") else {"pull", "push"}
            error = self._allowed(headers, actions)
            if error:
                realm = f"http://{self.realm_host}:{self.front.port}/token"
                challenge = f'Bearer realm="{realm}",service="localworld"'
                if not base:
                    challenge += f',scope="repository:{repository}:{",".join(sorted(actions, reverse=True))}"'
                status = 401 if error == "UNAUTHORIZED" else 403
                document = {"errors": [{"code": error, "message": "authentication required"}]}
                return (
                    status,
                    {"WWW-Authenticate": challenge, "Content-Type": "application/json"},
                    json.dumps(document).encode(),
                )
        if self.redirect_blobs and method == "GET" and len(parts) > 4 and parts[-2] == "blobs":
            digest = parts[-1]
            query = urllib.parse.urlencode(
                {"repository": repository, "digest": digest, "signature": self._sign(repository, digest)}
            )
            return 307, {"Location": f"http://{HOST}:{self.storage.port}/blobs?{query}"}, b""
        return self._backend(method, path, dict(headers), body)


def _docker_client():
    try:
        client = docker.from_env(timeout=120)
        client.ping()
    except (docker.errors.DockerException, OSError) as exc:
        raise RegistryError(f"no Docker engine answers ({exc}); run hack/ensure-docker.sh") from exc
    return client


def _build_context(name: str, destination: Path) -> Path:
    """Assemble the build context of stand-in ``name``: its files, ../common, the host's busybox."""
    source = STANDINS_DIR / name
    if not (source / "Dockerfile").is_file():
        raise RegistryError(f"no stand-in named {name!r} under {STANDINS_DIR}")
    if not BUSYBOX_BINARY.is_file():
        raise RegistryError(f"{BUSYBOX_BINARY} not found: install Debian's busybox-static (hack/ensure-world-deps.sh)")
    destination.mkdir(parents=True)
    files = [*sorted((STANDINS_DIR / "common").iterdir()), *sorted(source.iterdir()), BUSYBOX_BINARY]
    for path in files:
        target = destination / path.name
        shutil.copyfile(path, target)
        target.chmod(0o644 if path.name == "Dockerfile" else 0o755)
        # Fixed times: the same files give the same layers, and the cache hits.
        os.utime(target, (0, 0))
    return destination


def _build(client, name: str, version: str, workdir: Path) -> str:
    """Build stand-in ``name`` at ``version`` and tag it ``standin/<name>:v<version>``; return the image id."""
    context = _build_context(name, workdir / f"{name}-{version}")
    tag = f"{STANDINS[name]}:v{version}"
    try:
        previous = client.images.get(tag).id
    except docker.errors.ImageNotFound:
        previous = None
    try:
        image, _logs = client.images.build(
            path=str(context),
            tag=tag,
            buildargs={"STANDIN_VERSION": version},
            network_mode="none",
            pull=False,
            rm=True,
            forcerm=True,
        )
    except (docker.errors.BuildError, docker.errors.APIError) as exc:
        raise RegistryError(f"building stand-in {tag} failed: {exc}") from exc
    if previous and previous != image.id:
        # The stand-in's files changed: drop the image the tag pointed at, unless in use.
        with contextlib.suppress(docker.errors.APIError):
            client.images.remove(previous, noprune=False)
    return image.id


def _push(client, registry: Registry, image_id: str, repository: str, tag: str) -> str:
    """Tag ``image_id`` as registry/repository:tag, push it, drop the tag; return the pushed digest."""
    target = f"{registry.host}/{repository}"
    client.api.tag(image_id, target, tag)
    auth_config = {"username": registry.username, "password": registry.password} if registry.auth else None
    digest = None
    try:
        for event in client.api.push(target, tag=tag, auth_config=auth_config, stream=True, decode=True):
            if "error" in event:
                raise RegistryError(f"pushing {target}:{tag} failed: {event['error']}")
            digest = (event.get("aux") or {}).get("Digest", digest)
    except docker.errors.APIError as exc:
        raise RegistryError(f"pushing {target}:{tag} failed: {exc}") from exc
    finally:
        client.api.remove_image(f"{target}:{tag}", noprune=True)
    if digest is None:
        raise RegistryError(f"pushing {target}:{tag} reported no digest")
    return digest


def build_and_push_standins(registry: Registry, *, tags: tuple[str, ...] = ("v0.1",)) -> dict[str, dict]:
    """Build the stand-in images and push them into ``registry``.

    Every stand-in is pushed under each of ``tags`` (same content, same
    digest); standin/vllm-openai also gets ``STANDIN_VARIANT_TAG`` (v0.2)
    with other content. Returns, keyed by ``name:tag``, dicts with name,
    repository (registry/repo), tag, reference (registry/repo:tag), digest
    (sha256 of the manifest as the registry serves it), pinned
    (registry/repo@digest), size (bytes of the config and layer blobs) and
    version (the image's version label). The Docker layer cache makes a
    re-run fast. The result is also kept as ``registry.standins``.
    """
    if isinstance(tags, str) or not tags:
        raise ValueError("tags must be a non-empty tuple of tags, such as ('v0.1',)")
    for tag in tags:
        if not tag or not all(c.isalnum() or c in "._-" for c in tag) or len(tag) > 128 or tag[0] in ".-":
            raise ValueError(f"invalid image tag {tag!r}")
    if STANDIN_VARIANT_TAG in tags:
        raise ValueError(f"tag {STANDIN_VARIANT_TAG} is reserved for the stand-in with other content")
    client = _docker_client()
    plan: list[tuple[str, str, str]] = [(name, STANDIN_VERSION, tag) for name in STANDINS for tag in tags]
    plan.append((STANDIN_VARIANT, STANDIN_VARIANT_VERSION, STANDIN_VARIANT_TAG))
    images: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="localworld-standins-") as tmp:
        built: dict[tuple[str, str], str] = {}
        for name, version, tag in plan:
            if (name, version) not in built:
                built[name, version] = _build(client, name, version, Path(tmp))
            repository = STANDINS[name]
            pushed = _push(client, registry, built[name, version], repository, tag)
            digest, manifest, _size = registry.manifest(repository, tag)
            if pushed != digest:
                raise RegistryError(f"{repository}:{tag}: docker push reported {pushed}, the registry serves {digest}")
            blobs = [manifest.get("config", {}), *manifest.get("layers", [])]
            images[f"{name}:{tag}"] = {
                "name": name,
                "repository": f"{registry.host}/{repository}",
                "tag": tag,
                "reference": f"{registry.host}/{repository}:{tag}",
                "digest": digest,
                "pinned": f"{registry.host}/{repository}@{digest}",
                "size": sum(int(blob.get("size", 0)) for blob in blobs),
                "version": version,
            }
    registry.standins = images
    return images


def _parse_auth(value: str | None) -> tuple[str, str] | None:
    if value is None:
        return None
    user, sep, password = value.partition(":")
    if not sep:
        password = os.environ.get(PASSWORD_ENV, "")
        if not password:
            raise SystemExit(f"--auth {user}: give USER:PASSWORD or set {PASSWORD_ENV}")
    try:
        return _check_credentials((user, password))
    except ValueError as exc:
        raise SystemExit(f"--auth: {exc}") from exc


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m localworld.registry", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--auth",
        metavar="USER[:PASSWORD]",
        help=f"turn on htpasswd authentication (password from ${PASSWORD_ENV} when not given)",
    )
    parser.add_argument("--no-standins", action="store_true", help="start the registry empty")
    parser.add_argument(
        "--tag", action="append", dest="tags", metavar="TAG", help="tag of the stand-ins (repeatable; default v0.1)"
    )
    args = parser.parse_args(argv)
    auth = _parse_auth(args.auth)

    stopping = []

    def _stop(signum: int, _frame: object) -> None:
        stopping.append(signum)
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _stop)
    registry = Registry(auth)
    try:
        registry.start()
        images = {} if args.no_standins else build_and_push_standins(registry, tags=tuple(args.tags or ("v0.1",)))
        env = {"LOCALWORLD_REGISTRY": registry.host}
        for key, info in images.items():
            name, tag = key.split(":")
            env_name = f"LOCALWORLD_STANDIN_{name.upper().replace('-', '_')}_{tag.upper().replace('.', '_')}"
            env[env_name] = info["pinned"]
        print(json.dumps({"host": registry.host, "user": registry.username, "images": images, "env": env}), flush=True)
        while True:
            signal.pause()
    except KeyboardInterrupt:
        return 0
    except (RegistryError, ValueError) as exc:
        print(f"localworld.registry: {exc}", file=sys.stderr)
        return 1
    finally:
        registry.stop()


if __name__ == "__main__":
    sys.exit(main())
