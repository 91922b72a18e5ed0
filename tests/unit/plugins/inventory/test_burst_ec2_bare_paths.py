"""burst_ec2's shortcuts for large inventories, each checked against the generic path it stands for.

- A ``compose`` or ``keyed_groups`` expression that is a bare variable path
  (``private_ip_address``, ``placement.availability_zone``) is read from the
  host's variables without Jinja when it names a scalar that Jinja returns
  unchanged; anything else goes through Constructable as before.
- EC2's timestamps are parsed without dateutil when they have EC2's form.

The population runs on a real InventoryData with a real Templar, once with the
shortcut and once without it (``bare_path`` made to refuse everything), and
both must give the same groups, variables and errors.
"""

from __future__ import annotations

import datetime

import botocore.utils
import pytest
from ansible.errors import AnsibleError
from ansible.inventory.data import InventoryData
from ansible.parsing.dataloader import DataLoader
from ansible.template import Templar, trust_as_template

from ansible_collections.burst.golden_ami.plugins.inventory import burst_ec2
from localworld.inventory_options import burst_ec2_options

LAUNCHED = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc)
OPTIONS = burst_ec2_options(hostnames=["instance-id"], instance_vars="all", spot_prices=False)


def _instance(n, **extra):
    instance = {
        "InstanceId": f"i-{n:017x}",
        "ImageId": "ami-00000000000000001",
        "InstanceType": ("g6e.xlarge", "g5.2xlarge")[n % 2],
        "State": {"Code": 16, "Name": "running"},
        "Placement": {"AvailabilityZone": f"eu-central-1{'abc'[n % 3]}"},
        "PrivateIpAddress": f"10.0.0.{n}",
        "PublicDnsName": "" if n % 2 else f"ec2-{n}.example",
        "LaunchTime": LAUNCHED,
        "AmiLaunchIndex": n % 3,
        "CpuOptions": {"CoreCount": 4 + n % 2, "ThreadsPerCore": 2},
        "EbsOptimized": bool(n % 2),
        "KeyName": None if n % 3 == 0 else f"key-{n % 3}",
        "SecurityGroups": [{"GroupName": "default", "GroupId": "sg-1"}, {"GroupName": f"g{n % 2}", "GroupId": "sg-2"}],
        "InstanceLifecycle": "spot",
        "Tags": [
            {"Key": "Mode", "Value": "Burst"},
            {"Key": "Name", "Value": f"burst.node-{n}"},
            # Tag keys that are names of dictionary methods or Jinja globals.
            {"Key": "keys", "Value": "k"},
            {"Key": "range", "Value": "r"},
        ],
    }
    if n % 4 == 0:
        instance["Tags"].append({"Key": "Role", "Value": "db" if n % 8 == 0 else ""})
    instance.update(extra)
    return instance


def _results(count=12):
    return [
        {
            "region": "eu-central-1",
            "instances": [_instance(n) for n in range(count)],
            "images": {},
            "spot_prices": [],
        }
    ]


