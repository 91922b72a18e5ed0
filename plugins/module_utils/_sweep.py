# -*- coding: utf-8 -*-

# Copyright: Contributors to the burst.golden_ami collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""Everything a bake created in AWS, swept in one pass: the cleanup that cannot be skipped.

Private to this collection. ``Sweep`` removes what one bake (``bake_id``) or
every bake started before a cutoff (``older_than_minutes``, optionally of one
family) left, kind by kind: instances (terminated and waited for), candidate
images with their snapshots and copies in every region (through ``Discard``),
security groups, key pairs, and temporary IAM roles with their instance
profiles. A failure in one kind is recorded in ``left`` with its reason and
the next kind is still swept; the caller decides whether that fails the run.
Only resources tagged with the bake id tag are touched (roles: named after the
bake, under the bake's IAM path).
"""

from __future__ import annotations

import time
from datetime import datetime, timezone

from ansible_collections.burst.golden_ami.plugins.module_utils._aws import (
    BAKE_ID_TAG,
    BAKE_STARTED_TAG,
    AwsError,
    PollTimeout,
    call,
    error_code,
    filters,
    format_time,
    paginate,
    parse_time,
    poll_until,
    tag_filters,
)
from ansible_collections.burst.golden_ami.plugins.module_utils._images import (
    INSTANCE_STATES_IN_USE,
    image_tags,
    tagged_id,
)
from ansible_collections.burst.golden_ami.plugins.module_utils._publish import Discard, reason, validate_scope


class Sweep:
    """Sweep one region (and the copy regions, for images). ``clients`` is a factory: (service, region) -> client.

    Every call goes through ``_aws.call`` / ``_aws.paginate`` (the collection's retry policy); every wait through
    ``_aws.poll_until``.
    """

    def __init__(
        self, params, region, clients, ec2_api, ssm_api, check_mode=False, sleep=time.sleep, clock=time.monotonic
    ):
        self.params = params
        self.region = region
        self.clients = clients
        self.ec2_api = ec2_api
        self.ssm_api = ssm_api
        self.check_mode = check_mode
        self.sleep = sleep
        self.clock = clock
        self.bake_id, self.id_tag = tagged_id(params, "bake_id", BAKE_ID_TAG)
        self.removed = {"instances": [], "images": [], "security_groups": [], "key_pairs": [], "iam_roles": []}
        self.left = []
        self.actions = []
        self.now = time.time()

    # -- selection

    @property
    def started_tag(self):
        return self.params.get("started_tag") or BAKE_STARTED_TAG

    def cutoff(self):
        if self.bake_id:
            return None
        return format_time(datetime.fromtimestamp(self.now - self.params["older_than_minutes"] * 60, tz=timezone.utc))

    def filters(self):
        if self.bake_id:
            return tag_filters({self.id_tag: self.bake_id})
        return tag_filters({self.started_tag: None, **(self.params.get("family_tags") or {})})

    def old_enough(self, tags):
        """True for this bake's resources, or for those whose bake started before the cutoff."""
        if self.bake_id:
            return tags.get(self.id_tag) == self.bake_id
        started = tags.get(self.started_tag)
        if not started or self.id_tag not in tags:
            return False
        try:
            return parse_time(started) < parse_time(self.cutoff())
        except AwsError:
            return False

    def in_family(self, tags):
        return all(tags.get(k) == str(v) for k, v in (self.params.get("family_tags") or {}).items())

    # -- running

    def validate(self):
        validate_scope(self.bake_id, self.params.get("older_than_minutes"), "bake_id")

    def run(self):
        self.validate()
        steps = [("instances", self.instances)]
        if self.params.get("images", True):
            steps.append(("images", self.images))
        steps += [("security_groups", self.security_groups), ("key_pairs", self.key_pairs)]
        if self.params.get("iam_path"):
            steps.append(("iam_roles", self.iam_roles))
        for kind, step in steps:
            try:
                step()
            except AwsError as e:
                self.leave(kind, self.region, "(all)", reason(e))
        return {
            "changed": bool(self.actions),
            "removed": self.removed,
            "left": self.left,
            "actions": self.actions,
        }

    def leave(self, kind, region, resource, reason):
        self.left.append({"kind": kind, "region": region, "resource": resource, "reason": reason})

    def act(self, text):
        self.actions.append(text)

    def call(self, service, region, operation, **params):
        what = f"{operation.replace('_', ' ')} in {region}"
        return call(what, getattr(self.clients(service, region), operation), **params)

    def paginate(self, service, region, operation, key, **params):
        what = f"{operation.replace('_', ' ')} in {region}"
        return paginate(self.clients(service, region), operation, what, **params).get(key, [])

    # -- kinds

    def instances(self):
        found = self.filters() + filters(instance_state_name=INSTANCE_STATES_IN_USE)
        reservations = self.paginate("ec2", self.region, "describe_instances", "Reservations", Filters=found)
        ids = [
            i["InstanceId"]
            for r in reservations
            for i in r.get("Instances", [])
            if self.old_enough(image_tags(i)) and i["State"]["Name"] != "shutting-down"
        ]
        shutting = [
            i["InstanceId"]
            for r in reservations
            for i in r.get("Instances", [])
            if i["State"]["Name"] == "shutting-down"
        ]
        if ids:
            self.act(f"terminate {', '.join(ids)} in {self.region}")
            if not self.check_mode:
                self.call("ec2", self.region, "terminate_instances", InstanceIds=ids)
        self.removed["instances"] = ids
        if not self.check_mode and (ids or shutting) and self.params.get("wait", True):
            self.wait_terminated(ids + shutting)

    def wait(self, probe):
        """``poll_until(probe)`` within wait_timeout: the probe's last value, done or not."""
        try:
            return poll_until(probe, self.params.get("wait_timeout") or 600, 5, sleep=self.sleep, clock=self.clock)
        except PollTimeout as e:
            return e.value

    def wait_terminated(self, ids):
        def probe():
            result = self.paginate(
                "ec2",
                self.region,
                "describe_instances",
                "Reservations",
                InstanceIds=ids,
                Filters=filters(instance_state_name=INSTANCE_STATES_IN_USE),
            )
            pending = [i["InstanceId"] for r in result for i in r.get("Instances", [])]
            return not pending, pending

        for instance_id in self.wait(probe):
            self.leave("instances", self.region, instance_id, "still not terminated at the end of the wait")

    def images(self):
        params = {
            "build_id": self.bake_id,
            "build_id_tag": self.id_tag,
            "older_than_minutes": self.params.get("older_than_minutes"),
            "started_tag": self.started_tag,
            "family_tags": self.params.get("family_tags") or {},
            "regions": self.params.get("regions") or [],
            "protect_ssm_parameters": self.params.get("protect_ssm_parameters") or [],
        }
        discard = Discard(params, self.region, self.ec2_api, self.ssm_api, check_mode=self.check_mode, sleep=self.sleep)
        result = discard.run(now=self.now)
        self.actions.extend(discard.actions)
        self.removed["images"] = result["deleted"]
        self.removed["ssm_restored"] = result["restored"]
        for item in result["left"]:
            self.leave("images", item["region"], item["resource"], item["reason"])

    def security_groups(self):
        groups = self.paginate("ec2", self.region, "describe_security_groups", "SecurityGroups", Filters=self.filters())
        for group in groups:
            if not self.old_enough(image_tags(group)):
                continue
            group_id = group["GroupId"]
            self.act(f"delete security group {group_id} in {self.region}")
            if self.check_mode:
                self.removed["security_groups"].append(group_id)
                continue
            # A group stays in use for a while after its instances terminated (their interfaces are released late).
            error = self.wait(lambda group_id=group_id: self.delete_security_group(group_id))
            if error is not None:
                self.leave("security_groups", self.region, group_id, reason(error))

    def delete_security_group(self, group_id):
        """A probe for ``wait``: (done, the error that stops it or None)."""
        try:
            self.call("ec2", self.region, "delete_security_group", GroupId=group_id)
        except AwsError as e:
            if error_code(e.exception) == "InvalidGroup.NotFound":
                return True, None
            return error_code(e.exception) != "DependencyViolation", e
        self.removed["security_groups"].append(group_id)
        return True, None

    def key_pairs(self):
        result = self.call("ec2", self.region, "describe_key_pairs", Filters=self.filters())
        for key in result.get("KeyPairs", []):
            if not self.old_enough(image_tags(key)):
                continue
            self.act(f"delete key pair {key['KeyName']} in {self.region}")
            if not self.check_mode:
                try:
                    self.call("ec2", self.region, "delete_key_pair", KeyName=key["KeyName"])
                except AwsError as e:
                    self.leave("key_pairs", self.region, key["KeyName"], reason(e))
                    continue
            self.removed["key_pairs"].append(key["KeyName"])

    def iam_roles(self):
        path = self.params["iam_path"]
        roles = self.paginate("iam", self.region, "list_roles", "Roles", PathPrefix=path)
        cutoff = None if self.bake_id else parse_time(self.cutoff())
        for role in roles:
            name = role["RoleName"]
            if self.bake_id and name != self.bake_id:
                continue
            if cutoff is not None and parse_time(role["CreateDate"]) >= cutoff:
                continue
            tags = {
                t["Key"]: t["Value"]
                for t in self.call("iam", self.region, "get_role", RoleName=name)["Role"].get("Tags", [])
            }
            if self.id_tag not in tags or not self.in_family(tags) or not self.old_enough(tags):
                continue
            try:
                self.delete_role(name)
            except AwsError as e:
                self.leave("iam_roles", "global", name, reason(e))
                continue
            self.removed["iam_roles"].append(name)
        # A profile whose role is gone already (an earlier sweep stopped half way).
        for profile in self.paginate("iam", self.region, "list_instance_profiles", "InstanceProfiles", PathPrefix=path):
            name = profile["InstanceProfileName"]
            if profile.get("Roles") or (self.bake_id and name != self.bake_id):
                continue
            if cutoff is not None and parse_time(profile["CreateDate"]) >= cutoff:
                continue
            self.act(f"delete instance profile {name}")
            if not self.check_mode:
                try:
                    self.call("iam", self.region, "delete_instance_profile", InstanceProfileName=name)
                except AwsError as e:
                    self.leave("iam_roles", "global", name, reason(e))

    def delete_role(self, name):
        self.act(f"delete IAM role {name}, its policies and instance profiles")
        if self.check_mode:
            return
        profiles = self.call("iam", self.region, "list_instance_profiles_for_role", RoleName=name)["InstanceProfiles"]
        for profile in profiles:
            self.call(
                "iam",
                self.region,
                "remove_role_from_instance_profile",
                InstanceProfileName=profile["InstanceProfileName"],
                RoleName=name,
            )
            if profile["Path"] == self.params["iam_path"]:
                self.call(
                    "iam", self.region, "delete_instance_profile", InstanceProfileName=profile["InstanceProfileName"]
                )
        for policy in self.call("iam", self.region, "list_role_policies", RoleName=name)["PolicyNames"]:
            self.call("iam", self.region, "delete_role_policy", RoleName=name, PolicyName=policy)
        for policy in self.call("iam", self.region, "list_attached_role_policies", RoleName=name)["AttachedPolicies"]:
            self.call("iam", self.region, "detach_role_policy", RoleName=name, PolicyArn=policy["PolicyArn"])
        self.call("iam", self.region, "delete_role", RoleName=name)
