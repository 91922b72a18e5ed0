# -*- coding: utf-8 -*-

# Copyright: Contributors to the burst.golden_ami collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""Machine images (AMIs) and their snapshots: every EC2, SSM and Auto Scaling call about them.

Private to this collection. ``ImageApi`` wraps one region's EC2 client,
``ParameterApi`` one region's SSM client and ``AutoScalingApi`` one region's
Auto Scaling client; every call goes through ``_aws.call`` or
``_aws.paginate`` (the collection's one retry policy), and every failure comes
out as an ``ImageError`` naming what failed. ``ImageFamily`` is the one
definition of an image family (a name prefix, tags and/or DescribeImages
filters such as the architecture, never the candidates of a bake in
progress), which pruning and launching share.
``wait_for_images`` polls any number of images (one per region) until each is
``available``. The checks of the modules' image options are in
``_image_options``.
"""

from __future__ import annotations

import time

from ansible_collections.amazon.aws.plugins.module_utils.tagging import (
    ansible_dict_to_boto3_tag_list,
    boto3_tag_list_to_ansible_dict,
    compare_aws_tags,
)
from ansible_collections.burst.golden_ami.plugins.module_utils._aws import (
    INSTANCE_ID_RE,
    STAGE_CANDIDATE,
    STAGE_PROMOTING,
    STAGE_TAG,
    VERSION_TAG,
    AwsError,
    PollTimeout,
    call,
    error_code,
    filters,
    paginate,
    parse_time,
    poll_until,
    tag_filters,
)

IMAGE_DONE_STATES = ("available",)
IMAGE_FAILED_STATES = ("failed", "invalid", "error", "deregistered", "disabled")
# An instance in any of these states can still run (or run again from) its image.
INSTANCE_STATES_IN_USE = ("pending", "running", "shutting-down", "stopping", "stopped")
IMAGE_DATA_TYPE = "aws:ec2:image"
# Errors an endpoint gives for an image that is not visible yet (eventual consistency).
IMAGE_NOT_YET_VISIBLE = ("InvalidAMIID.NotFound", "InvalidAMIID.Unavailable")
# ... and for an id that is not an image id at all.
IMAGE_NOT_FOUND = (*IMAGE_NOT_YET_VISIBLE, "InvalidAMIID.Malformed")
# The stages of a bake in progress: such an image is not (yet) part of its family.
STAGES_IN_PROGRESS = (STAGE_CANDIDATE, STAGE_PROMOTING)


class ImageError(AwsError):
    """A failure about images, snapshots or SSM parameters (an ``AwsError``)."""


# ---------------------------------------------------------------- image facts


def image_tags(image):
    return boto3_tag_list_to_ansible_dict((image or {}).get("Tags") or [])


def image_snapshot_ids(image):
    mappings = image.get("BlockDeviceMappings") or []
    return [m["Ebs"]["SnapshotId"] for m in mappings if m.get("Ebs", {}).get("SnapshotId")]


def image_version(image, version_tag=VERSION_TAG):
    """The golden image version: the image's ``version_tag`` tag, or None."""
    if not image:
        return None
    return image_tags(image).get(version_tag)


def newest_image(images):
    """The image with the latest CreationDate (ties broken by image id, so the choice is stable)."""
    if not images:
        return None
    return max(images, key=lambda i: (parse_time(i.get("CreationDate") or "1970-01-01T00:00:00Z"), i["ImageId"]))


def tagged_id(params, id_option, default_tag):
    """The id that option ``id_option`` gives (a build or bake id), and the tag key that holds it: the value of
    option ``<id_option>_tag``, else ``default_tag``."""
    return params.get(id_option), params.get(f"{id_option}_tag") or default_tag


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


# EC2's image architectures (DescribeImages' architecture filter, an image's Architecture).
ARCHITECTURES = ("i386", "x86_64", "arm64", "x86_64_mac", "arm64_mac")


def _filter_values(name, value):
    """The values of one DescribeImages filter given as a string (a number, a boolean) or a list of them."""
    values = value if isinstance(value, (list, tuple)) else [value]
    texts = [str(v).lower() if isinstance(v, bool) else "" if v is None else str(v) for v in values]
    if not texts or not all(t.strip() for t in texts):
        raise ImageError(f"Image filter {name!r} has no value: give a string or a list of strings")
    return texts


def image_filters(given, architecture=None):
    """``{filter name: [values]}`` from ``given`` (a dict of DescribeImages filters) and ``architecture``."""
    if given is None:
        given = {}
    if not isinstance(given, dict):
        raise ImageError(
            f"Image filters must be a dict of DescribeImages filter names to a value or a list of values, "
            f"such as {{architecture: arm64}}; got {type(given).__name__} {given!r}"
        )
    found = {}
    for name, value in given.items():
        if not isinstance(name, str) or not name.strip():
            raise ImageError(
                f"Invalid image filter name {name!r}: give a DescribeImages filter name such as architecture"
            )
        found[name] = _filter_values(name, value)
    if architecture is not None:
        if architecture not in ARCHITECTURES:
            raise ImageError(f"Invalid architecture {architecture!r}: one of {', '.join(ARCHITECTURES)}")
        if found.get("architecture", [architecture]) != [architecture]:
            raise ImageError(
                f"The architecture {architecture} and the filter architecture={','.join(found['architecture'])} "
                "disagree: give one of them"
            )
        found["architecture"] = [architecture]
    return found


class ImageFamily:
    """The images of a family: owned by ``owners``, named ``name_prefix``... and/or carrying every tag of ``tags``,
    and/or matching every DescribeImages filter of ``filters`` (``architecture`` being short for that filter).

    A tag value of None matches any value of the key. A filter's value is a
    string or a list of strings (any of them matches), as in Packer's
    ``source_ami_filter``. Candidates of a bake in progress (``ImageStage``
    candidate or promoting) are never part of a family: they are not verified yet.
    """

    def __init__(self, name_prefix=None, tags=None, owners=("self",), filters=None, architecture=None):
        self.name_prefix = name_prefix
        self.tags = {str(k): None if v is None else str(v) for k, v in (tags or {}).items()}
        self.owners = list(owners or [])
        self.extra_filters = image_filters(filters, architecture)
        if name_prefix is not None and not str(name_prefix).strip():
            raise ImageError("An image name prefix may not be empty")
        if not name_prefix and not self.tags and not self.extra_filters:
            raise ImageError("An image family needs a name prefix, tags or filters (any of them combine)")
        taken = {"state": "the state (a family's images are the available ones)"}
        if name_prefix:
            taken["name"] = "name_prefix"
        taken.update({f"tag:{key}": "tags" for key in self.tags})
        for name in self.extra_filters:
            if name in taken:
                raise ImageError(f"Image filter {name!r} is set by {taken[name]} already: give it once")

    @classmethod
    def from_option(cls, option, legacy_name_prefix=None, legacy_tags=None):
        """The family of an ``image_family`` option ({name_prefix, tags, owners, filters, architecture}), or of the
        deprecated options."""
        option = dict(option or {})
        tags = dict(option.get("tags") or {})
        for key, value in (legacy_tags or {}).items():
            tags.setdefault(key, value)
        return cls(
            name_prefix=option.get("name_prefix") or legacy_name_prefix,
            tags=tags,
            owners=option.get("owners") or ("self",),
            filters=option.get("filters"),
            architecture=option.get("architecture"),
        )

    def filters(self, states=None):
        found = filters(state=states) if states else []
        if self.name_prefix:
            found += filters(name=[f"{self.name_prefix}*"])
        found += tag_filters(self.tags)
        return found + [{"Name": name, "Values": list(values)} for name, values in self.extra_filters.items()]

    def holds(self, image):
        """True for an image that ``filters`` found and that belongs to the family.

        The tags are EC2's filters; the name (and the architecture) are checked
        again, a filter being looser on some endpoints; candidates are left out here,
        EC2 having no filter for a tag that is absent or has another value.
        """
        architectures = self.extra_filters.get("architecture")
        return (
            image.get("State") != "deregistered"
            and (image.get("Name") or "").startswith(self.name_prefix or "")
            and image_tags(image).get(STAGE_TAG) not in STAGES_IN_PROGRESS
            and not (architectures and image.get("Architecture") and image["Architecture"] not in architectures)
        )

    def describe(self):
        parts = [f"named {self.name_prefix}*"] if self.name_prefix else []
        if self.tags:
            tags = ", ".join(f"{k}={'*' if v is None else v}" for k, v in self.tags.items())
            parts.append(f"tagged {tags}")
        if self.extra_filters:
            matching = ", ".join(f"{k}={','.join(v)}" for k, v in self.extra_filters.items())
            parts.append(f"matching {matching}")
        if self.owners and self.owners != ["self"]:
            parts.append(f"owned by {', '.join(self.owners)}")
        return " ".join(parts)


# ---------------------------------------------------------------- EC2


class RegionalApi:
    """One service's client in one region; its calls name the region when they fail."""

    def __init__(self, client, region):
        self.client = client
        self.region = region

    def _call(self, what, operation, missing=(), **params):
        what = f"{what} in {self.region}"
        return call(what, getattr(self.client, operation), error=ImageError, missing=missing, **params)

    def _pages(self, what, operation, key, **params):
        return paginate(self.client, operation, f"{what} in {self.region}", error=ImageError, **params).get(key, [])


class ImageApi(RegionalApi):
    """The EC2 calls about images, snapshots, instances and launch templates in one region."""

    def known_regions(self):
        result = self._call("describe regions", "describe_regions", AllRegions=True)
        return {r["RegionName"] for r in result.get("Regions", [])}

    def get_instance(self, instance_id):
        if not INSTANCE_ID_RE.match(instance_id or ""):
            raise ImageError(f"Invalid instance id {instance_id!r}")
        missing = ("InvalidInstanceID.NotFound", "InvalidInstanceID.Malformed")
        result = self._call(
            f"describe instance {instance_id}", "describe_instances", missing, InstanceIds=[instance_id]
        )
        instances = [i for r in (result or {}).get("Reservations", []) for i in r.get("Instances", [])]
        if not instances:
            raise ImageError(f"Instance {instance_id} not found in {self.region}")
        instance = instances[0]
        if instance.get("State", {}).get("Name") in ("shutting-down", "terminated"):
            raise ImageError(f"Instance {instance_id} in {self.region} is {instance['State']['Name']}")
        return instance

    def describe_images(self, image_ids=None, filters=None, owners=("self",)):
        """Every image matching ``filters`` (EC2's filter list) and/or ``image_ids``, of ``owners``."""
        params = {"Owners": list(owners)} if owners else {}
        if image_ids:
            params["ImageIds"] = list(image_ids)
        if filters:
            params["Filters"] = list(filters)
        return self._pages("describe images", "describe_images", "Images", **params)

    def images_by_id(self, image_ids):
        """{image id: image} in one request; ids that are not (or no longer) images are left out."""
        image_ids = sorted(set(image_ids))
        if not image_ids:
            return {}
        try:
            found = self.describe_images(image_ids, owners=None)
        except ImageError as e:
            if error_code(e.exception) not in IMAGE_NOT_FOUND:
                raise
            # One bad id fails the whole request: ask for the others one at a time.
            found = [image for image in map(self.get_image, image_ids) if image]
        return {i["ImageId"]: i for i in found}

    def get_image(self, image_id):
        """The image, or None while the endpoint does not show it (yet, or any more)."""
        result = self._call(f"describe image {image_id}", "describe_images", IMAGE_NOT_FOUND, ImageIds=[image_id])
        images = (result or {}).get("Images") or []
        return images[0] if images else None

    def find_images(self, name=None, tags=None):
        found = (filters(name=[name]) if name else []) + tag_filters(tags)
        return [i for i in self.describe_images(filters=found) if i.get("State") != "deregistered"]

    def family_images(self, family, states=None):
        """The images of ``family`` (an ImageFamily), in ``states`` when given."""
        images = self.describe_images(filters=family.filters(states), owners=family.owners)
        return [i for i in images if family.holds(i)]

    def create_image(self, **params):
        """CreateImage; returns the new image id, or the existing one after a retried call (name taken)."""
        try:
            return self._call(f"create image {params['Name']!r}", "create_image", **params)["ImageId"]
        except ImageError as e:
            if not error_code(e.exception) == "InvalidAMIName.Duplicate":
                raise
            # A retry after a lost answer: the first call created it. Anything else
            # with this name was refused before this call, by the caller.
            existing = self.find_images(name=params["Name"])
            if len(existing) == 1 and existing[0].get("SourceInstanceId") in (None, params["InstanceId"]):
                return existing[0]["ImageId"]
            raise ImageError(
                f"Image name {params['Name']!r} is already taken in {self.region}", exception=e.exception
            ) from e

    def copy_image(self, **params):
        return self._call(f"copy image {params['SourceImageId']}", "copy_image", **params)["ImageId"]

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
                tag_list = ansible_dict_to_boto3_tag_list(dict(sorted(to_set.items())))
                self._call(f"tag {resource_id}", "create_tags", Resources=[resource_id], Tags=tag_list)
            if to_unset:
                tag_list = [{"Key": k} for k in sorted(to_unset)]
                self._call(f"untag {resource_id}", "delete_tags", Resources=[resource_id], Tags=tag_list)
        return changed

    def resource_tags(self, resource_ids):
        tags = {r: {} for r in resource_ids}
        for tag in self._pages("describe tags", "describe_tags", "Tags", Filters=filters(resource_id=resource_ids)):
            tags.setdefault(tag["ResourceId"], {})[tag["Key"]] = tag["Value"]
        return tags

    def launch_permissions(self, image_id):
        what = f"describe launch permissions of {image_id}"
        result = self._call(what, "describe_image_attribute", ImageId=image_id, Attribute="launchPermission")
        return result.get("LaunchPermissions", [])

    def add_launch_permissions(self, image_id, permissions):
        what = f"share image {image_id}"
        self._call(what, "modify_image_attribute", ImageId=image_id, LaunchPermission={"Add": permissions})

    def require_imds_v2(self, image_id):
        self._call(
            f"set IMDSv2 on {image_id}", "modify_image_attribute", ImageId=image_id, ImdsSupport={"Value": "v2.0"}
        )

    def enable_deprecation(self, image_id, deprecate_at):
        what = f"set deprecation of {image_id} to {deprecate_at}"
        try:
            self._call(what, "enable_image_deprecation", ImageId=image_id, DeprecateAt=deprecate_at)
        except ImageError as e:
            if type(e.exception).__name__ != "ResponseParserError":
                raise
            # An endpoint that does not implement the call answers with something that is not EC2's XML.
            raise ImageError(
                f"The EC2 endpoint in {self.region} does not support EnableImageDeprecation "
                f"(deprecating {image_id}): {e.exception}",
                exception=e.exception,
            ) from e

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
            result = self._call("describe snapshots", "describe_snapshots", SnapshotIds=list(snapshot_ids))
        except ImageError:
            return {}  # a snapshot not visible yet, or no right to look: progress is information only
        return {s["SnapshotId"]: s.get("Progress") or "?" for s in result.get("Snapshots", [])}

    def find_snapshots(self, tags):
        """This account's snapshots carrying all ``tags``."""
        return self._pages(
            "describe snapshots", "describe_snapshots", "Snapshots", OwnerIds=["self"], Filters=tag_filters(tags)
        )

    def deregister_image(self, image_id):
        """Deregister the image; False when it was gone already."""
        result = self._call(f"deregister image {image_id}", "deregister_image", IMAGE_NOT_YET_VISIBLE, ImageId=image_id)
        return result is not None

    def delete_snapshot(self, snapshot_id, attempts=10, sleep=time.sleep):
        """Delete a snapshot; wait while a just deregistered image still holds it.

        Raises ImageError after ``attempts`` refusals with ``InvalidSnapshot.InUse``;
        callers that must go on catch it and report the snapshot as left.
        """
        for attempt in range(attempts):
            try:
                what = f"delete snapshot {snapshot_id}"
                return (
                    self._call(what, "delete_snapshot", ("InvalidSnapshot.NotFound",), SnapshotId=snapshot_id)
                    is not None
                )
            except ImageError as e:
                if not error_code(e.exception) == "InvalidSnapshot.InUse":
                    raise
                if attempt == attempts - 1:
                    message = f"Snapshot {snapshot_id} is still in use in {self.region}"
                    raise ImageError(message, exception=e.exception) from e
                sleep(min(2**attempt, 15))
        return False

    def image_ids_used_by_instances(self, image_ids):
        """{image id: [instance ids]} for the instances of ``image_ids`` in any state but terminated."""
        if not image_ids:
            return {}
        used = {}
        found = filters(image_id=image_ids, instance_state_name=INSTANCE_STATES_IN_USE)
        for reservation in self._pages("describe instances", "describe_instances", "Reservations", Filters=found):
            for instance in reservation.get("Instances", []):
                used.setdefault(instance["ImageId"], []).append(instance["InstanceId"])
        return used

    def image_ids_of_launch_templates(self):
        """{image id: ["name (version N)", ...]} for every version of every launch template.

        Every version counts, not only ``$Default``: ``$Latest``, a pinned version
        in an Auto Scaling group or a fleet, and a rollback to an older version can
        each launch it.
        """
        used = {}
        for template in self._pages("describe launch templates", "describe_launch_templates", "LaunchTemplates"):
            name = template["LaunchTemplateName"]
            versions = self._pages(
                f"describe the versions of launch template {name}",
                "describe_launch_template_versions",
                "LaunchTemplateVersions",
                LaunchTemplateId=template["LaunchTemplateId"],
            )
            for version in versions:
                image_id = version.get("LaunchTemplateData", {}).get("ImageId")
                if image_id:
                    used.setdefault(image_id, []).append(f"{name} (version {version.get('VersionNumber')})")
        return used


class AutoScalingApi(RegionalApi):
    """The Auto Scaling calls in one region: which images its launch configurations use."""

    def image_ids_of_launch_configurations(self):
        """{image id: [launch configuration names]}; groups with launch templates are covered by their versions."""
        used = {}
        what = "describe launch configurations"
        for configuration in self._pages(what, "describe_launch_configurations", "LaunchConfigurations"):
            if configuration.get("ImageId"):
                used.setdefault(configuration["ImageId"], []).append(configuration["LaunchConfigurationName"])
        return used


# ---------------------------------------------------------------- SSM


class ParameterApi(RegionalApi):
    """The SSM Parameter Store calls in one region."""

    def get_value(self, name):
        """The parameter's value, or None when there is no such parameter."""
        result = self._call(f"read SSM parameter {name}", "get_parameter", ("ParameterNotFound",), Name=name)
        return result["Parameter"]["Value"] if result else None

    def put_image_id(self, name, image_id, description=None):
        params = {"Name": name, "Value": image_id, "Type": "String", "DataType": IMAGE_DATA_TYPE, "Overwrite": True}
        if description:
            params["Description"] = description
        self._call(f"publish {image_id} to SSM parameter {name}", "put_parameter", **params)

    def delete(self, name):
        """Delete a parameter (a rollback to "there was none"); False when it is gone already."""
        result = self._call(f"delete SSM parameter {name}", "delete_parameter", ("ParameterNotFound",), Name=name)
        return result is not None


# ---------------------------------------------------------------- per region


class Regions:
    """What the image steps share: the APIs of each region, made once, and the list of actions.

    ``ec2`` and ``ssm`` are factories: region -> ImageApi / ParameterApi. The
    regions are the module's region and those of ``params["regions"]``.
    """

    def __init__(self, params, region, ec2, ssm, check_mode=False, sleep=time.sleep):
        self.params = params
        self.region = region
        self._factories = {"ec2": ec2, "ssm": ssm}
        self._apis = {}
        self.check_mode = check_mode
        self.sleep = sleep
        self.actions = []

    def _api(self, service, region):
        if (service, region) not in self._apis:
            self._apis[(service, region)] = self._factories[service](region)
        return self._apis[(service, region)]

    def ec2(self, region):
        return self._api("ec2", region)

    def ssm(self, region):
        return self._api("ssm", region)

    def act(self, text):
        self.actions.append(text)

    def regions(self):
        """The module's region first, then the others, each once."""
        return list(dict.fromkeys(r for r in [self.region, *(self.params.get("regions") or [])] if r))


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

    def probe():
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
        return not pending, done

    try:
        return poll_until(probe, timeout, poll_interval, sleep=sleep, clock=clock)
    except PollTimeout:
        waiting = ", ".join(f"{image_id} in {region}" for region, (_api, image_id) in pending.items())
        raise ImageError(f"Timed out after {timeout} s waiting for {waiting} to become available") from None
