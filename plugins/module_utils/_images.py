# -*- coding: utf-8 -*-

# Copyright: Contributors to the burst.golden_ami collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""Machine images (AMIs) and their snapshots: every EC2 and SSM call this collection makes about them.

Private to this collection. ``ImageApi`` wraps one region's EC2 client and
``ParameterApi`` one region's SSM client; every call goes through amazon.aws's
``AWSRetry`` so that throttling is retried, and every failure comes out as an
``ImageError`` naming what failed. ``wait_for_images`` polls any number of
images (one per region) until each is ``available``. The validators refuse bad
input before anything is created.
"""

from __future__ import annotations

import re
import time
from datetime import datetime, timedelta, timezone

try:
    import botocore
    from botocore.parsers import ResponseParserError

    # What a call can raise: AWS's errors, the SDK's, and an answer that is not the service's format.
    AWS_ERRORS = (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError, ResponseParserError)
except ImportError:
    AWS_ERRORS = ()  # AnsibleAWSModule reports the missing SDK
    ResponseParserError = None

from ansible_collections.amazon.aws.plugins.module_utils.botocore import is_boto3_error_code
from ansible_collections.amazon.aws.plugins.module_utils.retries import AWSRetry
from ansible_collections.amazon.aws.plugins.module_utils.tagging import (
    ansible_dict_to_boto3_tag_list,
    boto3_tag_list_to_ansible_dict,
    compare_aws_tags,
)

# CreateImage and CopyImage accept 3 to 128 characters of this set.
IMAGE_NAME_RE = re.compile(r"^[A-Za-z0-9()\[\] ./\-'@_]{3,128}$")
# SSM parameter names: letters, digits, . - _ and /; a hierarchy starts with /.
SSM_NAME_RE = re.compile(r"^[A-Za-z0-9_.\-/]{1,1011}$")
REGION_RE = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d+$")
INSTANCE_ID_RE = re.compile(r"^i-[0-9a-f]{8,17}$")

IMAGE_DONE_STATES = ("available",)
# An instance in any of these states can still run (or run again from) its image.
INSTANCE_STATES_IN_USE = ("pending", "running", "shutting-down", "stopping", "stopped")
# The tag that says where an image stands: a candidate (captured, not yet verified nor published),
# being promoted (SSM parameters changing), or promoted (what production sees).
STAGE_TAG = "ImageStage"
STAGE_CANDIDATE = "candidate"
STAGE_PROMOTING = "promoting"
STAGE_PROMOTED = "promoted"
# On an image being promoted: the SSM values it replaces in its region, as JSON, for a rollback.
PREVIOUS_VALUES_TAG = "PromotedOver"
TAG_VALUE_MAX = 256
IMAGE_FAILED_STATES = ("failed", "invalid", "error", "deregistered", "disabled")
IMAGE_DATA_TYPE = "aws:ec2:image"
# Errors an endpoint gives for an image that is not visible yet (eventual consistency).
IMAGE_NOT_YET_VISIBLE = ("InvalidAMIID.NotFound", "InvalidAMIID.Unavailable")


class ImageError(Exception):
    """A failure with a message for the user, and the AWS exception behind it if any."""

    def __init__(self, message, exception=None):
        super().__init__(message)
        self.message = message
        self.exception = exception


def default_retry():
    """Retry throttling and transient server errors with jittered backoff (about 2 minutes at most)."""
    return AWSRetry.jittered_backoff(retries=10, delay=2, max_delay=30)


# The launch_permissions option of golden_ami and golden_ami_promote (doc fragment launch_permissions).
LAUNCH_PERMISSIONS_OPTION = dict(
    type="dict",
    options=dict(
        user_ids=dict(type="list", elements="str", default=[]),
        organization_arns=dict(type="list", elements="str", default=[]),
        organizational_unit_arns=dict(type="list", elements="str", default=[]),
    ),
)


def region_factories(module):
    """(ec2, ssm): factories from a region to an ImageApi / ParameterApi of an AnsibleAWSModule's clients."""
    retry = default_retry()

    def ec2(region):
        return ImageApi(module.client("ec2", retry_decorator=retry, region=region), region)

    def ssm(region):
        return ParameterApi(module.client("ssm", retry_decorator=retry, region=region), region)

    return ec2, ssm


def fail_module(module, error, **extra):
    """Fail an AnsibleAWSModule with an ImageError's message (and AWS's error details when there is one)."""
    if error.exception is not None:
        module.fail_json_aws(error.exception, msg=error.message, **extra)
    module.fail_json(msg=error.message, **extra)


