"""burst_ec2 and spot interruptions: the draining group, burst_draining and burst_boot_to_ready_s.

The population runs on a real InventoryData with a real Templar; each host's
healthcheck is a loopback stand-in that answers what the test gives for that
instance id, as burst_services' healthcheck would.
"""

from __future__ import annotations

import socket
from datetime import datetime, timedelta, timezone

import pytest
from ansible.inventory.data import InventoryData
from ansible.parsing.dataloader import DataLoader
from ansible.template import Templar, trust_as_template

from ansible_collections.burst.golden_ami.plugins.inventory.burst_ec2 import InventoryModule
from localworld.inventory_options import burst_ec2_options
from localworld.loopback import LoopbackServer

DEFAULTS = burst_ec2_options(regions=["eu-central-1"], hostnames=["instance-id"], strict=True)
LAUNCHED = datetime.now(timezone.utc) - timedelta(minutes=5)
DEADLINE = "2026-05-04T03:02:01Z"
DRAINING = {
    "reason": "spot-interruption",
    "action": "terminate",
    "deadline": DEADLINE,
    "noticed_at": "2026-05-04T03:00:01.250Z",
    "seconds_left": 95.5,
}


def _plugin(**options):
    plugin = InventoryModule()
    values = dict(DEFAULTS, **options)
    plugin.get_option = lambda name, hostvars=None: values[name]
    plugin.inventory = InventoryData()
    plugin.templar = Templar(loader=DataLoader())
    return plugin


def _instance(instance_id, tags=()):
    return {
        "InstanceId": instance_id,
        "ImageId": "ami-00000000000000001",
        "InstanceType": "g6e.xlarge",
        "State": {"Code": 16, "Name": "running"},
        "Placement": {"AvailabilityZone": "eu-central-1a"},
        "PrivateIpAddress": "10.0.0.7",
        "PrivateDnsName": "ip-10-0-0-7.eu-central-1.compute.internal",
        "PublicDnsName": "",
        "LaunchTime": LAUNCHED,
        "InstanceLifecycle": "spot",
        "Tags": [{"Key": "Mode", "Value": "Burst"}, *({"Key": k, "Value": v} for k, v in tags)],
    }


def _results(*instances):
    image = {"ImageId": "ami-00000000000000001", "Name": "burst-golden-v3", "Tags": [{"Key": "Version", "Value": "3"}]}
    return [
        {"region": "eu-central-1", "instances": list(instances), "images": {image["ImageId"]: image}, "spot_prices": []}
    ]


def _groups(plugin):
    return {name: sorted(h.name for h in group.get_hosts()) for name, group in plugin.inventory.groups.items()}


def _vars(plugin, host):
    return plugin.inventory.get_host(host).get_vars()


class Healthchecks:
    """Loopback healthchecks: ``GET /<instance id>`` answers ``answers[instance id] = (status, body)``."""

    def __init__(self, answers):
        self.answers = answers
        self.server = LoopbackServer(get=lambda path, _headers: self.answers[path.strip("/")])

    @property
    def base(self):
        return self.server.url + "/"

    def close(self):
        self.server.close()


@pytest.fixture
def healthchecks():
    made = []

    def make(answers):
        made.append(Healthchecks(answers))
        return made[-1]

    yield make
    for item in made:
        item.close()


