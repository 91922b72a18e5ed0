# -*- coding: utf-8 -*-

# Copyright: Contributors to the burst.golden_ami collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""What to launch: ``ImageRef``, ``RootVolume`` and ``LaunchRequest``, checked before anything is launched.

Private to this collection, but written so that a Python application can call
it directly (docs/launcher.md; ``_launch`` exports the same names). Also the
outcome of a launch (``Attempt``, ``LaunchResult``) and ``LaunchError``, the
launcher's kind of ``_aws.AwsError``.
"""

from __future__ import annotations

import re

from ansible_collections.burst.golden_ami.plugins.module_utils._aws import (
    IMAGE_ID_RE,
    SECURITY_GROUP_ID_RE,
    SUBNET_ID_RE,
    TAG_VALUE_MAX,
    AwsError,
)
from ansible_collections.burst.golden_ami.plugins.module_utils._images import ImageError, ImageFamily

MARKETS = ("spot", "on-demand")

INSTANCE_TYPE_RE = re.compile(r"^[a-z][a-z0-9-]*\.[a-z0-9-]+$")
PRICE_RE = re.compile(r"^\d+(\.\d+)?$")
VOLUME_TYPES = ("gp2", "gp3", "io1", "io2", "st1", "sc1", "standard")
# RunInstances' EBS VolumeInitializationRate, in MiB/s.
INITIALIZATION_RATE_RANGE = (100, 300)


class LaunchError(AwsError):
    """A failure of a launch (an ``AwsError``), with the RunInstances attempts made.

    Its text carries AWS's message: applications show it as it is.
    """

    DETAIL = True

    def __init__(self, message, exception=None, attempts=None):
        super().__init__(message, exception)
        self.attempts = list(attempts or [])


# ---------------------------------------------------------------- images


class ImageRef:
    """Which image to launch: exactly one of ``image_id``, ``ssm_parameter`` or a family.

    A family is an ``_images.ImageFamily`` (a name prefix, tags and/or
    DescribeImages filters, of ``owners``); its newest ``available`` image by
    creation date wins, never a bake's unverified candidate. ``family_tag``
    (one ``{key: value}``; a None value matches any value) and ``name_prefix``
    build the family for callers that do not give ``family``.
    """

    def __init__(
        self, image_id=None, ssm_parameter=None, family_tag=None, name_prefix=None, owners=("self",), family=None
    ):
        self.image_id = image_id
        self.ssm_parameter = ssm_parameter
        given = [n for n, v in (("image_id", image_id), ("ssm_parameter", ssm_parameter)) if v]
        if family is not None or family_tag or name_prefix is not None:
            given.append("family")
        if len(given) != 1:
            raise LaunchError(
                "Give exactly one way to find the image: an image id, an SSM parameter, or a family "
                f"(tags and/or a name prefix); got {', '.join(given) or 'none'}"
            )
        if image_id and not IMAGE_ID_RE.match(image_id):
            raise LaunchError(f"Invalid image id {image_id!r}: expected ami- followed by 8 to 17 hex digits")
        if family_tag and len(family_tag) > 1:
            raise LaunchError("family_tag is one tag: give a single key, or several tags with family=ImageFamily(...)")
        self.family = family
        if family is None and "family" in given:
            try:
                self.family = ImageFamily(name_prefix=name_prefix, tags=family_tag, owners=owners)
            except ImageError as e:
                raise LaunchError(e.message) from None

    def describe(self):
        if self.image_id:
            return f"image {self.image_id}"
        if self.ssm_parameter:
            return f"the image named by SSM parameter {self.ssm_parameter}"
        return f"the newest image {self.family.describe()}"


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


# ---------------------------------------------------------------- requests and results


class LaunchRequest:
    """What to launch. ``instance_types`` and ``subnet_ids`` are tried in that order of preference.

    ``identity_tag`` (``{key: value}``, for example ``{"BurstJobId": "job-42"}``)
    makes the launch idempotent: instances carrying it that are not terminated
    count towards ``count``, and the client tokens derive from it. Without it,
    every call launches. ``market`` is ``spot`` or ``on-demand``; with
    ``spot_fallback_on_demand``, every type and subnet is tried as spot first,
    then again on demand.

    ``cost_cap`` (USD) is the most the launch may cost in all: the instance
    types whose highest price (``_prices.ceiling_price``, with
    ``on_demand_prices`` as ``{type: USD per hour}`` overrides) for
    ``time_limit_minutes`` and ``count`` instances is above it are left out. It
    needs ``time_limit_minutes``, the longest the instances can run.
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
        cost_cap=None,
        time_limit_minutes=None,
        on_demand_prices=None,
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
        self.cost_cap = cost_cap
        self.time_limit_minutes = time_limit_minutes
        self.on_demand_prices = dict(on_demand_prices or {})
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
        self._validate_cost()

    def _validate_cost(self):
        limit = self.time_limit_minutes
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
            raise LaunchError(f"Invalid time limit {limit!r}: give whole minutes, 1 or more")
        for name, price in self.on_demand_prices.items():
            if not INSTANCE_TYPE_RE.match(str(name)) or not _positive_number(price):
                raise LaunchError(
                    f"Invalid on-demand price {name!r}: {price!r}: give an instance type and its price in USD/h"
                )
        if self.cost_cap is None:
            return
        if not _positive_number(self.cost_cap):
            raise LaunchError(f"Invalid cost cap {self.cost_cap!r}: give a positive amount, in USD")
        if not limit:
            raise LaunchError(
                "A cost cap needs a time limit: without one (a maximum lifetime of 0), a launch has no maximum cost"
            )

    def all_tags(self):
        tags = {str(k): str(v) for k, v in self.tags.items()}
        tags.update({str(k): str(v) for k, v in self.identity_tag.items()})
        return tags

    def plan(self, instance_types=None):
        """Every (market, instance type, subnet) to try, in order. A None subnet lets EC2 choose.

        ``instance_types``: those of the request to try (the ones that can run the image), in the request's order.
        """
        markets = [self.market]
        if self.market == "spot" and self.spot_fallback_on_demand:
            markets.append("on-demand")
        subnets = self.subnet_ids or [None]
        types = [t for t in self.instance_types if instance_types is None or t in instance_types]
        return [(m, t, s) for m in markets for t in types for s in subnets]


def _positive_number(value):
    if isinstance(value, bool):
        return False
    try:
        number = float(value)
    except (TypeError, ValueError):
        return False
    return 0 < number < float("inf")


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
    """What ``Launcher.launch`` did: ``instances`` (EC2's dicts, existing ones included), the image, the attempts.

    ``warnings``: what the caller should be told (instance types left out because they cannot run the image's
    architecture, or not checked).
    """

    def __init__(self, changed, instances, image, attempts, launched_ids=None, market=None, warnings=None):
        self.changed = changed
        self.instances = instances
        self.image = image
        self.attempts = attempts
        self.launched_ids = list(launched_ids or [])
        self.market = market
        self.warnings = list(warnings or [])

    @property
    def instance_ids(self):
        return [i["InstanceId"] for i in self.instances]
