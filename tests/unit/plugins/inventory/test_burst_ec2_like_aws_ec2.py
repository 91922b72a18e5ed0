"""burst_ec2 side by side with amazon.aws's aws_ec2, on the same moto fleet.

One fleet is made on the local moto server (loopback) in two regions; each
case is one configuration that both plugins read, with burst_ec2's own
filtering switched off (no burst tags, aws_ec2's default states, every
market, every instance field, no burst groups). Both plugins run through
Ansible's plugin loader in one process (``inventory_runner.py``), and each
case expects the same hosts, the same groups with the same members and
children, and the same host variables (burst_ec2's ``burst_*`` variables
aside). Some cases also check what the option is for, so that agreeing on a
wrong answer fails too.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import boto3
import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[3]
REGIONS = ("eu-central-1", "us-east-2")
BASE_IMAGE_NAME = "amzn2-ami-hvm-2.0.20180810-x86_64-gp2"

# Each instance of the fleet, in each region: (key, public subnet, market, type, tags, stopped).
FLEET = (
    ("web1", True, "spot", "t3.micro", {"Mode": "Burst", "Name": "web-1", "Role": "db"}, False),
    ("web2", True, "on-demand", "t3.small", {"Mode": "Burst", "Name": "web-2"}, False),
    ("gpu1", False, "spot", "t3.micro", {"Mode": "Burst", "Name": "gpu-1"}, False),
    ("gpu2", False, "spot", "t3.small", {"Mode": "Batch", "Role": "db"}, False),
    ("gpu3", False, "spot", "t3.micro", {"Mode": "Burst", "Name": "gpu.node-3"}, False),
    ("bare", False, "on-demand", "t3.micro", {}, False),
    ("parked", False, "spot", "t3.small", {"Mode": "Burst", "Name": "parked-1"}, True),
)

# Cases for burst_ec2 alone, where aws_ec2 gives a name that is no host's.
BURST_ONLY = {
    "hostnames_jinja_next_source": {"hostnames": ["tag:Name | upper", "instance-id | replace('i-', 'host-')"]},
}

# burst_ec2 settings that make it list what aws_ec2 lists, with the same variables.
LIKE_AWS_EC2 = {
    "burst_tags": {},
    "instance_states": ["running", "pending", "stopping", "stopped"],
    "spot_only": False,
    "spot_prices": False,
    "burst_groups": False,
    "instance_vars": "all",
}

CASES = {
    # An instance without a public address goes on to the next source.
    "hostnames_next_source": {"hostnames": ["ip-address", "instance-id"]},
    "hostnames_tag": {"hostnames": ["tag:Name", "private-ip-address"]},
    "hostnames_tag_forms": {"hostnames": ["tag:Role=db", "tag:Name,Role", "instance-id"]},
    "hostnames_dict": {
        "hostnames": [
            {"name": "tag:Name", "prefix": "instance-type", "separator": "-"},
            {"name": "private-dns-name", "prefix": "aws"},
        ]
    },
    # aws_ec2 names a host "None" or "[]" when a source with a filter gives nothing: one that always gives a value.
    "hostnames_jinja": {"hostnames": ["private-dns-name | upper | replace('.', '_')"]},
    "allow_duplicated_hosts": {
        "allow_duplicated_hosts": True,
        "hostnames": [
            "instance-id",
            "tag:Name,Role",
            "ip-address",
            {"name": "private-ip-address", "prefix": "tag:Role"},
        ],
    },
    "include_and_exclude_filters": {
        "hostnames": ["instance-id"],
        "filters": {"tag:Mode": "Burst"},
        "include_filters": [{"tag:Role": "db"}, {"instance-state-name": "stopped"}],
        "exclude_filters": [{"instance-type": "t3.small", "tag:Mode": "Batch"}],
    },
    "include_filters_only": {
        "hostnames": ["instance-id"],
        "include_filters": [{"tag:Name": ["web-1", "gpu-1"]}, {"instance-type": "t3.micro"}],
        "exclude_filters": [{"tag:Role": "db"}, {"instance-state-name": "stopped"}],
    },
    "hostvars_prefix_and_suffix": {
        "hostnames": ["instance-id"],
        "hostvars_prefix": "aws_",
        "hostvars_suffix": "_ec2",
        "compose": {"ansible_host": "aws_private_ip_address_ec2"},
        "keyed_groups": [{"key": "aws_tags_ec2.Name", "prefix": "name"}],
        "groups": {"spot": "aws_instance_lifecycle_ec2 | default('') == 'spot'"},
    },
    "contrib_script_sanitization": {
        "hostnames": ["instance-id"],
        "use_contrib_script_compatible_sanitization": True,
        "keyed_groups": [
            {"key": "tags.Name", "prefix": "name"},
            {"key": "placement.availability_zone", "prefix": "zone"},
        ],
        "groups": {"web-hosts": "tags.Name | default('') is match('web-')"},
    },
    "constructed": {
        "hostnames": ["instance-id"],
        "strict": False,
        "leading_separator": False,
        "compose": {
            "ansible_host": "private_ip_address",
            "role": "tags.Role | default('none')",
            "broken": "tags.Missing.deeper",
        },
        "groups": {"stopped": "state.name == 'stopped'", "role_db": "role == 'db'", "broken_group": "nope.nope"},
        "keyed_groups": [
            {"key": "instance_type", "prefix": "type"},
            {"key": "tags.Role | default('')", "default_value": "norole", "prefix": "role"},
            {"key": "tags", "prefix": "tag", "trailing_separator": False},
            {"key": "placement.region", "parent_group": "regions"},
            {"key": "tags.Missing"},
        ],
    },
    "constructed_strict": {
        "hostnames": ["instance-id"],
        "strict": True,
        "keyed_groups": [{"key": "tags.Name", "prefix": "name"}],
    },
    # Bare variable paths (burst_ec2 reads those that name a scalar without Jinja): strings, ints, bools, lists,
    # empty and undefined values, with and without strict.
    "bare_paths": {
        "hostnames": ["instance-id"],
        "strict": False,
        "leading_separator": False,
        "compose": {
            "ansible_host": "private_ip_address",
            "zone": "placement.availability_zone",
            "launch_index": "ami_launch_index",
            "cores": "cpu_options.core_count",
            "ebs": "ebs_optimized",
            "groups_list": "security_groups",
            "missing": "tags.Missing",
            "public": "public_ip_address",
            "spaced": " private_dns_name ",
        },
        "keyed_groups": [
            {"key": "instance_type", "prefix": ""},
            {"key": "placement.availability_zone", "prefix": "zone", "separator": "-", "parent_group": "zones"},
            {"key": "tags.Role", "prefix": "role", "default_value": "norole"},
            {"key": "public_ip_address", "prefix": "public", "trailing_separator": False},
            {"key": "public_dns_name", "prefix": "dns", "default_value": "none"},
            {"key": "tags.Name", "prefix": "name"},
            {"key": "state.name"},
        ],
    },
    "bare_paths_strict": {
        "hostnames": ["instance-id"],
        "strict": True,
        "compose": {"ansible_host": "private_ip_address", "index": "ami_launch_index"},
        "keyed_groups": [
            {"key": "instance_type", "prefix": "type"},
            {"key": "placement.availability_zone", "prefix": "zone"},
            {"key": "state.name", "prefix": "state"},
        ],
    },
    "bare_paths_strict_undefined": {
        "hostnames": ["instance-id"],
        "strict": True,
        "compose": {"ansible_host": "private_ip_address", "role": "tags.Role"},
    },
}

# Cases where both plugins must fail.
EXPECTED_ERRORS = {"constructed_strict", "bare_paths_strict_undefined"}


def _build_fleet(endpoint_url):
    """The fleet in both regions; returns ``{region: {key: instance id}}`` and the public instances' addresses."""
    ids = {}
    for region in REGIONS:
        ec2 = boto3.client(
            "ec2",
            region_name=region,
            endpoint_url=endpoint_url,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",  # noqa: S106 - moto's fake credentials
        )
        image = ec2.describe_images(Owners=["amazon"], Filters=[{"Name": "name", "Values": [BASE_IMAGE_NAME]}])
        image_id = image["Images"][0]["ImageId"]
        vpc = ec2.create_vpc(CidrBlock="10.77.0.0/16")["Vpc"]["VpcId"]
        # A subnet of a new VPC does not map public addresses: its instances have none.
        private = ec2.create_subnet(VpcId=vpc, CidrBlock="10.77.1.0/24", AvailabilityZone=f"{region}b")["Subnet"]
        ids[region] = {}
        for key, public, market, instance_type, tags, stopped in FLEET:
            params = {"ImageId": image_id, "MinCount": 1, "MaxCount": 1, "InstanceType": instance_type}
            if not public:
                params["SubnetId"] = private["SubnetId"]
            if market == "spot":
                params["InstanceMarketOptions"] = {"MarketType": "spot"}
            if tags:
                params["TagSpecifications"] = [
                    {"ResourceType": "instance", "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}
                ]
            instance_id = ec2.run_instances(**params)["Instances"][0]["InstanceId"]
            if stopped:
                ec2.stop_instances(InstanceIds=[instance_id])
            ids[region][key] = instance_id
        # Terminated instances are listed by neither plugin.
        gone = ec2.run_instances(ImageId=image_id, MinCount=1, MaxCount=1, InstanceType="t3.micro")
        ec2.terminate_instances(InstanceIds=[gone["Instances"][0]["InstanceId"]])
    return ids


def _environment(moto_server, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "ANSIBLE_"))}
    env.update(moto_server.env())
    env.update(
        ANSIBLE_COLLECTIONS_PATH=str(REPO / ".venv" / "collections"),
        ANSIBLE_CONFIG=str(REPO / "ansible.cfg"),
        ANSIBLE_INVENTORY_CACHE="false",
        ANSIBLE_DEPRECATION_WARNINGS="false",
        ANSIBLE_TRANSFORM_INVALID_GROUP_CHARS="never",
        ANSIBLE_LOCAL_TEMP=str(tmp_path / "ansible-tmp"),
    )
    return env


