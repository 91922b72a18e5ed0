"""The local registry and the stand-in images, through the real clients (skopeo, docker)."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from localworld.moto import free_port
from localworld.registry import STANDIN_VARIANT_TAG, Registry, RegistryError, RegistryFront, bcrypt_hash

TESTS_DIR = Path(__file__).resolve().parent.parent
# Where docker and skopeo keep credentials by default: no test may write there.
DEFAULT_CREDENTIAL_FILES = [
    Path.home() / ".docker" / "config.json",
    Path(f"/run/containers/{os.getuid()}/auth.json"),
]
if os.environ.get("XDG_RUNTIME_DIR"):
    DEFAULT_CREDENTIAL_FILES.append(Path(os.environ["XDG_RUNTIME_DIR"]) / "containers" / "auth.json")


def _fingerprint(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else None


@pytest.fixture(scope="module", autouse=True)
def default_credentials_untouched() -> Iterator[None]:
    """Every credential the tests use stays in temporary directories."""
    before = {path: _fingerprint(path) for path in DEFAULT_CREDENTIAL_FILES}
    yield
    after = {path: _fingerprint(path) for path in DEFAULT_CREDENTIAL_FILES}
    assert after == before, "a test created or changed a default credential file"


@pytest.fixture
def docker_config(tmp_path: Path) -> dict[str, str]:
    """Environment for the docker CLI with its own, empty, temporary DOCKER_CONFIG."""
    config = tmp_path / "docker-config"
    config.mkdir()
    return {**os.environ, "DOCKER_CONFIG": str(config)}


@pytest.fixture
def containers(docker_config: dict[str, str]):
    """Unique container names; every container and pulled reference is removed afterwards."""
    names: list[str] = []
    pulled: list[str] = []

    class Containers:
        def name(self, prefix: str) -> str:
            names.append(f"localworld-test-{prefix}-{secrets.token_hex(4)}")
            return names[-1]

        def pulled(self, reference: str) -> str:
            pulled.append(reference)
            return reference

    yield Containers()
    for name in names:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, env=docker_config, check=False)
    for reference in pulled:
        # Untags only: the local build tags keep the layers. A reference still
        # used by a container of another test stays.
        subprocess.run(["docker", "rmi", reference], capture_output=True, env=docker_config, check=False)


def run(args: list[str], *, env: dict | None = None, stdin: str | None = None, timeout: float = 120):
    return subprocess.run(args, input=stdin, capture_output=True, text=True, env=env, timeout=timeout, check=False)


def http_get(url: str) -> tuple[int, dict, bytes] | None:
    """GET ``url``: (status, headers, body), or None when the connection is refused."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 (loopback)
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, ConnectionRefusedError):
            return None
        raise


def skopeo_inspect(reference: str, *auth_args: str) -> subprocess.CompletedProcess:
    return run(["skopeo", "inspect", "--tls-verify=false", *(auth_args or ("--no-creds",)), f"docker://{reference}"])


def skopeo_login(host: str, user: str, password: str, authfile: Path) -> subprocess.CompletedProcess:
    login = ["skopeo", "login", "--tls-verify=false", "--authfile", str(authfile), "-u", user, "--password-stdin"]
    return run([*login, host], stdin=password)


def docker_run(image: str, *args: str, name: str, env: dict, delay: str | None = None, volume: str | None = None):
    """``docker run`` on the host network: detached with a start-up delay, else in the foreground."""
    command = ["docker", "run", "--name", name, "--network", "host"]
    command += ["-d", "-e", f"STANDIN_STARTUP_DELAY={delay}"] if delay is not None else ["--rm"]
    command += ["-v", volume] if volume else []
    return run([*command, image, *args], env=env)


def model_dir(parent: Path, name: str, *, mean_pooling: bool = False) -> Path:
    path = parent / name
    path.mkdir()
    (path / "config.json").write_text('{"model_type": "bert"}\n')
    if mean_pooling:
        (path / "1_Pooling").mkdir()
        (path / "1_Pooling" / "config.json").write_text(
            '{"pooling_mode_cls_token": false, "pooling_mode_mean_tokens": true}\n'
        )
    return path


