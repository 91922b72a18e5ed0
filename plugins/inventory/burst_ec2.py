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
    options its users know (O(regions), O(filters), O(include_filters), O(exclude_filters), O(hostnames),
    O(allow_duplicated_hosts), O(hostvars_prefix), O(hostvars_suffix),
    O(use_contrib_script_compatible_sanitization), C(compose), C(groups), C(keyed_groups), C(strict), the cache
    and credential options, C(endpoint_url)), with the same meaning.
  - "By default, only instances tagged C(Mode=Burst) (O(burst_tags)), C(pending) or C(running)
    (O(instance_states)) and launched as spot (O(spot_only), checked on the instance's lifecycle field,
    since not every endpoint supports that filter)."
  - Hosts are grouped by golden image version (a tag of the image they were launched from), instance type,
    zone, region and market, and get the image version, launch time, uptime and current spot price as host
    variables, next to the instance's own fields in snake_case as C(aws_ec2) sets them.
  - Regions are queried in parallel; the images are described once per region, in one call. Every query is
    retried on throttling and transient errors, with the collection's retry policy.
  - Each expression of C(compose), C(groups) and C(keyed_groups) is compiled once per run rather than once per
    host (ansible-core 2.19 compiles it for every host), with the same results, errors and C(strict) handling.
    One that is a bare variable path (C(private_ip_address), C(placement.availability_zone)) naming a string, number,
    boolean or null is read from the host's variables without Jinja, with the same result.
  - With O(health.enabled), each host's healthcheck URL is probed, all at once with a short timeout, and hosts
    are grouped as ready, starting, unreachable or draining. The URL is the host variable C(burst_health_url) when
    C(compose) sets it, else O(health.url) filled in with the host's fields. Each probed host gets
    C(burst_health) (V(ready), V(starting), V(unreachable) or V(draining)), C(burst_health_detail) and
    C(burst_boot_to_ready_s), the healthcheck's C(boot_to_ready_s) (seconds from boot to the first moment it was
    ready; V(null) while it has not been ready yet, or when it did not answer).
  - "A burst instance that received a spot interruption notice is draining: it goes to the group
    C(<prefix>draining), and gets the host variable C(burst_draining), a dictionary with C(reason)
    (V(spot-interruption)) and C(deadline) (when the instance is interrupted). A host is draining when its
    healthcheck answers 503 with a C(draining) object (then C(burst_draining) is that object, with C(action),
    C(noticed_at) and C(seconds_left) too), or, with or without probes, when the instance carries the tag
    C(BurstDraining), which it sets itself on notice, valued with the deadline. A draining host is in none of
    the groups ready, starting and unreachable; a host that is not draining has no C(burst_draining)."
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
      - With O(include_filters), these are one of the include queries.
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
      - Host name sources, in order of preference, as for C(aws_ec2). Each instance is named by the first source
        that gives it a value; an instance for which a source gives nothing (no public address for C(ip-address),
        an empty C(dns-name), no such tag) goes on to the next source, and an instance no source names is left out.
      - "A source is a DescribeInstances filter name that C(aws_ec2) knows (C(instance-id), C(dns-name),
        C(private-dns-name), C(ip-address), C(private-ip-address), C(availability-zone), C(owner-id),
        C(network-interface.addresses.private-ip-address) and the others of its table), C(tag:KEY) for a tag's value,
        C(tag:KEY=VALUE) for the name C(KEY_VALUE) when the tag has that value, C(tag:KEY1,KEY2) for the values of
        several tags, or one of this plugin's variables V(burst_region), V(burst_image_version),
        V(burst_image_name) and V(burst_market)."
      - "A source may end with Jinja filters, as in C(aws_ec2), for example V(tag:Name | lower)."
      - "A dictionary joins a prefix to the name, for example V({name: private-ip-address, prefix: tag:Role,
        separator: -})."
      - Unlike C(aws_ec2), a source that is none of these is an error rather than a literal host name (every
        instance would get the same name); only a O(hostnames.prefix) may be a literal. And a source with filters
        that gives an instance nothing goes on to the next source, where C(aws_ec2) names the host C(None) or
        C([]).
      - The default is C(dns-name), C(private-dns-name), then C(instance-id).
      - A name with a colon (an IPv6 address) is sanitized as a group name, as C(aws_ec2) does.
    type: list
    elements: raw
    default: []
    suboptions:
      name:
        description: The source of the name.
        type: str
        required: true
      prefix:
        description:
          - A source whose first value goes before the name, or a literal text. When it gives nothing, the name
            stands alone.
        type: str
      separator:
        description: What goes between O(hostnames.prefix) and O(hostnames.name).
        type: str
        default: _
  allow_duplicated_hosts:
    description:
      - Give each instance every name that every O(hostnames) entry gives (one host per name, with the same
        variables), as C(aws_ec2) does, instead of the first one only.
    type: bool
    default: false
  include_filters:
    description:
      - Lists of DescribeInstances filters, as for C(aws_ec2); an instance that matches any of them (or O(filters))
        is listed. Each entry is one more query per region, with the filters of O(burst_tags) and
        O(instance_states) added to it as to O(filters).
      - When O(filters) is empty and this is set, only the instances these filters match are listed.
    type: list
    elements: dict
    default: []
  exclude_filters:
    description:
      - Lists of DescribeInstances filters, as for C(aws_ec2); an instance that matches any of them is left out,
        whatever O(filters) and O(include_filters) say. Each entry is one more query per region, with the
        filters of O(burst_tags) and, unless it has C(instance-state-name), the states the include queries list.
    type: list
    elements: dict
    default: []
  hostvars_prefix:
    description:
      - Prefix of the host variables that come from the instance's fields (C(instance_id), C(tags), ...), as for
        C(aws_ec2); C(compose), C(groups) and C(keyed_groups) see the prefixed names. The C(burst_*) variables keep
        their names.
    type: str
  hostvars_suffix:
    description:
      - Suffix of the host variables that come from the instance's fields, as O(hostvars_prefix).
    type: str
  use_contrib_script_compatible_sanitization:
    description:
      - Sanitize the names of C(groups) and C(keyed_groups) groups (and host names with a colon) as the old
        C(ec2.py) inventory script did, keeping dashes, as C(aws_ec2) does with this option. Set
        C(TRANSFORM_INVALID_GROUP_CHARS) to C(never), or Ansible sanitizes them again.
      - This plugin's own groups (O(burst_groups)) are not affected.
    type: bool
    default: false
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
      - V(all) sets every field, as C(aws_ec2) does, with the reservation's C(owner_id), C(requester_id) and
        C(reservation_id).
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
        description:
          - Probe each host and group it as C(<prefix>ready), C(<prefix>starting), C(<prefix>unreachable) or
            C(<prefix>draining).
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
# With health: hosts land in burst_ready, burst_starting, burst_unreachable or burst_draining (spot
# interruption notice received: burst_draining.deadline says when it goes away); each has burst_boot_to_ready_s
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

