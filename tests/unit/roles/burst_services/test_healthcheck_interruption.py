"""The healthcheck's spot interruption watcher, against a fake instance metadata service on 127.0.0.1.

The fake (localworld.imds) speaks IMDSv2 as EC2's does: a token from ``PUT /latest/api/token``,
401 for a GET without a valid one, 404 until the test injects a spot
interruption notice or a rebalance recommendation. The aggregator is the
real one, serving from a background thread; hooks are real executables in a
temporary directory.
"""

from __future__ import annotations

import http.client
import http.server
import json
import os
import re
import socket
import stat
import time
from datetime import datetime, timezone

import pytest
from ansible.inventory.data import InventoryData
from ansible.parsing.dataloader import DataLoader
from ansible.template import Templar

from ansible_collections.burst.golden_ami.plugins.inventory.burst_ec2 import InventoryModule
from localworld.inventory_options import burst_ec2_options
from localworld.localplay import load_role_file
from localworld.loopback import LoopbackServer

MODEL = "Qwen/Qwen2.5-14B-Instruct-AWQ"
POLL = 0.05

hc = load_role_file("burst_services", "healthcheck.py", "burst_healthcheck_interruption_under_test")


def _stamp(epoch):
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(epoch)) + f".{int(epoch % 1 * 1000):03d}Z"


class Backends:
    """vLLM and TEI stand-ins in one loopback server: /health 200, /v1/models lists MODEL."""

    def __init__(self):
        self.server = LoopbackServer(get=self._get)

    @staticmethod
    def _get(path, _headers):
        if path == "/v1/models":
            return 200, {"object": "list", "data": [{"id": MODEL, "object": "model"}]}
        return (200 if path == "/health" else 404), b""

    @property
    def url(self):
        return self.server.url

    def close(self):
        self.server.close()


@pytest.fixture
def imds(fake_imds):
    return fake_imds


@pytest.fixture
def backends():
    stand_ins = Backends()
    yield stand_ins
    stand_ins.close()


def _refusing_url():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


class Service:
    """The aggregator with a watcher, its log lines kept."""

    def __init__(self, backends, interruption):
        raw = {
            "listen_host": "127.0.0.1",
            "listen_port": 0,
            "interval_s": 0.1,
            "timeout_s": 0.5,
            "backends": [
                {"name": "vllm", "kind": "vllm", "url": backends.url, "model": MODEL},
                {"name": "embeddings", "kind": "tei", "url": backends.url},
            ],
            "interruption": interruption,
        }
        self.lines = []
        self.aggregator = hc.Aggregator(hc.parse_config(raw), log=self.lines.append)
        self.aggregator.start()
        self.port = self.aggregator.port

    def get(self, path="/health"):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    def wait_for(self, predicate, what, within=10.0):
        """The first /health answer (status, decoded body) that ``predicate(status, body)`` accepts."""
        deadline = time.monotonic() + within
        while True:
            status, raw = self.get()
            body = json.loads(raw)
            if predicate(status, body):
                return status, body
            if time.monotonic() > deadline:
                raise AssertionError(f"{what}: not within {within} s; last answer {status} {body}; log {self.lines}")
            time.sleep(0.02)

    def wait_line(self, pattern, within=10.0):
        deadline = time.monotonic() + within
        while True:
            found = [line for line in list(self.lines) if re.search(pattern, line)]
            if found:
                return found
            if time.monotonic() > deadline:
                raise AssertionError(f"no log line matches {pattern!r} within {within} s: {self.lines}")
            time.sleep(0.02)

    def stop(self):
        self.aggregator.stop()


@pytest.fixture
def service():
    started = []

    def make(backends, **interruption):
        started.append(Service(backends, interruption))
        return started[-1]

    yield make
    for item in started:
        item.stop()


def _hook(directory, name, script, mode=0o755):
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(script)
    path.chmod(mode)
    return path


def seed_client(raw):
    """What a client written against the seed's healthcheck.py reads from the answer."""
    data = json.loads(raw)
    verdict = {"ready": data["ready"]}
    for name in ("vllm", "embeddings"):
        verdict[name] = (data[name]["ok"], data[name]["status"])
    assert isinstance(verdict["ready"], bool)
    return verdict


