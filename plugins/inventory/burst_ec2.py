# -*- coding: utf-8 -*-

# Copyright: Contributors to the burst.golden_ami collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
name: burst_ec2
short_description: Burst instances of the golden image, grouped by image version, type, zone, market and health
version_added: 0.1.0
description:
  - Lists the burst instances of one or more regions, as amazon.aws's C(aws_ec2) does for any instance, with the
    options its users know (O(regions), O(filters), O(hostnames), C(compose), C(groups), C(keyed_groups),
    C(strict), the cache and credential options, C(endpoint_url)).
  - "By default, only instances tagged C(Mode=Burst) (O(burst_tags)), C(pending) or C(running)
    (O(instance_states)) and launched as spot (O(spot_only), checked on the instance's lifecycle field,
    since not every endpoint supports that filter)."
  - Hosts are grouped by golden image version (a tag of the image they were launched from), instance type,
    zone, region and market, and get the image version, launch time, uptime and current spot price as host
    variables, next to the instance's own fields in snake_case as C(aws_ec2) sets them.
  - Regions are queried in parallel; the images are described once per region, in one call.
  - With O(health.enabled), each host's healthcheck URL is probed, all at once with a short timeout, and hosts
    are grouped as ready, starting or unreachable. The URL is the host variable C(burst_health_url) when
    C(compose) sets it, else O(health.url) filled in with the host's fields.
  - The configuration file's name must end with C(burst_ec2.yml) or C(burst_ec2.yaml).
extends_documentation_fragment:
  - inventory_cache
  - constructed
  - amazon.aws.boto3
  - amazon.aws.common.plugins
  - amazon.aws.region.plugins
  - amazon.aws.assume_role.plugins
author:
  - burst.golden_ami maintainers (@burst)
options:
  plugin:
    description: The name of this plugin; the file is for this plugin only when it says so.
    required: true
    type: str
    choices: [burst.golden_ami.burst_ec2]
  regions:
    description:
      - Regions to list instances in, all queried at once. Empty means every region the account has.
    type: list
    elements: str
    default: []
  filters:
    description:
      - DescribeInstances filters, as for C(aws_ec2), added to those of O(burst_tags) and O(instance_states).
    type: dict
    default: {}
  burst_tags:
    description:
      - Tags every burst instance carries; each becomes a C(tag:KEY) filter.
    type: dict
    default:
      Mode: Burst
  instance_states:
    description:
      - Instance states to list, unless O(filters) has C(instance-state-name).
    type: list
    elements: str
    default: [pending, running]
  spot_only:
    description:
      - List spot instances only (instance lifecycle C(spot)), checked on each instance.
    type: bool
    default: true
  hostnames:
    description:
      - Host name sources, in order of preference, as for C(aws_ec2) - a DescribeInstances filter name such as
        C(dns-name), C(private-dns-name), C(private-ip-address) or C(instance-id), C(tag:KEY) for a tag's value,
        or a dictionary with C(name), C(prefix) and C(separator).
      - The first source that gives a value names the host; the default is C(dns-name), C(private-dns-name),
        then C(instance-id).
    type: list
    elements: raw
    default: []
  strict_permissions:
    description:
      - Fail on C(UnauthorizedOperation). When false, a region that refuses is skipped.
    type: bool
    default: true
  image_version_tag:
    description:
      - Tag of the image that holds the golden image version.
    type: str
    default: Version
  group_prefix:
    description:
      - Prefix of the groups this plugin makes.
    type: str
    default: burst_
  burst_groups:
    description:
      - Make the groups C(burst), C(<prefix>version_<version>), C(<prefix>type_<type>), C(<prefix>zone_<zone>),
        C(<prefix>region_<region>) and C(<prefix>market_<market>).
    type: bool
    default: true
  instance_vars:
    description:
      - Which of the instance's fields become host variables, in snake_case as C(aws_ec2) names them.
      - V(burst) sets C(instance_id), C(instance_type), C(image_id), C(state), C(placement), C(subnet_id), C(vpc_id),
        C(private_ip_address), C(public_ip_address), C(private_dns_name), C(public_dns_name), C(instance_lifecycle),
        C(launch_time), C(key_name), C(security_groups) and C(tags), which is what burst jobs use and keeps large
        inventories fast.
      - V(all) sets every field, as C(aws_ec2) does.
      - The C(burst_*) variables are set either way.
    type: str
    choices: [burst, all]
    default: burst
  spot_prices:
    description:
      - Read the current spot price of each instance type and zone (one request per region) into C(burst_spot_price).
    type: bool
    default: true
  health:
    description:
      - Healthcheck probes, off by default.
    type: dict
    default: {}
    suboptions:
      enabled:
        description: Probe each host and group it as C(<prefix>ready), C(<prefix>starting) or C(<prefix>unreachable).
        type: bool
        default: false
      url:
        description:
          - URL template, with the host's fields in braces, for example C(http://{private_ip_address}:8080/).
          - The host variable C(burst_health_url), set with C(compose), takes precedence.
        type: str
      timeout:
        description: Seconds one probe may take. All probes run at once, so the whole takes about this long.
        type: float
        default: 2.0
      max_workers:
        description: Most probes at once.
        type: int
        default: 256
