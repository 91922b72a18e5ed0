# -*- coding: utf-8 -*-

# Copyright: Contributors to the burst.golden_ami collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""OCI images that hold a verified model, built without a container engine.

Private to this collection. ``model_layers`` turns a model directory and
its record (written by model_cache) into deterministic, uncompressed tar
layers: the same files give the same bytes and digests on every run and
machine. ``Registry`` speaks the registry HTTP API v2 (Basic and Bearer
authentication, redirects, blob HEAD, cross-repository mount, monolithic
upload, manifests) through Ansible's URL helpers, so proxies and private
CAs work as in every other module.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import os
import re
import ssl
import tarfile
import time
import urllib.error
from urllib.parse import urlencode, urljoin, urlsplit

from ansible.module_utils.urls import ConnectionError as UrlConnectionError
from ansible.module_utils.urls import Request, SSLValidationError

from ansible_collections.burst.golden_ami.plugins.module_utils._docker_engine import parse_reference, registry_host

BLOCK = 512
READ_SIZE = 1024 * 1024
FILE_MODE = 0o444
DIR_MODE = 0o555
# A fixed time: the same model gives the same image digest whenever it is built.
EPOCH = "1970-01-01T00:00:00Z"

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
MANIFEST_ACCEPT = ", ".join((OCI_MANIFEST, DOCKER_MANIFEST, OCI_INDEX, DOCKER_LIST))
RETRY_STATUS = (429, 500, 502, 503, 504)
REDIRECT_STATUS = (301, 302, 303, 307, 308)
MAX_REDIRECTS = 5
USER_AGENT = "burst.golden_ami-oci"
# Registries whose API is served on another host than the one references name.
API_ENDPOINTS = {"docker.io": "registry-1.docker.io"}
# Token services on another host that a registry's credentials may go to (host names).
TOKEN_HOSTS = {"registry-1.docker.io": "auth.docker.io"}


class OciError(Exception):
    """A model image could not be built or pushed; the message says why."""


# ---------------------------------------------------------------------------
# Layers


class Layer:
    """One uncompressed tar layer: members (archive name, source path or None for a directory, size, sha256)."""

    def __init__(self, members):
        self.members = members
        self.digest = None
        self.size = None

    @property
    def content_bytes(self):
        """Bytes of the files it holds (what reading it costs), known before it is read."""
        return sum(size for _name, path, size, _sha in self.members if path is not None)

    @property
    def files(self):
        return [name for name, path, _size, _sha in self.members if path is not None]

    def chunks(self, verify=True, on_bytes=None):
        """The tar stream; each file's sha256 is checked against the record while it is read.

        ``on_bytes``, when given, is called with the size of each chunk of file content read.
        """
        for name, path, size, expected in self.members:
            info = tarfile.TarInfo(name)
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mtime = 0
            if path is None:
                info.type = tarfile.DIRTYPE
                info.mode = DIR_MODE
                yield info.tobuf(format=tarfile.PAX_FORMAT, encoding="utf-8", errors="strict")
                continue
            info.mode = FILE_MODE
            info.size = size
            yield info.tobuf(format=tarfile.PAX_FORMAT, encoding="utf-8", errors="strict")
            digest = hashlib.sha256()
            read = 0
            with open(path, "rb") as handle:
                while True:
                    chunk = handle.read(READ_SIZE)
                    if not chunk:
                        break
                    read += len(chunk)
                    if read > size:
                        raise OciError(f"{path} grew past its recorded size of {size} bytes")
                    digest.update(chunk)
                    yield chunk
                    if on_bytes is not None:
                        on_bytes(len(chunk))
            if read != size:
                raise OciError(f"{path} has {read} bytes, its record says {size}")
            if verify and digest.hexdigest() != expected:
                raise OciError(
                    f"{path} does not match its record: sha256 {digest.hexdigest()}, recorded {expected}. "
                    "Nothing was pushed; run model_cache again to repair the model."
                )
            if size % BLOCK:
                yield b"\0" * (BLOCK - size % BLOCK)
        yield b"\0" * (2 * BLOCK)

    def measure(self, on_bytes=None):
        """Read the layer once: its digest and size (and every file checked against the record).

        ``on_bytes``, when given, is called with the size of each chunk of file content read.
        """
        digest = hashlib.sha256()
        size = 0
        for chunk in self.chunks(on_bytes=on_bytes):
            digest.update(chunk)
            size += len(chunk)
        self.digest, self.size = "sha256:" + digest.hexdigest(), size
        return self