def wait_for(url: str, accept, timeout: float = 20.0):
    """Poll ``url`` until ``accept(answer)`` is true; return (answer, every answer seen before it)."""
    seen = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        answer = http_get(url)
        if accept(answer):
            return answer, seen
        seen.append(answer)
        time.sleep(0.1)
    pytest.fail(f"{url} gave no accepted answer within {timeout} s; last: {seen[-1:]}")


# Registries without Docker.


def test_registry_refuses_bad_credentials():
    with pytest.raises(ValueError, match="user"):
        Registry(("user:name", "secret"))
    with pytest.raises(ValueError, match="password"):
        Registry(("user", ""))
    with pytest.raises(ValueError, match="pair"):
        Registry("user:secret")


def test_registry_stop_removes_process_and_storage():
    registry = Registry()
    with registry:
        assert registry.host.startswith("127.0.0.1:")
        status, _headers, _body = registry.request("GET", "/v2/")
        assert status == 200
        storage, pid = registry.storage, registry.pid
        assert storage.parent.is_dir()
        url = f"{registry.url}/v2/"
    assert not registry.running
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert not storage.parent.exists()
    assert http_get(url) is None
    with pytest.raises(RegistryError, match="not started"):
        registry.host  # noqa: B018 (the property raises)


def test_registry_without_binary_names_the_package(tmp_path):
    with pytest.raises(RegistryError, match="docker-registry package"):
        Registry(binary=tmp_path / "docker-registry").start()


def test_htpasswd_entry_is_bcrypt():
    entry = bcrypt_hash("correct horse")
    assert entry.startswith("$2b$05$")
    assert entry != bcrypt_hash("correct horse"), "each hash has its own salt"


# The registries with the stand-ins pushed.


@pytest.mark.docker
def test_anonymous_registry_serves_v2_on_loopback(registry):
    assert registry.host.startswith("127.0.0.1:")
    status, headers, _body = registry.request("GET", "/v2/")
    assert status == 200
    assert headers["Docker-Distribution-Api-Version"] == "registry/2.0"


@pytest.mark.docker
def test_skopeo_inspects_standins_by_tag_and_by_digest(standin_images):
    assert set(standin_images) == {
        "vllm-openai:v0.1",
        "text-embeddings-inference:v0.1",
        "buildkit:v0.1",
        "busybox:v0.1",
        "vllm-openai:v0.2",
    }
    for image in standin_images.values():
        by_tag = skopeo_inspect(image["reference"])
        assert by_tag.returncode == 0, by_tag.stderr
        info = json.loads(by_tag.stdout)
        assert info["Digest"] == image["digest"]
        assert info["Labels"]["org.opencontainers.image.description"].startswith("STAND-IN ")
        assert info["Labels"]["org.opencontainers.image.title"] == f"standin/{image['name']}"
        assert info["Labels"]["org.opencontainers.image.version"] == image["version"]
        by_digest = skopeo_inspect(image["pinned"])
        assert by_digest.returncode == 0, by_digest.stderr
        assert json.loads(by_digest.stdout)["Digest"] == image["digest"]
        assert image["size"] > 500_000, "busybox alone is larger than this"


@pytest.mark.docker
def test_variant_tag_points_at_other_content(standin_images):
    base, variant = standin_images["vllm-openai:v0.1"], standin_images[f"vllm-openai:{STANDIN_VARIANT_TAG}"]
    assert variant["repository"] == base["repository"]
    assert variant["digest"] != base["digest"]
    inspected = skopeo_inspect(variant["reference"])
    assert inspected.returncode == 0, inspected.stderr
    assert json.loads(inspected.stdout)["Labels"]["org.opencontainers.image.version"] == "0.2"