---
# The aws_ec2 options: public address, else private address with the job id before it, else the id;
# instances of two jobs only, without their g5.xlarge instances; instance fields as ec2_*
plugin: burst.golden_ami.burst_ec2
regions: [eu-central-1]
hostnames:
  - ip-address
  - name: private-ip-address
    prefix: tag:BurstJobId
    separator: "-"
  - instance-id
include_filters:
  - tag:BurstJobId: job-a
  - tag:BurstJobId: job-b
exclude_filters:
  - instance-type: g5.xlarge
hostvars_prefix: ec2_
keyed_groups:
  - key: ec2_instance_type
    prefix: type
"""

import keyword  # noqa: E402
import re  # noqa: E402
import threading  # noqa: E402
from concurrent.futures import ThreadPoolExecutor  # noqa: E402
from functools import lru_cache  # noqa: E402

try:
    import boto3
    import botocore
    import botocore.config
    import botocore.utils
except ImportError:
    pass  # handled by AWSInventoryBase

from ansible.errors import AnsibleError  # noqa: E402
from ansible.module_utils.common.dict_transformations import _camel_to_snake  # noqa: E402
from ansible.module_utils.common.text.converters import to_native, to_text  # noqa: E402

try:
    from ansible.template import trust_as_template
except ImportError:  # ansible-core before 2.19: every template of the configuration is trusted
    trust_as_template = None

try:
    # ansible-core 2.19 compiles an expression anew for every evaluation: see ExpressionCache.
    from ansible._internal._templating._jinja_bits import AnsibleTemplateExpression
except ImportError:
    AnsibleTemplateExpression = None

try:
    # What a bare variable name resolves to without Jinja, in ansible-core 2.19: see bare_path and plain_value.
    from ansible._internal._datatag._tags import Origin, TrustedAsTemplate
    from ansible._internal._templating._lazy_containers import _AnsibleLazyTemplateDict
    from ansible.module_utils._internal._datatag import AnsibleTagHelper
except ImportError:
    TrustedAsTemplate = None

from ansible_collections.amazon.aws.plugins.inventory.aws_ec2 import (  # noqa: E402
    instance_data_filter_to_boto_attr,
    instance_meta_filter_to_boto_attr,
)
from ansible_collections.amazon.aws.plugins.module_utils.tagging import boto3_tag_list_to_ansible_dict  # noqa: E402
from ansible_collections.amazon.aws.plugins.module_utils.transformation import ansible_dict_to_boto3_filter_list  # noqa: E402
from ansible_collections.amazon.aws.plugins.plugin_utils.botocore import get_aws_connection_info  # noqa: E402
from ansible_collections.amazon.aws.plugins.plugin_utils.inventory import AWSInventoryBase  # noqa: E402
from ansible_collections.burst.golden_ami.plugins.module_utils._aws import (  # noqa: E402
    AwsError,
    error_code,
    paginate,
    utcnow,
)
from ansible_collections.burst.golden_ami.plugins.module_utils._health import (  # noqa: E402
    HEALTH_READY,
    HEALTH_STARTING,
    HEALTH_UNREACHABLE,
    health_url,
    probe_health_many,
)
from ansible_collections.burst.golden_ami.plugins.module_utils._launch import (  # noqa: E402
    Launcher,
    LaunchError,
    summarize_instance,
)

# Host name sources: aws_ec2's own table of DescribeInstances filter names and the instance fields they read,
# so that a source means here exactly what it means there.
HOSTNAME_FIELDS = {**instance_data_filter_to_boto_attr, **instance_meta_filter_to_boto_attr}
# Sources of this plugin's own: variables it sets (aws_ec2 has no such source).
HOSTNAME_BURST_VARS = ("burst_region", "burst_image_version", "burst_image_name", "burst_market")
DEFAULT_HOSTNAMES = ("dns-name", "private-dns-name", "instance-id")
# The reservation's fields that aws_ec2 copies into each instance.
RESERVATION_FIELDS = ("OwnerId", "RequesterId", "ReservationId")
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
# The health status, and group, of a host that received a spot interruption notice.
HEALTH_DRAINING = "draining"
# The tag a burst instance sets on itself when it receives a spot interruption notice; its value is the deadline.
DRAINING_TAG = "BurstDraining"
_GROUP_UNSAFE = re.compile(r"[^A-Za-z0-9_]")
_CONTRIB_SCRIPT_UNSAFE = re.compile(r"[^A-Za-z0-9_\-]")


@lru_cache(maxsize=None)
def _snake(key):
    return _camel_to_snake(key)


def snake_case(value, top=True):
    """``value`` with every dictionary key in snake_case, as aws_ec2 names host variables.

    The instance's own ``Tags`` (top level) become a dict; a ``Tags`` list further
    down is kept as it is, under the key ``tags``.
    """
    if isinstance(value, dict):
        result = {}
        for key, item in value.items():
            if key == "Tags":
                result["tags"] = boto3_tag_list_to_ansible_dict(item or []) if top else item
            else:
                result[_snake(key)] = snake_case(item, top=False)
        return result
    if isinstance(value, list):
        return [snake_case(item, top=False) for item in value]
    return value


def reported_draining(status, document):
    """The ``draining`` object of a healthcheck's answer that is not ready, else None."""
    if status == HEALTH_READY or not isinstance(document, dict):
        return None
    draining = document.get("draining")
    return draining if isinstance(draining, dict) else None