def _directories(paths, prefix):
    """Every directory the archive names need, parents first."""
    seen = {prefix}
    ordered = [prefix]
    for path in paths:
        parts = path.split("/")[:-1]
        for index in range(1, len(parts) + 1):
            directory = prefix + "/" + "/".join(parts[:index])
            if directory not in seen:
                seen.add(directory)
                ordered.append(directory)
    return ordered


def model_layers(model_dir, record, model_path="/models", split_bytes=512 * 1024 * 1024):
    """Layers holding exactly the record's files under ``model_path``.

    Files of ``split_bytes`` or more get a layer each (pulls run in parallel, and a shard that did
    not change between revisions is not pushed or pulled again); the rest share the first layer,
    with the directories.
    """
    prefix = model_path.strip("/")
    if not prefix or ".." in prefix.split("/"):
        raise OciError(f"model_path {model_path!r} must be an absolute directory such as /models")
    files = sorted(record.get("files") or [], key=lambda entry: entry["path"])
    if not files:
        raise OciError(f"the record of {model_dir} lists no files")
    for entry in files:
        path = entry["path"]
        if path.startswith("/") or ".." in path.split("/") or not entry.get("sha256"):
            raise OciError(f"the record of {model_dir} has an unusable entry: {path!r}")
    small = [e for e in files if e["size"] < split_bytes]
    large = [e for e in files if e["size"] >= split_bytes]

    def member(entry):
        return (f"{prefix}/{entry['path']}", os.path.join(model_dir, entry["path"]), entry["size"], entry["sha256"])

    first = [(d, None, 0, None) for d in _directories([e["path"] for e in files], prefix)]
    first += [member(e) for e in small]
    return [Layer(first)] + [Layer([member(e)]) for e in large]


# ---------------------------------------------------------------------------
# Registry


def split_reference(reference):
    """``host[:port]/repository[:tag|@digest]`` into (host, repository, tag, digest); tag and digest may be None."""
    try:
        name, tag, digest = parse_reference(reference, default_tag=None)
    except ValueError:
        name = None
    host = registry_host(name) if name else "docker.io"
    repository = name[len(host) + 1 :] if name and name.startswith(host + "/") else ""
    if not re.fullmatch(r"[a-z0-9._/-]+", repository):
        raise OciError(f"{reference!r} is not a registry/repository[:tag][@sha256:...] reference")
    return host, repository, tag, digest


def _loopback(host):
    name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    return name in ("localhost", "[::1]") or name.startswith("127.")


def _origin(url):
    """(scheme, host name, port) of ``url``: two URLs of one origin talk to the same server."""
    parts = urlsplit(url)
    port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    return parts.scheme, (parts.hostname or "").lower(), port


def _without(headers, *names):
    drop = {name.lower() for name in names}
    return {key: value for key, value in headers.items() if key.lower() not in drop}


