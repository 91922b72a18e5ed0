# Copyright: burst.golden_ami contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A small Docker Engine API client over the unix socket, and image pulls by digest.

Private to this collection. Standard library only (Python 3.9+), so it runs
on a builder that has no Docker SDK. Registry credentials travel in the
X-Registry-Auth header of each request: nothing is written to disk.
"""

from __future__ import annotations

import base64
import http.client
import json
import re
import socket
import time
from urllib.parse import quote, urlencode

API_VERSION = "v1.41"
DEFAULT_SOCKET = "/var/run/docker.sock"
# Registry answers that no retry will change.
_PERMANENT = re.compile(
    r"manifest unknown|not found|does not exist|unauthorized|authentication required|denied|"
    r"invalid reference|no basic auth credentials|incorrect username or password",
    re.IGNORECASE,
)


# An image tag, as the distribution spec allows it.
TAG_PATTERN = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"


class EngineError(Exception):
    """A request to the engine failed; ``permanent`` says a retry would not help."""

    def __init__(self, message, status=None, permanent=False):
        super().__init__(message)
        self.status = status
        self.permanent = permanent


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, socket_path, timeout):
        super().__init__("localhost", timeout=timeout)
        self.socket_path = socket_path

    def connect(self):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self.socket_path)
        self.sock = sock


def parse_reference(reference, default_tag="latest"):
    """Split an image reference into (repository, tag, digest); tag and digest may be None.

    A reference with neither tag nor digest gets ``default_tag``.

    >>> parse_reference("127.0.0.1:5000/standin/vllm:v1")
    ('127.0.0.1:5000/standin/vllm', 'v1', None)
    """
    if not reference or any(c.isspace() for c in reference):
        raise ValueError(f"invalid image reference {reference!r}")
    name, _at, digest = reference.partition("@")
    if digest and not re.fullmatch(r"sha256:[0-9a-f]{64}", digest):
        raise ValueError(f"invalid digest in image reference {reference!r}")
    tag = None
    slash = name.rfind("/")
    colon = name.rfind(":")
    if colon > slash:
        name, tag = name[:colon], name[colon + 1 :]
    if not name or (tag is not None and not re.fullmatch(TAG_PATTERN, tag)):
        raise ValueError(f"invalid image reference {reference!r}")
    if tag is None and not digest:
        tag = default_tag
    return name, tag, digest or None


def registry_host(repository):
    """The registry a repository lives in (Docker Hub for bare names)."""
    first, sep, _rest = repository.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        return first
    return "docker.io"


def encode_auth(username, password, server):
    """The X-Registry-Auth header value for these credentials."""
    payload = json.dumps({"username": username, "password": password, "serveraddress": server})
    return base64.urlsafe_b64encode(payload.encode()).decode()


class Engine:
    """Requests to one Docker engine."""

    def __init__(self, socket_path=DEFAULT_SOCKET, timeout=600):
        self.socket_path = socket_path
        self.timeout = timeout

    def request(self, method, path, query=None, headers=None):
        """Return (status, body bytes) of one request; connection problems raise EngineError."""
        url = f"/{API_VERSION}{path}"
        if query:
            url += "?" + urlencode(query)
        connection = _UnixConnection(self.socket_path, self.timeout)
        try:
            connection.request(method, url, headers=headers or {})
            response = connection.getresponse()
            return response.status, response.read()
        except OSError as exc:
            raise EngineError(f"cannot reach the Docker engine at {self.socket_path}: {exc}") from exc
        finally:
            connection.close()

    @staticmethod
    def _message(body):
        try:
            return json.loads(body).get("message", body.decode(errors="replace"))
        except ValueError:
            return body.decode(errors="replace").strip()

    def info(self):
        """The engine's ``/info`` (``DockerRootDir`` among others)."""
        status, body = self.request("GET", "/info")
        if status != 200:
            raise EngineError(f"reading the engine's information failed: {self._message(body)}", status)
        return json.loads(body)

    def inspect_image(self, name):
        """The engine's record of ``name``, or None when it has no such image."""
        status, body = self.request("GET", f"/images/{quote(name, safe='/:@')}/json")
        if status == 404:
            return None
        if status != 200:
            raise EngineError(f"inspecting {name} failed: {self._message(body)}", status)
        return json.loads(body)

    def resolve(self, reference, auth=None):
        """Ask the registry, through the engine, for ``reference``'s descriptor (digest, size, mediaType)."""
        headers = {"X-Registry-Auth": auth} if auth else {}
        status, body = self.request("GET", f"/distribution/{quote(reference, safe='/:@')}/json", headers=headers)
        if status != 200:
            message = self._message(body)
            permanent = status in (401, 403, 404) or bool(_PERMANENT.search(message))
            raise EngineError(message, status, permanent)
        return json.loads(body)["Descriptor"]

    def pull(self, repository, digest, auth=None, on_event=None):
        """Pull ``repository@digest``; errors reported inside the progress stream raise too.

        The engine's progress events (one JSON object a line) are read as they come and each is given to
        ``on_event`` when set.
        """
        headers = {"X-Registry-Auth": auth} if auth else {}
        url = f"/{API_VERSION}/images/create?" + urlencode({"fromImage": repository, "tag": digest})
        connection = _UnixConnection(self.socket_path, self.timeout)
        try:
            connection.request("POST", url, headers=headers)
            response = connection.getresponse()
            if response.status != 200:
                message = self._message(response.read())
                raise EngineError(
                    message, response.status, response.status in (401, 403, 404) or bool(_PERMANENT.search(message))
                )
            for raw in response:
                try:
                    event = json.loads(raw)
                except ValueError:
                    continue
                if not isinstance(event, dict):
                    continue
                if event.get("error"):
                    raise EngineError(event["error"], response.status, bool(_PERMANENT.search(event["error"])))
                if on_event is not None:
                    on_event(event)
        except (OSError, http.client.HTTPException) as exc:
            raise EngineError(
                f"pulling {repository}@{digest} through the engine at {self.socket_path} failed: {exc}"
            ) from exc
        finally:
            connection.close()

    def tag(self, image, repository, tag):
        status, body = self.request("POST", f"/images/{quote(image, safe='/:@')}/tag", {"repo": repository, "tag": tag})
        if status not in (200, 201):
            raise EngineError(f"tagging {image} as {repository}:{tag} failed: {self._message(body)}", status)