def run_inventories(configs, env, directory):
    """``{name: result}`` of inventory_runner.py for ``{name: config}``; each file is named for its plugin."""
    paths = {}
    for name, config in configs.items():
        suffix = "burst_ec2" if config["plugin"].endswith(".burst_ec2") else "aws_ec2"
        path = Path(directory) / f"{name}.{suffix}.yml"
        path.write_text(json.dumps(config, indent=2) + "\n")  # JSON is YAML
        paths[name] = str(path)
    result = subprocess.run(
        [sys.executable, str(HERE / "inventory_runner.py"), *paths.values()],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    output = json.loads(result.stdout)
    return {name: output[path] for name, path in paths.items()}


@pytest.fixture(scope="module")
def fleet(moto_server, tmp_path_factory):
    """The fleet, and what both plugins make of every case (one run of the runner for all of them)."""
    moto_server.reset()
    tmp_path = tmp_path_factory.mktemp("inventories")
    ids = _build_fleet(moto_server.endpoint_url)
    common = {"regions": list(REGIONS), "endpoint_url": moto_server.endpoint_url}
    configs = {}
    for case, options in CASES.items():
        configs[f"{case}-aws"] = dict(common, plugin="amazon.aws.aws_ec2", **options)
        configs[f"{case}-burst"] = dict(common, plugin="burst.golden_ami.burst_ec2", **LIKE_AWS_EC2, **options)
    for case, options in BURST_ONLY.items():
        configs[f"{case}-burst"] = dict(common, plugin="burst.golden_ami.burst_ec2", **LIKE_AWS_EC2, **options)
    results = run_inventories(configs, _environment(moto_server, tmp_path), tmp_path)
    return ids, results


def _comparable(result, plugin):
    """Hosts with their variables (``burst_*`` left out) and groups.

    aws_ec2 puts every host in its group ``aws_ec2``; burst_ec2, with its groups
    off, leaves them in ``ungrouped``: those two are left out.
    """
    assert result["error"] is None, result["error"]
    hosts = {
        name: {k: v for k, v in variables.items() if not k.startswith("burst_")}
        for name, variables in result["hosts"].items()
    }
    groups = {}
    for name, group in result["groups"].items():
        if name in ("aws_ec2", "ungrouped"):
            continue
        children = [c for c in group["children"] if c not in ("aws_ec2", "ungrouped")]
        groups[name] = {"hosts": group["hosts"], "children": children}
    return hosts, groups


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(CASES))
def test_same_hosts_groups_and_variables_as_aws_ec2(fleet, case):
    _ids, results = fleet
    assert (results[f"{case}-aws"]["error"] is not None) == (case in EXPECTED_ERRORS), results[f"{case}-aws"]["error"]
    if case in EXPECTED_ERRORS:
        # Both fail, for the same reason.
        aws_error, burst_error = results[f"{case}-aws"]["error"], results[f"{case}-burst"]["error"]
        assert burst_error is not None
        assert burst_error.split(" for host ")[0] == aws_error.split(" for host ")[0]
        return
    aws_hosts, aws_groups = _comparable(results[f"{case}-aws"], "aws")
    burst_hosts, burst_groups = _comparable(results[f"{case}-burst"], "burst")
    assert aws_hosts, "aws_ec2 listed nothing: the case tests nothing"
    assert sorted(burst_hosts) == sorted(aws_hosts)
    assert burst_groups == aws_groups
    for name, variables in aws_hosts.items():
        assert burst_hosts[name] == variables, name


