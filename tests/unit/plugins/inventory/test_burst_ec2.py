"""Unit tests of the burst_ec2 inventory plugin.

EC2 is played by botocore's Stubber; the population runs on a real
InventoryData with a real Templar. Health probes go to a loopback stand-in
only. The whole plugin, through ansible-inventory and against moto, is the
integration target tests/integration/targets/burst_ec2.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import boto3
import pytest
from ansible.errors import AnsibleError
from ansible.inventory.data import InventoryData
from ansible.parsing.dataloader import DataLoader
from ansible.template import Templar, trust_as_template
from botocore.stub import ANY, Stubber

from ansible_collections.burst.golden_ami.plugins.inventory.burst_ec2 import InventoryModule, group_name, snake_case
from localworld.health_stub import HealthStub
from localworld.inventory_options import BURST_EC2_DEFAULTS, burst_ec2_options

DEFAULTS = burst_ec2_options(regions=["eu-central-1"])
LAUNCHED = datetime.now(timezone.utc) - timedelta(minutes=5)


def _plugin(**options):
    plugin = InventoryModule()
    values = dict(DEFAULTS, **options)
    plugin.get_option = lambda name, hostvars=None: values[name]
    plugin.inventory = InventoryData()
    plugin.templar = Templar(loader=DataLoader())
    return plugin


def _instance(instance_id, image_id="ami-00000000000000001", instance_type="g6e.xlarge", lifecycle="spot", **extra):
    instance = {
        "InstanceId": instance_id,
        "ImageId": image_id,
        "InstanceType": instance_type,
        "State": {"Code": 16, "Name": "running"},
        "Placement": {"AvailabilityZone": "eu-central-1a"},
        "PrivateIpAddress": "10.0.0.7",
        "PrivateDnsName": "ip-10-0-0-7.eu-central-1.compute.internal",
        "PublicDnsName": "",
        "LaunchTime": LAUNCHED,
        "AmiLaunchIndex": 0,
        "Tags": [{"Key": "Mode", "Value": "Burst"}, {"Key": "Name", "Value": f"burst-{instance_id[-2:]}"}],
    }
    if lifecycle:
        instance["InstanceLifecycle"] = lifecycle
    instance.update(extra)
    return instance


def _image(image_id, version):
    return {"ImageId": image_id, "Name": f"burst-golden-v{version}", "Tags": [{"Key": "Version", "Value": version}]}


def _results(*per_region):
    return [
        {"region": region, "instances": instances, "images": images, "spot_prices": prices}
        for region, instances, images, prices in per_region
    ]


def _groups(plugin):
    return {name: sorted(h.name for h in group.get_hosts()) for name, group in plugin.inventory.groups.items()}


def _vars(plugin, host):
    return plugin.inventory.get_host(host).get_vars()


def _client(region="eu-central-1"):
    return boto3.client(
        "ec2",
        region_name=region,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",  # noqa: S106 - not a secret
        endpoint_url="http://127.0.0.1:9",  # never reached: the Stubber answers
    )


# ---------------------------------------------------------------- helpers


def test_file_names_must_end_with_burst_ec2_yml(tmp_path):
    plugin = InventoryModule()
    for name, expected in (("prod.burst_ec2.yml", True), ("prod.burst_ec2.yaml", True), ("prod.aws_ec2.yml", False)):
        path = tmp_path / name
        path.write_text("plugin: burst.golden_ami.burst_ec2\n")
        assert plugin.verify_file(str(path)) is expected


def test_snake_case_keeps_tags_as_a_dict():
    assert snake_case(
        {"InstanceId": "i-1", "Placement": {"AvailabilityZone": "a"}, "Tags": [{"Key": "K", "Value": "V"}]}
    ) == {
        "instance_id": "i-1",
        "placement": {"availability_zone": "a"},
        "tags": {"K": "V"},
    }


def test_group_names_are_identifiers():
    assert group_name("burst_version", "1.0") == "burst_version_1_0"
    assert group_name("burst_zone", "eu-central-1a") == "burst_zone_eu_central_1a"


# ---------------------------------------------------------------- query


def test_one_region_is_one_describe_instances_one_describe_images_and_one_price_request():
    plugin = _plugin()
    client = _client()
    now = datetime.now(timezone.utc)
    with Stubber(client) as stubber:
        stubber.add_response(
            "describe_instances",
            {
                "Reservations": [
                    {
                        "ReservationId": "r-1",
                        "OwnerId": "123456789012",
                        "Instances": [
                            _instance("i-0000000000000000a"),
                            _instance("i-0000000000000000b", image_id="ami-00000000000000002"),
                            _instance("i-0000000000000000c", lifecycle=None),
                        ],
                    }
                ]
            },
            {
                "Filters": [
                    {"Name": "tag:Mode", "Values": ["Burst"]},
                    {"Name": "instance-state-name", "Values": ["pending", "running"]},
                ],
                "MaxResults": 1000,
            },
        )
        stubber.add_response(
            "describe_images",
            {"Images": [_image("ami-00000000000000001", "1.0"), _image("ami-00000000000000002", "2.0")]},
            {"ImageIds": ["ami-00000000000000001", "ami-00000000000000002"]},
        )
        stubber.add_response(
            "describe_spot_price_history",
            {
                "SpotPriceHistory": [
                    {
                        "AvailabilityZone": "eu-central-1a",
                        "InstanceType": "g6e.xlarge",
                        "ProductDescription": "Linux/UNIX",
                        "SpotPrice": "1.17",
                        "Timestamp": now,
                    }
                ]
            },
            {"InstanceTypes": ["g6e.xlarge"], "ProductDescriptions": ["Linux/UNIX"], "StartTime": ANY},
        )
        settings = plugin._settings()
        result = plugin._query_region(client, "eu-central-1", settings["queries"], settings)
    assert [i["InstanceId"] for i in result["instances"]] == ["i-0000000000000000a", "i-0000000000000000b"]
    assert sorted(result["images"]) == ["ami-00000000000000001", "ami-00000000000000002"]
    assert result["spot_prices"] == [["g6e.xlarge", "eu-central-1a", "1.17"]]
    # instance_vars=burst: only the fields the host variables use are kept.
    assert "AmiLaunchIndex" not in result["instances"][0]


def test_filters_add_to_the_burst_defaults_and_may_override_the_states():
    plugin = _plugin(filters={"tag:Team": "ml", "instance-state-name": ["stopped"]})
    assert plugin._queries() == {
        "include": [
            [
                {"Name": "tag:Team", "Values": ["ml"]},
                {"Name": "instance-state-name", "Values": ["stopped"]},
                {"Name": "tag:Mode", "Values": ["Burst"]},
            ]
        ],
        "exclude": [],
    }


def test_include_and_exclude_queries_carry_the_burst_filters():
    plugin = _plugin(
        include_filters=[{"tag:Team": "ml"}, {"instance-state-name": "stopping"}],
        exclude_filters=[{"instance-type": "g5.2xlarge"}],
    )
    queries = plugin._queries()
    # Without filters, the include_filters alone are the include queries.
    assert queries["include"] == [
        [
            {"Name": "tag:Team", "Values": ["ml"]},
            {"Name": "tag:Mode", "Values": ["Burst"]},
            {"Name": "instance-state-name", "Values": ["pending", "running"]},
        ],
        [{"Name": "instance-state-name", "Values": ["stopping"]}, {"Name": "tag:Mode", "Values": ["Burst"]}],
    ]
    # An exclude query looks at every state an include query lists.
    assert queries["exclude"] == [
        [
            {"Name": "instance-type", "Values": ["g5.2xlarge"]},
            {"Name": "tag:Mode", "Values": ["Burst"]},
            {"Name": "instance-state-name", "Values": ["pending", "running", "stopping"]},
        ]
    ]


def test_excluded_instances_are_left_out_and_found_twice_listed_once():
    plugin = _plugin(
        include_filters=[{"tag:Team": "ml"}, {"instance-type": "g6e.xlarge"}],
        exclude_filters=[{"tag:Keep": "no"}],
        spot_prices=False,
    )
    client = _client()
    settings = plugin._settings()
    with Stubber(client) as stubber:
        stubber.add_response(
            "describe_instances", {"Reservations": [{"Instances": [_instance("i-0000000000000000c")]}]}
        )
        stubber.add_response(
            "describe_instances",
            {
                "Reservations": [
                    {
                        "OwnerId": "123456789012",
                        "ReservationId": "r-1",
                        "Instances": [_instance("i-0000000000000000a"), _instance("i-0000000000000000c")],
                    }
                ]
            },
        )
        stubber.add_response(
            "describe_instances",
            {"Reservations": [{"Instances": [_instance("i-0000000000000000a"), _instance("i-0000000000000000b")]}]},
        )
        stubber.add_response("describe_images", {"Images": [_image("ami-00000000000000001", "1.0")]})
        result = plugin._query_region(client, "eu-central-1", settings["queries"], settings)
        stubber.assert_no_pending_responses()
    assert [i["InstanceId"] for i in result["instances"]] == ["i-0000000000000000a", "i-0000000000000000b"]
    # The reservation's fields come with the instance, as aws_ec2 has them.
    assert result["instances"][0]["OwnerId"] == "123456789012"
    assert result["instances"][0]["ReservationId"] == "r-1"


def test_throttled_queries_are_retried_with_the_collection_policy(monkeypatch):
    from ansible_collections.amazon.aws.plugins.module_utils import cloud

    sleeps = []
    monkeypatch.setattr(cloud.time, "sleep", sleeps.append)
    plugin = _plugin(spot_prices=False)
    client = _client()
    settings = plugin._settings()
    with Stubber(client) as stubber:
        stubber.add_client_error("describe_instances", service_error_code="RequestLimitExceeded")
        stubber.add_client_error("describe_instances", service_error_code="Throttling")
        stubber.add_response(
            "describe_instances", {"Reservations": [{"Instances": [_instance("i-0000000000000000a")]}]}
        )
        stubber.add_response("describe_images", {"Images": []})
        result = plugin._query_region(client, "eu-central-1", settings["queries"], settings)
        stubber.assert_no_pending_responses()
    assert [i["InstanceId"] for i in result["instances"]] == ["i-0000000000000000a"]
    assert len(sleeps) == 2 and all(0 <= s <= 30 for s in sleeps)


@pytest.mark.parametrize(("strict", "expected"), [(False, "skipped"), (True, "fails")])
def test_unauthorized_regions(strict, expected):
    plugin = _plugin(strict_permissions=strict)
    client = _client()
    settings = plugin._settings()
    with Stubber(client) as stubber:
        stubber.add_client_error("describe_instances", service_error_code="UnauthorizedOperation")
        if expected == "skipped":
            assert plugin._query_region(client, "eu-central-1", settings["queries"], settings)["instances"] == []
        else:
            with pytest.raises(Exception, match="Failed to describe instances in eu-central-1"):
                plugin._query_region(client, "eu-central-1", settings["queries"], settings)


def test_regions_are_queried_at_the_same_time(monkeypatch):
    regions = ["eu-central-1", "us-east-2", "eu-west-1"]
    plugin = _plugin(regions=regions, spot_prices=False)
    clients = {region: _client(region) for region in regions}
    # Each request waits until every region's request has started: run one after another, it would time out.
    barrier = threading.Barrier(len(regions), timeout=10)
    stubbers = []
    for n, (_region, client) in enumerate(clients.items()):
        client.meta.events.register("before-parameter-build.ec2.DescribeInstances", lambda **_: barrier.wait())
        stubber = Stubber(client)
        stubber.add_response("describe_instances", {"Reservations": [{"Instances": [_instance(f"i-{n:017x}")]}]})
        stubber.add_response("describe_images", {"Images": [_image("ami-00000000000000001", "1.0")]})
        stubber.activate()
        stubbers.append(stubber)
    monkeypatch.setattr(plugin, "_ec2_clients", lambda names: [(clients[n], n) for n in names])
    start = time.monotonic()
    results = plugin._query(plugin._settings())
    assert time.monotonic() - start < 10
    assert [r["region"] for r in results] == regions
    for stubber in stubbers:
        stubber.assert_no_pending_responses()


# ---------------------------------------------------------------- population


def _two_region_results():
    return _results(
        (
            "eu-central-1",
            [_instance("i-0000000000000000a"), _instance("i-0000000000000000b", instance_type="g5.2xlarge")],
            {"ami-00000000000000001": _image("ami-00000000000000001", "1.0")},
            [["g6e.xlarge", "eu-central-1a", "1.17"]],
        ),
        (
            "us-east-2",
            [
                _instance(
                    "i-0000000000000000c",
                    image_id="ami-00000000000000009",
                    Placement={"AvailabilityZone": "us-east-2b"},
                )
            ],
            {},  # the image is gone: the version is unknown
            [],
        ),
    )


def test_groups_and_host_variables():
    plugin = _plugin(
        hostnames=["instance-id"],
        keyed_groups=[{"key": trust_as_template("tags.Name"), "prefix": "name"}],
        groups={"g6e": trust_as_template("instance_type == 'g6e.xlarge'")},
        compose={"ansible_host": trust_as_template("private_ip_address")},
    )
    plugin._populate(_two_region_results(), plugin._settings())
    groups = _groups(plugin)
    assert groups["burst"] == ["i-0000000000000000a", "i-0000000000000000b", "i-0000000000000000c"]
    assert groups["burst_version_1_0"] == ["i-0000000000000000a", "i-0000000000000000b"]
    assert groups["burst_version_unknown"] == ["i-0000000000000000c"]
    assert groups["burst_type_g5_2xlarge"] == ["i-0000000000000000b"]
    assert groups["burst_zone_us_east_2b"] == ["i-0000000000000000c"]
    assert groups["burst_region_eu_central_1"] == ["i-0000000000000000a", "i-0000000000000000b"]
    assert groups["burst_market_spot"] == groups["burst"]
    assert groups["g6e"] == ["i-0000000000000000a", "i-0000000000000000c"]
    assert groups["name_burst_0a"] == ["i-0000000000000000a"]
    assert "burst_ready" not in groups  # health is off by default

    host = _vars(plugin, "i-0000000000000000a")
    assert host["burst_image_version"] == "1.0"
    assert host["burst_image_name"] == "burst-golden-v1.0"
    assert host["burst_spot_price"] == "1.17"
    assert host["burst_market"] == "spot"
    assert host["burst_region"] == "eu-central-1"
    assert host["burst_launch_time"] == LAUNCHED.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert 290 <= host["burst_uptime_seconds"] <= 400
    assert host["placement"] == {"availability_zone": "eu-central-1a", "region": "eu-central-1"}
    assert host["tags"] == {"Mode": "Burst", "Name": "burst-0a"}
    assert host["ansible_host"] == "10.0.0.7"
    assert "ami_launch_index" not in host
    assert _vars(plugin, "i-0000000000000000b")["burst_spot_price"] is None  # no price for its type and zone


def test_all_instance_vars_as_aws_ec2_sets_them():
    plugin = _plugin(instance_vars="all", hostnames=["instance-id"])
    plugin._populate(_two_region_results(), plugin._settings())
    assert _vars(plugin, "i-0000000000000000a")["ami_launch_index"] == 0


def test_host_names_follow_the_preferences():
    plugin = _plugin(
        hostnames=[
            "dns-name",  # empty in these instances: skipped
            {"name": "tag:Name", "prefix": "burst_region", "separator": "-"},
        ]
    )
    plugin._populate(_two_region_results(), plugin._settings())
    assert sorted(plugin.inventory.hosts) == ["eu-central-1-burst-0a", "eu-central-1-burst-0b", "us-east-2-burst-0c"]


def test_an_instance_without_the_first_source_goes_on_to_the_next():
    # No instance has a public address; one has one: the others are named by the next source, never "ip-address".
    results = _two_region_results()
    results[0]["instances"][0]["PublicIpAddress"] = "192.0.2.10"
    plugin = _plugin(hostnames=["ip-address", "instance-id"])
    plugin._populate(results, plugin._settings())
    assert sorted(plugin.inventory.hosts) == ["192.0.2.10", "i-0000000000000000b", "i-0000000000000000c"]


def test_fields_the_host_names_need_are_kept_with_the_burst_instance_vars():
    plugin = _plugin(hostnames=["network-interface.addresses.private-ip-address", "instance-id"], spot_prices=False)
    client = _client()
    settings = plugin._settings()
    instance = _instance(
        "i-0000000000000000a",
        NetworkInterfaces=[{"PrivateIpAddresses": [{"PrivateIpAddress": "10.0.0.7"}], "PrivateIpAddress": "10.0.0.7"}],
    )
    with Stubber(client) as stubber:
        stubber.add_response("describe_instances", {"Reservations": [{"Instances": [instance]}]})
        stubber.add_response("describe_images", {"Images": []})
        result = plugin._query_region(client, "eu-central-1", settings["queries"], settings)
    assert "NetworkInterfaces" in result["instances"][0]
    plugin._populate(_results(("eu-central-1", result["instances"], {}, [])), settings)
    assert list(plugin.inventory.hosts) == ["10.0.0.7"]
    assert "network_interfaces" not in _vars(plugin, "10.0.0.7")  # a source, not a host variable


def test_hostvars_prefix_and_suffix_leave_the_burst_variables_alone():
    plugin = _plugin(
        hostnames=["instance-id"],
        hostvars_prefix="ec2_",
        hostvars_suffix="_x",
        keyed_groups=[{"key": trust_as_template("ec2_instance_type_x"), "prefix": "t"}],
    )
    plugin._populate(_two_region_results(), plugin._settings())
    host = _vars(plugin, "i-0000000000000000a")
    assert host["ec2_instance_type_x"] == "g6e.xlarge" and "instance_type" not in host
    assert host["burst_region"] == "eu-central-1"
    groups = _groups(plugin)
    assert groups["t_g5_2xlarge"] == ["i-0000000000000000b"]
    assert groups["burst_type_g5_2xlarge"] == ["i-0000000000000000b"]  # the burst groups still work


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"hostnames": ["ip_address"]}, "unknown source 'ip_address' in entry 1"),
        ({"hostnames": ["instance-id", {"name": "public-address"}]}, "unknown source 'public-address' in the name"),
        ({"hostnames": [{"name": "instance-id", "sep": "-"}]}, "entry 1 has unknown keys sep"),
        ({"hostnames": [{"prefix": "x"}]}, "without a 'name' key"),
        ({"hostnames": ["tag:"]}, "names no tag"),
        ({"hostnames": ["tag:=x"]}, "names no tag"),
        ({"hostnames": ["dns-name |"]}, "without a filter"),
        ({"hostnames": [3]}, "must be a string or a dictionary"),
        ({"hostnames": [{"name": "instance-id", "separator": 1}]}, "separator of entry 1 must be a string"),
        ({"hostnames": "instance-id"}, "hostnames must be a list"),
        ({"include_filters": ["tag:Name=x"]}, "include_filters: each entry must be a dictionary"),
        ({"exclude_filters": [["x"]]}, "exclude_filters: each entry must be a dictionary"),
        ({"hostvars_prefix": 3}, "hostvars_prefix must be a string"),
    ],
)
def test_bad_options_are_refused_with_a_clear_message(options, message):
    with pytest.raises(AnsibleError, match=re.escape(message)):
        _plugin(**options)._settings()


def test_a_failing_hostname_filter_names_the_source():
    plugin = _plugin(hostnames=["instance-id | no_such_filter"])
    with pytest.raises(AnsibleError, match=re.escape("could not apply 'instance-id | no_such_filter'")):
        plugin._populate(_two_region_results(), plugin._settings())


def test_bad_settings_are_refused():
    with pytest.raises(AnsibleError, match="Unknown health options: interval"):
        _plugin(health={"enabled": True, "interval": 3})._settings()
    with pytest.raises(AnsibleError, match="more than 0 seconds"):
        _plugin(health={"enabled": True, "timeout": 0})._settings()


def test_health_probes_run_at_once_and_group_the_hosts():
    hosts = [f"i-{n:017x}" for n in range(30)]
    with HealthStub() as stub:
        # Per host: the first 10 ready, the next 10 loading, the last 10 hang. Only loopback is contacted.
        compose = {
            "burst_health_url": trust_as_template(
                f"'http://127.0.0.1:{stub.port}/' ~ "
                "(['ready', 'loading', 'hang'][(instance_id[2:] | int(base=16)) // 10]) ~ '/' ~ instance_id"
            )
        }
        plugin = _plugin(hostnames=["instance-id"], compose=compose, health={"enabled": True, "timeout": 1.0})
        results = _results(("eu-central-1", [_instance(h) for h in hosts], {}, []))
        start = time.monotonic()
        plugin._populate(results, plugin._settings())
        elapsed = time.monotonic() - start
    groups = _groups(plugin)
    assert groups["burst_ready"] == hosts[:10]
    assert groups["burst_starting"] == hosts[10:20]
    assert groups["burst_unreachable"] == hosts[20:]
    assert _vars(plugin, hosts[0])["burst_health"] == "ready"
    assert "timed out" in _vars(plugin, hosts[-1])["burst_health_detail"]
    # Ten hanging hosts cost one timeout, not ten.
    assert elapsed < 2 * 1.0


def test_health_url_template_uses_the_host_fields():
    with HealthStub() as stub:
        plugin = _plugin(
            hostnames=["instance-id"],
            health={"enabled": True, "timeout": 1.0, "url": f"http://127.0.0.1:{stub.port}/ready/{{instance_id}}"},
        )
        plugin._populate(_two_region_results(), plugin._settings())
    assert _groups(plugin)["burst_ready"] == ["i-0000000000000000a", "i-0000000000000000b", "i-0000000000000000c"]


def _constructed_plugin():
    return _plugin(
        hostnames=["instance-id"],
        compose={
            "ansible_host": trust_as_template("private_ip_address"),
            "short": trust_as_template("instance_id[-4:]"),
            "broken": trust_as_template("tags.Missing.deeper"),
        },
        groups={
            "g6e": trust_as_template("instance_type == 'g6e.xlarge'"),
            "odd": trust_as_template("(instance_id[-1:] | int(base=16)) % 2 == 1"),
        },
        keyed_groups=[
            {"key": trust_as_template("tags.Name"), "prefix": "name"},
            {"key": trust_as_template("tags.Team | default('')"), "prefix": "team", "default_value": "none"},
            {"key": trust_as_template("placement.availability_zone"), "parent_group": "zones"},
        ],
    )


def _fleet_results(count=40):
    instances = [
        _instance(f"i-{n:017x}", instance_type=("g6e.xlarge", "g5.2xlarge")[n % 2], Placement={"AvailabilityZone": "z"})
        for n in range(count)
    ]
    return _results(("eu-central-1", instances, {}, []))


def _everything(plugin):
    # The uptime is the only variable that depends on when the run was.
    variables = {
        name: {k: v for k, v in _vars(plugin, name).items() if k != "burst_uptime_seconds"}
        for name in plugin.inventory.hosts
    }
    return _groups(plugin), variables


def test_each_expression_is_compiled_once_per_run_with_the_same_result(monkeypatch):
    from ansible_collections.burst.golden_ami.plugins.inventory import burst_ec2

    # Bare variable paths go through Jinja too here (they have their own test in test_burst_ec2_bare_paths.py).
    def no_bare_paths():
        monkeypatch.setattr(burst_ec2, "bare_path", lambda expression: None)

    # Without the cache: ansible-core's own behaviour, compiled for every host.
    no_bare_paths()
    monkeypatch.setattr(burst_ec2, "AnsibleTemplateExpression", None)
    uncached = _constructed_plugin()
    uncached._populate(_fleet_results(), uncached._settings())
    monkeypatch.undo()

    no_bare_paths()
    plugin = _constructed_plugin()
    environment = plugin.templar._engine.environment
    compile_expression = environment.compile_expression
    compiled = []

    def spy(source, *args, **kwargs):
        compiled.append(str(source))
        return compile_expression(source, *args, **kwargs)

    monkeypatch.setattr(environment, "compile_expression", spy)
    plugin._populate(_fleet_results(), plugin._settings())
    # 40 hosts, 8 expressions: each compiled once.
    assert sorted(compiled) == sorted(set(compiled))
    assert len(compiled) == 8
    assert _everything(plugin) == _everything(uncached)
    groups = _groups(plugin)
    assert len(groups["g6e"]) == 20 and len(groups["odd"]) == 20 and len(groups["team_none"]) == 40
    assert "broken" not in _vars(plugin, "i-00000000000000000")
    # The engine is left as it was: a second run compiles again.
    assert "_compile_expression" not in vars(plugin.templar._engine)


def test_a_strict_error_still_names_the_host_with_the_cache():
    plugin = _plugin(
        hostnames=["instance-id"], strict=True, keyed_groups=[{"key": trust_as_template("tags.Team"), "prefix": "t"}]
    )
    with pytest.raises(
        AnsibleError, match=re.escape("Could not generate group for host i-0000000000000000a from tags.Team")
    ):
        plugin._populate(_two_region_results(), plugin._settings())
    assert "_compile_expression" not in vars(plugin.templar._engine)


def test_the_tests_option_defaults_are_the_documented_ones():
    documented = subprocess.run(
        [str(Path(sys.executable).parent / "ansible-doc"), "-t", "inventory", "--json", "burst.golden_ami.burst_ec2"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    options = json.loads(documented.stdout)["burst.golden_ami.burst_ec2"]["doc"]["options"]
    for name, value in BURST_EC2_DEFAULTS.items():
        assert options[name].get("default") == value, name