def _call(what, func, **params):
    """Run one AWS call; turn every botocore failure into an ImageError naming ``what``."""
    try:
        return func(aws_retry=True, **params)
    except AWS_ERRORS as e:
        raise ImageError(f"Failed to {what}", exception=e) from e


def error_code(exception):
    """The AWS error code of a ClientError, or None."""
    response = getattr(exception, "response", None) or {}
    return response.get("Error", {}).get("Code")


# ---------------------------------------------------------------- validation


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


def deprecation_time(creation_date, deprecate_at=None, deprecate_after_days=None):
    """The time an image is to be deprecated, as AWS writes it, or None.

    ``deprecate_after_days`` counts from the image's creation date, so that the
    same image always gets the same time and later runs change nothing.
    """
    if deprecate_at:
        when = parse_time(deprecate_at)
    elif deprecate_after_days:
        when = parse_time(creation_date) + timedelta(days=deprecate_after_days)
    else:
        return None
    # AWS rounds DeprecateAt down to the minute.
    return format_time(when.replace(second=0, microsecond=0))


def parse_time(value):
    if isinstance(value, datetime):
        when = value
    else:
        text = str(value).strip().replace("Z", "+00:00")
        try:
            when = datetime.fromisoformat(text)
        except ValueError:
            raise ImageError(f"Invalid time {value!r}: use ISO 8601, for example 2030-01-31T00:00:00Z") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return when.astimezone(timezone.utc)


def format_time(when):
    return parse_time(when).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def same_time(left, right):
    if not left or not right:
        return left == right
    return parse_time(left).replace(second=0, microsecond=0) == parse_time(right).replace(second=0, microsecond=0)


# ---------------------------------------------------------------- image facts


def image_tags(image):
    return boto3_tag_list_to_ansible_dict(image.get("Tags") or [])


def image_snapshot_ids(image):
    mappings = image.get("BlockDeviceMappings") or []
    return [m["Ebs"]["SnapshotId"] for m in mappings if m.get("Ebs", {}).get("SnapshotId")]


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


def summarize_image(image, region):
    """The snake_case facts a module returns about one image."""
    return {
        "region": region,
        "image_id": image["ImageId"],
        "name": image.get("Name"),
        "state": image.get("State"),
        "creation_date": image.get("CreationDate"),
        "snapshot_ids": image_snapshot_ids(image),
        "tags": image_tags(image),
        "deprecation_time": image.get("DeprecationTime"),
        "boot_mode": image.get("BootMode"),
        "imds_support": image.get("ImdsSupport"),
    }


# ---------------------------------------------------------------- EC2