def _trusted(value):
    """Configuration as Ansible reads it from a file: every string trusted as a template."""
    if isinstance(value, str):
        return trust_as_template(value)
    if isinstance(value, dict):
        return {k: _trusted(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_trusted(v) for v in value]
    return value


def _plugin(**options):
    plugin = burst_ec2.InventoryModule()
    values = dict(OPTIONS, **{k: _trusted(v) for k, v in options.items()})
    plugin.get_option = lambda name, hostvars=None: values[name]
    plugin.inventory = InventoryData()
    plugin.templar = Templar(loader=DataLoader())
    plugin._vars = {}
    return plugin


def _outcome(monkeypatch, bare_paths, **options):
    """Groups and host variables (or the error) of one population, with or without the bare path shortcut."""
    if not bare_paths:
        monkeypatch.setattr(burst_ec2, "bare_path", lambda expression: None)
    plugin = _plugin(**options)
    compiled = []
    environment = plugin.templar._engine.environment
    compile_expression = environment.compile_expression

    def spy(source, *args, **kwargs):
        compiled.append(str(source))
        return compile_expression(source, *args, **kwargs)

    monkeypatch.setattr(environment, "compile_expression", spy)
    try:
        plugin._populate(_results(), plugin._settings())
    except AnsibleError as e:
        outcome = {"error": str(e)}
    else:
        groups = {
            name: (sorted(h.name for h in group.hosts), sorted(c.name for c in group.child_groups))
            for name, group in plugin.inventory.groups.items()
        }
        variables = {
            name: {k: v for k, v in host.get_vars().items() if k != "burst_uptime_seconds"}
            for name, host in plugin.inventory.hosts.items()
        }
        outcome = {"groups": groups, "vars": variables}
    monkeypatch.undo()
    return outcome, compiled


def _same_both_ways(monkeypatch, **options):
    generic, generic_compiled = _outcome(monkeypatch, False, **options)
    shortcut, shortcut_compiled = _outcome(monkeypatch, True, **options)
    assert shortcut == generic
    return shortcut, generic_compiled, shortcut_compiled


COMPOSE = {
    "ansible_host": "private_ip_address",
    "zone": "placement.availability_zone",
    "launch_index": "ami_launch_index",  # an int, 0 for some hosts
    "cores": "cpu_options.core_count",
    "ebs": "ebs_optimized",  # a bool
    "key": "key_name",  # None for some hosts
    "dns": "public_dns_name",  # empty for some hosts
    "groups_list": "security_groups",  # a list: Jinja's
    "launched": "launch_time",  # a datetime: Jinja's
    "missing": "tags.Missing",  # undefined: skipped
    "deep_missing": "placement.nothing.deeper",
    "range": "instance_type",  # a variable named as a Jinja global
    "spaced": " private_ip_address ",  # not a bare path: Jinja's
    "upper": "tags.Name | upper",
    "method_tag": "tags.range",
}

KEYED_GROUPS = [
    {"key": "instance_type", "prefix": ""},
    {"key": "placement.availability_zone", "prefix": "zone", "parent_group": "zones_{{ tags.Mode }}"},
    {"key": "tags.Role", "prefix": "role", "default_value": "norole"},  # missing, empty or "db"
    {"key": "public_dns_name", "prefix": "dns", "default_value": "nodns"},
    {"key": "public_dns_name", "prefix": "dns2", "trailing_separator": False},
    {"key": "key_name", "prefix": "key", "default_value": "nokey"},
    {"key": "tags.Name", "prefix": "name", "separator": "-"},
    {"key": "range", "prefix": "r"},  # the composed variable
    {"key": "groups_list", "prefix": "sg"},  # a list of dictionaries: Jinja's
    {"key": "tags", "prefix": "tag"},  # a dictionary: Jinja's
    {"key": "tags.Missing", "prefix": "missing"},
    {"key": "state.name"},
]


@pytest.mark.parametrize("leading_separator", [True, False])
def test_bare_paths_give_what_jinja_gives(monkeypatch, leading_separator):
    outcome, generic_compiled, shortcut_compiled = _same_both_ways(
        monkeypatch,
        compose=COMPOSE,
        keyed_groups=KEYED_GROUPS,
        groups={"g6e": "instance_type == 'g6e.xlarge'"},
        leading_separator=leading_separator,
    )
    groups, variables = outcome["groups"], outcome["vars"]
    host = variables["i-00000000000000004"]
    assert host["ansible_host"] == "10.0.0.4" and host["zone"] == "eu-central-1b" and host["cores"] == 4
    assert host["launch_index"] == 1 and host["ebs"] is False and host["key"] == "key-1"
    assert "missing" not in host and "deep_missing" not in host
    assert variables["i-00000000000000000"]["key"] is None
    assert groups["zone_eu_central_1a"][0] == [f"i-{n:017x}" for n in (0, 3, 6, 9)]
    assert groups["zones_Burst"][1] == ["zone_eu_central_1a", "zone_eu_central_1b", "zone_eu_central_1c"]
    assert "role_db" in groups and "role_norole" in groups and "dns_nodns" in groups
    assert "key_nokey" in groups and "name_burst_node_3" in groups and "r_g5_2xlarge" in groups
    # An empty key is no group without default_value, whatever trailing_separator says.
    assert "dns2_ec2_0_example" in groups and not any(g.startswith("dns2") and "ec2" not in g for g in groups)
    assert "running" in groups if not leading_separator else "_running" in groups
    assert ("g6e_xlarge" if not leading_separator else "_g6e_xlarge") in groups
    # The bare paths that name a scalar went without Jinja; the others did not.
    assert "private_ip_address" in generic_compiled and "private_ip_address" not in shortcut_compiled
    assert "placement.availability_zone" not in shortcut_compiled
    for other in ("security_groups", "launch_time", "tags.Missing", "tags", " private_ip_address "):
        assert other in shortcut_compiled, other


@pytest.mark.parametrize(
    ("compose", "keyed_groups"),
    [
        ({"x": "tags.Missing"}, []),
        ({"x": "placement.nothing.deeper"}, []),
        ({}, [{"key": "tags.Role", "prefix": "role"}]),  # missing on some hosts
        ({}, [{"key": "ami_launch_index", "prefix": "index"}]),  # 0: an empty key
        ({}, [{"key": "public_dns_name", "prefix": "dns"}]),  # "": an empty key
        ({}, [{"key": "key_name", "prefix": "key"}]),  # None: an empty key
    ],
)
def test_strict_errors_are_the_same(monkeypatch, compose, keyed_groups):
    outcome, _generic, _shortcut = _same_both_ways(monkeypatch, strict=True, compose=compose, keyed_groups=keyed_groups)
    assert "error" in outcome
    assert "i-0000000000000000" in outcome["error"]


@pytest.mark.parametrize("strict", [True, False])
@pytest.mark.parametrize("key", ["cpu_options.core_count", "ebs_optimized", "ami_launch_index"])
def test_keys_that_are_no_group_name_fail_the_same(monkeypatch, strict, key):
    # Constructable refuses an int or a bool as a group name, strict or not; with strict, a key of
    # 0 or False (the first host's) is an empty key.
    outcome, _generic, _shortcut = _same_both_ways(monkeypatch, strict=strict, keyed_groups=[{"key": key}])
    assert "Invalid group name format" in outcome["error"] or (strict and "resulted empty" in outcome["error"])


def test_strict_without_errors(monkeypatch):
    outcome, _generic, shortcut = _same_both_ways(
        monkeypatch,
        strict=True,
        compose={"ansible_host": "private_ip_address"},
        keyed_groups=[{"key": "instance_type", "prefix": "type"}, {"key": "key_name", "default_value": "none"}],
    )
    assert "error" not in outcome
    assert len(outcome["groups"]["type_g5_2xlarge"][0]) == 6 and len(outcome["groups"]["_none"][0]) == 4
    assert shortcut == []


def test_prefixed_variables_and_contrib_sanitization(monkeypatch):
    outcome, _generic, _shortcut = _same_both_ways(
        monkeypatch,
        hostvars_prefix="ec2_",
        use_contrib_script_compatible_sanitization=True,
        compose={"ansible_host": "ec2_private_ip_address", "plain": "private_ip_address"},
        keyed_groups=[{"key": "ec2_placement.availability_zone", "prefix": "zone"}],
    )
    assert len([group for group in outcome["groups"] if group.startswith("zone_eu")]) == 3
    assert outcome["vars"]["i-00000000000000001"]["ansible_host"] == "10.0.0.1"
    assert "plain" not in outcome["vars"]["i-00000000000000001"]


def test_extra_vars_still_win(monkeypatch):
    plugin = _plugin(use_extra_vars=True, compose={"ansible_host": "private_ip_address"})
    plugin._vars = {"private_ip_address": "192.0.2.1"}
    plugin._populate(_results(), plugin._settings())
    assert plugin.inventory.get_host("i-00000000000000001").get_vars()["ansible_host"] == "192.0.2.1"
    assert plugin._bare_paths is False  # only while populating


@pytest.mark.parametrize(
    ("expression", "parts"),
    [
        ("private_ip_address", ("private_ip_address",)),
        ("placement.availability_zone", ("placement", "availability_zone")),
        ("tags.Name", ("tags", "Name")),
        (" private_ip_address", None),
        ("tags['Name']", None),
        ("tags.Name | lower", None),
        ("tags.keys", None),  # a dictionary method
        ("tags.items", None),
        ("true", None),
        ("none", None),
        ("a.not", None),
        ("_private", None),
        ("tags._x", None),
        ("1abc", None),
        ("a..b", None),
    ],
)
def test_bare_path_recognizes_plain_names_only(expression, parts):
    assert burst_ec2.bare_path(trust_as_template(expression)) == parts
    # An expression that is not trusted is Jinja's (which refuses it).
    assert burst_ec2.bare_path(expression) is None


def test_plain_value_is_the_value_jinja_returns():
    from ansible._internal._datatag._tags import Origin

    origin = Origin(path="/inventory.yml")
    templar = Templar(loader=DataLoader())
    variables = {
        "s": "abc",
        "i": 3,
        "zero": 0,
        "f": 1.5,
        "b": False,
        "n": None,
        "tagged": origin.tag("from a file"),
        "trusted": trust_as_template("{{ 1 + 1 }}"),
        "template": "{{ 1 + 1 }}",
        "l": [1, 2],
        "d": {"inner": "x", "i": 7, "keys": "k", "l": ["y"]},
        "tagged_dict": origin.tag({"inner": origin.tag("y")}),
    }
    for expression in (
        "s",
        "i",
        "zero",
        "f",
        "b",
        "n",
        "tagged",
        "trusted",
        "template",
        "l",
        "d",
        "d.inner",
        "d.i",
        "d.l",
        "tagged_dict.inner",
        "s.x",
        "missing",
    ):
        parts = burst_ec2.bare_path(trust_as_template(expression))
        assert parts is not None, expression
        value = burst_ec2.plain_value(variables, parts)
        if value is burst_ec2._NOT_FOUND:
            continue
        templar.available_variables = variables
        assert value is templar.evaluate_expression(trust_as_template(expression)), expression
    found = {
        e
        for e in variables
        if burst_ec2.plain_value(variables, burst_ec2.bare_path(trust_as_template(e))) is not burst_ec2._NOT_FOUND
    }
    assert found == {"s", "i", "zero", "f", "b", "n", "tagged", "template"}


def test_each_timestamp_text_is_read_once_as_botocore_reads_it(monkeypatch):
    texts = [
        "2026-12-02T17:29:33.000Z",
        "2026-12-02T17:29:33.123456Z",
        "2026-12-02T17:29:33+01:00",
        "Wed, 02 Dec 2026 17:29:33 GMT",
        "1764696573",
    ]
    expected = [botocore.utils.parse_timestamp(text) for text in texts]
    read = []
    parse_timestamp = botocore.utils.parse_timestamp

    def spy(text):
        read.append(text)
        return parse_timestamp(text)

    monkeypatch.setattr(botocore.utils, "parse_timestamp", spy)
    parser = burst_ec2.timestamp_parser()
    for _round in range(3):
        parsed = [parser(text) for text in texts]
        assert parsed == expected
        assert [repr(p) for p in parsed] == [repr(e) for e in expected]
    assert read == texts
    with pytest.raises(ValueError):
        parser("2026-02-30T00:00:00.000Z")
    # A new run reads again.
    burst_ec2.timestamp_parser()(texts[0])
    assert read.count(texts[0]) == 2


def test_the_clients_read_timestamps_with_it():
    plugin = _plugin(regions=["eu-central-1"])
    plugin._frozen_credentials = {}
    plugin.get_option = lambda name, hostvars=None: {
        **OPTIONS,
        "endpoint_url": "http://127.0.0.1:9",
        "access_key": "testing",
        "secret_key": "testing",
    }.get(name)
    ((client, region),) = plugin._ec2_clients(["eu-central-1"])
    assert region == "eu-central-1"
    # The endpoint makes a response parser for each response, with the session's defaults.
    parser = client._endpoint._response_parser_factory.create_parser("ec2")._timestamp_parser
    assert parser.__wrapped__ is botocore.utils.parse_timestamp and parser.cache_info().maxsize == 4096


@pytest.mark.parametrize("strict", [True, False])
def test_a_tag_named_as_a_dictionary_method_is_the_method_for_jinja(monkeypatch, strict):
    # tags.keys is the dictionary's method, not the tag "keys" (valued "k"): an error, or no group.
    outcome, _generic, _shortcut = _same_both_ways(monkeypatch, strict=strict, keyed_groups=[{"key": "tags.keys"}])
    if strict:
        assert "Could not generate group for host i-00000000000000000 from tags.keys" in outcome["error"]
    else:
        assert not any(group.endswith("_k") for group in outcome["groups"])