"""

EXAMPLES = r"""
# inventory/prod.burst_ec2.yml: every running burst spot instance of two regions
plugin: burst.golden_ami.burst_ec2
regions: [eu-central-1, us-east-2]
hostnames: [private-ip-address, instance-id]

---
# With health: hosts land in burst_ready, burst_starting or burst_unreachable
plugin: burst.golden_ami.burst_ec2
regions: [eu-central-1]
health:
  enabled: true
  url: "http://{private_ip_address}:8080/"
  timeout: 2
keyed_groups:
  - key: tags.BurstJobId
    prefix: job
compose:
  ansible_host: private_ip_address
"""

import re  # noqa: E402
import threading  # noqa: E402
from concurrent.futures import ThreadPoolExecutor  # noqa: E402
from datetime import datetime, timezone  # noqa: E402
from functools import lru_cache  # noqa: E402

try:
    import boto3
    import botocore
    import botocore.config
except ImportError:
    pass  # handled by AWSInventoryBase

from ansible.module_utils.common.dict_transformations import _camel_to_snake  # noqa: E402
from ansible.module_utils.common.text.converters import to_text  # noqa: E402

from ansible_collections.amazon.aws.plugins.module_utils.tagging import boto3_tag_list_to_ansible_dict  # noqa: E402
from ansible_collections.amazon.aws.plugins.module_utils.transformation import ansible_dict_to_boto3_filter_list  # noqa: E402
from ansible_collections.amazon.aws.plugins.plugin_utils.botocore import get_aws_connection_info  # noqa: E402
from ansible_collections.amazon.aws.plugins.plugin_utils.inventory import AWSInventoryBase  # noqa: E402
from ansible_collections.burst.golden_ami.plugins.module_utils._launch import (  # noqa: E402
    HEALTH_READY,
    HEALTH_STARTING,
    HEALTH_UNREACHABLE,
    Launcher,
    LaunchError,
    as_datetime,
    error_code,
    health_url,
    image_version,
    probe_health_many,
)

# Host name sources that are not the snake_case form of an instance field.
HOSTNAME_ALIASES = {
    "dns-name": ("public_dns_name",),
    "ip-address": ("public_ip_address",),
    "availability-zone": ("placement", "availability_zone"),
    "launch-time": ("launch_time",),
}
DEFAULT_HOSTNAMES = ("dns-name", "private-dns-name", "instance-id")
# The instance fields set as host variables with instance_vars=burst.
BURST_INSTANCE_FIELDS = (
    "InstanceId",
    "InstanceType",
    "ImageId",
    "State",
    "Placement",
    "SubnetId",
    "VpcId",
    "PrivateIpAddress",
    "PublicIpAddress",
    "PrivateDnsName",
    "PublicDnsName",
    "InstanceLifecycle",
    "LaunchTime",
    "KeyName",
    "SecurityGroups",
    "Tags",
)
HEALTH_URL_VAR = "burst_health_url"
_GROUP_UNSAFE = re.compile(r"[^A-Za-z0-9_]")


@lru_cache(maxsize=None)
def _snake(key):
    return _camel_to_snake(key)


def snake_case(value):
    """``value`` with every dictionary key in snake_case, except the content of ``Tags``, which becomes a dict."""
    if isinstance(value, dict):
        result = {}
        for key, item in value.items():
            if key == "Tags":
                result["tags"] = boto3_tag_list_to_ansible_dict(item or [])
            else:
                result[_snake(key)] = snake_case(item)
        return result
    if isinstance(value, list):
        return [snake_case(item) for item in value]
    return value


def group_name(*parts):
    return _GROUP_UNSAFE.sub("_", "_".join(str(p) for p in parts if p is not None and p != ""))


class EndpointGate:
    """At most one request on the wire per endpoint URL; responses are parsed outside the gate.

    Regions have endpoints of their own on AWS, so their requests run fully in
    parallel. When several regions share one endpoint (``endpoint_url``: a proxy,
    an emulator), sending them all at once only makes them share the server;
    through the gate, one region's response is parsed while the next region's
    is being produced.
    """

    def __init__(self):
        self._locks = {}
        self._guard = threading.Lock()
        self._held = threading.local()

    def attach(self, client):
        with self._guard:
            lock = self._locks.setdefault(client.meta.endpoint_url, threading.Lock())

        def acquire(**_kwargs):
            lock.acquire()
            self._held.lock = lock

        def release(**_kwargs):
            held = getattr(self._held, "lock", None)
            if held is not None:
                self._held.lock = None
                held.release()

        service = client.meta.service_model.service_id.hyphenize()
        client.meta.events.register(f"before-send.{service}", acquire)
        # The body has been read by then; needs-retry also follows a failed send.
        client.meta.events.register(f"before-parse.{service}", release)
        client.meta.events.register(f"needs-retry.{service}", release)
        return client


class InventoryModule(AWSInventoryBase):
    NAME = "burst.golden_ami.burst_ec2"
    INVENTORY_FILE_SUFFIXES = ("burst_ec2.yml", "burst_ec2.yaml")

    # -- query

    def _server_filters(self):
        filters = dict(self.get_option("filters") or {})
        for key, value in (self.get_option("burst_tags") or {}).items():
            filters.setdefault(f"tag:{key}", value)
        if "instance-state-name" not in filters:
            filters["instance-state-name"] = list(self.get_option("instance_states"))
        return ansible_dict_to_boto3_filter_list(filters)

    def _ec2_clients(self, regions):
        """One EC2 client per region, all from one boto3 session, so that the EC2 API model is loaded once."""
        _region, endpoint_url, params = get_aws_connection_info(self)
        params = dict(params)
        params.update(self._frozen_credentials)
        profile = params.pop("profile_name", None)
        config = botocore.config.Config(user_agent_extra="burst.golden_ami.burst_ec2")
        extra_config = params.pop("aws_config", None)
        if extra_config is not None:
            config = config.merge(extra_config)
        gate = EndpointGate()
        try:
            session = boto3.session.Session(profile_name=profile)
            return [
                (
                    gate.attach(
                        session.client("ec2", region_name=region, endpoint_url=endpoint_url, config=config, **params)
                    ),
                    region,
                )
                for region in regions
            ]
        except (botocore.exceptions.BotoCoreError, ValueError) as e:
            self.fail_aws("Could not connect to AWS", exception=e)

    def _query_region(self, client, region, filters, settings):
        """Instances, their images and spot prices of one region, as plain data (cacheable)."""
        try:
            paginator = client.get_paginator("describe_instances")
            pages = paginator.paginate(Filters=filters, PaginationConfig={"PageSize": 1000}).build_full_result()
        except botocore.exceptions.ClientError as e:
            if error_code(e) == "UnauthorizedOperation" and not settings["strict_permissions"]:
                return {"region": region, "instances": [], "images": {}, "spot_prices": []}
            raise LaunchError(f"Failed to describe instances in {region}: {e}", exception=e) from e
        except botocore.exceptions.BotoCoreError as e:
            raise LaunchError(f"Failed to describe instances in {region}: {e}", exception=e) from e
        instances = []
        for reservation in pages.get("Reservations", []):
            for instance in reservation.get("Instances", []):
                if settings["spot_only"] and instance.get("InstanceLifecycle") != "spot":
                    continue
                if settings["instance_vars"] == "all":
                    instance["OwnerId"] = reservation.get("OwnerId")
                    instance["ReservationId"] = reservation.get("ReservationId")
                else:
                    # Only what the host variables use: a smaller cache, and less to copy.
                    instance = {k: instance[k] for k in BURST_INSTANCE_FIELDS if k in instance}
                instances.append(instance)
        launcher = Launcher(client, region=region)
        images = launcher.describe_images({i["ImageId"] for i in instances if i.get("ImageId")})
        prices = {}
        if settings["spot_prices"]:
            pairs = {
                (i.get("InstanceType"), (i.get("Placement") or {}).get("AvailabilityZone"))
                for i in instances
                if i.get("InstanceLifecycle") == "spot"
            }
            try:
                prices = launcher.spot_prices(pairs)
            except LaunchError as e:
                self.warn(f"No spot prices for {region}: {e.message}")
        return {
            "region": region,
            "instances": instances,
            "images": {
                image_id: {"ImageId": image_id, "Name": image.get("Name"), "Tags": image.get("Tags") or []}
                for image_id, image in images.items()
            },
            "spot_prices": [[t, z, p] for (t, z), p in prices.items()],
        }

    def _query(self, settings):
        filters = self._server_filters()
        regions = self._boto3_regions(service="ec2")
        # Clients are made here, one after another; the requests then run at once, one thread per region.
        clients = self._ec2_clients(regions)
        lock = threading.Lock()
        errors = []

        def one(args):
            client, region = args
            try:
                return self._query_region(client, region, filters, settings)
            except LaunchError as e:
                with lock:
                    errors.append(e)
                return None

        with ThreadPoolExecutor(max_workers=max(1, min(len(clients), 16)), thread_name_prefix="burst-ec2") as pool:
            results = [r for r in pool.map(one, clients) if r is not None]
        if errors:
            self.fail_aws(errors[0].message, exception=errors[0].exception)
        return results

    # -- host names

    def _hostname_source(self, source, host_vars):
        if source.startswith("tag:"):
            return host_vars["tags"].get(source[4:])
        path = HOSTNAME_ALIASES.get(source) or (source.replace("-", "_").replace(".", "_"),)
        value = host_vars
        for part in path:
            if not isinstance(value, dict) or part not in value:
                return source  # not a field: a literal, as aws_ec2 has it
            value = value[part]
        return value

    def _hostname(self, host_vars, preferences):
        for preference in preferences:
            if isinstance(preference, dict):
                name = self._hostname_source(preference["name"], host_vars)
                if name and preference.get("prefix"):
                    prefix = self._hostname_source(preference["prefix"], host_vars)
                    name = f"{prefix}{preference.get('separator', '_')}{name}" if prefix else name
            else:
                name = self._hostname_source(preference, host_vars)
            if name:
                return to_text(name)
        return None

    # -- populate

    def _host_vars(self, instance, region, image, spot_price, now, settings):
        if settings["instance_vars"] != "all":
            instance = {k: instance[k] for k in BURST_INSTANCE_FIELDS if k in instance}
        host_vars = snake_case(instance)
        placement = host_vars.setdefault("placement", {})
        placement["region"] = region
        market = "spot" if instance.get("InstanceLifecycle") == "spot" else "on-demand"
        launched = as_datetime(instance.get("LaunchTime"))
        host_vars.update(
            burst_region=region,
            burst_market=market,
            burst_image_version=image_version(image, settings["image_version_tag"]),
            burst_image_name=(image or {}).get("Name"),
            burst_launch_time=launched.strftime("%Y-%m-%dT%H:%M:%SZ") if launched else None,
            burst_uptime_seconds=max(0, int((now - launched).total_seconds())) if launched else None,
            burst_spot_price=spot_price if market == "spot" else None,
        )
        return host_vars

    def _add_burst_groups(self, name, host_vars, prefix):
        version = host_vars["burst_image_version"] or "unknown"
        for group in (
            "burst",
            group_name(f"{prefix}version", version),
            group_name(f"{prefix}type", host_vars.get("instance_type")),
            group_name(f"{prefix}zone", host_vars["placement"].get("availability_zone")),
            group_name(f"{prefix}region", host_vars["burst_region"]),
            group_name(f"{prefix}market", host_vars["burst_market"]),
        ):
            if group not in self._groups_made:
                self.inventory.add_group(group)
                self._groups_made.add(group)
            self.inventory.add_host(name, group=group)

    def _probe(self, hosts, health):
        """Probe every host's healthcheck at once; returns ``{name: (status, detail)}``."""
        template = health.get("url")
        urls = {}
        for name, host_vars in hosts:
            url = self.inventory.get_host(name).get_vars().get(HEALTH_URL_VAR)
            if not url and template:
                facts = {k: v for k, v in host_vars.items() if isinstance(v, (str, int, float))}
                facts.setdefault("availability_zone", host_vars["placement"].get("availability_zone"))
                url = health_url(template, facts)
            urls[name] = url
        return probe_health_many(
            urls, timeout=float(health.get("timeout", 2.0)), max_workers=int(health.get("max_workers", 256))
        )

    def _populate(self, results, settings):
        strict = settings["strict"]
        compose, groups, keyed_groups = settings["compose"], settings["groups"], settings["keyed_groups"]
        preferences = settings["hostnames"] or DEFAULT_HOSTNAMES
        prefix = settings["group_prefix"]
        now = datetime.now(timezone.utc)
        self._groups_made = set()
        hosts = []
        for result in results:
            region = result["region"]
            prices = {(t, z): p for t, z, p in result["spot_prices"]}
            for instance in sorted(result["instances"], key=lambda i: i["InstanceId"]):
                image = result["images"].get(instance.get("ImageId"))
                key = (instance.get("InstanceType"), (instance.get("Placement") or {}).get("AvailabilityZone"))
                host_vars = self._host_vars(instance, region, image, prices.get(key), now, settings)
                name = self._hostname(host_vars, preferences)
                if not name:
                    continue
                self.inventory.add_host(name)
                for var, value in host_vars.items():
                    self.inventory.set_variable(name, var, value)
                if compose:
                    self._set_composite_vars(compose, host_vars, name, strict=strict)
                hosts.append((name, host_vars))

        health = settings["health"]
        if health.get("enabled") and hosts:
            probes = self._probe(hosts, health)
            for status in (HEALTH_READY, HEALTH_STARTING, HEALTH_UNREACHABLE):
                self.inventory.add_group(f"{prefix}{status}")
            for name, host_vars in hosts:
                status, detail = probes[name]
                host_vars["burst_health"] = status
                host_vars["burst_health_detail"] = detail
                self.inventory.set_variable(name, "burst_health", status)
                self.inventory.set_variable(name, "burst_health_detail", detail)
                self.inventory.add_host(name, group=f"{prefix}{status}")

        for name, host_vars in hosts:
            if settings["burst_groups"]:
                self._add_burst_groups(name, host_vars, prefix)
            if groups:
                self._add_host_to_composed_groups(groups, host_vars, name, strict=strict)
            if keyed_groups:
                self._add_host_to_keyed_groups(keyed_groups, host_vars, name, strict=strict)

    def _settings(self):
        """Every option the population uses, read once."""
        names = (
            "strict",
            "compose",
            "groups",
            "keyed_groups",
            "hostnames",
            "group_prefix",
            "burst_groups",
            "health",
            "image_version_tag",
            "instance_vars",
            "spot_only",
            "spot_prices",
            "strict_permissions",
        )
        settings = {name: self.get_option(name) for name in names}
        settings["health"] = dict(settings["health"] or {})
        unknown = set(settings["health"]) - {"enabled", "url", "timeout", "max_workers"}
        if unknown:
            self.fail_aws(f"Unknown health options: {', '.join(sorted(unknown))}")
        if float(settings["health"].get("timeout", 2.0)) <= 0:
            self.fail_aws("health.timeout must be more than 0 seconds")
        for preference in settings["hostnames"] or []:
            if isinstance(preference, dict):
                if "name" not in preference:
                    self.fail_aws("A hostnames entry that is a dictionary needs a 'name' key")
            elif not isinstance(preference, str):
                self.fail_aws(f"Invalid hostnames entry {preference!r}: a string or a dictionary")
        return settings

    def parse(self, inventory, loader, path, cache=True):
        super().parse(inventory, loader, path, cache=cache)
        settings = self._settings()
        was_cached, results = self.get_cached_result(path, cache)
        if not was_cached:
            try:
                results = self._query(settings)
            except LaunchError as e:
                self.fail_aws(e.message, exception=e.exception)
        self._populate(results, settings)
        self.update_cached_result(path, cache, results)