@pytest.mark.docker
def test_docker_pulls_by_digest(registry, standin_images, containers, docker_config):
    pinned = containers.pulled(standin_images["text-embeddings-inference:v0.1"]["pinned"])
    pulled = run(["docker", "pull", pinned], env=docker_config)
    assert pulled.returncode == 0, pulled.stderr
    inspected = run(["docker", "image", "inspect", "--format", "{{json .RepoDigests}}", pinned], env=docker_config)
    assert pinned in json.loads(inspected.stdout)


@pytest.mark.docker
def test_auth_registry_refuses_anonymous_access(auth_registry, containers, docker_config):
    status, headers, _body = auth_registry.request("GET", "/v2/", auth=False)
    assert status == 401
    assert headers["Www-Authenticate"].startswith("Basic ")
    image = auth_registry.standins["vllm-openai:v0.1"]
    inspected = skopeo_inspect(image["reference"])
    assert inspected.returncode != 0
    assert "unauthorized" in inspected.stderr.lower() or "authentication required" in inspected.stderr.lower()
    # By tag: the engine must ask the registry. Docker 20.10 keeps the manifests
    # it pulled, per registry and repository, and serves a later pull by digest
    # from that cache without asking, credentials or not; the authenticated pull
    # of test_auth_registry_accepts_right_password may run first on this worker.
    pulled = run(["docker", "pull", containers.pulled(image["reference"])], env=docker_config)
    assert pulled.returncode != 0
    assert "no basic auth credentials" in pulled.stderr or "unauthorized" in pulled.stderr.lower()


@pytest.mark.docker
def test_auth_registry_refuses_wrong_password(auth_registry, docker_config, tmp_path):
    wrong = auth_registry.password + "-wrong"
    authfile = tmp_path / "auth.json"
    skopeo = skopeo_login(auth_registry.host, auth_registry.username, wrong, authfile)
    assert skopeo.returncode != 0
    assert auth_registry.host not in (authfile.read_text() if authfile.exists() else "")
    login = run(
        ["docker", "login", "-u", auth_registry.username, "--password-stdin", auth_registry.host],
        env=docker_config,
        stdin=wrong,
    )
    assert login.returncode != 0
    assert "unauthorized" in login.stderr.lower()
    config = Path(docker_config["DOCKER_CONFIG"]) / "config.json"
    assert auth_registry.host not in (config.read_text() if config.exists() else "")


@pytest.mark.docker
def test_auth_registry_accepts_right_password(auth_registry, containers, docker_config, tmp_path):
    image = auth_registry.standins["vllm-openai:v0.1"]
    authfile = tmp_path / "auth.json"
    skopeo = skopeo_login(auth_registry.host, auth_registry.username, auth_registry.password, authfile)
    assert skopeo.returncode == 0, skopeo.stderr
    inspected = skopeo_inspect(image["reference"], "--authfile", str(authfile))
    assert inspected.returncode == 0, inspected.stderr
    assert json.loads(inspected.stdout)["Digest"] == image["digest"]

    login = run(
        ["docker", "login", "-u", auth_registry.username, "--password-stdin", auth_registry.host],
        env=docker_config,
        stdin=auth_registry.password,
    )
    assert login.returncode == 0, login.stderr
    assert "Login Succeeded" in login.stdout
    pulled = run(["docker", "pull", containers.pulled(image["pinned"])], env=docker_config)
    assert pulled.returncode == 0, pulled.stderr
    run(["docker", "logout", auth_registry.host], env=docker_config)


# The stand-ins, run as the roles run the real images: host network, model mounted.