def _wait_gone(pid, within=5.0):
    """True once ``pid`` has no process (or only a zombie) left."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
                if handle.read().rsplit(")", 1)[1].split()[0] == "Z":
                    return True
        except (FileNotFoundError, ProcessLookupError):
            return True
        time.sleep(0.05)
    return False


# ---------------------------------------------------------------- configuration


def test_interruption_settings_have_defaults_and_are_validated():
    base = {"backends": [{"name": "embeddings", "kind": "tei", "url": "http://127.0.0.1:8001"}]}
    assert hc.parse_config(base).interruption is None
    settings = hc.parse_config(dict(base, interruption={})).interruption
    assert {key: getattr(settings, key) for key in hc.INTERRUPTION_SETTINGS} == {
        "enabled": True,
        "imds_url": "http://169.254.169.254",
        "poll_interval_s": 5.0,
        "state_file": "/run/burst/interruption.json",
        "hooks_dir": "/etc/burst/interruption.d",
        "hook_timeout_s": 90.0,
    }
    assert (settings.imds_host, settings.imds_port) == ("169.254.169.254", 80)
    chosen = hc.parse_config(
        dict(base, interruption={"imds_url": "http://127.0.0.1:1338/", "poll_interval_s": 1, "enabled": False})
    ).interruption
    assert (chosen.imds_host, chosen.imds_port, chosen.poll_interval_s, chosen.enabled) == (
        "127.0.0.1",
        1338,
        1.0,
        False,
    )
    for interruption, message in (
        ([], "interruption: must be an object, got []"),
        ({"poll_interval": 5}, "interruption.poll_interval: unknown key"),
        ({"enabled": "yes"}, 'interruption.enabled: must be true or false, got "yes"'),
        ({"poll_interval_s": 0}, "interruption.poll_interval_s: must be more than 0"),
        ({"hook_timeout_s": 4000}, "interruption.hook_timeout_s: must be more than 0 and at most 3600"),
        ({"imds_url": "https://169.254.169.254"}, "interruption.imds_url: 'https://169.254.169.254' must be"),
        ({"imds_url": "http://169.254.169.254/latest"}, "without path"),
        ({"state_file": "run/burst/x.json"}, "interruption.state_file: 'run/burst/x.json' must be an absolute path"),
        ({"hooks_dir": 5}, "interruption.hooks_dir: must be a string, got 5"),
    ):
        with pytest.raises(hc.ConfigError) as caught:
            hc.parse_config(dict(base, interruption=interruption), "/etc/burst/healthcheck.json")
        assert str(caught.value).startswith("/etc/burst/healthcheck.json: ")
        assert message in str(caught.value), str(caught.value)


@pytest.mark.parametrize("name", ["draining", "rebalance_recommended_at"])
def test_backend_names_cannot_shadow_the_new_answer_keys(name):
    raw = {"backends": [{"name": name, "kind": "tei", "url": "http://127.0.0.1:8001"}]}
    with pytest.raises(hc.ConfigError, match=f"'{name}' is a top-level key of the answer"):
        hc.parse_config(raw)


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        pytest.param({"class/dmi/id/sys_vendor": "Amazon EC2\n"}, True, id="nitro"),
        pytest.param(
            {"class/dmi/id/bios_version": "4.11.amazon\n", "class/dmi/id/sys_vendor": "Xen\n"}, True, id="xen"
        ),
        pytest.param({"hypervisor/uuid": "ec2e1916-9099-7caf-fd21-012345abcdef\n"}, True, id="xen-uuid-only"),
        pytest.param({"class/dmi/id/sys_vendor": "QEMU\n", "class/dmi/id/bios_vendor": "SeaBIOS\n"}, False, id="qemu"),
        pytest.param({}, False, id="no-dmi"),
    ],
)
def test_ec2_is_recognized_from_dmi_data_alone(tmp_path, files, expected):
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert hc.on_ec2(str(tmp_path)) is expected


def test_off_ec2_the_link_local_service_is_never_asked(backends, service, tmp_path, monkeypatch):
    monkeypatch.setattr(hc, "SYSFS", str(tmp_path))  # no DMI data: not an EC2 instance
    svc = service(backends, poll_interval_s=POLL, state_file=str(tmp_path / "state.json"))
    svc.wait_line(r"^interruption watcher: idle, this machine is not an EC2 instance")
    body = svc.wait_for(lambda s, b: s == 200, "ready")[1]
    assert body["draining"] is None
    time.sleep(POLL * 4)
    assert not any("does not answer" in line for line in svc.lines)
    off = service(backends, enabled=False)
    off.wait_line(r"^interruption watcher: off$")


# ---------------------------------------------------------------- spot interruption notice


def test_spot_notice_drains_writes_the_state_file_and_runs_each_hook_once(backends, imds, service, tmp_path):
    state_file = tmp_path / "run" / "burst" / "interruption.json"
    hooks = tmp_path / "interruption.d"
    record = tmp_path / "record"
    _hook(
        hooks,
        "10-record",
        "#!/bin/sh\n"
        f'echo "$BURST_INTERRUPTION_REASON|$BURST_INTERRUPTION_ACTION|$BURST_INTERRUPTION_DEADLINE" >> "{record}"\n',
    )
    _hook(hooks, "20-fail", "#!/bin/sh\nexit 3\n")
    _hook(hooks, "30-not-executable", "#!/bin/sh\nexit 0\n", mode=0o644)
    _hook(hooks, ".hidden", "#!/bin/sh\nexit 0\n")
    svc = service(
        backends,
        imds_url=imds.url,
        poll_interval_s=POLL,
        state_file=str(state_file),
        hooks_dir=str(hooks),
        hook_timeout_s=5,
    )
    status, body = svc.wait_for(lambda s, b: s == 200, "ready before the notice")
    assert (body["draining"], body["rebalance_recommended_at"]) == (None, None)
    svc.wait_line(r"^interruption watcher: polling ")
    assert not state_file.exists()

    deadline = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 120))
    imds.spot = {"action": "terminate", "time": deadline}
    status, body = svc.wait_for(lambda s, b: s == 503, "503 after the notice")
    draining = body["draining"]
    assert body["ready"] is False
    assert (draining["reason"], draining["action"], draining["deadline"]) == (
        "spot-interruption",
        "terminate",
        deadline,
    )
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", draining["noticed_at"])
    assert 0 < draining["seconds_left"] <= 121
    # The backends are still fine, and say so.
    assert body["backends"]["vllm"]["ok"] is True
    # A client written against the seed's format still reads its fields.
    raw = svc.get()[1]
    assert seed_client(raw) == {"ready": False, "vllm": (True, "ready"), "embeddings": (True, "ready")}

    assert json.loads(state_file.read_text()) == {
        "reason": "spot-interruption",
        "action": "terminate",
        "deadline": deadline,
        "noticed_at": draining["noticed_at"],
    }
    assert stat.S_IMODE(state_file.stat().st_mode) == 0o644
    assert [p.name for p in state_file.parent.iterdir()] == ["interruption.json"]  # no temporary file left

    svc.wait_line(r"^interruption hooks: done, 2 of 2 run$")
    assert record.read_text() == f"spot-interruption|terminate|{deadline}\n"
    assert "interruption hook 10-record: exited with status 0" in svc.lines
    assert "interruption hook 20-fail: exited with status 3" in svc.lines
    assert "interruption hook 30-not-executable: not executable, skipped" in svc.lines
    assert not any(".hidden" in line for line in svc.lines)

    # Draining is for good: the notice gone, the answer stays, and nothing runs again.
    imds.spot = None
    gets = len(imds.gets)
    time.sleep(POLL * 6)
    status, body = svc.wait_for(lambda s, b: True, "an answer")
    assert (status, body["draining"]["deadline"]) == (503, deadline)
    assert record.read_text().count("\n") == 1
    assert sum("spot interruption notice" in line for line in svc.lines) == 1
    assert len(imds.gets) == gets  # no more polling once draining
    assert imds.unauthorized == 0  # every GET carried a token


def test_a_hook_that_hangs_is_killed_at_hook_timeout_with_what_it_started(backends, imds, service, tmp_path):
    hooks = tmp_path / "interruption.d"
    pid_file = tmp_path / "sleep.pid"
    _hook(hooks, "10-hang", f'#!/bin/sh\nsleep 60 &\necho $! > "{pid_file}"\nwait\ntouch "{tmp_path}/after"\n')
    _hook(hooks, "20-next", f'#!/bin/sh\ntouch "{tmp_path}/next"\n')
    svc = service(
        backends,
        imds_url=imds.url,
        poll_interval_s=POLL,
        state_file=str(tmp_path / "state.json"),
        hooks_dir=str(hooks),
        hook_timeout_s=0.5,
    )
    svc.wait_line(r"^interruption watcher: polling ")
    imds.spot = {"action": "terminate", "time": _stamp(time.time() + 120)}
    svc.wait_line(r"^interruption hooks: done, 2 of 2 run$")
    assert "interruption hook 10-hang: started, for at most 0.5 s" in svc.lines
    assert "interruption hook 10-hang: killed after 0.5 s, its bound" in svc.lines
    assert "interruption hook 20-next: exited with status 0" in svc.lines
    assert (tmp_path / "next").exists()
    assert not (tmp_path / "after").exists()
    assert _wait_gone(int(pid_file.read_text())), "the hook's own child outlived it"


def test_hooks_stop_ten_seconds_before_the_deadline(backends, imds, service, tmp_path):
    hooks = tmp_path / "interruption.d"
    _hook(hooks, "10-hang", "#!/bin/sh\nexec sleep 60\n")
    _hook(hooks, "20-late", f'#!/bin/sh\ntouch "{tmp_path}/late"\n')
    svc = service(
        backends,
        imds_url=imds.url,
        poll_interval_s=POLL,
        state_file=str(tmp_path / "state.json"),
        hooks_dir=str(hooks),
        hook_timeout_s=90,
    )
    svc.wait_line(r"^interruption watcher: polling ")
    imds.spot = {"action": "stop", "time": _stamp(time.time() + 12.5)}
    svc.wait_line(r"^interruption hooks: done, 1 of 2 run$")
    (killed,) = svc.wait_line(r"^interruption hook 10-hang: killed after ")
    bound = float(re.search(r"killed after ([\d.]+) s", killed).group(1))
    assert 0 < bound <= 2.5  # the deadline's bound, not hook_timeout_s
    assert "interruption hook 20-late: skipped, less than 10 s before the deadline" in svc.lines
    assert not (tmp_path / "late").exists()
    assert svc.wait_for(lambda s, b: s == 503, "draining")[1]["draining"]["action"] == "stop"


# ---------------------------------------------------------------- rebalance recommendation


def test_rebalance_recommendation_keeps_200_and_runs_no_hooks(backends, imds, service, tmp_path):
    state_file = tmp_path / "interruption.json"
    hooks = tmp_path / "interruption.d"
    _hook(hooks, "10-record", f'#!/bin/sh\necho "$BURST_INTERRUPTION_REASON" >> "{tmp_path}/record"\n')
    svc = service(
        backends,
        imds_url=imds.url,
        poll_interval_s=POLL,
        state_file=str(state_file),
        hooks_dir=str(hooks),
    )
    svc.wait_for(lambda s, b: s == 200, "ready")
    imds.rebalance = {"noticeTime": "2026-03-01T10:00:00Z"}
    status, body = svc.wait_for(lambda s, b: b["rebalance_recommended_at"] is not None, "the recommendation")
    assert (status, body["ready"], body["draining"]) == (200, True, None)
    assert body["rebalance_recommended_at"] == "2026-03-01T10:00:00Z"
    recorded = json.loads(state_file.read_text())
    assert (recorded["reason"], recorded["action"], recorded["deadline"]) == ("rebalance-recommendation", None, None)
    assert recorded["recommended_at"] == "2026-03-01T10:00:00Z"
    time.sleep(POLL * 6)
    assert not (tmp_path / "record").exists()
    assert svc.get()[0] == 200

    # The notice that may follow still drains, and replaces the state file.
    deadline = _stamp(time.time() + 120)
    imds.spot = {"action": "terminate", "time": deadline}
    status, body = svc.wait_for(lambda s, b: s == 503, "draining")
    assert body["rebalance_recommended_at"] == "2026-03-01T10:00:00Z"
    assert json.loads(state_file.read_text())["reason"] == "spot-interruption"
    svc.wait_line(r"^interruption hooks: done, 1 of 1 run$")
    assert (tmp_path / "record").read_text() == "spot-interruption\n"


# ---------------------------------------------------------------- the metadata service misbehaving


def test_imds_unreachable_is_logged_once_and_health_keeps_answering(backends, service, tmp_path):
    svc = service(backends, imds_url=_refusing_url(), poll_interval_s=0.01, state_file=str(tmp_path / "s.json"))
    svc.wait_line(r"does not answer")
    for _attempt in range(20):
        assert svc.get()[0] in (200, 503)
    svc.wait_for(lambda s, b: s == 200, "ready")
    time.sleep(0.5)
    lines = [line for line in svc.lines if "does not answer" in line]
    assert len(lines) == 1, lines
    assert "connection refused" in lines[0]
    assert svc.get("/live")[0] == 200
    assert not (tmp_path / "s.json").exists()


def test_imds_back_after_an_outage_is_polled_again(backends, imds, service, tmp_path):
    imds.down = True
    svc = service(backends, imds_url=imds.url, poll_interval_s=0.02, state_file=str(tmp_path / "s.json"))
    svc.wait_line(r"does not answer \(PUT /latest/api/token: connection closed before a full answer\)")
    svc.wait_for(lambda s, b: s == 200, "ready while the metadata service is down")
    imds.down = False
    svc.wait_line(r"^interruption watcher: the metadata service answers again after \d+ tries$")
    imds.spot = {"action": "terminate", "time": _stamp(time.time() + 60)}
    svc.wait_for(lambda s, b: s == 503 and b["draining"] is not None, "draining")


def test_an_expired_token_is_replaced(backends, imds, service, tmp_path):
    svc = service(backends, imds_url=imds.url, poll_interval_s=POLL, state_file=str(tmp_path / "s.json"))
    svc.wait_line(r"^interruption watcher: polling ")
    deadline = time.monotonic() + 5
    while not imds.gets and time.monotonic() < deadline:
        time.sleep(0.02)
    assert imds.issued == 1
    imds.revoke()
    deadline = time.monotonic() + 5
    while imds.issued < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert imds.issued == 2
    assert imds.unauthorized >= 1
    imds.spot = {"action": "terminate", "time": _stamp(time.time() + 60)}
    svc.wait_for(lambda s, b: s == 503, "draining with the new token")
    assert not any("does not answer" in line for line in svc.lines)


def test_state_file_that_cannot_be_written_is_logged_and_draining_goes_on(backends, imds, service, tmp_path):
    blocked = tmp_path / "file"
    blocked.write_text("not a directory")
    svc = service(
        backends,
        imds_url=imds.url,
        poll_interval_s=POLL,
        state_file=str(blocked / "interruption.json"),
        hooks_dir=str(tmp_path / "no-hooks"),
    )
    svc.wait_line(r"^interruption watcher: polling ")
    imds.spot = {"action": "terminate", "time": _stamp(time.time() + 60)}
    svc.wait_for(lambda s, b: s == 503, "draining")
    svc.wait_line(rf"^interruption: cannot write {re.escape(str(blocked))}/interruption.json: ")
    svc.wait_line(r"^interruption hooks: .* does not exist, none run$")
    assert os.path.isfile(blocked)


# ---------------------------------------------------------------- seen by the inventory


def test_the_inventory_puts_a_draining_instance_in_its_draining_group(backends, imds, service, tmp_path):
    """The real healthcheck, drained by a notice, probed by burst_ec2 as it probes burst instances."""
    svc = service(backends, imds_url=imds.url, poll_interval_s=POLL, state_file=str(tmp_path / "s.json"))
    svc.wait_for(lambda s, b: s == 200, "ready")
    plugin = _inventory(svc.port)
    plugin._populate(_fleet(), plugin._settings())
    host = plugin.inventory.get_host("i-00000000000000001").get_vars()
    assert host["burst_health"] == "ready"
    assert isinstance(host["burst_boot_to_ready_s"], float)
    assert "burst_draining" not in host

    deadline = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 120))
    imds.spot = {"action": "terminate", "time": deadline}
    svc.wait_for(lambda s, b: s == 503, "draining")
    plugin = _inventory(svc.port)
    plugin._populate(_fleet(), plugin._settings())
    groups = {name: [h.name for h in group.get_hosts()] for name, group in plugin.inventory.groups.items()}
    assert groups["burst_draining"] == ["i-00000000000000001"]
    assert groups["burst_starting"] == []
    host = plugin.inventory.get_host("i-00000000000000001").get_vars()
    assert host["burst_health"] == "draining"
    assert (host["burst_draining"]["reason"], host["burst_draining"]["deadline"]) == ("spot-interruption", deadline)
    assert isinstance(host["burst_boot_to_ready_s"], float)


def _inventory(port):
    options = burst_ec2_options(
        hostnames=["instance-id"],
        burst_groups=False,
        spot_prices=False,
        health={"enabled": True, "timeout": 2.0, "url": f"http://127.0.0.1:{port}/health"},
        strict=True,
        burst_tags={},
        instance_states=["running"],
    )
    plugin = InventoryModule()
    plugin.get_option = lambda name, hostvars=None: options[name]
    plugin.inventory = InventoryData()
    plugin.templar = Templar(loader=DataLoader())
    return plugin


def _fleet():
    instance = {
        "InstanceId": "i-00000000000000001",
        "ImageId": "ami-00000000000000001",
        "InstanceType": "g6e.xlarge",
        "State": {"Code": 16, "Name": "running"},
        "Placement": {"AvailabilityZone": "eu-central-1a"},
        "LaunchTime": datetime.now(timezone.utc),
        "InstanceLifecycle": "spot",
        "Tags": [],
    }
    return [{"region": "eu-central-1", "instances": [instance], "images": {}, "spot_prices": []}]