class ImageApi:
    """The EC2 calls about images, snapshots, instances and launch templates in one region."""

    def __init__(self, client, region):
        self.client = client
        self.region = region

    def _what(self, text):
        return f"{text} in {self.region}"

    def known_regions(self):
        result = _call(self._what("describe regions"), self.client.describe_regions, AllRegions=True)
        return {r["RegionName"] for r in result.get("Regions", [])}

    def get_instance(self, instance_id):
        if not INSTANCE_ID_RE.match(instance_id or ""):
            raise ImageError(f"Invalid instance id {instance_id!r}")
        try:
            reservations = self.client.describe_instances(aws_retry=True, InstanceIds=[instance_id])["Reservations"]
        except is_boto3_error_code(["InvalidInstanceID.NotFound", "InvalidInstanceID.Malformed"]) as e:
            raise ImageError(f"Instance {instance_id} not found in {self.region}", exception=e) from e
        except AWS_ERRORS as e:  # pylint: disable=duplicate-except
            raise ImageError(self._what(f"Failed to describe instance {instance_id}"), exception=e) from e
        instances = [i for r in reservations for i in r.get("Instances", [])]
        if not instances:
            raise ImageError(f"Instance {instance_id} not found in {self.region}")
        instance = instances[0]
        if instance.get("State", {}).get("Name") in ("shutting-down", "terminated"):
            raise ImageError(f"Instance {instance_id} in {self.region} is {instance['State']['Name']}")
        return instance

    def describe_images(self, image_ids=None, filters=None, owners=("self",)):
        params = {"Owners": list(owners)} if owners else {}
        if image_ids:
            params["ImageIds"] = list(image_ids)
        if filters:
            params["Filters"] = [{"Name": k, "Values": list(v)} for k, v in filters.items()]
        images = []
        while True:
            result = _call(self._what("describe images"), self.client.describe_images, **params)
            images.extend(result.get("Images", []))
            if not result.get("NextToken"):
                return images
            params["NextToken"] = result["NextToken"]

    def get_image(self, image_id):
        """The image, or None while the endpoint does not show it (yet, or any more)."""
        try:
            images = self.client.describe_images(aws_retry=True, ImageIds=[image_id])["Images"]
        except is_boto3_error_code(IMAGE_NOT_YET_VISIBLE):
            return None
        except AWS_ERRORS as e:  # pylint: disable=duplicate-except
            raise ImageError(self._what(f"Failed to describe image {image_id}"), exception=e) from e
        return images[0] if images else None

    def find_images(self, name=None, tags=None):
        filters = {}
        if name:
            filters["name"] = [name]
        for key, value in (tags or {}).items():
            filters[f"tag:{key}"] = [value]
        images = self.describe_images(filters=filters)
        return [i for i in images if i.get("State") not in ("deregistered",)]

    def create_image(self, **params):
        """CreateImage; returns the new image id, or the existing one after a retried call (name taken)."""
        try:
            return self.client.create_image(aws_retry=True, **params)["ImageId"]
        except is_boto3_error_code("InvalidAMIName.Duplicate") as e:
            # A retry after a lost answer: the first call created it. Anything else
            # with this name was refused before this call, by the caller.
            existing = self.find_images(name=params["Name"])
            if len(existing) == 1 and existing[0].get("SourceInstanceId") in (None, params["InstanceId"]):
                return existing[0]["ImageId"]
            raise ImageError(f"Image name {params['Name']!r} is already taken in {self.region}", exception=e) from e
        except AWS_ERRORS as e:  # pylint: disable=duplicate-except
            raise ImageError(self._what(f"Failed to create image {params['Name']!r}"), exception=e) from e

    def copy_image(self, **params):
        return _call(self._what(f"copy image {params['SourceImageId']}"), self.client.copy_image, **params)["ImageId"]

    def ensure_tags(self, resource_ids, tags, purge=False, check_mode=False, current=None):
        """Bring the tags of each resource in step with ``tags``; return the ids that changed."""
        if current is None:
            current = self.resource_tags(resource_ids)
        changed = []
        for resource_id in resource_ids:
            to_set, to_unset = compare_aws_tags(current.get(resource_id, {}), tags, purge_tags=purge)
            if not to_set and not to_unset:
                continue
            changed.append(resource_id)
            if check_mode:
                continue
            if to_set:
                _call(
                    self._what(f"tag {resource_id}"),
                    self.client.create_tags,
                    Resources=[resource_id],
                    Tags=ansible_dict_to_boto3_tag_list(dict(sorted(to_set.items()))),
                )
            if to_unset:
                _call(
                    self._what(f"untag {resource_id}"),
                    self.client.delete_tags,
                    Resources=[resource_id],
                    Tags=[{"Key": k} for k in sorted(to_unset)],
                )
        return changed

    def resource_tags(self, resource_ids):
        tags = {r: {} for r in resource_ids}
        params = {"Filters": [{"Name": "resource-id", "Values": list(resource_ids)}]}
        while True:
            result = _call(self._what("describe tags"), self.client.describe_tags, **params)
            for tag in result.get("Tags", []):
                tags.setdefault(tag["ResourceId"], {})[tag["Key"]] = tag["Value"]
            if not result.get("NextToken"):
                return tags
            params["NextToken"] = result["NextToken"]

    def launch_permissions(self, image_id):
        result = _call(
            self._what(f"describe launch permissions of {image_id}"),
            self.client.describe_image_attribute,
            ImageId=image_id,
            Attribute="launchPermission",
        )
        return result.get("LaunchPermissions", [])

    def add_launch_permissions(self, image_id, permissions):
        _call(
            self._what(f"share image {image_id}"),
            self.client.modify_image_attribute,
            ImageId=image_id,
            LaunchPermission={"Add": permissions},
        )

    def require_imds_v2(self, image_id):
        _call(
            self._what(f"set IMDSv2 on {image_id}"),
            self.client.modify_image_attribute,
            ImageId=image_id,
            ImdsSupport={"Value": "v2.0"},
        )

    def enable_deprecation(self, image_id, deprecate_at):
        try:
            self.client.enable_image_deprecation(aws_retry=True, ImageId=image_id, DeprecateAt=deprecate_at)
        except ResponseParserError as e:
            # An endpoint that does not implement the call answers with something that is not EC2's XML.
            raise ImageError(
                f"The EC2 endpoint in {self.region} does not support EnableImageDeprecation "
                f"(deprecating {image_id}): {e}",
                exception=e,
            ) from e
        except AWS_ERRORS as e:  # pylint: disable=duplicate-except
            what = self._what(f"Failed to set deprecation of {image_id} to {deprecate_at}")
            raise ImageError(what, exception=e) from e

    def ensure_launch_permissions(self, image_id, wanted, check_mode=False):
        """Add the accounts, organizations and OUs of ``wanted`` that the image lacks; return their names."""
        if not any((wanted or {}).get(k) for k in ("user_ids", "organization_arns", "organizational_unit_arns")):
            return []
        have = self.launch_permissions(image_id)
        missing = []
        for option, key in (
            ("user_ids", "UserId"),
            ("organization_arns", "OrganizationArn"),
            ("organizational_unit_arns", "OrganizationalUnitArn"),
        ):
            present = {p.get(key) for p in have}
            missing.extend({key: value} for value in wanted.get(option) or [] if value not in present)
        if missing and not check_mode:
            self.add_launch_permissions(image_id, missing)
        return [next(iter(p.values())) for p in missing]

    def snapshot_progress(self, snapshot_ids):
        """{snapshot id: progress ("45%")} of the snapshots; empty when they cannot be read (yet)."""
        if not snapshot_ids:
            return {}
        try:
            result = self.client.describe_snapshots(aws_retry=True, SnapshotIds=list(snapshot_ids))
        except AWS_ERRORS:
            return {}  # a snapshot not visible yet, or no right to look: progress is information only
        return {s["SnapshotId"]: s.get("Progress") or "?" for s in result.get("Snapshots", [])}

    def find_snapshots(self, tags):
        """This account's snapshots carrying all ``tags``."""
        params = {"OwnerIds": ["self"], "Filters": [{"Name": f"tag:{k}", "Values": [v]} for k, v in tags.items()]}
        snapshots = []
        while True:
            result = _call(self._what("describe snapshots"), self.client.describe_snapshots, **params)
            snapshots.extend(result.get("Snapshots", []))
            if not result.get("NextToken"):
                return snapshots
            params["NextToken"] = result["NextToken"]

    def deregister_image(self, image_id):
        try:
            self.client.deregister_image(aws_retry=True, ImageId=image_id)
        except is_boto3_error_code(IMAGE_NOT_YET_VISIBLE):
            return False
        except AWS_ERRORS as e:  # pylint: disable=duplicate-except
            raise ImageError(self._what(f"Failed to deregister image {image_id}"), exception=e) from e
        return True

    def delete_snapshot(self, snapshot_id, attempts=10, sleep=time.sleep):
        """Delete a snapshot; wait while a just deregistered image still holds it.

        Raises ImageError after ``attempts`` refusals with ``InvalidSnapshot.InUse``;
        callers that must go on catch it and report the snapshot as left.
        """
        for attempt in range(attempts):
            try:
                self.client.delete_snapshot(aws_retry=True, SnapshotId=snapshot_id)
                return True
            except is_boto3_error_code("InvalidSnapshot.NotFound"):
                return False
            except is_boto3_error_code("InvalidSnapshot.InUse") as e:  # pylint: disable=duplicate-except
                if attempt == attempts - 1:
                    raise ImageError(self._what(f"Snapshot {snapshot_id} is still in use"), exception=e) from e
                sleep(min(2**attempt, 15))
            except AWS_ERRORS as e:  # pylint: disable=duplicate-except
                raise ImageError(self._what(f"Failed to delete snapshot {snapshot_id}"), exception=e) from e
        return False

    def image_ids_used_by_instances(self, image_ids):
        """{image id: [instance ids]} for the instances of ``image_ids`` in any state but terminated."""
        if not image_ids:
            return {}
        params = {
            "Filters": [
                {"Name": "image-id", "Values": list(image_ids)},
                {"Name": "instance-state-name", "Values": list(INSTANCE_STATES_IN_USE)},
            ]
        }
        used = {}
        while True:
            result = _call(self._what("describe instances"), self.client.describe_instances, **params)
            for reservation in result.get("Reservations", []):
                for instance in reservation.get("Instances", []):
                    used.setdefault(instance["ImageId"], []).append(instance["InstanceId"])
            if not result.get("NextToken"):
                return used
            params["NextToken"] = result["NextToken"]

    def image_ids_of_launch_templates(self):
        """{image id: ["name (version N)", ...]} for every version of every launch template.

        Every version counts, not only ``$Default``: ``$Latest``, a pinned version
        in an Auto Scaling group or a fleet, and a rollback to an older version can
        each launch it.
        """
        used = {}
        params = {}
        templates = []
        while True:
            result = _call(self._what("describe launch templates"), self.client.describe_launch_templates, **params)
            templates.extend(result.get("LaunchTemplates", []))
            if not result.get("NextToken"):
                break
            params["NextToken"] = result["NextToken"]
        for template in templates:
            name = template["LaunchTemplateName"]
            params = {"LaunchTemplateId": template["LaunchTemplateId"]}
            while True:
                result = _call(
                    self._what(f"describe the versions of launch template {name}"),
                    self.client.describe_launch_template_versions,
                    **params,
                )
                for version in result.get("LaunchTemplateVersions", []):
                    image_id = version.get("LaunchTemplateData", {}).get("ImageId")
                    if image_id:
                        used.setdefault(image_id, []).append(f"{name} (version {version.get('VersionNumber')})")
                if not result.get("NextToken"):
                    break
                params["NextToken"] = result["NextToken"]
        return used