@pytest.mark.docker
def test_vllm_standin_refuses_connections_until_ready(standin_images, containers, docker_config, tmp_path):
    model = model_dir(tmp_path, "tiny-chat")
    port = free_port()
    name = containers.name("vllm")
    started = docker_run(
        containers.pulled(standin_images["vllm-openai:v0.1"]["pinned"]),
        *("--model", "/models/tiny-chat", "--served-model-name", "tiny-chat", "--port", str(port)),
        *("--host", "127.0.0.1", "--dtype", "half", "--quantization", "awq", "--gpu-memory-utilization", "0.9"),
        *("--max-model-len", "4096", "--max-num-seqs", "8", "--trust-remote-code"),
        name=name,
        env=docker_config,
        delay="2",
        volume=f"{model}:/models/tiny-chat:ro",
    )
    assert started.returncode == 0, started.stderr
    t0 = time.monotonic()
    assert http_get(f"http://127.0.0.1:{port}/health") is None, "vLLM refuses connections while it loads"

    health, before = wait_for(f"http://127.0.0.1:{port}/health", lambda answer: answer is not None)
    assert time.monotonic() - t0 >= 1.5
    assert all(answer is None for answer in before)
    assert health[0] == 200
    assert health[2] == b""

    status, headers, body = http_get(f"http://127.0.0.1:{port}/v1/models")
    assert status == 200
    assert headers["Content-Type"] == "application/json"
    models = json.loads(body)
    assert models["object"] == "list"
    assert [entry["id"] for entry in models["data"]] == ["tiny-chat"]
    assert models["data"][0]["object"] == "model"
    assert models["data"][0]["root"] == "/models/tiny-chat"
    assert models["data"][0]["max_model_len"] == 4096
    assert http_get(f"http://127.0.0.1:{port}/v1/nothing")[0] == 404

    logs = run(["docker", "logs", name], env=docker_config)
    lines = logs.stdout.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("STAND-IN vllm-openai ")
    assert f"listen=127.0.0.1:{port}" in lines[0]


def listening_addresses(port: int) -> set[str]:
    """The IPv4 addresses (hex, as /proc/net/tcp writes them) with a listener on ``port``."""
    addresses = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        address, _sep, port_hex = local.partition(":")
        if state == "0A" and int(port_hex, 16) == port:
            addresses.add(address)
    return addresses


@pytest.mark.docker
def test_vllm_standin_listens_on_loopback_only(standin_images, containers, docker_config, tmp_path):
    model = model_dir(tmp_path, "tiny-chat")
    port = free_port()
    name = containers.name("vllm-any")
    started = docker_run(
        containers.pulled(standin_images["vllm-openai:v0.1"]["pinned"]),
        *("/models/tiny-chat", "--host", "0.0.0.0", "--port", str(port)),  # noqa: S104 (asked for, not bound)
        name=name,
        env=docker_config,
        delay="0",
        volume=f"{model}:/models/tiny-chat:ro",
    )
    assert started.returncode == 0, started.stderr
    wait_for(f"http://127.0.0.1:{port}/health", lambda answer: answer is not None, timeout=10)
    assert listening_addresses(port) == {"0100007F"}, "127.0.0.1 only"
    models = json.loads(http_get(f"http://127.0.0.1:{port}/v1/models")[2])
    assert [entry["id"] for entry in models["data"]] == ["/models/tiny-chat"], "the model path is the default name"
    logs = run(["docker", "logs", name], env=docker_config).stdout
    assert "asked for 0.0.0.0; stand-ins listen on loopback only" in logs


@pytest.mark.docker
def test_vllm_standin_without_model_mount_exits_non_zero(standin_images, containers, docker_config):
    result = docker_run(
        containers.pulled(standin_images["vllm-openai:v0.1"]["pinned"]),
        *("--model", "/models/tiny-chat", "--served-model-name", "tiny-chat", "--port", str(free_port())),
        name=containers.name("vllm-nomodel"),
        env=docker_config,
    )
    assert result.returncode != 0
    assert "'/models/tiny-chat' does not exist" in result.stderr