def boot_to_ready(document):
    """The healthcheck's ``boot_to_ready_s``: a number of seconds, or None."""
    value = document.get("boot_to_ready_s") if isinstance(document, dict) else None
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def group_name(*parts):
    return _GROUP_UNSAFE.sub("_", "_".join(str(p) for p in parts if p is not None and p != ""))


def contrib_script_group_name(name):
    """The group names of the old ec2.py inventory script: only characters outside ``[A-Za-z0-9_-]`` replaced."""
    return _CONTRIB_SCRIPT_UNSAFE.sub("_", name)


def _pick(value, key):
    """``value[key]``, across lists; empty values are dropped and a one-element list is its element."""
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        found = [item for item in (_pick(v, key) for v in value) if item]
    elif isinstance(value, dict):
        found = value.get(key)
    else:
        return None
    if isinstance(found, (list, tuple)) and len(found) == 1:
        return found[0]
    return found


# A compose or keyed_groups expression that is a bare (dotted) variable name, such as ``placement.availability_zone``.
_BARE_PATH = re.compile(r"[A-Za-z][A-Za-z0-9_]*(?:\.[A-Za-z][A-Za-z0-9_]*)*\Z")
# Names Jinja reads as something else than a variable (constants, operators), and Python's keywords.
_NOT_VARIABLE_NAMES = frozenset(keyword.kwlist) | {"true", "false", "none", "and", "or", "not", "in", "is", "if"}
# Scalar types Jinja returns unchanged when an expression names a variable that holds one.
_PLAIN_SCALARS = (str, int, float, bool, type(None))
_NOT_FOUND = object()


