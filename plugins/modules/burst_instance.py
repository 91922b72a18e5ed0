#!/usr/bin/python
# -*- coding: utf-8 -*-

# Copyright: Contributors to the burst.golden_ami collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: burst_instance
short_description: Launch or terminate burst instances from the golden image
version_added: 0.1.0
description:
  - Launches O(count) instances from the golden image, found by id, by SSM parameter, or as the newest image of
    a family (a name prefix, tags and/or DescribeImages filters such as the architecture, as Packer's
    C(source_ami_filter)). A bake's candidates (C(ImageStage) V(candidate) or V(promoting)) are not part of a
    family, they are not verified yet.
  - Before anything is launched, the instance types are checked against the image's architecture
    (C(DescribeInstanceTypes)). Types that cannot run it are left out with a warning; when none can, the module
    fails naming the image's architecture and the types. When C(ec2:DescribeInstanceTypes) is denied, the check is
    skipped with a warning.
  - Spot by default, with a maximum price. The instance types of O(instance_types) and the subnets of
    O(subnet_ids) are tried in order when EC2 has no capacity (C(InsufficientInstanceCapacity),
    C(SpotMaxPriceTooLow), an instance type the zone does not offer...); with O(spot_fallback_on_demand),
    every type and subnet is then tried again on demand.
  - Instances require IMDSv2, are tagged at launch (instance and volumes) with C(Mode=Burst), the job id and
    O(tags), and are launched with instance-initiated shutdown behaviour C(terminate).
  - The user data runs the golden image's startup script, optionally mounts EFS and runs a job command, and
    terminates the instance after the job or after O(max_lifetime) minutes. The lifetime is enforced on the
    instance itself (a systemd timer), so that it holds when the controller is gone.
  - Idempotent by O(job_id) - instances carrying the job id tag that are not terminated count towards O(count),
    and RunInstances gets client tokens derived from the job id, so that a retried request launches nothing twice.
  - Waits for the instances to run and, with O(health_url), for their healthcheck to answer ready; each
    instance's RV(instances[].boot_to_ready_s) is read from that answer.
  - The job runs through the golden image's job runner (C(burst_job.py), next to O(startup_script)) when the
    image has one. The runner ships the job's output to O(job_log), stops the job at O(job_time_limit) and
    records the job on the instance, with the instance's role, as tags (C(BurstJobStatus), C(BurstJobExitCode),
    C(BurstJobStartedAt), C(BurstJobEndedAt), C(BurstJobLog), C(BurstJobLogError), and C(BurstDraining) on a
    spot interruption notice). On an image without the runner the job runs as a plain C(bash -c), under
    C(timeout) with O(job_time_limit), and records nothing.
  - With O(wait_for_job), waits until every instance's job has ended and returns each job's outcome
    (RV(instances[].job)); a job that did not succeed fails the module after its results are returned, unless
    O(fail_on_job_error=false).
  - Returns what the instances cost (RV(cost)), that is the price per hour of each (the spot price now, or the
    on-demand list price of the collection's dated price table or O(on_demand_prices)) and the run's expected
    and maximum cost for its time limit. With O(cost_cap), the instance types whose maximum cost is above it are
    left out before anything is launched.
  - O(state=absent) terminates instances by id, by job id or by tags.
  - The launching code is the collection's module_utils C(_launch), which the bake's builder launch shares and
    which applications can call directly.
author:
  - burst.golden_ami maintainers (@burst)
options:
  state:
    description:
      - V(present) launches what is missing; V(absent) terminates the matching instances.
    type: str
    choices: [present, absent]
    default: present
  count:
    description:
      - Number of instances for the job.
    type: int
    default: 1
  job_id:
    description:
      - Identifier of the job, tagged as O(job_id_tag). Makes the launch idempotent.
      - Without it, every run launches O(count) new instances.
    type: str
  job_id_tag:
    description:
      - Tag key that holds O(job_id).
    type: str
    default: BurstJobId
  image_id:
    description:
      - Id of the image to launch.
    type: str
  image_ssm_parameter:
    description:
      - SSM parameter whose value is the image id (as the bake publishes it).
    type: str
  image_family:
    description:
      - Launch the newest available image of a family, as M(burst.golden_ami.golden_ami_prune) selects a family.
    type: dict
    suboptions:
      name_prefix:
        description: Start of the names of the images of the family, for example C(osmose-burst-golden-v).
        type: str
      tags:
        description:
          - Tags every image of the family carries; a null value matches any value of the tag.
          - Combined with O(image_family.name_prefix) when both are given.
        type: dict
      owners:
        description: Owners of the images (account ids, V(self), V(amazon)).
        type: list
        elements: str
        default: [self]
      filters:
        description:
          - DescribeImages filters every image of the family matches, as a dict from the filter name (for example
            C(virtualization-type) or C(tag:Team)) to a value or a list of values (any of them matches).
          - See U(https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_DescribeImages.html) for the names.
          - Combined with O(image_family.name_prefix), O(image_family.tags) and O(image_family.architecture).
            C(state) is not accepted (the family's images are the V(available) ones), nor a filter that
            O(image_family.name_prefix) or O(image_family.tags) sets already.
        type: dict
      architecture:
        description:
          - Architecture of the images of the family, short for the C(architecture) filter of
            O(image_family.filters).
        type: str
        choices: [i386, x86_64, arm64, x86_64_mac, arm64_mac]
      tag_key:
        description:
          - Deprecated, use O(image_family.tags). A tag the images of the family carry.
          - Cannot be combined with O(image_family.name_prefix).
        type: str
      tag_value:
        description: Deprecated, use O(image_family.tags). Value of O(image_family.tag_key); any value when not given.
        type: str
  image_version_tag:
    description:
      - Image tag that holds the golden image version, returned as RV(instances[].image_version).
    type: str
    default: Version
  instance_types:
    description:
      - Instance types, in order of preference. Required with O(state=present).
    type: list
    elements: str
  subnet_ids:
    description:
      - Subnets, in order of preference, one per zone to fall back on. Without subnets EC2 picks the default subnet.
    type: list
    elements: str
    default: []
  security_group_ids:
    description:
      - Security groups of the instances.
    type: list
    elements: str
    default: []
  key_name:
    description:
      - Key pair for SSH. Burst instances need none.
    type: str
  iam_instance_profile:
    description:
      - Instance profile, by name or ARN, which gives the instance its credentials, for EFS with IAM authorization, for
        O(job_log) in S3 or CloudWatch Logs, and for the job runner's status tags (its role needs
        C(ec2:CreateTags) on the instance itself).
    type: str
  market:
    description:
      - V(spot) or V(on-demand).
    type: str
    choices: [spot, on-demand]
    default: spot
  spot_max_price:
    description:
      - Highest price to pay per instance-hour, in USD, for example C(1.50). Without it, the on-demand price.
    type: str
  spot_fallback_on_demand:
    description:
      - When no instance type and subnet has spot capacity, try them all again on demand.
    type: bool
    default: false
  tags:
    description:
      - Tags of the instances and their volumes, added to C(Mode=Burst) and the job id tag.
      - With O(state=absent), instances carrying all these tags are terminated.
    type: dict
    default: {}
  startup_script:
    description:
      - Script of the golden image that starts its services; an empty string runs none.
    type: str
    default: /opt/burst/startup.sh
  job_command:
    description:
      - Shell command to run once the services are started (a batch job, for example).
    type: str
  terminate_after_job:
    description:
      - Terminate the instance when O(job_command) ends, whatever its exit status.
    type: bool
    default: true
  job_log:
    description:
      - Where the job runner sends the job's output (stdout and stderr), as well as to the user data log.
      - V(/abs/path) or V(file:/abs/path) (a file on the instance), V(s3://bucket/key) (uploaded when the job
        ends), V(cloudwatch:GROUP) or V(cloudwatch:GROUP:STREAM) (CloudWatch Logs, in an existing group, the
        stream defaulting to C({job_id}/{instance_id})). C({job_id}) and C({instance_id}) are filled in on the
        instance; the job id is O(job_id), or the instance id when there is none or it contains C(/).
      - S3 and CloudWatch Logs are written with the instance's role, so they need O(iam_instance_profile).
        When the log cannot be written, the job still runs and the reason is in RV(instances[].job.log_error).
      - Needs O(job_command), and an image with the job runner; an image without it ignores O(job_log).
    type: str
  job_time_limit:
    description:
      - Minutes after which the job is stopped (TERM, then KILL 30 seconds later); it then ends with status
        124 and RV(instances[].job.status) V(timed_out). No limit when not given.
      - Must be less than O(max_lifetime) when that is not V(0). Needs O(job_command).
    type: int
  wait_for_job:
    description:
      - Wait until the job of every instance has ended (a final C(BurstJobStatus) tag, or the instance
        terminated or stopped) and return each job in RV(instances[].job) and the count of those that did not
        succeed in RV(jobs_failed). Needs O(job_command).
      - The job runner tags the instance with the instance's role, which needs C(ec2:CreateTags) on itself;
        without O(iam_instance_profile), no job can report its status (the module warns).
      - On a second run with the same O(job_id), the instances still there are waited for in the same way.
    type: bool
    default: false
  job_wait_timeout:
    description:
      - Seconds to wait for the jobs with O(wait_for_job); the module then fails, naming the instances whose
        job still runs.
    type: int
    default: 3600
  fail_on_job_error:
    description:
      - With O(wait_for_job), fail the module (after returning every result) when a job did not succeed, that is
        V(failed), V(timed_out), V(interrupted) or V(lost). With V(false), RV(jobs_failed) says so and the module
        succeeds.
    type: bool
    default: true
  max_lifetime:
    description:
      - Minutes after boot at which the instance terminates itself, whatever happens; V(0) for no limit.
    type: int
    default: 120
  efs:
    description:
      - EFS file system to mount before the startup script and the job run.
    type: dict
    suboptions:
      file_system_id:
        description: File system id, C(fs-...).
        type: str
        required: true
      mount_point:
        description: Absolute path to mount it on.
        type: str
        required: true
      mount_options:
        description: NFS mount options, when amazon-efs-utils is not on the image.
        type: str
  extra_user_data:
    description:
      - Shell commands added to the user data after the EFS mount and before the startup script.
    type: str
  cost_cap:
    description:
      - The most this launch may cost in all, in USD. For each instance type, the maximum is its highest price
        per hour (O(spot_max_price) on spot, else the on-demand price; on demand too with
        O(spot_fallback_on_demand)) times the time limit (O(max_lifetime), or O(job_time_limit) when it is
        shorter and O(terminate_after_job) is set) times O(count).
      - Types above the cap are left out with a warning; when none is left, or when a price is not known, or
        with O(max_lifetime=0) (no time limit), nothing is launched and the module fails, saying why.
      - The time limit does not count the boot before the job, and prices are per second with one minute at
        least. The cap bounds the instance-hours, not storage or data transfer.
    type: float
  on_demand_prices:
    description:
      - On-demand prices in USD per hour by instance type (the type as key, its price as value), instead of the
        collection's list prices (dated, for the GPU types of a few regions) for RV(cost) and O(cost_cap).
      - Give one for a type or region the collection's table lacks, or after a price change.
    type: dict
  metadata_hop_limit:
    description:
      - IMDSv2 response hop limit; 2 lets containers reach the instance metadata.
    type: int
    default: 2
  instance_ids:
    description:
      - With O(state=absent), instances to terminate.
    type: list
    elements: str
    default: []
  wait:
    description:
      - Wait until the instances run (O(state=present)) or are terminated (O(state=absent)).
    type: bool
    default: true
  wait_timeout:
    description:
      - Seconds to wait for the instances to run or terminate.
    type: int
    default: 600
  health_url:
    description:
      - Healthcheck URL of each instance, with fields of RV(instances) in braces, for example
        C(http://{private_ip_address}:8080/). When given, the module waits until every instance answers ready
        (HTTP 200, and C(ready) true when the body is JSON with that key).
    type: str
  health_timeout:
    description:
      - Seconds to wait for every instance to answer ready.
    type: int
    default: 600
  health_interval:
    description:
      - Seconds between two rounds of probes.
    type: int
    default: 5
  health_probe_timeout:
    description:
      - Seconds one probe may take.
    type: float
    default: 3.0
  progress_file:
    description:
      - A file (JSON with a C(line)) rewritten while the module waits for the instances to run and to be healthy,
        for M(burst.golden_ami.job_progress) to print when the module runs asynchronously.
    type: path
attributes:
  idempotent:
    support: full
    description: With O(job_id), a second run launches nothing; terminating what is gone changes nothing.
extends_documentation_fragment:
  - burst.golden_ami.aws
  - burst.golden_ami.ebs_volume.root_volume
  - amazon.aws.common.modules
  - amazon.aws.region.modules
  - amazon.aws.boto3
notes:
  - Check mode finds the image and the existing instances, checks the instance types against the image's
    architecture, and reports whether the module would launch or terminate; RV(launched_ids) and RV(attempts) say
    what was done.
  - The architecture check needs C(ec2:DescribeInstanceTypes); an instance type that EC2 does not know fails the
    module, naming it.
  - Spot instances are one-time requests that terminate on interruption.
  - The user data goes to /var/log/burst-user-data.log on the instance.
  - RV(cost) never fails a launch without O(cost_cap); a price that cannot be read (C(ec2:DescribeSpotPriceHistory)
    denied, for example) is named in RV(cost.error).
"""

EXAMPLES = r"""
- name: Launch a burst instance from the newest golden image, seed-style
  burst.golden_ami.burst_instance:
    region: eu-central-1
    job_id: "{{ tower_job_id | default('manual') }}"
    image_ssm_parameter: /burst/golden-ami/latest
    instance_types: [g6e.xlarge, g6.2xlarge, g5.2xlarge]
    subnet_ids: [subnet-0123456789abcdef0, subnet-0fedcba9876543210]
    security_group_ids: [sg-0123456789abcdef0]
    spot_max_price: "1.50"
    spot_fallback_on_demand: true
    root_volume:
      size: 80
      volume_type: gp3
      throughput: 500
      initialization_rate: 300
    health_url: "http://{private_ip_address}:8080/"
    health_timeout: 600
  register: burst

- name: Run a batch job on EFS data, then terminate (120 min at most)
  burst.golden_ami.burst_instance:
    region: us-east-2
    job_id: "pipeline-{{ recording_id }}"
    image_family:
      name_prefix: osmose-burst-golden-v
    instance_types: [g6e.xlarge]
    subnet_ids: [subnet-098dc7573fb6bf8bd]
    security_group_ids: [sg-0906d54ac3d704022, sg-0fc71fc185fe9b5e6]
    efs:
      file_system_id: fs-0fdfeb8ca8304e991
      mount_point: /home/ec2-user/recordings
    job_command: /home/ec2-user/app/simulate_pipeline.sh
    max_lifetime: 120

- name: Run a job with its log in S3, a 90 min limit and a cost cap, and wait for its outcome
  burst.golden_ami.burst_instance:
    region: eu-central-1
    job_id: "nightly-{{ run_date }}"
    image_ssm_parameter: /burst/golden-ami/latest
    instance_types: [g6e.xlarge, g6.2xlarge]
    iam_instance_profile: burst-job-runner
    job_command: /opt/app/nightly.sh
    job_log: "s3://burst-job-logs/{job_id}/{instance_id}.log"
    job_time_limit: 90
    max_lifetime: 110
    cost_cap: 5.00
    # A negotiated price, instead of the list price.
    on_demand_prices:
      g6.2xlarge: 1.10
    wait_for_job: true
    job_wait_timeout: 7200
  register: nightly

- name: Launch on Graviton GPUs from the newest arm64 Deep Learning AMI of Amazon
  burst.golden_ami.burst_instance:
    region: us-east-1
    job_id: "arm-{{ recording_id }}"
    image_family:
      name_prefix: "Deep Learning ARM64 Base OSS Nvidia Driver GPU AMI (Amazon Linux 2023)"
      owners: [amazon]
      architecture: arm64
      filters:
        virtualization-type: hvm
        root-device-type: ebs
    # An x86_64 type in this list would be left out with a warning.
    instance_types: [g5g.xlarge, g5g.2xlarge]

- name: Terminate the job's instances
  burst.golden_ami.burst_instance:
    region: eu-central-1
    state: absent
    job_id: "{{ tower_job_id }}"
"""

RETURN = r"""
instances:
  description: The job's instances (launched now or before), or those terminated with O(state=absent).
  returned: always
  type: list
  elements: dict
  contains:
    instance_id:
      description: Instance id.
      type: str
      sample: i-0123456789abcdef0
    instance_type:
      description: Instance type it was launched as.
      type: str
      sample: g6e.xlarge
    state:
      description: Instance state.
      type: str
      sample: running
    availability_zone:
      description: Zone.
      type: str
      sample: eu-central-1a
    subnet_id:
      description: Subnet.
      type: str
    vpc_id:
      description: VPC.
      type: str
    private_ip_address:
      description: Private address.
      type: str
    public_ip_address:
      description: Public address, if any.
      type: str
    private_dns_name:
      description: Private DNS name.
      type: str
    public_dns_name:
      description: Public DNS name, if any.
      type: str
    launch_time:
      description: Launch time, UTC.
      type: str
      sample: "2026-01-01T00:00:00Z"
    uptime_seconds:
      description: Seconds since launch.
      type: int
    market:
      description: V(spot) or V(on-demand).
      type: str
    spot_price:
      description: Current spot price of its type in its zone, USD per hour; null on demand.
      type: str
      sample: "1.1700"
    spot_max_price:
      description: The maximum price asked for; null on demand or without a maximum.
      type: str
      sample: "1.50"
    image_id:
      description: Image it was launched from.
      type: str
    image_name:
      description: Name of that image.
      type: str
    image_version:
      description: The image's O(image_version_tag) tag.
      type: str
      sample: "1.0"
    health:
      description: V(ready), V(starting) or V(unreachable), when O(health_url) is given.
      type: str
    boot_to_ready_s:
      description:
        - Seconds from boot to ready, as the instance's healthcheck reports it (C(boot_to_ready_s) of its JSON
          answer); null when it does not say. Returned when O(health_url) is given.
      type: float
      sample: 74.2
    job:
      description:
        - The job's outcome, with O(wait_for_job).
      type: dict
      contains:
        status:
          description:
            - V(succeeded), V(failed) or V(timed_out), as the job runner recorded it (C(BurstJobStatus));
              V(interrupted) when the instance ended before that by a spot interruption (C(BurstDraining) set, or
              the state reason C(Server.SpotInstanceTermination)); V(lost) when it ended without a final status
              otherwise (its maximum lifetime, a terminated instance, an image without the job runner...).
          type: str
          sample: succeeded
        exit_code:
          description: The job's exit status (124 when stopped at O(job_time_limit)); null when not recorded.
          type: int
          sample: 0
        started_at:
          description: When the job started, ISO 8601 UTC.
          type: str
          sample: "2026-01-01T00:01:12Z"
        ended_at:
          description: When the job ended, ISO 8601 UTC.
          type: str
          sample: "2026-01-01T00:41:55Z"
        log:
          description: Where the job's log went (O(job_log) with its placeholders filled in).
          type: str
          sample: s3://burst-job-logs/nightly/i-0123456789abcdef0.log
        log_error:
          description: Why the log could not be written there, if it could not.
          type: str
    tags:
      description: Tags of the instance.
      type: dict
instance_ids:
  description: Ids of RV(instances).
  returned: always
  type: list
  elements: str
launched_ids:
  description: Ids of the instances launched by this run.
  returned: state=present
  type: list
  elements: str
image:
  description: The image launched from.
  returned: state=present
  type: dict
  contains:
    image_id:
      description: Image id.
      type: str
    name:
      description: Image name.
      type: str
    version:
      description: Its O(image_version_tag) tag.
      type: str
    creation_date:
      description: Creation date.
      type: str
jobs_failed:
  description: With O(wait_for_job), the number of instances whose job did not succeed.
  returned: when O(wait_for_job) is set, outside check mode
  type: int
  sample: 0
cost:
  description:
    - What the instances of RV(instances) cost, in USD.
  returned: state=present
  type: dict
  contains:
    currency:
      description: Always V(USD).
      type: str
    prices_as_of:
      description: Date of the collection's on-demand list prices.
      type: str
      sample: "2026-01-21"
    instances:
      description: The price of each instance.
      type: list
      elements: dict
      contains:
        instance_id:
          description: Instance id.
          type: str
        instance_type:
          description: Instance type.
          type: str
        market:
          description: V(spot) or V(on-demand).
          type: str
        price_per_hour:
          description: USD per hour now; null when not known.
          type: float
          sample: 0.7241
        source:
          description:
            - V(spot-price-history) (the current spot price in its zone), V(on-demand-table) (the collection's
              list price of RV(cost.prices_as_of)) or V(given) (O(on_demand_prices)).
          type: str
        availability_zone:
          description: Zone.
          type: str
    price_per_hour:
      description: Sum of the instances' prices per hour; null when one is not known.
      type: float
    time_limit_minutes:
      description:
        - The longest the instances can run, in minutes (O(max_lifetime), or O(job_time_limit) when shorter and
          O(terminate_after_job) is set); null without a limit.
      type: int
    expected_run_cost:
      description: RV(cost.price_per_hour) for RV(cost.time_limit_minutes); null without a limit or a price.
      type: float
    max_run_cost:
      description:
        - The most the run can cost for RV(cost.time_limit_minutes), at each instance's highest price
          (O(spot_max_price) or the on-demand price); null without a limit or a price.
      type: float
    cost_cap:
      description: O(cost_cap).
      type: float
    error:
      description: Why a price is not known or could not be read; null when all are.
      type: str
attempts:
  description: Each RunInstances request made, in order, with the error that moved on to the next.
  returned: state=present
  type: list
  elements: dict
  contains:
    market:
      description: V(spot) or V(on-demand).
      type: str
    instance_type:
      description: Instance type.
      type: str
    subnet_id:
      description: Subnet, null for EC2's choice.
      type: str
    error_code:
      description: AWS error code, null for the attempt that launched.
      type: str
    error_message:
      description: AWS error message.
      type: str
"""

from ansible_collections.burst.golden_ami.plugins.module_utils._aws import (  # noqa: E402
    MODE_BURST,
    MODE_TAG,
    VERSION_TAG,
)
from ansible_collections.burst.golden_ami.plugins.module_utils._health import health_url, wait_healthy  # noqa: E402
from ansible_collections.burst.golden_ami.plugins.module_utils._images import (  # noqa: E402
    ARCHITECTURES,
    ImageError,
    ImageFamily,
    image_version,
)
from ansible_collections.burst.golden_ami.plugins.module_utils._launch import (  # noqa: E402
    JOB_SUCCEEDED,
    ImageRef,
    Launcher,
    LaunchError,
    LaunchRequest,
    RootVolume,
    summarize_instance,
)
from ansible_collections.burst.golden_ami.plugins.module_utils._params import (  # noqa: E402
    aws_module,
    ebs_volume_options,
    image_family_option,
    run_or_fail,
    string_list,
)
from ansible_collections.burst.golden_ami.plugins.module_utils._progress import ProgressFile  # noqa: E402
from ansible_collections.burst.golden_ami.plugins.module_utils._user_data import (  # noqa: E402
    DEFAULT_STARTUP_SCRIPT,
    build_user_data,
    job_log_kind,
)

BURST_TAGS = {MODE_TAG: MODE_BURST}


class BurstInstances:
    """The module's logic, callable without Ansible: ``present()`` and ``absent()`` return the module's result."""

    def __init__(self, params, launcher, check_mode=False, sleep=None):
        self.params = params
        self.launcher = launcher
        self.check_mode = check_mode
        self.sleep = sleep
        # What the module warns about (instance types left out or not checked).
        self.warnings = []

    # -- helpers

    def _identity(self):
        job_id = self.params.get("job_id")
        return {self.params["job_id_tag"]: job_id} if job_id else {}

    def _image_ref(self):
        option = self.params.get("image_family")
        family = None
        if option:
            legacy = {option["tag_key"]: option.get("tag_value")} if option.get("tag_key") else None
            if legacy and option.get("name_prefix"):
                raise LaunchError("image_family: give the deprecated tag_key or name_prefix, not both (tags combine)")
            try:
                family = ImageFamily.from_option(option, legacy_tags=legacy)
            except ImageError as e:
                raise LaunchError(f"image_family: {e.message}") from None
        return ImageRef(
            image_id=self.params.get("image_id"),
            ssm_parameter=self.params.get("image_ssm_parameter"),
            family=family,
        )

    def _user_data(self):
        efs = self.params.get("efs") or {}
        return build_user_data(
            startup_script=self.params.get("startup_script") or None,
            job_command=self.params.get("job_command"),
            efs_file_system_id=efs.get("file_system_id"),
            efs_mount_point=efs.get("mount_point"),
            efs_mount_options=efs.get("mount_options"),
            region=self.launcher.region,
            terminate_after_job=self.params["terminate_after_job"],
            max_lifetime_minutes=self.params["max_lifetime"],
            extra_script=self.params.get("extra_user_data"),
            job_id=self.params.get("job_id"),
            job_log=self.params.get("job_log"),
            job_time_limit=self.params.get("job_time_limit"),
        )

    def _validate_job_and_cost(self):
        """Refuse, before anything is launched, job and cost options that cannot work; warn about doubtful ones."""
        params = self.params
        for name in ("job_log", "job_time_limit", "wait_for_job"):
            if params.get(name) not in (None, False) and not params.get("job_command"):
                raise LaunchError(f"{name} needs job_command: there is no job without it")
        job_log = params.get("job_log")
        if job_log is not None:
            kind = job_log_kind(job_log)
            if kind in ("s3", "cloudwatch") and not params.get("iam_instance_profile"):
                where = "S3" if kind == "s3" else "CloudWatch Logs"
                raise LaunchError(
                    f"job_log {job_log} is written to {where} with the instance's credentials, and without "
                    "iam_instance_profile the instance has none: give an instance profile whose role may write "
                    "there, or log to a file on the instance"
                )
        limit, lifetime = params.get("job_time_limit"), params["max_lifetime"]
        if limit is not None:
            if limit < 1:
                raise LaunchError(f"Invalid job_time_limit {limit}: give whole minutes, 1 or more")
            if lifetime and limit >= lifetime:
                raise LaunchError(
                    f"job_time_limit ({limit} min) must be less than max_lifetime ({lifetime} min): the instance "
                    "would terminate itself before the job's time limit"
                )
        if params.get("wait_for_job") and params["job_wait_timeout"] < 0:
            raise LaunchError(f"Invalid job_wait_timeout {params['job_wait_timeout']}: give seconds, 0 or more")
        if params.get("wait_for_job") and not params.get("iam_instance_profile"):
            self.warnings.append(
                "wait_for_job without iam_instance_profile: the job runner tags the instance with the instance's "
                "credentials, which it has none of, so no job can report its status (a terminated instance's job "
                "is then lost)"
            )
        cap = params.get("cost_cap")
        if cap is not None:
            if cap <= 0:
                raise LaunchError(f"Invalid cost_cap {cap}: give a positive amount, in USD")
            if not lifetime:
                raise LaunchError(
                    "cost_cap needs a time limit, and max_lifetime is 0 (no limit): the instances could run, and "
                    "cost, without end. Set max_lifetime (minutes)"
                )

    def _time_limit(self):
        """The longest the instances can run (minutes), or None: max_lifetime, or a shorter job time limit."""
        lifetime = self.params["max_lifetime"] or None
        limit = self.params.get("job_time_limit")
        if lifetime and limit and self.params.get("job_command") and self.params["terminate_after_job"]:
            return min(lifetime, limit)
        return lifetime

    def _root_volume(self):
        """The root_volume option: its suboptions are RootVolume's arguments."""
        return RootVolume(**(self.params.get("root_volume") or {}))

    def _request(self):
        if not self.params.get("instance_types"):
            raise LaunchError("instance_types is required with state=present")
        tags = dict(BURST_TAGS)
        tags.update(self.params.get("tags") or {})
        return LaunchRequest(
            image=self._image_ref(),
            instance_types=self.params["instance_types"],
            count=self.params["count"],
            subnet_ids=self.params.get("subnet_ids"),
            security_group_ids=self.params.get("security_group_ids"),
            key_name=self.params.get("key_name"),
            iam_instance_profile=self.params.get("iam_instance_profile"),
            market=self.params["market"],
            spot_max_price=self.params.get("spot_max_price"),
            spot_fallback_on_demand=self.params["spot_fallback_on_demand"],
            tags=tags,
            identity_tag=self._identity(),
            user_data=self._user_data(),
            root_volume=self._root_volume(),
            metadata_hop_limit=self.params["metadata_hop_limit"],
            cost_cap=self.params.get("cost_cap"),
            time_limit_minutes=self._time_limit(),
            on_demand_prices=self.params.get("on_demand_prices"),
        )

    def _facts(self, instances, image):
        prices = {}
        spot = [(i.get("InstanceType"), (i.get("Placement") or {}).get("AvailabilityZone")) for i in instances]
        spot = [p for p, i in zip(spot, instances) if i.get("InstanceLifecycle") == "spot"]
        if spot:
            try:
                prices = self.launcher.spot_prices(spot)
            except LaunchError:
                prices = {}  # the price is information only: no reason to fail a launch
        facts = []
        for instance in instances:
            key = (instance.get("InstanceType"), (instance.get("Placement") or {}).get("AvailabilityZone"))
            fact = summarize_instance(
                instance, image=image, version_tag=self.params["image_version_tag"], spot_price=prices.get(key)
            )
            fact["spot_max_price"] = self.params.get("spot_max_price") if fact["market"] == "spot" else None
            facts.append(fact)
        return facts

    # -- states

    def present(self):
        self._validate_job_and_cost()
        request = self._request()
        result = self.launcher.launch(request, check_mode=self.check_mode)
        self.warnings.extend(result.warnings)
        image = result.image
        instances = result.instances
        progress = self._progress()
        if not self.check_mode and self.params["wait"] and instances:
            instances = self.launcher.wait_running(
                [i["InstanceId"] for i in instances],
                timeout=self.params["wait_timeout"],
                progress=progress and (lambda line: progress.update(line=f"running: {line}", force=True)),
            )
        facts = self._facts(instances, image)
        if self.params.get("health_url") and facts and not self.check_mode:
            self._wait_healthy(facts, progress)
        out = {
            "changed": result.changed,
            "instances": facts,
            "instance_ids": [f["instance_id"] for f in facts],
            "launched_ids": result.launched_ids,
            "image": {
                "image_id": image["ImageId"],
                "name": image.get("Name"),
                "version": image_version(image, self.params["image_version_tag"]),
                "creation_date": image.get("CreationDate"),
            },
            "attempts": [a.as_dict() for a in result.attempts],
        }
        if self.params.get("wait_for_job") and not self.check_mode:
            out["jobs_failed"] = self._wait_jobs(facts, progress)
        out["cost"] = self.launcher.cost_summary(
            instances,
            time_limit_minutes=self._time_limit(),
            spot_max_price=self.params.get("spot_max_price"),
            on_demand_prices=self.params.get("on_demand_prices"),
            cost_cap=self.params.get("cost_cap"),
        )
        return out

    def _wait_healthy(self, facts, progress):
        """Wait until every instance answers ready; sets each fact's ``health`` and ``boot_to_ready_s``."""
        urls = {f["instance_id"]: health_url(self.params["health_url"], f) for f in facts}
        kwargs = {} if self.sleep is None else {"sleep": self.sleep}
        health = wait_healthy(
            urls,
            timeout=self.params["health_timeout"],
            interval=self.params["health_interval"],
            probe_timeout=self.params["health_probe_timeout"],
            progress=progress and (lambda line: progress.update(line=f"health: {line}", force=True)),
            documents=True,
            **kwargs,
        )
        for fact in facts:
            status, _detail, document = health[fact["instance_id"]]
            fact["health"] = status
            seconds = (document or {}).get("boot_to_ready_s")
            valid = isinstance(seconds, (int, float)) and not isinstance(seconds, bool)
            fact["boot_to_ready_s"] = seconds if valid else None

    def _wait_jobs(self, facts, progress):
        """Wait for the job of every instance; sets each fact's ``job`` and ``state``; returns how many failed."""
        jobs, instances = self.launcher.wait_jobs(
            [f["instance_id"] for f in facts],
            timeout=self.params["job_wait_timeout"],
            progress=progress and (lambda line: progress.update(line=f"job: {line}", force=True)),
        )
        for fact in facts:
            fact["job"] = jobs[fact["instance_id"]]
            fact["state"] = (instances[fact["instance_id"]].get("State") or {}).get("Name")
        return sum(1 for f in facts if f["job"]["status"] != JOB_SUCCEEDED)

    @staticmethod
    def job_failure(result):
        """The message to fail with when a job of ``result`` did not succeed, or None."""
        if not result.get("jobs_failed"):
            return None
        facts = result["instances"]
        failed = []
        for fact in facts:
            job = fact["job"]
            if job["status"] == JOB_SUCCEEDED:
                continue
            code = f", exit code {job['exit_code']}" if job.get("exit_code") is not None else ""
            log = f", log {job['log']}" if job.get("log") else ""
            failed.append(f"{fact['instance_id']} {job['status']}{code}{log}")
        return f"{len(failed)} of {len(facts)} jobs did not succeed: {'; '.join(failed)}"

    def _progress(self):
        """The progress file of this run, or None."""
        if not self.params.get("progress_file") or self.check_mode:
            return None
        return ProgressFile(self.params["progress_file"], "instances")

    def absent(self):
        tags = dict(self.params.get("tags") or {})
        tags.update(self._identity())
        ids = self.params.get("instance_ids") or []
        if not tags and not ids:
            raise LaunchError("state=absent needs instance_ids, job_id or tags, to know which instances to terminate")
        instances = self.launcher.find_instances(tags=tags, instance_ids=ids or None)
        facts = self._facts(instances, None)
        if instances and not self.check_mode:
            self.launcher.terminate(
                [i["InstanceId"] for i in instances], wait=self.params["wait"], timeout=self.params["wait_timeout"]
            )
            for fact in facts:
                fact["state"] = "terminated" if self.params["wait"] else "shutting-down"
        return {"changed": bool(instances), "instances": facts, "instance_ids": [f["instance_id"] for f in facts]}


def argument_spec():
    deprecated = dict(removed_in_version="1.0.0", removed_from_collection="burst.golden_ami")
    return dict(
        state=dict(type="str", choices=["present", "absent"], default="present"),
        count=dict(type="int", default=1),
        job_id=dict(type="str"),
        job_id_tag=dict(type="str", default="BurstJobId"),
        image_id=dict(type="str"),
        image_ssm_parameter=dict(type="str"),
        image_family=image_family_option(
            owners=dict(type="list", elements="str", default=["self"]),
            filters=dict(type="dict"),
            architecture=dict(type="str", choices=list(ARCHITECTURES)),
            tag_key=dict(type="str", no_log=False, **deprecated),
            tag_value=dict(type="str", **deprecated),
        ),
        image_version_tag=dict(type="str", default=VERSION_TAG),
        instance_types=dict(type="list", elements="str"),
        subnet_ids=string_list(),
        security_group_ids=string_list(),
        key_name=dict(type="str", no_log=False),
        iam_instance_profile=dict(type="str"),
        market=dict(type="str", choices=["spot", "on-demand"], default="spot"),
        spot_max_price=dict(type="str"),
        spot_fallback_on_demand=dict(type="bool", default=False),
        tags=dict(type="dict", default={}),
        startup_script=dict(type="str", default=DEFAULT_STARTUP_SCRIPT),
        job_command=dict(type="str"),
        terminate_after_job=dict(type="bool", default=True),
        job_log=dict(type="str"),
        job_time_limit=dict(type="int"),
        wait_for_job=dict(type="bool", default=False),
        job_wait_timeout=dict(type="int", default=3600),
        fail_on_job_error=dict(type="bool", default=True),
        max_lifetime=dict(type="int", default=120),
        efs=dict(
            type="dict",
            options=dict(
                file_system_id=dict(type="str", required=True),
                mount_point=dict(type="str", required=True),
                mount_options=dict(type="str"),
            ),
        ),
        extra_user_data=dict(type="str"),
        cost_cap=dict(type="float"),
        on_demand_prices=dict(type="dict"),
        root_volume=dict(
            type="dict",
            options=ebs_volume_options(
                size=dict(type="int"),
                initialization_rate=dict(type="int"),
                delete_on_termination=dict(type="bool", default=True),
            ),
        ),
        metadata_hop_limit=dict(type="int", default=2),
        instance_ids=string_list(),
        wait=dict(type="bool", default=True),
        wait_timeout=dict(type="int", default=600),
        health_url=dict(type="str"),
        health_timeout=dict(type="int", default=600),
        health_interval=dict(type="int", default=5),
        health_probe_timeout=dict(type="float", default=3.0),
        progress_file=dict(type="path"),
    )


def main():
    module = aws_module(
        argument_spec(),
        mutually_exclusive=[("image_id", "image_ssm_parameter", "image_family")],
        required_if=[("state", "present", ("image_id", "image_ssm_parameter", "image_family"), True)],
    )
    ec2 = module.client("ec2")
    ssm = module.client("ssm") if module.params.get("image_ssm_parameter") else None
    launcher = Launcher(ec2, ssm, region=module.region)
    logic = BurstInstances(module.params, launcher, check_mode=module.check_mode)
    run = logic.present if module.params["state"] == "present" else logic.absent
    result = run_or_fail(module, run, attempts=_attempts)
    for warning in logic.warnings:
        module.warn(warning)
    failure = logic.job_failure(result)
    if failure and module.params["fail_on_job_error"]:
        module.fail_json(msg=failure, **result)
    module.exit_json(**result)


def _attempts(error):
    return [a.as_dict() for a in getattr(error, "attempts", [])]


if __name__ == "__main__":
    main()