@pytest.mark.docker
def test_tei_standin_answers_503_then_200(standin_images, containers, docker_config, tmp_path):
    model = model_dir(tmp_path, "bge-small")
    port = free_port()
    started = docker_run(
        containers.pulled(standin_images["text-embeddings-inference:v0.1"]["pinned"]),
        *("--model-id", "/data/bge-small", "--port", str(port), "--max-batch-tokens", "16384", "--auto-truncate"),
        name=containers.name("tei"),
        env=docker_config,
        delay="2",
        volume=f"{model}:/data/bge-small:ro",
    )
    assert started.returncode == 0, started.stderr

    loading, _answer = wait_for(f"http://127.0.0.1:{port}/health", lambda answer: answer is not None, timeout=10)
    assert loading[0] == 503, "TEI answers 503 while the model loads"
    _ready, before = wait_for(f"http://127.0.0.1:{port}/health", lambda answer: answer and answer[0] == 200)
    assert all(answer[0] == 503 for answer in before)

    status, headers, body = http_get(f"http://127.0.0.1:{port}/info")
    assert status == 200
    assert headers["Content-Type"] == "application/json"
    info = json.loads(body)
    assert info["model_id"] == "/data/bge-small"
    assert info["model_type"] == {"embedding": {"pooling": "cls"}}, "no 1_Pooling/config.json: TEI falls back to cls"


@pytest.mark.docker
def test_tei_standin_reads_pooling_from_the_model(standin_images, containers, docker_config, tmp_path):
    model = model_dir(tmp_path, "minilm", mean_pooling=True)
    port = free_port()
    started = docker_run(
        containers.pulled(standin_images["text-embeddings-inference:v0.1"]["pinned"]),
        *("--model-id", "/data/minilm", "--port", str(port)),
        name=containers.name("tei-mean"),
        env=docker_config,
        delay="0",
        volume=f"{model}:/data/minilm:ro",
    )
    assert started.returncode == 0, started.stderr
    wait_for(f"http://127.0.0.1:{port}/health", lambda answer: answer and answer[0] == 200, timeout=10)
    info = json.loads(http_get(f"http://127.0.0.1:{port}/info")[2])
    assert info["model_type"] == {"embedding": {"pooling": "mean"}}


# python -m localworld.registry, as `python -m localworld up` and `make demo` run it.


