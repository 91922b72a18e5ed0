# -*- coding: utf-8 -*-

# Copyright: Contributors to the burst.golden_ami collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""Launching EC2 instances from a machine image: the one launcher of this collection.

Private to this collection, but written so that a Python application can call
it directly (docs/launcher.md): nothing here needs Ansible at run time except
amazon.aws's retry helpers, which come with the collection.

Entry points:

- ``Launcher(ec2_client, ssm_client=None)``: one region's launcher.

  - ``resolve_image(ImageRef)``: the image, by id, by SSM parameter, or the
    newest ``available`` image of a family (a tag, or a name prefix).
  - ``launch(LaunchRequest)``: launch ``count`` instances, trying each market
    (spot first, then on-demand if allowed), each instance type and each subnet
    in order on capacity errors; idempotent by an identifying tag (a job id or
    a bake id). Returns a ``LaunchResult``.
  - ``wait_running(instance_ids)``, ``find_instances(...)``,
    ``terminate(instance_ids)``, ``spot_prices(...)``.

- ``build_user_data(...)``: the first-boot script (startup script, EFS mount,
  job command, termination after the job or after a maximum lifetime).
- ``RootVolume``: root volume size, type, IOPS, throughput, encryption and the
  provisioned volume initialization rate.
- ``probe_health(urls)`` and ``wait_healthy(urls)``: concurrent healthcheck
  probes with a short timeout; each URL is ``ready``, ``starting`` or
  ``unreachable``.
- ``summarize_instance(instance, ...)``: the snake_case facts returned about
  an instance.

