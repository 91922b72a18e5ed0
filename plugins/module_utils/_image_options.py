# -*- coding: utf-8 -*-

# Copyright: Contributors to the burst.golden_ami collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""The checks of the image modules' options: refuse bad input before anything is created.

Private to this collection. Image names, SSM parameter names and region names
are checked against what AWS would accept, block device overrides become
CreateImage's ``BlockDeviceMappings``, and deprecation times are computed the
way AWS records them. Every refusal is an ``ImageError``.
"""

from __future__ import annotations

import re
from datetime import timedelta

from ansible_collections.burst.golden_ami.plugins.module_utils._aws import (
    IMAGE_NAME_RE,
    REGION_RE,
    SSM_NAME_RE,
    AwsError,
    format_time,
    parse_time,
)
from ansible_collections.burst.golden_ami.plugins.module_utils._images import ImageError


def validate_image_name(name):
    if not name or not IMAGE_NAME_RE.match(name):
        raise ImageError(
            f"Invalid image name {name!r}: an image name has 3 to 128 characters among "
            "letters, digits, spaces and ( ) [ ] . / - ' @ _"
        )
    return name


def validate_ssm_parameter_name(name):
    """Refuse names that PutParameter would refuse, before any image is created or published."""
    problem = None
    if not SSM_NAME_RE.match(name or ""):
        problem = "only letters, digits, '.', '-', '_' and '/' are allowed (1 to 1011 characters)"
    elif "/" in name and not name.startswith("/"):
        problem = "a hierarchical name must start with '/'"
    elif "//" in name or name.endswith("/"):
        problem = "empty path segments are not allowed"
    elif re.match(r"^/?(aws|ssm)", name, re.IGNORECASE):
        problem = "names may not start with 'aws' or 'ssm'"
    elif name.count("/") > 15:
        problem = "at most 15 levels of hierarchy"
    if problem:
        raise ImageError(f"Invalid SSM parameter name {name!r}: {problem}")
    return name


def validate_region_names(regions, known_regions=None):
    """Check the form of every region, and that each is known when ``known_regions`` is given."""
    for region in regions:
        if not REGION_RE.match(region or ""):
            raise ImageError(f"Invalid region name {region!r}")
        if known_regions is not None and region not in known_regions:
            raise ImageError(f"Unknown region {region!r}: the EC2 endpoint does not list it in DescribeRegions")
    return list(regions)


def _time(value):
    try:
        return parse_time(value)
    except AwsError as e:
        raise ImageError(e.message) from None


def deprecation_time(creation_date, deprecate_at=None, deprecate_after_days=None):
    """The time an image is to be deprecated, as AWS writes it, or None.

    ``deprecate_after_days`` counts from the image's creation date, so that the
    same image always gets the same time and later runs change nothing.
    """
    if deprecate_at:
        when = _time(deprecate_at)
    elif deprecate_after_days:
        when = _time(creation_date) + timedelta(days=deprecate_after_days)
    else:
        return None
    # AWS rounds DeprecateAt down to the minute.
    return format_time(when.replace(second=0, microsecond=0))


def same_time(left, right):
    """True when two times are the same minute (AWS keeps DeprecationTime to the minute)."""
    if not left or not right:
        return left == right
    return _time(left).replace(second=0, microsecond=0) == _time(right).replace(second=0, microsecond=0)


def block_device_mappings(overrides):
    """CreateImage's BlockDeviceMappings from the module's ``block_devices`` option."""
    mappings = []
    for device in overrides or []:
        ebs = {}
        for option, key in (
            ("volume_size", "VolumeSize"),
            ("volume_type", "VolumeType"),
            ("iops", "Iops"),
            ("throughput", "Throughput"),
            ("encrypted", "Encrypted"),
            ("kms_key_id", "KmsKeyId"),
            ("delete_on_termination", "DeleteOnTermination"),
            ("snapshot_id", "SnapshotId"),
        ):
            if device.get(option) is not None:
                ebs[key] = device[option]
        if device.get("kms_key_id") and not device.get("encrypted"):
            raise ImageError(f"Device {device['device_name']}: kms_key_id needs encrypted=true")
        if device.get("throughput") is not None and device.get("volume_type") not in (None, "gp3"):
            raise ImageError(f"Device {device['device_name']}: throughput applies to gp3 volumes only")
        mapping = {"DeviceName": device["device_name"]}
        if device.get("no_device"):
            mapping["NoDevice"] = ""
        else:
            mapping["Ebs"] = ebs
        mappings.append(mapping)
    return mappings
