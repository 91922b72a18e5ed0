"""The healthcheck aggregator's configuration: what it accepts, and how it refuses the rest."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from localworld.localplay import load_role_file

SCRIPT = Path(__file__).resolve().parents[4] / "roles" / "burst_services" / "files" / "healthcheck.py"


hc = load_role_file("burst_services", "healthcheck.py", "burst_healthcheck_config_under_test")

VLLM = {"name": "vllm", "kind": "vllm", "url": "http://127.0.0.1:8000", "model": "Qwen/Qwen2.5-14B-Instruct-AWQ"}
TEI = {"name": "embeddings", "kind": "tei", "url": "http://127.0.0.1:8001"}


def _with(**changes):
    raw = {"backends": [dict(VLLM), dict(TEI)]}
    raw.update(changes)
    return raw


def _backend(index, **changes):
    raw = _with()
    raw["backends"][index].update(changes)
    for key, value in changes.items():
        if value is _DROP:
            del raw["backends"][index][key]
    return raw


_DROP = object()


def test_defaults_match_the_seed():
    config = hc.parse_config(_with())
    assert (config.listen_host, config.listen_port) == ("0.0.0.0", 8080)  # noqa: S104 - the seed's default
    assert (config.interval_s, config.timeout_s) == (1.0, 1.0)
    vllm, tei = config.backends
    assert (vllm.host, vllm.port, vllm.model, vllm.required) == ("127.0.0.1", 8000, VLLM["model"], True)
    assert (tei.kind, tei.port, tei.model, tei.required) == ("tei", 8001, None, True)


def test_every_option_is_read():
    raw = _with(listen_host="127.0.0.1", listen_port=0, interval_s=0.5, timeout_s=2)
    raw["backends"][1]["required"] = False
    config = hc.parse_config(raw)
    assert (config.listen_host, config.listen_port, config.interval_s, config.timeout_s) == ("127.0.0.1", 0, 0.5, 2)
    assert config.backends[1].required is False


def test_abuse_limits_have_defaults_and_are_read():
    config = hc.parse_config(_with())
    defaults = {key: spec[1] for key, spec in hc.LIMITS.items()}
    assert {key: getattr(config, key) for key in hc.LIMITS} == defaults
    assert defaults == {
        "max_connections": 4096,
        "max_pipeline": 32,
        "max_unsent_bytes": 65536,
        "header_timeout_s": 10.0,
        "idle_timeout_s": 60.0,
        "send_timeout_s": 10.0,
    }
    chosen = {
        "max_connections": 100,
        "max_pipeline": 4,
        "max_unsent_bytes": 8192,
        "header_timeout_s": 2.5,
        "idle_timeout_s": 30,
        "send_timeout_s": 1,
    }
    config = hc.parse_config(_with(**chosen))
    assert {key: getattr(config, key) for key in hc.LIMITS} == chosen
    assert isinstance(config.idle_timeout_s, float)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param([], "the top level must be a JSON object", id="not-an-object"),
        pytest.param({}, "backends: required", id="no-backends"),
        pytest.param(_with(backends=[]), "backends: must list at least one backend", id="empty-backends"),
        pytest.param(_with(backend=[]), "backend: unknown key", id="unknown-top-key"),
        pytest.param(_with(interval_s="1"), 'interval_s: must be a number, got "1"', id="interval-string"),
        pytest.param(_with(timeout_s=0), "timeout_s: must be more than 0", id="timeout-zero"),
        pytest.param(_with(listen_port=True), "listen_port: must be an integer, got true", id="port-bool"),
        pytest.param(_with(listen_port=70000), "listen_port: 70000 is not a TCP port", id="port-range"),
        pytest.param(_with(backends={"vllm": VLLM}), "backends: must be a list", id="backends-map"),
        pytest.param(_with(backends=["vllm"]), 'backends[0]: must be an object, got "vllm"', id="backend-string"),
        pytest.param(_backend(0, kind="ollama"), "backends[0].kind: 'ollama' is not one of vllm, tei", id="kind"),
        pytest.param(_backend(0, model=_DROP), "backends[0].model: required for kind 'vllm'", id="vllm-no-model"),
        pytest.param(_backend(1, model="x"), "backends[1].model: only kind 'vllm'", id="tei-model"),
        pytest.param(_backend(1, url=_DROP), "backends[1].url: required", id="no-url"),
        pytest.param(_backend(1, url="https://127.0.0.1:8001"), "backends[1].url: 'https://", id="https"),
        pytest.param(_backend(1, url="http://127.0.0.1:8001/health"), "without path", id="url-path"),
        pytest.param(
            _backend(1, url="http://127.0.0.1:99999"), "backends[1].url: 'http://127.0.0.1:99999'", id="bad-port"
        ),
        pytest.param(_backend(1, name="vllm"), "backends[1].name: 'vllm' is used twice", id="duplicate"),
        pytest.param(_backend(1, name="a b"), "backends[1].name: 'a b' must match", id="bad-name"),
        pytest.param(_backend(1, required="yes"), "backends[1].required: must be true or false", id="required-str"),
        pytest.param(_backend(0, modle="x"), "backends[0].modle: unknown key", id="typo-key"),
        pytest.param(
            {"backends": [dict(TEI, required=False)]}, "at least one backend must be required", id="none-required"
        ),
        pytest.param(_with(max_connections=0), "max_connections: must be between 1 and", id="cap-zero"),
        pytest.param(_with(max_connections=2.5), "max_connections: must be an integer, got 2.5", id="cap-float"),
        pytest.param(_with(max_pipeline=0), "max_pipeline: must be between 1 and 1024, got 0", id="pipeline"),
        pytest.param(_with(max_unsent_bytes=10), "max_unsent_bytes: must be between 1024 and", id="unsent"),
        pytest.param(_with(header_timeout_s=0), "header_timeout_s: must be between 0.01 and 3600", id="header"),
        pytest.param(_with(idle_timeout_s="60"), 'idle_timeout_s: must be a number, got "60"', id="idle-string"),
        pytest.param(_with(send_timeout_s=-1), "send_timeout_s: must be between 0.01 and 3600, got -1", id="send"),
        pytest.param(_backend(1, name="ready"), "backends[1].name: 'ready' is a top-level key", id="name-ready"),
        pytest.param(_backend(1, name="timestamp"), "'timestamp' is a top-level key", id="name-timestamp"),
    ],
)
def test_bad_config_is_refused_naming_the_key(raw, expected):
    with pytest.raises(hc.ConfigError) as caught:
        hc.parse_config(raw, "/etc/burst/healthcheck.json")
    message = str(caught.value)
    assert message.startswith("/etc/burst/healthcheck.json: ")
    assert expected in message


def test_unreadable_and_invalid_files_are_named(tmp_path):
    missing = tmp_path / "missing.json"
    with pytest.raises(hc.ConfigError, match=f"{missing}: cannot read"):
        hc.load_config(str(missing))
    broken = tmp_path / "broken.json"
    broken.write_text('{"backends": [}')
    with pytest.raises(hc.ConfigError, match=f"{broken}: not valid JSON: .*line 1"):
        hc.load_config(str(broken))


def _run(*args):
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=30, check=False)


def test_malformed_config_exits_at_start_with_the_problem(tmp_path):
    config = tmp_path / "healthcheck.json"
    config.write_text(json.dumps(_backend(0, model=_DROP)))
    result = _run("--config", str(config), "--host", "127.0.0.1", "--port", "0")
    assert result.returncode == 2
    assert f"healthcheck: error: {config}: backends[0].model: required for kind 'vllm'" in result.stderr
    assert "listening" not in result.stdout


def test_check_config_validates_a_file_and_exits(tmp_path):
    good = tmp_path / "good.json"
    good.write_text(json.dumps(_with()))
    result = _run("--check-config", str(good))
    assert result.returncode == 0, result.stderr
    assert "valid, 2 backend(s)" in result.stdout
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(_with(timeout_s=-1)))
    result = _run("--check-config", str(bad))
    assert result.returncode == 2
    assert f"{bad}: timeout_s: must be more than 0" in result.stderr