def _hosts(fleet, case):
    return sorted(fleet[1][f"{case}-burst"]["hosts"])


def _all_ids(ids, keys, regions=REGIONS):
    return sorted(ids[region][key] for region in regions for key in keys)


ACTIVE = ("web1", "web2", "gpu1", "gpu2", "gpu3", "bare")


def test_an_instance_without_the_source_goes_on_to_the_next(fleet):
    ids, results = fleet
    hosts = results["hostnames_next_source-burst"]["hosts"]
    assert "ip-address" not in hosts
    private = _all_ids(ids, ("gpu1", "gpu2", "gpu3", "bare", "parked"))
    assert sorted(h for h in hosts if h.startswith("i-")) == private
    public = [h for h in hosts if not h.startswith("i-")]
    assert len(public) == 4
    assert all(hosts[h]["public_ip_address"] == h for h in public)


def test_tag_sources_and_their_forms(fleet):
    ids, _results = fleet
    assert _hosts(fleet, "hostnames_tag").count("web-1") == 1  # the same name in both regions: one host
    forms = _hosts(fleet, "hostnames_tag_forms")
    assert "Role_db" in forms  # tag:Role=db names a matching host Role_db
    assert "web-2" in forms and "gpu.node-3" in forms  # tag:Name,Role: the first value
    assert _all_ids(ids, ("bare",)) == sorted(h for h in forms if h.startswith("i-"))