Every AWS call goes through amazon.aws's ``AWSRetry`` (throttling and
transient server errors are retried), and every failure comes out as a
``LaunchError`` that names what failed.
"""

from __future__ import annotations

import hashlib
import json
import re
import shlex
import time
import urllib.error
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone

try:
    import botocore
except ImportError:
    pass  # handled by AnsibleAWSModule, or by the application

from ansible_collections.amazon.aws.plugins.module_utils.retries import RetryingBotoClientWrapper
from ansible_collections.amazon.aws.plugins.module_utils.tagging import (
    ansible_dict_to_boto3_tag_list,
    boto3_tag_list_to_ansible_dict,
)

# One retry policy for every AWS call of the collection.
from ansible_collections.burst.golden_ami.plugins.module_utils._images import default_retry

# Errors after which the same request may succeed with another instance type,
# subnet (zone) or market. Anything else fails the launch at once.
CAPACITY_ERROR_CODES = frozenset(
    (
        "InsufficientInstanceCapacity",
        "InsufficientCapacity",
        "InsufficientHostCapacity",
        "InsufficientReservedInstanceCapacity",
        "InsufficientFreeAddressesInSubnet",
        "SpotMaxPriceTooLow",
        "MaxSpotInstanceCountExceeded",
    )
)
# "Unsupported" is a capacity error only when it is about the zone, as in
# "Your requested instance type (g6e.xlarge) is not supported in your
# requested Availability Zone (us-east-1e)".
ZONE_UNSUPPORTED_CODE = "Unsupported"

ACTIVE_STATES = ("pending", "running", "stopping", "stopped")
GONE_STATES = ("shutting-down", "terminated")
MARKETS = ("spot", "on-demand")

INSTANCE_ID_RE = re.compile(r"^i-[0-9a-f]{8,17}$")
IMAGE_ID_RE = re.compile(r"^ami-[0-9a-f]{8,17}$")
SUBNET_ID_RE = re.compile(r"^subnet-[0-9a-f]{8,17}$")
SECURITY_GROUP_ID_RE = re.compile(r"^sg-[0-9a-f]{8,17}$")
EFS_ID_RE = re.compile(r"^fs-[0-9a-f]{8,40}$")
INSTANCE_TYPE_RE = re.compile(r"^[a-z][a-z0-9-]*\.[a-z0-9-]+$")
PRICE_RE = re.compile(r"^\d+(\.\d+)?$")
VOLUME_TYPES = ("gp2", "gp3", "io1", "io2", "st1", "sc1", "standard")
# RunInstances' EBS VolumeInitializationRate, in MiB/s.
INITIALIZATION_RATE_RANGE = (100, 300)
USER_DATA_MAX_BYTES = 16384
TAG_VALUE_MAX = 256
DEFAULT_STARTUP_SCRIPT = "/opt/burst/startup.sh"
USER_DATA_LOG = "/var/log/burst-user-data.log"


class LaunchError(Exception):
    """A failure with a message for the user, the AWS exception behind it if any, and the attempts made."""

    def __init__(self, message, exception=None, attempts=None):
        super().__init__(message)
        self.message = message
        self.exception = exception
        self.attempts = list(attempts or [])


def retrying(client):
    """``client`` wrapped so that calls with ``aws_retry=True`` are retried; a wrapped client is kept."""
    if client is None or isinstance(client, RetryingBotoClientWrapper):
        return client
    return RetryingBotoClientWrapper(client, default_retry())


def error_code(exception):
    """The AWS error code of a ClientError, or None."""
    response = getattr(exception, "response", None) or {}
    return response.get("Error", {}).get("Code")


def error_message(exception):
    response = getattr(exception, "response", None) or {}
    return response.get("Error", {}).get("Message") or str(exception)


def is_capacity_error(exception):
    """True for errors after which another instance type, zone or market may succeed."""
    code = error_code(exception)
    if code in CAPACITY_ERROR_CODES:
        return True
    return code == ZONE_UNSUPPORTED_CODE and "availability zone" in error_message(exception).lower()


def _call(what, func, **params):
    try:
        return func(aws_retry=True, **params)
    except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as e:
        raise LaunchError(f"Failed to {what}: {error_message(e)}", exception=e) from e


def client_token(*parts):
    """A RunInstances client token (at most 64 ASCII characters) derived from ``parts``.

    The same parts give the same token, so that a retried request launches
    nothing twice.
    """
    return hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).hexdigest()[:64]


def _utcnow():
    return datetime.now(timezone.utc)


def as_datetime(value):
    """A timezone-aware UTC datetime from a datetime or an ISO 8601 text (AWS's LaunchTime, CreationDate)."""
    if value is None:
        return None
    if isinstance(value, datetime):
        when = value
    else:
        when = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return when.astimezone(timezone.utc)


# ---------------------------------------------------------------- images


class ImageRef:
    """Which image to launch: exactly one of ``image_id``, ``ssm_parameter`` or a family.

    A family is every ``available`` image owned by ``owners`` that carries the
    tag ``family_tag`` (a ``{key: value}`` dict; a ``None`` value matches any
    value) or whose name starts with ``name_prefix``; the newest by creation
    date wins.
    """

    def __init__(self, image_id=None, ssm_parameter=None, family_tag=None, name_prefix=None, owners=("self",)):
        self.image_id = image_id
        self.ssm_parameter = ssm_parameter
        self.family_tag = dict(family_tag or {})
        self.name_prefix = name_prefix
        self.owners = list(owners or [])
        self.validate()

    def validate(self):
        given = [n for n, v in (("image_id", self.image_id), ("ssm_parameter", self.ssm_parameter)) if v]
        if self.family_tag or self.name_prefix:
            given.append("family")
        if len(given) != 1:
            raise LaunchError(
                "Give exactly one way to find the image: an image id, an SSM parameter, or a family "
                f"(tag or name prefix); got {', '.join(given) or 'none'}"
            )
        if self.image_id and not IMAGE_ID_RE.match(self.image_id):
            raise LaunchError(f"Invalid image id {self.image_id!r}: expected ami- followed by 8 to 17 hex digits")
        if len(self.family_tag) > 1:
            raise LaunchError("An image family is one tag: give a single key")
        if self.name_prefix is not None and not self.name_prefix.strip():
            raise LaunchError("An image name prefix may not be empty")

    def describe(self):
        if self.image_id:
            return f"image {self.image_id}"
        if self.ssm_parameter:
            return f"the image named by SSM parameter {self.ssm_parameter}"
        if self.family_tag:
            key, value = next(iter(self.family_tag.items()))
            return f"the newest image tagged {key}={value if value is not None else '*'}"
        return f"the newest image named {self.name_prefix}*"


def image_version(image, version_tag="Version"):
    """The golden image version: the image's ``version_tag`` tag, or None."""
    if not image:
        return None
    return boto3_tag_list_to_ansible_dict(image.get("Tags") or []).get(version_tag)


def newest_image(images):
    """The image with the latest CreationDate (ties broken by image id, so the choice is stable)."""
    if not images:
        return None
    return max(
        images,
        key=lambda i: (as_datetime(i.get("CreationDate")) or datetime.min.replace(tzinfo=timezone.utc), i["ImageId"]),
    )


# ---------------------------------------------------------------- root volume


class RootVolume:
    """Overrides of the image's root volume for RunInstances.

    ``initialization_rate`` is the provisioned volume initialization rate in
    MiB/s (100 to 300): the snapshot's blocks are fetched at that rate rather
    than lazily on first read, so that the first model load is not slowed down.
    It applies to volumes created from a snapshot, which a root volume is.
    """

    def __init__(
        self,
        size=None,
        volume_type=None,
        iops=None,
        throughput=None,
        encrypted=None,
        kms_key_id=None,
        initialization_rate=None,
        delete_on_termination=True,
    ):
        self.size = size
        self.volume_type = volume_type
        self.iops = iops
        self.throughput = throughput
        self.encrypted = encrypted
        self.kms_key_id = kms_key_id
        self.initialization_rate = initialization_rate
        self.delete_on_termination = delete_on_termination
        self.validate()

    def is_default(self):
        return all(
            v is None
            for v in (
                self.size,
                self.volume_type,
                self.iops,
                self.throughput,
                self.encrypted,
                self.kms_key_id,
                self.initialization_rate,
            )
        )

    def validate(self):
        if self.size is not None and self.size < 1:
            raise LaunchError(f"Invalid root volume size {self.size}: give a size in GiB, 1 or more")
        if self.volume_type is not None and self.volume_type not in VOLUME_TYPES:
            raise LaunchError(f"Invalid root volume type {self.volume_type!r}: one of {', '.join(VOLUME_TYPES)}")
        if self.throughput is not None and self.volume_type != "gp3":
            raise LaunchError("Root volume throughput applies to gp3 volumes only: set the volume type to gp3")
        if self.iops is not None and self.volume_type not in ("gp3", "io1", "io2"):
            raise LaunchError("Root volume IOPS apply to gp3, io1 and io2 volumes only: set the volume type")
        if self.kms_key_id and self.encrypted is False:
            raise LaunchError("A KMS key for the root volume needs encryption: do not set encrypted to false")
        if self.initialization_rate is not None:
            low, high = INITIALIZATION_RATE_RANGE
            if not low <= self.initialization_rate <= high:
                raise LaunchError(
                    f"Invalid volume initialization rate {self.initialization_rate}: "
                    f"give {low} to {high} MiB/s, or leave it unset"
                )

    def block_device_mapping(self, image):
        """The RunInstances BlockDeviceMappings entry for ``image``'s root device, or None when nothing changes."""
        if self.is_default():
            return None
        device = image.get("RootDeviceName")
        if not device:
            raise LaunchError(f"Image {image.get('ImageId')} names no root device: cannot set root volume options")
        source = {}
        for mapping in image.get("BlockDeviceMappings") or []:
            if mapping.get("DeviceName") == device:
                source = mapping.get("Ebs") or {}
        snapshot_size = source.get("VolumeSize")
        if self.size is not None and snapshot_size and self.size < snapshot_size:
            raise LaunchError(
                f"Root volume size {self.size} GiB is smaller than the {snapshot_size} GiB snapshot "
                f"of image {image.get('ImageId')}"
            )
        if self.initialization_rate is not None and not source.get("SnapshotId"):
            raise LaunchError(
                f"Image {image.get('ImageId')} has no snapshot behind its root device {device}: "
                "a volume initialization rate applies only to volumes created from a snapshot"
            )
        ebs = {"DeleteOnTermination": bool(self.delete_on_termination)}
        # The image's size when none is given: EC2 would keep it anyway, and some endpoints want a size.
        for value, key in (
            (self.size if self.size is not None else snapshot_size, "VolumeSize"),
            (self.volume_type, "VolumeType"),
            (self.iops, "Iops"),
            (self.throughput, "Throughput"),
            (self.kms_key_id, "KmsKeyId"),
            (self.initialization_rate, "VolumeInitializationRate"),
        ):
            if value is not None:
                ebs[key] = value
        if self.encrypted or self.kms_key_id:
            ebs["Encrypted"] = True
        return {"DeviceName": device, "Ebs": ebs}


# ---------------------------------------------------------------- user data


def build_user_data(
    startup_script=DEFAULT_STARTUP_SCRIPT,
    job_command=None,
    efs_file_system_id=None,
    efs_mount_point=None,
    efs_mount_options=None,
    region=None,
    terminate_after_job=True,
    max_lifetime_minutes=None,
    extra_script=None,
    log_path=USER_DATA_LOG,
):
    """The first-boot shell script of a launched instance, as text.

    In this order: a maximum lifetime armed first (a systemd timer that powers
    the instance off, ``shutdown -h +N`` where systemd-run is missing), so that
    it holds whatever happens next; the EFS mount (with amazon-efs-utils when
    present, else NFS 4.1 to the file system's DNS name in ``region``);
    ``extra_script``; ``startup_script`` when given; then ``job_command`` and,
    if ``terminate_after_job``, a power-off once the job ends, whatever its exit
    status. Launched with instance-initiated shutdown behaviour ``terminate``,
    a power-off terminates the instance. Output goes to ``log_path``.
    """
    if max_lifetime_minutes is not None and (not isinstance(max_lifetime_minutes, int) or max_lifetime_minutes < 0):
        raise LaunchError(f"Invalid maximum lifetime {max_lifetime_minutes!r}: give whole minutes, 0 for none")
    if efs_file_system_id and not EFS_ID_RE.match(efs_file_system_id):
        raise LaunchError(f"Invalid EFS file system id {efs_file_system_id!r}: expected fs- followed by hex digits")
    if efs_file_system_id and not (efs_mount_point or "").startswith("/"):
        raise LaunchError(f"Invalid EFS mount point {efs_mount_point!r}: give an absolute path")
    if efs_mount_point and not efs_file_system_id:
        raise LaunchError("An EFS mount point needs an EFS file system id")
    if efs_file_system_id and not region:
        raise LaunchError("Mounting EFS needs the region, to name the file system's DNS name")
    if startup_script and not startup_script.startswith("/"):
        raise LaunchError(f"Invalid startup script {startup_script!r}: give an absolute path")

    q = shlex.quote
    lines = [
        "#!/bin/bash",
        "# First-boot script written by burst.golden_ami. Runs once, as root.",
        "set -u",
        f"exec >>{q(log_path)} 2>&1",
        'echo "[burst] user data started at $(date -Iseconds)"',
    ]
    if max_lifetime_minutes:
        lines += [
            "",
            f"# Maximum lifetime: power off after {max_lifetime_minutes} min. The instance was launched",
            "# with shutdown behaviour 'terminate', so powering off terminates it.",
            f"if ! systemd-run --unit=burst-max-lifetime --on-active={max_lifetime_minutes}min \\",
            "    --timer-property=AccuracySec=10s /bin/systemctl poweroff; then",
            f"  shutdown -h +{max_lifetime_minutes}",
            "fi",
        ]
    if efs_file_system_id:
        options = efs_mount_options or "nfsvers=4.1,rsize=1048576,wsize=1048576,hard,timeo=600,retrans=2,noresvport"
        dns = f"{efs_file_system_id}.efs.{region}.amazonaws.com"
        lines += [
            "",
            "# Shared file system (EFS). Its DNS name may take a moment to resolve: retry.",
            f"mkdir -p {q(efs_mount_point)}",
            "burst_efs_mounted=false",
            "for attempt in $(seq 1 20); do",
            "  if command -v mount.efs >/dev/null 2>&1; then",
            f"    mount -t efs -o tls {q(efs_file_system_id + ':/')} {q(efs_mount_point)} && burst_efs_mounted=true",
            "  else",
            f"    mount -t nfs4 -o {q(options)} {q(dns + ':/')} {q(efs_mount_point)} && burst_efs_mounted=true",
            "  fi",
            '  "$burst_efs_mounted" && break',
            '  echo "[burst] EFS mount attempt $attempt failed"',
            "  sleep 6",
            "done",
        ]
    if extra_script:
        lines += ["", "# Extra first-boot commands.", extra_script.rstrip("\n")]
    if startup_script:
        lines += [
            "",
            "# Start the services of the golden image.",
            f"if [ -x {q(startup_script)} ]; then",
            f'  {q(startup_script)} || echo "[burst] {startup_script} failed with status $?"',
            "else",
            f'  echo "[burst] {startup_script} is missing or not executable"',
            "fi",
        ]
    if job_command:
        lines += ["", "# The job."]
        if efs_file_system_id:
            lines += [
                'if "$burst_efs_mounted"; then',
                f"  bash -c {q(job_command)}",
                "  burst_job_status=$?",
                "else",
                '  echo "[burst] EFS is not mounted: the job does not run"',
                "  burst_job_status=1",
                "fi",
            ]
        else:
            lines += [f"bash -c {q(job_command)}", "burst_job_status=$?"]
        lines.append('echo "[burst] job ended with status $burst_job_status at $(date -Iseconds)"')
        if terminate_after_job:
            lines += [
                "",
                "# The job is done: power off, which terminates the instance.",
                "sync",
                "systemctl poweroff || shutdown -h now",
            ]
    lines += ['echo "[burst] user data done at $(date -Iseconds)"', ""]
    text = "\n".join(lines)
    size = len(text.encode())
    if size > USER_DATA_MAX_BYTES:
        raise LaunchError(f"User data is {size} bytes; EC2 accepts at most {USER_DATA_MAX_BYTES}")
    return text


# ---------------------------------------------------------------- requests and results


class LaunchRequest:
    """What to launch. ``instance_types`` and ``subnet_ids`` are tried in that order of preference.

    ``identity_tag`` (``{key: value}``, for example ``{"BurstJobId": "job-42"}``)
    makes the launch idempotent: instances carrying it that are not terminated
    count towards ``count``, and the client tokens derive from it. Without it,
    every call launches. ``market`` is ``spot`` or ``on-demand``; with
    ``spot_fallback_on_demand``, every type and subnet is tried as spot first,
    then again on demand.
    """

    def __init__(
        self,
        image,
        instance_types,
        count=1,
        subnet_ids=None,
        security_group_ids=None,
        key_name=None,
        iam_instance_profile=None,
        market="spot",
        spot_max_price=None,
        spot_fallback_on_demand=False,
        tags=None,
        identity_tag=None,
        user_data=None,
        root_volume=None,
        metadata_hop_limit=2,
        shutdown_behavior="terminate",
    ):
        self.image = image
        self.instance_types = list(instance_types or [])
        self.count = count
        self.subnet_ids = list(subnet_ids or [])
        self.security_group_ids = list(security_group_ids or [])
        self.key_name = key_name
        self.iam_instance_profile = iam_instance_profile
        self.market = market
        self.spot_max_price = None if spot_max_price in (None, "") else str(spot_max_price)
        self.spot_fallback_on_demand = spot_fallback_on_demand
        self.tags = dict(tags or {})
        self.identity_tag = dict(identity_tag or {})
        self.user_data = user_data
        self.root_volume = root_volume or RootVolume()
        self.metadata_hop_limit = metadata_hop_limit
        self.shutdown_behavior = shutdown_behavior
        self.validate()

    def validate(self):
        if not isinstance(self.image, ImageRef):
            raise LaunchError("The image must be an ImageRef")
        if not self.instance_types:
            raise LaunchError("Give at least one instance type")
        for name in self.instance_types:
            if not INSTANCE_TYPE_RE.match(name or ""):
                raise LaunchError(f"Invalid instance type {name!r}: expected a name such as g6e.xlarge")
        if len(set(self.instance_types)) != len(self.instance_types):
            raise LaunchError("An instance type is listed twice")
        if not isinstance(self.count, int) or self.count < 1:
            raise LaunchError(f"Invalid count {self.count!r}: launch 1 or more instances")
        for subnet in self.subnet_ids:
            if not SUBNET_ID_RE.match(subnet or ""):
                raise LaunchError(f"Invalid subnet id {subnet!r}")
        for group in self.security_group_ids:
            if not SECURITY_GROUP_ID_RE.match(group or ""):
                raise LaunchError(f"Invalid security group id {group!r}")
        if self.market not in MARKETS:
            raise LaunchError(f"Invalid market {self.market!r}: spot or on-demand")
        if self.spot_max_price is not None:
            if self.market != "spot":
                raise LaunchError("A spot maximum price needs market spot")
            if not PRICE_RE.match(self.spot_max_price) or float(self.spot_max_price) <= 0:
                raise LaunchError(
                    f"Invalid spot maximum price {self.spot_max_price!r}: give a positive number, in USD/h"
                )
        if self.spot_fallback_on_demand and self.market != "spot":
            raise LaunchError("Falling back to on-demand needs market spot")
        if len(self.identity_tag) > 1:
            raise LaunchError("The identity tag is a single key and value")
        for key, value in list(self.identity_tag.items()) + list(self.tags.items()):
            if not key or str(key).lower().startswith("aws:"):
                raise LaunchError(f"Invalid tag key {key!r}: empty keys and the aws: prefix are not allowed")
            if value is None or len(str(value)) > TAG_VALUE_MAX:
                raise LaunchError(f"Invalid value for tag {key!r}: give a string of at most {TAG_VALUE_MAX} characters")
        if self.shutdown_behavior not in ("terminate", "stop"):
            raise LaunchError(f"Invalid shutdown behaviour {self.shutdown_behavior!r}: terminate or stop")
        if not isinstance(self.metadata_hop_limit, int) or not 1 <= self.metadata_hop_limit <= 64:
            raise LaunchError(f"Invalid metadata hop limit {self.metadata_hop_limit!r}: 1 to 64")

    def all_tags(self):
        tags = {str(k): str(v) for k, v in self.tags.items()}
        tags.update({str(k): str(v) for k, v in self.identity_tag.items()})
        return tags

    def plan(self):
        """Every (market, instance type, subnet) to try, in order. A None subnet lets EC2 choose."""
        markets = [self.market]
        if self.market == "spot" and self.spot_fallback_on_demand:
            markets.append("on-demand")
        subnets = self.subnet_ids or [None]
        return [(m, t, s) for m in markets for t in self.instance_types for s in subnets]


class Attempt:
    """One RunInstances request and its outcome (``error_code`` is None when it launched)."""

    def __init__(self, market, instance_type, subnet_id, error_code=None, error_message=None):
        self.market = market
        self.instance_type = instance_type
        self.subnet_id = subnet_id
        self.error_code = error_code
        self.error_message = error_message

    def as_dict(self):
        return {
            "market": self.market,
            "instance_type": self.instance_type,
            "subnet_id": self.subnet_id,
            "error_code": self.error_code,
            "error_message": self.error_message,
        }


class LaunchResult:
    """What ``Launcher.launch`` did: ``instances`` (EC2's dicts, existing ones included), the image, the attempts."""

    def __init__(self, changed, instances, image, attempts, launched_ids=None, market=None):
        self.changed = changed
        self.instances = instances
        self.image = image
        self.attempts = attempts
        self.launched_ids = list(launched_ids or [])
        self.market = market

    @property
    def instance_ids(self):
        return [i["InstanceId"] for i in self.instances]


# ---------------------------------------------------------------- the launcher


class Launcher:
    """Launch, find, wait for and terminate instances in one region.

    ``ec2_client`` (and ``ssm_client`` when images are named by SSM parameter)
    are boto3 clients, or clients that amazon.aws's ``AnsibleAWSModule.client``
    wrapped with a retry decorator. ``sleep`` and ``clock`` are there for tests.
    """

    def __init__(self, ec2_client, ssm_client=None, region=None, sleep=time.sleep, clock=time.monotonic):
        self.ec2 = retrying(ec2_client)
        self.ssm = retrying(ssm_client)
        raw = getattr(self.ec2, "client", self.ec2)
        self.region = region or getattr(getattr(raw, "meta", None), "region_name", None)
        self.sleep = sleep
        self.clock = clock

    # -- images

    def describe_images(self, image_ids):
        """Images by id in one call (missing ones are left out)."""
        image_ids = sorted(set(image_ids))
        if not image_ids:
            return {}
        try:
            result = self.ec2.describe_images(aws_retry=True, ImageIds=image_ids)
        except botocore.exceptions.ClientError as e:
            if error_code(e) not in ("InvalidAMIID.NotFound", "InvalidAMIID.Unavailable", "InvalidAMIID.Malformed"):
                raise LaunchError(f"Failed to describe images: {error_message(e)}", exception=e) from e
            # One bad id fails the whole call: ask for the others one at a time.
            found = {}
            for image_id in image_ids:
                try:
                    found.update(
                        {
                            i["ImageId"]: i
                            for i in self.ec2.describe_images(aws_retry=True, ImageIds=[image_id])["Images"]
                        }
                    )
                except botocore.exceptions.ClientError:
                    continue
            return found
        except botocore.exceptions.BotoCoreError as e:
            raise LaunchError(f"Failed to describe images: {e}", exception=e) from e
        return {i["ImageId"]: i for i in result.get("Images", [])}

    def resolve_image(self, ref):
        """The image ``ref`` names, which must be ``available``; a LaunchError says which one was not found."""
        image_id = ref.image_id
        if ref.ssm_parameter:
            if self.ssm is None:
                raise LaunchError("Finding the image by SSM parameter needs an SSM client")
            try:
                parameter = self.ssm.get_parameter(aws_retry=True, Name=ref.ssm_parameter)["Parameter"]
            except botocore.exceptions.ClientError as e:
                if error_code(e) == "ParameterNotFound":
                    raise LaunchError(f"SSM parameter {ref.ssm_parameter} not found", exception=e) from e
                raise LaunchError(
                    f"Failed to read SSM parameter {ref.ssm_parameter}: {error_message(e)}", exception=e
                ) from e
            image_id = (parameter.get("Value") or "").strip()
            if not IMAGE_ID_RE.match(image_id):
                raise LaunchError(f"SSM parameter {ref.ssm_parameter} holds {image_id!r}, which is not an image id")
        if image_id:
            image = self.describe_images([image_id]).get(image_id)
            if image is None:
                raise LaunchError(f"{ref.describe().capitalize()} not found in {self.region}")
        else:
            filters = [{"Name": "state", "Values": ["available"]}]
            if ref.family_tag:
                key, value = next(iter(ref.family_tag.items()))
                if value is None:
                    filters.append({"Name": "tag-key", "Values": [key]})
                else:
                    filters.append({"Name": f"tag:{key}", "Values": [str(value)]})
            else:
                filters.append({"Name": "name", "Values": [f"{ref.name_prefix}*"]})
            params = {"Filters": filters}
            if ref.owners:
                params["Owners"] = ref.owners
            images = _call(f"describe images in {self.region}", self.ec2.describe_images, **params).get("Images", [])
            if ref.name_prefix:
                images = [i for i in images if (i.get("Name") or "").startswith(ref.name_prefix)]
            image = newest_image(images)
            if image is None:
                raise LaunchError(f"No available image found in {self.region} for {ref.describe()}")
        if image.get("State") != "available":
            raise LaunchError(f"Image {image['ImageId']} is {image.get('State')}, not available")
        return image

    # -- instances

    def find_instances(self, tags=None, instance_ids=None, states=ACTIVE_STATES):
        """Instances carrying every tag of ``tags`` and/or with the given ids, in the given states."""
        filters = [{"Name": "instance-state-name", "Values": list(states)}]
        for key, value in (tags or {}).items():
            filters.append({"Name": f"tag:{key}", "Values": [str(value)]})
        params = {"Filters": filters}
        if instance_ids:
            params["InstanceIds"] = list(instance_ids)
        try:
            paginator = getattr(self.ec2, "client", self.ec2).get_paginator("describe_instances")
            pages = default_retry()(lambda: paginator.paginate(**params).build_full_result())()
        except botocore.exceptions.ClientError as e:
            if instance_ids and error_code(e) == "InvalidInstanceID.NotFound":
                return []
            raise LaunchError(f"Failed to describe instances in {self.region}: {error_message(e)}", exception=e) from e
        except botocore.exceptions.BotoCoreError as e:
            raise LaunchError(f"Failed to describe instances in {self.region}: {e}", exception=e) from e
        instances = [i for r in pages.get("Reservations", []) for i in r.get("Instances", [])]
        return sorted(instances, key=lambda i: (i.get("AmiLaunchIndex", 0), i["InstanceId"]))

    def _run_params(self, request, image, market, instance_type, subnet_id, count, token):
        tags = ansible_dict_to_boto3_tag_list(request.all_tags())
        params = {
            "ImageId": image["ImageId"],
            "InstanceType": instance_type,
            "MinCount": count,
            "MaxCount": count,
            "ClientToken": token,
            "InstanceInitiatedShutdownBehavior": request.shutdown_behavior,
            "MetadataOptions": {
                "HttpTokens": "required",
                "HttpEndpoint": "enabled",
                "HttpPutResponseHopLimit": request.metadata_hop_limit,
            },
        }
        if tags:
            params["TagSpecifications"] = [
                {"ResourceType": "instance", "Tags": tags},
                {"ResourceType": "volume", "Tags": tags},
            ]
        if subnet_id:
            params["SubnetId"] = subnet_id
        if request.security_group_ids:
            params["SecurityGroupIds"] = request.security_group_ids
        if request.key_name:
            params["KeyName"] = request.key_name
        if request.iam_instance_profile:
            profile = request.iam_instance_profile
            params["IamInstanceProfile"] = {"Arn": profile} if profile.startswith("arn:") else {"Name": profile}
        if request.user_data:
            params["UserData"] = request.user_data
        mapping = request.root_volume.block_device_mapping(image)
        if mapping:
            params["BlockDeviceMappings"] = [mapping]
        if market == "spot":
            spot = {"SpotInstanceType": "one-time", "InstanceInterruptionBehavior": "terminate"}
            if request.spot_max_price:
                spot["MaxPrice"] = request.spot_max_price
            params["InstanceMarketOptions"] = {"MarketType": "spot", "SpotOptions": spot}
        return params

    def launch(self, request, check_mode=False, image=None):
        """Launch what ``request`` asks for, unless instances with its identity tag exist already.

        Tries each (market, type, subnet) of ``request.plan()`` in turn; a
        capacity error moves on to the next, any other error stops. Returns a
        ``LaunchResult``; raises ``LaunchError`` (with the attempts) when
        nothing could be launched. In check mode nothing is launched and the
        result says whether something would have been.
        """
        image = image or self.resolve_image(request.image)
        # Fail on bad volume options before anything is launched.
        request.root_volume.block_device_mapping(image)
        existing = self.find_instances(tags=request.identity_tag) if request.identity_tag else []
        missing = request.count - len(existing)
        if missing <= 0:
            return LaunchResult(False, existing, image, [], market=_market_of(existing))
        if check_mode:
            return LaunchResult(True, existing, image, [], market=request.market)

        identity = next(iter(request.identity_tag.items()), None)
        attempts = []
        for market, instance_type, subnet_id in request.plan():
            if identity:
                token = client_token(identity[0], identity[1], market, instance_type, subnet_id, len(existing))
            else:
                token = uuid.uuid4().hex
            params = self._run_params(request, image, market, instance_type, subnet_id, missing, token)
            try:
                result = self._run_instances(params)
            except botocore.exceptions.ClientError as e:
                attempts.append(Attempt(market, instance_type, subnet_id, error_code(e), error_message(e)))
                if is_capacity_error(e):
                    continue
                raise LaunchError(
                    f"Failed to launch {instance_type} ({market}) in {subnet_id or 'the default subnet'}: "
                    f"{error_message(e)}",
                    exception=e,
                    attempts=attempts,
                ) from e
            except botocore.exceptions.BotoCoreError as e:
                attempts.append(Attempt(market, instance_type, subnet_id, type(e).__name__, str(e)))
                raise LaunchError(f"Failed to launch {instance_type}: {e}", exception=e, attempts=attempts) from e
            attempts.append(Attempt(market, instance_type, subnet_id))
            launched = result.get("Instances", [])
            return LaunchResult(
                True,
                existing + launched,
                image,
                attempts,
                launched_ids=[i["InstanceId"] for i in launched],
                market=market,
            )
        tried = "; ".join(f"{a.instance_type}/{a.subnet_id or 'default'}/{a.market}: {a.error_code}" for a in attempts)
        raise LaunchError(f"No capacity for any instance type, subnet and market tried ({tried})", attempts=attempts)

    def _run_instances(self, params, profile_wait=60, poll_interval=5):
        """RunInstances; waits while a just created instance profile is not visible to EC2 yet.

        IAM is eventually consistent: for some seconds after CreateInstanceProfile,
        RunInstances answers InvalidParameterValue naming the profile.
        """
        deadline = self.clock() + profile_wait
        while True:
            try:
                return self.ec2.run_instances(aws_retry=True, **params)
            except botocore.exceptions.ClientError as e:
                profile_not_yet = (
                    "IamInstanceProfile" in params
                    and error_code(e) == "InvalidParameterValue"
                    and "iaminstanceprofile" in error_message(e).lower()
                )
                if not profile_not_yet or self.clock() >= deadline:
                    raise
            self.sleep(poll_interval)

    def wait_running(self, instance_ids, timeout=600, poll_interval=5, progress=None):
        """Wait until every instance is ``running``; returns them. Fails on terminated instances and on timeout.

        ``progress`` (optional) is called with a line after each poll.
        """
        instance_ids = list(instance_ids)
        if not instance_ids:
            return []
        deadline = self.clock() + timeout
        while True:
            try:
                instances = self.find_instances(instance_ids=instance_ids, states=(*ACTIVE_STATES, *GONE_STATES))
            except LaunchError as e:
                if error_code(e.exception) != "InvalidInstanceID.NotFound":
                    raise
                instances = []  # not visible yet: eventual consistency
            by_id = {i["InstanceId"]: i for i in instances}
            gone = [i for i in instances if i["State"]["Name"] in GONE_STATES]
            if gone:
                reasons = ", ".join(
                    f"{i['InstanceId']} ({(i.get('StateReason') or {}).get('Message') or i['State']['Name']})"
                    for i in gone
                )
                raise LaunchError(f"Instances ended before running: {reasons}")
            waiting = [i for i in instance_ids if by_id.get(i, {}).get("State", {}).get("Name") != "running"]
            if progress is not None:
                states = ", ".join(
                    f"{i} {by_id.get(i, {}).get('State', {}).get('Name', 'not visible yet')}" for i in instance_ids
                )
                progress(f"{len(instance_ids) - len(waiting)} of {len(instance_ids)} running ({states})")
            if not waiting:
                return [by_id[i] for i in instance_ids]
            if self.clock() >= deadline:
                raise LaunchError(f"Timed out after {timeout}s waiting for {', '.join(waiting)} to run")
            self.sleep(poll_interval)

    def terminate(self, instance_ids, wait=False, timeout=600, poll_interval=5):
        """Terminate the instances; with ``wait``, until they are ``terminated``. Returns the ids."""
        instance_ids = sorted(set(instance_ids))
        if not instance_ids:
            return []
        for start in range(0, len(instance_ids), 500):
            _call(
                f"terminate instances in {self.region}",
                self.ec2.terminate_instances,
                InstanceIds=instance_ids[start : start + 500],
            )
        if wait:
            deadline = self.clock() + timeout
            while True:
                left = [
                    i["InstanceId"]
                    for i in self.find_instances(instance_ids=instance_ids, states=(*ACTIVE_STATES, "shutting-down"))
                ]
                if not left:
                    break
                if self.clock() >= deadline:
                    raise LaunchError(f"Timed out after {timeout}s waiting for {', '.join(left)} to terminate")
                self.sleep(poll_interval)
        return instance_ids

    def spot_prices(self, pairs):
        """The current Linux spot price for each (instance type, zone) of ``pairs``, as ``{(type, zone): "0.41"}``.

        One DescribeSpotPriceHistory request (paginated) for all the types.
        """
        pairs = {(t, z) for t, z in pairs if t and z}
        if not pairs:
            return {}
        params = {
            "InstanceTypes": sorted({pair[0] for pair in pairs}),
            "ProductDescriptions": ["Linux/UNIX"],
            "StartTime": _utcnow(),
        }
        try:
            paginator = getattr(self.ec2, "client", self.ec2).get_paginator("describe_spot_price_history")
            history = default_retry()(lambda: paginator.paginate(**params).build_full_result())()
        except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as e:
            raise LaunchError(f"Failed to read spot prices in {self.region}: {error_message(e)}", exception=e) from e
        newest = {}
        for entry in history.get("SpotPriceHistory", []):
            key = (entry.get("InstanceType"), entry.get("AvailabilityZone"))
            if key not in pairs or not (entry.get("ProductDescription") or "").startswith("Linux/UNIX"):
                continue
            when = as_datetime(entry.get("Timestamp"))
            if key not in newest or when > newest[key][0]:
                newest[key] = (when, entry.get("SpotPrice"))
        return {k: v[1] for k, v in newest.items()}


def _market_of(instances):
    markets = {"spot" if i.get("InstanceLifecycle") == "spot" else "on-demand" for i in instances}
    return markets.pop() if len(markets) == 1 else None


def summarize_instance(instance, image=None, version_tag="Version", spot_price=None, now=None):
    """The snake_case facts about one instance that the module returns and the inventory sets."""
    placement = instance.get("Placement") or {}
    launch_time = as_datetime(instance.get("LaunchTime"))
    now = now or _utcnow()
    market = "spot" if instance.get("InstanceLifecycle") == "spot" else "on-demand"
    return {
        "instance_id": instance["InstanceId"],
        "instance_type": instance.get("InstanceType"),
        "state": (instance.get("State") or {}).get("Name"),
        "availability_zone": placement.get("AvailabilityZone"),
        "subnet_id": instance.get("SubnetId"),
        "vpc_id": instance.get("VpcId"),
        "private_ip_address": instance.get("PrivateIpAddress"),
        "public_ip_address": instance.get("PublicIpAddress"),
        "private_dns_name": instance.get("PrivateDnsName"),
        "public_dns_name": instance.get("PublicDnsName"),
        "launch_time": launch_time.strftime("%Y-%m-%dT%H:%M:%SZ") if launch_time else None,
        "uptime_seconds": max(0, int((now - launch_time).total_seconds())) if launch_time else None,
        "market": market,
        "spot_price": spot_price if market == "spot" else None,
        "image_id": instance.get("ImageId"),
        "image_name": (image or {}).get("Name"),
        "image_version": image_version(image, version_tag),
        "tags": boto3_tag_list_to_ansible_dict(instance.get("Tags") or []),
    }


# ---------------------------------------------------------------- health


HEALTH_READY = "ready"
HEALTH_STARTING = "starting"
HEALTH_UNREACHABLE = "unreachable"
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def health_url(template, facts):
    """``template`` with ``{private_ip_address}``, ``{instance_id}``... filled from ``facts`` (summarize_instance)."""
    try:
        return template.format(**facts)
    except (KeyError, IndexError, ValueError) as e:
        raise LaunchError(f"Invalid healthcheck URL template {template!r}: {e}") from e


def probe_health(url, timeout=2.0):
    """Probe one healthcheck URL once. Returns ``(status, detail)``.

    ``ready``: HTTP 200 (and, for a JSON body with a ``ready`` key, that key is
    true). ``starting``: any other HTTP answer (503 while the models load).
    ``unreachable``: no HTTP answer within ``timeout`` seconds (refused,
    reset, or a server that accepts and never answers).
    """
    if not url:
        return HEALTH_UNREACHABLE, "no healthcheck URL"
    if not str(url).lower().startswith(("http://", "https://")):
        return HEALTH_UNREACHABLE, f"not an http(s) URL: {url}"
    try:
        with _NO_PROXY.open(url, timeout=timeout) as response:
            body = response.read(65536)
            status = response.status
    except urllib.error.HTTPError as e:
        return HEALTH_STARTING, _with_body(f"HTTP {e.code}", e)
    except (urllib.error.URLError, OSError, ValueError) as e:
        return HEALTH_UNREACHABLE, str(getattr(e, "reason", e))
    if status != 200:
        return HEALTH_STARTING, f"HTTP {status}"
    try:
        document = json.loads(body or b"null")
    except ValueError:
        document = None
    if isinstance(document, dict) and "ready" in document and document["ready"] is not True:
        return HEALTH_STARTING, f"HTTP 200, not ready: {_body_text(body)}"
    return HEALTH_READY, "HTTP 200"


def _body_text(body, limit=1000):
    """An answer's body for a message: what the healthcheck said was unhealthy (its JSON), cut short."""
    text = (body or b"").decode("utf-8", "replace").strip()
    return text if len(text) <= limit else text[:limit] + "..."


def _with_body(status, error):
    try:
        body = error.read(65536)
    except (OSError, ValueError):
        body = b""
    return f"{status}: {_body_text(body)}" if body else status


def probe_health_many(urls, timeout=2.0, max_workers=256):
    """Probe every URL of ``urls`` (``{key: url}``) at once; returns ``{key: (status, detail)}``.

    With one thread per URL (up to ``max_workers``), the whole takes about one
    ``timeout`` however many hosts hang.
    """
    if not urls:
        return {}
    workers = max(1, min(len(urls), max_workers))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="burst-health") as pool:
        futures = {key: pool.submit(probe_health, url, timeout) for key, url in urls.items()}
        return {key: future.result() for key, future in futures.items()}


def wait_healthy(
    urls, timeout=600, interval=5, probe_timeout=3.0, sleep=time.sleep, clock=time.monotonic, progress=None
):
    """Probe ``urls`` (``{key: url}``) until all are ready; returns the last ``{key: (status, detail)}``.

    Raises LaunchError naming the hosts that are not ready after ``timeout`` seconds. ``progress``
    (optional) is called with a line after each round of probes.
    """
    started = clock()
    deadline = started + timeout
    results = {}
    pending = dict(urls)
    while True:
        results.update(probe_health_many(pending, timeout=probe_timeout))
        pending = {k: u for k, u in pending.items() if results[k][0] != HEALTH_READY}
        if progress is not None:
            detail = "; ".join(f"{k}: {results[k][0]} ({results[k][1]})" for k in sorted(pending))
            line = f"{len(urls) - len(pending)} of {len(urls)} healthy after {int(clock() - started)} s"
            progress(f"{line}: {detail}" if detail else line)
        if not pending:
            return results
        if clock() >= deadline:
            detail = ", ".join(f"{k}: {results[k][0]} ({results[k][1]})" for k in sorted(pending))
            raise LaunchError(f"Timed out after {timeout}s waiting for the healthcheck: {detail}")
        sleep(interval)