@pytest.mark.docker
def test_module_serves_until_sigterm_and_prints_no_password(tmp_path):
    password = secrets.token_urlsafe(12)
    env = {**os.environ, "PYTHONPATH": str(TESTS_DIR), "LOCALWORLD_REGISTRY_PASSWORD": password}
    process = subprocess.Popen(
        [sys.executable, "-m", "localworld.registry", "--auth", "demo"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        line = process.stdout.readline()
        assert line, process.stderr.read() if process.poll() is not None else "no line"
        assert password not in line
        info = json.loads(line)
        assert info["user"] == "demo"
        assert info["env"]["LOCALWORLD_REGISTRY"] == info["host"]
        assert info["env"]["LOCALWORLD_STANDIN_VLLM_OPENAI_V0_1"] == info["images"]["vllm-openai:v0.1"]["pinned"]
        assert http_get(f"http://{info['host']}/v2/")[0] == 401
        authfile = tmp_path / "auth.json"
        login = skopeo_login(info["host"], "demo", password, authfile)
        assert login.returncode == 0, login.stderr
        inspected = skopeo_inspect(info["images"]["vllm-openai:v0.1"]["reference"], "--authfile", str(authfile))
        assert inspected.returncode == 0, inspected.stderr
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
        assert http_get(f"http://{info['host']}/v2/") is None
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


@pytest.mark.docker
def test_busybox_standin_is_a_shell_and_nothing_else(standin_images):
    image = standin_images["busybox:v0.1"]
    ran = subprocess.run(
        ["docker", "run", "--rm", "--network", "none", image["pinned"], "sh", "-c", "ls -a / /bin; echo ok"],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.split()[-1] == "ok"
    assert "busybox" in ran.stdout and "standin" not in ran.stdout


@pytest.mark.docker
def test_buildkit_standin_needs_its_config(standin_images, tmp_path):
    image = standin_images["buildkit:v0.1"]
    missing = subprocess.run(
        ["docker", "run", "--rm", "--network", "none", image["pinned"], "--config", "/etc/buildkit/buildkitd.toml"],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert missing.returncode == 2
    assert "/etc/buildkit/buildkitd.toml' does not exist" in missing.stderr
    config = tmp_path / "buildkitd.toml"
    config.write_text("[worker.oci]\n  max-parallelism = 16\n  gc = false\n")
    name = f"standin-buildkit-{tmp_path.name}"[:60]
    started = subprocess.run(
        [
            *("docker", "run", "-d", "--name", name, "--network", "none"),
            *("-v", f"{config}:/etc/buildkit/buildkitd.toml:ro", image["pinned"]),
            *("--config", "/etc/buildkit/buildkitd.toml"),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    try:
        assert started.returncode == 0, started.stderr
        logs = ""
        for _attempt in range(50):
            logs = subprocess.run(["docker", "logs", name], capture_output=True, text=True, check=False).stdout
            if logs:
                break
            time.sleep(0.1)
        assert "settings: max-parallelism=16 gc=false" in logs
        state = subprocess.run(
            ["docker", "inspect", "-f", "{{.State.Running}}", name], capture_output=True, text=True, check=False
        )
        assert state.stdout.strip() == "true"
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, check=False)


# The front: hosted registries' redirects and expiring Bearer tokens, through skopeo.


@pytest.mark.docker
def test_front_redirects_blob_gets_to_storage_and_skopeo_follows(standin_images, registry, tmp_path):
    """skopeo (containers/image) pulls through the front as from ECR: a token, then blobs from the storage host."""
    user, password = "front-user", secrets.token_urlsafe(12)
    image = standin_images["busybox:v0.1"]
    with RegistryFront(registry, token_auth=(user, password), token_uses=None) as front:
        copied = run(
            ["skopeo", "copy", "--src-tls-verify=false", "--src-creds", f"{user}:{password}",
             f"docker://{front.host}/standin/busybox:v0.1", f"dir:{tmp_path / 'copy'}"],
        )  # fmt: skip
        assert copied.returncode == 0, copied.stderr
        manifest = json.loads((tmp_path / "copy" / "manifest.json").read_text())
        blobs = {manifest["config"]["digest"], *(layer["digest"] for layer in manifest["layers"])}
        fetched = {entry["path"].split("digest=")[1].split("&")[0] for entry in front.storage.log}
        assert blobs <= {urllib.parse.unquote(digest) for digest in fetched}, "every blob came from storage"
        assert all("Authorization" not in entry["headers"] for entry in front.storage.log)
        assert front.token_requests and all(given and given.startswith("Basic ") for given in front.token_requests)
        redirected = [entry for entry in front.front.log if "/blobs/sha256:" in entry["path"]]
        assert redirected and all(entry["headers"]["Authorization"].startswith("Bearer ") for entry in redirected)
    assert password not in copied.stderr + copied.stdout
    assert hashlib.sha256((tmp_path / "copy" / "manifest.json").read_bytes()).hexdigest() == image["digest"][7:]


@pytest.mark.docker
def test_front_tokens_expire_and_storage_refuses_unsigned_or_authorized_requests(registry, standin_images):
    user, password = "front-user", secrets.token_urlsafe(12)
    with RegistryFront(registry, token_auth=(user, password), token_uses=1) as front:
        basic = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        request = urllib.request.Request(f"http://{front.host}/token?scope=x", headers={"Authorization": basic})
        with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310 (loopback)
            token = json.loads(answer.read())["token"]
        path = f"http://{front.host}/v2/standin/busybox/manifests/v0.1"
        answers = []
        for _attempt in range(2):
            try:
                with urllib.request.urlopen(
                    urllib.request.Request(path, headers={"Authorization": f"Bearer {token}"}), timeout=10
                ) as answer:
                    answers.append(answer.status)
            except urllib.error.HTTPError as exc:
                answers.append(exc.code)
                assert exc.headers["WWW-Authenticate"].startswith(f'Bearer realm="http://127.0.0.1:{front.front.port}/')
        assert answers == [200, 401] and front.expired == 1
        storage = f"http://127.0.0.1:{front.storage.port}/blobs?repository=standin/busybox&digest=sha256:0&signature=x"
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(storage, timeout=10)
        assert refused.value.code == 403