def test_dictionary_sources_with_prefix_and_separator(fleet):
    hosts = _hosts(fleet, "hostnames_dict")
    assert "t3.micro-web-1" in hosts and "t3.small-web-2" in hosts
    # The literal prefix joins with the default separator.
    assert any(h.startswith("aws_ip-10-77-1-") for h in hosts)


def test_jinja_filters_on_sources(fleet):
    ids, _results = fleet
    assert all(h.startswith("IP-10-") and "." not in h for h in _hosts(fleet, "hostnames_jinja"))
    hosts = _hosts(fleet, "hostnames_jinja_next_source")
    assert "WEB-1" in hosts and "GPU.NODE-3" in hosts
    assert "[]" not in hosts and "None" not in hosts
    assert f"host-{ids['eu-central-1']['bare'][2:]}" in hosts


def test_duplicated_hosts_give_every_name(fleet):
    ids, results = fleet
    hosts = results["allow_duplicated_hosts-burst"]["hosts"]
    for region in REGIONS:
        web1 = ids[region]["web1"]
        # instance-id, ip-address and Role_private-ip-address are this instance's own names.
        own = sorted(h for h, v in hosts.items() if v["instance_id"] == web1 and h not in ("web-1", "db"))
        assert len(own) == 3
        assert web1 in own and any(n.startswith("db_10.") for n in own) and any(n.startswith("54.") for n in own)
    # tag:Name,Role: both values; the instances of both regions share them, so there is one host each.
    assert "web-1" in hosts and "db" in hosts


