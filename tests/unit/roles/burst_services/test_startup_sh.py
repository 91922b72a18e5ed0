"""startup.sh: starts the target, waits for the healthcheck, reports timings, fails on timeout."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import jinja2
import pytest

from localworld.loopback import LoopbackServer

TEMPLATE = Path(__file__).resolve().parents[4] / "roles" / "burst_services" / "templates" / "startup.sh.j2"


class Healthcheck:
    """Answers 503 to the first ``not_ready`` requests, then 200 with a boot-to-ready figure."""

    def __init__(self, not_ready):
        self.requests = 0
        self.not_ready = not_ready
        self.server = LoopbackServer(get=self._get)

    def _get(self, _path, _headers):
        self.requests += 1
        ready = self.requests > self.not_ready
        return (200 if ready else 503), {"ready": ready, "boot_to_ready_s": 42.5 if ready else None}

    @property
    def url(self):
        return self.server.url + "/health"

    def close(self):
        self.server.close()


@pytest.fixture
def startup(tmp_path):
    script = tmp_path / "startup.sh"
    # A shell script, not HTML: nothing to escape.
    environment = jinja2.Environment(keep_trailing_newline=True, undefined=jinja2.StrictUndefined, autoescape=False)  # noqa: S701
    rendered = environment.from_string(TEMPLATE.read_text())
    script.write_text(rendered.render(ansible_managed="managed", burst_services_root=str(tmp_path)))
    script.chmod(0o755)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "systemctl"
    fake.write_text(f'#!/bin/sh\necho "$@" >> {tmp_path}/systemctl.calls\n')
    fake.chmod(0o755)
    servers = []

    def run(not_ready, timeout):
        health = Healthcheck(not_ready)
        servers.append(health)
        (tmp_path / "config.env").write_text(
            f"BURST_TARGET=burst.target\nBURST_HEALTH_URL={health.url}\nBURST_READY_TIMEOUT={timeout}\n"
            f"BURST_POLL_INTERVAL=0.1\nBURST_PYTHON={sys.executable}\n"
        )
        env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}")
        result = subprocess.run(
            ["/bin/bash", str(script)], capture_output=True, text=True, env=env, timeout=30, check=False
        )
        return result, (tmp_path / "systemctl.calls").read_text()

    yield run
    for server in servers:
        server.close()


def test_waits_for_ready_and_reports_the_timings(startup):
    result, calls = startup(not_ready=3, timeout=30)
    assert result.returncode == 0, result.stdout + result.stderr
    assert calls == "start --no-block burst.target\n"
    lines = [line.split(" ", 2)[2] for line in result.stdout.splitlines()]
    assert lines[0].startswith("starting burst.target (") and lines[0].endswith(" s after boot)")
    assert lines[1:3] == ["healthcheck answers 503", "healthcheck answers 200"]
    assert lines[3].startswith("ready ") and lines[3].endswith(" s after startup.sh began; boot-to-ready 42.5 s")


def test_fails_when_not_ready_in_time(startup):
    result = startup(not_ready=10**6, timeout=1)[0]
    assert result.returncode == 1
    assert "not ready after 1 s; last answer 503" in result.stdout
    assert '{"ready": false, "boot_to_ready_s": null}' in result.stdout