@lru_cache(maxsize=256)
def _bare_path(text):
    if not _BARE_PATH.match(text):
        return None
    parts = tuple(text.split("."))
    if any(part in _NOT_VARIABLE_NAMES for part in parts):
        return None
    # Jinja looks up ``a.b`` as an attribute of ``a`` before its item ``b``: a name that is an attribute of the
    # (lazy) dictionaries Jinja sees (``items``, ``keys``, ...) goes to Jinja.
    if any(hasattr(dict, part) or hasattr(_AnsibleLazyTemplateDict, part) for part in parts[1:]):
        return None
    return parts


def bare_path(expression):
    """The names of an expression that is a bare, trusted variable path (``placement.availability_zone``), or None.

    Only with ansible-core 2.19, whose evaluation of such a path :func:`plain_value` reproduces.
    """
    if TrustedAsTemplate is None or not isinstance(expression, str) or not TrustedAsTemplate.is_tagged_on(expression):
        return None
    return _bare_path(str(expression))


def plain_value(variables, parts):
    """The value Jinja gives for the variable path ``parts``, when it is a scalar that Jinja returns unchanged.

    That is a plain ``str``, ``int``, ``float``, ``bool`` or None, or a string tagged with its origin only, found
    by item lookups in dictionaries. Anything else (a missing or undefined name, a list, a dictionary, a
    template, a value with other tags) is ``_NOT_FOUND``: Jinja evaluates it, with its own errors.
    """
    value = variables
    for part in parts:
        if not isinstance(value, dict):
            return _NOT_FOUND
        value = value.get(part, _NOT_FOUND)
        if value is _NOT_FOUND:
            return _NOT_FOUND
    if type(value) in _PLAIN_SCALARS:
        return value
    if isinstance(value, str) and AnsibleTagHelper.tag_types(value) == {Origin}:
        return value
    return _NOT_FOUND


def timestamp_parser():
    """botocore's timestamp parser, that reads each text once (one parser per run).

    Each instance has several timestamps (launch, network interface and volume attachments), mostly the same
    ones, and dateutil's parsing is most of the cost of reading them.
    """
    return lru_cache(maxsize=4096)(botocore.utils.parse_timestamp)


class ExpressionCache:
    """Compile each Jinja expression once per run instead of once per host (a context manager).

    ansible-core 2.19's ``Constructable._compose`` and ``evaluate_conditional``
    compile the expression of a ``compose``, ``groups`` or ``keyed_groups``
    entry again for every host, which is most of their cost. Within the
    ``with`` block, the plugin's own template engine keeps what it compiled,
    keyed by the expression's text and the one compile-time option
    (``escape_backslashes``); evaluation, undefined values, errors, ``strict``
    and everything Constructable does with the results are unchanged. An
    expression that does not compile is not kept, so each error still names
    its own entry. Where ansible-core has no such engine (before 2.19), this
    does nothing.
    """

    def __init__(self, templar):
        engine = getattr(templar, "_engine", None)
        compile_expression = getattr(engine, "_compile_expression", None)
        self._engine = engine if compile_expression is not None and AnsibleTemplateExpression is not None else None
        self._compile_expression = compile_expression
        self._compiled = {}

    def __enter__(self):
        if self._engine is not None:
            self._engine._compile_expression = self._compile_once
        return self

    def __exit__(self, *exc_info):
        if self._engine is not None:
            vars(self._engine).pop("_compile_expression", None)
        self._compiled.clear()

    def _compile_once(self, expression, options):
        key = (str(expression), getattr(options, "escape_backslashes", None))
        compiled = self._compiled.get(key)
        if compiled is None:
            compiled = self._compile_expression(expression, options)
            if isinstance(compiled, AnsibleTemplateExpression):
                self._compiled[key] = compiled
        return compiled