def test_include_and_exclude_filters(fleet):
    ids, _results = fleet
    # filters (Mode=Burst, active) or Role=db (active) or stopped; minus the t3.small Batch instance.
    expected = _all_ids(ids, ("web1", "web2", "gpu1", "gpu3", "parked"))
    assert _hosts(fleet, "include_and_exclude_filters") == expected
    # Name web-1 or gpu-1, or t3.micro; minus Role=db and the stopped.
    assert _hosts(fleet, "include_filters_only") == _all_ids(ids, ("gpu1", "gpu3", "bare"))


def test_prefixed_host_variables(fleet):
    ids, results = fleet
    result = results["hostvars_prefix_and_suffix-burst"]
    host = result["hosts"][ids["us-east-2"]["gpu1"]]
    assert host["aws_instance_id_ec2"] == ids["us-east-2"]["gpu1"]
    assert "instance_id" not in host
    assert host["ansible_host"] == host["aws_private_ip_address_ec2"]
    assert host["burst_region"] == "us-east-2"  # burst_ec2's own variables keep their names
    assert result["groups"]["name_gpu_1"]["hosts"] == _all_ids(ids, ("gpu1",))


def test_contrib_script_sanitization_keeps_dashes(fleet):
    groups = fleet[1]["contrib_script_sanitization-burst"]["groups"]
    assert "name_web-1" in groups and "zone_eu-central-1b" in groups and "web-hosts" in groups
    assert "name_gpu_node-3" in groups  # the dot still goes


def test_constructed_features(fleet):
    ids, results = fleet
    result = results["constructed-burst"]
    groups = result["groups"]
    assert groups["role_db"]["hosts"] == _all_ids(ids, ("web1", "gpu2"))
    assert groups["role_norole"]["hosts"] == _all_ids(ids, ("web2", "gpu1", "gpu3", "bare", "parked"))
    assert groups["stopped"]["hosts"] == _all_ids(ids, ("parked",))
    assert "tag_Mode_Burst" in groups and "broken_group" not in groups
    # No prefix and no leading separator: the region alone, sanitized, under its parent group.
    assert groups["regions"]["children"] == ["eu_central_1", "us_east_2"]
    assert all("broken" not in v for v in result["hosts"].values())
    # strict: a missing key is an error that names the host.
    assert results["constructed_strict-burst"]["error"] is not None
    assert "Could not generate group" in results["constructed_strict-burst"]["error"]


def test_bare_paths(fleet):
    ids, results = fleet
    result = results["bare_paths-burst"]
    groups = result["groups"]
    web1 = ids["eu-central-1"]["web1"]
    host = result["hosts"][web1]
    assert host["ansible_host"] == host["private_ip_address"] and host["zone"] == "eu-central-1a"
    assert isinstance(host["launch_index"], int) and isinstance(host["ebs"], bool)
    assert host["groups_list"] == host["security_groups"] and "missing" not in host
    assert "public" not in result["hosts"][ids["eu-central-1"]["gpu1"]]  # no public address: undefined
    assert groups["role_db"]["hosts"] == _all_ids(ids, ("web1", "gpu2"))
    # No prefix and no leading separator: the value alone, sanitized.
    assert groups["t3_micro"]["hosts"] == _all_ids(ids, ("web1", "gpu1", "gpu3", "bare"))
    assert groups["running"]["hosts"] == _all_ids(ids, ACTIVE)
    zones = {v["placement"]["availability_zone"] for v in result["hosts"].values()}
    assert groups["zones"]["children"] == sorted(f"zone_{zone}".replace("-", "_") for zone in zones)
    strict = results["bare_paths_strict-burst"]
    assert strict["error"] is None and len(strict["groups"]["type_t3_micro"]["hosts"]) == 8
    assert "Could not set role" in results["bare_paths_strict_undefined-burst"]["error"]
