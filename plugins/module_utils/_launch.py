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
    newest ``available`` image of a family (``_images.ImageFamily``: a name
    prefix, tags and/or DescribeImages filters such as the architecture; a
    bake's unverified candidates are never part of it).
  - ``usable_instance_types(image, types)``: the types that can run the
    image's architecture (DescribeInstanceTypes, read once per launcher).
  - ``launch(LaunchRequest)``: launch ``count`` instances on the instance
    types that can run the image's architecture, trying each market
    (spot first, then on-demand if allowed), each instance type and each subnet
    in order on capacity errors; idempotent by an identifying tag (a job id or
    a bake id). Returns a ``LaunchResult``.
  - ``wait_running(instance_ids)``, ``find_instances(...)``,
    ``terminate(instance_ids)``, ``spot_prices(...)``.
  - ``wait_jobs(instance_ids)``: wait until the job of every instance has
    ended, as the image's job runner records it in the instance's tags
    (``job_of``); returns each job's status, exit code, times and log.
  - ``affordable_instance_types(request, types)``: the types whose highest
    price for the request's time limit fits its cost cap (``launch`` uses it);
    ``cost_summary(instances, ...)``: what launched instances cost per hour
    and at most for their time limit (``_prices``).

- ``ImageRef``, ``RootVolume``, ``LaunchRequest`` (defined in
  ``_launch_request``, exported here): what to launch, checked before anything
  is launched.
- ``summarize_instance(instance, ...)``: the snake_case facts returned about
  an instance (by burst_instance, and by the burst_ec2 inventory).
- ``job_of(instance)``: ``(ended, job)``, the job of an instance from its tags
  and state.

The first-boot script is built by ``_user_data.build_user_data`` and the
healthcheck probes are in ``_health``. Images and SSM parameters are read
through ``_images.ImageApi`` and ``_images.ParameterApi``. Every AWS call goes
through ``_aws.call`` or ``_aws.paginate`` (the collection's retry policy), and
every failure of the launcher is a ``LaunchError`` (an ``_aws.AwsError``) that
names what failed; reading images can also fail with an ``ImageError``.
"""

from __future__ import annotations

import re
import time
import uuid

from ansible_collections.amazon.aws.plugins.module_utils.tagging import ansible_dict_to_boto3_tag_list
from ansible_collections.burst.golden_ami.plugins.module_utils._aws import (
    IMAGE_ID_RE,
    VERSION_TAG,
    AwsError,
    PollTimeout,
    call,
    client_token,
    error_code,
    error_message,
    filters,
    paginate,
    parse_time,
    poll_until,
    retrying,
    tag_filters,
    utcnow,
)
from ansible_collections.burst.golden_ami.plugins.module_utils._images import (
    ImageApi,
    ParameterApi,
    image_tags,
    image_version,
    newest_image,
)

# What to launch, exported here too: an application imports the launcher's names from this file.
from ansible_collections.burst.golden_ami.plugins.module_utils._launch_request import (
    Attempt,
    ImageRef,
    LaunchError,
    LaunchRequest,
    LaunchResult,
    RootVolume,
)
from ansible_collections.burst.golden_ami.plugins.module_utils._prices import (
    PRICES_DATE,
    ceiling_price,
    quote,
    run_cost,
)

__all__ = [
    "Attempt",
    "ImageRef",
    "LaunchError",
    "LaunchRequest",
    "LaunchResult",
    "Launcher",
    "RootVolume",
    "is_capacity_error",
    "job_of",
    "summarize_instance",
]

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

# DescribeInstanceTypes refused: the architecture check is skipped, not the launch.
ACCESS_DENIED_CODES = ("AccessDenied", "AccessDeniedException", "UnauthorizedOperation")
# A GPU instance type of each architecture, named when no type given can run an image.
SUGGESTED_TYPES = {"arm64": "g5g.xlarge", "x86_64": "g6e.xlarge"}

ACTIVE_STATES = ("pending", "running", "stopping", "stopped")
GONE_STATES = ("shutting-down", "terminated")

# The tags the image's job runner writes on its instance, with the instance's role.
JOB_STATUS_TAG = "BurstJobStatus"
JOB_EXIT_CODE_TAG = "BurstJobExitCode"
JOB_STARTED_TAG = "BurstJobStartedAt"
JOB_ENDED_TAG = "BurstJobEndedAt"
JOB_LOG_TAG = "BurstJobLog"
JOB_LOG_ERROR_TAG = "BurstJobLogError"
# Set (to the deadline) when the instance got a spot interruption notice.
DRAINING_TAG = "BurstDraining"
# A job's status: the runner's final ones; interrupted (spot) and lost (ended without a final status) are read
# from the instance; running and not started are not final.
JOB_SUCCEEDED = "succeeded"
JOB_FINAL_STATUSES = (JOB_SUCCEEDED, "failed", "timed_out")
JOB_INTERRUPTED = "interrupted"
JOB_LOST = "lost"
JOB_NOT_STARTED = "not started"
# Instance states in which the job can no longer end by itself.
JOB_ENDED_STATES = ("terminated", "stopped")
SPOT_TERMINATION_REASON = "Server.SpotInstanceTermination"


def is_capacity_error(exception):
    """True for errors after which another instance type, zone or market may succeed."""
    code = error_code(exception)
    if code in CAPACITY_ERROR_CODES:
        return True
    return code == ZONE_UNSUPPORTED_CODE and "availability zone" in error_message(exception).lower()


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
        self.images = ImageApi(self.ec2, self.region)
        self.parameters = ParameterApi(self.ssm, self.region) if self.ssm is not None else None
        self.sleep = sleep
        self.clock = clock
        # {instance type: [architectures] or None when EC2 does not say}; None while DescribeInstanceTypes is denied.
        self._architectures = {}

    def _call(self, what, operation, **params):
        return call(f"{what} in {self.region}", getattr(self.ec2, operation), error=LaunchError, **params)

    # -- images

    def describe_images(self, image_ids):
        """Images by id in one call (missing ones are left out): ``{image id: image}``."""
        return self.images.images_by_id(image_ids)

    def resolve_image(self, ref):
        """The image ``ref`` names, which must be ``available``; a LaunchError says which one was not found."""
        image_id = ref.image_id
        if ref.ssm_parameter:
            if self.parameters is None:
                raise LaunchError("Finding the image by SSM parameter needs an SSM client")
            value = self.parameters.get_value(ref.ssm_parameter)
            if value is None:
                raise LaunchError(f"SSM parameter {ref.ssm_parameter} not found")
            image_id = value.strip()
            if not IMAGE_ID_RE.match(image_id):
                raise LaunchError(f"SSM parameter {ref.ssm_parameter} holds {image_id!r}, which is not an image id")
        if image_id:
            image = self.describe_images([image_id]).get(image_id)
            if image is None:
                raise LaunchError(f"{ref.describe().capitalize()} not found in {self.region}")
        else:
            image = newest_image(self.images.family_images(ref.family, states=["available"]))
            if image is None:
                raise LaunchError(f"No available image found in {self.region} for {ref.describe()}")
        if image.get("State") != "available":
            raise LaunchError(f"Image {image['ImageId']} is {image.get('State')}, not available")
        return image

    # -- instance types

    def instance_architectures(self, instance_types):
        """``{instance type: [architectures it supports] or None}``; None when DescribeInstanceTypes is denied.

        Each type is read once per launcher. A type that EC2 does not know
        fails with a LaunchError naming it.
        """
        if self._architectures is None:
            return None
        wanted = [t for t in dict.fromkeys(instance_types) if t not in self._architectures]
        if wanted:
            try:
                found = paginate(
                    self.ec2,
                    "describe_instance_types",
                    f"describe instance types {', '.join(wanted)} in {self.region}",
                    error=LaunchError,
                    InstanceTypes=wanted,
                ).get("InstanceTypes", [])
            except LaunchError as e:
                code = error_code(e.exception)
                if code in ACCESS_DENIED_CODES:
                    self._architectures = None
                    return None
                if code == "InvalidInstanceType":
                    raise _unknown_types(wanted, self.region, e.exception) from e
                raise
            for described in found:
                processor = described.get("ProcessorInfo") or {}
                self._architectures[described["InstanceType"]] = processor.get("SupportedArchitectures") or None
        return {t: self._architectures.get(t) for t in instance_types}

    def usable_instance_types(self, image, instance_types):
        """The types of ``instance_types`` (in order) that can run ``image``'s architecture, and warnings.

        Types EC2 says nothing about are kept. Raises a LaunchError when no
        type can run the image; warns and keeps every type when
        DescribeInstanceTypes is denied.
        """
        instance_types = list(instance_types)
        architecture = image.get("Architecture")
        if not architecture:
            return instance_types, []
        supported = self.instance_architectures(instance_types)
        if supported is None:
            return instance_types, [
                f"Not allowed to describe instance types in {self.region} (ec2:DescribeInstanceTypes): "
                f"the instance types were not checked against the architecture of image {image['ImageId']} "
                f"({architecture})"
            ]
        usable = [t for t in instance_types if supported[t] is None or architecture in supported[t]]
        dropped = [t for t in instance_types if t not in usable]
        if not usable:
            theirs = sorted({a for t in instance_types for a in supported[t]})
            example = f" such as {SUGGESTED_TYPES[architecture]}" if architecture in SUGGESTED_TYPES else ""
            raise LaunchError(
                f"Image {image['ImageId']} is {architecture}; none of the instance types {', '.join(instance_types)} "
                f"supports {architecture} (they support {', '.join(theirs)}): choose {architecture} types{example}, "
                f"or an {' or '.join(theirs)} image"
            )
        if not dropped:
            return usable, []
        which = (
            f"Instance type {dropped[0]} does not"
            if len(dropped) == 1
            else f"Instance types {', '.join(dropped)} do not"
        )
        return usable, [
            f"{which} support {architecture}, the architecture of image {image['ImageId']}: "
            f"left out, launching on {', '.join(usable)}"
        ]

    # -- instances

    def find_instances(self, tags=None, instance_ids=None, states=ACTIVE_STATES):
        """Instances carrying every tag of ``tags`` and/or with the given ids, in the given states."""
        params = {"Filters": filters(instance_state_name=states) + tag_filters(tags)}
        if instance_ids:
            params["InstanceIds"] = list(instance_ids)
        pages = paginate(
            self.ec2,
            "describe_instances",
            f"describe instances in {self.region}",
            error=LaunchError,
            # Ids not visible yet (eventual consistency): none of them is found.
            missing=("InvalidInstanceID.NotFound",) if instance_ids else (),
            **params,
        )
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

        Tries each (market, type, subnet) of ``request.plan()`` in turn, on the
        types that can run the image's architecture; a capacity error moves on
        to the next, any other error stops. Returns a ``LaunchResult``; raises
        ``LaunchError`` (with the attempts) when nothing could be launched. In
        check mode nothing is launched and the result says whether something
        would have been.
        """
        image = image or self.resolve_image(request.image)
        # Fail on bad volume options before anything is launched.
        request.root_volume.block_device_mapping(image)
        existing = self.find_instances(tags=request.identity_tag) if request.identity_tag else []
        missing = request.count - len(existing)
        if missing <= 0:
            return LaunchResult(False, existing, image, [], market=_market_of(existing))
        # Fail on an image that no instance type can run before anything is launched.
        instance_types, warnings = self.usable_instance_types(image, request.instance_types)
        if request.cost_cap is not None:
            instance_types, cost_warnings = self.affordable_instance_types(request, instance_types)
            warnings += cost_warnings
        if check_mode:
            return LaunchResult(True, existing, image, [], market=request.market, warnings=warnings)

        identity = next(iter(request.identity_tag.items()), None)
        attempts = []
        for market, instance_type, subnet_id in request.plan(instance_types):
            if identity:
                token = client_token(identity[0], identity[1], market, instance_type, subnet_id, len(existing))
            else:
                token = uuid.uuid4().hex
            params = self._run_params(request, image, market, instance_type, subnet_id, missing, token)
            try:
                result = self._run_instances(params)
            except LaunchError as e:
                code = error_code(e.exception) or type(e.exception).__name__
                attempts.append(Attempt(market, instance_type, subnet_id, code, error_message(e.exception)))
                if is_capacity_error(e.exception):
                    continue
                raise LaunchError(e.message, exception=e.exception, attempts=attempts) from e
            attempts.append(Attempt(market, instance_type, subnet_id))
            launched = result.get("Instances", [])
            return LaunchResult(
                True,
                existing + launched,
                image,
                attempts,
                launched_ids=[i["InstanceId"] for i in launched],
                market=market,
                warnings=warnings,
            )
        tried = "; ".join(f"{a.instance_type}/{a.subnet_id or 'default'}/{a.market}: {a.error_code}" for a in attempts)
        raise LaunchError(f"No capacity for any instance type, subnet and market tried ({tried})", attempts=attempts)

    def _run_instances(self, params, profile_wait=60, poll_interval=5):
        """RunInstances; waits while a just created instance profile is not visible to EC2 yet.

        IAM is eventually consistent: for some seconds after CreateInstanceProfile,
        RunInstances answers InvalidParameterValue naming the profile.
        """
        subnet = params.get("SubnetId") or "the default subnet"
        market = "spot" if "InstanceMarketOptions" in params else "on-demand"
        what = f"launch {params['InstanceType']} ({market}) in {subnet}"

        def attempt():
            try:
                return True, call(what, self.ec2.run_instances, error=LaunchError, **params)
            except LaunchError as e:
                profile_not_yet = (
                    "IamInstanceProfile" in params
                    and error_code(e.exception) == "InvalidParameterValue"
                    and "iaminstanceprofile" in error_message(e.exception).lower()
                )
                if not profile_not_yet:
                    raise
                return False, e

        try:
            return poll_until(attempt, profile_wait, poll_interval, sleep=self.sleep, clock=self.clock)
        except PollTimeout as timeout:
            raise timeout.value from None

    def wait_running(self, instance_ids, timeout=600, poll_interval=5, progress=None):
        """Wait until every instance is ``running``; returns them. Fails on terminated instances and on timeout.

        ``progress`` (optional) is called with a line after each poll.
        """
        instance_ids = list(instance_ids)
        if not instance_ids:
            return []

        def probe():
            instances = self.find_instances(instance_ids=instance_ids, states=(*ACTIVE_STATES, *GONE_STATES))
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
            return not waiting, waiting or [by_id[i] for i in instance_ids]

        try:
            return poll_until(probe, timeout, poll_interval, sleep=self.sleep, clock=self.clock)
        except PollTimeout as e:
            raise LaunchError(f"Timed out after {timeout}s waiting for {', '.join(e.value)} to run") from None

    def terminate(self, instance_ids, wait=False, timeout=600, poll_interval=5):
        """Terminate the instances; with ``wait``, until they are ``terminated``. Returns the ids."""
        instance_ids = sorted(set(instance_ids))
        if not instance_ids:
            return []
        for start in range(0, len(instance_ids), 500):
            self._call("terminate instances", "terminate_instances", InstanceIds=instance_ids[start : start + 500])
        if not wait:
            return instance_ids

        def probe():
            states = (*ACTIVE_STATES, "shutting-down")
            left = [i["InstanceId"] for i in self.find_instances(instance_ids=instance_ids, states=states)]
            return not left, left

        try:
            poll_until(probe, timeout, poll_interval, sleep=self.sleep, clock=self.clock)
        except PollTimeout as e:
            raise LaunchError(f"Timed out after {timeout}s waiting for {', '.join(e.value)} to terminate") from None
        return instance_ids

    # -- jobs

    def wait_jobs(self, instance_ids, timeout=3600, poll_interval=15, progress=None):
        """Wait until the job of every instance has ended; returns ``({id: job}, {id: instance})``.

        A job has ended when its instance carries a final ``BurstJobStatus``
        (succeeded, failed, timed_out), or when the instance is terminated or
        stopped (then ``interrupted`` or ``lost``, see ``job_of``). Raises a
        LaunchError naming the instances whose job still runs after ``timeout``
        seconds. ``progress`` (optional) is called with a line after each poll.
        """
        instance_ids = list(instance_ids)
        if not instance_ids:
            return {}, {}

        def probe():
            instances = self.find_instances(instance_ids=instance_ids, states=(*ACTIVE_STATES, *GONE_STATES))
            by_id = {i["InstanceId"]: i for i in instances}
            jobs = {}
            running = []
            for instance_id in instance_ids:
                instance = by_id.get(instance_id)
                if instance is None:
                    running.append(f"{instance_id} (not visible yet)")
                    continue
                ended, job = job_of(instance)
                jobs[instance_id] = job
                if not ended:
                    state = (instance.get("State") or {}).get("Name")
                    since = f" since {job['started_at']}" if job.get("started_at") else ""
                    running.append(f"{instance_id} (job {job['status']}{since}, instance {state})")
            if progress is not None:
                detail = f": {', '.join(running)}" if running else ""
                progress(f"{len(instance_ids) - len(running)} of {len(instance_ids)} jobs ended{detail}")
            return not running, running or (jobs, by_id)

        try:
            return poll_until(probe, timeout, poll_interval, sleep=self.sleep, clock=self.clock)
        except PollTimeout as e:
            raise LaunchError(
                f"Timed out after {timeout}s waiting for the job to end on {len(e.value)} instance(s) still running: "
                f"{', '.join(e.value)}"
            ) from None

    # -- cost

    def _ceiling(self, request, instance_type, market):
        try:
            return ceiling_price(
                self.region,
                instance_type,
                market,
                spot_max_price=request.spot_max_price if market == "spot" else None,
                overrides=request.on_demand_prices,
            )
        except ValueError as e:
            raise LaunchError(f"Invalid price: {e}") from None

    def affordable_instance_types(self, request, instance_types):
        """The types of ``instance_types`` (in order) whose launch fits ``request.cost_cap``, and warnings.

        A type's maximum is its highest price per hour in any market the
        request may launch it on (``_prices.ceiling_price``: the spot maximum
        price, else the on-demand price) for ``request.time_limit_minutes`` and
        ``request.count`` instances. Types above the cap are left out; a
        LaunchError names each type and its maximum when none is left, and
        names the type and market whose price is not known.
        """
        instance_types = list(instance_types)
        cap, minutes, count = float(request.cost_cap), request.time_limit_minutes, request.count
        if not minutes:
            raise LaunchError("A cost cap needs a time limit: without one, a launch has no maximum cost")
        markets = list(dict.fromkeys(m for m, _t, _s in request.plan(instance_types)))
        maxima = {}
        for instance_type in instance_types:
            costs = []
            for market in markets:
                price = self._ceiling(request, instance_type, market)
                if price is None:
                    spot = ", the most spot costs without a spot maximum price" if market == "spot" else ""
                    raise LaunchError(
                        f"No on-demand price known for {instance_type} in {self.region}{spot} (the price table "
                        f"of {PRICES_DATE} lacks it): give it in USD/h (on_demand_prices), or launch without a "
                        "cost cap"
                    )
                costs.append((run_cost(price, minutes, count), price, market))
            maxima[instance_type] = max(costs)
        within = f"{count} instance(s) x {minutes} min"
        fits = [t for t in instance_types if maxima[t][0] <= cap]
        if not fits:
            each = ", ".join(f"{t} up to {_usd(maxima[t][0])} USD" for t in instance_types)
            raise LaunchError(f"No instance type fits the cost cap of {_usd(cap)} USD for {within}: {each}")
        dropped = [t for t in instance_types if t not in fits]
        warnings = [
            f"Instance type {t} left out: up to {_usd(maxima[t][0])} USD for {within} at {_usd(maxima[t][1])} USD/h "
            f"({maxima[t][2]}), above the cost cap of {_usd(cap)} USD; launching on {', '.join(fits)}"
            for t in dropped
        ]
        return fits, warnings

    def cost_summary(
        self, instances, time_limit_minutes=None, spot_max_price=None, on_demand_prices=None, cost_cap=None
    ):
        """What ``instances`` cost: their prices now, and the run's expected and maximum cost for the time limit.

        Returns ``{currency, prices_as_of, instances: [{instance_id, instance_type, market, price_per_hour,
        source, availability_zone}], price_per_hour, time_limit_minutes, expected_run_cost, max_run_cost,
        cost_cap, error}``. A price that cannot be read or is not known leaves the totals it is part of null
        and is named in ``error``; this never raises for a price.
        """
        errors = []
        quotes = {}
        entries = []
        prices, ceilings = [], []
        for instance in instances:
            instance_type = instance.get("InstanceType")
            market = "spot" if instance.get("InstanceLifecycle") == "spot" else "on-demand"
            zone = (instance.get("Placement") or {}).get("AvailabilityZone")
            key = (instance_type, market, zone)
            if key not in quotes:
                quotes[key] = self._quote(instance_type, market, zone, on_demand_prices, errors)
            found = quotes[key]
            entries.append(
                {
                    "instance_id": instance["InstanceId"],
                    "instance_type": instance_type,
                    "market": market,
                    "price_per_hour": found.price_per_hour if found else None,
                    "source": found.source if found else None,
                    "availability_zone": zone,
                }
            )
            prices.append(found.price_per_hour if found else None)
            try:
                ceiling = ceiling_price(
                    self.region,
                    instance_type,
                    market,
                    spot_max_price=spot_max_price if market == "spot" else None,
                    overrides=on_demand_prices,
                )
            except ValueError as e:
                ceiling = None
                errors.append(str(e))
            if ceiling is None and market == "spot":
                # Spot without a maximum price is capped at the on-demand price, which is not known.
                errors.append(f"No on-demand price known for {instance_type} in {self.region}, the most spot can cost")
            ceilings.append(ceiling)
        known = bool(entries) and None not in prices
        total = round(sum(prices), 6) if known else (0.0 if not entries else None)
        highest = round(sum(ceilings), 6) if None not in ceilings else None
        limit = time_limit_minutes or None
        return {
            "currency": "USD",
            "prices_as_of": PRICES_DATE,
            "instances": entries,
            "price_per_hour": total,
            "time_limit_minutes": limit,
            "expected_run_cost": run_cost(total, limit) if limit and total is not None else None,
            "max_run_cost": run_cost(highest, limit) if limit and highest is not None else None,
            "cost_cap": cost_cap,
            "error": "; ".join(dict.fromkeys(errors)) or None,
        }

    def _quote(self, instance_type, market, zone, on_demand_prices, errors):
        """The PriceQuote of one type, market and zone, or None with the reason added to ``errors``."""
        try:
            found = quote(
                self.ec2,
                self.region,
                instance_type,
                market,
                availability_zones=[zone] if zone else None,
                overrides=on_demand_prices,
            )
        except AwsError as e:
            detail = f": {error_message(e.exception)}" if e.exception is not None else ""
            errors.append(f"{e.message}{detail}")
            return None
        except ValueError as e:
            errors.append(str(e))
            return None
        if found is None:
            where = f" in {zone}" if market == "spot" and zone else f" in {self.region}"
            errors.append(f"No {market} price known for {instance_type}{where}")
        return found

    def spot_prices(self, pairs):
        """The current Linux spot price for each (instance type, zone) of ``pairs``, as ``{(type, zone): "0.41"}``.

        One DescribeSpotPriceHistory request (paginated) for all the types.
        """
        pairs = {(t, z) for t, z in pairs if t and z}
        if not pairs:
            return {}
        history = paginate(
            self.ec2,
            "describe_spot_price_history",
            f"read spot prices in {self.region}",
            error=LaunchError,
            InstanceTypes=sorted({pair[0] for pair in pairs}),
            ProductDescriptions=["Linux/UNIX"],
            StartTime=utcnow(),
        )
        newest = {}
        for entry in history.get("SpotPriceHistory", []):
            key = (entry.get("InstanceType"), entry.get("AvailabilityZone"))
            if key not in pairs or not (entry.get("ProductDescription") or "").startswith("Linux/UNIX"):
                continue
            when = parse_time(entry.get("Timestamp"))
            if key not in newest or when > newest[key][0]:
                newest[key] = (when, entry.get("SpotPrice"))
        return {k: v[1] for k, v in newest.items()}


def _unknown_types(instance_types, region, exception):
    """The LaunchError for DescribeInstanceTypes' InvalidInstanceType, naming the types it names when it does."""
    named = re.search(r"\[([^\]]*)\]", error_message(exception))
    unknown = [t.strip() for t in named.group(1).split(",") if t.strip()] if named else []
    if len(unknown) == 1:
        what = f"Instance type {unknown[0]} does not exist"
    elif unknown:
        what = f"Instance types {', '.join(unknown)} do not exist"
    else:
        what = f"One of the instance types {', '.join(instance_types)} does not exist"
    return LaunchError(f"{what} in {region}: {error_message(exception)}", exception=exception)


def _usd(amount):
    """An amount of USD for a message: at least 2 decimals, at most 4."""
    text = f"{amount:.4f}".rstrip("0")
    return text + "0" * max(0, 2 - len(text.split(".")[1]))


def _exit_code(value):
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def job_of(instance):
    """``(ended, job)``: the job of ``instance`` (EC2's dict) as its job runner recorded it in its tags.

    ``job`` is ``{status, exit_code, started_at, ended_at, log, log_error}``. ``status``: the runner's
    ``BurstJobStatus`` when final (``succeeded``, ``failed``, ``timed_out``); for an instance terminated or
    stopped without one, ``interrupted`` when it was a spot interruption (``BurstDraining`` set, or the state
    reason ``Server.SpotInstanceTermination``), else ``lost``; otherwise ``running`` or ``not started``, and
    ``ended`` is False.
    """
    tags = image_tags(instance)
    status = tags.get(JOB_STATUS_TAG)
    job = {
        "status": status,
        "exit_code": _exit_code(tags.get(JOB_EXIT_CODE_TAG)),
        "started_at": tags.get(JOB_STARTED_TAG),
        "ended_at": tags.get(JOB_ENDED_TAG),
        "log": tags.get(JOB_LOG_TAG),
        "log_error": tags.get(JOB_LOG_ERROR_TAG),
    }
    if status in JOB_FINAL_STATUSES:
        return True, job
    if (instance.get("State") or {}).get("Name") in JOB_ENDED_STATES:
        reason = instance.get("StateReason") or {}
        spot_ended = any(str(reason.get(k) or "").startswith(SPOT_TERMINATION_REASON) for k in ("Code", "Message"))
        job["status"] = JOB_INTERRUPTED if DRAINING_TAG in tags or spot_ended else JOB_LOST
        return True, job
    job["status"] = status or JOB_NOT_STARTED
    return False, job


def _market_of(instances):
    markets = {"spot" if i.get("InstanceLifecycle") == "spot" else "on-demand" for i in instances}
    return markets.pop() if len(markets) == 1 else None


def summarize_instance(instance, image=None, version_tag=VERSION_TAG, spot_price=None, now=None):
    """The snake_case facts about one instance that the module returns and the inventory sets."""
    placement = instance.get("Placement") or {}
    launch_time = parse_time(instance.get("LaunchTime"))
    now = now or utcnow()
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
        "tags": image_tags(instance),
    }