class PullProgress:
    """The state of one pull from the engine's progress events: layers, and bytes downloaded of the known total.

    The engine reports, per layer id: ``Pulling fs layer``, ``Waiting``, ``Downloading`` (``progressDetail``
    current and total), ``Verifying Checksum``, ``Download complete``, ``Extracting`` (current and total),
    ``Pull complete``, or ``Already exists``.
    """

    DONE = ("Pull complete", "Already exists")

    def __init__(self):
        self.layers = {}  # id -> {"status", "downloaded", "size", "extracted"}

    def event(self, event):
        layer_id, status = event.get("id"), event.get("status", "")
        if not layer_id or layer_id.startswith("sha256:") or status.startswith(("Pulling from", "Digest:", "Status:")):
            return
        layer = self.layers.setdefault(layer_id, {"status": "", "downloaded": 0, "size": 0, "extracted": 0})
        layer["status"] = status
        detail = event.get("progressDetail") or {}
        if status == "Downloading":
            layer["downloaded"] = int(detail.get("current") or 0)
            layer["size"] = int(detail.get("total") or layer["size"])
        elif status in ("Download complete", "Verifying Checksum"):
            layer["downloaded"] = layer["size"]
        elif status == "Extracting":
            layer["downloaded"] = layer["size"] = max(layer["size"], int(detail.get("total") or 0))
            layer["extracted"] = int(detail.get("current") or 0)
        elif status in self.DONE:
            layer["downloaded"] = layer["extracted"] = layer["size"]

    @property
    def downloaded(self):
        return sum(layer["downloaded"] for layer in self.layers.values())

    @property
    def size(self):
        """Bytes of the layers whose size the engine told so far (it tells each when its download starts)."""
        return sum(layer["size"] for layer in self.layers.values())

    def counts(self):
        """(layers done, layers extracting, layers known)."""
        done = sum(1 for layer in self.layers.values() if layer["status"] in self.DONE)
        extracting = sum(1 for layer in self.layers.values() if layer["status"] == "Extracting")
        return done, extracting, len(self.layers)


def with_retries(call, retries, delay, sleep=time.sleep):
    """Run ``call``; retry EngineErrors that are not permanent, doubling ``delay`` each time."""
    attempt = 0
    while True:
        try:
            return call()
        except EngineError as exc:
            if exc.permanent or attempt >= retries:
                raise
            sleep(delay * (2**attempt))
            attempt += 1
