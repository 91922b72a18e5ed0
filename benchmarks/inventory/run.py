"""Benchmark: burst_ec2 against amazon.aws.aws_ec2 on the same moto world, in the same run.

The world: in each of two regions, 1,000 burst spot instances (tagged
Mode=Burst, two golden image versions, two instance types, three zones) and
noise the inventories must leave out (on-demand instances without the tag,
spot instances of another mode, terminated burst instances).

1. ``ansible-inventory --list`` with burst_ec2 and with amazon.aws.aws_ec2
   configured to give the same hosts and groups, alternately, ``--rounds``
   times each; the script checks that both give the same hosts and the same
   members in every burst group, and reports each one's median wall time.
2. Health: 200 of those hosts, of which 40 hang, probed through loopback
   stand-ins (``compose`` points each host's URL at them; moto's addresses
   are never contacted). Reports the wall time with and without health.

Run from the repository root (see benchmarks/inventory/README.md):

    .venv/bin/python benchmarks/inventory/run.py
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO / "tests"), str(REPO / ".venv" / "collections")]

import boto3  # noqa: E402

from ansible_collections.burst.golden_ami.plugins.module_utils._health import probe_health_many  # noqa: E402
from localworld.health_stub import HealthStub  # noqa: E402
from localworld.inventory_options import burst_ec2_options  # noqa: E402
from localworld.moto import MotoServer  # noqa: E402

REGIONS = ("eu-central-1", "us-east-2")
BASE_IMAGE_NAME = "amzn2-ami-hvm-2.0.20180810-x86_64-gp2"
BURST_TYPES = ("g6e.xlarge", "g5.2xlarge")
VERSIONS = ("1.0", "1.1")
BATCH = 250
HEALTH_HOSTS = 200
HEALTH_HANGING = 40
BURST_GROUPS_PREFIXES = ("burst", "burst_version_", "burst_type_", "burst_zone_", "burst_region_", "burst_market_")


def log(message):
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def build_world(endpoint, per_region, noise):
    """Create the instances; returns the ids of the burst instances that the health run probes, and which hang."""
    health_ids, hanging_ids = [], []
    for region in REGIONS:
        ec2 = boto3.client("ec2", region_name=region, endpoint_url=endpoint)
        base = ec2.describe_images(Owners=["amazon"], Filters=[{"Name": "name", "Values": [BASE_IMAGE_NAME]}])
        base_id = base["Images"][0]["ImageId"]
        builder = ec2.run_instances(ImageId=base_id, MinCount=1, MaxCount=1, InstanceType="t3.micro")
        builder_id = builder["Instances"][0]["InstanceId"]
        images = {}
        for version in VERSIONS:
            image_id = ec2.create_image(InstanceId=builder_id, Name=f"burst-golden-v{version}")["ImageId"]
            ec2.create_tags(Resources=[image_id], Tags=[{"Key": "Version", "Value": version}])
            images[version] = image_id
        ec2.terminate_instances(InstanceIds=[builder_id])
        subnets = [s["SubnetId"] for s in ec2.describe_subnets()["Subnets"]]

        def run(count, image, instance_type, subnet, tags, spot, ec2=ec2):
            params = {
                "ImageId": image,
                "MinCount": count,
                "MaxCount": count,
                "InstanceType": instance_type,
                "SubnetId": subnet,
            }
            if tags:
                params["TagSpecifications"] = [
                    {"ResourceType": "instance", "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}
                ]
            if spot:
                params["InstanceMarketOptions"] = {"MarketType": "spot"}
            return [i["InstanceId"] for i in ec2.run_instances(**params)["Instances"]]

        made = 0
        batch_no = 0
        while made < per_region:
            count = min(BATCH, per_region - made)
            version = VERSIONS[batch_no % len(VERSIONS)]
            # ImageVersion on the instance lets aws_ec2 make the version groups; burst_ec2 reads the image's tag.
            tags = {"Mode": "Burst", "ImageVersion": version}
            ids = run(
                count,
                images[version],
                BURST_TYPES[batch_no % len(BURST_TYPES)],
                subnets[batch_no % len(subnets)],
                tags,
                spot=True,
            )
            if region == REGIONS[0] and not health_ids:
                health_ids = ids[:HEALTH_HOSTS]
                hanging_ids = health_ids[:HEALTH_HANGING]
                ec2.create_tags(Resources=health_ids, Tags=[{"Key": "HealthBench", "Value": "yes"}])
            made += count
            batch_no += 1
        log(f"{region}: {made} burst spot instances")
        if noise:
            run(noise // 2, base_id, "t3.large", subnets[0], {"Team": "web"}, spot=False)
            run(noise // 4, images[VERSIONS[0]], "g5.2xlarge", subnets[1], {"Mode": "Batch"}, spot=True)
            rest = noise - noise // 2 - noise // 4
            gone = run(rest, images[VERSIONS[0]], "g5.2xlarge", subnets[2], {"Mode": "Burst"}, spot=True)
            ec2.terminate_instances(InstanceIds=gone)
            log(f"{region}: {noise} noise instances")
    return health_ids, hanging_ids


def yaml_config(config):
    # JSON is YAML: no need for a YAML writer.
    return json.dumps(config, indent=2) + "\n"


def write_configs(directory, endpoint, health_url_template):
    common = {"regions": list(REGIONS), "endpoint_url": endpoint, "hostnames": ["instance-id"]}
    burst = dict(common, plugin="burst.golden_ami.burst_ec2")
    aws = dict(
        common,
        plugin="amazon.aws.aws_ec2",
        filters={"tag:Mode": "Burst", "instance-state-name": ["pending", "running"]},
        groups={"burst": "true"},
        keyed_groups=[
            {"key": "tags.ImageVersion", "prefix": "burst_version"},
            {"key": "instance_type", "prefix": "burst_type"},
            {"key": "placement.availability_zone", "prefix": "burst_zone"},
            {"key": "placement.region", "prefix": "burst_region"},
            {"key": "instance_lifecycle | default('on-demand')", "prefix": "burst_market"},
        ],
    )
    health_common = dict(
        burst,
        regions=[REGIONS[0]],
        filters={"tag:HealthBench": "yes"},
        compose={"burst_health_url": health_url_template},
    )
    # aws_ec2's usual settings, the same for both: Jinja keyed groups and compose for every host.
    style = {
        "hostnames": ["instance-id"],
        "keyed_groups": [
            {"key": "instance_type", "prefix": "type"},
            {"key": "placement.availability_zone", "prefix": "zone"},
        ],
        "compose": {"ansible_host": "private_ip_address"},
    }
    files = {
        "bench.burst_ec2.yml": burst,
        "bench.aws_ec2.yml": aws,
        "style.burst_ec2.yml": dict(burst, **style),
        "style.aws_ec2.yml": dict(
            common,
            plugin="amazon.aws.aws_ec2",
            filters={"tag:Mode": "Burst", "instance-state-name": ["pending", "running"]},
            **style,
        ),
        "health-off.burst_ec2.yml": health_common,
        "health-on.burst_ec2.yml": dict(health_common, health={"enabled": True, "timeout": 2.0}),
    }
    paths = {}
    for name, config in files.items():
        path = Path(directory) / name
        path.write_text(yaml_config(config))
        paths[name] = path
    return paths


def cpu_seconds(pid):
    """User plus system CPU seconds of a running process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def inventory(path, env, server_pid=None, cpu=None):
    """Wall seconds and output of one ansible-inventory run; adds its CPU seconds (and the server's) to ``cpu``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    server_before = cpu_seconds(server_pid) if server_pid else 0.0
    start = time.monotonic()
    result = subprocess.run(
        [str(REPO / ".venv" / "bin" / "ansible-inventory"), "-i", str(path), "--list"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    elapsed = time.monotonic() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if result.returncode != 0:
        raise SystemExit(f"ansible-inventory -i {path} failed:\n{result.stderr[-4000:]}")
    if cpu is not None:
        cpu["client"].append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
        cpu["endpoint"].append(cpu_seconds(server_pid) - server_before if server_pid else 0.0)
    return elapsed, json.loads(result.stdout)


def burst_groups(data):
    groups = {}
    for name, value in data.items():
        if name == "_meta" or not isinstance(value, dict):
            continue
        if name == "burst" or name.startswith(BURST_GROUPS_PREFIXES[1:]):
            groups[name] = sorted(value.get("hosts", []))
    return groups


def style_view(data):
    """The keyed groups and ansible_host of the aws_ec2-style run, to compare the two plugins."""
    groups = {
        name: sorted(value.get("hosts", []))
        for name, value in data.items()
        if name != "_meta" and isinstance(value, dict) and name.startswith(("type_", "zone_"))
    }
    hosts = {name: variables.get("ansible_host") for name, variables in data["_meta"]["hostvars"].items()}
    return groups, hosts


POPULATE_OPTIONS = burst_ec2_options(hostnames=["instance-id"], spot_prices=False)


def populate_phase(endpoint, rounds):
    """CPU seconds of burst_ec2's population alone (2,000 hosts, aws_ec2-style Jinja), with and without the cache.

    The instances are read once; then the plugin's ``_populate`` runs on them in
    this process, alternately with its expression cache and without it (as
    ansible-core does by itself: each expression compiled for every host).
    """
    from ansible.inventory.data import InventoryData
    from ansible.parsing.dataloader import DataLoader
    from ansible.template import Templar, trust_as_template

    from ansible_collections.burst.golden_ami.plugins.inventory import burst_ec2

    results = []
    for region in REGIONS:
        ec2 = boto3.client("ec2", region_name=region, endpoint_url=endpoint)
        pages = ec2.get_paginator("describe_instances").paginate(
            Filters=[
                {"Name": "tag:Mode", "Values": ["Burst"]},
                {"Name": "instance-state-name", "Values": ["pending", "running"]},
            ]
        )
        instances = [
            i
            for page in pages
            for r in page["Reservations"]
            for i in r["Instances"]
            if i.get("InstanceLifecycle") == "spot"
        ]
        results.append({"region": region, "instances": instances, "images": {}, "spot_prices": []})
    options = dict(
        POPULATE_OPTIONS,
        keyed_groups=[
            {"key": trust_as_template("instance_type"), "prefix": "type"},
            {"key": trust_as_template("placement.availability_zone"), "prefix": "zone"},
        ],
        compose={"ansible_host": trust_as_template("private_ip_address")},
    )
    cpu = {"cached": [], "uncached": []}
    views = {}
    compiled_class = burst_ec2.AnsibleTemplateExpression
    for _round in range(rounds):
        for mode in ("uncached", "cached"):
            plugin = burst_ec2.InventoryModule()
            plugin.get_option = lambda name, hostvars=None: options[name]
            plugin.inventory = InventoryData()
            plugin.templar = Templar(loader=DataLoader())
            burst_ec2.AnsibleTemplateExpression = compiled_class if mode == "cached" else None
            try:
                settings = plugin._settings()
                start = time.process_time()
                plugin._populate(results, settings)
                cpu[mode].append(time.process_time() - start)
            finally:
                burst_ec2.AnsibleTemplateExpression = compiled_class
            views[mode] = (
                {g: sorted(h.name for h in group.hosts) for g, group in plugin.inventory.groups.items()},
                {h: host.vars.get("ansible_host") for h, host in plugin.inventory.hosts.items()},
            )
            log(f"populate {mode}: {cpu[mode][-1]:.2f}s CPU, {len(plugin.inventory.hosts)} hosts")
    if views["cached"] != views["uncached"]:
        raise SystemExit("the population differs with and without the expression cache")
    return {
        "hosts": sum(len(r["instances"]) for r in results),
        "uncached_cpu_s": [round(t, 2) for t in cpu["uncached"]],
        "cached_cpu_s": [round(t, 2) for t in cpu["cached"]],
        "uncached_cpu_median_s": round(statistics.median(cpu["uncached"]), 2),
        "cached_cpu_median_s": round(statistics.median(cpu["cached"]), 2),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-region", type=int, default=1000, help="burst spot instances per region")
    parser.add_argument("--noise", type=int, default=400, help="other instances per region")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each inventory")
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    args = parser.parse_args(argv)

    load_at_start = Path("/proc/loadavg").read_text().split()[:3]
    with MotoServer(region=REGIONS[0]) as moto, HealthStub() as stub, tempfile.TemporaryDirectory() as tmp:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "ANSIBLE_"))}
        env.update(moto.env())
        env.update(
            ANSIBLE_COLLECTIONS_PATH=str(REPO / ".venv" / "collections"),
            ANSIBLE_CONFIG=str(REPO / "ansible.cfg"),
            # Both plugins then give the same group names ("1.0" -> "1_0", "g6e.xlarge" -> "g6e_xlarge").
            ANSIBLE_TRANSFORM_INVALID_GROUP_CHARS="always",
            ANSIBLE_DEPRECATION_WARNINGS="false",
            ANSIBLE_INVENTORY_CACHE="false",
            ANSIBLE_LOCAL_TEMP=str(Path(tmp) / "ansible-tmp"),
        )
        os.environ.update(moto.env())
        start = time.monotonic()
        health_ids, hanging_ids = build_world(moto.endpoint_url, args.per_region, args.noise)
        log(f"world built in {time.monotonic() - start:.0f}s")
        hanging = json.dumps(sorted(hanging_ids))
        template = (
            f"'http://127.0.0.1:{stub.port}/' ~ ('hang' if instance_id in {hanging} else 'ready') ~ '/' ~ instance_id"
        )
        paths = write_configs(tmp, moto.endpoint_url, template)

        runs = (
            ("aws_ec2", "bench.aws_ec2.yml"),
            ("burst_ec2", "bench.burst_ec2.yml"),
            ("aws_ec2_style", "style.aws_ec2.yml"),
            ("burst_ec2_style", "style.burst_ec2.yml"),
        )
        times = {name: [] for name, _file in runs}
        cpu = {name: {"client": [], "endpoint": []} for name in times}
        outputs = {}
        server_pid = moto._process.pid
        loads = []
        for round_no in range(args.rounds):
            for name, file in runs:
                elapsed, data = inventory(paths[file], env, server_pid, cpu[name])
                loads.append(os.getloadavg()[0])
                times[name].append(elapsed)
                outputs[name] = data
                log(
                    f"round {round_no + 1}: {name} {elapsed:.2f}s wall, {cpu[name]['client'][-1]:.2f}s CPU, "
                    f"endpoint {cpu[name]['endpoint'][-1]:.2f}s CPU, {len(data['_meta']['hostvars'])} hosts"
                )

        hosts = {name: sorted(data["_meta"]["hostvars"]) for name, data in outputs.items()}
        groups = {name: burst_groups(data) for name, data in outputs.items()}
        same_hosts = hosts["burst_ec2"] == hosts["aws_ec2"]
        same_groups = groups["burst_ec2"] == groups["aws_ec2"]
        if not same_hosts or not same_groups:
            only = sorted(set(groups["burst_ec2"]) ^ set(groups["aws_ec2"]))
            raise SystemExit(f"the inventories differ: same hosts {same_hosts}, groups only in one: {only}")
        style_groups, style_hosts = style_view(outputs["burst_ec2_style"])
        if (style_groups, style_hosts) != style_view(outputs["aws_ec2_style"]) or len(style_hosts) != len(
            hosts["aws_ec2"]
        ):
            raise SystemExit("the aws_ec2-style inventories differ (keyed groups, hosts or ansible_host)")

        off, _off_data = inventory(paths["health-off.burst_ec2.yml"], env)
        on, health_data = inventory(paths["health-on.burst_ec2.yml"], env)
        ready = sorted(health_data.get("burst_ready", {}).get("hosts", []))
        unreachable = sorted(health_data.get("burst_unreachable", {}).get("hosts", []))
        if unreachable != sorted(hanging_ids) or len(ready) != len(health_ids) - len(hanging_ids):
            raise SystemExit(f"health groups are wrong: {len(ready)} ready, {len(unreachable)} unreachable")

        populate = populate_phase(moto.endpoint_url, args.rounds)

        # The probe phase alone, with the plugin's own function: the difference of two whole runs is noisy.
        urls = {h: stub.url("hang" if h in hanging_ids else "ready", f"/{h}") for h in health_ids}
        start = time.monotonic()
        probes = probe_health_many(urls, timeout=2.0)
        probe_s = time.monotonic() - start
        if sorted(h for h, (status, _detail) in probes.items() if status == "unreachable") != sorted(hanging_ids):
            raise SystemExit("the probe phase classified the hosts wrongly")

        burst_median = statistics.median(times["burst_ec2"])
        aws_median = statistics.median(times["aws_ec2"])
        results = {
            "hosts": len(hosts["burst_ec2"]),
            "burst_groups": len(groups["burst_ec2"]),
            "rounds": args.rounds,
            "aws_ec2_s": [round(t, 2) for t in times["aws_ec2"]],
            "burst_ec2_s": [round(t, 2) for t in times["burst_ec2"]],
            "aws_ec2_median_s": round(aws_median, 2),
            "burst_ec2_median_s": round(burst_median, 2),
            "ratio": round(burst_median / aws_median, 3),
            "aws_ec2_cpu_median_s": round(statistics.median(cpu["aws_ec2"]["client"]), 2),
            "burst_ec2_cpu_median_s": round(statistics.median(cpu["burst_ec2"]["client"]), 2),
            "aws_ec2_endpoint_cpu_median_s": round(statistics.median(cpu["aws_ec2"]["endpoint"]), 2),
            "burst_ec2_endpoint_cpu_median_s": round(statistics.median(cpu["burst_ec2"]["endpoint"]), 2),
            "style_keyed_groups": len(style_groups),
            "aws_ec2_style_s": [round(t, 2) for t in times["aws_ec2_style"]],
            "burst_ec2_style_s": [round(t, 2) for t in times["burst_ec2_style"]],
            "aws_ec2_style_median_s": round(statistics.median(times["aws_ec2_style"]), 2),
            "burst_ec2_style_median_s": round(statistics.median(times["burst_ec2_style"]), 2),
            "style_ratio": round(
                statistics.median(times["burst_ec2_style"]) / statistics.median(times["aws_ec2_style"]), 3
            ),
            "aws_ec2_style_cpu_median_s": round(statistics.median(cpu["aws_ec2_style"]["client"]), 2),
            "burst_ec2_style_cpu_median_s": round(statistics.median(cpu["burst_ec2_style"]["client"]), 2),
            "aws_ec2_style_endpoint_cpu_median_s": round(statistics.median(cpu["aws_ec2_style"]["endpoint"]), 2),
            "burst_ec2_style_endpoint_cpu_median_s": round(statistics.median(cpu["burst_ec2_style"]["endpoint"]), 2),
            "populate_phase": populate,
            "load_average_at_start": load_at_start,
            "load_average_at_end": Path("/proc/loadavg").read_text().split()[:3],
            "load_average_1min_at_end": round(os.getloadavg()[0], 2),
            "load_average_1min_after_each_run": [round(x, 2) for x in loads],
            "health_hosts": len(health_ids),
            "health_hanging": len(hanging_ids),
            "health_probe_timeout_s": 2.0,
            "health_off_s": round(off, 2),
            "health_on_s": round(on, 2),
            "health_cost_s": round(on - off, 2),
            "health_probe_phase_s": round(probe_s, 2),
        }
        print(json.dumps(results, indent=2))
        if args.json:
            args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