class Registry:
    """A registry's HTTP API v2, with Basic or Bearer (token service) authentication.

    Requests go through Ansible's URL helpers (``ansible.module_utils.urls.Request``): proxies from
    ``https_proxy``/``http_proxy``/``no_proxy``, ``ca_path`` for a private CA, no ``.netrc``. The
    credentials rules:

    - Basic credentials go to the registry's own origin (scheme, host, port) only.
    - A Bearer challenge's token service (``realm``) gets the credentials when it is on the registry's
      host name (another port included, as Harbor, GHCR, Quay and GitLab answer), or for Docker Hub's
      ``auth.docker.io``; a realm on any other host is asked anonymously (public pulls still work), and
      a refusal says the credentials were withheld. A plain-HTTP realm is refused for an HTTPS registry.
    - Redirects (blob GETs answered with a 307 to storage, as ECR, Docker Hub and GHCR do) are
      followed; the Authorization header is dropped as soon as a redirect leaves the origin of the
      request, and never sent again along that chain.
    - A Bearer token refused with a 401 (it expired during a long push) is fetched again once per
      request; a second refusal fails, naming the registry.
    """

    def __init__(
        self, host, username=None, password=None, plain_http=None, timeout=120, retries=4, ca_path=None,
        validate_certs=True,
    ):  # fmt: skip
        self.host = host
        self.username = username
        self.password = password
        self.scheme = "http" if (_loopback(host) if plain_http is None else plain_http) else "https"
        # Docker Hub's API is not served on docker.io itself.
        self.endpoint = API_ENDPOINTS.get(host, host)
        self.base_url = f"{self.scheme}://{self.endpoint}"
        self.timeout = timeout
        self.retries = retries
        self.uploaded_bytes = 0
        self._authorization = {}  # scope -> header value
        self._basic = None
        if username is not None:
            self._basic = "Basic " + base64.b64encode(f"{username}:{password or ''}".encode()).decode()
        self._withheld = None  # the foreign token service the credentials were not sent to
        self._http = Request(
            use_proxy=True, timeout=timeout, validate_certs=validate_certs, ca_path=ca_path,
            follow_redirects="none", use_netrc=False, http_agent=USER_AGENT,
        )  # fmt: skip

    def _open(self, method, url, headers, body):
        """One HTTP exchange, redirects not followed: (status, headers, body bytes)."""
        try:
            response = self._http.open(method, url, data=body, headers=headers)
        except urllib.error.HTTPError as exc:
            data = b"" if method == "HEAD" or exc.fp is None else exc.read()
            return exc.code, exc.headers, data
        except urllib.error.URLError as exc:
            if isinstance(exc.reason, ssl.SSLError):
                detail = f"TLS with {urlsplit(url).netloc} failed: {exc.reason} (give ca_path for a private CA)"
                raise OciError(detail) from exc
            raise
        except SSLValidationError as exc:
            raise OciError(f"TLS with {urlsplit(url).netloc} failed: {exc} (give ca_path for a private CA)") from exc
        with response:
            data = b"" if method == "HEAD" else response.read()
            return response.status, response.headers, data

    def _exchange(self, method, url, headers, body):
        """One request, following redirects; the Authorization header never leaves the origin it was sent to."""
        origin = _origin(url)
        for _hop in range(MAX_REDIRECTS + 1):
            payload = body() if callable(body) else body
            status, answer, data = self._open(method, url, headers, payload)
            location = answer.get("Location") if status in REDIRECT_STATUS else None
            if not location:
                return status, answer, data
            target = urljoin(url, location)
            if urlsplit(target).scheme not in ("http", "https"):
                raise OciError(f"{method} {url} redirected to {target}, which is not HTTP(S)")
            if _origin(target) != origin:
                headers = _without(headers, "Authorization")
            if status == 303 or (status in (301, 302) and method not in ("GET", "HEAD")):
                method, body = "GET", None
                headers = _without(headers, "Content-Length", "Content-Type")
            url = target
        raise OciError(f"{method} {url}: more than {MAX_REDIRECTS} redirects")

    def _credentials_for(self, realm):
        """Whether the Basic credentials may go to the token service at ``realm``."""
        realm_host = (urlsplit(realm).hostname or "").lower()
        registry_host = (urlsplit(self.base_url).hostname or "").lower()
        return realm_host == registry_host or TOKEN_HOSTS.get(registry_host) == realm_host

    def _token(self, challenge, scope):
        params = dict(re.findall(r'(\w+)="([^"]*)"', challenge))
        realm = params.get("realm", "")
        scheme = urlsplit(realm).scheme
        if scheme not in ("http", "https"):
            raise OciError(f"{self.host}: a Bearer challenge without a usable realm: {challenge}")
        if scheme == "http" and self.scheme == "https":
            raise OciError(f"{self.host}: refusing the plain-HTTP token service {realm} of an HTTPS registry")
        query = {"service": params.get("service", ""), "scope": params.get("scope", scope)}
        headers = {}
        if self._basic and self._credentials_for(realm):
            headers["Authorization"] = self._basic
        elif self._basic:
            self._withheld = urlsplit(realm).netloc
        separator = "&" if "?" in realm else "?"
        status, _headers, body = self._exchange("GET", realm + separator + urlencode(query), headers, None)
        if status != 200:
            withheld = " (the credentials were withheld: it is not the registry's host)" if self._withheld else ""
            raise OciError(f"{self.host}: the token service refused the credentials (HTTP {status}){withheld}")
        try:
            document = json.loads(body)
        except ValueError as exc:
            raise OciError(f"{self.host}: the token service at {urlsplit(realm).netloc} answered no JSON") from exc
        token = document.get("token") or document.get("access_token")
        if not token:
            raise OciError(f"{self.host}: the token service at {urlsplit(realm).netloc} gave no token")
        return "Bearer " + token

    def _authorize(self, scope, challenge, method, path):
        if challenge.lower().startswith("bearer"):
            self._authorization[scope] = self._token(challenge, scope)
        elif self._basic:
            self._authorization[scope] = self._basic
        else:
            raise OciError(f"{self.host} asks for credentials for {method} {path}: give registry_auth")

    def _refused(self, method, path, status):
        message = f"{self.host} refused {method} {path} (HTTP {status}): check registry_auth"
        if self._withheld:
            message += (
                f"; the credentials were not sent to the token service at {self._withheld}, "
                "which is not the registry's host"
            )
        return OciError(message)

    def request(self, method, path, scope, headers=None, body=None, ok=(200,), url=None):
        """One request, authenticated on demand and retried on 429/5xx and connection errors.

        ``url`` (an upload location) defaults to the registry's ``path``; the Authorization header goes
        with it only when it is on the registry's origin.
        """
        url = url or f"{self.base_url}{path}"
        own = _origin(url) == _origin(self.base_url)
        attempt = 0
        refreshed = False
        while True:
            sent = dict(headers or {})
            authorization = self._authorization.get(scope) if own else None
            if authorization:
                sent["Authorization"] = authorization
            try:
                status, answer_headers, data = self._exchange(method, url, sent, body)
            except (OSError, http.client.HTTPException, UrlConnectionError) as exc:
                status, answer_headers, data = None, {}, str(exc).encode()
            if status == 401 and own:
                challenge = answer_headers.get("WWW-Authenticate", "")
                if authorization is None:
                    self._authorize(scope, challenge, method, path or url)
                    continue
                if authorization.startswith("Bearer ") and not refreshed:
                    # The token expired (a long push outlives it): fetch another one, once.
                    refreshed = True
                    self._authorization.pop(scope, None)
                    self._authorize(scope, challenge, method, path or url)
                    continue
            if status in ok:
                return status, answer_headers, data
            if (status is None or status in RETRY_STATUS) and attempt < self.retries:
                attempt += 1
                time.sleep(min(2**attempt * 0.25, 10))
                continue
            if status in (401, 403):
                raise self._refused(method, path or url, status)
            detail = data[:300].decode(errors="replace")
            raise OciError(f"{method} {self.host}{path} failed: {status or 'no answer'} {detail}")

    def manifest(self, repository, reference):
        """(digest, media type, bytes) of a manifest, or None when there is none."""
        status, headers, data = self.request(
            "GET", f"/v2/{repository}/manifests/{reference}", f"repository:{repository}:pull",
            headers={"Accept": MANIFEST_ACCEPT}, ok=(200, 404),
        )  # fmt: skip
        if status == 404:
            return None
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        return digest, headers.get("Content-Type", "").split(";")[0], data

    def blob(self, repository, digest):
        _status, _headers, data = self.request(
            "GET", f"/v2/{repository}/blobs/{digest}", f"repository:{repository}:pull"
        )
        if "sha256:" + hashlib.sha256(data).hexdigest() != digest:
            raise OciError(f"{self.host}/{repository} served blob {digest} with other content")
        return data

    def has_blob(self, repository, digest):
        status, _headers, _data = self.request(
            "HEAD", f"/v2/{repository}/blobs/{digest}", f"repository:{repository}:pull", ok=(200, 404)
        )
        return status == 200

    def mount(self, repository, digest, source):
        """Cross-repository mount: True when the registry mounted it."""
        scope = f"repository:{repository}:pull,push repository:{source}:pull"
        query = urlencode({"mount": digest, "from": source})
        status, headers, _data = self.request(
            "POST", f"/v2/{repository}/blobs/uploads/?{query}", scope, headers={"Content-Length": "0"}, ok=(201, 202)
        )
        if status == 202 and headers.get("Location"):
            # Not mounted: an upload session was opened instead; close it.
            location = urljoin(self.base_url + "/", headers["Location"])
            self.request("DELETE", "", scope, url=location, ok=(204, 404, 405))
        return status == 201

    def upload(self, repository, digest, size, body):
        """Monolithic upload of ``size`` bytes from ``body`` (bytes or a callable giving an iterable)."""
        scope = f"repository:{repository}:pull,push"
        _status, headers, _data = self.request(
            "POST", f"/v2/{repository}/blobs/uploads/", scope, headers={"Content-Length": "0"}, ok=(202,)
        )
        location = urljoin(self.base_url + "/", headers["Location"])
        separator = "&" if "?" in location else "?"
        self.request(
            "PUT", "", scope, url=f"{location}{separator}{urlencode({'digest': digest})}",
            headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)},
            body=body, ok=(201,),
        )  # fmt: skip
        self.uploaded_bytes += size

    def put_manifest(self, repository, tag, media_type, data):
        self.request(
            "PUT", f"/v2/{repository}/manifests/{tag}", f"repository:{repository}:pull,push",
            headers={"Content-Type": media_type, "Content-Length": str(len(data))}, body=data, ok=(201,),
        )  # fmt: skip
        self.uploaded_bytes += len(data)