class AutoScalingApi:
    """The Auto Scaling calls in one region: which images its launch configurations use."""

    def __init__(self, client, region):
        self.client = client
        self.region = region

    def image_ids_of_launch_configurations(self):
        """{image id: [launch configuration names]}; groups with launch templates are covered by their versions."""
        used = {}
        params = {}
        while True:
            result = _call(
                f"describe launch configurations in {self.region}",
                self.client.describe_launch_configurations,
                **params,
            )
            for configuration in result.get("LaunchConfigurations", []):
                if configuration.get("ImageId"):
                    used.setdefault(configuration["ImageId"], []).append(configuration["LaunchConfigurationName"])
            if not result.get("NextToken"):
                return used
            params["NextToken"] = result["NextToken"]


# ---------------------------------------------------------------- SSM


class ParameterApi:
    """The SSM Parameter Store calls in one region."""

    def __init__(self, client, region):
        self.client = client
        self.region = region

    def get_value(self, name):
        try:
            return self.client.get_parameter(aws_retry=True, Name=name)["Parameter"]["Value"]
        except is_boto3_error_code("ParameterNotFound"):
            return None
        except AWS_ERRORS as e:  # pylint: disable=duplicate-except
            raise ImageError(f"Failed to read SSM parameter {name} in {self.region}", exception=e) from e

    def put_image_id(self, name, image_id, description=None):
        params = {"Name": name, "Value": image_id, "Type": "String", "DataType": IMAGE_DATA_TYPE, "Overwrite": True}
        if description:
            params["Description"] = description
        _call(f"publish {image_id} to SSM parameter {name} in {self.region}", self.client.put_parameter, **params)

    def delete(self, name):
        """Delete a parameter (a rollback to "there was none"); False when it is gone already."""
        try:
            self.client.delete_parameter(aws_retry=True, Name=name)
        except is_boto3_error_code("ParameterNotFound"):
            return False
        except AWS_ERRORS as e:  # pylint: disable=duplicate-except
            raise ImageError(f"Failed to delete SSM parameter {name} in {self.region}", exception=e) from e
        return True