def _refusing_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_a_healthcheck_that_drains_puts_the_host_in_the_draining_group(healthchecks):
    ids = {name: f"i-{n:017x}" for n, name in enumerate(("ready", "loading", "draining", "tagged", "gone"), start=1)}
    stub = healthchecks(
        {
            ids["ready"]: (200, {"ready": True, "boot_to_ready_s": 41.25}),
            ids["loading"]: (503, {"ready": False, "boot_to_ready_s": None, "draining": None}),
            ids["draining"]: (503, {"ready": False, "boot_to_ready_s": 39.5, "draining": DRAINING}),
            # The tag says draining; the healthcheck (not polled yet) still says ready.
            ids["tagged"]: (200, {"ready": True, "boot_to_ready_s": 44.0}),
        }
    )
    refused = _refusing_port()
    compose = {
        "burst_health_url": trust_as_template(
            f"'http://127.0.0.1:{refused}/' if instance_id == '{ids['gone']}' else '{stub.base}' ~ instance_id"
        )
    }
    plugin = _plugin(compose=compose, health={"enabled": True, "timeout": 2.0})
    instances = [_instance(i) for i in ids.values()]
    instances[3] = _instance(ids["tagged"], tags=[("BurstDraining", DEADLINE)])
    instances[4] = _instance(ids["gone"], tags=[("BurstDraining", DEADLINE)])
    plugin._populate(_results(*instances), plugin._settings())

    groups = _groups(plugin)
    assert groups["burst_ready"] == [ids["ready"]]
    assert groups["burst_starting"] == [ids["loading"]]
    assert groups["burst_draining"] == sorted([ids["draining"], ids["tagged"], ids["gone"]])
    assert groups["burst_unreachable"] == []

    draining = _vars(plugin, ids["draining"])
    assert draining["burst_health"] == "draining"
    assert draining["burst_draining"] == DRAINING
    assert draining["burst_boot_to_ready_s"] == 39.5
    assert draining["burst_health_detail"].startswith("HTTP 503: ")
    # From the tag alone: its reason and deadline.
    tagged = _vars(plugin, ids["tagged"])
    assert tagged["burst_draining"] == {"reason": "spot-interruption", "deadline": DEADLINE}
    assert (tagged["burst_health"], tagged["burst_boot_to_ready_s"]) == ("draining", 44.0)
    gone = _vars(plugin, ids["gone"])
    assert (gone["burst_health"], gone["burst_boot_to_ready_s"]) == ("draining", None)
    assert "refused" in gone["burst_health_detail"]

    ready = _vars(plugin, ids["ready"])
    assert (ready["burst_health"], ready["burst_boot_to_ready_s"]) == ("ready", 41.25)
    assert "burst_draining" not in ready
    loading = _vars(plugin, ids["loading"])
    assert (loading["burst_health"], loading["burst_boot_to_ready_s"]) == ("starting", None)
    assert "burst_draining" not in loading


def test_a_host_that_does_not_answer_has_no_boot_to_ready(healthchecks):
    plugin = _plugin(
        health={"enabled": True, "timeout": 1.0, "url": f"http://127.0.0.1:{_refusing_port()}/{{instance_id}}"}
    )
    plugin._populate(_results(_instance("i-00000000000000001")), plugin._settings())
    host = _vars(plugin, "i-00000000000000001")
    assert (host["burst_health"], host["burst_boot_to_ready_s"]) == ("unreachable", None)
    assert _groups(plugin)["burst_draining"] == []


def test_the_draining_tag_is_seen_without_probes_and_composed_groups_can_use_it():
    plugin = _plugin(
        groups={"leaving": trust_as_template("burst_draining is defined")},
        keyed_groups=[{"key": trust_as_template("burst_draining.reason | default('serving')"), "prefix": "why"}],
    )
    plugin._populate(
        _results(
            _instance("i-00000000000000001"),
            _instance("i-00000000000000002", tags=[("BurstDraining", DEADLINE)]),
        ),
        plugin._settings(),
    )
    groups = _groups(plugin)
    assert groups["burst_draining"] == ["i-00000000000000002"]
    assert groups["leaving"] == ["i-00000000000000002"]
    assert groups["why_spot_interruption"] == ["i-00000000000000002"]
    assert groups["why_serving"] == ["i-00000000000000001"]
    for name in ("burst_ready", "burst_starting", "burst_unreachable"):
        assert name not in groups
    assert _vars(plugin, "i-00000000000000002")["burst_draining"] == {
        "reason": "spot-interruption",
        "deadline": DEADLINE,
    }
    serving = _vars(plugin, "i-00000000000000001")
    for var in ("burst_draining", "burst_health", "burst_boot_to_ready_s"):
        assert var not in serving


def test_no_draining_tag_no_draining_group():
    plugin = _plugin()
    plugin._populate(_results(_instance("i-00000000000000001")), plugin._settings())
    assert "burst_draining" not in _groups(plugin)