# ---------------------------------------------------------------------------
# Images


def base_image(registry, repository, digest, platform="linux/amd64"):
    """The base's manifest (a dict, its media type) and config, following an index to ``platform``."""
    found = registry.manifest(repository, digest)
    if found is None:
        raise OciError(f"the base image {registry.host}/{repository}@{digest} does not exist")
    got, media_type, data = found
    if got != digest:
        raise OciError(f"the base image {repository}@{digest} was served with digest {got}")
    document = json.loads(data)
    media_type = document.get("mediaType") or media_type
    if media_type in (OCI_INDEX, DOCKER_LIST):
        os_name, _slash, arch = platform.partition("/")
        for entry in document.get("manifests", []):
            if entry.get("platform", {}).get("os") == os_name and entry.get("platform", {}).get("architecture") == arch:
                return base_image(registry, repository, entry["digest"], platform)
        raise OciError(f"the base image {repository}@{digest} has no {platform} image")
    if media_type not in (OCI_MANIFEST, DOCKER_MANIFEST):
        raise OciError(f"the base image {repository}@{digest} has an unsupported manifest type {media_type}")
    config = json.loads(registry.blob(repository, document["config"]["digest"]))
    return document, media_type, config


def image_documents(base_manifest, base_media_type, base_config, layers, labels, history_note):
    """(config bytes, manifest bytes, manifest media type) of the model image, byte for byte reproducible."""
    docker = base_media_type == DOCKER_MANIFEST
    layer_type = DOCKER_LAYER if docker else OCI_LAYER
    config = json.loads(json.dumps(base_config))
    config["created"] = EPOCH
    config.pop("container", None)
    config.pop("container_config", None)
    inner = config.setdefault("config", {})
    inner["Labels"] = {**(inner.get("Labels") or {}), **labels}
    rootfs = config.setdefault("rootfs", {"type": "layers", "diff_ids": []})
    rootfs["diff_ids"] = list(rootfs.get("diff_ids") or []) + [layer.digest for layer in layers]
    history = list(config.get("history") or [])
    for layer in layers:
        history.append({"created": EPOCH, "created_by": f"{history_note}: {', '.join(layer.files)}"[:500]})
    config["history"] = history
    config_bytes = json.dumps(config, sort_keys=True, separators=(",", ":")).encode()
    manifest = {
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST if docker else OCI_MANIFEST,
        "config": {
            "mediaType": DOCKER_CONFIG if docker else OCI_CONFIG,
            "digest": "sha256:" + hashlib.sha256(config_bytes).hexdigest(),
            "size": len(config_bytes),
        },
        "layers": list(base_manifest["layers"])
        + [{"mediaType": layer_type, "digest": layer.digest, "size": layer.size} for layer in layers],
    }
    if not docker:
        manifest["annotations"] = {k: v for k, v in labels.items() if k.startswith("org.opencontainers.image.")}
    manifest_bytes = json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()
    return config_bytes, manifest_bytes, manifest["mediaType"]