# ---------------------------------------------------------------- waiting


def wait_for_images(apis_and_ids, timeout, poll_interval, sleep=time.sleep, clock=time.monotonic, progress=None):
    """Poll every (ImageApi, image id) pair until each image is available; return {region: image}.

    Images in several regions are waited for together, each poll asking every
    region still pending. Throttling is retried by the calls themselves and is
    never taken as a state. A ``failed`` image raises with AWS's reason; an
    image not visible yet counts as pending until ``timeout`` seconds. ``progress`` (optional) is
    called after each poll with ``{region: (api, image id, image or None)}`` of every image.
    """
    pending = {api.region: (api, image_id) for api, image_id in apis_and_ids}
    seen = {}
    done = {}
    deadline = clock() + timeout
    while True:
        for region, (api, image_id) in list(pending.items()):
            image = api.get_image(image_id)
            seen[region] = (api, image_id, image)
            state = image.get("State") if image else "not visible yet"
            if state in IMAGE_DONE_STATES:
                done[region] = image
                del pending[region]
            elif state in IMAGE_FAILED_STATES:
                reason = (image.get("StateReason") or {}).get("Message") or "no reason given"
                raise ImageError(f"Image {image_id} in {region} is {state}: {reason}")
        if progress is not None:
            progress(seen)
        if not pending:
            return done
        if clock() >= deadline:
            waiting = ", ".join(f"{image_id} in {region}" for region, (_api, image_id) in pending.items())
            raise ImageError(f"Timed out after {timeout} s waiting for {waiting} to become available")
        sleep(poll_interval)