class HostnameSource:
    """One host name source: a DescribeInstances filter name, ``tag:...``, a burst variable, or a literal.

    A source may end with Jinja filters (``tag:Name | lower``), as in aws_ec2.
    """

    def __init__(self, text, where, literal_ok):
        if not isinstance(text, str) or not text.strip():
            raise AnsibleError(f"hostnames: {where} must be a non-empty string, got {text!r}")
        self.text = text
        base, pipe, jinja = text.partition("|")
        base = base.strip()
        self.jinja = jinja.strip() if pipe else None
        if pipe and not self.jinja:
            raise AnsibleError(f"hostnames: {where} {text!r} has a '|' without a filter after it")
        self.kind = None
        if base.startswith("tag:"):
            spec = base[4:]
            if not spec or any(not part.partition("=")[0] for part in spec.split(",")):
                raise AnsibleError(
                    f"hostnames: {where} {text!r} names no tag; use tag:KEY, tag:KEY=VALUE or tag:KEY1,KEY2"
                )
            self.kind = "tag"
            self.single = "," not in spec
            self.tags = [(key, value if eq else None) for key, eq, value in (p.partition("=") for p in spec.split(","))]
        elif base in HOSTNAME_FIELDS:
            self.kind = "field"
            self.path = HOSTNAME_FIELDS[base]
        elif base in HOSTNAME_BURST_VARS:
            self.kind = "burst"
            self.var = base
        elif literal_ok:
            self.kind = "literal"
            self.literal = base
        else:
            raise AnsibleError(
                f"hostnames: unknown source {base!r} in {where}; use a DescribeInstances filter name "
                "(instance-id, dns-name, private-dns-name, ip-address, private-ip-address, ...), tag:KEY, "
                f"tag:KEY=VALUE, tag:KEY1,KEY2 or one of {', '.join(HOSTNAME_BURST_VARS)}"
            )

    @property
    def instance_field(self):
        """The top-level instance field this source reads, if any."""
        if self.kind == "field":
            return self.path[0]
        if self.kind == "tag":
            return "Tags"
        return None

    def raw(self, instance, burst_vars):
        if self.kind == "field":
            value = instance
            for key in self.path:
                value = _pick(value, key)
            return value
        if self.kind == "tag":
            tags = boto3_tag_list_to_ansible_dict(instance.get("Tags") or [])
            values = []
            for key, wanted in self.tags:
                if wanted is None:
                    if tags.get(key):
                        values.append(to_text(tags[key]))
                elif tags.get(key) == wanted:
                    values.append(f"{to_text(key)}_{to_text(wanted)}")
            if self.single:
                return values[0] if values else None
            return values
        if self.kind == "burst":
            return burst_vars.get(self.var)
        return self.literal


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

    def _server_filters(self, entry=None):
        """One DescribeInstances filter list: ``entry`` (O(filters) by default) and the burst tags and states."""
        filters = dict(self.get_option("filters") if entry is None else entry)
        for key, value in (self.get_option("burst_tags") or {}).items():
            filters.setdefault(f"tag:{key}", value)
        if "instance-state-name" not in filters:
            filters["instance-state-name"] = list(self.get_option("instance_states"))
        return filters

    def _queries(self):
        """The filter lists of the include and exclude queries, as aws_ec2 builds them, with the burst filters.

        O(filters) and each O(include_filters) entry is one include query; each
        O(exclude_filters) entry one exclude query, which looks at the states the
        include queries list.
        """
        include_filters = self.get_option("include_filters") or []
        exclude_filters = self.get_option("exclude_filters") or []
        for option, entries in (("include_filters", include_filters), ("exclude_filters", exclude_filters)):
            for entry in entries:
                if not isinstance(entry, dict):
                    raise AnsibleError(f"{option}: each entry must be a dictionary of filters, got {entry!r}")
        filters = self.get_option("filters") or {}
        entries = ([filters] if filters else []) + list(include_filters)
        include = [self._server_filters(entry) for entry in entries or [{}]]
        states = set()
        for query in include:
            value = query["instance-state-name"]
            states.update([value] if isinstance(value, str) else value)
        exclude = []
        for entry in exclude_filters:
            query = dict(entry)
            for key, value in (self.get_option("burst_tags") or {}).items():
                query.setdefault(f"tag:{key}", value)
            query.setdefault("instance-state-name", sorted(states))
            exclude.append(query)
        return {
            "include": [ansible_dict_to_boto3_filter_list(q) for q in include],
            "exclude": [ansible_dict_to_boto3_filter_list(q) for q in exclude],
        }

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
            session._session.get_component("response_parser_factory").set_parser_defaults(
                timestamp_parser=timestamp_parser()
            )
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

    @staticmethod
    def _describe_instances(client, region, filters):
        """Every page of one DescribeInstances query, with the collection's retry policy (throttling, 5xx)."""
        what = f"describe instances in {region}"
        params = {"Filters": filters, "PaginationConfig": {"PageSize": 1000}}
        return paginate(client, "describe_instances", what, error=LaunchError, **params)

    def _region_instances(self, client, region, queries):
        """The instances the include queries find and no exclude query finds, with their reservation's fields."""
        excluded = set()
        for filters in queries["exclude"]:
            for reservation in self._describe_instances(client, region, filters).get("Reservations", []):
                excluded.update(i["InstanceId"] for i in reservation.get("Instances", []))
        instances = []
        for filters in queries["include"]:
            for reservation in self._describe_instances(client, region, filters).get("Reservations", []):
                details = {
                    "OwnerId": reservation.get("OwnerId"),
                    "RequesterId": reservation.get("RequesterId", ""),
                    "ReservationId": reservation.get("ReservationId"),
                }
                for instance in reservation.get("Instances", []):
                    if instance["InstanceId"] in excluded:
                        continue
                    excluded.add(instance["InstanceId"])  # found by two include queries: listed once
                    instance.update(details)
                    instances.append(instance)
        return instances

    def _query_region(self, client, region, queries, settings):
        """Instances, their images and spot prices of one region, as plain data (cacheable)."""
        try:
            found = self._region_instances(client, region, queries)
        except LaunchError as e:
            if error_code(e.exception) == "UnauthorizedOperation" and not settings["strict_permissions"]:
                return {"region": region, "instances": [], "images": {}, "spot_prices": []}
            raise
        keep = settings["kept_fields"]
        instances = []
        for instance in found:
            if settings["spot_only"] and instance.get("InstanceLifecycle") != "spot":
                continue
            if keep is not None:
                # Only what the host variables and host names use: a smaller cache, and less to copy.
                instance = {k: instance[k] for k in keep if k in instance}
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
            except AwsError as e:
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
        queries = settings["queries"]
        regions = self._boto3_regions(service="ec2")
        # Clients are made here, one after another; the requests then run at once, one thread per region.
        clients = self._ec2_clients(regions)
        lock = threading.Lock()
        errors = []

        def one(args):
            client, region = args
            try:
                return self._query_region(client, region, queries, settings)
            except AwsError as e:
                with lock:
                    errors.append(e)
                return None

        with ThreadPoolExecutor(max_workers=max(1, min(len(clients), 16)), thread_name_prefix="burst-ec2") as pool:
            results = [r for r in pool.map(one, clients) if r is not None]
        if errors:
            self.fail_aws(errors[0].message, exception=errors[0].exception)
        return results

    # -- host names

    def _parse_hostnames(self, hostnames):
        """The O(hostnames) rules: ``(name source, prefix source or None, separator)`` each."""
        rules = []
        for n, entry in enumerate(hostnames or DEFAULT_HOSTNAMES):
            where = f"entry {n + 1}"
            if isinstance(entry, dict):
                unknown = set(entry) - {"name", "prefix", "separator"}
                if unknown:
                    raise AnsibleError(
                        f"hostnames: {where} has unknown keys {', '.join(sorted(map(str, unknown)))}; "
                        "a dictionary has name, prefix and separator"
                    )
                if "name" not in entry:
                    raise AnsibleError(f"hostnames: {where} is a dictionary without a 'name' key")
                separator = entry.get("separator", "_")
                if not isinstance(separator, str):
                    raise AnsibleError(f"hostnames: the separator of {where} must be a string")
                prefix = entry.get("prefix")
                rules.append(
                    (
                        HostnameSource(entry["name"], f"the name of {where}", literal_ok=False),
                        HostnameSource(prefix, f"the prefix of {where}", literal_ok=True) if prefix else None,
                        separator,
                    )
                )
            elif isinstance(entry, str):
                rules.append((HostnameSource(entry, where, literal_ok=False), None, "_"))
            else:
                raise AnsibleError(f"hostnames: {where} must be a string or a dictionary, got {entry!r}")
        return rules

    def _source_values(self, source, instance, burst_vars):
        """Every value of ``source`` for one instance, as text, filters applied; empty values left out."""
        value = source.raw(instance, burst_vars)
        if not value:
            return []
        if source.jinja:
            value = self._filter_hostname(value, source)
            if not value:
                return []
        values = value if isinstance(value, (list, tuple)) else [value]
        return [to_text(v) for v in values if v]

    def _filter_hostname(self, value, source):
        expression = f"hostname | {source.jinja}"
        try:
            if hasattr(self.templar, "evaluate_expression"):
                if trust_as_template is not None:
                    expression = trust_as_template(expression)
                return self.templar.evaluate_expression(expression, local_variables={"hostname": value})
            self.templar.available_variables = {"hostname": value}
            return self.templar.template("{{ " + expression + " }}")
        except Exception as e:
            raise AnsibleError(f"hostnames: could not apply {source.text!r} to {value!r}: {to_native(e)}") from e

    def _sanitize_hostname(self, name):
        # As aws_ec2: a name with a colon (an IPv6 address) is sanitized as a group name would be.
        return self._sanitize_group_name(name) if ":" in name else name

    def _hostnames(self, instance, burst_vars, rules, all_names):
        """The host's name (the first rule that gives one), or with ``all_names`` every name every rule gives."""
        names = []
        for source, prefix, separator in rules:
            found = self._source_values(source, instance, burst_vars)
            if found and prefix is not None:
                prefixes = self._source_values(prefix, instance, burst_vars)
                if prefixes:
                    found = [f"{self._sanitize_hostname(prefixes[0])}{separator}{self._sanitize_hostname(found[0])}"]
            if not found:
                continue
            if not all_names:
                return [self._sanitize_hostname(found[0])]
            names.extend(self._sanitize_hostname(name) for name in found)
        return list(dict.fromkeys(names))

    # -- populate

    def _host_vars(self, instance, region, image, spot_price, now, settings):
        """The instance's fields in snake_case (as aws_ec2 sets them) and the burst variables, apart."""
        fields = instance
        if settings["instance_vars"] != "all":
            fields = {k: instance[k] for k in BURST_INSTANCE_FIELDS if k in instance}
        fields = snake_case(fields)
        fields.setdefault("tags", {})  # as aws_ec2: an instance without tags has an empty dict
        placement = fields.setdefault("placement", {})
        placement["region"] = region
        # The facts burst_instance returns about an instance, under the names of the burst variables.
        facts = summarize_instance(instance, image, settings["image_version_tag"], spot_price, now)
        burst_vars = {
            "burst_region": region,
            "burst_market": facts["market"],
            "burst_image_version": facts["image_version"],
            "burst_image_name": facts["image_name"],
            "burst_launch_time": facts["launch_time"],
            "burst_uptime_seconds": facts["uptime_seconds"],
            "burst_spot_price": facts["spot_price"],
        }
        deadline = (fields.get("tags") or {}).get(DRAINING_TAG)
        if deadline:
            burst_vars["burst_draining"] = {"reason": "spot-interruption", "deadline": deadline}
        return fields, burst_vars

    def _add_burst_groups(self, name, plain, prefix):
        version = plain["burst_image_version"] or "unknown"
        for group in (
            "burst",
            group_name(f"{prefix}version", version),
            group_name(f"{prefix}type", plain.get("instance_type")),
            group_name(f"{prefix}zone", plain["placement"].get("availability_zone")),
            group_name(f"{prefix}region", plain["burst_region"]),
            group_name(f"{prefix}market", plain["burst_market"]),
        ):
            if group not in self._groups_made:
                self.inventory.add_group(group)
                self._groups_made.add(group)
            self.inventory.add_host(name, group=group)

    def _probe(self, hosts, health):
        """Probe every host's healthcheck at once; returns ``{name: (status, detail, answer's JSON or None)}``."""
        template = health.get("url")
        urls = {}
        for name, plain, _host_vars in hosts:
            url = self.inventory.get_host(name).get_vars().get(HEALTH_URL_VAR)
            if not url and template:
                facts = {k: v for k, v in plain.items() if isinstance(v, (str, int, float))}
                facts.setdefault("availability_zone", plain["placement"].get("availability_zone"))
                url = health_url(template, facts)
            urls[name] = url
        return probe_health_many(
            urls,
            timeout=float(health.get("timeout", 2.0)),
            max_workers=int(health.get("max_workers", 256)),
            documents=True,
        )

    # Whether _compose resolves bare variable paths itself: only while the hosts are populated.
    _bare_paths = False

    def _compose(self, template, variables, *args, **kwargs):
        """Constructable's ``_compose``, with bare variable paths (``placement.availability_zone``) read directly.

        A path that names a scalar Jinja returns unchanged gives that very value, and the template engine gets
        the same variables (a ``keyed_groups`` entry's ``parent_group`` is templated with them); everything else
        (a missing name, a container, any other expression, O(use_extra_vars)) is Constructable's, so ``strict``,
        ``default_value``, the separators and the group names work as they do there.
        """
        if self._bare_paths and not args and not kwargs:
            parts = bare_path(template)
            if parts is not None:
                value = plain_value(variables, parts)
                if value is not _NOT_FOUND:
                    self.templar.available_variables = variables
                    return value
        return super()._compose(template, variables, *args, **kwargs)

    def _populate(self, results, settings):
        try:
            use_extra_vars = self.get_option("use_extra_vars")
        except Exception:  # noqa: BLE001 - as Constructable: no such option means no extra vars
            use_extra_vars = False
        self._bare_paths = not use_extra_vars
        try:
            with ExpressionCache(self.templar):
                self._populate_hosts(results, settings)
        finally:
            self._bare_paths = False

    def _populate_hosts(self, results, settings):
        strict = settings["strict"]
        compose, groups, keyed_groups = settings["compose"], settings["groups"], settings["keyed_groups"]
        rules = settings["hostname_rules"]
        all_names = settings["allow_duplicated_hosts"]
        var_prefix, var_suffix = settings["hostvars_prefix"] or "", settings["hostvars_suffix"] or ""
        prefix = settings["group_prefix"]
        now = utcnow()
        self._groups_made = set()
        found = []
        for result in results:
            prices = {(t, z): p for t, z, p in result["spot_prices"]}
            found.extend((instance, result, prices) for instance in result["instances"])
        # One order for every region, as aws_ec2 has it: when two instances get the same name, the last one's
        # variables stay.
        found.sort(key=lambda item: item[0]["InstanceId"])
        hosts = []
        for instance, result, prices in found:
            region = result["region"]
            image = result["images"].get(instance.get("ImageId"))
            key = (instance.get("InstanceType"), (instance.get("Placement") or {}).get("AvailabilityZone"))
            fields, burst_vars = self._host_vars(instance, region, image, prices.get(key), now, settings)
            names = self._hostnames(instance, burst_vars, rules, all_names)
            if not names:
                continue
            plain = {**fields, **burst_vars}
            if var_prefix or var_suffix:
                host_vars = {f"{var_prefix}{k}{var_suffix}": v for k, v in fields.items()}
                host_vars.update(burst_vars)
            else:
                host_vars = dict(plain)
            for name in names:
                self.inventory.add_host(name)
                for var, value in host_vars.items():
                    self.inventory.set_variable(name, var, value)
                if compose:
                    self._set_composite_vars(compose, host_vars, name, strict=strict)
                hosts.append((name, plain, host_vars))

        health = settings["health"]
        probes = None
        if health.get("enabled") and hosts:
            probes = self._probe(hosts, health)
            for status in (HEALTH_READY, HEALTH_STARTING, HEALTH_UNREACHABLE, HEALTH_DRAINING):
                self.inventory.add_group(f"{prefix}{status}")
        for name, plain, host_vars in hosts:
            # Draining: the tag the instance set on notice, or (more detailed) what its healthcheck says.
            draining = plain.get("burst_draining")
            updates = {}
            group = None
            if probes is not None:
                status, detail, document = probes[name]
                draining = reported_draining(status, document) or draining
                if draining is not None:
                    status = HEALTH_DRAINING
                group = f"{prefix}{status}"
                updates = {
                    "burst_health": status,
                    "burst_health_detail": detail,
                    "burst_boot_to_ready_s": boot_to_ready(document),
                }
            if draining is not None:
                updates["burst_draining"] = draining
                group = f"{prefix}{HEALTH_DRAINING}"
            for var, value in updates.items():
                plain[var] = host_vars[var] = value
                self.inventory.set_variable(name, var, value)
            if group is not None:
                if group not in self.inventory.groups:
                    self.inventory.add_group(group)
                self.inventory.add_host(name, group=group)

        for name, plain, host_vars in hosts:
            if settings["burst_groups"]:
                self._add_burst_groups(name, plain, prefix)
            if groups:
                self._add_host_to_composed_groups(groups, host_vars, name, strict=strict)
            if keyed_groups:
                self._add_host_to_keyed_groups(keyed_groups, host_vars, name, strict=strict)

    def _settings(self):
        """Every option the population uses, read and checked once."""
        names = (
            "strict",
            "compose",
            "groups",
            "keyed_groups",
            "hostnames",
            "allow_duplicated_hosts",
            "hostvars_prefix",
            "hostvars_suffix",
            "use_contrib_script_compatible_sanitization",
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
        hostnames = settings["hostnames"]
        if not isinstance(hostnames, (list, tuple)):
            self.fail_aws(f"hostnames must be a list of strings and dictionaries, got {hostnames!r}")
        try:
            settings["hostname_rules"] = self._parse_hostnames(hostnames)
        except AnsibleError as e:
            self.fail_aws(e.message)
        for option in ("hostvars_prefix", "hostvars_suffix"):
            if settings[option] is not None and not isinstance(settings[option], str):
                self.fail_aws(f"{option} must be a string, got {settings[option]!r}")
        if settings["instance_vars"] == "all":
            settings["kept_fields"] = None
        else:
            used = {source.instance_field for rule in settings["hostname_rules"] for source in rule[:2] if source}
            settings["kept_fields"] = tuple(
                dict.fromkeys(BURST_INSTANCE_FIELDS + RESERVATION_FIELDS + tuple(f for f in used if f))
            )
        try:
            settings["queries"] = self._queries()
        except AnsibleError as e:
            self.fail_aws(e.message)
        if settings["use_contrib_script_compatible_sanitization"]:
            self._sanitize_group_name = contrib_script_group_name
        return settings

    def parse(self, inventory, loader, path, cache=True):
        super().parse(inventory, loader, path, cache=cache)
        settings = self._settings()
        was_cached, results = self.get_cached_result(path, cache)
        if not was_cached:
            try:
                results = self._query(settings)
            except AwsError as e:
                self.fail_aws(e.message, exception=e.exception)
        self._populate(results, settings)
        self.update_cached_result(path, cache, results)
